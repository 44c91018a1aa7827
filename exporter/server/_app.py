"""The HTTP API of one worker around a built :class:`Service`: ``/predict``, ``/feedback``,
``/healthz``, ``/readyz`` and (unless ``service.metrics_port`` serves it) ``/metrics``, with
the background flush running for the app's lifetime and the bearer tokens required where the
config asks for them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from exporter.config import MonitorConfig
from exporter.errors import ExporterError
from exporter.group_commit import GroupCommitter
from exporter.outcomes import MemoryOutcomeStore, Resolution, StoreError
from exporter.security import DOCS_PATHS, PROBE_PATHS, require_bearer
from exporter.server._answers import (
    FEEDBACK_STATUS,
    ModelOutputError,
    RequestError,
    answerable_output,
    answered_confidence,
    error_answer,
)
from exporter.server._body import parse_json_body
from exporter.server._checks import (
    MAX_KEY_LENGTH,
    MAX_STRING_LENGTH,
    check_features,
    check_outcome,
    json_kind,
)
from exporter.server._metrics import metrics_response
from exporter.server._openapi import MAX_ROUTING_KEY_LENGTH, METRICS, READYZ, ServiceDocs
from exporter.server._service import Predict, Service
from exporter.server._shadow import ShadowRunner
from exporter.server._versions import (
    ROUTING_HEADER,
    Router,
    Version,
    shadow_id,
    skipped_counter,
)
from exporter.server._workers import flush_forever, mark_dead
from exporter.status.local import status_of_service

log = logging.getLogger("exporter.server")


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

    versions = service.versions or (
        Version(config.model.version, "primary", monitor, service.predict, 1.0),
    )
    router = Router(versions[0], [v for v in versions if v.role == "canary"])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(flush_forever(service))
        for shadow in shadows:
            shadow.start()
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for shadow in shadows:
                shadow.close()
            await committer.close()
            for each in service.monitors:
                await run_in_threadpool(each.flush)
            await run_in_threadpool(service.store.close)
            if service.multiprocess_dir is not None:
                mark_dead(service.multiprocess_dir, os.getpid())

    app = FastAPI(
        title=f"model-exporter: {config.model.name}",
        version=config.model.version,
        description="Predictions with monitoring, delayed ground truth and Prometheus metrics.",
        lifespan=lifespan,
    )

    def watched(predict: Predict, raw: dict[str, Any]) -> Mapping[str, Any]:
        """The features the monitor watches: the request's, plus the derived ones (the
        accounting reads them from run_model's arguments)."""
        if service.derive is None:
            return raw
        try:
            return {**raw, **service.derive(raw)}
        except Exception:
            log.exception("derive_features failed; monitoring the raw features")
            return raw

    # The same accounting as ModelMonitor.instrument (latency, error classes, output reading),
    # with the prediction kept for its ground truth by the group committer instead, which
    # answers once it is in the store. run_model has already read the answer into its
    # (prediction, confidence) pair, so the output reader takes the pair as it is.
    # Every version is accounted by its own monitor through this same caller.
    calls = {v.name: v.monitor.instrument.caller(features=watched, output=_as_read,
                                                 keep=not durable_store)
             for v in versions}  # fmt: skip
    # A shadow's calls are accounted alike, but it stores its predictions itself, under ids
    # derived from the answering version's (exporter.server._shadow).
    shadows = [
        ShadowRunner(v, v.monitor.instrument.caller(features=watched, output=_as_read, keep=False),
                     run_model, skipped_counter(service.registry, v.monitor),
                     service.store.remember)
        for v in versions if v.role == "shadow"
    ]  # fmt: skip

    async def _predict_one(features: dict[str, Any], version: Version) -> dict[str, Any]:
        raw = dict(features)
        # The latency counts from here: a call waiting for a free thread is slow for its client.
        start = time.perf_counter()
        try:
            answered = await run_in_threadpool(
                calls[version.name].call, run_model, (version.predict, raw), started=start
            )
        except Exception as exc:
            kind = getattr(exc, "error_kind", None) or type(exc).__name__
            detail = f": {exc}" if isinstance(exc, ModelOutputError) else ""
            log.warning("model %s version %s raised %s%s", config.model.name, version.name,
                        kind, detail)  # fmt: skip
            raise _ModelFailed from None
        prediction_id = answered.prediction_id
        if prediction_id is None:  # the answer could not be read (counted as a monitor error)
            raise _ModelFailed
        prediction, confidence = answered.prediction, answered.confidence
        if durable_store:
            pending = version.monitor.pending(prediction_id, prediction, confidence)
            if pending is not None:
                await committer.submit(pending)
        for shadow in shadows:
            # Started, never awaited: the answer below leaves whatever the shadow does.
            if shadow.sampled():
                shadow.submit(dict(features), prediction_id)
        return {
            "prediction": prediction,
            "confidence": answered_confidence(confidence),
            "prediction_id": prediction_id,
            "model": config.model.name,
            "version": version.name,
        }

    # The handlers check the raw JSON themselves; the bodies are documented by hand.
    docs = ServiceDocs(config.model.task, max_batch, service.numeric, service.categorical,
                       MAX_KEY_LENGTH, MAX_STRING_LENGTH,
                       required=config.model.required_features)  # fmt: skip

    @app.post(
        "/predict",
        summary="Predict one instance ({features}) or a batch ({instances})",
        **docs.predict(),
    )
    async def predict(request: Request) -> Response:
        try:
            version = router.pick(_routing_key(request))
            document = await parse_json_body(await request.body())
            if not isinstance(document, dict):
                raise RequestError(422, "body", f"must be a JSON object, got {json_kind(document)}")
            unknown = sorted(set(document) - {"features", "instances"})
            if unknown:
                raise RequestError(
                    422, unknown[0][:MAX_KEY_LENGTH], "unknown field; send features or instances"
                )
            if ("features" in document) == ("instances" in document):
                raise RequestError(422, "body", "send exactly one of features or instances")
            if "features" in document:
                features = check_features(service, document["features"], "features")
                return JSONResponse(await _predict_one(features, version))
            instances = document["instances"]
            if not isinstance(instances, list):
                raise RequestError(
                    422, "instances", f"must be an array, got {json_kind(instances)}"
                )
            if not instances:
                raise RequestError(422, "instances", "must hold at least one instance")
            if len(instances) > max_batch:
                raise RequestError(
                    413, "instances", f"{len(instances)} instances; at most {max_batch} per call"
                )
            checked = [
                check_features(service, item, f"instances.{i}") for i, item in enumerate(instances)
            ]
            answers = [await _predict_one(item, version) for item in checked]
            return JSONResponse({"predictions": answers})
        except RequestError as exc:
            return error_answer(exc.status, exc.problems)
        except _ModelFailed:
            return JSONResponse({"detail": "the model failed to predict"}, status_code=500)

    def record_outcome(prediction_id: str, actual: Any) -> Resolution:
        """The outcome of a prediction, counted by the version that made it (the monitors share
        the store, exporter._ground_truth), and of the shadows' predictions for the same request;
        the answer is the answering version's."""
        status = monitor.record_outcome(prediction_id, actual)
        if status in (Resolution.RECORDED, Resolution.DUPLICATE):
            for shadow in shadows:
                shadow.version.monitor.record_outcome(
                    shadow_id(prediction_id, shadow.version.name), actual
                )
        return status

    @app.post(
        "/feedback",
        summary="Ground truth for earlier predictions, one or a list",
        **docs.feedback(),
    )
    async def feedback(request: Request) -> Response:
        try:
            document = await parse_json_body(await request.body())
            if isinstance(document, list):
                if len(document) > max_batch:
                    raise RequestError(413, "body", f"at most {max_batch} outcomes per call")
                items = [check_outcome(item, f"{i}") for i, item in enumerate(document)]
                results = []
                for prediction_id, actual in items:
                    status = await run_in_threadpool(record_outcome, prediction_id, actual)
                    results.append({"prediction_id": prediction_id, "status": status.value})
                return JSONResponse({"results": results})
            prediction_id, actual = check_outcome(document, "")
            status = await run_in_threadpool(record_outcome, prediction_id, actual)
        except RequestError as exc:
            return error_answer(exc.status, exc.problems)
        code, reason = FEEDBACK_STATUS[status]
        if code >= 400:
            field = "prediction_id" if code in (404, 409) else "actual"
            return error_answer(code, [{"field": field, "reason": reason}])
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

    @app.get(
        "/status",
        summary="Health summary of every version served, as this process sees it",
        description=(
            "Per version: an overall state (ok, warning, critical), each signal with its value, "
            "threshold and window, and what to do. Counts of this process (every worker's) and "
            "its own drift and performance windows; no other replica and no alert is seen here: "
            "`model-exporter status --prometheus URL` gives the fleet view."
        ),
    )
    async def status() -> JSONResponse:
        # Reads the registry and the windows (and flushes first): off the event loop.
        return JSONResponse(await run_in_threadpool(status_of_service, service))

    if config.service.metrics_port is None:  # else only metrics_app() serves them, on that port

        @app.get("/metrics", summary="Prometheus metrics", **METRICS)
        async def metrics() -> Response:
            return await metrics_response(service)

    if service.tokens is not None:
        require_bearer(app, service.tokens, _open_paths(config))
    return app


