"""The summary for machines (a JSON document) and for people (an aligned plain-text table, no
colours: it reads the same in a terminal, a log and a ticket)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.status.model import FiringAlert, ModelStatus, Signal
from exporter.status.rules import number, seconds, share
from exporter.status.signals import COVERAGE, ERROR_RATIO, INVALID, LATENCY, TRAFFIC

#: Marks after a cell whose signal is not ok, since the table has no colours.
MARKS = {"ok": "", "warning": " !", "critical": " !!"}
LEGEND = "! warning, !! critical"


def _number_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value is reported as null."""
    return value if value is not None and math.isfinite(value) else None


def signal_document(signal: Signal) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": signal.name,
        "value": _number_or_none(signal.value),
        "threshold": _number_or_none(signal.threshold),
        "window": signal.window,
        "state": signal.state,
        "unit": signal.unit,
    }
    if signal.feature:
        document["feature"] = signal.feature
    if signal.metric:
        document["metric"] = signal.metric
    if signal.note:
        document["note"] = signal.note
    return document


def alert_document(alert: FiringAlert) -> dict[str, Any]:
    return {"name": alert.name, "severity": alert.severity, "labels": dict(alert.labels)}


def status_document(status: ModelStatus) -> dict[str, Any]:
    return {
        "model": status.model,
        "version": status.version,
        "role": status.role or None,
        "fleet": dict(status.fleet),
        "state": status.state,
        "signals": [signal_document(s) for s in status.signals],
        "drift": [signal_document(s) for s in status.drift],
        "output_drift": (
            signal_document(status.output_drift) if status.output_drift is not None else None
        ),
        "comparisons": [signal_document(s) for s in status.comparisons],
        "alerts": [alert_document(a) for a in status.alerts],
        "recommendations": [
            {"rule": r.rule, "severity": r.severity, "text": r.text} for r in status.recommendations
        ],
    }


def document(
    statuses: Sequence[ModelStatus],
    *,
    source: str,
    note: str = "",
    other_alerts: Sequence[FiringAlert] = (),
) -> dict[str, Any]:
    """The whole answer: where it was read, every model version, and the firing alerts that name
    no model (ModelExporterAbsent...)."""
    answer: dict[str, Any] = {"source": source}
    if note:
        answer["note"] = note
    answer["models"] = [status_document(s) for s in statuses]
    answer["other_alerts"] = [alert_document(a) for a in other_alerts]
    return answer


# --- the terminal table -------------------------------------------------------------------------


def _cell(text: str, signal: Signal | None) -> str:
    return text + (MARKS[signal.state] if signal is not None else "")


def _traffic(signal: Signal | None) -> str:
    if signal is None or signal.value is None:
        return _cell("-", signal)
    if signal.unit == "predictions/s":
        return _cell(f"{signal.value:.3g}/s", signal)
    return _cell(f"{signal.value:.0f}", signal)


def _performance(status: ModelStatus) -> str:
    signal = status.signal("mae") or status.signal("accuracy")
    if signal is None:
        return "-"
    if signal.name == "mae":
        return _cell(f"MAE {number(signal.value)}", signal)
    return _cell(f"acc {share(signal.value)}", signal)


def _drift(status: ModelStatus) -> str:
    if not status.drift:
        return "-"
    top = status.drift[0]
    return _cell(f"{top.feature} {top.value:.2f}" if top.value is not None else "-", top)


def _output(status: ModelStatus) -> str:
    signal = status.output_drift
    return "-" if signal is None or signal.value is None else _cell(f"{signal.value:.2f}", signal)


def _versus_primary(status: ModelStatus) -> str:
    """A candidate's worst comparison with the primary: the metric and its statistic."""
    judged = [c for c in status.comparisons if c.value is not None]
    if not judged:
        return "too few" if status.comparisons else "-"
    worst = max(judged, key=lambda c: (c.state != "ok", c.value or 0.0))
    # round() or 0.0: a statistic of -0.04 reads "z 0.0", not "z -0.0".
    return _cell(f"{worst.metric} z {round(worst.value or 0.0, 1) or 0.0:.1f}", worst)


