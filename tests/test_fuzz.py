"""Schema-based fuzzing of every HTTP operation of the model server and of the alert receiver.

Schemathesis reads each app's OpenAPI document and generates requests from it: positive ones
(bodies the schema allows) and negative ones (bodies that break it). Every answer must come within
a bounded time, never be a 5xx, have a documented status and content type and match the documented
schema; a negative request must be refused with a 4xx. The apps are called in process (fast, and
deterministic with ``derandomize``); a short run goes through a live uvicorn for real HTTP parsing.

The generated-JSON test in test_service.py throws arbitrary JSON at the handlers; this module is
the schema-driven part: near-valid bodies that get past the first checks.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from exporter.config import load_config
from exporter.receiver import AlertStore
from exporter.receiver import create_app as create_receiver
from exporter.server import BodyLimit, build_service, create_app
from tests.service_fixtures import live_server, write_setup

#: Longest any single answer may take: far above a normal one, low enough to catch a hang.
CALL_TIMEOUT_SECONDS = 10.0
RECEIVER_TOKEN = "fuzz-token"

SERVICE_OPERATIONS = frozenset(
    {"POST /predict", "POST /feedback", "GET /healthz", "GET /readyz", "GET /metrics",
     "GET /status"}
)  # fmt: skip
RECEIVER_OPERATIONS = frozenset(
    {"POST /alerts", "GET /alerts", "GET /healthz", "GET /readyz", "GET /metrics"}
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
#: A schema-violating request must get one of these. 413 is the documented answer to a body or
#: batch over the limit, which schemathesis does not count as a refusal by default.
REFUSALS = [400, 401, 404, 409, 413, 422]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
)


def steady_fare(features: Mapping[str, Any]) -> float:
    """A regression model that never raises: any 5xx in the fuzzing is the server's own."""
    miles = features.get("miles")
    if isinstance(miles, bool) or not isinstance(miles, (int, float)):
        return 3.0
    try:
        return 3.0 + 2.0 * float(miles)
    except OverflowError:  # an integer past a double, should the server ever pass one on
        return 3.0


#: Builds a fresh app on a data directory, registering its cleanups on the stack.
Build = Callable[[Path, contextlib.ExitStack], Any]


@dataclass(frozen=True)
class Target:
    """One app under fuzzing: its loaded schema, how to build a fresh instance, and the headers
    every request carries."""

    schema: Any
    build: Build
    headers: Mapping[str, str]


def _service_config(directory: Path, task: str) -> Path:
    """write_setup's toy config, with a model that cannot raise for a regression."""
    path = write_setup(directory, task)
    if task == "regression":
        config = yaml.safe_load(path.read_text())
        config["model"]["import_path"] = "tests.test_fuzz:steady_fare"
        path.write_text(yaml.safe_dump(config))
    return path


def _service_target(config_path: Path) -> Target:
    config = load_config(config_path)

    def build(data_dir: Path, cleanup: contextlib.ExitStack) -> Any:
        service = build_service(config, data_dir)
        cleanup.callback(service.store.close)  # the lifespan closes it too, if it ran
        return BodyLimit(create_app(service), config.service.max_body_bytes)

    return Target(_schema_of(build), build, {})


def _receiver_target() -> Target:
    def build(data_dir: Path, cleanup: contextlib.ExitStack) -> Any:
        store = AlertStore.in_directory(data_dir)
        cleanup.callback(store.close)
        return create_receiver(
            store, token=RECEIVER_TOKEN, actions={}, registry=CollectorRegistry()
        )

    return Target(_schema_of(build), build, {"Authorization": f"Bearer {RECEIVER_TOKEN}"})


def _schema_of(build: Build) -> Any:
    """The app's OpenAPI document, read without starting it; each test calls a fresh instance."""
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as cleanup:
        app = build(Path(scratch), cleanup)
        inner: Any = app.app if isinstance(app, BodyLimit) else app
        document = inner.openapi()
    return schemathesis.openapi.from_dict(document, config=CONFIG)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Target]:
    """Both tasks of the model server (as served: body limit included) and the receiver."""
    found = {
        task: _service_target(_service_config(tmp_path_factory.mktemp(task), task))
        for task in ("classification", "regression")
    }
    found["receiver"] = _receiver_target()
    return found


def _labels(schema: Any) -> set[str]:
    return {result.ok().label for result in schema.get_all_operations()}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("classification", SERVICE_OPERATIONS),
        ("regression", SERVICE_OPERATIONS),
        ("receiver", RECEIVER_OPERATIONS),
    ],
)
def test_every_operation_is_fuzzed(
    targets: dict[str, Target], target: str, expected: frozenset[str]
) -> None:
    """A new endpoint fails here until it is added to the operation lists and to PLAN."""
    assert _labels(targets[target].schema) == expected


