"""The ``canary`` demo scenario on a light stack: a real ``model-exporter serve`` of
``examples/fare/monitor-canary.yml``, a real Prometheus with the project's rules, the demo's own
canary traffic and ground truth, and ``model-exporter status`` reading that Prometheus.

``make demo SCENARIO=canary`` takes minutes (a canary answering 10% of 20 requests/s needs 150 s
for the comparison's 300 outcomes, then the demo's 30 s ``for:``). Here the same config answers
half the requests from its canary, the traffic runs at 40 requests/s with ground truth 0.2 s after
each answer, and Prometheus scrapes and evaluates every second with every ``for:`` cut to 3 s
(tests/stack_helpers.py), so the evidence gathers in about 15 s. The checks:

* ``ModelCandidateWorse`` fires for the canary ``2024.12-overcharge`` on ``mae``, and for nothing
  else (the shadow, a retraining, is as good as the primary);
* ``model-exporter status --json`` gives each version's role, the canary's state ``warning``, its
  comparison and the ``candidate-worse`` recommendation; the table is printed to the test's log;
* then a burst of the demo's slow fault (its ``latency`` injection) raises ``ModelHighLatencyP95``
  and the ``latency`` recommendation of the primary: the one demo injection tests/test_stack.py's
  status checks do not cover.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter import demo
from exporter.demo import watch as demo_watch
from exporter.demo_models import FAULT_KEY
from exporter.demo_models.fare import FEATURES, synthetic_trips
from exporter.status.command import add_arguments, run
from tests.binaries import free_port, require_binary
from tests.service_fixtures import ROOT
from tests.stack_helpers import (
    EXPORTER_JOB,
    PrometheusAPI,
    exporter_argv,
    poll,
    prometheus_argv,
    scraping_config,
    spawn,
    write_rule_copies,
)

pytestmark = pytest.mark.stack

CANARY = demo_watch.CANARY_VERSION
PRIMARY = "2024.06-ols"
SHADOW = "2024.12-retrained"
#: The canary's share of the requests here (the example's 0.1 would take five times longer).
CANARY_WEIGHT = 0.5
RATE = 40.0
FEEDBACK_DELAY = 0.2
#: Seconds of traffic: about 600 outcomes for each version, twice the comparison's guard.
TRAFFIC_SECONDS = 30.0
#: Slow calls of the latency burst: over a tenth of the calls of the 5-minute window, so the p95
#: lands among them (0.25 to 0.5 s, over the config's 0.25 s threshold).
SLOW_CALLS = 160
SLOW_CONCURRENCY = 16
#: Bounds of the waits (they poll; none is a timing assertion).
ALERT_TIMEOUT_SECONDS = 60.0


def _canary_config(directory: Path) -> Path:
    """examples/fare/monitor-canary.yml with the canary at CANARY_WEIGHT and absolute paths."""
    source = ROOT / "examples" / "fare" / "monitor-canary.yml"
    config = yaml.safe_load(source.read_text())
    config["reference"] = str(source.parent / config["reference"])
    [canary] = [c for c in config["candidates"] if c["mode"] == "canary"]
    assert canary["version"] == CANARY and "mae" in canary["alert_on"]
    canary["weight"] = CANARY_WEIGHT
    path = directory / "monitor-canary.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PrometheusAPI]]:
    binary = require_binary("prometheus")
    directory = tmp_path_factory.mktemp("canary-stack")
    with contextlib.ExitStack() as stack:
        port = free_port()
        argv = exporter_argv(_canary_config(directory), port, directory / "fare-data")
        service = spawn(stack, "fare", argv, directory, port)
        service.wait_ready("/readyz")
        rules = write_rule_copies(directory / "rules")
        config = scraping_config({EXPORTER_JOB: [service.address]}, rules)
        path = directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        prometheus_port = free_port()
        argv = prometheus_argv(binary, path, directory / "prom-data", prometheus_port)
        prometheus = spawn(stack, "prometheus", argv, directory, prometheus_port)
        prometheus.wait_ready("/-/ready")
        api = PrometheusAPI(prometheus.url)
        stack.callback(api.close)
        yield service.url, api


def _firing(api: PrometheusAPI, alertname: str) -> set[tuple[str, str]]:
    result = api.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')
    return {(e["metric"].get("version", ""), e["metric"].get("metric", "")) for e in result}


def _status_json(prometheus: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--prometheus", prometheus, "--json"])) == 0
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    return answer


def _status_table(prometheus: str) -> str:
    """``model-exporter status`` as a user runs it; printed, so the test's log shows it."""
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "status", "--prometheus", prometheus],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    print(f"$ model-exporter status --prometheus {prometheus}\n{result.stdout}")
    return result.stdout


