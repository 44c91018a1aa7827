"""The Prometheus objects of the metric catalogue (docs/metrics.md), one set per registry.

Several monitors (models) can share a registry: the metric objects are created once per registry
and every monitor takes its own label children from them. Drift gauges are not stored objects but
come from :class:`DriftCollector`, which asks each monitor for its (cached) drift at scrape time, so
no stale series is ever left behind.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # only a type: importing metrics loads no statistics (scipy)
    from exporter._drift import DriftSnapshot

MODEL_LABELS = ("model", "version")

#: Longest label value exported, in characters (at most 512 bytes of UTF-8). Prometheus drops a
#: whole scrape when one value passes its ``label_value_length_limit``, so values fed by user data
#: (class names, categories, feature names, exception names) are cut here.
MAX_LABEL_LENGTH = 128
#: Hex digits of the hash that ends a cut value, so two long values sharing a start stay apart.
_CUT_HASH_DIGITS = 8
#: A surrogate code point in a str is a lone one (a valid pair decodes to one code point): it has
#: no UTF-8 form, and a single one would make every later scrape fail to encode.
_SURROGATE = re.compile("[\ud800-\udfff]")

#: Inference latency buckets in seconds: 0.01 .. 1.0 s covers an online model's usual range,
#: widened both ways for fast models and slow batch calls. The histogram also gets edges around
#: the model's latency thresholds (:func:`latency_buckets`).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Threshold keys of the p95 latency alerts, and their defaults when a model sets none: the rules'
#: default warning threshold, and a critical one this many times the warning one.
LATENCY_P95 = "latency_p95_seconds"
LATENCY_P95_CRITICAL = "latency_p95_critical_seconds"
DEFAULT_LATENCY_P95_SECONDS = 0.5
CRITICAL_LATENCY_FACTOR = 2.0
#: Edges at each latency threshold and at these multiples of it. ``histogram_quantile``
#: interpolates linearly inside a bucket, so the p95 it reports can be anywhere in the bucket the
#: true p95 is in: with default buckets only, a true p95 of 0.75 s reads 0.95 s. With an edge
#: exactly at the threshold, ``histogram_quantile(0.95, ...) > threshold`` holds exactly when more
#: than 5% of calls took longer than the threshold (the cumulative count at that edge is then
#: below 95%), so the alert's decision has no interpolation error at all; the edges at 0.8x and
#: 1.25x bound what a graph shows near the threshold to within the bucket's width.
THRESHOLD_EDGE_FACTORS = (0.8, 1.0, 1.25)
#: Significant digits kept of a derived edge: 0.8 x 0.3 is 0.24, not 0.24000000000000002.
_EDGE_DIGITS = 6
#: Confidence buckets: every tenth from 0.1 to 0.9, plus 0.95 and 0.99, where calibrated models
#: put most of their predictions.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
#: Absolute-error buckets for regression; 2, 5 and 10 give the "share within $X" that a
#: price-like target is judged by (a fare off by more than $5 is a complaint).
ABSOLUTE_ERROR_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.5, 10.0, 20.0, 50.0, 100.0)
#: Delay between a prediction and its ground truth, in seconds: a minute to a week.
OUTCOME_DELAY_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0, 259200.0, 604800.0)


def latency_thresholds(thresholds: Mapping[str, float] | None) -> tuple[float, float]:
    """The p95 latency thresholds (warning, critical) of a model, defaults filled in."""
    given = thresholds or {}
    warning = float(given.get(LATENCY_P95, DEFAULT_LATENCY_P95_SECONDS))
    critical = float(given.get(LATENCY_P95_CRITICAL, CRITICAL_LATENCY_FACTOR * warning))
    return warning, critical


def latency_buckets(thresholds: Mapping[str, float] | None = None) -> tuple[float, ...]:
    """:data:`LATENCY_BUCKETS` plus edges at each latency threshold and around it.

    A threshold that is not a positive finite number gets no edges (it cannot be a latency).
    """
    edges = set(LATENCY_BUCKETS)
    for threshold in latency_thresholds(thresholds):
        if not (math.isfinite(threshold) and threshold > 0):
            continue
        edges.add(threshold)  # exactly the threshold, never rounded
        for factor in THRESHOLD_EDGE_FACTORS:
            if factor != 1.0:
                edges.add(float(f"{threshold * factor:.{_EDGE_DIGITS}g}"))
    return tuple(sorted(edges))


def warn_unless_latency_edges(
    buckets: Sequence[float], thresholds: Mapping[str, float] | None, model: str
) -> None:
    """Log a warning when ``buckets`` have no edge at one of a model's latency thresholds.

    The latency histogram is created once per registry, with the first monitor's thresholds; a
    later model with other thresholds still works, but its latency alert then decides on an
    interpolated p95.
    """
    missing = [t for t in latency_thresholds(thresholds) if t > 0 and t not in buckets]
    if missing:
        logging.getLogger("exporter").warning(
            "model %s: latency thresholds %s are not edges of the latency histogram this "
            "registry already has (created by another model): its p95 latency alert will "
            "interpolate inside a bucket", model, missing,
        )  # fmt: skip


def label_value(text: str) -> str:
    """``text`` as a label value: valid UTF-8 and at most :data:`MAX_LABEL_LENGTH` characters.

    Lone surrogates become U+FFFD. A longer value keeps its start, then ``~`` and a hash of the
    whole value, so the cut is the same in every worker and replica and distinct values stay
    distinct. Backslashes, quotes and newlines are left to the exposition writer, which escapes
    them; other control characters pass through, as the text format allows.
    """
    if len(text) <= MAX_LABEL_LENGTH and (text.isascii() or not _SURROGATE.search(text)):
        return text
    clean = _SURROGATE.sub("\ufffd", text)
    if len(clean) <= MAX_LABEL_LENGTH:
        return clean
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_CUT_HASH_DIGITS]
    return f"{clean[: MAX_LABEL_LENGTH - _CUT_HASH_DIGITS - 1]}~{digest}"


@dataclass(frozen=True)
class Instruments:
    """Every stored metric object of the catalogue, for one registry."""

    info: Gauge
    duration: Histogram
    predictions: Counter
    confidence: Histogram
    errors: Counter
    invalid: Counter
    feature_bins: Counter
    feature_value_sum: Counter
    feature_expected_bins: Counter
    feature_expected_value_sum: Counter
    reference_ratio: Gauge
    reference_mean: Gauge
    reference_std: Gauge
    alert_threshold: Gauge
    monitor_errors: Counter
    outcomes: Counter
    absolute_error: Histogram
    squared_error: Counter
    error_sum: Counter
    outcomes_expired: Counter
    outcome_delay: Histogram
    outcome_store_errors: Counter


def _build(registry: CollectorRegistry, duration_buckets: Sequence[float]) -> Instruments:
    m = MODEL_LABELS
    return Instruments(
        info=Gauge(
            "model_info",
            "Live model version (value 1), its stage and the reference profile it is compared to.",
            [*m, "stage", "reference"],
            registry=registry,
            multiprocess_mode="max",
        ),
        duration=Histogram(
            "model_prediction_duration_seconds",
            "Inference latency in seconds.",
            m,
            buckets=duration_buckets,
            registry=registry,
        ),
        predictions=Counter(
            "model_predictions",
            "Predictions by predicted class (empty for regression) and confidence bucket.",
            [*m, "predicted", "confidence_bucket"],
            registry=registry,
        ),
        confidence=Histogram(
            "model_prediction_confidence",
            "Confidence of each prediction (probability of the predicted class).",
            m,
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        ),
        errors=Counter(
            "model_prediction_errors",
            "Failed predictions by exception class.",
            [*m, "error"],
            registry=registry,
        ),
        invalid=Counter(
            "model_input_invalid",
            "Invalid input values by feature and reason; they are kept out of drift statistics.",
            [*m, "feature", "reason"],
            registry=registry,
        ),
        feature_bins=Counter(
            "model_feature_bin",
            "Valid values per feature and reference bin; summed across replicas for fleet drift.",
            [*m, "feature", "bin"],
            registry=registry,
        ),
        feature_value_sum=Counter(
            "model_feature_value_sum",
            "Sum of valid numeric values, split by sign (counters cannot go down), for mean shift.",
            [*m, "feature", "sign"],
            registry=registry,
        ),
        feature_expected_bins=Counter(
            "model_feature_expected_bin",
            "Reference share of each bin for every valid value counted, from the reference of "
            "the value's segment (segmented profiles only): the expected model_feature_bin.",
            [*m, "feature", "bin"],
            registry=registry,
        ),
        feature_expected_value_sum=Counter(
            "model_feature_expected_value_sum",
            "Reference mean of the value's segment for every valid numeric value counted, split "
            "by sign (segmented profiles only): the expected model_feature_value_sum.",
            [*m, "feature", "sign"],
            registry=registry,
        ),
        reference_ratio=Gauge(
            "model_feature_reference_ratio",
            "Share of the reference (training) data in each bin.",
            [*m, "feature", "bin"],
            registry=registry,
            multiprocess_mode="max",
        ),
        reference_mean=Gauge(
            "model_feature_reference_mean",
            "Mean of the numeric feature in the reference data.",
            [*m, "feature"],
            registry=registry,
            multiprocess_mode="max",
        ),
        reference_std=Gauge(
            "model_feature_reference_std",
            "Standard deviation of the numeric feature in the reference data.",
            [*m, "feature"],
            registry=registry,
            multiprocess_mode="max",
        ),
        alert_threshold=Gauge(
            "model_alert_threshold",
            "Per-model alert thresholds from the exporter's config, read by the alert rules.",
            [*m, "alert"],
            registry=registry,
            multiprocess_mode="max",
        ),
        monitor_errors=Counter(
            "model_monitor_internal_errors",
            "Unexpected errors inside the monitor itself; the prediction was still served.",
            m,
            registry=registry,
        ),
        outcomes=Counter(
            "model_outcomes",
            "Delayed ground truth for classification: predicted and actual class, and whether "
            "they agree (label equality cannot be tested in PromQL).",
            [*m, "predicted", "actual", "correct"],
            registry=registry,
        ),
        absolute_error=Histogram(
            "model_absolute_error",
            "Absolute regression error |prediction - actual| once the actual arrived.",
            m,
            buckets=ABSOLUTE_ERROR_BUCKETS,
            registry=registry,
        ),
        squared_error=Counter(
            "model_squared_error",
            "Sum of squared regression errors (RMSE = sqrt(this / model_absolute_error_count)).",
            m,
            registry=registry,
        ),
        error_sum=Counter(
            "model_error_sum",
            "Signed regression error (prediction - actual), positive and negative parts.",
            [*m, "sign"],
            registry=registry,
        ),
        outcomes_expired=Counter(
            "model_outcomes_expired",
            "Predictions whose ground truth never came (past the TTL or pushed out by the cap).",
            m,
            registry=registry,
        ),
        outcome_delay=Histogram(
            "model_outcome_delay_seconds",
            "Time from a prediction to its ground truth.",
            m,
            buckets=OUTCOME_DELAY_BUCKETS,
            registry=registry,
        ),
        outcome_store_errors=Counter(
            "model_outcome_store_errors",
            "Failed writes to the outcome store (read-only or full disk); predictions were served.",
            m,
            registry=registry,
        ),
    )


class Monitored(Protocol):
    """What the collector asks of a monitor (:class:`exporter.monitor.ModelMonitor`): named by
    the protocol, not imported, so the monitor's parts can use this module without a circle."""

    name: str
    version: str

    @property
    def model_labels(self) -> tuple[str, str]: ...

    def flush(self) -> None: ...

    def drift(self) -> DriftSnapshot: ...


