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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exporter.config import ConfigError, MonitorConfig, load_config
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

log = logging.getLogger(__name__)

#: Environment variables through which `serve --workers N` hands its settings to the workers.
ENV_CONFIG = "MODEL_EXPORTER_CONFIG"
ENV_DATA_DIR = "MODEL_EXPORTER_DATA_DIR"
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

Predict = Callable[[Mapping[str, Any]], Any]
Derive = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class RequestError(Exception):
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


def build_service(
    config: MonitorConfig,
    data_dir: Path,
    *,
    registry: CollectorRegistry | None = None,
    multiprocess_dir: Path | None = None,
) -> Service:
    """Load the model, the reference and the store; raise ConfigError/ProfileError/StoreError."""
    predict = import_callable(config.model.import_path, "model.import_path")
    derive = (
        import_callable(config.model.derive_features, "model.derive_features")
        if config.model.derive_features
        else None
    )
    reference_path = config.reference_path()
    reference = ReferenceProfile.load(reference_path) if reference_path is not None else None
    outcomes = config.outcomes
    store: OutcomeStore
    if outcomes.store == "sqlite":
        store = SqliteOutcomeStore.in_directory(
            data_dir, ttl_seconds=outcomes.ttl_seconds, max_pending=outcomes.max_pending
        )
    else:
        store = MemoryOutcomeStore(
            ttl_seconds=outcomes.ttl_seconds, max_pending=outcomes.max_pending
        )
    registry = registry if registry is not None else CollectorRegistry()
    m = config.monitoring
    monitor = ModelMonitor(
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
        sample_size=m.sample_size,
        drift_cache_seconds=m.drift_cache_seconds,
        domains=m.domains,
        thresholds=config.thresholds,
        confidence_thresholds=m.confidence_thresholds,
        stage=config.model.stage,
        outcomes=store,
        state_dir=multiprocess_dir / "windows" if multiprocess_dir is not None else None,
    )
    watched = config.features or (list(reference.features) if reference else [])
    numeric = frozenset(
        f for f in watched if reference and isinstance(reference.features[f], NumericFeature)
    )
    categorical = frozenset(
        f for f in watched if reference and isinstance(reference.features[f], CategoricalFeature)
    )
    return Service(config, monitor, predict, derive, store, registry, multiprocess_dir,
                   numeric, categorical)  # fmt: skip


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
        document = json.loads(body, parse_constant=_refuse_constant)
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
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send null for a missing number")


def _check_features(service: Service, features: Any, field: str) -> dict[str, Any]:
    """The request's features, type-checked against the reference: 422 naming the feature."""
    if not isinstance(features, dict):
        raise RequestError(422, field, f"must be a JSON object of features, got {_kind(features)}")
    for name, value in features.items():
        if len(name) > MAX_KEY_LENGTH:
            raise RequestError(422, f"{field}.{name[:40]}...", "feature name is too long")
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            raise RequestError(422, f"{field}.{name}", f"longer than {MAX_STRING_LENGTH} chars")
        if value is None:
            continue  # missing values are data quality, counted by the monitor, not refused
        if name in service.numeric and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            _count_wrong_type(service, name)
            raise RequestError(422, f"{field}.{name}", f"must be a number, got {_kind(value)}")
        if name in service.categorical and isinstance(value, (dict, list)):
            _count_wrong_type(service, name)
            raise RequestError(
                422, f"{field}.{name}", f"must be a string or number, got {_kind(value)}"
            )
    return features


def _count_wrong_type(service: Service, feature: str) -> None:
    # The row is refused, but the bad value is still data quality the team wants to see.
    service.monitor.count_invalid(feature, "wrong_type")


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


def _split_output(result: Any) -> tuple[Any, float | None]:
    if isinstance(result, tuple) and len(result) == 2:
        prediction, confidence = result
    elif isinstance(result, Mapping) and "prediction" in result:
        prediction, confidence = result["prediction"], result.get("confidence")
    else:
        prediction, confidence = result, None
    if isinstance(confidence, np.generic):
        confidence = confidence.item()
    if confidence is not None and not isinstance(confidence, (int, float)):
        confidence = None
    return _jsonable(prediction), confidence


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
        refused = False

        async def limited() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    raise _TooLarge
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

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


class _TooLarge(Exception):
    pass


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
            "confidence": confidence,
            "prediction_id": prediction_id,
            "model": config.model.name,
            "version": config.model.version,
        }

    @app.post("/predict", summary="Predict one instance ({features}) or a batch ({instances})")
    async def predict(request: Request) -> Response:
        try:
            document = _parse_json(await request.body())
            if not isinstance(document, dict):
                raise RequestError(422, "body", f"must be a JSON object, got {_kind(document)}")
            unknown = sorted(set(document) - {"features", "instances"})
            if unknown:
                raise RequestError(422, unknown[0], "unknown field; send features or instances")
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

    @app.post("/feedback", summary="Ground truth for earlier predictions, one or a list")
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

    @app.get("/readyz", summary="The model is loaded and the outcome store is writable")
    async def readyz() -> Response:
        try:
            await run_in_threadpool(monitor.check_store)
        except StoreError as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        if not monitor.store_healthy:
            return JSONResponse(
                {"status": "degraded", "reason": "the last write to the outcome store failed"},
                status_code=503,
            )
        return JSONResponse({"status": "ready", "model": config.model.name})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        body = await run_in_threadpool(_render_metrics, service)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

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
        raise RequestError(422, f"{prefix}{unknown[0]}", "unknown field")
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
        ticks += 1
        if service.multiprocess_dir is not None and ticks % SWEEP_EVERY_TICKS == 0:
            longest = max(s.seconds for s in service.config.monitoring.window_specs())
            await run_in_threadpool(sweep_dead_workers, service.multiprocess_dir, longest)


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

    config = load_config(os.environ[ENV_CONFIG])
    if not config.service.created_series:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    data_dir = Path(os.environ[ENV_DATA_DIR])
    multiproc = os.environ.get(MULTIPROC_ENV)
    service = build_service(
        config, data_dir, multiprocess_dir=Path(multiproc) if multiproc else None
    )
    return BodyLimit(create_app(service), config.service.max_body_bytes)  # type: ignore[return-value]


#: Errors that mean a user mistake at start (reported as one line, exit code 2).
STARTUP_ERRORS: tuple[type[Exception], ...] = (ConfigError, ProfileError, StoreError)


__all__ = [
    "BodyLimit",
    "Service",
    "app_from_environment",
    "build_service",
    "create_app",
    "prepare_multiprocess_dir",
    "STARTUP_ERRORS",
]
