"""``status_of_service``: the health summary of one service, read from its own process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from exporter.config import load_config
from exporter.server import BodyLimit, build_service, create_app
from exporter.status.local import histogram_quantile, status_of_service
from tests.service_fixtures import write_setup


@pytest.fixture
def service(tmp_path: Path):
    config = write_setup(tmp_path, "regression")
    service = build_service(load_config(config), tmp_path / "data")
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        yield service, client


def _predict(client: TestClient, miles: np.ndarray) -> list[dict]:
    """Predictions for ``miles``, with zones in the reference's mix."""
    zones = np.random.default_rng(0).choice(["north", "south", "east"], len(miles))
    answers = []
    for start in range(0, len(miles), 50):
        rows = zip(miles[start : start + 50], zones[start : start + 50], strict=True)
        instances = [{"miles": float(m), "zone": str(z)} for m, z in rows]
        response = client.post("/predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        answers.extend(response.json()["predictions"])
    return answers


def _feedback(client: TestClient, answers: list[dict], error: float) -> None:
    for start in range(0, len(answers), 50):
        chunk = [
            {"prediction_id": a["prediction_id"], "actual": a["prediction"] + error}
            for a in answers[start : start + 50]
        ]
        assert client.post("/feedback", json=chunk).status_code == 200


def test_steady_traffic_is_ok(service) -> None:
    service, client = service
    rng = np.random.default_rng(1)
    answers = _predict(client, rng.gamma(2.0, 2.0, 400))
    _feedback(client, answers, 1.0)
    answer = status_of_service(service)
    json.dumps(answer, allow_nan=False)
    assert answer["source"] == "this process"
    assert "model-exporter status --prometheus" in answer["note"]
    [model] = answer["models"]
    assert (model["model"], model["version"], model["role"]) == ("toy", "v1", "primary")
    assert model["state"] == "ok", model
    assert model["recommendations"] == []
    signals = {s["name"]: s for s in model["signals"]}
    assert signals["traffic"]["value"] == 400 and signals["traffic"]["window"] == "since start"
    assert signals["mae"]["value"] == pytest.approx(1.0)
    assert signals["mae"]["window"] == "1h"
    assert signals["ground_truth_coverage"]["value"] == pytest.approx(1.0)
    assert {d["feature"] for d in model["drift"]} == {"miles", "zone"}
    assert model["alerts"] == []


def test_drift_errors_and_a_worse_mae_are_found_with_what_to_do(service) -> None:
    service, client = service
    rng = np.random.default_rng(2)
    answers = _predict(client, rng.gamma(6.0, 3.0, 300))  # far from the reference gamma(2, 2)
    _feedback(client, answers, 10.0)  # MAE 10, over mae_critical 5
    for index in range(40):  # the toy model raises ToyFailure on negative miles: 12% of calls
        response = client.post("/predict", json={"features": {"miles": -1.0 - index}})
        assert response.status_code == 500
    [model] = status_of_service(service)["models"]
    assert model["state"] == "critical"
    assert model["drift"][0]["feature"] == "miles"
    assert model["drift"][0]["state"] == "critical"
    signals = {s["name"]: s for s in model["signals"]}
    assert signals["error_ratio"]["value"] == pytest.approx(40 / 340)
    assert signals["mae"]["state"] == "critical"
    texts = {r["rule"]: r["text"] for r in model["recommendations"]}
    assert texts["retrain"].startswith("miles has drifted (PSI ")
    assert "MAE 10 is over its 5 threshold" in texts["retrain"]
    assert texts["errors-one-kind"].startswith("errors are all ToyFailure (12% of calls")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 100 observations: 50 under 0.1, 40 in (0.1, 0.5], 10 in (0.5, 1]: the 95th is in the last.
    buckets = {"0.1": 50.0, "0.5": 90.0, "1.0": 100.0, "+Inf": 100.0}
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.95, {"+Inf": 0.0}) is None
    assert histogram_quantile(0.5, {"1.0": 0.0, "+Inf": 10.0}) == 1.0


def test_the_model_s_own_thresholds_decide(tmp_path: Path) -> None:
    path = write_setup(tmp_path, "regression")
    config = yaml.safe_load(path.read_text())
    config["thresholds"] = {"mae_warning": 8.0, "mae_critical": 20.0}
    path.write_text(yaml.safe_dump(config))
    service = build_service(load_config(path), tmp_path / "data")
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        answers = _predict(client, np.random.default_rng(3).gamma(2.0, 2.0, 200))
        _feedback(client, answers, 10.0)
        [model] = status_of_service(service)["models"]
    mae = {s["name"]: s for s in model["signals"]}["mae"]
    assert (mae["state"], mae["threshold"]) == ("warning", 8.0)
    assert model["state"] == "warning"
    assert [r["rule"] for r in model["recommendations"]] == ["performance-without-drift"]


