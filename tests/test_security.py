"""Security: bearer tokens on the service and the receiver, /metrics on its own port (also with
several workers), TLS, no token in any log, no secret in the repository, and alert text that never
reaches a shell; in process for the rules, over real HTTP for the promises that need it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from exporter import cli, security
from exporter.config import ConfigError, load_config, with_overrides
from exporter.security import BearerTokens, TokenFileError, read_tokens
from exporter.server import BodyLimit, build_service, create_app, metrics_app
from tests.binaries import free_port, require_binary
from tests.service_fixtures import ROOT, stop, write_setup
from tests.stack_helpers import metric_samples, poll
from tests.test_receiver import RECORDER, make_alert, make_payload, write_script

#: How long a server under test may take to answer its readiness URL (the CI machine is busy).
START_TIMEOUT_SECONDS = 90.0


def new_token() -> str:
    """A token as `openssl rand -hex 32` makes one: unique, so finding it in a log means a leak."""
    return secrets.token_hex(32)


def token_file(path: Path, *tokens: str, mode: int = 0o600) -> Path:
    path.write_text("".join(f"{t}\n" for t in tokens), encoding="ascii")
    path.chmod(mode)
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def with_service_settings(config: Path, **settings: Any) -> Path:
    """``config`` (from write_setup) with ``service:`` keys added."""
    document = yaml.safe_load(config.read_text())
    document["service"].update(settings)
    config.write_text(yaml.safe_dump(document))
    return config


# -- token files ------------------------------------------------------------------------------


def test_a_token_file_holds_several_tokens_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("  old-token-0123456789abcdef  \n\nnew-token-0123456789abcdef\n" * 2)

    assert read_tokens(path) == (b"old-token-0123456789abcdef", b"new-token-0123456789abcdef")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read the token file"),
        (b"", "is empty"),
        (b"\n  \n\t\n", "is empty"),
        (b"s3cret-part-one s3cret-part-two\n", "line 1 holds a space"),
        (b"fine-token-0123456789\ns3cret-\xc3\xa9\n", "line 2 holds a space or a character"),
        (b"s3cret-\xff\n", "not UTF-8 text"),
        (b"s3cret-" + b"x" * security.MAX_TOKEN_FILE_BYTES, "is larger than"),
    ],
)
def test_a_bad_token_file_names_the_file_and_never_its_content(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "tokens"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(TokenFileError) as raised:
        read_tokens(path)
    message = str(raised.value)
    assert str(path) in message
    assert reason in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "separator", ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00"]
)
def test_a_control_character_inside_a_line_is_refused_not_a_line_break(
    tmp_path: Path, separator: str
) -> None:
    # Python's str.splitlines() also breaks lines at these characters: the line
    # "abc<VT>def..." was read as the two tokens "abc" and "def...", so "abc" opened the door.
    path = tmp_path / "tokens"
    path.write_text(f"s3cret{separator}part-two-0123456789abcdef\n", encoding="utf-8")

    with pytest.raises(TokenFileError, match="line 1 holds a space or a character") as raised:
        read_tokens(path)
    assert "s3cret" not in str(raised.value)


def test_crlf_and_surrounding_blanks_still_end_a_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_bytes(b"first-token-0123456789abcdef\r\n\t second-token-0123456789abcdef \r\n")

    assert read_tokens(path) == (b"first-token-0123456789abcdef", b"second-token-0123456789abcdef")


def test_loose_permissions_and_short_tokens_are_warnings_not_errors(tmp_path: Path) -> None:
    strict = BearerTokens.from_file(token_file(tmp_path / "strict", new_token()))
    loose = BearerTokens.from_file(token_file(tmp_path / "loose", "tiny-tok", mode=0o644))

    assert strict.warnings() == []
    readable, short = loose.warnings()
    assert f"{tmp_path / 'loose'} is readable by every user (mode 0644)" in readable
    assert "chmod 600" in readable
    assert "1 token(s)" in short and "shorter than 16 characters" in short
    assert "tiny-tok" not in readable + short


@pytest.mark.parametrize(
    ("header", "refusal"),
    [
        (None, security.MISSING),
        (b"", security.MISSING),
        (b"Bearer", security.MISSING),
        (b"Bearer   ", security.MISSING),
        (b"Basic dXNlcjpwYXNz", security.MISSING),
        (b"Bearer wrong", security.WRONG),
        (b"Bearer first-token-0123456789x", security.WRONG),
        (b"Bearer first-token-0123456789", None),
        (b"bearer second-token-0123456789", None),
        (b"  BEARER   second-token-0123456789  ", None),
    ],
)
def test_bearer_header_forms(header: bytes | None, refusal: str | None) -> None:
    tokens = BearerTokens(["first-token-0123456789", "second-token-0123456789"])
    assert tokens.refusal(header) == refusal


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr("exporter.security.hmac.compare_digest", spy)
    tokens = BearerTokens(["first-token-0123456789", "second-token-0123456789"])

    assert tokens.refusal(b"Bearer first-token-0123456789") is None
    # No early exit on the first match: the time taken does not tell which token matched.
    assert [a for a, _ in compared] == [b"first-token-0123456789", b"second-token-0123456789"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rotated_token_file_is_picked_up_and_a_broken_one_keeps_the_old_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new, newest = new_token(), new_token(), new_token()
    path = token_file(tmp_path / "tokens", old)
    clock = FakeClock()
    tokens = BearerTokens.from_file(path, clock=clock)

    token_file(path, old, new)  # step 1 of a rotation: both are valid
    assert tokens.refusal(f"Bearer {new}".encode()) == security.WRONG  # not looked at yet
    clock.now += security.RELOAD_CHECK_SECONDS
    assert tokens.refusal(f"Bearer {new}".encode()) is None
    assert tokens.refusal(f"Bearer {old}".encode()) is None

    token_file(path, new)  # step 2: the old one is retired
    clock.now += security.RELOAD_CHECK_SECONDS
    assert tokens.refusal(f"Bearer {old}".encode()) == security.WRONG
    assert tokens.refusal(f"Bearer {new}".encode()) is None

    with caplog.at_level(logging.WARNING, logger="exporter.security"):
        path.write_text("")  # a botched rotation neither locks clients out nor opens the door
        clock.now += security.RELOAD_CHECK_SECONDS
        assert tokens.refusal(f"Bearer {new}".encode()) is None
        path.unlink()
        clock.now += security.RELOAD_CHECK_SECONDS
        assert tokens.refusal(f"Bearer {new}".encode()) is None
        replacement = token_file(tmp_path / "replacement", newest)
        os.replace(replacement, path)  # how a Kubernetes Secret volume swaps its files
        clock.now += security.RELOAD_CHECK_SECONDS
        assert tokens.refusal(f"Bearer {newest}".encode()) is None
        assert tokens.refusal(f"Bearer {new}".encode()) == security.WRONG

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "is empty; still accepting the tokens read before" in logged
    assert "cannot read the token file" in logged
    assert "1 token(s) accepted from now on" in logged
    assert not any(t in logged for t in (old, new, newest))


# -- the service in process -------------------------------------------------------------------


@pytest.fixture
def tokens() -> tuple[str, str]:
    return new_token(), new_token()


def protected_client(tmp_path: Path, tokens: tuple[str, str], **auth: Any) -> TestClient:
    """The service with ``service.auth.token_file`` relative to its config, in process."""
    config = write_setup(tmp_path, "regression")
    (tmp_path / "secrets").mkdir()
    token_file(tmp_path / "secrets" / "api-tokens", *tokens)
    with_service_settings(config, auth={"token_file": "secrets/api-tokens", **auth})
    service = build_service(load_config(config), tmp_path / "data")
    return TestClient(BodyLimit(create_app(service), 65536))


def test_predict_and_feedback_need_a_token_and_get_the_error_format(
    tmp_path: Path, tokens: tuple[str, str]
) -> None:
    first, second = tokens
    with protected_client(tmp_path, tokens) as client:
        refused = [
            client.post("/predict", json={"features": {"miles": 1.0}}),
            client.post("/predict", json={"features": {"miles": 1.0}}, headers=bearer("nope")),
            client.post("/feedback", json={"prediction_id": "x", "actual": 1.0}),
            client.get("/no-such-endpoint"),  # deny by default: a later endpoint is covered too
        ]
        answer = client.post("/predict", json={"features": {"miles": 2.0}}, headers=bearer(first))
        feedback = client.post(
            "/feedback",
            json={"prediction_id": answer.json()["prediction_id"], "actual": 7.5},
            headers=bearer(second),  # any token of the file
        )

    assert [r.status_code for r in refused] == [401, 401, 401, 401]
    assert {r.headers["www-authenticate"] for r in refused} == {"Bearer"}
    assert refused[0].json() == {
        "detail": [{"field": "Authorization", "reason": "missing bearer token"}]
    }
    assert refused[1].json() == {
        "detail": [{"field": "Authorization", "reason": "wrong bearer token"}]
    }
    assert answer.status_code == 200
    assert feedback.json()["status"] == "recorded"


def test_probes_docs_and_metrics_stay_open(tmp_path: Path, tokens: tuple[str, str]) -> None:
    with protected_client(tmp_path, tokens) as client:
        statuses = {
            path: client.get(path).status_code
            for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
        }
        schema = client.get("/openapi.json").json()

    assert statuses == dict.fromkeys(statuses, 200)
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
    assert "401" in schema["paths"]["/feedback"]["post"]["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert "security" not in schema["paths"]["/metrics"]["get"]


def test_protect_metrics_asks_for_the_token_on_metrics_too(
    tmp_path: Path, tokens: tuple[str, str]
) -> None:
    with protected_client(tmp_path, tokens, protect_metrics=True) as client:
        without = client.get("/metrics")
        with_token = client.get("/metrics", headers=bearer(tokens[0]))
        probe = client.get("/healthz")

    assert without.status_code == 401
    assert with_token.status_code == 200
    assert "model_info" in with_token.text
    assert probe.status_code == 200


def test_protect_metrics_without_a_token_file_is_a_config_error(tmp_path: Path) -> None:
    config = with_service_settings(write_setup(tmp_path), auth={"protect_metrics": True})
    with pytest.raises(ConfigError, match="service.auth.protect_metrics needs a token file"):
        build_service(load_config(config), tmp_path / "data")


def test_the_token_file_is_relative_to_the_config_and_the_command_line_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    config = load_config(
        with_service_settings(write_setup(config_dir), auth={"token_file": "tokens"})
    )
    assert config.token_path() == config_dir / "tokens"

    monkeypatch.chdir(tmp_path)
    overridden = with_overrides(config, token_file=Path("cli-tokens"), metrics_port=9100)
    assert overridden.token_path() == tmp_path / "cli-tokens"
    assert overridden.service.metrics_port == 9100
    assert overridden.service.max_batch == config.service.max_batch


def test_metrics_port_moves_metrics_off_the_api(tmp_path: Path) -> None:
    config = with_service_settings(write_setup(tmp_path), metrics_port=9100)
    service = build_service(load_config(config), tmp_path / "data")
    with TestClient(create_app(service)) as api, TestClient(metrics_app(service)) as metrics:
        api.post("/predict", json={"features": {"miles": 1.0}})
        assert api.get("/metrics").status_code == 404
        assert "/metrics" not in api.get("/openapi.json").json()["paths"]
        assert metrics.get("/predict").status_code == 404
        text = metrics.get("/metrics").text
    assert sum(metric_samples(text, "model_predictions_total").values()) == 1


# -- the command line's start checks ------------------------------------------------------------


def serve_argv(config: Path, data_dir: Path, *extra: object) -> list[str]:
    return ["serve", "--config", str(config), "--data-dir", str(data_dir), *map(str, extra)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (lambda d: ["--token-file", d / "missing"], "cannot read the token file"),
        (lambda d: ["--token-file", token_file(d / "empty")], "is empty"),
        (lambda d: ["--ssl-keyfile", d / "key.pem"], "--ssl-keyfile needs --ssl-certfile"),
        (lambda d: ["--ssl-certfile", d / "cert.pem"], "cannot read the TLS certificate"),
        (lambda d: ["--port", "8123", "--metrics-port", "8123"], "is the API port"),
    ],
)
def test_serve_start_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: Any, message: str
) -> None:
    config = write_setup(tmp_path)
    assert cli.main(serve_argv(config, tmp_path / "data", *extra(tmp_path))) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("model-exporter serve: ")
    assert len(err.strip().splitlines()) == 1


def test_a_busy_metrics_port_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_setup(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = serve_argv(config, tmp_path / "data", "--metrics-port", port)
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port} for /metrics" in err


# -- live processes ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    # Unbuffered, so that what a process printed is in its files even if it is killed.
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _wait_until_answering(
    url: str, process: subprocess.Popen[bytes], log: Path, verify: ssl.SSLContext | bool
) -> None:
    """Poll ``url`` (HTTP or HTTPS) until it answers 200; fail with the log if it cannot."""

    def answered() -> bool:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(url, verify=verify, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    if not poll(answered, timeout=START_TIMEOUT_SECONDS, interval=0.1):
        pytest.fail(f"{url} did not answer within {START_TIMEOUT_SECONDS} s:\n{log.read_text()}")


@contextlib.contextmanager
def running(
    name: str, argv: list[str], directory: Path, ready_url: str,
    verify: ssl.SSLContext | bool = True,
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """``model-exporter <argv>`` in its own session, stdout and stderr in ``directory``."""
    out, err = directory / f"{name}.stdout", directory / f"{name}.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", *argv], stdout=stdout, stderr=stderr,
            cwd=ROOT, env=_env(), start_new_session=True,
        )  # fmt: skip
    try:
        _wait_until_answering(ready_url, process, err, verify)
        yield process
    finally:
        stop(process)


def test_two_workers_serve_metrics_on_their_own_port_only(tmp_path: Path) -> None:
    token = new_token()
    tokens = token_file(tmp_path / "tokens", token)
    config = write_setup(tmp_path)
    port, metrics_port = free_port(), free_port()
    argv = serve_argv(config, tmp_path / "data", "--port", port, "--metrics-port", metrics_port,
                      "--workers", 2, "--token-file", tokens, "--quiet")  # fmt: skip
    api, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    requests, answered = 24, 6
    with running("serve", argv, tmp_path, f"{api}/healthz"):
        with httpx.Client(base_url=api, headers=bearer(token), timeout=10) as client:
            ids = [
                client.post(
                    "/predict", json={"features": {"miles": float(i), "zone": "east"}}
                ).json()["prediction_id"]
                for i in range(requests)
            ]
            for prediction_id in ids[:answered]:
                client.post("/feedback", json={"prediction_id": prediction_id, "actual": 4.0})
            api_metrics = [client.get("/metrics"), httpx.get(f"{api}/metrics")]
            refused = httpx.post(f"{api}/predict", json={"features": {"miles": 1.0}})
        wrong_port = httpx.post(f"{metrics}/predict", headers=bearer(token), json={})

        def scraped() -> str | None:
            # Workers publish their windows every second; counters are in their files at once.
            text = httpx.get(f"{metrics}/metrics", timeout=10).text
            windows = metric_samples(text, "model_feature_window_samples", feature="miles",
                                     window="5m")  # fmt: skip
            return text if list(windows.values()) == [requests] else None

        text = poll(scraped, timeout=30) or httpx.get(f"{metrics}/metrics", timeout=10).text

    assert [r.status_code for r in api_metrics] == [404, 404]
    assert refused.status_code == 401
    assert wrong_port.status_code == 404
    assert sum(metric_samples(text, "model_predictions_total").values()) == requests
    assert sum(metric_samples(text, "model_absolute_error_count").values()) == answered
    windows = metric_samples(text, "model_feature_window_samples", feature="miles", window="5m")
    assert list(windows.values()) == [requests], "the supervisor merged every worker's windows"
    assert list(metric_samples(text, "model_outcomes_pending").values()) == [requests - answered]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command line."""
    openssl = require_binary("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def test_service_and_receiver_serve_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    token = new_token()
    tokens = token_file(tmp_path / "tokens", token)
    port, metrics_port, receiver_port = free_port(), free_port(), free_port()
    tls = ["--ssl-certfile", cert, "--ssl-keyfile", key]
    serve = serve_argv(write_setup(tmp_path), tmp_path / "data", "--port", port, "--metrics-port",
                       metrics_port, "--token-file", tokens, "--quiet", *tls)  # fmt: skip
    receiver = ["receiver", "--port", str(receiver_port), "--data-dir", str(tmp_path / "alerts"),
                "--token-file", str(tokens), *map(str, tls)]  # fmt: skip
    api, metrics = f"https://127.0.0.1:{port}", f"https://127.0.0.1:{metrics_port}"
    alerts = f"https://127.0.0.1:{receiver_port}"
    with (
        running("serve", serve, tmp_path, f"{api}/healthz", verify=trust),
        running("receiver", receiver, tmp_path, f"{alerts}/healthz", verify=trust),
    ):
        with httpx.Client(verify=trust, headers=bearer(token), timeout=10) as client:
            predicted = client.post(f"{api}/predict", json={"features": {"miles": 2.0}})
            scraped = client.get(f"{metrics}/metrics")
            posted = client.post(f"{alerts}/alerts", json=make_payload())
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
            httpx.get(f"{api}/healthz", timeout=10)
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)

    assert predicted.status_code == 200
    assert predicted.json()["prediction"] == 7.0
    assert sum(metric_samples(scraped.text, "model_predictions_total").values()) == 1
    assert posted.json() == {"received": 1, "stored": 1, "duplicates": 0}


