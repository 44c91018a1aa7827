"""The Grafana provisioning and dashboards: generated, structure, the metric contract, and PromQL.

The committed files are exporter.mixin.dashboards' output for the default settings, byte for byte;
the linter (tests/grafana.py) checks them and the dashboards of other settings. Structure and
contract checks read the JSON and docs/metrics.md. The syntax check sends every
panel, variable and annotation query to a real Prometheus with no data: a parse or type error is a
400, an empty result is fine here (the end-to-end stack test looks for data).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from exporter.mixin import dashboards
from exporter.mixin.settings import Settings
from tests.binaries import free_port, require_binary, terminate, wait_until_ready
from tests.grafana import (
    DASHBOARDS_DIR,
    DASHBOARDS_MOUNT,
    DATASOURCE_UID,
    PROVISIONING_DIR,
    REPO,
    annotation_queries,
    iter_panels,
    lint,
    load_dashboards,
    metric_names,
    overlapping,
    panel_queries,
    parse_dashboards,
    substitute,
    template_variables,
    variable_queries,
    vector_selectors,
)

DOCS = REPO / "docs" / "metrics.md"
RULES_DIR = REPO / "prometheus" / "rules"
EXPECTED_UIDS = {
    "model-overview",
    "model-drift",
    "model-performance",
    "model-versions",
    "model-alerts",
}
PANEL_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
COMMON_VARIABLES = ("datasource", "cluster", "namespace", "job", "model", "version", "instance")
EXTRA_VARIABLES = {"model-drift": ("feature", "window")}
#: Series Prometheus itself writes; dashboards may use them besides the catalogue.
PROMETHEUS_BUILTINS = {"ALERTS", "ALERTS_FOR_STATE", "up"}
#: Raw series whose panel-side computation a recording rule already provides.
RULE_INSTEAD_OF = {
    "model_feature_bin_total": "model_feature_bin:… / model_feature:model_feature_psi:…",
    "model_feature_value_sum_total": "model_feature:model_feature_zscore:1h",
    "model_feature_reference_ratio": "model_feature_bin:model_feature_reference_ratio:dedup",
    "model_feature_reference_mean": "model_feature:model_feature_zscore:1h",
    "model_feature_reference_std": "model_feature:model_feature_zscore:1h",
    "model_squared_error_total": "model:model_squared_error:rmse1h",
    "model_absolute_error_sum": "model:model_absolute_error:mae1h",
    "model_prediction_confidence_sum": "model:model_prediction_confidence:mean5m",
    "model_prediction_confidence_count": "model:model_prediction_confidence:mean5m",
}

DASHBOARDS = load_dashboards()
#: A site unlike the demo in every setting the dashboards read.
CUSTOM = Settings(
    selector='job="fares"',
    fleet_labels=("region",),
    grafana_path_prefix="/grafana",
    dashboard_tags=("fares-team",),
    dashboard_refresh="5m",
    datasource_name="Fares Prometheus",
)
CUSTOM_DASHBOARDS = parse_dashboards(dashboards.artefacts(CUSTOM))


# --- docs/metrics.md --------------------------------------------------------------------------


def _table(section: str) -> list[list[str]]:
    """Body rows of the first table under the ``## section`` heading, split into cells."""
    text = DOCS.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [
        [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]
        for row in rows[2:]  # header and separator
    ]


def documented_metrics() -> set[str]:
    """Series names of the exporter's catalogue; a histogram's _bucket, _sum and _count."""
    names: set[str] = set()
    for cells in _table("Exported by the exporter"):
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if cells[1].startswith("histogram"):
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
    return names


def _rule_rows() -> list[tuple[set[str], str, str]]:
    """(names, labels kept, meaning) of each row of the recording-rule table; ``a:b:c` / `:d``
    and ``a:b:c` / `d``` abbreviate ``a:b:d``."""
    rows = []
    for cells in _table("Recording rules"):
        names, full = set(), ""
        for token in re.findall(r"`([^`]+)`", cells[0]):
            if token.count(":") == 2:
                full = token
            else:
                full = full.rsplit(":", 1)[0] + ":" + token.lstrip(":")
            names.add(full)
        rows.append((names, cells[1], cells[2]))
    return rows


