"""Canary and shadow under `serve --workers 2`, as a real subprocess: a routing key lands on one
version whichever worker takes it, and feedback received by any worker is counted under the
version that made the prediction, for the shadow too (the workers share the outcome store)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.service_fixtures import live_server
from tests.test_service import sample
from tests.test_versions import with_candidates


def primary_workers(answers: list[tuple[str, dict[str, Any]]]) -> set[str]:
    """The id prefixes of the primary's answers: one per worker that answered."""
    return {body["prediction_id"].split("-")[0] for _, body in answers if body["version"] == "v1"}


def test_two_workers_route_and_count_outcomes_by_version(tmp_path: Path) -> None:
    config = with_candidates(
        tmp_path,
        [
            {"version": "v2", "mode": "canary", "weight": 0.4,
             "import_path": "tests.toy_models:regress_plus_one"},
            {"version": "v3", "mode": "shadow", "max_concurrency": 8,
             "import_path": "tests.toy_models:regress_plus_one"},
        ],
    )  # fmt: skip
    with live_server(config, tmp_path / "data", workers=2) as (url, _):
        # A fresh connection per request, so the kernel spreads them over both workers; each
        # worker's monitors number their ids after a prefix of their own, which tells them apart.
        answers: list[tuple[str, dict[str, Any]]] = []
        while len(answers) < 60 or (len(primary_workers(answers)) < 2 and len(answers) < 400):
            key = f"key-{len(answers) % 20}"
            body = httpx.post(f"{url}/predict", json={"features": {"miles": 2.0}},
                              headers={"X-Routing-Key": key}, timeout=10).json()  # fmt: skip
            answers.append((key, body))
        n = len(answers)
        assert len(primary_workers(answers)) == 2
        by_key: dict[str, set[str]] = {}
        for key, body in answers:
            by_key.setdefault(key, set()).add(body["version"])
        assert all(len(versions) == 1 for versions in by_key.values()), by_key
        answered = Counter(body["version"] for _, body in answers)
        assert set(answered) == {"v1", "v2"}, answered

        def shadow_calls() -> float:
            text = httpx.get(f"{url}/metrics", timeout=10).text
            done = sample(text, "model_prediction_duration_seconds_count", version="v3") or 0
            return done + (sample(text, "model_shadow_skipped_total", version="v3") or 0)

        deadline = time.monotonic() + 20
        while shadow_calls() < n:
            assert time.monotonic() < deadline, shadow_calls()
            time.sleep(0.2)
        # The truth is the primary's answer (7): the canary and the shadow are 1 off.
        for _, body in answers:
            answer = httpx.post(f"{url}/feedback", json={"prediction_id": body["prediction_id"],
                                                         "actual": 7.0}, timeout=10)  # fmt: skip
            assert answer.json()["status"] == "recorded", answer.text
        text = httpx.get(f"{url}/metrics", timeout=10).text
    for version, error in (("v1", 0.0), ("v2", 1.0)):
        assert sample(text, "model_absolute_error_count", version=version) == answered[version]
        assert (
            sample(text, "model_absolute_error_sum", version=version) == answered[version] * error
        )
    shadowed = sample(text, "model_prediction_duration_seconds_count", version="v3")
    assert shadowed and shadowed > 0
    assert sample(text, "model_absolute_error_count", version="v3") == shadowed
    assert sample(text, "model_absolute_error_sum", version="v3") == shadowed
    for version, role in (("v1", "primary"), ("v2", "canary"), ("v3", "shadow")):
        assert sample(text, "model_version_role", version=version, role=role) == 1
    assert sample(text, "model_candidate_guard", version="v3", metric="mae") == 1
