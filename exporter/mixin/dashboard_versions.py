"""The versions dashboard's rows: a model's primary and its candidates (canary, shadow) side by
side, and the significance of their differences (recording.yml, model-exporter-versions).

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py). Every
panel reads recording rules: the comparison is only fair between numbers of the same window
computed the same way, which is what the rules record per version.
"""

from __future__ import annotations

from exporter.mixin.panel_layout import joined_columns, organize, row, sort_by
from exporter.mixin.panels import Json, table, target, threshold_series, timeseries
from exporter.mixin.settings import Settings
from exporter.mixin.thresholds import Effective

#: The per-version value of each compared metric (error ratio, accuracy, MAE) in a window.
VALUE = "model_metric:model_compare_value:{window}"
SAMPLES = "model_metric:model_compare_samples:{window}"
STATISTIC = "model_metric:model_candidate_worse:zscore{window}"
ROLE = "model_role:model_version_role:dedup"
#: The windows the versions are compared over (recording.yml, model-exporter-versions).
WINDOWS = ("1h", "6h")


def _threshold(key: str) -> str:
    """The threshold the alert uses for the model (its own or the default), one line."""
    return f'max by (alert) (model_alert:model_alert_threshold:effective{{@, alert="{key}"}})'


def _value(metric: str, title: str, description: str, unit: str) -> Json:
    return timeseries(
        title,
        description,
        [
            target(f'{VALUE.format(window=w)}{{@, metric="{metric}"}}', f"{{{{version}}}} {w}")
            for w in WINDOWS
        ],
        unit=unit,
        w=8,
    )