def _alerts(alerts: Sequence[FiringAlert]) -> str:
    """Each alert's name once, with its worst severity firing (a warning and a critical of one
    alert fire together)."""
    rank = {"critical": 2, "warning": 1}
    worst: dict[str, str] = {}
    for alert in alerts:
        seen = worst.get(alert.name)
        if seen is None or rank.get(alert.severity, 0) > rank.get(seen, 0):
            worst[alert.name] = alert.severity
    return ", ".join(f"{name} ({worst[name]})" for name in sorted(worst)) or "-"


def _row(status: ModelStatus) -> list[str]:
    sig = status.signal
    fleet = "/".join(status.fleet[k] for k in sorted(status.fleet))
    return [
        status.model + (f" ({fleet})" if fleet else ""),
        status.version,
        status.role or "-",
        status.state.upper() if status.state != "ok" else "ok",
        _traffic(sig(TRAFFIC)),
        _cell(share(_value(sig(ERROR_RATIO))), sig(ERROR_RATIO)),
        _cell(seconds(_value(sig(LATENCY))), sig(LATENCY)),
        _cell(share(_value(sig(INVALID))), sig(INVALID)),
        _drift(status),
        _output(status),
        _performance(status),
        _cell(share(_value(sig(COVERAGE))), sig(COVERAGE)),
        _versus_primary(status),
        _alerts(status.alerts),
    ]


def _value(signal: Signal | None) -> float | None:
    return signal.value if signal is not None else None


HEADER = ["MODEL", "VERSION", "ROLE", "STATE", "TRAFFIC", "ERRORS", "P95", "INVALID",
          "TOP DRIFT (PSI)", "OUTPUT", "PERFORMANCE", "TRUTH", "VS PRIMARY", "FIRING"]  # fmt: skip


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    padded = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return [line.rstrip() for line in padded]


def _windows(statuses: Sequence[ModelStatus]) -> str:
    """Which window each column covers, once (every model of one source shares them)."""
    first = statuses[0]
    parts = []
    for label, signal in (
        ("traffic, errors, p95, invalid", first.signal(TRAFFIC)),
        ("drift", first.drift[0] if first.drift else first.output_drift),
        ("performance, truth", first.signal("mae") or first.signal("accuracy")),
    ):
        if signal is not None:
            parts.append(f"{label}: {signal.window}")
    compared = next((c for s in statuses for c in s.comparisons), None)
    if compared is not None:
        parts.append(f"vs primary: {compared.window} (z: standard errors worse)")
    return "; ".join(parts)


def text_table(
    statuses: Sequence[ModelStatus],
    *,
    source: str,
    note: str = "",
    other_alerts: Sequence[FiringAlert] = (),
) -> str:
    """The table, one row per model version, then each version's recommendations."""
    lines = [f"source: {source}"]
    if note:
        lines.append(note)
    if not statuses:
        lines.append("no model found")
    else:
        lines.append(f"windows: {_windows(statuses)}; {LEGEND}")
        lines.append("")
        lines.extend(_align([HEADER, *(_row(s) for s in statuses)]))
    for status in statuses:
        if not status.recommendations:
            continue
        lines.append("")
        lines.append(f"{status.model} {status.version}{_fleet_suffix(status.fleet)}:")
        for rec in status.recommendations:
            lines.append(f"  [{rec.severity}] {rec.text}")
    if other_alerts:
        lines.append("")
        lines.append("firing without a model: " + _alerts(other_alerts))
    return "\n".join(lines)


def _fleet_suffix(fleet: Mapping[str, str]) -> str:
    return "".join(f" {k}={v}" for k, v in sorted(fleet.items()))
