"""Segments: drift measured against the reference of the context each value came from.

A model with a daily cycle sees different inputs at 3 a.m. than at 6 p.m.; compared with a
reference that mixes every hour, its night traffic drifts every night. A profile built with
``segment_by`` (:class:`exporter.profile.Segments`) holds the reference per value of a context
feature (the hour, the weekday). With it the monitor:

* reads the segment feature of each row as *context* (:class:`SegmentKey`): validated and counted
  like any feature when invalid, but not a drift input itself (conditioned on itself it cannot
  drift, and its own mix is the traffic's daily shape, not the model's input distribution);
* counts, per other feature, how many valid values came from each segment: one more slot per
  segment in the feature's stream, so the hot path adds to a list and the windows and the
  worker-state exchange carry these counts like any other additive statistic;
* at each flush, adds the reference expectation of what was counted to two counters
  (:class:`Expectation`): ``model_feature_expected_bin_total`` (per bin, the segment's reference
  share per value) and ``model_feature_expected_value_sum_total`` (the segment's reference mean
  per value), so ``increase(expected_bin[w]) / sum(increase(expected_bin[w]))`` is the reference
  mix of exactly the segments the window's values came from, in PromQL as in the windows here.

A value whose segment has no reference of its own (missing, invalid, unknown, or rarer than the
profile's ``min_rows``) is expected to follow the overall reference: it takes the last slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from exporter.coerce import VALID_CODE, Invalid, categories, category, number, numbers
from exporter.metrics import Instruments, label_value
from exporter.profile import (
    OUTPUT,
    CategoricalFeature,
    NumericFeature,
    ReferenceProfile,
    Segments,
    SegmentShares,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def segments_by(reference: ReferenceProfile | None, segment_by: str) -> Segments:
    """The profile's segments, which must be by ``segment_by``; ValueError otherwise."""
    segments = reference.segments if reference is not None else None
    if segments is None or segments.feature != segment_by:
        if reference is None:
            found = "there is none"
        elif segments is None:
            found = "this one has no segments"
        else:
            found = f"this one has segments by {segments.feature!r}"
        raise ValueError(
            f"segment_by={segment_by!r} needs a reference profile built with segments by "
            f"{segment_by!r} (model-exporter baseline --segment-by {segment_by}); {found}"
        )
    return segments


