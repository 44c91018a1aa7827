"""The Grafana half of the mixin: the five dashboards and the datasource they read, from one
:class:`Settings`.

The dashboard modules (``dashboard_*.py``) write their PromQL with a marker, ``name{@}`` or
``name{@, sign="positive"}``, where the series' scope goes. :class:`Scope` fills it in from the
series' kind, so the selector and the variables are written once, here:

* the exporter's own series: the site's selector, then every variable (the fleet labels, ``job``,
  ``model``, ``version``, ``instance``);
* recording-rule series (``level:metric:operations``), which have no ``job`` or ``instance``: the
  fleet labels, ``model`` and ``version`` when the rule keeps it (every rule but the threshold
  rule, which is per model: docs/metrics.md);
* ``ALERTS``: the fleet labels, and ``model`` and ``version`` or none, since some alerts (an
  exporter down, a drifting feature) carry no model or no version.

The webhook receiver's counters are another job's, with no model: they are left unscoped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from exporter.mixin import (
    dashboard_alerts,
    dashboard_drift,
    dashboard_overview,
    dashboard_performance,
    dashboard_versions,
)
from exporter.mixin.panel_layout import layout
from exporter.mixin.panels import DATASOURCE, SCHEMA_VERSION, Json
from exporter.mixin.settings import Settings

DASHBOARDS_DIR = "grafana/dashboards"
DATASOURCE_FILE = "grafana/provisioning/datasources/prometheus.yml"
#: Where the provisioned datasource points: the Prometheus of docker-compose.monitoring.yml.
PROMETHEUS_URL = "http://prometheus:9090"
#: Recording rules whose series keep no ``version`` (docs/metrics.md, "labels kept"): only the
#: thresholds, which are per model. The drift rules keep it (each version has its own reference).
VERSIONLESS_RULE_LEVELS = ("model_alert:",)
#: Series of the webhook receiver (job model-alert-receiver): no model, version or instance, and
#: not matched by the exporter's selector.
RECEIVER_SERIES = frozenset({"model_alert_notifications_total", "model_alert_actions_total"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MARKER = re.compile(r"(?P<name>[A-Za-z_:][\w:]*)\{@(?:,\s*(?P<extra>[^}]*))?\}")


class Scope:
    """The label matchers each kind of series gets on every dashboard of ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.selector = ", ".join(f'{label}{op}"{value}"' for label, op, value in settings.matchers)

    @property
    def chain(self) -> list[str]:
        """The query variables' names in the order each one narrows the next."""
        return [*self.settings.fleet_labels, "job", "model", "version", "instance"]

    @staticmethod
    def variable(name: str, *, or_absent: bool = False) -> str:
        # ``|`` after the value also matches a series without the label (its value is "").
        return f'{name}=~"${name}{"|" if or_absent else ""}"'

    def raw(self) -> list[str]:
        return [self.selector, *(self.variable(name) for name in self.chain)]

    def rule(self, name: str) -> list[str]:
        labels = [*self.settings.fleet_labels, "model"]
        if not name.startswith(VERSIONLESS_RULE_LEVELS):
            labels.append("version")
        return [self.variable(label) for label in labels]

    def alerts(self) -> list[str]:
        fleet = [self.variable(label) for label in self.settings.fleet_labels]
        return [
            *fleet,
            self.variable("model", or_absent=True),
            self.variable("version", or_absent=True),
        ]

    def matchers(self, name: str) -> list[str]:
        if name == "ALERTS":
            return self.alerts()
        if name in RECEIVER_SERIES:
            raise ValueError(f"{name} is the receiver's: it has none of the dashboards' labels")
        if ":" in name:
            return self.rule(name)
        return self.raw()

    def expand(self, expr: str) -> str:
        """``expr`` with every ``name{@…}`` marker replaced by the series' scope."""

        def replace(match: re.Match[str]) -> str:
            matchers = self.matchers(match["name"])
            if match["extra"]:
                matchers.append(match["extra"].strip())
            return f"{match['name']}{{{', '.join(matchers)}}}"

        # ``@fleet, `` in a by/on list keeps the fleets apart where series of two clusters would
        # otherwise collide (a join on model and version) or merge (a table of thresholds).
        expanded = _MARKER.sub(replace, expr).replace("@fleet, ", self.settings.fleet_by)
        if "@" in _STRING.sub('""', expanded):
            raise ValueError(f"a scope marker was not replaced in {expr!r}")
        return expanded


