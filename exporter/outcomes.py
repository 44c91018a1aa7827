"""Predictions waiting for their ground truth: a bounded in-memory store and a SQLite store.

Both keep, per prediction id, when it was made, by which version, what was predicted and with what
confidence, until its outcome arrives, its TTL passes or the size cap pushes it out (the last two
are counted as expired). After an outcome arrives the record stays until its TTL, so the same
outcome sent twice is recognised as a duplicate and a different one as a conflict.

The SQLite store survives ``kill -9`` and restarts (WAL: every committed insert is in the file),
and several worker processes can share it. A service writes it from its event loop without
waiting (:meth:`SqliteOutcomeStore.try_remember_many`) and checkpoints it from a background thread
(:meth:`SqliteOutcomeStore.checkpoint`), so neither a commit nor a checkpoint's ``fsync`` ever
stalls the event loop; a WAL past 64 MiB is truncated there, the writers waiting for it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from exporter._pending import PendingBatch as PendingBatch  # re-exported: the stores' types
from exporter._pending import PendingPrediction as PendingPrediction
from exporter._pending import Row, ids_of, rows_of, sql_rows
from exporter._pending import decode as decode
from exporter._pending import encode as encode
from exporter.errors import StoreError as StoreError  # re-exported: raised here

#: File name of the database inside the data directory.
DATABASE_NAME = "outcomes.sqlite3"
#: ``PRAGMA application_id`` marking our files, so a foreign SQLite file is never overwritten.
APPLICATION_ID = 0x4D4F4E31  # "MON1"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 5.0
#: Size the WAL file is cut back to after a checkpoint has copied it into the database (bytes).
WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: A WAL past this size gets a TRUNCATE checkpoint (see :meth:`SqliteOutcomeStore.checkpoint`).
WAL_TRUNCATE_BYTES = WAL_SIZE_LIMIT
#: How long that checkpoint waits for the write lock and for readers to finish (seconds).
TRUNCATE_WAIT_SECONDS = 1.0


class Resolution(Enum):
    RECORDED = "recorded"  # first outcome for a known prediction: count it
    DUPLICATE = "duplicate"  # the same outcome again: accept, do not count twice
    CONFLICT = "conflict"  # a different outcome for a prediction that already has one
    UNKNOWN = "unknown"  # never seen, or expired
    INVALID = "invalid"  # the actual has the wrong type for the task (nothing stored)
    UNAVAILABLE = "unavailable"  # the store could not be read or written


@dataclass(frozen=True)
class Resolved:
    resolution: Resolution
    pending: PendingPrediction | None = None


class OutcomeStore(Protocol):
    def remember(self, pending: PendingPrediction) -> None: ...
    def remember_many(self, pendings: Sequence[PendingPrediction]) -> None: ...
    def try_remember_many(self, pendings: Sequence[PendingPrediction]) -> bool: ...
    def checkpoint(self) -> None: ...
    def resolve(self, prediction_id: str, actual: Any, now: float) -> Resolved: ...
    def expire(self, now: float) -> int: ...
    def pending_count(self) -> int: ...
    def check_writable(self) -> None: ...
    def close(self) -> None: ...


class MemoryOutcomeStore:
    """Bounded in-memory store: the library's default (lost when the process ends).

    The cap counts every record kept, pending or resolved; the oldest go first. The default of
    10,000 costs about 3 MB; raise it (or use the SQLite store) when ground truth lags more than
    10,000 predictions behind.
    """

    def __init__(self, *, ttl_seconds: float = 7 * 86400, max_pending: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        self._lock = threading.Lock()
        # Insertion order is creation order, so the oldest entries are at the front. A record is
        # a plain tuple (see Row), not the PendingPrediction it was given: a batch's records are
        # then made by zip in C, and resolve() makes the one object it hands back.
        self._records: OrderedDict[str, Row] = OrderedDict()
        self._pending = 0
        self._overflow = 0

    def remember(self, pending: PendingPrediction) -> None:
        row = (pending.created_at, pending.version, pending.prediction, pending.confidence, None)
        with self._lock:
            self._put(pending.prediction_id, row)

    def _put(self, key: str, row: Row) -> None:
        records = self._records
        previous = records.pop(key, None)
        if previous is not None and previous[4] is None:
            self._pending -= 1
        records[key] = row
        self._pending += 1
        while len(records) > self.max_pending:
            _, old = records.popitem(last=False)
            if old[4] is None:
                self._pending -= 1
                self._overflow += 1

    def remember_many(self, pendings: Sequence[PendingPrediction]) -> None:
        """What :meth:`remember` of each in turn leaves, by one dict update: the oldest records,
        older ones first and then the batch's own first rows, give way to the cap (counted as
        expired when pending), and only the batch's last ``max_pending`` rows are built."""
        ids = ids_of(pendings)
        with self._lock:
            records = self._records
            if len(set(ids)) != len(ids) or not records.keys().isdisjoint(ids):
                # A replaced record moves to the end, and a row can push out one it replaces
                # later: rare enough (observe_batch's ids are new) to be done one by one.
                for key, row in zip(ids, rows_of(pendings), strict=True):
                    self._put(key, row)
                return
            kept = min(len(ids), max(self.max_pending, 0))
            pushed_out = len(ids) - kept  # each was pending when the next rows pushed it out
            excess = len(records) + kept - self.max_pending
            if excess >= len(records):
                self._overflow += self._pending
                self._pending = 0
                records.clear()
            for _ in range(max(excess, 0) if records else 0):
                _, old = records.popitem(last=False)
                if old[4] is None:
                    self._pending -= 1
                    self._overflow += 1
            tail = pendings[pushed_out:] if pushed_out else pendings
            records.update(zip(ids[pushed_out:], rows_of(tail), strict=True))
            self._pending += kept
            self._overflow += pushed_out

    def try_remember_many(self, pendings: Sequence[PendingPrediction]) -> bool:
        self.remember_many(pendings)
        return True

    def checkpoint(self) -> None:
        return None

    def resolve(self, prediction_id: str, actual: Any, now: float) -> Resolved:
        encoded = encode(actual)
        with self._lock:
            record = self._records.get(prediction_id)
            if record is None or now - record[0] > self.ttl_seconds:
                return Resolved(Resolution.UNKNOWN)
            created_at, version, prediction, confidence, known = record
            pending = PendingPrediction(prediction_id, created_at, version, prediction, confidence)
            if known is None:
                self._records[prediction_id] = (created_at, version, prediction, confidence,
                                                encoded)  # fmt: skip
                self._pending -= 1
                return Resolved(Resolution.RECORDED, pending)
            if known == encoded:
                return Resolved(Resolution.DUPLICATE, pending)
            return Resolved(Resolution.CONFLICT, pending)

    def expire(self, now: float) -> int:
        with self._lock:
            expired, self._overflow = self._overflow, 0
            while self._records:
                key, row = next(iter(self._records.items()))
                if now - row[0] <= self.ttl_seconds:
                    break
                del self._records[key]
                if row[4] is None:
                    self._pending -= 1
                    expired += 1
            return expired

    def pending_count(self) -> int:
        return self._pending

    def check_writable(self) -> None:
        return None

    def close(self) -> None:
        return None


