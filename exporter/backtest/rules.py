"""The rule files a backtest evaluates: recording rules in dependency order, and alert rules.

Prometheus evaluates a recording rule only at "now". To get a recorded series over past data,
``promtool tsdb create-blocks-from rules`` evaluates it over a time range against a Prometheus
that already holds the series it reads; a rule that reads another recorded series must therefore
be backfilled after that one. :func:`recording_levels` orders the recording rules that way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ExporterError
from exporter.windows import parse_duration

#: A metric or recording-rule name as PromQL writes it.
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: Prometheus's default rule evaluation interval when neither the group nor the caller sets one.
DEFAULT_EVALUATION_SECONDS = 15


class RuleFileError(ExporterError, ValueError):
    """A rule file that cannot be read or is not a Prometheus rule file."""


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str
    labels: dict[str, str]
    group: str
    #: The group's ``interval`` in seconds, or ``None`` for the global evaluation interval.
    interval: int | None


@dataclass(frozen=True)
class AlertRule:
    alert: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]
    for_seconds: int
    keep_firing_for_seconds: int
    group: str
    interval: int | None

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")


@dataclass
class RuleSet:
    recording: list[RecordingRule] = field(default_factory=list)
    alerting: list[AlertRule] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _seconds(value: Any, where: str) -> int:
    if value is None:
        return 0
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise RuleFileError(f"{where}: {exc}") from None


def load_rules(paths: Sequence[Path]) -> RuleSet:
    """Every group of every rule file, in file order."""
    rules = RuleSet(files=list(paths))
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())  # one line, whatever the parser printed
            raise RuleFileError(f"{path}: not a readable YAML file: {reason}") from None
        groups = document.get("groups") if isinstance(document, dict) else None
        if not isinstance(groups, list):
            raise RuleFileError(f"{path}: not a Prometheus rule file (no `groups:` list)")
        for group in groups:
            name = str(group.get("name", ""))
            where = f"{path}: group {name}"
            interval = _seconds(group.get("interval"), where) or None
            for rule in group.get("rules") or []:
                labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
                if "record" in rule:
                    rules.recording.append(
                        RecordingRule(
                            str(rule["record"]), str(rule["expr"]), labels, name, interval
                        )  # fmt: skip
                    )
                elif "alert" in rule:
                    rules.alerting.append(
                        AlertRule(
                            alert=str(rule["alert"]),
                            expr=str(rule["expr"]),
                            labels=labels,
                            annotations={
                                str(k): str(v) for k, v in (rule.get("annotations") or {}).items()
                            },
                            for_seconds=_seconds(rule.get("for"), f"{where}: {rule['alert']}"),
                            keep_firing_for_seconds=_seconds(
                                rule.get("keep_firing_for"), f"{where}: {rule['alert']}"
                            ),
                            group=name,
                            interval=interval,
                        )
                    )
    if not rules.alerting and not rules.recording:
        raise RuleFileError(f"no rules in {', '.join(str(p) for p in paths) or 'no files'}")
    return rules


def names_in(expr: str) -> set[str]:
    """Every identifier in a PromQL expression (metric names among them)."""
    return set(_NAME.findall(expr))


def recording_levels(rules: Iterable[RecordingRule]) -> list[list[RecordingRule]]:
    """Recording rules in levels: each reads only raw series and rules of earlier levels.

    Raises :class:`RuleFileError` on a cycle (a rule that reads itself through others).
    """
    rules = list(rules)
    recorded = {r.record for r in rules}
    depends = {id(r): names_in(r.expr) & recorded - {r.record} for r in rules}
    level_of: dict[str, int] = {}
    remaining = list(rules)
    levels: list[list[RecordingRule]] = []
    while remaining:
        ready = [r for r in remaining if all(d in level_of for d in depends[id(r)])]
        if not ready:
            names = ", ".join(sorted({r.record for r in remaining}))
            raise RuleFileError(f"recording rules read each other in a cycle: {names}")
        levels.append(ready)
        for rule in ready:
            level_of[rule.record] = len(levels)
        remaining = [r for r in remaining if r not in ready]
    return levels


def write_rule_file(path: Path, rules: Sequence[RecordingRule]) -> None:
    """A rule file holding ``rules`` in their original groups (and group intervals)."""
    groups: dict[str, dict[str, Any]] = {}
    for rule in rules:
        group = groups.setdefault(rule.group, {"name": rule.group, "rules": []})
        if rule.interval:
            group["interval"] = f"{rule.interval}s"
        entry: dict[str, Any] = {"record": rule.record, "expr": rule.expr}
        if rule.labels:
            entry["labels"] = dict(rule.labels)
        group["rules"].append(entry)
    path.write_text(yaml.safe_dump({"groups": list(groups.values())}, sort_keys=False))


#: Recorded series that are evidence guards, not signals: counts, the G-test, bins.
_GUARDS = re.compile(r":(increase|count)\w*$|_g:|_bins:")


def signal_of(rule: AlertRule, recorded: set[str]) -> tuple[list[str], str | None]:
    """The series an alert compares and the threshold it compares them with, for plots.

    The signals are the recorded series the expression reads, in order, other than thresholds
    and evidence guards (counts, the G-test): one per window for an alert that combines windows.
    The threshold is the first ``...threshold...{alert="KEY"}`` selector other than the sample-size
    guard. Either is empty (``None``) when the expression has none (an ``absent()`` or ``up == 0``
    alert).
    """
    signals: list[str] = []
    for match in _NAME.finditer(rule.expr):
        name = match.group(0)
        if name in recorded and "threshold" not in name and not _GUARDS.search(name):
            rest = rule.expr[match.end() :]
            selector = re.match(r"\{[^}]*\}", rest)
            found = name + (selector.group(0) if selector else "")
            if not any(s.split("{")[0] == name for s in signals):
                signals.append(found)
    # The sample-size guard (min_samples) is a threshold of the evidence, not of the signal.
    thresholds = [
        m.group(0)
        for m in re.finditer(r"[a-zA-Z_:]*threshold[a-zA-Z_:]*\{[^}]*\}", rule.expr)
        if 'alert="min_samples"' not in m.group(0)
    ]
    return signals, thresholds[0] if thresholds else None