def datasource_uid(settings: Settings) -> str:
    """The provisioned datasource's uid, derived from its name so the dashboards' default can
    refer to it (Grafana allows 40 letters, digits, ``-`` and ``_``)."""
    uid = re.sub(r"[^a-z0-9_-]+", "-", settings.datasource_name.lower()).strip("-")[:40]
    if not uid:
        uid = "ds-" + hashlib.sha256(settings.datasource_name.encode()).hexdigest()[:12]
    return uid


# --- variables --------------------------------------------------------------------------------


def _query_variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool,
    all_value: str | None = ".*",
    regex: str = "",
    current: Json | None = None,
) -> Json:
    variable: Json = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": dict(DATASOURCE),
        "definition": query,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "regex": regex,
        "multi": multi,
        "includeAll": multi,
        "hide": 0,
        "options": [],
        "skipUrlSync": False,
    }
    if current is not None:
        variable["current"] = current
    elif multi:
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        variable["current"] = {}
    if multi and all_value is not None:
        variable["allValue"] = all_value
    return variable


def variables(scope: Scope, extra: Sequence[Json] = ()) -> list[Json]:
    """The datasource, then the chain: each variable's values are those of ``model_info`` (which
    every exporter process exports) under the selector and the variables before it.

    Every variable but ``model`` is multi-valued with "All" as ``.*``, which also matches a series
    without the label: a fleet label the site's series do not carry costs nothing. ``model``
    stays one value: the dashboards show one model (their legends name versions, not models).
    """
    settings = scope.settings
    listed: list[Json] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {
                "selected": False,
                "text": settings.datasource_name,
                "value": datasource_uid(settings),
            },
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        }
    ]
    before = [scope.selector]
    for name in scope.chain:
        query = f"label_values(model_info{{{', '.join(before)}}}, {name})"
        listed.append(_query_variable(name, name.capitalize(), query, multi=name != "model"))
        before.append(Scope.variable(name))
    return listed + list(extra)


def feature_variables(scope: Scope) -> list[Json]:
    """The drift dashboard's feature (without the output, which has its own row) and window."""
    matchers = ", ".join(scope.raw())
    return [
        _query_variable(
            "feature",
            "Feature",
            f"label_values(model_feature_reference_ratio{{{matchers}}}, feature)",
            multi=True,
            # "All" lists the features: a regex over every value would take in the output too.
            all_value=None,
            regex="/^(?!__prediction__$).+$/",
        ),
        _query_variable(
            "window",
            "Window",
            f"label_values(model_feature_window_samples{{{matchers}}}, window)",
            multi=False,
            current={"selected": True, "text": "1h", "value": "1h"},
        ),
    ]


# --- dashboards -------------------------------------------------------------------------------

#: uid, title, description, its rows' builder and whether it marks firing alerts on its graphs
#: (the alerts dashboard shows them as panels).
_Rows = Callable[[Settings], list[Json]]
DASHBOARDS: tuple[tuple[str, str, str, _Rows, bool], ...] = (
    (
        "model-overview",
        "Model overview",
        "Traffic, errors, latency, class mix, confidence and input quality of one model.",
        dashboard_overview.rows,
        True,
    ),
    (
        "model-drift",
        "Model drift",
        "Input and output drift of one model: fleet-wide PSI and z-score from recording rules, "
        "per-process PSI / KS / z, and bin shares against the reference profile.",
        dashboard_drift.rows,
        True,
    ),
    (
        "model-performance",
        "Model performance",
        "Model quality from delayed ground truth: MAE, RMSE, within-$X, correlation, accuracy, "
        "per-class precision / recall / F1, confusion, calibration and the ground-truth join.",
        dashboard_performance.rows,
        True,
    ),
    (
        "model-versions",
        "Model versions",
        "A model's primary and its candidate versions (canary, shadow) side by side: error ratio, "
        "accuracy, MAE, latency and traffic share per version, and how significantly each "
        "candidate is worse than the primary.",
        dashboard_versions.rows,
        True,
    ),
    (
        "model-alerts",
        "Model alerts",
        "Alerts of one model: firing and pending now, history over the time range, the webhook "
        "receiver's notifications and the thresholds in force.",
        dashboard_alerts.rows,
        False,
    ),
)