def test_request_bodies_are_documented(targets: dict[str, Target]) -> None:
    paths = targets["classification"].schema.raw_schema["paths"]
    predict = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    single, batch = predict["oneOf"]
    assert set(single["properties"]["features"]["properties"]) == {"miles", "zone"}
    assert batch["properties"]["instances"]["maxItems"] == 50  # service.max_batch of write_setup
    assert "requestBody" in paths["/feedback"]["post"]


def _fuzz(
    target: Target,
    label: str,
    mode: GenerationMode,
    examples: int,
    send: Callable[[Any], Any],
) -> None:
    """Run ``examples`` generated requests against one operation and check every answer."""
    method, path = label.split(" ", 1)
    operation = target.schema[path][method]
    checks = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = send(case)
        case.validate_response(response, checks=checks, headers=dict(target.headers))

    run()


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[Callable[[Target], Callable[[Any], Any]]]:
    """A fresh instance of a target, called in process; its lifespan ends with the test."""
    with contextlib.ExitStack() as cleanup:

        def sender(target: Target) -> Callable[[Any], Any]:
            app = target.build(tmp_path / "data", cleanup)
            # Schemathesis starts an app's lifespan on its first call and keeps it running: end
            # it (the service then flushes and closes its store) before the app's own cleanups.
            cleanup.callback(asgi.shutdown_lifespans)
            headers = dict(target.headers)
            return lambda case: case.call(app=app, headers=headers, timeout=CALL_TIMEOUT_SECONDS)

        yield sender


#: (target, operation, mode, examples): bodies and parameters get the most examples; an operation
#: without any input has one request to try.
PLAN = [
    ("classification", "POST /predict", GenerationMode.POSITIVE, 60),
    ("classification", "POST /predict", GenerationMode.NEGATIVE, 60),
    ("classification", "POST /feedback", GenerationMode.POSITIVE, 40),
    ("classification", "POST /feedback", GenerationMode.NEGATIVE, 40),
    ("regression", "POST /predict", GenerationMode.POSITIVE, 40),
    ("regression", "POST /predict", GenerationMode.NEGATIVE, 40),
    ("regression", "POST /feedback", GenerationMode.POSITIVE, 30),
    ("regression", "POST /feedback", GenerationMode.NEGATIVE, 30),
    ("receiver", "POST /alerts", GenerationMode.POSITIVE, 50),
    ("receiver", "POST /alerts", GenerationMode.NEGATIVE, 50),
    ("receiver", "GET /alerts", GenerationMode.POSITIVE, 30),
    ("receiver", "GET /alerts", GenerationMode.NEGATIVE, 30),
    *(
        (target, f"GET {path}", GenerationMode.POSITIVE, 3)
        for target in ("classification", "regression", "receiver")
        for path in ("/healthz", "/readyz", "/metrics")
    ),
    *(
        (target, "GET /status", GenerationMode.POSITIVE, 3)
        for target in ("classification", "regression")
    ),
]


@pytest.mark.parametrize(
    ("target", "label", "mode", "examples"),
    PLAN,
    ids=[f"{t}-{label}-{mode.value}" for t, label, mode, _ in PLAN],
)
def test_fuzzed_requests_are_answered_in_time_without_5xx_and_as_documented(
    targets: dict[str, Target],
    in_process: Callable[[Target], Callable[[Any], Any]],
    target: str,
    label: str,
    mode: GenerationMode,
    examples: int,
) -> None:
    _fuzz(targets[target], label, mode, examples, in_process(targets[target]))


def test_plan_covers_every_operation() -> None:
    planned = {(target, label) for target, label, _, _ in PLAN}
    for target, operations in (
        ("classification", SERVICE_OPERATIONS),
        ("regression", SERVICE_OPERATIONS),
        ("receiver", RECEIVER_OPERATIONS),
    ):
        assert {(target, op) for op in operations} <= planned


# -- through a live uvicorn: real HTTP parsing of the same generated requests -------------------


def test_live_server_fuzzing(tmp_path: Path) -> None:
    config = _service_config(tmp_path, "classification")
    with live_server(config, tmp_path / "data") as (url, _):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=CONFIG)
        target = Target(schema, lambda *_: None, {})

        def send(case: Any) -> Any:
            return case.call(base_url=url, timeout=CALL_TIMEOUT_SECONDS)

        for label in ("POST /predict", "POST /feedback"):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(target, label, mode, 25, send)
    log = "".join(path.read_text() for path in tmp_path.glob("serve-*.log"))
    assert "Traceback" not in log, log[-3000:]  # nothing failed unseen behind a 4xx