def documented_rules(*, drawn_only: bool = False) -> set[str]:
    """Recording-rule names. With ``drawn_only``, without the rows whose meaning starts "alert
    input" (steps other rules read)."""
    return {
        name
        for names, _, meaning in _rule_rows()
        if not (drawn_only and meaning.startswith("alert input"))
        for name in names
    }


def versioned_rules() -> set[str]:
    """Recording rules whose series keep ``version`` (the "labels kept" column)."""
    return {
        name
        for names, labels, _ in _rule_rows()
        if "version" in {label.strip() for label in labels.split(",")}
        for name in names
    }


def test_docs_tables_parse() -> None:
    rules = documented_rules()
    assert "model:model_prediction_duration_seconds:p99_5m" in rules
    assert "model:model_absolute_error:within10_1h" in rules
    assert "model_feature:model_feature_psi:1d" in rules
    assert all(name.count(":") == 2 for name in rules)
    metrics = documented_metrics()
    assert {"model_info", "model_feature_reference_std", "model_absolute_error_bucket"} <= metrics
    assert all(":" not in name for name in metrics)
    versioned = versioned_rules()
    assert "model:model_prediction_duration_seconds:p95_1h" in versioned
    assert "model_class:model_outcomes:f1_1h" in versioned
    assert "model_feature:model_feature_psi:1h" in versioned  # each version has its reference
    assert "model_feature_bin:model_feature_reference_ratio:dedup" in versioned
    assert "model_alert:model_alert_threshold:effective" not in versioned


# --- helpers of tests/grafana.py --------------------------------------------------------------


def test_substitute_grafana_syntaxes() -> None:
    variables = {"model": "fare", "version": ["v1", "v2.1"], "window": "1h"}
    expr = 'x{model=~"$model", version=~"${version}", w="[[window]]"}[$__rate_interval]'
    assert substitute(expr, variables) == 'x{model=~"fare", version=~"(v1|v2\\\\.1)", w="1h"}[1m]'
    assert substitute("${version:regex}|${version:pipe}", variables) == "(v1|v2\\\\.1)|v1|v2.1"
    assert substitute("$version", {"version": ["v1"]}) == "v1"
    assert substitute("[$__range] $__interval", {"__range": "6h"}) == "[6h] 15s"
    assert substitute('label_replace(x, "a", "$1", "b", "(.*)")', {}) == (
        'label_replace(x, "a", "$1", "b", "(.*)")'
    )
    with pytest.raises(KeyError, match="modle"):
        substitute('x{model="$modle"}', variables)


def test_metric_names_skip_functions_labels_and_keywords() -> None:
    expr = (
        'sum by (le, version) (rate(model_x_bucket{model=~"$m", le!="+Inf"}[5m] offset 1m)) '
        "/ on (model) group_left (stage) max without (instance) (model:y:rate5m) or vector(0) "
        "* 1e-4 > bool 0"
    )
    assert metric_names(expr) == {"model_x_bucket", "model:y:rate5m"}


# --- files and provisioning -------------------------------------------------------------------


def test_dashboard_files_are_the_five_with_their_uids() -> None:
    files = {path.stem: path for path in DASHBOARDS_DIR.glob("*.json")}
    assert set(files) == EXPECTED_UIDS
    for stem, path in files.items():
        assert json.loads(path.read_text(encoding="utf-8"))["uid"] == stem
    assert set(DASHBOARDS) == EXPECTED_UIDS


