"""The model server: in process for the rules, over real HTTP for the promises that need it."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import cli
from exporter._calls import Answered, Instrumented
from exporter.config import load_config
from exporter.server import BodyLimit, build_service, create_app
from tests.service_fixtures import ROOT, live_server, stop, write_setup
from tests.stack_helpers import metric_samples


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


@pytest.fixture
def regression(tmp_path: Path):
    config = write_setup(tmp_path, "regression")
    service = build_service(load_config(config), tmp_path / "data")
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        yield client


@pytest.fixture
def classification(tmp_path: Path):
    config = write_setup(tmp_path, "classification", store="memory")
    service = build_service(load_config(config), tmp_path / "data")
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        yield client


def test_prediction_feedback_gives_exact_mae(regression: TestClient) -> None:
    errors = [0.5, -1.0, 2.0, -3.0, 4.5, 0.0, 1.0, -2.5, 6.0, -0.5, 3.0, 1.5]
    for i, error in enumerate(errors):
        answer = regression.post(
            "/predict", json={"features": {"miles": float(i), "zone": "north"}}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["prediction"] == pytest.approx(3 + 2 * i)
        assert body["model"] == "toy" and body["version"] == "v1" and body["confidence"] is None
        actual = body["prediction"] - error
        feedback = regression.post(
            "/feedback", json={"prediction_id": body["prediction_id"], "actual": actual}
        )
        assert feedback.status_code == 200, feedback.text
        assert feedback.json()["status"] == "recorded"
    text = regression.get("/metrics").text
    mae = float(np.mean(np.abs(errors)))
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    labels = {"model": "toy", "version": "v1"}
    assert sample(text, "model_absolute_error_count", **labels) == len(errors)
    assert sample(text, "model_absolute_error_sum", **labels) == pytest.approx(mae * len(errors))
    assert sample(text, "model_squared_error_total", **labels) == pytest.approx(
        rmse**2 * len(errors)
    )
    assert sample(text, "model_performance", metric="mae", window="5m") == pytest.approx(mae)
    assert sample(text, "model_performance", metric="rmse", window="1h") == pytest.approx(rmse)
    within_2 = float(np.mean(np.abs(errors) <= 2))
    assert sample(text, "model_performance", metric="within_2", window="5m") == pytest.approx(
        within_2
    )
    assert sample(text, "model_outcomes_pending", **labels) == 0
    assert sample(text, "model_alert_threshold", alert="mae_critical") == 5.0


def test_classification_accuracy_and_per_class_quality(classification: TestClient) -> None:
    miles = [1, 2, 3, 6, 7, 8, 9, 10, 2, 3, 11, 12]
    actual = ["short", "long", "short", "long", "long", "short", "long", "long", "short",
              "short", "long", "short"]  # fmt: skip
    predicted = []
    for m, truth in zip(miles, actual, strict=True):
        body = classification.post("/predict", json={"features": {"miles": m}}).json()
        predicted.append(body["prediction"])
        assert 0 < body["confidence"] <= 1
        answer = classification.post(
            "/feedback", json={"prediction_id": body["prediction_id"], "actual": truth}
        )
        assert answer.status_code == 200
    text = classification.get("/metrics").text
    accuracy = float(np.mean([p == a for p, a in zip(predicted, actual, strict=True)]))
    assert sample(text, "model_performance", metric="accuracy", window="5m") == pytest.approx(
        accuracy
    )
    tp = sum(p == a == "long" for p, a in zip(predicted, actual, strict=True))
    precision = tp / predicted.count("long")
    recall = tp / actual.count("long")
    assert sample(text, "model_class_performance", **{"class": "long"}, metric="precision",
                  window="5m") == pytest.approx(precision)  # fmt: skip
    assert sample(text, "model_class_performance", **{"class": "long"}, metric="recall",
                  window="5m") == pytest.approx(recall)  # fmt: skip
    wrong = sample(text, "model_outcomes_total", predicted="short", actual="long", correct="false")
    assert wrong == sum(p == "short" and a == "long" for p, a in zip(predicted, actual,
                                                                       strict=True))  # fmt: skip
    assert sample(text, "model_performance", metric="expected_accuracy", window="5m") is not None


def test_batch_prediction(regression: TestClient) -> None:
    answer = regression.post("/predict", json={"instances": [{"miles": 1.0}, {"miles": 2.0}]})
    assert answer.status_code == 200
    assert [p["prediction"] for p in answer.json()["predictions"]] == [5.0, 7.0]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"features": {"miles": "far"}}, 422, "features.miles"),
        ({"features": {"miles": [1]}}, 422, "features.miles"),
        ({"features": {"miles": True}}, 422, "features.miles"),
        ({"features": {"zone": {"a": 1}}}, 422, "features.zone"),
        ({"features": [1, 2]}, 422, "features"),
        ({"instances": [{"miles": 1}, {"miles": "x"}]}, 422, "instances.1.miles"),
        ({"instances": [{"miles": 1}] * 51}, 413, "instances"),
        ({"instances": []}, 422, "instances"),
        ({"features": {}, "instances": []}, 422, "body"),
        ({"feature": {}}, 422, "feature"),
        ([], 422, "body"),
    ],
)
def test_bad_predict_requests_are_4xx_naming_the_field(
    regression: TestClient, body: object, status: int, field: str
) -> None:
    answer = regression.post("/predict", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"][0]["field"] == field


def test_wrong_type_is_also_counted_as_bad_data(regression: TestClient) -> None:
    regression.post("/predict", json={"features": {"miles": "far"}})
    text = regression.get("/metrics").text
    assert sample(text, "model_input_invalid_total", feature="miles", reason="wrong_type") == 1


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"\xff\xfe", 400),
        (b'{"features": {"miles": NaN}}', 400),
        (b"[" * 100 + b"]" * 100, 400),
    ],  # fmt: skip
)
def test_broken_bodies(regression: TestClient, raw: bytes, status: int) -> None:
    answer = regression.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert "Traceback" not in answer.text and answer.json()["detail"][0]["field"] == "body"


def test_body_over_the_limit_is_413(regression: TestClient) -> None:
    big = json.dumps({"features": {"zone": "x" * 70_000}}).encode()
    assert regression.post("/predict", content=big).status_code == 413


def test_feedback_rules(regression: TestClient) -> None:
    pid = regression.post("/predict", json={"features": {"miles": 1.0}}).json()["prediction_id"]
    assert (
        regression.post("/feedback", json={"prediction_id": "nope", "actual": 1}).status_code == 404
    )
    assert regression.post("/feedback", json={"prediction_id": pid, "actual": 5}).status_code == 200
    again = regression.post("/feedback", json={"prediction_id": pid, "actual": 5.0})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    conflict = regression.post("/feedback", json={"prediction_id": pid, "actual": 6})
    assert conflict.status_code == 409 and conflict.json()["detail"][0]["field"] == "prediction_id"
    bad = regression.post("/feedback", json={"prediction_id": pid, "actual": "cheap"})
    assert bad.status_code == 422
    missing = regression.post("/feedback", json={"prediction_id": pid})
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "actual"
    text = regression.get("/metrics").text
    assert sample(text, "model_absolute_error_count") == 1  # counted once


def test_feedback_list(regression: TestClient) -> None:
    ids = [
        regression.post("/predict", json={"features": {"miles": float(m)}}).json()["prediction_id"]
        for m in range(3)
    ]
    answer = regression.post(
        "/feedback",
        json=[{"prediction_id": ids[0], "actual": 3}, {"prediction_id": "zz", "actual": 1}],
    )
    assert answer.status_code == 200
    assert [r["status"] for r in answer.json()["results"]] == ["recorded", "unknown"]


def test_the_request_path_is_the_decorators_accounting(
    regression: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/predict runs the model through ModelMonitor.instrument's own accounting (latency, error
    classes, output reading), not a copy of it: each call goes through Instrumented.call."""
    calls: list[str] = []
    original = Instrumented.call

    def spy(self: Instrumented, *args: Any, **kwargs: Any) -> Answered:
        answered = original(self, *args, **kwargs)
        calls.append(str(answered.prediction_id))
        return answered

    monkeypatch.setattr(Instrumented, "call", spy)
    body = regression.post("/predict", json={"features": {"miles": 3.0}}).json()
    batch = regression.post("/predict", json={"instances": [{"miles": 1.0}, {"miles": 2.0}]})
    ids = [a["prediction_id"] for a in batch.json()["predictions"]]
    assert calls == [body["prediction_id"], *ids]


