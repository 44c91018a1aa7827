"""The Alertmanager webhook receiver: ``model-exporter receiver``.

Alertmanager posts notifications (webhook payload version 4) to ``POST /alerts``. Each alert is
committed to SQLite (:mod:`exporter.alert_store`) before the answer, so whatever was acknowledged
survives a crash; a repeat of the same ``(fingerprint, startsAt, status)`` is acknowledged again
but neither stored nor counted nor acted on twice, also after a restart. ``GET /alerts`` lists
what was stored, ``/metrics`` counts it, and an optional actions file runs a command per alertname
(for example a retraining job) with the alert's JSON on stdin.

Alertmanager sends the bearer token with ``http_config: {authorization: {credentials_file: F}}``
in its ``webhook_configs``; the receiver reads the same file with ``--token-file`` (several lines
are several tokens, for a rotation) and then asks for it on ``POST /alerts`` and ``GET /alerts``;
the probes, ``/metrics`` and the docs stay open. ``--ssl-certfile``/``--ssl-keyfile`` serve HTTPS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic_core
import uvicorn
import yaml
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from exporter import __version__
from exporter.alert_store import AlertRecord, AlertStore, StoredAlert, StoreError
from exporter.errors import ExporterError
from exporter.metrics import label_value
from exporter.security import (
    DOCS_PATHS,
    PROBE_PATHS,
    BearerTokens,
    TLSError,
    TokenFileError,
    add_tls_arguments,
    check_tls,
    require_bearer,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9099
#: Relative to the working directory; ``/data/`` is ignored by the repository's .gitignore.
DEFAULT_DATA_DIR = Path("data/receiver")
#: Largest accepted request body. A notification carries one alert group; 1 MiB holds about a
#: thousand alerts (set ``max_alerts`` in Alertmanager's webhook_config for larger groups).
MAX_BODY_BYTES = 1024 * 1024
#: ``GET /alerts`` returns this many alerts unless ``limit`` says otherwise, and never more than
#: ``MAX_LIST_LIMIT``.
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
#: Longest accepted value of a ``GET /alerts`` filter (labels are short; this only bounds input).
MAX_FILTER_LENGTH = 256
#: A malformed payload reports at most this many field errors.
MAX_REPORTED_ERRORS = 20
#: Timeout of an action that sets none.
DEFAULT_ACTION_TIMEOUT_SECONDS = 60.0
#: Actions running at the same time; more wait in a queue.
ACTION_WORKERS = 4
#: Distinct ``alertname`` / ``severity`` label values beyond these are counted as ``__other__``,
#: so a misbehaving sender cannot create unbounded series.
MAX_ALERTNAMES = 200
#: The query parameters GET /alerts understands.
LIST_FILTERS = frozenset({"status", "model", "alertname", "limit"})
MAX_SEVERITIES = 20
OTHER = "__other__"
#: What needs no token: probes, the receiver's own counters (Prometheus scrapes them) and docs.
OPEN_PATHS = PROBE_PATHS | DOCS_PATHS | {"/metrics"}

#: Go's zero time, which Alertmanager sends as the ``endsAt`` of an alert with no known end.
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)

Status = Literal["firing", "resolved"]
Outcome = Literal["success", "failure", "timeout"]


class ReceiverConfigError(ExporterError):
    """A bad actions file; the message names the file and the key."""


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


def _error(status_code: int, errors: Sequence[tuple[str, str]]) -> JSONResponse:
    body = ErrorBody(detail=[FieldError(field=f, reason=r) for f, r in errors])
    return JSONResponse(body.model_dump(), status_code=status_code)


def _field_errors(errors: Sequence[Any]) -> list[tuple[str, str]]:
    """``(field, reason)`` per pydantic error; the field is the dotted path in the JSON body."""
    found = [
        (".".join(str(part) for part in e["loc"]) or "body", str(e["msg"]))
        for e in errors[:MAX_REPORTED_ERRORS]
    ]
    if len(errors) > MAX_REPORTED_ERRORS:
        found.append(("body", f"{len(errors) - MAX_REPORTED_ERRORS} more errors not shown"))
    return found


# --- actions ---------------------------------------------------------------------------------


class AlertAction(BaseModel):
    """A command run for each new alert of one alertname (argv list, never a shell)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)
    timeout_seconds: float = Field(default=DEFAULT_ACTION_TIMEOUT_SECONDS, gt=0)
    on: tuple[Status, ...] = Field(default=("firing",), min_length=1)


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: YAML 1.1 reads the ``on:`` key as ``True``."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_actions(path: Path) -> dict[str, AlertAction]:
    """Read and validate an actions file: a mapping of alertname to :class:`AlertAction`.

    Raises :class:`ReceiverConfigError` naming the file, the key and the reason.
    """
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_Yaml12Loader)  # a SafeLoader subclass
    except (OSError, UnicodeDecodeError) as exc:
        raise ReceiverConfigError(f"cannot read the actions file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ReceiverConfigError(f"actions file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ReceiverConfigError(
            f"actions file {path}: expected a mapping of alertname to action, "
            f"e.g. 'ModelAccuracyDrop: {{command: [/usr/local/bin/retrain], timeout_seconds: 60}}'"
        )
    actions: dict[str, AlertAction] = {}
    problems: list[str] = []
    for name, spec in data.items():
        if not isinstance(name, str) or not name:
            problems.append(f"{name!r}: an alertname must be a non-empty string")
            continue
        try:
            action = AlertAction.model_validate(spec)
        except ValidationError as exc:
            problems.extend(f"{name}.{field}: {reason}" for field, reason in _action_errors(exc))
            continue
        executable = action.command[0]
        if os.sep in executable:
            if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
                problems.append(f"{name}.command: {executable} is not an executable file")
        elif shutil.which(executable) is None:
            problems.append(f"{name}.command: {executable} is not found on PATH")
        actions[name] = action
    if problems:
        raise ReceiverConfigError(f"actions file {path}: " + "; ".join(problems))
    return actions


def _action_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = exc.errors()
    return [
        (".".join(str(p) for p in e["loc"]) or "(action)", e["msg"])
        for e in errors
        if e["type"] != "model_type"
    ] or [("(action)", "expected a mapping with command, timeout_seconds and on")]


def run_action(action: AlertAction, alert_json: bytes) -> Outcome:
    """Run ``action`` with ``alert_json`` on stdin; kill it and its children on timeout.

    The command is an argv list executed directly, never through a shell, and the alert reaches
    it only on stdin: nothing from the alert is placed in argv or the environment. Its stdout and
    stderr go to the receiver's own, so they land in the same log.
    """
    try:
        process = subprocess.Popen(
            action.command,
            stdin=subprocess.PIPE,
            # Its own process group: a timeout kills whatever the command started, too.
            start_new_session=True,
        )
    except OSError as exc:
        log.error("action %s could not start: %s", list(action.command), exc)
        return "failure"
    try:
        process.communicate(alert_json, timeout=action.timeout_seconds)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            process.kill()
        process.communicate()
        log.warning(
            "action %s timed out after %s s and was killed",
            list(action.command),
            action.timeout_seconds,
        )
        return "timeout"
    if process.returncode != 0:
        log.warning("action %s exited with %s", list(action.command), process.returncode)
        return "failure"
    return "success"


class ActionRunner:
    """Runs actions on worker threads so that the webhook answer never waits for them."""

    def __init__(
        self,
        actions: Mapping[str, AlertAction],
        on_outcome: Callable[[str, Outcome], None],
        *,
        workers: int = ACTION_WORKERS,
    ) -> None:
        self._actions = dict(actions)
        self._on_outcome = on_outcome
        self._executor = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alert-action")
            if self._actions
            else None
        )

    def action_for(self, alertname: str, status: str) -> AlertAction | None:
        action = self._actions.get(alertname)
        return action if action is not None and status in action.on else None

    def submit(self, alertname: str, action: AlertAction, alert_json: bytes) -> None:
        """Queue one run; never raises (a run that cannot be queued counts as a failure)."""
        if self._executor is None:
            return
        try:
            self._executor.submit(self._run, alertname, action, alert_json)
        except RuntimeError as exc:  # the executor is shutting down
            log.error("action for %s not started: %s", alertname, exc)
            self._on_outcome(alertname, "failure")

    def _run(self, alertname: str, action: AlertAction, alert_json: bytes) -> None:
        try:
            outcome = run_action(action, alert_json)
        except Exception:
            log.exception("action for %s failed inside the receiver", alertname)
            outcome = "failure"
        self._on_outcome(alertname, outcome)

    def close(self) -> None:
        """Wait for queued and running actions (each is bounded by its timeout)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


# --- metrics ---------------------------------------------------------------------------------


class _BoundedValues:
    """Passes the first ``limit`` distinct label values through and maps the rest to ``OTHER``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = label_value(value)  # valid UTF-8, bounded, long values kept distinct
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


