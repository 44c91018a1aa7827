"""The example models' traffic: when calls come, their inputs, answers and true answers.

The parts of a simulated prediction log that depend on the example (see
:mod:`exporter.backtest.simulate` for the log format and the scenarios): :func:`arrivals` says
when the calls come; ``fare`` calls are :func:`~exporter.demo_models.fare.synthetic_trips` trips
answered by the fitted fare model, ``intent`` calls are
:func:`~exporter.demo_models.intent.synthetic_requests` requests answered by
:func:`~exporter.demo_models.intent.predict`. :func:`input_psi` compares rows of a log with the
example's reference profile the way the monitor does.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from exporter import stats
from exporter.config import load_config
from exporter.demo_models import fare, intent
from exporter.profile import CategoricalFeature, NumericFeature, ReferenceProfile, category_key

__all__ = [
    "EXAMPLES",
    "EXAMPLES_DIR",
    "RAW_FEATURES",
    "Content",
    "Example",
    "arrivals",
    "check_example",
    "clock_hours",
    "config_path",
    "fare_content",
    "input_psi",
    "intent_content",
    "latency_threshold",
    "reference",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
ObjectArray = npt.NDArray[np.object_]

Example = Literal["fare", "intent"]
EXAMPLES: tuple[Example, ...] = ("fare", "intent")
#: The checkout's example folders (configs and reference profiles; not part of the wheel).
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
#: The request's raw features per example, named as the service receives them.
RAW_FEATURES: dict[Example, tuple[str, ...]] = {
    "fare": fare.FEATURES,
    "intent": ("text", "channel"),
}
#: A fare is known this many seconds after the trip ends (the meter posts it).
FARE_TRUTH_LAG_SECONDS = (1.0, 10.0)
#: An intent's ground truth (a human review) arrives after an exponential delay, capped.
INTENT_TRUTH_MEAN_SECONDS = 600.0
INTENT_TRUTH_CAP_SECONDS = 3600.0
SECONDS_PER_HOUR = 3600.0
HOURS_PER_DAY = 24


def check_example(example: str) -> None:
    """``ValueError`` unless ``example`` is one of :data:`EXAMPLES`."""
    if example not in EXAMPLES:
        raise ValueError(f"example must be one of {EXAMPLES}, got {example!r}")


def config_path(example: Example) -> Path:
    """The example's monitor config: ``examples/<example>/monitor.yml`` in the checkout."""
    check_example(example)
    return EXAMPLES_DIR / example / "monitor.yml"


@cache
def reference(example: Example) -> ReferenceProfile:
    """The reference profile the example's config names (read once)."""
    path = load_config(config_path(example)).reference_path()
    if path is None:
        raise ValueError(f"{config_path(example)} names no reference profile")
    return ReferenceProfile.load(path)


@cache
def latency_threshold(example: Example) -> float:
    """The example config's ``thresholds.latency_p95_seconds``."""
    return float(load_config(config_path(example)).thresholds["latency_p95_seconds"])


class Content(NamedTuple):
    """The inputs of every call, the model's answers and the true answers."""

    features: dict[str, Any]
    prediction: npt.NDArray[Any]
    confidence: FloatArray
    truth: npt.NDArray[Any]
    truth_delay: FloatArray


def fare_content(
    shifted: BoolArray,
    factor: float | None,
    clock_hours: IntArray | None,
    seeds: tuple[int, int],
    delay: np.random.Generator,
) -> Content:
    """Fare calls: synthetic trips, ``shifted`` ones ``factor`` times longer.

    ``clock_hours`` fixes each trip's hour (else it is drawn like the reference's);
    ``seeds`` seed the normal and the shifted trips, ``delay`` draws when the fare is known.
    """
    n = shifted.size
    trips = fare.synthetic_trips(n, seeds[0], hours=clock_hours)
    columns = {name: trips[name].to_numpy(copy=True) for name in (*fare.FEATURES, "fare")}
    moved_rows = int(shifted.sum())
    if moved_rows:
        hours = None if clock_hours is None else clock_hours[shifted]
        moved = fare.synthetic_trips(moved_rows, seeds[1], shift=factor, hours=hours)
        for name, values in columns.items():
            values[shifted] = moved[name].to_numpy()
    seconds = columns["trip_seconds"].astype(np.float64)
    prediction = fare.model().predict_arrays(
        columns["trip_miles"].astype(np.float64),
        seconds,
        columns["straight_line_km"].astype(np.float64),
        columns["hour"].astype(np.float64),
    )
    lag = delay.uniform(*FARE_TRUTH_LAG_SECONDS, n)
    return Content(
        features={name: columns[name] for name in fare.FEATURES},
        prediction=prediction,
        confidence=np.full(n, np.nan),
        truth=columns["fare"].astype(np.float64),
        truth_delay=seconds + lag,
    )


