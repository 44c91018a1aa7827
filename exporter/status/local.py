"""``GET /status`` of one service: the health summary of its model as its own process sees it.

The counters on the service's registry (every worker's, with several workers) since the process
started, and the monitor's own windows for drift and performance. It knows nothing of the other
replicas or of the alerts firing, and says so: the fleet view is ``model-exporter status
--prometheus URL``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from exporter.status.model import (
    OUTPUT_FEATURE,
    ComparisonEvidence,
    Evidence,
    FeatureDriftEvidence,
    PerformanceEvidence,
)
from exporter.status.render import document
from exporter.status.signals import thresholds_in_force
from exporter.status.summary import summarize

if TYPE_CHECKING:
    from exporter.monitor import FeatureDrift, ModelMonitor, WindowPerformance

    # The module, not the package: the package imports the app, which imports this module.
    from exporter.server._service import Service

SOURCE = "this process"
SINCE_START = "since start"
#: The drift and performance window shown when the monitor keeps it; else its longest.
PREFERRED_WINDOW = "1h"
#: The rules' PSI excess exists only over this many values (recording.yml).
MIN_DRIFT_VALUES = 30
#: Expected successes and failures each version needs before two proportions are compared.
MIN_EXPECTED = 10
#: Not inputs: the output, its confidence and the ground truth are counted among the invalid
#: values under these names.
NOT_INPUTS = frozenset({OUTPUT_FEATURE, "__confidence__", "__actual__"})


def status_of_service(service: Service) -> dict[str, Any]:
    """The JSON document of ``GET /status``: each model version the service serves (the primary
    first, then its candidates), read from this process."""
    monitors = _monitors(service)
    if not service.reader:
        for monitor in monitors:
            monitor.flush()  # the held-back per-bin counts reach the counters first
    samples = list(_samples(service))
    window = _window(monitors[0].windows)
    roles = _roles(service)
    evidence = [
        replace(
            evidence_of(m, list(_own_samples(samples, m.model_labels)), _window(m.windows)),
            role=roles.get(m.version, ""),
        )
        for m in monitors
    ]
    own = {m.version: list(_own_samples(samples, m.model_labels)) for m in monitors}
    guards = _guards(service)
    primary = evidence[0]
    evidence[1:] = [
        replace(e, comparisons=compare(own[e.version], own[primary.version], primary,
                                       guards.get(e.version, ())))
        for e in evidence[1:]
    ]  # fmt: skip
    note = (
        f"counts of this process since it started (every worker's, with several), drift and "
        f"performance over its {window} window; no other replica and no alert is seen here. The "
        "fleet view, with the alerts firing, is `model-exporter status --prometheus URL`."
    )
    if len(evidence) > 1:
        note += (
            " Candidates are compared with the primary on this process's counts since it "
            "started, by the rules' tests and guards; ModelCandidateWorse judges the fleet's hour."
        )
    return document([summarize(e) for e in evidence], source=SOURCE, note=note)


def _guards(service: Service) -> dict[str, tuple[str, ...]]:
    """The metrics each candidate may alert on (its ``alert_on``, or the defaults)."""
    versions = getattr(service, "versions", ())
    return {
        v.monitor.version: tuple(service.config.candidate_alerts(v.candidate))
        for v in versions if v.candidate is not None
    }  # fmt: skip


def _arms(samples: list[Sample]) -> dict[str, tuple[float, float, float | None]]:
    """Per compared metric, one version's (n, value, variance of |error| for MAE) since start,
    from its counters, as the versions group reads them over the hour."""
    arms: dict[str, tuple[float, float, float | None]] = {}
    errors = sum(_sum(samples, "model_prediction_errors_total").values())
    calls = sum(_sum(samples, "model_predictions_total").values()) + errors
    if calls > 0:
        arms["error_ratio"] = (calls, errors / calls, None)
    outcomes = _sum(samples, "model_outcomes_total", "correct")
    total = sum(outcomes.values())
    if total > 0:
        arms["accuracy"] = (total, outcomes.get("true", 0.0) / total, None)
    count = sum(_sum(samples, "model_absolute_error_count").values())
    if count > 0:
        absolute = sum(_sum(samples, "model_absolute_error_sum").values())
        squared = sum(_sum(samples, "model_squared_error_total").values())
        variance = max((squared - absolute**2 / count) / (count - 1), 0.0) if count > 1 else None
        arms["mae"] = (count, absolute / count, variance)
    return arms


def statistic(
    metric: str, candidate: tuple[float, float, float | None],
    primary: tuple[float, float, float | None], min_samples: float,
) -> float | None:  # fmt: skip
    """Standard errors by which the candidate is worse, as recording.yml's versions group
    computes it (pooled z for the proportions, on the loss; Welch's t for MAE); None under its
    guards: ``min_samples`` in each, and 10 expected successes and failures in each."""
    (n_c, v_c, var_c), (n_p, v_p, var_p) = candidate, primary
    if min(n_c, n_p) < min_samples:
        return None
    if metric == "mae":
        if var_c is None or var_p is None:
            return None
        error = math.sqrt(var_c / n_c + var_p / n_p)
    else:
        pooled = (v_c * n_c + v_p * n_p) / (n_c + n_p)
        if min(n * share for n in (n_c, n_p) for share in (pooled, 1 - pooled)) < MIN_EXPECTED:
            return None
        error = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_p))
    if not error > 0:
        return None
    worse = v_p - v_c if metric == "accuracy" else v_c - v_p  # the loss: 1 - accuracy
    return worse / error


def compare(
    candidate: list[Sample], primary: list[Sample], primary_evidence: Evidence,
    guarded: tuple[str, ...],
) -> tuple[ComparisonEvidence, ...]:  # fmt: skip
    """A candidate's comparisons with the primary on every metric both have counted."""
    floor = thresholds_in_force(primary_evidence.thresholds).get("candidate_min_samples", 0.0)
    mine, theirs = _arms(candidate), _arms(primary)
    return tuple(
        ComparisonEvidence(
            metric=metric, window=SINCE_START, value=mine[metric][1], samples=mine[metric][0],
            primary_version=primary_evidence.version, primary_value=theirs[metric][1],
            primary_samples=theirs[metric][0],
            statistic=statistic(metric, mine[metric], theirs[metric], floor),
            guarded=metric in guarded,
        )
        for metric in sorted(set(mine) & set(theirs))
    )  # fmt: skip


def _roles(service: Service) -> dict[str, str]:
    """Each served version's role (``primary``, ``canary``, ``shadow``); a service of one
    version serves its primary."""
    versions = getattr(service, "versions", ())
    if not versions:
        return {service.monitor.version: "primary"}
    return {v.monitor.version: v.role for v in versions}


def _monitors(service: Service) -> list[ModelMonitor]:
    """Every version's monitor. ``Service.monitors`` (the primary and its candidates) is read
    when the service has it, so the answer covers every version it serves; a service of one
    version has only ``monitor``."""
    monitors = getattr(service, "monitors", None)
    return list(monitors) if monitors else [service.monitor]


def _samples(service: Service) -> Iterable[Sample]:
    registry = service.registry
    if service.multiprocess_dir is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(service.multiprocess_dir))  # type: ignore[no-untyped-call]
    for family in registry.collect():
        yield from family.samples


