"""Outcome stores and performance metrics, against numpy and scipy on the same pairs."""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from scipy import stats as sps

from exporter import ModelMonitor
from exporter import performance as perf
from exporter._pending import encode_many
from exporter.group_commit import GroupCommitter
from exporter.outcomes import (
    MemoryOutcomeStore,
    PendingBatch,
    PendingPrediction,
    Resolution,
    SqliteOutcomeStore,
    StoreError,
    encode,
)


def test_regression_metrics_match_numpy_and_scipy() -> None:
    rng = np.random.default_rng(0)
    predicted = rng.gamma(3, 4, 500)
    actual = predicted + rng.normal(0, 3, 500)
    totals = np.sum([perf.regression_row(p, a) for p, a in zip(predicted, actual, strict=True)],
                    axis=0)  # fmt: skip
    metrics = perf.regression_metrics(totals)
    errors = np.abs(predicted - actual)
    assert metrics["mae"] == pytest.approx(errors.mean())
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert metrics["correlation"] == pytest.approx(sps.pearsonr(actual, predicted).statistic)
    for w in (2, 5, 10):
        assert metrics[f"within_{w}"] == pytest.approx(np.mean(errors <= w))


def test_regression_metrics_edge_cases() -> None:
    empty = perf.regression_metrics(np.zeros(len(perf.REGRESSION_FIELDS)))
    assert all(value is None for value in empty.values())
    constant = np.sum([perf.regression_row(5.0, a) for a in (1.0, 2.0, 3.0)], axis=0)
    assert perf.regression_metrics(constant)["correlation"] is None  # constant prediction
    # Valid numbers whose squares overflow: a scrape once raised OverflowError from ``** 2``.
    huge = np.sum([perf.regression_row(p, a) for p, a in ((1e200, 2e200), (3e200, 1e200))], axis=0)
    metrics = perf.regression_metrics(huge)
    assert metrics["correlation"] is None
    assert metrics["mae"] == pytest.approx(1.5e200)


def test_classification_metrics_match_a_direct_count() -> None:
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c", "__other__"]
    actual = rng.integers(0, 3, 400)
    predicted = np.where(rng.random(400) < 0.7, actual, rng.integers(0, 3, 400))
    confidence = rng.uniform(0.4, 1.0, 400)
    width = perf.class_slots(len(classes))
    totals = np.sum(
        [perf.classification_row(width, int(p), int(a), float(c))
         for p, a, c in zip(predicted, actual, confidence, strict=True)], axis=0,
    )  # fmt: skip
    overall, per_class = perf.classification_metrics(totals, classes)
    assert overall["accuracy"] == pytest.approx(np.mean(predicted == actual))
    f1s = []
    for k, name in enumerate(classes[:3]):
        tp = np.sum((predicted == k) & (actual == k))
        precision, recall = tp / np.sum(predicted == k), tp / np.sum(actual == k)
        f1 = 2 * precision * recall / (precision + recall)
        f1s.append(f1)
        assert per_class[name]["precision"] == pytest.approx(precision)
        assert per_class[name]["recall"] == pytest.approx(recall)
        assert per_class[name]["f1"] == pytest.approx(f1)
    assert "__other__" not in per_class  # never predicted nor actual
    assert overall["macro_f1"] == pytest.approx(np.mean(f1s))
    gap = confidence.mean() - np.mean(predicted == actual)
    assert overall["calibration_gap"] == pytest.approx(gap)


def _pending(pid: str, at: float, prediction: object = 1.0) -> PendingPrediction:
    return PendingPrediction(pid, at, "v1", prediction, 0.9)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "memory":
        yield MemoryOutcomeStore(ttl_seconds=100, max_pending=5)
    else:
        sqlite = SqliteOutcomeStore(tmp_path / "o.sqlite3", ttl_seconds=100, max_pending=5)
        yield sqlite
        sqlite.close()


def test_resolution_rules(store) -> None:
    store.remember(_pending("a", 0.0))
    assert store.pending_count() == 1
    assert store.resolve("a", 2.0, 10).resolution is Resolution.RECORDED
    assert store.resolve("a", 2, 11).resolution is Resolution.DUPLICATE  # 2 == 2.0
    assert store.resolve("a", 3.0, 12).resolution is Resolution.CONFLICT
    assert store.resolve("zz", 1.0, 12).resolution is Resolution.UNKNOWN
    assert store.pending_count() == 0


