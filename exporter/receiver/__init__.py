"""The Alertmanager webhook receiver: ``model-exporter receiver``.

Alertmanager posts notifications (webhook payload version 4) to ``POST /alerts``. Each alert is
committed to SQLite (:mod:`exporter.receiver.store`) before the answer, so whatever was
acknowledged survives a crash; a repeat of the same ``(fingerprint, startsAt, status)`` is
acknowledged again but neither stored nor counted nor acted on twice, also after a restart.
``GET /alerts`` lists what was stored, ``/metrics`` counts it, and an optional actions file runs
a command per alertname (for example a retraining job) with the alert's JSON on stdin. An action
is stored with its alert and runs at least once, also across a crash; the command gets an
idempotency key in ``ALERT_IDEMPOTENCY_KEY`` to tell a second run.

Alertmanager sends the bearer token with ``http_config: {authorization: {credentials_file: F}}``
in its ``webhook_configs``; the receiver reads the same file with ``--token-file`` (several lines
are several tokens, for a rotation) and then asks for it on ``POST /alerts`` and ``GET /alerts``;
the probes, ``/metrics`` and the docs stay open. ``--ssl-certfile``/``--ssl-keyfile`` serve HTTPS.

The package's modules: ``_payload`` (the webhook payload and the answers), ``_actions`` (the
actions file and how one command runs), ``_runner`` (the durable, bounded queue of actions and
its worker threads), ``_metrics`` (the receiver's counters), ``_app`` (the ASGI app),
``_command`` (the ``receiver`` subcommand) and ``store`` (the SQLite alert store).
"""

from __future__ import annotations

from exporter.receiver._actions import (
    DEFAULT_ACTION_TIMEOUT_SECONDS,
    IDEMPOTENCY_KEY_ENV,
    AlertAction,
    Outcome,
    ReceiverConfigError,
    load_actions,
    run_action,
)
from exporter.receiver._app import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_MAX_STORED_ALERTS,
    DEFAULT_RETENTION_DAYS,
    LIST_FILTERS,
    MAX_ALERT_BYTES,
    MAX_BODY_BYTES,
    MAX_FILTER_LENGTH,
    MAX_LIST_LIMIT,
    MAX_PAGE_BYTES,
    OPEN_PATHS,
    PRUNE_INTERVAL_SECONDS,
    create_app,
)
from exporter.receiver._command import (
    DEFAULT_DATA_DIR,
    DEFAULT_HOST,
    DEFAULT_PORT,
    add_arguments,
    port_number,
    run,
)
from exporter.receiver._metrics import MAX_ALERTNAMES, MAX_SEVERITIES, OTHER, ReceiverMetrics
from exporter.receiver._payload import (
    GO_ZERO_TIME,
    MAX_REPORTED_ERRORS,
    AlertList,
    ErrorBody,
    FieldError,
    PostResult,
    Status,
    StoredNotification,
    UtcDatetime,
    WebhookAlert,
    WebhookPayload,
)
from exporter.receiver._runner import (
    ACTION_QUEUE_SIZE,
    ACTION_WORKERS,
    DEFAULT_SHUTDOWN_SECONDS,
    ActionRunner,
)
from exporter.receiver.store import (
    DATABASE_NAME,
    AlertRecord,
    AlertStore,
    PendingAction,
    StoredAlert,
    StoreError,
    idempotency_key,
)

__all__ = [
    "ACTION_QUEUE_SIZE",
    "ACTION_WORKERS",
    "ActionRunner",
    "AlertAction",
    "AlertList",
    "AlertRecord",
    "AlertStore",
    "DATABASE_NAME",
    "DEFAULT_ACTION_TIMEOUT_SECONDS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_HOST",
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_MAX_STORED_ALERTS",
    "DEFAULT_PORT",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_SHUTDOWN_SECONDS",
    "ErrorBody",
    "FieldError",
    "GO_ZERO_TIME",
    "IDEMPOTENCY_KEY_ENV",
    "LIST_FILTERS",
    "MAX_ALERTNAMES",
    "MAX_ALERT_BYTES",
    "MAX_BODY_BYTES",
    "MAX_FILTER_LENGTH",
    "MAX_LIST_LIMIT",
    "MAX_PAGE_BYTES",
    "MAX_REPORTED_ERRORS",
    "MAX_SEVERITIES",
    "OPEN_PATHS",
    "OTHER",
    "Outcome",
    "PRUNE_INTERVAL_SECONDS",
    "PendingAction",
    "PostResult",
    "ReceiverConfigError",
    "ReceiverMetrics",
    "Status",
    "StoreError",
    "StoredAlert",
    "StoredNotification",
    "UtcDatetime",
    "WebhookAlert",
    "WebhookPayload",
    "add_arguments",
    "create_app",
    "idempotency_key",
    "load_actions",
    "port_number",
    "run",
    "run_action",
]
