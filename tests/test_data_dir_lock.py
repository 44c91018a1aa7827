"""One `model-exporter serve` per data directory: a second one fails in one line, touching nothing.

Before the lock, a second `serve` on the same --data-dir cleared the multiprocess counter files
before it tried to bind, even when binding then failed ("Address already in use"): the running
service's /metrics lost its counters and histograms, and new predictions never showed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.binaries import free_port
from tests.service_fixtures import ROOT, live_server, write_setup


def _predictions(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "model_predictions_total"
    )


def _serve(config: Path, data: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", "serve", "--config", str(config), "--data-dir",
         str(data), "--port", str(port), "--workers", "2", "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_a_second_serve_on_the_same_data_dir_fails_in_one_line_and_touches_nothing(
    tmp_path: Path,
) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    with live_server(config, data, workers=2) as (url, _):
        for i in range(20):
            response = httpx.post(f"{url}/predict", json={"features": {"miles": float(i)}})
            assert response.status_code == 200
        assert _predictions(url) == 20
        files = sorted(p.name for p in data.rglob("*") if p.is_file())

        # On the running service's own port (the review's case) and on a free one.
        port = urlparse(url).port
        assert port is not None
        for attempt in (port, free_port()):
            result = _serve(config, data, attempt)
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert "in use by another model-exporter serve" in result.stderr
            assert str(data) in result.stderr

        # Nothing was removed (the running workers may have published new window files).
        assert set(files) <= {p.name for p in data.rglob("*") if p.is_file()}
        assert _predictions(url) == 20
        httpx.post(f"{url}/predict", json={"features": {"miles": 1.0}}).raise_for_status()
        assert _predictions(url) == 21


def test_the_data_dir_is_free_again_once_the_service_stops(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    with live_server(config, data):
        pass
    with live_server(config, data) as (url, _):
        httpx.post(f"{url}/predict", json={"features": {"miles": 1.0}}).raise_for_status()