def _files_holding(directory: Path, secrets_: list[str], skip: set[Path]) -> dict[str, list[str]]:
    """Which of ``secrets_`` each file under ``directory`` (but ``skip``) contains."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p not in skip):
        data = path.read_bytes()
        hits = [s for s in secrets_ if s.encode() in data]
        if hits:
            found[str(path.relative_to(directory))] = hits
    return found


def test_the_service_never_logs_a_token(tmp_path: Path) -> None:
    old, new, wrong = new_token(), new_token(), new_token()
    tokens = token_file(tmp_path / "tokens", old, mode=0o644)  # and it warns about the mode
    port = free_port()
    # Not --quiet: the access log is on, and every request is in it.
    argv = serve_argv(write_setup(tmp_path), tmp_path / "data", "--port", port, "--token-file",
                      tokens)  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def predict(token: str, **request: Any) -> int:
        request = request or {"json": {"features": {"miles": 1.0}}}
        return client.post("/predict", headers=bearer(token), **request).status_code

    with running("serve", argv, tmp_path, f"{url}/healthz"):
        with httpx.Client(base_url=url, timeout=10) as client:
            statuses = [predict(old), predict(wrong), predict(old, content=b"{broken")]
            client.post("/feedback", json={"prediction_id": "x", "actual": 1}, headers=bearer(old))
            token_file(tokens, new)  # rotated while the service runs
            rotated = poll(lambda: predict(new) == 200, timeout=10, interval=0.2)
            retired = predict(old)

    assert statuses == [200, 401, 400]
    assert rotated
    assert retired == 401
    stderr = (tmp_path / "serve.stderr").read_text()
    assert "is readable by every user (mode 0644)" in stderr
    assert '"POST /predict HTTP/1.1" 401' in (tmp_path / "serve.stdout").read_text() + stderr
    # Logs, the data directory, everything the service wrote: none holds any of the tokens.
    assert _files_holding(tmp_path, [old, new, wrong], skip={tokens}) == {}


def test_the_receiver_never_logs_a_token_and_runs_hostile_alerts_without_a_shell(
    tmp_path: Path,
) -> None:
    token, wrong = new_token(), new_token()
    tokens = token_file(tmp_path / "tokens", token)
    received, marker, victim = tmp_path / "received.json", tmp_path / "pwned", tmp_path / "victim"
    victim.mkdir()
    recorder = write_script(tmp_path, "recorder.py", RECORDER)
    actions = tmp_path / "actions.yml"
    actions.write_text(yaml.safe_dump(
        {"ModelAccuracyDrop": {"command": [sys.executable, str(recorder), str(received)]}}
    ))  # fmt: skip
    hostile = make_alert(
        "evil",
        description=f"$(touch {marker}); `touch {marker}`; rm -rf {victim} && echo $HOME | sh",
        summary=f"'; touch {marker} #",
    )
    hostile["labels"]["instance"] = f'"; touch {marker}; echo "'
    port = free_port()
    argv = ["receiver", "--port", str(port), "--data-dir", str(tmp_path / "alerts"),
            "--token-file", str(tokens), "--actions", str(actions)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running("receiver", argv, tmp_path, f"{url}/healthz"):
        refused = [
            httpx.post(f"{url}/alerts", json=make_payload(hostile), headers=bearer(wrong)),
            httpx.post(f"{url}/alerts", json=make_payload(hostile)),
            httpx.get(f"{url}/alerts", headers=bearer(wrong)),
            httpx.get(f"{url}/alerts"),
        ]
        accepted = httpx.post(f"{url}/alerts", json=make_payload(hostile), headers=bearer(token))
        listed = httpx.get(f"{url}/alerts", headers=bearer(token))
        assert poll(received.exists, timeout=30, interval=0.1)  # written last by the recorder
        open_paths = [httpx.get(f"{url}{p}").status_code for p in ("/healthz", "/metrics")]

    assert [r.status_code for r in refused] == [401] * 4
    assert accepted.json() == {"received": 1, "stored": 1, "duplicates": 0}
    assert [a["fingerprint"] for a in listed.json()["alerts"]] == ["evil"]
    assert open_paths == [200, 200]
    # The action got the alert on stdin, nothing of it in argv or the environment, no shell ran.
    assert json.loads(received.read_bytes()) == hostile
    assert json.loads(Path(f"{received}.argv").read_text()) == [str(recorder), str(received)]
    environment = json.loads(Path(f"{received}.env").read_text())
    assert not any(str(marker) in value for value in environment.values())
    assert not marker.exists()
    assert victim.is_dir()
    logs = (tmp_path / "receiver.stdout").read_text() + (tmp_path / "receiver.stderr").read_text()
    assert '"POST /alerts HTTP/1.1" 401' in logs
    # Logs, the alert store, the action's files: none holds either token.
    assert _files_holding(tmp_path, [token, wrong], skip={tokens}) == {}


# -- the repository ---------------------------------------------------------------------------

#: What a committed credential looks like. The patterns are built from pieces so that this file
#: does not match itself.
SECRET_PATTERNS = {
    "private key": re.compile("-----BEGIN " + r"[A-Z ]*PRIVATE KEY" + "-----"),
    "Slack token": re.compile(r"\bxox[abposr]" + r"-[0-9A-Za-z-]{10,}"),
    "Slack webhook": re.compile(
        r"hooks\.slack\.com/services/" + r"T[0-9A-Z]{6,}/B[0-9A-Z]{6,}/\w+"
    ),
    "AWS access key": re.compile(r"\bAKIA" + r"[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_" + r"[A-Za-z0-9]{36}\b"),
    "bearer token": re.compile(r"Authorization: Bearer " + r"[A-Za-z0-9+/=_-]{24,}"),
}


def _repository_files() -> list[Path]:
    """What is committed, and what would be by `git add -A` (untracked but not ignored)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=30,
    ).stdout.decode()  # fmt: skip
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_the_repository_holds_no_secret() -> None:
    found = []
    for path in _repository_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{path.relative_to(ROOT)}: {kind}" for kind, pattern in SECRET_PATTERNS.items()
                  if pattern.search(text)]  # fmt: skip
    assert found == []


def test_the_secret_patterns_catch_what_they_are_for() -> None:
    samples = {
        "private key": "-----BEGIN " + "OPENSSH PRIVATE KEY-----",
        "Slack token": "xoxb" + "-123456789012-abcdefABCDEF",
        "Slack webhook": "https://hooks.slack.com/services/" + "T0ABCDEF1/B0ABCDEF2/XyZ123",
        "AWS access key": "AKIA" + "IOSFODNN7EXAMPLE",
        "GitHub token": "ghp_" + "a" * 36,
        "bearer token": "Authorization: Bearer " + "0123456789abcdef" * 2,
    }
    assert {kind for kind, text in samples.items() if SECRET_PATTERNS[kind].search(text)} == set(
        SECRET_PATTERNS
    )
