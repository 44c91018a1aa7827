"""One run of the demo: Poisson arrivals per target, ground truth posted after its delay, the
progress line, and the summary (:func:`run_demo`)."""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

import httpx

from exporter.demo._targets import DemoSummary, Target, probe
from exporter.demo._traffic import (
    ERROR_SHARE,
    FEEDBACK_DELAY_CAP,
    FEEDBACK_POLL_SECONDS,
    MAX_IN_FLIGHT,
    MAX_RATE,
    PROGRESS_LOG_SECONDS,
    PROGRESS_TTY_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
    SLOW_SHARE,
    WARMUP_SECONDS,
    Phase,
    schedule,
)
from exporter.demo_models import FAULT_KEY

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
        targets: list[Target],
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

    async def _arrivals(self, target: Target) -> None:
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

    def _fault(self, target: Target, phase: str) -> str | None:
        if phase == "errors" and target.choices.random() < ERROR_SHARE:
            return "error"
        if phase == "latency" and target.choices.random() < SLOW_SHARE:
            return "slow"
        return None

    async def _predict(
        self, target: Target, features: dict[str, Any], actual: Any, delay: float
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

    async def _feedback(self, target: Target) -> None:
        while True:
            await self._post_due(target)
            wait = FEEDBACK_POLL_SECONDS
            if target.pending:
                wait = min(wait, max(target.pending[0][0] - self._now(), 0.0))
            await asyncio.sleep(wait)

    async def _post_due(self, target: Target) -> None:
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

    async def _post(self, target: Target, prediction_id: str, actual: Any) -> None:
        body = {"prediction_id": prediction_id, "actual": actual}
        try:
            try:
                response = await self._client.post(f"{target.url}/feedback", json=body)
            except httpx.TransportError:
                # Once more on a fresh connection: a kept-alive one the server closed for idling
                # as the post went out fails without an answer. Feedback is idempotent (the same
                # outcome again is answered "duplicate"), so a post that did arrive counts once.
                response = await self._client.post(f"{target.url}/feedback", json=body)
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
    probed = [probe(url, index, seed) for index, url in enumerate(urls)]
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
