"""The receiver under issue 15's second round: numbers JSON cannot carry back, durable actions
that survive ``kill -9``, bounded listings, per-alert sizes and retention."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.receiver import AlertStore, create_app
from tests.test_receiver import AUTH, TOKEN, Client, make_alert, make_payload, serve, stored_rows


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