def intent_content(
    shifted: BoolArray, seeds: tuple[int, int], delay: np.random.Generator, answers: bool
) -> Content:
    """Intent calls: synthetic requests, ``shifted`` ones ``synthetic_requests(shift=True)``.

    ``seeds`` seed the normal and the shifted requests, ``delay`` draws when the true intent is
    known. Without ``answers`` the model is not asked (the predictions are left missing).
    """
    n = shifted.size
    requests = intent.synthetic_requests(n, seeds[0])
    columns = {c: requests[c].to_numpy(dtype=object, copy=True) for c in requests.columns}
    moved_rows = int(shifted.sum())
    if moved_rows:
        moved = intent.synthetic_requests(moved_rows, seeds[1], shift=True)
        for name, values in columns.items():
            values[shifted] = moved[name].to_numpy(dtype=object)
    codes, distinct = _factorize(columns["text"])
    # One string object per distinct text: a day of calls repeats a few thousand texts.
    columns["text"] = distinct[codes]
    prediction = np.full(n, None, dtype=object)
    confidence = np.full(n, np.nan)
    if answers:
        labels, posteriors = _intent_answers(distinct.tolist())
        prediction, confidence = labels[codes], posteriors[codes]
    wait = np.minimum(delay.exponential(INTENT_TRUTH_MEAN_SECONDS, n), INTENT_TRUTH_CAP_SECONDS)
    return Content(
        features={"text": columns["text"], "channel": columns["channel"]},
        prediction=prediction,
        confidence=confidence,
        truth=columns["intent"],
        truth_delay=wait,
    )


def _intent_answers(texts: list[str]) -> tuple[ObjectArray, FloatArray]:
    """:func:`~exporter.demo_models.intent.predict` of each text, asked once per known-word list.

    The classifier skips words it never saw in training, so texts that differ only in unknown
    words (typos, pasted foreign text) get the same answer from the same arithmetic: the model is
    asked about the first of them and its answer reused, which makes shifted traffic (every text
    unique) cheap.
    """
    vocabulary = intent.model().vocabulary
    asked: dict[tuple[str, ...], tuple[str, float]] = {}
    labels = np.empty(len(texts), dtype=object)
    posteriors = np.empty(len(texts), dtype=np.float64)
    for i, text in enumerate(texts):
        known = tuple(token for token in intent.tokenize(text) if token in vocabulary)
        answer = asked.get(known)
        if answer is None:
            answer = asked[known] = intent.predict({"text": text})
        labels[i], posteriors[i] = answer
    return labels, posteriors


# -- when ------------------------------------------------------------------------------------------


def arrivals(
    rng: np.random.Generator, rate: float, start: float, duration: float, *, demand: bool
) -> FloatArray:
    """Poisson arrival times in ``[start, start + duration)``, sorted.

    With ``demand`` the rate is piecewise constant over UTC clock hours, ``rate`` times that
    hour's :data:`~exporter.demo_models.fare.HOURLY_DEMAND` over the day's mean demand: each hour
    (or part of one) gets a Poisson count of uniformly placed arrivals.
    """
    end = start + duration
    if not demand:
        lows, highs, rates = np.array([start]), np.array([end]), np.array([rate])
    else:
        first = math.floor(start / SECONDS_PER_HOUR) + 1
        last = math.ceil(end / SECONDS_PER_HOUR)
        cuts = np.arange(first, last, dtype=np.float64) * SECONDS_PER_HOUR
        bounds = np.concatenate(([start], cuts, [end]))
        lows, highs = bounds[:-1], bounds[1:]
        shape = np.asarray(fare.HOURLY_DEMAND, dtype=np.float64)
        rates = rate * shape[clock_hours(lows)] / shape.mean()
    counts = rng.poisson(rates * (highs - lows))
    offsets = rng.random(int(counts.sum())) * np.repeat(highs - lows, counts)
    # Rounding of start + offset can land exactly on the end; the span is half-open.
    times = np.sort(np.repeat(lows, counts) + offsets)
    latest = float(np.nextafter(end, -math.inf))
    return np.asarray(np.minimum(times, latest), dtype=np.float64)


