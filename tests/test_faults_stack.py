"""Faults of the monitoring stack, with the real binaries: what each one does, as observed.

* Prometheus restarted mid-run (SIGTERM, then started on the same port and TSDB directory): the
  series from before are still there, scraping and rule evaluation go on, predictions made while
  it was down are counted, and firing alerts fire again (their ``for:`` state restored when
  ``for:`` is at least ``--rules.alert.for-grace-period``, otherwise they pend again).
* An exporter killed with SIGKILL and started again on the same port: its counters restart at 0,
  and ``increase()`` / ``rate()`` over a window spanning the restart still count every prediction.
* Alertmanager down while alerts fire (not started yet, later killed with SIGKILL): Prometheus
  re-sends every firing alert each ``--rules.alert.resend-delay``, so every alert reaches the
  receiver once Alertmanager is back, and re-sent notifications are stored once.
* The webhook receiver down (nothing listens on its port) or failing (500 before, or after,
  storing): Alertmanager retries, every notification arrives once the receiver answers, and each
  alert and status is stored exactly once.

Every process is the real binary on a free 127.0.0.1 port (tests/stack_helpers.py), scraping and
evaluating every second, and is stopped when its test ends, passed or failed. Alerts here carry
``severity="info"``, which alertmanager.yml routes to the webhook receiver only. The delays the
tests measure are printed (``pytest -s`` shows the ``measured ...`` lines), never asserted.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.binaries import free_port, require_binary
from tests.fault_proxy import FaultProxy, Mode, ProxiedRequest
from tests.service_fixtures import stop, write_setup
from tests.stack_helpers import (
    EXPORTER_JOB,
    ModelAPI,
    PrometheusAPI,
    Service,
    alertmanager_argv,
    endpoint_metric,
    exporter_argv,
    poll,
    post_alerts,
    prometheus_argv,
    receiver_alerts,
    receiver_argv,
    scraping_config,
    serve_in_background,
    spawn,
    write_alertmanager_config,
    write_rule_copies,
)

pytestmark = pytest.mark.stack

#: Bound of every wait: each awaited event takes a few scrape, evaluation or group intervals.
WAIT_SECONDS = 30.0
#: Prometheus re-sends each firing alert this often (default 1m): an Alertmanager that comes back
#: has every firing alert again within a second. Prometheus restores the ``for:`` state of an
#: alert after a restart only if its ``for:`` is at least the grace period (default 10m).
PROMETHEUS_FLAGS = ("--rules.alert.resend-delay=1s", "--rules.alert.for-grace-period=2s")
#: ``for:`` of the test alerts: below, and at least, the grace period.
SHORT_FOR = "1s"
LONG_FOR = "3s"
#: The exporter's model (tests/service_fixtures.py:write_setup) and its prediction counter.
MODEL = "toy"
PREDICTIONS = f'model_predictions_total{{job="{EXPORTER_JOB}", model="{MODEL}"}}'
ZONES = ("north", "south", "east")
#: One Alertmanager group per model (alertmanager.yml groups by alertname and model).
FAULT_MODELS = ("fault-a", "fault-b", "fault-c")


# --- processes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return require_binary("prometheus")


@pytest.fixture(scope="module")
def alertmanager_binary() -> str:
    return require_binary("prometheus-alertmanager")


def start_prometheus(
    stack: contextlib.ExitStack, logs: Path, binary: str, config: Path, port: int, name: str
) -> tuple[Service, PrometheusAPI]:
    """Prometheus on ``port`` with its TSDB next to ``config``; ready when returned."""
    argv = prometheus_argv(
        binary, config, config.parent / "prometheus-data", port, *PROMETHEUS_FLAGS
    )
    service = spawn(stack, name, argv, logs, port)
    service.wait_ready("/-/ready")
    api = PrometheusAPI(service.url)
    stack.callback(api.close)
    return service, api


def spawn_alertmanager(
    stack: contextlib.ExitStack, logs: Path, binary: str, config: Path, port: int, name: str
) -> Service:
    """Alertmanager on ``port``, its notification log and silences next to ``config``."""
    argv = alertmanager_argv(binary, config, config.parent / "alertmanager-data", port)
    return spawn(stack, name, argv, logs, port)


def alertmanager_config(directory: Path, webhook_url: str) -> tuple[Path, Path]:
    """The test copy of alertmanager.yml with its webhook at ``webhook_url``, and the token file.

    The info alerts of these tests reach the webhook only, so Slack and email point at ports
    where nothing listens.
    """
    return write_alertmanager_config(directory, webhook_url, free_port(), free_port())


def spawn_receiver(
    stack: contextlib.ExitStack, logs: Path, directory: Path, token_file: Path, port: int
) -> Service:
    argv = receiver_argv(port, directory / "receiver-data", token_file)
    return spawn(stack, "receiver", argv, logs, port)


def logs_dir(directory: Path) -> Path:
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs


# --- rules and alerts ---------------------------------------------------------------------------


def alert_group(alertname: str, models: Sequence[str], hold: str) -> dict[str, Any]:
    """A rule group whose alert is true from the start for each of ``models``."""
    expr = " or ".join(f'label_replace(vector(1), "model", "{m}", "", "")' for m in models)
    rule = {
        "alert": alertname,
        "expr": expr,
        "for": hold,
        # component: the label every alert of the project carries, which alertmanager.yml's
        # model-exporter route matches (an alert without it goes to the site's default receiver).
        "labels": {"severity": "info", "component": "model-exporter"},
        "annotations": {"summary": f"{alertname}: a fault test alert"},
    }
    return {"name": alertname, "rules": [rule]}


def write_rules(path: Path, *groups: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"groups": list(groups)}, sort_keys=False), encoding="utf-8")
    return path


def firing_since(prometheus: PrometheusAPI, alertname: str, after: float) -> dict[str, float]:
    """Models whose ``alertname`` has a firing sample newer than ``after``, with that sample's
    time."""
    selector = f'ALERTS{{alertname="{alertname}", alertstate="firing"}}'
    stamps = prometheus.values(f"timestamp({selector})", time.time())
    return {dict(k).get("model", ""): v for k, v in stamps.items() if v > after}


def newest_sample(prometheus: PrometheusAPI, selector: str) -> float:
    """The time of the newest sample of ``selector``'s series (0 if it has none)."""
    return max(prometheus.values(f"timestamp({selector})", time.time()).values(), default=0.0)


