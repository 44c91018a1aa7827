"""The receiver's ASGI app: ``POST /alerts``, ``GET /alerts``, probes and ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import pydantic_core
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from exporter import __version__
from exporter.receiver._actions import AlertAction
from exporter.receiver._metrics import ReceiverMetrics
from exporter.receiver._payload import (
    GO_ZERO_TIME,
    MAX_REPORTED_ERRORS,
    AlertList,
    ErrorBody,
    PostResult,
    Status,
    StoredNotification,
    WebhookAlert,
    WebhookPayload,
    error_response,
    field_errors,
    non_finite_field,
)
from exporter.receiver._runner import DEFAULT_SHUTDOWN_SECONDS, ActionRunner
from exporter.receiver.store import (
    AlertRecord,
    AlertStore,
    PendingAction,
    StoredAlert,
    idempotency_key,
)
from exporter.security import DOCS_PATHS, PROBE_PATHS, BearerTokens, require_bearer

log = logging.getLogger("exporter.receiver")

#: Largest accepted request body. A notification carries one alert group; 1 MiB holds about a
#: thousand alerts (set ``max_alerts`` in Alertmanager's webhook_config for larger groups).
MAX_BODY_BYTES = 1024 * 1024
#: ``GET /alerts`` returns this many alerts unless ``limit`` says otherwise, and never more than
#: ``MAX_LIST_LIMIT``; a page also ends once its alerts' stored JSON reaches ``MAX_PAGE_BYTES``.
#: ``next`` in the answer, passed as ``before``, gives the next page.
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
MAX_PAGE_BYTES = 4 * 1024 * 1024
#: Largest accepted alert of a notification, as JSON: Alertmanager's alerts are a few KiB; a
#: larger one is refused with 413 naming it, so that no stored alert makes a listing heavy.
MAX_ALERT_BYTES = 64 * 1024
#: Retention of the alert store: an alert last received longer ago goes, and so do all but the
#: newest ``DEFAULT_MAX_STORED_ALERTS`` (an alert whose action is pending stays). Checked at the
#: start and every ``PRUNE_INTERVAL_SECONDS``.
DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_MAX_STORED_ALERTS = 100_000
PRUNE_INTERVAL_SECONDS = 600.0
#: Longest accepted value of a ``GET /alerts`` filter (labels are short; this only bounds input).
MAX_FILTER_LENGTH = 256
#: Why a number such as ``1e999`` (read as infinity) is refused.
NON_FINITE_REASON = "a number beyond the range of a double; send a finite number"
#: The query parameters GET /alerts understands.
LIST_FILTERS = frozenset({"status", "model", "alertname", "limit", "before"})
#: What needs no token: probes, the receiver's own counters (Prometheus scrapes them) and docs.
OPEN_PATHS = PROBE_PATHS | DOCS_PATHS | {"/metrics"}


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _isoformat(value: datetime | None) -> str | None:
    if value is None or value == GO_ZERO_TIME:
        return None
    return value.isoformat(timespec="microseconds")


def _record(payload: WebhookPayload, alert: WebhookAlert, raw: Any) -> AlertRecord:
    return AlertRecord(
        fingerprint=alert.fingerprint,
        starts_at=alert.starts_at.isoformat(timespec="microseconds"),
        status=alert.status,
        ends_at=_isoformat(alert.ends_at),
        alertname=alert.labels.get("alertname", ""),
        severity=alert.labels.get("severity", ""),
        model=alert.labels.get("model", ""),
        receiver=payload.receiver,
        group_key=payload.group_key,
        # ASCII-escaped JSON: what is stored and what an action reads on stdin is plain ASCII.
        alert_json=json.dumps(raw, ensure_ascii=True, separators=(",", ":")),
    )


def _parse_notification(body: bytes, max_alert_bytes: int) -> list[AlertRecord] | Response:
    """The alerts of a notification as they are stored, or the 4xx answer naming what is wrong."""
    try:
        # jiter refuses lone surrogates, NaN and nesting deeper than 200 levels, none of
        # which SQLite, an action's stdin or the exposition format could take.
        data = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        return error_response(400, [("body", f"not valid JSON: {exc}")])
    # ...but it reads 1e999 as infinity, which no JSON can carry on to the store or an action.
    overflow = non_finite_field(data)
    if overflow is not None:
        return error_response(422, [(overflow, NON_FINITE_REASON)])
    try:
        payload = WebhookPayload.model_validate(data)
    except ValidationError as exc:
        return error_response(422, field_errors(exc.errors()))
    raw_alerts = data["alerts"]
    records = [_record(payload, a, raw) for a, raw in zip(payload.alerts, raw_alerts, strict=True)]
    oversized = [
        (f"alerts.{i}", f"larger than {max_alert_bytes} bytes as JSON")
        for i, record in enumerate(records)
        if len(record.alert_json) > max_alert_bytes
    ]
    if oversized:
        return error_response(413, oversized[:MAX_REPORTED_ERRORS])
    return records


def _notification(stored: StoredAlert) -> StoredNotification:
    record = stored.record
    raw = json.loads(record.alert_json)
    return StoredNotification(
        id=stored.id,
        receivedAt=stored.received_at,
        status=record.status,
        fingerprint=record.fingerprint,
        startsAt=record.starts_at,
        endsAt=record.ends_at,
        alertname=record.alertname,
        severity=record.severity,
        model=record.model,
        labels=raw.get("labels", {}),
        annotations=raw.get("annotations", {}),
        generatorURL=raw.get("generatorURL", ""),
        receiver=record.receiver,
        groupKey=record.group_key,
    )


def _store_unavailable(exc: sqlite3.Error) -> JSONResponse:
    log.error("alert store failed: %s", exc)
    return error_response(503, [("store", "the alert store is not available; retry later")])


async def _validation_error(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    # Drop FastAPI's "query"/"path"/"body" prefix: the field is what the caller sent.
    cleaned = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in errors]
    return error_response(422, field_errors(cleaned))


def create_app(
    store: AlertStore,
    *,
    token: str | BearerTokens | None,
    actions: Mapping[str, AlertAction],
    registry: CollectorRegistry | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_alert_bytes: int = MAX_ALERT_BYTES,
    action_shutdown_seconds: float = DEFAULT_SHUTDOWN_SECONDS,
    retention_days: float | None = DEFAULT_RETENTION_DAYS,
    max_stored_alerts: int | None = DEFAULT_MAX_STORED_ALERTS,
) -> FastAPI:
    """The receiver's ASGI app on ``store``.

    ``token``: the bearer token (or tokens) ``POST /alerts`` and ``GET /alerts`` require, or
    ``None`` to accept anyone (a warning is logged). ``actions``: commands per alertname (see
    :func:`load_actions`).
    ``registry``: where the receiver's counters live; a fresh one when not given. The store is
    the caller's to close. An action is stored with its alert and run at least once: the runner
    starts with the app (taking what a previous process left pending) and on shutdown keeps
    running queued actions for ``action_shutdown_seconds``, then kills the running ones and
    leaves all unfinished pending for the next start. ``retention_days`` and
    ``max_stored_alerts`` bound the store (``None``: no bound); see :meth:`AlertStore.prune`.
    """
    if isinstance(token, str):
        if not token:
            raise ValueError("token must be a non-empty string or None")
        token = BearerTokens([token])
    if token is None:
        log.warning(
            "no --token-file: the receiver accepts unauthenticated notifications on POST /alerts "
            "and lists the stored alerts to anyone on GET /alerts"
        )
    registry = CollectorRegistry() if registry is None else registry
    metrics = ReceiverMetrics.build(registry)
    runner = ActionRunner(
        actions,
        store,
        metrics.count_action,
        on_deferred=metrics.count_deferred_action,
        shutdown_seconds=action_shutdown_seconds,
    )

    def prune() -> None:
        try:
            deleted = store.prune(
                max_age_seconds=None if retention_days is None else retention_days * 86400,
                max_alerts=max_stored_alerts,
            )
        except sqlite3.Error as exc:
            log.error("old alerts could not be deleted: %s", exc)
            return
        if deleted:
            log.info("deleted %d alert(s) past the retention", deleted)

    async def prune_forever() -> None:
        while True:
            await run_in_threadpool(prune)
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runner.start)
        pruning = asyncio.create_task(prune_forever())
        try:
            yield
        finally:
            pruning.cancel()
            await run_in_threadpool(runner.close)

    app = FastAPI(
        title="model-exporter alert receiver",
        version=__version__,
        description="Stores Alertmanager webhook notifications and runs actions for them.",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.store = store
    app.state.registry = registry

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": description}
        for code, description in (
            (400, "The body is not JSON."),
            (401, "Missing or wrong bearer token."),
            (413, "The body, or an alert in it, is too large."),
            (422, "The payload does not match webhook payload version 4."),
            (503, "The alert store cannot be written; nothing was acknowledged."),
        )
    }
    payload_schema = WebhookPayload.model_json_schema(ref_template="#/components/schemas/{model}")
    payload_defs = payload_schema.pop("$defs", {})

    @app.post(
        "/alerts",
        response_model=PostResult,
        responses=error_responses,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": payload_schema}},
            }
        },
    )
    async def receive_alerts(request: Request) -> Response:
        """Store a notification from Alertmanager; a repeated alert is acknowledged once more."""
        # The token, when one is set, was checked by BearerAuth before anything was read.
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return error_response(413, [("body", f"larger than {max_body_bytes} bytes")])
        # Parsing, the walk for non-finite numbers and validation take 0.1 to 0.5 s for a
        # 1 MiB body: a worker thread does them, so the event loop keeps answering the probes.
        parsed = await run_in_threadpool(_parse_notification, body, max_alert_bytes)
        if isinstance(parsed, Response):
            return parsed
        records = parsed
        with_action = [runner.action_for(r.alertname, r.status) is not None for r in records]
        try:
            # The alert and its pending action are one transaction: both or neither.
            new = await run_in_threadpool(store.record, records, with_action=with_action)
        except sqlite3.Error as exc:
            return _store_unavailable(exc)
        for record, alert_id, action in zip(records, new, with_action, strict=True):
            if alert_id is None:
                continue
            metrics.count_notification(record.alertname, record.status, record.severity)
            if action:
                key = idempotency_key(record.fingerprint, record.starts_at, record.status)
                runner.submit(
                    PendingAction(alert_id, record.alertname, record.status, key, record.alert_json)
                )
        stored = sum(alert_id is not None for alert_id in new)
        result = PostResult(received=len(new), stored=stored, duplicates=len(new) - stored)
        return JSONResponse(result.model_dump())

    @app.get(
        "/alerts", response_model=AlertList,
        responses={**{code: error_responses[code] for code in (401, 503)},
                   # Not FastAPI's default 422: _validation_error answers {field, reason}.
                   422: {"model": ErrorBody, "description": "A query parameter is invalid."}},
    )  # fmt: skip
    def list_alerts(
        request: Request,
        status: Status | None = None,
        model: Annotated[str | None, Query(max_length=MAX_FILTER_LENGTH)] = None,
        alertname: Annotated[str | None, Query(max_length=MAX_FILTER_LENGTH)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
        # SQLite integers are 64-bit: a larger cursor was an OverflowError (a 500).
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    ) -> Any:
        """Stored alerts, newest first, filtered by status, ``model`` label and alertname; a page
        holds ``limit`` alerts or about 4 MiB, and ``next``, passed as ``before``, continues."""
        # A misspelt filter (?alertnme=...) would otherwise silently list every alert.
        unknown = sorted(set(request.query_params) - LIST_FILTERS)
        if unknown:
            name = unknown[0][:MAX_FILTER_LENGTH] or "(empty name)"
            known = ", ".join(sorted(LIST_FILTERS))
            return error_response(422, [(name, f"unknown query parameter; use {known}")])
        try:
            found, more = store.page(
                status=status, model=model, alertname=alertname, limit=limit, before=before,
                max_bytes=MAX_PAGE_BYTES,
            )  # fmt: skip
        except sqlite3.Error as exc:
            return _store_unavailable(exc)
        return AlertList(
            alerts=[_notification(s) for s in found], next=found[-1].id if more else None
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up (answered on the event loop, without a worker thread)."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "The alert store cannot be written."}})
    def readyz() -> Response:
        """Ready when the alert store takes a write."""
        try:
            store.check_writable()
        except sqlite3.Error as exc:
            log.error("alert store not writable: %s", exc)
            return JSONResponse(
                {"status": "unavailable", "reason": "the alert store cannot be written"},
                status_code=503,
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", response_class=Response)
    def metrics_endpoint() -> Response:
        """The receiver's counters in the Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        # The request body is declared by hand (the handler reads it itself, to check the token
        # and the size first), so the payload's nested schemas are added to the components here.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(payload_defs)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if token is not None:
        require_bearer(app, token, OPEN_PATHS)
    return app
