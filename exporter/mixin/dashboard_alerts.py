"""The alerts dashboard's rows.

Queries mark where the series' scope goes with ``{@}`` (exporter/mixin/dashboards.py).
"""

from __future__ import annotations

from exporter.mixin.panel_layout import joined_columns, organize, row, sort_by
from exporter.mixin.panels import (
    Json,
    stat,
    state_timeline,
    table,
    target,
    timeseries,
    unit_override,
)
from exporter.mixin.settings import Settings
from exporter.mixin.thresholds import THRESHOLDS, Effective


def rows(settings: Settings) -> list[Json]:
    th = Effective(settings.thresholds)
    return [
        row(
            "Now",
            [
                stat(
                    "Critical alerts firing",
                    (
                        'Firing alerts with severity="critical" for this model, and alerts '
                        "without a model label (ALERTS)."
                    ),
                    [
                        target(
                            (
                                'count(ALERTS{@, alertstate="firing", severity="critical"}) or '
                                "vector(0)"
                            ),
                            "critical",
                        )
                    ],
                    unit="short",
                    w=6,
                    decimals=0,
                    steps=(("green", None), ("red", 1)),
                ),
                stat(
                    "Warning alerts firing",
                    (
                        'Firing alerts with severity="warning" for this model, and alerts '
                        "without a model label (ALERTS)."
                    ),
                    [
                        target(
                            (
                                'count(ALERTS{@, alertstate="firing", severity="warning"}) '
                                "or vector(0)"
                            ),
                            "warning",
                        )
                    ],
                    unit="short",
                    w=6,
                    decimals=0,
                    steps=(("green", None), ("orange", 1)),
                ),
                stat(
                    "Alerts pending",
                    (
                        "Alerts whose condition holds but whose `for:` duration has not passed "
                        'yet (ALERTS{alertstate="pending"}).'
                    ),
                    [target('count(ALERTS{@, alertstate="pending"}) or vector(0)', "pending")],
                    unit="short",
                    w=6,
                    decimals=0,
                    steps=(("green", None), ("yellow", 1)),
                ),
                stat(
                    "Notifications received (time range)",
                    (
                        "Notifications the webhook receiver got from Alertmanager in the "
                        "dashboard's time range, for every model "
                        "(model_alert_notifications_total)."
                    ),
                    [
                        target(
                            "sum(increase(model_alert_notifications_total[$__range])) or vector(0)",
                            "notifications",
                        )
                    ],
                    unit="short",
                    w=6,
                    decimals=0,
                ),
                table(
                    "Firing alerts",
                    'Alerts firing now with all their labels (ALERTS{alertstate="firing"}).',
                    [target('ALERTS{@, alertstate="firing"}', instant=True, table=True)],
                    w=12,
                    transformations=[
                        organize(exclude=["Time", "Value", "__name__", "alertstate"]),
                        sort_by("severity", desc=False),
                    ],
                ),
                table(
                    "Pending alerts",
                    (
                        "Alerts whose condition holds and that fire once their `for:` duration "
                        'passes (ALERTS{alertstate="pending"}).'
                    ),
                    [target('ALERTS{@, alertstate="pending"}', instant=True, table=True)],
                    w=12,
                    transformations=[
                        organize(exclude=["Time", "Value", "__name__", "alertstate"]),
                        sort_by("severity", desc=False),
                    ],
                ),
            ],
        ),
        row(
            "History",
            [
                state_timeline(
                    "Firing alerts over time",
                    "One line per firing alert over the time range (ALERTS over time).",
                    [
                        target(
                            (
                                "max by (alertname, severity, version, feature) (ALERTS{@, "
                                'alertstate="firing"})'
                            ),
                            "{{alertname}} {{severity}} {{version}} {{feature}}",
                        )
                    ],
                    w=16,
                    h=9,
                    mappings=[
                        {
                            "type": "value",
                            "options": {"1": {"text": "firing", "color": "red", "index": 0}},
                        }
                    ],
                ),
                timeseries(
                    "Alerts firing by severity",
                    "Number of firing alerts per severity over time (ALERTS).",
                    [
                        target(
                            'count by (severity) (ALERTS{@, alertstate="firing"})', "{{severity}}"
                        )
                    ],
                    w=8,
                    h=9,
                    decimals=0,
                    stacked=True,
                ),
                table(
                    "Alert activity in the time range",
                    (
                        "Per alert over the dashboard's time range, at one-minute resolution: "
                        "how many times it started firing (firing now and not a minute "
                        "earlier) and for how long it fired in total."
                    ),
                    [
                        target(
                            (
                                "sum by (alertname, severity) (count_over_time((ALERTS{@, "
                                'alertstate="firing"} unless ALERTS{@, alertstate="firing"} offset '
                                "1m)[$__range:1m]))"
                            ),
                            instant=True,
                            table=True,
                        ),
                        target(
                            (
                                "sum by (alertname, severity) (count_over_time(ALERTS{@, "
                                'alertstate="firing"}[$__range:1m])) * 60'
                            ),
                            instant=True,
                            table=True,
                        ),
                    ],
                    w=24,
                    decimals=0,
                    overrides=[unit_override("time firing", "s")],
                    transformations=joined_columns(
                        ["times started", "time firing"], sort="time firing", desc=True
                    ),
                ),
            ],
        ),
        row(
            "Receiver notifications",
            [
                timeseries(
                    "Notifications per second by alert and status",
                    (
                        "Notifications the webhook receiver got from Alertmanager, by alert "
                        "and status (firing / resolved), per second "
                        "(model_alert_notifications_total). The receiver's counter carries no "
                        "model label: every model is shown."
                    ),
                    [
                        target(
                            (
                                "sum by (alertname, status) "
                                "(rate(model_alert_notifications_total[$__rate_interval]))"
                            ),
                            "{{alertname}} {{status}}",
                        )
                    ],
                    unit="cps",
                    w=12,
                    stacked=True,
                ),
                table(
                    "Notifications in the time range",
                    (
                        "Notifications received in the dashboard's time range by alert, status "
                        "and severity (model_alert_notifications_total)."
                    ),
                    [
                        target(
                            (
                                "sum by (alertname, status, severity) "
                                "(increase(model_alert_notifications_total[$__range])) > 0"
                            ),
                            instant=True,
                            table=True,
                        )
                    ],
                    w=12,
                    decimals=0,
                    transformations=[
                        organize(rename={"Value": "notifications"}),
                        sort_by("notifications", desc=True),
                    ],
                ),
            ],
        ),
        row(
            "Thresholds",
            [
                table(
                    "Alert thresholds configured for this model",
                    (
                        "Per-model thresholds from the exporter's config "
                        "(model_alert_threshold). Keys the config leaves out use the rule "
                        f"defaults: {_defaults(th)}."
                    ),
                    [
                        target(
                            "max by (@fleet, model, version, alert) (model_alert_threshold{@})",
                            instant=True,
                            table=True,
                        )
                    ],
                    w=24,
                    transformations=[
                        organize(rename={"Value": "threshold"}),
                        sort_by("alert", desc=False),
                    ],
                ),
            ],
        ),
    ]


def _defaults(th: Effective) -> str:
    """Every key's rule default in force, in the thresholds table's order: a number, twice its
    base key's when the key is relative to it and not overridden, or "no default"."""
    parts = []
    for threshold in THRESHOLDS:
        key = threshold.key
        if key in th.overrides or threshold.default is not None:
            parts.append(f"{key} {th.text(key)}")
        elif threshold.relative_to is not None:
            base, factor = threshold.relative_to
            times = "twice" if factor == 2 else f"{factor:g} ×"
            parts.append(f"{key} {times} the model's {base} ({th.text(key)} by default)")
        else:
            parts.append(f"{key} has no default")
    return ", ".join(parts)
