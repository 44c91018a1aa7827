"""What an outcome store keeps of a prediction: one at a time, or a whole batch's as columns.

:class:`PendingBatch` exists so that :meth:`ModelMonitor.observe_batch` can hand 200,000
predictions to a store without building 200,000 :class:`PendingPrediction` objects: building
them and remembering them one by one was 0.7 s of a 2.4 s batch (issue 17). A batch is still a
``Sequence[PendingPrediction]`` (each made on demand), so a store that only knows that protocol
keeps working; the stores of :mod:`exporter.outcomes` read its columns instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, overload

#: A record as the memory store keeps it: created_at, version, prediction, confidence, actual
#: (the actual's :func:`encode`, None while the outcome is pending).
Row = tuple[float, str, Any, float | None, str | None]


@dataclass(frozen=True)
class PendingPrediction:
    prediction_id: str
    created_at: float
    version: str
    prediction: Any
    confidence: float | None


class PendingBatch(Sequence[PendingPrediction]):
    """Predictions made at one time by one version, as columns (one list per field).

    ``predictions`` and ``confidences`` hold what :mod:`exporter.coerce` made of them, as a
    :class:`PendingPrediction` would: classes' keys or finite floats, and floats or None.
    """

    __slots__ = ("ids", "created_at", "version", "predictions", "confidences")

    def __init__(
        self, ids: Sequence[str], created_at: float, version: str, predictions: Sequence[Any],
        confidences: Sequence[float | None],
    ) -> None:  # fmt: skip
        if not len(ids) == len(predictions) == len(confidences):
            raise ValueError(f"{len(ids)} ids, {len(predictions)} predictions and "
                             f"{len(confidences)} confidences")  # fmt: skip
        self.ids, self.created_at, self.version = ids, created_at, version
        self.predictions, self.confidences = predictions, confidences

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> PendingPrediction: ...
    @overload
    def __getitem__(self, index: slice) -> PendingBatch: ...
    def __getitem__(self, index: int | slice) -> PendingPrediction | PendingBatch:
        if isinstance(index, slice):
            return PendingBatch(self.ids[index], self.created_at, self.version,
                                self.predictions[index], self.confidences[index])  # fmt: skip
        return PendingPrediction(self.ids[index], self.created_at, self.version,
                                 self.predictions[index], self.confidences[index])  # fmt: skip

    def __iter__(self) -> Iterator[PendingPrediction]:
        for pid, prediction, confidence in zip(self.ids, self.predictions, self.confidences,
                                               strict=True):  # fmt: skip
            yield PendingPrediction(pid, self.created_at, self.version, prediction, confidence)


def ids_of(pendings: Sequence[PendingPrediction]) -> Sequence[str]:
    """The prediction ids of a batch, or of any sequence of predictions, in order."""
    if isinstance(pendings, PendingBatch):
        return pendings.ids
    return [p.prediction_id for p in pendings]


def rows_of(pendings: Sequence[PendingPrediction]) -> Iterable[Row]:
    """The memory store's records of these predictions, pending; a batch's made by zip in C."""
    if isinstance(pendings, PendingBatch):
        return zip(repeat(pendings.created_at), repeat(pendings.version), pendings.predictions,
                   pendings.confidences, repeat(None))  # fmt: skip
    return ((p.created_at, p.version, p.prediction, p.confidence, None) for p in pendings)


def sql_rows(pendings: Sequence[PendingPrediction]) -> Iterable[tuple[Any, ...]]:
    """The SQLite store's rows (id, created_at, version, encoded prediction, confidence)."""
    if isinstance(pendings, PendingBatch):
        return zip(pendings.ids, repeat(pendings.created_at), repeat(pendings.version),
                   encode_many(pendings.predictions), pendings.confidences)  # fmt: skip
    return (
        (p.prediction_id, p.created_at, p.version, encode(p.prediction), p.confidence)
        for p in pendings
    )


def encode(value: str | float) -> str:
    """Canonical JSON of a prediction or an outcome, so equal values compare equal as text.

    The monitor hands over only what :mod:`exporter.coerce` made of them: a class's key (a
    ``str``) or a finite number (a ``float``). A whole number is written as an integer (``3``),
    as stores have always written it, so an outcome sent again after an upgrade is still a
    duplicate, not a conflict. Anything else is a bug of the caller: TypeError, ValueError for a
    NaN or an infinity.
    """
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"an outcome store keeps finite numbers, not {value!r}")
        return json.dumps(int(number) if number.is_integer() else number)
    raise TypeError(f"an outcome store keeps classes and numbers, not {type(value).__name__}")


def encode_many(values: Iterable[Any]) -> Iterator[str]:
    """:func:`encode` of each value, without its checks and ``json.dumps`` call per row for the
    two kinds a monitor hands over: a class's key is encoded once per distinct key, a finite
    float as ``json.dumps`` writes it (``float.__repr__``; a whole one as its integer)."""
    keys: dict[str, str] = {}
    for value in values:
        if type(value) is str:
            text = keys.get(value)
            if text is None:
                text = keys[value] = json.dumps(value)
            yield text
        elif type(value) is float and value - value == 0.0:
            yield str(int(value)) if value.is_integer() else repr(value)
        else:
            yield encode(value)


def decode(text: str) -> str | float:
    """The value :func:`encode` wrote: a class's key, or a number as a ``float`` (as the memory
    store keeps it, so both stores hand back the same prediction)."""
    value = json.loads(text)
    if isinstance(value, str):
        return value
    return float(value)
