"""The whole monitoring stack on 127.0.0.1, from the real binaries, for tests/test_stack.py.

Three exporters (``model-exporter serve``: two replicas of a regression model, one classifier),
the webhook receiver, Alertmanager and Prometheus, each on a free port, in its own process group,
logging to a file in the test's directory. The exporters' jobs are named as a site might rename
them (``model-exporter-fares``, ``model-exporter-classes``), which the rules' default selector
still matches; replica 1 is also scraped a second time with ``cluster="eu"``, a second fleet
running a model of the same name; and a foreign job (``vision``, a static text server in this
process) exposes a ``model_info`` and prediction counters of the same names, which the rules must
leave alone. Prometheus scrapes and evaluates every second and loads
copies of ``prometheus/rules/*.yml`` whose ``for:`` durations are cut to seconds; Alertmanager
runs the test copy of ``alertmanager/alertmanager.yml`` from tests/test_alertmanager.py (short
group timers, Slack and email at local stubs) with its webhook pointed at the real receiver.
"""

from __future__ import annotations

import contextlib
import http.server
import math
import os
import re
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.binaries import free_port, wait_until_ready
from tests.service_fixtures import ROOT, stop, write_setup
from tests.test_alertmanager import RECEIVER_TOKEN, CaptureServer, SMTPServer, write_test_config

RULES_DIR = ROOT / "prometheus" / "rules"
#: Scrape and rule-evaluation interval of the test Prometheus.
INTERVAL_SECONDS = 1.0
#: Every ``for:`` of the rule copies. Long enough for the alert to be seen pending (three
#: evaluations), short enough that the whole scenario fires within seconds.
TEST_FOR = "3s"
#: The job the project's own configs give the exporter (test_faults_stack scrapes it so).
EXPORTER_JOB = "model-exporter"
#: Jobs of the stack's Prometheus config: the exporters' jobs renamed, as a site does; the rules'
#: default selector, job=~"model-exporter.*", matches both.
FARE_JOB = "model-exporter-fares"
CLASSIFIER_JOB = "model-exporter-classes"
RECEIVER_JOB = "model-alert-receiver"
#: The second fleet: replica 1 scraped again with this cluster label (the first has none).
SECOND_CLUSTER = "eu"
#: Another team's job exposing series of the exporter's names, and its model.
FOREIGN_JOB = "vision"
FOREIGN_MODEL = "resnet50"
#: Failed calls the foreign model adds at each scrape: all of its calls fail, and it predicts
#: nothing, so unscoped rules would raise ModelHighErrorRatio and ModelNoPredictions for it.
FOREIGN_ERRORS_PER_SCRAPE = 10
#: The exporters' ``service.max_batch`` (tests/service_fixtures.py:write_setup).
MAX_BATCH = 50
#: How long a process may take to answer its readiness URL.
START_TIMEOUT_SECONDS = 60.0

T = TypeVar("T")


# --- waiting ------------------------------------------------------------------------------------


