"""``model-exporter demo``: traffic for running example services, with faults on a schedule.

For each ``--target`` (a running ``model-exporter serve``) the generator reads ``/healthz`` to learn
the model's task and sends matching requests to ``/predict`` as Poisson arrivals at ``--rate``
requests per second: intent utterances with a channel for a classifier
(:func:`exporter.demo_models.intent.synthetic_requests`), taxi trips for a regressor
(:func:`exporter.demo_models.fare.synthetic_trips`). Each answered prediction gets its ground truth
posted to ``/feedback`` after an exponential delay (mean ``--feedback-delay``, capped at
:data:`FEEDBACK_DELAY_CAP` times the mean); ground truth not yet due when the run ends is dropped,
the way real labels that arrive after a dashboard is read are.

Scenarios (the injections start after :data:`WARMUP_SECONDS` of steady traffic):

``steady``
    Normal traffic, drawn like the reference profiles of ``examples/``.
``drift``
    Inputs shift: trips :data:`DRIFT_MILES_FACTOR` times longer; texts followed by long pasted
    passages of words the model never saw, and a phone-heavy channel mix. The drifted features'
    PSI passes 0.25.
``degrade``
    Ground truth breaks: actual fares become ``true x 1.8 + 6`` (MAE far above $5), actual intents
    are another intent 60% of the time (accuracy drops).
``errors``
    20% of requests carry ``"_fault": "error"``: the demo models raise, the service answers 500.
``latency``
    30% of requests carry ``"_fault": "slow"``: the demo models sleep 0.25 to 0.5 s.
``all``
    Steady, drift, degrade, errors and latency in turn, each a fifth of ``--duration``.

The run ends by itself after ``--duration`` seconds (or on Ctrl-C) and prints a summary.
:func:`run_demo` is the same as a library call that returns the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO, TypedDict

import httpx
import numpy as np
import pandas as pd

from exporter.demo_models import FAULT_KEY, fare, intent
from exporter.errors import ExporterError

__all__ = [
    "SCENARIOS",
    "DemoSummary",
    "Phase",
    "TargetError",
    "TargetSummary",
    "add_arguments",
    "describe",
    "run",
    "run_demo",
    "schedule",
]

Scenario = Literal["steady", "drift", "degrade", "errors", "latency", "all"]
SCENARIOS: tuple[Scenario, ...] = ("steady", "drift", "degrade", "errors", "latency", "all")
#: The phases of ``all``, in order.
ALL_PHASES = ("steady", "drift", "degrade", "errors", "latency")
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


# -- schedule --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """``name`` (``steady`` or an injection) runs from ``start`` to ``end`` seconds."""

    name: str
    start: float
    end: float


def schedule(scenario: str, duration: float, warmup_seconds: float = WARMUP_SECONDS) -> list[Phase]:
    """The phases of a scenario over ``duration`` seconds.

    ``all`` cuts the duration into five equal phases; any other injection follows
    ``warmup_seconds`` of steady traffic (fewer if the run is shorter) and lasts to the end.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if not duration > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if scenario == "steady":
        return [Phase("steady", 0.0, duration)]
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


_TRAFFIC: dict[str, Callable[[np.random.Generator], Traffic]] = {
    "classification": IntentTraffic,
    "regression": FareTraffic,
}


# -- targets ---------------------------------------------------------------------------------------


@dataclass
class _Target:
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


def _probe(url: str, index: int, seed: int) -> _Target:
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
    if not isinstance(body, dict) or body.get("task") not in _TRAFFIC:
        raise TargetError(
            f"{health} did not answer like a model service (no task 'classification' or "
            "'regression' in its JSON)"
        )
    task = str(body["task"])
    arrivals, choices, delays, content = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(4)
    )
    return _Target(
        url=url,
        model=str(body.get("model", "?")),
        version=str(body.get("version", "?")),
        task=task,
        traffic=_TRAFFIC[task](content),
        arrivals=arrivals,
        choices=choices,
        delays=delays,
    )


# -- console ---------------------------------------------------------------------------------------


