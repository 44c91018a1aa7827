"""Building configs, profiles and live servers for the service tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from exporter import ReferenceProfile
from tests.binaries import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent


def write_setup(
    directory: Path, task: str = "regression", *, store: str = "sqlite", **monitoring: Any
) -> Path:
    """A reference profile and a monitor.yml for a toy model in ``directory``."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "miles": rng.gamma(2.0, 2.0, 5_000),
            "zone": rng.choice(["north", "south", "east"], 5_000),
        }
    )
    frame["target"] = (
        3 + 2 * frame["miles"]
        if task == "regression"
        else np.where(frame["miles"] > 5, "long", "short")
    )
    kind: Literal["numeric", "categorical"] = "numeric" if task == "regression" else "categorical"
    profile = ReferenceProfile.from_frame(
        frame, ["miles"], ["zone"], target="target", target_kind=kind
    )
    profile.save(directory / "reference.json")
    config = {
        "model": {
            "name": "toy",
            "version": "v1",
            "task": task,
            "import_path": "tests.toy_models:"
            + ("regress" if task == "regression" else "classify"),
        },
        "reference": "reference.json",
        "monitoring": {
            "windows": ["5m", "1h"],
            "min_samples": 10,
            "drift_cache_seconds": 0,
            **monitoring,
        },  # fmt: skip
        "thresholds": {"mae_warning": 3.5, "mae_critical": 5.0},
        "outcomes": {"store": store},
        "service": {"max_batch": 50, "max_body_bytes": 65536},
    }
    path = directory / "monitor.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def live_server(
    config: Path, data_dir: Path, *, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `model-exporter serve` on a free 127.0.0.1 port; always stopped on exit."""
    port = free_port()
    log = data_dir.parent / f"serve-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "serve", "--config", str(config),
             "--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers),
             "--quiet"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/healthz", process, log, "model-exporter serve")
        yield url, process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