def test_model_exception_is_a_generic_500_counted_by_class(regression: TestClient) -> None:
    answer = regression.post("/predict", json={"features": {"miles": -1.0}})
    assert answer.status_code == 500
    assert answer.json() == {"detail": "the model failed to predict"}
    text = regression.get("/metrics").text
    assert sample(text, "model_prediction_errors_total", error="ToyFailure") == 1


def test_health_readiness_docs(regression: TestClient) -> None:
    assert regression.get("/healthz").json() == {
        "status": "ok", "model": "toy", "version": "v1", "task": "regression"
    }  # fmt: skip
    assert regression.get("/readyz").status_code == 200
    assert regression.get("/docs").status_code == 200
    assert "/predict" in regression.get("/openapi.json").json()["paths"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
bodies = (
    json_values
    | st.fixed_dictionaries(
        {"features": st.dictionaries(st.sampled_from(["miles", "zone", "other"]), json_values)}
    )
    | st.fixed_dictionaries({"prediction_id": json_values, "actual": json_values})
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=st.sampled_from(["/predict", "/feedback"]))
def test_generated_json_never_gets_a_5xx(
    classification: TestClient, body: object, path: str
) -> None:
    answer = classification.post(path, content=json.dumps(body))
    assert answer.status_code < 500, (path, body, answer.text)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_generated_bytes_never_get_a_5xx(classification: TestClient, raw: bytes) -> None:
    for path in ("/predict", "/feedback"):
        assert classification.post(path, content=raw).status_code < 500


def test_a_missing_required_feature_is_a_422_and_missing_input_not_a_model_failure(
    tmp_path: Path,
) -> None:
    # The fare model raised KeyError without `hour`: a 500, counted as a model error.
    service = build_service(load_config(ROOT / "examples" / "fare" / "monitor.yml"), tmp_path)
    trip = {"trip_miles": 3.0, "trip_seconds": 900, "straight_line_km": 4.0, "hour": 8}
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        without_hour = {k: v for k, v in trip.items() if k != "hour"}
        answer = client.post("/predict", json={"features": without_hour})
        assert answer.status_code == 422
        assert answer.json() == {
            "detail": [
                {
                    "field": "features.hour",
                    "reason": "is required by the model (model.required_features)",
                }
            ]
        }
        batch = client.post("/predict", json={"instances": [trip, {**trip, "trip_seconds": None}]})
        assert batch.status_code == 422
        assert batch.json()["detail"][0]["field"] == "instances.1.trip_seconds"
        assert client.post("/predict", json={"features": trip}).status_code == 200
        text = client.get("/metrics").text
    assert sample(text, "model_input_invalid_total", feature="hour", reason="missing") == 1
    assert sample(text, "model_input_invalid_total", feature="trip_seconds", reason="missing") == 1
    assert sample(text, "model_prediction_errors_total") is None
    assert (
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "model_predictions_total"
        )
        == 1
    )


