"""Slow and piled-up connections against a real `model-exporter serve` (1 and 2 workers).

Before these limits, a client that sent half a request line kept its connection forever (20 of
20 still open after 30 s in a review), and 300 of them made /healthz time out with EMFILE in the
log. The attacking sockets here come from other loopback addresses (127.0.0.2, 127.0.0.3) than
the health probe (127.0.0.1), as they would from another host.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.service_fixtures import live_server, write_setup
from tests.test_receiver import receiver_process

#: A request cut short: the headers never end.
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
#: Longest wait for the server to close a connection: the configured 1 s deadline plus slack for
#: a busy machine. It bounds the test, it does not time the server.
CLOSE_WAIT_SECONDS = 20.0


def _setup(tmp_path: Path, **service: object) -> Path:
    config = write_setup(tmp_path, "regression")
    document = yaml.safe_load(config.read_text())
    document["service"].update(service)
    config.write_text(yaml.safe_dump(document))
    return config


def _connect(url: str, source: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    return sock


def _closed_by_server(sock: socket.socket, timeout: float = CLOSE_WAIT_SECONDS) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_whose_headers_never_end_is_closed(tmp_path: Path, workers: int) -> None:
    config = _setup(tmp_path, header_timeout_seconds=1)
    with live_server(config, tmp_path / "data", workers=workers) as (url, _), _sockets() as held:
        silent = _connect(url, "127.0.0.2")  # connects and sends nothing
        half = _connect(url, "127.0.0.2")
        half.sendall(HALF_REQUEST)
        held += [silent, half]
        assert _closed_by_server(silent)
        assert _closed_by_server(half)
        # A kept-alive client that behaves is not affected.
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
                time.sleep(0.5)


def test_a_trickle_of_header_bytes_does_not_extend_the_deadline(tmp_path: Path) -> None:
    config = _setup(tmp_path, header_timeout_seconds=1)
    with live_server(config, tmp_path / "data") as (url, _), _sockets() as held:
        sock = _connect(url, "127.0.0.2")
        held.append(sock)
        closed = False
        for byte in HALF_REQUEST * 4:  # one byte every 0.1 s: about 20 s in all
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        assert closed or _closed_by_server(sock, timeout=1)


def _count_closed(socks: list[socket.socket], expected: int) -> int:
    """How many of ``socks`` the server has closed, waiting until ``expected`` are (or a bound
    of CLOSE_WAIT_SECONDS passes) and then a little more, so an extra close would be seen too."""
    closed: set[int] = set()
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    settled = None
    while time.monotonic() < deadline:
        for index, sock in enumerate(socks):
            if index not in closed and _closed_by_server(sock, timeout=0.001):
                closed.add(index)
        if len(closed) >= expected:
            settled = settled or time.monotonic() + 1.0
            if time.monotonic() > settled:
                break
        time.sleep(0.05)
    return len(closed)


def _health(url: str) -> int:
    """/healthz's status, retried for a few seconds while the server notices closed sockets."""
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    while True:
        try:
            return httpx.get(f"{url}/healthz", timeout=10).status_code
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_connections_are_bounded_per_client_and_in_total(tmp_path: Path) -> None:
    config = _setup(
        tmp_path, header_timeout_seconds=60, max_connections_per_client=20, max_connections=30
    )
    with live_server(config, tmp_path / "data") as (url, _), _sockets() as held:
        hanging = []
        for _ in range(300):
            sock = _connect(url, "127.0.0.2")
            with contextlib.suppress(OSError):
                sock.sendall(HALF_REQUEST)
            hanging.append(sock)
        held += hanging
        assert _count_closed(hanging, 280) == 280  # all but the 20 one client may hold
        others = [_connect(url, "127.0.0.3") for _ in range(30)]
        held += others
        assert _count_closed(others, 20) == 20  # 10 more fill the 30 in total
        for sock in others:
            sock.close()
        # With the total bound free again, /healthz answers while 20 connections still hang.
        assert _health(url) == 200
        assert _count_closed(hanging, 280) == 280
    log = next(tmp_path.glob("serve-*.log")).read_text()
    assert "EMFILE" not in log and "Too many open files" not in log
    assert "over the limits" in log


def test_the_receiver_closes_a_request_whose_headers_never_end(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("receiver-token-0123456789abcdef\n")
    token.chmod(0o600)
    with receiver_process(tmp_path / "data", token, tmp_path / "receiver.log") as url:
        with _sockets() as held:
            half = _connect(url, "127.0.0.2")
            half.sendall(b"POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            held.append(half)
            assert _closed_by_server(half)  # after the default 5 s
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
