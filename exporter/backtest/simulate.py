"""Simulated prediction logs for the example models, with faults injected on a schedule.

:func:`simulate` makes the traffic of ``examples/fare`` (the taxi-fare regressor) or
``examples/intent`` (the intent classifier) over ``hours`` hours from ``start``, as the log that a
backtest replays through the monitor with a simulated clock. ``--simulate SCENARIO`` of
``model-exporter backtest`` calls it.

The log format
--------------
A :class:`pandas.DataFrame`, one row per prediction call, sorted by ``time`` (the CLI saves it as
CSV or Parquet). Columns, in this order:

``time``
    Float seconds since the epoch (UTC) when the call was made.
the raw features
    Named as the service receives them: ``trip_miles``, ``trip_seconds``, ``straight_line_km``,
    ``hour`` (fare); ``text``, ``channel`` (intent). See :data:`RAW_FEATURES`.
``prediction``
    The model's answer: float dollars (fare) or the intent label (intent); missing when the call
    failed.
``confidence``
    Float in [0, 1], the posterior of the predicted intent (intent); missing for fare and for
    failed calls.
``latency_seconds``
    Float, the call's inference time.
``error``
    The exception class name when the call failed (``"DemoModelError"``), else missing.
``actual``
    The ground truth that will arrive for this prediction, or missing when none arrives.
``actual_time``
    Float seconds since the epoch when that ground truth arrives; missing when ``actual`` is. It
    is always after ``time`` and may be after the end of the log.
``phase``
    ``"stable"``, or the scenario's name for calls the fault acts on (the replay ignores it).

Missing values are ``NaN`` in float columns and ``None``/``NaN`` in text columns (pandas picks
the text dtype): test them with :func:`pandas.isna`.

Scenarios (:data:`SCENARIOS`)
-----------------------------
``stable``
    Inputs drawn like the example's reference, Poisson arrivals at ``rate`` calls a second,
    :data:`BASELINE_ERROR_SHARE` of calls failing and lognormal latencies of a few milliseconds.
``realistic``
    A city's day: arrivals are a non-homogeneous Poisson process whose rate follows
    :data:`exporter.demo_models.fare.HOURLY_DEMAND` over the UTC clock hour, scaled so a day's
    mean rate is ``rate``; a fare request's ``hour`` is the clock hour of its call (so durations
    and fares follow it). Over a 5 minute or 1 hour window the ``hour`` feature then holds one
    value, as it would in production.
``drift``, ``moderate-drift``
    Inputs shift so the most drifted input's population PSI against the reference is about 0.30
    or 0.12 (the factors and shares of :mod:`exporter.backtest.faults`).
``mae`` (fare), ``degrade`` (fare and intent)
    Ground truth goes wrong: actual fares are the true fare plus :data:`MAE_FARE_OFFSET` dollars;
    :data:`DEGRADED_WRONG_SHARE` of actual intents are another intent. ``mae`` is a regression
    metric, so it is refused for intent. The fault hits the ground truth that *arrives* while it
    lasts (a tariff that changes at drop-off, a labelling rule that changes): the model's error is
    visible from the first affected outcome on. A change that hits the *predictions* made after
    a moment shows in the outcomes only as their truth arrives, so its detection waits for the
    truth delay too (trip durations here: minutes to half an hour).
``errors``
    :data:`FAULT_ERROR_SHARE` of calls fail (no prediction, no ground truth).
``latency``
    :data:`SLOW_SHARE` of calls take :data:`SLOW_FACTOR` times ``latency_threshold`` (times a
    uniform 1.0 to 1.1), so the p95 latency is about three times the threshold.

A fault starts ``inject_after`` seconds after ``start`` (half way through the log when not given)
and, when ``recover_after`` is given, stops then: traffic is stable again. ``stable`` and
``realistic`` have no fault and ignore both.

Ground truth comes for ``truth_share`` of the answered calls, never for a failed one: a fare when
the trip ends (``time + trip_seconds`` plus 1 to 10 s), an intent after an exponential delay with a
mean of 10 minutes, capped at an hour. ``actual`` is the true answer, corrupted only by ``mae`` and
``degrade``.

How it is made
--------------
The same ``seed`` gives the same log. Each part of it (arrivals, inputs, failures, latencies, the
calls a fault hits, ground truth) has its own random stream, so for one seed a fault log has the
same calls as the ``stable`` log and differs only where the fault acts. Fare inputs come from
:func:`~exporter.demo_models.fare.synthetic_trips` and are predicted in one vectorised call of the
fitted model (the same cents as :func:`~exporter.demo_models.fare.predict`). Intent requests come
from :func:`~exporter.demo_models.intent.synthetic_requests`, one fresh request per call; users
type the same few hundred utterances (only typos make new texts, and a day at 20 calls a second
holds about 30,000 distinct ones), so :func:`~exporter.demo_models.intent.predict` is asked once
per distinct text and its answer reused for every call with that text (once per distinct list of
known words, in fact: the classifier skips unknown words, so a shifted text gets the same answer
as its text without the pasted words, from the same arithmetic).
:func:`fault_psi` gives the population PSI of a scenario's inputs against the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from exporter.backtest import traffic
from exporter.backtest.faults import (
    BASELINE_ERROR_SHARE,
    BASELINE_LATENCY_MEDIAN_SECONDS,
    BASELINE_LATENCY_SIGMA,
    DEGRADED_WRONG_SHARE,
    ERROR_NAME,
    FARE_DRIFT,
    FAULT_ERROR_SHARE,
    INTENT_DRIFT,
    MAE_FARE_OFFSET,
    SLOW_FACTOR,
    SLOW_JITTER,
    SLOW_SHARE,
)
from exporter.backtest.traffic import (
    EXAMPLES,
    RAW_FEATURES,
    Content,
    Example,
    check_example,
    config_path,
    input_psi,
)
from exporter.demo_models import intent

__all__ = [
    "EXAMPLES",
    "RAW_FEATURES",
    "SCENARIOS",
    "Example",
    "SimulatedLog",
    "config_path",
    "fault_psi",
    "input_psi",
    "log_columns",
    "scenarios",
    "simulate",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

SCENARIOS = (
    "stable",
    "realistic",
    "drift",
    "moderate-drift",
    "mae",
    "degrade",
    "errors",
    "latency",
)
#: Scenarios without a fault: what false alerts are counted on.
BASELINES = ("stable", "realistic")
#: Scenarios that make sense for some examples only: MAE is a regression metric.
ONLY_FOR: dict[str, tuple[Example, ...]] = {"mae": ("fare",)}
STABLE = "stable"
#: The columns after the raw features, in order.
LOG_TAIL = (
    "prediction",
    "confidence",
    "latency_seconds",
    "error",
    "actual",
    "actual_time",
    "phase",
)

#: Where a fault starts when ``inject_after`` is not given, as a share of the log's length.
DEFAULT_INJECT_SHARE = 0.5
#: Rows :func:`fault_psi` draws: enough that sampling noise (about bins / rows) is negligible.
FAULT_PSI_ROWS = 200_000
#: Refused above this many expected rows: a typo in ``rate`` or ``hours`` would exhaust memory.
MAX_EXPECTED_ROWS = 50_000_000


@dataclass(frozen=True, eq=False)
class SimulatedLog:
    """A simulated prediction log (see the module docstring) and how it was made."""

    frame: pd.DataFrame
    example: Example
    scenario: str
    #: Mean calls per second asked for.
    rate: float
    #: The simulated span, seconds since the epoch: ``[start, end)``.
    start: float
    end: float
    #: When the fault started and stopped (epoch seconds); None without a fault or recovery.
    injected_at: float | None
    recovered_at: float | None
    #: One line on what the fault does, for reports.
    description: str
    #: The example's monitor config, what the replay monitors with.
    config: Path
    seed: int


class _Streams(NamedTuple):
    arrivals: np.random.Generator
    content: np.random.Generator
    shifted: np.random.Generator
    failures: np.random.Generator
    latency: np.random.Generator
    fault: np.random.Generator
    truth: np.random.Generator
    delay: np.random.Generator

    @classmethod
    def spawn(cls, seed: int) -> _Streams:
        children = np.random.SeedSequence(seed).spawn(len(cls._fields))
        return cls(*(np.random.default_rng(child) for child in children))


def scenarios(example: Example) -> tuple[str, ...]:
    """The scenarios that apply to ``example``, in :data:`SCENARIOS` order."""
    check_example(example)
    return tuple(s for s in SCENARIOS if example in ONLY_FOR.get(s, EXAMPLES))


def log_columns(example: Example) -> tuple[str, ...]:
    """The columns of a log of ``example``, in order."""
    check_example(example)
    return ("time", *RAW_FEATURES[example], *LOG_TAIL)


def simulate(
    example: Example,
    scenario: str,
    *,
    rate: float,
    hours: float,
    start: float,
    inject_after: float | None = None,
    recover_after: float | None = None,
    seed: int = 0,
    truth_share: float = 0.5,
    latency_threshold: float | None = None,
) -> SimulatedLog:
    """The prediction log of ``example`` under ``scenario``; see the module docstring.

    ``rate`` is in calls a second, ``hours`` the log's length, ``start`` epoch seconds;
    ``inject_after`` and ``recover_after`` are seconds after ``start``. ``latency_threshold``
    (seconds) defaults to the example config's ``thresholds.latency_p95_seconds``. A bad argument,
    or a scenario that does not apply to the example, raises ``ValueError``.
    """
    _check_scenario(example, scenario)
    _check_positive("rate", rate)
    _check_positive("hours", hours)
    if not math.isfinite(start):
        raise ValueError(f"start must be finite epoch seconds, got {start}")
    if not 0.0 <= truth_share <= 1.0:
        raise ValueError(f"truth_share must be in [0, 1], got {truth_share}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    if latency_threshold is not None:
        _check_positive("latency_threshold", latency_threshold)
    duration = hours * traffic.SECONDS_PER_HOUR
    if rate * duration > MAX_EXPECTED_ROWS:
        raise ValueError(
            f"rate x hours asks for about {rate * duration:,.0f} calls; at most "
            f"{MAX_EXPECTED_ROWS:,} are simulated"
        )
    injected_at, recovered_at = _fault_window(
        scenario, start, duration, inject_after, recover_after
    )
    threshold = latency_threshold
    if scenario == "latency" and threshold is None:
        threshold = traffic.latency_threshold(example)

    streams = _Streams.spawn(seed)
    time = traffic.arrivals(streams.arrivals, rate, start, duration, demand=scenario == "realistic")
    n = time.size
    in_fault = np.zeros(n, dtype=np.bool_)
    if injected_at is not None:
        until = math.inf if recovered_at is None else recovered_at
        in_fault = (time >= injected_at) & (time < until)
    # One draw per call picks the calls the fault hits (shifted, failed, slow or corrupted).
    hit = streams.fault.random(n)
    clock_hours = traffic.clock_hours(time) if scenario == "realistic" else None
    content = _content(example, scenario, in_fault, hit, streams, clock_hours)

    failed = streams.failures.random(n) < BASELINE_ERROR_SHARE
    latency = streams.latency.lognormal(
        math.log(BASELINE_LATENCY_MEDIAN_SECONDS), BASELINE_LATENCY_SIGMA, n
    )
    if scenario == "errors":
        failed |= in_fault & (hit < FAULT_ERROR_SHARE)
    if scenario == "latency" and threshold is not None:
        slow = in_fault & (hit < SLOW_SHARE)
        jitter = streams.fault.uniform(*SLOW_JITTER, int(slow.sum()))
        latency[slow] = SLOW_FACTOR * threshold * jitter
    has_truth = ~failed & (streams.truth.random(n) < truth_share)
    # The fault corrupts the ground truth that arrives while it lasts (module docstring).
    truth_at = time + content.truth_delay
    arrives_in_fault = np.zeros(n, dtype=np.bool_)
    if injected_at is not None:
        until = math.inf if recovered_at is None else recovered_at
        arrives_in_fault = (truth_at >= injected_at) & (truth_at < until)
    corrupt = arrives_in_fault & (hit < _corrupted_share(example, scenario))
    actual = _actual(example, content.truth, corrupt, streams.fault)

    columns: dict[str, Any] = {"time": time, **content.features}
    columns["prediction"] = _blank(content.prediction, failed)
    columns["confidence"] = _blank(content.confidence, failed)
    columns["latency_seconds"] = latency
    error = np.full(n, None, dtype=object)
    error[failed] = ERROR_NAME
    columns["error"] = error
    columns["actual"] = _blank(actual, ~has_truth)
    columns["actual_time"] = np.where(has_truth, truth_at, np.nan)
    phase = np.full(n, STABLE, dtype=object)
    phase[in_fault] = scenario
    columns["phase"] = phase
    return SimulatedLog(
        frame=pd.DataFrame(columns),
        example=example,
        scenario=scenario,
        rate=rate,
        start=start,
        end=start + duration,
        injected_at=injected_at,
        recovered_at=recovered_at,
        description=_describe(example, scenario, rate, threshold),
        config=config_path(example),
        seed=seed,
    )


def fault_psi(
    example: Example, scenario: str, *, rows: int = FAULT_PSI_ROWS, seed: int = 0
) -> dict[str, float]:
    """Population PSI per watched input feature of ``scenario``'s faulty traffic.

    ``rows`` calls are drawn the way :func:`simulate` draws them during the fault (for scenarios
    that leave the inputs alone, and for ``realistic`` over whole days, that is stable traffic)
    and compared with the example's reference by :func:`input_psi`.
    """
    _check_scenario(example, scenario)
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    streams = _Streams.spawn(seed)
    hit = streams.fault.random(rows)
    content = _content(example, scenario, np.ones(rows, dtype=np.bool_), hit, streams, None, False)
    return input_psi(example, pd.DataFrame(content.features))


# -- arguments -------------------------------------------------------------------------------------


def _check_scenario(example: str, scenario: str) -> None:
    check_example(example)
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    allowed = ONLY_FOR.get(scenario, EXAMPLES)
    if example not in allowed:
        takes = [s for s in SCENARIOS if example in ONLY_FOR.get(s, EXAMPLES)]
        raise ValueError(
            f"scenario {scenario!r} does not apply to {example!r} (only to {', '.join(allowed)}); "
            f"{example} takes {', '.join(takes)}"
        )


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _fault_window(
    scenario: str,
    start: float,
    duration: float,
    inject_after: float | None,
    recover_after: float | None,
) -> tuple[float | None, float | None]:
    if scenario in BASELINES:
        return None, None
    inject = duration * DEFAULT_INJECT_SHARE if inject_after is None else inject_after
    if not 0.0 <= inject < duration:
        raise ValueError(f"inject_after must be in [0, {duration:g}) seconds, got {inject}")
    if recover_after is None:
        return start + inject, None
    if not inject < recover_after <= duration:
        raise ValueError(
            f"recover_after must be after inject_after ({inject:g} s) and at most the log's "
            f"{duration:g} s, got {recover_after}"
        )
    return start + inject, start + recover_after


# -- the examples ----------------------------------------------------------------------------------


def _describe(example: Example, scenario: str, rate: float, threshold: float | None) -> str:
    if scenario == "stable":
        return f"no fault: inputs like the reference, Poisson arrivals at {rate:g}/s"
    if scenario == "realistic":
        shaped = "; trips at the clock's hour" if example == "fare" else ""
        return f"no fault: arrivals follow the hourly taxi demand, {rate:g}/s a day{shaped}"
    if scenario in FARE_DRIFT:
        target = "0.30" if scenario == "drift" else "0.12"
        if example == "fare":
            what = f"trips {FARE_DRIFT[scenario]:g} times longer"
        else:
            what = f"{INTENT_DRIFT[scenario]:.1%} of requests long pasted texts, mostly by phone"
        return f"input drift: {what} (most drifted input's PSI about {target})"
    if scenario in ("mae", "degrade"):
        if example == "fare":
            return f"wrong ground truth: actual fares = true fare + ${MAE_FARE_OFFSET:g}"
        return f"wrong ground truth: {DEGRADED_WRONG_SHARE:.0%} of actual intents another intent"
    if scenario == "errors":
        return f"{FAULT_ERROR_SHARE:.0%} of calls fail with {ERROR_NAME}"
    assert threshold is not None
    low, high = (SLOW_FACTOR * threshold * j for j in SLOW_JITTER)
    return (
        f"{SLOW_SHARE:.0%} of calls take {low:g}-{high:g} s "
        f"({SLOW_FACTOR:g} times the {threshold:g} s p95 threshold)"
    )


def _content(
    example: Example,
    scenario: str,
    in_fault: BoolArray,
    hit: FloatArray,
    streams: _Streams,
    clock_hours: IntArray | None,
    answers: bool = True,
) -> Content:
    """Inputs and answers of every call; the fault's drift applies where ``in_fault``."""
    seeds = (int(streams.content.integers(2**63)), int(streams.shifted.integers(2**63)))
    if example == "fare":
        shifted = in_fault if scenario in FARE_DRIFT else np.zeros_like(in_fault)
        return traffic.fare_content(
            shifted, FARE_DRIFT.get(scenario), clock_hours, seeds, streams.delay
        )
    share = INTENT_DRIFT.get(scenario, 0.0)
    return traffic.intent_content(in_fault & (hit < share), seeds, streams.delay, answers)


