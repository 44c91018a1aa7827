"""Benchmarks of the monitor's hot path, batches, scrapes and window memory.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_monitor.py``). Every figure is the
median of several repeats measured in this one run, next to a baseline measured in the same run, so
ratios hold even on a noisy machine. Results go to stdout as a Markdown table and to
``benchmarks/results/monitor.json``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import prometheus_client
import scipy
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from scipy import stats as sps

from exporter import ModelMonitor, ReferenceProfile, stats
from exporter.outcomes import MemoryOutcomeStore
from exporter.profile import NumericFeature

RESULTS = Path(__file__).resolve().parent / "results" / "monitor.json"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "prometheus_client": importlib.metadata.version("prometheus-client"),
        "platform": platform.platform(),
    }


def median_time(run: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def numeric_profile(features: int, rows: int = 20_000, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    columns = [f"f{i}" for i in range(features)]
    frame = pd.DataFrame(rng.normal(size=(rows, features)), columns=columns)
    frame["label"] = rng.choice(["a", "b", "c"], rows)
    return ReferenceProfile.from_frame(frame, columns, target="label")


def bench_observe(calls: int, repeats: int) -> dict[str, float]:
    """observe() with 10 numeric features, a class and a confidence vs one Histogram.observe."""
    profile = numeric_profile(10)
    monitor = ModelMonitor("bench", reference=profile, registry=CollectorRegistry())
    rng = np.random.default_rng(1)
    columns = list(profile.features)
    rows = [dict(zip(columns, map(float, r), strict=True)) for r in rng.normal(size=(1000, 10))]
    classes = ["a", "b", "c"]

    def observe() -> None:
        for i in range(calls):
            monitor.observe(rows[i % 1000], classes[i % 3], 0.87)

    histogram = Histogram("bench_seconds", "baseline", registry=CollectorRegistry())

    def bare() -> None:
        for _ in range(calls):
            histogram.observe(0.87)

    observe()  # warm up: classes and ticks created
    per_observe = median_time(observe, repeats) / calls
    per_histogram = median_time(bare, repeats) / calls
    return {
        "observe_us": per_observe * 1e6,
        "histogram_observe_us": per_histogram * 1e6,
        "ratio": per_observe / per_histogram,
    }


def bench_batch(rows: int, repeats: int) -> dict[str, float]:
    """observe_batch() on a DataFrame of 10 numeric features."""
    profile = numeric_profile(10)
    monitor = ModelMonitor("bench", reference=profile, registry=CollectorRegistry())
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(rows, 10)), columns=list(profile.features))
    predictions = rng.choice(["a", "b", "c"], rows)
    confidences = rng.uniform(0, 1, rows)

    def batch() -> None:
        monitor.observe_batch(frame, predictions, confidences)

    batch()
    seconds = median_time(batch, repeats)
    return {"rows": rows, "seconds": seconds, "values_per_second": rows * 10 / seconds}


def bench_scrape(values_per_feature: int, repeats: int) -> dict[str, float]:
    """Render /metrics for a monitor with 20 features x 3 windows, fresh and cached drift.

    Measured twice: with prometheus_client's default ``_created`` series, and without them
    (``disable_created_metrics()``, which ``model-exporter serve`` does at start: they double the
    counter lines and nothing here reads them).
    """
    profile = numeric_profile(20)
    registry = CollectorRegistry()
    monitor = ModelMonitor("bench", reference=profile, registry=registry)
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        rng.normal(0.2, 1, size=(values_per_feature, 20)), columns=list(profile.features)
    )
    monitor.observe_batch(frame, rng.choice(["a", "b"], values_per_feature))
    results: dict[str, float] = {}
    results["drift_only_ms"] = median_time(lambda: monitor.drift(max_age=0), repeats) * 1e3
    for created in (True, False):
        if created:
            prometheus_client.enable_created_metrics()
        else:
            prometheus_client.disable_created_metrics()
        suffix = "" if created else "_no_created"
        monitor.drift_cache_seconds = 0  # every scrape recomputes all 63 feature-windows
        fresh = median_time(lambda: generate_latest(registry), repeats)
        monitor.drift_cache_seconds = 3600
        generate_latest(registry)
        cached = median_time(lambda: generate_latest(registry), repeats)
        results[f"fresh_ms{suffix}"] = fresh * 1e3
        results[f"cached_ms{suffix}"] = cached * 1e3
        results[f"lines{suffix}"] = len(generate_latest(registry).splitlines())
    prometheus_client.enable_created_metrics()
    return results


class RawWindow:
    """The seeds' approach: keep every value of the window, recompute at each scrape."""

    def __init__(self, size: int) -> None:
        self.values = np.empty(size, dtype=np.float64)
        self.filled = 0

    def extend(self, values: np.ndarray) -> None:
        self.values[self.filled : self.filled + values.size] = values
        self.filled += values.size

    def scrape(self, share: list[float], edges: list[float], reference: np.ndarray) -> float:
        window = self.values[: self.filled]
        counts, _ = np.histogram(window, bins=[-np.inf, *edges, np.inf])
        psi = stats.psi(share, counts).statistic
        ks = sps.ks_2samp(reference, window, method="asymp")
        return psi + float(ks.statistic)


