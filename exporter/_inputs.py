"""Input tracking: the watched features of each row, and the segment each row came from.

Reads a row's (or a batch's) features, counts each watched one into its watch
(:mod:`exporter._watches`), and, with a segmented profile, reads the segment feature as context
(:class:`exporter.segments.SegmentKey`) so each counted value also adds one to its segment's
count. Resolves at construction which features are watched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd

from exporter._watches import CATEGORICAL_REASONS, NUMERIC_REASONS, CategoricalWatch, NumericWatch
from exporter.coerce import ABSENT, Categories, Numbers, categories, category, number, numbers
from exporter.metrics import Instruments, label_value
from exporter.profile import NumericFeature, ProfileError, ReferenceProfile, Segments
from exporter.segments import IntArray, SegmentKey, segments_by
from exporter.windows import WindowSpec

_J = TypeVar("_J", Numbers, Categories)

#: A batch judged outside the lock: the segment column, and each watch with its judged column.
Judged = tuple[
    "pd.Series | None",
    list[tuple[NumericWatch, "Numbers | None"]],
    list[tuple[CategoricalWatch, "Categories | None"]],
]


def watched_features(
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


def segment_context(
    reference: ReferenceProfile | None,
    segment_by: str | None,
    domains: Mapping[str, tuple[float, float]] | None,
    instruments: Instruments,
    labels: tuple[str, str],
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
    invalid = instruments.invalid
    children = {r: invalid.labels(*labels, label_value(segment_by), r) for r in reasons}
    return segments, SegmentKey(segments, ref, children, domain)


def _absent_getter(name: str, default: Any = ABSENT) -> Any:
    return default


class Inputs:
    """The watches of a model's features and its segment key (None unless segmented).

    Callers hold the monitor's lock around :meth:`take_row` and :meth:`count_batch`.
    """

    def __init__(
        self,
        reference: ReferenceProfile | None,
        watched: Sequence[str],
        domains: Mapping[str, tuple[float, float]] | None,
        segments: Segments | None,
        key: SegmentKey | None,
        instruments: Instruments,
        labels: tuple[str, str],
        specs: Sequence[WindowSpec],
        sample_size: int,
        seed: int,
    ) -> None:
        self.key = key
        #: The segment slot of the row being observed (set by take_row, read for the output).
        self.row_segment = key.overall if key is not None else 0
        self.numeric: list[NumericWatch] = []
        self.categorical: list[CategoricalWatch] = []
        if reference is None:
            return
        for n, name in enumerate(watched):
            ref = reference.features[name]
            if isinstance(ref, NumericFeature):
                domain = (domains or {}).get(name)
                self.numeric.append(
                    NumericWatch(
                        name,
                        ref,
                        instruments,
                        labels,
                        specs,
                        sample_size,
                        seed + n,
                        domain,
                        segments,
                    )
                )
            else:
                self.categorical.append(
                    CategoricalWatch(name, ref, instruments, labels, specs, seed + n, segments)
                )

    @property
    def watches(self) -> list[NumericWatch | CategoricalWatch]:
        return [*self.numeric, *self.categorical]

    def count_invalid(self, feature: str, reason: str) -> None:
        """Count an invalid value of ``feature`` found outside a row (a request refused for it);
        a feature or reason the monitor does not count is ignored."""
        key = self.key
        if key is not None and key.name == feature:
            child = key.invalid.get(reason)
        else:
            watch = next((w for w in self.watches if w.name == feature), None)
            child = watch.invalid.get(reason) if watch is not None else None
        if child is not None:
            child.inc()

    def take_row(self, features: Mapping[str, Any]) -> None:
        try:
            get = features.get
        except AttributeError:
            get = _absent_getter
        key = self.key
        if key is None:
            for numeric in self.numeric:
                numeric.add(number(get(numeric.name, ABSENT)))
            for categorical in self.categorical:
                categorical.add_key(category(get(categorical.name, ABSENT)))
            return
        # Segmented: each counted value also adds one to its segment's slot (see flush_counters).
        self.row_segment = key.overall  # until the segment value is read
        slot = self.row_segment = key.take(get(key.name, ABSENT))
        for numeric in self.numeric:
            if numeric.add(number(get(numeric.name, ABSENT))):
                numeric.stream.live[numeric.segment_base + slot] += 1.0
        for categorical in self.categorical:
            if categorical.add_key(category(get(categorical.name, ABSENT))):
                categorical.stream.live[categorical.segment_base + slot] += 1.0

    def judge_batch(self, table: pd.DataFrame) -> Judged:
        """A batch's columns judged (the costly part, which touches no state: no lock needed)."""
        key = self.key
        segment = table[key.name] if key is not None and key.name in table.columns else None
        numeric = [(w, _column(table, w.name, numbers)) for w in self.numeric]
        categorical = [(w, _column(table, w.name, categories)) for w in self.categorical]
        return segment, numeric, categorical

    def count_batch(self, judged: Judged, n_rows: int) -> IntArray | None:
        """Count a judged batch; returns each row's segment slot when segmented."""
        segment, numeric, categorical = judged
        key = self.key
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
        return slots


def _column(table: pd.DataFrame, name: str, judge: Callable[[Any], _J]) -> _J | None:
    """A feature's column judged, or None when the frame has no such column."""
    return judge(table[name]) if name in table.columns else None