@dataclass(frozen=True)
class ReceiverMetrics:
    notifications: Counter
    actions: Counter
    alertname: _BoundedValues
    severity: _BoundedValues

    @classmethod
    def build(cls, registry: CollectorRegistry) -> ReceiverMetrics:
        return cls(
            notifications=Counter(
                "model_alert_notifications",
                "New alerts received from Alertmanager (repeats of a stored fingerprint, "
                "startsAt and status are not counted).",
                ["alertname", "status", "severity"],
                registry=registry,
            ),
            actions=Counter(
                "model_alert_actions",
                "Actions run for received alerts, by outcome (success, failure, timeout).",
                ["alertname", "outcome"],
                registry=registry,
            ),
            alertname=_BoundedValues(MAX_ALERTNAMES),
            severity=_BoundedValues(MAX_SEVERITIES),
        )

    def count_notification(self, alertname: str, status: str, severity: str) -> None:
        self.notifications.labels(self.alertname(alertname), status, self.severity(severity)).inc()

    def count_action(self, alertname: str, outcome: Outcome) -> None:
        self.actions.labels(self.alertname(alertname), outcome).inc()


# --- the app ---------------------------------------------------------------------------------


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
    return _error(503, [("store", "the alert store is not available; retry later")])


async def _validation_error(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    # Drop FastAPI's "query"/"path"/"body" prefix: the field is what the caller sent.
    cleaned = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in errors]
    return _error(422, _field_errors(cleaned))