class SegmentKey:
    """The segment feature of each row, turned into a *slot*: the index of its segment in the
    profile's ``segments.values``, or :attr:`overall` for a value without a reference of its own.

    Values are judged as a watched feature of the same kind is (:mod:`exporter.coerce`, then the
    domain and the known categories) and counted in ``invalid`` when invalid; such a row's other
    features are then compared with the overall reference. ``invalid`` maps each reason to its
    counter child (``out_of_domain`` only with a domain).
    """

    __slots__ = ("name", "numeric", "invalid", "low", "high", "slot_of", "overall", "width",
                 "known", "complete", "_keys", "_key_slots")  # fmt: skip

    def __init__(
        self,
        segments: Segments,
        reference: NumericFeature | CategoricalFeature,
        invalid: Mapping[str, Any],
        domain: tuple[float, float] | None = None,
    ) -> None:
        keys = list(segments.values)
        self.name = segments.feature
        self.invalid = dict(invalid)
        self.overall = len(keys)
        #: Slots per feature: one per segment, then the overall one.
        self.width = len(keys) + 1
        self.numeric = isinstance(reference, NumericFeature)
        self.low, self.high = domain if domain else (-math.inf, math.inf)
        self.slot_of: dict[Any, int]
        if self.numeric:
            # Float keys: an int value hashes and compares equal to its float, so one lookup
            # serves both (the profile keys whole numbers as category_key does: "3" for 3.0).
            self.slot_of = {float(k): i for i, k in enumerate(keys)}
            order = sorted(self.slot_of)
            self._keys = np.asarray(order, dtype=np.float64)
            self._key_slots = np.asarray([self.slot_of[k] for k in order], dtype=np.int64)
        else:
            self.slot_of = {k: i for i, k in enumerate(keys)}
            self._keys = np.empty(0, dtype=np.float64)
            self._key_slots = np.empty(0, dtype=np.int64)
        if isinstance(reference, CategoricalFeature):
            self.known = frozenset((*reference.categories, *reference.known_other))
            self.complete = reference.known_other_complete
        else:
            self.known = frozenset()
            self.complete = False

    # -- one row -------------------------------------------------------------------------------

    def take(self, value: object) -> int:
        """The slot of one row's value (``ABSENT`` when the row has none); counts invalid ones."""
        if self.numeric:
            return self._take_number(value)
        key = category(value)
        if isinstance(key, Invalid):
            self.invalid[key].inc()
            return self.overall
        slot = self.slot_of.get(key)
        if slot is None:
            if self.complete and key not in self.known:
                self.invalid["unknown_category"].inc()
            return self.overall
        return slot

    def _take_number(self, value: object) -> int:
        x = number(value)
        if isinstance(x, Invalid):
            self.invalid[x].inc()
            return self.overall
        if not self.low <= x <= self.high:
            self.invalid["out_of_domain"].inc()
            return self.overall
        return self.slot_of.get(x, self.overall)

    # -- a batch -------------------------------------------------------------------------------

    def take_column(self, column: pd.Series | None, n_rows: int) -> IntArray:
        """The slot of every row of a batch (``column`` is None when the batch has no such
        column); counts invalid values as :meth:`take` does, judged by the same rules."""
        slots = np.full(n_rows, self.overall, dtype=np.int64)
        if column is None:
            self.invalid["missing"].inc(n_rows)
            return slots
        if self.numeric:
            self._number_slots(column, slots)
        else:
            self._key_slots_of(column, slots)
        return slots

    def _count(self, reasons: Mapping[Invalid, int]) -> None:
        for reason, count in reasons.items():
            self.invalid[reason].inc(count)

    def _number_slots(self, column: pd.Series, slots: IntArray) -> None:
        judged = numbers(column)
        self._count(judged.counts())
        valid = judged.codes == VALID_CODE
        clean = np.where(valid, judged.values, 0.0)
        inside = valid & (clean >= self.low) & (clean <= self.high)
        outside = int((valid & ~inside).sum())
        if outside:
            self.invalid["out_of_domain"].inc(outside)
        if not self._keys.size:
            return
        position = np.minimum(np.searchsorted(self._keys, clean), self._keys.size - 1)
        found = inside & (self._keys[position] == clean)
        slots[found] = self._key_slots[position[found]]

    def _key_slots_of(self, column: pd.Series, slots: IntArray) -> None:
        judged = categories(column)
        self._count(judged.counts())
        rows = np.flatnonzero(judged.codes == VALID_CODE)
        if not rows.size:
            return
        # One look-up per distinct key: its slot, or the overall one and maybe unknown.
        positions, distinct = pd.factorize(judged.keys[rows])
        keys = distinct.tolist()
        slot_of_key = np.asarray([self.slot_of.get(k, self.overall) for k in keys], dtype=np.int64)
        slots[rows] = slot_of_key[positions]
        unknown = np.asarray(
            [k not in self.slot_of and self.complete and k not in self.known for k in keys],
            dtype=bool,
        )
        count = int(unknown[positions].sum())
        if count:
            self.invalid["unknown_category"].inc(count)


def count_slots(live: list[float], base: int, slots: IntArray, width: int) -> None:
    """Add a batch's valid values of one feature to its per-segment counts (``live[base:]``)."""
    if not slots.size:
        return
    counts = np.bincount(slots, minlength=width)
    for slot in np.flatnonzero(counts).tolist():
        live[base + slot] += float(counts[slot])


