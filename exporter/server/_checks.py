"""The checks of a decoded request: a ``/predict`` instance's features against the reference
(a watched feature of the wrong type is refused with 422 naming it, and counted) and a
``/feedback`` outcome's fields. What fails is a :class:`RequestError`."""

from __future__ import annotations

from typing import Any

from exporter import coerce
from exporter.server._answers import RequestError
from exporter.server._service import Service

#: Longest feature name and string value accepted.
MAX_KEY_LENGTH = 256
MAX_STRING_LENGTH = 100_000


def check_features(service: Service, features: Any, field: str) -> dict[str, Any]:
    """The request's features, type-checked against the reference: 422 naming the feature."""
    if not isinstance(features, dict):
        raise RequestError(
            422, field, f"must be a JSON object of features, got {json_kind(features)}"
        )
    for name, value in features.items():
        if len(name) > MAX_KEY_LENGTH:
            raise RequestError(422, f"{field}.{name[:40]}...", "feature name is too long")
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            raise RequestError(422, f"{field}.{name}", f"longer than {MAX_STRING_LENGTH} chars")
        refusal = _refusal(service, name, value)
        if refusal is not None:
            reason, text = refusal
            # The row is refused, but the bad value is still data quality the team wants to see.
            service.monitor.count_invalid(name, reason)
            raise RequestError(422, f"{field}.{name}", text)
    for name in service.config.model.required_features:
        if features.get(name) is None:
            # Not the model's failure: it was never asked. Counted where the feature is watched.
            service.monitor.count_invalid(name, coerce.MISSING)
            raise RequestError(
                422, f"{field}.{name}", "is required by the model (model.required_features)"
            )
    return features


def _refusal(service: Service, name: str, value: Any) -> tuple[str, str] | None:
    """Why a watched feature's value is refused, as (reason, answer), or None.

    The library's own verdict (:mod:`exporter.coerce`): a value ``observe`` would count
    ``wrong_type`` is refused, and so is a number past a double (``inf``: JSON cannot send an
    infinity, so it is a client's mistake). Missing values (null) are data quality, counted by
    the monitor, not refused.
    """
    if name in service.numeric:
        verdict = coerce.number(value)
        if verdict is coerce.WRONG_TYPE:
            return verdict, f"must be a number, got {json_kind(value)}"
        if verdict is coerce.INF:
            return verdict, "is out of the range of a double"
    elif name in service.categorical and coerce.category(value) is coerce.WRONG_TYPE:
        return coerce.WRONG_TYPE, f"must be a string or number, got {json_kind(value)}"
    return None


def json_kind(value: Any) -> str:
    """The JSON type of a decoded value, as an answer names it."""
    return {
        type(None): "null",
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def check_outcome(item: Any, where: str) -> tuple[str, Any]:
    """A ``/feedback`` outcome's ``prediction_id`` and ``actual``; ``where`` is its index in a
    list (``""`` for a single outcome), which the answer's field names start with."""
    prefix = f"{where}." if where else ""
    if not isinstance(item, dict):
        raise RequestError(422, where or "body", f"must be an object, got {json_kind(item)}")
    unknown = sorted(set(item) - {"prediction_id", "actual"})
    if unknown:
        raise RequestError(422, f"{prefix}{unknown[0][:MAX_KEY_LENGTH]}", "unknown field")
    prediction_id = item.get("prediction_id")
    if not isinstance(prediction_id, str) or not prediction_id or len(prediction_id) > 256:
        raise RequestError(422, f"{prefix}prediction_id", "must be a non-empty string (<= 256)")
    if "actual" not in item or item["actual"] is None:
        raise RequestError(422, f"{prefix}actual", "is required")
    actual = item["actual"]
    if isinstance(actual, (dict, list)):
        raise RequestError(
            422, f"{prefix}actual", f"must be a number or string, not {json_kind(actual)}"
        )
    return prediction_id, actual
