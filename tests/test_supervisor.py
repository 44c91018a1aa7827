"""The workers' supervisor notices a dead worker without waiting out the health-check timeout."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from exporter.supervisor import WatchedProcess

HOUR = 3600.0


def answer_one_ping(conn: Connection) -> None:
    conn.recv()
    conn.send(True)


def exit_at_once() -> None:
    return None


def watched(target: Callable[..., None], with_pipe_end: bool) -> WatchedProcess:
    """A ``WatchedProcess`` around a plain child process (no uvicorn server needed)."""
    process = WatchedProcess.__new__(WatchedProcess)
    process.parent_conn, process.child_conn = multiprocessing.Pipe()
    args = (process.child_conn,) if with_pipe_end else ()
    process.process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.process.start()
    return process


def ping_in_thread(process: WatchedProcess, timeout: float) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(process.ping(timeout)), daemon=True)
    thread.start()
    return thread, result


def test_a_worker_that_answers_is_alive() -> None:
    process = watched(answer_one_ping, with_pipe_end=True)
    try:
        assert process.ping(timeout=HOUR) is True
    finally:
        process.process.join(timeout=30)


def test_a_dead_worker_ends_the_health_check_at_once() -> None:
    # uvicorn's own ping would wait the whole hour: the supervisor holds the pipe's other end.
    process = watched(exit_at_once, with_pipe_end=False)
    process.process.join(timeout=30)
    thread, result = ping_in_thread(process, timeout=HOUR)
    thread.join(timeout=30)
    assert not thread.is_alive(), "ping waited for the timeout although the worker had exited"
    assert result == [False]