def _corrupted_share(example: Example, scenario: str) -> float:
    """Share of the fault's calls whose ground truth is wrong."""
    if scenario not in ("mae", "degrade"):
        return 0.0
    # For a regressor ``degrade`` is ``mae``: every actual fare is off.
    return 1.0 if example == "fare" else DEGRADED_WRONG_SHARE


def _actual(
    example: Example, truth: npt.NDArray[Any], corrupt: BoolArray, rng: np.random.Generator
) -> npt.NDArray[Any]:
    """The ground truth as it arrives: ``truth``, wrong where ``corrupt``."""
    actual = truth.copy()
    if example == "fare":
        actual[corrupt] = np.round(truth[corrupt].astype(np.float64) + MAE_FARE_OFFSET, 2)
        return actual
    classes = intent.intents()
    index = {label: i for i, label in enumerate(classes)}
    # Another intent, uniformly: 1 to k-1 places further along the sorted classes.
    steps = rng.integers(1, len(classes), int(corrupt.sum())).tolist()
    wrong = [
        classes[(index[str(t)] + step) % len(classes)]
        for t, step in zip(truth[corrupt].tolist(), steps, strict=True)
    ]
    actual[corrupt] = np.array(wrong, dtype=object)
    return actual


# -- frames ----------------------------------------------------------------------------------------


def _blank(values: npt.NDArray[Any], missing: BoolArray) -> npt.NDArray[Any]:
    """``values`` with ``missing`` rows blanked: NaN in a float column, None in a text one."""
    out = values.copy()
    out[missing] = np.nan if out.dtype.kind == "f" else None
    return out