def _allocated(build: Callable[[], Any]) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    obj = build()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return obj, current


def bench_windows(size: int, repeats: int) -> dict[str, float]:
    """One feature, one 1h window holding `size` values: this design vs the raw window."""
    rng = np.random.default_rng(4)
    profile = numeric_profile(1, rows=50_000)
    ref = profile.features["f0"]
    assert isinstance(ref, NumericFeature)
    values = rng.normal(0.3, 1, size)

    def build_ours() -> ModelMonitor:
        # Windows only: the outcome store (predictions kept for ground truth) is not part of
        # this comparison, so it keeps a single prediction.
        monitor = ModelMonitor(
            "bench", reference=profile, registry=CollectorRegistry(), windows=("1h",),
            outcomes=MemoryOutcomeStore(max_pending=1),
        )  # fmt: skip
        for chunk in np.array_split(values, max(1, size // 100_000)):
            monitor.observe_batch(pd.DataFrame({"f0": chunk}), ["a"] * chunk.size)
        return monitor

    def build_raw() -> RawWindow:
        raw = RawWindow(size)
        raw.extend(values)
        return raw

    ours, ours_bytes = _allocated(build_ours)
    raw, raw_bytes = _allocated(build_raw)
    reference = np.asarray(ref.sample)
    share = list(ref.reference_share)
    edges = list(ref.edges)
    ours_seconds = median_time(lambda: ours.drift(max_age=0), repeats)
    raw_seconds = median_time(lambda: raw.scrape(share, edges, reference), repeats)
    return {
        "window_values": size,
        "ours_scrape_ms": ours_seconds * 1e3,
        "raw_scrape_ms": raw_seconds * 1e3,
        "ours_memory_kib": ours_bytes / 1024,
        "raw_memory_kib": raw_bytes / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller inputs")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    results: dict[str, Any] = {"machine": machine()}
    results["observe"] = bench_observe(5_000 if args.quick else 20_000, repeats)
    results["batch"] = bench_batch(10_000 if args.quick else 100_000, repeats)
    results["scrape"] = bench_scrape(10_000 if args.quick else 100_000, repeats)
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    results["windows"] = [bench_windows(size, repeats) for size in sizes]

    o, b, s = results["observe"], results["batch"], results["scrape"]
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
          f"Python {results['machine']['python']}")  # fmt: skip
    print()
    print("| measurement | result | goal |")
    print("|---|---|---|")
    print(f"| observe(), 10 numeric features + class + confidence | {o['observe_us']:.1f} µs "
          "| <= 25 µs |")  # fmt: skip
    print(f"| bare Histogram.observe, same run | {o['histogram_observe_us']:.2f} µs | |")
    print(f"| ratio observe / Histogram.observe | {o['ratio']:.1f}x | <= 20x |")
    print(f"| observe_batch, {b['rows']:,} rows x 10 features | "
          f"{b['values_per_second'] / 1e6:.2f} M values/s | >= 1 M values/s |")  # fmt: skip
    print(f"| drift snapshot alone, 20 features x 3 windows (+ output) | "
          f"{s['drift_only_ms']:.1f} ms | |")  # fmt: skip
    lines = s["lines_no_created"]
    print(f"| scrape, 20 features x 3 windows, drift recomputed, no _created ({lines} lines) "
          f"| {s['fresh_ms_no_created']:.1f} ms | <= 20 ms |")  # fmt: skip
    print(f"| scrape, same, drift cached, no _created | {s['cached_ms_no_created']:.1f} ms | |")
    print(f"| scrape, drift recomputed, with _created ({s['lines']} lines) | "
          f"{s['fresh_ms']:.1f} ms | |")  # fmt: skip
    print(f"| scrape, drift cached, with _created | {s['cached_ms']:.1f} ms | |")
    print()
    print("| window values | this design: scrape | raw window: scrape | this design: memory "
          "| raw window: memory |")  # fmt: skip
    print("|---|---|---|---|---|")
    for w in results["windows"]:
        print(f"| {w['window_values']:,} | {w['ours_scrape_ms']:.2f} ms | "
              f"{w['raw_scrape_ms']:.2f} ms | {w['ours_memory_kib']:,.0f} KiB | "
              f"{w['raw_memory_kib']:,.0f} KiB |")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
