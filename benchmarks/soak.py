"""Soak: ``/predict`` + ``/feedback`` under load for minutes, memory over time, label cardinality.

Each configuration (1 and 2 uvicorn workers, monitoring on and off) serves the fare example
(``examples/fare/monitor.yml``, SQLite outcome store) as a real ``model-exporter serve``
subprocess on 127.0.0.1. A load client in its own process keeps a fixed number of connections
busy for ``--minutes`` (a closed loop: each connection sends its next request as soon as the
previous one is answered, so the rate is the highest the server sustains); on every connection
each second prediction is followed by the ``/feedback`` of its ground truth. Meanwhile the
resident memory (``VmRSS`` and its heap part ``RssAnon``) and CPU time of every server process (the
supervisor, each worker, multiprocessing's resource tracker) are read from ``/proc`` every few
seconds, and the CPU the rest of the machine used from ``/proc/stat``.

"Off" is the same command with the monitor's ``observe``, ``pending`` and ``record_outcome`` and
the store's ``remember`` replaced by no-ops in every process: nothing is counted or stored, and
``/feedback`` answers 404 (no such prediction) without reading the store.

The client is Python (asyncio, raw HTTP/1.1 keep-alive), not wrk: wrk's Lua callbacks do not say
which connection or request a response belongs to, so it cannot time ``/predict`` and
``/feedback`` separately in one mixed load; this client does, and reports its own CPU use.

A last, in-process run throws 10,000 distinct class names and 10,000 distinct category values at a
:class:`ModelMonitor` and counts the series of each metric family before and after.

Run: ``.venv/bin/python benchmarks/soak.py`` (``--minutes 2`` per configuration by default,
``--quick`` for a 15-second check). Results go to stdout as Markdown and to
``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_service import free_port, trips

from exporter.server import Service

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "examples" / "fare" / "monitor.yml"
RESULTS = HERE / "results" / "soak.json"
CLI = Path(sys.executable).parent / "model-exporter"
#: (workers, monitoring), in the order they run.
CONFIGURATIONS = ((1, False), (1, True), (2, False), (2, True))
#: A process whose resident memory grows slower than this in the second half of the run has
#: levelled off: Python's allocator keeps arenas, so a flat process still moves by a few hundred
#: KiB; a leak proportional to traffic grows as fast in the second half as in the first.
LEVELLED_MIB_PER_MINUTE = 1.0
#: On each connection, every this many predictions one gets its ground truth.
FEEDBACK_EVERY = 2
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
#: Categories the cardinality run's profile keeps by name (the rest are ``__other__``).
CARDINALITY_TOP_K = 20
#: Rounds of new names in the cardinality run: the first fills the label sets and the outcome
#: store to their caps, the next ones must change nothing.
CARDINALITY_ROUNDS = 3


# -- the server without monitoring ------------------------------------------------------------


def disable_monitoring(service: Service) -> Service:
    """Turn the monitor of a built service into no-ops; the model and HTTP handling stay."""
    from exporter.outcomes import Resolution

    ids = itertools.count()

    def observe(*args: Any, **kwargs: Any) -> str:
        return f"off-{next(ids)}"

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    def unknown(*args: Any, **kwargs: Any) -> Resolution:
        return Resolution.UNKNOWN

    service.monitor.observe = observe  # type: ignore[method-assign]
    service.monitor.pending = nothing  # type: ignore[method-assign]
    service.monitor.record_outcome = unknown  # type: ignore[method-assign]
    service.store.remember = nothing  # type: ignore[method-assign]
    return service


def _build_without_monitoring() -> None:
    """Make exporter.server build every Service with monitoring disabled (in this process): the
    command's (it calls ``server.build_service``) and a worker's (its factory calls the name
    in ``server._environment``)."""
    from exporter import server
    from exporter.server import _environment

    build = server.build_service

    def build_service(*args: Any, **kwargs: Any) -> Service:
        return disable_monitoring(build(*args, **kwargs))

    server.build_service = build_service
    _environment.build_service = build_service  # type: ignore[attr-defined]


def off_app_from_environment() -> Any:
    """``uvicorn --factory`` entry of each worker of a multi-worker server without monitoring."""
    from exporter import server

    _build_without_monitoring()
    return server.app_from_environment()


#: The factory through which ``model-exporter serve --workers N`` starts each worker.
WORKER_FACTORY = "exporter.server:app_from_environment"


def serve_without_monitoring(workers: int, port: int, data_dir: str, config: str) -> int:
    """``model-exporter serve`` itself, with the monitor of every process disabled.

    One worker is built in this process; several workers are started by uvicorn from the
    factory string of the config handed to ``cli._run_workers``, which is swapped for this
    module's factory, so everything else (configuration, outcome store, multiprocess files, the
    listening socket) is the command's own. A soak run checks that the result counted nothing.
    """
    import uvicorn

    from exporter import cli

    _build_without_monitoring()
    run_workers = cli._run_workers

    def run_workers_without_monitoring(config: uvicorn.Config) -> None:
        if config.app != WORKER_FACTORY:
            raise RuntimeError(f"serve starts workers from {config.app!r}, not {WORKER_FACTORY}")
        # The workers are spawned with this process's sys.path, which holds this folder.
        config.app = "soak:off_app_from_environment"
        run_workers(config)

    cli._run_workers = run_workers_without_monitoring
    return cli.main(serve_arguments(workers, port, Path(data_dir), Path(config)))


# -- server processes -------------------------------------------------------------------------


def serve_arguments(workers: int, port: int, data_dir: Path, config: Path) -> list[str]:
    """The arguments of ``model-exporter serve`` for the fare example."""
    return [
        "serve",
        f"--config={config}",
        f"--workers={workers}",
        f"--port={port}",
        f"--data-dir={data_dir}",
        "--quiet",
    ]


#: The server without monitoring is started with ``python -c``: a worker spawned by uvicorn
#: re-runs its parent's main *file* before it answers the supervisor's first health check (5 s),
#: and re-running this script (numpy, httpx, FastAPI) takes longer than that on a busy machine.
OFF_SERVER = (
    f"import sys; sys.path.insert(0, {str(HERE)!r}); import soak; "
    "sys.exit(soak.serve_without_monitoring(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]))"
)


def server_command(
    workers: int, monitoring: bool, port: int, data_dir: Path, config: Path
) -> list[str]:
    if monitoring:
        return [str(CLI), *serve_arguments(workers, port, data_dir, config)]
    return [sys.executable, "-c", OFF_SERVER, str(workers), str(port), str(data_dir), str(config)]


def config_with_cap(max_pending: int, folder: Path) -> Path:
    """A copy of the fare example's config whose outcome store keeps at most ``max_pending``
    records, so that a run of a few minutes reaches the cap and spends the rest expiring."""
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    # The copy lives elsewhere, and relative paths are relative to the config file.
    config["reference"] = str(CONFIG.parent / config["reference"])
    config["outcomes"]["max_pending"] = max_pending
    path = folder / f"monitor-max-pending-{max_pending}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def disk_mib(data_dir: Path) -> tuple[float, float]:
    """The size of the data directory and of its SQLite write-ahead logs (``*-wal``), MiB."""
    total = wal = 0
    for path in data_dir.rglob("*"):
        # The multiprocess folder's files come and go (a file per worker and metric kind).
        with contextlib.suppress(FileNotFoundError):
            if path.is_file():
                size = path.stat().st_size
                total += size
                wal += size if path.name.endswith("-wal") else 0
    return total / 2**20, wal / 2**20


@contextlib.contextmanager
def running(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in its own process group, stopped with all its children in any case."""
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
            return


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} did not answer /healthz within {timeout:.0f} s")


