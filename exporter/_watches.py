"""One watched stream each: a feature's (or the output's) values counted into reference bins.

A watch holds everything the hot path needs for its stream, resolved once at construction: the
reference edges or categories, its counter children, its invalid-reason children and its
window :class:`~exporter.windows.Stream`. It receives these pieces, not the monitor. Values
arrive already judged by :mod:`exporter.coerce` (the caller judges: one function call per value
on the hot path).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import pandas as pd

from exporter._drift import FeatureDrift, categorical_drift, numeric_drift
from exporter.coerce import (
    CATEGORY_REASONS,
    NUMBER_REASONS,
    VALID_CODE,
    Categories,
    Invalid,
    Numbers,
)
from exporter.metrics import Instruments, label_value
from exporter.profile import CategoricalFeature, NumericFeature, Segments
from exporter.segments import Expectation, IntArray, count_slots
from exporter.windows import Stream, WindowSpec, WindowView

#: Reasons of ``model_input_invalid_total``; values with any of them stay out of drift statistics.
NUMERIC_REASONS: tuple[str, ...] = NUMBER_REASONS
CATEGORICAL_REASONS: tuple[str, ...] = (*CATEGORY_REASONS, "unknown_category")


def _segment_counts(
    segments: Segments | None, name: str, ref: NumericFeature | CategoricalFeature, base: int,
    instruments: Instruments, labels: tuple[str, str],
) -> tuple[Expectation | None, int]:  # fmt: skip
    """A segmented feature's expectation, its counts at ``base`` in its stream (None when not
    segmented), and the stream's width."""
    if segments is None:
        return None, base
    expectation = Expectation.build(segments, name, ref, base, instruments, labels)
    return expectation, base + expectation.width


class NumericWatch:
    """Everything the hot path needs for one numeric stream, resolved once at construction."""

    __slots__ = ("name", "ref", "edges", "counters", "flushed", "invalid", "stream", "positive",
                 "negative", "low", "high", "sample", "edges_array", "share",
                 "expectation", "segment_base")  # fmt: skip

    def __init__(
        self, name: str, ref: NumericFeature, instruments: Instruments, labels: tuple[str, str],
        specs: Sequence[WindowSpec], sample_size: int, seed: int,
        domain: tuple[float, float] | None, segments: Segments | None,
    ) -> None:  # fmt: skip
        inst = instruments
        feature = label_value(name)
        self.name = name
        self.ref = ref
        self.edges = list(ref.edges)
        self.edges_array = np.asarray(ref.edges, dtype=np.float64)
        # Stream layout: one count per bin, then the sums of the positive values and of the
        # absolute negative values; the counters mirror it slot for slot (see flush_counters).
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
        self.expectation, width = _segment_counts(segments, name, ref, self.segment_base, inst,
                                                  labels)  # fmt: skip
        self.flushed = [0.0] * width
        reasons = NUMERIC_REASONS + (("out_of_domain",) if domain else ())
        self.invalid = {r: inst.invalid.labels(*labels, feature, r) for r in reasons}
        self.stream = Stream(specs, width, 0 if self.expectation else sample_size, seed)
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

    def drift(self, window: str, view: WindowView, min_samples: int) -> FeatureDrift:
        """The drift of this stream's ``window`` seen as ``view``."""
        counts = view.totals[: self.positive]
        samples = int(round(counts.sum()))
        if samples < min_samples:
            return FeatureDrift(self.name, window, "numeric", samples, ready=False)
        total = float(view.totals[self.positive] - view.totals[self.negative])
        expected = self.expectation
        if expected is not None:
            # The reference of the segments the window's values came from; no KS (no reference
            # sample per segment). The scale of the z-score stays the overall reference std.
            return numeric_drift(self.name, window, counts, total, expected.share(view.totals),
                                 expected.mean(view.totals), self.ref.std, None)  # fmt: skip
        return numeric_drift(self.name, window, counts, total, self.share, self.ref.mean,
                             self.ref.std, (self.sample, view.sample))  # fmt: skip


class CategoricalWatch:
    """Hot-path state of one categorical stream: top-K categories plus ``__other__``."""

    __slots__ = ("name", "ref", "index", "other", "known", "complete", "counters", "flushed",
                 "invalid", "stream", "open_vocabulary", "share", "expectation",
                 "segment_base")  # fmt: skip

    def __init__(
        self, name: str, ref: CategoricalFeature, instruments: Instruments,
        labels: tuple[str, str], specs: Sequence[WindowSpec], seed: int,
        segments: Segments | None, open_vocabulary: bool = False,
    ) -> None:  # fmt: skip
        inst = instruments
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
        self.expectation, width = _segment_counts(segments, name, ref, self.segment_base, inst,
                                                  labels)  # fmt: skip
        self.flushed = [0.0] * width
        self.share = np.asarray(ref.reference_share, dtype=np.float64)
        reasons = CATEGORICAL_REASONS if not open_vocabulary else ("missing", "wrong_type")
        self.invalid = {r: inst.invalid.labels(*labels, feature, r) for r in reasons}
        self.stream = Stream(specs, width, 0, seed)
        for label, share in zip(bins, ref.reference_share, strict=True):
            inst.reference_ratio.labels(*labels, feature, label).set(share)

    def add_key(self, key: str | Invalid, count: int = 1) -> bool:
        """Count ``count`` values judged by :func:`exporter.coerce.category` (the caller judges,
        as for :meth:`NumericWatch.add`), or why they are invalid; True when counted."""
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

    def drift(self, window: str, view: WindowView, min_samples: int) -> FeatureDrift:
        """The drift of this stream's ``window`` seen as ``view``."""
        counts = view.totals[: self.segment_base]
        samples = int(round(counts.sum()))
        if samples < min_samples:
            return FeatureDrift(self.name, window, "categorical", samples, ready=False)
        expected = self.expectation
        share = expected.share(view.totals) if expected is not None else self.share
        return categorical_drift(self.name, window, counts, share)


Watch = NumericWatch | CategoricalWatch


def flush_counters(watch: Watch) -> None:
    """Bring a watch's counters up to its live tick (under the monitor's lock).

    The hot path only adds to the live tick's lists; the counters catch up here with the
    difference since the last flush, so each counter child costs one inc() per flush instead
    of one per value.
    """
    live, flushed = watch.stream.live, watch.flushed
    for i, counter in enumerate(watch.counters):
        delta = live[i] - flushed[i]
        if delta > 0:
            counter.inc(delta)
    if watch.expectation is not None:
        # The reference expectation of the values counted since the last flush.
        watch.expectation.flush(live, flushed)
    watch.flushed = live[:]
