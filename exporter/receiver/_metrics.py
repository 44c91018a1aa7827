"""The receiver's own counters, with bounded label values."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from exporter.metrics import label_value
from exporter.receiver._actions import Outcome

#: Distinct ``alertname`` / ``severity`` label values beyond these are counted as ``__other__``,
#: so a misbehaving sender cannot create unbounded series.
MAX_ALERTNAMES = 200
MAX_SEVERITIES = 20
OTHER = "__other__"


class _BoundedValues:
    """Passes the first ``limit`` distinct label values through and maps the rest to ``OTHER``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = label_value(value)  # valid UTF-8, bounded, long values kept distinct
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


@dataclass(frozen=True)
class ReceiverMetrics:
    notifications: Counter
    actions: Counter
    actions_deferred: Counter
    alertname: _BoundedValues
    severity: _BoundedValues

    @classmethod
    def build(cls, registry: CollectorRegistry) -> ReceiverMetrics:
        return cls(
            notifications=Counter(
                "model_alert_notifications",
                "New alerts received from Alertmanager (repeats of a stored fingerprint, "
                "startsAt and status are not counted).",
                ["alertname", "status", "severity"],
                registry=registry,
            ),
            actions=Counter(
                "model_alert_actions",
                "Actions run for received alerts, by outcome (success, failure, timeout).",
                ["alertname", "outcome"],
                registry=registry,
            ),
            actions_deferred=Counter(
                "model_alert_actions_deferred",
                "Actions that found the receiver's in-memory queue full; they wait in the alert "
                "store and run when the queue has room again.",
                registry=registry,
            ),
            alertname=_BoundedValues(MAX_ALERTNAMES),
            severity=_BoundedValues(MAX_SEVERITIES),
        )

    def count_notification(self, alertname: str, status: str, severity: str) -> None:
        self.notifications.labels(self.alertname(alertname), status, self.severity(severity)).inc()

    def count_action(self, alertname: str, outcome: Outcome) -> None:
        self.actions.labels(self.alertname(alertname), outcome).inc()

    def count_deferred_action(self) -> None:
        self.actions_deferred.inc()
