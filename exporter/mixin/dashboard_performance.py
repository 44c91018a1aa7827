"""The performance dashboard's rows.

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py).
"""

from __future__ import annotations

from exporter.mixin import dashboard_performance_detail
from exporter.mixin.panel_layout import grouping_to_matrix, joined_columns, organize, row, sort_by
from exporter.mixin.panels import Json, heatmap, stat, table, target, threshold_series, timeseries
from exporter.mixin.settings import Settings
from exporter.mixin.thresholds import Effective


def rows(settings: Settings) -> list[Json]:
    th = Effective(settings.thresholds)
    return [
        row(
            "Now",
            [
                stat(
                    "MAE (1h)",
                    (
                        "Mean absolute error of the regression predictions whose ground truth "
                        "arrived in the last hour (model:model_absolute_error:mae1h). Orange "
                        f"from {th.text('mae_warning')}, red from {th.text('mae_critical')}: the "
                        "default warning and critical thresholds."
                    ),
                    [target("model:model_absolute_error:mae1h{@}", "{{version}}")],
                    unit="short",
                    w=4,
                    decimals=2,
                    steps=th.steps("mae_warning", "mae_critical"),
                ),
                stat(
                    "RMSE (1h)",
                    (
                        "Root mean squared error over the last hour "
                        "(model:model_squared_error:rmse1h)."
                    ),
                    [target("model:model_squared_error:rmse1h{@}", "{{version}}")],
                    unit="short",
                    w=4,
                    decimals=2,
                ),
                stat(
                    "Within $5 (1h)",
                    (
                        "Share of regression predictions within 5 of the actual value over the "
                        "last hour (model:model_absolute_error:within5_1h)."
                    ),
                    [target("model:model_absolute_error:within5_1h{@}", "{{version}}")],
                    unit="percentunit",
                    w=4,
                ),
                stat(
                    "Accuracy (1h)",
                    (
                        "Share of classification outcomes in the last hour where the predicted "
                        "class was the actual one (model:model_outcomes:accuracy1h)."
                    ),
                    [target("model:model_outcomes:accuracy1h{@}", "{{version}}")],
                    unit="percentunit",
                    w=4,
                ),
                stat(
                    "Accuracy (7d)",
                    (
                        "Accuracy over the trailing 7 days (model:model_outcomes:accuracy7d): "
                        "the baseline ModelAccuracyDrop compares the last hour with."
                    ),
                    [target("model:model_outcomes:accuracy7d{@}", "{{version}}")],
                    unit="percentunit",
                    w=4,
                ),
                stat(
                    "Ground-truth coverage (1h)",
                    (
                        "Outcomes received / predictions made over the last hour "
                        "(model:model_outcomes:coverage1h). Low coverage makes every number on "
                        "this dashboard less certain."
                    ),
                    [target("model:model_outcomes:coverage1h{@}", "{{version}}")],
                    unit="percentunit",
                    w=4,
                    steps=(("red", None), ("orange", 0.1), ("green", 0.5)),
                ),
            ],
        ),
        row(
            "Regression",
            [
                timeseries(
                    "MAE and RMSE (1h)",
                    (
                        "Mean absolute error (model:model_absolute_error:mae1h) and root mean "
                        "squared error (model:model_squared_error:rmse1h) over the last hour. "
                        "The dashed lines are the default MAE thresholds "
                        f"({th.text('mae_warning')} warning, {th.text('mae_critical')} "
                        "critical); red dashed series are the model's own mae_warning / "
                        "mae_critical."
                    ),
                    [
                        target("model:model_absolute_error:mae1h{@}", "MAE {{version}}"),
                        target("model:model_squared_error:rmse1h{@}", "RMSE {{version}}"),
                        target(
                            (
                                "max by (version, alert) (model_alert_threshold{@, "
                                'alert=~"mae_warning|mae_critical"})'
                            ),
                            "{{alert}} {{version}}",
                        ),
                    ],
                    w=8,
                    steps=th.steps("mae_warning", "mae_critical"),
                    overrides=[threshold_series("C")],
                ),
                timeseries(
                    "Share of predictions within $2 / $5 / $10 (1h)",
                    (
                        "Share of absolute errors up to 2, 5 and 10 over the last hour "
                        "(model:model_absolute_error:within2_1h / within5_1h / within10_1h)."
                    ),
                    [
                        target("model:model_absolute_error:within2_1h{@}", "within 2 {{version}}"),
                        target("model:model_absolute_error:within5_1h{@}", "within 5 {{version}}"),
                        target(
                            "model:model_absolute_error:within10_1h{@}", "within 10 {{version}}"
                        ),
                    ],
                    unit="percentunit",
                    w=8,
                    max=1,
                ),
                timeseries(
                    "Bias: mean signed error (1h)",
                    (
                        "Mean of (prediction − actual) over the last hour: above zero the "
                        "model over-predicts. Built from the positive and negative parts of "
                        "model_error_sum_total over model_absolute_error_count (no recording "
                        "rule exists for it)."
                    ),
                    [
                        target(
                            (
                                "(sum by (version) "
                                '(increase(model_error_sum_total{@, sign="positive"}[1h])) '
                                "- sum by (version) "
                                '(increase(model_error_sum_total{@, sign="negative"}[1h]))) '
                                "/ sum by (version) (increase(model_absolute_error_count{@}[1h]))"
                            ),
                            "{{version}}",
                        )
                    ],
                    w=8,
                    min=None,
                ),
                timeseries(
                    "Correlation (per process)",
                    (
                        "Pearson correlation of prediction and actual per process and window "
                        '(model_performance{metric="correlation"}). A gauge computed in one '
                        "process: compare replicas, do not add them up."
                    ),
                    [
                        target(
                            'model_performance{@, metric="correlation"}',
                            "{{window}} {{instance}} {{version}}",
                        )
                    ],
                    w=8,
                    min=-1,
                    max=1,
                ),
                heatmap(
                    "Absolute error distribution",
                    (
                        "Outcomes per absolute-error bucket (0.1 … 100) per scrape interval: a "
                        "fat tail shows as mass in the top buckets long before the MAE moves."
                    ),
                    [
                        target(
                            (
                                "sum by (le) "
                                "(increase(model_absolute_error_bucket{@}[$__rate_interval]))"
                            ),
                            "{{le}}",
                            heatmap=True,
                        )
                    ],
                    unit="short",
                    w=8,
                ),
                table(
                    "Windowed performance per process",
                    (
                        "Every model_performance gauge per process, metric and window: the "
                        "in-process view of the numbers above, for cross-checking a single "
                        "replica."
                    ),
                    [target("model_performance{@}", instant=True, table=True)],
                    w=8,
                    decimals=3,
                    transformations=[
                        organize(exclude=["Time", "__name__", "job"], rename={"Value": "value"}),
                        sort_by("metric", desc=False),
                    ],
                ),
            ],
        ),
        row(
            "Classification",
            [
                timeseries(
                    "Accuracy: last hour vs trailing 7 days",
                    (
                        "Accuracy over the last hour (model:model_outcomes:accuracy1h) and the "
                        "trailing 7 days (model:model_outcomes:accuracy7d). ModelAccuracyDrop "
                        "fires when the hour falls below the dashed series: (1 − "
                        "accuracy_drop) × the 7-day accuracy, with the accuracy_drop the alert "
                        "uses (model_alert:model_alert_threshold:effective: the model's own, "
                        f"else the default {th.text('accuracy_drop')})."
                    ),
                    [
                        target("model:model_outcomes:accuracy1h{@}", "1h {{version}}"),
                        target("model:model_outcomes:accuracy7d{@}", "7d {{version}}"),
                        target(
                            (
                                "model:model_outcomes:accuracy7d{@} * on (@fleet, model) "
                                "group_left () (1 - model_alert:model_alert_threshold:effective{@, "
                                'alert="accuracy_drop"})'
                            ),
                            "alert below {{version}}",
                        ),
                    ],
                    unit="percentunit",
                    w=12,
                    min=None,
                    max=1,
                    overrides=[threshold_series("C")],
                ),
                timeseries(
                    "Expected vs observed accuracy",
                    (
                        "Accuracy the model's own confidence promises "
                        '(model_performance{metric="expected_accuracy"}, per process) against '
                        "the accuracy observed fleet-wide over the last hour "
                        "(model:model_outcomes:accuracy1h). A gap means the confidence is "
                        "miscalibrated."
                    ),
                    [
                        target(
                            'model_performance{@, metric="expected_accuracy"}',
                            "expected {{window}} {{instance}}",
                        ),
                        target("model:model_outcomes:accuracy1h{@}", "observed 1h {{version}}"),
                    ],
                    unit="percentunit",
                    w=12,
                    min=None,
                    max=1,
                ),
                table(
                    "Per-class precision, recall and F1 (1h)",
                    (
                        "Per-class quality over the last hour, from outcome counters summed "
                        "over every replica (model_class:model_outcomes:precision1h / recall1h "
                        "/ f1_1h)."
                    ),
                    [
                        target(
                            "model_class:model_outcomes:precision1h{@}", instant=True, table=True
                        ),
                        target("model_class:model_outcomes:recall1h{@}", instant=True, table=True),
                        target("model_class:model_outcomes:f1_1h{@}", instant=True, table=True),
                    ],
                    unit="percentunit",
                    w=8,
                    h=9,
                    decimals=3,
                    transformations=joined_columns(
                        ["precision", "recall", "F1"],
                        sort="F1",
                        desc=False,
                        exclude=["Time", "__name__", "model"],
                    ),  # fmt: skip
                ),
                timeseries(
                    "F1 per class (1h)",
                    (
                        "F1 score per class over the last hour "
                        "(model_class:model_outcomes:f1_1h): a single class collapsing is "
                        "often invisible in the overall accuracy."
                    ),
                    [target("model_class:model_outcomes:f1_1h{@}", "{{class}} ({{version}})")],
                    unit="percentunit",
                    w=8,
                    h=9,
                    max=1,
                ),
                table(
                    "Confusion matrix (time range)",
                    (
                        "Outcomes over the dashboard's time range: one row per predicted "
                        "class, one column per actual class (model_outcomes_total). "
                        "Off-diagonal cells are the mistakes."
                    ),
                    [
                        target(
                            (
                                "sum by (predicted, actual) "
                                "(increase(model_outcomes_total{@}[$__range]))"
                            ),
                            instant=True,
                            table=True,
                        )
                    ],
                    w=8,
                    h=9,
                    decimals=0,
                    transformations=[grouping_to_matrix("predicted", "actual")],
                ),
                timeseries(
                    "Calibration gap (per process)",
                    (
                        "Gap between confidence and observed accuracy per process and window "
                        '(model_performance{metric="calibration_gap"}); 0 is perfectly '
                        "calibrated."
                    ),
                    [
                        target(
                            'model_performance{@, metric="calibration_gap"}',
                            "{{window}} {{instance}} {{version}}",
                        )
                    ],
                    unit="percentunit",
                    w=12,
                ),
                timeseries(
                    "Macro F1 (per process)",
                    (
                        "Unweighted mean of the per-class F1 per process and window "
                        '(model_performance{metric="macro_f1"}).'
                    ),
                    [
                        target(
                            'model_performance{@, metric="macro_f1"}',
                            "{{window}} {{instance}} {{version}}",
                        )
                    ],
                    unit="percentunit",
                    w=12,
                    max=1,
                ),
            ],
        ),
        *dashboard_performance_detail.rows(settings),
    ]
