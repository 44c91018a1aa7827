"""Several versions of one model in `serve`: the candidates' config, canary routing (by weight
and by X-Routing-Key), outcomes counted by the version that answered, and the series that say
which versions are loaded and which comparisons may alert (docs/versions.md)."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from exporter.config import ConfigError, config_from_document, load_config
from exporter.server import STARTUP_ERRORS, BodyLimit, build_service, create_app
from exporter.server._openapi import MAX_ROUTING_KEY_LENGTH
from exporter.server._versions import routing_point
from tests.service_fixtures import ROOT, write_setup
from tests.test_service import sample

PRIMARY = {"name": "toy", "version": "v1", "task": "regression", "import_path": "a.b:c"}
CANARY = {"version": "v2", "import_path": "a:b", "mode": "canary", "weight": 0.2}
SHADOW = {"version": "v3", "import_path": "a:b", "mode": "shadow"}


def with_candidates(
    directory: Path, candidates: list[dict[str, Any]], task: str = "regression", **kw: Any
) -> Path:
    """The service tests' toy setup (tests/service_fixtures.py) with ``candidates``."""
    path = write_setup(directory, task, **kw)
    document = yaml.safe_load(path.read_text())
    document["candidates"] = candidates
    path.write_text(yaml.safe_dump(document))
    return path


@contextlib.contextmanager
def client_for(config: Path, data_dir: Path) -> Iterator[TestClient]:
    service = build_service(load_config(config), data_dir)
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        yield client


def candidates_error(candidates: list[dict[str, Any]], task: str = "regression") -> str:
    with pytest.raises(ConfigError) as error:
        config_from_document({"model": {**PRIMARY, "task": task}, "candidates": candidates})
    return str(error.value)


# -- the config ------------------------------------------------------------------------------------


def test_candidates_get_their_defaults() -> None:
    config = config_from_document({"model": PRIMARY, "candidates": [CANARY, SHADOW]})
    canary, shadow = config.candidates
    assert (canary.share, shadow.share) == (0.2, 1.0)
    assert (shadow.timeout, shadow.concurrency) == (1.0, 4)
    assert config.candidate_alerts(canary) == ["error_ratio", "mae"]
    classifier = config_from_document(
        {"model": {**PRIMARY, "task": "classification"}, "candidates": [SHADOW]}
    )
    assert classifier.candidate_alerts(classifier.candidates[0]) == ["error_ratio", "accuracy"]
    assert config_from_document({"model": PRIMARY}).candidates == []


@pytest.mark.parametrize(
    ("candidates", "task", "expected"),
    [
        ([{**CANARY, "version": "v1"}], "regression", "candidates.0.version: 'v1' is taken by "
         "model.version"),
        ([CANARY, {**SHADOW, "version": "v2"}], "regression", "candidates.1.version: 'v2' is taken"
         " by candidates.0.version"),
        ([CANARY, {**SHADOW, "version": "v2+"}, {**SHADOW, "version": "v2_"}], "regression",
         "candidates.2.version: 'v2_' is taken by candidates.1.version"),
        ([{k: v for k, v in CANARY.items() if k != "version"}], "regression",
         "candidates.0.version: Field required"),
        ([{**CANARY, "import_path": "nope"}], "regression", "candidates.0.import_path"),
        ([{**CANARY, "mode": "blue-green"}], "regression", "candidates.0.mode"),
        ([{k: v for k, v in CANARY.items() if k != "weight"}], "regression",
         "candidates.0.weight: a canary needs a weight in (0, 1]"),
        ([{**CANARY, "weight": 0}], "regression", "candidates.0.weight: Input should be greater"),
        ([{**CANARY, "weight": 1.5}], "regression", "candidates.0.weight: Input should be less"),
        ([{**CANARY, "weight": 0.6}, {**CANARY, "version": "v3", "weight": 0.4}], "regression",
         "candidates: the canaries' weights sum to 1; they must sum to less than 1"),
        ([{**CANARY, "timeout_seconds": 2}], "regression",
         "candidates.0.timeout_seconds: only a shadow has it"),
        ([{**CANARY, "max_concurrency": 2}], "regression", "candidates.0.max_concurrency: only"),
        ([{**SHADOW, "timeout_seconds": 0}], "regression", "candidates.0.timeout_seconds"),
        ([{**SHADOW, "max_concurrency": 0}], "regression", "candidates.0.max_concurrency"),
        ([{**SHADOW, "alert_on": ["accuracy"]}], "regression",
         "candidates.0.alert_on: accuracy does not apply to a regression model"),
        ([{**SHADOW, "alert_on": ["mae"]}], "classification",
         "candidates.0.alert_on: mae does not apply to a classification model"),
        ([{**SHADOW, "alert_on": ["recall"]}], "regression", "candidates.0.alert_on.0: Input "
         "should be 'accuracy', 'error_ratio' or 'mae'"),
        ([{**SHADOW, "alert_on": ["mae", "mae"]}], "regression",
         "candidates.0.alert_on: alert_on must be distinct"),
        ([{**SHADOW, "stage": "beta"}], "regression",
         "candidates.0.stage: Extra inputs are not permitted"),
        ([{**SHADOW, "version": f"v{i}"} for i in range(2, 12)], "regression", "candidates: List "
         "should have at most 8 items"),
    ],
)  # fmt: skip
def test_each_candidate_mistake_is_one_line_naming_the_key(
    candidates: list[dict[str, Any]], task: str, expected: str
) -> None:
    message = candidates_error(candidates, task)
    assert expected in message
    assert "\n" not in message and "Traceback" not in message


