"""The library's timer: flushes every monitor that asked for it, on its own thread.

A scrape only reads, so the counts a monitor holds back (the per-bin counts of its live tick,
flushed in one ``inc`` per counter instead of one per value) need a clock of their own to reach
the counters when traffic stops. The service has one (its background task); a library user
with ``prometheus_client.start_http_server`` has this: one daemon thread per process, started
with the first monitor that has a ``flush_interval`` and ended when no such monitor is left.
Monitors are held weakly, so the timer never keeps one alive.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None: ...


class _Timer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: weakref.WeakKeyDictionary[Flushable, tuple[float, float]] = (
            weakref.WeakKeyDictionary()
        )
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, monitor: Flushable, interval: float) -> None:
        with self._lock:
            self._due[monitor] = (interval, time.monotonic() + interval)
            if self._thread is None or not self._thread.is_alive():
                self._start()
            else:
                self._wake.set()  # a shorter interval than the thread sleeps for

    def discard(self, monitor: Flushable) -> None:
        with self._lock:
            self._due.pop(monitor, None)

    def _start(self) -> None:
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-monitor-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._due:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [m for m, (_, at) in self._due.items() if at <= now]
                for monitor in due:
                    interval = self._due[monitor][0]
                    self._due[monitor] = (interval, now + interval)
                wait = max(0.01, min(at for _, at in self._due.values()) - now)
            for monitor in due:
                monitor.flush()  # never raises; counts its own failures
            del due
            self._wake.wait(wait)
            self._wake.clear()

    def after_fork_in_child(self) -> None:
        """A forked child has none of the parent's threads: start its own timer if monitors
        came with it (a server that imports the model before forking its workers)."""
        self._lock = threading.Lock()
        self._thread = None
        if len(self._due):
            self._start()


TIMER = _Timer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=TIMER.after_fork_in_child)
