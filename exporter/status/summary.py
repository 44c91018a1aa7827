"""From evidence to a health summary: judge the signals, apply the recommendation rules, and
take the overall state as the worst of the signals and of the alerts firing now."""

from __future__ import annotations

from exporter.status.model import Evidence, FiringAlert, ModelStatus, State, worst
from exporter.status.rules import recommend
from exporter.status.signals import assess


def alert_state(alert: FiringAlert) -> State:
    """A firing alert's weight in the overall state: its severity (``info`` and unknown ones
    weigh nothing)."""
    return alert.severity if alert.severity in ("warning", "critical") else "ok"  # type: ignore[return-value]


def summarize(evidence: Evidence) -> ModelStatus:
    assessment = assess(evidence)
    states = [s.state for s in assessment.signals.values()]
    states += [s.state for s in assessment.drift]
    if assessment.output_drift is not None:
        states.append(assessment.output_drift.state)
    states += [c.state for c in assessment.comparisons]
    states += [alert_state(a) for a in evidence.alerts]
    return ModelStatus(
        model=evidence.model,
        version=evidence.version,
        fleet=dict(evidence.fleet),
        state=worst(states),
        signals=tuple(assessment.signals.values()),
        drift=assessment.drift,
        output_drift=assessment.output_drift,
        alerts=evidence.alerts,
        recommendations=recommend(assessment),
        role=evidence.role,
        comparisons=assessment.comparisons,
    )
