"""The drift dashboard's rows.

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py).
"""

from __future__ import annotations

from exporter.mixin import dashboard_drift_output
from exporter.mixin.panel_layout import bin_share_columns, joined_columns, organize, row
from exporter.mixin.panels import (
    Json,
    barchart,
    bargauge,
    table,
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
            "Fleet-wide drift (every replica of each version, recording rules)",
            [
                timeseries(
                    "PSI per feature, last hour",
                    (
                        "Population stability index of each feature's last hour against its "
                        "reference bins, from bin counters summed over every replica of a "
                        "version, shares clamped at 1e-4 (model_feature:model_feature_psi:1h). "
                        "One series per feature and version: each version is compared with its "
                        f"own reference profile. Orange from {th.text('psi_warning')}, red from "
                        f"{th.text('psi_critical')}: the default psi_warning and psi_critical."
                    ),
                    [
                        target(
                            'model_feature:model_feature_psi:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}}",
                        )
                    ],
                    w=9,
                    steps=th.steps("psi_warning", "psi_critical"),
                ),
                timeseries(
                    "PSI per feature, last day",
                    (
                        "Population stability index of each feature's last day against its "
                        "reference bins (model_feature:model_feature_psi:1d): slower, catches "
                        "drift that builds up over hours. Orange from "
                        f"{th.text('psi_warning')}, red from {th.text('psi_critical')}."
                    ),
                    [
                        target(
                            'model_feature:model_feature_psi:1d{@, feature=~"$feature"}',
                            "{{feature}} {{version}}",
                        )
                    ],
                    w=9,
                    steps=th.steps("psi_warning", "psi_critical"),
                ),
                bargauge(
                    "PSI now",
                    (
                        "Latest fleet-wide PSI per feature over the last hour and the last "
                        f"day, worst first by colour: orange from {th.text('psi_warning')}, red "
                        f"from {th.text('psi_critical')}."
                    ),
                    [
                        target(
                            'model_feature:model_feature_psi:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1h",
                            instant=True,
                        ),
                        target(
                            'model_feature:model_feature_psi:1d{@, feature=~"$feature"}',
                            "{{feature}} {{version}} 1d",
                            instant=True,
                        ),
                    ],
                    w=6,
                    steps=th.steps("psi_warning", "psi_critical"),
                ),
                timeseries(
                    "Mean shift (z-score), last hour",
                    (
                        "|mean over the last hour − reference mean| / reference std per "
                        "numeric feature, from value-sum counters summed over every replica "
                        "(model_feature:model_feature_zscore:1h). Orange from "
                        f"{th.text('zscore_warning')}, red from {th.text('zscore_critical')}: the "
                        "default zscore_warning and zscore_critical."
                    ),
                    [
                        target(
                            'model_feature:model_feature_zscore:1h{@, feature=~"$feature"}',
                            "{{feature}} {{version}}",
                        )
                    ],
                    w=12,
                    steps=th.steps("zscore_warning", "zscore_critical"),
                ),
                table(
                    "Drift thresholds of this model",
                    (
                        "Drift thresholds the model's config sets (model_alert_threshold). "
                        "Where a key is missing the alert rules use the defaults: psi_warning "
                        f"{th.text('psi_warning')}, psi_critical {th.text('psi_critical')}, "
                        f"zscore_warning {th.text('zscore_warning')}, zscore_critical "
                        f"{th.text('zscore_critical')}, output_psi {th.text('output_psi')}, "
                        f"min_samples {th.text('min_samples')}."
                    ),
                    [
                        target(
                            (
                                "max by (@fleet, version, alert) (model_alert_threshold{@, alert=~"
                                '"psi_warning|psi_critical|zscore_warning|zscore_critical|'
                                'output_psi|min_samples"})'
                            ),
                            instant=True,
                            table=True,
                        )
                    ],
                    w=12,
                    transformations=[organize(rename={"Value": "threshold"})],
                ),
            ],
        ),
        row(
            "Current vs reference bins",
            [
                barchart(
                    "Bin shares: $feature",
                    (
                        "Share of the feature's values in each reference bin over the last "
                        "hour and day, summed over every replica, next to the reference share "
                        "(model_feature_bin:model_feature_bin:share1h / share1d and "
                        "model_feature_bin:model_feature_reference_ratio:dedup). Numeric bins "
                        "are 00, 01, … in value order; categorical bins are the categories and "
                        "__other__. One chart per selected feature. Bins are those of each "
                        "version's own reference profile: select one version to read its bins "
                        "against its reference."
                    ),
                    [
                        target(
                            'model_feature_bin:model_feature_bin:share1h{@, feature=~"$feature"}',
                            instant=True,
                            table=True,
                        ),
                        target(
                            'model_feature_bin:model_feature_bin:share1d{@, feature=~"$feature"}',
                            instant=True,
                            table=True,
                        ),
                        target(
                            (
                                "model_feature_bin:model_feature_reference_ratio:dedup{@, "
                                'feature=~"$feature"}'
                            ),
                            instant=True,
                            table=True,
                        ),
                    ],
                    unit="percentunit",
                    w=12,
                    h=9,
                    x_field="bin",
                    repeat="feature",
                    transformations=bin_share_columns(),
                ),
            ],
        ),
        row(
            "Per-process drift ($window window)",
            [
                timeseries(
                    "PSI per process",
                    (
                        "PSI computed inside each process over its $window window "
                        "(model_feature_psi). Absent until the window holds min_samples "
                        "values; with several replicas, read the fleet-wide PSI above."
                    ),
                    [
                        target(
                            'model_feature_psi{@, feature=~"$feature", window=~"$window"}',
                            "{{feature}} {{window}} {{instance}}",
                        )
                    ],
                    w=8,
                    steps=th.steps("psi_warning", "psi_critical"),
                ),
                timeseries(
                    "KS statistic per process",
                    (
                        "Two-sample Kolmogorov-Smirnov statistic of each numeric feature, "
                        "window sample vs reference sample, per process "
                        "(model_feature_ks_statistic)."
                    ),
                    [
                        target(
                            'model_feature_ks_statistic{@, feature=~"$feature", window=~"$window"}',
                            "{{feature}} {{window}} {{instance}}",
                        )
                    ],
                    w=8,
                    max=1,
                ),
                timeseries(
                    "KS p-value per process",
                    (
                        "Asymptotic p-value of the KS test per process "
                        "(model_feature_ks_pvalue), log scale. Below 0.05 (red) the window and "
                        "the reference are unlikely to share a distribution; with large "
                        "windows tiny shifts are significant, so read it with the KS statistic."
                    ),
                    [
                        target(
                            'model_feature_ks_pvalue{@, feature=~"$feature", window=~"$window"}',
                            "{{feature}} {{window}} {{instance}}",
                        )
                    ],
                    w=8,
                    min=None,
                    steps=(("red", None), ("green", 0.05)),
                    log_scale=True,
                ),
                timeseries(
                    "z-score per process",
                    (
                        "|window mean − reference mean| / reference std per numeric feature, "
                        "per process (model_feature_zscore). Orange from "
                        f"{th.text('zscore_warning')}, red from {th.text('zscore_critical')}."
                    ),
                    [
                        target(
                            'model_feature_zscore{@, feature=~"$feature", window=~"$window"}',
                            "{{feature}} {{window}} {{instance}}",
                        )
                    ],
                    w=8,
                    steps=th.steps("zscore_warning", "zscore_critical"),
                ),
                timeseries(
                    "Window samples",
                    (
                        "Valid values each process holds in the window "
                        "(model_feature_window_samples). Below min_samples (the dashed line: "
                        "the model's monitoring.min_samples, or thresholds.min_samples when "
                        "the config sets it) the drift statistics are absent, not zero."
                    ),
                    [
                        target(
                            (
                                'model_feature_window_samples{@, feature=~"$feature", '
                                'window=~"$window"}'
                            ),
                            "{{feature}} {{window}} {{instance}}",
                        ),
                        target(
                            (
                                "max(model_alert:model_alert_threshold:effective{@, "
                                'alert="min_samples"})'
                            ),
                            "min_samples",
                        ),
                    ],
                    w=8,
                    steps=(("red", None), ("transparent", th["min_samples"])),
                    overrides=[threshold_series("B")],
                ),
                table(
                    "Drift statistics now",
                    (
                        "Latest per-process statistics per feature and window: PSI, KS "
                        "statistic, KS p-value, z-score and window samples. Empty cells: the "
                        "window is below min_samples, or the statistic does not apply (KS and "
                        "z for categorical features)."
                    ),
                    [
                        target(
                            'model_feature_psi{@, feature=~"$feature", window=~"$window"}',
                            instant=True,
                            table=True,
                        ),
                        target(
                            'model_feature_ks_statistic{@, feature=~"$feature", window=~"$window"}',
                            instant=True,
                            table=True,
                        ),
                        target(
                            'model_feature_ks_pvalue{@, feature=~"$feature", window=~"$window"}',
                            instant=True,
                            table=True,
                        ),
                        target(
                            'model_feature_zscore{@, feature=~"$feature", window=~"$window"}',
                            instant=True,
                            table=True,
                        ),
                        target(
                            (
                                'model_feature_window_samples{@, feature=~"$feature", '
                                'window=~"$window"}'
                            ),
                            instant=True,
                            table=True,
                        ),
                    ],
                    w=8,
                    decimals=3,
                    transformations=joined_columns(
                        ["PSI", "KS statistic", "KS p-value", "z-score", "samples"],
                        sort="PSI",
                        desc=True,
                        exclude=["Time", "__name__", "model", "job"],
                    ),  # fmt: skip
                ),
            ],
        ),
        *dashboard_drift_output.rows(settings),
    ]
