"""The health summary's judging and its recommendation rules, one case each, on evidence built
by hand (no Prometheus, no service)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from exporter.status import RULES, summarize
from exporter.status.model import (
    OUTPUT_FEATURE,
    ComparisonEvidence,
    Evidence,
    FeatureDriftEvidence,
    FiringAlert,
    PerformanceEvidence,
)
from exporter.status.render import document, text_table

WINDOWS = {"traffic": "5m", "drift": "1h", "performance": "1h"}


def drift(feature: str, psi: float, n: float = 5000.0) -> FeatureDriftEvidence:
    return FeatureDriftEvidence(feature, psi, psi - 9 / n, n)


#: A fare model in good health: traffic, no errors, fast, clean inputs, no drift, good MAE.
HEALTHY = Evidence(
    model="fare",
    version="v1",
    windows=WINDOWS,
    traffic=4.0,
    calls=1200.0,
    error_ratio=0.0,
    latency_p95_seconds=0.05,
    invalid_ratio=0.001,
    drift=(drift("trip_miles", 0.01), drift("hour", 0.02), drift(OUTPUT_FEATURE, 0.01)),
    performance=PerformanceEvidence("mae", 2.0, 1.9, 500.0, baseline=2.0),
    ground_truth_coverage=0.5,
    had_ground_truth=True,
)


def rules_of(evidence: Evidence) -> dict[str, str]:
    return {r.rule: r.text for r in summarize(evidence).recommendations}


def test_a_healthy_model_is_ok_with_nothing_to_do() -> None:
    status = summarize(HEALTHY)
    assert status.state == "ok"
    assert status.recommendations == ()
    assert [s.feature for s in status.drift] == ["hour", "trip_miles"]  # most drifted first
    assert status.output_drift is not None and status.output_drift.feature == OUTPUT_FEATURE
    # Thresholds are the rule defaults when the model sets none.
    assert status.signal("error_ratio").threshold == 0.05  # type: ignore[union-attr]
    assert status.signal("latency_p95").threshold == 0.5  # type: ignore[union-attr]


def test_retrain_when_drift_and_mae_rose() -> None:
    evidence = replace(
        HEALTHY,
        drift=(drift("trip_miles", 0.41), drift("hour", 0.02)),
        performance=PerformanceEvidence("mae", 2.7, 2.6, 400.0, baseline=2.0),
        thresholds={"mae_warning": 2.5, "mae_critical": 5.0},
    )
    status = summarize(evidence)
    assert status.state == "critical"  # the PSI is over psi_critical
    assert status.drift[0].feature == "trip_miles" and status.drift[0].state == "critical"
    assert rules_of(evidence)["retrain"] == (
        "trip_miles has drifted (PSI 0.41 over 1h) and MAE rose 35% (to 2.7): "
        "retrain on recent data"
    )


def test_retrain_names_the_threshold_without_a_baseline() -> None:
    evidence = replace(
        HEALTHY,
        drift=(drift("trip_miles", 0.15),),
        performance=PerformanceEvidence("mae", 10.2, 9.0, 400.0),
    )
    text = rules_of(evidence)["retrain"]
    assert text.startswith("trip_miles has drifted (PSI 0.15 over 1h) and MAE 10.2 is over its 5")


def test_watch_drift_without_a_performance_drop() -> None:
    evidence = replace(HEALTHY, drift=(drift("trip_miles", 0.2),), ground_truth_coverage=0.12)
    status = summarize(evidence)
    assert status.state == "warning"
    assert rules_of(evidence) == {
        "watch-drift": "trip_miles has drifted (PSI 0.20 over 1h) without a performance drop: "
        "watch; ground-truth coverage is 12%"
    }


def test_a_psi_past_its_threshold_that_the_g_test_calls_noise_is_not_drift() -> None:
    # A few hundred values: the PSI excess passes psi_warning, but the drift alerts also need
    # the G-test, and so does the summary.
    noisy = replace(drift("trip_miles", 0.17, n=140.0), significant=False)
    status = summarize(replace(HEALTHY, drift=(noisy,)))
    assert status.state == "ok"
    assert rules_of(replace(HEALTHY, drift=(noisy,))) == {}
    [signal] = status.drift
    assert signal.state == "ok" and "not yet significant" in (signal.note or "")
    confirmed = replace(noisy, significant=True)
    assert summarize(replace(HEALTHY, drift=(confirmed,))).state == "warning"


def test_performance_without_drift() -> None:
    evidence = replace(HEALTHY, performance=PerformanceEvidence("mae", 4.0, 3.8, 400.0))
    assert summarize(evidence).state == "warning"  # over mae_warning 3.5, under mae_critical 5
    assert rules_of(evidence)["performance-without-drift"].startswith(
        "MAE 4 is over its 3.5 threshold without input drift: check the ground truth"
    )


def test_accuracy_drop_against_the_seven_days() -> None:
    evidence = replace(
        HEALTHY, performance=PerformanceEvidence("accuracy", 0.7, 0.75, 500.0, baseline=0.9)
    )
    status = summarize(evidence)
    assert status.signal("accuracy").state == "warning"  # type: ignore[union-attr]
    assert rules_of(evidence)["performance-without-drift"].startswith(
        "accuracy fell 22% (to 70%) without input drift"
    )


def test_output_drift() -> None:
    evidence = replace(HEALTHY, drift=(drift("trip_miles", 0.01), drift(OUTPUT_FEATURE, 0.5)))
    assert summarize(evidence).state == "warning"
    assert rules_of(evidence)["output-drift"].startswith(
        "the model's output has shifted (PSI 0.50 over 1h)"
    )


def test_errors_all_of_one_kind() -> None:
    evidence = replace(HEALTHY, error_ratio=0.17, errors_by_kind={"ValueError": 170.0})
    assert summarize(evidence).state == "critical"
    assert rules_of(evidence) == {
        "errors-one-kind": "errors are all ValueError (17% of calls over 5m): check the upstream "
        "schema / the inputs"
    }


def test_errors_of_several_kinds() -> None:
    evidence = replace(
        HEALTHY, error_ratio=0.1, errors_by_kind={"KeyError": 40.0, "TimeoutError": 60.0}
    )
    assert rules_of(evidence)["errors-mixed"] == (
        "10% of calls fail over 5m (TimeoutError 60%, KeyError 40%): read the service's logs "
        "for the failures"
    )


def test_errors_over_too_few_calls_are_not_judged() -> None:
    evidence = replace(HEALTHY, calls=20.0, error_ratio=0.5, errors_by_kind={"ValueError": 10.0})
    status = summarize(evidence)
    assert status.state == "ok"
    assert "min_samples" in status.signal("error_ratio").note  # type: ignore[union-attr]


def test_latency_over_its_threshold() -> None:
    evidence = replace(HEALTHY, latency_p95_seconds=0.9)
    assert summarize(evidence).state == "warning"
    assert rules_of(evidence)["latency"].startswith(
        "latency p95 0.9 s over its 0.5 s threshold (5m)"
    )
    # Over twice the model's own warning threshold: critical, against that threshold.
    slow = replace(evidence, thresholds={"latency_p95_seconds": 0.2})
    assert summarize(slow).state == "critical"
    assert "over its 0.4 s threshold" in rules_of(slow)["latency"]


def test_invalid_inputs_on_one_feature() -> None:
    evidence = replace(
        HEALTHY, invalid_ratio=0.08, invalid_by_feature={"trip_miles": 0.16, "hour": 0.0}
    )
    assert rules_of(evidence) == {
        "invalid-input": "invalid inputs 16% on feature trip_miles (5m): check the producer"
    }


def test_no_ground_truth_ever() -> None:
    evidence = replace(HEALTHY, performance=None, ground_truth_coverage=0.0, had_ground_truth=False)
    status = summarize(evidence)
    assert status.state == "ok"  # blind, not failing
    assert rules_of(evidence) == {
        "no-ground-truth": "no ground truth: performance alerts are blind"
    }


def test_ground_truth_that_stopped() -> None:
    evidence = replace(HEALTHY, performance=None, ground_truth_coverage=0.0)
    assert summarize(evidence).state == "warning"
    assert rules_of(evidence)["ground-truth-lost"].startswith(
        "ground truth stopped arriving (coverage 0%)"
    )


def test_no_predictions() -> None:
    evidence = Evidence("fare", "v1", windows=WINDOWS, traffic=0.0)
    status = summarize(evidence)
    assert status.state == "warning"
    assert set(rules_of(evidence)) == {"no-predictions"}


def test_firing_alerts_weigh_in_the_state() -> None:
    evidence = replace(HEALTHY, alerts=(FiringAlert("ModelMAEHigh", "critical"),))
    assert summarize(evidence).state == "critical"
    info = replace(HEALTHY, alerts=(FiringAlert("Watchdog", "info"),))
    assert summarize(info).state == "ok"


def compared(
    metric: str, value: float, primary: float, z: float | None, **more
) -> ComparisonEvidence:
    fields = {"metric": metric, "window": "1h", "value": value, "samples": 812.0,
              "primary_version": "2024.06-ols", "primary_value": primary,
              "primary_samples": 7400.0, "statistic": z, "guarded": True, **more}  # fmt: skip
    return ComparisonEvidence(**fields)


#: The canary of examples/fare/monitor-canary.yml, healthy on its own but worse than the primary.
CANARY = replace(
    HEALTHY,
    version="2024.12-overcharge",
    role="canary",
    comparisons=(compared("error_ratio", 0.0, 0.0, None), compared("mae", 2.73, 1.05, 14.71)),
)


def test_a_canary_worse_than_the_primary_is_to_be_stopped() -> None:
    status = summarize(CANARY)
    assert status.state == "warning"  # ModelCandidateWorse's severity
    assert status.role == "canary"
    assert rules_of(CANARY) == {
        "candidate-worse": "canary 2024.12-overcharge is significantly worse than the primary on "
        "MAE (2.73 vs 1.05, z = 14.7 over 1h): stop the canary / roll back (drop it from "
        "`candidates`)"
    }
    error_ratio, mae = status.comparisons
    assert (mae.metric, mae.state, mae.threshold) == ("mae", "warning", 4.265)
    assert mae.note == "MAE 2.73 (812 outcomes) vs 1.05 for primary 2024.06-ols (7400)"
    # 812 calls each, over the guard, but no failure: the proportions' other guard.
    assert error_ratio.state == "ok" and "too few failures" in error_ratio.note
    few = summarize(replace(CANARY, comparisons=(compared("mae", 2.7, 1.0, None, samples=120.0),)))
    assert few.state == "ok"
    assert few.comparisons[0].note.endswith("under candidate_min_samples 300, not compared")
    # A shadow is not rolled back but kept from promotion; accuracy and error ratio as shares.
    shadow = replace(CANARY, role="shadow", comparisons=(compared("accuracy", 0.7, 0.9, 6.2),))
    assert rules_of(shadow)["candidate-worse"] == (
        "shadow 2024.12-overcharge is significantly worse than the primary on accuracy (70% vs "
        "90%, z = 6.2 over 1h): do not promote it; compare its training with the primary's"
    )


def test_a_candidate_within_noise_or_not_guarded_is_ok() -> None:
    close = replace(CANARY, comparisons=(compared("mae", 1.07, 1.05, 1.2),))
    assert summarize(close).state == "ok" and rules_of(close) == {}
    # Worse on a metric its alert_on leaves out: shown, not judged, as the alert does.
    unguarded = replace(CANARY, comparisons=(compared("mae", 2.73, 1.05, 14.7, guarded=False),))
    status = summarize(unguarded)
    assert status.state == "ok" and rules_of(unguarded) == {}
    assert "not in its alert_on" in status.comparisons[0].note
    # The alert firing speaks even when the statistic was read from the 6h window.
    alert = FiringAlert("ModelCandidateWorse", "warning", {"metric": "mae"})
    firing = replace(
        CANARY, comparisons=(compared("mae", 2.73, 1.05, 5.3, window="6h"),), alerts=(alert,)
    )
    assert "on MAE (2.73 vs 1.05, z = 5.3 over 6h)" in rules_of(firing)["candidate-worse"]
    # Firing for a metric this read has no comparison of: the alert still speaks.
    bare = replace(CANARY, comparisons=(), alerts=(alert,))
    assert rules_of(bare)["candidate-worse"] == (
        "canary 2024.12-overcharge is significantly worse than the primary on MAE "
        "(ModelCandidateWorse firing): stop the canary / roll back (drop it from `candidates`)"
    )
    # A primary has no comparison, whatever its numbers.
    assert summarize(replace(HEALTHY, role="primary")).comparisons == ()


def test_every_rule_has_a_case_above() -> None:
    covered = {
        "candidate-worse", "retrain", "performance-without-drift", "watch-drift", "output-drift",
        "errors-one-kind", "errors-mixed", "latency", "invalid-input", "ground-truth-lost",
        "no-ground-truth", "no-predictions",
    }  # fmt: skip
    assert {rule.id for rule in RULES} == covered
    assert len({rule.id for rule in RULES}) == len(RULES)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rules_document_their_condition(rule) -> None:
    assert rule.when and rule.severity in ("info", "warning", "critical")


def test_json_and_table() -> None:
    sick = replace(
        HEALTHY,
        model="intent",
        fleet={"cluster": "eu"},
        error_ratio=0.17,
        errors_by_kind={"ValueError": 3.0},
        drift=(drift("text_length", float("nan")),),
        alerts=(FiringAlert("ModelHighErrorRatio", "critical", {"model": "intent"}),),
    )
    statuses = [summarize(HEALTHY), summarize(sick), summarize(CANARY)]
    answer = document(statuses, source="prometheus http://p:9090")
    json.dumps(answer, allow_nan=False)  # NaN is reported as null
    assert [m["state"] for m in answer["models"]] == ["ok", "critical", "warning"]
    assert [m["role"] for m in answer["models"]] == [None, None, "canary"]
    assert answer["models"][2]["comparisons"][1] == {
        "name": "worse_than_primary", "value": 14.71, "threshold": 4.265, "window": "1h",
        "state": "warning", "unit": "standard errors", "metric": "mae",
        "note": "MAE 2.73 (812 outcomes) vs 1.05 for primary 2024.06-ols (7400)",
    }  # fmt: skip
    assert answer["models"][1]["recommendations"][0]["rule"] == "errors-one-kind"
    table = text_table(statuses, source="prometheus http://p:9090")
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("MODEL"))
    rows = lines[lines.index(header) + 1 : lines.index(header) + 3]
    # Aligned: every column starts where its header does.
    assert rows[0].startswith("fare ") and rows[1].startswith("intent (eu)")
    assert rows[0].index("v1") == rows[1].index("v1") == header.index("VERSION")
    assert "CRITICAL" in rows[1] and "17% !!" in rows[1]
    assert "  [critical] errors are all ValueError" in table
    canary = lines[lines.index(header) + 3]
    assert canary.startswith("fare ") and "2024.12-overcharge  canary  WARNING" in canary
    assert canary.index("mae z 14.7 !") == header.index("VS PRIMARY")
    assert "vs primary: 1h" in table
    assert "  [warning] canary 2024.12-overcharge is significantly worse" in table
