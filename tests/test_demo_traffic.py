"""The demo traffic generator against stub services that record what they receive.

Each stub implements the service's HTTP contract in memory (``/healthz``, ``/predict``,
``/feedback``) around the real demo model, and is served by uvicorn on 127.0.0.1 in a thread.
Scenarios are shortened with ``warmup_seconds`` and short durations; the assertions compare the
requests sent before and after an injection started, told apart by the summary's count per phase.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pytest
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from exporter import demo
from exporter.demo_models import fare, intent
from tests.binaries import free_port

#: Requests on each side of a scheduled switch attributed to neither phase, and the demo's
#: concurrency in the tests that split by phase: a request can only overtake one that is still in
#: flight, so with at most GUARD in flight none crosses the guard band (see _by_phase).
GUARD = 8


@dataclass
class Prediction:
    at: float
    features: dict[str, Any]
    prediction: Any = None
    failed: bool = False


@dataclass
class Feedback:
    at: float
    prediction_id: str
    actual: Any


@dataclass
class Stub:
    """An in-memory model service: what a ``model-exporter serve`` answers, and a log of it."""

    model: str
    task: str
    predict: Callable[[dict[str, Any]], Any]
    predictions: dict[str, Prediction] = field(default_factory=dict)
    requests: list[Prediction] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def reset(self) -> None:
        with self.lock:
            self.predictions.clear()
            self.requests.clear()
            self.feedback.clear()

    def _one(self, features: dict[str, Any]) -> dict[str, Any] | None:
        record = Prediction(time.monotonic(), dict(features))
        with self.lock:
            self.requests.append(record)
        try:
            result = self.predict(features)
        except Exception:
            record.failed = True
            return None
        prediction, confidence = result if isinstance(result, tuple) else (result, None)
        prediction_id = uuid.uuid4().hex
        record.prediction = prediction
        with self.lock:
            self.predictions[prediction_id] = record
        return {
            "prediction": prediction,
            "confidence": confidence,
            "prediction_id": prediction_id,
            "model": self.model,
            "version": "v-test",
        }

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok", "model": self.model, "version": "v-test", "task": self.task}

        # Plain `def` endpoints run in a thread pool, so a slow fault does not stall the others.
        @app.post("/predict")
        def predict(body: Annotated[dict[str, Any], Body()]) -> Any:
            if "instances" in body:
                answers = [self._one(item) for item in body["instances"]]
                if any(a is None for a in answers):
                    return JSONResponse({"detail": "the model failed"}, status_code=500)
                return {"predictions": answers}
            answer = self._one(body["features"])
            if answer is None:
                return JSONResponse({"detail": "the model failed"}, status_code=500)
            return answer

        @app.post("/feedback")
        def feedback(body: Annotated[dict[str, Any], Body()]) -> Any:
            prediction_id, actual = body["prediction_id"], body["actual"]
            with self.lock:
                if prediction_id not in self.predictions:
                    return JSONResponse({"detail": "unknown prediction_id"}, status_code=404)
                earlier = [f.actual for f in self.feedback if f.prediction_id == prediction_id]
                if earlier and earlier[0] != actual:
                    return JSONResponse({"detail": "conflicting outcome"}, status_code=409)
                self.feedback.append(Feedback(time.monotonic(), prediction_id, actual))
            return {"prediction_id": prediction_id, "status": "recorded"}

        return app


@contextlib.contextmanager
def serving(stub: Stub) -> Iterator[Stub]:
    port = free_port()
    config = uvicorn.Config(
        stub.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the stub server stopped at start"
            assert time.monotonic() < deadline, "the stub server did not start within 10 s"
            time.sleep(0.02)
        stub.url = f"http://127.0.0.1:{port}"
        yield stub
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def stubs() -> Iterator[dict[str, Stub]]:
    with (
        serving(Stub("fare", "regression", fare.predict)) as fare_stub,
        serving(Stub("intent", "classification", intent.predict)) as intent_stub,
    ):
        yield {"fare": fare_stub, "intent": intent_stub}


@pytest.fixture
def fare_stub(stubs: dict[str, Stub]) -> Stub:
    stubs["fare"].reset()
    return stubs["fare"]


@pytest.fixture
def intent_stub(stubs: dict[str, Stub]) -> Stub:
    stubs["intent"].reset()
    return stubs["intent"]


def _run(targets: list[Stub], scenario: str, duration: float, **options: Any) -> Any:
    return demo.run_demo([t.url for t in targets], scenario, duration, **options)


def _by_phase(stub: Stub, target: Any) -> dict[str, list[Prediction]]:
    """The stub's requests per phase of the schedule, in the order they arrived.

    The summary counts the requests sent in each phase. Arrival order is send order except where
    concurrent requests overtake each other, so :data:`GUARD` requests on each side of a switch
    are left out (the run's ``max_in_flight`` must be at most GUARD). A slow machine delays the
    requests but does not move them to another phase.
    """
    counts = list(target["phases"].items())
    phases: dict[str, list[Prediction]] = {}
    first = 0
    for index, (name, count) in enumerate(counts):
        start = first + GUARD if index > 0 else first
        end = first + count - GUARD if index < len(counts) - 1 else first + count
        phases[name] = stub.requests[start:end]
        first += count
    return phases


def _fed_back(stub: Stub, phase: list[Prediction]) -> list[tuple[Any, Any]]:
    """(prediction, actual) of every ground truth posted for a request of ``phase``."""
    members = {id(r) for r in phase}
    pairs = []
    for item in stub.feedback:
        made = stub.predictions[item.prediction_id]
        if id(made) in members:
            pairs.append((made.prediction, item.actual))
    return pairs


# -- traffic ---------------------------------------------------------------------------------------


def test_requests_arrive_at_the_asked_rate_with_feedback_after_them(
    fare_stub: Stub, intent_stub: Stub
) -> None:
    rate, duration = 25.0, 2.5
    summary = _run(
        [fare_stub, intent_stub], "steady", duration, rate=rate, feedback_delay=0.2, seed=1
    )
    assert not summary["interrupted"]
    assert summary["seconds"] < duration + 2
    expected = rate * duration
    for stub, target in zip((fare_stub, intent_stub), summary["targets"], strict=True):
        assert target["model"] == stub.model and target["task"] == stub.task
        assert 0.6 * expected < len(stub.requests) < 1.4 * expected
        assert target["requests"] == len(stub.requests) == target["ok"]
        assert target["phases"] == {"steady": len(stub.requests)}
        assert target["status"] == {200: len(stub.requests)}
        assert not any("_fault" in r.features for r in stub.requests)
        # Ground truth comes after its prediction, for an id the service handed out.
        assert stub.feedback, "no feedback arrived"
        assert target["feedback_failed"] == 0
        assert target["feedback_sent"] == len(stub.feedback)
        assert target["feedback_sent"] + target["feedback_dropped"] == target["ok"]
        assert len({f.prediction_id for f in stub.feedback}) == len(stub.feedback)
        delays = []
        for item in stub.feedback:
            made = stub.predictions[item.prediction_id]
            assert item.at >= made.at
            delays.append(item.at - made.at)
        # Exponential with mean 0.2 s, capped at 5 x the mean, plus polling and HTTP time (which
        # a busy machine stretches).
        assert 0.05 < float(np.mean(delays)) < 1.5
        assert max(delays) < demo.FEEDBACK_DELAY_CAP * 0.2 + 3.0
    # Steady ground truth agrees with a healthy model.
    fare_errors = [abs(p - a) for p, a in _fed_back(fare_stub, fare_stub.requests)]
    assert float(np.mean(fare_errors)) < 3.5
    agree = [p == a for p, a in _fed_back(intent_stub, intent_stub.requests)]
    assert float(np.mean(agree)) > 0.85
    channels = {r.features["channel"] for r in intent_stub.requests}
    assert channels <= set(intent.CHANNELS) and len(channels) >= 2


def test_drift_shifts_the_inputs_after_the_switch(fare_stub: Stub, intent_stub: Stub) -> None:
    summary = _run(
        [fare_stub, intent_stub], "drift", 4.0, rate=50, feedback_delay=0, warmup_seconds=2.0,
        max_in_flight=GUARD,
    )  # fmt: skip
    fare_target, intent_target = summary["targets"]
    assert fare_target["phases"].keys() == {"steady", "drift"}
    phases = _by_phase(fare_stub, fare_target)
    assert len(phases["steady"]) > 40 and len(phases["drift"]) > 40
    miles_before = np.mean([r.features["trip_miles"] for r in phases["steady"]])
    miles_after = np.mean([r.features["trip_miles"] for r in phases["drift"]])
    assert miles_after > 2 * miles_before
    phases = _by_phase(intent_stub, intent_target)
    length_before = np.mean([len(r.features["text"]) for r in phases["steady"]])
    length_after = np.mean([len(r.features["text"]) for r in phases["drift"]])
    assert length_after > 2 * length_before
    phone_before = np.mean([r.features["channel"] == "phone" for r in phases["steady"]])
    phone_after = np.mean([r.features["channel"] == "phone" for r in phases["drift"]])
    assert phone_after > 0.5 > phone_before


def test_degrade_breaks_the_ground_truth_after_the_switch(
    fare_stub: Stub, intent_stub: Stub
) -> None:
    summary = _run(
        [fare_stub, intent_stub], "degrade", 3.0, rate=40, feedback_delay=0.05,
        warmup_seconds=1.5, max_in_flight=GUARD,
    )  # fmt: skip
    fare_target, intent_target = summary["targets"]
    phases = _by_phase(fare_stub, fare_target)
    fare_before = [abs(p - a) for p, a in _fed_back(fare_stub, phases["steady"])]
    fare_after = [abs(p - a) for p, a in _fed_back(fare_stub, phases["degrade"])]
    assert len(fare_before) > 20 and len(fare_after) > 20
    assert float(np.mean(fare_before)) < 3.5
    assert float(np.mean(fare_after)) > 5.0  # the MAE alert's critical threshold
    phases = _by_phase(intent_stub, intent_target)
    wrong_before = [p != a for p, a in _fed_back(intent_stub, phases["steady"])]
    wrong_after = [p != a for p, a in _fed_back(intent_stub, phases["degrade"])]
    assert float(np.mean(wrong_before)) < 0.15
    assert float(np.mean(wrong_after)) > 0.4
    assert {a for _, a in _fed_back(intent_stub, intent_stub.requests)} <= set(intent.intents())


def test_errors_scenario_sends_error_faults_on_a_fifth_of_requests(fare_stub: Stub) -> None:
    summary = _run(
        [fare_stub], "errors", 3.0, rate=50, feedback_delay=0, warmup_seconds=1.0, seed=4,
        max_in_flight=GUARD,
    )  # fmt: skip
    target = summary["targets"][0]
    phases = _by_phase(fare_stub, target)
    assert not any("_fault" in r.features for r in phases["steady"])
    faulted = [r.features.get("_fault") == "error" for r in phases["errors"]]
    assert len(faulted) > 50
    assert 0.1 < float(np.mean(faulted)) < 0.32
    failed = sum(r.failed for r in fare_stub.requests)
    assert target["faults"] == {"error": failed}
    assert target["status"].get(500) == failed == summary["errors"]
    assert summary["status"][200] == summary["ok"] == len(fare_stub.requests) - failed


def test_all_runs_every_injection_in_turn_with_a_timeline(fare_stub: Stub) -> None:
    out = io.StringIO()
    duration = 5.0
    summary = _run(
        [fare_stub], "all", duration, rate=40, feedback_delay=0.05, max_in_flight=GUARD,
        out=out, tty=True,
    )  # fmt: skip
    text = out.getvalue()
    lines = [line.split("\x1b[K")[-1] for line in text.splitlines()]
    timeline = [line for line in lines if line.startswith("[")]
    assert timeline == [
        "[   1.0s] drift: trip_miles x2.5 on fare",
        "[   2.0s] drift: stopped on fare",
        "[   2.0s] degrade: actual fares = true x1.8 + 6 on fare",
        "[   3.0s] degrade: stopped on fare",
        "[   3.0s] errors: 20% of requests with _fault=error on fare",
        "[   4.0s] errors: stopped on fare",
        "[   4.0s] latency: 30% of requests with _fault=slow (0.25-0.5 s) on fare",
        "[   5.0s] latency: stopped on fare",
    ]
    assert "\r\x1b[Ksent " in text  # the progress line, redrawn in place
    target = summary["targets"][0]
    assert list(target["phases"]) == ["steady", "drift", "degrade", "errors", "latency"]
    faults = {
        name: {r.features.get("_fault", "") for r in requests}
        for name, requests in _by_phase(fare_stub, target).items()
    }
    assert faults["steady"] == faults["drift"] == faults["degrade"] == {""}
    assert faults["errors"] == {"", "error"}
    assert faults["latency"] == {"", "slow"}
    assert target["faults"].keys() == {"error", "slow"}
    # Slow answers (up to half a second) are waited for, but the run stays bounded.
    assert summary["seconds"] < duration + 3


def test_ctrl_c_stops_the_run_cleanly(fare_stub: Stub) -> None:
    # A shell starts background jobs (`cmd &`, nohup) with SIGINT ignored, and Python keeps it
    # ignored: Ctrl-C's handler is put back for this test, or the signal would never arrive.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        summary = _run([fare_stub], "steady", 30.0, rate=20, feedback_delay=5)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert summary["interrupted"]
    assert summary["seconds"] < 5
    # Requests under way when it stopped were abandoned: sent, maybe never answered.
    assert 0 < summary["ok"] <= len(fare_stub.requests) <= summary["requests"]
    # Ground truth not yet due when the run stopped is dropped, not sent late.
    assert summary["feedback_failed"] == 0
    assert summary["feedback_sent"] + summary["feedback_dropped"] == summary["ok"]


# -- command line ----------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_unreachable_target_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert demo.run(_args("--target", url, "--duration", "5")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("model-exporter demo: cannot reach ") and url in err


def test_a_target_that_is_not_a_model_service_exits_2(
    fare_stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.run(_args("--target", f"{fare_stub.url}/elsewhere", "--duration", "5")) == 2
    assert "answered HTTP 404" in capsys.readouterr().err
    assert not fare_stub.requests


def test_defaults_and_validation() -> None:
    args = _args()
    assert args.target is None and args.scenario == "all"
    assert (args.duration, args.rate, args.feedback_delay) == (300.0, 20.0, 5.0)
    for bad in (["--rate", "0"], ["--duration", "-1"], ["--feedback-delay", "nan"]):
        with pytest.raises(SystemExit):
            _args(*bad)
    with pytest.raises(ValueError, match="scenario"):
        demo.run_demo(["http://127.0.0.1:1"], "chaos", 1.0)


def test_schedule() -> None:
    assert demo.schedule("steady", 60) == [demo.Phase("steady", 0.0, 60)]
    assert demo.schedule("drift", 300) == [
        demo.Phase("steady", 0.0, 10.0),
        demo.Phase("drift", 10.0, 300),
    ]
    assert demo.schedule("errors", 5) == [demo.Phase("steady", 0.0, 5)]
    phases = demo.schedule("all", 50)
    assert [p.name for p in phases] == ["steady", "drift", "degrade", "errors", "latency"]
    assert [(p.start, p.end) for p in phases] == [(i * 10.0, (i + 1) * 10.0) for i in range(5)]
    # The canary is the service's config: one phase from the first request, no warm-up.
    assert demo.schedule("canary", 300) == [demo.Phase("canary", 0.0, 300)]
    assert "canary" in demo.SCENARIOS and "canary" not in demo.ALL_PHASES


def test_canary_sends_steady_traffic_and_its_ground_truth(fare_stub: Stub) -> None:
    out = io.StringIO()
    summary = _run(
        [fare_stub], "canary", 2.0, rate=40, feedback_delay=0.05, seed=6, out=out, tty=False
    )
    target = summary["targets"][0]
    assert target["phases"] == {"canary": len(fare_stub.requests)} and target["faults"] == {}
    assert not any("_fault" in r.features for r in fare_stub.requests)
    # The truth is the trip's fare, as in steady traffic: what the versions are compared on.
    errors = [abs(p - a) for p, a in _fed_back(fare_stub, fare_stub.requests)]
    assert len(errors) > 20 and float(np.mean(errors)) < 3.5
    assert "[   0.0s] canary: steady traffic and ground truth, for the candidate versions " in (
        out.getvalue()
    )