def test_the_worse_canary_is_caught_and_status_says_to_stop_it(
    stack: tuple[str, PrometheusAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    url, api = stack
    summary = demo.run_demo(
        [url], "canary", TRAFFIC_SECONDS, RATE, feedback_delay=FEEDBACK_DELAY, seed=11
    )
    assert summary["errors"] == 0 and summary["feedback_failed"] == 0, summary
    wanted = {(CANARY, "mae")}
    assert poll(
        lambda: _firing(api, "ModelCandidateWorse") >= wanted, timeout=ALERT_TIMEOUT_SECONDS
    ), _firing(api, "ModelCandidateWorse")
    # The canary's MAE only: no errors to compare, and the shadow is as good as the primary.
    assert _firing(api, "ModelCandidateWorse") == wanted

    answer = _status_json(api.url, capsys)
    rows = {m["version"]: m for m in answer["models"] if m["model"] == "fare"}
    assert {v: m["role"] for v, m in rows.items()} == {
        PRIMARY: "primary",
        CANARY: "canary",
        SHADOW: "shadow",
    }
    canary = rows[CANARY]
    print(json.dumps({k: canary[k] for k in ("comparisons", "recommendations")}, indent=1))
    assert canary["state"] == "warning", canary
    assert "ModelCandidateWorse" in {a["name"] for a in canary["alerts"]}
    [mae] = [c for c in canary["comparisons"] if c["metric"] == "mae"]
    assert mae["state"] == "warning" and mae["value"] > mae["threshold"] == 4.265, mae
    assert mae["note"].startswith("MAE ") and f"for primary {PRIMARY}" in mae["note"]
    texts = {r["rule"]: r["text"] for r in canary["recommendations"]}
    assert texts["candidate-worse"].startswith(
        f"canary {CANARY} is significantly worse than the primary on MAE ("
    ), texts
    assert texts["candidate-worse"].endswith("over 1h): stop the canary / roll back "
                                             "(drop it from `candidates`)")  # fmt: skip
    assert rows[PRIMARY]["comparisons"] == [] and rows[PRIMARY]["state"] == "ok", rows[PRIMARY]
    shadow = [c for c in rows[SHADOW]["comparisons"] if c["metric"] == "mae"]
    assert shadow and shadow[0]["state"] == "ok", rows[SHADOW]

    table = _status_table(api.url)
    [row] = [line.split() for line in table.splitlines() if line.split()[:2] == ["fare", CANARY]]
    assert row[2:4] == ["canary", "WARNING"] and "ModelCandidateWorse" in row, row
    assert f"  [warning] canary {CANARY} is significantly worse" in table


def _slow_call(client: httpx.Client, url: str, features: dict[str, Any]) -> int:
    response = client.post(f"{url}/predict", json={"features": {**features, FAULT_KEY: "slow"}})
    return response.status_code


def test_the_latency_injection_gets_its_recommendation(
    stack: tuple[str, PrometheusAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    url, api = stack
    trips = synthetic_trips(SLOW_CALLS, 12).to_dict("records")
    calls = [{name: trip[name] for name in FEATURES} for trip in trips]
    with (
        httpx.Client(timeout=30, trust_env=False) as client,
        ThreadPoolExecutor(SLOW_CONCURRENCY) as pool,
    ):
        codes = list(pool.map(lambda features: _slow_call(client, url, features), calls))
    assert set(codes) == {200}
    assert poll(
        lambda: (PRIMARY, "") in _firing(api, "ModelHighLatencyP95"), timeout=ALERT_TIMEOUT_SECONDS
    ), _firing(api, "ModelHighLatencyP95")
    answer = _status_json(api.url, capsys)
    [primary] = [m for m in answer["models"] if m["version"] == PRIMARY]
    latency = {s["name"]: s for s in primary["signals"]}["latency_p95"]
    assert latency["state"] != "ok" and latency["value"] > latency["threshold"] == 0.25, latency
    texts = {r["rule"]: r["text"] for r in primary["recommendations"]}
    assert texts["latency"].startswith("latency p95 "), texts
    assert "over its 0.25 s threshold (5m)" in texts["latency"], texts
    _status_table(api.url)
