"""The receiver under issue 15's second round: numbers JSON cannot carry back, durable actions
that survive ``kill -9``, bounded listings, per-alert sizes and retention."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from exporter.receiver import (
    DATABASE_NAME,
    MAX_ALERT_BYTES,
    MAX_PAGE_BYTES,
    ActionRunner,
    AlertAction,
    AlertRecord,
    AlertStore,
    PendingAction,
    add_arguments,
    create_app,
    idempotency_key,
)
from exporter.receiver.store import SCHEMA_VERSION
from tests.binaries import free_port, terminate, wait_until_ready
from tests.test_receiver import (
    AUTH,
    REPO,
    SERVER,
    TOKEN,
    Client,
    make_alert,
    make_payload,
    serve,
    stored_rows,
    write_script,
)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Client]:
    """An in-process receiver on ``tmp_path / "data"`` with the token and no actions."""
    store = AlertStore.in_directory(tmp_path / "data")
    try:
        with serve(create_app(store, token=TOKEN, actions={})) as client:
            yield client
    finally:
        store.close()


# --- non-finite numbers ------------------------------------------------------------------------


def _with_raw(payload: dict, marker: str, raw_number: str) -> bytes:
    """``payload`` as JSON with the string ``marker`` replaced by a raw number literal."""
    return json.dumps(payload).replace(f'"{marker}"', raw_number).encode()


def _payload_with(where: str) -> dict:
    alert = make_alert()
    payload = make_payload(alert)
    if where == "alert":
        alert["extra"] = "NUMBER"
    elif where == "nested":
        alert["extra"] = {"values": [1, 2, {"deep": "NUMBER"}]}
    else:
        payload["unknownTopLevel"] = "NUMBER"
    return payload


@pytest.mark.parametrize(
    ("where", "number", "field"),
    [
        ("alert", "1e999", "alerts.0.extra"),
        ("nested", "-1e400", "alerts.0.extra.values.2.deep"),
        ("top", "1E+309", "unknownTopLevel"),
    ],
)
def test_a_number_beyond_float_range_is_refused_naming_the_field(
    receiver, tmp_path, where, number, field
):
    # jiter reads 1e999 as inf, which json.dumps stored as Infinity and handed to actions as
    # stdin that no strict JSON parser reads; it is refused like NaN instead, and nothing stored.
    body = _with_raw(_payload_with(where), "NUMBER", number)
    answer = receiver.post(
        "/alerts", content=body, headers=AUTH | {"Content-Type": "application/json"}
    )

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == [
        {"field": field, "reason": "a number beyond the range of a double; send a finite number"}
    ]
    assert stored_rows(tmp_path / "data") == []


def test_large_finite_numbers_and_big_integers_are_kept(receiver, tmp_path):
    payload = _with_raw(
        _payload_with("alert"), "NUMBER", "[1e308, -1e308, 123456789012345678901234567890]"
    )
    answer = receiver.post(
        "/alerts", content=payload, headers=AUTH | {"Content-Type": "application/json"}
    )

    assert answer.status_code == 200, answer.text
    (row,) = stored_rows(tmp_path / "data")
    stored = json.loads(row[-1])
    assert stored["extra"] == [1e308, -1e308, 123456789012345678901234567890]


# --- durable actions ---------------------------------------------------------------------------

#: An action that takes a while, then appends its idempotency key to a file named after the
#: alert's fingerprint: one line per run.
SLOW_RECORDER = """
import json, os, sys, time
alert = json.loads(sys.stdin.read())
time.sleep(float(sys.argv[2]))
with open(os.path.join(sys.argv[1], alert["fingerprint"]), "a") as f:
    f.write(os.environ["ALERT_IDEMPOTENCY_KEY"] + "\\n")
