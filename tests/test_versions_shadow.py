"""Shadow versions: they see the requests and are recorded under their own version, and a shadow
that hangs or raises changes neither the primary's answers nor its latency (docs/versions.md)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service_fixtures import write_setup
from tests.test_service import sample
from tests.test_versions import client_for, with_candidates


def shadow(import_path: str, **settings: object) -> dict[str, object]:
    return {"version": "v3", "mode": "shadow", "import_path": f"tests.toy_models:{import_path}",
            **settings}  # fmt: skip


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def metric(client: TestClient, name: str, **labels: str) -> float:
    return sample(client.get("/metrics").text, name, **labels) or 0.0


def timed_answers(client: TestClient, n: int) -> tuple[list[float], list[float]]:
    """n predictions: their answers and their latencies as the client saw them."""
    answers, latencies = [], []
    for i in range(n):
        start = time.perf_counter()
        answer = client.post("/predict", json={"features": {"miles": float(i % 9)}})
        latencies.append(time.perf_counter() - start)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["version"] == "v1"
        answers.append(body["prediction"])
    return answers, latencies


def test_a_hanging_shadow_slows_nothing_and_is_counted_as_its_timeouts(tmp_path: Path) -> None:
    # The shadow sleeps 1 s per call; its timeout is 0.2 s and 2 calls may be in flight.
    n = 60
    (tmp_path / "base").mkdir()
    (tmp_path / "shadowed").mkdir()
    base = write_setup(tmp_path / "base")
    shadowed = with_candidates(
        tmp_path / "shadowed",
        [shadow("regress_sleeping", timeout_seconds=0.2, max_concurrency=2)],
    )
    with (
        client_for(base, tmp_path / "base-data") as alone,
        client_for(shadowed, tmp_path / "shadowed-data") as client,
    ):
        timed_answers(alone, 5)  # warm both up (first requests open files, threads)
        timed_answers(client, 5)
        expected, without = timed_answers(alone, n)
        answers, with_shadow = timed_answers(client, n)
        assert answers == expected
        # Generous bounds, measured in this test: the median within 3x the median without a
        # shadow (plus 2 ms for a busy machine), and no answer anywhere near the shadow's 1 s.
        assert statistics.median(with_shadow) < 3 * statistics.median(without) + 0.002, (
            statistics.median(with_shadow), statistics.median(without),
        )  # fmt: skip
        assert max(with_shadow) < 0.5
        total = n + 5

        def timeouts() -> float:
            return metric(client, "model_prediction_errors_total", version="v3",
                          error="ShadowTimeout")  # fmt: skip

        def skipped() -> float:
            return metric(client, "model_shadow_skipped_total", version="v3")

        # Every shadow call either timed out or was skipped while 2 were in flight.
        wait_for(lambda: timeouts() + skipped() == total)
        assert skipped() > 0 and timeouts() >= 2
        time.sleep(1.2)  # the hung calls come back: their late answers are dropped
        text = client.get("/metrics").text
        assert sample(text, "model_predictions_total", version="v3") in (None, 0)
        assert sample(text, "model_prediction_duration_seconds_count", version="v3") == timeouts()
        assert sample(text, "model_prediction_errors_total", version="v1") is None
        assert sample(text, "model_prediction_duration_seconds_count", version="v1") == total


def test_a_raising_shadow_is_counted_as_its_own_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = with_candidates(tmp_path, [shadow("regress_failing")], store="memory")
    n = 20
    with caplog.at_level(logging.WARNING), client_for(config, tmp_path / "data") as client:
        answers, _ = timed_answers(client, n)
        assert answers == [3 + 2 * (i % 9) for i in range(n)]
        wait_for(
            lambda: metric(client, "model_prediction_errors_total", version="v3",
                           error="ToyFailure") + metric(client, "model_shadow_skipped_total",
                                                        version="v3") == n
        )  # fmt: skip
        text = client.get("/metrics").text
    assert sample(text, "model_prediction_errors_total", version="v1") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("shadow version v3 of model toy raised ToyFailure" in m for m in messages)
    assert not any("version v1 raised" in m for m in messages), messages


def test_one_feedback_resolves_the_primary_and_its_shadow(tmp_path: Path) -> None:
    # The shadow answers 1 more than the primary; the truth is the primary's answer.
    config = with_candidates(tmp_path, [shadow("regress_plus_one")])
    n = 20
    with client_for(config, tmp_path / "data") as client:
        bodies = [
            client.post("/predict", json={"features": {"miles": float(i)}}).json() for i in range(n)
        ]

        def settled() -> float:
            return metric(client, "model_prediction_duration_seconds_count", version="v3")

        wait_for(lambda: settled() + metric(client, "model_shadow_skipped_total",
                                            version="v3") == n)  # fmt: skip
        shadowed = settled()
        for body in bodies:
            answer = client.post(
                "/feedback", json={"prediction_id": body["prediction_id"],
                                   "actual": body["prediction"]}
            )  # fmt: skip
            assert answer.json() == {"prediction_id": body["prediction_id"], "status": "recorded"}
        # The shadow's own prediction id is the primary's, '~', and its version.
        again = client.post(
            "/feedback", json={"prediction_id": f"{bodies[0]['prediction_id']}~v3",
                               "actual": bodies[0]["prediction"]}
        )  # fmt: skip
        text = client.get("/metrics").text
    assert shadowed > 0
    assert again.json()["status"] == "duplicate"
    assert sample(text, "model_absolute_error_count", version="v1") == n
    assert sample(text, "model_absolute_error_sum", version="v1") == 0
    assert sample(text, "model_absolute_error_count", version="v3") == shadowed
    assert sample(text, "model_absolute_error_sum", version="v3") == pytest.approx(shadowed)


def test_a_shadow_sees_its_weight_of_requests(tmp_path: Path) -> None:
    config = with_candidates(tmp_path, [shadow("regress", weight=0.5)], store="memory")
    n = 400
    with client_for(config, tmp_path / "data") as client:
        timed_answers(client, n)

        def seen() -> float:
            return metric(client, "model_prediction_duration_seconds_count", version="v3") + (
                metric(client, "model_shadow_skipped_total", version="v3")
            )

        time.sleep(1.0)  # each shadow call takes microseconds
        shadowed = seen()
    sd = (n * 0.25) ** 0.5
    assert abs(shadowed - n / 2) < 4 * sd, shadowed
