"""A real Pushgateway for tests, on a free port of 127.0.0.1, stopped by the test."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.binaries import free_port, require_binary, terminate, wait_until_ready


@contextmanager
def pushgateway(directory: Path) -> Iterator[str]:
    """Start ``prometheus-pushgateway``; yields its URL."""
    binary = require_binary("prometheus-pushgateway")
    port = free_port()
    log = directory / "pushgateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            # Debian's build persists to /var/lib/prometheus by default: each test its own file.
            [binary, f"--web.listen-address=127.0.0.1:{port}",
             f"--persistence.file={directory / 'pushgateway.data'}"],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/-/ready", process, log, "pushgateway")
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate(process)


def gateway_samples(url: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of ``name`` as the gateway serves them to Prometheus."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[frozenset(sample.labels.items())] = sample.value
    return out


def total(samples: dict[frozenset[tuple[str, str]], float], **labels: str) -> float:
    """The sum of the samples carrying all of ``labels``."""
    return sum(v for k, v in samples.items() if set(labels.items()) <= k)
