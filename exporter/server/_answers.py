"""What the server answers: a model's output as JSON with the confidence it carries, the error
body ``{"detail": [{"field": ..., "reason": ...}]}`` of a :class:`RequestError`, and the status
of each outcome ``/feedback`` records."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse

from exporter import coerce
from exporter._calls import default_output
from exporter.errors import ExporterError
from exporter.outcomes import Resolution


class RequestError(ExporterError):
    """A client mistake: answered with ``status`` and ``{"detail": [{"field", "reason"}]}``."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.status = status
        self.problems = [{"field": field, "reason": reason}]


def error_answer(status: int, problems: list[dict[str, str]]) -> JSONResponse:
    return JSONResponse({"detail": problems[:20]}, status_code=status)


#: How /feedback answers each resolution of an outcome: (HTTP status, reason).
FEEDBACK_STATUS = {
    Resolution.RECORDED: (200, "recorded"),
    Resolution.DUPLICATE: (200, "already recorded with the same value"),
    Resolution.UNKNOWN: (404, "no pending prediction with this id (never made, or expired)"),
    Resolution.CONFLICT: (409, "this prediction already has a different outcome"),
    Resolution.INVALID: (422, "wrong type for this model's outcomes"),
    Resolution.UNAVAILABLE: (503, "the outcome store is unavailable; retry later"),
}


def _jsonable(value: Any) -> Any:
    """Model outputs as JSON: numpy scalars and arrays to Python, NaN to null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def split_output(result: Any) -> tuple[Any, Any]:
    """The model's prediction as JSON, and its confidence as the model gave it (the monitor
    judges it, see :func:`answered_confidence`)."""
    # The same reading as ModelMonitor.instrument's, so a model behaves alike in both.
    prediction, confidence = default_output(result)
    return _jsonable(prediction), confidence


#: Deeper than this, a model's answer is not answered (JSON encoders recurse per level).
MAX_ANSWER_DEPTH = 64


class ModelOutputError(ExporterError, TypeError):
    """The model returned something ``/predict`` cannot answer as JSON (a set, bytes, an
    object, nesting deeper than MAX_ANSWER_DEPTH): a failed call, counted under this name."""


def answerable_output(result: Any) -> tuple[Any, Any]:
    """The model's answer as :func:`split_output` reads it, once the prediction is known to be
    answerable as JSON; :class:`ModelOutputError` otherwise."""
    try:
        prediction, confidence = split_output(result)
    except RecursionError:
        raise ModelOutputError("the model's answer is nested too deeply") from None
    problem = _not_json(prediction, 0)
    if problem is not None:
        raise ModelOutputError(f"the model's answer holds {problem}, which JSON cannot carry")
    return prediction, confidence


def _not_json(value: Any, depth: int) -> str | None:
    """What in ``value`` (already through _jsonable) JSON cannot carry, or None."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if depth >= MAX_ANSWER_DEPTH:
        return f"nesting deeper than {MAX_ANSWER_DEPTH}"
    if isinstance(value, list):
        for item in value:
            problem = _not_json(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for item in value.values():
            problem = _not_json(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {type(value).__name__}"


def answered_confidence(confidence: Any) -> float | None:
    """The confidence an answer carries: the one the monitor counts, or null when it is
    missing or invalid (not a number, NaN, outside [0, 1])."""
    judged = coerce.confidence(confidence)
    return judged if isinstance(judged, float) else None
