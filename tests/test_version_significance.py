"""The version comparison's statistics, proven by scipy.

The promtool cases of the versions group (prometheus/tests/recording_test.yml "versions side by
side", prometheus/tests/alerts_test.yml "ModelCandidateWorse") hold the exact values Prometheus
computes for ``model_metric:model_candidate_worse:zscore1h``. This module reads the same YAML,
recomputes every expected statistic from the cases' input series with scipy (the pooled
two-proportion z checked against ``chi2_contingency`` without continuity correction, z² = χ²;
Welch's t from ``ttest_ind_from_stats(equal_var=False)``), applies the same evidence guard, and
fails when the YAML's list of series or any of its values disagrees. It also checks the reasons
given for the default critical value and minimum sample size (docs/runbooks.md).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

from exporter.mixin.thresholds import BY_KEY

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "prometheus" / "tests"
#: The statistic of each window, by the window's length in minutes.
STATISTICS = {
    "model_metric:model_candidate_worse:zscore1h": 60,
    "model_metric:model_candidate_worse:zscore6h": 360,
}
#: (file, test name) of the promtool cases whose statistics are checked here.
CASES = (
    ("recording_test.yml", "versions side by side"),
    ("alerts_test.yml", "ModelCandidateWorse"),
    ("alerts_test.yml", "ModelCandidateWorse over 6 hours"),
)
FLEET_LABELS = ("cluster", "namespace")
#: Expected successes and failures each version needs for the normal approximation.
MIN_EXPECTED = 10
#: Prometheus and scipy add the same numbers in another order.
REL_TOLERANCE = 1e-9

_SERIES = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)\{(?P<labels>.*)\}$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_LINEAR = re.compile(r"^(?P<start>-?[\d.]+)(?:\+(?P<step>[\d.]+))?x(?P<count>\d+)$")

Key = tuple[tuple[str, str], ...]


def _labels(text: str) -> dict[str, str]:
    return dict(_LABEL.findall(text))


def _series(spec: str) -> tuple[str, dict[str, str]]:
    match = _SERIES.match(spec.strip())
    assert match, spec
    return match["name"], _labels(match["labels"])


def _increase(values: str, minute: int, window: int) -> float:
    """The increase over a ``window`` of minutes at ``minute`` of a series written ``a+bxN`` (or
    ``axN``, a constant): the samples start at 0m, so it is b x min(minute, window) exactly."""
    match = _LINEAR.match(values.strip())
    assert match, f"not a linear series: {values!r}"
    assert minute <= int(match["count"]), values
    return float(match["step"] or 0) * min(minute, window)


def _minutes(eval_time: str) -> int:
    match = re.fullmatch(r"(\d+)([mh])", eval_time)
    assert match, eval_time
    return int(match[1]) * (60 if match[2] == "h" else 1)


@dataclass
class Version:
    """One version's sums over the hour, over its replicas."""

    role: str = ""
    calls: float = 0.0
    errors: float = 0.0
    outcomes: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    abs_sum: float = 0.0
    squared_sum: float = 0.0
    guards: set[str] = field(default_factory=set)


def _versions(case: dict[str, Any], minute: int, window: int) -> dict[Key, dict[str, Version]]:
    """Each (fleet, model)'s versions at ``minute`` over ``window`` minutes, from the case's
    input series."""
    found: dict[Key, dict[str, Version]] = defaultdict(lambda: defaultdict(Version))
    for item in case["input_series"]:
        name, labels = _series(item["series"])
        if labels.get("job") != "model-exporter" or "model" not in labels:
            continue
        group = tuple((k, labels[k]) for k in (*FLEET_LABELS, "model") if k in labels)
        version = found[group][labels["version"]]
        increase = _increase(item["values"], minute, window)
        if name == "model_version_role":
            version.role = labels["role"]
        elif name == "model_candidate_guard":
            version.guards.add(labels["metric"])
        elif name == "model_predictions_total":
            version.calls += increase
        elif name == "model_prediction_errors_total":
            version.calls += increase
            version.errors += increase
        elif name == "model_outcomes_total":
            version.outcomes += increase
            version.correct += increase if labels["correct"] == "true" else 0.0
        elif name == "model_absolute_error_count":
            version.count += increase
        elif name == "model_absolute_error_sum":
            version.abs_sum += increase
        elif name == "model_squared_error_total":
            version.squared_sum += increase
    return found


