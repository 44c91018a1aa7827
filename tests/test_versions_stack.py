"""The version comparison live: a real Prometheus with the generated rules scrapes a primary and
its candidates, and the recorded statistics are scipy's on the counts Prometheus itself reports.

A tiny HTTP server in this process stands in for ``model-exporter serve`` with candidates: its
/metrics is the exporter's exposition (the same families, labels, order and number format as a
real /metrics of a service with a canary), for three models, and every counter grows by a fixed
step at each scrape, from 0 at the first one:

* ``vclass`` (classification): primary v1 right on 90% of its outcomes, canary v2 on 75% and
  failing more calls (guard: accuracy only), shadow v3 on 95% (guards: accuracy, error ratio);
* ``vfare`` (regression): primary v1 with an MAE of 3, canary v2 of 4 (guard: mae);
* ``vtiny``: two outcomes a scrape, under ``candidate_min_samples`` for the whole test.

Prometheus scrapes and evaluates every second (tests/stack_helpers.py, ``for:`` cut to 3 s).
The checks: each statistic, over 1h and 6h, equals scipy's (pooled z checked by
``chi2_contingency``, Welch's t by ``ttest_ind_from_stats``) on the window's increases recorded in
the same evaluation, which carry increase()'s extrapolation; vtiny has none; ModelCandidateWorse
fires for the guarded metrics on which a candidate is worse and for nothing else; and every panel
query of the ``model-versions`` dashboard returns data (the dashboard tests/test_stack.py leaves
out: its stack has no candidate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.binaries import free_port, require_binary
from tests.grafana import (
    has_data,
    load_dashboards,
    panel_queries,
    substitute,
    template_variables,
)
from tests.stack_helpers import (
    ExpositionServer,
    PrometheusAPI,
    poll,
    prometheus_argv,
    scraping_config,
    serve_in_background,
    spawn,
    write_rule_copies,
)
from tests.test_version_significance import Version, statistics

pytestmark = pytest.mark.stack

JOB = "model-exporter-versions"
#: The statistic of each window the rules compare versions over.
STATISTIC = "model_metric:model_candidate_worse:zscore{window}"
WINDOWS = ("1h", "6h")
#: Bounds of the waits (they poll; none is a timing assertion). The statistics need three
#: scrapes of 100 outcomes (candidate_min_samples 300) and, for the shadow's error ratio, ten
#: expected failures in each version; the alert a few evaluations and its 3 s for:.
STATISTICS_TIMEOUT_SECONDS = 40.0
ALERT_TIMEOUT_SECONDS = 30.0
PANEL_TIMEOUT_SECONDS = 30.0

#: Per model and version: role, stage, guards, and each counter's step per scrape.
VERSIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("vclass", "v1"): {"role": "primary", "guards": (), "predictions": 100, "errors": 4,
                       "correct": 90, "wrong": 10, "slow": 0},
    ("vclass", "v2"): {"role": "canary", "guards": ("accuracy",), "predictions": 100,
                       "errors": 6, "correct": 75, "wrong": 25, "slow": 20},
    ("vclass", "v3"): {"role": "shadow", "guards": ("accuracy", "error_ratio"),
                       "predictions": 100, "errors": 0, "correct": 95, "wrong": 5, "slow": 0},
    ("vfare", "v1"): {"role": "primary", "guards": (), "predictions": 100, "errors": 0,
                      "count": 100, "abs_sum": 300, "squared_sum": 1500, "slow": 0},
    ("vfare", "v2"): {"role": "canary", "guards": ("mae",), "predictions": 100, "errors": 0,
                      "count": 100, "abs_sum": 400, "squared_sum": 2500, "slow": 50},
    ("vtiny", "v1"): {"role": "primary", "guards": (), "predictions": 2, "errors": 0,
                      "correct": 2, "wrong": 0, "slow": 0},
    ("vtiny", "v2"): {"role": "canary", "guards": ("accuracy",), "predictions": 2, "errors": 0,
                      "correct": 0, "wrong": 2, "slow": 0},
}  # fmt: skip
STAGES = {"primary": "production", "canary": "canary", "shadow": "shadow"}
#: The alerts the scenario must raise: (model, candidate, metric).
EXPECTED_ALERTS = {("vclass", "v2", "accuracy"), ("vfare", "v2", "mae")}
#: The latency buckets the exposition fills (a subset of the exporter's).
BUCKETS = ("0.05", "0.1", "+Inf")


#: One line of the exposition: sample name, its labels as written, value.
Sample = tuple[str, str, float]


def _labels(**labels: str) -> str:
    """Labels as prometheus_client writes them: sorted by name."""
    return ",".join(f'{name}="{value}"' for name, value in sorted(labels.items()))


def exposition(scrape: int) -> str:
    """The /metrics of the ``scrape``-th scrape (0 first): families in the exporter's order and
    format, every counter at ``scrape`` times its step."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[Sample]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{sample}{{{labels}}} {value:.1f}" for sample, labels, value in samples)

    info: list[Sample] = []
    duration: list[Sample] = []
    predictions: list[Sample] = []
    errors: list[Sample] = []
    thresholds: list[Sample] = []
    outcomes: list[Sample] = []
    abs_error: list[Sample] = []
    squared: list[Sample] = []
    roles: list[Sample] = []
    guards: list[Sample] = []
    skipped: list[Sample] = []
    for (model, version), spec in VERSIONS.items():
        mv = {"model": model, "version": version}
        info.append(("model_info", _labels(**mv, stage=STAGES[spec["role"]], reference="r"), 1))
        calls = scrape * spec["predictions"]
        slow = scrape * spec["slow"]
        for le in BUCKETS:
            count = calls - slow if le == "0.05" else calls
            duration.append(("model_prediction_duration_seconds_bucket", _labels(**mv, le=le),
                             count))  # fmt: skip
        duration.append(("model_prediction_duration_seconds_count", _labels(**mv), calls))
        duration.append(("model_prediction_duration_seconds_sum", _labels(**mv), calls * 0.02))
        classifier = "correct" in spec
        predicted = "short" if classifier else ""
        bucket = "high" if classifier else "none"
        labels = _labels(**mv, predicted=predicted, confidence_bucket=bucket)
        predictions.append(("model_predictions_total", labels, calls))
        if spec["errors"]:  # created on a version's first failure, as the exporter does
            errors.append(("model_prediction_errors_total", _labels(**mv, error="ValueError"),
                           scrape * spec["errors"]))  # fmt: skip
        thresholds.append(("model_alert_threshold", _labels(**mv, alert="min_samples"), 10))
        if classifier:
            for correct, actual, step in (("true", "short", "correct"), ("false", "long", "wrong")):
                outcomes.append(("model_outcomes_total",
                                 _labels(**mv, predicted="short", actual=actual, correct=correct),
                                 scrape * spec[step]))  # fmt: skip
        else:
            abs_error.append(("model_absolute_error_count", _labels(**mv), scrape * spec["count"]))
            abs_error.append(("model_absolute_error_sum", _labels(**mv), scrape * spec["abs_sum"]))
            squared.append(("model_squared_error_total", _labels(**mv),
                            scrape * spec["squared_sum"]))  # fmt: skip
        roles.append(("model_version_role", _labels(**mv, role=spec["role"]), 1))
        guards.extend(("model_candidate_guard", _labels(**mv, metric=m), 1) for m in spec["guards"])
        if spec["role"] == "shadow":  # one call in ten finds the shadow's threads busy
            skipped.append(("model_shadow_skipped_total", _labels(**mv), scrape * 10))
    family("model_info", "gauge", "Live model version (value 1), its stage and the reference "
           "profile it is compared to.", info)  # fmt: skip
    family("model_prediction_duration_seconds", "histogram", "Inference latency in seconds.",
           duration)  # fmt: skip
    family("model_predictions_total", "counter",
           "Predictions by predicted class (empty for regression) and confidence bucket.",
           predictions)  # fmt: skip
    family("model_prediction_errors_total", "counter", "Failed predictions by exception class.",
           errors)  # fmt: skip
    family("model_alert_threshold", "gauge", "Alert thresholds from the config.", thresholds)
    family("model_outcomes_total", "counter", "Delayed ground truth for classification.", outcomes)
    family("model_absolute_error", "histogram", "Absolute regression error.", abs_error)
    family("model_squared_error_total", "counter", "Sum of squared regression errors.", squared)
    family("model_version_role", "gauge", "Each loaded version and its role.", roles)
    family("model_candidate_guard", "gauge", "A candidate's comparison that may alert.", guards)
    family("model_shadow_skipped_total", "counter", "Shadow calls skipped because "
           "max_concurrency were in flight.", skipped)  # fmt: skip
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusAPI]:
    binary = require_binary("prometheus")
    directory = tmp_path_factory.mktemp("versions-stack")
    with contextlib.ExitStack() as stack:
        # /metrics of a service with candidates, growing by one step per scrape.
        exporter = ExpositionServer(exposition)
        serve_in_background(stack, exporter)
        rules = write_rule_copies(directory / "rules")
        config = scraping_config({JOB: [exporter.address]}, rules)
        path = directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        argv = prometheus_argv(binary, path, directory / "data", port)
        service = spawn(stack, "prometheus", argv, directory, port)
        service.wait_ready("/-/ready")
        api = PrometheusAPI(service.url)
        stack.callback(api.close)
        yield api