def scrape(url: str) -> dict[str, float]:
    """Series in one /metrics scrape (what Prometheus stores per scrape), the predictions it has
    counted (all workers') and the predictions waiting for their ground truth."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    totals = {"series": 0.0, "predictions_counted": 0.0, "outcomes_pending": 0.0}
    for family in text_string_to_metric_families(text):
        totals["series"] += len(family.samples)
        for sample in family.samples:
            if sample.name == "model_predictions_total":
                totals["predictions_counted"] += sample.value
            elif sample.name == "model_outcomes_pending":
                totals["outcomes_pending"] += sample.value
    return totals


# -- process memory ---------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from the parent pids in /proc/<pid>/stat."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The command name (field 2) may hold spaces; the fields after ")" do not.
                after = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(after[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def resident_mib(pid: int) -> tuple[float, float] | None:
    """``VmRSS`` and its anonymous part ``RssAnon`` (the heap, where a leak shows; the rest is
    mapped files: libraries, prometheus_client's multiprocess files, SQLite's shared memory) of a
    process in MiB, None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(re.findall(r"^(VmRSS|RssAnon):\s+(\d+) kB", status, re.MULTILINE))
    if len(fields) < 2:
        return None
    return int(fields["VmRSS"]) / 1024, int(fields["RssAnon"]) / 1024


