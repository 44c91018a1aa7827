"""How ``serve --workers N`` hands its settings to the workers uvicorn starts: the environment
variables the command sets, and :func:`app_from_environment`, the ``uvicorn --factory`` entry
that builds each worker's app from them."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from exporter.config import load_config, with_overrides
from exporter.server._app import create_app
from exporter.server._body import BodyLimit
from exporter.server._service import build_service

#: Environment variables through which `serve --workers N` hands its settings to the workers.
ENV_CONFIG = "MODEL_EXPORTER_CONFIG"
ENV_DATA_DIR = "MODEL_EXPORTER_DATA_DIR"
#: The token file's path (never a token) and the metrics port given on the command line.
ENV_TOKEN_FILE = "MODEL_EXPORTER_TOKEN_FILE"
ENV_METRICS_PORT = "MODEL_EXPORTER_METRICS_PORT"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
