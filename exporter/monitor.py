"""ModelMonitor: the instrumented inference wrapper.

``observe`` is the hot path: per value a type check (:mod:`exporter.coerce`, which judges every
value the monitor is given, row by row and in batches alike), a ``bisect`` into the reference
edges, a stored counter child's ``inc`` and a few list additions, all under one lock. Drift
statistics are computed by :meth:`ModelMonitor.drift`, at scrape time, cached, and never inside
``observe``. With a segmented profile (``segment_by``) each value also adds one to its segment's
count; see :mod:`exporter.segments`.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
import os
import sqlite3
import tempfile
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, overload

import numpy as np
import pandas as pd
from prometheus_client import REGISTRY, CollectorRegistry

from exporter import performance as perf
from exporter import stats
from exporter.class_labels import ClassLabels
from exporter.coerce import (
    ABSENT,
    CATEGORY_REASONS,
    NUMBER_REASONS,
    VALID_CODE,
    Categories,
    Invalid,
    Numbers,
    categories,
    category,
    number,
    numbers,
)
from exporter.coerce import confidence as judge_confidence
from exporter.coerce import confidences as confidences_of
from exporter.metrics import label_value, latency_buckets, state_for, warn_unless_latency_edges
from exporter.outcomes import (
    MemoryOutcomeStore,
    OutcomeStore,
    PendingPrediction,
    Resolution,
    StoreError,
)
from exporter.profile import (
    OTHER,
    OUTPUT,
    CategoricalFeature,
    NumericFeature,
    ProfileError,
    ReferenceProfile,
    Segments,
)
from exporter.segments import Expectation, IntArray, SegmentKey, count_slots, segments_by
from exporter.windows import (
    Clock,
    Stream,
    TickClock,
    WindowSpec,
    WindowView,
    export_stream,
    merge_view,
)

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")

#: Reasons of ``model_input_invalid_total``; values with any of them stay out of drift statistics.
NUMERIC_REASONS: tuple[str, ...] = NUMBER_REASONS
CATEGORICAL_REASONS: tuple[str, ...] = (*CATEGORY_REASONS, "unknown_category")
#: The reasons a confidence can be invalid for (a missing one is no confidence, not invalid).
CONFIDENCE_REASONS = ("wrong_type", "nan")
#: ``feature`` label under which an invalid confidence is counted.
CONFIDENCE = "__confidence__"
#: ``feature`` label under which an invalid ground-truth value is counted.
ACTUAL = "__actual__"
#: How often expired predictions are dropped from the outcome store.
EXPIRE_SECONDS = 60.0
#: How often a worker publishes its windows for the other workers (multi-worker mode).
EXPORT_SECONDS = 1.0
#: Error classes beyond this many distinct ones are counted as ``__other__``.
MAX_ERROR_KINDS = 20
#: Longest time per-bin counts wait in the live tick before reaching the Prometheus counters.
FLUSH_SECONDS = 1.0
#: Known classes up to this many get all their (predicted, actual) outcome series up front.
PRECREATE_OUTCOME_CLASSES = 20
#: ``confidence_bucket`` when no confidence was given.
NO_CONFIDENCE = "none"
#: Every value of the ``confidence_bucket`` label (see ``confidence_thresholds``).
CONFIDENCE_BUCKET_LABELS = ("low", "medium", "high", NO_CONFIDENCE)

_F = TypeVar("_F", bound=Callable[..., Any])
_J = TypeVar("_J", Numbers, Categories)


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature (or the output) in one window; statistics are None until ``ready``."""

    feature: str
    window: str
    kind: Literal["numeric", "categorical"]
    samples: int
    ready: bool
    psi: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    zscore: float | None = None
    current_mean: float | None = None
    js_distance: float | None = None
    chi2_pvalue: float | None = None


@dataclass(frozen=True)
class WindowPerformance:
    """Performance in one window once ground truth arrived; metrics are None until ``ready``.

    ``metrics`` holds ``mae``, ``rmse``, ``correlation``, ``within_2/5/10`` (regression) or
    ``accuracy``, ``macro_f1``, ``calibration_gap``, ``expected_accuracy`` (classification);
    ``classes`` holds per-class ``precision``, ``recall`` and ``f1``.
    """

    window: str
    samples: int
    ready: bool
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    classes: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftSnapshot:
    """Drift of every watched feature and window at ``taken_at`` (window-clock seconds), with the
    windowed performance and the number of predictions waiting for ground truth."""

    taken_at: float
    features: Mapping[str, Mapping[str, FeatureDrift]]
    performance: Mapping[str, WindowPerformance] = field(default_factory=dict)
    pending: int | None = None

    def rows(self) -> Iterator[FeatureDrift]:
        for windows in self.features.values():
            yield from windows.values()

    def __getitem__(self, feature: str) -> Mapping[str, FeatureDrift]:
        return self.features[feature]


