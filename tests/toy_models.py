"""Tiny deterministic models the service tests load by import path."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ToyFailure(RuntimeError):
    pass


def regress(features: Mapping[str, Any]) -> float:
    """fare = 3 + 2 * miles; raises for miles < 0 and sleeps when asked.

    ``_started`` names a file to create on arrival, so a test knows the request is in flight.
    """
    miles = features.get("miles")
    if features.get("_started"):
        Path(str(features["_started"])).touch()
    if features.get("_sleep"):
        time.sleep(float(features["_sleep"]))
    if miles is None:
        return 3.0
    if miles < 0:
        raise ToyFailure("negative miles")
    return 3.0 + 2.0 * float(miles)


def classify(features: Mapping[str, Any]) -> tuple[str, float]:
    """'long' above 5 miles, else 'short', with a confidence that grows with the distance."""
    miles = float(features.get("miles") or 0.0)
    if miles > 5:
        return "long", min(0.99, 0.5 + miles / 20)
    return "short", 0.9


# -- candidate versions (tests/test_versions*.py) ------------------------------------------------


def regress_plus_one(features: Mapping[str, Any]) -> float:
    """A worse candidate of ``regress``: one more than it, everywhere."""
    return regress(features) + 1.0


def regress_sleeping(features: Mapping[str, Any]) -> float:
    """A shadow that hangs: answers like ``regress`` after a second."""
    time.sleep(1.0)
    return regress(features)


def regress_failing(features: Mapping[str, Any]) -> float:
    """A shadow that always raises."""
    raise ToyFailure("the candidate is broken")


def classify_always_long(features: Mapping[str, Any]) -> tuple[str, float]:
    """A classification candidate that always says 'long'."""
    return "long", 0.7