def for_state(prometheus: PrometheusAPI, alertname: str) -> float:
    """When Prometheus considers ``alertname`` active since (``ALERTS_FOR_STATE``, Unix seconds)."""
    values = prometheus.values(f'ALERTS_FOR_STATE{{alertname="{alertname}"}}', time.time())
    assert len(values) == 1, values
    return next(iter(values.values()))


def webhook_alert(
    alertname: str, model: str, starts_at: datetime, ends_at: datetime | None = None
) -> dict[str, Any]:
    """An alert as Prometheus posts it to Alertmanager; with ``ends_at`` in the past, resolved."""
    alert: dict[str, Any] = {
        "labels": {
            "alertname": alertname,
            "model": model,
            "severity": "info",
            "component": "model-exporter",
        },
        "annotations": {"summary": f"{alertname}: a fault test alert"},
        "startsAt": starts_at.isoformat(),
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    return alert


def report(what: str, value: object) -> None:
    """Print a measured delay or count (shown with ``pytest -s``); it is observed, not asserted:
    the machine's load decides it."""
    print(f"measured {what}: {value}")


# --- what reached the receiver ------------------------------------------------------------------


def wait_stored(
    receiver: Service, alertname: str, expected: Collection[tuple[str, str]], *, why: str = ""
) -> float:
    """Wait until the receiver stored ``alertname`` for every (model, status) in ``expected``;
    returns when it saw them."""

    def probe() -> float:
        stored = receiver_alerts(receiver.url, alertname=alertname)
        return time.time() if {(a["model"], a["status"]) for a in stored} >= set(expected) else 0.0

    seen_at = poll(probe, timeout=WAIT_SECONDS, interval=0.1)
    stored = receiver_alerts(receiver.url, alertname=alertname)
    assert seen_at, (
        f"{alertname}: expected {sorted(expected)} at the receiver, stored "
        f"{sorted((a['model'], a['status']) for a in stored)}\n{why}"
    )
    return seen_at


def assert_stored_once(
    receiver: Service, alertname: str, expected: Collection[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Each (model, status) of ``expected`` is stored exactly once, and counted once."""
    stored = receiver_alerts(receiver.url, alertname=alertname)
    assert sorted((a["model"], a["status"]) for a in stored) == sorted(expected), stored
    by_key = Counter((a["fingerprint"], a["startsAt"], a["status"]) for a in stored)
    assert set(by_key.values()) == {1}, by_key
    counted = endpoint_metric(receiver.url, "model_alert_notifications_total", alertname=alertname)
    assert counted == len(expected), (alertname, counted)
    return stored


def wait_requests(
    proxy: FaultProxy, groups: int, where: Callable[[ProxiedRequest], bool], at_least: int = 1
) -> dict[str, list[ProxiedRequest]]:
    """Wait until each of ``groups`` alert groups made ``at_least`` requests matching ``where``;
    returns those requests by group key."""

    def probe() -> dict[str, list[ProxiedRequest]]:
        found: dict[str, list[ProxiedRequest]] = {}
        for request in proxy.requests():
            if where(request):
                found.setdefault(request.group_key, []).append(request)
        enough = len(found) == groups and min(len(r) for r in found.values()) >= at_least
        return found if enough else {}

    found = poll(probe, timeout=WAIT_SECONDS, interval=0.05)
    seen = Counter((r.group_key, r.mode.value, r.answered) for r in proxy.requests())
    assert found, f"not every one of {groups} groups made {at_least} such requests; seen {seen}"
    return found


def retry_gaps(requests: dict[str, list[ProxiedRequest]]) -> list[float]:
    """Seconds between consecutive attempts of each group."""
    return [
        round(later.at - earlier.at, 2)
        for attempts in requests.values()
        for earlier, later in itertools.pairwise(attempts)
    ]


# --- 1 and 4: one exporter, one Prometheus, either restarted ------------------------------------


class ScrapedExporter:
    """``model-exporter serve`` scraped by a Prometheus that also evaluates the project's rules
    and two always-true alerts (one ``for:`` below the grace period, one at or above it)."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        directory: Path,
        prometheus_binary: str,
        client: httpx.Client,
    ) -> None:
        self._stack = stack
        self._logs = logs_dir(directory)
        self._prometheus_binary = prometheus_binary
        self._starts: Counter[str] = Counter()
        self.client = client
        self.exporter_port = free_port()
        model_config = write_setup(_mkdir(directory / "model"), "regression")
        self._exporter_argv = exporter_argv(
            model_config, self.exporter_port, directory / "exporter-data"
        )
        rules = [
            *write_rule_copies(directory / "project-rules"),
            write_rules(
                directory / "fault-rules" / "faults.yml",
                alert_group("FaultShortFor", ["short"], SHORT_FOR),
                alert_group("FaultLongFor", ["long"], LONG_FOR),
            ),
        ]
        config = scraping_config({EXPORTER_JOB: [self.address]}, rules)
        self._prometheus_config = _mkdir(directory / "prometheus") / "prometheus.yml"
        self._prometheus_config.write_text(yaml.safe_dump(config, sort_keys=False))
        self._prometheus_port = free_port()
        # Both start together: each takes seconds (Python imports; Prometheus's 5 s before it
        # applies the scrape targets it discovered).
        self.exporter = self.start_exporter(wait=False)
        self.prometheus_service, self.prometheus = self.start_prometheus()
        self.exporter.wait_ready("/healthz")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.exporter_port}"

    @property
    def api(self) -> ModelAPI:
        return ModelAPI(self.client, self.exporter.url)

    def _name(self, process: str) -> str:
        self._starts[process] += 1
        return f"{process}-{self._starts[process]}"

    def start_exporter(self, *, wait: bool = True) -> Service:
        """(Re)start the exporter on its port with its data directory."""
        name = self._name("exporter")
        self.exporter = spawn(
            self._stack, name, self._exporter_argv, self._logs, self.exporter_port
        )
        if wait:
            self.exporter.wait_ready("/healthz")
        return self.exporter

    def start_prometheus(self) -> tuple[Service, PrometheusAPI]:
        """(Re)start Prometheus on its port with its TSDB directory."""
        self.prometheus_service, self.prometheus = start_prometheus(
            self._stack, self._logs, self._prometheus_binary, self._prometheus_config,
            self._prometheus_port, self._name("prometheus"),
        )  # fmt: skip
        return self.prometheus_service, self.prometheus

    def exporter_count(self) -> float:
        """The predictions the running exporter counted, from its own /metrics."""
        return endpoint_metric(self.exporter.url, "model_predictions_total", model=MODEL)

    def wait_scraped(self, count: float, after: float = 0.0) -> float:
        """Wait until Prometheus's newest sample of the prediction counter sums to ``count`` and
        is newer than ``after``; returns the sample's time."""

        def probe() -> float:
            now = time.time()
            value = self.prometheus.values(f"sum({PREDICTIONS})", now)
            stamp = self.prometheus.values(f"max(timestamp({PREDICTIONS}))", now)
            newest = stamp.get(frozenset(), 0.0)
            return newest if value == {frozenset(): count} and newest > after else 0.0

        stamp = poll(probe, timeout=WAIT_SECONDS, interval=0.2)
        assert stamp, (
            f"Prometheus never scraped {count} predictions after {after}: "
            f"{self.prometheus.values(f'sum({PREDICTIONS})')}\n{self.exporter.log_tail()}"
        )
        return stamp

    def predict(self, count: int) -> None:
        instances = [{"miles": float(1 + i % 9), "zone": ZONES[i % 3]} for i in range(count)]
        assert len(self.api.predict(instances)) == count


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def over_window(prometheus: PrometheusAPI, function: str, start: float, end: float) -> float:
    """``sum(function(predictions[end - start]))`` evaluated at ``end``: the window is exactly
    [start, end] (times in seconds, to the millisecond, as Prometheus stores them)."""
    window_ms = round((end - start) * 1000)
    result = prometheus.values(f"sum({function}({PREDICTIONS}[{window_ms}ms]))", end)
    assert list(result) == [frozenset()], result
    return result[frozenset()]


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, prometheus_binary: str
) -> Iterator[ScrapedExporter]:
    directory = tmp_path_factory.mktemp("faults-scraped")
    with contextlib.ExitStack() as stack, httpx.Client(timeout=30) as client:
        setup = ScrapedExporter(stack, directory, prometheus_binary, client)
        up = poll(lambda: setup.prometheus.targets_up().get(setup.address) == 1, timeout=30)
        assert up, f"the exporter was never scraped: {setup.prometheus.targets_up()}"
        yield setup


