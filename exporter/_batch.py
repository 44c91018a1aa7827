"""A batch of predictions at numpy speed: judged outside the lock, counted under it."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from exporter._parts import Parts
from exporter.coerce import categories, numbers
from exporter.coerce import confidences as confidences_of


def count_batch(
    parts: Parts,
    lock: threading.Lock,
    regression: bool,
    frame: pd.DataFrame | Mapping[str, Sequence[Any]],
    predictions: Sequence[Any] | np.ndarray | pd.Series,
    confidences: Sequence[float | None] | np.ndarray | pd.Series | None,
) -> list[tuple[int, Any, float | None]]:
    """Count a batch's inputs and outputs as the rows observed one by one would be; returns
    (row, prediction, confidence) of the rows to keep. ValueError when the lengths differ."""
    n_rows = len(predictions)
    table = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(dict(frame))
    if len(table) != n_rows:
        raise ValueError(f"frame has {len(table)} rows but {n_rows} predictions")
    if confidences is not None and len(confidences) != n_rows:
        raise ValueError(f"{len(confidences)} confidences for {n_rows} predictions")
    # Judged before the lock: the judging is the costly part and touches no state.
    judged = parts.inputs.judge_batch(table)
    outputs = (numbers if regression else categories)(predictions)
    judged_confidences = confidences_of(confidences) if confidences is not None else None
    with lock:
        parts.streams.housekeeping()
        slots = parts.inputs.count_batch(judged, n_rows)
        return parts.outputs.take_batch(outputs, judged_confidences, n_rows, slots)
