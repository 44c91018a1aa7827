"""A backtest's result as a terminal table, a JSON document and an HTML page of plots.

The plots are inline SVG drawn here (no plotting library): per alert that went pending, the
series it compares over the whole log, its threshold, the pending and firing spans shaded, and
the log's phases (an injected fault) marked.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exporter.backtest.alerts import Episode
from exporter.backtest.engine import AlertResult, BacktestResult, matching

#: Labels that tell one alert of a rule from another in the table.
SHOWN_LABELS = ("model", "version", "feature")
PLOT_WIDTH, PLOT_HEIGHT, MARGIN = 900, 220, 48


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _offset(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else "+"
    whole = int(round(abs(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{sign}{minutes}m{secs:02d}s"


def _where(labels: dict[str, str]) -> str:
    return " ".join(f"{k}={labels[k]}" for k in SHOWN_LABELS if labels.get(k))


def text_table(result: BacktestResult) -> str:
    """One line per alert episode, times from the log's start (and the phase it began in)."""
    lines = [
        f"Backtest of {_clock(result.start)} to {_clock(result.end)} UTC "
        f"({_offset(result.end - result.start)[1:]}): {result.replay.predictions:,} calls "
        f"({result.replay.failures:,} failed), {result.replay.outcomes:,} ground truths, "
        f"{result.replay.scrapes:,} scrapes, rules evaluated every {result.evaluation_seconds} s."
    ]
    for at, name in result.phases:
        lines.append(f"  phase {name!r} from {_offset(at - result.start)}")
    episodes = result.episodes()
    if not episodes:
        lines.append("No alert went pending.")
        return "\n".join(lines)
    header = f"{'alert':<26} {'severity':<9} {'labels':<34} {'pending':>10} {'firing':>10} "
    header += f"{'ended':>10} {'peak':>9}"
    lines += ["", header, "-" * len(header)]
    for rule, episode in episodes:
        ended = None if episode.ended_at is None else episode.ended_at - result.start
        fired = None if episode.fired_at is None else episode.fired_at - result.start
        lines.append(
            f"{rule.alert:<26} {rule.severity:<9} {_where(episode.labels):<34} "
            f"{_offset(episode.active_at - result.start):>10} {_offset(fired):>10} "
            f"{_offset(ended):>10} {episode.peak:>9.4g}"
        )
    firing = [e for _, e in episodes if e.fired]
    critical = [e for r, e in episodes if e.fired and r.severity == "critical"]
    lines.append(
        f"\n{len(firing)} alerts fired ({len(critical)} critical); "
        f"{len(episodes) - len(firing)} went pending without firing."
    )
    return "\n".join(lines)


def as_json(result: BacktestResult) -> dict[str, Any]:
    return {
        "start": result.start,
        "end": result.end,
        "evaluation_seconds": result.evaluation_seconds,
        "calls": result.replay.predictions,
        "failed_calls": result.replay.failures,
        "outcomes": result.replay.outcomes,
        "scrapes": result.replay.scrapes,
        "phases": [{"at": at, "phase": name} for at, name in result.phases],
        "timings_seconds": {k: round(v, 2) for k, v in result.timings.items()},
        "alerts": [
            {
                "alertname": rule.alert,
                "severity": rule.severity,
                "for_seconds": rule.for_seconds,
                **episode.as_dict(),
            }
            for rule, episode in result.episodes()
        ],  # fmt: skip
    }


def write_json(result: BacktestResult, path: Path) -> None:
    path.write_text(json.dumps(as_json(result), indent=1, allow_nan=False, default=_finite))


def _finite(value: Any) -> Any:
    raise TypeError(f"not JSON: {value!r}")


# -- HTML -----------------------------------------------------------------------------------------


def write_html(result: BacktestResult, path: Path) -> None:
    """One page: the table, then a plot per alert series that went pending."""
    sections = []
    for alert in result.alerts:
        for episode_labels, episodes in _by_series(alert.episodes):
            sections.append(_section(result, alert, episode_labels, episodes))
    table = html.escape(text_table(result))
    body = "\n".join(sections) or "<p>No alert went pending.</p>"
    path.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Backtest</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{font-size:12px}"
        "h2{font-size:15px;margin-top:2em}svg{border:1px solid #ddd}ul.legend{list-style:none;"
        "padding:0;font-size:13px}p.note{font-size:12px;color:#555}</style></head><body>"
        f"<h1>Backtest</h1><pre>{table}</pre>{body}</body></html>\n",
        encoding="utf-8",
    )


