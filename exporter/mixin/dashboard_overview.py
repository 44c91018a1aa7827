"""The overview dashboard's rows.

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py).
"""

from __future__ import annotations

from exporter.mixin import dashboard_overview_detail
from exporter.mixin.panel_layout import row
from exporter.mixin.panels import (
    Json,
    heatmap,
    piechart,
    stat,
    target,
    threshold_series,
    timeseries,
)
from exporter.mixin.settings import Settings
from exporter.mixin.thresholds import Effective


def rows(settings: Settings) -> list[Json]:
    th = Effective(settings.thresholds)
    return [
        row(
            "Now",
            [
                stat(
                    "Predictions per second (5m)",
                    (
                        "Successful predictions per second over the last 5 minutes, summed "
                        "over every replica and the selected versions "
                        "(model:model_predictions:rate5m)."
                    ),
                    [target("sum(model:model_predictions:rate5m{@})", "predictions/s")],
                    unit="reqps",
                    w=4,
                ),
                stat(
                    "Error ratio (5m)",
                    (
                        "Failed predictions / all prediction attempts over the last 5 minutes, "
                        "for the selected versions together (from "
                        "model:model_prediction_errors:rate5m and "
                        f"model:model_predictions:rate5m). Red from {th.percent('error_ratio')}, "
                        "the default error_ratio of ModelHighErrorRatio."
                    ),
                    [
                        target(
                            (
                                "sum(model:model_prediction_errors:rate5m{@}) / "
                                "(sum(model:model_prediction_errors:rate5m{@}) + "
                                "sum(model:model_predictions:rate5m{@}))"
                            ),
                            "error ratio",
                        )
                    ],
                    unit="percentunit",
                    w=4,
                    decimals=2,
                    steps=th.steps(None, "error_ratio"),
                ),
                stat(
                    "Latency p95 (5m)",
                    (
                        "95th percentile inference latency over 5 minutes per version, from "
                        "latency buckets summed over every replica "
                        "(model:model_prediction_duration_seconds:p95_5m). Orange from "
                        f"{th.text('latency_p95_seconds')} s, red from "
                        f"{th.text('latency_p95_critical_seconds')} s: the default warning and "
                        "critical thresholds of ModelHighLatencyP95."
                    ),
                    [target("model:model_prediction_duration_seconds:p95_5m{@}", "{{version}}")],
                    unit="s",
                    w=4,
                    steps=th.steps("latency_p95_seconds", "latency_p95_critical_seconds"),
                ),
                stat(
                    "Mean confidence (5m)",
                    (
                        "Mean confidence of the predicted class over 5 minutes per version "
                        "(model:model_prediction_confidence:mean5m). No data for models "
                        "without a confidence, such as regressors."
                    ),
                    [target("model:model_prediction_confidence:mean5m{@}", "{{version}}")],
                    unit="percentunit",
                    w=4,
                    min=0,
                    max=1,
                ),
                stat(
                    "Low-confidence share (5m)",
                    (
                        "Share of predictions with confidence below 0.5, of those with a "
                        "confidence, over 5 minutes "
                        "(model:model_predictions_low_confidence:share5m). Orange from "
                        f"{th.percent('low_confidence_share')}, the default "
                        "low_confidence_share of ModelLowConfidence."
                    ),
                    [target("model:model_predictions_low_confidence:share5m{@}", "{{version}}")],
                    unit="percentunit",
                    w=4,
                    steps=th.steps("low_confidence_share"),
                ),
                stat(
                    "Invalid input ratio (5m)",
                    (
                        "Invalid input values / all input values over 5 minutes "
                        "(model:model_input_invalid:ratio5m). Orange from "
                        f"{th.percent('invalid_ratio')}, the default invalid_ratio of "
                        "ModelInvalidInput."
                    ),
                    [target("model:model_input_invalid:ratio5m{@}", "{{version}}")],
                    unit="percentunit",
                    w=4,
                    steps=th.steps("invalid_ratio"),
                ),
            ],
        ),
        row(
            "Traffic and errors",
            [
                timeseries(
                    "Predictions per second by version",
                    (
                        "Successful predictions per second by version, summed over every "
                        "replica (model:model_predictions:rate5m). A version switch shows as "
                        "one line handing over to the next."
                    ),
                    [target("model:model_predictions:rate5m{@}", "{{version}}")],
                    unit="reqps",
                    w=8,
                ),
                timeseries(
                    "Error ratio by version",
                    (
                        "Failed predictions / all attempts per version over 5 minutes "
                        "(model:model_prediction_error_ratio:rate5m). The dashed line is the "
                        f"default alert threshold ({th.percent('error_ratio')}); a red dashed "
                        "series is the model's own "
                        "`error_ratio` threshold when its config sets one."
                    ),
                    [
                        target("model:model_prediction_error_ratio:rate5m{@}", "{{version}}"),
                        target(
                            'max by (version) (model_alert_threshold{@, alert="error_ratio"})',
                            "threshold {{version}}",
                        ),
                    ],
                    unit="percentunit",
                    w=8,
                    steps=th.steps(None, "error_ratio"),
                    overrides=[threshold_series("B")],
                ),
                timeseries(
                    "Errors per second by exception",
                    (
                        "Failed predictions per second by exception class (the 20 most "
                        "frequent kinds, then __other__), summed over the selected instances. "
                        "The total is model:model_prediction_errors:rate5m; this breakdown "
                        "needs the raw counter."
                    ),
                    [
                        target(
                            (
                                "sum by (version, error) "
                                "(rate(model_prediction_errors_total{@}[$__rate_interval]))"
                            ),
                            "{{error}} ({{version}})",
                        )
                    ],
                    unit="reqps",
                    w=8,
                    stacked=True,
                ),
            ],
        ),
        row(
            "Latency",
            [
                timeseries(
                    "Latency p50 / p95 / p99",
                    (
                        "Inference latency quantiles over 5 minutes per version, from buckets "
                        "summed over every replica "
                        "(model:model_prediction_duration_seconds:p50_5m / p95_5m / p99_5m). "
                        "The dashed lines are the default p95 alert thresholds "
                        f"({th.text('latency_p95_seconds')} s warning, "
                        f"{th.text('latency_p95_critical_seconds')} s critical); a red dashed "
                        "series is the model's own `latency_p95_seconds` when set."
                    ),
                    [
                        target(
                            "model:model_prediction_duration_seconds:p50_5m{@}", "p50 {{version}}"
                        ),
                        target(
                            "model:model_prediction_duration_seconds:p95_5m{@}", "p95 {{version}}"
                        ),
                        target(
                            "model:model_prediction_duration_seconds:p99_5m{@}", "p99 {{version}}"
                        ),
                        target(
                            (
                                "max by (version) (model_alert_threshold{@, "
                                'alert="latency_p95_seconds"})'
                            ),
                            "p95 threshold {{version}}",
                        ),
                    ],
                    unit="s",
                    w=12,
                    steps=th.steps("latency_p95_seconds", "latency_p95_critical_seconds"),
                    overrides=[threshold_series("D")],
                ),
                heatmap(
                    "Latency distribution",
                    (
                        "Predictions per latency bucket per scrape interval, summed over the "
                        "selected versions and instances: shows a second mode (a slow path, a "
                        "cold cache) that quantiles hide."
                    ),
                    [
                        target(
                            (
                                "sum by (le) "
                                "(increase(model_prediction_duration_seconds_bucket{@}[$__rate_interval]))"
                            ),
                            "{{le}}",
                            heatmap=True,
                        )
                    ],
                    unit="s",
                    w=12,
                ),
            ],
        ),
        row(
            "Predictions and confidence",
            [
                timeseries(
                    "Class mix (share of the last hour)",
                    (
                        "Share of each predicted class (intent) over the last hour per "
                        "version, summed over every replica "
                        "(model_predicted:model_predictions:share1h). A regression model has a "
                        "single empty class."
                    ),
                    [
                        target(
                            "model_predicted:model_predictions:share1h{@}",
                            "{{predicted}} ({{version}})",
                        )
                    ],
                    unit="percentunit",
                    w=10,
                    max=1,
                ),
                piechart(
                    "Class mix now",
                    (
                        "Current share of each predicted class over the last hour "
                        "(model_predicted:model_predictions:share1h)."
                    ),
                    [
                        target(
                            "model_predicted:model_predictions:share1h{@}",
                            "{{predicted}} ({{version}})",
                            instant=True,
                        )
                    ],
                    unit="percentunit",
                    w=6,
                ),
                timeseries(
                    "Predictions by confidence bucket",
                    (
                        "Predictions per second by confidence bucket: low (< 0.5), medium, "
                        "high (>= 0.8), none (no confidence). The low share is "
                        "model:model_predictions_low_confidence:share5m; this breakdown needs "
                        "the raw counter."
                    ),
                    [
                        target(
                            (
                                "sum by (confidence_bucket) "
                                "(rate(model_predictions_total{@}[$__rate_interval]))"
                            ),
                            "{{confidence_bucket}}",
                        )
                    ],
                    unit="reqps",
                    w=8,
                    stacked=True,
                ),
                timeseries(
                    "Mean confidence by version",
                    (
                        "Mean confidence of the predicted class over 5 minutes per version "
                        "(model:model_prediction_confidence:mean5m)."
                    ),
                    [target("model:model_prediction_confidence:mean5m{@}", "{{version}}")],
                    unit="percentunit",
                    w=8,
                    max=1,
                ),
                timeseries(
                    "Low-confidence share by version",
                    (
                        "Share of predictions with confidence below 0.5 over 5 minutes "
                        "(model:model_predictions_low_confidence:share5m). The dashed line is "
                        f"the default alert threshold ({th.percent('low_confidence_share')})."
                    ),
                    [target("model:model_predictions_low_confidence:share5m{@}", "{{version}}")],
                    unit="percentunit",
                    w=8,
                    max=1,
                    steps=th.steps("low_confidence_share"),
                ),
                heatmap(
                    "Confidence distribution",
                    (
                        "Predictions per confidence bucket (0.1 … 0.9, 0.95, 0.99, 1) per "
                        "scrape interval. Mass moving down from the top buckets is the first "
                        "sign of inputs the model has not seen."
                    ),
                    [
                        target(
                            (
                                "sum by (le) "
                                "(increase(model_prediction_confidence_bucket{@}[$__rate_interval]))"
                            ),
                            "{{le}}",
                            heatmap=True,
                        )
                    ],
                    unit="short",
                    w=8,
                ),
            ],
        ),
        *dashboard_overview_detail.rows(settings),
    ]
