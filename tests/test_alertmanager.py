"""The Alertmanager configuration: validity, routing, secrets, templates, and inhibition live.

Routing is checked with ``amtool config routes test`` for every case in
``alertmanager/tests/routes.yml``. Inhibition and the rendered notifications are checked against a
real Alertmanager started on a free port with a test copy of the configuration whose webhook,
Slack and email receivers point at stub servers on 127.0.0.1.
"""

from __future__ import annotations

import email.policy
import json
import re
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.binaries import free_port, require_binary, terminate, wait_until_ready

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "alertmanager" / "alertmanager.yml"
SUBTREE = REPO / "alertmanager" / "model-exporter.yml"
COMPONENT = 'component="model-exporter"'
ROUTE_CASES = REPO / "alertmanager" / "tests" / "routes.yml"
TEMPLATES = REPO / "alertmanager" / "templates"
SECRETS_DIR = "/etc/alertmanager/secrets/"

# Keys that would hold a secret inline; the configuration must use their *_file variants.
INLINE_SECRET_KEYS = {
    "api_url",
    "api_key",
    "auth_password",
    "auth_secret",
    "bearer_token",
    "credentials",
    "password",
    "routing_key",
    "service_key",
    "smtp_auth_password",
    "slack_api_url",
    "token",
}

RECEIVER_TOKEN = "test-receiver-token"
# Short timers for the test copy: notifications arrive a second after the alerts are posted,
# and nothing repeats while the test runs.
TEST_GROUP_WAIT = "1s"
TEST_GROUP_INTERVAL = "1s"
NOTIFY_TIMEOUT_SECONDS = 15.0


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _route_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = _load_yaml(ROUTE_CASES)["cases"]
    return cases


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a nested YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


# --- static checks: no binary needed ------------------------------------------------------------


def test_secrets_come_only_from_files_under_the_secrets_directory() -> None:
    config = _load_yaml(CONFIG)
    pairs = list(_walk(config))
    inline = sorted({key for key, _ in pairs if key in INLINE_SECRET_KEYS})
    assert inline == [], f"secrets written inline in {CONFIG.name}: {inline}"
    files = {key: value for key, value in pairs if key.endswith("_file")}
    assert set(files) == {"api_url_file", "auth_password_file", "credentials_file"}
    outside = {k: v for k, v in files.items() if not str(v).startswith(SECRETS_DIR)}
    assert outside == {}, f"secret files outside {SECRETS_DIR}: {outside}"


def test_every_template_the_config_uses_is_defined() -> None:
    config = _load_yaml(CONFIG)
    patterns = [CONFIG.parent / pattern for pattern in config["templates"]]
    files = [path for pattern in patterns for path in pattern.parent.glob(pattern.name)]
    assert files, f"no template file matches {config['templates']}"
    defined = {
        name
        for path in files
        for name in re.findall(r'define "([^"]+)"', path.read_text(encoding="utf-8"))
    }
    used = set(re.findall(r'template "([^"]+)"', CONFIG.read_text(encoding="utf-8")))
    assert used, "the receivers use no template"
    assert used <= defined, f"templates used but not defined: {sorted(used - defined)}"


def test_the_complete_config_is_the_subtree_under_a_root_route() -> None:
    # Both are generated (exporter/mixin/alertmanager.py, checked against the committed files by
    # tests/test_mixin_generate.py): model-exporter.yml is the part a user pastes into their own
    # config; the demo and compose run the complete one.
    complete, subtree = _load_yaml(CONFIG), _load_yaml(SUBTREE)
    assert complete["route"]["routes"] == [subtree["route"]]
    assert complete["inhibit_rules"] == subtree["inhibit_rules"]
    assert complete["receivers"][1:] == subtree["receivers"]
    assert complete["receivers"][0] == {"name": "default"}