def _links(settings: Settings, uid: str) -> list[Json]:
    """Links to the other dashboards under Grafana's sub-path, carrying the variables and the
    time range (Grafana appends them to the URL)."""
    return [
        {
            "type": "link",
            "title": title,
            "url": f"{settings.grafana_path_prefix}/d/{other}/{other}",
            "tooltip": f"Open {title} with the same variables and time range",
            "icon": "dashboard",
            "includeVars": True,
            "keepTime": True,
            "asDropdown": False,
            "targetBlank": False,
            "tags": [],
        }
        for other, title, *_ in DASHBOARDS
        if other != uid
    ]


def _annotations(scope: Scope, alerts: bool) -> list[Json]:
    listed: list[Json] = [
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }
    ]
    if alerts:
        listed.append(
            {
                "name": "Model alerts",
                "datasource": dict(DATASOURCE),
                "enable": True,
                "hide": False,
                "iconColor": "red",
                "expr": scope.expand('ALERTS{@, alertstate="firing"}'),
                "step": "60s",
                "titleFormat": "{{alertname}}",
                "textFormat": "{{severity}} {{feature}}",
                "tagKeys": "alertname,severity",
                "useValueForTime": False,
            }
        )
    return listed


def _expand_targets(panels: Sequence[Json], scope: Scope) -> None:
    for panel in panels:
        _expand_targets(panel.get("panels", []), scope)
        for query in panel.get("targets", []):
            query["expr"] = scope.expand(query["expr"])


def dashboard(settings: Settings, uid: str) -> Json:
    """One dashboard by uid, as a dict."""
    scope = Scope(settings)
    found = [entry for entry in DASHBOARDS if entry[0] == uid]
    if not found:
        raise KeyError(f"no dashboard {uid!r}")
    _, title, description, rows, alerts = found[0]
    panels = layout(rows(settings))
    _expand_targets(panels, scope)
    extra = feature_variables(scope) if uid == "model-drift" else []
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": list(settings.dashboard_tags),
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": settings.dashboard_refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "weekStart": "",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": _annotations(scope, alerts)},
        "links": _links(settings, uid),
        "templating": {"list": variables(scope, extra)},
        "panels": panels,
    }


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- provisioning -----------------------------------------------------------------------------


def datasource_provisioning(settings: Settings) -> str:
    """The Prometheus datasource the dashboards read by default. Never the site's default
    datasource (``isDefault: false``): adding it to a Grafana leaves that one in place."""
    # JSON strings are YAML double-quoted scalars: any name is quoted correctly.
    name = json.dumps(settings.datasource_name, ensure_ascii=False)
    uid = json.dumps(datasource_uid(settings))
    return f"""\
# Generated by `model-exporter generate` (exporter/mixin/dashboards.py) from the site settings.
# The Prometheus datasource the model dashboards query. Its uid is fixed so the dashboards'
# `datasource` variable resolves to it by default; `prometheus` is the docker-compose service name.
# It is not the default datasource, so a Grafana that already has one keeps it.
apiVersion: 1

datasources:
  - name: {name}
    uid: {uid}
    type: prometheus
    access: proxy
    url: {PROMETHEUS_URL}
    isDefault: false
    editable: false
    jsonData:
      httpMethod: POST
      # The scrape interval: Grafana makes $__rate_interval at least four times this, so every
      # rate() in the dashboards spans enough samples. Keep it equal to prometheus.yml's.
      timeInterval: 15s
"""


def artefacts(settings: Settings) -> dict[str, str]:
    """The dashboards and the datasource provisioning file, by path from the repository root."""
    files = {
        f"{DASHBOARDS_DIR}/{uid}.json": to_json(dashboard(settings, uid)) for uid, *_ in DASHBOARDS
    }
    files[DATASOURCE_FILE] = datasource_provisioning(settings)
    return files
