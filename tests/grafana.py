"""Reading the provisioned Grafana dashboards the way Grafana does, without Grafana.

The structure tests and the end-to-end stack test share this: load every dashboard, list the PromQL
of every panel (rows' nested panels included) and substitute Grafana's template variables so the
query can be sent to a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "grafana" / "provisioning"
#: Where docker-compose mounts ``grafana/dashboards`` and the dashboard provider reads from.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
#: The fixed uid of the provisioned Prometheus datasource.
DATASOURCE_UID = "prometheus"

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


def load_dashboards(directory: Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` dashboard in ``directory`` by uid; a duplicate uid is an error."""
    dashboards: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        uid = dashboard["uid"]
        if uid in dashboards:
            raise ValueError(f"{path.name}: uid {uid!r} is used by another dashboard")
        dashboards[uid] = dashboard
    return dashboards


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
