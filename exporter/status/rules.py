"""The recommendations, as data: each rule an id, a severity, a condition over the judged
signals and a text template filled from the evidence the condition returns.

A condition returns ``None`` when its rule does not apply, else the values its template needs,
already formatted. Rules are tried in the order of :data:`RULES` and every rule that applies
speaks, so a model with drift, errors and slow answers gets all three. docs/status.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from exporter.status.model import Recommendation, Severity, Signal
from exporter.status.signals import (
    COMPARED,
    COVERAGE,
    ERROR_RATIO,
    INVALID,
    LATENCY,
    NO_GROUND_TRUTH_COVERAGE,
    TRAFFIC,
    Assessment,
)

#: The share of failed calls one exception class must reach for "errors are all X".
DOMINANT_ERROR_SHARE = 0.9
#: What to do with a candidate significantly worse than the primary, by its role.
CANDIDATE_ACTIONS = {
    "canary": "stop the canary / roll back (drop it from `candidates`)",
    "shadow": "do not promote it; compare its training with the primary's",
}
CANDIDATE_WORSE_ALERT = "ModelCandidateWorse"

Fields = Mapping[str, str]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    #: The evidence to fill ``template`` with, or None when the rule does not apply.
    condition: Callable[[Assessment], Fields | None]
    template: str
    #: The condition in words, for docs/status.md.
    when: str

    def apply(self, assessment: Assessment) -> Recommendation | None:
        fields = self.condition(assessment)
        if fields is None:
            return None
        return Recommendation(self.id, self.severity, self.template.format(**fields))


# --- formatting ---------------------------------------------------------------------------------


def share(value: float | None) -> str:
    """A share as a percentage with the precision it needs: 17%, 8%, 0.4%."""
    if value is None:
        return "-"
    percent = value * 100
    return f"{percent:.0f}%" if percent >= 10 or percent == 0 else f"{percent:.2g}%"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def seconds(value: float | None) -> str:
    """A duration as people read it: 0.9 s, 12 ms."""
    if value is None:
        return "-"
    return f"{value * 1000:.3g} ms" if value < 0.1 else f"{value:.3g} s"


def _psi(signal: Signal) -> Fields:
    return {"feature": signal.feature, "psi": f"{signal.value or 0:.2f}", "window": signal.window}


def _performance_change(a: Assessment) -> str:
    """How performance moved: against its baseline when there is one, else its threshold."""
    signal = a.performance
    perf = a.evidence.performance
    if signal is None or perf is None or signal.value is None:
        return "performance dropped"
    if perf.metric == "mae":
        if perf.baseline:
            return f"MAE rose {share(signal.value / perf.baseline - 1)} (to {number(signal.value)})"
        return f"MAE {number(signal.value)} is over its {number(signal.threshold)} threshold"
    if perf.baseline:
        return f"accuracy fell {share(1 - signal.value / perf.baseline)} (to {share(signal.value)})"
    return f"accuracy {share(signal.value)} is under its {share(signal.threshold)} floor"


def _coverage(a: Assessment) -> str:
    coverage = a.value(COVERAGE)
    if coverage is None or coverage < NO_GROUND_TRUTH_COVERAGE:
        return "no ground truth arrives, so a drop would go unseen"
    return f"ground-truth coverage is {share(coverage)}"


def _performance_bad(a: Assessment) -> bool:
    return a.performance is not None and a.performance.state != "ok"


# --- conditions ---------------------------------------------------------------------------------


def _candidate_worse(a: Assessment) -> Fields | None:
    """The metrics on which a candidate is significantly worse than the primary: judged so
    from the statistic (guarded by its ``alert_on``), or ModelCandidateWorse firing for them."""
    firing = {
        alert.labels.get("metric", "") for alert in a.evidence.alerts
        if alert.name == CANDIDATE_WORSE_ALERT
    }  # fmt: skip
    worse = [c for c in a.comparisons if c.state != "ok" or c.metric in firing]
    # The alert may fire where this read has no comparison (the series lag, an old exporter).
    alert_only = sorted(firing - {c.metric for c in a.comparisons})
    if not worse and not alert_only:
        return None
    parts = []
    for signal in worse:
        compared = next(e for e in a.evidence.comparisons if e.metric == signal.metric)
        name, _ = COMPARED.get(signal.metric, (signal.metric, ""))
        shown = number if signal.metric == "mae" else share
        z = f"z = {signal.value:.1f}" if signal.value is not None else "z -"
        # "over 1h", but "since start" (GET /status) as it is.
        span = signal.window if signal.window.startswith("since") else f"over {signal.window}"
        parts.append(
            f"{name} ({shown(compared.value)} vs {shown(compared.primary_value)}, {z} {span})"
        )
    parts += [f"{COMPARED.get(m, (m, ''))[0]} (ModelCandidateWorse firing)" for m in alert_only]
    role = a.evidence.role or "candidate"
    return {
        "role": role,
        "version": a.evidence.version,
        "worse": " and ".join(parts),
        "action": CANDIDATE_ACTIONS.get(role, "do not promote it"),
    }


def _retrain(a: Assessment) -> Fields | None:
    if not a.drifted or not _performance_bad(a):
        return None
    return {**_psi(a.drifted[0]), "change": _performance_change(a)}


def _watch_drift(a: Assessment) -> Fields | None:
    if not a.drifted or _performance_bad(a):
        return None
    return {**_psi(a.drifted[0]), "coverage": _coverage(a)}


def _output_drift(a: Assessment) -> Fields | None:
    output = a.output_drift
    if output is None or output.state == "ok":
        return None
    return _psi(output)


def _performance_without_drift(a: Assessment) -> Fields | None:
    if a.drifted or not _performance_bad(a):
        return None
    return {"change": _performance_change(a)}


def _error_kinds(a: Assessment) -> tuple[str, float, float] | None:
    """The commonest error class, its share of the failures and their total, when errors are
    not ok; None otherwise."""
    if a.state(ERROR_RATIO) == "ok":
        return None
    kinds = {k: v for k, v in a.evidence.errors_by_kind.items() if v > 0}
    total = sum(kinds.values())
    if not total:
        return ("", 0.0, 0.0)
    kind = max(sorted(kinds), key=kinds.__getitem__)
    return kind, kinds[kind] / total, total


def _errors_one_kind(a: Assessment) -> Fields | None:
    found = _error_kinds(a)
    if found is None or found[1] < DOMINANT_ERROR_SHARE:
        return None
    kind, _, _ = found
    window = a.signals[ERROR_RATIO].window
    return {"kind": kind, "ratio": share(a.value(ERROR_RATIO)), "window": window}


def _errors_mixed(a: Assessment) -> Fields | None:
    found = _error_kinds(a)
    if found is None or found[1] >= DOMINANT_ERROR_SHARE:
        return None
    kinds = {k: v for k, v in a.evidence.errors_by_kind.items() if v > 0}
    total = sum(kinds.values())
    top = sorted(kinds.items(), key=lambda item: (-item[1], item[0]))[:3]
    listed = ", ".join(f"{k} {share(v / total)}" for k, v in top) or "classes unknown"
    window = a.signals[ERROR_RATIO].window
    return {"ratio": share(a.value(ERROR_RATIO)), "window": window, "kinds": listed}


def _latency(a: Assessment) -> Fields | None:
    signal = a.signals.get(LATENCY)
    if signal is None or signal.state == "ok":
        return None
    return {"value": seconds(signal.value), "threshold": seconds(signal.threshold),
            "window": signal.window}  # fmt: skip


def _invalid_input(a: Assessment) -> Fields | None:
    signal = a.signals.get(INVALID)
    if signal is None or signal.state == "ok":
        return None
    by_feature = a.evidence.invalid_by_feature
    if by_feature:
        feature = max(sorted(by_feature), key=by_feature.__getitem__)
        where = f"{share(by_feature[feature])} on feature {feature}"
    else:
        where = f"{share(signal.value)} of input values"
    return {"where": where, "window": signal.window}


def _flowing(a: Assessment) -> bool:
    return (a.evidence.traffic or 0) > 0


def _blind(a: Assessment) -> bool:
    coverage = a.value(COVERAGE)
    return _flowing(a) and (coverage is None or coverage < NO_GROUND_TRUTH_COVERAGE)


def _ground_truth_lost(a: Assessment) -> Fields | None:
    if not _blind(a) or not a.evidence.had_ground_truth:
        return None
    return {"coverage": share(a.value(COVERAGE) or 0.0)}


def _no_ground_truth(a: Assessment) -> Fields | None:
    if not _blind(a) or a.evidence.had_ground_truth:
        return None
    return {}


def _no_predictions(a: Assessment) -> Fields | None:
    signal = a.signals.get(TRAFFIC)
    if signal is None or signal.state == "ok":
        return None
    return {"window": signal.window}


#: Every recommendation, in the order they are given.
RULES: tuple[Rule, ...] = (
    Rule(
        "candidate-worse", "warning", _candidate_worse,
        "{role} {version} is significantly worse than the primary on {worse}: {action}",
        "a candidate (canary or shadow) is more than candidate_z_critical standard errors worse "
        "than the primary on a metric of its alert_on, or ModelCandidateWorse fires for it",
    ),
    Rule(
        "retrain", "critical", _retrain,
        "{feature} has drifted (PSI {psi} over {window}) and {change}: retrain on recent data",
        "an input feature's drift is not ok and performance (MAE or accuracy) is not ok",
    ),
    Rule(
        "performance-without-drift", "critical", _performance_without_drift,
        "{change} without input drift: check the ground truth (labels, the feedback join) "
        "first; if it is right, the target's relation to the inputs changed: retrain",
        "performance is not ok and no input feature has drifted",
    ),
    Rule(
        "watch-drift", "warning", _watch_drift,
        "{feature} has drifted (PSI {psi} over {window}) without a performance drop: watch; "
        "{coverage}",
        "an input feature's drift is not ok while performance is ok or unknown",
    ),
    Rule(
        "output-drift", "warning", _output_drift,
        "the model's output has shifted (PSI {psi} over {window}): compare its prediction mix "
        "with the reference's and look for the inputs that moved it",
        "the output's (`__prediction__`) drift is over output_psi",
    ),
    Rule(
        "errors-one-kind", "critical", _errors_one_kind,
        "errors are all {kind} ({ratio} of calls over {window}): check the upstream schema / "
        "the inputs",
        "the error ratio is over error_ratio and one exception class makes 90% of the failures",
    ),
    Rule(
        "errors-mixed", "critical", _errors_mixed,
        "{ratio} of calls fail over {window} ({kinds}): read the service's logs for the failures",
        "the error ratio is over error_ratio and no exception class makes 90% of the failures",
    ),
    Rule(
        "latency", "warning", _latency,
        "latency p95 {value} over its {threshold} threshold ({window}): check the model's load "
        "and resources (CPU, batch size, replicas)",
        "p95 latency is over latency_p95_seconds (critical over latency_p95_critical_seconds)",
    ),
    Rule(
        "invalid-input", "warning", _invalid_input,
        "invalid inputs {where} ({window}): check the producer",
        "the invalid share of input values is over invalid_ratio",
    ),
    Rule(
        "ground-truth-lost", "warning", _ground_truth_lost,
        "ground truth stopped arriving (coverage {coverage}): performance alerts are blind; "
        "check the feedback pipeline",
        "predictions flow, ground-truth coverage is under 1%, and ground truth arrived before",
    ),
    Rule(
        "no-ground-truth", "info", _no_ground_truth,
        "no ground truth: performance alerts are blind",
        "predictions flow and ground-truth coverage is under 1% (none ever arrived)",
    ),
    Rule(
        "no-predictions", "warning", _no_predictions,
        "no predictions over {window}: check the callers upstream and that the service still "
        "reaches the monitor",
        "no prediction was counted in the traffic window",
    ),
)  # fmt: skip


def recommend(assessment: Assessment) -> tuple[Recommendation, ...]:
    found = (rule.apply(assessment) for rule in RULES)
    return tuple(r for r in found if r is not None)
