"""Model performance from additive window totals: pure functions, numbers in, numbers out.

The monitor keeps, per window, sums that add up across slices and worker processes (counts, sums
of errors, of squares, of products); these functions turn one window's totals into the metrics.
Every metric is None when its denominator is zero, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: The "share of predictions within $X of the truth" a price-like target is judged by.
WITHIN = (2.0, 5.0, 10.0)

#: Layout of a regression outcome stream: one slot per name.
REGRESSION_FIELDS = (
    "n", "abs_sum", "sq_sum", "pred_sum", "act_sum", "pred_sq", "act_sq", "pred_act",
    *(f"within_{int(w)}" for w in WITHIN),
)  # fmt: skip
#: Layout of a classification outcome stream; per-class slots follow (see class_slots).
CLASSIFICATION_FIELDS = ("n", "correct", "conf_n", "conf_sum", "conf_correct")
#: Per class: true positives, times predicted, times actual.
CLASS_FIELDS = ("tp", "predicted", "actual")


def regression_row(prediction: float, actual: float) -> list[float]:
    """The stream increment for one (prediction, actual) pair, in REGRESSION_FIELDS order."""
    error = abs(prediction - actual)
    return [
        1.0, error, error * error, prediction, actual, prediction * prediction,
        actual * actual, prediction * actual, *(1.0 if error <= w else 0.0 for w in WITHIN),
    ]  # fmt: skip


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def regression_metrics(totals: npt.ArrayLike) -> dict[str, float | None]:
    """MAE, RMSE, Pearson correlation of actual vs predicted, and within-$X shares.

    The correlation uses the one-pass formula ``(n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2)(n Syy -
    Sy^2))``; it is None when either side is constant in the window.
    """
    t = dict(zip(REGRESSION_FIELDS, np.asarray(totals, dtype=np.float64).tolist(), strict=True))
    n = t["n"]
    metrics: dict[str, float | None] = {
        "mae": _ratio(t["abs_sum"], n),
        "rmse": math.sqrt(t["sq_sum"] / n) if n > 0 else None,
        "correlation": None,
    }
    if n > 1:
        # Products, not ``** 2``: a float power raises OverflowError where a product gives inf,
        # and values near 1e200 are valid numbers; with an infinite sum there is no correlation.
        cov = n * t["pred_act"] - t["pred_sum"] * t["act_sum"]
        var_pred = n * t["pred_sq"] - t["pred_sum"] * t["pred_sum"]
        var_act = n * t["act_sq"] - t["act_sum"] * t["act_sum"]
        # Relative tolerance: one-pass variances of a constant are rounding noise, not spread.
        scale_pred = max(n * t["pred_sq"], 1e-300)
        scale_act = max(n * t["act_sq"], 1e-300)
        spread = var_pred > 1e-12 * scale_pred and var_act > 1e-12 * scale_act
        correlation = cov / math.sqrt(var_pred * var_act) if spread else math.nan
        if math.isfinite(correlation):
            metrics["correlation"] = max(-1.0, min(1.0, correlation))
    for w in WITHIN:
        metrics[f"within_{int(w)}"] = _ratio(t[f"within_{int(w)}"], n)
    return metrics


def class_slots(class_count: int) -> int:
    """Width of a classification stream with ``class_count`` class slots."""
    return len(CLASSIFICATION_FIELDS) + len(CLASS_FIELDS) * class_count


def classification_row(
    width: int, predicted: int, actual: int, confidence: float | None
) -> list[float]:
    """The stream increment for one outcome; ``predicted``/``actual`` are class slot indexes."""
    row = [0.0] * width
    correct = predicted == actual
    row[0] = 1.0
    row[1] = 1.0 if correct else 0.0
    if confidence is not None:
        row[2] = 1.0
        row[3] = confidence
        row[4] = 1.0 if correct else 0.0
    base = len(CLASSIFICATION_FIELDS)
    if correct:
        row[base + 3 * predicted] += 1.0
    row[base + 3 * predicted + 1] += 1.0
    row[base + 3 * actual + 2] += 1.0
    return row


def classification_metrics(
    totals: npt.ArrayLike, classes: Sequence[str]
) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """Accuracy, macro-F1 and calibration gap, and per-class precision, recall and F1.

    ``classes[i]`` names class slot ``i``. Macro-F1 averages F1 over the classes that were
    predicted or actual in the window. The calibration gap is the mean confidence of the
    labelled predictions that had one minus their accuracy: positive means
    over-confident.
    """
    t = np.asarray(totals, dtype=np.float64)
    n, correct, conf_n, conf_sum, conf_correct = t[: len(CLASSIFICATION_FIELDS)].tolist()
    per_class: dict[str, dict[str, float | None]] = {}
    f1s: list[float] = []
    base = len(CLASSIFICATION_FIELDS)
    for i, name in enumerate(classes):
        tp, predicted, actual = t[base + 3 * i : base + 3 * i + 3].tolist()
        if predicted == 0 and actual == 0:
            continue
        precision = _ratio(tp, predicted)
        recall = _ratio(tp, actual)
        if precision is not None and recall is not None and precision + recall > 0:
            f1: float | None = 2 * precision * recall / (precision + recall)
        elif precision is not None and recall is not None:
            f1 = 0.0
        else:
            f1 = 0.0 if tp == 0 else None
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1}
        if f1 is not None:
            f1s.append(f1)
    mean_confidence = _ratio(conf_sum, conf_n)
    accuracy_with_confidence = _ratio(conf_correct, conf_n)
    overall: dict[str, float | None] = {
        "accuracy": _ratio(correct, n),
        "macro_f1": sum(f1s) / len(f1s) if f1s else None,
        "calibration_gap": (
            mean_confidence - accuracy_with_confidence
            if mean_confidence is not None and accuracy_with_confidence is not None
            else None
        ),
    }
    return overall, per_class