class DriftCollector(Collector):
    """Yields the windowed drift gauges of every monitor on a registry, computed at scrape time."""

    def __init__(self) -> None:
        self._monitors: weakref.WeakSet[Monitored] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, monitor: Monitored) -> None:
        with self._lock:
            self._monitors.add(monitor)

    def flush_monitors(self) -> None:
        """Flush every monitor of the registry (:meth:`ModelMonitor.flush`), for a reader that
        needs every count observed so far, not only those of the last flush."""
        with self._lock:
            monitors = list(self._monitors)
        for monitor in monitors:
            monitor.flush()

    def collect(self) -> Iterator[Metric]:
        labels = [*MODEL_LABELS, "feature", "window"]
        families = {
            "psi": GaugeMetricFamily(
                "model_feature_psi",
                "Population stability index of the window against the reference bins.",
                labels=labels,
            ),
            "ks_statistic": GaugeMetricFamily(
                "model_feature_ks_statistic",
                "Two-sample Kolmogorov-Smirnov statistic, window sample vs reference sample.",
                labels=labels,
            ),
            "ks_pvalue": GaugeMetricFamily(
                "model_feature_ks_pvalue",
                "Asymptotic p-value of the two-sample KS test.",
                labels=labels,
            ),
            "zscore": GaugeMetricFamily(
                "model_feature_zscore",
                "|window mean - reference mean| / reference std.",
                labels=labels,
            ),
            "samples": GaugeMetricFamily(
                "model_feature_window_samples",
                "Valid values the window holds; statistics appear once it reaches the minimum.",
                labels=labels,
            ),
        }
        performance = GaugeMetricFamily(
            "model_performance",
            "Windowed model performance in this process (or merged across its workers).",
            labels=[*MODEL_LABELS, "metric", "window"],
        )
        class_performance = GaugeMetricFamily(
            "model_class_performance",
            "Windowed per-class precision, recall and F1.",
            labels=[*MODEL_LABELS, "class", "metric", "window"],
        )
        pending = GaugeMetricFamily(
            "model_outcomes_pending", "Predictions waiting for their ground truth.",
            labels=list(MODEL_LABELS),
        )  # fmt: skip
        with self._lock:
            monitors = sorted(self._monitors, key=lambda m: (m.name, m.version))
        for monitor in monitors:
            snapshot = monitor.drift()
            model = list(monitor.model_labels)
            for drift in snapshot.rows():
                key = [*model, label_value(drift.feature), drift.window]
                families["samples"].add_metric(key, float(drift.samples))
                if not drift.ready:
                    continue
                for stat in ("psi", "ks_statistic", "ks_pvalue", "zscore"):
                    value = getattr(drift, stat)
                    if value is not None:
                        families[stat].add_metric(key, value)
            for window in snapshot.performance.values():
                for metric, value in window.metrics.items():
                    if value is not None:
                        performance.add_metric([*model, metric, window.window], value)
                for cls, metrics in window.classes.items():
                    for metric, value in metrics.items():
                        if value is not None:
                            class_performance.add_metric([*model, cls, metric, window.window],
                                                         value)  # fmt: skip
            if snapshot.pending is not None:
                pending.add_metric(model, float(snapshot.pending))
        yield from families.values()
        yield performance
        yield class_performance
        yield pending