def test_a_candidate_that_cannot_be_imported_stops_the_start_naming_it(tmp_path: Path) -> None:
    config = with_candidates(tmp_path, [{**SHADOW, "import_path": "tests.toy_models:missing"}])
    with pytest.raises(ConfigError, match=r"candidates\.0\.import_path: 'tests.toy_models' has"):
        build_service(load_config(config), tmp_path / "data")


def test_a_candidate_reference_is_relative_to_the_config(tmp_path: Path) -> None:
    shadow = {**SHADOW, "import_path": "tests.toy_models:regress", "reference": "nowhere.json"}
    loaded = load_config(with_candidates(tmp_path, [shadow]))
    assert loaded.candidate_reference_path(loaded.candidates[0]) == tmp_path / "nowhere.json"
    with pytest.raises(STARTUP_ERRORS, match="nowhere.json"):
        build_service(loaded, tmp_path / "data")


# -- routing ---------------------------------------------------------------------------------------


def test_canary_answers_its_weight_of_requests(tmp_path: Path) -> None:
    config = with_candidates(
        tmp_path,
        [{**CANARY, "import_path": "tests.toy_models:regress_plus_one"}],
        store="memory",
    )
    n, weight = 2000, 0.2
    answered: Counter[str] = Counter()
    with client_for(config, tmp_path / "data") as client:
        for i in range(n):
            body = client.post("/predict", json={"features": {"miles": 1.0 + i % 7}}).json()
            # Each answer names its version, and is that version's own answer.
            offset = 1.0 if body["version"] == "v2" else 0.0
            assert body["prediction"] == pytest.approx(3 + 2 * (1.0 + i % 7) + offset)
            answered[body["version"]] += 1
        text = client.get("/metrics").text
    assert set(answered) == {"v1", "v2"}
    sd = math.sqrt(n * weight * (1 - weight))
    assert abs(answered["v2"] - n * weight) < 4 * sd, answered
    for version in ("v1", "v2"):
        count = sample(text, "model_prediction_duration_seconds_count", version=version)
        assert count == answered[version]


def test_a_routing_key_always_lands_on_the_same_version(tmp_path: Path) -> None:
    config = with_candidates(
        tmp_path,
        [{**CANARY, "weight": 0.3, "import_path": "tests.toy_models:regress_plus_one"}],
        store="memory",
    )
    keys = [f"user-{i}" for i in range(300)]
    with client_for(config, tmp_path / "data") as client:

        def version(key: str) -> str:
            answer = client.post(
                "/predict", json={"features": {"miles": 2.0}}, headers={"X-Routing-Key": key}
            )
            assert answer.status_code == 200, answer.text
            return str(answer.json()["version"])

        first = {key: version(key) for key in keys}
        assert all(version(key) == first[key] for key in keys[:60])
        # The version is the one the key's hash points at, so any process can tell it.
        assert all(first[k] == ("v2" if routing_point(k) < 0.3 else "v1") for k in keys)
        for key in ("ünïcode", "用户-7", "€uro"):  # sent as UTF-8 bytes, hashed as sent
            answer = client.post("/predict", json={"features": {"miles": 2.0}},
                                 headers={"X-Routing-Key": key.encode()})  # fmt: skip
            assert answer.json()["version"] == ("v2" if routing_point(key) < 0.3 else "v1")
        # A batch is one request: all its instances are answered by the key's version.
        batch = client.post(
            "/predict",
            json={"instances": [{"miles": 1.0}, {"miles": 2.0}]},
            headers={"X-Routing-Key": keys[0]},
        ).json()
        assert {p["version"] for p in batch["predictions"]} == {first[keys[0]]}
        too_long = client.post(
            "/predict",
            json={"features": {"miles": 2.0}},
            headers={"X-Routing-Key": "k" * (MAX_ROUTING_KEY_LENGTH + 1)},
        )
        assert too_long.status_code == 422
        assert too_long.json()["detail"][0]["field"] == "X-Routing-Key"
    # Different keys spread over the versions by their weights (binomial, 4 sd).
    canary = sum(v == "v2" for v in first.values())
    assert abs(canary - 300 * 0.3) < 4 * math.sqrt(300 * 0.3 * 0.7), canary