def poll(probe: Callable[[], T], *, timeout: float, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy or ``timeout`` seconds passed.

    Returns the last value either way (the caller asserts on it and says what it saw), so every
    wait in the stack tests is bounded.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Service:
    """One process of the stack, started in its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str

    @property
    def address(self) -> str:
        """``host:port``, as Prometheus names the target (its ``instance`` label)."""
        return self.url.removeprefix("http://")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, path: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        wait_until_ready(f"{self.url}{path}", self.process, self.log, self.name, timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crashed host would leave it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def spawn(
    stack: contextlib.ExitStack, name: str, argv: Sequence[str], log_dir: Path, port: int
) -> Service:
    """Start ``argv`` in a new session; ``stack`` stops its process group on exit, always."""
    log = log_dir / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            start_new_session=True,
        )  # fmt: skip
    stack.callback(stop, process)
    return Service(name, process, log, f"http://127.0.0.1:{port}")


def exporter_argv(config: Path, port: int, data_dir: Path) -> list[str]:
    """``model-exporter serve``, as tests/service_fixtures.py:live_server runs it."""
    return [
        sys.executable, "-m", "exporter.cli", "serve", "--config", str(config),
        "--port", str(port), "--data-dir", str(data_dir), "--workers", "1", "--quiet",
    ]  # fmt: skip


def receiver_argv(port: int, data_dir: Path, token_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "exporter.cli", "receiver", "--port", str(port),
        "--data-dir", str(data_dir), "--token-file", str(token_file),
    ]  # fmt: skip


def prometheus_argv(binary: str, config: Path, data_dir: Path, port: int, *flags: str) -> list[str]:
    """Prometheus on 127.0.0.1:``port`` with its TSDB in ``data_dir``, plus ``flags``."""
    return [
        binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}", *flags,
    ]  # fmt: skip


def alertmanager_argv(binary: str, config: Path, storage: Path, port: int) -> list[str]:
    """A single Alertmanager (no cluster: no gossip, no wait for peers) on 127.0.0.1:``port``."""
    return [
        binary, f"--config.file={config}", f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ]  # fmt: skip


# --- configuration ------------------------------------------------------------------------------


def write_model_config(
    directory: Path, task: str, name: str, thresholds: Mapping[str, float], **monitoring: Any
) -> Path:
    """tests/service_fixtures.py's toy setup under another model name and with more thresholds."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_setup(directory, task, **monitoring)
    config = yaml.safe_load(path.read_text())
    config["model"]["name"] = name
    config["thresholds"] = {**config["thresholds"], **thresholds}
    path.write_text(yaml.safe_dump(config))
    return path


_FOR_LINE = re.compile(r"^(\s*for:\s*)\S+\s*$", re.M)


def write_rule_copies(directory: Path, for_value: str = TEST_FOR) -> list[Path]:
    """Copies of prometheus/rules/*.yml with every ``for:`` set to ``for_value``.

    alerts.yml keeps each ``for:`` a plain ``for: <duration>`` line for this rewrite; the parsed
    copy is checked so a ``for:`` the pattern missed fails here instead of holding an alert for
    minutes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in sorted(RULES_DIR.glob("*.yml")):
        text = _FOR_LINE.sub(lambda m: f"{m[1]}{for_value}", source.read_text(encoding="utf-8"))
        rules = [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]
        kept = {r["alert"]: r["for"] for r in rules if "for" in r and r["for"] != for_value}
        assert kept == {}, f"{source.name}: for: not rewritten in {kept}"
        copy = directory / source.name
        copy.write_text(text, encoding="utf-8")
        copies.append(copy)
    assert copies, f"no rule files in {RULES_DIR}"
    return copies


def prometheus_config(
    fares: Sequence[str],
    classifier: str,
    receiver: str,
    alertmanager: str,
    foreign: str,
    rule_files: Sequence[Path],
) -> dict[str, Any]:
    """The stack's scrape config: the fare replicas and the classifier in renamed jobs, the last
    fare replica again in the second cluster, the receiver, and the foreign job."""
    jobs = {
        FARE_JOB: list(fares),
        CLASSIFIER_JOB: [classifier],
        RECEIVER_JOB: [receiver],
        FOREIGN_JOB: [foreign],
    }
    # Same address, other target labels: a target of its own to Prometheus, so the replica's
    # series exist twice, once per fleet, as the same model deployed in two clusters would be.
    labelled = {FARE_JOB: [{"targets": [fares[-1]], "labels": {"cluster": SECOND_CLUSTER}}]}
    return scraping_config(jobs, rule_files, alertmanagers=[alertmanager], labelled=labelled)


def scraping_config(
    jobs: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path],
    *,
    alertmanagers: Sequence[str] = (),
    labelled: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A Prometheus config scraping and evaluating every INTERVAL_SECONDS.

    ``jobs`` maps a job name to its static targets; ``labelled`` adds static configs (targets
    with target labels) to a job; alerts go to ``alertmanagers``, if any.
    """
    interval = f"{INTERVAL_SECONDS:g}s"
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(path) for path in rule_files],
    }
    if alertmanagers:
        targets = list(alertmanagers)
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    labelled = labelled or {}
    config["scrape_configs"] = [
        {
            "job_name": job,
            "static_configs": [{"targets": list(targets)}, *map(dict, labelled.get(job, ()))],
        }
        for job, targets in jobs.items()
    ]
    return config