@dataclass
class RegistryState:
    instruments: Instruments
    drift: DriftCollector
    #: Upper bounds of ``model_prediction_duration_seconds``, fixed when the registry's first
    #: monitor created it.
    latency_buckets: tuple[float, ...]


def flush_registry(registry: CollectorRegistry) -> None:
    """Bring the counters of every monitor on ``registry`` up to date before reading them.

    A scrape only reads: counts reach the counters on the monitors' own clock (within
    ``flush_interval``, one second by default). A job that reads the registry once and exits (a
    test, a batch job that pushes) calls this first.
    """
    with _STATES_LOCK:
        state = _STATES.get(registry)
    if state is not None:
        state.drift.flush_monitors()


_STATES: weakref.WeakKeyDictionary[CollectorRegistry, RegistryState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def state_for(
    registry: CollectorRegistry, duration_buckets: Sequence[float] | None = None
) -> RegistryState:
    """The catalogue's objects on ``registry``, created and registered on first use.

    ``duration_buckets`` are the latency histogram's buckets when this call creates it (default:
    :func:`latency_buckets` of the default thresholds); later calls get the histogram as it is.
    """
    with _STATES_LOCK:
        state = _STATES.get(registry)
        if state is None:
            # A scrape only reads: the monitors' pending counts reach the counters on their own
            # clock (ModelMonitor.flush), so the order of registration does not matter.
            collector = DriftCollector()
            registry.register(collector)
            buckets = tuple(duration_buckets or latency_buckets())
            instruments = _build(registry, buckets)
            state = RegistryState(instruments, collector, buckets)
            _STATES[registry] = state
        return state


@dataclass(frozen=True)
class VersionInstruments:
    """The series of a service serving several versions of one model (docs/versions.md)."""

    role: Gauge
    candidate_guard: Gauge
    shadow_skipped: Counter


_VERSIONS: weakref.WeakKeyDictionary[CollectorRegistry, VersionInstruments] = (
    weakref.WeakKeyDictionary()
)


def version_instruments_for(registry: CollectorRegistry) -> VersionInstruments:
    """Created on first use, by ``serve``: a library user's registry gets none of these."""
    m = MODEL_LABELS
    with _STATES_LOCK:
        made = _VERSIONS.get(registry)
        if made is None:
            # Like model_info: the same value in every worker, so "max" reads it once.
            made = VersionInstruments(
                role=Gauge("model_version_role", "Each loaded version (value 1) and its role: "
                           "primary, canary or shadow.", [*m, "role"], registry=registry,
                           multiprocess_mode="max"),
                candidate_guard=Gauge("model_candidate_guard", "A candidate's comparison with "
                                      "the primary that may alert (value 1).", [*m, "metric"],
                                      registry=registry, multiprocess_mode="max"),
                shadow_skipped=Counter("model_shadow_skipped", "Shadow calls skipped because "
                                       "max_concurrency were in flight.", m, registry=registry),
            )  # fmt: skip
            _VERSIONS[registry] = made
        return made
