"""What ``make demo`` checks while it runs: the alerts each injected fault raises.

:class:`AlertWatcher` polls Prometheus's alerts while the demo traffic runs, prints each alert as
it goes pending and firing, and reads which notifications the webhook receiver stored (the end of
the path Prometheus -> Alertmanager -> receiver). :func:`verdict` then holds what was seen against
:data:`EXPECTED_ALERTS`: for every injection and every model, one of the expected alerts must
have fired after the injection started, and its notification must have been stored.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import httpx

from exporter.demo._targets import TargetSummary
from exporter.demo._traffic import Phase

#: Alerts that show an injection, by injection and model task: one of them must fire per model.
EXPECTED_ALERTS: dict[str, dict[str, tuple[str, ...]]] = {
    "drift": {
        "classification": ("ModelFeatureDriftPSI", "ModelFeatureMeanShift", "ModelOutputDrift"),
        "regression": ("ModelFeatureDriftPSI", "ModelFeatureMeanShift", "ModelOutputDrift"),
    },
    "degrade": {
        "classification": ("ModelAccuracyDrop", "ModelAccuracyLow"),
        "regression": ("ModelMAEHigh",),
    },
    "errors": {
        "classification": ("ModelHighErrorRatio",),
        "regression": ("ModelHighErrorRatio",),
    },
    "latency": {
        "classification": ("ModelHighLatencyP95",),
        "regression": ("ModelHighLatencyP95",),
    },
    # Only the fare service runs a canary (examples/fare/monitor-canary.yml).
    "canary": {"regression": ("ModelCandidateWorse",)},
}
#: The canary of examples/fare/monitor-canary.yml: the fare plus 15%, worse on MAE.
CANARY_VERSION = "2024.12-overcharge"
#: Labels the expected alert of an injection must also carry: in ``canary``, the comparison of
#: the canary itself on MAE (the shadow of the same config is as good as the primary, and its
#: alert would not be the canary's).
EXPECTED_LABELS: dict[str, dict[str, str]] = {
    "canary": {"version": CANARY_VERSION, "metric": "mae"},
}
#: Seconds an injection must last for its alerts to fire in the demo: the 5-minute rate windows
#: must pass the threshold, then the demo's shortened ``for:`` (30 s), then an evaluation and a
#: scrape (5 s each). Measured with ``make demo`` (2026-12-07): drift fired 53 to 129 s after its
#: injection, degrade 72 to 96 s, errors 106 to 112 s, latency 83 to 87 s.
MIN_INJECTION_SECONDS = 120.0
#: The same for injections that need longer. ``canary``: ModelCandidateWorse compares versions
#: only once each has candidate_min_samples (300) outcomes in the hour, and a canary answering
#: 10% of the demo's 20 requests/s gets 2 a second: 150 s, then the ground truth's delay (5 s
#: on average), the 30 s ``for:`` and a scrape and an evaluation.
MIN_SECONDS_BY_INJECTION = {"canary": 240.0}
#: How often Prometheus's alerts and the receiver's store are read.
POLL_SECONDS = 2.0
#: After the traffic ends, how long to wait for notifications of alerts that fired (Alertmanager
#: waits ``group_wait`` before a group's first notification; the demo sets 10 s).
DELIVERY_WAIT_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 5.0


class AlertKey(NamedTuple):
    """What tells two alerts apart in the demo; a label the alert does not carry is ``""``.
    ``metric`` is the comparison of a candidate version (ModelCandidateWorse)."""

    alertname: str
    severity: str
    model: str
    feature: str
    version: str = ""
    metric: str = ""


def alert_key(labels: Mapping[str, str]) -> AlertKey:
    return AlertKey(*(labels.get(name, "") for name in AlertKey._fields))


@dataclass
class SeenAlert:
    """One episode of an alert: from its first evaluation as pending (seconds into the run), to
    firing, to leaving Prometheus's list (resolved, or no longer pending)."""

    key: AlertKey
    pending_at: float
    firing_at: float | None = None
    ended_at: float | None = None
    value: str = ""