def pooled_z(bad_c: float, n_c: float, bad_p: float, n_p: float) -> float | None:
    """The pooled two-proportion z of the candidate's bad share against the primary's, positive
    when the candidate's is higher; None below the evidence guard (10 expected successes and
    failures in each version). Checked against scipy's chi-square test of the 2x2 table."""
    pooled = (bad_c + bad_p) / (n_c + n_p)
    for n in (n_c, n_p):
        if n * pooled < MIN_EXPECTED or n * (1 - pooled) < MIN_EXPECTED:
            return None
    z = (bad_c / n_c - bad_p / n_p) / math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_p))
    table = np.array([[bad_c, n_c - bad_c], [bad_p, n_p - bad_p]])
    chi2 = stats.chi2_contingency(table, correction=False).statistic
    assert z**2 == pytest.approx(chi2, rel=1e-9)
    # The same test's two-sided p-value, from either form.
    p_chi2 = stats.chi2.sf(chi2, df=1)
    assert 2 * stats.norm.sf(abs(z)) == pytest.approx(p_chi2, rel=1e-6, abs=1e-300)
    return float(z)


def welch_t(candidate: Version, primary: Version) -> float | None:
    """Welch's t of the candidate's MAE against the primary's, by scipy, from the hour's sums."""
    if min(candidate.count, primary.count) < 2:
        return None
    moments = []
    for version in (candidate, primary):
        n = version.count
        mean = version.abs_sum / n
        variance = (version.squared_sum - version.abs_sum**2 / n) / (n - 1)
        moments.append((mean, math.sqrt(max(variance, 0.0)), n))
    (mean_c, std_c, n_c), (mean_p, std_p, n_p) = moments
    if std_c == 0 and std_p == 0:
        return None
    result = stats.ttest_ind_from_stats(
        mean_c, std_c, n_c, mean_p, std_p, n_p, equal_var=False, alternative="greater"
    )
    return float(result.statistic)


def _statistic(metric: str, candidate: Version, primary: Version) -> float | None:
    """scipy's statistic of one metric, positive when the candidate is worse; None below the
    evidence guard."""
    if metric == "error_ratio":
        return pooled_z(candidate.errors, candidate.calls, primary.errors, primary.calls)
    if metric == "accuracy":  # the bad share is the share of wrong outcomes
        wrong_c, wrong_p = (v.outcomes - v.correct for v in (candidate, primary))
        return pooled_z(wrong_c, candidate.outcomes, wrong_p, primary.outcomes)
    return welch_t(candidate, primary)


def _sizes(metric: str, version: Version) -> float:
    return {"error_ratio": version.calls, "accuracy": version.outcomes, "mae": version.count}[
        metric
    ]


def statistics(groups: dict[Key, dict[str, Version]]) -> dict[Key, float]:
    """Every statistic the rules must record for these versions: label set -> value. Every
    version with a role but the primary is a candidate; a model with two primaries (half way
    through a promotion) compares none."""
    min_samples = BY_KEY["candidate_min_samples"].default
    assert min_samples is not None
    expected: dict[Key, float] = {}
    for group, versions in groups.items():
        primaries = [v for v in versions.values() if v.role == "primary"]
        if len(primaries) != 1:
            continue
        (primary,) = primaries
        for name, candidate in versions.items():
            if candidate.role in ("", "primary"):
                continue
            for metric in ("error_ratio", "accuracy", "mae"):
                if min(_sizes(metric, candidate), _sizes(metric, primary)) < min_samples:
                    continue
                value = _statistic(metric, candidate, primary)
                if value is not None:
                    key = (*group, ("version", name), ("metric", metric))
                    expected[tuple(sorted(key))] = value
    return expected


def expected_statistics(case: dict[str, Any], minute: int, window: int) -> dict[Key, float]:
    """Every statistic the rules must record at ``minute`` of a promtool case over ``window``."""
    return statistics(_versions(case, minute, window))


def _cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for file, name in CASES:
        document = yaml.safe_load((TESTS / file).read_text(encoding="utf-8"))
        matching = [case for case in document["tests"] if case.get("name") == name]
        assert len(matching) == 1, f"{file}: no single test named {name!r}"
        yield file, matching[0]


