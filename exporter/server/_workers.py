"""Upkeep off the request path, and the files several workers share: each worker's background
flush (counters, expiry, published windows, the outcome store's checkpoint), the multiprocess
directory prepared before the workers start, and the sweep of workers that died without
cleaning up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from exporter.server._service import Service

#: How often the background task flushes counters and publishes this worker's windows.
FLUSH_INTERVAL_SECONDS = 1.0
#: Every this many flushes, files of dead workers are swept (multi-worker mode).
SWEEP_EVERY_TICKS = 10


async def flush_forever(service: Service) -> None:
    """Counters, expiry and (multi-worker) window export, also while no request arrives; and,
    with several workers, sweeping the files of workers that died without cleaning up."""
    ticks = 0
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
        for monitor in service.monitors:
            await run_in_threadpool(monitor.flush)
        await run_in_threadpool(_checkpoint, service)
        ticks += 1
        if service.multiprocess_dir is not None and ticks % SWEEP_EVERY_TICKS == 0:
            longest = max(s.seconds for s in service.config.monitoring.window_specs())
            await run_in_threadpool(sweep_dead_workers, service.multiprocess_dir, longest)


def _checkpoint(service: Service) -> None:
    """Move the outcome store's WAL into its database, off the request path. Never raises: a
    failure (a full disk) is counted like a failed write and shows in /readyz."""
    try:
        service.store.checkpoint()
    except (sqlite3.Error, OSError) as exc:
        service.monitor.store_failed(exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_workers(multiprocess_dir: Path, longest_window_seconds: float) -> list[int]:
    """Clean up after workers that are gone (crashed or killed); returns their pids.

    prometheus_client's ``mark_process_dead`` drops a dead worker's live-gauge files; its counter
    and histogram files stay, or the fleet's totals would drop. Its published windows stay until
    their newest data has left the longest window, then they are deleted.
    """
    dead: set[int] = set()
    for path in multiprocess_dir.glob("*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            dead.add(int(pid_text))
    for pid in sorted(dead):
        mark_dead(multiprocess_dir, pid)
    cutoff = time.time() - longest_window_seconds
    for path in (multiprocess_dir / "windows").glob("windows-*.npz"):
        pid_text = path.stem.rsplit("-", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            dead.add(int(pid_text))
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
    return sorted(dead)


def mark_dead(multiprocess_dir: Path, pid: int) -> None:
    """Drop the live-gauge files of worker ``pid``, which has stopped or died."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """Wipe and recreate the multiprocess directory: stale files would add old counts."""
    directory = data_dir / "prometheus-multiproc"
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "windows").mkdir(parents=True)
    return directory