class SqliteOutcomeStore:
    """Pending predictions in one SQLite file (WAL), shared by the workers of a service.

    With ``deferred_checkpoints`` no commit runs a checkpoint (``wal_autocheckpoint=0``): the
    owner calls :meth:`checkpoint` periodically, off the request path. Without it SQLite
    checkpoints inside whichever commit crosses 1,000 WAL pages, as usual.
    """

    def __init__(
        self,
        path: Path,
        *,
        ttl_seconds: float = 7 * 86400,
        max_pending: int = 1_000_000,
        deferred_checkpoints: bool = False,
    ) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        self.deferred_checkpoints = deferred_checkpoints
        self.wal_truncate_bytes = WAL_TRUNCATE_BYTES
        self._lock = threading.Lock()
        # Opened on first use: the event loop's connection (never waits for a lock) and the
        # background checkpointer's.
        self._nowait: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._side_lock = threading.Lock()
        # The scrape's pending count, on its own connection (see pending_count).
        self._counter: sqlite3.Connection | None = None
        self._count_lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False,
                isolation_level=None,
            )  # fmt: skip
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the outcome store: {exc}") from None
        try:
            self._prepare()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(
                f"{path}: not a usable outcome store ({exc}); move it away or point "
                "--data-dir elsewhere. It was not modified."
            ) from None

    def _prepare(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
            raise sqlite3.DatabaseError("the file belongs to another application")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer exporter (schema {version})")
        if app_id == APPLICATION_ID:
            # A damaged page would otherwise surface only at some later read or write
            # (0.4 s for a store of a million predictions).
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"the file is corrupt: {' '.join(problem.split())}")
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise sqlite3.DatabaseError("the file system does not support WAL journaling")
        # NORMAL in WAL mode: a committed row survives a crash of the process (kill -9); only
        # an OS crash or power cut can lose the last commits, at a fraction of FULL's fsyncs.
        # A commit is then a write() into the WAL and no fsync; fsyncs happen at checkpoints.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        if self.deferred_checkpoints:
            db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                """CREATE TABLE IF NOT EXISTS predictions (
                    id TEXT PRIMARY KEY,
                    created_at REAL NOT NULL,
                    version TEXT NOT NULL,
                    prediction TEXT NOT NULL,
                    confidence REAL,
                    actual TEXT
                )"""
            )
            db.execute("CREATE INDEX IF NOT EXISTS by_created ON predictions (created_at)")
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @classmethod
    def in_directory(cls, data_dir: Path, **kwargs: Any) -> SqliteOutcomeStore:
        return cls(data_dir / DATABASE_NAME, **kwargs)

    def remember(self, pending: PendingPrediction) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, NULL)",
                (pending.prediction_id, pending.created_at, pending.version,
                 encode(pending.prediction), pending.confidence),
            )  # fmt: skip

    def remember_many(self, pendings: Sequence[PendingPrediction]) -> None:
        """One transaction for a whole batch: one commit instead of one per row."""
        with self._lock:
            _insert_batch(self._db, pendings)

    def try_remember_many(self, pendings: Sequence[PendingPrediction]) -> bool:
        """Write a batch now, or return False at once when another connection holds the write
        lock (nothing written); other failures raise.

        For an event loop: the call never sleeps on a lock, and with ``synchronous=NORMAL`` in
        WAL mode a commit does no ``fsync``, so it costs tens of microseconds. It uses a
        connection of its own, so the caller must be a single thread (the loop).
        """
        if self._nowait is None:
            try:
                self._nowait = self._connect(timeout=0.0)
                if self.deferred_checkpoints:
                    self._nowait.execute("PRAGMA wal_autocheckpoint=0")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open the outcome store: {exc}") from None
        try:
            _insert_batch(self._nowait, pendings)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False
            raise
        return True

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database from a second connection (PASSIVE: it
        waits for no reader or writer, so requests never wait for its ``fsync``), and cut a WAL
        past :attr:`wal_truncate_bytes` back to nothing (TRUNCATE: writers wait for it)."""
        with self._side_lock:
            if self._checkpointer is None:
                self._checkpointer = self._connect(timeout=0.0)
            db = self._checkpointer
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            # Under steady writes from several connections a PASSIVE checkpoint never catches
            # up with the last commit, and SQLite restarts the WAL only after one has: the file
            # then grows as long as the traffic lasts (167 MiB in 23 minutes of the soak). So a
            # large WAL gets a TRUNCATE checkpoint, which holds the write lock for a moment
            # (the event loop's writes fall back to a thread meanwhile, they never block it).
            # It holds this process's lock as well: SQLite's busy handler only polls, and
            # against two writers and a reader that never all pause at once it lost every
            # poll for seconds on a loaded host (the WAL reached 139 MB in a 2 s test). Only
            # the event loop's connection then competes, and a checkpoint that still finds it
            # busy is retried at the next call.
            if self._wal_bytes() > self.wal_truncate_bytes:
                with self._lock:
                    db.execute(f"PRAGMA busy_timeout={int(TRUNCATE_WAIT_SECONDS * 1000)}")
                    try:
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    finally:
                        db.execute("PRAGMA busy_timeout=0")

    def _wal_bytes(self) -> int:
        try:
            return self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            return 0

    def _connect(self, *, timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(
            str(self.path), timeout=timeout, check_same_thread=False, isolation_level=None
        )
        # Per-connection settings, as in _prepare: without NORMAL this connection would fsync
        # every commit (FULL, SQLite's default), 0.5 to 8 ms each here.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return db

    def resolve(self, prediction_id: str, actual: Any, now: float) -> Resolved:
        encoded = encode(actual)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT created_at, version, prediction, confidence, actual "
                    "FROM predictions WHERE id = ?",
                    (prediction_id,),
                ).fetchone()
                if row is None or now - row[0] > self.ttl_seconds:
                    db.execute("COMMIT")
                    return Resolved(Resolution.UNKNOWN)
                pending = PendingPrediction(prediction_id, row[0], row[1], decode(row[2]),
                                            row[3])  # fmt: skip
                if row[4] is None:
                    db.execute("UPDATE predictions SET actual = ? WHERE id = ?",
                               (encoded, prediction_id))  # fmt: skip
                    db.execute("COMMIT")
                    return Resolved(Resolution.RECORDED, pending)
                db.execute("COMMIT")
                same = row[4] == encoded
                return Resolved(Resolution.DUPLICATE if same else Resolution.CONFLICT, pending)
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def expire(self, now: float) -> int:
        """Drop records past their TTL, then the oldest beyond the cap; returns how many
        unresolved predictions were dropped (the expired count).

        The cap counts every record, resolved ones too (kept only to tell a duplicate outcome
        from a conflicting one), as in :class:`MemoryOutcomeStore`: otherwise the file would hold
        a whole TTL of traffic. The row count is only taken when the rowid range says the cap
        may be passed, so below it this costs two index look-ups, not a scan.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cutoff = now - self.ttl_seconds
                expired = db.execute(
                    "DELETE FROM predictions WHERE created_at < ? AND actual IS NULL", (cutoff,)
                ).rowcount
                db.execute("DELETE FROM predictions WHERE created_at < ?", (cutoff,))
                # Two sub-queries: SQLite answers a lone min() or max() from the B-tree's edge,
                # but scans the whole table for both in one SELECT.
                low, high = db.execute(
                    "SELECT (SELECT min(rowid) FROM predictions), "
                    "(SELECT max(rowid) FROM predictions)"
                ).fetchone()
                if low is not None and high - low + 1 > self.max_pending:
                    total = db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
                    excess = total - self.max_pending
                    if excess > 0:
                        oldest = "SELECT rowid FROM predictions ORDER BY created_at LIMIT ?"
                        expired += db.execute(
                            f"SELECT COUNT(*) FROM predictions WHERE rowid IN ({oldest}) "
                            "AND actual IS NULL",
                            (excess,),
                        ).fetchone()[0]
                        db.execute(f"DELETE FROM predictions WHERE rowid IN ({oldest})", (excess,))
                db.execute("COMMIT")
                return int(expired)
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def pending_count(self) -> int:
        """Unresolved predictions, counted on a connection of its own: the count reads every
        row (about 0.1 s for a million), and in WAL mode a reader blocks no writer, so neither
        a request nor the expiry waits for a scrape."""
        with self._count_lock:
            if self._counter is None:
                self._counter = self._connect(timeout=BUSY_TIMEOUT_SECONDS)
            row = self._counter.execute("SELECT COUNT(*) FROM predictions WHERE actual IS NULL")
            return int(row.fetchone()[0])

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless a write succeeds now (read-only, disk full...).

        A real commit of one page (the header's schema version, rewritten unchanged) into the
        WAL: only a write finds a full disk, and /readyz must see the store recover with no
        traffic, since a replica that is not ready gets none.
        """
        if not os.access(self.path.parent, os.W_OK):
            raise StoreError(f"{self.path.parent}: the data directory is not writable")
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: the outcome store is not writable: {exc}") from None

    def close(self) -> None:
        """Close every connection; the last one out checkpoints the WAL into the database."""
        with self._side_lock:
            for side in (self._nowait, self._checkpointer):
                if side is not None:
                    side.close()
            self._nowait = self._checkpointer = None
        with self._count_lock:
            if self._counter is not None:
                self._counter.close()
            self._counter = None
        with self._lock:
            self._db.close()


def _insert_batch(db: sqlite3.Connection, pendings: Sequence[PendingPrediction]) -> None:
    # Encoded before the transaction: a value no store can keep (a bug of the caller) then
    # raises before BEGIN, and the write lock is held for the inserts alone.
    rows = list(sql_rows(pendings))
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, NULL)", rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock; retrying can succeed."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