"""


def _actions_file(tmp_path: Path, seconds: float) -> tuple[Path, Path]:
    """An actions file running SLOW_RECORDER for ModelAccuracyDrop, and its output directory."""
    out = tmp_path / "runs"
    out.mkdir(exist_ok=True)
    script = write_script(tmp_path, "slow_recorder.py", SLOW_RECORDER)
    command = [sys.executable, str(script), str(out), str(seconds)]
    actions = tmp_path / "actions.yml"
    actions.write_text(
        json.dumps({"ModelAccuracyDrop": {"command": command, "timeout_seconds": 60}})
    )
    return actions, out


@contextmanager
def live_receiver(
    tmp_path: Path, actions: Path, *extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``model-exporter receiver``'s run() in its own process on a free port, always stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "receiver.log"
    argv = ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--actions", str(actions)]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, *argv, *extra],
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"{url}/readyz", process, log, "receiver", timeout=30)
        yield url, process
    finally:
        terminate(process)


def _runs(out: Path) -> dict[str, list[str]]:
    return {path.name: path.read_text().splitlines() for path in out.iterdir()}


def test_actions_survive_a_sigkill_and_run_after_the_restart(tmp_path):
    # Issue 15, item 2: 40 new alerts, kill -9 0.3 s later, restart, Alertmanager re-sends.
    # Before, the actions waited in memory only: 4 of 40 ran and the re-send was all duplicates.
    actions, out = _actions_file(tmp_path, seconds=0.3)
    payload = make_payload(*(make_alert(f"fp{i:02d}") for i in range(40)))

    with live_receiver(tmp_path, actions) as (url, process):
        first = httpx.post(f"{url}/alerts", json=payload, timeout=10)
        time.sleep(0.3)
        process.kill()
        process.wait()
    assert first.json() == {"received": 40, "stored": 40, "duplicates": 0}
    ran_before = len(list(out.iterdir()))

    with live_receiver(tmp_path, actions) as (url, _):
        resent = httpx.post(f"{url}/alerts", json=payload, timeout=10)
        deadline = time.monotonic() + 60
        while len(list(out.iterdir())) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a second run, if any, would land now
        runs = _runs(out)

    assert resent.json() == {"received": 40, "stored": 0, "duplicates": 40}
    assert sorted(runs) == [f"fp{i:02d}" for i in range(40)], f"{ran_before} ran before the kill"
    for lines in runs.values():
        # At least once; a run the kill interrupted after it wrote may come again, with the
        # same key.
        assert len(set(lines)) == 1
    assert len({lines[0] for lines in runs.values()}) == 40  # one key per alert
    assert (
        "pending action(s) from before this start queued again"
        in (tmp_path / "receiver.log").read_text()
    )


def test_a_full_queue_defers_actions_to_the_store_and_runs_them_all_once(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    script = write_script(tmp_path, "slow_recorder.py", SLOW_RECORDER)
    action = AlertAction(command=(sys.executable, str(script), str(out), "0.05"))
    outcomes: list[str] = []
    deferred: list[int] = []
    store = AlertStore.in_directory(tmp_path / "data")
    runner = ActionRunner(
        {"ModelAccuracyDrop": action},
        store,
        lambda name, outcome: outcomes.append(outcome),
        on_deferred=lambda: deferred.append(1),
        workers=1,
        queue_size=2,
    )
    try:
        runner.start()
        records = [
            AlertRecord(f"fp{i:02d}", "2024-05-01T08:00:00.123456+00:00", "firing", None,
                        "ModelAccuracyDrop", "critical", "churn", "r", "g",
                        json.dumps(make_alert(f"fp{i:02d}")))
            for i in range(12)
        ]  # fmt: skip
        ids = store.record(records, with_action=[True] * 12)
        for record, alert_id in zip(records, ids, strict=True):
            assert alert_id is not None
            key = idempotency_key(record.fingerprint, record.starts_at, record.status)
            runner.submit(
                PendingAction(alert_id, record.alertname, record.status, key, record.alert_json)
            )
        assert len(deferred) >= 12 - 3  # one running and two queued at most
        deadline = time.monotonic() + 30
        while len(outcomes) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.close()
        pending = store.pending_actions(100)
        store.close()

    assert outcomes == ["success"] * 12
    assert sorted(_runs(out)) == [f"fp{i:02d}" for i in range(12)]
    assert all(len(lines) == 1 for lines in _runs(out).values())
    assert pending == []


def test_sigterm_stops_within_the_bound_and_the_rest_runs_at_the_next_start(tmp_path):
    # 12 actions of 3 s on 4 workers would need 9 s; shutdown stops after 0.5 s and kills the
    # 4 running ones, which run again (with all the others) at the next start.
    actions, out = _actions_file(tmp_path, seconds=3)
    payload = make_payload(*(make_alert(f"fp{i:02d}") for i in range(12)))

    with live_receiver(tmp_path, actions, "--action-shutdown-seconds", "0.5") as (url, process):
        assert httpx.post(f"{url}/alerts", json=payload, timeout=10).status_code == 200
        time.sleep(0.5)
        started = time.monotonic()
        process.terminate()
        process.wait(timeout=30)
        stopped_after = time.monotonic() - started
    assert stopped_after < 5.0, stopped_after
    assert list(out.iterdir()) == []
    log = (tmp_path / "receiver.log").read_text()
    assert "Finished server process" in log  # a graceful stop (uvicorn re-raises SIGTERM then)
    assert "left 12 action(s) pending for the next start" in log

    with live_receiver(tmp_path, actions) as (url, _):
        deadline = time.monotonic() + 60
        while len(list(out.iterdir())) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        runs = _runs(out)
    assert sorted(runs) == [f"fp{i:02d}" for i in range(12)]
    assert all(len(lines) == 1 for lines in runs.values())


def test_a_version_1_store_is_upgraded_in_place_without_rerunning_old_alerts(tmp_path):
    store = AlertStore.in_directory(tmp_path / "data")
    record = AlertRecord("old", "2024-05-01T08:00:00.000000+00:00", "firing", None,
                         "ModelAccuracyDrop", "", "", "", "", "{}")  # fmt: skip
    store.record([record])
    store.close()
    with sqlite3.connect(tmp_path / "data" / DATABASE_NAME) as conn:  # as receiver 0.1 left it
        conn.executescript("DROP TABLE actions; PRAGMA user_version = 1;")

    reopened = AlertStore.in_directory(tmp_path / "data")
    try:
        assert [s.record.fingerprint for s in reopened.page()[0]] == ["old"]
        assert reopened.pending_actions(10) == []  # stored before actions were durable
        assert reopened.record([record], with_action=[True]) == [None]  # still a duplicate
    finally:
        reopened.close()
    with sqlite3.connect(tmp_path / "data" / DATABASE_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


# --- bounded listings and alerts ---------------------------------------------------------------


def test_an_alert_over_the_size_bound_is_413_naming_it_and_nothing_is_stored(receiver, tmp_path):
    big = make_alert("big", description="x" * MAX_ALERT_BYTES)
    answer = receiver.post("/alerts", json=make_payload(make_alert("small"), big), headers=AUTH)

    assert answer.status_code == 413
    assert answer.json()["detail"] == [
        {"field": "alerts.1", "reason": f"larger than {MAX_ALERT_BYTES} bytes as JSON"}
    ]
    assert stored_rows(tmp_path / "data") == []


def test_the_listing_pages_with_a_cursor(receiver):
    for i in range(5):
        receiver.post("/alerts", json=make_payload(make_alert(f"a{i}")), headers=AUTH)

    pages, before = [], None
    while True:
        query = "limit=2" + (f"&before={before}" if before is not None else "")
        answer = receiver.get(f"/alerts?{query}", headers=AUTH)
        assert answer.status_code == 200, answer.text
        pages.append([a["fingerprint"] for a in answer.json()["alerts"]])
        before = answer.json()["next"]
        if before is None:
            break

    assert pages == [["a4", "a3"], ["a2", "a1"], ["a0"]]


def test_a_page_ends_at_its_byte_bound(receiver):
    # 80 alerts of about 60 KiB: 4.7 MiB, more than one page holds even at limit=1000.
    description = "y" * (MAX_ALERT_BYTES - 4096)
    for batch in range(5):
        alerts = [make_alert(f"b{batch}-{i}", description=description) for i in range(16)]
        assert receiver.post("/alerts", json=make_payload(*alerts), headers=AUTH).status_code == 200

    first = receiver.get("/alerts?limit=1000", headers=AUTH).json()
    rest = receiver.get(f"/alerts?limit=1000&before={first['next']}", headers=AUTH).json()

    assert 0 < len(first["alerts"]) < 80 and first["next"] is not None
    assert sum(len(a["annotations"]["description"]) for a in first["alerts"]) <= MAX_PAGE_BYTES
    assert len(first["alerts"]) + len(rest["alerts"]) == 80 and rest["next"] is None


# --- retention ---------------------------------------------------------------------------------


def _age(data_dir: Path, fingerprint: str, days: float) -> None:
    """Make the alert ``fingerprint`` look received (and last seen) ``days`` ago."""
    with sqlite3.connect(data_dir / DATABASE_NAME) as conn:
        then = datetime.now(timezone.utc) - timedelta(days=days)
        conn.execute(
            "UPDATE alerts SET received_at = ?, last_seen_at = NULL WHERE fingerprint = ?",
            (then.isoformat(timespec="microseconds"), fingerprint),
        )


def _record(fingerprint: str) -> AlertRecord:
    return AlertRecord(fingerprint, "2024-05-01T08:00:00.000000+00:00", "firing", None,
                       "ModelAccuracyDrop", "", "", "", "",
                       json.dumps({"fingerprint": fingerprint}))  # fmt: skip


def test_retention_deletes_by_age_and_count_but_keeps_repeats_and_pending_actions(tmp_path):
    data = tmp_path / "data"
    store = AlertStore.in_directory(data)
    try:
        store.record([_record(f) for f in ("old", "refreshed", "pending", "new1", "new2")],
                     with_action=[False, False, True, False, False])  # fmt: skip
        for fingerprint in ("old", "refreshed", "pending"):
            _age(data, fingerprint, 40)
        assert store.record([_record("refreshed")]) == [None]  # Alertmanager re-sent it today

        assert store.prune(max_age_seconds=30 * 86400, max_alerts=None) == 1
        assert [s.record.fingerprint for s in store.page()[0]] == [
            "new2",
            "new1",
            "pending",
            "refreshed",
        ]
        assert store.prune(max_age_seconds=None, max_alerts=2) == 1  # refreshed is the oldest
        assert [s.record.fingerprint for s in store.page()[0]] == ["new2", "new1", "pending"]
        assert [p.alertname for p in store.pending_actions(10)] == ["ModelAccuracyDrop"]
    finally:
        store.close()


def test_the_receiver_applies_its_retention_at_the_start(tmp_path):
    data = tmp_path / "data"
    store = AlertStore.in_directory(data)
    try:
        store.record([_record("ancient"), _record("recent")])
        _age(data, "ancient", 8)
        app = create_app(store, token=None, actions={}, retention_days=7, max_stored_alerts=None)
        with serve(app) as client:
            listed: list[str] = []
            deadline = time.monotonic() + 10
            while listed != ["recent"] and time.monotonic() < deadline:
                listed = [a["fingerprint"] for a in client.get("/alerts").json()["alerts"]]
                time.sleep(0.05)
    finally:
        store.close()
    assert listed == ["recent"]


def test_retention_options_have_stated_defaults_and_bounds():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.retention_days, args.max_stored_alerts) == (30.0, 100_000)
    assert args.action_shutdown_seconds == 20.0
    for bad in (["--retention-days", "0"], ["--retention-days", "1e9"],
                ["--max-stored-alerts", "0"], ["--action-shutdown-seconds", "inf"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_an_action_that_cannot_be_marked_done_is_not_run_again_by_the_same_process(tmp_path):
    class ReadOnlyAfterRun(AlertStore):
        def finish_action(self, alert_id: int, outcome: str) -> None:
            raise sqlite3.OperationalError("attempt to write a readonly database")

    out = tmp_path / "runs"
    out.mkdir()
    script = write_script(tmp_path, "slow_recorder.py", SLOW_RECORDER)
    action = AlertAction(command=(sys.executable, str(script), str(out), "0"))
    outcomes: list[str] = []
    store = ReadOnlyAfterRun.in_directory(tmp_path / "data")
    runner = ActionRunner({"ModelAccuracyDrop": action}, store,
                          lambda name, outcome: outcomes.append(outcome),
                          workers=1, queue_size=1)  # fmt: skip
    try:
        store.record([_record(f"fp{i}") for i in range(4)], with_action=[True] * 4)
        runner.start()  # takes one; the rest waits in the store and is fetched as room appears
        deadline = time.monotonic() + 20
        while len(outcomes) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # a few idle polls: a second run would come now
    finally:
        runner.close()
        pending = store.pending_actions(10)
        store.close()
    assert outcomes == ["success"] * 4
    assert {name: len(lines) for name, lines in _runs(out).items()} == {
        f"fp{i}": 1 for i in range(4)
    }
    assert len(pending) == 4  # still pending: the next start runs them again


def test_deferred_actions_are_exposed_in_the_receiver_metrics(receiver):
    metrics = receiver.get("/metrics").text
    assert "# TYPE model_alert_actions_deferred_total counter" in metrics
    assert "model_alert_actions_deferred_total 0.0" in metrics
