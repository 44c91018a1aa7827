"""Output tracking: the predictions, their confidences and the output's drift stream.

Counts each prediction under its class (classification) and confidence bucket, observes the
confidence, and adds the output to its watch when the reference profiles it. Classification also
sums the confidences of all predictions, for the expected accuracy of each window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from exporter._classes import Classes
from exporter._watches import NUMERIC_REASONS, CategoricalWatch, NumericWatch, Watch
from exporter.coerce import VALID_CODE, Categories, Invalid, Numbers, category, number
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
    ) -> list[tuple[int, Any, float | None]]:
        """Count a batch's judged outputs and confidences as :meth:`take` counts them row by
        row; returns (row, prediction, confidence) of the rows to keep."""
        buckets = np.full(n_rows, CONFIDENCE_BUCKET_LABELS.index(NO_CONFIDENCE), dtype=np.int64)
        confidence_values: list[float] = []
        confidence_valid: list[bool] = [False] * n_rows
        if judged_confidences is not None:
            for reason, count in judged_confidences.counts().items():
                child = self.confidence_invalid.get(reason)  # none for MISSING
                if child is not None:
                    child.inc(count)
            valid = judged_confidences.codes == VALID_CODE
            values = judged_confidences.values
            for value in values[valid].tolist():  # in row order, as observe() adds them
                self.confidence.observe(value)
            low, high = self.confidence_cuts
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
                self.predicted[("", label)].inc(int(counts[index]))
            if self.numeric is not None:
                self.numeric.add_column(outputs, slots)  # counts invalid outputs too
            else:
                for reason, count in outputs.counts().items():
                    self.output_invalid[reason].inc(count)
            values_list = outputs.values.tolist()
            rows = np.flatnonzero(outputs.codes == VALID_CODE).tolist()
            return [(i, values_list[i], confidence_of(i)) for i in rows]

        for reason, count in outputs.counts().items():
            self.output_invalid[reason].inc(count)
        kept_rows = np.flatnonzero(outputs.codes == VALID_CODE)
        if not kept_rows.size:
            return []
        positions, distinct = pd.factorize(outputs.keys[kept_rows])
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
        # Expected accuracy: the confidences of the kept predictions, in row order as observe().
        live = self.confidences.live
        keys_list = outputs.keys.tolist()
        kept: list[tuple[int, Any, float | None]] = []
        for i in kept_rows.tolist():
            kept_confidence = confidence_of(i)
            if kept_confidence is not None:
                live[0] += 1.0
                live[1] += kept_confidence
            kept.append((i, keys_list[i], kept_confidence))
        return kept