@dataclass
class AlertWatcher:
    """Polls Prometheus's ``/api/v1/alerts`` and the receiver's ``GET /alerts`` in a thread.

    ``say`` prints a line (each alert's first pending and first firing); ``clock`` gives the
    seconds since the traffic started. Every request is bounded by a timeout, and an unreachable
    server is only retried at the next poll: watching never stops the demo.
    """

    prometheus: str
    receiver: str | None
    receiver_token: str | None
    say: Callable[[str], None]
    clock: Callable[[], float]
    interval: float = POLL_SECONDS
    #: Every episode, in the order they began; ``_open`` holds the ones not ended yet.
    seen: list[SeenAlert] = field(default_factory=list)
    _open: dict[AlertKey, SeenAlert] = field(default_factory=dict)
    stored: set[AlertKey] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="alert-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A signal can interrupt start() between making the thread and starting it.
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(timeout=2 * HTTP_TIMEOUT_SECONDS + self.interval)

    def _loop(self) -> None:
        with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as client:
            while not self._stop.is_set():
                self.poll(client)
                self._stop.wait(self.interval)

    def poll(self, client: httpx.Client) -> None:
        """One reading of both servers; what cannot be read now is read at the next poll."""
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            response = client.get(f"{self.prometheus}/api/v1/alerts")
            if response.status_code == 200:
                self._note_alerts(response.json()["data"]["alerts"])
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            self._note_stored(client)

    def _note_alerts(self, alerts: Iterable[dict[str, object]]) -> None:
        now = self.clock()
        current: dict[AlertKey, dict[str, object]] = {}
        for alert in alerts:
            labels = alert.get("labels")
            if isinstance(labels, dict):
                current[alert_key({str(k): str(v) for k, v in labels.items()})] = alert
        with self._lock:
            for key, alert in current.items():
                episode = self._open.get(key)
                value = _short_value(alert.get("value"))
                if episode is None:
                    episode = self._open[key] = SeenAlert(key, now, value=value)
                    self.seen.append(episode)
                    if alert.get("state") != "firing":
                        self.say(f"{_stamp(now)} alert pending: {describe_key(key)} ({value})")
                episode.value = value
                if alert.get("state") == "firing" and episode.firing_at is None:
                    episode.firing_at = now
                    self.say(f"{_stamp(now)} ALERT FIRING: {describe_key(key)} ({value})")
            for key in [k for k in self._open if k not in current]:
                episode = self._open.pop(key)
                episode.ended_at = now
                if episode.firing_at is not None:
                    self.say(f"{_stamp(now)} alert resolved: {describe_key(key)}")

    def _note_stored(self, client: httpx.Client) -> None:
        if self.receiver is None or self.receiver_token is None:
            return
        response = client.get(
            f"{self.receiver}/alerts",
            params={"status": "firing", "limit": 1000},
            headers={"Authorization": f"Bearer {self.receiver_token}"},
        )
        if response.status_code != 200:
            return
        keys = {alert_key(a.get("labels", {})) for a in response.json()["alerts"]}
        with self._lock:
            self.stored |= keys

    def wait_for_delivery(self, timeout: float = DELIVERY_WAIT_SECONDS) -> None:
        """Wait (bounded) until every alert that fired has a stored notification."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    self._note_stored(client)
                with self._lock:
                    fired = {s.key for s in self.seen if s.firing_at is not None}
                    if fired <= self.stored:
                        return
                time.sleep(1.0)

    def snapshot(self) -> tuple[list[SeenAlert], set[AlertKey]]:
        with self._lock:
            return [SeenAlert(**vars(s)) for s in self.seen], set(self.stored)


@dataclass(frozen=True)
class Detection:
    """What one injection raised on one model."""

    phase: Phase
    model: str
    expected: tuple[str, ...]
    #: Alerts of the expected names that went pending after the injection started.
    alerts: tuple[SeenAlert, ...]
    stored: frozenset[AlertKey]

    @property
    def fired(self) -> bool:
        return any(a.firing_at is not None for a in self.alerts)

    @property
    def delivered(self) -> bool:
        return any(a.firing_at is not None and a.key in self.stored for a in self.alerts)


def detections(
    phases: Sequence[Phase],
    targets: Sequence[TargetSummary],
    seen: Sequence[SeenAlert],
    stored: set[AlertKey],
) -> list[Detection]:
    """For each injection and model, the expected alerts that went pending after it started."""
    found = []
    for phase in phases:
        for target in targets:
            expected = EXPECTED_ALERTS.get(phase.name, {}).get(target["task"], ())
            if not expected:
                continue
            labels = EXPECTED_LABELS.get(phase.name, {}).items()
            matched = tuple(
                sorted(
                    (
                        s
                        for s in seen
                        if s.key.alertname in expected
                        and s.key.model == target["model"]
                        and s.pending_at >= phase.start
                        and all(getattr(s.key, name) == value for name, value in labels)
                    ),
                    key=lambda s: (s.firing_at is None, s.firing_at or 0.0, s.key),
                )
            )
            found.append(Detection(phase, target["model"], expected, matched, frozenset(stored)))
    return found


def report(found: Sequence[Detection], checked: bool) -> tuple[str, bool]:
    """The end-of-run table and whether every injection was caught (and its alert stored)."""
    if not checked:
        return "Alerts were not checked: Prometheus and Alertmanager are not installed.", True
    if not found:
        return "No fault was injected, so no alert was expected.", True
    lines = ["Alerts raised by each injected fault (times from the injection's start):"]
    missing = []
    for detection in found:
        phase = detection.phase
        head = f"  {phase.name:<8} at {phase.start:5.0f} s on {detection.model:<8}"
        if not detection.fired:
            names = " or ".join(detection.expected) + _labelled(phase.name)
            lines.append(f"{head} NOT CAUGHT: expected {names} within {_span(phase)}")
            missing.append(f"{names} on {detection.model} ({phase.name})")
            continue
        for index, (name, severity, features, alerts) in enumerate(_grouped(detection.alerts)):
            first = min(alerts, key=lambda a: a.firing_at if a.firing_at is not None else 1e18)
            pending = _after(first.pending_at, phase)
            firing = _after(first.firing_at, phase) if first.firing_at is not None else "-"
            stored = any(a.key in detection.stored for a in alerts if a.firing_at is not None)
            where = f" {features}" if features else ""
            receipt = "stored by the receiver" if stored else "not stored by the receiver"
            if not stored and severity == "warning" and _critical_fired(detection, alerts):
                # Alertmanager's inhibit rule: the critical of the same alert, model and feature
                # makes the warning redundant, so it is never sent.
                receipt = "inhibited by its critical (not sent)"
            if first.firing_at is None:
                receipt = "did not fire"
            lead = head if index == 0 else " " * len(head)
            lines.append(
                f"{lead} {name} {severity}{where}: pending {pending}, firing {firing}, {receipt}"
            )
        if not detection.delivered:
            missing.append(f"notification of {detection.expected[0]} on {detection.model}")
    caught = sum(d.fired for d in found)
    delivered = sum(d.delivered for d in found)
    lines.append(
        f"Result: {caught} of {len(found)} injections raised an expected alert; "
        f"{delivered} of {len(found)} reached the receiver."
    )
    if missing:
        lines.append("Missing: " + "; ".join(missing) + ".")
    return "\n".join(lines), not missing


def false_alarms(phases: Sequence[Phase], seen: Sequence[SeenAlert]) -> list[SeenAlert]:
    """Alerts that fired while every model got steady traffic (before the first injection)."""
    injected = [p.start for p in phases if p.name != "steady"]
    first = min(injected, default=float("inf"))
    return [s for s in seen if s.firing_at is not None and s.firing_at < first]


def min_seconds(injection: str) -> float:
    """How long ``injection`` must last for its alerts to fire in the demo."""
    return MIN_SECONDS_BY_INJECTION.get(injection, MIN_INJECTION_SECONDS)


def too_short(phases: Sequence[Phase]) -> list[Phase]:
    """Injections shorter than :func:`min_seconds`: their alerts may not fire."""
    return [
        p for p in phases if p.name in EXPECTED_ALERTS and p.end - p.start < min_seconds(p.name)
    ]


def _labelled(injection: str) -> str:
    """The labels an injection's alert must carry, as `` (version=..., metric=...)``."""
    labels = EXPECTED_LABELS.get(injection)
    return f" ({', '.join(f'{k}={v}' for k, v in labels.items())})" if labels else ""


