"""``GET /metrics``: the Prometheus text of one worker's registry or, with several workers, of
them all (their multiprocess files and published windows); and :func:`metrics_app`, the app of
``service.metrics_port`` that serves it alone."""

from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from exporter.security import BearerAuth
from exporter.server._service import Service


async def metrics_response(service: Service) -> Response:
    """The answer to ``GET /metrics``, rendered in a thread."""
    body = await run_in_threadpool(_render_metrics, service)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_app(service: Service) -> ASGIApp:
    """``GET /metrics`` alone, for ``service.metrics_port``; everything else is a 404.

    With one worker ``service`` is the worker itself. With several it is the supervisor's
    :func:`build_service` ``(metrics_reader=True)``: the counters come from the workers'
    multiprocess files and the windows from the ones they publish, as on any worker's /metrics.
    """

    async def metrics(request: Request) -> Response:
        return await metrics_response(service)

    app: ASGIApp = Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
    if service.tokens is not None and service.config.service.auth.protect_metrics:
        app = BearerAuth(app, tokens=service.tokens, open_paths=())
    return app


def _render_metrics(service: Service) -> bytes:
    # A scrape sees every count this worker has acknowledged: the held-back per-bin counts reach
    # the counters (and, with several workers, their files) before anything is read. The reading
    # itself writes nothing.
    if not service.reader:
        for monitor in service.monitors:
            monitor.flush()
    if service.multiprocess_dir is None:
        return generate_latest(service.registry)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(service.multiprocess_dir))  # type: ignore[no-untyped-call]
    from exporter.metrics import state_for

    registry.register(state_for(service.registry).drift)
    return generate_latest(registry)
