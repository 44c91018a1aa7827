"""``model-exporter serve``: a FastAPI model server with monitoring built in.

The user's model is loaded from ``package.module:callable``; every prediction goes through a
:class:`ModelMonitor`; ``/feedback`` joins delayed ground truth. With several workers, counters go
through prometheus_client's multiprocess files and windows through per-worker state files, so any
worker's ``/metrics`` answers for the whole service.

Errors are JSON ``{"detail": [{"field": ..., "reason": ...}]}`` with a 4xx status and never a stack
trace; a model exception is a 500 with a generic body, counted by exception class.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exporter import coerce
from exporter.api_schema import METRICS, READYZ, ServiceDocs
from exporter.config import ConfigError, MonitorConfig, load_config, with_overrides
from exporter.errors import ExporterError
from exporter.group_commit import GroupCommitter
from exporter.monitor import ModelMonitor
from exporter.outcomes import (
    MemoryOutcomeStore,
    OutcomeStore,
    Resolution,
    SqliteOutcomeStore,
    StoreError,
)
from exporter.profile import CategoricalFeature, NumericFeature, ProfileError, ReferenceProfile
from exporter.security import (
    DOCS_PATHS,
    PROBE_PATHS,
    BearerAuth,
    BearerTokens,
    TokenFileError,
    require_bearer,
)
from exporter.text import any_lone_surrogate

log = logging.getLogger(__name__)

#: Environment variables through which `serve --workers N` hands its settings to the workers.
ENV_CONFIG = "MODEL_EXPORTER_CONFIG"
ENV_DATA_DIR = "MODEL_EXPORTER_DATA_DIR"
#: The token file's path (never a token) and the metrics port given on the command line.
ENV_TOKEN_FILE = "MODEL_EXPORTER_TOKEN_FILE"
ENV_METRICS_PORT = "MODEL_EXPORTER_METRICS_PORT"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often the background task flushes counters and publishes this worker's windows.
FLUSH_INTERVAL_SECONDS = 1.0
#: Every this many flushes, files of dead workers are swept (multi-worker mode).
SWEEP_EVERY_TICKS = 10
#: Maximum nesting of a JSON body; deeper is refused before the model sees it.
MAX_JSON_DEPTH = 32
#: Longest feature name and string value accepted.
MAX_KEY_LENGTH = 256
MAX_STRING_LENGTH = 100_000
#: Longest integer literal accepted: far past a double (309 digits), short of Python's 4300.
MAX_INTEGER_DIGITS = 400

Predict = Callable[[Mapping[str, Any]], Any]
Derive = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class RequestError(ExporterError):
    """A client mistake: answered with ``status`` and ``{"detail": [{"field", "reason"}]}``."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.status = status
        self.problems = [{"field": field, "reason": reason}]


def _error(status: int, problems: list[dict[str, str]]) -> JSONResponse:
    return JSONResponse({"detail": problems[:20]}, status_code=status)


