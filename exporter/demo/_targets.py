"""The services the demo sends to: what each one answers on ``/healthz`` (its model, version and
task), probed before any traffic, and the summaries the run reports per target."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpx
import numpy as np

from exporter.demo._traffic import HEALTH_TIMEOUT_SECONDS, TRAFFIC_BY_TASK, Traffic
from exporter.errors import ExporterError


class TargetError(ExporterError):
    """A target that cannot be used: unreachable, or not answering ``/healthz`` as a service."""


class TargetSummary(TypedDict):
    url: str
    model: str
    version: str
    task: str
    requests: int
    ok: int
    errors: int
    transport_errors: int
    status: dict[int, int]
    #: Requests sent in each phase of the schedule, in order (``{"steady": 190, "drift": 5810}``).
    phases: dict[str, int]
    faults: dict[str, int]
    feedback_sent: int
    feedback_failed: int
    feedback_dropped: int


class DemoSummary(TypedDict):
    scenario: str
    seconds: float
    interrupted: bool
    requests: int
    ok: int
    errors: int
    feedback_sent: int
    feedback_failed: int
    feedback_dropped: int
    status: dict[int, int]
    targets: list[TargetSummary]


# -- targets ---------------------------------------------------------------------------------------


@dataclass
class Target:
    url: str
    model: str
    version: str
    task: str
    traffic: Traffic
    arrivals: np.random.Generator
    choices: np.random.Generator
    delays: np.random.Generator
    status: Counter[int] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    ok: int = 0
    errors: int = 0
    transport_errors: int = 0
    feedback_sent: int = 0
    feedback_failed: int = 0
    feedback_dropped: int = 0
    #: Ground truth waiting to be posted: (due second, sequence, prediction id, actual).
    pending: list[tuple[float, int, str, Any]] = field(default_factory=list)

    def summary(self) -> TargetSummary:
        return TargetSummary(
            url=self.url,
            model=self.model,
            version=self.version,
            task=self.task,
            requests=self.requests,
            ok=self.ok,
            errors=self.errors,
            transport_errors=self.transport_errors,
            status=dict(sorted(self.status.items())),
            phases=dict(self.phases),
            faults=dict(self.faults),
            feedback_sent=self.feedback_sent,
            feedback_failed=self.feedback_failed,
            feedback_dropped=self.feedback_dropped,
        )


def probe(url: str, index: int, seed: int) -> Target:
    """Read a target's ``/healthz`` and pick its traffic; :class:`TargetError` when unusable."""
    health = f"{url}/healthz"
    try:
        response = httpx.get(health, timeout=HEALTH_TIMEOUT_SECONDS, trust_env=False)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise TargetError(f"{url}: not an http:// or https:// URL") from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise TargetError(
            f"cannot reach {health} ({reason}); is `model-exporter serve` running there?"
        ) from None
    if response.status_code != 200:
        raise TargetError(f"{health} answered HTTP {response.status_code}, expected 200")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("task") not in TRAFFIC_BY_TASK:
        raise TargetError(
            f"{health} did not answer like a model service (no task 'classification' or "
            "'regression' in its JSON)"
        )
    task = str(body["task"])
    arrivals, choices, delays, content = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(4)
    )
    return Target(
        url=url,
        model=str(body.get("model", "?")),
        version=str(body.get("version", "?")),
        task=task,
        traffic=TRAFFIC_BY_TASK[task](content),
        arrivals=arrivals,
        choices=choices,
        delays=delays,
    )
