"""Output tracking: the predictions, their confidences and the output's drift stream.

Counts each prediction under its class (classification) and confidence bucket, observes the
confidence, and adds the output to its watch when the reference profiles it. Classification also
sums the confidences of all predictions, for the expected accuracy of each window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd

from exporter._classes import Classes
from exporter._watches import NUMERIC_REASONS, CategoricalWatch, NumericWatch, Watch
from exporter.coerce import VALID_CODE, Categories, FloatArray, Invalid, Numbers, category, number
from exporter.coerce import confidence as judge_confidence
from exporter.metrics import Instruments
from exporter.profile import (
    OTHER,
    OUTPUT,
    CategoricalFeature,
    NumericFeature,
    ProfileError,
    Segments,
)
from exporter.segments import IntArray, count_slots
from exporter.windows import Stream, WindowSpec

#: The reasons a confidence can be invalid for (a missing one is no confidence, not invalid).
CONFIDENCE_REASONS = ("wrong_type", "nan")
#: ``feature`` label under which an invalid confidence is counted.
CONFIDENCE = "__confidence__"
#: ``confidence_bucket`` when no confidence was given.
NO_CONFIDENCE = "none"
#: Every value of the ``confidence_bucket`` label (see ``confidence_thresholds``).
CONFIDENCE_BUCKET_LABELS = ("low", "medium", "high", NO_CONFIDENCE)


def output_watch(
    regression: bool, output: NumericFeature | CategoricalFeature | None, instruments: Instruments,
    labels: tuple[str, str], specs: Sequence[WindowSpec], sample_size: int, seed: int,
    segments: Segments | None,
) -> Watch | None:  # fmt: skip
    """The output's watch when the reference profiles it as the task needs; ProfileError when it
    profiles it the other way."""
    if output is None:
        return None
    if not regression:
        if not isinstance(output, CategoricalFeature):
            raise ProfileError(
                "the reference profiles the output as numeric, but task='classification' "
                "needs class shares: rebuild it with target_kind='categorical'"
            )
        return CategoricalWatch(OUTPUT, output, instruments, labels, specs, seed, segments,
                                open_vocabulary=True)  # fmt: skip
    if not isinstance(output, NumericFeature):
        raise ProfileError(
            "the reference profiles the output as categorical, but task='regression' "
            "needs numeric bins: rebuild it with target_kind='numeric'"
        )
    return NumericWatch(OUTPUT, output, instruments, labels, specs, sample_size, seed, None,
                        segments)  # fmt: skip


class Outputs:
    """The prediction and confidence counters of one model, and its output watch (if any).

    Callers hold the monitor's lock around :meth:`take` and :meth:`take_batch`.
    """

    def __init__(
        self, regression: bool, watch: Watch | None, classes: Classes, known: Sequence[str],
        instruments: Instruments, labels: tuple[str, str], specs: Sequence[WindowSpec],
        seed: int, confidence_cuts: tuple[float, float],
    ) -> None:  # fmt: skip
        inst = instruments
        self.regression = regression
        self.numeric = watch if isinstance(watch, NumericWatch) else None
        self.categorical = watch if isinstance(watch, CategoricalWatch) else None
        self.watches = [watch] if watch is not None else []
        self.classes = classes
        self.confidence_cuts = confidence_cuts
        self.predictions, self.labels = inst.predictions, labels
        # Classification: count and sum of confidences of all predictions (expected accuracy).
        self.confidences = Stream(specs, 2, 0, seed)
        # Stored children: the hot path never calls labels().
        self.confidence = inst.confidence.labels(*labels)
        self.confidence_invalid = {
            r: inst.invalid.labels(*labels, CONFIDENCE, r) for r in CONFIDENCE_REASONS
        }
        self.output_invalid = {r: inst.invalid.labels(*labels, OUTPUT, r) for r in NUMERIC_REASONS}
        self.predicted: dict[tuple[str, str], Any] = {}
        if not known and self.categorical is not None:
            known = list(self.categorical.ref.categories)
        for cls in list(known)[: classes.max_classes]:
            self.predictable(classes.key(str(cls)))
        if regression:
            for bucket in CONFIDENCE_BUCKET_LABELS:
                self.predicted[("", bucket)] = self.predictions.labels(*labels, "", bucket)

    # -- one prediction --------------------------------------------------------------------------

    def take(
        self, prediction: Any, confidence: float | None, segment: int
    ) -> tuple[Any, float | None] | None:
        """Count the output; returns the (prediction, confidence) worth keeping, or None.
        ``segment`` is the row's segment slot (used when the output is segmented)."""
        bucket, valid_confidence = self.confidence_bucket(confidence)
        if not self.regression:
            key = category(prediction)
            if isinstance(key, Invalid):
                self.output_invalid[key].inc()
                return None
            child = self.predicted.get((key, bucket))
            if child is None:
                child = self.predicted_child(key, bucket)
            child.inc()
            output = self.categorical
            if output is not None and output.add_key(key) and output.expectation is not None:
                output.stream.live[output.segment_base + segment] += 1.0
            if valid_confidence is not None:
                live = self.confidences.live
                live[0] += 1.0
                live[1] += valid_confidence
            return key, valid_confidence
        self.predicted[("", bucket)].inc()
        x = number(prediction)
        if isinstance(x, Invalid):
            # The output watch's invalid counters are these same children.
            self.output_invalid[x].inc()
            return None
        numeric = self.numeric
        if numeric is not None and numeric.add(x) and numeric.expectation is not None:
            numeric.stream.live[numeric.segment_base + segment] += 1.0
        return x, valid_confidence

    def confidence_bucket(self, confidence: Any) -> tuple[str, float | None]:
        judged = judge_confidence(confidence)
        if isinstance(judged, Invalid):
            child = self.confidence_invalid.get(judged)  # none for MISSING: no confidence given
            if child is not None:
                child.inc()
            return NO_CONFIDENCE, None
        self.confidence.observe(judged)
        low, high = self.confidence_cuts
        bucket = "low" if judged < low else "high" if judged >= high else "medium"
        return bucket, judged

    # -- classes ---------------------------------------------------------------------------------

    def predictable(self, key: str) -> None:
        """Prediction series of a class the model predicts (or its reference holds), every
        confidence bucket at 0: a counter born at its first increment hides that increment from
        rate(). Only for predictions: a class known from feedback alone has no prediction series."""
        for bucket in CONFIDENCE_BUCKET_LABELS:
            if (key, bucket) not in self.predicted:
                self.predicted[(key, bucket)] = self.predictions.labels(*self.labels, key, bucket)

    def predicted_child(self, key: str, bucket: str) -> Any:
        """Slow path for a class predicted for the first time (called under the lock)."""
        label = self.classes.key(key)
        if label != OTHER:
            self.predictable(label)
        child = self.predicted.get((label, bucket))
        if child is None:  # __other__
            child = self.predictions.labels(*self.labels, label, bucket)
            self.predicted[(label, bucket)] = child
        # A class past max_classes is not cached under its own name: that would let the cache
        # grow with every new name. It takes this slow path each time instead.
        return child

    # -- a batch ---------------------------------------------------------------------------------

    def take_batch(
        self,
        outputs: Numbers | Categories,
        judged_confidences: Numbers | None,
        n_rows: int,
        slots: IntArray | None = None,
        keep: bool = True,
    ) -> Kept | None:
        """Count a batch's judged outputs and confidences as :meth:`take` counts them row by
        row, by column: no Python work per row. Returns the rows to keep (None without ``keep``
        or when none is valid)."""
        buckets, confidences = self.confidence_buckets(judged_confidences, n_rows)
        if isinstance(outputs, Numbers):
            counts = np.bincount(buckets, minlength=len(CONFIDENCE_BUCKET_LABELS))
            for index in np.flatnonzero(counts).tolist():
                label = CONFIDENCE_BUCKET_LABELS[index]
                self.predicted[("", label)].inc(int(counts[index]))
            if self.numeric is not None:
                self.numeric.add_column(outputs, slots)  # counts invalid outputs too
            else:
                for reason, count in outputs.counts().items():
                    self.output_invalid[reason].inc(count)
            kept_rows = np.flatnonzero(outputs.codes == VALID_CODE)
            if not keep or not kept_rows.size:
                return None
            return Kept(kept_rows, outputs.values[kept_rows].tolist(),
                        _optional(confidences, kept_rows))  # fmt: skip

        for reason, count in outputs.counts().items():
            self.output_invalid[reason].inc(count)
        kept_rows = np.flatnonzero(outputs.codes == VALID_CODE)
        if not kept_rows.size:
            return None
        kept_keys = outputs.keys[kept_rows]
        positions, distinct = pd.factorize(kept_keys)
        classes = distinct.tolist()
        width = len(CONFIDENCE_BUCKET_LABELS)
        pairs = np.bincount(positions * width + buckets[kept_rows], minlength=len(classes) * width)
        for flat in np.flatnonzero(pairs).tolist():
            key, label = classes[flat // width], CONFIDENCE_BUCKET_LABELS[flat % width]
            child = self.predicted.get((key, label))
            if child is None:
                child = self.predicted_child(key, label)
            child.inc(int(pairs[flat]))
        output = self.categorical
        if output is not None:
            per_class = np.bincount(positions, minlength=len(classes)).tolist()
            for key, count in zip(classes, per_class, strict=True):
                output.add_key(key, count)
            if slots is not None and output.expectation is not None:
                count_slots(output.stream.live, output.segment_base, slots[kept_rows],
                            output.expectation.width)  # fmt: skip
        if confidences is not None:
            # Expected accuracy: the count and sum of the kept predictions' confidences.
            kept_confidences = confidences[kept_rows]
            given = kept_confidences[~np.isnan(kept_confidences)]
            live = self.confidences.live
            live[0] += float(given.size)
            live[1] += float(given.sum())
        if not keep:
            return None
        return Kept(kept_rows, kept_keys.tolist(), _optional(confidences, kept_rows))

    def confidence_buckets(
        self, judged: Numbers | None, n_rows: int
    ) -> tuple[IntArray, FloatArray | None]:
        """Each row's index in :data:`CONFIDENCE_BUCKET_LABELS` and its valid confidence (NaN
        where there is none; None when no confidence was given), counted as
        :meth:`confidence_bucket` counts them one by one."""
        buckets = np.full(n_rows, CONFIDENCE_BUCKET_LABELS.index(NO_CONFIDENCE), dtype=np.int64)
        if judged is None:
            return buckets, None
        for reason, count in judged.counts().items():
            child = self.confidence_invalid.get(reason)  # none for MISSING
            if child is not None:
                child.inc(count)
        valid = judged.codes == VALID_CODE
        values = np.where(valid, judged.values, np.nan)
        observe_many(self.confidence, values[valid])
        low, high = self.confidence_cuts
        # Indexes into CONFIDENCE_BUCKET_LABELS: low, medium, high (none stays elsewhere).
        levels = np.where(values < low, 0, np.where(values >= high, 2, 1))
        buckets[valid] = levels[valid]
        return buckets, values


class Kept(NamedTuple):
    """The rows of a batch kept for their ground truth, as columns: row numbers, what
    :meth:`Outputs.take` would return for each (prediction, confidence or None)."""

    rows: IntArray
    predictions: list[Any]
    confidences: list[float | None]


def _optional(values: FloatArray | None, rows: IntArray) -> list[float | None]:
    """``values[rows]`` as Python floats, None where NaN (no valid confidence), made in C."""
    if values is None:
        return [None] * rows.size
    picked = values[rows]
    boxed = picked.astype(object)
    boxed[np.isnan(picked)] = None
    return cast("list[float | None]", boxed.tolist())


def observe_many(histogram: Any, values: FloatArray) -> None:
    """``histogram.observe(v)`` for each of ``values`` (finite), in one ``inc`` per bucket.

    prometheus_client observes one value at a time (0.25 s for a batch of 200,000, most of the
    batch's time), so this bins them with numpy and adds each bucket's count and the sum once,
    through the child's own bucket and sum values: the exposition, the multiprocess files and
    a later ``observe`` see the same state. A histogram without those attributes (another
    prometheus_client) is observed value by value.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values.tolist():
            histogram.observe(value)
        return
    if not values.size:
        return
    # observe() counts a value in the first bucket whose bound is >= it: searchsorted's "left".
    index = np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(bounds)).tolist()
    total.inc(float(values.sum()))
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)