def _key(labels: dict[str, str], *names: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, labels[name]) for name in names))


def _recorded_versions(api: PrometheusAPI, window: str, at: float) -> dict[Any, dict[str, Version]]:
    """Each model's versions over ``window`` as the rules recorded them in the evaluation at
    ``at``."""
    groups: dict[Any, dict[str, Version]] = {}

    def version(labels: dict[str, str]) -> Version:
        group = groups.setdefault((("model", labels["model"]),), {})
        return group.setdefault(labels["version"], Version())

    for element in api.query("model_role:model_version_role:dedup", at):
        version(element["metric"]).role = element["metric"]["role"]
    fields = {
        f"model:model_compare_calls:increase{window}": "calls",
        f"model:model_compare_errors:increase{window}": "errors",
        f"model:model_compare_outcomes:increase{window}": "outcomes",
        f"model:model_compare_correct:increase{window}": "correct",
        f"model:model_compare_abs_error:count{window}": "count",
        f"model:model_compare_abs_error:sum{window}": "abs_sum",
        f"model:model_compare_squared_error:sum{window}": "squared_sum",
    }
    for rule, name in fields.items():
        for element in api.query(rule, at):
            setattr(version(element["metric"]), name, float(element["value"][1]))
    return groups


@pytest.mark.parametrize("window", WINDOWS)
def test_recorded_statistics_are_scipys_on_the_recorded_increases(
    prometheus: PrometheusAPI, window: str
) -> None:
    statistic = STATISTIC.format(window=window)
    wanted = {
        ("vclass", "v2", "accuracy"), ("vclass", "v2", "error_ratio"),
        ("vclass", "v3", "accuracy"), ("vclass", "v3", "error_ratio"), ("vfare", "v2", "mae"),
    }  # fmt: skip

    def recorded() -> dict[tuple[str, str, str], float]:
        """(model, version, metric) -> sample time of every statistic."""
        found = {}
        for element in prometheus.query(f"timestamp({statistic})"):
            labels = element["metric"]
            found[(labels["model"], labels["version"], labels["metric"])] = float(
                element["value"][1]
            )
        return found

    seen = poll(lambda: wanted <= set(recorded()), timeout=STATISTICS_TIMEOUT_SECONDS)
    assert seen, f"statistics recorded: {sorted(recorded())}"
    # One evaluation: the statistics and the increases they were computed from share its time.
    at = max(recorded().values())
    values = {
        _key(e["metric"], "model", "version", "metric"): float(e["value"][1])
        for e in prometheus.query(statistic, at)
    }
    expected = statistics(_recorded_versions(prometheus, window, at))
    assert set(values) == set(expected)
    assert {(dict(k)["model"], dict(k)["version"], dict(k)["metric"]) for k in values} == wanted
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-9), key
    # vtiny's canary is right on none of its outcomes, but there are too few of them.
    assert not [key for key in values if ("model", "vtiny") in key]
    signs = {(dict(k)["version"], dict(k)["metric"]): v > 0 for k, v in values.items()}
    assert signs[("v2", "accuracy")] and signs[("v2", "error_ratio")] and signs[("v2", "mae")]
    assert not signs[("v3", "accuracy")] and not signs[("v3", "error_ratio")]


