"""The alert thresholds: every key a model may set, its rule default, unit and meaning.

This table is the one place the thresholds are defined. The exporter's config accepts exactly
these keys (``exporter.config.THRESHOLD_KEYS``), the generated thresholds recording rule fills in
these defaults for every model that sets none (``exporter.mixin.rules``), and docs/metrics.md's
threshold table is generated from it, so the four can no longer disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """One key of ``model_alert_threshold{alert=KEY}`` (and of a model config's ``thresholds``)."""

    key: str
    #: The rule default for a model that does not set the key, or ``None`` when the default is
    #: not a fixed number (see ``relative_to``) or there is none (the alert then needs the model
    #: to set it).
    default: float | None
    #: What the number measures, for the docs ("share", "seconds", ...).
    unit: str
    #: One sentence: what the threshold decides and why its default is what it is.
    description: str
    #: The alerts (and severities) that compare against it.
    used_by: str
    #: For a default derived from another key's effective value: that key and the factor.
    relative_to: tuple[str, float] | None = None


#: In the order the thresholds rule and the docs list them.
THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(
        "error_ratio",
        0.05,
        "share of calls",
        "Failed share of prediction calls above which the alert pages: one call in twenty failing "
        "is an outage for its users.",
        "ModelHighErrorRatio (critical)",
    ),
    Threshold(
        "latency_p95_seconds",
        0.5,
        "seconds",
        "p95 inference latency over all replicas above which the alert warns.",
        "ModelHighLatencyP95 (warning)",
    ),
    Threshold(
        "latency_p95_critical_seconds",
        None,
        "seconds",
        "p95 inference latency above which the alert pages: by default twice the model's own "
        "warning threshold (or twice its default), so raising the warning raises the page too.",
        "ModelHighLatencyP95 (critical)",
        relative_to=("latency_p95_seconds", 2.0),
    ),
    Threshold(
        "psi_warning",
        0.1,
        "PSI",
        "PSI of an input feature above its no-drift level that warns: 0.1 to 0.25 is the field's "
        '"moderate shift".',
        "ModelFeatureDriftPSI (warning)",
    ),
    Threshold(
        "psi_critical",
        0.25,
        "PSI",
        "PSI of an input feature above its no-drift level that pages: above 0.25 is the field's "
        '"significant shift".',
        "ModelFeatureDriftPSI (critical)",
    ),
    Threshold(
        "zscore_warning",
        1.5,
        "reference standard deviations",
        "Shift of a numeric feature's mean, beyond sampling noise, that warns.",
        "ModelFeatureMeanShift (warning)",
    ),
    Threshold(
        "zscore_critical",
        2.0,
        "reference standard deviations",
        "Shift of a numeric feature's mean, beyond sampling noise, that pages.",
        "ModelFeatureMeanShift (critical)",
    ),
    Threshold(
        "output_psi",
        0.25,
        "PSI",
        "PSI of the model's own output against its predictions on the reference data, above its "
        "no-drift level.",
        "ModelOutputDrift (warning)",
    ),
    Threshold(
        "mae_warning",
        3.5,
        "the target's unit",
        "Mean absolute error of a regression model (99% lower bound) that warns; in dollars for "
        "the fare example.",
        "ModelMAEHigh (warning)",
    ),
    Threshold(
        "mae_critical",
        5.0,
        "the target's unit",
        "Mean absolute error (99% lower bound) that pages: a fare off by more than $5 is a "
        "complaint.",
        "ModelMAEHigh (critical)",
    ),
    Threshold(
        "accuracy_min",
        None,
        "share of outcomes",
        "Accuracy floor known from the model's validation (99% upper bound below it pages); no "
        "default, so the alert applies only to models that set it.",
        "ModelAccuracyLow (critical)",
    ),
    Threshold(
        "accuracy_drop",
        0.10,
        "relative drop",
        "Drop of the hour's accuracy relative to the trailing 7 days that warns: over 10% is "
        "beyond a stable model's hour-to-hour noise.",
        "ModelAccuracyDrop (warning)",
    ),
    Threshold(
        "low_confidence_share",
        0.3,
        "share of predictions",
        "Share of predictions with confidence below 0.5, among those that report a confidence, "
        "that warns.",
        "ModelLowConfidence (warning)",
    ),
    Threshold(
        "invalid_ratio",
        0.05,
        "share of input values",
        "Share of input values that are missing, NaN, infinite, mistyped or out of domain that "
        "warns.",
        "ModelInvalidInput (warning)",
    ),
    Threshold(
        "min_samples",
        100,
        "calls or values",
        "Traffic guard of the error, latency, confidence and input-quality alerts: a share over "
        "fewer calls (or values) than this in a window is noise; the exporter exports its "
        "monitoring.min_samples here unless thresholds sets it.",
        "every ratio alert's sample-size guard",
    ),
    Threshold(
        "candidate_z_critical",
        4.265,
        "standard errors",
        "How many standard errors worse than the primary a candidate version must be (pooled z "
        "for accuracy and error ratio, Welch's t for MAE, over the last hour or 6 hours) to warn: "
        "one-sided 1e-5 per evaluation, strict because the comparison is re-evaluated for as long "
        "as the candidate runs (about 0.5% false alerts per metric per day of canary).",
        "ModelCandidateWorse (warning)",
    ),
    Threshold(
        "candidate_min_samples",
        300,
        "calls or outcomes per version",
        "Least calls (error ratio) or outcomes (accuracy, MAE) in a window each of the two "
        "versions needs before they are compared in it; proportions also need 10 expected "
        "successes and failures in each. From 300 (Welch: 299 degrees of freedom or more) the "
        "normal critical value errs by at most a third of its tail.",
        "ModelCandidateWorse's sample-size guard",
    ),
)

