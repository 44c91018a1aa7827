"""The overview dashboard's later rows.

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py).
"""

from __future__ import annotations

from exporter.mixin.panel_layout import organize, row, sort_by
from exporter.mixin.panels import Json, stat, table, target, timeseries
from exporter.mixin.settings import Settings
from exporter.mixin.thresholds import Effective


def rows(settings: Settings) -> list[Json]:
    th = Effective(settings.thresholds)
    return [
        row(
            "Input data quality",
            [
                timeseries(
                    "Invalid input ratio by version",
                    (
                        "Invalid values / (valid + invalid) values over 5 minutes "
                        "(model:model_input_invalid:ratio5m). Invalid values are kept out of "
                        "the drift statistics. The dashed line is the default alert threshold "
                        f"({th.percent('invalid_ratio')})."
                    ),
                    [target("model:model_input_invalid:ratio5m{@}", "{{version}}")],
                    unit="percentunit",
                    w=8,
                    steps=th.steps("invalid_ratio"),
                ),
                timeseries(
                    "Invalid values per second by feature and reason",
                    (
                        "Invalid values per second by feature and reason (missing, nan, inf, "
                        "wrong_type, out_of_domain, unknown_category); __prediction__ is a bad "
                        "model output and __confidence__ a bad confidence. Only non-zero "
                        "series."
                    ),
                    [
                        target(
                            (
                                "sum by (feature, reason) "
                                "(rate(model_input_invalid_total{@}[$__rate_interval])) > 0"
                            ),
                            "{{feature}} / {{reason}}",
                        )
                    ],
                    unit="cps",
                    w=8,
                    stacked=True,
                ),
                table(
                    "Invalid values in the time range",
                    (
                        "Invalid values counted over the dashboard's time range, by feature "
                        "and reason, largest first."
                    ),
                    [
                        target(
                            (
                                "sum by (feature, reason) "
                                "(increase(model_input_invalid_total{@}[$__range])) > 0"
                            ),
                            instant=True,
                            table=True,
                        )
                    ],
                    w=8,
                    decimals=0,
                    transformations=[
                        organize(rename={"Value": "invalid values"}),
                        sort_by("invalid values", desc=True),
                    ],
                ),
            ],
        ),
        row(
            "Deployment",
            [
                table(
                    "Live versions (model_info)",
                    (
                        "Every process exporting the model: version, stage and the fingerprint "
                        "of the reference profile its drift is measured against. Two "
                        "fingerprints for one version mean replicas compare against different "
                        "profiles."
                    ),
                    [
                        target(
                            (
                                "max by (@fleet, model, version, stage, reference, instance) "
                                "(model_info{@})"
                            ),
                            instant=True,
                            table=True,
                        )
                    ],
                    w=12,
                    h=7,
                    transformations=[organize(exclude=["Time", "Value"])],
                ),
                stat(
                    "Processes",
                    ("Processes (replicas, workers) currently exporting the model, by version."),
                    [target("count by (version) (model_info{@})", "{{version}}")],
                    unit="short",
                    w=4,
                    h=7,
                    decimals=0,
                ),
                timeseries(
                    "Monitor internal errors",
                    (
                        "Errors inside the monitor itself per second (the prediction was still "
                        "served). Anything above zero is a bug to report."
                    ),
                    [
                        target(
                            (
                                "sum by (instance) "
                                "(rate(model_monitor_internal_errors_total{@}[$__rate_interval]))"
                            ),
                            "{{instance}}",
                        )
                    ],
                    unit="cps",
                    w=8,
                    h=7,
                    steps=(("green", None), ("red", 1e-09)),
                ),
                table(
                    "Alert thresholds in force",
                    (
                        "The threshold each alert rule uses for this model: the model's own "
                        "value from its exporter config (model_alert_threshold), or the rule "
                        "default where it sets none."
                    ),
                    [
                        target(
                            "model_alert:model_alert_threshold:effective{@}",
                            instant=True,
                            table=True,
                        )
                    ],
                    w=24,
                    decimals=3,
                    transformations=[
                        organize(exclude=["Time", "__name__"], rename={"Value": "threshold"})
                    ],
                ),
            ],
        ),
        row(
            "What the error and latency alerts compare",
            [
                timeseries(
                    "Error ratio per alert window",
                    (
                        "errors / calls over 3m, 15m and 1h, summed over every replica "
                        "(model:model_prediction_error_ratio:rate3m, rate15m, rate1h). "
                        "ModelHighErrorRatio fires when the 3m ratio, or both the 1h and the "
                        "15m ratio, pass error_ratio with enough calls."
                    ),
                    [
                        target("model:model_prediction_error_ratio:rate3m{@}", "{{version}} 3m"),
                        target("model:model_prediction_error_ratio:rate15m{@}", "{{version}} 15m"),
                        target("model:model_prediction_error_ratio:rate1h{@}", "{{version}} 1h"),
                        target(
                            (
                                "max by (alert) (model_alert:model_alert_threshold:effective{@, "
                                'alert=~"error_ratio"})'
                            ),
                            "threshold {{alert}}",
                        ),
                    ],
                    unit="percentunit",
                    w=8,
                ),
                timeseries(
                    "Calls per alert window (sample-size guard)",
                    (
                        "Calls (answered or failed) in each window "
                        "(model:model_prediction_calls:increase3m, 5m, 15m, 1h). A ratio or "
                        "quantile alert speaks only over min_samples calls: below the line, "
                        "the window is too small to judge."
                    ),
                    [
                        target("model:model_prediction_calls:increase3m{@}", "{{version}} 3m"),
                        target("model:model_prediction_calls:increase5m{@}", "{{version}} 5m"),
                        target("model:model_prediction_calls:increase15m{@}", "{{version}} 15m"),
                        target("model:model_prediction_calls:increase1h{@}", "{{version}} 1h"),
                        target(
                            (
                                "max by (alert) (model_alert:model_alert_threshold:effective{@, "
                                'alert=~"min_samples"})'
                            ),
                            "threshold {{alert}}",
                        ),
                    ],
                    w=8,
                ),
                timeseries(
                    "p95 latency per alert window",
                    (
                        "p95 from the summed buckets over 3m, 15m and 1h "
                        "(model:model_prediction_duration_seconds:p95_3m, p95_15m, p95_1h), "
                        "with the warning and critical thresholds."
                    ),
                    [
                        target(
                            "model:model_prediction_duration_seconds:p95_3m{@}", "{{version}} 3m"
                        ),
                        target(
                            "model:model_prediction_duration_seconds:p95_15m{@}", "{{version}} 15m"
                        ),
                        target(
                            "model:model_prediction_duration_seconds:p95_1h{@}", "{{version}} 1h"
                        ),
                        target(
                            (
                                "max by (alert) (model_alert:model_alert_threshold:effective{@, "
                                'alert=~"latency_p95_seconds|latency_p95_critical_seconds"})'
                            ),
                            "threshold {{alert}}",
                        ),
                    ],
                    unit="s",
                    w=8,
                ),
            ],
            collapsed=True,
        ),
    ]