class ExpositionServer(http.server.ThreadingHTTPServer):
    """A /metrics on 127.0.0.1 whose text ``exposition(n)`` makes for the n-th scrape (from 0),
    for a target whose counters a test drives scrape by scrape."""

    def __init__(self, exposition: Callable[[int], str]) -> None:
        super().__init__(("127.0.0.1", 0), _ExpositionHandler)
        self._exposition = exposition
        self._lock = threading.Lock()
        self.scrapes = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def next_exposition(self) -> bytes:
        with self._lock:
            text = self._exposition(self.scrapes)
            self.scrapes += 1
        return text.encode()


class _ExpositionHandler(http.server.BaseHTTPRequestHandler):
    server: ExpositionServer

    def do_GET(self) -> None:  # the name http.server calls
        body = self.server.next_exposition()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the base's signature
        """Quiet: one line per scrape would fill the test's output."""


def foreign_exposition(scrape: int) -> str:
    """Another team's job: a ``model_info`` and prediction counters named like the exporter's,
    for a model of its own. Its error counter grows at every scrape and its prediction counter
    never does."""
    labels = f'model="{FOREIGN_MODEL}",version="v7"'
    errors = (scrape + 1) * FOREIGN_ERRORS_PER_SCRAPE
    return (
        "# TYPE model_info gauge\n"
        f'model_info{{{labels},stage="production",reference="none"}} 1\n'
        "# TYPE model_predictions_total counter\n"
        f'model_predictions_total{{{labels},predicted="cat",confidence_bucket="high"}} 0\n'
        "# TYPE model_prediction_errors_total counter\n"
        f'model_prediction_errors_total{{{labels},error="MemoryError"}} {errors}\n'
        "# TYPE model_alert_threshold gauge\n"
        f'model_alert_threshold{{model="{FOREIGN_MODEL}",alert="error_ratio"}} 0.01\n'
    )


def write_alertmanager_config(
    directory: Path, receiver_url: str, capture_port: int, smtp_port: int
) -> tuple[Path, Path]:
    """The test copy of alertmanager.yml with its webhook at the real receiver.

    Returns the config and the token file; the receiver must check the same token.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = write_test_config(directory, capture_port, smtp_port)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    webhooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert webhooks, "alertmanager.yml has no webhook receiver"
    for webhook in webhooks:
        webhook["url"] = f"{receiver_url}/alerts"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    token_file = directory / "receiver_token"
    assert token_file.read_text(encoding="utf-8").strip() == RECEIVER_TOKEN
    return path, token_file


# --- talking to the stack -----------------------------------------------------------------------


class PromQLError(AssertionError):
    """Prometheus refused a query."""


class PrometheusAPI:
    """The query API of the test Prometheus."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.Client(base_url=url, timeout=30)

    def close(self) -> None:
        self._client.close()

    def _result(self, path: str, data: dict[str, str]) -> list[dict[str, Any]]:
        response = self._client.post(path, data=data)
        try:
            body = response.json()
        except ValueError:
            raise PromQLError(f"HTTP {response.status_code}: {response.text[:500]}") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at ``at``, a Unix time, or now): the vector's elements."""
        data = {"query": expr}
        if at is not None:
            data["time"] = f"{at:.3f}"
        return self._result("/api/v1/query", data)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return self._result("/api/v1/query_range", data)

    def values(self, expr: str, at: float | None = None) -> dict[frozenset[tuple[str, str]], float]:
        """An instant query as {label set: value}."""
        return {
            frozenset(element["metric"].items()): float(element["value"][1])
            for element in self.query(expr, at)
        }

    def targets_up(self) -> dict[str, float]:
        """``up`` by instance."""
        return {dict(k)["instance"]: v for k, v in self.values("up").items()}