def test_get_status_answers_the_same_document_over_http(service) -> None:
    service, client = service
    rng = np.random.default_rng(4)
    _feedback(client, _predict(client, rng.gamma(2.0, 2.0, 200)), 1.0)
    response = client.get("/status")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["source"] == "this process"
    assert [(m["model"], m["version"]) for m in answer["models"]] == [("toy", "v1")]
    assert "/status" in client.get("/openapi.json").json()["paths"]


def test_get_status_asks_for_a_token_like_predict(tmp_path: Path) -> None:
    config_path = write_setup(tmp_path, "regression")
    (tmp_path / "tokens").write_text("s3cret-token-value-0123456789\n")
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("service", {}).setdefault("auth", {})["token_file"] = "tokens"
    config_path.write_text(yaml.safe_dump(config))
    service = build_service(load_config(config_path), tmp_path / "data")
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        assert client.get("/status").status_code == 401
        headers = {"Authorization": "Bearer s3cret-token-value-0123456789"}
        assert client.get("/status", headers=headers).status_code == 200


def test_each_version_shows_its_role_and_a_worse_canary_is_found(tmp_path: Path) -> None:
    from scipy import stats

    from exporter.demo_models.fare import FEATURES, synthetic_trips
    from exporter.server._versions import routing_point
    from tests.service_fixtures import ROOT

    # The example's canary answering half the requests, so both versions pass the guard (300).
    source = ROOT / "examples" / "fare" / "monitor-canary.yml"
    config = yaml.safe_load(source.read_text())
    config["reference"] = str(source.parent / config["reference"])
    config["candidates"][0]["weight"] = 0.5
    path = tmp_path / "monitor.yml"
    path.write_text(yaml.safe_dump(config))
    service = build_service(load_config(path), tmp_path / "data")
    trips = synthetic_trips(1200, 5).to_dict("records")
    errors: dict[str, list[float]] = {}
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        for start in range(0, len(trips), 20):
            # A routing key sends a whole batch to one version, the same on every run.
            key = f"rider-{start}"
            batch = trips[start : start + 20]
            instances = [{name: trip[name] for name in FEATURES} for trip in batch]
            response = client.post(
                "/predict", json={"instances": instances}, headers={"X-Routing-Key": key}
            )
            assert response.status_code == 200, response.text
            answers = response.json()["predictions"]
            feedback = [{"prediction_id": a["prediction_id"], "actual": t["fare"]}
                        for a, t in zip(answers, batch, strict=True)]  # fmt: skip
            assert client.post("/feedback", json=feedback).status_code == 200
            version = "2024.12-overcharge" if routing_point(key) < 0.5 else "2024.06-ols"
            errors.setdefault(version, []).extend(
                abs(a["prediction"] - t["fare"]) for a, t in zip(answers, batch, strict=True)
            )
        answer = client.get("/status").json()
    rows = {m["version"]: m for m in answer["models"]}
    assert [(v, m["role"]) for v, m in rows.items()] == [
        ("2024.06-ols", "primary"), ("2024.12-overcharge", "canary"),
        ("2024.12-retrained", "shadow"),
    ]  # fmt: skip
    assert "compared with the primary on this process's counts since it started" in answer["note"]
    assert rows["2024.06-ols"]["comparisons"] == []
    canary = rows["2024.12-overcharge"]
    [mae] = [c for c in canary["comparisons"] if c["metric"] == "mae"]
    # Welch's t on the |errors| each version made, as scipy computes it.
    c, p = (np.array(errors[v]) for v in ("2024.12-overcharge", "2024.06-ols"))
    assert min(len(c), len(p)) >= 300
    expected = stats.ttest_ind_from_stats(
        c.mean(), c.std(ddof=1), len(c), p.mean(), p.std(ddof=1), len(p), equal_var=False
    ).statistic
    assert mae["value"] == pytest.approx(expected, rel=1e-6)
    assert (mae["state"], mae["window"]) == ("warning", "since start")
    assert canary["state"] == "warning"
    text = canary["recommendations"][0]["text"]
    assert text.startswith(
        "canary 2024.12-overcharge is significantly worse than the primary on MAE ("
    )
    assert " since start): stop the canary / roll back" in text
    # No call failed: the error ratio has no statistic, and the shadow is as good as the primary.
    [ratio] = [c for c in canary["comparisons"] if c["metric"] == "error_ratio"]
    assert ratio["value"] is None and ratio["state"] == "ok"
    [shadow] = [c for c in rows["2024.12-retrained"]["comparisons"] if c["metric"] == "mae"]
    assert shadow["state"] == "ok" and abs(shadow["value"]) < 4.265