def test_prometheus_restart_keeps_series_and_rules_and_alerts_fire_again(
    scraped: ScrapedExporter,
) -> None:
    prometheus = scraped.prometheus
    before_count = scraped.exporter_count() + 120
    scraped.predict(120)
    before = scraped.wait_scraped(before_count)
    rule = f'model:model_predictions:rate5m{{model="{MODEL}"}}'
    rule_before = poll(lambda: newest_sample(prometheus, rule) > before, timeout=WAIT_SECONDS)
    assert rule_before, f"{rule} was not evaluated: {prometheus.values(rule)}"
    firing = poll(
        lambda: (
            firing_since(prometheus, "FaultShortFor", 0)
            and firing_since(prometheus, "FaultLongFor", 0)
        ),
        timeout=WAIT_SECONDS,
    )
    assert firing, f"the test alerts never fired: {prometheus.values('ALERTS')}"
    active_since = {name: for_state(prometheus, name) for name in ("FaultShortFor", "FaultLongFor")}

    stopped_at = time.time()
    stop(scraped.prometheus_service.process)
    scraped.predict(80)  # while nothing scrapes: the exporter keeps counting
    restarting_at = time.time()
    _, prometheus = scraped.start_prometheus()

    # What was scraped before the restart is still there, sample for sample.
    assert prometheus.values(f"sum({PREDICTIONS})", before) == {frozenset(): before_count}
    assert prometheus.values(f"max(timestamp({PREDICTIONS}))", before) == {frozenset(): before}
    # Scraping goes on, and the predictions made while Prometheus was down are counted: the
    # exporter's counter kept them, increase() over the gap (a window from the last sample before
    # it to the first after it, so nothing is extrapolated) finds all 80.
    after = scraped.wait_scraped(before_count + 80, after=restarting_at)
    assert over_window(prometheus, "increase", before, after) == pytest.approx(80, abs=1e-9)

    # Recording rules evaluate again, and their series keeps the samples from before.
    evaluated = poll(lambda: newest_sample(prometheus, rule) > restarting_at, timeout=WAIT_SECONDS)
    assert evaluated, (
        f"{rule} not evaluated after the restart\n{scraped.prometheus_service.log_tail()}"
    )
    window = math.ceil(time.time() - stopped_at) + 30
    [series] = prometheus.query(f"{rule}[{window}s]")
    stamps = [float(stamp) for stamp, _ in series["values"]]
    assert min(stamps) < stopped_at < restarting_at < max(stamps), stamps

    # Both alerts fire again. The one whose for: is at least the grace period got its for: state
    # back from ALERTS_FOR_STATE (active since before the restart); the shorter one did not: it
    # became active again after the restart and waited its for: anew.
    fired_again = poll(
        lambda: (
            firing_since(prometheus, "FaultShortFor", restarting_at)
            and firing_since(prometheus, "FaultLongFor", restarting_at)
        ),
        timeout=WAIT_SECONDS,
    )
    assert fired_again, f"the alerts did not fire again: {prometheus.values('ALERTS')}"
    assert for_state(prometheus, "FaultLongFor") == active_since["FaultLongFor"]
    assert for_state(prometheus, "FaultShortFor") >= math.floor(restarting_at)