def test_ttl_and_cap_expire_and_are_counted(store) -> None:
    for i in range(8):
        store.remember(_pending(f"p{i}", float(i)))
    store.remember(_pending("late", 50.0))
    assert store.expire(60.0) == 4  # cap of 5: the 4 oldest unresolved go
    assert store.pending_count() == 5
    assert store.resolve("p7", 1.0, 60).resolution is Resolution.RECORDED
    # TTL cutoff at 20: p4..p6 expire unresolved; p7 goes too but it had its outcome.
    assert store.expire(120.0) == 3
    assert store.resolve("late", 1.0, 151).resolution is Resolution.UNKNOWN  # past TTL


def test_resolved_records_count_toward_the_cap(store) -> None:
    # Otherwise the SQLite file would keep a whole TTL of resolved traffic.
    for i in range(5):
        store.remember(_pending(f"p{i}", float(i)))
    for i in range(3):
        assert store.resolve(f"p{i}", 1.0, 10).resolution is Resolution.RECORDED
    for i in range(3):
        store.remember(_pending(f"q{i}", 20.0 + i))
    assert store.expire(30.0) == 0  # the three oldest had their outcome: none expired
    assert store.pending_count() == 5
    assert store.resolve("p0", 1.0, 31).resolution is Resolution.UNKNOWN
    assert store.resolve("q0", 1.0, 31).resolution is Resolution.RECORDED
    store.remember(_pending("r", 40.0))
    assert store.expire(41.0) == 1  # the oldest left, p3, was still pending
    assert store.pending_count() == 4  # p4, q1, q2, r


def test_sqlite_expiry_below_the_cap_does_not_count_rows(tmp_path: Path) -> None:
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3", max_pending=1000)
    store.remember_many([_pending(f"x{i}", 1.0) for i in range(10)])
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert store.expire(2.0) == 0
    assert not any("COUNT" in s for s in statements), statements
    store.close()


def test_sqlite_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    first = SqliteOutcomeStore(path)
    first.remember_many([_pending(f"x{i}", 1.0, "cat") for i in range(3)])
    first.close()
    second = SqliteOutcomeStore(path)
    assert second.pending_count() == 3
    resolved = second.resolve("x1", "cat", 2.0)
    assert resolved.resolution is Resolution.RECORDED and resolved.pending is not None
    assert resolved.pending.prediction == "cat"
    second.close()


def test_try_remember_many_never_waits_for_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    store = SqliteOutcomeStore(path, deferred_checkpoints=True)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker in the middle of a write
    try:
        assert store.try_remember_many([_pending("busy", 1.0)]) is False
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.pending_count() == 0  # nothing half-written
    assert store.try_remember_many([_pending("free", 1.0), _pending("too", 1.0)]) is True
    assert store.pending_count() == 2
    store.close()


def test_deferred_checkpoints_leave_the_wal_to_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    store = SqliteOutcomeStore(path, deferred_checkpoints=True)
    for batch in range(100):  # ~7 MB of WAL: far past SQLite's automatic checkpoint at 4 MB
        store.try_remember_many([_pending(f"b{batch}-{i}", 1.0, "x" * 1000) for i in range(50)])
    # No commit copied its pages into the database file: it still holds the empty schema.
    assert path.stat().st_size < 64 * 1024
    store.checkpoint()
    assert path.stat().st_size > 5 * 1024 * 1024
    store.close()
    reopened = SqliteOutcomeStore(path)
    assert reopened.pending_count() == 5000
    reopened.close()


def test_a_large_wal_is_truncated_by_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    wal = tmp_path / "o.sqlite3-wal"
    store = SqliteOutcomeStore(path, deferred_checkpoints=True)
    store.wal_truncate_bytes = 1024 * 1024
    for batch in range(40):  # ~3 MB of WAL
        store.try_remember_many([_pending(f"b{batch}-{i}", 1.0, "x" * 1000) for i in range(50)])
    assert wal.stat().st_size > store.wal_truncate_bytes
    store.checkpoint()
    assert wal.stat().st_size == 0  # a PASSIVE checkpoint alone leaves the file as it was
    assert store.pending_count() == 2000
    store.close()


