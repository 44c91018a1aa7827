"""A prediction log replayed through the monitor, scraped every interval, as OpenMetrics files.

The monitor is the one ``model-exporter serve`` would build from the same config, with a
simulated clock and an in-memory outcome store. Time advances one scrape interval at a time:
the interval's calls are observed (answered ones with ``observe_batch``, failed ones with
``record_error``, every one's latency), then the ground truth that arrived in the interval is
recorded, then the counters are flushed and every series the rules read is written with the
scrape's timestamp and the labels a scrape adds (``job``, ``instance``), plus ``up``. The
windowed per-process gauges (PSI, KS, performance), which no rule reads, are not computed.

Each call and each ground truth is placed at the end of its scrape interval: counters are exact
at every scrape, and the drift windows shift by less than an interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from exporter.backtest.log import PredictionLog
from exporter.config import MonitorConfig
from exporter.metrics import state_for
from exporter.monitor import ModelMonitor
from exporter.outcomes import MemoryOutcomeStore
from exporter.profile import ReferenceProfile

#: The scrape labels every series gets, as Prometheus adds them from the target.
JOB = "model-exporter"
INSTANCE = "backtest:8000"
DEFAULT_SCRAPE_SECONDS = 15
#: Scrapes per OpenMetrics file: promtool builds 2-hour blocks, and a file of one block's worth
#: keeps memory flat however long the log is.
CHUNK_SECONDS = 2 * 3600


class SimulatedClock:
    """The monitor's clock: the replay sets the time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class ReplaySummary:
    start: float
    end: float
    scrapes: int
    predictions: int
    failures: int
    outcomes: int
    files: tuple[Path, ...]


def build_monitor(
    config: MonitorConfig, registry: CollectorRegistry, clock: SimulatedClock
) -> ModelMonitor:
    """The monitor ``serve`` builds from ``config``, on a simulated clock, outcomes in memory,
    without the KS samples (no rule reads the per-process gauges)."""
    from exporter.server import check_segments, monitor_for

    reference_path = config.reference_path()
    reference = ReferenceProfile.load(reference_path) if reference_path is not None else None
    check_segments(config, reference)
    store = MemoryOutcomeStore(
        ttl_seconds=config.outcomes.ttl_seconds, max_pending=config.outcomes.max_pending
    )
    return monitor_for(
        config, reference, registry=registry, outcomes=store, clock=clock, sample_size=0
    )


# -- OpenMetrics ---------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class _Family:
    name: str
    kind: str
    #: series (sample name + label string) -> lines, in time order
    lines: dict[str, list[str]]


class OpenMetricsChunks:
    """Samples gathered scrape by scrape and written one file per chunk, each family contiguous
    and each series in time order, as ``promtool tsdb create-blocks-from openmetrics`` wants."""

    def __init__(self, directory: Path, on_file: Callable[[Path], None]) -> None:
        self.directory = directory
        self.on_file = on_file
        self.files: list[Path] = []
        self._families: dict[str, _Family] = {}
        self._labels: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def add(self, family: str, kind: str, sample: str, labels: dict[str, str], value: float,
            timestamp: float) -> None:  # fmt: skip
        key = (sample, tuple(sorted(labels.items())))
        series = self._labels.get(key)
        if series is None:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in key[1])
            series = self._labels[key] = f"{sample}{{{inner}}}"
        entry = self._families.get(family)
        if entry is None:
            entry = self._families[family] = _Family(family, kind, {})
        entry.lines.setdefault(series, []).append(f"{series} {_number(value)} {timestamp:.3f}\n")

    def flush(self) -> None:
        if not self._families:
            return
        path = self.directory / f"scrapes-{len(self.files):05d}.om"
        with open(path, "w", encoding="utf-8") as out:
            self._write(out)
        self._families.clear()
        self.files.append(path)
        self.on_file(path)

    def _write(self, out: TextIO) -> None:
        for family in self._families.values():
            out.write(f"# TYPE {family.name} {family.kind}\n")
            for lines in family.lines.values():
                out.writelines(lines)
        out.write("# EOF\n")


def _scrape(monitor: ModelMonitor, registry: CollectorRegistry, chunks: OpenMetricsChunks,
            timestamp: float) -> None:  # fmt: skip
    monitor.flush()
    instruments = state_for(registry).instruments
    scrape_labels = {"job": JOB, "instance": INSTANCE}
    chunks.add("up", "gauge", "up", scrape_labels, 1.0, timestamp)
    for field in fields(instruments):
        for metric in getattr(instruments, field.name).collect():
            kind = metric.type if metric.type in ("counter", "gauge", "histogram") else "unknown"
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                chunks.add(metric.name, kind, sample.name, {**sample.labels, **scrape_labels},
                           sample.value, timestamp)  # fmt: skip


