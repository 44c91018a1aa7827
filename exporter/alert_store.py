"""Moved to :mod:`exporter.receiver.store`; this module keeps the old import path working."""

from __future__ import annotations

from exporter.receiver.store import (
    BUSY_TIMEOUT_SECONDS,
    DATABASE_NAME,
    SCHEMA_VERSION,
    AlertRecord,
    AlertStore,
    StoredAlert,
    StoreError,
)

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "DATABASE_NAME",
    "SCHEMA_VERSION",
    "AlertRecord",
    "AlertStore",
    "StoredAlert",
    "StoreError",
]
