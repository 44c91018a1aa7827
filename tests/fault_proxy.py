"""An HTTP proxy that fails webhook deliveries on demand, for tests/test_faults_stack.py.

It sits between Alertmanager and the real receiver and, per request, either forwards it, answers
500 without forwarding (the receiver is unreachable or broken), or forwards it and still answers
500 (the receiver stored the notification but its acknowledgement was lost, so Alertmanager must
retry something that already arrived). A receiver it cannot reach gets Alertmanager a 502. The
test switches the mode while Alertmanager retries, and every request is recorded with the alerts
it carried and what the receiver answered.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

#: What the proxy answers instead of the receiver; Alertmanager retries any 5xx.
FAILURE_STATUS = 500
#: What it answers when the receiver cannot be reached.
UNREACHABLE_STATUS = 502
#: Headers passed on to the receiver (the bearer token and the body's type).
FORWARDED_HEADERS = ("Authorization", "Content-Type")


class Mode(Enum):
    FORWARD = "forward"
    #: Answer 500 without forwarding: the notification never reaches the receiver.
    REFUSE = "refuse"
    #: Forward, then answer 500 whatever the receiver said: delivered, but not acknowledged.
    LOSE_ACK = "lose_ack"


@dataclass(frozen=True)
class ProxiedRequest:
    """One webhook post as the proxy saw it."""

    at: float
    mode: Mode
    group_key: str
    #: (fingerprint, status) of each alert in the notification.
    alerts: tuple[tuple[str, str], ...]
    #: What Alertmanager got back.
    answered: int
    #: The receiver's status and JSON answer; None when the proxy did not forward.
    upstream_status: int | None
    upstream_body: dict[str, Any] | None


class FaultProxy(ThreadingHTTPServer):
    """Proxies POSTs on 127.0.0.1 to ``upstream`` (a base URL), failing them as ``mode`` says."""

    daemon_threads = True

    def __init__(self, upstream: str, mode: Mode = Mode.FORWARD) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.mode = mode
        self._client = httpx.Client(base_url=upstream, timeout=10)
        self._lock = threading.Lock()
        self._requests: list[ProxiedRequest] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self, mode: Mode | None = None) -> list[ProxiedRequest]:
        """The requests so far, oldest first (only those handled in ``mode`` if given)."""
        with self._lock:
            return [r for r in self._requests if mode is None or r.mode is mode]

    def record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def forward(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self._client.post(path, content=body, headers=headers)

    def server_close(self) -> None:
        super().server_close()
        self._client.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: FaultProxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        mode = self.server.mode  # read once: the test may switch it meanwhile
        upstream: httpx.Response | None = None
        status, reply = FAILURE_STATUS, b'{"detail": "injected failure"}'
        if mode is not Mode.REFUSE:
            headers = {k: v for k in FORWARDED_HEADERS if (v := self.headers.get(k)) is not None}
            try:
                upstream = self.server.forward(self.path, body, headers)
            except httpx.HTTPError:  # the receiver is down: a gateway's answer
                status, reply = UNREACHABLE_STATUS, b'{"detail": "receiver unreachable"}'
        if upstream is not None and mode is Mode.FORWARD:
            status, reply = upstream.status_code, upstream.content
        self.server.record(_describe(mode, body, status, upstream))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of access logs."""


def _describe(
    mode: Mode, body: bytes, answered: int, upstream: httpx.Response | None
) -> ProxiedRequest:
    payload = json.loads(body)
    upstream_body = None
    if upstream is not None and upstream.headers.get("content-type") == "application/json":
        upstream_body = upstream.json()
    return ProxiedRequest(
        at=time.time(),
        mode=mode,
        group_key=str(payload.get("groupKey", "")),
        alerts=tuple((a["fingerprint"], a["status"]) for a in payload.get("alerts", [])),
        answered=answered,
        upstream_status=None if upstream is None else upstream.status_code,
        upstream_body=upstream_body,
    )