def rows(settings: Settings) -> list[Json]:
    th = Effective(settings.thresholds)
    critical = th.text("candidate_z_critical")
    min_samples = th.text("candidate_min_samples")
    return [
        row(
            "Versions",
            [
                table(
                    "Versions and their roles",
                    (
                        "Every version the service loaded and its role "
                        "(model_role:model_version_role:dedup): the primary answers, a canary "
                        "answers its share of the requests, a shadow sees requests without its "
                        "answer being returned. Each candidate is compared with the primary."
                    ),
                    [target(f"{ROLE}{{@}}", instant=True, table=True)],
                    w=8,
                    transformations=[
                        organize(exclude=["Time", "__name__", "Value"]),
                        sort_by("role", desc=False),
                    ],
                ),
                timeseries(
                    "Traffic share by version (5m)",
                    (
                        "Each version's share of the model's predictions over 5 minutes "
                        "(model:model_predictions:rate5m over their sum). A shadow counts the "
                        "requests it saw, so the shares of a model with a shadow add up to "
                        "more than one."
                    ),
                    [
                        target(
                            (
                                "model:model_predictions:rate5m{@} / on (@fleet, model) "
                                "group_left () sum by (@fleet, model) "
                                "(model:model_predictions:rate5m{@})"
                            ),
                            "{{version}}",
                        )
                    ],
                    unit="percentunit",
                    w=8,
                ),
                timeseries(
                    "Latency p95 by version (1h)",
                    (
                        "95th percentile of the inference latency per version over the last "
                        "hour, from buckets summed over replicas "
                        "(model:model_prediction_duration_seconds:p95_1h)."
                    ),
                    [target("model:model_prediction_duration_seconds:p95_1h{@}", "{{version}}")],
                    unit="s",
                    w=8,
                ),
                timeseries(
                    "Shadow calls skipped per second",
                    (
                        "Requests a shadow did not see because max_concurrency of its calls were "
                        "in flight in a worker (model_shadow_skipped_total, summed over the "
                        "selected instances): a shadow slower than the traffic. Its comparison "
                        "then covers fewer requests; its timeouts are its errors "
                        "(ShadowTimeout)."
                    ),
                    [
                        target(
                            (
                                "sum by (version) "
                                "(rate(model_shadow_skipped_total{@}[$__rate_interval]))"
                            ),
                            "{{version}}",
                        )
                    ],
                    unit="reqps",
                    w=24,
                ),
            ],
        ),
        row(
            "Compared over the last hour",
            [
                _value(
                    "error_ratio",
                    "Error ratio by version (1h, 6h)",
                    (
                        "Failed calls / all calls per version over the last hour and the last "
                        '6 hours (model_metric:model_compare_value:1h / 6h{metric="error_ratio"}).'
                    ),
                    "percentunit",
                ),
                _value(
                    "accuracy",
                    "Accuracy by version (1h, 6h)",
                    (
                        "Correct / all classification outcomes per version over the last hour "
                        'and the last 6 hours (model_metric:model_compare_value:1h / 6h{metric="'
                        'accuracy"}).'
                    ),
                    "percentunit",
                ),
                timeseries(
                    "MAE and spread of |error| by version (1h, 6h)",
                    (
                        "Mean absolute error per version over the last hour and the last 6 hours "
                        '(model_metric:model_compare_value:1h / 6h{metric="mae"}) and the '
                        "standard deviation of the absolute errors, the square root of "
                        "model_metric:model_compare_variance:1h / 6h, which Welch's t weighs the "
                        "difference of two MAEs by."
                    ),
                    [
                        *(
                            target(
                                f'{VALUE.format(window=w)}{{@, metric="mae"}}',
                                f"MAE {{{{version}}}} {w}",
                            )
                            for w in WINDOWS
                        ),
                        *(
                            target(
                                f"sqrt(model_metric:model_compare_variance:{w}{{@}})",
                                f"std of |error| {{{{version}}}} {w}",
                            )
                            for w in WINDOWS
                        ),
                    ],
                    unit="short",
                    w=8,
                ),
                timeseries(
                    "Calls and outcomes per version (1h, 6h)",
                    (
                        "The sample size of each comparison over the last hour and the last 6 "
                        "hours (model_metric:model_compare_samples:1h / 6h): calls for the error "
                        "ratio, outcomes for accuracy and MAE. Two versions are compared in a "
                        f"window from candidate_min_samples ({min_samples}, the dashed series) "
                        "each."
                    ),
                    [
                        *(
                            target(
                                f"{SAMPLES.format(window=w)}{{@}}",
                                f"{{{{metric}}}} {{{{version}}}} {w}",
                            )
                            for w in WINDOWS
                        ),
                        target(_threshold("candidate_min_samples"), "candidate_min_samples"),
                    ],
                    unit="short",
                    w=12,
                    overrides=[threshold_series("C")],
                ),
                table(
                    "Versions compared now (1h)",
                    (
                        "Per version and metric: the value over the last hour, its sample "
                        "size, and for a candidate how many standard errors it is worse than "
                        "the primary (empty for the primary, and while either version has too "
                        "little evidence)."
                    ),
                    [
                        target(f"{VALUE.format(window='1h')}{{@}}", instant=True, table=True),
                        target(f"{SAMPLES.format(window='1h')}{{@}}", instant=True, table=True),
                        target(f"{STATISTIC.format(window='1h')}{{@}}", instant=True, table=True),
                    ],
                    w=12,
                    decimals=4,
                    transformations=joined_columns(
                        ["value", "n", "worse by (standard errors)"],
                        sort="metric",
                        desc=False,
                        exclude=["Time", "__name__", "model"],
                    ),  # fmt: skip
                ),
            ],
        ),
        row(
            "Significance",
            [
                timeseries(
                    "Candidate worse than the primary (standard errors)",
                    (
                        "Per candidate and metric, how many standard errors it is worse than "
                        "the primary over the last hour and the last 6 hours "
                        "(model_metric:model_candidate_worse:zscore1h / 6h): a pooled z for the "
                        "error ratio and accuracy, Welch's t for MAE; below zero the candidate "
                        "is better. A window's is absent until both versions hold "
                        f"candidate_min_samples ({min_samples}) in it. ModelCandidateWorse warns "
                        f"above the dashed series, candidate_z_critical (default {critical}), in "
                        "either window, for a metric the candidate's config lets alert."
                    ),
                    [
                        *(
                            target(
                                f"{STATISTIC.format(window=w)}{{@}}",
                                f"{{{{metric}}}} {{{{version}}}} {w}",
                            )
                            for w in WINDOWS
                        ),
                        target(_threshold("candidate_z_critical"), "candidate_z_critical"),
                    ],
                    unit="short",
                    w=24,
                    min=None,
                    steps=th.steps(None, "candidate_z_critical"),
                    overrides=[threshold_series("C")],
                ),
            ],
        ),
    ]