# -- over real HTTP --------------------------------------------------------------------------------


def test_live_server_prediction_feedback_metrics(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    with live_server(config, tmp_path / "data") as (url, _):
        with httpx.Client(base_url=url, timeout=10) as client:
            errors = []
            for i in range(15):
                body = client.post("/predict", json={"features": {"miles": float(i)}}).json()
                error = (i % 5) - 2.0
                errors.append(error)
                actual = body["prediction"] - error
                status = client.post(
                    "/feedback", json={"prediction_id": body["prediction_id"], "actual": actual}
                ).status_code
                assert status == 200
            assert (
                client.post("/feedback", json={"prediction_id": "x", "actual": 1}).status_code
                == 404
            )
            assert client.post("/predict", json={"features": {"miles": "x"}}).status_code == 422
            text = client.get("/metrics").text
    mae = float(np.mean(np.abs(errors)))
    assert sample(text, "model_performance", metric="mae", window="5m") == pytest.approx(mae)
    assert sample(text, "model_absolute_error_count") == 15


def test_pending_predictions_survive_kill_9(tmp_path: Path) -> None:
    config = write_setup(tmp_path, "regression")
    data = tmp_path / "data"
    with live_server(config, data) as (url, process):
        ids = [
            httpx.post(f"{url}/predict", json={"features": {"miles": float(i)}}).json()[
                "prediction_id"
            ]
            for i in range(20)
        ]
        stop(process, signal.SIGKILL)
    with live_server(config, data) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as client:
            statuses = [
                client.post("/feedback", json={"prediction_id": pid, "actual": 1.0}).status_code
                for pid in ids
            ]
            text = client.get("/metrics").text
    assert statuses == [200] * 20
    assert sample(text, "model_absolute_error_count") == 20


def _drive(url: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=10) as client:
        for miles in rng.gamma(4.0, 3.0, 200):  # drifted: longer trips than the reference
            body = client.post("/predict", json={"features": {"miles": float(miles),
                                                              "zone": "east"}}).json()  # fmt: skip
            client.post("/feedback", json={"prediction_id": body["prediction_id"],
                                           "actual": body["prediction"] + 1.5})  # fmt: skip


def test_one_and_two_workers_agree(tmp_path: Path) -> None:
    """The same requests, served by 1 and by 2 worker processes: same counters, same PSI."""
    results = {}
    for workers in (1, 2):
        directory = tmp_path / f"w{workers}"
        directory.mkdir()
        config = write_setup(directory, "regression")
        with live_server(config, directory / "data", workers=workers) as (url, _):
            # A scrape sees every count its worker has acknowledged: on one keep-alive
            # connection (one worker, the other idle) the bins hold all 30 at once, not only
            # what the last once-a-second flush had written to the counter files.
            with httpx.Client(base_url=url, timeout=10) as client:
                for i in range(30):
                    features = {"miles": 1.0 + i, "zone": "east"}
                    answer = client.post("/predict", json={"features": features})
                    assert answer.status_code == 200
                scraped = client.get("/metrics").text
            for feature in ("miles", "zone"):
                bins = metric_samples(scraped, "model_feature_bin_total", feature=feature)
                assert sum(bins.values()) == 30, (workers, feature)
            _drive(url, seed=7)
            time.sleep(2.5)  # every worker flushes and publishes its windows each second
            results[workers] = httpx.get(f"{url}/metrics", timeout=10).text
    one, two = results[1], results[2]
    for name, labels in [
        ("model_predictions_total", {"confidence_bucket": "none"}),
        ("model_feature_bin_total", {"feature": "miles", "bin": "09"}),
        ("model_feature_bin_total", {"feature": "zone", "bin": "east"}),
        ("model_absolute_error_count", {}),
        ("model_feature_value_sum_total", {"feature": "miles", "sign": "positive"}),
    ]:
        assert sample(one, name, **labels) == pytest.approx(sample(two, name, **labels)), name
    for feature in ("miles", "zone", "__prediction__"):
        psi_one = sample(one, "model_feature_psi", feature=feature, window="5m")
        psi_two = sample(two, "model_feature_psi", feature=feature, window="5m")
        assert psi_one is not None and psi_two is not None
        assert psi_one == pytest.approx(psi_two, rel=1e-9), feature
    assert sample(one, "model_performance", metric="mae", window="5m") == pytest.approx(1.5)
    assert sample(two, "model_performance", metric="mae", window="5m") == pytest.approx(1.5)
    assert sample(two, "model_feature_window_samples", feature="miles", window="5m") == 230
    assert not math.isnan(sample(two, "model_feature_zscore", feature="miles", window="5m") or 0)


def test_sweeping_dead_workers_keeps_counters_and_fresh_windows(tmp_path: Path) -> None:
    from exporter.server import sweep_dead_workers

    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    directory = tmp_path / "mp"
    (directory / "windows").mkdir(parents=True)
    counter = directory / f"counter_{dead_pid}.db"
    live_gauge = directory / f"gauge_livesum_{dead_pid}.db"
    fresh = directory / "windows" / f"windows-toy-v1-{dead_pid}.npz"
    old = directory / "windows" / f"windows-old-v1-{dead_pid}.npz"
    for path in (counter, live_gauge, fresh, old):
        path.write_bytes(b"")
    stale = time.time() - 7200
    os.utime(old, (stale, stale))
    assert sweep_dead_workers(directory, longest_window_seconds=3600) == [dead_pid]
    assert counter.exists()  # the dead worker's counts still belong to the totals
    assert not live_gauge.exists()
    assert fresh.exists() and not old.exists()


@pytest.mark.parametrize("takes_target", [True, False], ids=["uvicorn-0.30", "uvicorn-0.5x"])
def test_workers_listen_on_a_tcp_socket_so_responses_are_not_delayed(
    monkeypatch, takes_target: bool
) -> None:
    # uvicorn's own multi-worker socket has protocol 0, so asyncio never sets TCP_NODELAY on the
    # connections it accepts and each kept-alive response waits ~40 ms (Kludex/uvicorn#3149).
    import socket

    import uvicorn
    from uvicorn import supervisors

    from exporter import cli

    handed: list[socket.socket] = []

    class OldSupervisor:
        def __init__(self, config, target, sockets):
            assert callable(target)
            handed.extend(sockets)

        def run(self) -> None:
            return None

    class NewSupervisor(OldSupervisor):
        def __init__(self, config, sockets):
            handed.extend(sockets)

    supervisor = OldSupervisor if takes_target else NewSupervisor
    monkeypatch.setattr(supervisors, "Multiprocess", supervisor)
    config = uvicorn.Config("exporter.server:app_from_environment", host="127.0.0.1", port=0,
                            workers=2)  # fmt: skip
    cli._run_workers(config)
    try:
        assert [s.proto for s in handed] == [socket.IPPROTO_TCP]
        assert handed[0].getsockname()[0] == "127.0.0.1"
    finally:
        for sock in handed:
            sock.close()


def test_serve_caps_malloc_arenas_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    cli.limit_malloc_arenas()
    assert os.environ["MALLOC_ARENA_MAX"] == str(cli.MALLOC_ARENAS)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "6")
    cli.limit_malloc_arenas()
    assert os.environ["MALLOC_ARENA_MAX"] == "6"


