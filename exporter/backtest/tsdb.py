"""A Prometheus TSDB built from past scrapes, and queries over it, with the real binaries.

``promtool tsdb create-blocks-from openmetrics`` turns timestamped scrapes into blocks;
a Prometheus started on those blocks (no scrape jobs, no rules) answers range queries; and
``promtool tsdb create-blocks-from rules`` evaluates recording rules over the past against it,
level by level (:func:`exporter.backtest.rules.recording_levels`), restarting Prometheus after
each level so the next one reads the series just written.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from exporter.backtest.rules import RecordingRule, recording_levels, write_rule_file
from exporter.errors import ExporterError

#: Prometheus refuses a range query of more points than this per series.
MAX_POINTS_PER_QUERY = 11_000
START_TIMEOUT_SECONDS = 120.0
QUERY_TIMEOUT_SECONDS = 300.0
#: Retention long enough that Prometheus never deletes the past it was started on.
RETENTION = "100y"

SeriesKey = tuple[tuple[str, str], ...]
Series = dict[SeriesKey, dict[float, float]]


class BacktestToolError(ExporterError, RuntimeError):
    """A Prometheus tool is missing or failed; the message says which and why."""


@dataclass(frozen=True)
class Tools:
    prometheus: str
    promtool: str

    @classmethod
    def find(cls) -> Tools:
        found = {name: shutil.which(name) for name in ("prometheus", "promtool")}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise BacktestToolError(
                f"{' and '.join(missing)} not found on PATH: install the Debian package "
                "`prometheus` (or run `make tools` in a checkout)"
            )
        return cls(prometheus=str(found["prometheus"]), promtool=str(found["promtool"]))


def _run(argv: Sequence[str], what: str, timeout: float = 3600) -> None:
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BacktestToolError(f"{what}: no answer within {timeout:.0f} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise BacktestToolError(f"{what} failed: {' / '.join(detail)}")


def backfill_openmetrics(tools: Tools, source: Path, tsdb: Path) -> None:
    """Blocks from one OpenMetrics file (timestamped samples) into ``tsdb``."""
    _run(
        [tools.promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
         str(source), str(tsdb)],
        f"promtool create-blocks-from openmetrics {source.name}",
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusOnBlocks:
    """A Prometheus serving ``tsdb``: no scrape job, no rule, on a free port of 127.0.0.1."""

    def __init__(self, tools: Tools, tsdb: Path, work: Path) -> None:
        self.tools = tools
        self.tsdb = tsdb
        self.work = work
        self.config = work / "prometheus.yml"
        self.config.write_text("global: {}\n")
        self.log = work / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [self.tools.prometheus, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.tsdb}", f"--web.listen-address=127.0.0.1:{port}",
                 f"--storage.tsdb.retention.time={RETENTION}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise BacktestToolError(f"prometheus exited at start:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=2, trust_env=False).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise BacktestToolError(f"prometheus not ready within {START_TIMEOUT_SECONDS:.0f} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> PrometheusOnBlocks:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries ------------------------------------------------------------------------------

    def query_range(self, expr: str, start: float, end: float, step: float) -> Series:
        """Every series of ``expr`` at ``start, start + step, ... <= end``, chunked so no request
        asks for more points than Prometheus allows."""
        series: Series = {}
        chunk = step * (MAX_POINTS_PER_QUERY - 1)
        begin = start
        while begin <= end:
            stop = min(end, begin + chunk)
            response = httpx.post(
                f"{self.url}/api/v1/query_range",
                data={"query": expr, "start": f"{begin:.3f}", "end": f"{stop:.3f}",
                      "step": f"{step:g}"},
                timeout=QUERY_TIMEOUT_SECONDS, trust_env=False,
            )  # fmt: skip
            body = response.json()
            if body.get("status") != "success":
                raise BacktestToolError(f"query failed: {body.get('error')}: {expr[:200]}")
            for result in body["data"]["result"]:
                key = tuple(sorted(result["metric"].items()))
                values = series.setdefault(key, {})
                for ts, value in result["values"]:
                    number = float(value)
                    if not math.isnan(number):
                        values[round(float(ts), 3)] = number
            begin = stop + step
        return series


def backfill_recording_rules(
    tools: Tools,
    server: PrometheusOnBlocks,
    rules: Sequence[RecordingRule],
    start: float,
    end: float,
    evaluation_seconds: int,
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """Recorded series over ``[start, end]`` written into the server's TSDB, level by level.

    The server must be running; it is restarted after each level so the next level's rules
    read what the previous one wrote.
    """
    levels = recording_levels(rules)
    # One path for every level's file: Prometheus (and promtool) offsets each group's evaluations
    # within the interval by a hash of its file and name. Live, the rules of one group run at one
    # timestamp in order, so a rule reads what the rules before it recorded at that timestamp;
    # with a file per level, each level would run at another offset and read the previous
    # level's values up to an interval old, inconsistently (a window's shares would not sum to 1
    # while its counts grow).
    rule_file = server.work / "recording-rules" / "recording.yml"
    rule_file.parent.mkdir(parents=True, exist_ok=True)
    for number, level in enumerate(levels, 1):
        progress(f"recording rules, level {number} of {len(levels)}: {len(level)} rules")
        with tempfile.TemporaryDirectory(dir=server.work) as scratch:
            scratch_dir = Path(scratch)
            write_rule_file(rule_file, level)
            output = scratch_dir / "blocks"
            output.mkdir()
            _run(
                [tools.promtool, "tsdb", "create-blocks-from", "rules", "--quiet",
                 f"--url={server.url}", f"--start={start:.0f}", f"--end={end:.0f}",
                 f"--output-dir={output}", f"--eval-interval={evaluation_seconds}s",
                 str(rule_file)],
                f"promtool create-blocks-from rules (level {number})",
            )  # fmt: skip
            for block in _blocks(output):
                shutil.move(str(block), str(server.tsdb / block.name))
        server.restart()


def _blocks(directory: Path) -> Iterator[Path]:
    """Block directories (ULIDs, with a meta.json) anywhere below ``directory``."""
    for meta in sorted(directory.rglob("meta.json")):
        yield meta.parent