def test_the_alert_fires_for_guarded_metrics_on_which_a_candidate_is_worse(
    prometheus: PrometheusAPI,
) -> None:
    def firing() -> set[tuple[str, str, str]]:
        result = prometheus.query('ALERTS{alertname="ModelCandidateWorse",alertstate="firing"}')
        return {(e["metric"]["model"], e["metric"]["version"], e["metric"]["metric"])
                for e in result}  # fmt: skip

    assert poll(lambda: firing() >= EXPECTED_ALERTS, timeout=ALERT_TIMEOUT_SECONDS), firing()
    # vclass v2's error ratio is worse too, but has no guard; v3 is better; vtiny has no evidence.
    assert firing() == EXPECTED_ALERTS
    pending = prometheus.query('ALERTS{alertname="ModelCandidateWorse",alertstate="pending"}')
    assert pending == []


def test_every_versions_dashboard_panel_query_returns_data(prometheus: PrometheusAPI) -> None:
    """The model-versions dashboard's proof of data (tests/test_stack.py leaves it out)."""
    dashboard = load_dashboards()["model-versions"]
    variables = template_variables(dashboard, {"model": "vclass|vfare", "version": ".*"})
    queries = panel_queries(dashboard)
    assert queries
    missing = list(queries)

    def check() -> bool:
        still = []
        for query in missing:
            expr = substitute(query.expr, variables)
            if query.instant:
                result = prometheus.query(expr)
            else:
                end = _now(prometheus)
                result = prometheus.query_range(expr, end - 60, end, 2)
            if not has_data(result):
                still.append(query)
        missing[:] = still
        return not missing

    poll(check, timeout=PANEL_TIMEOUT_SECONDS, interval=2.0)
    assert missing == [], "panels without data:\n" + "\n".join(
        f"  {q.panel_id} {q.panel_title!r} {q.ref_id}: {substitute(q.expr, variables)}"
        for q in missing
    )


def _now(prometheus: PrometheusAPI) -> float:
    """Prometheus's own clock (``time()``), so a range ends where its samples are."""
    (element,) = prometheus.query("vector(time())")
    return float(element["value"][1])


def test_the_exposition_is_the_exporters_format() -> None:
    """Parsed by the parser the stack tests read real /metrics with, the same families."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f.type for f in text_string_to_metric_families(exposition(3))}
    assert families["model_predictions"] == "counter"
    assert families["model_absolute_error"] == "histogram"
    assert families["model_version_role"] == "gauge"
    assert families["model_candidate_guard"] == "gauge"
    text = exposition(3)
    assert 'model_version_role{model="vclass",role="canary",version="v2"} 1.0' in text
    outcome = _labels(
        actual="short", correct="true", model="vclass", predicted="short", version="v1"
    )
    assert f"model_outcomes_total{{{outcome}}} 270.0" in text
    assert "model_prediction_errors_total" not in {
        line.split("{")[0] for line in exposition(3).splitlines() if "vfare" in line
    }