UNRULY_MODEL = """
def predict(features):
    kind = features["kind"]
    if kind == "exit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "set":
        return {1, 2}
    if kind == "bytes":
        return b"\\xff"
    if kind == "deep":
        nested = []
        for _ in range(10_000):
            nested = [nested]
        return nested
    return "fine"
"""


@pytest.mark.parametrize(
    ("kind", "error"),
    [("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt"), ("set", "ModelOutputError"),
     ("bytes", "ModelOutputError"), ("deep", "ModelOutputError")],
)  # fmt: skip
def test_a_model_that_exits_or_answers_what_json_cannot_carry_is_a_counted_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, error: str
) -> None:
    """Found in the second hostile review: these were starlette's plain-text 500, not counted
    as model errors (the error-ratio alert never saw them) while the prediction was counted."""
    (tmp_path / "unruly_model.py").write_text(UNRULY_MODEL, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "monitor.yml"
    config.write_text(
        "model: {name: unruly, task: classification, import_path: 'unruly_model:predict'}\n"
        "outcomes: {store: memory}\n",
        encoding="utf-8",
    )
    service = build_service(load_config(config), tmp_path / "data")
    with TestClient(create_app(service)) as client:
        answer = client.post("/predict", json={"features": {"kind": kind}})
        assert answer.status_code == 500
        assert answer.json() == {"detail": "the model failed to predict"}
        assert client.post("/predict", json={"features": {"kind": "ok"}}).status_code == 200
        text = client.get("/metrics").text
    assert sample(text, "model_prediction_errors_total", error=error) == 1
    assert sample(text, "model_prediction_duration_seconds_count") == 2
    predicted = metric_samples(text, "model_predictions_total")
    assert sum(predicted.values()) == 1, "the failed call was counted as a prediction"