def _own_samples(samples: Iterable[Sample], labels: tuple[str, str]) -> Iterable[Sample]:
    model, version = labels
    for sample in samples:
        if sample.labels.get("model") == model and sample.labels.get("version", version) == version:
            yield sample


def _window(windows: list[str]) -> str:
    return PREFERRED_WINDOW if PREFERRED_WINDOW in windows else windows[-1]


def _sum(samples: Iterable[Sample], name: str, by: str | None = None) -> dict[str, float]:
    """Samples of ``name`` summed by the value of the label ``by`` (all under "" without)."""
    totals: dict[str, float] = {}
    for sample in samples:
        if sample.name == name:
            key = sample.labels.get(by, "") if by else ""
            totals[key] = totals.get(key, 0.0) + float(sample.value)
    return totals


def _max(samples: Iterable[Sample], name: str, by: str) -> dict[str, float]:
    """A gauge's samples by the value of the label ``by``, the largest where several processes
    export it (as the thresholds rule takes it)."""
    found: dict[str, float] = {}
    for sample in samples:
        if sample.name == name:
            key = sample.labels.get(by, "")
            found[key] = max(found.get(key, -math.inf), float(sample.value))
    return found


def histogram_quantile(quantile: float, buckets: Mapping[str, float]) -> float | None:
    """The quantile of cumulative bucket counts by ``le``, interpolated within its bucket as
    Prometheus' histogram_quantile does; None without observations."""
    edges = sorted((float(le), count) for le, count in buckets.items())
    if not edges or edges[-1][1] <= 0:
        return None
    rank = quantile * edges[-1][1]
    lower_edge, lower_count = 0.0, 0.0
    for edge, count in edges:
        if count >= rank:
            if math.isinf(edge):
                return lower_edge  # above the last finite edge: its value, as Prometheus gives
            if count == lower_count:
                return edge
            return lower_edge + (edge - lower_edge) * (rank - lower_count) / (count - lower_count)
        lower_edge, lower_count = edge, count
    return None


