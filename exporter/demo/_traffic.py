"""What the demo sends: the schedule of phases, and the requests and ground truth of each kind of
model (intent classifier, fare regressor), with the faults each phase injects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from exporter.demo_models import FAULT_KEY, fare, intent

Scenario = Literal["steady", "drift", "degrade", "errors", "latency", "canary", "all"]
SCENARIOS: tuple[Scenario, ...] = (
    "steady", "drift", "degrade", "errors", "latency", "canary", "all",
)  # fmt: skip
#: The phases of ``all``, in order. ``canary`` is not among them: a canary is a deployment (the
#: service's config, from its start), not a fault traffic can start and stop, and in ``degrade``
#: the overcharging canary would even look better than the primary (the broken actuals are
#: higher than the true fares).
ALL_PHASES = ("steady", "drift", "degrade", "errors", "latency")
#: Scenarios whose "injection" is the service's config rather than the traffic: they run from the
#: first request, without steady warm-up, and send steady traffic with its ground truth.
DEPLOYMENTS = ("canary",)
DEFAULT_TARGET = "http://127.0.0.1:8000"

#: Steady traffic before a single scenario's injection starts, seconds.
WARMUP_SECONDS = 10.0
#: Share of requests carrying ``_fault: error`` in ``errors``, ``_fault: slow`` in ``latency``.
ERROR_SHARE = 0.2
SLOW_SHARE = 0.3
#: ``drift`` makes trips this many times longer.
DRIFT_MILES_FACTOR = 2.5
#: ``degrade``: actual fare = true fare x scale + offset; actual intent wrong this often.
DEGRADED_FARE_SCALE = 1.8
DEGRADED_FARE_OFFSET = 6.0
DEGRADED_WRONG_SHARE = 0.6
#: A ground truth is never delayed more than this many times the mean delay.
FEEDBACK_DELAY_CAP = 5.0
#: Requests (and, separately, feedback posts) in flight per run at most.
MAX_IN_FLIGHT = 64
#: Highest accepted ``--rate``; far above what the demo needs, low enough to stay bounded.
MAX_RATE = 5_000.0
REQUEST_TIMEOUT_SECONDS = 10.0
HEALTH_TIMEOUT_SECONDS = 5.0
#: How often the progress line is redrawn on a terminal, and printed otherwise.
PROGRESS_TTY_SECONDS = 0.5
PROGRESS_LOG_SECONDS = 10.0
#: How often due ground truth is looked for.
FEEDBACK_POLL_SECONDS = 0.05
#: Requests generated at a time per target and kind of traffic.
POOL_CHUNK = 500


# -- schedule --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """``name`` (``steady`` or an injection) runs from ``start`` to ``end`` seconds."""

    name: str
    start: float
    end: float


def schedule(scenario: str, duration: float, warmup_seconds: float = WARMUP_SECONDS) -> list[Phase]:
    """The phases of a scenario over ``duration`` seconds.

    ``all`` cuts the duration into five equal phases; ``canary`` is one phase over the whole
    run (its canary serves from the start); any other injection follows ``warmup_seconds`` of
    steady traffic (fewer if the run is shorter) and lasts to the end.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if not duration > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if scenario == "steady":
        return [Phase("steady", 0.0, duration)]
    if scenario in DEPLOYMENTS:
        return [Phase(scenario, 0.0, duration)]
    if scenario == "all":
        step = duration / len(ALL_PHASES)
        return [Phase(name, i * step, (i + 1) * step) for i, name in enumerate(ALL_PHASES)]
    switch = min(max(warmup_seconds, 0.0), duration)
    phases = [Phase("steady", 0.0, switch), Phase(scenario, switch, duration)]
    return [p for p in phases if p.end > p.start]


# -- what is sent ----------------------------------------------------------------------------------


@dataclass
class Request:
    """One generated request and the true value of its answer."""

    features: dict[str, Any]
    truth: Any


