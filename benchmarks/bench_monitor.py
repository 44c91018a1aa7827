"""Benchmarks of the monitor's hot path, batches, scrapes and window memory.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_monitor.py``). Every figure is the
median of several repeats measured in this one run, next to a baseline measured in the same run, so
ratios hold even on a noisy machine. Results go to stdout as a Markdown table and to
``benchmarks/results/monitor.json``.

``--only batch-vs-evidently`` runs one section alone (issue 17): a profile build, an
``observe_batch`` of 200,000 rows, a flush and a scrape, next to the same counting in plain numpy
and, with ``--evidently-python PATH`` (a venv of its own: ``python3 -m venv /tmp/evidently-venv &&
/tmp/evidently-venv/bin/pip install 'evidently==0.7.*' 'pandas<3'``), Evidently's
``DataDriftPreset(method="psi")`` on the same frames, made from the same seed in its process.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import inspect
import json
import os
import platform
import statistics
import subprocess
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


# -- issue 17: a whole batch against plain numpy and Evidently --------------------------------


def drift_frames(rows: int, features: int, seed: int) -> tuple[Any, Any]:
    """The reference and current frames (normal; current shifted by 0.1). Runs in Evidently's
    own venv too (sent there as source by :func:`evidently_run`): numpy and pandas only."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns = [f"f{i}" for i in range(features)]
    reference = pd.DataFrame(rng.normal(size=(rows, features)), columns=columns)
    current = pd.DataFrame(rng.normal(0.1, 1.0, size=(rows, features)), columns=columns)
    return reference, current


def evidently_psi(rows: int, features: int, seed: int, repeats: int) -> None:
    """Evidently's DataDriftPreset(method="psi") on :func:`drift_frames`; prints its timings,
    peak RSS growth and PSI per column as JSON. Runs in Evidently's venv, never imported here."""
    import importlib.metadata
    import json
    import resource
    import statistics
    import time

    from evidently import Report  # type: ignore[import-not-found]
    from evidently.presets import DataDriftPreset  # type: ignore[import-not-found]

    reference, current = drift_frames(rows, features, seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timings, psi = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        snapshot = Report([DataDriftPreset(method="psi")]).run(
            current_data=current, reference_data=reference
        )
        values = snapshot.dict()["metrics"]
        timings.append(time.perf_counter() - start)
    psi = [float(m["value"]) for m in values if m["metric_name"].startswith("ValueDrift(")]
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "evidently": importlib.metadata.version("evidently"),
        "pandas": importlib.metadata.version("pandas"),
        "seconds": statistics.median(timings), "timings": timings,
        "peak_rss_growth_mib": (rss_after - rss_before) / 1024, "psi": psi,
    }))  # fmt: skip


