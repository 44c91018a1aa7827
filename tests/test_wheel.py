"""The package as ``pip install model-exporter`` gives it: a wheel in a clean venv, no extras.

The wheel is built from this checkout the way the Dockerfile builds it (``pip wheel --no-deps``)
and installed into a new virtual environment without the dev extra, then used from a directory
outside the checkout, so nothing of the source tree can stand in for a file the wheel misses.
Every subcommand's ``--help`` must work, ``baseline`` must profile data with the packaged demo
model, ``serve`` must serve the fare example for real, ``receiver`` must start, ``demo`` must
send traffic, and ``demo-stack`` (which needs the repository's rule files) must say so in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.demo_models import fare
from tests.binaries import free_port, wait_until_ready
from tests.service_fixtures import ROOT, stop

SUBCOMMANDS = ("baseline", "serve", "receiver", "demo", "demo-stack", "backtest", "generate")
INSTALL_TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``bin`` directory of a clean venv with the wheel installed, without extras."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True, timeout=INSTALL_TIMEOUT_SECONDS, cwd=base,
    )  # fmt: skip
    wheels = list(dist.glob("model_exporter-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(wheels[0])],
        check=True, timeout=INSTALL_TIMEOUT_SECONDS, cwd=base,
    )  # fmt: skip
    yield venv / "bin"


def _run(
    bin_dir: Path, *argv: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(bin_dir / "model-exporter"), *argv],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_the_wheel_installs_the_package_and_not_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(installed / "python"), "-c",
         "import exporter, importlib.metadata as m; print(exporter.__file__);"
         "print(m.metadata('model-exporter')['License-Expression'])"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    location, license_expression = result.stdout.split()
    assert Path(location).is_relative_to(installed.parent), location
    assert license_expression == "Apache-2.0"
    # Type checkers read the package's annotations (PEP 561).
    assert (Path(location).parent / "py.typed").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_every_subcommand_helps_without_extras(
    installed: Path, tmp_path: Path, command: str | None
) -> None:
    result = _run(installed, *([command] if command else []), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "usage: model-exporter" in result.stdout


@pytest.mark.slow
def test_baseline_profiles_data_with_the_packaged_model(installed: Path, tmp_path: Path) -> None:
    trips = fare.synthetic_trips(500, seed=1)
    trips.to_csv(tmp_path / "trips.csv", index=False)
    result = _run(
        installed, "baseline", "--data", "trips.csv", "--numeric", ",".join(fare.FEATURES),
        "--label", "fare", "--model", "exporter.demo_models.fare:predict",
        "--out", "reference.json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    profile = json.loads((tmp_path / "reference.json").read_text())
    assert set(profile["features"]) == set(fare.FEATURES)
    assert profile["output"]["kind"] == "numeric"


@pytest.mark.slow
def test_serve_receiver_and_demo_run_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    port, receiver_port = free_port(), free_port()
    config = ROOT / "examples" / "fare" / "monitor.yml"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [str(installed / "model-exporter"), "serve", "--config", str(config),
             "--port", str(port), "--data-dir", "data"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    token = tmp_path / "token"
    token.write_text("a-receiver-token-of-enough-length\n")
    token.chmod(0o600)
    receiver_log = tmp_path / "receiver.log"
    with open(receiver_log, "wb") as out:
        receiver = subprocess.Popen(
            [str(installed / "model-exporter"), "receiver", "--port", str(receiver_port),
             "--data-dir", "alerts", "--token-file", str(token)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/readyz", serve, log, "serve")
        wait_until_ready(
            f"http://127.0.0.1:{receiver_port}/healthz", receiver, receiver_log, "receiver"
        )
        trip = fare.synthetic_trips(1, seed=2).iloc[0]
        answer = httpx.post(
            f"{url}/predict",
            json={"features": {name: float(trip[name]) for name in fare.FEATURES}},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "fare"
        result = _run(
            installed, "demo", "--target", url, "--scenario", "steady", "--duration", "3",
            "--rate", "10", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "done in" in result.stdout
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'model_predictions_total{confidence_bucket="none"' in metrics
        assert (tmp_path / "data").is_dir()
    finally:
        stop(serve)
        stop(receiver)


@pytest.mark.slow
def test_generate_from_the_wheel_writes_a_sites_rules_alertmanager_and_dashboards(
    installed: Path, tmp_path: Path
) -> None:
    """A site adopts the stack from the installed package alone: its settings, one command."""
    settings = tmp_path / "site.yml"
    settings.write_text('selector: job="fares"\nfleet_labels: [region]\n', encoding="utf-8")
    result = _run(installed, "generate", "--settings", str(settings), "--out", "site",
                  cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    site = tmp_path / "site"
    expected = ("prometheus/rules/recording.yml", "prometheus/rules/alerts.yml",
                "deploy/kubernetes/prometheusrule.yaml", "alertmanager/model-exporter.yml",
                "alertmanager/alertmanager.yml", "grafana/dashboards/model-drift.json")  # fmt: skip
    for path in expected:
        assert (site / path).is_file(), path
    assert 'job="fares"' in (site / "prometheus/rules/alerts.yml").read_text(encoding="utf-8")
    assert not (site / "docs").exists(), "the project's own docs are not a site's artefact"
    checked = _run(installed, "generate", "--settings", str(settings), "--out", "site", "--check",
                   cwd=tmp_path)  # fmt: skip
    assert checked.returncode == 0, checked.stderr


@pytest.mark.slow
def test_demo_stack_from_the_wheel_says_it_needs_a_checkout(
    installed: Path, tmp_path: Path
) -> None:
    result = _run(installed, "demo-stack", "--duration", "5", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "needs a checkout of the repository" in result.stderr