def cpu_seconds(pid: int) -> float | None:
    try:
        after = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(after[11]) + int(after[12])) / TICKS_PER_SECOND
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idling and waiting for I/O, since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    # guest and guest_nice (fields 9 and 10) are already counted in user and nice.
    return (sum(fields[:8]) - idle) / TICKS_PER_SECOND


def role(pid: int, root: int) -> str:
    """``server`` (the process started), ``worker``, ``resource tracker`` or ``child``."""
    if pid == root:
        return "server"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if "resource_tracker" in command:
        return "resource tracker"
    return "worker" if "multiprocessing.spawn" in command else "child"


@dataclass
class MemoryTrace:
    """RSS samples of every process of one server, and the size of its data directory, from the
    start of the load."""

    root: int
    data_dir: Path
    roles: dict[int, str] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    rss: dict[int, list[float | None]] = field(default_factory=dict)
    anon: dict[int, list[float | None]] = field(default_factory=dict)
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_end: dict[int, float] = field(default_factory=dict)
    disk: list[float] = field(default_factory=list)
    wal: list[float] = field(default_factory=list)

    def sample(self, elapsed: float) -> None:
        pids = process_tree(self.root)
        for pid in pids:
            if pid not in self.roles:
                self.roles[pid] = role(pid, self.root)
                self.rss[pid] = [None] * len(self.times)
                self.anon[pid] = [None] * len(self.times)
                self.cpu_start[pid] = cpu_seconds(pid) or 0.0
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self.cpu_end[pid] = cpu
        self.times.append(elapsed)
        disk, wal = disk_mib(self.data_dir)
        self.disk.append(disk)
        self.wal.append(wal)
        for pid in self.rss:
            resident = resident_mib(pid) if pid in pids else None
            self.rss[pid].append(resident[0] if resident else None)
            self.anon[pid].append(resident[1] if resident else None)

    def summary(self, seconds: float) -> list[dict[str, Any]]:
        rows = []
        for pid, values in self.rss.items():
            points = [(t, v) for t, v in zip(self.times, values, strict=True) if v is not None]
            anon = [
                (t, v) for t, v in zip(self.times, self.anon[pid], strict=True) if v is not None
            ]
            if len(points) < 4:
                continue
            rows.append(
                {
                    "pid": pid,
                    "role": self.roles[pid],
                    "cpu_cores": (self.cpu_end.get(pid, 0.0) - self.cpu_start[pid]) / seconds,
                    **levelling(points),
                    "anon": levelling(anon),
                }
            )
        if any(r["role"] == "worker" for r in rows):  # uvicorn's supervisor of the workers
            for r in rows:
                r["role"] = "supervisor" if r["role"] == "server" else r["role"]
        order = {"server": 0, "supervisor": 0, "worker": 1, "child": 2, "resource tracker": 3}
        return sorted(rows, key=lambda r: (order.get(r["role"], 9), r["pid"]))


