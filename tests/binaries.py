"""Finding the real Prometheus/Alertmanager binaries for stack tests.

Without a binary a stack test skips, unless MODEL_EXPORTER_REQUIRE_BINARIES is set (CI sets it),
in which case it fails: a CI machine that silently skipped the stack would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

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


def wait_until_ready(
    ready_url: str, process: subprocess.Popen[bytes], log: Path, name: str, timeout: float = 60
) -> None:
    """Poll ``ready_url`` until it answers 200; fail with the server's log if it exits or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            exc.close()
        except OSError:  # refused, reset or timed out while the server starts
            pass
        time.sleep(0.05)
    pytest.fail(f"{name} not ready after {timeout} s:\n{log.read_text()}")