def evidently_run(python: str, rows: int, features: int, seed: int, repeats: int) -> Any:
    """:func:`evidently_psi` in a process of ``python`` (a venv with Evidently, kept out of this
    project's), given the two functions' source so it makes the same frames from the seed."""
    program = "\n".join(["from __future__ import annotations", "from typing import Any",
                         inspect.getsource(drift_frames), inspect.getsource(evidently_psi),
                         f"evidently_psi({rows}, {features}, {seed}, {repeats})"])  # fmt: skip
    done = subprocess.run([python, "-c", program], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"Evidently's run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def batch_outputs(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's outputs: reference predictions, current predictions and confidences (from a
    stream of their own, so the feature frames stay exactly Evidently's)."""
    rng = np.random.default_rng(seed + 1)
    classes = np.array(["a", "b", "c"])
    return rng.choice(classes, rows), rng.choice(classes, rows), rng.uniform(0, 1, rows)


def ours(
    reference: pd.DataFrame, current: pd.DataFrame, outputs: tuple[np.ndarray, ...], keep: bool
) -> dict[str, float]:
    """The workload: profile build, monitor, observe_batch, flush and one scrape; per phase."""
    reference_predictions, predictions, confidences = outputs
    phases: dict[str, float] = {}
    start = time.perf_counter()
    profile = ReferenceProfile.from_frame(
        reference.assign(prediction=reference_predictions), list(reference.columns),
        prediction="prediction",
    )  # fmt: skip
    phases["profile_s"] = time.perf_counter() - start
    registry = CollectorRegistry()
    monitor = ModelMonitor("bench", reference=profile, registry=registry, flush_interval=None)
    phases["monitor_s"] = time.perf_counter() - start - sum(phases.values())
    monitor.observe_batch(current, predictions, confidences, keep=keep)
    phases["observe_batch_s"] = time.perf_counter() - start - sum(phases.values())
    monitor.flush()
    text = generate_latest(registry)
    phases["flush_scrape_s"] = time.perf_counter() - start - sum(phases.values())
    phases["seconds"] = time.perf_counter() - start
    phases["psi"] = float(np.mean([_psi_5m(text, f) for f in reference.columns]))
    return phases


def _psi_5m(text: bytes, feature: str) -> float:
    start = f'model_feature_psi{{feature="{feature}",model="bench",'.encode()
    for line in text.splitlines():
        if line.startswith(start) and b'window="5m"' in line:
            return float(line.rsplit(b" ", 1)[1])
    raise AssertionError(f"no PSI for {feature}")


DECILES = np.linspace(0.1, 0.9, 9)


def near_limit(
    reference: pd.DataFrame, current: pd.DataFrame, outputs: tuple[np.ndarray, ...]
) -> dict[str, float]:
    """The same counting in plain numpy, nothing else: reference deciles per column, both frames
    binned by searchsorted and bincount, finiteness, PSI per column; the outputs' class counts
    and confidence buckets. No KS sample, no moments, no windows, no metrics, no ids or store."""
    _, predictions, confidences = outputs
    start = time.perf_counter()
    ref, cur = reference.to_numpy(), current.to_numpy()
    edges = np.quantile(ref, DECILES, axis=0)
    psi = np.empty(ref.shape[1])
    for j in range(ref.shape[1]):
        finite = cur[:, j][np.isfinite(cur[:, j])]
        expected = np.bincount(np.searchsorted(edges[:, j], ref[:, j], side="right"), minlength=10)
        actual = np.bincount(np.searchsorted(edges[:, j], finite, side="right"), minlength=10)
        p = np.maximum(expected / expected.sum(), 1e-4)
        q = np.maximum(actual / max(actual.sum(), 1), 1e-4)
        psi[j] = float(np.sum((q - p) * np.log(q / p)))
    _, per_class = np.unique(predictions, return_counts=True)
    buckets = np.bincount(np.searchsorted([0.5, 0.8], confidences, side="right"), minlength=3)
    seconds = time.perf_counter() - start
    assert per_class.sum() == buckets.sum() == len(predictions)
    return {"seconds": seconds, "psi": float(psi.mean())}


def _peak_mib(run: Callable[[], object]) -> float:
    """Peak memory traced while ``run`` runs (numpy's buffers included), in MiB."""
    gc.collect()
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def bench_batch_vs_evidently(
    rows: int, features: int, repeats: int, evidently_python: str | None, seed: int = 0
) -> dict[str, Any]:
    """Issue 17: ``rows`` reference and current rows of ``features`` columns through this
    monitor, through plain numpy, and through Evidently when a Python with it is given."""
    reference, current = drift_frames(rows, features, seed)
    outputs = batch_outputs(rows, seed)
    # The contenders take turns in every round, so a busy moment of a shared machine falls on
    # all of them alike; medians of the rounds.
    runs, lean, limits = [], [], []
    for _ in range(repeats):
        gc.collect()
        runs.append(ours(reference, current, outputs, keep=True))
        gc.collect()
        lean.append(ours(reference, current, outputs, keep=False)["seconds"])
        gc.collect()
        limits.append(near_limit(reference, current, outputs))
    result: dict[str, Any] = {"rows": rows, "features": features, "repeats": repeats}
    result["ours"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result["ours_keep_false_s"] = statistics.median(lean)
    result["near_limit"] = {k: statistics.median(r[k] for r in limits) for k in limits[0]}
    result["ours_peak_mib"] = _peak_mib(lambda: ours(reference, current, outputs, keep=True))
    result["near_limit_peak_mib"] = _peak_mib(lambda: near_limit(reference, current, outputs))
    if evidently_python is not None:
        result["evidently"] = evidently_run(evidently_python, rows, features, seed, repeats)
    return result


def print_batch_vs_evidently(results: list[dict[str, Any]]) -> None:
    print("| features | contender | seconds | rows/s | x near-limit | Evidently / this "
          "| peak memory | mean PSI |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        limit, mine = r["near_limit"]["seconds"], r["ours"]["seconds"]
        contenders = [
            ("this project", mine, f"{r['ours_peak_mib']:,.0f} MiB traced", r["ours"]["psi"]),
            ("plain numpy near-limit", limit, f"{r['near_limit_peak_mib']:,.0f} MiB traced",
             r["near_limit"]["psi"]),
        ]  # fmt: skip
        evidently = r.get("evidently")
        if evidently is not None:
            contenders.append((f"Evidently {evidently['evidently']}", evidently["seconds"],
                               f"{evidently['peak_rss_growth_mib']:,.0f} MiB RSS growth",
                               float(np.mean(evidently["psi"]))))  # fmt: skip
        for name, seconds, memory, psi in contenders:
            versus = f"{evidently['seconds'] / seconds:.1f}x" if evidently else ""
            print(f"| {r['features']} | {name} | {seconds:.3f} | {r['rows'] / seconds:,.0f} | "
                  f"{seconds / limit:.2f}x | {versus} | {memory} | {psi:.4f} |")  # fmt: skip
    print()
    print("| features | this project: profile | monitor | observe_batch | flush + scrape "
          "| total | total with keep=False |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        o = r["ours"]
        print(f"| {r['features']} | {o['profile_s']:.3f} s | {o['monitor_s']:.3f} s | "
              f"{o['observe_batch_s']:.3f} s | {o['flush_scrape_s']:.3f} s | {o['seconds']:.3f} s "
              f"| {r['ours_keep_false_s']:.3f} s |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller inputs")
    parser.add_argument(
        "--only", choices=["batch-vs-evidently"], help="run one section (the file keeps the rest)"
    )
    parser.add_argument(
        "--evidently-python", metavar="PATH", help="a Python with Evidently, in a venv of its own"
    )
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    rows, runs = (20_000, 1) if args.quick else (200_000, 3)
    # The load average before and after: the machine may be shared, and the file should say so.
    load = os.getloadavg()
    sweep = [bench_batch_vs_evidently(rows, 20, runs, args.evidently_python)]
    sweep += [bench_batch_vs_evidently(rows, features, runs, None) for features in (10, 100)]
    section = {"machine": machine(), "load_before_after": [load, os.getloadavg()], "runs": sweep}
    if args.only == "batch-vs-evidently":
        print(f"machine: {machine()['cpu']}, {machine()['cores']} cores, load {load[0]:.2f}")
        print_batch_vs_evidently(sweep)
        saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        RESULTS.write_text(json.dumps({**saved, "batch_vs_evidently": section}, indent=2) + "\n")
        return
    results: dict[str, Any] = {"machine": machine()}
    results["observe"] = bench_observe(5_000 if args.quick else 20_000, repeats)
    results["batch"] = bench_batch(10_000 if args.quick else 100_000, repeats)
    results["scrape"] = bench_scrape(10_000 if args.quick else 100_000, repeats)
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    results["windows"] = [bench_windows(size, repeats) for size in sizes]
    results["batch_vs_evidently"] = section

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
    print()
    print_batch_vs_evidently(sweep)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