def test_increase_and_rate_count_every_prediction_across_an_exporter_sigkill(
    scraped: ScrapedExporter,
) -> None:
    prometheus = scraped.prometheus
    start_count = scraped.exporter_count()
    first = scraped.wait_scraped(start_count)  # a sample from before this test's traffic
    scraped.predict(150)
    before_kill = scraped.wait_scraped(start_count + 150, after=first)

    scraped.exporter.kill()  # SIGKILL: no shutdown code runs
    down = poll(lambda: prometheus.targets_up().get(scraped.address) == 0, timeout=WAIT_SECONDS)
    assert down, f"Prometheus did not see the exporter go down: {prometheus.targets_up()}"
    scraped.start_exporter()
    assert scraped.exporter_count() == 0, "the restarted exporter's counters did not start at 0"
    # The restarted exporter is scraped at 0 before any traffic, so the drop is in Prometheus.
    restarted = scraped.wait_scraped(0, after=before_kill)
    scraped.predict(70)
    last = scraped.wait_scraped(70, after=restarted)

    true_count = 150 + 70
    window_ms = round((last - first) * 1000)
    resets = prometheus.values(f"sum(resets({PREDICTIONS}[{window_ms}ms]))", last)
    assert resets == {frozenset(): 1.0}, resets
    # A window from the first sample to the last: increase() adds the value before the drop to
    # what came after it (150 + 70), and with samples at both ends it extrapolates nothing.
    # Without the reset handling it would be last - first = 70 - start_count.
    aligned = over_window(prometheus, "increase", first, last)
    assert aligned == pytest.approx(true_count, abs=1e-9)

    # The same question as a dashboard asks it, the window not aligned with the scrapes: it
    # starts EDGE s before the first sample and ends EDGE s after the last. increase()
    # extrapolates the sampled span S = last - first to the window's edges when the gap is under
    # 1.1 average scrape intervals (EDGE is), at the start no further than where the counter
    # would have been 0. So it returns true_count * (S + start + end) / S with start, end in
    # [0, EDGE]: at least the true count, at most true_count * (1 + 2 * EDGE / S).
    edge = 0.5
    # Prometheus stores milliseconds; a difference of two float seconds near 1.7e9 is off by up
    # to a few 1e-7 s, enough to put the exact upper bound below what Prometheus computes.
    span = round((last - first) * 1000) / 1000
    extrapolated = over_window(prometheus, "increase", first - edge, last + edge)
    assert true_count - 1e-9 <= extrapolated <= true_count * (1 + 2 * edge / span) * (1 + 1e-9), (
        extrapolated,
        span,
    )
    # rate() is the same computation per second of the window.
    rate = over_window(prometheus, "rate", first - edge, last + edge)
    assert rate * (span + 2 * edge) == pytest.approx(extrapolated, rel=1e-6)
    report(
        "exporter_restart_increase",
        {
            "true": true_count,
            "aligned_window": aligned,
            "unaligned_window": extrapolated,
            "span_s": span,
        },
    )


