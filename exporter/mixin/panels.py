"""Small builders of Grafana dashboard JSON (schemaVersion 39, Grafana 11): panels, targets,
variables, rows and a flow layout.

Each builder returns a plain dict with the keys in the order Grafana itself saves them, so the
generated files read like exported dashboards and their diffs stay small. Only what differs
between panels is a parameter; everything every panel of a type shares is written once here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]
#: Threshold steps as (colour, lower bound); the first step's bound is None (minus infinity).
Steps = Sequence[tuple[str, float | None]]

SCHEMA_VERSION = 39
#: Every panel, target and query variable reads the datasource the dashboard's variable picks.
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
GREEN: Steps = (("green", None),)
#: Grafana's grid is 24 columns wide.
GRID_WIDTH = 24


def _datasource() -> Json:
    return dict(DATASOURCE)


def target(
    expr: str,
    legend: str = "__auto",
    *,
    instant: bool = False,
    table: bool = False,
    heatmap: bool = False,
) -> Json:
    """One PromQL query; its refId is set by :func:`panel` from its position."""
    query: Json = {
        "datasource": _datasource(),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }
    if table:
        query["format"] = "table"
    elif heatmap:
        query["format"] = "heatmap"
    return query


def thresholds(steps: Steps) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def threshold_series(ref_id: str) -> Json:
    """An override drawing query ``ref_id`` (a threshold read from Prometheus) as a dashed red
    line without fill, so it reads as a limit rather than as one more series."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref_id},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
        ],
    }


def unit_override(field: str, unit: str) -> Json:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": "unit", "value": unit}],
    }


def _defaults(
    unit: str,
    color: str = "palette-classic",
    *,
    min: float | None = None,
    max: float | None = None,
    decimals: int | None = None,
    steps: Steps = GREEN,
) -> Json:
    defaults: Json = {"unit": unit, "color": {"mode": color}}
    if min is not None:
        defaults["min"] = min
    if max is not None:
        defaults["max"] = max
    if decimals is not None:
        defaults["decimals"] = decimals
    defaults["thresholds"] = thresholds(steps)
    return defaults


def panel(
    kind: str,
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    defaults: Json,
    options: Json,
    w: int,
    h: int,
    overrides: Sequence[Json] = (),
    transformations: Sequence[Json] | None = None,
) -> Json:
    """A panel without id or position: :func:`dashboard` numbers and places them."""
    if not targets:
        raise ValueError(f"panel {title!r} has no query")
    queries = []
    for index, query in enumerate(targets):
        queries.append({**query, "refId": chr(ord("A") + index)})
    built: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _datasource(),
        "gridPos": {"h": h, "w": w},
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": options,
        "targets": queries,
    }
    if transformations is not None:
        built["transformations"] = list(transformations)
    return built


def _reduce() -> Json:
    return {"calcs": ["lastNotNull"], "fields": "", "values": False}


def _legend(show: bool = True) -> Json:
    return {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": show}


def stat(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    unit: str,
    w: int = 4,
    h: int = 4,
    decimals: int | None = None,
    min: float | None = None,
    max: float | None = None,
    steps: Steps = GREEN,
) -> Json:
    return panel(
        "stat",
        title,
        description,
        targets,
        defaults=_defaults(unit, min=min, max=max, decimals=decimals, steps=steps),
        options={
            "reduceOptions": _reduce(),
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        w=w,
        h=h,
    )


def timeseries(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    unit: str = "short",
    w: int,
    h: int = 8,
    min: float | None = 0,
    max: float | None = None,
    decimals: int | None = None,
    steps: Steps = GREEN,
    stacked: bool = False,
    log_scale: bool = False,
    overrides: Sequence[Json] = (),
) -> Json:
    """A time series; threshold steps beyond the base are drawn as dashed lines, stacked series
    are filled more so the stack reads as areas."""
    defaults = _defaults(unit, min=min, max=max, decimals=decimals, steps=steps)
    defaults["custom"] = {
        "drawStyle": "line",
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "fillOpacity": 25 if stacked else 10,
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "axisPlacement": "auto",
        "axisLabel": "",
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        "scaleDistribution": {"type": "log", "log": 10} if log_scale else {"type": "linear"},
        "thresholdsStyle": {"mode": "dashed" if len(steps) > 1 else "off"},
    }
    return panel(
        "timeseries",
        title,
        description,
        targets,
        defaults=defaults,
        options={"legend": _legend(), "tooltip": {"mode": "multi", "sort": "desc"}},
        w=w,
        h=h,
        overrides=overrides,
    )


def table(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    transformations: Sequence[Json],
    unit: str = "short",
    w: int,
    h: int = 8,
    decimals: int | None = None,
    overrides: Sequence[Json] = (),
) -> Json:
    defaults = _defaults(unit, "thresholds", decimals=decimals)
    defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}}
    return panel(
        "table",
        title,
        description,
        targets,
        defaults=defaults,
        options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        w=w,
        h=h,
        overrides=overrides,
        transformations=transformations,
    )


