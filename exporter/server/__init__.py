"""``model-exporter serve``: a FastAPI model server with monitoring built in.

The user's model is loaded from ``package.module:callable``; every prediction goes through a
:class:`ModelMonitor`; ``/feedback`` joins delayed ground truth. With several workers, counters go
through prometheus_client's multiprocess files and windows through per-worker state files, so any
worker's ``/metrics`` answers for the whole service.

Errors are JSON ``{"detail": [{"field": ..., "reason": ...}]}`` with a 4xx status and never a stack
trace; a model exception is a 500 with a generic body, counted by exception class.

The server sits on the monitor: :func:`build_service` (``_service``) makes a :class:`Service` of a
config; :func:`create_app` (``_app``) serves it, with the body limit and JSON parsing of ``_body``,
the checks of ``_checks``, the answers of ``_answers``, the OpenAPI description of ``_openapi``,
``/metrics`` from ``_metrics`` and the background flush and multi-worker files of ``_workers``;
:func:`app_from_environment` (``_environment``) is each worker's factory under ``--workers N``.
The config's ``candidates`` (other versions of the model, docs/versions.md) are loaded and routed
by ``_versions``; shadow versions run on threads of their own, in ``_shadow``.
"""

from exporter.server._answers import RequestError, split_output
from exporter.server._app import create_app
from exporter.server._body import MAX_INTEGER_DIGITS, MAX_JSON_DEPTH, BodyLimit
from exporter.server._checks import MAX_KEY_LENGTH, MAX_STRING_LENGTH
from exporter.server._environment import (
    ENV_CONFIG,
    ENV_DATA_DIR,
    ENV_METRICS_PORT,
    ENV_TOKEN_FILE,
    MULTIPROC_ENV,
    app_from_environment,
)
from exporter.server._metrics import metrics_app
from exporter.server._openapi import LARGEST_DOUBLE, ServiceDocs, json_types
from exporter.server._service import (
    STARTUP_ERRORS,
    Derive,
    Predict,
    Service,
    build_service,
    check_segments,
    import_callable,
    load_tokens,
    monitor_for,
)
from exporter.server._workers import (
    FLUSH_INTERVAL_SECONDS,
    SWEEP_EVERY_TICKS,
    prepare_multiprocess_dir,
    sweep_dead_workers,
)

__all__ = [
    "ENV_CONFIG",
    "ENV_DATA_DIR",
    "ENV_METRICS_PORT",
    "ENV_TOKEN_FILE",
    "FLUSH_INTERVAL_SECONDS",
    "LARGEST_DOUBLE",
    "MAX_INTEGER_DIGITS",
    "MAX_JSON_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_STRING_LENGTH",
    "MULTIPROC_ENV",
    "STARTUP_ERRORS",
    "SWEEP_EVERY_TICKS",
    "BodyLimit",
    "Derive",
    "Predict",
    "RequestError",
    "Service",
    "ServiceDocs",
    "app_from_environment",
    "build_service",
    "check_segments",
    "create_app",
    "import_callable",
    "json_types",
    "load_tokens",
    "metrics_app",
    "monitor_for",
    "prepare_multiprocess_dir",
    "split_output",
    "sweep_dead_workers",
]
