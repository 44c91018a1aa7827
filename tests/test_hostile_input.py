"""Hostile input: bodies over real HTTP, label values fed by user data, broken files at the CLI.

Over HTTP every hostile body gets a 4xx naming the field and the reason (or a 2xx when the input
is legitimate), never a 5xx, and the server keeps serving meanwhile and afterwards. Every label
value that user data reaches stays within ``MAX_LABEL_LENGTH`` and the exposition parses back,
for prometheus_client and for promtool. Every broken config, profile, data or actions file ends
the command with exit code 2 and one line naming the file and the key, never a traceback.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import ModelMonitor, ReferenceProfile
from exporter.config import load_config
from exporter.metrics import MAX_LABEL_LENGTH, label_value
from exporter.profile import ProfileError
from exporter.receiver import AlertStore
from exporter.receiver import create_app as create_receiver
from exporter.server import BodyLimit, build_service, create_app
from tests.binaries import free_port, require_binary
from tests.service_fixtures import ROOT, live_server, write_setup

#: The live server's body limit: large enough for the parser to meet 100,000 nested brackets.
BODY_LIMIT = 1_048_576
TIMEOUT = 10.0

#: Label values a model, a training set or a sender may produce.
LONG = "x" * 10_000
LONG_TWIN = "x" * 9_999 + "y"  # the same first 9,999 characters: must stay a distinct label
HOSTILE_TEXT = [
    'quote"back\\slash\nnew line',
    "tab\tcr\rnul\x00bell\x07esc\x1b[31m",
    "é漢字🙂\u202eRTL\u2028line separator",
    '{label="injected"} 1\n# TYPE fake counter',
]


# -- over real HTTP -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One live `model-exporter serve` for every hostile request: it must survive them all."""
    directory = tmp_path_factory.mktemp("hostile")
    config_path = write_setup(directory, "classification")
    config = yaml.safe_load(config_path.read_text())
    config["service"]["max_body_bytes"] = BODY_LIMIT
    config_path.write_text(yaml.safe_dump(config))
    with live_server(config_path, directory / "data") as (url, process):
        yield url, directory
        assert process.poll() is None, "the server died"
    logs = "".join(path.read_text() for path in directory.glob("serve-*.log"))
    assert "Traceback" not in logs, logs[-3000:]


def _feature_body(value: str) -> bytes:
    return b'{"features": {"miles": 1.0, "zone": ' + value.encode() + b"}}"


@dataclass(frozen=True)
class Hostile:
    """A raw body and what the server must answer: status, the field named and a reason."""

    name: str
    body: bytes
    status: int
    field: str | None = None
    reason: str = ""
    path: str = "/predict"


