"""The performance dashboard's later rows.

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py).
"""

from __future__ import annotations

from exporter.mixin.panel_layout import row
from exporter.mixin.panels import Json, stat, target, timeseries
from exporter.mixin.settings import Settings


def rows(settings: Settings) -> list[Json]:
    return [
        row(
            "Ground-truth join",
            [
                timeseries(
                    "Ground-truth coverage over time (1h)",
                    (
                        "Outcomes received / predictions made over the last hour "
                        "(model:model_outcomes:coverage1h)."
                    ),
                    [target("model:model_outcomes:coverage1h{@}", "{{version}}")],
                    unit="percentunit",
                    w=8,
                    max=1,
                ),
                timeseries(
                    "Pending outcomes",
                    (
                        "Predictions waiting for their ground truth in each process "
                        "(model_outcomes_pending). Steady growth means feedback stopped "
                        "arriving."
                    ),
                    [
                        target(
                            "sum by (version, instance) (model_outcomes_pending{@})",
                            "{{instance}} ({{version}})",
                        )
                    ],
                    w=8,
                ),
                timeseries(
                    "Outcome delay p50 / p95",
                    (
                        "Time from a prediction to its ground truth "
                        "(model_outcome_delay_seconds), median and 95th percentile."
                    ),
                    [
                        target(
                            (
                                "histogram_quantile(0.5, sum by (version, le) "
                                "(rate(model_outcome_delay_seconds_bucket{@}[$__rate_interval])))"
                            ),
                            "p50 {{version}}",
                        ),
                        target(
                            (
                                "histogram_quantile(0.95, sum by (version, le) "
                                "(rate(model_outcome_delay_seconds_bucket{@}[$__rate_interval])))"
                            ),
                            "p95 {{version}}",
                        ),
                    ],
                    unit="s",
                    w=8,
                ),
                timeseries(
                    "Outcomes received and expired per second",
                    (
                        "Classification outcomes (model_outcomes_total) and regression "
                        "outcomes (model_absolute_error_count) received per second, and "
                        "predictions whose ground truth never came, dropped by TTL or size cap "
                        "(model_outcomes_expired_total)."
                    ),
                    [
                        target(
                            "sum by (version) (rate(model_outcomes_total{@}[$__rate_interval]))",
                            "classification {{version}}",
                        ),
                        target(
                            (
                                "sum by (version) "
                                "(rate(model_absolute_error_count{@}[$__rate_interval]))"
                            ),
                            "regression {{version}}",
                        ),
                        target(
                            (
                                "sum by (version) "
                                "(rate(model_outcomes_expired_total{@}[$__rate_interval]))"
                            ),
                            "expired {{version}}",
                        ),
                    ],
                    unit="cps",
                    w=16,
                ),
                stat(
                    "Expired outcomes (time range)",
                    (
                        "Predictions whose ground truth never came in the dashboard's time "
                        "range (model_outcomes_expired_total): they are missing from every "
                        "metric above."
                    ),
                    [target("sum(increase(model_outcomes_expired_total{@}[$__range]))", "expired")],
                    unit="short",
                    w=8,
                    h=8,
                    decimals=0,
                    steps=(("green", None), ("orange", 1)),
                ),
            ],
        ),
        row(
            "What the performance alerts compare",
            [
                timeseries(
                    "MAE and its 99% lower bound per alert window",
                    (
                        "MAE over 2m, 15m and 1h (model:model_absolute_error:mae*) and MAE − "
                        "2.326 standard errors (model:model_absolute_error:mae_lower*), over "
                        "30 outcomes. ModelMAEHigh fires when the lower bound passes "
                        "mae_warning or mae_critical."
                    ),
                    [
                        target("model:model_absolute_error:mae2m{@}", "{{version}} MAE 2m"),
                        target("model:model_absolute_error:mae15m{@}", "{{version}} MAE 15m"),
                        target(
                            "model:model_absolute_error:mae_lower2m{@}",
                            "{{version}} lower bound 2m",
                        ),
                        target(
                            "model:model_absolute_error:mae_lower15m{@}",
                            "{{version}} lower bound 15m",
                        ),
                        target(
                            "model:model_absolute_error:mae_lower1h{@}",
                            "{{version}} lower bound 1h",
                        ),
                        target(
                            (
                                "max by (alert) (model_alert:model_alert_threshold:effective{@, "
                                'alert=~"mae_warning|mae_critical"})'
                            ),
                            "threshold {{alert}}",
                        ),
                    ],
                    w=8,
                ),
                timeseries(
                    "Accuracy and its 99% upper bound per alert window",
                    (
                        "Accuracy over 2m and 15m (model:model_outcomes:accuracy*) and "
                        "accuracy + 2.326 standard errors "
                        "(model:model_outcomes:accuracy_upper*), over 30 outcomes. "
                        "ModelAccuracyLow fires when the upper bound falls below the model's "
                        "accuracy_min."
                    ),
                    [
                        target("model:model_outcomes:accuracy2m{@}", "{{version}} accuracy 2m"),
                        target("model:model_outcomes:accuracy15m{@}", "{{version}} accuracy 15m"),
                        target(
                            "model:model_outcomes:accuracy_upper2m{@}", "{{version}} upper bound 2m"
                        ),
                        target(
                            "model:model_outcomes:accuracy_upper15m{@}",
                            "{{version}} upper bound 15m",
                        ),
                        target(
                            "model:model_outcomes:accuracy_upper1h{@}", "{{version}} upper bound 1h"
                        ),
                    ],
                    unit="percentunit",
                    w=8,
                ),
                timeseries(
                    "Outcomes per performance window",
                    (
                        "Ground-truth outcomes in each window: regression "
                        "(model:model_absolute_error:count*) and classification "
                        "(model:model_outcomes:count*). A window speaks from 30 outcomes."
                    ),
                    [
                        target(
                            "model:model_absolute_error:count2m{@}", "{{version}} regression 2m"
                        ),
                        target(
                            "model:model_absolute_error:count15m{@}", "{{version}} regression 15m"
                        ),
                        target(
                            "model:model_absolute_error:count1h{@}", "{{version}} regression 1h"
                        ),
                        target("model:model_outcomes:count2m{@}", "{{version}} classification 2m"),
                        target(
                            "model:model_outcomes:count15m{@}", "{{version}} classification 15m"
                        ),
                        target("model:model_outcomes:count1h{@}", "{{version}} classification 1h"),
                    ],
                    w=8,
                ),
            ],
            collapsed=True,
        ),
    ]