def test_committed_files_are_the_generators_output() -> None:
    generated = dashboards.artefacts(Settings())
    assert set(generated) == {
        *(f"grafana/dashboards/{uid}.json" for uid in EXPECTED_UIDS),
        "grafana/provisioning/datasources/prometheus.yml",
    }
    stale = [
        path
        for path, text in sorted(generated.items())
        if (REPO / path).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "regenerate with `make generate` (model-exporter generate)"


def test_generated_text_is_stable_json() -> None:
    for path, text in dashboards.artefacts(CUSTOM).items():
        if path.endswith(".json"):
            assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    assert dashboards.artefacts(CUSTOM) == dashboards.artefacts(CUSTOM)


@pytest.mark.parametrize("settings", [Settings(), CUSTOM], ids=["default", "custom"])
def test_datasource_is_provisioned_with_its_fixed_uid_and_not_as_default(
    settings: Settings,
) -> None:
    text = dashboards.artefacts(settings)["grafana/provisioning/datasources/prometheus.yml"]
    config = yaml.safe_load(text)
    assert config["apiVersion"] == 1
    (datasource,) = config["datasources"]
    assert datasource["name"] == settings.datasource_name
    assert datasource["uid"] == dashboards.datasource_uid(settings)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", datasource["uid"])
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["access"] == "proxy"
    # A site's existing default datasource keeps its place.
    assert datasource["isDefault"] is False
    for dashboard in parse_dashboards(dashboards.artefacts(settings)).values():
        (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
        assert variable["current"]["value"] == datasource["uid"]
        assert variable["current"]["text"] == settings.datasource_name
    assert DATASOURCE_UID == dashboards.datasource_uid(Settings())


def test_dashboard_provider_reads_the_mounted_dashboards() -> None:
    config = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "dashboards.yml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "Model monitoring"
    assert provider["options"]["path"] == DASHBOARDS_MOUNT


# --- dashboard structure ----------------------------------------------------------------------


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _query_text(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_dashboard_settings(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    assert dashboard["title"]
    assert dashboard["id"] is None  # provisioning assigns database ids
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["tags"] == list(Settings().dashboard_tags)
    assert dashboard["refresh"] == Settings().dashboard_refresh
    assert dashboard["time"]["from"].startswith("now-")


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_panels_have_ids_titles_descriptions_and_the_datasource(uid: str) -> None:
    panels = list(iter_panels(DASHBOARDS[uid]))
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {uid}"
    for panel in panels:
        assert panel.get("title"), panel["id"]
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{uid} panel {panel['id']} has no description"
        assert panel["datasource"] == PANEL_DATASOURCE
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{uid} panel {panel['id']}: unit"


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_panel_titles_are_unique(uid: str) -> None:
    titles = [p["title"] for p in iter_panels(DASHBOARDS[uid]) if p["type"] != "row"]
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_panels_do_not_overlap(uid: str) -> None:
    top = DASHBOARDS[uid]["panels"]
    assert overlapping(top) == []
    for row in top:
        assert overlapping(row.get("panels", [])) == []


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_every_panel_has_targets_with_ref_id_and_expr(uid: str) -> None:
    for panel in iter_panels(DASHBOARDS[uid]):
        if panel["type"] == "row":
            continue
        targets = panel.get("targets", [])
        assert targets, f"{uid} panel {panel['id']} has no query"
        ref_ids = [t.get("refId") for t in targets]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), (panel["id"], ref_ids)
        for target in targets:
            assert target.get("expr", "").strip(), (panel["id"], target.get("refId"))
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_required_variables(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    variables = _variables(dashboard)
    assert set(COMMON_VARIABLES + EXTRA_VARIABLES.get(uid, ())) <= set(variables)

    assert list(variables)[: len(COMMON_VARIABLES)] == list(COMMON_VARIABLES)
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == DATASOURCE_UID

    selector = 'job=~"model-exporter.*"'
    assert _query_text(variables["cluster"]) == f"label_values(model_info{{{selector}}}, cluster)"
    assert _query_text(variables["instance"]) == (
        f'label_values(model_info{{{selector}, cluster=~"$cluster", namespace=~"$namespace", '
        'job=~"$job", model=~"$model", version=~"$version"}, instance)'
    )
    # One model per dashboard; every other variable multi-valued, "All" matching an absent label.
    assert variables["model"]["multi"] is False
    for name in ("cluster", "namespace", "job", "version", "instance"):
        variable = variables[name]
        assert variable["multi"] is True and variable["includeAll"] is True
        assert variable["allValue"] == ".*"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == PANEL_DATASOURCE, variable["name"]


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_every_variable_used_is_defined(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    defined = template_variables(dashboard)
    texts = [q.expr for q in panel_queries(dashboard)]
    texts += [expr for _, expr in variable_queries(dashboard) + annotation_queries(dashboard)]
    texts += [p["title"] for p in iter_panels(dashboard)]
    for text in texts:
        substitute(text, defined)  # raises KeyError on an undefined variable


def _all_exprs() -> list[tuple[str, str]]:
    exprs = []
    for uid, dashboard in DASHBOARDS.items():
        queries = panel_queries(dashboard)
        exprs += [(f"{uid} panel {q.panel_id} {q.ref_id}", q.expr) for q in queries]
        exprs += [(f"{uid} variable {n}", e) for n, e in variable_queries(dashboard)]
        exprs += [(f"{uid} annotation {n}", e) for n, e in annotation_queries(dashboard)]
    return exprs


def test_recording_rules_used_are_documented() -> None:
    documented = documented_rules()
    unknown = {
        (where, name)
        for where, expr in _all_exprs()
        for name in metric_names(expr)
        if ":" in name and name not in documented
    }
    assert unknown == set()


def test_metrics_used_are_in_the_catalogue_or_prometheus_builtins() -> None:
    known = documented_metrics() | PROMETHEUS_BUILTINS
    unknown = {
        (where, name)
        for where, expr in _all_exprs()
        for name in metric_names(expr)
        if ":" not in name and name not in known
    }
    assert unknown == set()


def test_every_recording_rule_is_on_a_dashboard() -> None:
    used = {name for _, expr in _all_exprs() for name in metric_names(expr)}
    assert documented_rules(drawn_only=True) - used == set()


def test_every_alert_input_rule_is_read_by_a_rule() -> None:
    inputs = documented_rules() - documented_rules(drawn_only=True)
    assert "model_feature_bin:model_feature_expected:share1h" in inputs
    read = {
        name
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        for name in metric_names(str(rule["expr"]))
    }
    assert inputs - read == set()


def test_panels_use_recording_rules_where_one_exists() -> None:
    offenders = []
    for uid, dashboard in DASHBOARDS.items():
        for query in panel_queries(dashboard):
            where = f"{uid} panel {query.panel_id} {query.ref_id}"
            for name in metric_names(query.expr) & set(RULE_INSTEAD_OF):
                offenders.append((where, name, RULE_INSTEAD_OF[name]))
            if "histogram_quantile" in query.expr and (
                "model_prediction_duration_seconds_bucket" in query.expr
            ):
                offenders.append((where, "latency quantile", "…:p50_5m / p95_5m / p99_5m"))
            if re.search(r"model_outcomes_total\{[^}]*\bcorrect\b", query.expr):
                offenders.append((where, "accuracy", "model:model_outcomes:accuracy1h / 7d"))
    assert offenders == []


def test_rate_over_raw_counters_uses_rate_interval() -> None:
    offenders = [
        (where, window)
        for where, expr in _all_exprs()
        for window in re.findall(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", expr)
        if window != "$__rate_interval"
    ]
    assert offenders == []


@pytest.mark.parametrize("settings", [Settings(), CUSTOM], ids=["default", "custom"])
def test_dashboards_link_to_each_other_under_the_path_prefix(settings: Settings) -> None:
    generated = parse_dashboards(dashboards.artefacts(settings))
    prefix = settings.grafana_path_prefix
    for uid, dashboard in generated.items():
        links = dashboard["links"]
        assert all(link["url"].startswith(f"{prefix}/d/") for link in links), links
        for other in EXPECTED_UIDS - {uid}:
            matching = [link for link in links if link["url"].startswith(f"{prefix}/d/{other}/")]
            assert matching, f"{uid} has no link to {other}"
            assert matching[0]["includeVars"] and matching[0]["keepTime"]


# --- the linter -------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_committed_dashboard_passes_the_linter(uid: str) -> None:
    assert lint(DASHBOARDS[uid], Settings(), versioned_rules()) == []


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_custom_settings_dashboard_passes_the_linter(uid: str) -> None:
    assert lint(CUSTOM_DASHBOARDS[uid], CUSTOM, versioned_rules()) == []


def test_custom_settings_leave_no_trace_of_the_defaults() -> None:
    defaults = Settings()
    traces = [
        defaults.selector,
        *defaults.fleet_labels,
        defaults.datasource_name,
        dashboards.datasource_uid(defaults),
        *(json.dumps(tag) for tag in defaults.dashboard_tags),
        f'"refresh": "{defaults.dashboard_refresh}"',
        '"/d/',
    ]
    found = [
        (path, trace)
        for path, text in dashboards.artefacts(CUSTOM).items()
        for trace in traces
        if trace in text
    ]
    assert found == []
    for dashboard in CUSTOM_DASHBOARDS.values():
        assert dashboard["tags"] == ["fares-team"] and dashboard["refresh"] == "5m"
        names = [v["name"] for v in dashboard["templating"]["list"]]
        assert names[:6] == ["datasource", "region", "job", "model", "version", "instance"]


#: Every threshold key overridden, each with a value no default and no other number of the
#: dashboards has.
OVERRIDDEN = {
    "error_ratio": 0.07,
    "latency_p95_seconds": 0.35,
    "latency_p95_critical_seconds": 0.9,
    "psi_warning": 0.13,
    "psi_critical": 0.33,
    "zscore_warning": 1.7,
    "zscore_critical": 2.6,
    "output_psi": 0.41,
    "mae_warning": 4.2,
    "mae_critical": 6.3,
    "accuracy_min": 0.77,
    "accuracy_drop": 0.15,
    "low_confidence_share": 0.22,
    "invalid_ratio": 0.09,
    "min_samples": 150,
    "candidate_z_critical": 3.9,
    "candidate_min_samples": 450,
}
#: The shipped defaults as the dashboards wrote them: numbers and percentages.
OLD_DEFAULTS = {"0.05", "5%", "0.5", "0.1", "0.10", "10%", "0.25", "1.5", "2", "2.0", "3.5"}
OLD_DEFAULTS |= {"5.0", "5", "0.3", "30%", "100", "1"}
#: Numbers of the descriptions that are not thresholds: the monitor's confidence cut points and
#: buckets, the KS test's significance level, the MAE buckets, the within-$X distances, windows
#: and formulas.
NOT_THRESHOLDS = (
    "below 0.5",
    "(< 0.5)",
    "(>= 0.8)",
    "(0.1 … 0.9, 0.95, 0.99, 1)",
    "Below 0.05 (red)",
    "within 5 of",
    "up to 2, 5 and 10",
    "(0.1 … 100)",
    "100,000",
    " 5 minutes",
    "bins − 1",
    "(1 − accuracy_drop)",
)
#: Panels whose colour steps are not alert thresholds: (title, steps). The coverage's colours,
#: the KS test's significance level, and counts coloured from the first one.
STEPS_NOT_THRESHOLDS = {
    "Ground-truth coverage (1h)": [0.1, 0.5],
    "KS p-value per process": [0.05],
    "Critical alerts firing": [1],
    "Warning alerts firing": [1],
    "Alerts pending": [1],
    "Expired outcomes (time range)": [1],
}
_NUMBER = re.compile(r"(?<![\w.$-])\d+(?:\.\d+)?%?(?![\w.])")


def test_dashboards_show_the_thresholds_of_the_settings() -> None:
    """A site's threshold defaults reach every colour step, dashed line and description that shows
    a threshold, and none of the shipped defaults remains there."""
    settings = Settings(thresholds=OVERRIDDEN)
    steps: dict[str, list[float]] = {}
    descriptions: dict[str, str] = {}
    for uid, *_ in dashboards.DASHBOARDS:
        for panel in iter_panels(dashboards.dashboard(settings, uid)):
            if panel["type"] == "row":
                continue
            values = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            steps[panel["title"]] = [s["value"] for s in values if s["value"] is not None]
            descriptions[panel["title"]] = panel["description"]
    o = OVERRIDDEN
    expected = {
        "Error ratio (5m)": [o["error_ratio"]],
        "Error ratio by version": [o["error_ratio"]],
        "Latency p95 (5m)": [o["latency_p95_seconds"], o["latency_p95_critical_seconds"]],
        "Latency p50 / p95 / p99": [o["latency_p95_seconds"], o["latency_p95_critical_seconds"]],
        "Low-confidence share (5m)": [o["low_confidence_share"]],
        "Low-confidence share by version": [o["low_confidence_share"]],
        "Invalid input ratio (5m)": [o["invalid_ratio"]],
        "Invalid input ratio by version": [o["invalid_ratio"]],
        "PSI per feature, last hour": [o["psi_warning"], o["psi_critical"]],
        "PSI per feature, last day": [o["psi_warning"], o["psi_critical"]],
        "PSI now": [o["psi_warning"], o["psi_critical"]],
        "PSI per process": [o["psi_warning"], o["psi_critical"]],
        "Mean shift (z-score), last hour": [o["zscore_warning"], o["zscore_critical"]],
        "z-score per process": [o["zscore_warning"], o["zscore_critical"]],
        "Output PSI (fleet-wide)": [o["output_psi"]],
        "Window samples": [o["min_samples"]],
        "MAE (1h)": [o["mae_warning"], o["mae_critical"]],
        "MAE and RMSE (1h)": [o["mae_warning"], o["mae_critical"]],
        "Candidate worse than the primary (standard errors)": [o["candidate_z_critical"]],
    }
    assert {title: steps[title] for title in expected} == expected
    stale = {
        title: values
        for title, values in steps.items()
        if {f"{v:g}" for v in values} & OLD_DEFAULTS and title not in STEPS_NOT_THRESHOLDS
    }
    assert stale == {}
    assert {title: steps[title] for title in STEPS_NOT_THRESHOLDS} == STEPS_NOT_THRESHOLDS

    old_in_text = {}
    for title, text in descriptions.items():
        for phrase in NOT_THRESHOLDS:
            text = text.replace(phrase, "")
        found = [number for number in _NUMBER.findall(text) if number in OLD_DEFAULTS]
        if found:
            old_in_text[title] = found
    assert old_in_text == {}
    every = " ".join(descriptions.values())
    for key, value in OVERRIDDEN.items():
        assert f"{key} {value:g}" in descriptions["Alert thresholds configured for this model"]
        if key != "accuracy_min":  # no panel but the table shows it
            assert f"{value:g}" in every or f"{value * 100:g}%" in every, key
    assert "7%" in descriptions["Error ratio (5m)"]
    assert "from 0.35 s, red from 0.9 s" in descriptions["Latency p95 (5m)"]
    assert "the default 0.15" in descriptions["Accuracy: last hour vs trailing 7 days"]


def test_a_relative_threshold_follows_its_base_key_on_the_dashboards() -> None:
    """latency_p95_critical_seconds defaults to twice latency_p95_seconds, also when only the
    base is overridden."""
    settings = Settings(thresholds={"latency_p95_seconds": 0.3})
    panel = next(
        p
        for p in iter_panels(dashboards.dashboard(settings, "model-overview"))
        if p["title"] == "Latency p95 (5m)"
    )
    assert [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [
        None,
        0.3,
        0.6,
    ]
    assert "from 0.3 s, red from 0.6 s" in panel["description"]


def test_every_raw_query_honours_every_variable_and_rules_their_labels() -> None:
    """The linter's rules spelled out on one query of each kind (the promise to users)."""
    by_kind: dict[str, set[str]] = {}
    for dashboard in DASHBOARDS.values():
        for _, expr in panel_queries_and_annotations(dashboard):
            for name, matchers in vector_selectors(expr):
                by_kind.setdefault(name, set()).update(matchers)
    raw = by_kind["model_prediction_duration_seconds_bucket"]
    assert {
        'job=~"model-exporter.*"',
        'cluster=~"$cluster"',
        'namespace=~"$namespace"',
        'job=~"$job"',
        'model=~"$model"',
        'version=~"$version"',
        'instance=~"$instance"',
    } <= raw
    rule = by_kind["model:model_predictions:rate5m"]
    assert rule == {
        'cluster=~"$cluster"',
        'namespace=~"$namespace"',
        'model=~"$model"',
        'version=~"$version"',
    }
    drift = by_kind["model_feature:model_feature_psi:1h"]
    # The drift rules keep the version (each is compared with its own reference profile).
    assert rule <= drift
    assert 'version=~"$version"' not in by_kind["model_alert:model_alert_threshold:effective"]
    assert {'model=~"$model|"', 'version=~"$version|"'} <= by_kind["ALERTS"]


def test_scope_markers_expand_by_series_kind_and_refuse_what_they_cannot_scope() -> None:
    scope = dashboards.Scope(CUSTOM)
    assert scope.expand('sum by (@fleet, le) (x_bucket{@, le!="+Inf"})') == (
        "sum by (region, le) (x_bucket{"
        'job="fares", region=~"$region", job=~"$job", model=~"$model", version=~"$version", '
        'instance=~"$instance", le!="+Inf"})'
    )
    assert scope.expand("model_feature:model_feature_psi:1h{@}") == (
        'model_feature:model_feature_psi:1h{region=~"$region", model=~"$model", '
        'version=~"$version"}'
    )
    assert scope.expand("model_alert:model_alert_threshold:effective{@}") == (
        'model_alert:model_alert_threshold:effective{region=~"$region", model=~"$model"}'
    )
    with pytest.raises(ValueError, match="receiver"):
        scope.expand("model_alert_notifications_total{@}")
    with pytest.raises(ValueError, match="marker"):
        scope.expand("sum by (@cluster) (x{@})")


def panel_queries_and_annotations(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    queries = [(str(q.panel_id), q.expr) for q in panel_queries(dashboard)]
    return queries + annotation_queries(dashboard)


def test_linter_reports_what_it_promises_to() -> None:
    broken = json.loads(json.dumps(DASHBOARDS["model-overview"]))
    panels = [p for p in iter_panels(broken) if p["type"] != "row"]
    first, second = panels[0], panels[1]
    first["targets"][0]["expr"] = 'sum(model:model_predictions:rate5m{model=~"$model"})'
    second["targets"][0]["expr"] = 'rate(model_predictions_total{model=~"$model"}[5m])'
    second["targets"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    second["id"] = first["id"]
    second["gridPos"] = dict(first["gridPos"])
    del second["fieldConfig"]["defaults"]["unit"]
    problems = "\n".join(lint(broken, Settings(), versioned_rules()))
    assert 'recording rule model:model_predictions:rate5m lacks cluster=~"$cluster"' in problems
    assert 'version=~"$version"' in problems
    assert "raw series model_predictions_total lacks" in problems
    assert 'instance=~"$instance", job=~"$job", job=~"model-exporter.*"' in problems
    assert "datasource" in problems
    assert "panel ids" in problems
    assert "overlap" in problems
    assert "no unit" in problems


# --- PromQL syntax against a real Prometheus --------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus with no targets and no data, on 127.0.0.1, stopped after the module."""
    binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    log = workdir / "prometheus.log"
    port = free_port()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/-/ready", process, log, "prometheus")
        yield url
    finally:
        terminate(process)


def _query(url: str, expr: str) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(f"{url}/api/v1/query", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.mark.stack
@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_every_query_parses_in_prometheus(prometheus_url: str, uid: str, custom: bool) -> None:
    dashboard = (CUSTOM_DASHBOARDS if custom else DASHBOARDS)[uid]
    variables = template_variables(dashboard)
    queries = [(f"panel {q.panel_id} {q.ref_id}", q.expr) for q in panel_queries(dashboard)]
    queries += [(f"variable {n}", e) for n, e in variable_queries(dashboard)]
    queries += [(f"annotation {n}", e) for n, e in annotation_queries(dashboard)]
    failures = []
    for where, expr in queries:
        promql = substitute(expr, variables)
        status, body = _query(prometheus_url, promql)
        if status != 200 or body.get("status") != "success":
            failures.append(f"{where}: {promql}\n  -> {status} {body.get('error')}")
    assert not failures, "\n".join(failures)
