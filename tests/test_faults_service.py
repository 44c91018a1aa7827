"""Faults of ``model-exporter serve``, with real processes (issue 5).

kill -9 during a burst of feedback, SIGTERM with requests in flight, a read-only or full data
directory, a corrupt or foreign outcome store at start, and a worker killed under ``--workers 2``.
Each test runs the real CLI on a free 127.0.0.1 port with its data directory in ``tmp_path``.

Read-only and full need root tricks that work as root (chmod does not stop root): ``chattr +i``
makes every write to the store fail with EPERM, also through the files SQLite already has open,
and a small tmpfs mounted as the data directory fills up for real (ENOSPC).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from exporter.cli import DATA_DIR_LOCK, MALLOC_ARENAS
from exporter.outcomes import (
    APPLICATION_ID,
    DATABASE_NAME,
    PendingPrediction,
    SqliteOutcomeStore,
)
from exporter.server import FLUSH_INTERVAL_SECONDS, SWEEP_EVERY_TICKS
from tests.binaries import REQUIRE_ENV, free_port, require_binary
from tests.service_fixtures import ROOT, live_server, stop, write_setup
from tests.stack_helpers import ModelAPI, exporter_argv, metric_samples, poll

pytestmark = pytest.mark.slow

MODEL = {"model": "toy", "version": "v1"}
#: Bound on every wait for a server to change state (exit, restart, recover).
WAIT_SECONDS = 30.0
#: Predictions whose feedback is sent concurrently, and by how many clients.
BURST_PREDICTIONS = 300
BURST_CLIENTS = 4
#: Slow requests in flight when SIGTERM arrives, and how long the model sleeps in each.
IN_FLIGHT = 4
SLOW_SECONDS = 1.5
#: SQLite's default page size, for damaging one page of a store.
PAGE_SIZE = 4096


def total(text: str, name: str, **labels: str) -> float:
    """``name`` summed over all its label sets (0 when absent)."""
    return sum(metric_samples(text, name, **labels).values())


def store_errors(client: httpx.Client) -> float:
    return total(client.get("/metrics").text, "model_outcome_store_errors_total", **MODEL)


def instances(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"miles": float((start + i) % 20), "zone": "north"} for i in range(count)]


def send_feedback(client: httpx.Client, outcomes: list[tuple[str, float]]) -> dict[str, str]:
    """``/feedback`` for every (prediction_id, actual), in lists of 50; status by id."""
    statuses = {}
    for start in range(0, len(outcomes), 50):
        chunk = [{"prediction_id": p, "actual": a} for p, a in outcomes[start : start + 50]]
        response = client.post("/feedback", json=chunk)
        assert response.status_code == 200, response.text
        statuses.update({r["prediction_id"]: r["status"] for r in response.json()["results"]})
    return statuses


def skip_or_fail(reason: str) -> None:
    """A fault this machine cannot inject: skip, or fail where CI requires every test to run."""
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(reason)
    pytest.skip(reason)


# -- 1. SIGKILL during a burst of feedback -------------------------------------------------------


def feedback_until_killed(
    url: str, outcomes: list[tuple[str, float]], kill: Callable[[], None], after: int
) -> dict[str, str]:
    """Send every outcome from BURST_CLIENTS threads (one request each); call ``kill`` once
    ``after`` have been acknowledged. Returns the acknowledged ids with their status."""
    acknowledged: dict[str, str] = {}
    refused: list[str] = []
    lock = threading.Lock()

    def client_loop(share: list[tuple[str, float]]) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for prediction_id, actual in share:
                try:
                    answer = client.post(
                        "/feedback", json={"prediction_id": prediction_id, "actual": actual}
                    )
                except httpx.TransportError:  # the server is gone: this one is unacknowledged
                    continue
                with lock:
                    if answer.status_code == 200:
                        acknowledged[prediction_id] = answer.json()["status"]
                    else:
                        refused.append(answer.text)

    threads = [
        threading.Thread(target=client_loop, args=(outcomes[i::BURST_CLIENTS],))
        for i in range(BURST_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    poll(lambda: len(acknowledged) >= after, timeout=WAIT_SECONDS, interval=0.005)
    kill()
    for thread in threads:
        thread.join(timeout=WAIT_SECONDS)
    assert not refused, refused[:3]
    return dict(acknowledged)


def test_sigkill_during_a_feedback_burst_loses_no_acknowledged_outcome(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    with live_server(config, data) as (url, process):
        with httpx.Client(base_url=url, timeout=10) as client:
            predictions = ModelAPI(client, url).predict(instances(BURST_PREDICTIONS))
        outcomes = [(p["prediction_id"], p["prediction"] + 1.0) for p in predictions]
        acknowledged = feedback_until_killed(
            url, outcomes, lambda: os.kill(process.pid, signal.SIGKILL), BURST_PREDICTIONS // 3
        )
        assert process.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL
    assert set(acknowledged.values()) == {"recorded"}
    assert len(acknowledged) < BURST_PREDICTIONS, "the kill came after the burst"
    with live_server(config, data) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as client:
            again = send_feedback(client, outcomes)
            text = client.get("/metrics").text
    assert {again[pid] for pid in acknowledged} == {"duplicate"}  # kept, and counted once only
    assert set(again.values()) <= {"recorded", "duplicate"}  # never unknown: nothing lost
    # Counters start from zero in the new process: only what it recorded itself is in them
    # (Prometheus' rate() treats the drop as a counter reset).
    recorded_now = sum(status == "recorded" for status in again.values())
    assert total(text, "model_absolute_error_count", **MODEL) == recorded_now
    assert total(text, "model_outcomes_pending", **MODEL) == 0


# -- 2. SIGTERM drains the requests in flight ---------------------------------------------------


def slow_predictions(url: str, markers: Path) -> tuple[list[threading.Thread], list[Any]]:
    """IN_FLIGHT slow /predict calls in threads; each creates a file in ``markers`` on arrival
    at the model. Returns the threads and the list their responses (or errors) land in."""
    answers: list[Any] = []

    def call(i: int) -> None:
        features = {"miles": float(i), "_sleep": SLOW_SECONDS, "_started": str(markers / str(i))}
        try:
            answers.append(httpx.post(f"{url}/predict", json={"features": features}, timeout=30))
        except httpx.HTTPError as exc:
            answers.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    return threads, answers


def wal_bytes(database: Path) -> int:
    wal = database.with_name(database.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_answers_requests_in_flight_and_closes_the_store(
    tmp_path: Path, workers: int
) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    markers = tmp_path / "started"
    markers.mkdir()
    with live_server(config, data, workers=workers) as (url, process):
        threads, answers = slow_predictions(url, markers)
        arrived = poll(lambda: len(list(markers.iterdir())) == IN_FLIGHT, timeout=WAIT_SECONDS)
        assert arrived, "the slow requests never reached the model"
        process.send_signal(signal.SIGTERM)  # the supervisor only, as docker or kubelet do
        for thread in threads:
            thread.join(timeout=WAIT_SECONDS)
        # uvicorn re-raises SIGTERM after a graceful shutdown of a single process (exit status
        # 143 in a shell); the --workers supervisor returns 0 after its workers have stopped.
        assert process.wait(timeout=WAIT_SECONDS) in (0, -signal.SIGTERM)
    assert [getattr(a, "status_code", a) for a in answers] == [200] * IN_FLIGHT
    ids = [a.json()["prediction_id"] for a in answers]
    database = data / DATABASE_NAME
    assert wal_bytes(database) == 0  # checkpointed on close: the file alone has everything
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute(
            f"SELECT id, actual FROM predictions WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
    assert sorted(rows) == sorted((pid, None) for pid in ids)  # pending, waiting for feedback


# -- 3. a read-only or full data directory ------------------------------------------------------


@contextlib.contextmanager
def immutable(paths: list[Path]) -> Iterator[None]:
    """``chattr +i``: writes fail with EPERM even for root and through already open files."""
    chattr = require_binary("chattr")
    done = subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True, text=True)
    try:
        if done.returncode != 0:
            skip_or_fail(f"chattr +i is not supported here: {done.stderr.strip()}")
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, paths)], capture_output=True, check=False)


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted on ``directory`` (root only), unmounted on exit."""
    directory.mkdir()
    done = subprocess.run(
        [require_binary("mount"), "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs to fill up: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([require_binary("umount"), "-l", str(directory)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until its file system is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 65536)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return
    finally:
        os.close(fd)


def predict_until_store_fails(client: httpx.Client, limit: int = 2000) -> None:
    """Predictions, every one answered 200, until a failed store write is counted."""
    api = ModelAPI(client, str(client.base_url).rstrip("/"))
    for made in range(0, limit, 50):
        assert len(api.predict(instances(50, made))) == 50
        if store_errors(client) > 0:
            return
    raise AssertionError(f"{limit} predictions and no store failure counted")


def readiness(client: httpx.Client) -> tuple[int, str]:
    answer = client.get("/readyz")
    return answer.status_code, answer.json().get("reason", "")


def recovers(client: httpx.Client) -> None:
    """Once writable again: ready again, and a new prediction's feedback is recorded."""
    api = ModelAPI(client, str(client.base_url).rstrip("/"))
    prediction = api.predict(instances(1))[0]
    status = poll(lambda: readiness(client)[0] == 200, timeout=WAIT_SECONDS)
    assert status, readiness(client)
    api.feedback([(prediction["prediction_id"], prediction["prediction"])])


def store_files(data: Path) -> list[Path]:
    """The data directory and the store's files in it that exist now."""
    database = data / DATABASE_NAME
    files = [data, database, database.with_name(DATABASE_NAME + "-wal")]
    return [path for path in files if path.exists()]


def test_read_only_data_directory_serves_predictions_and_fails_readiness(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    with live_server(config, data) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as client:
            api = ModelAPI(client, url)
            before = api.predict(instances(2))
            assert readiness(client)[0] == 200
            with immutable(store_files(data)):
                predict_until_store_fails(client)
                status, reason = readiness(client)
                assert status == 503 and "not writable" in reason, reason
                late = client.post(
                    "/feedback", json={"prediction_id": before[0]["prediction_id"], "actual": 1}
                )
                assert late.status_code == 503 and "retry later" in late.text, late.text
            recovers(client)
            api.feedback([(before[0]["prediction_id"], 1.0)])  # the retry is recorded


def test_readiness_recovers_without_traffic(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    with live_server(config, data) as (url, _), httpx.Client(base_url=url, timeout=10) as client:
        ModelAPI(client, url).predict(instances(1))
        with immutable(store_files(data)):
            predict_until_store_fails(client)
        ready = poll(lambda: readiness(client)[0] == 200, timeout=3)
        assert ready, readiness(client)


def test_full_data_directory_serves_predictions_and_fails_readiness(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    with small_tmpfs(data, "2m"), live_server(config, data) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as client:
            assert readiness(client)[0] == 200
            filler = data / "filler"
            fill(filler)
            predict_until_store_fails(client)
            status, reason = readiness(client)
            assert status == 503 and reason, reason
            filler.unlink()
            recovers(client)


# -- 4. a corrupt or foreign store file at start ------------------------------------------------


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(16384))


def another_application(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO customers (name) VALUES ('ada')")
        db.commit()


def own_store(path: Path, rows: int = 2000) -> None:
    store = SqliteOutcomeStore(path)
    store.remember_many([PendingPrediction(f"p{i}", 1.0, "v1", 5.0, None) for i in range(rows)])
    store.close()


def newer_schema(path: Path) -> None:
    own_store(path, rows=1)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        db.execute("PRAGMA user_version=99")
        db.commit()


def truncated(path: Path) -> None:
    """A store cut in half, as an interrupted copy leaves it."""
    own_store(path)
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


def overwritten_page(path: Path) -> None:
    """A store with one b-tree page in the middle overwritten, as a bad disk block leaves it."""
    own_store(path)
    pages = path.stat().st_size // PAGE_SIZE
    with path.open("r+b") as file:
        file.seek(pages // 2 * PAGE_SIZE)
        file.write(bytes(range(256)) * (PAGE_SIZE // 256))


def start_or_exit(config: Path, data: Path) -> tuple[int | None, str]:
    """Run `model-exporter serve`: (exit code, stderr) once it exits, or (None, stderr) when it
    starts serving instead (then it is stopped)."""
    port = free_port()
    errors = data.parent / f"serve-{port}.err"
    with errors.open("wb") as err:
        process = subprocess.Popen(
            exporter_argv(config, port, data), stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
        )  # fmt: skip

    def exited_or_serving() -> bool:
        if process.poll() is not None:
            return True
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        return False

    try:
        assert poll(exited_or_serving, timeout=60, interval=0.05), "neither exited nor started"
        return process.poll(), errors.read_text()
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (random_bytes, "file is not a database"),
        (another_application, "belongs to another application"),
        (newer_schema, "newer exporter (schema 99)"),
        (truncated, "malformed"),
        (overwritten_page, "corrupt"),
    ],
)  # fmt: skip
def test_unusable_store_file_stops_the_start_and_is_left_untouched(
    tmp_path: Path, make: Callable[[Path], None], reason: str
) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    data.mkdir()
    database = data / DATABASE_NAME
    make(database)
    digest = hashlib.sha256(database.read_bytes()).hexdigest()
    code, stderr = start_or_exit(config, data)
    assert code == 2, f"exit code {code}: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert str(database) in lines[0] and reason in lines[0], lines[0]
    assert hashlib.sha256(database.read_bytes()).hexdigest() == digest
    # No -wal, -shm or journal left beside it (only serve's lock, which holds its pid).
    assert sorted(set(os.listdir(data)) - {DATA_DIR_LOCK}) == [DATABASE_NAME]


# -- 5. a worker killed under --workers 2 -------------------------------------------------------


def worker_pids(supervisor: int) -> set[int]:
    """uvicorn's worker processes: children of ``supervisor`` started by multiprocessing spawn
    (not its resource tracker), found through /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(parent) == supervisor and state != "Z" and b"spawn_main" in cmdline:
                found.add(int(stat.parent.name))
    return found


def predictions_in(files: list[Path]) -> float:
    """``model_predictions_total`` held in some workers' multiprocess counter files (a worker
    that has counted nothing yet has none)."""
    existing = [str(f) for f in files if f.exists()]
    families = MultiProcessCollector.merge(existing, accumulate=True)
    return sum(s.value for f in families for s in f.samples if s.name == "model_predictions_total")


def bins_per_feature(files: list[Path]) -> dict[str, float]:
    """``model_feature_bin_total`` summed over the bins of each feature, in some workers'
    multiprocess counter files."""
    existing = [str(f) for f in files if f.exists()]
    totals: dict[str, float] = {}
    for family in MultiProcessCollector.merge(existing, accumulate=True):
        for s in family.samples:
            if s.name == "model_feature_bin_total":
                feature = s.labels["feature"]
                totals[feature] = totals.get(feature, 0.0) + s.value
    return totals


def predict_concurrently(
    url: str,
    count: int,
    acked_at: list[float] | None = None,
    made: list[tuple[str, float]] | None = None,
) -> int:
    """``count`` single predictions from 4 threads with their own connections; how many got 200
    (connections spread over the workers). ``acked_at`` gathers when each answer arrived, and
    ``made`` each (prediction id, prediction)."""
    answered: list[int] = []

    def client_loop(n: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(n):
                answer = client.post("/predict", json={"features": instances(1, i)[0]})
                answered.append(answer.status_code)
                if acked_at is not None:
                    acked_at.append(time.monotonic())
                if made is not None and answer.status_code == 200:
                    body = answer.json()
                    made.append((body["prediction_id"], body["prediction"]))

    threads = [threading.Thread(target=client_loop, args=(count // 4,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_SECONDS)
    assert set(answered) == {200}
    return len(answered)


def test_a_killed_worker_is_replaced_and_totals_stay_exact(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    multiproc = data / "prometheus-multiproc"
    with live_server(config, data, workers=2) as (url, process):

        def both_workers() -> set[int]:
            pids = worker_pids(process.pid)
            return pids if len(pids) == 2 else set()

        workers = poll(both_workers, timeout=WAIT_SECONDS)
        assert len(workers) == 2, worker_pids(process.pid)
        # Spawned workers inherit serve's cap on malloc arenas (or the operator's own value).
        arenas = f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', MALLOC_ARENAS)}"
        for pid in workers:
            assert arenas.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        acked_at: list[float] = []
        made: list[tuple[str, float]] = []
        answered = predict_concurrently(url, 160, acked_at, made)
        # Then a pause longer than a flush interval and a short burst just before the kill: the
        # first burst's bins must all have reached the files, the last one's may be lost.
        time.sleep(FLUSH_INTERVAL_SECONDS + 0.5)
        answered += predict_concurrently(url, 40, acked_at, made)
        victim = max(workers, key=lambda pid: predictions_in([multiproc / f"counter_{pid}.db"]))
        victims_share = predictions_in([multiproc / f"counter_{victim}.db"])
        assert victims_share > 0
        # The kill lands in a burst of feedback for those predictions, on both workers.
        kills: list[float] = []

        def kill() -> None:
            os.kill(victim, signal.SIGKILL)
            kills.append(time.monotonic())

        outcomes = [(pid, prediction + 1.0) for pid, prediction in made]
        acknowledged = feedback_until_killed(url, outcomes, kill, len(outcomes) // 3)
        [killed_at] = kills
        replaced = poll(lambda: len(worker_pids(process.pid) - workers) == 1, timeout=WAIT_SECONDS)
        assert replaced, "uvicorn did not start a new worker"
        # A stale window file of the dead worker: when a sweep deletes it, the sweep has run.
        probe = multiproc / "windows" / f"windows-sweepprobe-v0-{victim}.npz"
        probe.write_bytes(b"")
        os.utime(probe, (0, 0))
        answered += predict_concurrently(url, 200)
        with httpx.Client(base_url=url, timeout=10) as client:
            again = send_feedback(client, outcomes)  # every outcome again, as a client retries
        swept = poll(lambda: not probe.exists(),
                     timeout=SWEEP_EVERY_TICKS * FLUSH_INTERVAL_SECONDS + WAIT_SECONDS)  # fmt: skip
        assert swept, "no worker swept the dead worker's files"
        text = httpx.get(f"{url}/metrics", timeout=10).text
    # The sweep keeps a dead worker's counter and histogram files: its share stays in the totals.
    assert predictions_in([multiproc / f"counter_{victim}.db"]) == victims_share
    # What SIGKILL may lose, as docs/reliability.md states it: a worker writes its predictions,
    # invalid inputs and latencies to its counter file as it answers, and holds back only the
    # per-bin counts of at most its last flush interval. So the victim's bins of each feature
    # miss no more predictions than were answered (by either worker) in the last interval
    # before the kill, with half a second for a flush delayed by the load.
    recent = sum(1 for t in acked_at if t >= killed_at - FLUSH_INTERVAL_SECONDS - 0.5)
    victims_bins = bins_per_feature([multiproc / f"counter_{victim}.db"])
    assert victims_bins, "the victim flushed no bin counts at all"
    for feature, counted in victims_bins.items():
        assert victims_share - recent <= counted <= victims_share, (feature, counted, recent)
    # Feedback: every acknowledged outcome was kept (the retry finds it a duplicate), none was
    # lost, and none was counted twice. An outcome the victim committed but had not counted yet
    # when it died is stored and never counted: the retry answers `duplicate`. That is at most
    # one per /feedback request the victim was handling at the kill (BURST_CLIENTS connections;
    # its counting takes microseconds after the commit); counted exactly once otherwise.
    assert {again[pid] for pid in acknowledged} == {"duplicate"}
    assert set(again.values()) <= {"recorded", "duplicate"}
    with contextlib.closing(
        sqlite3.connect(f"file:{data / DATABASE_NAME}?mode=ro", uri=True)
    ) as db:
        [(stored,)] = db.execute("SELECT COUNT(*) FROM predictions WHERE actual IS NOT NULL")
    counted = total(text, "model_absolute_error_count", **MODEL)
    assert stored == len(outcomes)
    assert 0 <= stored - counted <= BURST_CLIENTS, (stored, counted)
    # Every surviving worker's counts reach the totals: bins of each feature = predictions - lost.
    lost = {f: victims_share - binned for f, binned in victims_bins.items()}
    for feature, lost_here in lost.items():
        assert total(text, "model_feature_bin_total", **MODEL, feature=feature) == pytest.approx(
            answered - lost_here
        ), feature
    assert total(text, "model_predictions_total", **MODEL) == answered
    assert total(text, "model_prediction_duration_seconds_count", **MODEL) == answered
