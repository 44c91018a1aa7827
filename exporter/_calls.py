"""The calls to the model themselves: their latency, their failures by exception class, and the
decorator that times a predict function and observes what goes in and comes out."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

from exporter.metrics import Instruments, label_value
from exporter.profile import OTHER

# The monitor's logger: a call it cannot read is the monitor's to report.
log = logging.getLogger("exporter.monitor")

#: Error classes beyond this many distinct ones are counted as ``__other__``.
MAX_ERROR_KINDS = 20

_F = TypeVar("_F", bound=Callable[..., Any])
Observe = Callable[..., str]
ReadFeatures = Callable[..., Mapping[str, Any]]
ReadOutput = Callable[[Any], tuple[Any, "float | None"]]


class Calls:
    """The latency histogram child and the error counter children of one model."""

    def __init__(self, instruments: Instruments, labels: tuple[str, str], lock: threading.Lock):
        self.errors_metric, self.labels, self.lock = instruments.errors, labels, lock
        self.duration = instruments.duration.labels(*labels)
        self.errors: dict[str, Any] = {}

    def observe_latency(self, seconds: float) -> None:
        """Record one inference latency (``observe`` and ``instrument`` call this for you)."""
        if isinstance(seconds, (int, float)) and seconds >= 0 and math.isfinite(seconds):
            self.duration.observe(seconds)

    def record_error(self, error: BaseException | type[BaseException] | str) -> None:
        """Count a failed prediction by exception class (at most MAX_ERROR_KINDS distinct)."""
        if isinstance(error, str):
            kind = error
        else:
            # An exception standing for another (the service's ModelAborted for a SystemExit its
            # model raised) names the class it stands for.
            kind = (
                getattr(error, "error_kind", None)
                or (error if isinstance(error, type) else type(error)).__name__
            )
        kind = label_value(kind)
        child = self.errors.get(kind)
        if child is None:
            with self.lock:
                if kind not in self.errors and len(self.errors) >= MAX_ERROR_KINDS:
                    kind = OTHER
                child = self.errors.get(kind)
                if child is None:
                    child = self.errors_metric.labels(*self.labels, kind)
                    self.errors[kind] = child
        child.inc()


def default_features(*args: Any, **kwargs: Any) -> Mapping[str, Any]:
    if "features" in kwargs:
        return cast(Mapping[str, Any], kwargs["features"])
    for arg in args:
        if isinstance(arg, Mapping):
            return arg
    return {}


def default_output(result: Any) -> tuple[Any, float | None]:
    """A model's answer as (prediction, confidence): a ``(prediction, confidence)`` pair, a
    mapping with ``prediction`` (and ``confidence``), or the prediction alone. The server reads
    its models' answers with this too."""
    if isinstance(result, tuple) and len(result) == 2:
        return result[0], result[1]
    if isinstance(result, Mapping) and "prediction" in result:
        return result["prediction"], result.get("confidence")
    return result, None


@dataclass(frozen=True)
class Answered:
    """One call that returned, as :meth:`Instrumented.call` observed it."""

    #: What the predict function returned, untouched.
    result: Any
    #: The prediction and confidence read from it (the output reader's reading).
    prediction: Any
    confidence: Any
    #: The id ``observe`` gave the prediction; None when its inputs or output could not be read
    #: (counted as a monitor error, the latency still observed).
    prediction_id: str | None


class Instrument:
    """``ModelMonitor.instrument``: ``@instrument``, ``instrument(fn)`` or
    ``@instrument(features=..., output=...)`` wraps a predict function."""

    def __init__(self, model: str, calls: Calls, observe: Observe, monitor_errors: Any) -> None:
        self.model, self.calls, self.observe = model, calls, observe
        self.monitor_errors = monitor_errors

    @overload
    def __call__(self, func: _F) -> _F: ...

    @overload
    def __call__(
        self,
        func: None = None,
        *,
        features: ReadFeatures | None = None,
        output: ReadOutput | None = None,
    ) -> Callable[[_F], _F]: ...

    def __call__(
        self,
        func: _F | None = None,
        *,
        features: ReadFeatures | None = None,
        output: ReadOutput | None = None,
    ) -> _F | Callable[[_F], _F]:
        wrapping = self.caller(features=features, output=output)
        return wrapping.wrap(func) if func is not None else wrapping.wrap

    def caller(
        self,
        *,
        features: ReadFeatures | None = None,
        output: ReadOutput | None = None,
        keep: bool = True,
    ) -> Instrumented:
        """The decorator's accounting for a caller that runs the model itself and needs the
        prediction id (the service): ``caller(...).call(predict, (row,))``. ``keep=False`` when
        the caller stores the prediction for its ground truth itself."""
        return Instrumented(self, features or default_features, output or default_output, keep)


class Instrumented:
    """What a wrapped predict function reports to: ``observe`` for a call that returned, the
    calls' counters for one that raised, and the monitor's internal-error counter."""

    def __init__(
        self, to: Instrument, read_features: ReadFeatures, read_output: ReadOutput,
        keep: bool = True,
    ) -> None:  # fmt: skip
        self.model, self.calls, self.observe = to.model, to.calls, to.observe
        self.monitor_errors = to.monitor_errors
        self.read_features, self.read_output, self.keep = read_features, read_output, keep

    def call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        started: float | None = None,
    ) -> Answered:
        """Call ``fn(*args, **kwargs)`` and account for it as the decorator does: the latency
        from ``started`` (a ``time.perf_counter()`` reading; default now, a caller that first
        waits for a thread passes the time before the wait), the error class of a call that
        raised (then re-raised), or the observed inputs and output."""
        kwargs = {} if kwargs is None else kwargs
        start = time.perf_counter() if started is None else started
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self.failed(exc, time.perf_counter() - start)
            raise
        return self.succeeded(args, kwargs, result, time.perf_counter() - start)

    def wrap(self, fn: _F) -> _F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    self.failed(exc, time.perf_counter() - start)
                    raise
                self.succeeded(args, kwargs, result, time.perf_counter() - start)
                return result

            return cast(_F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self.call(fn, args, kwargs).result

        return cast(_F, wrapper)

    def failed(self, exc: Exception, elapsed: float) -> None:
        try:
            self.calls.record_error(exc)
            self.calls.observe_latency(elapsed)
        except Exception:
            self.monitor_errors.inc()

    def succeeded(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any, elapsed: float
    ) -> Answered:
        try:
            row = self.read_features(*args, **kwargs)
            prediction, confidence = self.read_output(result)
        except Exception:
            self.monitor_errors.inc()
            log.exception("model monitor %s could not read a call's inputs/outputs", self.model)
            self.calls.observe_latency(elapsed)
            return Answered(result, None, None, None)
        pid = self.observe(row, prediction, confidence, latency_seconds=elapsed, keep=self.keep)
        return Answered(result, prediction, confidence, pid)
