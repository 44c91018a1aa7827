"""Transformations, rows and the flow layout of the generated dashboards' panels.

A dashboard is written as rows of panels with widths and heights only; :func:`layout` places
them left to right, wrapping at Grafana's 24 columns, and numbers them 1..n, so ids are unique and
panels cannot overlap by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.mixin.panels import GRID_WIDTH, Json

# --- transformations --------------------------------------------------------------------------


def merge() -> Json:
    return {"id": "merge", "options": {}}


def organize(exclude: Sequence[str] = ("Time",), rename: dict[str, str] | None = None) -> Json:
    return {
        "id": "organize",
        "options": {
            "excludeByName": {name: True for name in exclude},
            "indexByName": {},
            "renameByName": dict(rename or {}),
        },
    }


def sort_by(field: str, *, desc: bool) -> Json:
    return {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": field, "desc": desc}]}}


def joined_columns(
    columns: Sequence[str], *, sort: str, desc: bool, exclude: Sequence[str] = ("Time",)
) -> list[Json]:
    """A table of instant queries joined into one row per series: the value of query A, B, C...
    named ``columns`` in that order, the labels in ``exclude`` hidden, sorted by ``sort``."""
    rename = {f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(columns)}
    return [merge(), organize(exclude=exclude, rename=rename), sort_by(sort, desc=desc)]


def bin_share_columns() -> list[Json]:
    """A bin-share bar chart's table: its three instant queries (A: the share over the last hour,
    B: over the last day, C: the reference) merged into one row per bin, in bin order."""
    return joined_columns(
        ["current (1h)", "current (1d)", "reference"], sort="bin", desc=False,
        exclude=["Time", "__name__", "model", "feature"],
    )  # fmt: skip


def grouping_to_matrix(row: str, column: str) -> Json:
    return {
        "id": "groupingToMatrix",
        "options": {
            "rowField": row,
            "columnField": column,
            "valueField": "Value",
            "emptyValue": "zero",
        },
    }


# --- rows and layout --------------------------------------------------------------------------


def row(title: str, panels: Sequence[Json], *, collapsed: bool = False) -> Json:
    """A row and the panels under it; a collapsed row keeps them inside itself, as Grafana does."""
    return {"type": "row", "title": title, "collapsed": collapsed, "panels": list(panels)}


def layout(rows: Sequence[Json]) -> list[Json]:
    """Number every panel from 1 in reading order and place it: panels flow left to right and
    wrap to a new line when the next one does not fit in the 24 columns, each line as tall as its
    tallest panel; a row takes one line of its own.

    An expanded row's panels follow it at the top level; a collapsed row keeps its panels inside
    it (placed as if it were expanded) and the next row follows it directly.
    """
    placed: list[Json] = []
    next_id = 1
    y = 0
    for section in rows:
        children = section["panels"]
        row_panel = {
            "type": "row",
            "id": next_id,
            "title": section["title"],
            "collapsed": section["collapsed"],
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
            "panels": [],
        }
        next_id += 1
        placed.append(row_panel)
        x, line_y, line_h = 0, y + 1, 0
        flowed = []
        for child in children:
            w, h = child["gridPos"]["w"], child["gridPos"]["h"]
            if not 0 < w <= GRID_WIDTH:
                raise ValueError(f"panel {child['title']!r}: width {w} outside the grid")
            if x + w > GRID_WIDTH:
                x, line_y, line_h = 0, line_y + line_h, 0
            flowed.append(
                {"id": next_id, **child, "gridPos": {"h": h, "w": w, "x": x, "y": line_y}}
            )
            next_id += 1
            x += w
            line_h = max(line_h, h)
        if section["collapsed"]:
            row_panel["panels"] = flowed
            y += 1
        else:
            placed.extend(flowed)
            y = line_y + line_h
    return placed