def _grouped(
    alerts: Iterable[SeenAlert],
) -> list[tuple[str, str, str, list[SeenAlert]]]:
    """Alerts of one name and severity on one line, their features listed."""
    groups: dict[tuple[str, str], list[SeenAlert]] = {}
    for alert in alerts:
        groups.setdefault((alert.key.alertname, alert.key.severity), []).append(alert)
    rows = []
    for (name, severity), members in groups.items():
        features = sorted({_where(a.key) for a in members if _where(a.key)})
        shown = ", ".join(features[:4]) + (f" +{len(features) - 4}" if len(features) > 4 else "")
        rows.append((name, severity, f"({shown})" if shown else "", members))
    return rows


def _critical_fired(detection: Detection, warnings: Sequence[SeenAlert]) -> bool:
    """Whether the critical of every one of these warnings (same alert, model, feature) fired."""
    fired = {a.key for a in detection.alerts if a.firing_at is not None}
    return all(w.key._replace(severity="critical") in fired for w in warnings)


def _after(second: float | None, phase: Phase) -> str:
    return "-" if second is None else f"+{second - phase.start:.0f} s"


def _span(phase: Phase) -> str:
    return f"its {phase.end - phase.start:.0f} s"


def _stamp(seconds: float) -> str:
    return f"[{seconds:6.1f}s]"


def _where(key: AlertKey) -> str:
    """What in the model the alert is about: its feature, or a candidate's comparison."""
    if key.metric:
        return f"{key.version} {key.metric}"
    return key.feature


def describe_key(key: AlertKey) -> str:
    where = f" feature={key.feature}" if key.feature else ""
    if key.metric:  # a candidate's comparison: which version, on what
        where += f" version={key.version} metric={key.metric}"
    return f"{key.alertname} {key.severity or '-'} model={key.model or '-'}{where}"


def _short_value(value: object) -> str:
    try:
        return f"value {float(str(value)):.4g}"
    except ValueError:
        return f"value {value}"