def levelling(points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Start, middle, end and max RSS, and the growth rate of each half (least squares)."""
    times = np.array([t for t, _ in points])
    values = np.array([v for _, v in points])
    middle_time = (times[0] + times[-1]) / 2
    first, second = times <= middle_time, times >= middle_time

    def slope(mask: np.ndarray) -> float:
        if mask.sum() < 2:
            return 0.0
        return float(np.polyfit(times[mask], values[mask], 1)[0]) * 60

    late = slope(second)
    return {
        "start_mib": float(values[0]),
        "middle_mib": float(values[np.argmin(abs(times - middle_time))]),
        "end_mib": float(values[-1]),
        "max_mib": float(values.max()),
        "first_half_mib_per_min": slope(first),
        "second_half_mib_per_min": late,
        "levelled_off": late <= LEVELLED_MIB_PER_MINUTE,
    }


# -- the load client (its own process) ---------------------------------------------------------


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Tally:
    """What the client saw, per kind of request (``predict`` or ``feedback``)."""

    started: float
    deadline: float
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"predict": [], "feedback": []}
    )
    statuses: dict[str, Counter[int]] = field(
        default_factory=lambda: {"predict": Counter(), "feedback": Counter()}
    )
    per_second: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0


class LoadConnection(asyncio.Protocol):
    """One keep-alive connection: a request, wait for its answer, the next request, until the
    deadline or ``requests`` answers (then it closes and sets ``recycled``)."""

    def __init__(
        self,
        tally: Tally,
        predicts: Sequence[bytes],
        offset: int,
        done: asyncio.Future[None],
        requests: int,
    ) -> None:
        self.tally = tally
        self.predicts = predicts
        self.next_body = offset
        self.done = done
        # Requests left before this connection is closed and replaced (see drive).
        self.requests_left = requests
        self.recycled = False
        self.buffer = b""
        self.kind = "predict"
        self.sent_at = 0.0
        self.answered = 0
        self.feedback: bytes | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send_next()

    def send_next(self) -> None:
        assert self.transport is not None
        if time.perf_counter() >= self.tally.deadline:
            self.transport.close()
            return
        # A feedback still owed is sent first, so every second prediction keeps its outcome.
        if self.requests_left <= 0 and self.feedback is None:
            self.recycled = True
            self.transport.close()
            return
        self.requests_left -= 1
        if self.feedback is not None:
            self.kind, request, self.feedback = "feedback", self.feedback, None
        else:
            self.kind = "predict"
            request = self.predicts[self.next_body % len(self.predicts)]
            self.next_body += 1
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        match = re.search(rb"\r\ncontent-length: *(\d+)", head)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + length:
            return
        now = time.perf_counter()
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        tally = self.tally
        status = int(head[9:12])
        tally.latencies[self.kind].append(now - self.sent_at)
        tally.statuses[self.kind][status] += 1
        tally.per_second[int(now - tally.started)] += 1
        if self.kind == "predict" and status == 200:
            self.answered += 1
            if self.answered % FEEDBACK_EVERY == 0:
                self.feedback = feedback_request(json.loads(body))
        self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.tally.deadline and not self.recycled:
            self.tally.connection_errors += 1
        if not self.done.done():
            self.done.set_result(None)


def feedback_request(answer: dict[str, Any]) -> bytes:
    # A ground truth near the prediction, as a real fare would be.
    actual = round(float(answer["prediction"]) * 1.05 + 0.5, 2)
    body = json.dumps({"prediction_id": answer["prediction_id"], "actual": actual})
    return http_request("/feedback", body.encode())


#: Requests per connection before the client replaces it, as a proxy in front of the service
#: would (nginx's ``keepalive_requests`` default). Connections that lived for the whole run were
#: all accepted by whichever worker woke first (asyncio accepts up to 100 per wake-up): in 3 of
#: 9 2-worker runs one worker served all 16 and the other sat idle, halving the rate. With
#: replaced connections both workers were busy in all 10 runs since (0.73 to 0.86 cores each).
REQUESTS_PER_CONNECTION = 1000


async def drive(host: str, port: int, seconds: float, connections: int) -> Tally:
    predicts = [
        http_request("/predict", json.dumps({"features": t}).encode()) for t in trips(2000, 1)
    ]
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    tally = Tally(started=started, deadline=started + seconds)

    async def keep_connected(k: int) -> None:
        offset = k * 97
        while time.perf_counter() < tally.deadline:
            done: asyncio.Future[None] = loop.create_future()
            _, connection = await loop.create_connection(
                functools.partial(
                    LoadConnection, tally, predicts, offset, done, REQUESTS_PER_CONNECTION
                ),
                host,
                port,
            )
            await done
            offset = connection.next_body
            if not connection.recycled:
                return  # the deadline, or the server closed it (counted as an error)

    # Every connection closes itself at the deadline, after its last answer; bounded anyway.
    await asyncio.wait(
        [asyncio.ensure_future(keep_connected(k)) for k in range(connections)],
        timeout=seconds + 30,
    )
    return tally


def load_report(tally: Tally, seconds: float, cpu: float) -> dict[str, Any]:
    report: dict[str, Any] = {
        "seconds": seconds,
        "client_cpu_cores": cpu / seconds,
        "connection_errors": tally.connection_errors,
    }
    for kind, latencies in tally.latencies.items():
        ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
        report[kind] = {
            "requests": len(latencies),
            "requests_per_second": len(latencies) / seconds,
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "statuses": {str(k): v for k, v in sorted(tally.statuses[kind].items())},
        }
    report["per_second"] = [tally.per_second.get(s, 0) for s in range(int(seconds))]
    return report


def run_client(url: str, seconds: float, connections: int, out: Path) -> None:
    """Body of the client process: drive the load, write the report to ``out``."""
    address = httpx.URL(url)
    cpu_before = sum(os.times()[:2])
    tally = asyncio.run(drive(address.host, address.port or 80, seconds, connections))
    cpu = sum(os.times()[:2]) - cpu_before
    out.write_text(json.dumps(load_report(tally, seconds, cpu)))


def client_command(url: str, seconds: float, connections: int, out: Path) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--client",
        url,
        "--seconds",
        str(seconds),
        "--connections",
        str(connections),
        "--out",
        str(out),
    ]


def soak(
    workers: int,
    monitoring: bool,
    seconds: float,
    connections: int,
    scratch: Path,
    interval: float,
    config: Path = CONFIG,
) -> dict[str, Any]:
    """One configuration: start the server, warm up, load it while sampling memory, stop it."""
    name = f"w{workers}-{'on' if monitoring else 'off'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = scratch / name
    with running(server_command(workers, monitoring, port, data_dir, config)) as server:
        wait_healthy(url, server)
        warm = scratch / f"{name}-warmup.json"
        warmup = min(5.0, seconds / 5)
        subprocess.run(
            client_command(url, warmup, connections, warm), check=True, timeout=warmup + 60
        )
        before = scrape(url)
        trace = MemoryTrace(server.pid, data_dir)
        out = scratch / f"{name}.json"
        started, busy_before = time.monotonic(), machine_busy_seconds()
        with running(client_command(url, seconds, connections, out)) as client:
            trace.sample(0.0)
            limit = started + seconds + 60
            while client.poll() is None and time.monotonic() < limit:
                time.sleep(max(0.0, interval - (time.monotonic() - started) % interval))
                trace.sample(time.monotonic() - started)
            if client.returncode != 0:
                raise RuntimeError(f"{name}: the load client failed ({client.returncode})")
        busy = (machine_busy_seconds() - busy_before) / (time.monotonic() - started)
        after = scrape(url)
    if not monitoring and after["predictions_counted"] > 0:
        raise RuntimeError(f"{name}: the server without monitoring counted predictions")
    load = json.loads(out.read_text())
    memory = trace.summary(seconds)
    server_cpu = sum(m["cpu_cores"] for m in memory)
    return {
        "name": name,
        "workers": workers,
        "monitoring": monitoring,
        "connections": connections,
        "load": load,
        "memory": memory,
        "server_cpu_cores": server_cpu,
        # What the rest of the machine (other work, this script's sampling) used meanwhile.
        "other_cpu_cores": max(0.0, busy - server_cpu - load["client_cpu_cores"]),
        "metrics": {"load_start": before, "load_end": after},
        "data_dir_mib": disk_mib(data_dir)[0],
        "data_dir_max_mib": max(trace.disk),
        "wal_max_mib": max(trace.wal),
        "samples": {
            "seconds": trace.times,
            "data_dir_mib": trace.disk,
            "wal_mib": trace.wal,
            "rss_mib": {f"{trace.roles[p]} {p}": v for p, v in trace.rss.items()},
            "anon_mib": {f"{trace.roles[p]} {p}": v for p, v in trace.anon.items()},
        },
    }


# -- label cardinality -------------------------------------------------------------------------


def cardinality_profile() -> Any:
    """A profile with an open-vocabulary category (a long tail), a closed one and 5 classes."""
    import pandas as pd

    from exporter.profile import MAX_KNOWN_CATEGORIES, ReferenceProfile

    rng = np.random.default_rng(0)
    # 20 common cities, then a tail longer than the profile keeps by name: the vocabulary is
    # open, so an unseen city is one more of the long tail and counts as __other__.
    tail = [f"rare-{i}" for i in range(MAX_KNOWN_CATEGORIES + 100)]
    common = rng.choice([f"city-{i:02d}" for i in range(20)], 20_000).tolist()
    rows = len(tail) + len(common)
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 20.0, rows),
            "city": [*common, *tail],
            # A closed vocabulary: anything else is an unknown category, a data-quality problem.
            "channel": rng.choice(["web", "app", "shop"], rows).tolist(),
            "label": rng.choice([f"class-{i}" for i in range(5)], rows).tolist(),
        }
    )
    return ReferenceProfile.from_frame(
        frame,
        numeric=["amount"],
        categorical=["city", "channel"],
        target="label",
        target_kind="categorical",
        top_k=CARDINALITY_TOP_K,
    )


def family_series(registry: Any) -> dict[str, int]:
    """Series per metric family in one rendering of the registry's text exposition."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(registry).decode()
    return {f.name: len(f.samples) for f in text_string_to_metric_families(text)}


def counts_by(registry: Any, family: str, labels: Sequence[str], **where: str) -> dict[str, float]:
    """A counter family's values summed by the value(s) of ``labels``, for samples matching
    ``where``."""
    totals: Counter[str] = Counter()
    for metric in registry.collect():
        if metric.name != family:
            continue
        for sample in metric.samples:
            values = sample.labels
            if sample.name.endswith("_total") and all(values.get(k) == v for k, v in where.items()):
                totals[" / ".join(values[label] for label in labels)] += sample.value
    return dict(totals)


def throw_distinct(monitor: Any, start: int, distinct: int) -> None:
    """``distinct`` predictions, each with a new class, city and channel; every second one gets
    a ground truth that is a new class too."""
    for i in range(start, start + distinct):
        features = {"amount": 30.0, "city": f"new-city-{i}", "channel": f"channel-{i}"}
        prediction_id = monitor.observe(features, f"new-class-{i}", 0.9)
        if i % 2 == 0:
            monitor.record_outcome(prediction_id, f"actual-class-{i}")


def cardinality(distinct: int) -> dict[str, Any]:
    """Rounds of ``distinct`` new names each; series counts and traced memory after each.

    The monitor's clock stands still, so no window slice is opened between rounds: what could
    grow is only what the names create."""
    import gc
    import tracemalloc

    import prometheus_client
    from prometheus_client import CollectorRegistry

    from exporter.monitor import ModelMonitor
    from exporter.profile import OTHER, OUTPUT

    # As model-exporter serve does: no _created series, a line per counter child nothing reads.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    monitor = ModelMonitor(
        "cardinality",
        task="classification",
        reference=cardinality_profile(),
        registry=registry,
        min_samples=10,
        clock=lambda: 1_700_000_000.0,
    )
    for i in range(100):  # ordinary traffic first, so every family has its usual series
        pid = monitor.observe({"amount": 30.0, "city": "city-01", "channel": "web"}, "class-1", 0.9)
        monitor.record_outcome(pid, f"class-{i % 5}")
    monitor.flush()
    before = family_series(registry)
    rounds, traced = [], []
    tracemalloc.start()
    try:
        for r in range(CARDINALITY_ROUNDS):
            throw_distinct(monitor, r * distinct, distinct)
            monitor.flush()
            rounds.append(family_series(registry))
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0] / 2**20)
    finally:
        tracemalloc.stop()
    predicted = counts_by(registry, "model_predictions", ["predicted"])
    city = counts_by(registry, "model_feature_bin", ["bin"], feature="city")
    output = counts_by(registry, "model_feature_bin", ["bin"], feature=OUTPUT)
    invalid = counts_by(registry, "model_input_invalid", ["reason"], feature="channel")
    pairs = counts_by(registry, "model_outcomes", ["predicted", "actual"])
    return {
        "distinct_per_round": distinct,
        "max_classes": monitor.max_classes,
        "top_k": CARDINALITY_TOP_K,
        "series_before": before,
        "series_after_round": rounds,
        "traced_mib_after_round": traced,
        "predicted_classes": len(predicted),
        "predicted_other": predicted.get(OTHER, 0.0),
        "predictions": sum(predicted.values()),
        "city_bins": len(city),
        "city_other": city.get(OTHER, 0.0),
        "output_bins": len(output),
        "output_other": output.get(OTHER, 0.0),
        "channel_unknown_category": invalid.get("unknown_category", 0.0),
        "outcome_pairs": len(pairs),
        "outcome_pairs_other": sum(v for k, v in pairs.items() if OTHER in k.split(" / ")),
        "outcomes": sum(pairs.values()),
    }


