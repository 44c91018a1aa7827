"""Demo taxi-fare regressor: a linear model fitted by least squares on synthetic trips.

:func:`synthetic_trips` makes city taxi trips: distances from a gamma distribution, durations that
follow the distance and the hour (rush hours are slow, nights fast), straight-line distances a
fraction of the driven one, and a fare of $3.00 plus $2.50 a mile plus $0.35 a minute plus a rush
hour surcharge plus noise. :func:`predict` uses a :class:`FareModel` fitted once, on first use, on
:data:`TRAINING_TRIPS` trips with a fixed seed (:func:`numpy.linalg.lstsq` on a design matrix with
an intercept and hour-of-day indicators). The service loads it by import path::

    model:
      import_path: exporter.demo_models.fare:predict

Demo only: a raw feature ``"_fault": "error"`` makes :func:`predict` raise
:class:`~exporter.demo_models.DemoModelError`, and ``"_fault": "slow"`` makes it sleep 0.25 to 0.5 s
first (see :mod:`exporter.demo_models`). A feature that is missing or not a number raises
``TypeError``; a number that is NaN or infinite raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from exporter.demo_models import Once, inject_fault

__all__ = [
    "FEATURES",
    "TRAINING_SEED",
    "TRAINING_TRIPS",
    "FareModel",
    "model",
    "predict",
    "synthetic_trips",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: The model's inputs, in the order of the request's features.
FEATURES = ("trip_miles", "trip_seconds", "straight_line_km", "hour")
#: The training set: this many synthetic trips drawn with this seed.
TRAINING_TRIPS = 20_000
TRAINING_SEED = 20_240_601

#: The tariff behind the synthetic fares (dollars).
BASE_FARE = 3.00
PER_MILE = 2.50
PER_MINUTE = 0.35
RUSH_SURCHARGE = 1.50
#: Fare noise (tips rounded in, waiting, detours): standard deviation of a normal, in dollars,
#: growing with the fare so long trips vary more.
NOISE_SD_BASE = 0.4
NOISE_SD_PER_DOLLAR = 0.05
KM_PER_MILE = 1.609344
#: Straight-line distance as a share of the driven distance (street grids and detours).
STRAIGHT_LINE_RANGE = (0.6, 0.9)
#: Typical speeds in miles per hour by time of day, before trip-to-trip variation.
RUSH_MPH, DAY_MPH, NIGHT_MPH = 10.0, 14.0, 21.0
#: Trips per hour of the day (relative), shaped like a city's taxi demand: quiet at 4 am, busiest
#: in the evening rush.
HOURLY_DEMAND = (
    3.0, 2.2, 1.6, 1.1, 0.9, 1.0, 2.0, 3.6, 4.8, 5.0, 4.6, 4.7,
    5.0, 5.0, 5.2, 5.3, 5.6, 6.2, 6.8, 6.6, 6.0, 5.6, 5.2, 4.2,
)  # fmt: skip


def rush_and_night(hour: FloatArray) -> tuple[BoolArray, BoolArray]:
    """Per hour of the day: rush hour (7 to 9 am, 4 to 7 pm) and night (10 pm to 5 am)."""
    rush = ((hour >= 7) & (hour <= 9)) | ((hour >= 16) & (hour <= 19))
    night = (hour >= 22) | (hour <= 5)
    return rush, night


def synthetic_trips(
    n: int, seed: int, shift: float | None = None, *, hours: npt.ArrayLike | None = None
) -> pd.DataFrame:
    """``n`` synthetic taxi trips: the :data:`FEATURES` columns and the true ``fare``.

    Parameters
    ----------
    n : int
        Number of trips.
    seed : int
        Seed of the random generator; the same ``n``, ``seed`` and ``shift`` give the same frame.
    shift : float, optional
        Multiplies every trip's driven distance (and so its duration and straight-line distance
        and fare), e.g. ``2.5`` for a population of much longer trips.
    hours : array_like of int, optional
        The hour of the day (0 to 23) of each of the ``n`` trips, instead of drawing it from
        :data:`HOURLY_DEMAND`: durations and fares then follow these hours (a replayed day whose
        trips happen at the clock's hour). Without it the output is what it always was for the
        same ``n``, ``seed`` and ``shift``.

    Notes
    -----
    Values are rounded the way a trip record stores them (miles to 0.01, whole seconds, km to
    0.001, fares to cents), which also keeps the output identical across platforms whose math
    libraries differ in the last bit.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if shift is not None and not shift > 0:
        raise ValueError(f"shift must be a positive factor, got {shift}")
    rng = np.random.default_rng(seed)
    if hours is None:
        demand = np.asarray(HOURLY_DEMAND)
        hour = rng.choice(24, size=n, p=demand / demand.sum())
    else:
        hour = _hours(hours, n)
    miles = np.round((0.2 + rng.gamma(shape=1.8, scale=1.9, size=n)) * (shift or 1.0), 2)
    rush, night = rush_and_night(hour.astype(np.float64))
    typical_mph = np.where(rush, RUSH_MPH, np.where(night, NIGHT_MPH, DAY_MPH))
    # Longer trips reach faster roads; each trip also has its own luck with the traffic.
    mph = typical_mph * (1 + 0.5 * (1 - np.exp(-miles / 8))) * rng.lognormal(0, 0.2, size=n)
    pickup_seconds = np.clip(rng.normal(90, 30, size=n), 30, None)
    seconds = np.round(miles / mph * 3600 + pickup_seconds)
    low, high = STRAIGHT_LINE_RANGE
    straight_km = np.round(miles * KM_PER_MILE * rng.uniform(low, high, size=n), 3)
    tariff = BASE_FARE + PER_MILE * miles + PER_MINUTE * seconds / 60 + RUSH_SURCHARGE * rush
    noise = rng.normal(0, 1, size=n) * (NOISE_SD_BASE + NOISE_SD_PER_DOLLAR * tariff)
    fare = np.round(np.maximum(tariff + noise, BASE_FARE), 2)
    return pd.DataFrame(
        {
            "trip_miles": miles,
            "trip_seconds": seconds.astype(np.int64),
            "straight_line_km": straight_km,
            "hour": hour.astype(np.int64),
            "fare": fare,
        }
    )


def _hours(hours: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    """``hours`` checked as ``n`` whole hours of the day."""
    given = np.asarray(hours)
    if given.shape != (n,):
        raise ValueError(f"hours must hold one hour per trip ({n}), got shape {given.shape}")
    numeric = given.dtype.kind in "iuf"
    if not numeric or not np.all((given >= 0) & (given <= 23) & (given == np.floor(given))):
        raise ValueError("hours must be whole hours of the day, 0 to 23")
    return given.astype(np.int64)


def _design(miles: FloatArray, seconds: FloatArray, km: FloatArray, hour: FloatArray) -> FloatArray:
    rush, night = rush_and_night(hour)
    columns = [np.ones_like(miles), miles, seconds / 60, km, rush, night]
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])


