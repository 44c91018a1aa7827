"""How long ``/healthz`` waits while other clients send large ``/predict`` bodies, for two trees.

A 1 MiB body of numbers takes tenths of a second to parse and check. Parsed on the event loop,
that time is added to every request the same worker process answers meanwhile: a health probe,
a small prediction. This benchmark runs `model-exporter serve` (the fare example, one worker)
from each tree in turn, has ``--senders`` processes post 1 MiB bodies to ``/predict`` as fast as
they are answered, and meanwhile times ``GET /healthz`` every 50 ms from this process. Trees
alternate (before, after, after, before, ...) and each tree's medians over its rounds are
reported, so a slow moment of the machine hits both.

Run::

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_big_bodies.py --before /tmp/before [--after .] [--rounds 3]

Results go to stdout as Markdown and to ``benchmarks/results/big_bodies.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "big_bodies.json"
CONFIG = Path("examples") / "fare" / "monitor.yml"
#: One trip and an extra feature of numbers the model ignores, about 1 MiB in all (the
#: service's default body limit is 1,048,576 bytes).
TRIP = {"trip_miles": 3.0, "trip_seconds": 900, "straight_line_km": 4.0, "hour": 8}
PROBE_INTERVAL_SECONDS = 0.05

SENDER = """
import sys, threading, time, httpx
url, seconds, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
body = open(path, "rb").read()
headers = {"content-type": "application/json"}
end = time.monotonic() + seconds
sent = 0
with httpx.Client(timeout=30, trust_env=False) as client:
    while time.monotonic() < end:
        client.post(url + "/predict", content=body, headers=headers)
        sent += 1
print(sent)
"""


def big_body() -> bytes:
    numbers = [round(i * 0.123456789, 6) for i in range(80_000)]
    body = json.dumps({"features": {**TRIP, "blob": numbers}}).encode()
    assert len(body) < 1_048_576, len(body)
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(tree: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "serve", "--config", str(tree / CONFIG),
         "--port", str(port), "--data-dir", str(data), "--quiet"],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"serve from {tree} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def one_round(tree: Path, senders: int, seconds: float, body_path: Path) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        server = start(tree, Path(data), port)
        url = f"http://127.0.0.1:{port}"
        try:
            load = [
                subprocess.Popen(
                    [sys.executable, "-c", SENDER, url, str(seconds), str(body_path)],
                    stdout=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
                for _ in range(senders)
            ]
            time.sleep(0.5)  # every sender has a body in flight
            latencies = []
            with httpx.Client(timeout=30, trust_env=False) as client:
                end = time.monotonic() + seconds - 1.0
                while time.monotonic() < end:
                    began = time.perf_counter()
                    client.get(f"{url}/healthz").raise_for_status()
                    latencies.append(time.perf_counter() - began)
                    time.sleep(PROBE_INTERVAL_SECONDS)
            bodies = sum(int(p.communicate(timeout=seconds + 60)[0] or 0) for p in load)
        finally:
            stop(server)
    latencies.sort()
    return {
        "probes": len(latencies),
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "max_ms": latencies[-1] * 1000,
        "bodies_per_s": bodies / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout to compare with")
    parser.add_argument("--after", type=Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=3)
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.NamedTemporaryFile(suffix=".json") as body:
        body.write(big_body())
        body.flush()
        order = ["before", "after"]
        for index in range(args.rounds):
            for name in order if index % 2 == 0 else order[::-1]:
                result = one_round(trees[name], args.senders, args.seconds, Path(body.name))
                runs[name].append(result)
                print(f"round {index + 1} {name}: {result}", file=sys.stderr)
    summary: dict[str, Any] = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in runs.items()
    }
    print(f"/healthz while {args.senders} clients post 1 MiB bodies (median of {args.rounds} "
          f"rounds of {args.seconds:g} s):\n")  # fmt: skip
    print("| tree | median ms | p95 ms | max ms | 1 MiB bodies/s |")
    print("|---|---:|---:|---:|---:|")
    for name in trees:
        s = summary[name]
        print(f"| {name} | {s['median_ms']:.1f} | {s['p95_ms']:.1f} | {s['max_ms']:.1f} | "
              f"{s['bodies_per_s']:.1f} |")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "arch": platform.machine(),
                    "cores": os.cpu_count(),
                    "python": platform.python_version(),
                },  # fmt: skip
                "trees": {name: str(path) for name, path in trees.items()},
                "senders": args.senders,
                "seconds": args.seconds,
                "rounds": runs,
                "medians": summary,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