class _NumericWatch:
    """Everything the hot path needs for one numeric stream, resolved once at construction."""

    __slots__ = ("name", "ref", "edges", "counters", "flushed", "invalid", "stream", "positive",
                 "negative", "low", "high", "sample", "edges_array", "share",
                 "expectation", "segment_base")  # fmt: skip

    def __init__(
        self, name: str, ref: NumericFeature, monitor: ModelMonitor, seed: int,
        domain: tuple[float, float] | None,
    ) -> None:  # fmt: skip
        inst, labels = monitor._instruments, monitor._labels
        feature = label_value(name)
        self.name = name
        self.ref = ref
        self.edges = list(ref.edges)
        self.edges_array = np.asarray(ref.edges, dtype=np.float64)
        # Stream layout: one count per bin, then the sums of the positive values and of the
        # absolute negative values; the counters mirror it slot for slot (see _flush).
        self.counters = [
            *(inst.feature_bins.labels(*labels, feature, b) for b in ref.bin_labels),
            inst.feature_value_sum.labels(*labels, feature, "positive"),
            inst.feature_value_sum.labels(*labels, feature, "negative"),
        ]
        self.positive = len(ref.bin_labels)
        self.negative = self.positive + 1
        # Segmented: per-segment counts after the counters' slots, and no KS sample (there is no
        # reference sample per segment to compare it with).
        self.segment_base = len(self.counters)
        self.expectation = monitor._expectation(name, ref, self.segment_base)
        width = self.segment_base + (self.expectation.width if self.expectation else 0)
        sample_size = 0 if self.expectation else monitor._sample_size
        self.flushed = [0.0] * width
        reasons = NUMERIC_REASONS + (("out_of_domain",) if domain else ())
        self.invalid = {r: inst.invalid.labels(*labels, feature, r) for r in reasons}
        self.stream = Stream(monitor._specs, width, sample_size, seed)
        self.low, self.high = domain if domain else (-math.inf, math.inf)
        self.sample = np.asarray(ref.sample, dtype=np.float64)
        self.share = np.asarray(ref.reference_share, dtype=np.float64)
        for label, share in zip(ref.bin_labels, ref.reference_share, strict=True):
            inst.reference_ratio.labels(*labels, feature, label).set(share)
        inst.reference_mean.labels(*labels, feature).set(ref.mean)
        inst.reference_std.labels(*labels, feature).set(ref.std)

    def add(self, x: float | Invalid) -> bool:
        """Count a value judged by :func:`exporter.coerce.number` into bins, sums and the
        window, or count why it is invalid (its reason, or out of the domain); True when counted.

        The caller judges (``add(number(value))``): one function call per value on the hot path.
        """
        if not isinstance(x, float):
            self.invalid[x].inc()
            return False
        if not self.low <= x <= self.high:
            self.invalid["out_of_domain"].inc()
            return False
        stream = self.stream
        live = stream.live
        live[bisect_right(self.edges, x)] += 1.0
        if x >= 0:
            live[self.positive] += x
        else:
            live[self.negative] -= x
        stream.reservoir.add(x)
        return True

    def add_column(self, judged: Numbers, slots: IntArray | None) -> None:
        """Count a column judged by :func:`exporter.coerce.numbers` as :meth:`add` counts its
        values one by one; ``slots`` is each row's segment slot when segmented."""
        for reason, count in judged.counts().items():
            self.invalid[reason].inc(count)
        counted = judged.codes == VALID_CODE
        finite = judged.values[counted]
        if self.low > -math.inf or self.high < math.inf:
            inside = (finite >= self.low) & (finite <= self.high)
            outside = int(finite.size - inside.sum())
            if outside:
                self.invalid["out_of_domain"].inc(outside)
            finite = finite[inside]
            counted[counted] = inside
        if finite.size == 0:
            return
        if slots is not None and self.expectation is not None:
            count_slots(self.stream.live, self.segment_base, slots[counted],
                        self.expectation.width)  # fmt: skip
        counts = np.bincount(
            np.searchsorted(self.edges_array, finite, side="right"), minlength=self.positive
        )
        live = self.stream.live
        for i in np.flatnonzero(counts).tolist():
            live[i] += float(counts[i])
        live[self.positive] += float(finite[finite > 0].sum())
        live[self.negative] += float(-finite[finite < 0].sum())
        self.stream.reservoir.add_many(finite)


class _CategoricalWatch:
    """Hot-path state of one categorical stream: top-K categories plus ``__other__``."""

    __slots__ = ("name", "ref", "index", "other", "known", "complete", "counters", "flushed",
                 "invalid", "stream", "open_vocabulary", "share", "expectation",
                 "segment_base")  # fmt: skip

    def __init__(
        self, name: str, ref: CategoricalFeature, monitor: ModelMonitor, seed: int,
        open_vocabulary: bool = False,
    ) -> None:  # fmt: skip
        inst, labels = monitor._instruments, monitor._labels
        feature = label_value(name)
        # Categories come from the training data: any text, so each is cut to a fit label value.
        bins = [label_value(b) for b in ref.bin_labels]
        self.name = name
        self.ref = ref
        self.index = {c: i for i, c in enumerate(ref.categories)}
        self.other = len(ref.categories)
        self.known = frozenset(ref.known_other)
        # The output's vocabulary is open: a new class is drift, not bad input.
        self.open_vocabulary = open_vocabulary
        self.complete = ref.known_other_complete and not open_vocabulary
        self.counters = [inst.feature_bins.labels(*labels, feature, b) for b in bins]
        self.segment_base = len(self.counters)
        self.expectation = monitor._expectation(name, ref, self.segment_base)
        width = self.segment_base + (self.expectation.width if self.expectation else 0)
        self.flushed = [0.0] * width
        self.share = np.asarray(ref.reference_share, dtype=np.float64)
        reasons = CATEGORICAL_REASONS if not open_vocabulary else ("missing", "wrong_type")
        self.invalid = {r: inst.invalid.labels(*labels, feature, r) for r in reasons}
        self.stream = Stream(monitor._specs, width, 0, seed)
        for label, share in zip(bins, ref.reference_share, strict=True):
            inst.reference_ratio.labels(*labels, feature, label).set(share)

    def add_key(self, key: str | Invalid, count: int = 1) -> bool:
        """Count ``count`` values judged by :func:`exporter.coerce.category` (the caller judges,
        as for :meth:`_NumericWatch.add`), or why they are invalid; True when counted."""
        if isinstance(key, Invalid):
            self.invalid[key].inc(count)
            return False
        i = self.index.get(key)
        if i is None:
            if self.complete and key not in self.known:
                self.invalid["unknown_category"].inc(count)
                return False
            i = self.other
        self.stream.live[i] += count
        return True

    def add_column(self, judged: Categories, slots: IntArray | None) -> None:
        """Count a column judged by :func:`exporter.coerce.categories` as :meth:`add_key` counts
        its values one by one: once per distinct key, with how many rows hold it."""
        for reason, count in judged.counts().items():
            self.invalid[reason].inc(count)
        rows = np.flatnonzero(judged.codes == VALID_CODE)
        if not rows.size:
            return
        positions, distinct = pd.factorize(judged.keys[rows])
        counts = np.bincount(positions, minlength=len(distinct)).tolist()
        counted = [self.add_key(key, n) for key, n in zip(distinct.tolist(), counts, strict=True)]
        if slots is not None and self.expectation is not None:
            kept = rows[np.asarray(counted, dtype=bool)[positions]]
            count_slots(self.stream.live, self.segment_base, slots[kept],
                        self.expectation.width)  # fmt: skip


