"""Judging evidence: each number against the model's own threshold, as its alert judges it.

The states follow the alert rules (prometheus/rules/alerts.yml) so the summary and the alerts
agree: a ratio counts only over ``min_samples`` calls, drift is judged by the PSI's excess over
its no-drift level, the MAE by its 99% lower bound and accuracy by its upper bound, over at least
30 outcomes. A signal past its threshold is only *not ok now*; whether an alert fires also
depends on its ``for:`` and its other windows, so the firing alerts are listed beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.mixin.thresholds import BY_KEY, effective
from exporter.status.model import (
    OUTPUT_FEATURE,
    ComparisonEvidence,
    Evidence,
    FeatureDriftEvidence,
    Signal,
    State,
)

#: Outcomes the MAE and accuracy alerts need in a window before they judge it.
MIN_OUTCOMES = 30
#: Coverage below which a model counts as receiving no ground truth (ModelGroundTruthMissing).
NO_GROUND_TRUTH_COVERAGE = 0.01
#: Signal names, in the order they are shown.
TRAFFIC, ERROR_RATIO, LATENCY, INVALID = "traffic", "error_ratio", "latency_p95", "invalid_ratio"
COVERAGE = "ground_truth_coverage"
#: The performance signal is named after its metric.
PERFORMANCE_METRICS = ("mae", "accuracy")
#: A candidate's comparison with the primary, one signal per metric.
WORSE_THAN_PRIMARY = "worse_than_primary"
#: How each compared metric is named in a text, and what its sample is.
COMPARED = {"mae": ("MAE", "outcomes"), "accuracy": ("accuracy", "outcomes"),
            "error_ratio": ("error ratio", "calls")}  # fmt: skip


def thresholds_in_force(own: Mapping[str, float]) -> dict[str, float]:
    """Every threshold key with a value: the model's own, else the rule default (``None`` keys,
    such as ``accuracy_min`` unset, are left out)."""
    values = {}
    for key in BY_KEY:
        value = effective(key, own)
        if value is not None:
            values[key] = float(value)
    return values


@dataclass(frozen=True)
class Assessment:
    """Evidence with its signals judged: what the recommendation rules read."""

    evidence: Evidence
    thresholds: Mapping[str, float]
    signals: Mapping[str, Signal]
    #: Input features, the most drifted first.
    drift: tuple[Signal, ...]
    output_drift: Signal | None
    #: A candidate's comparisons with the primary (``worse_than_primary``), by metric.
    comparisons: tuple[Signal, ...] = ()

    def state(self, name: str) -> State:
        signal = self.signals.get(name)
        return signal.state if signal is not None else "ok"

    def value(self, name: str) -> float | None:
        signal = self.signals.get(name)
        return signal.value if signal is not None else None

    @property
    def performance(self) -> Signal | None:
        return next((self.signals[m] for m in PERFORMANCE_METRICS if m in self.signals), None)

    @property
    def drifted(self) -> tuple[Signal, ...]:
        """Input features whose drift is not ok, the most drifted first."""
        return tuple(s for s in self.drift if s.state != "ok")


def assess(evidence: Evidence) -> Assessment:
    thresholds = thresholds_in_force(evidence.thresholds)
    windows = evidence.windows
    traffic_window = windows.get("traffic", "5m")
    performance_window = windows.get("performance", "1h")
    judged = _Judge(evidence, thresholds)
    signals = [
        judged.traffic(traffic_window),
        judged.error_ratio(traffic_window),
        judged.latency(traffic_window),
        judged.invalid(traffic_window),
        judged.performance(performance_window),
        judged.coverage(performance_window),
    ]
    drift_window = windows.get("drift", "1h")
    inputs = [d for d in evidence.drift if d.feature != OUTPUT_FEATURE]
    output = next((d for d in evidence.drift if d.feature == OUTPUT_FEATURE), None)
    drift = sorted(
        (judged.drift(d, drift_window) for d in inputs),
        key=lambda s: (-(s.value if s.value is not None else -1.0), s.feature),
    )
    return Assessment(
        evidence,
        thresholds,
        {s.name: s for s in signals if s is not None},
        tuple(drift),
        judged.drift(output, drift_window) if output is not None else None,
        tuple(judged.comparison(c) for c in evidence.comparisons),
    )


class _Judge:
    """One signal per method, each deciding its state as its alert would."""

    def __init__(self, evidence: Evidence, thresholds: Mapping[str, float]) -> None:
        self.evidence, self.thresholds = evidence, thresholds
        calls, floor = evidence.calls, thresholds.get("min_samples", 0.0)
        self.few_calls = calls is not None and calls < floor
        self.few_calls_note = f"{calls or 0:.0f} calls, under min_samples {floor:g}: not judged"

    def traffic(self, window: str) -> Signal:
        value = self.evidence.traffic
        idle = value is None or value <= 0
        return Signal(
            TRAFFIC, value, None, window, "warning" if idle else "ok",
            self.evidence.traffic_unit, note="no predictions" if idle else "",
        )  # fmt: skip

    def _ratio(self, name: str, value: float | None, key: str, bad: State, window: str) -> Signal:
        threshold = self.thresholds.get(key)
        if value is None or threshold is None:
            return Signal(name, value, threshold, window, "ok", "share")
        if self.few_calls:
            return Signal(name, value, threshold, window, "ok", "share", note=self.few_calls_note)
        return Signal(name, value, threshold, window, bad if value > threshold else "ok", "share")

    def error_ratio(self, window: str) -> Signal:
        # ModelHighErrorRatio is critical only: a twentieth of calls failing is an outage.
        value = self.evidence.error_ratio
        return self._ratio(ERROR_RATIO, value, "error_ratio", "critical", window)

    def invalid(self, window: str) -> Signal:
        value = self.evidence.invalid_ratio
        return self._ratio(INVALID, value, "invalid_ratio", "warning", window)

    def latency(self, window: str) -> Signal:
        value = self.evidence.latency_p95_seconds
        warning = self.thresholds.get("latency_p95_seconds")
        critical = self.thresholds.get("latency_p95_critical_seconds")
        if value is None or warning is None:
            return Signal(LATENCY, value, warning, window, "ok", "seconds")
        if self.few_calls:
            return Signal(LATENCY, value, warning, window, "ok", "seconds",
                          note=self.few_calls_note)  # fmt: skip
        if critical is not None and value > critical:
            return Signal(LATENCY, value, critical, window, "critical", "seconds")
        return Signal(LATENCY, value, warning, window, "warning" if value > warning else "ok",
                      "seconds")  # fmt: skip

    def drift(self, drift: FeatureDriftEvidence, window: str) -> Signal:
        name = "drift"
        if drift.feature == OUTPUT_FEATURE:
            name = "output_drift"
            levels: tuple[tuple[str, State], ...] = (("output_psi", "warning"),)
        else:
            levels = (("psi_critical", "critical"), ("psi_warning", "warning"))
        first = self.thresholds.get(levels[-1][0])
        if drift.psi_excess is None:
            note = "too few values to judge" if drift.psi is not None else "no values"
            return Signal(name, drift.psi, first, window, "ok", "PSI", drift.feature, note)
        for key, state in levels:
            threshold = self.thresholds.get(key)
            if threshold is not None and drift.psi_excess > threshold:
                if drift.significant is False:
                    # As the alerts judge it: past the threshold, but the G-test over the same
                    # values does not yet tell the shift from noise.
                    return Signal(name, drift.psi, threshold, window, "ok", "PSI", drift.feature,
                                  "past the threshold, not yet significant (G-test)")  # fmt: skip
                return Signal(name, drift.psi, threshold, window, state, "PSI", drift.feature,
                              f"{drift.psi_excess:.3f} above its no-drift level")  # fmt: skip
        return Signal(name, drift.psi, first, window, "ok", "PSI", drift.feature)

    def performance(self, window: str) -> Signal | None:
        perf = self.evidence.performance
        if perf is None:
            return None
        unit = "the target's unit" if perf.metric == "mae" else "share"
        name = perf.metric
        outcomes = perf.outcomes or 0.0
        if perf.value is None or outcomes < MIN_OUTCOMES:
            note = f"{outcomes:.0f} outcomes, under {MIN_OUTCOMES}: not judged"
            return Signal(name, perf.value, None, window, "ok", unit, note=note)
        if perf.metric == "mae":
            return self._mae(name, perf.value, perf.bound, window, unit)
        return self._accuracy(name, perf.value, perf.bound, perf.baseline, outcomes, window, unit)

    def _mae(self, name: str, value: float, bound: float | None, window: str, unit: str) -> Signal:
        judged = bound if bound is not None else value
        levels: tuple[tuple[str, State], ...] = (("mae_critical", "critical"),
                                                 ("mae_warning", "warning"))  # fmt: skip
        for key, state in levels:
            threshold = self.thresholds.get(key)
            if threshold is not None and judged > threshold:
                note = f"99% lower bound {bound:.3g}" if bound is not None else ""
                return Signal(name, value, threshold, window, state, unit, note=note)
        return Signal(name, value, self.thresholds.get("mae_warning"), window, "ok", unit)

    def _accuracy(
        self, name: str, value: float, bound: float | None, baseline: float | None,
        outcomes: float, window: str, unit: str,
    ) -> Signal:  # fmt: skip
        floor = self.thresholds.get("accuracy_min")
        judged = bound if bound is not None else value
        if floor is not None and judged < floor:
            note = f"99% upper bound {bound:.3g}" if bound is not None else ""
            return Signal(name, value, floor, window, "critical", unit, note=note)
        drop = self.thresholds.get("accuracy_drop")
        if baseline is not None and drop is not None:
            limit = baseline * (1 - drop)
            enough = outcomes >= self.thresholds.get("min_samples", 0.0)
            state: State = "warning" if enough and value < limit else "ok"
            return Signal(name, value, limit, window, state, unit,
                          note=f"7-day accuracy {baseline:.3g}")  # fmt: skip
        return Signal(name, value, floor, window, "ok", unit)

    def coverage(self, window: str) -> Signal | None:
        value = self.evidence.ground_truth_coverage
        if value is None and self.evidence.performance is None:
            return None
        # Missing ground truth is a fault only for a model that used to get it (the
        # ModelGroundTruthMissing alert's condition); a model that never does is merely blind.
        lost = (
            (value is None or value < NO_GROUND_TRUTH_COVERAGE)
            and bool(self.evidence.had_ground_truth)
            and (self.evidence.traffic or 0) > 0
        )
        return Signal(COVERAGE, value, NO_GROUND_TRUTH_COVERAGE, window,
                      "warning" if lost else "ok", "share")  # fmt: skip

    def comparison(self, compared: ComparisonEvidence) -> Signal:
        """How many standard errors worse than the primary, against candidate_z_critical, as
        ModelCandidateWorse judges it (a warning; only on the metrics of ``alert_on``)."""
        critical = self.thresholds.get("candidate_z_critical")
        z, metric = compared.statistic, compared.metric
        name, sample = COMPARED.get(metric, (metric, "samples"))
        shown = number if metric == "mae" else percent
        note = (
            f"{name} {shown(compared.value)} ({compared.samples or 0:.0f} {sample}) vs "
            f"{shown(compared.primary_value)} for primary {compared.primary_version or '-'} "
            f"({compared.primary_samples or 0:.0f})"
        )
        state: State = "ok"
        if z is None:
            floor = self.thresholds.get("candidate_min_samples", 0.0)
            if min(compared.samples or 0.0, compared.primary_samples or 0.0) >= floor:
                # The proportions' other guard: 10 expected failures and successes in each.
                note += ": too few failures (or successes) to compare"
            else:
                note += f": under candidate_min_samples {floor:g}, not compared"
        elif critical is not None and z > critical:
            if compared.guarded:
                state = "warning"
            else:
                note += "; not in its alert_on, so no alert"
        return Signal(WORSE_THAN_PRIMARY, z, critical, compared.window, state,
                      "standard errors", note=note, metric=metric)  # fmt: skip


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.3g}%"