class Traffic(Protocol):
    """Requests for one kind of model."""

    def next(self, phase: str) -> Request: ...

    def actual(self, truth: Any, phase: str, rng: np.random.Generator) -> Any: ...

    def describe(self, injection: str) -> str: ...


class _Pool:
    """Rows generated ``POOL_CHUNK`` at a time, each chunk with its own seed from ``rng``."""

    def __init__(self, make: Callable[[int], pd.DataFrame], rng: np.random.Generator) -> None:
        self._make = make
        self._rng = rng
        self._rows: list[dict[str, Any]] = []
        self._next = 0

    def take(self) -> dict[str, Any]:
        if self._next >= len(self._rows):
            chunk = self._make(int(self._rng.integers(2**31)))
            self._rows = [{str(k): v for k, v in r.items()} for r in chunk.to_dict("records")]
            self._next = 0
        row = self._rows[self._next]
        self._next += 1
        return row


_FAULT_DESCRIPTIONS = {
    "errors": f"{ERROR_SHARE:.0%} of requests with {FAULT_KEY}=error",
    "latency": f"{SLOW_SHARE:.0%} of requests with {FAULT_KEY}=slow (0.25-0.5 s)",
    # The traffic is steady; what differs is the service (examples/fare/monitor-canary.yml).
    "canary": "steady traffic and ground truth, for the candidate versions of the service's "
    "config (if any) to be compared with its primary",
}


class IntentTraffic:
    """Customer utterances with a channel; the truth is the intent they were written for."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._intents = intent.intents()
        self._normal = _Pool(lambda s: intent.synthetic_requests(POOL_CHUNK, s), rng)
        self._shifted = _Pool(lambda s: intent.synthetic_requests(POOL_CHUNK, s, shift=True), rng)

    def next(self, phase: str) -> Request:
        row = (self._shifted if phase == "drift" else self._normal).take()
        return Request({"text": row["text"], "channel": row["channel"]}, row["intent"])

    def actual(self, truth: Any, phase: str, rng: np.random.Generator) -> Any:
        if phase == "degrade" and rng.random() < DEGRADED_WRONG_SHARE:
            others = [i for i in self._intents if i != truth]
            return others[int(rng.integers(len(others)))]
        return truth

    def describe(self, injection: str) -> str:
        if injection == "drift":
            return "long pasted texts of unknown words, channel mostly phone"
        if injection == "degrade":
            return f"{DEGRADED_WRONG_SHARE:.0%} of actual intents wrong"
        return _FAULT_DESCRIPTIONS[injection]


class FareTraffic:
    """Synthetic taxi trips; the truth is the trip's fare."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._normal = _Pool(lambda s: fare.synthetic_trips(POOL_CHUNK, s), rng)
        self._shifted = _Pool(
            lambda s: fare.synthetic_trips(POOL_CHUNK, s, shift=DRIFT_MILES_FACTOR), rng
        )

    def next(self, phase: str) -> Request:
        row = (self._shifted if phase == "drift" else self._normal).take()
        features = {name: row[name] for name in fare.FEATURES}
        return Request(features, row["fare"])

    def actual(self, truth: Any, phase: str, rng: np.random.Generator) -> Any:
        if phase == "degrade":
            return round(truth * DEGRADED_FARE_SCALE + DEGRADED_FARE_OFFSET, 2)
        return truth

    def describe(self, injection: str) -> str:
        if injection == "drift":
            return f"trip_miles x{DRIFT_MILES_FACTOR:g}"
        if injection == "degrade":
            return f"actual fares = true x{DEGRADED_FARE_SCALE:g} + {DEGRADED_FARE_OFFSET:g}"
        return _FAULT_DESCRIPTIONS[injection]


TRAFFIC_BY_TASK: dict[str, Callable[[np.random.Generator], Traffic]] = {
    "classification": IntentTraffic,
    "regression": FareTraffic,
}