def test_wal_stays_bounded_under_steady_writes_from_several_connections(tmp_path: Path) -> None:
    # The soak's pattern: the loop's connection, a thread's and a reader, never all idle at
    # once, so a PASSIVE checkpoint never catches up and SQLite never restarts the WAL (it
    # reached 400 MB in 4 s here without the TRUNCATE checkpoint).
    wal = tmp_path / "o.sqlite3-wal"
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3", deferred_checkpoints=True)
    store.wal_truncate_bytes = 1024 * 1024
    stop = threading.Event()

    def write(prefix: str, nowait: bool) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            batch = [_pending(f"{prefix}{i}-{j}", 1.0, "x" * 200) for j in range(20)]
            if nowait:
                store.try_remember_many(batch)
            else:
                store.remember_many(batch)

    def read() -> None:
        while not stop.is_set():
            store.resolve("nobody", 1.0, 2.0)

    threads = [
        threading.Thread(target=write, args=("a", False)),
        threading.Thread(target=write, args=("b", True)),
        threading.Thread(target=read),
    ]
    for thread in threads:
        thread.start()
    largest = 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            store.checkpoint()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    store.close()
    assert largest < 64 * 1024 * 1024


def test_group_commit_falls_back_to_a_thread_while_the_lock_is_held(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    store = SqliteOutcomeStore(path, deferred_checkpoints=True)
    errors: list[BaseException] = []
    committer = GroupCommitter(store, on_error=errors.append, on_success=lambda: None)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    async def scenario() -> None:
        other.execute("BEGIN IMMEDIATE")
        submitted = asyncio.ensure_future(committer.submit(_pending("waits", 1.0)))
        await asyncio.sleep(0.2)
        assert not submitted.done()  # waiting in a thread for the lock; the loop runs on
        other.execute("ROLLBACK")
        await asyncio.wait_for(submitted, timeout=10)
        await committer.close()

    try:
        asyncio.run(scenario())
    finally:
        other.close()
    assert errors == [] and store.pending_count() == 1
    store.close()


def test_sqlite_store_refuses_foreign_and_corrupt_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="another application"):
        SqliteOutcomeStore(foreign)
    with sqlite3.connect(foreign) as db:  # untouched
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable outcome store"):
        SqliteOutcomeStore(corrupt)
    assert corrupt.read_bytes().startswith(b"this is not")


def test_monitor_record_outcome_statuses() -> None:
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", task="regression", registry=registry)
    pid = monitor.observe({}, 10.0)
    assert monitor.record_outcome(pid, "ten") is Resolution.INVALID
    assert monitor.record_outcome(pid, float("nan")) is Resolution.INVALID
    assert monitor.record_outcome("nope", 1.0) is Resolution.UNKNOWN
    assert monitor.record_outcome(pid, 12.5) is Resolution.RECORDED
    assert monitor.record_outcome(pid, 12.5) is Resolution.DUPLICATE
    base = {"model": "m", "version": "unversioned"}
    assert registry.get_sample_value("model_absolute_error_sum", base) == pytest.approx(2.5)
    assert registry.get_sample_value("model_error_sum_total", {**base, "sign": "negative"}) == 2.5
    invalid = {**base, "feature": "__actual__"}
    assert registry.get_sample_value("model_input_invalid_total", {**invalid,
                                     "reason": "wrong_type"}) == 1  # fmt: skip
    assert registry.get_sample_value("model_input_invalid_total", {**invalid, "reason": "nan"}) == 1


