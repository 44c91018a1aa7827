"""The Alertmanager webhook receiver: payload contract, token, durable idempotent store, listing,
metrics, actions (no shell, stdin only, timeout) and restarts, in process and over real HTTP."""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from exporter.receiver import (
    DATABASE_NAME,
    MAX_ALERTNAMES,
    MAX_BODY_BYTES,
    OTHER,
    AlertAction,
    AlertStore,
    ReceiverConfigError,
    add_arguments,
    create_app,
    load_actions,
    run,
)
from tests.binaries import free_port, terminate

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parent.parent


def make_alert(
    fingerprint: str = "1a30ba71cca2921f",
    *,
    alertname: str = "ModelAccuracyDrop",
    status: str = "firing",
    starts_at: str = "2024-05-01T10:00:00.123456789+02:00",
    model: str = "churn",
    severity: str | None = "critical",
    **annotations: str,
) -> dict[str, Any]:
    labels = {"alertname": alertname, "model": model, "version": "3"}
    if severity is not None:
        labels["severity"] = severity
    return {
        "status": status,
        "labels": labels,
        "annotations": annotations or {"summary": f"{alertname} on {model}"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def make_payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """A notification as Alertmanager sends it (webhook payload version 4)."""
    alerts = alerts or (make_alert(),)
    return {
        "receiver": "model-receiver",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="ModelAccuracyDrop"}',
        "truncatedAlerts": 0,
    }


class Client:
    """A synchronous client over httpx's ASGI transport, with the app's lifespan running."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@contextmanager
def serve(app: FastAPI) -> Iterator[Client]:
    with start_blocking_portal() as portal:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://receiver"
        )
        lifespan = app.router.lifespan_context(app)
        portal.call(lifespan.__aenter__)
        try:
            yield Client(portal, client)
        finally:
            # Shutdown waits for running actions, so their outcomes are counted before this returns.
            portal.call(lifespan.__aexit__, None, None, None)
            portal.call(client.aclose)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    opened = AlertStore.in_directory(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(store: AlertStore, registry: CollectorRegistry) -> Iterator[Client]:
    with serve(create_app(store, token=TOKEN, actions={}, registry=registry)) as c:
        yield c


def notifications(registry: CollectorRegistry, alertname: str, status: str, severity: str) -> float:
    value = registry.get_sample_value(
        "model_alert_notifications_total",
        {"alertname": alertname, "status": status, "severity": severity},
    )
    return 0.0 if value is None else value


def action_count(registry: CollectorRegistry, alertname: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "model_alert_actions_total", {"alertname": alertname, "outcome": outcome}
    )
    return 0.0 if value is None else value


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def stored_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    """The rows as another process would see them: a separate connection to the file."""
    with sqlite3.connect(data_dir / DATABASE_NAME) as conn:
        return conn.execute(
            "SELECT fingerprint, starts_at, status, alert_json FROM alerts ORDER BY id"
        ).fetchall()


# --- POST /alerts: storage and idempotence --------------------------------------------------


def test_notification_is_committed_to_sqlite_before_the_answer(client, tmp_path):
    answer = client.post("/alerts", json=make_payload(), headers=AUTH)

    assert answer.status_code == 200
    assert answer.json() == {"received": 1, "stored": 1, "duplicates": 0}
    rows = stored_rows(tmp_path / "data")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("1a30ba71cca2921f", "2024-05-01T08:00:00.123456+00:00", "firing")
    ]
    with sqlite3.connect(tmp_path / "data" / DATABASE_NAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_repeat_is_acknowledged_but_stored_and_counted_once(client, registry, tmp_path):
    payload = make_payload(make_alert("aaaa"), make_alert("bbbb"))
    first = client.post("/alerts", json=payload, headers=AUTH)
    # Alertmanager's repeat_interval: the same alerts again, one of them now next to a new one.
    again = client.post("/alerts", json=payload, headers=AUTH)
    mixed = client.post(
        "/alerts", json=make_payload(make_alert("bbbb"), make_alert("cccc")), headers=AUTH
    )

    assert first.json() == {"received": 2, "stored": 2, "duplicates": 0}
    assert again.status_code == 200
    assert again.json() == {"received": 2, "stored": 0, "duplicates": 2}
    assert mixed.json() == {"received": 2, "stored": 1, "duplicates": 1}
    assert len(stored_rows(tmp_path / "data")) == 3
    assert notifications(registry, "ModelAccuracyDrop", "firing", "critical") == 3


def test_same_instant_with_another_offset_is_a_repeat_and_resolution_is_new(client):
    client.post("/alerts", json=make_payload(make_alert("f1")), headers=AUTH)
    same_instant = make_alert("f1", starts_at="2024-05-01T08:00:00.123456Z")
    resolved = make_alert("f1", status="resolved")
    later_episode = make_alert("f1", starts_at="2024-05-02T08:00:00Z")

    assert client.post("/alerts", json=make_payload(same_instant), headers=AUTH).json() == {
        "received": 1,
        "stored": 0,
        "duplicates": 1,
    }
    answer = client.post(
        "/alerts", json=make_payload(resolved, later_episode, status="resolved"), headers=AUTH
    )
    assert answer.json() == {"received": 2, "stored": 2, "duplicates": 0}


def test_unknown_fields_are_ignored_and_kept_verbatim(client, tmp_path):
    alert = make_alert("f1") | {"silenceURL": "http://am/silence", "values": {"B": 0.42}}
    payload = make_payload(alert) | {"orgId": 1, "futureField": {"nested": [1, 2]}}

    assert client.post("/alerts", json=payload, headers=AUTH).status_code == 200
    (row,) = stored_rows(tmp_path / "data")
    assert json.loads(row[3]) == alert


# --- token ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong-token"}, "wrong bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "missing bearer token"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
    ],
)
def test_missing_or_wrong_token_is_401_and_nothing_is_stored(client, tmp_path, headers, reason):
    answer = client.post("/alerts", json=make_payload(), headers=headers)

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {"detail": [{"field": "Authorization", "reason": reason}]}
    assert stored_rows(tmp_path / "data") == []


def test_token_is_checked_before_the_body_is_read(client):
    answer = client.post("/alerts", content=b"{broken", headers={"Authorization": "Bearer no"})
    assert answer.status_code == 401


def test_bearer_scheme_is_case_insensitive(client):
    answer = client.post(
        "/alerts", json=make_payload(), headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert answer.status_code == 200


def test_listing_needs_the_token_too_but_probes_metrics_and_docs_do_not(client):
    refused = client.get("/alerts")

    assert refused.status_code == 401
    assert refused.json() == {
        "detail": [{"field": "Authorization", "reason": "missing bearer token"}]
    }
    assert client.get("/alerts", headers=AUTH).status_code == 200
    opened = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
    assert [client.get(path).status_code for path in opened] == [200] * len(opened)


def test_a_misspelt_filter_is_refused_instead_of_listing_everything(client):
    refused = client.get("/alerts?alertnme=ModelDrift", headers=AUTH)

    assert refused.status_code == 422
    (problem,) = refused.json()["detail"]
    assert problem["field"] == "alertnme" and "unknown query parameter" in problem["reason"]


def test_without_a_token_posts_are_accepted_and_a_warning_is_logged(store, caplog):
    with caplog.at_level("WARNING", logger="exporter.receiver"):
        app = create_app(store, token=None, actions={})
    assert any("unauthenticated" in r.getMessage() for r in caplog.records)
    with serve(app) as client:
        assert client.post("/alerts", json=make_payload()).status_code == 200


def test_empty_token_is_refused(store):
    with pytest.raises(ValueError, match="token"):
        create_app(store, token="", actions={})


# --- malformed payloads ---------------------------------------------------------------------


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _alert_with(**changes: Any) -> dict[str, Any]:
    return make_payload(make_alert() | changes)


MALFORMED: list[tuple[str, bytes, int, str, str]] = [
    ("broken JSON", b'{"version": "4", "alerts": [', 400, "body", "not valid JSON"),
    ("not JSON at all", b"alertname=Foo", 400, "body", "not valid JSON"),
    ("invalid UTF-8", b'{"version": "\xff\xfe"}', 400, "body", "not valid JSON"),
    ("lone surrogate", b'{"version": "\\ud800"}', 400, "body", "not valid JSON"),
    ("NaN", b'{"version": "4", "truncatedAlerts": NaN}', 400, "body", "not valid JSON"),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, 400, "body", "recursion limit"),
    ("empty body", b"", 400, "body", "not valid JSON"),
    ("a list, not an object", b"[]", 422, "body", "valid dictionary"),
    (
        "wrong version",
        json.dumps(make_payload() | {"version": "3"}).encode(),
        422,
        "version",
        "'4'",
    ),
    (
        "version as a number",
        json.dumps(make_payload() | {"version": 4}).encode(),
        422,
        "version",
        "'4'",
    ),
    (
        "missing version",
        json.dumps(_without(make_payload(), "version")).encode(),
        422,
        "version",
        "Field required",
    ),
    (
        "missing alerts",
        json.dumps(_without(make_payload(), "alerts")).encode(),
        422,
        "alerts",
        "Field required",
    ),
    (
        "alerts not a list",
        json.dumps(make_payload() | {"alerts": {"0": make_alert()}}).encode(),
        422,
        "alerts",
        "valid list",
    ),
    (
        "missing fingerprint",
        json.dumps(make_payload(_without(make_alert(), "fingerprint"))).encode(),
        422,
        "alerts.0.fingerprint",
        "Field required",
    ),
    (
        "missing startsAt",
        json.dumps(make_payload(_without(make_alert(), "startsAt"))).encode(),
        422,
        "alerts.0.startsAt",
        "Field required",
    ),
    (
        "label value not a string",
        json.dumps(_alert_with(labels={"alertname": "A", "replica": 2})).encode(),
        422,
        "alerts.0.labels.replica",
        "valid string",
    ),
    (
        "unknown status",
        json.dumps(_alert_with(status="pending")).encode(),
        422,
        "alerts.0.status",
        "'firing' or 'resolved'",
    ),
    (
        "startsAt not a time",
        json.dumps(_alert_with(startsAt="yesterday")).encode(),
        422,
        "alerts.0.startsAt",
        "datetime",
    ),
    (
        "startsAt without an offset",
        json.dumps(_alert_with(startsAt="2024-05-01T10:00:00")).encode(),
        422,
        "alerts.0.startsAt",
        "timezone",
    ),
    (
        "startsAt before year 1 in UTC",
        json.dumps(_alert_with(startsAt="0001-01-01T00:00:00+02:00")).encode(),
        422,
        "alerts.0.startsAt",
        "out of range",
    ),
    (
        "empty fingerprint",
        json.dumps(_alert_with(fingerprint="")).encode(),
        422,
        "alerts.0.fingerprint",
        "at least 1 character",
    ),
    (
        "negative truncatedAlerts",
        json.dumps(make_payload() | {"truncatedAlerts": -1}).encode(),
        422,
        "truncatedAlerts",
        "greater than or equal to 0",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "field", "reason"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_payload_is_4xx_naming_field_and_reason(
    client, tmp_path, body, status, field, reason
):
    answer = client.post(
        "/alerts", content=body, headers=AUTH | {"Content-Type": "application/json"}
    )

    assert answer.status_code == status
    detail = answer.json()["detail"]
    assert any(d["field"] == field and reason in d["reason"] for d in detail), detail
    assert "Traceback" not in answer.text
    assert stored_rows(tmp_path / "data") == []


def test_many_errors_are_reported_up_to_a_bound(client):
    broken = [_without(make_alert(str(i)), "fingerprint") for i in range(100)]
    answer = client.post("/alerts", json=make_payload(*broken), headers=AUTH)

    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert len(detail) == 21
    assert detail[-1] == {"field": "body", "reason": "80 more errors not shown"}


def test_body_over_the_size_limit_is_413(client, tmp_path):
    huge = make_alert(description="x" * MAX_BODY_BYTES)
    answer = client.post("/alerts", json=make_payload(huge), headers=AUTH)

    assert answer.status_code == 413
    assert answer.json() == {
        "detail": [{"field": "body", "reason": f"larger than {MAX_BODY_BYTES} bytes"}]
    }
    assert stored_rows(tmp_path / "data") == []


def test_size_limit_holds_without_a_content_length(store):
    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 1024

    with serve(create_app(store, token=None, actions={}, max_body_bytes=8 * 1024)) as client:
        answer = client.post("/alerts", content=chunks())
    assert answer.status_code == 413


# --- GET /alerts ----------------------------------------------------------------------------


def test_list_is_newest_first_and_filtered(client):
    client.post("/alerts", json=make_payload(make_alert("a1", model="churn")), headers=AUTH)
    client.post(
        "/alerts",
        json=make_payload(make_alert("b1", alertname="ModelHighLatencyP95", model="fraud")),
        headers=AUTH,
    )
    client.post(
        "/alerts",
        json=make_payload(make_alert("a1", model="churn", status="resolved"), status="resolved"),
        headers=AUTH,
    )

    def fingerprints(query: str) -> list[tuple[str, str]]:
        answer = client.get(f"/alerts{query}", headers=AUTH)
        assert answer.status_code == 200
        return [(a["fingerprint"], a["status"]) for a in answer.json()["alerts"]]

    assert fingerprints("") == [("a1", "resolved"), ("b1", "firing"), ("a1", "firing")]
    assert fingerprints("?status=firing") == [("b1", "firing"), ("a1", "firing")]
    assert fingerprints("?model=churn") == [("a1", "resolved"), ("a1", "firing")]
    assert fingerprints("?alertname=ModelHighLatencyP95") == [("b1", "firing")]
    assert fingerprints("?model=churn&status=firing") == [("a1", "firing")]
    assert fingerprints("?limit=1") == [("a1", "resolved")]
    assert fingerprints("?model=nope") == []


def test_listed_alert_has_labels_annotations_and_normalised_times(client):
    client.post("/alerts", json=make_payload(make_alert("a1", description="PSI 0.4")), headers=AUTH)

    (alert,) = client.get("/alerts", headers=AUTH).json()["alerts"]
    assert alert["labels"] == {
        "alertname": "ModelAccuracyDrop",
        "model": "churn",
        "version": "3",
        "severity": "critical",
    }
    assert alert["annotations"] == {"description": "PSI 0.4"}
    assert alert["startsAt"] == "2024-05-01T08:00:00.123456+00:00"
    assert alert["endsAt"] is None  # Go's zero time: no end known
    assert alert["alertname"] == "ModelAccuracyDrop"
    assert alert["severity"] == "critical"
    assert alert["model"] == "churn"
    assert alert["receiver"] == "model-receiver"
    assert alert["generatorURL"] == "http://prometheus:9090/graph?g0.expr=up"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("status=x", "status"),
        ("before=0", "before"),
        # Beyond SQLite's 64-bit integers: was an OverflowError inside the store, a 500.
        ("before=9223372036854775808", "before"),
    ],
)
def test_list_rejects_bad_parameters_with_the_field(client, query, field):
    answer = client.get(f"/alerts?{query}", headers=AUTH)

    assert answer.status_code == 422
    assert [d["field"] for d in answer.json()["detail"]] == [field]


def test_list_limit_is_bounded(client):
    alerts = [make_alert(f"f{i}") for i in range(1005)]
    client.post("/alerts", json=make_payload(*alerts), headers=AUTH)

    assert len(client.get("/alerts", headers=AUTH).json()["alerts"]) == 100
    assert len(client.get("/alerts?limit=1000", headers=AUTH).json()["alerts"]) == 1000


# --- health, readiness, metrics, docs -------------------------------------------------------


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_store_failure_is_503_and_nothing_is_acknowledged(store):
    with serve(create_app(store, token=None, actions={})) as client:
        store.close()
        ready = client.get("/readyz")
        posted = client.post("/alerts", json=make_payload())
        listed = client.get("/alerts")

    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert posted.status_code == 503
    assert posted.json()["detail"][0]["field"] == "store"
    assert listed.status_code == 503


def test_metrics_count_new_alerts_by_alertname_status_severity(client):
    client.post(
        "/alerts",
        json=make_payload(
            make_alert("a"),
            make_alert("b", alertname="ModelHighErrorRatio", severity=None),
            make_alert("a", status="resolved"),
        ),
        headers=AUTH,
    )
    client.post("/alerts", json=make_payload(make_alert("a")), headers=AUTH)

    text = client.get("/metrics").text
    assert (
        'model_alert_notifications_total{alertname="ModelAccuracyDrop",severity="critical",'
        'status="firing"} 1.0' in text
    )
    assert (
        'model_alert_notifications_total{alertname="ModelAccuracyDrop",severity="critical",'
        'status="resolved"} 1.0' in text
    )
    assert (
        'model_alert_notifications_total{alertname="ModelHighErrorRatio",severity="",'
        'status="firing"} 1.0' in text
    )
    assert "# TYPE model_alert_actions_total counter" in text


def test_alertname_label_values_are_bounded(client, registry):
    alerts = [make_alert(f"f{i}", alertname=f"Alert{i}") for i in range(MAX_ALERTNAMES + 5)]
    client.post("/alerts", json=make_payload(*alerts), headers=AUTH)

    assert notifications(registry, "Alert0", "firing", "critical") == 1
    assert notifications(registry, OTHER, "firing", "critical") == 5


def test_each_app_has_its_own_registry(store):
    first = create_app(store, token=None, actions={})
    second = create_app(store, token=None, actions={})
    assert first.state.registry is not second.state.registry


def test_openapi_documents_the_payload(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/alerts"]["post"]["requestBody"]["content"]["application/json"]
    assert "version" in body["schema"]["properties"]
    assert "startsAt" in schema["components"]["schemas"]["WebhookAlert"]["properties"]
    assert client.get("/docs").status_code == 200


# --- restarts (in process) ------------------------------------------------------------------


def test_restart_keeps_alerts_recognises_duplicates_and_counts_from_zero(tmp_path):
    data_dir = tmp_path / "data"
    first_store = AlertStore.in_directory(data_dir)
    first_registry = CollectorRegistry()
    with serve(create_app(first_store, token=None, actions={}, registry=first_registry)) as c:
        c.post("/alerts", json=make_payload(make_alert("a"), make_alert("b")))
    first_store.close()
    assert notifications(first_registry, "ModelAccuracyDrop", "firing", "critical") == 2

    second_store = AlertStore.in_directory(data_dir)
    registry = CollectorRegistry()
    try:
        with serve(create_app(second_store, token=None, actions={}, registry=registry)) as c:
            listed = [a["fingerprint"] for a in c.get("/alerts").json()["alerts"]]
            assert notifications(registry, "ModelAccuracyDrop", "firing", "critical") == 0
            repeat = c.post("/alerts", json=make_payload(make_alert("a"), make_alert("c")))
    finally:
        second_store.close()

    assert listed == ["b", "a"]
    assert repeat.json() == {"received": 2, "stored": 1, "duplicates": 1}
    assert notifications(registry, "ModelAccuracyDrop", "firing", "critical") == 1


def test_store_refuses_a_data_dir_that_is_a_file(tmp_path):
    from exporter.receiver import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="data directory"):
        AlertStore.in_directory(blocker)
    with pytest.raises(StoreError, match="data directory"):
        AlertStore.in_directory(blocker / "sub")


# --- actions --------------------------------------------------------------------------------

RECORDER = """
import json, os, sys
out = sys.argv[1]
data = sys.stdin.buffer.read()
with open(out + ".argv", "w") as f:
    json.dump(sys.argv, f)
with open(out + ".env", "w") as f:
    json.dump(dict(os.environ), f)
with open(out, "wb") as f:  # last: its presence means the others are written
    f.write(data)
"""

SPAWN_AND_HANG = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1], "w") as f:
    f.write(str(child.pid))
time.sleep(60)
"""


def write_script(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def test_actions_file_is_validated_into_typed_actions(tmp_path):
    path = tmp_path / "actions.yml"
    path.write_text(
        textwrap.dedent(
            f"""
            # `on` must stay a key (YAML 1.1 would read it as true)
            ModelAccuracyDrop: {{command: ["{sys.executable}", "--model"], timeout_seconds: 60,
                                 on: [firing]}}
            ModelHighErrorRatio:
              command: [echo]
              on: [firing, resolved]
            """
        )
    )

    actions = load_actions(path)

    assert actions == {
        "ModelAccuracyDrop": AlertAction(
            command=(sys.executable, "--model"), timeout_seconds=60, on=("firing",)
        ),
        "ModelHighErrorRatio": AlertAction(
            command=("echo",), timeout_seconds=60, on=("firing", "resolved")
        ),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A: {command: [echo], timeout: 5}", "A.timeout: Extra inputs are not permitted"),
        ("A: {command: 'echo --x'}", "A.command: Input should be a valid tuple"),
        ("A: {command: []}", "A.command: Tuple should have at least 1 item"),
        ("A: {command: [echo], timeout_seconds: 0}", "A.timeout_seconds: Input should be greater"),
        ("A: {command: [echo], on: [pending]}", "A.on.0: Input should be 'firing' or 'resolved'"),
        ("A: {timeout_seconds: 5}", "A.command: Field required"),
        ("A: [echo]", "A.(action): expected a mapping"),
        ("A: {command: [/nonexistent/retrain]}", "/nonexistent/retrain is not an executable"),
        ("A: {command: [no-such-command-xyz]}", "no-such-command-xyz is not found on PATH"),
        ("- A", "expected a mapping of alertname to action"),
        ("", "expected a mapping of alertname to action"),
        ("A: {command: [echo]", "not valid YAML"),
        ("1: {command: [echo]}", "1: an alertname must be a non-empty string"),
    ],
)
def test_bad_actions_file_names_the_key(tmp_path, text, message):
    path = tmp_path / "actions.yml"
    path.write_text(text)

    with pytest.raises(ReceiverConfigError) as raised:
        load_actions(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_action_gets_a_hostile_alert_on_stdin_only_and_no_shell_runs(store, registry, tmp_path):
    out = tmp_path / "received.json"
    marker = tmp_path / "pwned"
    victim = tmp_path / "victim"
    victim.mkdir()
    recorder = write_script(tmp_path, "recorder.py", RECORDER)
    hostile = f"$(touch {marker}); rm -rf {victim}; `touch {marker}` && echo $HOME | sh"
    alert = make_alert("evil", description=hostile, summary="'; touch " + str(marker) + " #")
    alert["labels"]["instance"] = f'"; touch {marker}; echo "'
    actions = {"ModelAccuracyDrop": AlertAction(command=(sys.executable, str(recorder), str(out)))}

    with serve(create_app(store, token=None, actions=actions, registry=registry)) as client:
        assert client.post("/alerts", json=make_payload(alert)).status_code == 200
        wait_until(lambda: action_count(registry, "ModelAccuracyDrop", "success") == 1)

    assert json.loads(out.read_bytes()) == alert  # the one alert, as posted
    assert json.loads(out.read_bytes())["annotations"]["description"] == hostile
    assert json.loads(Path(f"{out}.argv").read_text()) == [str(recorder), str(out)]
    environment = json.loads(Path(f"{out}.env").read_text())
    assert not any("touch" in value for value in environment.values())
    # ...and its idempotency key: hex digits hashed from the alert, nothing it could inject.
    assert re.fullmatch("[0-9a-f]{32}", environment["ALERT_IDEMPOTENCY_KEY"])
    assert not marker.exists()
    assert victim.is_dir()


def test_action_runs_once_per_new_alert_and_only_for_its_statuses(store, registry, tmp_path):
    counter_file = tmp_path / "runs"
    appender = write_script(
        tmp_path,
        "append.py",
        "import sys\nopen(sys.argv[1], 'a').write(sys.stdin.read())\n",
    )
    actions = {
        "ModelAccuracyDrop": AlertAction(command=(sys.executable, str(appender), str(counter_file)))
    }

    with serve(create_app(store, token=None, actions=actions, registry=registry)) as client:
        client.post("/alerts", json=make_payload(make_alert("a")))
        client.post("/alerts", json=make_payload(make_alert("a")))  # repeat: no second run
        client.post("/alerts", json=make_payload(make_alert("a", status="resolved")))  # not `on`
        client.post("/alerts", json=make_payload(make_alert("x", alertname="Other")))  # no action

    runs = [json.loads(line) for line in counter_file.read_text().splitlines()]
    assert [(r["fingerprint"], r["status"]) for r in runs] == [("a", "firing")]
    assert action_count(registry, "ModelAccuracyDrop", "success") == 1


def test_failing_action_is_counted_and_never_fails_the_post(store, registry, tmp_path):
    vanishing = write_script(tmp_path, "vanishing.sh", "#!/bin/sh\nexit 0\n")
    vanishing.chmod(0o755)
    actions = {
        "ModelAccuracyDrop": AlertAction(command=(sys.executable, "-c", "raise SystemExit(3)")),
        "ModelHighErrorRatio": AlertAction(command=(str(vanishing),)),
    }
    app = create_app(store, token=None, actions=actions, registry=registry)
    vanishing.unlink()  # valid when loaded, gone when the alert arrives

    with serve(app) as client:
        answer = client.post(
            "/alerts",
            json=make_payload(make_alert("a"), make_alert("b", alertname="ModelHighErrorRatio")),
        )

    assert answer.status_code == 200
    assert answer.json()["stored"] == 2
    assert action_count(registry, "ModelAccuracyDrop", "failure") == 1
    assert action_count(registry, "ModelHighErrorRatio", "failure") == 1


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a killed orphan may wait for its new parent to reap it


def test_action_timeout_kills_the_command_and_its_children(store, registry, tmp_path):
    pid_file = tmp_path / "child.pid"
    hang = write_script(tmp_path, "hang.py", SPAWN_AND_HANG)
    actions = {
        "ModelAccuracyDrop": AlertAction(
            command=(sys.executable, str(hang), str(pid_file)), timeout_seconds=1.0
        )
    }

    with serve(create_app(store, token=None, actions=actions, registry=registry)) as client:
        started = time.monotonic()
        answer = client.post("/alerts", json=make_payload())
        answered_after = time.monotonic() - started
        wait_until(lambda: action_count(registry, "ModelAccuracyDrop", "timeout") == 1)
        timed_out_after = time.monotonic() - started

    assert answer.status_code == 200
    assert answered_after < 0.5  # the answer does not wait for the action
    assert 1.0 <= timed_out_after < 5.0
    child = int(pid_file.read_text())
    wait_until(lambda: not _alive(child), timeout=5.0)


# --- command line ---------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments_have_the_documented_defaults():
    args = parse()
    assert (args.host, args.port, args.token_file, args.actions) == ("127.0.0.1", 9099, None, None)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: ["--token-file", str(d / "missing")], "cannot read the token file"),
        (lambda d: ["--token-file", str(_write(d / "empty", "\n"))], "token file"),
        (lambda d: ["--actions", str(_write(d / "a.yml", "A: {cmd: [x]}"))], "A.cmd"),
        (lambda d: ["--data-dir", str(_write(d / "file", "x") / "sub")], "data directory"),
    ],
)
def test_run_exits_2_with_a_message_for_bad_files(tmp_path, capsys, setup, message):
    args = parse("--data-dir", str(tmp_path / "data"), *setup(tmp_path))

    assert run(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("model-exporter receiver: ")
    assert "Traceback" not in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- a real server over HTTP ----------------------------------------------------------------

SERVER = (
    "import argparse, sys\n"
    "from exporter.receiver import add_arguments, run\n"
    "parser = argparse.ArgumentParser()\n"
    "add_arguments(parser)\n"
    "sys.exit(run(parser.parse_args(sys.argv[1:])))\n"
)


@contextmanager
def receiver_process(data_dir: Path, token_file: Path, log: Path) -> Iterator[str]:
    """``run()`` in its own Python process on a free port; stopped with SIGTERM, killed if stuck."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = ["--port", str(port), "--data-dir", str(data_dir), "--token-file", str(token_file)]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, *argv],
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"receiver exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver not ready within 30 s:\n{log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        terminate(process)


def test_live_server_keeps_alerts_across_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    token_file = _write(tmp_path / "token", f"{TOKEN}\n")
    log = tmp_path / "receiver.log"

    with receiver_process(data_dir, token_file, log) as url:
        assert httpx.post(f"{url}/alerts", json=make_payload()).status_code == 401
        first = httpx.post(
            f"{url}/alerts", json=make_payload(make_alert("a"), make_alert("b")), headers=AUTH
        )
        assert first.json() == {"received": 2, "stored": 2, "duplicates": 0}

    with receiver_process(data_dir, token_file, log) as url:
        listed = httpx.get(f"{url}/alerts", headers=AUTH).json()["alerts"]
        repeat = httpx.post(f"{url}/alerts", json=make_payload(make_alert("a")), headers=AUTH)
        new = httpx.post(f"{url}/alerts", json=make_payload(make_alert("c")), headers=AUTH)
        metrics = httpx.get(f"{url}/metrics").text

    assert [a["fingerprint"] for a in listed] == ["b", "a"]
    assert repeat.status_code == 200
    assert repeat.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert new.json() == {"received": 1, "stored": 1, "duplicates": 0}
    # Counted from zero after the restart: only "c" is new in this process.
    assert (
        'model_alert_notifications_total{alertname="ModelAccuracyDrop",severity="critical",'
        'status="firing"} 1.0' in metrics
    )
    output = log.read_text()
    assert output.count("Finished server process") == 2  # both stopped gracefully
    assert "Traceback" not in output