# -- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    memory = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    versions = {
        p: metadata.version(p) for p in ("numpy", "prometheus_client", "uvicorn", "fastapi")
    }
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory.group(1)) / 2**20, 1) if memory else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
    }


LOAD_COLUMNS = (
    "workers",
    "monitoring",
    "requests/s (predict + feedback)",
    "/predict p50",
    "/predict p99",
    "/feedback p50",
    "/feedback p99",
    "server CPU (cores)",
    "client CPU",
    "other CPU",
    "requests/s, first → last 20%",
)
MEMORY_COLUMNS = (
    "configuration",
    "process",
    "RSS start",
    "middle",
    "end",
    "max",
    "growth, 1st half",
    "growth, 2nd half",
    "levelled off",
    "RssAnon end",
    "RssAnon growth, 2nd half",
)
SERVICE_COLUMNS = (
    "configuration",
    "/metrics series, load start",
    "load end",
    "predictions counted",
    "pending outcomes",
    "statuses /predict",
    "statuses /feedback",
    "data dir, end",
    "max",
    "WAL max",
)


def table_head(columns: Sequence[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{count:,} x {status}" for status, count in counts.items())


def worker_cpu(run: dict[str, Any]) -> str:
    """Each worker's share, so that one idle worker shows: `` (0.81 + 0.83)``."""
    shares = [f"{m['cpu_cores']:.2f}" for m in run["memory"] if m["role"] == "worker"]
    return f" ({' + '.join(shares)})" if len(shares) > 1 else ""


def markdown(runs: list[dict[str, Any]], card: dict[str, Any]) -> str:
    lines = [*table_head(LOAD_COLUMNS)]
    for run in runs:
        load, p, f = run["load"], run["load"]["predict"], run["load"]["feedback"]
        fifth = max(1, len(load["per_second"]) // 5)
        early = sum(load["per_second"][:fifth]) / fifth
        late = sum(load["per_second"][-fifth:]) / fifth
        lines.append(
            f"| {run['workers']} | {'on' if run['monitoring'] else 'off'} "
            f"| {p['requests_per_second'] + f['requests_per_second']:,.0f} "
            f"({p['requests_per_second']:,.0f} + {f['requests_per_second']:,.0f}) "
            f"| {p['p50_ms']:.1f} ms | {p['p99_ms']:.1f} ms | {f['p50_ms']:.1f} ms "
            f"| {f['p99_ms']:.1f} ms | {run['server_cpu_cores']:.2f}{worker_cpu(run)} "
            f"| {load['client_cpu_cores']:.2f} | {run['other_cpu_cores']:.2f} "
            f"| {early:,.0f} → {late:,.0f} |"
        )
    lines += ["", *table_head(MEMORY_COLUMNS)]
    for run in runs:
        for m in run["memory"]:
            lines.append(
                f"| {run['name']} | {m['role']} | {m['start_mib']:.1f} MiB | "
                f"{m['middle_mib']:.1f} | {m['end_mib']:.1f} | {m['max_mib']:.1f} | "
                f"{m['first_half_mib_per_min']:+.2f} MiB/min | "
                f"{m['second_half_mib_per_min']:+.2f} MiB/min | "
                f"{'yes' if m['levelled_off'] else 'NO'} | {m['anon']['end_mib']:.1f} MiB | "
                f"{m['anon']['second_half_mib_per_min']:+.2f} MiB/min |"
            )
    lines += ["", *table_head(SERVICE_COLUMNS)]
    for run in runs:
        load, start, end = run["load"], run["metrics"]["load_start"], run["metrics"]["load_end"]
        lines.append(
            f"| {run['name']} | {start['series']:.0f} | {end['series']:.0f} | "
            f"{end['predictions_counted']:,.0f} | {end['outcomes_pending']:,.0f} | "
            f"{statuses(load['predict']['statuses'])} | "
            f"{statuses(load['feedback']['statuses'])} | {run['data_dir_mib']:.1f} MiB | "
            f"{run['data_dir_max_mib']:.1f} MiB | {run['wal_max_mib']:.1f} MiB |"
        )
    lines += ["", cardinality_markdown(card)]
    return "\n".join(lines)


def cardinality_markdown(card: dict[str, Any]) -> str:
    n = card["distinct_per_round"]
    rounds = card["series_after_round"]
    columns = [
        "metric family",
        "series before",
        *(f"after {n * (r + 1):,} new names" for r in range(len(rounds))),
    ]
    lines = table_head(columns)
    for family in sorted(set(rounds[-1]) | set(card["series_before"])):
        counts = [card["series_before"].get(family, 0), *(r.get(family, 0) for r in rounds)]
        if any(counts):
            lines.append(f"| `{family}` | " + " | ".join(str(c) for c in counts) + " |")
    traced = ", ".join(f"{mib:.2f}" for mib in card["traced_mib_after_round"])
    lines += [
        "",
        f"- `model_predictions_total`: {card['predicted_classes']} `predicted` values "
        f"(max_classes {card['max_classes']} + `__other__`); `__other__` counted "
        f"{card['predicted_other']:,.0f} of {card['predictions']:,.0f} predictions.",
        f'- `model_feature_bin_total{{feature="city"}}`: {card["city_bins"]} bins (top-K '
        f"{card['top_k']} + `__other__`); `__other__` counted {card['city_other']:,.0f}.",
        f'- `model_feature_bin_total{{feature="__prediction__"}}`: {card["output_bins"]} '
        f"bins; `__other__` counted {card['output_other']:,.0f}.",
        f"- closed vocabulary `channel`: {card['channel_unknown_category']:,.0f} values counted "
        'in `model_input_invalid_total{reason="unknown_category"}`, one series.',
        f"- `model_outcomes_total`: {card['outcome_pairs']} (predicted, actual) pairs for "
        f"{card['outcomes']:,.0f} outcomes, {card['outcome_pairs_other']:,.0f} of them with "
        "`__other__` on a side.",
        f"- memory traced by tracemalloc after each round: {traced} MiB.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="load per configuration")
    parser.add_argument("--quick", action="store_true", help="15 s per configuration")
    parser.add_argument("--connections", type=int, default=16, help="client connections")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between memory samples (default 2, 0.5 with --quick)",
    )
    parser.add_argument(
        "--distinct",
        type=int,
        default=10_000,
        help="distinct class names and category values for the cardinality run",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="run only these configurations, e.g. 'w1-on' or 'w1-on,w2-on' (default: all four)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=None,
        help="cap the outcome store at this many records (the example's default is 1,000,000, "
        "which 2 workers reached after about 8 minutes at 2,100 predictions/s), to see memory "
        "and disk once it expires",
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run_client(args.client, args.seconds, args.connections, Path(args.out))
        return
    seconds = 15.0 if args.quick else args.minutes * 60
    interval = args.interval or (0.5 if args.quick else 2.0)
    chosen = list(CONFIGURATIONS)
    wanted: list[str] = []
    if args.only:
        names = {f"w{w}-{'on' if m else 'off'}": (w, m) for w, m in CONFIGURATIONS}
        wanted = [name.strip() for name in args.only.split(",")]
        unknown = [name for name in wanted if name not in names]
        if unknown:
            parser.error(f"--only: unknown configuration {unknown[0]!r}; choose from "
                         f"{', '.join(names)}")  # fmt: skip
        chosen = [names[name] for name in wanted]
    if args.max_pending is not None and args.max_pending < 1:
        parser.error("--max-pending: must be at least 1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        config = CONFIG
        if args.max_pending is not None:
            config = config_with_cap(args.max_pending, Path(tmp))
        for workers, monitoring in chosen:
            print(
                f"{workers} worker(s), monitoring {'on' if monitoring else 'off'}: {seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            runs.append(
                soak(workers, monitoring, seconds, args.connections, Path(tmp), interval, config)
            )
    card = cardinality(args.distinct)
    results = {
        "machine": machine(),
        "seconds": seconds,
        "connections": args.connections,
        "interval": interval,
        "max_pending": args.max_pending,
        "runs": runs,
        "cardinality": card,
    }
    # A partial run keeps the full run's file: results/soak-w1-on.json and the like.
    stem = "soak" if not args.only else f"soak-{'_'.join(wanted)}"
    stem += "" if args.max_pending is None else f"-max-pending-{args.max_pending}"
    target = RESULTS.with_name(f"{stem}.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1))
    print(
        f"{seconds:.0f} s per configuration, {args.connections} connections, one feedback per "
        f"{FEEDBACK_EVERY} predictions, memory sampled every {interval:g} s; "
        + ("" if args.max_pending is None else f"outcome store capped at {args.max_pending:,}; ")
        + f"{results['machine']}"
    )
    print()
    print(markdown(runs, card))


if __name__ == "__main__":
    main()