# --- 2. Alertmanager down while alerts fire -----------------------------------------------------


class AlertPath:
    """Prometheus -> Alertmanager -> (a recording proxy) -> receiver, Alertmanager not started:
    nothing listens on its port until :meth:`start_alertmanager`."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        directory: Path,
        prometheus_binary: str,
        alertmanager_binary: str,
        rules: Path,
    ) -> None:
        self._stack = stack
        self._logs = logs_dir(directory)
        self._alertmanager_binary = alertmanager_binary
        self._alertmanager_port = free_port()
        self._alertmanager_starts = 0
        receiver_port = free_port()
        self.proxy = FaultProxy(f"http://127.0.0.1:{receiver_port}")  # forwards, records
        serve_in_background(stack, self.proxy)
        self._alertmanager_config, token_file = alertmanager_config(
            directory / "alertmanager", self.proxy.url
        )
        self.receiver = spawn_receiver(stack, self._logs, directory, token_file, receiver_port)
        config = scraping_config(
            {}, [rules], alertmanagers=[f"127.0.0.1:{self._alertmanager_port}"]
        )
        prometheus_config = _mkdir(directory / "prometheus") / "prometheus.yml"
        prometheus_config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.prometheus_service, self.prometheus = start_prometheus(
            stack, self._logs, prometheus_binary, prometheus_config, free_port(), "prometheus"
        )
        self.receiver.wait_ready("/readyz")

    def start_alertmanager(self) -> Service:
        """(Re)start Alertmanager on its port with its storage directory; ready when returned."""
        self._alertmanager_starts += 1
        alertmanager = spawn_alertmanager(
            self._stack, self._logs, self._alertmanager_binary, self._alertmanager_config,
            self._alertmanager_port, f"alertmanager-{self._alertmanager_starts}",
        )  # fmt: skip
        alertmanager.wait_ready("/-/ready")
        return alertmanager

    def reload_prometheus(self) -> None:
        """Make Prometheus read its configuration and rule files again."""
        os.kill(self.prometheus_service.process.pid, signal.SIGHUP)

    def notifier_count(self, outcome: str) -> float:
        """Prometheus's own count of alerts it could not send: ``errors`` (failed sends to an
        Alertmanager) or ``dropped`` (alerts given up on)."""
        return endpoint_metric(self.prometheus.url, f"prometheus_notifications_{outcome}_total")

    def wait_firing(self, alertname: str, models: Collection[str]) -> None:
        def probe() -> bool:
            return set(firing_since(self.prometheus, alertname, 0)) == set(models)

        fired = poll(probe, timeout=WAIT_SECONDS)
        assert fired, f"{alertname} did not fire for {models}: {self.prometheus.values('ALERTS')}"

    def wait_unsent(self, outcome: str, more_than: float) -> None:
        unsent = poll(lambda: self.notifier_count(outcome) > more_than, timeout=WAIT_SECONDS)
        assert unsent, f"Prometheus {outcome} {self.notifier_count(outcome)} alerts, not more"


def test_alerts_fired_while_alertmanager_is_down_all_reach_the_receiver(
    tmp_path: Path, prometheus_binary: str, alertmanager_binary: str
) -> None:
    rules = tmp_path / "rules" / "faults.yml"
    first_wave = alert_group("FaultBeforeStart", FAULT_MODELS, SHORT_FOR)
    write_rules(rules, first_wave)
    with contextlib.ExitStack() as stack:
        path = AlertPath(stack, tmp_path, prometheus_binary, alertmanager_binary, rules)
        receiver = path.receiver
        # The alerts fire; Prometheus fails to send them, more than once, and drops them.
        path.wait_firing("FaultBeforeStart", FAULT_MODELS)
        path.wait_unsent("errors", more_than=1)
        path.wait_unsent("dropped", more_than=len(FAULT_MODELS) - 1)

        alertmanager = path.start_alertmanager()
        up_at = time.time()
        expected = [(model, "firing") for model in FAULT_MODELS]
        stored_at = wait_stored(receiver, "FaultBeforeStart", expected, why=alertmanager.log_tail())
        stored = assert_stored_once(receiver, "FaultBeforeStart", expected)
        # They are the alerts that fired during the outage (startsAt is when Prometheus fired
        # them), not a later firing.
        starts = [datetime.fromisoformat(a["startsAt"]).timestamp() for a in stored]
        assert max(starts) < up_at, (starts, up_at)

        # Alertmanager crashes while they fire, and another alert fires meanwhile. The crash
        # loses its notification log (written at shutdown and every 15 minutes), so once back it
        # notifies the first alerts again: the receiver acknowledges them without storing them.
        old_groups = {r.group_key for r in path.proxy.requests()}
        alertmanager.kill()
        write_rules(rules, first_wave, alert_group("FaultDuringOutage", ["fault-d"], SHORT_FOR))
        path.reload_prometheus()
        path.wait_firing("FaultDuringOutage", ["fault-d"])
        path.wait_unsent("dropped", more_than=path.notifier_count("dropped"))

        restarted_at = time.time()
        alertmanager = path.start_alertmanager()
        back_at = time.time()
        outage = [("fault-d", "firing")]
        outage_stored_at = wait_stored(
            receiver, "FaultDuringOutage", outage, why=alertmanager.log_tail()
        )
        renotified = wait_requests(
            path.proxy,
            len(old_groups),
            lambda r: r.at > restarted_at and r.group_key in old_groups and r.answered == 200,
        )
        for requests in renotified.values():
            assert requests[0].upstream_body == {"received": 1, "stored": 0, "duplicates": 1}
        assert_stored_once(receiver, "FaultBeforeStart", expected)
        assert_stored_once(receiver, "FaultDuringOutage", outage)
        report("alertmanager_started_to_stored_s", round(stored_at - up_at, 2))
        report("alertmanager_restarted_to_stored_s", round(outage_stored_at - back_at, 2))


# --- 3. the receiver down or failing ------------------------------------------------------------


def test_notifications_wait_for_a_receiver_that_is_down_and_arrive_once_it_is_up(
    tmp_path: Path, alertmanager_binary: str
) -> None:
    logs = logs_dir(tmp_path)
    alertname = "FaultReceiverDown"
    with contextlib.ExitStack() as stack:
        receiver_port = free_port()  # nothing listens here until the receiver starts
        am_config, token_file = alertmanager_config(
            tmp_path / "alertmanager", f"http://127.0.0.1:{receiver_port}"
        )
        alertmanager = spawn_alertmanager(
            stack, logs, alertmanager_binary, am_config, free_port(), "alertmanager"
        )
        alertmanager.wait_ready("/-/ready")
        now = datetime.now(timezone.utc)
        post_alerts(alertmanager.url, [webhook_alert(alertname, m, now) for m in FAULT_MODELS])

        def failed(metric: str) -> float:
            name = f"alertmanager_{metric}_failed_total"
            return endpoint_metric(alertmanager.url, name, integration="webhook")

        # Each group's flush retries its post (connection refused) for max(group_interval, 10 s)
        # and then fails; the outage outlasts that, so what delivers the alerts in the end is a
        # later flush, which finds nothing in the notification log and posts again.
        gave_up = poll(lambda: failed("notifications") >= len(FAULT_MODELS), timeout=WAIT_SECONDS)
        assert gave_up, f"{failed('notifications')} failed flushes\n{alertmanager.log_tail()}"
        assert failed("notification_requests") > 2 * len(FAULT_MODELS)

        receiver = spawn_receiver(stack, logs, tmp_path, token_file, receiver_port)
        receiver.wait_ready("/readyz")
        up_at = time.time()
        expected = [(model, "firing") for model in FAULT_MODELS]
        stored_at = wait_stored(receiver, alertname, expected, why=alertmanager.log_tail())
        assert_stored_once(receiver, alertname, expected)
        report("receiver_up_to_stored_s", round(stored_at - up_at, 2))
        report("failed_posts_while_down", failed("notification_requests"))


def test_notifications_retried_through_errors_and_lost_acks_are_stored_once(
    tmp_path: Path, alertmanager_binary: str
) -> None:
    logs = logs_dir(tmp_path)
    alertname = "FaultReceiverFailing"
    groups = len(FAULT_MODELS)
    with contextlib.ExitStack() as stack:
        receiver_port = free_port()
        proxy = FaultProxy(f"http://127.0.0.1:{receiver_port}", Mode.REFUSE)
        serve_in_background(stack, proxy)
        am_config, token_file = alertmanager_config(tmp_path / "alertmanager", proxy.url)
        receiver = spawn_receiver(stack, logs, tmp_path, token_file, receiver_port)
        alertmanager = spawn_alertmanager(
            stack, logs, alertmanager_binary, am_config, free_port(), "alertmanager"
        )
        receiver.wait_ready("/readyz")
        alertmanager.wait_ready("/-/ready")
        starts_at = datetime.now(timezone.utc)
        post_alerts(
            alertmanager.url, [webhook_alert(alertname, m, starts_at) for m in FAULT_MODELS]
        )
        expected = [(model, "firing") for model in FAULT_MODELS]

        # 500 without reaching the receiver: Alertmanager retries each group.
        refused = wait_requests(proxy, groups, lambda r: r.mode is Mode.REFUSE, at_least=2)
        assert receiver_alerts(receiver.url, alertname=alertname) == []
        # The receiver stores the notification but Alertmanager gets a 500 (a lost answer).
        proxy.mode = Mode.LOSE_ACK
        wait_requests(proxy, groups, lambda r: r.mode is Mode.LOSE_ACK)
        assert_stored_once(receiver, alertname, expected)
        # Answers get through: Alertmanager's next retry is a duplicate the receiver acknowledges
        # without storing it again.
        fixed_at = time.time()
        proxy.mode = Mode.FORWARD
        acked = wait_requests(proxy, groups, lambda r: r.mode is Mode.FORWARD and r.answered == 200)
        for requests in acked.values():
            assert requests[0].upstream_body == {"received": 1, "stored": 0, "duplicates": 1}
        assert_stored_once(receiver, alertname, expected)

        # The resolved notifications go through the same retries.
        proxy.mode = Mode.REFUSE
        ends_at = datetime.now(timezone.utc)
        post_alerts(
            alertmanager.url,
            [webhook_alert(alertname, m, starts_at, ends_at) for m in FAULT_MODELS],
        )

        def resolved_refused(request: ProxiedRequest) -> bool:
            return request.mode is Mode.REFUSE and {s for _, s in request.alerts} == {"resolved"}

        wait_requests(proxy, groups, resolved_refused, at_least=2)
        proxy.mode = Mode.FORWARD
        expected += [(model, "resolved") for model in FAULT_MODELS]
        wait_stored(receiver, alertname, expected, why=alertmanager.log_tail())
        assert_stored_once(receiver, alertname, expected)

        report("refused_retry_gaps_s", retry_gaps(refused))
        report("fixed_to_acked_s", max(round(r[0].at - fixed_at, 2) for r in acked.values()))