def _by_series(episodes: Sequence[Episode]) -> list[tuple[dict[str, str], list[Episode]]]:
    groups: dict[tuple[tuple[str, str], ...], list[Episode]] = {}
    for episode in episodes:
        groups.setdefault(tuple(sorted(episode.labels.items())), []).append(episode)
    return [(dict(key), found) for key, found in groups.items()]


#: Colours of the signals (one per window), then of the threshold.
SIGNAL_COLOURS = ("#1d4ed8", "#059669", "#7c3aed", "#d97706", "#0891b2")
THRESHOLD_COLOUR = "#dc2626"


def _section(result: BacktestResult, alert: AlertResult, labels: dict[str, str],
             episodes: list[Episode]) -> str:  # fmt: skip
    rule = alert.rule
    title = f"{rule.alert} ({rule.severity}) {_where(labels)}"
    lines = [
        (query, matching(series, labels, SHOWN_LABELS), colour)
        for (query, series), colour in zip(alert.signals.items(), SIGNAL_COLOURS, strict=False)
    ]
    threshold = matching(alert.threshold, labels, ("model",))
    legend = "".join(
        f"<li><span style='color:{colour}'>&#9632;</span> <code>{html.escape(query)}</code></li>"
        for query, _, colour in lines
    )
    if alert.threshold_query:
        legend += (
            f"<li><span style='color:{THRESHOLD_COLOUR}'>&#9632;</span> threshold "
            f"<code>{html.escape(alert.threshold_query)}</code></li>"
        )
    svg = _svg(result, [(s, c) for _, s, c in lines] + [(threshold, THRESHOLD_COLOUR)], episodes)
    return (
        f"<h2>{html.escape(title)}</h2><ul class='legend'>{legend}</ul>{svg}"
        "<p class='note'>Shaded: pending (yellow), firing (red). Dashed: the log's phases.</p>"
    )


def _svg(result: BacktestResult, lines: list[tuple[dict[Any, dict[float, float]], str]],
         episodes: list[Episode]) -> str:  # fmt: skip
    values = [v for series, _ in lines for s in series.values() for v in s.values()]
    values += [e.peak for e in episodes if math.isfinite(e.peak)]
    values = [v for v in values if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    low = min(low, 0.0)
    span = result.end - result.start or 1.0
    width, height = PLOT_WIDTH - 2 * MARGIN, PLOT_HEIGHT - 2 * MARGIN

    def x(t: float) -> float:
        return MARGIN + (t - result.start) / span * width

    def y(v: float) -> float:
        return MARGIN + height - (v - low) / (high - low) * height

    parts = [
        f"<svg width='{PLOT_WIDTH}' height='{PLOT_HEIGHT}' xmlns='http://www.w3.org/2000/svg'>"
    ]
    for episode in episodes:
        end = episode.ended_at if episode.ended_at is not None else result.end
        parts.append(_band(x(episode.active_at), x(episode.fired_at or end), "#fde68a"))
        if episode.fired_at is not None:
            parts.append(_band(x(episode.fired_at), x(end), "#fca5a5"))
    for at, name in result.phases:
        parts.append(
            f"<line x1='{x(at):.1f}' x2='{x(at):.1f}' y1='{MARGIN}' y2='{MARGIN + height}' "
            f"stroke='#555' stroke-dasharray='4 3'/><text x='{x(at) + 3:.1f}' y='{MARGIN - 4}' "
            f"font-size='11'>{html.escape(name)}</text>"
        )
    for series, colour in lines:
        for line in series.values():
            points = [(t, v) for t, v in sorted(line.items()) if math.isfinite(v)]
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
            if path:
                parts.append(f"<polyline fill='none' stroke='{colour}' points='{path}'/>")
    parts.append(
        f"<text x='4' y='{MARGIN + 4}' font-size='11'>{high:.3g}</text>"
        f"<text x='4' y='{MARGIN + height}' font-size='11'>{low:.3g}</text>"
        f"<text x='{MARGIN}' y='{PLOT_HEIGHT - 8}' font-size='11'>{_clock(result.start)}</text>"
        f"<text x='{PLOT_WIDTH - MARGIN - 120}' y='{PLOT_HEIGHT - 8}' font-size='11'>"
        f"{_clock(result.end)}</text></svg>"
    )
    return "".join(parts)


def _band(left: float, right: float, colour: str) -> str:
    return (
        f"<rect x='{left:.1f}' y='{MARGIN}' width='{max(right - left, 1.0):.1f}' "
        f"height='{PLOT_HEIGHT - 2 * MARGIN}' fill='{colour}' opacity='0.6'/>"
    )