def _open_paths(config: MonitorConfig) -> frozenset[str]:
    """The paths that need no token: probes, docs and, unless protected, /metrics."""
    metrics = frozenset() if config.service.auth.protect_metrics else frozenset({"/metrics"})
    return PROBE_PATHS | DOCS_PATHS | metrics


def run_model(predict: Predict, raw: dict[str, Any]) -> tuple[Any, Any]:
    """A version's answer to one instance, read once, in a worker thread; what it cannot answer
    fails the call like an exception of the model would."""
    try:
        result = predict(raw)
    except Exception:
        raise
    except BaseException as exc:
        # In a worker thread a SystemExit, KeyboardInterrupt or bare BaseException can only
        # come from the model's own code: a failed call counted under its class, answered
        # with the usual 500, never a reason for the service to stop.
        raise ModelAborted(exc) from exc
    return answerable_output(result)


def _routing_key(request: Request) -> bytes | None:
    """The request's ``X-Routing-Key`` as sent: None when absent or empty (a random draw routes
    it)."""
    key = request.headers.get(ROUTING_HEADER)
    if key and len(key) > MAX_ROUTING_KEY_LENGTH:
        raise RequestError(422, ROUTING_HEADER, f"longer than {MAX_ROUTING_KEY_LENGTH} characters")
    # Starlette decodes header values as latin-1: encoding back gives the bytes the client sent.
    return key.encode("latin-1") if key else None


def _as_read(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    """The output reader of /predict's accounting: the pair run_model already read."""
    return pair


class ModelAborted(ExporterError):
    """A BaseException the model raised (SystemExit, KeyboardInterrupt), carried as an
    Exception so it is handled as a failed call; counted under the original class's name."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"the model raised {type(original).__name__}")
        self.error_kind = type(original).__name__


class _ModelFailed(Exception):
    """The model raised (already counted and logged): answered 500 with a generic body."""
