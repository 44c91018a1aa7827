"""``model-exporter status``'s arguments and its failures: a bad URL, an unreachable
Prometheus and a server that is not Prometheus are each one clear line (a CommandError, which
the command line prints on stderr with exit code 2). The reading itself is tested against a
real Prometheus in tests/test_stack.py."""

from __future__ import annotations

import argparse
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from exporter.errors import CommandError, ExporterError
from exporter.status import RULES
from exporter.status.command import add_arguments, run
from exporter.status.prometheus import PrometheusError
from tests.binaries import free_port


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _fails(*argv: str) -> str:
    with pytest.raises(CommandError) as caught:
        run(_args(*argv))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_prometheus_is_required() -> None:
    with pytest.raises(SystemExit):
        _args("--json")


@pytest.mark.parametrize("url", ["localhost:9090", "ftp://prometheus:9090", "http://", "9090"])
def test_a_bad_url_is_one_line(url: str) -> None:
    assert "is not a Prometheus URL: give http(s)://host:port" in _fails("--prometheus", url)


def test_an_unreachable_prometheus_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = _fails("--prometheus", url, "--timeout", "2")
    assert message.startswith(f"cannot reach Prometheus at {url}: ")


class _NotPrometheus(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the name http.server calls
        body = b"<html>a login page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def not_prometheus() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_server_that_is_not_prometheus_is_one_line(not_prometheus: str) -> None:
    message = _fails("--prometheus", not_prometheus)
    assert "without Prometheus' JSON: is this the URL of a Prometheus server?" in message


def test_the_reader_error_is_the_package_s_own() -> None:
    assert issubclass(PrometheusError, ExporterError)


class _RulelessPrometheus(http.server.BaseHTTPRequestHandler):
    """A Prometheus that scrapes an exporter but does not evaluate the project's rules: only the
    raw model_info answers."""

    def do_GET(self) -> None:  # the name http.server calls
        query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
        result = []
        if "model_info" in query:
            result = [{"metric": {"model": "fare", "version": "v1"}, "value": [0, "1"]}]
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_a_prometheus_without_the_rules_is_one_line() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RulelessPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        message = _fails("--prometheus", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert "has models but no recorded series" in message
    assert "load the project's rules" in message


def test_the_reader_queries_only_recorded_series_that_exist() -> None:
    """Every recorded series the reader names is one of prometheus/rules/recording.yml's (the
    contract of docs/metrics.md), so a renamed rule fails here, not only in the stack test."""
    root = Path(__file__).resolve().parent.parent
    rules = yaml.safe_load((root / "prometheus" / "rules" / "recording.yml").read_text())
    recorded = {r["record"] for group in rules["groups"] for r in group["rules"] if "record" in r}
    source = (root / "exporter" / "status" / "prometheus.py").read_text()
    named = set(re.findall(r"\b(model[a-z_]*:[a-z_0-9]+:[a-z_0-9]+)\b", source))
    assert len(named) >= 15, named
    assert named - recorded == set()


def test_docs_list_every_rule() -> None:
    root = Path(__file__).resolve().parent.parent
    docs = (root / "docs" / "status.md").read_text()
    for rule in RULES:
        assert f"| `{rule.id}` | {rule.severity} |" in docs, rule.id
