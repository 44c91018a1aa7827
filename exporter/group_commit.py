"""Group commit: many requests' pending predictions written in one SQLite transaction.

Requests append their prediction to the current batch and wait on the batch's future; one task
on the event loop writes a whole batch per transaction and then wakes every request of that
batch. Under load one commit serves dozens of requests; at low traffic a batch is a single
prediction and the wait is one commit. A request is answered only after its prediction is in the
file, so an acknowledged prediction survives ``kill -9`` just as with one commit per request.

The batch is written on the loop itself when the store's write lock is free (a WAL commit with
``synchronous=NORMAL`` is a ``write()`` of a few pages, tens of microseconds, and never sleeps on
a lock): the hop to a worker thread and back cost more than the write, up to a GIL switch
interval (5 ms) per batch, which was a quarter of ``/predict``'s throughput. Only when another
connection (another worker, a feedback or expiry transaction) holds the lock does the batch go
to a thread that waits for it, so the loop never blocks on a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from exporter.outcomes import OutcomeStore, PendingPrediction


class GroupCommitter:
    """Batches writes to an :class:`OutcomeStore`; never raises into a request."""

    def __init__(
        self,
        store: OutcomeStore,
        *,
        on_error: Callable[[BaseException], None],
        on_success: Callable[[], None],
    ) -> None:
        self._store = store
        self._on_error = on_error
        self._on_success = on_success
        self._items: list[PendingPrediction] = []
        self._done: asyncio.Future[None] | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, pending: PendingPrediction) -> None:
        """Return once ``pending`` is committed (or its write failed and was counted)."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        assert self._wake is not None
        if self._done is None:
            self._done = loop.create_future()
        done = self._done
        self._items.append(pending)
        self._wake.set()
        await asyncio.shield(done)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            # No waiting to gather: while one batch is being written, the next one fills up.
            self._wake.clear()
            await self._write_batch()

    async def _write_batch(self) -> None:
        items, self._items = self._items, []
        done, self._done = self._done, None
        if not items:
            return
        try:
            if not self._store.try_remember_many(items):
                await asyncio.to_thread(self._store.remember_many, items)
            self._on_success()
        except Exception as exc:  # a full or read-only disk: count it, serve anyway
            self._on_error(exc)
        finally:
            if done is not None and not done.done():
                done.set_result(None)

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._write_batch()
