"""Connection limits for the HTTP servers: a deadline for request headers, and bounded connections.

uvicorn has no timeout for a request whose headers never finish: a client that sends half a
request line and then nothing keeps its socket, and its file descriptor, for as long as it likes.
In a review 20 of 20 such connections were still open after 30 s, and 300 of them made
``/healthz`` time out while the log filled with ``EMFILE``. This module gives the HTTP protocol
three bounds, per server process:

- the headers of every request must be complete within ``header_timeout_seconds`` of the
  connection opening or of the request's first byte (a kept-alive connection's idle time is
  already bounded by uvicorn's keep-alive timeout);
- at most ``max_connections`` open connections, and at most ``max_connections_per_client`` from
  one client address (0 turns that bound off: behind a proxy or a load balancer every request
  comes from its few addresses, so raise it or turn it off there).

A connection over a bound is closed at once, before anything is read from it; one past its
header deadline is closed then. Both are logged as a warning at most once a minute, with counts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: Seconds between two warnings about refused or timed-out connections.
WARNING_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_seconds: float = 5.0
    max_connections: int = 1000
    max_connections_per_client: int = 100


@dataclass
class ConnectionBook:
    """The open connections of one server process, by client address, and what was refused.

    Picklable, so the supervisor can hand it to each worker inside the uvicorn config: every
    worker then keeps its own book (the limits are per process).
    """

    limits: ConnectionLimits
    total: int = 0
    by_client: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    timed_out: int = 0
    _last_warning: float = 0.0

    def admit(self, client: str) -> bool:
        per_client = self.limits.max_connections_per_client
        if self.total >= self.limits.max_connections or (
            per_client and self.by_client[client] >= per_client
        ):
            self.refused += 1
            self._warn()
            return False
        self.total += 1
        self.by_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    def header_timeout(self) -> None:
        self.timed_out += 1
        self._warn()

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARNING_INTERVAL_SECONDS:
            return
        self._last_warning = now
        log.warning(
            "connections closed so far: %d over the limits (%d in total, %d per client), %d "
            "whose request headers took longer than %g s; %d open now",
            self.refused, self.limits.max_connections, self.limits.max_connections_per_client,
            self.timed_out, self.limits.header_timeout_seconds, self.total,
        )  # fmt: skip


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits of a :class:`ConnectionBook`."""

    def __init__(self, *args: Any, book: ConnectionBook, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._book = book
        self._admitted: str | None = None
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        client = self.client[0] if self.client else ""
        if not self._book.admit(client):
            transport.abort()
            return
        self._admitted = client
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self._awaiting_headers():
            self._arm_header_deadline()  # the first bytes of a kept-alive connection's next request
        super().data_received(data)
        if not self._awaiting_headers():
            self._cancel_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        if self._admitted is not None:
            self._book.release(self._admitted)
            self._admitted = None
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(
            self._book.limits.header_timeout_seconds, self._headers_too_slow
        )

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self._book.header_timeout()
            self.transport.close()


def guarded_http(limits: ConnectionLimits) -> Any:
    """What uvicorn's ``http`` setting takes to use :class:`GuardedH11Protocol` with ``limits``:
    the class with its book bound, which uvicorn calls with its own arguments."""
    return functools.partial(GuardedH11Protocol, book=ConnectionBook(limits))