def test_the_subtree_acts_only_on_this_projects_alerts() -> None:
    subtree = _load_yaml(SUBTREE)
    assert subtree["route"]["matchers"] == [COMPONENT]
    assert "continue" not in subtree["route"]
    for rule in subtree["inhibit_rules"]:
        assert COMPONENT in rule["source_matchers"] and COMPONENT in rule["target_matchers"]
    assert all(r["name"].startswith("model-exporter-") for r in subtree["receivers"])
    # Every alert the project ships carries the label the subtree matches.
    groups = _load_yaml(REPO / "prometheus" / "rules" / "alerts.yml")["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert alerts
    unlabelled = [a["alert"] for a in alerts if a["labels"].get("component") != "model-exporter"]
    assert unlabelled == []


def test_route_cases_cover_every_receiver_and_severity() -> None:
    receivers = {receiver["name"] for receiver in _load_yaml(CONFIG)["receivers"]}
    cases = _route_cases()
    reached = {name for case in cases for name in case["receivers"]}
    assert reached == receivers
    severities = {case["labels"].get("severity") for case in cases}
    assert {"critical", "warning", "info", None} <= severities
    names = [case["name"] for case in cases]
    assert len(names) == len(set(names)), "route case names must be unique"


# --- amtool -------------------------------------------------------------------------------------


@pytest.mark.stack
def test_amtool_check_config_accepts_the_config_and_templates() -> None:
    amtool = require_binary("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # amtool parses the templates too and reports how many files it loaded.
    assert re.search(r"- [1-9]\d* templates", result.stdout), result.stdout


@pytest.mark.stack
@pytest.mark.parametrize("case", _route_cases(), ids=lambda case: str(case["name"]))
def test_route(case: dict[str, Any]) -> None:
    amtool = require_binary("amtool")
    expected = ",".join(case["receivers"])
    labels = [f"{name}={value}" for name, value in case["labels"].items()]
    result = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={CONFIG}",
            f"--verify.receivers={expected}",
            *labels,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.strip() == expected, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


# --- stub servers for the live test -------------------------------------------------------------


@dataclass(frozen=True)
class CapturedPost:
    path: str
    authorization: str | None
    body: dict[str, Any]


class CaptureServer(ThreadingHTTPServer):
    """Records every JSON POST; stands in for the webhook receiver (/alerts) and Slack (/slack)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CaptureHandler)
        self.posts: list[CapturedPost] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [post.body for post in list(self.posts) if post.path == path]


class _CaptureHandler(BaseHTTPRequestHandler):
    server: CaptureServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        post = CapturedPost(
            self.path, self.headers.get("Authorization"), json.loads(self.rfile.read(length))
        )
        self.server.posts.append(post)
        # The real receiver refuses a wrong token; so does the stub, so Alertmanager would retry
        # and the test would see the bad header.
        authorized = self.path != "/alerts" or post.authorization == f"Bearer {RECEIVER_TOKEN}"
        reply = b"ok" if authorized else b"unauthorized"
        self.send_response(200 if authorized else 401)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of access logs."""


class SMTPServer(socketserver.ThreadingTCPServer):
    """The smallest SMTP server Go's net/smtp client talks to: no TLS, no AUTH, keeps messages."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SMTPHandler)
        self.messages: list[bytes] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _SMTPHandler(socketserver.StreamRequestHandler):
    server: SMTPServer

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode("ascii") + b"\r\n")

    def handle(self) -> None:
        self._reply("220 stub ESMTP")
        while line := self.rfile.readline():
            command = line.decode("ascii", "replace").strip().upper()
            if command == "DATA":
                self._reply("354 end data with <CR><LF>.<CR><LF>")
                self.server.messages.append(self._read_data())
                self._reply("250 queued")
            elif command == "QUIT":
                self._reply("221 bye")
                return
            else:  # EHLO (no extensions advertised), MAIL FROM, RCPT TO, RSET, NOOP
                self._reply("250 ok")

    def _read_data(self) -> bytes:
        lines: list[bytes] = []
        while (line := self.rfile.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)  # undo dot-stuffing
        return b"".join(lines)


def _parse_email(raw: bytes) -> tuple[str, str]:
    """Subject and HTML body of a message the SMTP stub received."""
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("html",))
    assert isinstance(body, EmailMessage), "the email has no HTML part"
    return str(message["Subject"]), str(body.get_content())


@pytest.fixture
def capture_server() -> Iterator[CaptureServer]:
    server = CaptureServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the live Alertmanager ----------------------------------------------------------------------


def _shorten_timers(route: dict[str, Any], *, root: bool = True) -> None:
    """Set group_wait and group_interval of the route tree to the test values, in place.

    The root always gets them; a child route only where it overrides them (others inherit).
    """
    for key, value in (("group_wait", TEST_GROUP_WAIT), ("group_interval", TEST_GROUP_INTERVAL)):
        if root or key in route:
            route[key] = value
    for child in route.get("routes", []):
        _shorten_timers(child, root=False)


def write_test_config(tmp_path: Path, capture_port: int, smtp_port: int) -> Path:
    """A copy of alertmanager.yml whose receivers point at the stubs, with short timers.

    Routing, grouping, inhibition and templates are left exactly as in the real file.
    """
    config = _load_yaml(CONFIG)
    token_file = tmp_path / "receiver_token"
    # A trailing newline, as `echo token > file` writes it: Alertmanager must trim it.
    token_file.write_text(RECEIVER_TOKEN + "\n", encoding="utf-8")
    slack_url_file = tmp_path / "slack_api_url"
    slack_url_file.write_text(f"http://127.0.0.1:{capture_port}/slack\n", encoding="utf-8")
    smtp_password_file = tmp_path / "smtp_password"
    smtp_password_file.write_text("unused: the stub advertises no AUTH\n", encoding="utf-8")

    _shorten_timers(config["route"])
    config["templates"] = [str(CONFIG.parent / pattern) for pattern in config["templates"]]
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"http://127.0.0.1:{capture_port}/alerts"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(slack_url_file)
        for mail in receiver.get("email_configs", []):
            mail["smarthost"] = f"127.0.0.1:{smtp_port}"
            mail["require_tls"] = False
            mail["auth_password_file"] = str(smtp_password_file)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def alertmanager(
    tmp_path: Path, capture_server: CaptureServer, smtp_server: SMTPServer
) -> Iterator[str]:
    """Base URL of a real Alertmanager running the test copy of the configuration."""
    binary = require_binary("prometheus-alertmanager")
    config = write_test_config(tmp_path, capture_server.port, smtp_server.port)
    port = free_port()
    log = tmp_path / "alertmanager.log"
    storage = tmp_path / "data"
    storage.mkdir()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # a single instance: no gossip, no peer wait
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/-/ready", process, log, "alertmanager", timeout=15)
        yield url
    finally:
        terminate(process)


def _alert(alertname: str, severity: str, model: str, value: str, **extra: str) -> dict[str, Any]:
    labels = {
        "alertname": alertname,
        "severity": severity,
        "model": model,
        "component": "model-exporter",
        **extra,
    }
    subject = f"{extra['feature']} of model {model}" if "feature" in extra else f"model {model}"
    return {
        "labels": labels,
        "annotations": {
            "summary": f"{alertname} on {subject}",
            "description": f"{alertname} on {subject}: value {value} is above its threshold",
            "runbook_url": f"https://runbooks.example.com/model-exporter/{alertname}",
            "dashboard_url": f"http://localhost:3000/d/model-overview?var-model={model}",
        },
    }


def _foreign_alert(alertname: str, severity: str, instance: str) -> dict[str, Any]:
    """Another team's alert in the same Alertmanager: no component="model-exporter"."""
    return {
        "labels": {"alertname": alertname, "severity": severity, "instance": instance},
        "annotations": {"summary": f"{alertname} on {instance}"},
    }


def _post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _alert_states(url: str) -> dict[frozenset[tuple[str, str]], dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
        alerts: list[dict[str, Any]] = json.loads(response.read())
    return {frozenset(alert["labels"].items()): alert["status"] for alert in alerts}


def _key(alert: dict[str, Any]) -> frozenset[tuple[str, str]]:
    return frozenset(alert["labels"].items())


def _wait_for(condition: Callable[[], bool], what: str, seen: Callable[[], object]) -> None:
    """Poll ``condition``; on timeout fail with ``what`` was expected and what was ``seen``."""
    deadline = time.monotonic() + NOTIFY_TIMEOUT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {NOTIFY_TIMEOUT_SECONDS}s waiting for {what}; seen: {seen()}"
            )
        time.sleep(0.1)


def _groups(bodies: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Webhook notifications by (alertname, model) of their group."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for body in bodies:
        labels = body["groupLabels"]
        groups.setdefault((labels["alertname"], labels.get("model", "")), []).append(body)
    return groups


@pytest.mark.stack
def test_live_routing_inhibition_and_templates(
    alertmanager: str, capture_server: CaptureServer, smtp_server: SMTPServer
) -> None:
    error_ratio = _alert("ModelHighErrorRatio", "critical", "fare", "0.093", version="4")
    drift_critical = _alert(
        "ModelFeatureDriftPSI", "critical", "fare", "0.41", feature="trip_distance", version="4"
    )
    # Same alertname, model and feature as the critical one: inhibited.
    drift_warning = _alert(
        "ModelFeatureDriftPSI", "warning", "fare", "0.41", feature="trip_distance", version="4"
    )
    # Same alertname and model, another feature: a different fact, not inhibited.
    drift_other_feature = _alert(
        "ModelFeatureDriftPSI", "warning", "fare", "0.17", feature="passenger_count", version="4"
    )
    # Two replicas of churn's exporter down: neither inhibits the other.
    churn_down_a = _alert("ModelExporterDown", "critical", "churn", "0", instance="10.0.0.1:8000")
    churn_down_b = _alert("ModelExporterDown", "critical", "churn", "0", instance="10.0.0.2:8000")
    # A model alert of churn while its exporter is down: inhibited.
    churn_mae = _alert("ModelMAEHigh", "critical", "churn", "6.2", version="7")
    # The same alert for another model: not inhibited (equal: [model]).
    fare_mae = _alert("ModelMAEHigh", "warning", "fare", "4.1", version="4")
    # Slack's markup characters in a description: shown as text, not read as a link.
    fare_mae["annotations"]["description"] = "MAE 4.1 > 3.5 & rising on <unk> tokens"
    # Another team's critical and warning of one alertname on two nodes: with inhibition matching
    # on alertname, model and feature alone (all equal or absent here), the critical of node-a hid
    # the warning of node-b. Neither is this project's: not inhibited, and notified to none of its
    # receivers (the root's default receiver has no integration in this config).
    node_a = _foreign_alert("NodeFilesystemSpaceFillingUp", "critical", "node-a")
    node_b = _foreign_alert("NodeFilesystemSpaceFillingUp", "warning", "node-b")
    alerts = [
        node_a,
        node_b,
        error_ratio,
        drift_critical,
        drift_warning,
        drift_other_feature,
        churn_down_a,
        churn_down_b,
        churn_mae,
        fare_mae,
    ]
    inhibited = [drift_warning, churn_mae]
    _post_alerts(alertmanager, alerts)

    # Alertmanager's own view: exactly the two targets are suppressed, each by an inhibition.
    def inhibition_settled() -> bool:
        states = _alert_states(alertmanager)
        return all(
            _key(alert) in states
            and states[_key(alert)]["state"] == ("suppressed" if alert in inhibited else "active")
            for alert in alerts
        )

    def states_seen() -> list[tuple[dict[str, str], str]]:
        return [(dict(key), status["state"]) for key, status in _alert_states(alertmanager).items()]

    _wait_for(inhibition_settled, "exactly the two inhibited alerts to be suppressed", states_seen)
    states = _alert_states(alertmanager)
    for alert in inhibited:
        assert states[_key(alert)]["inhibitedBy"], alert["labels"]
        assert states[_key(alert)]["silencedBy"] == [], alert["labels"]

    expected_webhook_groups = {
        ("ModelHighErrorRatio", "fare"): [error_ratio],
        ("ModelFeatureDriftPSI", "fare"): [drift_critical, drift_other_feature],
        ("ModelExporterDown", "churn"): [churn_down_a, churn_down_b],
        ("ModelMAEHigh", "fare"): [fare_mae],
    }
    # Slack: one message per (route, group): critical route and warning route group separately.
    expected_slack_messages = 5
    # Email: critical groups only, with the inhibited alerts left out.
    expected_emails = 3

    _wait_for(
        lambda: (
            set(_groups(capture_server.bodies("/alerts"))) >= set(expected_webhook_groups)
            and len(capture_server.bodies("/slack")) >= expected_slack_messages
            and len(smtp_server.messages) >= expected_emails
        ),
        "the webhook, Slack and email notifications",
        lambda: (
            f"webhook groups {sorted(_groups(capture_server.bodies('/alerts')))}, "
            f"{len(capture_server.bodies('/slack'))} Slack messages, "
            f"{len(smtp_server.messages)} emails"
        ),
    )
    # Every group flushed within the same second; give a muted group time to (wrongly) show up.
    time.sleep(1.5)

    # Webhook: every request carried the bearer token read from the credentials file.
    webhook_posts = [post for post in capture_server.posts if post.path == "/alerts"]
    assert {post.authorization for post in webhook_posts} == {f"Bearer {RECEIVER_TOKEN}"}

    groups = _groups(capture_server.bodies("/alerts"))
    assert set(groups) == set(expected_webhook_groups), "churn's MAE alert must not be notified"
    assert not [m for m in capture_server.bodies("/slack") if "NodeFilesystem" in str(m)]
    assert not [raw for raw in smtp_server.messages if b"NodeFilesystem" in raw]
    for group, expected in expected_webhook_groups.items():
        assert len(groups[group]) == 1, f"{group} notified more than once"
        notified = groups[group][0]["alerts"]
        assert len(notified) == len(expected), group
        assert {_key(a) for a in notified} == {_key(a) for a in expected}, group

    payload = groups[("ModelHighErrorRatio", "fare")][0]
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    assert payload["receiver"] == "model-exporter-webhook"
    assert payload["groupLabels"] == {"alertname": "ModelHighErrorRatio", "model": "fare"}
    assert payload["commonLabels"] == error_ratio["labels"]
    assert payload["commonAnnotations"] == error_ratio["annotations"]
    [notified_alert] = payload["alerts"]
    assert notified_alert["status"] == "firing"
    assert notified_alert["labels"] == error_ratio["labels"]
    assert notified_alert["annotations"] == error_ratio["annotations"]
    assert notified_alert["fingerprint"]
    assert notified_alert["startsAt"]

    # Slack: rendered by slack.tmpl, critical and warning messages, nothing for inhibited alerts.
    slack = [body["attachments"][0] for body in capture_server.bodies("/slack")]
    assert len(slack) == expected_slack_messages
    [error_ratio_slack] = [m for m in slack if "ModelHighErrorRatio" in m["title"]]
    assert error_ratio_slack["title"] == "[FIRING:1] ModelHighErrorRatio · model fare"
    assert error_ratio_slack["title_link"] == error_ratio["annotations"]["dashboard_url"]
    assert error_ratio_slack["color"] == "danger"
    for text in (
        error_ratio["annotations"]["description"],
        f"<{error_ratio['annotations']['runbook_url']}|Runbook>",
        f"<{error_ratio['annotations']['dashboard_url']}|Dashboard>",
        "model `fare` · version `4`",
    ):
        assert text in error_ratio_slack["text"]
    drift_slack = {m["color"]: m["text"] for m in slack if "ModelFeatureDriftPSI" in m["title"]}
    assert set(drift_slack) == {"danger", "warning"}
    assert "feature `trip_distance`" in drift_slack["danger"]
    assert "feature `passenger_count`" in drift_slack["warning"]
    assert "trip_distance" not in drift_slack["warning"], "the inhibited warning was sent"
    assert not [m for m in slack if "churn" in m["title"] and "ModelMAEHigh" in m["title"]]
    [fare_mae_slack] = [m for m in slack if "ModelMAEHigh" in m["title"]]
    assert "MAE 4.1 &gt; 3.5 &amp; rising on &lt;unk&gt; tokens" in fare_mae_slack["text"]
    assert "<unk>" not in fare_mae_slack["text"]

    # Email: rendered by email.tmpl, critical groups only.
    emails = dict(_parse_email(raw) for raw in smtp_server.messages)
    assert len(emails) == expected_emails
    assert set(emails) == {
        "[FIRING:1] ModelHighErrorRatio · model fare (critical)",
        "[FIRING:1] ModelFeatureDriftPSI · model fare (critical)",
        "[FIRING:2] ModelExporterDown · model churn (critical)",
    }
    html = emails["[FIRING:1] ModelHighErrorRatio · model fare (critical)"]
    assert error_ratio["annotations"]["description"] in html
    assert f'href="{error_ratio["annotations"]["runbook_url"]}"' in html
    assert f'href="{error_ratio["annotations"]["dashboard_url"]}"' in html
    drift_html = emails["[FIRING:1] ModelFeatureDriftPSI · model fare (critical)"]
    assert "<td>feature</td><td>trip_distance</td>" in drift_html
    assert "passenger_count" not in drift_html, "a warning reached the email receiver"
