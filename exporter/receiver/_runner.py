"""The action runner: durable work from the alert store, a bounded queue and a bounded shutdown.

An alert with an action is committed together with a pending row in the alert store
(:meth:`AlertStore.record`), so the store is the real queue. The runner keeps at most
``queue_size`` of them in memory for its worker threads; one that finds the queue full is counted
(``on_deferred``) and stays in the store, and the workers fetch it when the queue has room again.
A run that ends with an outcome (success, failure or timeout) is marked done; one that never
started, or that shutdown had to kill, is run again by the next receiver on the same store.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Mapping

from exporter.receiver._actions import (
    AlertAction,
    Outcome,
    kill_group,
    run_action,
)
from exporter.receiver.store import AlertStore, PendingAction

log = logging.getLogger("exporter.receiver")

#: Actions running at the same time.
ACTION_WORKERS = 4
#: Pending actions held in memory; more wait in the alert store until there is room.
ACTION_QUEUE_SIZE = 100
#: How long shutdown keeps running queued actions; then the running ones are killed and all that
#: did not finish stays pending for the next start. Below a typical 30 s termination grace.
DEFAULT_SHUTDOWN_SECONDS = 20.0
#: How often an idle worker looks for pending actions that did not fit into the queue.
_IDLE_POLL_SECONDS = 0.5


class ActionRunner:
    """Runs the store's pending actions on worker threads; the webhook answer never waits."""

    def __init__(
        self,
        actions: Mapping[str, AlertAction],
        store: AlertStore,
        on_outcome: Callable[[str, Outcome], None],
        *,
        on_deferred: Callable[[], None] = lambda: None,
        workers: int = ACTION_WORKERS,
        queue_size: int = ACTION_QUEUE_SIZE,
        shutdown_seconds: float = DEFAULT_SHUTDOWN_SECONDS,
    ) -> None:
        self._actions = dict(actions)
        self._store = store
        self._on_outcome = on_outcome
        self._on_deferred = on_deferred
        self._workers = workers
        self._shutdown_seconds = shutdown_seconds
        self._queue: queue.Queue[PendingAction] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        #: Alert ids queued or running here: a refill from the store skips them.
        self._known: set[int] = set()
        #: Running commands by alert id, for shutdown to kill.
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()
        #: Pending actions may wait in the store (after a start or an overflow).
        self._backlog = True
        self._refilling = threading.Lock()
        self._stopping = threading.Event()
        #: Set by close(): after it no action starts, and a running one is killed.
        self._deadline = float("inf")
        self._threads: list[threading.Thread] = []

    def action_for(self, alertname: str, status: str) -> AlertAction | None:
        action = self._actions.get(alertname)
        return action if action is not None and status in action.on else None

    def start(self) -> None:
        """Start the workers, which first take what an earlier process left pending."""
        if not self._actions or self._threads:
            return
        self._refill()
        waiting = self._queue.qsize()
        if waiting:
            log.info("%d pending action(s) from before this start queued again", waiting)
        for number in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"alert-action-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, pending: PendingAction) -> None:
        """Queue an action its alert's transaction made pending; never raises or blocks. When
        the queue is full (counted by ``on_deferred``) or shutdown has begun, the action stays
        in the store for later."""
        if self._actions and self._offer(pending) is False:
            self._on_deferred()

    def _offer(self, pending: PendingAction) -> bool | None:
        """Queue ``pending``: ``True`` when queued, ``False`` when the queue is full, ``None``
        when it is already queued or running, or shutdown has begun."""
        with self._lock:
            if pending.alert_id in self._known or self._stopping.is_set():
                return None
            try:
                self._queue.put_nowait(pending)
            except queue.Full:
                self._backlog = True
                return False
            self._known.add(pending.alert_id)
            return True

    def _refill(self) -> None:
        """Move pending actions from the store into the queue while it has room."""
        if not self._refilling.acquire(blocking=False):
            return  # another worker is at it
        try:
            with self._lock:
                room = self._queue.maxsize - self._queue.qsize()
                skip = set(self._known)
                self._backlog = False
            if room <= 0:
                self._backlog = True
                return
            try:
                found = self._store.pending_actions(room, skip=skip)
            except sqlite3.Error as exc:
                log.error("pending actions could not be read from the alert store: %s", exc)
                self._backlog = True
                return
            if len(found) == room:
                self._backlog = True  # there may be more
            for pending in found:
                if self._offer(pending) is False:
                    break
        finally:
            self._refilling.release()

    def _work(self) -> None:
        while True:
            try:
                pending = self._queue.get(timeout=_IDLE_POLL_SECONDS)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                if self._backlog:
                    self._refill()
                continue
            if self._stopping.is_set() and time.monotonic() >= self._deadline:
                return  # left pending in the store for the next start
            self._run(pending)
            if self._backlog and not self._stopping.is_set():
                if self._queue.qsize() <= self._queue.maxsize // 2:
                    self._refill()

    def _run(self, pending: PendingAction) -> None:
        action = self.action_for(pending.alertname, pending.status)
        if action is None:  # the actions file changed since the alert was stored
            log.info("no action for %s %s any more", pending.alertname, pending.status)
            self._finish(pending, "skipped")
            return

        def started(process: subprocess.Popen[bytes]) -> None:
            with self._lock:
                self._running[pending.alert_id] = process
            if self._stopping.is_set() and time.monotonic() >= self._deadline:
                self._kill(pending.alert_id)

        try:
            outcome = run_action(
                action, pending.alert_json.encode("ascii") + b"\n", key=pending.key, started=started
            )
        except Exception:
            log.exception("action for %s failed inside the receiver", pending.alertname)
            outcome = "failure"
        with self._lock:
            self._running.pop(pending.alert_id, None)
            killed = pending.alert_id in self._killed
        if killed:
            log.warning(
                "action for %s stopped by shutdown; it stays pending for the next start",
                pending.alertname,
            )
            with self._lock:
                self._known.discard(pending.alert_id)
            return
        self._finish(pending, outcome)
        self._on_outcome(pending.alertname, outcome)

    def _finish(self, pending: PendingAction, outcome: str) -> None:
        try:
            self._store.finish_action(pending.alert_id, outcome)
        except sqlite3.Error as exc:
            # It stays pending, and known here so that this process does not run it again; the
            # next start does, with the same idempotency key.
            log.error("action for %s could not be marked done: %s", pending.alertname, exc)
            return
        with self._lock:
            self._known.discard(pending.alert_id)

    def _kill(self, alert_id: int) -> None:
        with self._lock:
            process = self._running.get(alert_id)
            if process is None:
                return
            self._killed.add(alert_id)
        kill_group(process)

    def close(self) -> None:
        """Stop within ``shutdown_seconds`` (plus a second to reap): queued actions keep running
        until then, the ones still running are killed, and all unfinished stay pending."""
        self._deadline = time.monotonic() + self._shutdown_seconds
        self._stopping.set()
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.monotonic()))
        with self._lock:
            running = list(self._running)
            left = len(self._known)  # queued, running or in a worker's hand: all pending
        for alert_id in running:
            self._kill(alert_id)
        for thread in self._threads:
            thread.join(1.0)
        if left:
            log.warning(
                "shutdown after %s s left %d action(s) pending for the next start",
                self._shutdown_seconds,
                left,
            )