HOSTILE_BODIES = [
    Hostile("nested 100,000 arrays deep", b"[" * 100_000, 400, "body", "nested deeper"),
    Hostile("nested 50,000 objects deep", b'{"a":' * 50_000, 400, "body", "nested deeper"),
    Hostile("a feature nested 40 deep", _feature_body("[" * 40 + "]" * 40), 400, "body",
            "nested deeper than 32"),
    Hostile("1e400", b'{"features": {"miles": 1e400}}', 400, "body", "out of the range"),
    Hostile("-1e400 for a category", _feature_body("-1e400"), 400, "body", "out of the range"),
    Hostile("10,000-digit integer", _feature_body("9" * 10_000), 400, "body", "too long"),
    Hostile("350-digit integer as a number", b'{"features": {"miles": ' + b"9" * 350 + b"}}",
            422, "features.miles", "out of the range of a double"),
    Hostile("350-digit integer as a category", _feature_body("9" * 350), 200),
    Hostile("NaN", b'{"features": {"miles": NaN}}', 400, "body", "NaN is not valid JSON"),
    Hostile("Infinity", b'{"features": {"miles": Infinity}}', 400, "body", "Infinity"),
    Hostile("-Infinity", b'{"features": {"miles": -Infinity}}', 400, "body", "Infinity"),
    Hostile("invalid UTF-8", b'{"features": {"zone": "\xff\xfe"}}', 400, "body", "not UTF-8"),
    Hostile("UTF-8 encoded surrogate", b'{"features": {"zone": "\xed\xa0\x80"}}', 400, "body",
            "lone UTF-16 surrogate"),
    Hostile("lone surrogate in a value", _feature_body('"\\ud800"'), 400, "body",
            "lone UTF-16 surrogate"),
    Hostile("lone surrogate in a name", b'{"features": {"\\udfff": 1}}', 400, "body",
            "lone UTF-16 surrogate"),
    Hostile("lone surrogate as an unknown field", b'{"\\ud800": 1}', 400, "body",
            "lone UTF-16 surrogate"),
    Hostile("lone surrogate as a prediction id", b'{"prediction_id": "\\ud800", "actual": 1}',
            400, "body", "lone UTF-16 surrogate", "/feedback"),
    Hostile("10,000-digit actual", b'{"prediction_id": "a", "actual": ' + b"9" * 10_000 + b"}",
            400, "body", "too long", "/feedback"),
    Hostile("surrogate pair (an emoji)", _feature_body('"\\ud83d\\ude00"'), 200),
    Hostile("control characters and unicode", json.dumps(
        {"features": {"miles": 2, "zone": "\x00\x1b[2J\r\n\"\\\u202e漢字🙂",
                      "na\x00me\n\"{}\\": "\x07", "名前": "値"}}).encode(), 200),
    Hostile("5,000 distinct feature names", json.dumps(
        {"features": {"miles": 1, **{f"f{i}\u00e9\n": i for i in range(5_000)}}}).encode(), 200),
    Hostile("257-character feature name", json.dumps({"features": {"n" * 257: 1}}).encode(),
            422, "features." + "n" * 40 + "...", "feature name is too long"),
    Hostile("100,001-character value", json.dumps({"features": {"zone": "z" * 100_001}}).encode(),
            422, "features.zone", "longer than 100000"),
    Hostile("100,000-character unknown field", json.dumps({"u" * 100_000: 1}).encode(), 422,
            "u" * 256, "unknown field"),
    Hostile("one bad instance of many", json.dumps(
        {"instances": [{"miles": 1}] * 3 + [{"miles": "far"}]}).encode(), 422,
            "instances.3.miles", "must be a number"),
    Hostile("duplicate keys: the last one counts", b'{"features": {"miles": 1, "miles": "x"}}',
            422, "features.miles", "must be a number"),
    Hostile("byte-order mark", b'\xef\xbb\xbf{"features": {"miles": 1}}', 200),
    Hostile("empty body", b"", 400, "body", "empty"),
    Hostile("a JSON string", b'"features"', 422, "body", "must be a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_BODIES, ids=[c.name for c in HOSTILE_BODIES])
def test_hostile_body_is_answered_with_the_field_and_reason(
    server: tuple[str, Path], case: Hostile
) -> None:
    url, _ = server
    answer = httpx.post(f"{url}{case.path}", content=case.body, timeout=TIMEOUT,
                        headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == case.status, answer.text[:500]
    if case.field is not None:
        problem = answer.json()["detail"][0]
        assert problem["field"] == case.field
        assert case.reason in problem["reason"]
    assert httpx.get(f"{url}/healthz", timeout=TIMEOUT).status_code == 200


def test_thousands_of_feature_names_add_no_series(server: tuple[str, Path]) -> None:
    url, _ = server
    names = {f"stray{i}": i for i in range(3_000)}
    answer = httpx.post(f"{url}/predict", json={"features": {"miles": 1, **names}}, timeout=TIMEOUT)
    assert answer.status_code == 200
    metrics = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
    assert "stray" not in metrics  # only watched features are series


def _connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT)


def _raw_post(url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
    """POST /predict with exactly these headers (http.client sets no Content-Length itself)."""
    connection = _connect(url)
    try:
        connection.putrequest("POST", "/predict", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_declared_length_over_the_limit_is_refused_before_the_body(
    server: tuple[str, Path],
) -> None:
    url, _ = server
    status, body = _raw_post(url, {"Content-Length": str(50 * BODY_LIMIT)}, b"")
    assert status == 413
    assert json.loads(body)["detail"][0] == {
        "field": "body", "reason": f"larger than {BODY_LIMIT} bytes"
    }  # fmt: skip


def test_chunked_body_over_the_limit_is_refused_while_streaming(server: tuple[str, Path]) -> None:
    url, _ = server

    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        yield b'{"features": {"zone": "'
        for _ in range(2 * BODY_LIMIT // 65_536):
            yield b"z" * 65_536
        yield b'"}}'

    answer = httpx.post(f"{url}/predict", content=chunks(), timeout=TIMEOUT)
    assert answer.status_code == 413
    assert answer.json()["detail"][0]["field"] == "body"


@pytest.mark.parametrize(
    "headers",
    [{"Content-Length": "abc"}, {"Content-Length": "-5"}, {"Content-Length": "5, 6"},
     {"Content-Length": "99", "Transfer-Encoding": "chunked"}],
    ids=["not a number", "negative", "two values", "length and chunked"],
)  # fmt: skip
def test_malformed_framing_is_a_4xx(server: tuple[str, Path], headers: dict[str, str]) -> None:
    url, _ = server
    chunked = "Transfer-Encoding" in headers  # then a well-formed chunked body of "{}{}"
    status, _ = _raw_post(url, headers, b"4\r\n{}{}\r\n0\r\n\r\n" if chunked else b"{}{}")
    assert 400 <= status < 500
    assert httpx.get(f"{url}/healthz", timeout=TIMEOUT).status_code == 200


def test_a_stalled_body_does_not_hold_up_other_requests(server: tuple[str, Path]) -> None:
    url, _ = server
    stalled = _connect(url)
    try:
        stalled.putrequest("POST", "/predict")
        stalled.putheader("Content-Type", "application/json")
        stalled.putheader("Content-Length", "1000")
        stalled.endheaders(b'{"features": {"mil')  # 18 of the 1,000 bytes, then nothing
        # Answered (within the client's timeout) while the other request hangs.
        answer = httpx.post(f"{url}/predict", json={"features": {"miles": 3}}, timeout=TIMEOUT)
        assert answer.status_code == 200
    finally:
        stalled.close()  # abandoned half-way
    assert httpx.get(f"{url}/readyz", timeout=TIMEOUT).status_code == 200


# -- label values -------------------------------------------------------------------------------


def test_label_value_is_bounded_deterministic_and_distinct() -> None:
    for text in HOSTILE_TEXT:
        assert label_value(text) == text  # short values pass unchanged; the writer escapes them
    long, twin = label_value(LONG), label_value(LONG_TWIN)
    assert len(long) == len(twin) == MAX_LABEL_LENGTH
    assert long != twin and long.startswith("x" * 100) and long == label_value(LONG)
    assert label_value("a\ud800b") == "a\ufffdb"
    label_value("\udfff" * 1_000).encode("utf-8")  # cut and encodable


def _exposed_labels(exposition: bytes) -> list[dict[str, str]]:
    text = exposition.decode("utf-8")  # strict: a lone surrogate would have failed already
    return [dict(s.labels) for f in text_string_to_metric_families(text) for s in f.samples]


def _assert_promtool_accepts(exposition: bytes) -> None:
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition,
                             capture_output=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def _assert_bounded(labels: list[dict[str, str]]) -> None:
    longest = max(len(value) for row in labels for value in row.values())
    assert longest <= MAX_LABEL_LENGTH


def _hostile_profile() -> ReferenceProfile:
    """Training data whose categories and classes are the hostile texts."""
    values = [*HOSTILE_TEXT, LONG, LONG_TWIN, "plain"]
    rows = 50 * len(values)
    frame = pd.DataFrame(
        {
            "amount": np.random.default_rng(0).normal(size=rows),
            "city": [values[i % len(values)] for i in range(rows)],
            "label": [values[(i + 1) % len(values)] for i in range(rows)],
        }
    )
    return ReferenceProfile.from_frame(frame, ["amount"], ["city"], target="label")


class _HostileError(Exception):
    pass


@pytest.mark.stack
def test_hostile_classes_categories_and_errors_make_a_valid_bounded_exposition() -> None:
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", reference=_hostile_profile(), registry=registry, min_samples=1)
    for text in [*HOSTILE_TEXT, LONG, LONG_TWIN, "a\ud800lone surrogate"]:
        pid = monitor.observe({"amount": 0.5, "city": text}, text, 0.9)
        assert monitor.record_outcome(pid, text).value == "recorded"
    long_error = type("E" * 5_000, (_HostileError,), {})
    monitor.record_error(long_error())
    monitor.record_error('error "with" quotes\nand a newline' * 100)
    exposition = generate_latest(registry)
    labels = _exposed_labels(exposition)
    _assert_bounded(labels)
    predicted = {row["predicted"] for row in labels if "predicted" in row}
    assert set(HOSTILE_TEXT) <= predicted  # exact round trip through the escaping
    assert {label_value(LONG), label_value(LONG_TWIN), "a\ufffdlone surrogate"} <= predicted
    bins = {row["bin"] for row in labels if row.get("feature") == "city" and "bin" in row}
    assert set(HOSTILE_TEXT) | {label_value(LONG), label_value(LONG_TWIN)} <= bins
    errors = {row["error"] for row in labels if "error" in row}
    assert label_value("E" * 5_000) in errors
    _assert_promtool_accepts(exposition)


def echo_class(features: Mapping[str, Any]) -> tuple[str, float]:
    """A model whose class is whatever the request's ``label`` feature says."""
    return str(features.get("label", "")), 0.9


@pytest.mark.stack
def test_classes_echoed_from_requests_stay_bounded_in_the_service_metrics(
    tmp_path: Path,
) -> None:
    config_path = write_setup(tmp_path, "classification", store="memory")
    config = yaml.safe_load(config_path.read_text())
    config["model"]["import_path"] = "tests.test_hostile_input:echo_class"
    config_path.write_text(yaml.safe_dump(config))
    service = build_service(load_config(config_path), tmp_path / "data")
    with TestClient(BodyLimit(create_app(service), 65_536)) as client:
        for text in [*HOSTILE_TEXT, LONG, LONG_TWIN]:
            answer = client.post("/predict", json={"features": {"miles": 1, "label": text}})
            assert answer.status_code == 200 and answer.json()["prediction"] == text
            feedback = {"prediction_id": answer.json()["prediction_id"], "actual": text}
            assert client.post("/feedback", json=feedback).status_code == 200
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    labels = _exposed_labels(metrics.content)
    _assert_bounded(labels)
    actual = {row["actual"] for row in labels if "actual" in row}
    assert set(HOSTILE_TEXT) | {label_value(LONG), label_value(LONG_TWIN)} <= actual
    _assert_promtool_accepts(metrics.content)


def _alert(alertname: str, severity: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": alertname, "severity": severity},
        "startsAt": "2024-05-01T10:00:00Z",
        "fingerprint": f"{abs(hash(alertname)):x}",
    }


@pytest.mark.stack
def test_hostile_alertnames_stay_bounded_in_the_receiver_metrics(tmp_path: Path) -> None:
    store = AlertStore.in_directory(tmp_path / "data")
    try:
        app = create_receiver(store, token=None, actions={}, registry=CollectorRegistry())
        with TestClient(app) as client:
            alerts = [_alert(text, text[::-1]) for text in [*HOSTILE_TEXT, LONG, LONG_TWIN]]
            payload = {"version": "4", "status": "firing", "alerts": alerts}
            assert client.post("/alerts", json=payload).status_code == 200
            metrics = client.get("/metrics")
    finally:
        store.close()
    labels = _exposed_labels(metrics.content)
    _assert_bounded(labels)
    names = {row["alertname"] for row in labels if "alertname" in row}
    assert set(HOSTILE_TEXT) <= names
    _assert_promtool_accepts(metrics.content)


# -- broken files at the command line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"features": {}, "bins": ' + b"9" * 5_000 + b"}", "a number has too many digits"),
        (b'{"features": {"\\ud800": {}}}', "features.\\ud800: a lone UTF-16 surrogate"),
        (b'{"features": {"x": {"kind": "categorical", "categories": ["\\udc00"]}}}',
         "features.x.categories.0: a lone UTF-16 surrogate"),
    ],
    ids=["nested 100,000 deep", "5,000-digit integer", "lone surrogate in a name",
         "lone surrogate in a category"],
)  # fmt: skip
def test_profile_corner_cases_are_profile_errors(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "reference.json"
    path.write_bytes(content)
    with pytest.raises(ProfileError) as raised:
        ReferenceProfile.load(path)
    assert str(raised.value).startswith(f"{path}: ") and expected in str(raised.value)


def test_profile_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    write_setup(tmp_path, "classification")
    path = tmp_path / "reference.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert "zone" in ReferenceProfile.load(path).features


def test_profile_that_is_not_a_regular_file_is_refused_without_reading() -> None:
    with pytest.raises(ProfileError, match="not a regular file"):
        ReferenceProfile.load("/dev/zero")  # would never end


def test_profile_sample_must_be_finite(tmp_path: Path) -> None:
    write_setup(tmp_path, "classification")
    path = tmp_path / "reference.json"
    document = json.loads(path.read_text())
    document["features"]["miles"]["sample"][-1] = 1e400  # json writes Infinity
    path.write_text(json.dumps(document))
    with pytest.raises(ProfileError, match="sample values must be finite"):
        ReferenceProfile.load(path)


VALID_CONFIG: dict[str, Any] = {
    "model": {"name": "toy", "task": "classification", "import_path": "tests.toy_models:classify"},
    "reference": "reference.json",
}
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + BOMB


def _config(**changes: Any) -> str:
    """VALID_CONFIG as YAML with top-level keys replaced (None removes one)."""
    document = {**VALID_CONFIG, **changes}
    return yaml.safe_dump({k: v for k, v in document.items() if v is not None})


def _profile_document(directory: Path) -> dict[str, Any]:
    write_setup(directory, "classification")
    return json.loads((directory / "reference.json").read_text())


def _broken_profile(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], str]:
    def text(directory: Path) -> str:
        document = _profile_document(directory)
        change(document)
        return json.dumps(document)

    return text


@dataclass(frozen=True)
class BadFile:
    """A command run on one broken file: the one line it must print names the file and ``key``.

    ``text`` is the file's content (bytes, text, or made from a scratch directory); ``kind`` is
    what it is: a ``config`` or ``profile`` for serve, ``data`` for baseline, ``actions`` for the
    receiver.
    """

    name: str
    kind: str
    text: str | bytes | Callable[[Path], str]
    key: str
    argv: tuple[str, ...] = ()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            document = document[part]
        if value is _DELETE:
            del document[last]
        else:
            document[last] = value

    return change


_DELETE = object()

BAD_FILES = [
    BadFile("config: wrong type", "config",
            _config(monitoring={"min_samples": "lots"}), "monitoring.min_samples"),
    BadFile("config: missing key", "config",
            _config(model={"name": "toy", "task": "regression"}), "model.import_path"),
    BadFile("config: unknown key", "config", _config(surprise=1), "surprise"),
    BadFile("config: billion laughs", "config", BILLION_LAUGHS, "aliases"),
    BadFile("config: a list at the top", "config", "- model\n- reference\n", "must be a mapping"),
    BadFile("config: binary garbage", "config", bytes(range(256)) * 8, "not UTF-8"),
    BadFile("config: nested 5,000 deep", "config", "a: " + "[" * 5_000 + "]" * 5_000,
            "nested too deeply"),
    BadFile("config: NaN threshold", "config", _config() + "thresholds: {mae_warning: .nan}\n",
            "thresholds.mae_warning"),
    BadFile("config: classes for a regression", "config",
            _config(model={**VALID_CONFIG["model"], "task": "regression"},
                    monitoring={"classes": ["a"]}), "classes"),
    BadFile("config: domain of an unwatched feature", "config",
            _config(monitoring={"domains": {"nope": [0, 1]}}), "domains"),
    BadFile("profile: wrong type", "profile",
            _broken_profile(_set("features.miles.edges", "abc")), "features.miles"),
    BadFile("profile: missing field", "profile",
            _broken_profile(_set("features.miles.mean", _DELETE)), "features.miles"),
    BadFile("profile: NaN", "profile", lambda d: re.sub(
        r'"mean": [-+.0-9eE]+', '"mean": NaN', json.dumps(_profile_document(d)), count=1),
        "finite"),
    BadFile("profile: newer schema version", "profile",
            _broken_profile(_set("schema_version", 2)), "schema_version"),
    BadFile("profile: truncated", "profile", lambda d: json.dumps(_profile_document(d))[:2_000],
            "not valid JSON"),
    BadFile("data: binary garbage", "data", bytes(range(256)) * 8, "not a readable CSV",
            ("--numeric", "a")),
    BadFile("data: text in a numeric column", "data", "a,b\n1,x\n" + "y" * 10_000 + ",z\n",
            "listed as numeric", ("--numeric", "a")),
    BadFile("data: 100,000,000 bins", "data", "a\n1\n2\n", "bins must be at most",
            ("--numeric", "a", "--bins", "100000000")),
    BadFile("actions: wrong type", "actions", "Retrain: {command: echo}\n", "Retrain.command"),
    BadFile("actions: billion laughs", "actions", BILLION_LAUGHS + "Retrain: {command: *i}\n",
            "Retrain.command"),
    BadFile("actions: binary garbage", "actions", bytes(range(256)) * 8, "cannot read"),
]  # fmt: skip


def _write_case(case: BadFile, directory: Path) -> tuple[Path, list[str]]:
    """The broken file for ``case`` and the command line that reads it."""
    directory.mkdir(parents=True)
    content = case.text(directory) if callable(case.text) else case.text
    if case.kind == "profile":
        path = directory / "reference.json"
        (directory / "monitor.yml").write_text(_config())
        argv = ["serve", "--config", str(directory / "monitor.yml")]
    else:
        path = directory / {"config": "monitor.yml", "data": "train.csv"}.get(case.kind, "a.yml")
        if case.kind == "config":
            write_setup(directory, "classification")  # a valid reference beside it
            argv = ["serve", "--config", str(path)]
        elif case.kind == "data":
            argv = ["baseline", "--data", str(path), "--out", str(directory / "out.json")]
        else:
            argv = ["receiver", "--actions", str(path)]
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    # A server that wrongly starts must not take a port someone else uses.
    served = ["--data-dir", str(directory / "data"), "--port", str(free_port())]
    return path, [*argv, *case.argv, *(served if argv[0] != "baseline" else [])]


def _run_cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "exporter.cli", *argv], capture_output=True, text=True,
            timeout=60, cwd=ROOT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:  # it started serving: the mistake went unseen
        return subprocess.CompletedProcess(argv, -1, str(exc.stdout), f"still running: {exc}")


@pytest.fixture(scope="module")
def cli_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Every case run once, two at a time: each is a fresh interpreter, as a user would start."""
    root = tmp_path_factory.mktemp("cli")
    written = {case.name: _write_case(case, root / f"case{i}") for i, case in enumerate(BAD_FILES)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(_run_cli, argv) for name, (_, argv) in written.items()}
        return {name: (written[name][0], run.result()) for name, run in runs.items()}


@pytest.mark.parametrize("case", BAD_FILES, ids=[c.name for c in BAD_FILES])
def test_broken_file_is_one_line_naming_the_file_and_key(
    cli_results: dict[str, tuple[Path, subprocess.CompletedProcess[str]]], case: BadFile
) -> None:
    path, result = cli_results[case.name]
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    line = lines[0]
    assert line.startswith("model-exporter ") and str(path) in line, line
    assert case.key in line, line
    assert len(line) < 2_000  # a 10,000-character value is not echoed whole
