"""Reading the provisioned Grafana dashboards the way Grafana does, without Grafana.

The structure tests and the end-to-end stack test share this: load every dashboard, list the PromQL
of every panel (rows' nested panels included) and substitute Grafana's template variables so the
query can be sent to a real Prometheus. :func:`lint` checks that every query is scoped the way the
generator (exporter/mixin/dashboards.py) promises, for the default settings and any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.mixin.dashboards import RECEIVER_SERIES, datasource_uid
from exporter.mixin.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "grafana" / "provisioning"
#: Where docker-compose mounts ``grafana/dashboards`` and the dashboard provider reads from.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
#: The fixed uid of the provisioned Prometheus datasource (derived from its name).
DATASOURCE_UID = datasource_uid(Settings())

#: Grafana's built-in variables, with the values a test substitutes for them. ``$__rate_interval``
#: is at least four scrape intervals in Grafana; one minute suits any scrape interval up to 15 s.
BUILTIN_VARIABLES: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

#: Test values for the dashboards' own variables, as Grafana would interpolate them: a string is
#: what "All" gives with a custom all value (a regex), a list is a multi-value selection.
SAMPLE_VARIABLES: dict[str, str | list[str]] = {
    "datasource": DATASOURCE_UID,
    # The fleet labels and the job at "All": the demo's series have no cluster or namespace.
    "cluster": ".*",
    "namespace": ".*",
    "job": ".*",
    "model": "fare",
    "version": ".*",
    "instance": ".*",
    "feature": ["trip_miles", "payment"],
    "window": "1h",
}

Variables = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: where it is, and its PromQL before substitution."""

    dashboard_uid: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    instant: bool = False


def has_data(result: list[dict[str, Any]]) -> bool:
    """A query's result (instant or range) holds a sample that is a number: a panel whose
    series are all NaN draws nothing."""
    for series in result:
        points = series["values"] if "values" in series else [series["value"]]
        if any(value != "NaN" for _, value in points):
            return True
    return False