class _Console:
    """Timeline lines, and a progress line redrawn in place on a terminal."""

    def __init__(self, out: TextIO | None, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = False

    def line(self, text: str) -> None:
        if self.out is None:
            return
        if self._drawn:
            self.out.write("\r\x1b[K")
            self._drawn = False
        self.out.write(text + "\n")
        self.out.flush()

    def progress(self, text: str) -> None:
        if self.out is None:
            return
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
            self._drawn = True
        else:
            self.line(text)

    def close(self) -> None:
        if self.out is not None and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _stamp(seconds: float) -> str:
    return f"[{seconds:6.1f}s]"


# -- the run ---------------------------------------------------------------------------------------


class _Run:
    def __init__(
        self,
        targets: list[_Target],
        phases: list[Phase],
        duration: float,
        rate: float,
        feedback_delay: float,
        max_in_flight: int,
        console: _Console,
    ) -> None:
        self.targets = targets
        self.phases = phases
        self.duration = duration
        self.rate = rate
        self.feedback_delay = feedback_delay
        self.max_in_flight = max_in_flight
        self.console = console
        self.interrupted = False
        self.elapsed = 0.0
        self._sequence = 0
        self._started = 0.0
        self._announced: set[tuple[Phase, str]] = set()

    # time

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self._started

    async def _sleep_until(self, second: float) -> None:
        delay = second - self._now()
        if delay > 0:
            await asyncio.sleep(delay)

    def phase_at(self, second: float) -> str:
        for phase in self.phases:
            if phase.start <= second < phase.end:
                return phase.name
        return self.phases[-1].name

    # main

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._requests = asyncio.Semaphore(self.max_in_flight)
        self._posts = asyncio.Semaphore(self.max_in_flight)
        self._in_flight: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=2 * self.max_in_flight)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
            self._client = client
            background = [
                asyncio.create_task(self._timeline()),
                asyncio.create_task(self._progress()),
                *(asyncio.create_task(self._feedback(t)) for t in self.targets),
            ]
            try:
                await asyncio.gather(*(self._arrivals(t) for t in self.targets))
                await _cancel(background)
                await self._settle()
                # Ground truth due by now is posted; what is not due yet is dropped below.
                for target in self.targets:
                    await self._post_due(target)
                await self._settle()
            except asyncio.CancelledError:
                self.interrupted = True
                raise
            finally:
                await _cancel([*background, *self._in_flight])
                self.elapsed = self._now()
                for target in self.targets:
                    target.feedback_dropped += len(target.pending)
                    target.pending.clear()

    # predictions

    async def _arrivals(self, target: _Target) -> None:
        second = 0.0
        while True:
            second += float(target.arrivals.exponential(1 / self.rate))
            if second >= self.duration:
                return
            await self._sleep_until(second)
            # Every random draw happens here, in arrival order, so a seed fixes the whole run.
            phase = self.phase_at(second)
            request = target.traffic.next(phase)
            actual = target.traffic.actual(request.truth, phase, target.choices)
            fault = self._fault(target, phase)
            if fault is not None:
                request.features[FAULT_KEY] = fault
            delay = 0.0
            if self.feedback_delay > 0:
                drawn = float(target.delays.exponential(self.feedback_delay))
                delay = min(drawn, FEEDBACK_DELAY_CAP * self.feedback_delay)
            await self._requests.acquire()
            target.phases[phase] += 1
            if fault is not None:
                target.faults[fault] += 1
            task = asyncio.create_task(self._predict(target, request.features, actual, delay))
            self._in_flight.add(task)
            task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._requests.release()

    def _fault(self, target: _Target, phase: str) -> str | None:
        if phase == "errors" and target.choices.random() < ERROR_SHARE:
            return "error"
        if phase == "latency" and target.choices.random() < SLOW_SHARE:
            return "slow"
        return None

    async def _predict(
        self, target: _Target, features: dict[str, Any], actual: Any, delay: float
    ) -> None:
        target.requests += 1
        try:
            response = await self._client.post(f"{target.url}/predict", json={"features": features})
        except httpx.HTTPError:
            target.transport_errors += 1
            target.errors += 1
            return
        target.status[response.status_code] += 1
        try:
            prediction_id = response.json()["prediction_id"] if response.is_success else None
        except (ValueError, KeyError, TypeError):
            prediction_id = None
        if not isinstance(prediction_id, str):
            target.errors += 1
            return
        target.ok += 1
        self._sequence += 1
        heapq.heappush(target.pending, (self._now() + delay, self._sequence, prediction_id, actual))

    # ground truth

    async def _feedback(self, target: _Target) -> None:
        while True:
            await self._post_due(target)
            wait = FEEDBACK_POLL_SECONDS
            if target.pending:
                wait = min(wait, max(target.pending[0][0] - self._now(), 0.0))
            await asyncio.sleep(wait)

    async def _post_due(self, target: _Target) -> None:
        """Post every ground truth that is due, at most ``max_in_flight`` at a time."""
        while target.pending and target.pending[0][0] <= self._now():
            # Taken off the heap only once a slot is free: a cancelled wait loses nothing.
            await self._posts.acquire()
            _, _, prediction_id, actual = heapq.heappop(target.pending)
            task = asyncio.create_task(self._post(target, prediction_id, actual))
            self._in_flight.add(task)
            task.add_done_callback(self._post_done)

    def _post_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._posts.release()

    async def _post(self, target: _Target, prediction_id: str, actual: Any) -> None:
        try:
            response = await self._client.post(
                f"{target.url}/feedback", json={"prediction_id": prediction_id, "actual": actual}
            )
        except httpx.HTTPError:
            target.feedback_failed += 1
            return
        except asyncio.CancelledError:
            target.feedback_dropped += 1  # the run was stopped; it may not have arrived
            raise
        if response.status_code == 200:
            target.feedback_sent += 1
        else:
            target.feedback_failed += 1

    async def _settle(self) -> None:
        """Wait (bounded) for the answers and posts under way; a slow fault takes 0.5 s."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=REQUEST_TIMEOUT_SECONDS + 1)

    # console

    def _announce(self, second: float, phase: Phase, what: str) -> None:
        if (phase, what) in self._announced:
            return
        self._announced.add((phase, what))
        for target in self.targets:
            detail = target.traffic.describe(phase.name) if what == "start" else "stopped"
            self.console.line(f"{_stamp(second)} {phase.name}: {detail} on {target.model}")

    async def _timeline(self) -> None:
        """Announce each injection as it starts and stops; :meth:`finish_timeline` the last stop."""
        events = [(p.start, p, "start") for p in self.phases if p.name != "steady"]
        events += [(p.end, p, "stop") for p in self.phases if p.name != "steady"]
        events.sort(key=lambda e: (e[0], e[2] == "start"))
        for second, phase, what in events:
            if second >= self.duration:
                return
            await self._sleep_until(second)
            self._announce(second, phase, what)

    def finish_timeline(self) -> None:
        """Announce the stop of the injection running when the run ended (or was stopped)."""
        for phase in self.phases:
            if (phase, "start") in self._announced:
                self._announce(min(phase.end, self.elapsed), phase, "stop")

    def progress_text(self) -> str:
        sent = sum(t.requests for t in self.targets)
        ok = sum(t.ok for t in self.targets)
        errors = sum(t.errors for t in self.targets)
        feedback = sum(t.feedback_sent for t in self.targets)
        elapsed = max(self._now(), 1e-9)
        return (
            f"sent {sent}  ok {ok}  errors {errors}  feedback {feedback}  "
            f"rate {sent / elapsed:.1f}/s"
        )

    async def _progress(self) -> None:
        every = PROGRESS_TTY_SECONDS if self.console.tty else PROGRESS_LOG_SECONDS
        while True:
            await asyncio.sleep(every)
            text = self.progress_text()
            self.console.progress(text if self.console.tty else f"{_stamp(self._now())} {text}")

    def summary(self, scenario: str) -> DemoSummary:
        status: Counter[int] = Counter()
        for target in self.targets:
            status.update(target.status)
        return DemoSummary(
            scenario=scenario,
            seconds=round(self.elapsed, 3),
            interrupted=self.interrupted,
            requests=sum(t.requests for t in self.targets),
            ok=sum(t.ok for t in self.targets),
            errors=sum(t.errors for t in self.targets),
            feedback_sent=sum(t.feedback_sent for t in self.targets),
            feedback_failed=sum(t.feedback_failed for t in self.targets),
            feedback_dropped=sum(t.feedback_dropped for t in self.targets),
            status=dict(sorted(status.items())),
            targets=[t.summary() for t in self.targets],
        )


def run_demo(
    targets: Sequence[str],
    scenario: str = "steady",
    duration: float = 300.0,
    rate: float = 20.0,
    *,
    feedback_delay: float = 5.0,
    seed: int = 0,
    warmup_seconds: float = WARMUP_SECONDS,
    max_in_flight: int = MAX_IN_FLIGHT,
    out: TextIO | None = None,
    tty: bool | None = None,
) -> DemoSummary:
    """Send demo traffic to ``targets`` for ``duration`` seconds and return what happened.

    Parameters
    ----------
    targets : sequence of str
        Base URLs of running services (``http://127.0.0.1:8000``); nothing else is contacted.
    scenario : str
        One of :data:`SCENARIOS`; see the module docstring.
    duration : float
        Seconds of traffic; the run stops by itself (or on Ctrl-C, with ``interrupted`` set).
    rate : float
        Mean requests per second per target (Poisson arrivals).
    feedback_delay : float
        Mean seconds before a prediction's ground truth is posted (exponential, capped at
        :data:`FEEDBACK_DELAY_CAP` times the mean); 0 posts it at once.
    seed : int
        Fixes the requests, the arrival times, the injected faults and the delays.
    warmup_seconds : float
        Steady seconds before a single scenario's injection starts (``all`` ignores it).
    max_in_flight : int
        Requests waiting for an answer at most (and as many ground-truth posts).
    out : text stream, optional
        Where the timeline and progress go; ``None`` prints nothing.
    tty : bool, optional
        Redraw one progress line in place (default: whether ``out`` is a terminal).

    Returns
    -------
    DemoSummary
        Requests sent, answered (``ok``), failed, per HTTP status, ground truth sent and dropped,
        in total and per target.

    Raises
    ------
    TargetError
        A target is unreachable or is not a model service; nothing was sent to any target.
    ValueError
        A bad scenario, duration, rate, delay or concurrency.
    """
    phases = schedule(scenario, duration, warmup_seconds)
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be > 0 and at most {MAX_RATE:g} requests/s, got {rate}")
    if not (feedback_delay >= 0 and math.isfinite(feedback_delay)):
        raise ValueError(f"feedback_delay must be a finite number >= 0, got {feedback_delay}")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    if not targets:
        raise ValueError("no targets")
    urls = [url.rstrip("/") for url in targets]
    probed = [_probe(url, index, seed) for index, url in enumerate(urls)]
    if tty is None:
        tty = out is not None and out.isatty()
    console = _Console(out, tty)
    demo = _Run(probed, phases, duration, rate, feedback_delay, max_in_flight, console)
    try:
        asyncio.run(demo.main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C (or demo-stack's SIGTERM, handled as one): asyncio cancels the run and raises
        # KeyboardInterrupt, or CancelledError when the run's task was cancelled more than once.
        demo.interrupted = True
    finally:
        demo.finish_timeline()
        console.close()
    return demo.summary(scenario)


# -- command line ----------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", action="append", metavar="URL",
        help=f"a running model service; repeat for several (default {DEFAULT_TARGET})",
    )  # fmt: skip
    parser.add_argument(
        "--scenario", default="all", choices=SCENARIOS,
        help="what the traffic injects after 10 s of steady traffic (default: all, in turn)",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=_positive, default=300.0, help="seconds of traffic (default 300)"
    )
    parser.add_argument(
        "--rate", type=_positive, default=20.0,
        help="mean requests per second per target, Poisson arrivals (default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--feedback-delay", type=_non_negative, default=5.0, metavar="SECONDS",
        help="mean delay before a prediction's ground truth is posted (default 5)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """``model-exporter demo``: 0 when the run ends (or is stopped), 2 for an unusable target."""
    targets = args.target or [DEFAULT_TARGET]
    try:
        summary = run_demo(
            targets,
            args.scenario,
            args.duration,
            args.rate,
            feedback_delay=args.feedback_delay,
            seed=args.seed,
            out=sys.stdout,
        )
    except TargetError as exc:
        print(f"model-exporter demo: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"model-exporter demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("model-exporter demo: stopped before any traffic was sent", file=sys.stderr)
        return 0
    print(describe(summary))
    return 0


def describe(summary: DemoSummary) -> str:
    """The run's summary in one line."""
    how = "stopped by Ctrl-C after" if summary["interrupted"] else "done in"
    statuses = ", ".join(f"{code}: {n}" for code, n in summary["status"].items()) or "none"
    return (
        f"{how} {summary['seconds']:.1f} s: sent {summary['requests']}, ok {summary['ok']}, "
        f"errors {summary['errors']} (HTTP {statuses}); ground truth posted "
        f"{summary['feedback_sent']}, refused {summary['feedback_failed']}, "
        f"dropped {summary['feedback_dropped']} (not yet due)"
    )