class ModelMonitor:
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
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if not name or not isinstance(name, str):
            raise ValueError("name must be a non-empty string")
        if task == "regression" and classes:
            raise ValueError("classes only apply to task='classification'")
        if max_classes < 1 or min_samples < 1 or sample_size < 0:
            raise ValueError("max_classes and min_samples must be >= 1, sample_size >= 0")
        low, high = confidence_thresholds
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError("confidence_thresholds must satisfy 0 <= low <= high <= 1")
        if not windows:
            raise ValueError("at least one window is needed")
        self.name = name
        self.version = version
        self.task: Task = task
        self.reference = reference
        self.min_samples = min_samples
        self.drift_cache_seconds = drift_cache_seconds
        # The system's clocks by default: the wall clock (looked up now, so a test can replace
        # it) and a monotonic one for the windows (window_clock_for).
        self._clock: Clock = clock if clock is not None else time.time
        self._window_clock = window_clock_for(clock)
        self._specs = [WindowSpec.parse(w, slices) for w in windows]
        if len({s.name for s in self._specs}) != len(self._specs):
            raise ValueError(f"windows must be distinct, got {list(windows)}")
        self._sample_size = sample_size
        self._ticks = TickClock(self._specs, self._window_clock)
        self._next_due = 0.0
        self._lock = threading.Lock()
        self._drift_lock = threading.Lock()
        self._drift_cache: DriftSnapshot | None = None
        # Every series carries these; a library user may pass any text for either.
        self._labels = (label_value(name), label_value(version))
        state = state_for(registry, latency_buckets(thresholds))
        self._instruments = inst = state.instruments
        self._confidence_cuts = (low, high)
        warn_unless_latency_edges(state.latency_buckets, thresholds, name)

        self._segments, self._segment_key = self._segment_context(reference, segment_by, domains)
        #: The segment slot of the row being observed (set by _take_row, read by _take_output).
        self._row_segment = self._segment_key.overall if self._segment_key is not None else 0
        watched = self._resolve_features(reference, features, domains, segment_by)
        self._numeric: list[_NumericWatch] = []
        self._categorical: list[_CategoricalWatch] = []
        if reference is not None:
            for n, name_ in enumerate(watched):
                ref = reference.features[name_]
                domain = (domains or {}).get(name_)
                if isinstance(ref, NumericFeature):
                    self._numeric.append(_NumericWatch(name_, ref, self, seed + n, domain))
                else:
                    self._categorical.append(_CategoricalWatch(name_, ref, self, seed + n))
        self._output_numeric: _NumericWatch | None = None
        self._output_categorical: _CategoricalWatch | None = None
        self._setup_output(reference, seed + len(watched))

        # Ground truth: pending predictions, and windowed performance sums (exporter.performance).
        self._outcomes: OutcomeStore = outcomes if outcomes is not None else MemoryOutcomeStore()
        self._store_ok = True
        self._next_expire = 0.0
        if task == "regression":
            self._performance = Stream(self._specs, len(perf.REGRESSION_FIELDS), 0, seed)
        else:
            self._performance = Stream(self._specs, perf.class_slots(max_classes + 1), 0, seed)
        # Classification: count and sum of confidences of all predictions (expected accuracy).
        self._confidences = Stream(self._specs, 2, 0, seed)
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._state_file = (
            self._state_dir / f"windows-{_safe(name)}-{_safe(version)}-{os.getpid()}.npz"
            if self._state_dir is not None
            else None
        )
        self._next_export = 0.0
        self._export_rng = np.random.default_rng(seed)

        # Stored children: the hot path never calls labels().
        self._duration = inst.duration.labels(*self._labels)
        self._confidence = inst.confidence.labels(*self._labels)
        self._confidence_invalid = {
            r: inst.invalid.labels(*self._labels, CONFIDENCE, r) for r in CONFIDENCE_REASONS
        }
        self._output_invalid = {
            r: inst.invalid.labels(*self._labels, OUTPUT, r) for r in NUMERIC_REASONS
        }
        self._monitor_errors = inst.monitor_errors.labels(*self._labels)
        self._absolute_error = inst.absolute_error.labels(*self._labels)
        self._squared_error = inst.squared_error.labels(*self._labels)
        self._error_positive = inst.error_sum.labels(*self._labels, "positive")
        self._error_negative = inst.error_sum.labels(*self._labels, "negative")
        self._expired = inst.outcomes_expired.labels(*self._labels)
        self._delay = inst.outcome_delay.labels(*self._labels)
        self._store_errors = inst.outcome_store_errors.labels(*self._labels)
        self._actual_invalid = {
            r: inst.invalid.labels(*self._labels, ACTUAL, r) for r in NUMERIC_REASONS
        }
        self._errors: dict[str, Any] = {}
        self._outcome_children: dict[tuple[str, str], Any] = {}
        self._predicted: dict[tuple[str, str], Any] = {}
        self.max_classes = max_classes
        # One list of classes for every worker of a service (a file in the shared state
        # directory): the cap counts all workers' classes and the performance slots line up.
        self._class_labels = ClassLabels(
            max_classes,
            self._state_dir / f"classes-{_safe(name)}-{_safe(version)}.jsonl"
            if self._state_dir is not None and task == "classification"
            else None,
        )
        known = list(classes or [])
        if not known and self._output_categorical is not None:
            known = list(self._output_categorical.ref.categories)
        for cls in known[:max_classes]:
            self._predictable(self._class_key(str(cls)))
        known_classes = self._class_labels.names()
        if task == "classification" and len(known_classes) <= PRECREATE_OUTCOME_CLASSES:
            # Outcome series start at 0 for every known (predicted, actual) pair: a counter born
            # at its first increment hides that increment from rate() and increase().
            for predicted in sorted(known_classes):
                for actual in sorted(known_classes):
                    correct = "true" if predicted == actual else "false"
                    self._outcome_children[(predicted, actual)] = inst.outcomes.labels(
                        *self._labels, predicted, actual, correct
                    )
        if task == "regression":
            for bucket in CONFIDENCE_BUCKET_LABELS:
                self._predicted[("", bucket)] = inst.predictions.labels(*self._labels, "", bucket)
        reference_id = "none" if reference is None else reference.fingerprint()
        inst.info.labels(*self._labels, label_value(stage), reference_id).set(1)
        # The windows' minimum is also the alerts' sample-size guard unless the thresholds set
        # one of their own, so the dashboards and the rules see the minimum really in force.
        for alert, value in {"min_samples": min_samples, **(thresholds or {})}.items():
            inst.alert_threshold.labels(*self._labels, label_value(alert)).set(float(value))
        prefix = os.urandom(4).hex()
        self._ids = itertools.count()
        self._batches = itertools.count()
        self._id_prefix = f"{prefix}-"
        state.drift.add(self)

    # -- construction helpers -------------------------------------------------------------------

    @staticmethod
    def _resolve_features(
        reference: ReferenceProfile | None,
        features: Sequence[str] | None,
        domains: Mapping[str, tuple[float, float]] | None,
        segment_by: str | None = None,
    ) -> list[str]:
        """The features watched for drift: the segment feature is context, not one of them."""
        if reference is None:
            if features:
                raise ProfileError(f"features {list(features)} are watched but no reference given")
            return []
        watched = list(reference.features) if features is None else list(features)
        reference.require(watched)
        for feature, bounds in (domains or {}).items():
            if feature not in watched and feature != segment_by:
                raise ValueError(f"domains names {feature!r}, which is not watched")
            ref = reference.features[feature]
            if not isinstance(ref, NumericFeature) or len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"domains[{feature!r}] must be (low, high) of a numeric feature")
        return [f for f in watched if f != segment_by]

    def _segment_context(
        self,
        reference: ReferenceProfile | None,
        segment_by: str | None,
        domains: Mapping[str, tuple[float, float]] | None,
    ) -> tuple[Segments | None, SegmentKey | None]:
        """The segments and the segment feature's reader, when the monitor compares by segment;
        the reader counts invalid values with the reasons of a watched feature of its kind."""
        if segment_by is None:
            return None, None
        segments = segments_by(reference, segment_by)  # raises without such segments
        assert reference is not None
        ref, domain = reference.features[segment_by], (domains or {}).get(segment_by)
        reasons: tuple[str, ...] = CATEGORICAL_REASONS
        if isinstance(ref, NumericFeature):
            reasons = NUMERIC_REASONS + (("out_of_domain",) if domain else ())
        invalid = self._instruments.invalid
        children = {r: invalid.labels(*self._labels, label_value(segment_by), r) for r in reasons}
        return segments, SegmentKey(segments, ref, children, domain)

    def _expectation(
        self, name: str, ref: NumericFeature | CategoricalFeature, base: int
    ) -> Expectation | None:
        """A segmented feature's expectation, its counts at ``base`` in its stream; or None."""
        if self._segments is None:
            return None
        return Expectation.build(self._segments, name, ref, base, self._instruments, self._labels)

    def _setup_output(self, reference: ReferenceProfile | None, seed: int) -> None:
        output = reference.output if reference is not None else None
        if output is None:
            return
        if self.task == "classification":
            if not isinstance(output, CategoricalFeature):
                raise ProfileError(
                    "the reference profiles the output as numeric, but task='classification' "
                    "needs class shares: rebuild it with target_kind='categorical'"
                )
            self._output_categorical = _CategoricalWatch(
                OUTPUT, output, self, seed, open_vocabulary=True
            )
        else:
            if not isinstance(output, NumericFeature):
                raise ProfileError(
                    "the reference profiles the output as categorical, but task='regression' "
                    "needs numeric bins: rebuild it with target_kind='numeric'"
                )
            self._output_numeric = _NumericWatch(OUTPUT, output, self, seed, None)

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
            with self._lock:
                if self._window_clock() >= self._next_due:
                    self._housekeeping()
                try:
                    self._take_row(features)
                except Exception:  # a mapping that cannot be read: the output still counts
                    self._internal_error("read a row's features")
                output = self._take_output(prediction, confidence)
            if latency_seconds is not None:
                self.observe_latency(latency_seconds)
            if keep and output is not None:
                self._remember(PendingPrediction(pid, now, self.version, *output))
        except Exception:  # monitoring must never break the prediction it monitors
            self._internal_error("observe a prediction")
        return pid

    def _internal_error(self, what: str) -> None:
        self._monitor_errors.inc()
        log.exception("model monitor %s failed to %s", self.name, what)

    def pending(
        self, prediction_id: str, prediction: Any, confidence: Any
    ) -> PendingPrediction | None:
        """What the outcome store would keep for this prediction, or None when it is invalid.

        Counts nothing (``observe`` already did); for callers that store predictions themselves.
        Judges the prediction and the confidence exactly as ``observe`` does.
        """
        value = category(prediction) if self.task == "classification" else number(prediction)
        if isinstance(value, Invalid):
            return None
        judged = judge_confidence(confidence)
        valid = judged if isinstance(judged, float) else None
        return PendingPrediction(prediction_id, self._clock(), self.version, value, valid)

    def store_failed(self, exc: BaseException) -> None:
        """Count a failed write to the outcome store made on the monitor's behalf."""
        self._store_errors.inc()
        if self._store_ok:
            log.error("model monitor %s cannot store predictions: %s", self.name, exc)
        self._store_ok = False

    def store_succeeded(self) -> None:
        self._store_ok = True

    def _remember(self, *pendings: PendingPrediction) -> None:
        """Keep predictions for their ground truth; a failing store is counted, never raised."""
        try:
            if len(pendings) == 1:
                self._outcomes.remember(pendings[0])
            else:
                self._outcomes.remember_many(pendings)
            self._store_ok = True
        except (StoreError, sqlite3.Error, OSError) as exc:
            self._store_errors.inc()
            if self._store_ok:
                log.error("model monitor %s cannot store predictions: %s", self.name, exc)
            self._store_ok = False

    def _take_row(self, features: Mapping[str, Any]) -> None:
        try:
            get = features.get
        except AttributeError:
            get = _absent_getter
        key = self._segment_key
        if key is None:
            for numeric in self._numeric:
                numeric.add(number(get(numeric.name, ABSENT)))
            for categorical in self._categorical:
                categorical.add_key(category(get(categorical.name, ABSENT)))
            return
        # Segmented: each counted value also adds one to its segment's slot (see _flush).
        self._row_segment = key.overall  # until the segment value is read
        slot = self._row_segment = key.take(get(key.name, ABSENT))
        for numeric in self._numeric:
            if numeric.add(number(get(numeric.name, ABSENT))):
                numeric.stream.live[numeric.segment_base + slot] += 1.0
        for categorical in self._categorical:
            if categorical.add_key(category(get(categorical.name, ABSENT))):
                categorical.stream.live[categorical.segment_base + slot] += 1.0

    def _take_output(
        self, prediction: Any, confidence: float | None
    ) -> tuple[Any, float | None] | None:
        """Count the output; returns the (prediction, confidence) worth keeping, or None."""
        bucket, valid_confidence = self._confidence_bucket(confidence)
        if self.task == "classification":
            key = category(prediction)
            if isinstance(key, Invalid):
                self._output_invalid[key].inc()
                return None
            child = self._predicted.get((key, bucket))
            if child is None:
                child = self._predicted_child(key, bucket)
            child.inc()
            output = self._output_categorical
            if output is not None and output.add_key(key) and output.expectation is not None:
                output.stream.live[output.segment_base + self._row_segment] += 1.0
            if valid_confidence is not None:
                live = self._confidences.live
                live[0] += 1.0
                live[1] += valid_confidence
            return key, valid_confidence
        self._predicted[("", bucket)].inc()
        x = number(prediction)
        if isinstance(x, Invalid):
            # The output watch's invalid counters are these same children.
            self._output_invalid[x].inc()
            return None
        numeric = self._output_numeric
        if numeric is not None and numeric.add(x) and numeric.expectation is not None:
            numeric.stream.live[numeric.segment_base + self._row_segment] += 1.0
        return x, valid_confidence

    def _confidence_bucket(self, confidence: Any) -> tuple[str, float | None]:
        judged = judge_confidence(confidence)
        if isinstance(judged, Invalid):
            child = self._confidence_invalid.get(judged)  # none for MISSING: no confidence given
            if child is not None:
                child.inc()
            return NO_CONFIDENCE, None
        self._confidence.observe(judged)
        low, high = self._confidence_cuts
        bucket = "low" if judged < low else "high" if judged >= high else "medium"
        return bucket, judged

    def count_invalid(self, feature: str, reason: str) -> None:
        """Count an invalid value found outside ``observe`` (e.g. a request refused for it)."""
        key = self._segment_key
        if key is not None and key.name == feature:
            child = key.invalid.get(reason)
            if child is not None:
                child.inc()
            return
        for watch in self._watches():
            if watch.name == feature:
                child = watch.invalid.get(reason)
                if child is not None:
                    child.inc()
                return

    def observe_latency(self, seconds: float) -> None:
        """Record one inference latency (``observe`` and ``instrument`` call this for you)."""
        if isinstance(seconds, (int, float)) and seconds >= 0 and math.isfinite(seconds):
            self._duration.observe(seconds)

    def record_error(self, error: BaseException | type[BaseException] | str) -> None:
        """Count a failed prediction by exception class (at most MAX_ERROR_KINDS distinct)."""
        if isinstance(error, str):
            kind = error
        else:
            kind = (error if isinstance(error, type) else type(error)).__name__
        kind = label_value(kind)
        child = self._errors.get(kind)
        if child is None:
            with self._lock:
                if kind not in self._errors and len(self._errors) >= MAX_ERROR_KINDS:
                    kind = OTHER
                child = self._errors.get(kind)
                if child is None:
                    child = self._instruments.errors.labels(*self._labels, kind)
                    self._errors[kind] = child
        child.inc()

    # -- batches -------------------------------------------------------------------------------

    def observe_batch(
        self,
        frame: pd.DataFrame | Mapping[str, Sequence[Any]],
        predictions: Sequence[Any] | np.ndarray | pd.Series,
        confidences: Sequence[float | None] | np.ndarray | pd.Series | None = None,
        latency_seconds: float | None = None,
    ) -> list[str]:
        """Count a batch of predictions at numpy speed; returns one prediction id per row.

        ``frame`` is a DataFrame (or a mapping of columns) with one row per prediction. Each value
        is judged as :meth:`observe` judges it (:mod:`exporter.coerce`): None, pandas NA and NaT
        are ``missing``, a float NaN in a numeric column is ``nan`` (in a categorical one,
        ``missing``), text in a numeric column is ``wrong_type``, infinities and integers past a
        double are ``inf``; so a batch gives the counters of the same rows observed one by one.
        No value makes it raise. ``latency_seconds`` is the batch's total inference time,
        recorded once.
        """
        n_rows = len(predictions)
        # A batch number of its own keeps ids unique without a lock shared with observe().
        batch = f"{self._id_prefix}b{next(self._batches)}-"
        ids = [f"{batch}{i}" for i in range(n_rows)]
        try:
            now = self._clock()
            table = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(dict(frame))
            if len(table) != n_rows:
                raise ValueError(f"frame has {len(table)} rows but {n_rows} predictions")
            if confidences is not None and len(confidences) != n_rows:
                raise ValueError(f"{len(confidences)} confidences for {n_rows} predictions")
            # Judged before the lock: the judging is the costly part and touches no state.
            key = self._segment_key
            segment = table[key.name] if key is not None and key.name in table.columns else None
            numeric = [(w, self._column(table, w.name, numbers)) for w in self._numeric]
            categorical = [(w, self._column(table, w.name, categories)) for w in self._categorical]
            judge_output = categories if self.task == "classification" else numbers
            outputs = judge_output(predictions)
            judged_confidences = confidences_of(confidences) if confidences is not None else None
            with self._lock:
                self._housekeeping()
                slots = key.take_column(segment, n_rows) if key is not None else None
                for watch, column in numeric:
                    if column is None:
                        watch.invalid["missing"].inc(n_rows)
                    else:
                        watch.add_column(column, slots)
                for category_watch, keys in categorical:
                    if keys is None:
                        category_watch.invalid["missing"].inc(n_rows)
                    else:
                        category_watch.add_column(keys, slots)
                kept = self._batch_output(outputs, judged_confidences, n_rows, slots)
            if latency_seconds is not None:
                self.observe_latency(latency_seconds)
            if kept:
                self._remember(
                    *(PendingPrediction(ids[i], now, self.version, p, c) for i, p, c in kept)
                )
        except Exception:
            self._internal_error("observe a batch")
        return ids

    @staticmethod
    def _column(table: pd.DataFrame, name: str, judge: Callable[[Any], _J]) -> _J | None:
        """A feature's column judged, or None when the frame has no such column."""
        return judge(table[name]) if name in table.columns else None

    def _batch_output(
        self,
        outputs: Numbers | Categories,
        judged_confidences: Numbers | None,
        n_rows: int,
        slots: IntArray | None = None,
    ) -> list[tuple[int, Any, float | None]]:
        """Count a batch's judged outputs and confidences as :meth:`_take_output` counts them
        row by row; returns (row, prediction, confidence) of the rows to keep."""
        buckets = np.full(n_rows, CONFIDENCE_BUCKET_LABELS.index(NO_CONFIDENCE), dtype=np.int64)
        confidence_values: list[float] = []
        confidence_valid: list[bool] = [False] * n_rows
        if judged_confidences is not None:
            for reason, count in judged_confidences.counts().items():
                child = self._confidence_invalid.get(reason)  # none for MISSING
                if child is not None:
                    child.inc(count)
            valid = judged_confidences.codes == VALID_CODE
            values = judged_confidences.values
            for value in values[valid].tolist():  # in row order, as observe() adds them
                self._confidence.observe(value)
            low, high = self._confidence_cuts
            # Indexes into CONFIDENCE_BUCKET_LABELS: low, medium, high (none stays elsewhere).
            levels = np.where(values < low, 0, np.where(values >= high, 2, 1))
            buckets[valid] = levels[valid]
            confidence_values = values.tolist()
            confidence_valid = valid.tolist()

        def confidence_of(row: int) -> float | None:
            return confidence_values[row] if confidence_valid[row] else None

        if isinstance(outputs, Numbers):
            counts = np.bincount(buckets, minlength=len(CONFIDENCE_BUCKET_LABELS))
            for index in np.flatnonzero(counts).tolist():
                label = CONFIDENCE_BUCKET_LABELS[index]
                self._predicted[("", label)].inc(int(counts[index]))
            if self._output_numeric is not None:
                self._output_numeric.add_column(outputs, slots)  # counts invalid outputs too
            else:
                for reason, count in outputs.counts().items():
                    self._output_invalid[reason].inc(count)
            values_list = outputs.values.tolist()
            rows = np.flatnonzero(outputs.codes == VALID_CODE).tolist()
            return [(i, values_list[i], confidence_of(i)) for i in rows]

        for reason, count in outputs.counts().items():
            self._output_invalid[reason].inc(count)
        kept_rows = np.flatnonzero(outputs.codes == VALID_CODE)
        if not kept_rows.size:
            return []
        positions, distinct = pd.factorize(outputs.keys[kept_rows])
        classes = distinct.tolist()
        width = len(CONFIDENCE_BUCKET_LABELS)
        pairs = np.bincount(positions * width + buckets[kept_rows], minlength=len(classes) * width)
        for flat in np.flatnonzero(pairs).tolist():
            key, label = classes[flat // width], CONFIDENCE_BUCKET_LABELS[flat % width]
            child = self._predicted.get((key, label))
            if child is None:
                child = self._predicted_child(key, label)
            child.inc(int(pairs[flat]))
        output = self._output_categorical
        if output is not None:
            per_class = np.bincount(positions, minlength=len(classes)).tolist()
            for key, count in zip(classes, per_class, strict=True):
                output.add_key(key, count)
            if slots is not None and output.expectation is not None:
                count_slots(output.stream.live, output.segment_base, slots[kept_rows],
                            output.expectation.width)  # fmt: skip
        # Expected accuracy: the confidences of the kept predictions, in row order as observe().
        live = self._confidences.live
        keys_list = outputs.keys.tolist()
        kept: list[tuple[int, Any, float | None]] = []
        for i in kept_rows.tolist():
            kept_confidence = confidence_of(i)
            if kept_confidence is not None:
                live[0] += 1.0
                live[1] += kept_confidence
            kept.append((i, keys_list[i], kept_confidence))
        return kept

    # -- classes -------------------------------------------------------------------------------

    def _class_key(self, key: str) -> str:
        """The ``predicted``/``actual``/``class`` label of a class: cut to a fit label value, and
        ``__other__`` once ``max_classes`` distinct classes were seen."""
        key = label_value(key)
        if key == OTHER or self._class_labels.index(key) is None:
            return OTHER
        return key

    def _predictable(self, key: str) -> None:
        """Prediction series of a class the model predicts (or its reference holds), every
        confidence bucket at 0: a counter born at its first increment hides that increment from
        rate(). Only for predictions: a class known from feedback alone has no prediction series."""
        for bucket in CONFIDENCE_BUCKET_LABELS:
            if (key, bucket) not in self._predicted:
                self._predicted[(key, bucket)] = self._instruments.predictions.labels(
                    *self._labels, key, bucket
                )

    def _predicted_child(self, key: str, bucket: str) -> Any:
        """Slow path for a class predicted for the first time (called under the lock)."""
        label = self._class_key(key)
        if label != OTHER:
            self._predictable(label)
        child = self._predicted.get((label, bucket))
        if child is None:  # __other__
            child = self._instruments.predictions.labels(*self._labels, label, bucket)
            self._predicted[(label, bucket)] = child
        # A class past max_classes is not cached under its own name: that would let the cache
        # grow with every new name. It takes this slow path each time instead.
        return child

    # -- decorator -----------------------------------------------------------------------------

    @overload
    def instrument(self, func: _F) -> _F: ...

    @overload
    def instrument(
        self,
        func: None = None,
        *,
        features: Callable[..., Mapping[str, Any]] | None = None,
        output: Callable[[Any], tuple[Any, float | None]] | None = None,
    ) -> Callable[[_F], _F]: ...

    def instrument(
        self,
        func: _F | None = None,
        *,
        features: Callable[..., Mapping[str, Any]] | None = None,
        output: Callable[[Any], tuple[Any, float | None]] | None = None,
    ) -> _F | Callable[[_F], _F]:
        """Wrap a predict function (sync or async): time it, count errors, observe in and out.

        By default the features are the ``features=`` keyword argument or else the first
        positional argument that is a mapping; the result is read as ``(prediction, confidence)``
        when it is a pair, ``result["prediction"]`` / ``result.get("confidence")`` when it is a
        mapping with a ``prediction`` key, and as the bare prediction otherwise. Pass
        ``features=`` and ``output=`` to read them differently. Exceptions are counted by class
        and re-raised unchanged.
        """
        read_features = features or _default_features
        read_output = output or _default_output

        def decorate(fn: _F) -> _F:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        result = await fn(*args, **kwargs)
                    except Exception as exc:
                        self._failed(exc, time.perf_counter() - start)
                        raise
                    self._succeeded(args, kwargs, result, time.perf_counter() - start,
                                    read_features, read_output)  # fmt: skip
                    return result

                return cast(_F, async_wrapper)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    self._failed(exc, time.perf_counter() - start)
                    raise
                self._succeeded(args, kwargs, result, time.perf_counter() - start,
                                read_features, read_output)  # fmt: skip
                return result

            return cast(_F, wrapper)

        return decorate(func) if func is not None else decorate

    def _failed(self, exc: Exception, elapsed: float) -> None:
        try:
            self.record_error(exc)
            self.observe_latency(elapsed)
        except Exception:
            self._monitor_errors.inc()

    def _succeeded(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        elapsed: float,
        read_features: Callable[..., Mapping[str, Any]],
        read_output: Callable[[Any], tuple[Any, float | None]],
    ) -> None:
        try:
            row = read_features(*args, **kwargs)
            prediction, confidence = read_output(result)
        except Exception:
            self._monitor_errors.inc()
            log.exception("model monitor %s could not read a call's inputs/outputs", self.name)
            self.observe_latency(elapsed)
            return
        self.observe(row, prediction, confidence, latency_seconds=elapsed)

    # -- drift ---------------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        """Seal an ended tick and flush pending counts into the counters (under the lock)."""
        ended = self._ticks.advance()
        self._flush()
        if ended is not None:
            for watch in self._watches():
                watch.stream.seal(ended[1])
                watch.flushed = [0.0] * len(watch.flushed)
            self._performance.seal(ended[1])
            self._confidences.seal(ended[1])
        tick_start = float(self._ticks.current * self._ticks.seconds)
        for stream in self._streams().values():
            stream.tick_start = tick_start
        next_tick = (self._ticks.current + 1) * self._ticks.seconds
        self._next_due = min(next_tick, self._window_clock() + FLUSH_SECONDS)

    def _flush(self) -> None:
        # The hot path only adds to the live tick's lists; the counters catch up here with the
        # difference since the last flush, so each counter child costs one inc() per flush
        # instead of one per value.
        for watch in self._watches():
            live, flushed = watch.stream.live, watch.flushed
            for i, counter in enumerate(watch.counters):
                delta = live[i] - flushed[i]
                if delta > 0:
                    counter.inc(delta)
            if watch.expectation is not None:
                # The reference expectation of the values counted since the last flush.
                watch.expectation.flush(live, flushed)
            watch.flushed = live[:]

    def flush(self) -> None:
        """Bring counters up to date, drop expired predictions and publish this worker's windows.

        Scrapes call it, and a service calls it every second; ``observe`` does the counters part
        on its own at most once a second. Never raises.
        """
        try:
            with self._lock:
                self._housekeeping()
            now = self._clock()
            if now >= self._next_expire:
                self._next_expire = now + EXPIRE_SECONDS
                self._expire(now)
            window_now = self._window_clock()
            if self._state_file is not None and window_now >= self._next_export:
                self._next_export = window_now + EXPORT_SECONDS
                self._export_state(window_now)
        except Exception:
            self._monitor_errors.inc()
            log.exception("model monitor %s failed to flush", self.name)

    def _expire(self, now: float) -> None:
        try:
            expired = self._outcomes.expire(now)
        except (StoreError, sqlite3.Error, OSError) as exc:
            self._store_errors.inc()
            log.error("model monitor %s cannot expire predictions: %s", self.name, exc)
            return
        if expired:
            self._expired.inc(expired)

    def _streams(self) -> dict[str, Stream]:
        """Every stream by name, the name other workers' exports are matched by (not their
        position: a worker whose config lists the features in another order still merges
        each feature with itself)."""
        streams = {f"feature:{w.name}": w.stream for w in self._watches()}
        streams["performance"] = self._performance
        streams["confidences"] = self._confidences
        return streams

    def _export_state(self, now: float) -> None:
        """Write this worker's windows where the other workers read them (atomic rename)."""
        assert self._state_file is not None
        arrays: dict[str, np.ndarray] = {}
        with self._lock:
            for name, stream in self._streams().items():
                for key, value in export_stream(stream, now).items():
                    arrays[f"{_stream_id(name)}.{key}"] = value
        directory = self._state_file.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".windows-", suffix=".npz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, self._state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _other_workers(self) -> list[dict[str, np.ndarray]]:
        """The windows other live or recently dead workers of this model published."""
        if self._state_file is None or self._state_dir is None:
            return []
        states = []
        pattern = self._state_file.name.rsplit("-", 1)[0] + "-*.npz"
        for path in sorted(self._state_dir.glob(pattern)):
            if path == self._state_file:
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    states.append({key: data[key] for key in data.files})
            except (OSError, ValueError, EOFError) as exc:  # a half-swept file: skip it
                log.warning("skipping unreadable worker state %s: %s", path, exc)
        return states

    # -- ground truth ---------------------------------------------------------------------------

    def record_outcome(self, prediction_id: str, actual: Any) -> Resolution:
        """Join the ground truth of an earlier prediction; returns what happened.

        ``RECORDED`` the first time (counted once), ``DUPLICATE`` for the same value again,
        ``CONFLICT`` for a different value, ``UNKNOWN`` for an id never seen or expired,
        ``INVALID`` for an actual of the wrong type (counted under ``feature="__actual__"``),
        ``UNAVAILABLE`` when the store cannot be read. Never raises.
        """
        try:
            value = self._valid_actual(actual)
            if value is None:
                return Resolution.INVALID
            now = self._clock()
            try:
                resolved = self._outcomes.resolve(str(prediction_id), value, now)
            except (StoreError, sqlite3.Error, OSError) as exc:
                self._store_errors.inc()
                log.error("model monitor %s cannot read the outcome store: %s", self.name, exc)
                return Resolution.UNAVAILABLE
            if resolved.resolution is Resolution.RECORDED and resolved.pending is not None:
                self._count_outcome(resolved.pending, value, now)
            return resolved.resolution
        except Exception:
            self._monitor_errors.inc()
            log.exception("model monitor %s failed to record an outcome", self.name)
            return Resolution.UNAVAILABLE

    def _valid_actual(self, actual: Any) -> str | float | None:
        """The actual judged as this task's predictions are (a number for a regression, a
        class otherwise); None after counting why it is invalid."""
        value = number(actual) if self.task == "regression" else category(actual)
        if isinstance(value, Invalid):
            self._actual_invalid[value].inc()
            return None
        return value

    def _count_outcome(self, pending: PendingPrediction, actual: Any, now: float) -> None:
        self._delay.observe(max(0.0, now - pending.created_at))
        if self.task == "regression":
            predicted = float(pending.prediction)
            error = predicted - actual
            self._absolute_error.observe(abs(error))
            self._squared_error.inc(error * error)
            if error >= 0:
                self._error_positive.inc(error)
            else:
                self._error_negative.inc(-error)
            row = perf.regression_row(predicted, actual)
        else:
            with self._lock:
                predicted_key = self._class_key(str(pending.prediction))
                actual_key = self._class_key(str(actual))
                slot_p, slot_a = self._slot(predicted_key), self._slot(actual_key)
                child = self._outcome_children.get((predicted_key, actual_key))
                if child is None:
                    correct = "true" if predicted_key == actual_key else "false"
                    child = self._instruments.outcomes.labels(
                        *self._labels, predicted_key, actual_key, correct
                    )
                    self._outcome_children[(predicted_key, actual_key)] = child
            child.inc()
            row = perf.classification_row(
                self._performance.width, slot_p, slot_a, pending.confidence
            )
        with self._lock:
            live = self._performance.live
            for i, value in enumerate(row):
                if value:
                    live[i] += value

    def _slot(self, key: str) -> int:
        """Performance-stream slot of a class; the last slot is ``__other__``."""
        slot = self._class_labels.get(key)
        return self.max_classes if slot is None else slot

    @property
    def store_healthy(self) -> bool:
        """False after a failed write to the outcome store, until the next one succeeds."""
        return self._store_ok

    def check_store(self) -> None:
        """Raise StoreError when the outcome store cannot be written now (for /readyz)."""
        self._outcomes.check_writable()

    def _watches(self) -> Iterator[_NumericWatch | _CategoricalWatch]:
        yield from self._numeric
        yield from self._categorical
        if self._output_numeric is not None:
            yield self._output_numeric
        if self._output_categorical is not None:
            yield self._output_categorical

    @property
    def windows(self) -> list[str]:
        return [s.name for s in self._specs]

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
        cached = self._drift_cache
        now = self._window_clock()
        if cached is not None and 0 <= now - cached.taken_at < limit:
            return cached
        with self._drift_lock:
            cached = self._drift_cache
            now = self._window_clock()
            if cached is not None and 0 <= now - cached.taken_at < limit:
                return cached
            snapshot = self._compute_drift(now)
            self._drift_cache = snapshot
            return snapshot

    def _compute_drift(self, now: float) -> DriftSnapshot:
        others = self._other_workers()
        views: dict[tuple[str, str], WindowView] = {}
        with self._lock:
            # Under the lock that record_outcome holds while it learns a class: iterating the
            # live dict during a scrape once raised "dictionary changed size during iteration".
            class_names = self._class_names()
            self._housekeeping()
            for name, stream in self._streams().items():
                live_sample = stream.live_sample() if stream.sample_size else None
                for spec in self._specs:
                    views[(name, spec.name)] = stream.view(
                        spec.name, now, with_sample=bool(stream.sample_size),
                        live_sample=live_sample,
                    )  # fmt: skip
        if others:
            for (name, window), own in list(views.items()):
                prefix = f"{_stream_id(name)}."
                stream_states = [
                    {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                    for state in others
                ]
                spec = next(s for s in self._specs if s.name == window)
                views[(name, window)] = merge_view(
                    own, stream_states, spec, now, self._sample_size, self._export_rng
                )
        performance = {
            spec.name: self._window_performance(
                spec.name,
                views[("performance", spec.name)],
                views[("confidences", spec.name)],
                class_names,
            )
            for spec in self._specs
        }
        try:
            pending: int | None = self._outcomes.pending_count()
        except (StoreError, sqlite3.Error, OSError):
            pending = None
        result: dict[str, dict[str, FeatureDrift]] = {}
        for watch in self._watches():
            per_window = result.setdefault(watch.name, {})
            for spec in self._specs:
                view = views[(f"feature:{watch.name}", spec.name)]
                if isinstance(watch, _NumericWatch):
                    per_window[spec.name] = self._numeric_drift(watch, spec.name, view)
                else:
                    per_window[spec.name] = self._categorical_drift(watch, spec.name, view)
        return DriftSnapshot(taken_at=now, features=result, performance=performance,
                             pending=pending)  # fmt: skip

    def _class_names(self) -> list[str]:
        """Class name by performance-stream slot (call with the lock held)."""
        names = self._class_labels.names()
        return names + [""] * (self.max_classes - len(names)) + [OTHER]

    def _window_performance(
        self, window: str, outcomes: WindowView, confidences: WindowView, names: list[str]
    ) -> WindowPerformance:
        samples = int(round(outcomes.totals[0]))
        if self.task == "regression":
            if samples < self.min_samples:
                return WindowPerformance(window, samples, ready=False)
            return WindowPerformance(
                window, samples, True, perf.regression_metrics(outcomes.totals)
            )
        metrics: dict[str, float | None] = {}
        classes: Mapping[str, Mapping[str, float | None]] = {}
        ready = samples >= self.min_samples
        if ready:
            overall, classes = perf.classification_metrics(outcomes.totals, names)
            metrics.update(overall)
        # Expected accuracy needs no labels: the mean confidence of every prediction in the window.
        confident = confidences.totals[0]
        if confident >= self.min_samples:
            metrics["expected_accuracy"] = float(confidences.totals[1] / confident)
        return WindowPerformance(window, samples, ready, metrics, classes)

    def _numeric_drift(self, watch: _NumericWatch, window: str, view: Any) -> FeatureDrift:
        counts = view.totals[: watch.positive]
        samples = int(round(counts.sum()))
        if samples < self.min_samples:
            return FeatureDrift(watch.name, window, "numeric", samples, ready=False)
        ref = watch.ref
        total = float(view.totals[watch.positive] - view.totals[watch.negative])
        expected = watch.expectation
        if expected is not None:
            # The reference of the segments the window's values came from; no KS (no reference
            # sample per segment). The scale of the z-score stays the overall reference std.
            share = expected.share(view.totals)
            z = stats.mean_zscore(expected.mean(view.totals), ref.std, total, samples)
            ks = stats.KsResult(math.nan, math.nan)
        else:
            share = watch.share
            z = stats.mean_zscore(ref.mean, ref.std, total, samples)
            ks = stats.ks_2samp_sorted(watch.sample, view.sample)
        return FeatureDrift(
            watch.name, window, "numeric", samples, ready=True,
            psi=stats.psi(share, counts).statistic,
            ks_statistic=_finite_or_none(ks.statistic),
            ks_pvalue=_finite_or_none(ks.pvalue),
            zscore=_finite_or_none(z.statistic),
            current_mean=_finite_or_none(z.current_mean),
            js_distance=_finite_or_none(stats.js_distance(share, counts)),
        )  # fmt: skip

    def _categorical_drift(self, watch: _CategoricalWatch, window: str, view: Any) -> FeatureDrift:
        counts = view.totals[: watch.segment_base]
        samples = int(round(counts.sum()))
        if samples < self.min_samples:
            return FeatureDrift(watch.name, window, "categorical", samples, ready=False)
        expected = watch.expectation
        share = expected.share(view.totals) if expected is not None else watch.share
        return FeatureDrift(
            watch.name, window, "categorical", samples, ready=True,
            psi=stats.psi(share, counts).statistic,
            js_distance=_finite_or_none(stats.js_distance(share, counts)),
            chi2_pvalue=_finite_or_none(stats.chi_square(share, counts).pvalue),
        )  # fmt: skip


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


def _stream_id(name: str) -> str:
    """A stream's key prefix in the exported state: hex, so any feature name is a safe key."""
    return "s" + name.encode("utf-8", "surrogatepass").hex()


def _safe(text: str) -> str:
    """A name fit for a file name: anything but letters, digits, '.', '_' becomes '_'."""
    return "".join(c if c.isalnum() or c in "._" else "_" for c in text)[:64]


def _absent_getter(name: str, default: Any = ABSENT) -> Any:
    return default


def _default_features(*args: Any, **kwargs: Any) -> Mapping[str, Any]:
    if "features" in kwargs:
        return cast(Mapping[str, Any], kwargs["features"])
    for arg in args:
        if isinstance(arg, Mapping):
            return arg
    return {}


def _default_output(result: Any) -> tuple[Any, float | None]:
    if isinstance(result, tuple) and len(result) == 2:
        return result[0], result[1]
    if isinstance(result, Mapping) and "prediction" in result:
        return result["prediction"], result.get("confidence")
    return result, None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
