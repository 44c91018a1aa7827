"""What a health summary is made of: the evidence read from a source, the judged signals and the
summary of one model version.

Two sources fill :class:`Evidence` (the fleet through Prometheus' recorded series,
:mod:`exporter.status.prometheus`, and one service's own process, :mod:`exporter.status.local`);
:mod:`exporter.status.assess` judges it against the model's thresholds the same way for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

State = Literal["ok", "warning", "critical"]
#: From best to worst: the overall state is the worst of its parts.
STATES: tuple[State, ...] = ("ok", "warning", "critical")
Severity = Literal["info", "warning", "critical"]

#: The feature name of the model's own output in every drift series.
OUTPUT_FEATURE = "__prediction__"


def worst(states: tuple[State, ...] | list[State]) -> State:
    """The worst of ``states`` (``ok`` for none)."""
    return max(states, key=STATES.index, default="ok")


@dataclass(frozen=True)
class FeatureDriftEvidence:
    """PSI of one feature (or of the output) over one window."""

    feature: str
    psi: float | None
    #: PSI minus what sampling noise alone gives at this sample size; None under 30 values.
    psi_excess: float | None
    samples: float | None
    #: Whether the G-test over the same values calls the shift significant (p < 1e-5), as the
    #: drift alerts require besides the PSI; None when the source cannot tell.
    significant: bool | None = None


@dataclass(frozen=True)
class PerformanceEvidence:
    """Performance against ground truth over one window: MAE (regression) or accuracy."""

    metric: Literal["mae", "accuracy"]
    value: float | None
    #: The one-sided 99% bound the alerts judge: MAE's lower bound, accuracy's upper bound.
    bound: float | None
    outcomes: float | None
    #: What the value is compared with for a change: MAE's or accuracy's earlier level.
    baseline: float | None = None


@dataclass(frozen=True)
class ComparisonEvidence:
    """A candidate version against the primary of its fleet on one metric over one window, as
    the versions group records it (``model_metric:model_compare_*``, the statistic of
    ``model_metric:model_candidate_worse:zscore1h`` or ``...6h``)."""

    #: ``error_ratio``, ``accuracy`` or ``mae``, as ``model_candidate_guard`` names them.
    metric: str
    window: str
    value: float | None
    #: Calls (error ratio) or outcomes (accuracy, MAE) in the window.
    samples: float | None
    primary_version: str
    primary_value: float | None
    primary_samples: float | None
    #: Standard errors by which the candidate is worse (negative: better); None while either
    #: version lacks ``candidate_min_samples``, as in the rules.
    statistic: float | None
    #: Whether the candidate's ``alert_on`` lets ModelCandidateWorse alert on this metric.
    guarded: bool


@dataclass(frozen=True)
class FiringAlert:
    name: str
    severity: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    """The raw numbers of one model version, as a source read them; None where it has none."""

    model: str
    version: str
    #: Labels telling fleets apart (``cluster``, ``namespace``), when the series carry them.
    fleet: Mapping[str, str] = field(default_factory=dict)
    #: ``primary``, ``canary`` or ``shadow`` (``model_version_role``); "" when unknown.
    role: str = ""
    #: Effective alert thresholds by key (``model_alert_threshold`` with the rule defaults).
    thresholds: Mapping[str, float] = field(default_factory=dict)
    #: The window each group of signals covers: ``traffic`` (traffic, errors, latency, input
    #: quality), ``drift`` and ``performance`` (performance and coverage).
    windows: Mapping[str, str] = field(default_factory=dict)
    #: Predictions per second; for a source without a rate, predictions counted (``traffic_unit``).
    traffic: float | None = None
    traffic_unit: str = "predictions/s"
    #: Calls (answered or failed) in the traffic window: the ratios' sample-size guard.
    calls: float | None = None
    error_ratio: float | None = None
    #: Failed calls in the traffic window by exception class.
    errors_by_kind: Mapping[str, float] = field(default_factory=dict)
    latency_p95_seconds: float | None = None
    invalid_ratio: float | None = None
    #: Invalid share of each feature's values in the traffic window.
    invalid_by_feature: Mapping[str, float] = field(default_factory=dict)
    drift: tuple[FeatureDriftEvidence, ...] = ()
    performance: PerformanceEvidence | None = None
    #: Outcomes received / predictions made in the performance window.
    ground_truth_coverage: float | None = None
    #: Whether ground truth ever arrived (over 7 days for Prometheus); None when unknown.
    had_ground_truth: bool | None = None
    alerts: tuple[FiringAlert, ...] = ()
    #: A candidate's comparisons with its primary, one per metric; none for a primary.
    comparisons: tuple[ComparisonEvidence, ...] = ()


@dataclass(frozen=True)
class Signal:
    """One judged number: its value against the threshold that decides its state."""

    name: str
    value: float | None
    threshold: float | None
    window: str
    state: State
    unit: str = ""
    #: For drift, the feature; otherwise empty.
    feature: str = ""
    #: Why the state is what it is when the value alone does not say (too few samples...).
    note: str = ""
    #: For a candidate's comparison with its primary, the metric compared; otherwise empty.
    metric: str = ""


@dataclass(frozen=True)
class Recommendation:
    rule: str
    severity: Severity
    text: str


@dataclass(frozen=True)
class ModelStatus:
    """The health summary of one model version."""

    model: str
    version: str
    fleet: Mapping[str, str]
    state: State
    #: traffic, error_ratio, latency_p95, invalid_ratio, performance, ground_truth_coverage.
    signals: tuple[Signal, ...]
    #: Input features, the most drifted first.
    drift: tuple[Signal, ...]
    output_drift: Signal | None
    alerts: tuple[FiringAlert, ...]
    recommendations: tuple[Recommendation, ...]
    #: ``primary``, ``canary`` or ``shadow``; "" when the source does not say.
    role: str = ""
    #: A candidate's comparisons with the primary (``worse_than_primary`` signals, by metric).
    comparisons: tuple[Signal, ...] = ()

    def signal(self, name: str) -> Signal | None:
        return next((s for s in self.signals if s.name == name), None)
