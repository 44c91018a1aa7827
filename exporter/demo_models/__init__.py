"""Two small example models the demo serves: an intent classifier and a taxi-fare regressor.

They exist so ``make demo`` has real models to watch: :mod:`exporter.demo_models.intent` (a bag of
words naive Bayes over shipped banking utterances) and :mod:`exporter.demo_models.fare` (a linear
fare model fitted on synthetic trips). Each trains itself once, on first use, from data that ships
with the package, so the service can load them by import path with nothing else installed.

Demo only: both models read a ``_fault`` raw feature so the traffic generator can inject failures
through the normal HTTP contract. ``"_fault": "error"`` raises :class:`DemoModelError` and
``"_fault": "slow"`` sleeps 0.25 to 0.5 s before answering. A real model has no such switch.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from exporter.errors import ExporterError

__all__ = ["FAULT_KEY", "DemoModelError", "Once", "inject_fault"]

#: The raw feature that carries a demo fault.
FAULT_KEY = "_fault"
#: How long a ``slow`` fault sleeps, seconds (low, high).
SLOW_FAULT_SECONDS = (0.25, 0.5)

T = TypeVar("T")

# Sleep lengths need no reproducibility; a private generator keeps them off the global one.
_sleep_rng = random.Random()


class DemoModelError(ExporterError, RuntimeError):
    """The failure a demo model raises when a request asks for ``"_fault": "error"``."""


def inject_fault(features: Mapping[str, Any]) -> None:
    """Act on a demo ``_fault`` feature: raise for ``"error"``, sleep for ``"slow"``.

    A request without the key is untouched; an unknown fault value is a ``ValueError`` so a typo
    in a demo scenario shows up instead of silently doing nothing.
    """
    fault = features.get(FAULT_KEY)
    if fault is None:
        return
    if fault == "error":
        raise DemoModelError("injected demo fault")
    if fault == "slow":
        time.sleep(_sleep_rng.uniform(*SLOW_FAULT_SECONDS))
        return
    raise ValueError(f"{FAULT_KEY} must be 'error' or 'slow', got {fault!r}")


class Once(Generic[T]):
    """A value built by ``factory`` on first :meth:`get`, exactly once even under many threads.

    The service calls models from a thread pool, so the first requests can arrive together; the
    lock makes them wait for one training run instead of each starting their own.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        value = self._value
        if value is not None:
            return value
        with self._lock:
            if self._value is None:
                self._value = self._factory()
            return self._value