def test_a_failing_store_never_breaks_observe(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3")
    monitor = ModelMonitor("m", task="regression", registry=registry, outcomes=store)
    store.close()  # every later write fails
    assert isinstance(monitor.observe({}, 1.0), str)
    assert not monitor.store_healthy
    base = {"model": "m", "version": "unversioned"}
    # The failed write, and the scrape's expiry attempt, are both counted.
    assert (registry.get_sample_value("model_outcome_store_errors_total", base) or 0) >= 1
    served = {**base, "predicted": "", "confidence_bucket": "none"}
    assert registry.get_sample_value("model_predictions_total", served) == 1


# -- a batch remembered in bulk gives what remembering its predictions one by one gives ----------


def _state(store: MemoryOutcomeStore | SqliteOutcomeStore, ids: list[str], now: float) -> tuple:
    """Everything observable of a store: what it expires, then each id's resolution and what it
    hands back, and its pending count."""
    expired = store.expire(now)
    resolved = [store.resolve(pid, 1.0, now) for pid in ids]
    return expired, [(r.resolution, r.pending) for r in resolved], store.pending_count()


def _open(kind: str, path: Path, max_pending: int) -> MemoryOutcomeStore | SqliteOutcomeStore:
    if kind == "memory":
        return MemoryOutcomeStore(ttl_seconds=100, max_pending=max_pending)
    return SqliteOutcomeStore(path, ttl_seconds=100, max_pending=max_pending)


BULK_CASES = {
    "fresh ids within the cap": (10, [], [f"b{i}" for i in range(4)]),
    "the batch pushes out older records": (5, ["a0", "a1", "a2"], [f"b{i}" for i in range(4)]),
    "the batch alone is past the cap": (3, ["a0", "a1"], [f"b{i}" for i in range(7)]),
    "ids already stored": (5, ["a0", "a1", "a2"], ["b0", "a1", "b1", "a0"]),
    "an id twice in the batch": (4, ["a0"], ["b0", "b1", "b0", "b2", "b3"]),
    "a cap of zero": (0, [], ["b0", "b1"]),
}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("as_batch", [True, False], ids=["PendingBatch", "list"])
@pytest.mark.parametrize("case", list(BULK_CASES))
def test_remember_many_equals_remembering_one_by_one(
    tmp_path: Path, kind: str, as_batch: bool, case: str
) -> None:
    max_pending, before, batch_ids = BULK_CASES[case]
    predictions: list[object] = [f"c{i % 3}" if i % 2 else float(i) for i in range(len(batch_ids))]
    confidences = [None if i % 3 == 0 else 0.25 * (i % 4) for i in range(len(batch_ids))]
    batch = PendingBatch(batch_ids, 5.0, "v2", predictions, confidences)
    one = _open(kind, tmp_path / "one.sqlite3", max_pending)
    many = _open(kind, tmp_path / "many.sqlite3", max_pending)
    for store in (one, many):
        for i, pid in enumerate(before):
            store.remember(_pending(pid, float(i)))
        if before:  # a resolved record among them
            store.resolve(before[0], 1.0, 3.0)
    for pending in batch:
        one.remember(pending)
    many.remember_many(batch if as_batch else list(batch))
    ids = sorted({*before, *batch_ids})
    for now in (50.0, 104.0):  # the cap's expiry, then the TTL's (a0..a2 at 0-2, the batch at 5)
        assert _state(one, ids, now) == _state(many, ids, now)
    one.close()
    many.close()


def test_a_batch_is_one_transaction_of_one_insert(tmp_path: Path) -> None:
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    ids = [f"b{i}" for i in range(1000)]
    store.remember_many(PendingBatch(ids, 1.0, "v1", [3.0, 2.5] * 500, [None, 0.5] * 500))
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert len(begins) == 1 and statements[-1] == "COMMIT"
    assert len([s for s in statements if s.startswith("INSERT")]) == 1000  # one executemany
    resolved = store.resolve("b1", 2.5, 2.0)
    assert resolved.pending == PendingPrediction("b1", 1.0, "v1", 2.5, 0.5)
    assert store.resolve("b0", 3, 2.0).pending == PendingPrediction("b0", 1.0, "v1", 3.0, None)
    store.close()


def test_a_batch_encodes_as_one_prediction_does() -> None:
    values: list[object] = ["cat", "cat", 'quo"te', 3.0, -0.0, 2.5, 1e300, 1e-7, 7, 10**20]
    assert list(encode_many(values)) == [encode(v) for v in values]  # type: ignore[arg-type]
    for bad in (math.nan, math.inf, True, None):
        with pytest.raises((TypeError, ValueError)):
            list(encode_many([bad]))


def test_a_failed_batch_write_is_counted_once(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3")
    monitor = ModelMonitor("m", task="regression", registry=registry, outcomes=store)
    store.close()  # every later write fails
    ids = monitor.observe_batch({"x": [1.0] * 50}, [1.0] * 50)
    assert len(ids) == 50 and not monitor.store_healthy
    base = {"model": "m", "version": "unversioned"}
    assert registry.get_sample_value("model_outcome_store_errors_total", base) == 1
    assert registry.get_sample_value("model_monitor_internal_errors_total", base) == 0
    served = {**base, "predicted": "", "confidence_bucket": "none"}
    assert registry.get_sample_value("model_predictions_total", served) == 50


def test_observe_batch_keep_false_stores_nothing() -> None:
    store = MemoryOutcomeStore()
    monitor = ModelMonitor("m", registry=CollectorRegistry(), outcomes=store)
    ids = monitor.observe_batch({"x": [1.0, 2.0]}, ["cat", "dog"], [0.9, 0.1], keep=False)
    assert len(set(ids)) == 2 and store.pending_count() == 0
    assert monitor.record_outcome(ids[0], "cat") is Resolution.UNKNOWN
    kept = monitor.observe_batch({"x": [1.0, 2.0]}, ["cat", "dog"], [0.9, 0.1])
    assert store.pending_count() == 2
    assert monitor.record_outcome(kept[0], "cat") is Resolution.RECORDED
