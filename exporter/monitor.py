"""ModelMonitor: the instrumented inference wrapper, a façade over parts with one job each.

``observe`` is the hot path: per value a type check (:mod:`exporter.coerce`, which judges every
value the monitor is given, row by row and in batches alike), a ``bisect`` into the reference
edges, a stored counter child's ``inc`` and a few list additions, all under one lock. Drift
statistics are computed by :meth:`ModelMonitor.drift`, at scrape time, cached, and never inside
``observe``. With a segmented profile (``segment_by``) each value also adds one to its segment's
count; see :mod:`exporter.segments`.

The parts, each given what it needs (its counter children, its streams, the lock), never the
monitor, and put together by :mod:`exporter._parts`: :mod:`exporter._inputs` (the features of
each row, over the watches of :mod:`exporter._watches`), :mod:`exporter._outputs` (the
predictions and confidences), :mod:`exporter._classes` (class labels and slots),
:mod:`exporter._ground_truth` (the outcome store and the outcomes), :mod:`exporter._calls`
(latency, errors and the decorator), :mod:`exporter._batch` (a batch judged outside the lock),
:mod:`exporter._streams` (every window stream by name and their ticks), :mod:`exporter._exchange`
(window state shared between workers), :mod:`exporter._snapshot` (a cached drift snapshot) and
:mod:`exporter._drift` (the statistics of one window: numbers in, numbers out).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from prometheus_client import REGISTRY, CollectorRegistry

from exporter._batch import batch_ids, observe_batch
from exporter._calls import MAX_ERROR_KINDS, Instrument
from exporter._drift import DriftSnapshot, FeatureDrift, WindowPerformance
from exporter._exchange import EXPORT_SECONDS
from exporter._flusher import TIMER
from exporter._ground_truth import ACTUAL, EXPIRE_SECONDS, PRECREATE_OUTCOME_CLASSES
from exporter._outputs import (
    CONFIDENCE,
    CONFIDENCE_BUCKET_LABELS,
    CONFIDENCE_REASONS,
    NO_CONFIDENCE,
)
from exporter._parts import Settings, assemble
from exporter._streams import FLUSH_SECONDS
from exporter._watches import CATEGORICAL_REASONS, NUMERIC_REASONS
from exporter.metrics import (
    Instruments,
    label_value,
    latency_buckets,
    state_for,
    warn_unless_latency_edges,
)
from exporter.outcomes import OutcomeStore, PendingPrediction, Resolution
from exporter.profile import ReferenceProfile
from exporter.pushgateway import PushToGateway
from exporter.windows import Clock, WindowSpec

__all__ = [
    "ACTUAL", "CATEGORICAL_REASONS", "CONFIDENCE", "CONFIDENCE_BUCKET_LABELS",
    "CONFIDENCE_REASONS", "EXPIRE_SECONDS", "EXPORT_SECONDS", "FLUSH_SECONDS", "MAX_ERROR_KINDS",
    "NO_CONFIDENCE", "NUMERIC_REASONS", "PRECREATE_OUTCOME_CLASSES", "TASKS", "DriftSnapshot",
    "FeatureDrift", "ModelMonitor", "Task", "WindowPerformance", "window_clock_for",
]  # fmt: skip

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")


class ModelMonitor(PushToGateway):
    """Exports a model's predictions, inputs and drift to a Prometheus registry.

    Parameters
    ----------
    name, version:
        The ``model`` and ``version`` labels of every series.
    task:
        ``"classification"`` (predictions are classes, with an optional confidence) or
        ``"regression"`` (predictions are numbers).
    reference:
        The :class:`ReferenceProfile` drift is measured against; without one, only counts,
        latency and confidence are exported.
    features:
        Which profiled features to watch; default all of them.
    registry:
        Where the metrics go (default: prometheus_client's global registry).
    windows:
        Sliding windows by duration, each cut into ``slices`` slices.
    classes:
        Known classes, created up front so their series start at 0; more are learned up to
        ``max_classes`` and the rest counted as ``__other__``.
    min_samples:
        A window's statistics appear only once it holds this many values. Exported as the
        ``min_samples`` alert threshold (the rules' sample-size guard) unless ``thresholds``
        sets that key itself.
    sample_size:
        Values kept per window for the KS test (a uniform sample of the window).
    drift_cache_seconds:
        How long a computed drift snapshot is reused by scrapes.
    domains:
        Optional ``{feature: (low, high)}``; values outside count as ``out_of_domain``.
    thresholds:
        Per-model alert thresholds exported as ``model_alert_threshold{alert=...}``.
    confidence_thresholds:
        ``(low, high)`` cut points of the ``confidence_bucket`` label: below ``low`` is ``low``,
        from ``high`` up is ``high``, in between ``medium``.
    clock:
        Seconds since the epoch; injectable so tests and backtests move time instead of
        sleeping, and then it drives the windows too. By default the windows follow a monotonic
        clock, so a step of the wall clock neither hides nor drops their values.
    outcomes:
        Where predictions wait for :meth:`record_outcome`; default a bounded in-memory store.
    state_dir:
        Set when several worker processes serve one model: each publishes its windows there and
        the drift and performance of any worker's scrape cover all of them.
    segment_by:
        The context feature of a profile built with segments by it (for example ``"hour"``, see
        :mod:`exporter.segments`). It is still validated (invalid values and domains counted as
        for any feature) but is no longer a drift input: every other feature, and the output,
        is compared with the reference of the segments its values came from, and gets the
        ``model_feature_expected_bin_total`` and ``model_feature_expected_value_sum_total``
        counters. The KS gauges of those features are absent: there is no reference sample per
        segment.
    flush_interval:
        Seconds between the monitor's flushes on the library's timer thread (one per process,
        see :meth:`flush`); ``None`` for no timer, when the caller flushes itself (the service
        does it from its own background task).
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "unversioned",
        task: Task = "classification",
        reference: ReferenceProfile | None = None,
        features: Sequence[str] | None = None,
        registry: CollectorRegistry = REGISTRY,
        windows: Sequence[str] = ("5m", "1h", "1d"),
        slices: int = 12,
        classes: Sequence[str] | None = None,
        max_classes: int = 50,
        min_samples: int = 100,
        sample_size: int = 1000,
        drift_cache_seconds: float = 10.0,
        domains: Mapping[str, tuple[float, float]] | None = None,
        thresholds: Mapping[str, float] | None = None,
        confidence_thresholds: tuple[float, float] = (0.5, 0.8),
        stage: str = "production",
        clock: Clock | None = None,
        seed: int = 0,
        outcomes: OutcomeStore | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        segment_by: str | None = None,
        flush_interval: float | None = FLUSH_SECONDS,
    ) -> None:
        specs = _checked_windows(name, task, classes, max_classes, min_samples, sample_size,
                                 confidence_thresholds, windows, slices,
                                 flush_interval)  # fmt: skip
        self.name, self.version, self.task, self.reference = name, version, task, reference
        self.min_samples, self.max_classes = min_samples, max_classes
        self.drift_cache_seconds = drift_cache_seconds
        # The system's clocks by default: the wall clock (looked up now, so a test can replace
        # it) and a monotonic one for the windows (window_clock_for).
        self._clock: Clock = clock if clock is not None else time.time
        self._window_clock = window_clock_for(clock)
        self._lock = threading.Lock()
        # Every series carries these; a library user may pass any text for either.
        self._labels = labels = (label_value(name), label_value(version))
        self.registry = registry
        state = state_for(registry, latency_buckets(thresholds))
        warn_unless_latency_edges(state.latency_buckets, thresholds, name)
        settings = Settings(
            name, version, task == "regression", reference, features, classes, max_classes,
            sample_size, domains, confidence_thresholds, seed, outcomes,
            Path(state_dir) if state_dir is not None else None, segment_by,
        )  # fmt: skip
        self._parts = assemble(settings, specs, self._clock, self._window_clock, self._lock,
                               state.instruments, labels)  # fmt: skip
        _export_identity(state.instruments, labels, stage, reference, min_samples, thresholds)
        self._ids, self._batches = itertools.count(), itertools.count()
        self._id_prefix = f"{os.urandom(4).hex()}-"
        state.drift.add(self)
        if flush_interval is not None:
            TIMER.add(self, flush_interval)

    # -- the hot path --------------------------------------------------------------------------

    def observe(
        self,
        features: Mapping[str, Any],
        prediction: Any,
        confidence: float | None = None,
        latency_seconds: float | None = None,
        prediction_id: str | None = None,
        *,
        keep: bool = True,
    ) -> str:
        """Count one prediction, its inputs and its latency; returns the prediction id.

        With ``keep`` (the default) the prediction is also kept in the outcome store for
        :meth:`record_outcome`; a caller that stores it itself (the service commits predictions in
        groups, see :meth:`pending`) passes ``keep=False``.

        Never raises for bad input: each invalid value is counted in
        ``model_input_invalid_total{feature, reason}`` and kept out of the drift statistics while
        the rest of the row, the prediction and its outcome-store entry still count. Values are
        judged by :mod:`exporter.coerce`, which never raises, so no value can stop the others.
        """
        pid = prediction_id if prediction_id is not None else f"{self._id_prefix}{next(self._ids)}"
        try:
            now = self._clock()
            parts = self._parts
            inputs, streams = parts.inputs, parts.streams
            with self._lock:
                if self._window_clock() >= streams.next_due:
                    streams.housekeeping()
                try:
                    inputs.take_row(features)
                except Exception:  # a mapping that cannot be read: the output still counts
                    self._internal_error("read a row's features")
                output = parts.outputs.take(prediction, confidence, inputs.row_segment)
            if latency_seconds is not None:
                parts.calls.observe_latency(latency_seconds)
            if keep and output is not None:
                parts.truth.remember(PendingPrediction(pid, now, self.version, *output))
        except Exception:  # monitoring must never break the prediction it monitors
            self._internal_error("observe a prediction")
        return pid

    def _internal_error(self, what: str) -> None:
        self._parts.monitor_errors.inc()
        log.exception("model monitor %s failed to %s", self.name, what)

    def observe_batch(
        self,
        frame: pd.DataFrame | Mapping[str, Sequence[Any]],
        predictions: Sequence[Any] | np.ndarray | pd.Series,
        confidences: Sequence[float | None] | np.ndarray | pd.Series | None = None,
        latency_seconds: float | None = None,
        *,
        keep: bool = True,
    ) -> list[str]:
        """Count a batch of predictions at numpy speed; returns one prediction id per row.

        ``frame`` is a DataFrame (or a mapping of columns) with one row per prediction. Each value
        is judged as :meth:`observe` judges it (:mod:`exporter.coerce`): None, pandas NA and NaT
        are ``missing``, a float NaN in a numeric column is ``nan`` (in a categorical one,
        ``missing``), text in a numeric column is ``wrong_type``, infinities and integers past a
        double are ``inf``; so a batch gives the counters of the same rows observed one by one.
        No value makes it raise. ``latency_seconds`` is the batch's total inference time,
        recorded once.

        With ``keep`` (the default) the valid predictions wait in the outcome store for
        :meth:`record_outcome`, written in one go (one transaction for SQLite); ``keep=False``
        stores nothing, for predictions whose ground truth will never come.
        """
        # A batch number of its own keeps ids unique without a lock shared with observe().
        ids = batch_ids(f"{self._id_prefix}b{next(self._batches)}-", len(predictions))
        try:
            regression, now = self.task == "regression", self._clock()
            observe_batch(self._parts, self._lock, regression, frame, predictions, confidences,
                          latency_seconds, keep, ids, now, self.version)  # fmt: skip
        except Exception:
            self._internal_error("observe a batch")
        return ids

    def count_invalid(self, feature: str, reason: str) -> None:
        """Count an invalid value found outside ``observe`` (e.g. a request refused for it)."""
        self._parts.inputs.count_invalid(feature, reason)

    def observe_latency(self, seconds: float) -> None:
        """Record one inference latency (``observe`` and ``instrument`` call this for you)."""
        self._parts.calls.observe_latency(seconds)

    def record_error(self, error: BaseException | type[BaseException] | str) -> None:
        """Count a failed prediction by exception class (at most MAX_ERROR_KINDS distinct)."""
        self._parts.calls.record_error(error)

    @property
    def instrument(self) -> Instrument:
        """Wrap a predict function (sync or async): time it, count errors, observe in and out.

        By default the features are the ``features=`` keyword argument or else the first
        positional argument that is a mapping; the result is read as ``(prediction, confidence)``
        when it is a pair, ``result["prediction"]`` / ``result.get("confidence")`` when it is a
        mapping with a ``prediction`` key, and as the bare prediction otherwise. Pass
        ``features=`` and ``output=`` to read them differently. Exceptions are counted by class
        and re-raised unchanged.
        """
        return Instrument(self.name, self._parts.calls, self.observe, self._parts.monitor_errors)

    # -- ground truth ---------------------------------------------------------------------------

    def pending(
        self, prediction_id: str, prediction: Any, confidence: Any
    ) -> PendingPrediction | None:
        """What the outcome store would keep for this prediction, or None when it is invalid.

        Counts nothing (``observe`` already did); for callers that store predictions themselves.
        Judges the prediction and the confidence exactly as ``observe`` does.
        """
        return self._parts.truth.pending(prediction_id, prediction, confidence)

    def store_failed(self, exc: BaseException) -> None:
        """Count a failed write to the outcome store made on the monitor's behalf."""
        self._parts.truth.store_failed(exc)

    def store_succeeded(self) -> None:
        self._parts.truth.store_succeeded()

    def record_outcome(self, prediction_id: str, actual: Any) -> Resolution:
        """Join the ground truth of an earlier prediction; returns what happened.

        ``RECORDED`` the first time (counted once), ``DUPLICATE`` for the same value again,
        ``CONFLICT`` for a different value, ``UNKNOWN`` for an id never seen or expired,
        ``INVALID`` for an actual of the wrong type (counted under ``feature="__actual__"``),
        ``UNAVAILABLE`` when the store cannot be read. Never raises.
        """
        return self._parts.truth.record_outcome(prediction_id, actual)

    @property
    def store_healthy(self) -> bool:
        """False after a failed write to the outcome store, until the next one succeeds."""
        return self._parts.truth.store_ok

    def check_store(self) -> None:
        """Raise StoreError when the outcome store cannot be written now (for /readyz)."""
        self._parts.truth.store.check_writable()

    # -- drift ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Bring counters up to date, drop expired predictions and publish this worker's windows.

        Never inside a scrape (a scrape only reads): the library's timer runs it every
        ``flush_interval`` s, a service every second, a caller before reading the registry
        (:func:`exporter.metrics.flush_registry`). Until then only the per-bin counts and value
        sums of that interval wait; ``observe`` writes every other counter. Never raises.
        """
        parts = self._parts
        try:
            with self._lock:
                parts.streams.housekeeping()
            parts.truth.expire_due(self._clock())
            if parts.exchange is not None:
                parts.exchange.publish_due(self._window_clock(), parts.streams.by_name, self._lock)
        except Exception:
            self._parts.monitor_errors.inc()
            log.exception("model monitor %s failed to flush", self.name)

    @property
    def windows(self) -> list[str]:
        return [s.name for s in self._parts.streams.specs]

    @property
    def model_labels(self) -> tuple[str, str]:
        """The ``model`` and ``version`` label values of this monitor's series."""
        return self._labels

    def drift(self, *, max_age: float | None = None) -> DriftSnapshot:
        """Drift of every watched feature and the output, per window.

        A snapshot younger than ``max_age`` seconds (default ``drift_cache_seconds``) is reused,
        so frequent scrapes cost nothing; pass ``max_age=0`` to force a fresh one.
        """
        limit = self.drift_cache_seconds if max_age is None else max_age
        return self._parts.snapshots.latest(limit, self.min_samples)


def _checked_windows(
    name: str, task: Task, classes: Sequence[str] | None, max_classes: int, min_samples: int,
    sample_size: int, confidence_thresholds: tuple[float, float], windows: Sequence[str],
    slices: int, flush_interval: float | None,
) -> list[WindowSpec]:  # fmt: skip
    """The windows' specs, once every argument of a monitor is checked; ValueError otherwise."""
    if flush_interval is not None and not 0 < flush_interval < math.inf:
        raise ValueError(
            f"flush_interval must be a positive number of seconds or None, got {flush_interval!r}"
        )
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not name or not isinstance(name, str):
        raise ValueError("name must be a non-empty string")
    if task == "regression" and classes:
        raise ValueError("classes only apply to task='classification'")
    if max_classes < 1 or min_samples < 1 or sample_size < 0:
        raise ValueError("max_classes and min_samples must be >= 1, sample_size >= 0")
    if not 0.0 <= confidence_thresholds[0] <= confidence_thresholds[1] <= 1.0:
        raise ValueError("confidence_thresholds must satisfy 0 <= low <= high <= 1")
    if not windows:
        raise ValueError("at least one window is needed")
    specs = [WindowSpec.parse(w, slices) for w in windows]
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"windows must be distinct, got {list(windows)}")
    return specs