def test_the_routing_point_is_the_same_in_every_process() -> None:
    keys = ["a", "user-42", "ünïcode", "用户", "x" * 256]
    code = (
        "import sys; from exporter.server._versions import routing_point;"
        "print(repr([routing_point(k) for k in sys.argv[1:]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *keys], cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == repr([routing_point(k) for k in keys])
    assert all(0 <= routing_point(k) < 1 for k in keys)


# -- outcomes and series ---------------------------------------------------------------------------


def test_feedback_is_counted_by_the_version_that_answered(tmp_path: Path) -> None:
    config = with_candidates(
        tmp_path, [{**CANARY, "weight": 0.5, "import_path": "tests.toy_models:regress_plus_one"}]
    )
    answered: Counter[str] = Counter()
    with client_for(config, tmp_path / "data") as client:
        for i in range(40):
            body = client.post(
                "/predict", json={"features": {"miles": 2.0}}, headers={"X-Routing-Key": f"{i}"}
            ).json()
            answered[body["version"]] += 1
            # The truth is the primary's answer: the canary is off by exactly 1.
            feedback = client.post(
                "/feedback", json={"prediction_id": body["prediction_id"], "actual": 7.0}
            )
            assert feedback.json() == {"prediction_id": body["prediction_id"], "status": "recorded"}
        text = client.get("/metrics").text
    assert answered["v1"] > 0 and answered["v2"] > 0
    for version, error in (("v1", 0.0), ("v2", 1.0)):
        count = sample(text, "model_absolute_error_count", version=version)
        assert count == answered[version]
        total = sample(text, "model_absolute_error_sum", version=version)
        assert total == pytest.approx(error * answered[version])
    # The shared store's pending predictions are reported once, by the primary.
    assert sample(text, "model_outcomes_pending", version="v1") == 0
    assert sample(text, "model_outcomes_pending", version="v2") is None


def test_classification_outcomes_by_version(tmp_path: Path) -> None:
    config = with_candidates(
        tmp_path,
        [{**CANARY, "weight": 0.5, "import_path": "tests.toy_models:classify_always_long"}],
        task="classification",
        store="memory",
    )
    with client_for(config, tmp_path / "data") as client:
        versions = []
        for i in range(30):
            body = client.post(
                "/predict", json={"features": {"miles": 1.0}}, headers={"X-Routing-Key": f"k{i}"}
            ).json()
            versions.append(body["version"])
            client.post("/feedback", json={"prediction_id": body["prediction_id"],
                                           "actual": "short"})  # fmt: skip
        text = client.get("/metrics").text
    right = sample(text, "model_outcomes_total", version="v1", predicted="short", actual="short")
    wrong = sample(text, "model_outcomes_total", version="v2", predicted="long", actual="short")
    assert (right, wrong) == (versions.count("v1"), versions.count("v2"))
    assert sample(text, "model_outcomes_total", version="v1", predicted="long", actual="short") in (
        None, 0,
    )  # fmt: skip


def test_metrics_name_every_version_its_role_and_the_guarded_comparisons(tmp_path: Path) -> None:
    config = with_candidates(
        tmp_path,
        [
            {**CANARY, "import_path": "tests.toy_models:regress_plus_one"},
            {**SHADOW, "import_path": "tests.toy_models:regress", "alert_on": ["mae"]},
        ],
        store="memory",
    )
    with client_for(config, tmp_path / "data") as client:
        text = client.get("/metrics").text
        health = client.get("/healthz").json()
    roles = {("v1", "primary"), ("v2", "canary"), ("v3", "shadow")}
    for version, role in roles:
        assert sample(text, "model_version_role", model="toy", version=version, role=role) == 1
    for version, metric in (("v2", "error_ratio"), ("v2", "mae"), ("v3", "mae")):
        assert sample(text, "model_candidate_guard", model="toy", version=version,
                      metric=metric) == 1  # fmt: skip
    assert sample(text, "model_candidate_guard", version="v3", metric="error_ratio") is None
    assert sample(text, "model_candidate_guard", version="v1") is None
    assert sample(text, "model_shadow_skipped_total", model="toy", version="v3") == 0
    assert sample(text, "model_info", version="v2", stage="canary") == 1
    assert health["version"] == "v1"


def test_a_single_version_is_the_primary(tmp_path: Path) -> None:
    with client_for(write_setup(tmp_path, store="memory"), tmp_path / "data") as client:
        text = client.get("/metrics").text
    assert sample(text, "model_version_role", model="toy", version="v1", role="primary") == 1
    assert sample(text, "model_candidate_guard") is None


def test_the_openapi_document_names_the_routing_key_and_the_answering_version(
    tmp_path: Path,
) -> None:
    with client_for(write_setup(tmp_path, store="memory"), tmp_path / "data") as client:
        document = client.get("/openapi.json").json()
    predict = document["paths"]["/predict"]["post"]
    (header,) = [p for p in predict["parameters"] if p["in"] == "header"]
    assert header["name"] == "X-Routing-Key" and not header["required"]
    assert header["schema"]["maxLength"] == MAX_ROUTING_KEY_LENGTH
    answer = predict["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"][0]
    assert "answered" in answer["properties"]["version"]["description"]


def test_the_fare_example_serves_a_canary_and_a_shadow(tmp_path: Path) -> None:
    from exporter.demo_models.fare import FEATURES, synthetic_trips

    config = load_config(ROOT / "examples" / "fare" / "monitor-canary.yml")
    trips = synthetic_trips(200, seed=5)
    answered: Counter[str] = Counter()
    with client_for(config.source, tmp_path / "data") as client:
        for row in trips[list(FEATURES)].to_dict("records"):
            body = client.post("/predict", json={"features": row}).json()
            answered[body["version"]] += 1
        text = client.get("/metrics").text
    assert set(answered) == {"2024.06-ols", "2024.12-overcharge"}, answered
    roles = {"2024.06-ols": "primary", "2024.12-overcharge": "canary",
             "2024.12-retrained": "shadow"}  # fmt: skip
    for version, role in roles.items():
        assert sample(text, "model_version_role", model="fare", version=version, role=role) == 1
    assert sample(text, "model_candidate_guard", version="2024.12-retrained", metric="mae") == 1


def test_the_demo_candidates_are_one_as_good_and_one_worse() -> None:
    import numpy as np

    from exporter.demo_models.fare import FEATURES, predict, synthetic_trips
    from exporter.demo_models.fare_candidates import predict_overcharging, predict_retrained

    trips = synthetic_trips(500, seed=11)
    rows = trips[list(FEATURES)].to_dict("records")

    def mae(model: Any) -> float:
        return float(np.mean(np.abs(np.array([model(r) for r in rows]) - trips["fare"])))

    primary, retrained, worse = mae(predict), mae(predict_retrained), mae(predict_overcharging)
    assert abs(retrained - primary) < 0.1 * primary, (primary, retrained)
    assert worse > 1.5 * primary, (primary, worse)


def test_monitors_sharing_a_store_count_each_others_outcomes_by_version() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter import ModelMonitor
    from exporter.outcomes import MemoryOutcomeStore, PendingPrediction

    registry, store = CollectorRegistry(), MemoryOutcomeStore()
    made = {
        version: ModelMonitor("m", version=version, task="regression", registry=registry,
                              outcomes=store, flush_interval=None)
        for version in ("v1", "v2")
    }  # fmt: skip
    by_v2 = made["v2"].observe({}, prediction=5.0)
    # Resolved through v1's monitor (the service asks the primary's), counted under v2.
    assert made["v1"].record_outcome(by_v2, 3.0).value == "recorded"
    text = generate_latest(registry).decode()
    assert sample(text, "model_absolute_error_sum", version="v2") == 2.0
    assert sample(text, "model_absolute_error_count", version="v1") == 0
    # A prediction of a version no monitor serves any more is counted by the one resolving it.
    store.remember(PendingPrediction("old", time.time(), "v0", 4.0, None))
    assert made["v1"].record_outcome("old", 3.0).value == "recorded"
    assert sample(generate_latest(registry).decode(), "model_absolute_error_count",
                  version="v1") == 1  # fmt: skip
