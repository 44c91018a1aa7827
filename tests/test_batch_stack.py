"""Batch jobs end to end: ``model-exporter batch`` pushes two runs, one stable and one drifted,
to a real Pushgateway; a real Prometheus scrapes it with ``honor_labels: true`` (as
prometheus/scrape-snippet.yml says) and evaluates the shipped rules. The fleet PSI recording rule
must equal the PSI numpy computes from the same rows, and the drift alert's expression must be
quiet after the stable run and name the drifted feature after the drifted one."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from exporter.cli import main
from exporter.demo_models.fare import synthetic_trips
from tests.binaries import free_port, require_binary
from tests.gateway import pushgateway
from tests.service_fixtures import ROOT
from tests.stack_helpers import (
    PrometheusAPI,
    poll,
    prometheus_argv,
    scraping_config,
    spawn,
    write_rule_copies,
)

FARE = ROOT / "examples" / "fare"
FEATURES = ["trip_miles", "trip_seconds", "straight_line_km", "hour"]
ROWS = 4000
#: The PSI rule clamps both shares at this floor (docs/metrics.md).
SHARE_FLOOR = 1e-4
GATEWAY_JOB = "model-exporter-pushgateway"


def numpy_psi(values: np.ndarray, edges: list[float], reference: list[float]) -> float:
    """PSI of ``values`` against the reference shares, binned as the exporter bins (bin i is
    [edge[i-1], edge[i]), the first and last open), both shares clamped at SHARE_FLOOR."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"),
                         minlength=len(reference))  # fmt: skip
    current = np.maximum(counts / counts.sum(), SHARE_FLOOR)
    expected = np.maximum(np.asarray(reference), SHARE_FLOOR)
    return float(np.sum((current - expected) * np.log(current / expected)))


def drift_alert_expression() -> str:
    """The warning ModelFeatureDriftPSI rule's expression, as shipped."""
    document = yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            severity = rule.get("labels", {}).get("severity")
            if rule.get("alert") == "ModelFeatureDriftPSI" and severity == "warning":
                return str(rule["expr"])
    raise AssertionError("no warning ModelFeatureDriftPSI rule")


def write_config(directory: Path) -> Path:
    """The fare example without segments, so the expected shares are the reference's own."""
    config = yaml.safe_load((FARE / "monitor.yml").read_text())
    config["monitoring"].pop("segment_by")
    config["reference"] = str(FARE / "reference.json")
    path = directory / "monitor.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def scored_file(directory: Path, name: str, seed: int, shift: float) -> tuple[Path, pd.DataFrame]:
    frame = synthetic_trips(ROWS, seed=seed)[[*FEATURES, "fare"]].copy()
    frame["trip_miles"] = frame["trip_miles"] * (1.0 + shift)
    path = directory / f"{name}.parquet"
    frame.to_parquet(path)
    return path, frame


@pytest.mark.stack
def test_two_pushed_runs_give_the_fleet_psi_and_the_drift_alert_numpy_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = require_binary("prometheus")
    reference = json.loads((FARE / "reference.json").read_text())["features"]["trip_miles"]
    config = write_config(tmp_path)
    with contextlib.ExitStack() as stack:
        gateway = stack.enter_context(pushgateway(tmp_path))
        prometheus_config = scraping_config(
            {GATEWAY_JOB: [gateway.removeprefix("http://")]}, write_rule_copies(tmp_path / "rules")
        )
        # The pushed series keep their own job and carry no instance of the gateway's.
        prometheus_config["scrape_configs"][0]["honor_labels"] = True
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(prometheus_config))
        port = free_port()
        prometheus = spawn(stack, "prometheus",
                           prometheus_argv(binary, config_path, tmp_path / "tsdb", port),
                           tmp_path, port)  # fmt: skip
        prometheus.wait_ready("/-/ready")
        api = PrometheusAPI(prometheus.url)
        stack.callback(api.close)
        # Ready is not scraping yet: Prometheus hands new targets to its scrapers a few seconds
        # after start. A long-running Prometheus scrapes the gateway all along.
        up = poll(lambda: api.targets_up().get(gateway.removeprefix("http://")) == 1, timeout=30)
        assert up, api.targets_up()
        psi = 'model_feature:model_feature_psi:15m{model="fare",feature="trip_miles"}'
        counted = 'model_feature:model_feature_bin:increase15m{model="fare",feature="trip_miles"}'
        alert = drift_alert_expression()
        rows: list[np.ndarray] = []
        for name, seed, shift in (("stable", 11, 0.0), ("drifted", 12, 1.0)):
            data, frame = scored_file(tmp_path, name, seed, shift)
            rows.append(frame["trip_miles"].to_numpy())
            code = main(["batch", "--config", str(config), "--data", str(data),
                         "--model-column", "fare", "--pushgateway", gateway,
                         "--scrape-interval", "1"])  # fmt: skip
            out, err = capsys.readouterr()
            assert code == 0, err
            values = np.concatenate(rows)
            # Wait for the rules to see every row pushed so far (increase() extrapolates a
            # little past the last sample, alike for every bin, so the shares are exact).
            pushed = len(values)
            seen = poll(
                lambda: [v for v in api.values(counted).values() if v >= pushed - 0.5],  # noqa: B023
                timeout=60,
            )
            assert seen, (name, api.values(counted), prometheus.log_tail())
            time.sleep(2)  # the PSI rule evaluates after the increase rule has recorded
            recorded = list(api.values(psi).values())
            expected = numpy_psi(values, reference["edges"], reference["reference_share"])
            assert len(recorded) == 1, (name, recorded)
            assert math.isclose(recorded[0], expected, rel_tol=1e-6), (name, recorded, expected)
            firing = {dict(k).get("feature") for k in api.values(alert)}
            if name == "stable":
                assert expected < 0.05 and firing == set(), (expected, firing)
            else:
                # Half the rows in the 15 minutes are drifted: past psi_warning (0.1).
                assert expected > 0.1 and "trip_miles" in firing, (expected, firing)
                # The features that did not drift stay quiet on pushed series too.
                assert "trip_seconds" not in firing and "hour" not in firing, firing