def clock_hours(time: FloatArray) -> IntArray:
    """The UTC hour of the day (0 to 23) of epoch seconds."""
    return (np.floor(time / SECONDS_PER_HOUR) % HOURS_PER_DAY).astype(np.int64)


def input_psi(example: Example, frame: pd.DataFrame) -> dict[str, float]:
    """PSI of each watched input of ``frame``'s rows against the example's reference profile.

    ``frame`` holds the raw features (a log or a slice of one); intent's watched features are
    derived from them with :func:`~exporter.demo_models.intent.derive_features`. Bins and
    categories are the profile's and PSI is :func:`exporter.stats.psi`, as in the monitor. With a
    segmented profile (``segment_by``, see :mod:`exporter.segments`) each row is expected to
    follow the reference of its segment (the overall one when its segment has none), the expected
    shares are the mix of the rows' segments, and the segment feature itself, context rather than
    a drift input, is left out, as the monitor does.
    """
    check_example(example)
    profile = reference(example)
    watched = _watched(example, frame)
    segments = profile.segments
    slots: IntArray | None = None
    if segments is not None:
        position = {key: i for i, key in enumerate(segments.values)}
        keys = [category_key(v) for v in _column(frame, watched, segments.feature).tolist()]
        overall = len(position)
        slots = np.array(
            [position.get(k, overall) if k is not None else overall for k in keys], dtype=np.int64
        )
    result: dict[str, float] = {}
    for name, feature in profile.features.items():
        if segments is not None and name == segments.feature:
            continue
        index = _bin_index(watched[name], feature)
        valid = index >= 0
        counts = np.bincount(index[valid], minlength=len(feature.reference_share))
        expected = np.asarray(feature.reference_share, dtype=np.float64)
        if segments is not None and slots is not None and valid.any():
            own = [segment.features.get(name) for segment in segments.values.values()]
            shares = [s.reference_share if s is not None else expected for s in own]
            table = np.asarray([*shares, expected], dtype=np.float64)
            per_slot = np.bincount(slots[valid], minlength=len(table))
            expected = per_slot @ table / per_slot.sum()
        result[name] = stats.psi(expected, counts).statistic
    return result


def _column(frame: pd.DataFrame, watched: dict[str, Any], name: str) -> npt.NDArray[Any]:
    if name in watched:
        return np.asarray(watched[name])
    return frame[name].to_numpy(dtype=object)


def _bin_index(values: Any, feature: NumericFeature | CategoricalFeature) -> IntArray:
    """Each value's bin in ``feature``'s reference (``__other__`` last), -1 when missing."""
    if isinstance(feature, NumericFeature):
        numbers = np.asarray(values, dtype=np.float64)
        index = np.searchsorted(np.asarray(feature.edges), numbers, side="right")
        return np.where(np.isfinite(numbers), index, -1).astype(np.int64)
    position = {category: i for i, category in enumerate(feature.categories)}
    codes, distinct = _factorize(np.asarray(values, dtype=object))
    keys = [category_key(v) for v in distinct.tolist()]
    bins = [-1 if k is None else position.get(k, len(position)) for k in keys]
    return np.asarray([*bins, -1], dtype=np.int64)[codes]


def _factorize(values: ObjectArray) -> tuple[npt.NDArray[np.intp], ObjectArray]:
    codes, distinct = pd.factorize(values)
    return np.asarray(codes, dtype=np.intp), np.asarray(distinct, dtype=object)


def _watched(example: Example, frame: pd.DataFrame) -> dict[str, Any]:
    """The monitor's watched features of each row of ``frame``."""
    if example == "fare":
        return {name: frame[name].to_numpy(dtype=np.float64) for name in fare.FEATURES}
    codes, distinct = _factorize(frame["text"].to_numpy(dtype=object))
    derived = [intent.derive_features({"text": text}) for text in distinct.tolist()]
    watched: dict[str, Any] = {
        name: np.array([d[name] for d in derived], dtype=np.float64)[codes]
        for name in ("text_length", "token_count", "oov_share")
    }
    watched["channel"] = frame["channel"].to_numpy(dtype=object)
    return watched
