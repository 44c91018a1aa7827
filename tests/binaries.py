"""Finding the real Prometheus/Alertmanager binaries for stack tests.

Without a binary a stack test skips, unless MODEL_EXPORTER_REQUIRE_BINARIES is set (CI sets it),
in which case it fails: a CI machine that silently skipped the stack would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

REQUIRE_ENV = "MODEL_EXPORTER_REQUIRE_BINARIES"


def require_binary(name: str) -> str:
    """Absolute path of ``name`` on PATH; skip (or fail under CI) when it is missing."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found on PATH (run `make tools` or `make test` to install it)"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a server the test started: SIGTERM, then SIGKILL if it does not exit in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