def load_dashboards(directory: Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` dashboard in ``directory`` by uid; a duplicate uid is an error."""
    return parse_dashboards(
        {path.name: path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.json"))}
    )


def parse_dashboards(texts: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The dashboards among ``texts`` (file name or path to JSON text, as the generator's
    artefacts) by uid; a duplicate uid is an error."""
    dashboards: dict[str, dict[str, Any]] = {}
    for name, text in sorted(texts.items()):
        if not name.endswith(".json"):
            continue
        dashboard = json.loads(text)
        uid = dashboard["uid"]
        if uid in dashboards:
            raise ValueError(f"{name}: uid {uid!r} is used by another dashboard")
        dashboards[uid] = dashboard
    return dashboards


def template_variables(
    dashboard: Mapping[str, Any], overrides: Variables | None = None
) -> dict[str, str | Sequence[str]]:
    """A value for each of ``dashboard``'s variables: ``overrides``, else
    :data:`SAMPLE_VARIABLES`, else the variable's "All" (``.*``) — what a site's own fleet
    labels get."""
    chosen = {**SAMPLE_VARIABLES, **(overrides or {})}
    values: dict[str, str | Sequence[str]] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        values[name] = chosen[name] if name in chosen else variable.get("allValue", ".*")
    return values


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included; a collapsed row keeps its panels inside its own ``panels``."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """The PromQL targets of every panel, in dashboard order."""
    uid = dashboard["uid"]
    return [
        PanelQuery(
            dashboard_uid=uid,
            panel_id=panel["id"],
            panel_title=panel["title"],
            ref_id=target.get("refId", ""),
            expr=target.get("expr", ""),
            instant=bool(target.get("instant")) and not target.get("range"),
        )
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
    ]


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.+),\s*(?P<label>\w+)\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.S)


def variable_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(variable name, PromQL) for every query variable: the series selector of ``label_values``
    or the expression of ``query_result``, which Grafana sends to Prometheus."""
    queries = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text) or _QUERY_RESULT.match(text)
        if match is None:
            raise ValueError(f"variable {variable['name']}: unsupported query {text!r}")
        queries.append((variable["name"], match["expr"]))
    return queries


def annotation_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(annotation name, PromQL) for every Prometheus annotation."""
    return [
        (annotation["name"], annotation["expr"])
        for annotation in dashboard.get("annotations", {}).get("list", [])
        if "expr" in annotation
    ]


# Grafana's own variable syntax: $var, [[var]] / [[var:format]], ${var} / ${var:format}.
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
# Characters Grafana's Prometheus datasource escapes in a multi-value selection.
_PROMETHEUS_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")


def _regex_escape(value: str) -> str:
    # Doubled backslashes: the regex sits inside a PromQL string literal.
    return _PROMETHEUS_REGEX_SPECIAL.sub(lambda m: "\\\\" + m[0], value.replace("\\", "\\\\\\\\"))


def _format(name: str, value: str | Sequence[str], fmt: str | None) -> str:
    if isinstance(value, str):
        return value
    values = list(value)
    if fmt in (None, "regex"):
        escaped = [_regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "pipe":
        return "|".join(values)
    if fmt in ("csv", "raw"):
        return ",".join(values)
    raise ValueError(f"format {fmt!r} of variable {name!r} is not supported")


def substitute(expr: str, variables: Variables) -> str:
    """``expr`` with Grafana's variables replaced, as the Prometheus datasource sends it.

    ``variables`` overrides :data:`BUILTIN_VARIABLES`. A string value is inserted as it is in
    every syntax (``$var``, ``${var}``, ``${var:regex}``, ``[[var]]``), so give a variable that
    sits in a regex matcher a regex, as "All" with a custom all value does (``".*"``). A list is
    a multi-value selection: ``(a|b)`` with each value regex-escaped, like Grafana.

    An undefined variable raises :class:`KeyError` (Grafana would leave it in and the query would
    silently match nothing); ``$1`` and the like, capture groups of ``label_replace``, stay.
    """
    values: dict[str, str | Sequence[str]] = {**BUILTIN_VARIABLES, **variables}

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[4]
        if match[5]:
            raise ValueError(f"field path in {match[0]!r} is not supported")
        if name not in values:
            if name.isdigit():
                return match[0]
            raise KeyError(f"undefined variable ${name} in {expr!r}")
        return _format(name, values[name], match[3] or match[6])

    return _VARIABLE.sub(replace, expr)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)


def metric_names(expr: str) -> set[str]:
    """Metric and recording-rule names ``expr`` selects (functions, keywords, labels left out).

    A small tokenizer, enough for dashboards: strings, label matchers, ranges and grouping label
    lists are removed first, then every identifier not followed by ``(`` is a name.
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue
        if match[0].lower() in _KEYWORDS:
            continue
        names.add(match[0])
    return names


# --- the linter -------------------------------------------------------------------------------

#: Series Prometheus writes for the alert rules: scoped like recording rules, but ``model`` and
#: ``version`` also match an alert without them (an exporter down, a drifting feature).
ALERTS = "ALERTS"
_SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\{([^}]*)\}")
_MATCHER_SPLIT = re.compile(r',\s*(?=(?:[^"]*"[^"]*")*[^"]*$)')


def vector_selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """Every series selector of ``expr`` as (name, its matchers as ``label op "value"``); a
    selector without braces has no matchers."""
    found = [
        (match[1], frozenset(m.strip() for m in _MATCHER_SPLIT.split(match[2]) if m.strip()))
        for match in _SELECTOR.finditer(expr)
    ]
    bare = metric_names(_SELECTOR.sub(" ", expr))
    return found + [(name, frozenset()) for name in sorted(bare)]


def required_matchers(
    name: str, settings: Settings, versioned_rules: Collection[str]
) -> tuple[str, set[str]]:
    """The kind of series ``name`` is and the matchers every query of it must carry:

    * raw series of the exporter: the selector and every variable (fleet labels, job, model,
      version, instance);
    * recording rules: the fleet labels, model, and version when the rule keeps it (they have no
      job or instance);
    * ``ALERTS``: the fleet labels, and model and version or none;
    * the receiver's series: none (another job, without model or version).
    """
    fleet = {f'{label}=~"${label}"' for label in settings.fleet_labels}
    if name == ALERTS:
        return "alerts", fleet | {'model=~"$model|"', 'version=~"$version|"'}
    if name in RECEIVER_SERIES:
        return "receiver", set()
    if ":" in name:
        version = {'version=~"$version"'} if name in versioned_rules else set()
        return "recording rule", fleet | {'model=~"$model"'} | version
    selector = {f'{label}{op}"{value}"' for label, op, value in settings.matchers}
    variables = {f'{v}=~"${v}"' for v in (*settings.fleet_labels, "job", "model", "version")}
    return "raw series", selector | variables | {'instance=~"$instance"'}


def dashboard_exprs(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation of ``dashboard``."""
    exprs = [(f"panel {q.panel_id} {q.ref_id}", q.expr) for q in panel_queries(dashboard)]
    return exprs + [(f"annotation {n}", e) for n, e in annotation_queries(dashboard)]


def lint(
    dashboard: Mapping[str, Any], settings: Settings, versioned_rules: Collection[str]
) -> list[str]:
    """What in ``dashboard`` breaks the generator's promises under ``settings``, one line each:
    a query of a series without its kind's matchers (:func:`required_matchers`), a datasource
    other than the ``datasource`` variable, a query variable without the selector or the
    variables before it, a duplicate panel id, overlapping panels, a graph without a unit."""
    problems = []
    uid = dashboard["uid"]
    for where, expr in dashboard_exprs(dashboard):
        for name, matchers in vector_selectors(expr):
            kind, required = required_matchers(name, settings, versioned_rules)
            missing = sorted(required - matchers)
            if missing:
                problems.append(f"{uid} {where}: {kind} {name} lacks {', '.join(missing)}")
    problems += _lint_datasources(dashboard)
    problems += _lint_variables(dashboard, settings)
    problems += _lint_panels(dashboard)
    return problems


def _lint_datasources(dashboard: Mapping[str, Any]) -> list[str]:
    uid, problems = dashboard["uid"], []
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in iter_panels(dashboard):
        if panel["type"] == "row":
            continue
        for item in (panel, *panel.get("targets", [])):
            if item.get("datasource") != expected:
                problems.append(f"{uid} panel {panel['id']}: datasource {item.get('datasource')}")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query" and variable["datasource"] != expected:
            problems.append(f"{uid} variable {variable['name']}: datasource")
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation and annotation["datasource"] != expected:
            problems.append(f"{uid} annotation {annotation['name']}: datasource")
    return problems


def _lint_variables(dashboard: Mapping[str, Any], settings: Settings) -> list[str]:
    uid, problems = dashboard["uid"], []
    chain = [*settings.fleet_labels, "job", "model", "version", "instance"]
    selector = {f'{label}{op}"{value}"' for label, op, value in settings.matchers}
    names = [v["name"] for v in dashboard["templating"]["list"]]
    if names[: len(chain) + 1] != ["datasource", *chain]:
        problems.append(f"{uid}: variables {names}, expected datasource then {chain}")
    for name, expr in variable_queries(dashboard):
        ((_, matchers),) = vector_selectors(expr)
        before = chain[: chain.index(name)] if name in chain else chain
        required = selector | {f'{v}=~"${v}"' for v in before}
        if not required <= matchers:
            problems.append(f"{uid} variable {name}: lacks {sorted(required - matchers)}")
    for variable in dashboard["templating"]["list"]:
        if variable["name"] in chain and variable["name"] != "model":
            if not (variable["multi"] and variable["includeAll"]):
                problems.append(f"{uid} variable {variable['name']}: not multi with All")
            if variable.get("allValue") != ".*":
                problems.append(f"{uid} variable {variable['name']}: All is not .*")
    return problems


def overlapping(panels: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """Pairs of panel ids whose grid rectangles intersect."""
    found = []
    for i, a in enumerate(panels):
        for b in panels[i + 1 :]:
            ga, gb = a["gridPos"], b["gridPos"]
            if (
                ga["x"] < gb["x"] + gb["w"]
                and gb["x"] < ga["x"] + ga["w"]
                and ga["y"] < gb["y"] + gb["h"]
                and gb["y"] < ga["y"] + ga["h"]
            ):
                found.append((a["id"], b["id"]))
    return found


def _lint_panels(dashboard: Mapping[str, Any]) -> list[str]:
    uid, problems = dashboard["uid"], []
    panels = list(iter_panels(dashboard))
    ids = [panel.get("id") for panel in panels]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if duplicates or not all(isinstance(i, int) and i > 0 for i in ids):
        problems.append(f"{uid}: panel ids {ids}")
    top = dashboard["panels"]
    for group in (top, *(row.get("panels", []) for row in top)):
        for pair in overlapping(group):
            problems.append(f"{uid}: panels {pair} overlap")
    for panel in panels:
        if panel["type"] != "row" and not panel["fieldConfig"]["defaults"].get("unit"):
            problems.append(f"{uid} panel {panel['id']}: no unit")
    return problems
