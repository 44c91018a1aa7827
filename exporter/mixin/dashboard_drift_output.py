"""The drift dashboard's later rows: the output's drift and the collapsed detail rows.

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py).
"""

from __future__ import annotations

from exporter.mixin.panel_layout import bin_share_columns, row
from exporter.mixin.panels import Json, barchart, target, timeseries
from exporter.mixin.settings import Settings
from exporter.mixin.thresholds import Effective


def rows(settings: Settings) -> list[Json]:
    th = Effective(settings.thresholds)
    return [
        row(
            "Output drift (the prediction's distribution)",
            [
                timeseries(
                    "Output PSI (fleet-wide)",
                    (
                        "PSI of the model's output against the reference predictions over the "
                        "last hour and day (model_feature:model_feature_psi:1h / 1d with "
                        f'feature="__prediction__"). Red from {th.text("output_psi")}, the '
                        "default output_psi of ModelOutputDrift."
                    ),
                    [
                        target(
                            'model_feature:model_feature_psi:1h{@, feature="__prediction__"}',
                            "{{version}} 1h",
                        ),
                        target(
                            'model_feature:model_feature_psi:1d{@, feature="__prediction__"}',
                            "{{version}} 1d",
                        ),
                    ],
                    w=8,
                    h=9,
                    steps=th.steps(None, "output_psi"),
                ),
                barchart(
                    "Output bins: current vs reference",
                    (
                        "Share of predictions per output bin (classes for a classifier, value "
                        "bins for a regressor) over the last hour and day, next to the "
                        "reference predictions (select one version: each has its own reference)."
                    ),
                    [
                        target(
                            (
                                "model_feature_bin:model_feature_bin:share1h{@, "
                                'feature="__prediction__"}'
                            ),
                            instant=True,
                            table=True,
                        ),
                        target(
                            (
                                "model_feature_bin:model_feature_bin:share1d{@, "
                                'feature="__prediction__"}'
                            ),
                            instant=True,
                            table=True,
                        ),
                        target(
                            (
                                "model_feature_bin:model_feature_reference_ratio:dedup{@, "
                                'feature="__prediction__"}'
                            ),
                            instant=True,
                            table=True,
                        ),
                    ],
                    unit="percentunit",
                    w=8,
                    h=9,
                    x_field="bin",
                    transformations=bin_share_columns(),
                ),
                timeseries(
                    "Output drift per process",
                    (
                        "Per-process PSI and KS statistic of the prediction over the $window "
                        "window (model_feature_psi, model_feature_ks_statistic with "
                        'feature="__prediction__"), and the fleet-wide mean shift of a '
                        "regressor's output (model_feature:model_feature_zscore:1h)."
                    ),
                    [
                        target(
                            'model_feature_psi{@, feature="__prediction__", window=~"$window"}',
                            "PSI {{window}} {{instance}}",
                        ),
                        target(
                            (
                                'model_feature_ks_statistic{@, feature="__prediction__", '
                                'window=~"$window"}'
                            ),
                            "KS {{window}} {{instance}}",
                        ),
                        target(
                            'model_feature:model_feature_zscore:1h{@, feature="__prediction__"}',
                            "z-score {{version}} 1h (fleet)",
                        ),
                    ],
                    w=8,
                    h=9,
                ),
                timeseries(
                    "Valid values per hour, by feature",
                    (
                        "How many valid values each feature had in the last hour across all "
                        "replicas: the sample size behind the fleet PSI and z-score (the drift "
                        "alerts need at least 30 values in a window and a significant G-test)."
                    ),
                    [
                        target(
                            'model_feature:model_feature_bin:increase1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}}",
                        )
                    ],
                    w=24,
                ),
            ],
        ),
        row(
            "What the drift alerts compare",
            [
                timeseries(
                    "PSI per alert window",
                    (
                        "Fleet-wide PSI over 2m, 15m, 1h, 6h and 1d "
                        "(model_feature:model_feature_psi:*). Small windows read high by noise "
                        "alone: the alert compares the excess (next panel)."
                    ),
                    [
                        target(
                            'model_feature:model_feature_psi:2m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 2m",
                        ),
                        target(
                            'model_feature:model_feature_psi:15m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 15m",
                        ),
                        target(
                            'model_feature:model_feature_psi:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1h",
                        ),
                        target(
                            'model_feature:model_feature_psi:6h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 6h",
                        ),
                        target(
                            'model_feature:model_feature_psi:1d{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1d",
                        ),
                    ],
                    w=8,
                ),
                timeseries(
                    "PSI beyond noise per alert window",
                    (
                        "PSI minus (bins − 1) / n, its value under no drift "
                        "(model_feature:model_feature_psi_excess:*), only over 30 values. "
                        "ModelFeatureDriftPSI compares it with psi_warning and psi_critical."
                    ),
                    [
                        target(
                            'model_feature:model_feature_psi_excess:2m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 2m",
                        ),
                        target(
                            'model_feature:model_feature_psi_excess:15m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 15m",
                        ),
                        target(
                            'model_feature:model_feature_psi_excess:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1h",
                        ),
                        target(
                            'model_feature:model_feature_psi_excess:6h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 6h",
                        ),
                        target(
                            (
                                "max by (alert) (model_alert:model_alert_threshold:effective{@, "
                                'alert=~"psi_warning|psi_critical"})'
                            ),
                            "threshold {{alert}}",
                        ),
                    ],
                    w=8,
                ),
                timeseries(
                    "G statistic per alert window and its critical value",
                    (
                        "Williams-corrected G (model_feature:model_feature_g:*): chi-square "
                        "with bins − 1 degrees of freedom under no drift. A PSI alert also "
                        "needs G above the critical value at 1e-5 "
                        "(model_feature:model_feature_g:critical), so noise alone cannot raise "
                        "it."
                    ),
                    [
                        target(
                            'model_feature:model_feature_g:2m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 2m",
                        ),
                        target(
                            'model_feature:model_feature_g:15m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 15m",
                        ),
                        target(
                            'model_feature:model_feature_g:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1h",
                        ),
                        target(
                            'model_feature:model_feature_g:6h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 6h",
                        ),
                        target(
                            'model_feature:model_feature_g:critical{@, feature=~"$feature"}',
                            "{{feature}} {{version}} critical",
                        ),
                    ],
                    w=8,
                ),
                timeseries(
                    "Mean shift (z-score) per alert window",
                    (
                        "|window mean − expected mean| / reference std over 2m, 15m, 1h and 6h "
                        "(model_feature:model_feature_zscore:*)."
                    ),
                    [
                        target(
                            'model_feature:model_feature_zscore:2m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 2m",
                        ),
                        target(
                            'model_feature:model_feature_zscore:15m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 15m",
                        ),
                        target(
                            'model_feature:model_feature_zscore:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1h",
                        ),
                        target(
                            'model_feature:model_feature_zscore:6h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 6h",
                        ),
                    ],
                    w=8,
                ),
                timeseries(
                    "Mean shift beyond noise per alert window",
                    (
                        "z-score minus 4.265 / √n, what noise reaches once in 100,000 windows "
                        "(model_feature:model_feature_zscore_excess:*), only over 30 values. "
                        "ModelFeatureMeanShift compares it with zscore_warning and "
                        "zscore_critical."
                    ),
                    [
                        target(
                            'model_feature:model_feature_zscore_excess:2m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 2m",
                        ),
                        target(
                            'model_feature:model_feature_zscore_excess:15m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 15m",
                        ),
                        target(
                            'model_feature:model_feature_zscore_excess:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1h",
                        ),
                        target(
                            'model_feature:model_feature_zscore_excess:6h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 6h",
                        ),
                        target(
                            (
                                "max by (alert) (model_alert:model_alert_threshold:effective{@, "
                                'alert=~"zscore_warning|zscore_critical"})'
                            ),
                            "threshold {{alert}}",
                        ),
                    ],
                    w=8,
                ),
                timeseries(
                    "Values per drift window (n)",
                    (
                        "Valid values in each window, summed over every replica "
                        "(model_feature:model_feature_bin:increase2m, 15m, 1h, 6h). A window "
                        "speaks from 30 values; a long window is confirmed by the last 15 "
                        "minutes when they hold 200 values, else by the last hour."
                    ),
                    [
                        target(
                            'model_feature:model_feature_bin:increase2m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 2m",
                        ),
                        target(
                            'model_feature:model_feature_bin:increase15m{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 15m",
                        ),
                        target(
                            'model_feature:model_feature_bin:increase1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1h",
                        ),
                        target(
                            'model_feature:model_feature_bin:increase6h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 6h",
                        ),
                    ],
                    w=8,
                ),
            ],
            collapsed=True,
        ),
    ]