def _recorded(case: dict[str, Any]) -> list[tuple[int, int, dict[Key, float]]]:
    """(minute, window, label set -> value) of each check of a statistic in ``case``."""
    checks = []
    for check in case.get("promql_expr_test", []):
        if check["expr"] not in STATISTICS:
            continue
        samples = {}
        for sample in check.get("exp_samples") or []:
            name, labels = _series(sample["labels"])
            assert name == check["expr"]
            samples[tuple(sorted(labels.items()))] = float(sample["value"])
        checks.append((_minutes(check["eval_time"]), STATISTICS[check["expr"]], samples))
    return checks


@pytest.mark.parametrize(("file", "case"), list(_cases()), ids=[name for _, name in CASES])
def test_promtool_statistics_are_scipys(file: str, case: dict[str, Any]) -> None:
    checks = _recorded(case)
    assert checks, f"{file}: {case['name']} checks no statistic"
    for minute, window, recorded in checks:
        expected = expected_statistics(case, minute, window)
        assert set(recorded) == set(expected), f"{file} at {minute}m over {window}m: series differ"
        for key, value in expected.items():
            assert recorded[key] == pytest.approx(value, rel=REL_TOLERANCE, abs=1e-12), key


def test_the_cases_cover_what_the_alert_must_tell_apart() -> None:
    """Worse, better, equal, too few samples, no guard, a shadow and a canary, two clusters."""
    (_, recording), (_, alerts), (_, slow) = _cases()
    values = {**expected_statistics(recording, 60, 60), **expected_statistics(alerts, 16, 60)}
    assert any(v > BY_KEY["candidate_z_critical"].default for v in values.values())  # type: ignore[operator]
    assert any(v < 0 for v in values.values())
    assert 0.0 in values.values()
    versions = _versions(alerts, 16, 60)
    roles = {v.role for group in versions.values() for v in group.values()}
    assert {"primary", "canary", "shadow"} <= roles
    assert {dict(group).get("cluster") for group in versions} == {"eu", "us"}
    # tiny: a huge difference, too few outcomes: no statistic. swap: two primaries, none.
    assert not [key for key in values if ("model", "tiny") in key or ("model", "swap") in key]
    # A candidate worse on a metric without a guard series: a statistic, but no alert.
    unguarded = [
        key
        for key, value in values.items()
        if value > 4.265
        and dict(key)["metric"]
        not in versions[tuple(k for k in key if k[0] in (*FLEET_LABELS, "model"))][
            dict(key)["version"]
        ].guards
    ]
    assert unguarded
    # Little traffic: the hour never holds enough outcomes, 6 hours do.
    assert expected_statistics(slow, 90, 60) == {}
    assert expected_statistics(slow, 74, 360) == {}
    assert list(expected_statistics(slow, 90, 360).values())[0] > 4.265


def test_the_default_critical_value_and_minimum_sample_size() -> None:
    critical = BY_KEY["candidate_z_critical"].default
    min_samples = BY_KEY["candidate_min_samples"].default
    assert critical is not None and min_samples is not None
    # One-sided 1e-5, the level of the drift alerts' G-test.
    assert critical == pytest.approx(stats.norm.isf(1e-5), abs=5e-4)
    # Welch's degrees of freedom are at least min(n_c, n_p) - 1: from the minimum sample size on,
    # the t tail beyond the normal critical value is at most a third above the nominal level.
    assert stats.t.sf(critical, min_samples - 1) < 1.35e-5
    assert stats.t.sf(critical, min_samples - 1) > stats.norm.sf(critical)
    # The 1-hour statistic's chance of ever crossing the critical value in a day of a canary as
    # good as the primary (Pickands: T/w u^2 (1 - Phi(u))): under half a percent per metric.
    assert 24 * critical**2 * stats.norm.sf(critical) == pytest.approx(0.0044, abs=1e-4)
    # The 6-hour window's statistic moves six times slower: 4 windows a day, about 0.07%.
    assert (24 + 4) * critical**2 * stats.norm.sf(critical) == pytest.approx(0.0051, abs=1e-4)


def test_welch_df_is_at_least_the_smaller_sample_minus_one() -> None:
    """The bound the minimum sample size relies on, on skewed |error| samples of unequal sizes."""
    rng = np.random.default_rng(7)
    for n_c, n_p in ((300, 300), (300, 5000), (1000, 300)):
        a = np.abs(rng.standard_t(3, n_c)) * 2
        b = np.abs(rng.normal(0, 1, n_p))
        va, vb = a.var(ddof=1) / n_c, b.var(ddof=1) / n_p
        df = (va + vb) ** 2 / (va**2 / (n_c - 1) + vb**2 / (n_p - 1))
        assert df >= min(n_c, n_p) - 1