class Expectation:
    """The reference expectation of one feature's values, given the segments they came from.

    ``shares`` has one row per slot (the segments', then the overall one) over the feature's
    reference bins; ``means`` (numeric features) one reference mean per slot. The per-segment
    counts themselves live in the feature's stream, at ``base`` onwards.
    """

    __slots__ = ("base", "width", "shares", "means", "bin_counters", "sum_counters")

    def __init__(
        self,
        base: int,
        shares: FloatArray,
        means: FloatArray | None,
        bin_counters: Sequence[Any],
        sum_counters: tuple[Any, Any] | None,
    ) -> None:
        self.base = base
        self.width = shares.shape[0]
        self.shares = shares
        self.means = means
        self.bin_counters = list(bin_counters)
        self.sum_counters = sum_counters

    @classmethod
    def build(
        cls,
        segments: Segments,
        feature: str,
        reference: NumericFeature | CategoricalFeature,
        base: int,
        instruments: Instruments,
        labels: tuple[str, str],
    ) -> Expectation:
        """The expectation of ``feature`` (:data:`~exporter.profile.OUTPUT` for the output), its
        counts at ``base`` in its stream, with its counter children (``labels`` are the model's).
        A segment without a reference for the feature (too few values) expects the overall
        shares."""
        name = label_value(feature)
        bin_counters = [
            instruments.feature_expected_bins.labels(*labels, name, label_value(b))
            for b in reference.bin_labels
        ]
        sum_counters = None
        numeric = isinstance(reference, NumericFeature)
        if numeric:
            sum_counters = (
                instruments.feature_expected_value_sum.labels(*labels, name, "positive"),
                instruments.feature_expected_value_sum.labels(*labels, name, "negative"),
            )
        rows: list[list[float]] = []
        means: list[float] = []
        overall_mean = reference.mean if isinstance(reference, NumericFeature) else 0.0
        for segment in segments.values.values():
            own: SegmentShares | None = (
                segment.output if feature == OUTPUT else segment.features.get(feature)
            )
            rows.append(list(own.reference_share if own is not None else reference.reference_share))
            means.append(own.mean if own is not None and own.mean is not None else overall_mean)
        rows.append(list(reference.reference_share))
        means.append(overall_mean)
        return cls(
            base,
            np.asarray(rows, dtype=np.float64),
            np.asarray(means, dtype=np.float64) if numeric else None,
            bin_counters,
            sum_counters,
        )

    def flush(self, live: Sequence[float], flushed: Sequence[float]) -> None:
        """Add the expectation of the values counted since the last flush to the counters.

        ``live`` and ``flushed`` are the stream's live tick and its state at the last flush: the
        difference of their segment slots is how many values came from each segment since. Each
        bin's counter gains ``sum over segments of delta[segment] * share[segment][bin]``, the
        sum counters the same with the segment's mean, split by sign.
        """
        end = self.base + self.width
        delta = np.subtract(live[self.base : end], flushed[self.base : end])
        if not delta.any():
            return
        for counter, amount in zip(self.bin_counters, (delta @ self.shares).tolist(), strict=True):
            if amount > 0:
                counter.inc(amount)
        if self.sum_counters is not None and self.means is not None:
            positive = float(delta @ np.maximum(self.means, 0.0))
            negative = float(delta @ np.maximum(-self.means, 0.0))
            if positive > 0:
                self.sum_counters[0].inc(positive)
            if negative > 0:
                self.sum_counters[1].inc(negative)

    def counts(self, totals: FloatArray) -> FloatArray:
        """Values per segment in a window's totals."""
        return totals[self.base : self.base + self.width]

    def share(self, totals: FloatArray) -> FloatArray:
        """The reference share of each bin for a window: the mixture of the segments' shares
        weighted by how many of the window's values came from each."""
        counts = self.counts(totals)
        n = float(counts.sum())
        if n <= 0:
            return np.asarray(self.shares[-1], dtype=np.float64)
        return np.asarray(counts @ self.shares / n, dtype=np.float64)

    def mean(self, totals: FloatArray) -> float:
        """The reference mean for a window, weighted the same way (numeric features)."""
        if self.means is None:
            raise TypeError("a categorical feature has no reference mean")
        counts = self.counts(totals)
        n = float(counts.sum())
        if n <= 0:
            return float(self.means[-1])
        return float(counts @ self.means / n)