def import_callable(path: str, key: str) -> Callable[..., Any]:
    """``package.module:attribute`` → the object; a clear ConfigError when it is not there."""
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error of user code is reported, not raised
        raise ConfigError(f"{key}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{key}: {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ConfigError(f"{key}: {path!r} is not callable")
    return target  # type: ignore[no-any-return]


@dataclass
class Service:
    """Everything one worker needs to answer requests."""

    config: MonitorConfig
    monitor: ModelMonitor
    predict: Predict
    derive: Derive | None
    store: OutcomeStore
    registry: CollectorRegistry
    multiprocess_dir: Path | None
    numeric: frozenset[str]
    categorical: frozenset[str]
    #: The bearer tokens every endpoint but the probes, the docs (and /metrics) asks for.
    tokens: BearerTokens | None = None


def build_service(
    config: MonitorConfig,
    data_dir: Path,
    *,
    registry: CollectorRegistry | None = None,
    multiprocess_dir: Path | None = None,
    metrics_reader: bool = False,
) -> Service:
    """Load the token file, the model, the reference and the store; raise ConfigError,
    TokenFileError, ProfileError or StoreError.

    ``metrics_reader``: the service only renders the metrics of the workers that share
    ``multiprocess_dir`` (see :func:`metrics_app`); its store counts pending predictions and
    never expires one, which the workers do and count.
    """
    tokens = load_tokens(config)
    predict = import_callable(config.model.import_path, "model.import_path")
    derive = (
        import_callable(config.model.derive_features, "model.derive_features")
        if config.model.derive_features
        else None
    )
    reference_path = config.reference_path()
    reference = ReferenceProfile.load(reference_path) if reference_path is not None else None
    check_segments(config, reference)
    outcomes = config.outcomes
    store: OutcomeStore
    if outcomes.store == "sqlite":
        # The service checkpoints from its background flush (_flush_forever), never in a commit.
        store = (_ReaderSqliteStore if metrics_reader else SqliteOutcomeStore).in_directory(
            data_dir,
            ttl_seconds=outcomes.ttl_seconds,
            max_pending=outcomes.max_pending,
            deferred_checkpoints=True,
        )
    else:
        store = (_ReaderMemoryStore if metrics_reader else MemoryOutcomeStore)(
            ttl_seconds=outcomes.ttl_seconds, max_pending=outcomes.max_pending
        )
    registry = registry if registry is not None else CollectorRegistry()
    try:
        monitor = monitor_for(
            config, reference, registry=registry, outcomes=store,
            state_dir=multiprocess_dir / "windows" if multiprocess_dir is not None else None,
        )  # fmt: skip
    except ValueError as exc:
        store.close()
        if isinstance(exc, ProfileError):
            raise
        # A mistake the config's schema cannot see on its own (domains of an unwatched feature,
        # classes for a regression): one clear line like any other config error.
        raise ConfigError(f"{config.source}: monitoring: {exc}") from None
    watched = config.features or (list(reference.features) if reference else [])
    numeric = frozenset(
        f for f in watched if reference and isinstance(reference.features[f], NumericFeature)
    )
    categorical = frozenset(
        f for f in watched if reference and isinstance(reference.features[f], CategoricalFeature)
    )
    return Service(config, monitor, predict, derive, store, registry, multiprocess_dir,
                   numeric, categorical, tokens)  # fmt: skip


def monitor_for(
    config: MonitorConfig,
    reference: ReferenceProfile | None,
    *,
    registry: CollectorRegistry,
    outcomes: OutcomeStore,
    state_dir: Path | None = None,
    clock: Callable[[], float] | None = None,
    sample_size: int | None = None,
) -> ModelMonitor:
    """The monitor a config describes: what ``serve`` and ``backtest`` both monitor with.

    ``clock`` (default the wall clock) and ``sample_size`` (default the config's) let a backtest
    run it on simulated time without the KS samples no rule reads. Raises ValueError (or
    ProfileError) for what the config's schema cannot check alone.
    """
    m = config.monitoring
    optional: dict[str, Any] = {} if clock is None else {"clock": clock}
    return ModelMonitor(
        config.model.name,
        version=config.model.version,
        task=config.model.task,
        reference=reference,
        features=config.features,
        registry=registry,
        windows=m.windows,
        slices=m.slices,
        classes=m.classes,
        max_classes=m.max_classes,
        min_samples=m.min_samples,
        sample_size=m.sample_size if sample_size is None else sample_size,
        drift_cache_seconds=m.drift_cache_seconds,
        domains=m.domains,
        thresholds=config.thresholds,
        confidence_thresholds=m.confidence_thresholds,
        stage=config.model.stage,
        outcomes=outcomes,
        state_dir=state_dir,
        segment_by=m.segment_by,
        **optional,
    )


def check_segments(config: MonitorConfig, reference: ReferenceProfile | None) -> None:
    """``monitoring.segment_by`` needs a reference built with segments by that feature."""
    segment_by = config.monitoring.segment_by
    segments = reference.segments if reference is not None else None
    if segment_by is None or (segments is not None and segments.feature == segment_by):
        return
    path = config.reference_path()
    if reference is None:
        problem = "the config names no reference profile"
    elif segments is None:
        problem = f"the reference profile {path} has no segments"
    else:
        problem = f"the reference profile {path} has segments by {segments.feature!r}"
    raise ConfigError(
        f"{config.source}: monitoring.segment_by: {problem}; build it with "
        f"`model-exporter baseline ... --segment-by {segment_by}`"
    )


def load_tokens(config: MonitorConfig) -> BearerTokens | None:
    """The service's bearer tokens, or ``None`` when it has no token file."""
    path = config.token_path()
    if path is None:
        if config.service.auth.protect_metrics:
            raise ConfigError(
                f"{config.source}: service.auth.protect_metrics needs a token file "
                "(service.auth.token_file or --token-file)"
            )
        return None
    return BearerTokens.from_file(path)


class _ReaderSqliteStore(SqliteOutcomeStore):
    """The workers' store as the metrics reader sees it: it never expires predictions, because
    the expired count would land in the reader's own registry, which no scrape renders."""

    def expire(self, now: float) -> int:
        return 0


class _ReaderMemoryStore(MemoryOutcomeStore):
    """In-memory outcomes live in each worker: the reader leaves the pending gauge out rather
    than report its own empty store."""

    def pending_count(self) -> int:
        raise StoreError("in-memory outcomes are held by each worker")


# -- request checking ------------------------------------------------------------------------


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON, stopping once past ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise RequestError(400, "body", "the request body is empty; send a JSON object")
    try:
        document = json.loads(
            body,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except UnicodeDecodeError:
        raise RequestError(400, "body", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, "body", f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise RequestError(400, "body", f"JSON nested deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as exc:
        raise RequestError(400, "body", str(exc)) from None
    if _depth(document, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise RequestError(400, "body", f"JSON nested deeper than {MAX_JSON_DEPTH}")
    # A lone surrogate (from a \\u escape, or encoded: json.loads decodes bytes with
    # surrogatepass) has no UTF-8 form: it could be neither answered, stored nor exported.
    if (b"\\u" in body or not body.isascii()) and any_lone_surrogate(document):
        raise RequestError(400, "body", "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send null for a missing number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of the range of a double")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is too long")
    return int(text)


def _check_features(service: Service, features: Any, field: str) -> dict[str, Any]:
    """The request's features, type-checked against the reference: 422 naming the feature."""
    if not isinstance(features, dict):
        raise RequestError(422, field, f"must be a JSON object of features, got {_kind(features)}")
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
            return verdict, f"must be a number, got {_kind(value)}"
        if verdict is coerce.INF:
            return verdict, "is out of the range of a double"
    elif name in service.categorical and coerce.category(value) is coerce.WRONG_TYPE:
        return coerce.WRONG_TYPE, f"must be a string or number, got {_kind(value)}"
    return None


def _kind(value: Any) -> str:
    return {
        type(None): "null",
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


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


def _split_output(result: Any) -> tuple[Any, Any]:
    """The model's prediction as JSON, and its confidence as the model gave it (the monitor
    judges it, see :func:`_answered_confidence`)."""
    if isinstance(result, tuple) and len(result) == 2:
        prediction, confidence = result
    elif isinstance(result, Mapping) and "prediction" in result:
        prediction, confidence = result["prediction"], result.get("confidence")
    else:
        prediction, confidence = result, None
    return _jsonable(prediction), confidence


def _answered_confidence(confidence: Any) -> float | None:
    """The confidence an answer carries: the one the monitor counts, or null when it is
    missing or invalid (not a number, NaN, outside [0, 1])."""
    judged = coerce.confidence(confidence)
    return judged if isinstance(judged, float) else None


# -- pure ASGI body limit (BaseHTTPMiddleware would halve throughput) ------------------------------


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._refuse(send)
                    return
        received = 0
        started = refused = False

        async def limited() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answered here: an exception raised into the app would reach Starlette's
                    # error middleware first, which answers 500 before it re-raises.
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}  # the app sees the client gone
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; drop the app's reaction to the cut body
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except ClientDisconnect:
            pass  # the client left half-way (or was cut off above): nobody to answer
        except Exception:
            if not refused:
                raise  # the app's own failure: uvicorn logs it

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"detail": [{"field": "body", "reason": f"larger than {self.limit} bytes"}]}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


# -- the app ---------------------------------------------------------------------------------


def create_app(service: Service) -> FastAPI:
    """The HTTP API of one worker around a built :class:`Service`."""
    config = service.config
    monitor = service.monitor
    max_batch = config.service.max_batch
    # The in-memory store is written in observe() itself; SQLite goes through group commit.
    durable_store = not isinstance(service.store, MemoryOutcomeStore)
    committer = GroupCommitter(
        service.store, on_error=monitor.store_failed, on_success=monitor.store_succeeded
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_flush_forever(service))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await committer.close()
            await run_in_threadpool(monitor.flush)
            await run_in_threadpool(service.store.close)
            if service.multiprocess_dir is not None:
                _mark_dead(service.multiprocess_dir, os.getpid())

    app = FastAPI(
        title=f"model-exporter: {config.model.name}",
        version=config.model.version,
        description="Predictions with monitoring, delayed ground truth and Prometheus metrics.",
        lifespan=lifespan,
    )

    async def _predict_one(features: dict[str, Any]) -> dict[str, Any]:
        raw = dict(features)
        start = time.perf_counter()
        try:
            result = await run_in_threadpool(service.predict, raw)
        except Exception as exc:
            monitor.record_error(exc)
            monitor.observe_latency(time.perf_counter() - start)
            log.warning("model %s raised %s", config.model.name, type(exc).__name__)
            raise _ModelFailed from None
        elapsed = time.perf_counter() - start
        prediction, confidence = _split_output(result)
        watched = raw
        if service.derive is not None:
            try:
                watched = {**raw, **service.derive(raw)}
            except Exception:
                log.exception("derive_features failed; monitoring the raw features")
        # observe() is a few microseconds of CPU and no I/O: run it here, not in a thread. The
        # prediction is kept for its ground truth by the group committer, which answers once it
        # is in the store.
        prediction_id = monitor.observe(
            watched, prediction, confidence, elapsed, keep=not durable_store
        )
        if durable_store:
            pending = monitor.pending(prediction_id, prediction, confidence)
            if pending is not None:
                await committer.submit(pending)
        return {
            "prediction": prediction,
            "confidence": _answered_confidence(confidence),
            "prediction_id": prediction_id,
            "model": config.model.name,
            "version": config.model.version,
        }

    # The handlers check the raw JSON themselves; the bodies are documented by hand.
    docs = ServiceDocs(config.model.task, max_batch, service.numeric, service.categorical,
                       MAX_KEY_LENGTH, MAX_STRING_LENGTH)  # fmt: skip

    @app.post(
        "/predict",
        summary="Predict one instance ({features}) or a batch ({instances})",
        **docs.predict(),
    )
    async def predict(request: Request) -> Response:
        try:
            document = _parse_json(await request.body())
            if not isinstance(document, dict):
                raise RequestError(422, "body", f"must be a JSON object, got {_kind(document)}")
            unknown = sorted(set(document) - {"features", "instances"})
            if unknown:
                raise RequestError(
                    422, unknown[0][:MAX_KEY_LENGTH], "unknown field; send features or instances"
                )
            if ("features" in document) == ("instances" in document):
                raise RequestError(422, "body", "send exactly one of features or instances")
            if "features" in document:
                features = _check_features(service, document["features"], "features")
                return JSONResponse(await _predict_one(features))
            instances = document["instances"]
            if not isinstance(instances, list):
                raise RequestError(422, "instances", f"must be an array, got {_kind(instances)}")
            if not instances:
                raise RequestError(422, "instances", "must hold at least one instance")
            if len(instances) > max_batch:
                raise RequestError(
                    413, "instances", f"{len(instances)} instances; at most {max_batch} per call"
                )
            checked = [
                _check_features(service, item, f"instances.{i}") for i, item in enumerate(instances)
            ]
            answers = [await _predict_one(item) for item in checked]
            return JSONResponse({"predictions": answers})
        except RequestError as exc:
            return _error(exc.status, exc.problems)
        except _ModelFailed:
            return JSONResponse({"detail": "the model failed to predict"}, status_code=500)

    @app.post(
        "/feedback",
        summary="Ground truth for earlier predictions, one or a list",
        **docs.feedback(),
    )
    async def feedback(request: Request) -> Response:
        try:
            document = _parse_json(await request.body())
            if isinstance(document, list):
                if len(document) > max_batch:
                    raise RequestError(413, "body", f"at most {max_batch} outcomes per call")
                items = [_check_outcome(item, f"{i}") for i, item in enumerate(document)]
                results = []
                for prediction_id, actual in items:
                    status = await run_in_threadpool(monitor.record_outcome, prediction_id, actual)
                    results.append({"prediction_id": prediction_id, "status": status.value})
                return JSONResponse({"results": results})
            prediction_id, actual = _check_outcome(document, "")
            status = await run_in_threadpool(monitor.record_outcome, prediction_id, actual)
        except RequestError as exc:
            return _error(exc.status, exc.problems)
        code, reason = _FEEDBACK_STATUS[status]
        if code >= 400:
            return _error(code, [{"field": "prediction_id" if code in (404, 409) else "actual",
                                  "reason": reason}])  # fmt: skip
        return JSONResponse({"prediction_id": prediction_id, "status": status.value})

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {
            "status": "ok",
            "model": config.model.name,
            "version": config.model.version,
            "task": config.model.task,
        }

    @app.get("/readyz", summary="The model is loaded and the outcome store is writable", **READYZ)
    async def readyz() -> Response:
        try:
            await run_in_threadpool(monitor.check_store)
        except StoreError as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        monitor.store_succeeded()  # the probe was a real write: the store works again
        return JSONResponse({"status": "ready", "model": config.model.name})

    if config.service.metrics_port is None:  # else only metrics_app() serves them, on that port

        @app.get("/metrics", summary="Prometheus metrics", **METRICS)
        async def metrics() -> Response:
            return await _metrics_response(service)

    if service.tokens is not None:
        require_bearer(app, service.tokens, _open_paths(config))
    return app


def _open_paths(config: MonitorConfig) -> frozenset[str]:
    """The paths that need no token: probes, docs and, unless protected, /metrics."""
    metrics = frozenset() if config.service.auth.protect_metrics else frozenset({"/metrics"})
    return PROBE_PATHS | DOCS_PATHS | metrics


async def _metrics_response(service: Service) -> Response:
    body = await run_in_threadpool(_render_metrics, service)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_app(service: Service) -> ASGIApp:
    """``GET /metrics`` alone, for ``service.metrics_port``; everything else is a 404.

    With one worker ``service`` is the worker itself. With several it is the supervisor's
    :func:`build_service` ``(metrics_reader=True)``: the counters come from the workers'
    multiprocess files and the windows from the ones they publish, as on any worker's /metrics.
    """

    async def metrics(request: Request) -> Response:
        return await _metrics_response(service)

    app: ASGIApp = Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
    if service.tokens is not None and service.config.service.auth.protect_metrics:
        app = BearerAuth(app, tokens=service.tokens, open_paths=())
    return app


class _ModelFailed(Exception):
    pass


_FEEDBACK_STATUS = {
    Resolution.RECORDED: (200, "recorded"),
    Resolution.DUPLICATE: (200, "already recorded with the same value"),
    Resolution.UNKNOWN: (404, "no pending prediction with this id (never made, or expired)"),
    Resolution.CONFLICT: (409, "this prediction already has a different outcome"),
    Resolution.INVALID: (422, "wrong type for this model's outcomes"),
    Resolution.UNAVAILABLE: (503, "the outcome store is unavailable; retry later"),
}


def _check_outcome(item: Any, where: str) -> tuple[str, Any]:
    prefix = f"{where}." if where else ""
    if not isinstance(item, dict):
        raise RequestError(422, where or "body", f"must be an object, got {_kind(item)}")
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
            422, f"{prefix}actual", f"must be a number or string, not {_kind(actual)}"
        )
    return prediction_id, actual


def _render_metrics(service: Service) -> bytes:
    if service.multiprocess_dir is None:
        return generate_latest(service.registry)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(service.multiprocess_dir))  # type: ignore[no-untyped-call]
    from exporter.metrics import state_for

    # The drift collector flushes this worker's pending counts before anything is read.
    registry.register(state_for(service.registry).drift)
    return generate_latest(registry)


async def _flush_forever(service: Service) -> None:
    """Counters, expiry and (multi-worker) window export, also while no request arrives; and,
    with several workers, sweeping the files of workers that died without cleaning up."""
    ticks = 0
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
        await run_in_threadpool(service.monitor.flush)
        await run_in_threadpool(_checkpoint, service)
        ticks += 1
        if service.multiprocess_dir is not None and ticks % SWEEP_EVERY_TICKS == 0:
            longest = max(s.seconds for s in service.config.monitoring.window_specs())
            await run_in_threadpool(sweep_dead_workers, service.multiprocess_dir, longest)


def _checkpoint(service: Service) -> None:
    """Move the outcome store's WAL into its database, off the request path. Never raises: a
    failure (a full disk) is counted like a failed write and shows in /readyz."""
    try:
        service.store.checkpoint()
    except (sqlite3.Error, OSError) as exc:
        service.monitor.store_failed(exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_workers(multiprocess_dir: Path, longest_window_seconds: float) -> list[int]:
    """Clean up after workers that are gone (crashed or killed); returns their pids.

    prometheus_client's ``mark_process_dead`` drops a dead worker's live-gauge files; its counter
    and histogram files stay, or the fleet's totals would drop. Its published windows stay until
    their newest data has left the longest window, then they are deleted.
    """
    dead: set[int] = set()
    for path in multiprocess_dir.glob("*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            dead.add(int(pid_text))
    for pid in sorted(dead):
        _mark_dead(multiprocess_dir, pid)
    cutoff = time.time() - longest_window_seconds
    for path in (multiprocess_dir / "windows").glob("windows-*.npz"):
        pid_text = path.stem.rsplit("-", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            dead.add(int(pid_text))
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
    return sorted(dead)


def _mark_dead(multiprocess_dir: Path, pid: int) -> None:
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]


# -- process setup ---------------------------------------------------------------------------


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """Wipe and recreate the multiprocess directory: stale files would add old counts."""
    directory = data_dir / "prometheus-multiproc"
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "windows").mkdir(parents=True)
    return directory


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` workers: settings come from the environment."""
    import prometheus_client

    token_file, metrics_port = os.environ.get(ENV_TOKEN_FILE), os.environ.get(ENV_METRICS_PORT)
    config = with_overrides(
        load_config(os.environ[ENV_CONFIG]),
        token_file=Path(token_file) if token_file else None,
        metrics_port=int(metrics_port) if metrics_port else None,
    )
    if not config.service.created_series:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    data_dir = Path(os.environ[ENV_DATA_DIR])
    multiproc = os.environ.get(MULTIPROC_ENV)
    service = build_service(
        config, data_dir, multiprocess_dir=Path(multiproc) if multiproc else None
    )
    return BodyLimit(create_app(service), config.service.max_body_bytes)  # type: ignore[return-value]


#: Errors that mean a user mistake at start (reported as one line, exit code 2).
STARTUP_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    ProfileError,
    StoreError,
    TokenFileError,
)


__all__ = [
    "BodyLimit",
    "Service",
    "app_from_environment",
    "build_service",
    "create_app",
    "load_tokens",
    "metrics_app",
    "prepare_multiprocess_dir",
    "STARTUP_ERRORS",
]