def _export_identity(
    inst: Instruments, labels: tuple[str, str], stage: str, reference: ReferenceProfile | None,
    min_samples: int, thresholds: Mapping[str, float] | None,
) -> None:  # fmt: skip
    """``model_info`` (stage and reference) and ``model_alert_threshold`` of one model."""
    reference_id = "none" if reference is None else reference.fingerprint()
    inst.info.labels(*labels, label_value(stage), reference_id).set(1)
    # The windows' minimum is also the alerts' sample-size guard unless the thresholds set
    # one of their own, so the dashboards and the rules see the minimum really in force.
    for alert, value in {"min_samples": min_samples, **(thresholds or {})}.items():
        inst.alert_threshold.labels(*labels, label_value(alert)).set(float(value))


def window_clock_for(clock: Clock | None) -> Clock:
    """The clock of the windows, ticks and drift cache for a monitor given ``clock``.

    The wall clock steps (NTP, a resumed VM, an operator): stepped back 600 s, windows keyed by
    wall time held none of the values observed after the step. Windows need a clock that only
    moves forward and is the same in every worker of a service, and CLOCK_MONOTONIC is both on
    Linux (one clock for the machine, counting from boot; the shared window state is wiped with
    the rest of the service's state at its start). Wall time stays where a time is stored or
    shown: outcome timestamps, their delay and expiry. A clock the caller injects (a backtest's
    simulated time, a test's) drives everything as given.
    """
    return time.monotonic if clock is None or clock is time.time else clock
