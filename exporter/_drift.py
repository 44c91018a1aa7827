"""Drift and windowed performance of one window: numbers in, numbers out.

The statistics core of the monitor: window totals and samples (numpy arrays) go in, frozen
results come out. No Prometheus object and no lock here; the monitor gathers the windows
(:mod:`exporter._streams`, merged across workers by :mod:`exporter._exchange`) and the
scrape turns the results into gauges (:class:`exporter.metrics.DriftCollector`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from exporter import performance as perf
from exporter import stats

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature (or the output) in one window; statistics are None until ``ready``."""

    feature: str
    window: str
    kind: Literal["numeric", "categorical"]
    samples: int
    ready: bool
    psi: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    zscore: float | None = None
    current_mean: float | None = None
    js_distance: float | None = None
    chi2_pvalue: float | None = None


@dataclass(frozen=True)
class WindowPerformance:
    """Performance in one window once ground truth arrived; metrics are None until ``ready``.

    ``metrics`` holds ``mae``, ``rmse``, ``correlation``, ``within_2/5/10`` (regression) or
    ``accuracy``, ``macro_f1``, ``calibration_gap``, ``expected_accuracy`` (classification);
    ``classes`` holds per-class ``precision``, ``recall`` and ``f1``.
    """

    window: str
    samples: int
    ready: bool
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    classes: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftSnapshot:
    """Drift of every watched feature and window at ``taken_at`` (window-clock seconds), with the
    windowed performance and the number of predictions waiting for ground truth."""

    taken_at: float
    features: Mapping[str, Mapping[str, FeatureDrift]]
    performance: Mapping[str, WindowPerformance] = field(default_factory=dict)
    pending: int | None = None

    def rows(self) -> Iterator[FeatureDrift]:
        for windows in self.features.values():
            yield from windows.values()

    def __getitem__(self, feature: str) -> Mapping[str, FeatureDrift]:
        return self.features[feature]


def numeric_drift(
    feature: str,
    window: str,
    counts: FloatArray,
    total: float,
    share: FloatArray,
    reference_mean: float,
    reference_std: float,
    samples: tuple[FloatArray, FloatArray] | None,
) -> FeatureDrift:
    """Drift of a numeric window with enough values: ``counts`` per reference bin, ``total`` the
    sum of its values, ``share`` and ``reference_mean`` what the reference expects, and
    ``samples`` the (reference, window) samples for the KS test, or None for no KS test."""
    n = int(round(counts.sum()))
    z = stats.mean_zscore(reference_mean, reference_std, total, n)
    no_ks = stats.KsResult(math.nan, math.nan)
    ks = stats.ks_2samp_sorted(*samples) if samples is not None else no_ks
    return FeatureDrift(
        feature, window, "numeric", n, ready=True,
        psi=stats.psi(share, counts).statistic,
        ks_statistic=finite_or_none(ks.statistic),
        ks_pvalue=finite_or_none(ks.pvalue),
        zscore=finite_or_none(z.statistic),
        current_mean=finite_or_none(z.current_mean),
        js_distance=finite_or_none(stats.js_distance(share, counts)),
    )  # fmt: skip


def categorical_drift(
    feature: str, window: str, counts: FloatArray, share: FloatArray
) -> FeatureDrift:
    """Drift of a categorical window with enough values: ``counts`` per reference category."""
    return FeatureDrift(
        feature, window, "categorical", int(round(counts.sum())), ready=True,
        psi=stats.psi(share, counts).statistic,
        js_distance=finite_or_none(stats.js_distance(share, counts)),
        chi2_pvalue=finite_or_none(stats.chi_square(share, counts).pvalue),
    )  # fmt: skip


def window_performance(
    window: str,
    regression: bool,
    outcomes: FloatArray,
    confidences: FloatArray,
    names: list[str],
    min_samples: int,
) -> WindowPerformance:
    """Performance of one window from the totals of its performance and confidence streams;
    ``names`` is the class name of each performance slot (classification)."""
    samples = int(round(outcomes[0]))
    if regression:
        if samples < min_samples:
            return WindowPerformance(window, samples, ready=False)
        return WindowPerformance(window, samples, True, perf.regression_metrics(outcomes))
    metrics: dict[str, float | None] = {}
    classes: Mapping[str, Mapping[str, float | None]] = {}
    ready = samples >= min_samples
    if ready:
        overall, classes = perf.classification_metrics(outcomes, names)
        metrics.update(overall)
    # Expected accuracy needs no labels: the mean confidence of every prediction in the window.
    confident = confidences[0]
    if confident >= min_samples:
        metrics["expected_accuracy"] = float(confidences[1] / confident)
    return WindowPerformance(window, samples, ready, metrics, classes)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