def evidence_of(monitor: ModelMonitor, samples: list[Sample], window: str) -> Evidence:
    """The evidence of one monitor's process: its counters (``samples``, its own series only)
    and its drift snapshot's ``window``."""
    predictions = sum(_sum(samples, "model_predictions_total").values())
    errors = {k: v for k, v in _sum(samples, "model_prediction_errors_total", "error").items() if v}
    calls = predictions + sum(errors.values())
    invalid = {
        f: n for f, n in _sum(samples, "model_input_invalid_total", "feature").items()
        if f not in NOT_INPUTS
    }  # fmt: skip
    valid = {
        f: n for f, n in _sum(samples, "model_feature_bin_total", "feature").items()
        if f not in NOT_INPUTS
    }  # fmt: skip
    values = sum(invalid.values()) + sum(valid.values())
    outcomes = sum(_sum(samples, "model_absolute_error_count").values()) + sum(
        _sum(samples, "model_outcomes_total").values()
    )
    snapshot = monitor.drift()
    return Evidence(
        model=monitor.name,
        version=monitor.version,
        thresholds=_max(samples, "model_alert_threshold", "alert"),
        windows={"traffic": SINCE_START, "drift": window, "performance": window},
        traffic=predictions,
        traffic_unit="predictions",
        calls=calls,
        error_ratio=sum(errors.values()) / calls if calls else None,
        errors_by_kind=errors,
        latency_p95_seconds=histogram_quantile(
            0.95, _sum(samples, "model_prediction_duration_seconds_bucket", "le")
        ),
        invalid_ratio=sum(invalid.values()) / values if values else None,
        invalid_by_feature={f: n / (n + valid.get(f, 0.0)) for f, n in invalid.items() if n > 0},
        drift=tuple(_drift(monitor, snapshot.features, window)),
        performance=_performance(monitor, snapshot.performance.get(window)),
        ground_truth_coverage=outcomes / predictions if predictions else None,
        had_ground_truth=outcomes > 0,
    )


def _bins(monitor: ModelMonitor, feature: str) -> int | None:
    reference = monitor.reference
    if reference is None:
        return None
    profile = reference.output if feature == OUTPUT_FEATURE else reference.features.get(feature)
    return len(profile.bin_labels) if profile is not None else None


def _drift(
    monitor: ModelMonitor, features: Mapping[str, Mapping[str, FeatureDrift]], window: str
) -> Iterable[FeatureDriftEvidence]:
    for feature in sorted(features):
        drift = features[feature].get(window)
        if drift is None:
            continue
        psi = drift.psi if drift.ready else None
        bins = _bins(monitor, feature)
        excess = None
        # The same excess over the no-drift level as the recording rules', so one threshold
        # means the same in both views.
        if psi is not None and bins is not None and drift.samples >= MIN_DRIFT_VALUES:
            excess = psi - (bins - 1) / drift.samples
        yield FeatureDriftEvidence(feature, psi, excess, float(drift.samples))


def _performance(
    monitor: ModelMonitor, window: WindowPerformance | None
) -> PerformanceEvidence | None:
    metric: Literal["mae", "accuracy"] = "mae" if monitor.task == "regression" else "accuracy"
    if window is None:
        return None
    value = window.metrics.get(metric) if window.ready else None
    return PerformanceEvidence(metric, value, None, float(window.samples))
