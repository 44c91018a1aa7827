"""uvicorn's worker supervisor, with a health check that notices a dead worker at once.

uvicorn pings each worker over a pipe and waits up to ``timeout_worker_healthcheck`` for the
answer. The supervisor keeps both ends of that pipe open, so a worker that dies after the
liveness check and before it answers never closes it: the wait runs its full length (60 s here,
set long so a slow-starting worker is not killed) before the dead worker is replaced, and the
supervisor handles no signal meanwhile. Waiting on the worker's exit sentinel as well ends the
wait the moment the worker is gone, and leaves the long timeout for workers that are merely slow.
"""

from __future__ import annotations

import pickle
from multiprocessing.connection import wait

from uvicorn.supervisors import multiprocess


class WatchedProcess(multiprocess.Process):
    """A uvicorn worker whose health check also ends when the worker exits."""

    def ping(self, timeout: float = 5) -> bool:
        try:
            self.parent_conn.send(b"ping")
            ready = wait([self.parent_conn, self.process.sentinel], timeout)
            if self.parent_conn in ready:
                self.parent_conn.recv()
                return True
            return False
        except (OSError, EOFError, pickle.UnpicklingError):
            return False


def use_watched_processes() -> None:
    """Make the supervisor start ``WatchedProcess`` workers (it names the class at call time)."""
    multiprocess.Process = WatchedProcess  # type: ignore[misc]
