"""The webhook payload Alertmanager posts (version 4) and the receiver's answers and errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

#: A malformed payload reports at most this many field errors.
MAX_REPORTED_ERRORS = 20

#: Go's zero time, which Alertmanager sends as the ``endsAt`` of an alert with no known end.
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)

Status = Literal["firing", "resolved"]


# --- the webhook payload ---------------------------------------------------------------------


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("timestamp is out of range once converted to UTC") from None


#: An RFC 3339 timestamp with an offset, normalised to UTC so that equal instants are equal keys.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class WebhookAlert(BaseModel):
    """One alert of a notification. Unknown fields are ignored (and kept in the stored JSON)."""

    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: UtcDatetime = Field(alias="startsAt")
    ends_at: UtcDatetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1)


class WebhookPayload(BaseModel):
    """Alertmanager's webhook notification, payload version 4; unknown fields are ignored."""

    version: Literal["4"]
    status: Status
    alerts: list[WebhookAlert]
    receiver: str = ""
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")


# --- answers (field names are the JSON names) --------------------------------------------------


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    detail: list[FieldError]


class PostResult(BaseModel):
    received: int
    stored: int
    duplicates: int


class StoredNotification(BaseModel):
    id: int
    receivedAt: str
    status: str
    fingerprint: str
    startsAt: str
    endsAt: str | None
    alertname: str
    severity: str
    model: str
    labels: dict[str, str]
    annotations: dict[str, str]
    generatorURL: str
    receiver: str
    groupKey: str


class AlertList(BaseModel):
    alerts: list[StoredNotification]
    #: Pass as ``before`` to get the next, older page; ``null`` on the last page.
    next: int | None = None


def error_response(status_code: int, errors: Sequence[tuple[str, str]]) -> JSONResponse:
    body = ErrorBody(detail=[FieldError(field=f, reason=r) for f, r in errors])
    return JSONResponse(body.model_dump(), status_code=status_code)


def non_finite_field(data: Any) -> str | None:
    """The dotted path of the first number in parsed JSON ``data`` that is not finite, if any.

    jiter refuses ``NaN`` and ``Infinity`` but reads a literal beyond a double's range, such as
    ``1e999``, as infinity; ``json.dumps`` would then store and hand to actions ``Infinity``,
    which is not JSON. The walk is iterative: the nesting is bounded by the parser only.
    """
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while pending:
        value, path = pending.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return ".".join(str(part) for part in path) or "body"
        elif isinstance(value, dict):
            pending.extend((item, (*path, key)) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            pending.extend((item, (*path, i)) for i, item in reversed(list(enumerate(value))))
    return None


def field_errors(errors: Sequence[Any]) -> list[tuple[str, str]]:
    """``(field, reason)`` per pydantic error; the field is the dotted path in the JSON body."""
    found = [
        (".".join(str(part) for part in e["loc"]) or "body", str(e["msg"]))
        for e in errors[:MAX_REPORTED_ERRORS]
    ]
    if len(errors) > MAX_REPORTED_ERRORS:
        found.append(("body", f"{len(errors) - MAX_REPORTED_ERRORS} more errors not shown"))
    return found
