"""Ground truth: predictions waiting in the outcome store, and their outcomes once known.

Keeps predictions for :meth:`GroundTruth.record_outcome`, joins the actual value when it comes,
counts the outcome (classes agreeing or not, regression errors, the delay) and adds it to the
windowed performance sums (:mod:`exporter.performance`). Drops expired predictions on the
monitor's flush. A failing store is counted and logged, never raised.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from exporter import performance as perf
from exporter._classes import Classes
from exporter._watches import NUMERIC_REASONS
from exporter.coerce import Invalid, category, number
from exporter.coerce import confidence as judge_confidence
from exporter.metrics import Instruments
from exporter.outcomes import OutcomeStore, PendingPrediction, Resolution, StoreError
from exporter.windows import Stream, WindowSpec

# The monitor's logger: what goes wrong with the store is the monitor's to report.
log = logging.getLogger("exporter.monitor")

#: ``feature`` label under which an invalid ground-truth value is counted.
ACTUAL = "__actual__"
#: How often expired predictions are dropped from the outcome store.
EXPIRE_SECONDS = 60.0
#: Known classes up to this many get all their (predicted, actual) outcome series up front.
PRECREATE_OUTCOME_CLASSES = 20
STORE_ERRORS = (StoreError, sqlite3.Error, OSError)

#: The ground truths sharing each store, by (model, version): a service serving several versions
#: of one model keeps their predictions in one store, and an outcome is counted by the version
#: that made the prediction (its record says which), whichever version's monitor resolved it.
_SHARING: weakref.WeakKeyDictionary[Any, weakref.WeakValueDictionary[tuple[str, str], Any]] = (
    weakref.WeakKeyDictionary()
)
_SHARING_LOCK = threading.Lock()


def _shared(store: Any) -> Any:
    """The store ``store`` stands for: a view of another store (the service's for a candidate
    version, exporter.server._versions.CandidateStore) names it in ``shares``."""
    return getattr(store, "shares", store)


class GroundTruth:
    """The outcome store of one model, its outcome counters and its performance stream."""

    def __init__(
        self,
        model: str,
        version: str,
        regression: bool,
        store: OutcomeStore,
        clock: Callable[[], float],
        classes: Classes,
        instruments: Instruments,
        labels: tuple[str, str],
        specs: Sequence[WindowSpec],
        seed: int,
        lock: threading.Lock,
        monitor_errors: Any,
    ) -> None:
        inst = instruments
        self.model, self.version, self.regression = model, version, regression
        self.store, self.clock, self.classes, self.lock = store, clock, classes, lock
        self.store_ok = True
        self.next_expire = 0.0
        width = (
            len(perf.REGRESSION_FIELDS) if regression else perf.class_slots(classes.max_classes + 1)
        )
        self.performance = Stream(specs, width, 0, seed)
        self.monitor_errors = monitor_errors
        self.absolute_error = inst.absolute_error.labels(*labels)
        self.squared_error = inst.squared_error.labels(*labels)
        self.error_positive = inst.error_sum.labels(*labels, "positive")
        self.error_negative = inst.error_sum.labels(*labels, "negative")
        self.expired = inst.outcomes_expired.labels(*labels)
        self.delay = inst.outcome_delay.labels(*labels)
        self.store_errors = inst.outcome_store_errors.labels(*labels)
        self.actual_invalid = {r: inst.invalid.labels(*labels, ACTUAL, r) for r in NUMERIC_REASONS}
        self.outcome = inst.outcomes
        self.labels = labels
        self.outcome_children: dict[tuple[str, str], Any] = {}
        try:
            with _SHARING_LOCK:
                sharing = _SHARING.setdefault(_shared(store), weakref.WeakValueDictionary())
                sharing[(model, version)] = self
        except TypeError:  # a store of the caller's own that cannot be weakly referenced
            pass
        known = classes.labels.names()
        if not regression and len(known) <= PRECREATE_OUTCOME_CLASSES:
            # Outcome series start at 0 for every known (predicted, actual) pair: a counter born
            # at its first increment hides that increment from rate() and increase().
            for predicted in sorted(known):
                for actual in sorted(known):
                    self.outcome_child(predicted, actual)

    def outcome_child(self, predicted: str, actual: str) -> Any:
        child = self.outcome_children.get((predicted, actual))
        if child is None:
            correct = "true" if predicted == actual else "false"
            child = self.outcome.labels(*self.labels, predicted, actual, correct)
            self.outcome_children[(predicted, actual)] = child
        return child

    # -- keeping predictions ---------------------------------------------------------------------

    def pending(
        self, prediction_id: str, prediction: Any, confidence: Any
    ) -> PendingPrediction | None:
        """What the outcome store would keep for this prediction, or None when it is invalid."""
        value = number(prediction) if self.regression else category(prediction)
        if isinstance(value, Invalid):
            return None
        judged = judge_confidence(confidence)
        valid = judged if isinstance(judged, float) else None
        return PendingPrediction(prediction_id, self.clock(), self.version, value, valid)

    def remember(self, *pendings: PendingPrediction) -> None:
        """Keep predictions for their ground truth; a failing store is counted, never raised."""
        if len(pendings) == 1:
            self.write(self.store.remember, pendings[0])
        else:
            self.write(self.store.remember_many, pendings)

    def remember_many(self, pendings: Sequence[PendingPrediction]) -> None:
        """Keep a batch (a :class:`~exporter.outcomes.PendingBatch` is written from its columns)
        in one write: one transaction for SQLite, one dict update in memory; a failure is
        counted once, as one failed write, never raised."""
        self.write(self.store.remember_many, pendings)

    def write(self, method: Callable[[Any], None], argument: Any) -> None:
        try:
            method(argument)
            self.store_ok = True
        except STORE_ERRORS as exc:
            self.store_failed(exc)

    def store_failed(self, exc: BaseException) -> None:
        """Count a failed write to the outcome store; log it when the store was healthy."""
        self.store_errors.inc()
        if self.store_ok:
            log.error("model monitor %s cannot store predictions: %s", self.model, exc)
        self.store_ok = False

    def store_succeeded(self) -> None:
        self.store_ok = True

    def expire_due(self, now: float) -> None:
        """Drop expired predictions when the last time is :data:`EXPIRE_SECONDS` ago."""
        if now < self.next_expire:
            return
        self.next_expire = now + EXPIRE_SECONDS
        try:
            expired = self.store.expire(now)
        except STORE_ERRORS as exc:
            self.store_errors.inc()
            log.error("model monitor %s cannot expire predictions: %s", self.model, exc)
            return
        if expired:
            self.expired.inc(expired)

    def pending_count(self) -> int | None:
        try:
            return self.store.pending_count()
        except STORE_ERRORS:
            return None

    # -- outcomes --------------------------------------------------------------------------------

    def record_outcome(self, prediction_id: str, actual: Any) -> Resolution:
        """Join the ground truth of an earlier prediction; returns what happened (never raises)."""
        try:
            value = self.valid_actual(actual)
            if value is None:
                return Resolution.INVALID
            now = self.clock()
            try:
                resolved = self.store.resolve(str(prediction_id), value, now)
            except STORE_ERRORS as exc:
                self.store_errors.inc()
                log.error("model monitor %s cannot read the outcome store: %s", self.model, exc)
                return Resolution.UNAVAILABLE
            if resolved.resolution is Resolution.RECORDED and resolved.pending is not None:
                self.owner(resolved.pending.version).count_outcome(resolved.pending, value, now)
            return resolved.resolution
        except Exception:
            self.monitor_errors.inc()
            log.exception("model monitor %s failed to record an outcome", self.model)
            return Resolution.UNAVAILABLE

    def owner(self, version: str) -> GroundTruth:
        """Who counts the outcome of a prediction ``version`` made: the ground truth of that
        version on the same store, else this one (a version no longer loaded)."""
        if version == self.version:
            return self
        try:
            with _SHARING_LOCK:
                sharing = _SHARING.get(_shared(self.store))
                peer = sharing.get((self.model, version)) if sharing is not None else None
        except TypeError:  # not weakly referenceable: shared with no one
            return self
        return peer if isinstance(peer, GroundTruth) else self

    def valid_actual(self, actual: Any) -> str | float | None:
        """The actual judged as this task's predictions are (a number for a regression, a
        class otherwise); None after counting why it is invalid."""
        value = number(actual) if self.regression else category(actual)
        if isinstance(value, Invalid):
            self.actual_invalid[value].inc()
            return None
        return value

    def count_outcome(self, pending: PendingPrediction, actual: Any, now: float) -> None:
        self.delay.observe(max(0.0, now - pending.created_at))
        if self.regression:
            predicted = float(pending.prediction)
            error = predicted - actual
            self.absolute_error.observe(abs(error))
            self.squared_error.inc(error * error)
            if error >= 0:
                self.error_positive.inc(error)
            else:
                self.error_negative.inc(-error)
            row = perf.regression_row(predicted, actual)
        else:
            classes = self.classes
            with self.lock:
                predicted_key = classes.key(str(pending.prediction))
                actual_key = classes.key(str(actual))
                slot_p, slot_a = classes.slot(predicted_key), classes.slot(actual_key)
                child = self.outcome_child(predicted_key, actual_key)
            child.inc()
            row = perf.classification_row(
                self.performance.width, slot_p, slot_a, pending.confidence
            )
        with self.lock:
            live = self.performance.live
            for i, value in enumerate(row):
                if value:
                    live[i] += value