def metric_samples(text: str, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of ``name`` in an exposition, restricted to those carrying ``labels``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found[frozenset(sample.labels.items())] = float(sample.value)
    return found


def bin_counts(metrics_text: str, model: str, feature: str) -> dict[str, float]:
    """``model_feature_bin_total`` of one feature of one process, by bin."""
    samples = metric_samples(metrics_text, "model_feature_bin_total", model=model, feature=feature)
    return {dict(labels)["bin"]: value for labels, value in samples.items()}


def endpoint_metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` carrying ``labels`` at ``url``/metrics (0 if none):
    a process's own counters, read directly rather than through Prometheus."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return sum(metric_samples(response.text, name, **labels).values())


def receiver_alerts(url: str, **filters: str) -> list[dict[str, Any]]:
    """The alerts the webhook receiver at ``url`` stored (``GET /alerts``, behind the same token
    as the webhook), newest first."""
    response = httpx.get(
        f"{url}/alerts",
        params={**filters, "limit": "1000"},
        headers={"Authorization": f"Bearer {RECEIVER_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    alerts: list[dict[str, Any]] = response.json()["alerts"]
    return alerts


def post_alerts(alertmanager_url: str, alerts: Sequence[Mapping[str, Any]]) -> None:
    """Post alerts to Alertmanager's API as Prometheus does (``POST /api/v2/alerts``)."""
    response = httpx.post(f"{alertmanager_url}/api/v2/alerts", json=list(alerts), timeout=10)
    assert response.status_code == 200, response.text


class ModelAPI:
    """/predict and /feedback of one exporter, asserting the answers the scenario expects."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client = client
        self.url = url

    def predict(self, instances: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Predictions (with their ids) for ``instances``, in batches of MAX_BATCH."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(instances), MAX_BATCH):
            chunk = [dict(item) for item in instances[start : start + MAX_BATCH]]
            response = self.client.post(f"{self.url}/predict", json={"instances": chunk})
            assert response.status_code == 200, response.text
            answers.extend(response.json()["predictions"])
        return answers

    def predict_failing(self, features: Mapping[str, Any]) -> None:
        """A call the model raises on: HTTP 500, counted by exception class."""
        response = self.client.post(f"{self.url}/predict", json={"features": dict(features)})
        assert response.status_code == 500, response.text

    def predict_refused(self, features: Mapping[str, Any]) -> None:
        """A call refused for a mistyped feature: HTTP 422, counted as invalid input."""
        response = self.client.post(f"{self.url}/predict", json={"features": dict(features)})
        assert response.status_code == 422, response.text

    def feedback(self, outcomes: Sequence[tuple[str, Any]]) -> None:
        """Ground truth for earlier predictions: (prediction_id, actual) pairs."""
        for start in range(0, len(outcomes), MAX_BATCH):
            chunk = [
                {"prediction_id": pid, "actual": actual}
                for pid, actual in outcomes[start : start + MAX_BATCH]
            ]
            response = self.client.post(f"{self.url}/feedback", json=chunk)
            assert response.status_code == 200, response.text
            statuses = {result["status"] for result in response.json()["results"]}
            assert statuses == {"recorded"}, response.text

    def metrics(self) -> str:
        response = self.client.get(f"{self.url}/metrics")
        assert response.status_code == 200, response.text
        return response.text


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    directory: Path
    prometheus: PrometheusAPI
    prometheus_service: Service
    alertmanager: Service
    receiver: Service
    fare_replicas: list[Service]
    classifier: Service
    #: The foreign job's /metrics (``host:port``).
    foreign: str
    #: The reference profile both models were built from (write_setup's toy data).
    fare_reference: Path
    #: Unix time at which Prometheus answered ready.
    started_at: float
    #: Unix time by which Prometheus had scraped every target at least once.
    first_scraped_at: float = math.inf
    services: list[Service] = field(default_factory=list)

    def logs(self) -> str:
        """The tail of every log, for a failure message."""
        return "\n".join(f"--- {s.name} ({s.log}):\n{s.log_tail(1500)}" for s in self.services)


def _serve_stubs(stack: contextlib.ExitStack) -> tuple[CaptureServer, SMTPServer]:
    """Slack and SMTP stand-ins, so Alertmanager's other channels have somewhere to deliver."""
    servers: tuple[CaptureServer, SMTPServer] = (CaptureServer(), SMTPServer())
    for server in servers:
        serve_in_background(stack, server)
    return servers


def serve_in_background(stack: contextlib.ExitStack, server: socketserver.BaseServer) -> None:
    """Run ``server`` on a daemon thread; ``stack`` shuts it down and closes it on exit."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def shut() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    stack.callback(shut)


@contextlib.contextmanager
def running_stack(
    directory: Path,
    prometheus_binary: str,
    alertmanager_binary: str,
    *,
    fare_name: str,
    classifier_name: str,
    fare_thresholds: Mapping[str, float],
    classifier_thresholds: Mapping[str, float],
    min_samples: int,
) -> Iterator[Stack]:
    """Start everything, wait until Prometheus has scraped every target once, yield, stop all."""
    logs = directory / "logs"
    logs.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        fare_config = write_model_config(
            directory / "fare", "regression", fare_name, fare_thresholds, min_samples=min_samples
        )
        classifier_config = write_model_config(
            directory / "classifier", "classification", classifier_name, classifier_thresholds,
            min_samples=min_samples,
        )  # fmt: skip
        capture, smtp = _serve_stubs(stack)
        foreign = ExpositionServer(foreign_exposition)
        serve_in_background(stack, foreign)
        receiver_port = free_port()
        am_config, token_file = write_alertmanager_config(
            directory / "alertmanager", f"http://127.0.0.1:{receiver_port}", capture.port, smtp.port
        )

        # The Python services start in parallel (each imports numpy, pandas and FastAPI).
        fare_replicas = []
        for index in range(2):
            port = free_port()
            data_dir = directory / f"fare-{index}-data"
            argv = exporter_argv(fare_config, port, data_dir)
            fare_replicas.append(spawn(stack, f"{fare_name}-{index}", argv, logs, port))
        port = free_port()
        argv = exporter_argv(classifier_config, port, directory / "classifier-data")
        classifier = spawn(stack, classifier_name, argv, logs, port)
        argv = receiver_argv(receiver_port, directory / "receiver-data", token_file)
        receiver = spawn(stack, "receiver", argv, logs, receiver_port)
        for service in (*fare_replicas, classifier, receiver):
            service.wait_ready("/healthz")

        port = free_port()
        argv = alertmanager_argv(
            alertmanager_binary, am_config, directory / "alertmanager-data", port
        )
        alertmanager = spawn(stack, "alertmanager", argv, logs, port)
        alertmanager.wait_ready("/-/ready")

        rule_files = write_rule_copies(directory / "rules")
        config = prometheus_config(
            [s.address for s in fare_replicas], classifier.address, receiver.address,
            alertmanager.address, foreign.address, rule_files,
        )  # fmt: skip
        config_path = directory / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        argv = prometheus_argv(prometheus_binary, config_path, directory / "prometheus-data", port)
        prometheus_service = spawn(stack, "prometheus", argv, logs, port)
        prometheus_service.wait_ready("/-/ready")
        prometheus = PrometheusAPI(prometheus_service.url)
        stack.callback(prometheus.close)
        services = [*fare_replicas, classifier, receiver, alertmanager, prometheus_service]
        result = Stack(
            directory=directory,
            prometheus=prometheus,
            prometheus_service=prometheus_service,
            alertmanager=alertmanager,
            receiver=receiver,
            fare_replicas=fare_replicas,
            classifier=classifier,
            foreign=foreign.address,
            fare_reference=fare_config.parent / "reference.json",
            started_at=time.time(),
            services=services,
        )

        # Traffic must start after the first scrape of every exporter: then every counter's
        # first sample in Prometheus is its value before any traffic (0 for the pre-created
        # series), and increase() over the scenario counts all of it.
        targets = {s.address for s in (*fare_replicas, classifier, receiver)} | {foreign.address}
        up = poll(
            lambda: targets <= {i for i, v in prometheus.targets_up().items() if v == 1},
            timeout=30,
            interval=0.2,
        )
        assert up, f"not every target was scraped: {prometheus.targets_up()}\n{result.logs()}"
        result.first_scraped_at = time.time()
        yield result
