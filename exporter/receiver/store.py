"""Durable storage of the alerts the webhook receiver acknowledged, in one SQLite file.

Every alert of a notification is a row, keyed by ``(fingerprint, starts_at, status)``: Alertmanager
re-sends a firing alert every ``repeat_interval`` and retries a failed delivery, and those repeats
must neither be stored twice nor re-run an action, also after a restart. The journal is WAL with
``synchronous=FULL``, so a committed notification survives a crash or a power cut; the receiver
answers 2xx only after :meth:`AlertStore.record` has committed.

An alert that has an action gets a row in ``actions`` in the same transaction, so the action is
durable work: it stays pending until :meth:`AlertStore.finish_action` records its outcome, and a
receiver started after a crash runs what is still pending (at least once; the action gets
:func:`idempotency_key` to recognise a second run).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from exporter.errors import StoreError as StoreError  # re-exported: raised here

#: File name of the database inside the receiver's data directory.
DATABASE_NAME = "alerts.sqlite3"
#: ``PRAGMA user_version`` of the schema below; a file from a newer receiver is refused.
SCHEMA_VERSION = 2  # 2 adds the actions table and last_seen_at; version 1 is upgraded in place
#: How long a write waits for another connection (another receiver process) to release the file.
BUSY_TIMEOUT_SECONDS = 5.0
#: Alerts deleted per transaction by :meth:`AlertStore.prune`, so a write never waits long.
_PRUNE_BATCH = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    status TEXT NOT NULL,
    ends_at TEXT,
    alertname TEXT NOT NULL,
    severity TEXT NOT NULL,
    model TEXT NOT NULL,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    received_at TEXT NOT NULL,
    alert_json TEXT NOT NULL,
    last_seen_at TEXT,
    UNIQUE (fingerprint, starts_at, status)
);
CREATE INDEX IF NOT EXISTS alerts_by_alertname ON alerts (alertname, id);
CREATE INDEX IF NOT EXISTS alerts_by_model ON alerts (model, id);
CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, id);
CREATE TABLE IF NOT EXISTS actions (
    alert_id INTEGER PRIMARY KEY REFERENCES alerts (id),
    queued_at TEXT NOT NULL,
    done_at TEXT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS actions_pending ON actions (alert_id) WHERE done_at IS NULL;
CREATE TABLE IF NOT EXISTS write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class AlertRecord:
    """One alert of a notification, as it is stored.

    ``starts_at`` and ``ends_at`` are UTC ISO 8601 strings with microseconds, so the same instant
    written with another offset is still the same key. ``alert_json`` is the alert object exactly
    as Alertmanager sent it, unknown fields included.
    """

    fingerprint: str
    starts_at: str
    status: str
    ends_at: str | None
    alertname: str
    severity: str
    model: str
    receiver: str
    group_key: str
    alert_json: str


@dataclass(frozen=True)
class StoredAlert:
    """A stored alert, with its row id (the order of arrival) and when it was received."""

    id: int
    received_at: str
    record: AlertRecord


@dataclass(frozen=True)
class PendingAction:
    """An alert whose action has not run to an outcome yet."""

    alert_id: int
    alertname: str
    status: str
    #: :func:`idempotency_key` of the alert: the same for every delivery of it, in any process.
    key: str
    alert_json: str


def idempotency_key(fingerprint: str, starts_at: str, status: str) -> str:
    """32 hex digits naming one alert and status: the store's key, hashed so that it is safe in
    an environment variable or a file name whatever the sender put in the fingerprint."""
    text = "\0".join((fingerprint, starts_at, status))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _utc_ago(seconds: float) -> str:
    """The UTC time ``seconds`` ago, written like :func:`_utc_now` (so strings compare as times)."""
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat(
        timespec="microseconds"
    )


class AlertStore:
    """The receiver's SQLite file. Thread-safe: one connection, one lock around each statement."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._connection = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,  # explicit BEGIN/COMMIT below
                check_same_thread=False,  # every use holds self._lock
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the alert store {path}: {exc}") from exc
        try:
            self._prepare()
            self.check_writable()
        except (sqlite3.Error, StoreError) as exc:
            self._connection.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot use the alert store {path}: {exc}") from exc

    @classmethod
    def in_directory(cls, data_dir: Path) -> AlertStore:
        """Open (creating it and the directory if needed) the store file inside ``data_dir``."""
        try:
            # Alerts can carry internal URLs and hostnames: the directory is private when created.
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {data_dir}: {exc}") from exc
        if not data_dir.is_dir():
            raise StoreError(f"the data directory {data_dir} is not a directory")
        return cls(data_dir / DATABASE_NAME)

    def _prepare(self) -> None:
        conn = self._connection
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the alert store {self.path} has schema version {version}, newer than this "
                f"receiver's {SCHEMA_VERSION}; run a newer receiver or use another --data-dir"
            )
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            raise StoreError(
                f"the alert store {self.path} cannot use a write-ahead log (journal mode "
                f"{mode!r}); put --data-dir on a local file system"
            )
        # WAL alone syncs at checkpoints only; FULL syncs every commit, which is what makes an
        # acknowledged notification survive a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}")
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
            if "last_seen_at" not in columns:  # a version 1 file
                conn.execute("ALTER TABLE alerts ADD COLUMN last_seen_at TEXT")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def check_writable(self) -> None:
        """Commit a tiny write; raise :class:`sqlite3.Error` when the file cannot take one."""
        with self._lock:
            self._connection.execute(
                "INSERT INTO write_probe (id, checked_at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                (_utc_now(),),
            )

    def record(
        self, alerts: Sequence[AlertRecord], *, with_action: Sequence[bool] = ()
    ) -> list[int | None]:
        """Store ``alerts`` in one committed transaction.

        Returns, per alert, its row id when it was new and ``None`` when the same
        ``(fingerprint, starts_at, status)`` was already stored (then nothing is written). A new
        alert whose ``with_action`` entry is true gets a pending action in the same transaction.
        Raises :class:`sqlite3.Error` when the transaction could not be committed.
        """
        wanted = list(with_action) + [False] * (len(alerts) - len(with_action))
        received_at = _utc_now()
        rows = [
            (
                a.fingerprint,
                a.starts_at,
                a.status,
                a.ends_at,
                a.alertname,
                a.severity,
                a.model,
                a.receiver,
                a.group_key,
                received_at,
                a.alert_json,
            )
            for a in alerts
        ]
        with self._lock:
            conn = self._connection
            conn.execute("BEGIN IMMEDIATE")
            try:
                new: list[int | None] = []
                for row, action in zip(rows, wanted, strict=False):
                    cursor = conn.execute(
                        "INSERT INTO alerts (fingerprint, starts_at, status, ends_at, alertname, "
                        "severity, model, receiver, group_key, received_at, alert_json) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (fingerprint, starts_at, status) DO NOTHING",
                        row,
                    )
                    alert_id = cursor.lastrowid if cursor.rowcount == 1 else None
                    new.append(alert_id)
                    if alert_id is None:  # a repeat: still firing, so retention keeps it
                        conn.execute(
                            "UPDATE alerts SET last_seen_at = ? "
                            "WHERE fingerprint = ? AND starts_at = ? AND status = ?",
                            (received_at, *row[:3]),
                        )
                    if alert_id is not None and action:
                        conn.execute(
                            "INSERT INTO actions (alert_id, queued_at) VALUES (?, ?)",
                            (alert_id, received_at),
                        )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return new

    def page(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        alertname: str | None = None,
        limit: int = 100,
        before: int | None = None,
        max_bytes: int | None = None,
    ) -> tuple[list[StoredAlert], bool]:
        """Up to ``limit`` stored alerts matching every given filter, newest first, with an id
        below ``before`` when it is given, and whether older ones follow. ``max_bytes`` ends the
        page early once the alerts' JSON adds up to it (the first alert is always included)."""
        clauses: list[str] = []
        params: list[str | int] = []
        for column, value in (("status", status), ("model", model), ("alertname", alertname)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit + 1)
        found: list[StoredAlert] = []
        size = 0
        with self._lock:
            cursor = self._connection.execute(
                "SELECT id, received_at, fingerprint, starts_at, status, ends_at, alertname, "
                "severity, model, receiver, group_key, alert_json "
                f"FROM alerts {where} ORDER BY id DESC LIMIT ?",
                params,
            )
            try:
                for row in cursor:  # row by row: a page never holds more than it returns
                    size += len(row[-1])
                    if len(found) == limit or (
                        found and max_bytes is not None and size > max_bytes
                    ):
                        return found, True
                    record = AlertRecord(*row[2:])
                    found.append(StoredAlert(id=row[0], received_at=row[1], record=record))
            finally:
                cursor.close()
        return found, False

    def pending_actions(self, limit: int, *, skip: Collection[int] = ()) -> list[PendingAction]:
        """Up to ``limit`` actions that have not run to an outcome, oldest first, without the
        alert ids in ``skip`` (those queued or running in this process)."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT a.id, a.alertname, a.status, a.fingerprint, a.starts_at, a.alert_json "
                "FROM actions p JOIN alerts a ON a.id = p.alert_id "
                "WHERE p.done_at IS NULL ORDER BY p.alert_id LIMIT ?",
                (limit + len(skip),),
            ).fetchall()
        found = [
            PendingAction(
                alert_id=row[0],
                alertname=row[1],
                status=row[2],
                key=idempotency_key(row[3], row[4], row[2]),
                alert_json=row[5],
            )
            for row in rows
            if row[0] not in skip
        ]
        return found[:limit]

    def finish_action(self, alert_id: int, outcome: str) -> None:
        """Record that the action of ``alert_id`` ran to ``outcome``; it is no longer pending."""
        with self._lock:
            self._connection.execute(
                "UPDATE actions SET done_at = ?, outcome = ? WHERE alert_id = ?",
                (_utc_now(), outcome, alert_id),
            )

    def prune(self, *, max_age_seconds: float | None, max_alerts: int | None) -> int:
        """Delete alerts last received more than ``max_age_seconds`` ago and all but the newest
        ``max_alerts``; an alert whose action is still pending stays. Returns how many went.

        A repeat refreshes an alert's age, so one that keeps firing is kept by age; the count
        bound removes the oldest first, and if Alertmanager re-sends such an alert it is stored,
        and acted on, as new. Deletes in batches, each its own transaction.
        """
        cutoff = "" if max_age_seconds is None else _utc_ago(max_age_seconds)
        deleted = 0
        while True:
            with self._lock:
                conn = self._connection
                conn.execute("BEGIN IMMEDIATE")
                try:
                    beyond = None
                    if max_alerts is not None:
                        beyond = conn.execute(
                            "SELECT id FROM alerts ORDER BY id DESC LIMIT 1 OFFSET ?",
                            (max_alerts,),
                        ).fetchone()
                    ids = [
                        row[0]
                        for row in conn.execute(
                            "SELECT id FROM alerts "
                            "WHERE (COALESCE(last_seen_at, received_at) < ? OR id <= ?) "
                            "AND id NOT IN (SELECT alert_id FROM actions WHERE done_at IS NULL) "
                            "ORDER BY id LIMIT ?",
                            (cutoff, 0 if beyond is None else beyond[0], _PRUNE_BATCH),
                        )
                    ]
                    marks = ",".join("?" * len(ids))
                    conn.execute(f"DELETE FROM actions WHERE alert_id IN ({marks})", ids)
                    conn.execute(f"DELETE FROM alerts WHERE id IN ({marks})", ids)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            deleted += len(ids)
            if len(ids) < _PRUNE_BATCH:
                return deleted

    def close(self) -> None:
        with self._lock:
            self._connection.close()