# -- the replay ---------------------------------------------------------------------------------


def _features(rows: pd.DataFrame, columns: list[str], derive: Callable[..., Any] | None) -> Any:
    raw = rows[columns]
    if derive is None:
        return raw
    records = raw.to_dict("records")
    derived = []
    for record in records:
        clean = {str(k): (None if _is_missing(v) else v) for k, v in record.items()}
        try:
            derived.append({**clean, **derive(clean)})
        except Exception:  # the service monitors the raw features when derive fails
            derived.append(clean)
    return pd.DataFrame(derived, index=rows.index)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def replay(
    log: PredictionLog,
    config: MonitorConfig,
    directory: Path,
    *,
    derive: Callable[..., Any] | None = None,
    scrape_seconds: float = DEFAULT_SCRAPE_SECONDS,
    on_file: Callable[[Path], None] = lambda _: None,
    progress: Callable[[float], None] = lambda _: None,
) -> ReplaySummary:
    """Replay ``log`` through the monitor of ``config``; OpenMetrics files in ``directory``.

    ``on_file`` is called with each file as soon as it is written (the caller can backfill it
    while the replay goes on); ``progress`` with the share of the log replayed.
    """
    frame = log.frame
    start = math.floor(log.start / scrape_seconds) * scrape_seconds
    end = math.ceil(log.end / scrape_seconds) * scrape_seconds
    clock = SimulatedClock(start)
    registry = CollectorRegistry()
    monitor = build_monitor(config, registry, clock)
    chunks = OpenMetricsChunks(directory, on_file)
    times = frame["time"].to_numpy(dtype=np.float64)
    failed = log.failed_mask()
    truth_times = log.truth_times()
    truth_order = np.argsort(truth_times, kind="stable")
    truth_sorted = truth_times[truth_order]
    actuals = log.actuals()
    ids: dict[int, str] = {}
    next_row = next_truth = outcomes = 0
    n_scrapes = 0
    chunk_end = start + CHUNK_SECONDS
    for scrape_at in _scrape_times(start, end, scrape_seconds):
        clock.now = scrape_at
        upto = int(np.searchsorted(times, scrape_at, side="right"))
        if upto > next_row:
            rows = frame.iloc[next_row:upto]
            ids.update(_observe(monitor, log, rows, failed[next_row:upto], derive))
            next_row = upto
        truth_upto = int(np.searchsorted(truth_sorted, scrape_at, side="right"))
        for position in truth_order[next_truth:truth_upto]:
            prediction_id = ids.pop(int(position), None)
            if prediction_id is not None:
                monitor.record_outcome(prediction_id, actuals[int(position)])
                outcomes += 1
        next_truth = truth_upto
        _scrape(monitor, registry, chunks, scrape_at)
        n_scrapes += 1
        if scrape_at >= chunk_end:
            chunks.flush()
            chunk_end += CHUNK_SECONDS
            progress((scrape_at - start) / max(end - start, 1.0))
    chunks.flush()
    return ReplaySummary(start, end, n_scrapes, len(frame), int(failed.sum()), outcomes,
                         tuple(chunks.files))  # fmt: skip


def _scrape_times(start: float, end: float, step: float) -> Iterator[float]:
    count = int(round((end - start) / step))
    for index in range(count + 1):
        yield start + index * step


def _observe(
    monitor: ModelMonitor,
    log: PredictionLog,
    rows: pd.DataFrame,
    failed: np.ndarray,
    derive: Callable[..., Any] | None,
) -> dict[int, str]:
    """Observe one interval's calls; the prediction id of each answered row, by position."""
    latencies = rows["latency_seconds"].to_numpy(dtype=np.float64) if log.has_latency else None
    if latencies is not None:
        for latency in latencies[np.isfinite(latencies)]:
            monitor.observe_latency(float(latency))
    for error in rows.loc[failed, "error"].astype(str):
        monitor.record_error(error)
    answered = rows.loc[~failed]
    if answered.empty:
        return {}
    confidences = answered["confidence"] if log.has_confidence else None
    batch = monitor.observe_batch(
        _features(answered, log.feature_columns, derive), answered["prediction"], confidences
    )
    positions = log.positions(answered.index)
    return dict(zip(positions, batch, strict=True))