#: The same, by key.
BY_KEY: dict[str, Threshold] = {threshold.key: threshold for threshold in THRESHOLDS}
#: Every key a model's config and the site settings may set.
KEYS: frozenset[str] = frozenset(BY_KEY)


def effective(key: str, overrides: Mapping[str, float]) -> float | None:
    """The rule default of ``key`` in force under a site's ``overrides`` (``Settings.thresholds``):
    the override, else the shipped default, else (``relative_to``) the factor times the effective
    value of the base key; ``None`` for a key without a default (``accuracy_min``). The same
    numbers the generated thresholds rule fills in, so the dashboards show what the alerts use."""
    threshold = BY_KEY[key]
    value = overrides.get(key, threshold.default)
    if value is None and threshold.relative_to is not None:
        base_key, factor = threshold.relative_to
        base = effective(base_key, overrides)
        return None if base is None else factor * base
    return value


class Effective:
    """The effective defaults of one site, with the two ways the dashboards write them."""

    def __init__(self, overrides: Mapping[str, float]) -> None:
        self.overrides = overrides

    def __getitem__(self, key: str) -> float:
        value = effective(key, self.overrides)
        if value is None:
            raise KeyError(f"threshold {key!r} has no default")
        return value

    def text(self, key: str) -> str:
        """The number as written in a description: ``0.05``, ``2``, ``3.5``."""
        return f"{self[key]:g}"

    def percent(self, key: str) -> str:
        """A share as a percentage: ``5%``, ``30%``, ``12.5%``."""
        return f"{self[key] * 100:g}%"

    def steps(
        self, warning: str | None, critical: str | None = None, *, above: str = "red"
    ) -> tuple[tuple[str, float | None], ...]:
        """A panel's colour steps: green, orange from ``warning``'s value, ``above`` (red) from
        ``critical``'s; either may be None (a key with only a warning or only a page)."""
        steps: list[tuple[str, float | None]] = [("green", None)]
        if warning is not None:
            steps.append(("orange", self[warning]))
        if critical is not None:
            steps.append((above, self[critical]))
        return tuple(steps)