def create_app(
    store: AlertStore,
    *,
    token: str | BearerTokens | None,
    actions: Mapping[str, AlertAction],
    registry: CollectorRegistry | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The receiver's ASGI app on ``store``.

    ``token``: the bearer token (or tokens) ``POST /alerts`` and ``GET /alerts`` require, or
    ``None`` to accept anyone (a warning is logged). ``actions``: commands per alertname (see
    :func:`load_actions`).
    ``registry``: where the receiver's counters live; a fresh one when not given. The store is
    the caller's to close; the action runner is closed (waiting for running actions) on shutdown.
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
    runner = ActionRunner(actions, metrics.count_action)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
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
            (413, "The body is too large."),
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
            return _error(413, [("body", f"larger than {max_body_bytes} bytes")])
        try:
            # jiter refuses lone surrogates, NaN and nesting deeper than 200 levels, none of
            # which SQLite, an action's stdin or the exposition format could take.
            data = pydantic_core.from_json(body, allow_inf_nan=False)
        except ValueError as exc:
            return _error(400, [("body", f"not valid JSON: {exc}")])
        try:
            payload = WebhookPayload.model_validate(data)
        except ValidationError as exc:
            return _error(422, _field_errors(exc.errors()))
        raw_alerts = data["alerts"]
        records = [
            _record(payload, a, raw) for a, raw in zip(payload.alerts, raw_alerts, strict=True)
        ]
        try:
            new = await run_in_threadpool(store.record, records)
        except sqlite3.Error as exc:
            return _store_unavailable(exc)
        for alert, record, is_new in zip(payload.alerts, records, new, strict=True):
            if not is_new:
                continue
            metrics.count_notification(record.alertname, alert.status, record.severity)
            action = runner.action_for(record.alertname, alert.status)
            if action is not None:
                runner.submit(record.alertname, action, record.alert_json.encode("ascii") + b"\n")
        stored = sum(new)
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
    ) -> Any:
        """Stored alerts, newest first, filtered by status, ``model`` label and alertname."""
        # A misspelt filter (?alertnme=...) would otherwise silently list every alert.
        unknown = sorted(set(request.query_params) - LIST_FILTERS)
        if unknown:
            name = unknown[0][:MAX_FILTER_LENGTH] or "(empty name)"
            known = ", ".join(sorted(LIST_FILTERS))
            return _error(422, [(name, f"unknown query parameter; use {known}")])
        try:
            found = store.recent(status=status, model=model, alertname=alertname, limit=limit)
        except sqlite3.Error as exc:
            return _store_unavailable(exc)
        return AlertList(alerts=[_notification(s) for s in found])

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
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


# --- command line ----------------------------------------------------------------------------


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``model-exporter receiver`` to ``parser``."""
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"directory of the SQLite alert store (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file of the bearer tokens, one per line, that POST and GET /alerts require "
        "(without it, anyone is served and a warning is logged)",
    )
    parser.add_argument(
        "--actions",
        type=Path,
        default=None,
        help="YAML file mapping alertname to {command: [argv...], timeout_seconds, on: [firing]}",
    )
    add_tls_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Serve the receiver until interrupted. Returns 2, with a message, for a bad token file,
    actions file or data directory."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tokens = None if args.token_file is None else BearerTokens.from_file(args.token_file)
        warnings = check_tls(args.ssl_certfile, args.ssl_keyfile)
        actions = {} if args.actions is None else load_actions(args.actions)
        store = AlertStore.in_directory(args.data_dir)
    except (ReceiverConfigError, StoreError, TokenFileError, TLSError) as exc:
        print(f"model-exporter receiver: {exc}", file=sys.stderr)
        return 2
    for warning in warnings + (tokens.warnings() if tokens else []):
        log.warning("%s", warning)
    try:
        app = create_app(store, token=tokens, actions=actions)
        config = uvicorn.Config(
            app, host=args.host, port=args.port,
            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        )  # fmt: skip
        server = uvicorn.Server(config)
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot bind; it logged why
            return exc.code if isinstance(exc.code, int) else 1
        return 0
    finally:
        store.close()