def heatmap(
    title: str, description: str, targets: Sequence[Json], *, unit: str, w: int, h: int = 8
) -> Json:
    """Buckets of a histogram as given (``calculate: false``); empty buckets stay blank."""
    defaults = _defaults(unit)
    defaults["custom"] = {
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "scaleDistribution": {"type": "linear"},
    }
    return panel(
        "heatmap",
        title,
        description,
        targets,
        defaults=defaults,
        options={
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "steps": 64,
                "exponent": 0.5,
                "fill": "dark-orange",
                "scale": "exponential",
                "reverse": False,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-09},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
        },
        w=w,
        h=h,
    )


def piechart(
    title: str, description: str, targets: Sequence[Json], *, unit: str, w: int, h: int = 8
) -> Json:
    return panel(
        "piechart",
        title,
        description,
        targets,
        defaults=_defaults(unit),
        options={
            "reduceOptions": _reduce(),
            "pieType": "donut",
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "showLegend": True,
                "values": ["percent"],
            },
            "tooltip": {"mode": "single", "sort": "none"},
            "displayLabels": [],
        },
        w=w,
        h=h,
    )


def bargauge(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    unit: str = "short",
    w: int,
    h: int = 8,
    steps: Steps = GREEN,
) -> Json:
    return panel(
        "bargauge",
        title,
        description,
        targets,
        defaults=_defaults(unit, min=0, steps=steps),
        options={
            "reduceOptions": _reduce(),
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
            "minVizHeight": 10,
            "minVizWidth": 0,
        },
        w=w,
        h=h,
    )


def barchart(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    x_field: str,
    transformations: Sequence[Json],
    unit: str = "short",
    w: int,
    h: int = 8,
    repeat: str | None = None,
) -> Json:
    """Bars over a label (``x_field``) of instant table queries; with ``repeat``, one panel per
    value of that variable, two to a row."""
    defaults = _defaults(unit, min=0)
    defaults["custom"] = {
        "fillOpacity": 80,
        "lineWidth": 1,
        "gradientMode": "none",
        "axisPlacement": "auto",
    }
    built = panel(
        "barchart",
        title,
        description,
        targets,
        defaults=defaults,
        options={
            "xField": x_field,
            "orientation": "vertical",
            "groupWidth": 0.7,
            "barWidth": 0.9,
            "showValue": "never",
            "stacking": "none",
            "xTickLabelRotation": -45,
            "xTickLabelSpacing": 0,
            "legend": _legend(),
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        w=w,
        h=h,
        transformations=transformations,
    )
    if repeat:
        built.update({"repeat": repeat, "repeatDirection": "h", "maxPerRow": 2})
    return built


def state_timeline(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    mappings: Sequence[Json],
    w: int,
    h: int = 8,
) -> Json:
    defaults = _defaults("short")
    defaults["mappings"] = list(mappings)
    defaults["custom"] = {"fillOpacity": 80, "lineWidth": 0}
    return panel(
        "state-timeline",
        title,
        description,
        targets,
        defaults=defaults,
        options={
            "mergeValues": True,
            "showValue": "never",
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        w=w,
        h=h,
    )