def _columns(trips: pd.DataFrame) -> list[FloatArray]:
    return [trips[name].to_numpy(dtype=np.float64) for name in FEATURES]


@dataclass(frozen=True)
class FareModel:
    """``fare = coefficients . [1, miles, minutes, straight-line km, rush, night]``.

    Predictions are summed term by term (not by a BLAS dot product, whose summation order depends
    on the machine) and rounded to cents, so a trip gets the same fare alone or in a batch, on any
    machine.
    """

    coefficients: tuple[float, ...]

    @classmethod
    def fit(cls, trips: pd.DataFrame) -> FareModel:
        """Least squares on the trips' design matrix against their ``fare`` column."""
        design = _design(*_columns(trips))
        # rcond=None: machine-precision cut-off, the default since numpy 2 (1.x warns without it).
        fare = trips["fare"].to_numpy(dtype=np.float64)
        solution, *_ = np.linalg.lstsq(design, fare, rcond=None)
        # Rounded so last-bit differences between LAPACK builds cannot change a prediction.
        return cls(tuple(round(float(c), 6) for c in solution))

    def predict_arrays(
        self, miles: FloatArray, seconds: FloatArray, km: FloatArray, hour: FloatArray
    ) -> FloatArray:
        """Fares of trips given column by column (the :data:`FEATURES` order)."""
        design = _design(miles, seconds, km, hour)
        total = np.zeros(len(design))
        for column, coefficient in enumerate(self.coefficients):
            total = total + coefficient * design[:, column]
        return np.asarray(np.round(total, 2), dtype=np.float64)

    def predict_frame(self, trips: pd.DataFrame) -> FloatArray:
        """Fares of every row of a frame with the :data:`FEATURES` columns."""
        return self.predict_arrays(*_columns(trips))


def _train() -> FareModel:
    return FareModel.fit(synthetic_trips(TRAINING_TRIPS, TRAINING_SEED))


_model = Once(_train)


def model() -> FareModel:
    """The fare model fitted on the training trips (fitted on the first call)."""
    return _model.get()


def _number(features: Mapping[str, Any], name: str) -> float:
    value = features.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"features[{name!r}] must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"features[{name!r}] must be finite, got {number}")
    return number


def predict(features: Mapping[str, Any]) -> float:
    """The predicted fare in dollars of a trip given as ``{"trip_miles": ..., ...}``."""
    if not isinstance(features, Mapping):
        raise TypeError(f"features must be a mapping, got {type(features).__name__}")
    inject_fault(features)
    columns = [np.array([_number(features, name)]) for name in FEATURES]
    return float(model().predict_arrays(*columns)[0])
