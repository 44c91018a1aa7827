"""Shadow versions: run on the features of a share of the requests after the primary has
answered, recorded by their own monitor, never returned, never able to slow or fail the answer.

A shadow's calls run on threads of its own, never on the thread pool the primary's predictions
and the request handlers use: a shadow that hangs holds its own threads only. At most
``max_concurrency`` calls are in flight per worker (a call stays in flight until its thread is
back, even past its timeout, so a hanging shadow cannot pile up threads); when they all are, the
call is skipped and counted in ``model_shadow_skipped_total``. A call still running after
``timeout_seconds`` is counted then as an error of the shadow (``ShadowTimeout``), and its late
answer is dropped. Its predictions wait for their ground truth under the id of the primary's
prediction followed by ``~`` and the shadow's version, so one feedback resolves both.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from exporter._calls import Instrumented
from exporter.errors import ExporterError
from exporter.outcomes import PendingPrediction, StoreError
from exporter.server._versions import Version, shadow_id

log = logging.getLogger("exporter.server")

RunModel = Callable[[Callable[[Mapping[str, Any]], Any], dict[str, Any]], tuple[Any, Any]]


class ShadowTimeout(ExporterError):
    """A shadow's call still running after its ``timeout_seconds`` (counted under this name
    as an error of the shadow; its answer, if it ever comes, is dropped)."""


class _Call:
    """One shadow call; whoever settles it first (its thread, or the timeout) accounts for it."""

    __slots__ = ("features", "prediction_id", "started", "_settled", "_lock")

    def __init__(self, features: dict[str, Any], prediction_id: str) -> None:
        self.features, self.prediction_id = features, prediction_id
        self.started = time.perf_counter()
        self._settled = False
        self._lock = threading.Lock()

    def settle(self) -> bool:
        """True for the first caller only."""
        with self._lock:
            first, self._settled = not self._settled, True
            return first


_STOP = object()


class ShadowRunner:
    """The calls of one shadow version in one worker."""

    def __init__(
        self,
        version: Version,
        caller: Instrumented,
        run_model: RunModel,
        skipped: Any,
        remember: Callable[[PendingPrediction], None],
    ) -> None:
        candidate = version.candidate
        assert candidate is not None and version.role == "shadow"
        self.version, self.caller, self.run_model = version, caller, run_model
        self.skipped, self.remember = skipped, remember
        self.share, self.timeout = candidate.share, candidate.timeout
        self.concurrency = candidate.concurrency
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._started = threading.Lock()
        self._logged: set[str] = set()

    def sampled(self) -> bool:
        """Whether this request is one of the share the shadow sees."""
        return self.share >= 1.0 or random.random() < self.share

    def submit(self, features: dict[str, Any], primary_id: str) -> bool:
        """Start a shadow call on ``features`` and return at once (on the event loop): False
        when ``max_concurrency`` calls are in flight (the call is skipped and counted). Never
        raises into the request."""
        if not self._slots.acquire(blocking=False):
            self.skipped.inc()
            return False
        try:
            self._start_threads()
            call = _Call(features, shadow_id(primary_id, self.version.name))
            asyncio.get_running_loop().call_later(self.timeout, self._timed_out, call)
            self._queue.put(call)
        except Exception:  # the shadow's trouble is never the answer's (no thread left, say)
            self._slots.release()
            log.exception("shadow %s: the call could not be started", self.version.name)
            return False
        return True

    def close(self) -> None:
        """Let the threads end once their current call is back (they are daemons: a hanging
        shadow does not hold the process at exit)."""
        for _ in self._threads:
            self._queue.put(_STOP)

    def start(self) -> None:
        """Start the threads now (at the app's start) rather than on the first call."""
        self._start_threads()

    def _start_threads(self) -> None:
        if self._threads:
            return
        with self._started:
            if self._threads:
                return
            for i in range(self.concurrency):
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"shadow-{self.version.name}-{i}")  # fmt: skip
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            if call is _STOP:
                return
            try:
                self._run(call)
            except Exception:  # a bug here must not end the thread nor touch the primary
                log.exception("shadow %s: accounting failed", self.version.name)
            finally:
                self._slots.release()

    def _run(self, call: _Call) -> None:
        try:
            result = self.run_model(self.version.predict, call.features)
        except Exception as exc:
            if call.settle():
                self.caller.failed(exc, time.perf_counter() - call.started)
                self._log_once(exc)
            return
        if not call.settle():
            return  # past its timeout, already counted: the late answer is dropped
        answered = self.caller.succeeded((self.version.predict, call.features), {}, result,
                                         time.perf_counter() - call.started)  # fmt: skip
        if answered.prediction_id is None:
            return
        monitor = self.version.monitor
        pending = monitor.pending(call.prediction_id, answered.prediction, answered.confidence)
        if pending is None:
            return
        try:
            self.remember(pending)
        except (StoreError, sqlite3.Error, OSError) as exc:
            monitor.store_failed(exc)

    def _timed_out(self, call: _Call) -> None:
        """On the event loop, ``timeout_seconds`` after the call was submitted."""
        if call.settle():
            error = ShadowTimeout(f"shadow {self.version.name} took over {self.timeout} s")
            self.caller.failed(error, time.perf_counter() - call.started)
            self._log_once(error)

    def _log_once(self, exc: Exception) -> None:
        # Named as the shadow's, once per kind: a failing shadow must not flood the log, and
        # its failures are never the primary's.
        kind = getattr(exc, "error_kind", None) or type(exc).__name__
        if kind not in self._logged and len(self._logged) < 20:
            self._logged.add(kind)
            log.warning(
                "shadow version %s of model %s raised %s (counted as its errors; logged once "
                "per kind)", self.version.name, self.version.monitor.name, kind,
            )  # fmt: skip
