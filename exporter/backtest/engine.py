"""The backtest from log to alerts: replay, backfill, recording rules, alert state machine.

1. :func:`exporter.backtest.replay.replay` writes the scrapes as OpenMetrics files, each
   backfilled with promtool (in a thread, while the replay goes on) into a fresh TSDB;
2. a Prometheus is started on it and the recording rules are backfilled level by level;
3. every alert rule's expression is queried over the whole range at its group's evaluation
   interval and run through Prometheus's pending/firing state machine;
4. for plots, the signal each alert compares and its threshold are queried too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.backtest.alerts import Episode, run_state_machine
from exporter.backtest.log import PredictionLog
from exporter.backtest.replay import DEFAULT_SCRAPE_SECONDS, ReplaySummary, replay
from exporter.backtest.rules import AlertRule, RuleSet, signal_of
from exporter.backtest.tsdb import (
    PrometheusOnBlocks,
    Series,
    Tools,
    backfill_openmetrics,
    backfill_recording_rules,
)
from exporter.config import MonitorConfig

#: Points per plotted series at most: a week at 15 s would be 40,000.
PLOT_POINTS = 1_500


@dataclass
class AlertResult:
    """What one alert rule did over the log."""

    rule: AlertRule
    episodes: list[Episode]
    #: The compared series (one query per window) and the threshold, for the plots.
    signals: dict[str, Series] = field(default_factory=dict)
    threshold: Series = field(default_factory=dict)
    threshold_query: str | None = None


@dataclass
class BacktestResult:
    start: float
    end: float
    replay: ReplaySummary
    evaluation_seconds: int
    alerts: list[AlertResult]
    phases: list[tuple[float, str]]
    timings: dict[str, float]

    def episodes(self) -> list[tuple[AlertRule, Episode]]:
        found = [(a.rule, e) for a in self.alerts for e in a.episodes]
        return sorted(found, key=lambda pair: (pair[1].active_at, pair[0].alert))


def run_backtest(
    log: PredictionLog,
    config: MonitorConfig,
    rules: RuleSet,
    work: Path,
    *,
    derive: Callable[..., Any] | None = None,
    scrape_seconds: int = DEFAULT_SCRAPE_SECONDS,
    evaluation_seconds: int = DEFAULT_SCRAPE_SECONDS,
    tools: Tools | None = None,
    plots: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> BacktestResult:
    """Backtest ``rules`` on ``log`` in the scratch directory ``work`` (created if needed)."""
    tools = tools or Tools.find()
    tsdb = work / "tsdb"
    scrapes = work / "scrapes"
    tsdb.mkdir(parents=True, exist_ok=True)
    scrapes.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    began = time.monotonic()
    say(
        f"replaying {len(log.frame):,} calls through the monitor, a scrape every {scrape_seconds} s"
    )
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:

        def backfill(path: Path) -> None:
            pending.append(pool.submit(_backfill_and_drop, tools, path, tsdb))

        summary = replay(log, config, scrapes, derive=derive, scrape_seconds=scrape_seconds,
                         on_file=backfill)  # fmt: skip
        for future in pending:
            future.result()
    timings["replay_and_backfill"] = time.monotonic() - began
    started = time.monotonic()
    results = []
    with PrometheusOnBlocks(tools, tsdb, work) as server:
        backfill_recording_rules(tools, server, rules.recording, summary.start, summary.end,
                                 evaluation_seconds, progress=say)  # fmt: skip
        timings["recording_rules"] = time.monotonic() - started
        started = time.monotonic()
        say(f"evaluating {len(rules.alerting)} alert rules")
        recorded = {r.record for r in rules.recording}
        for rule in rules.alerting:
            step = rule.interval or evaluation_seconds
            first = math.ceil(summary.start / step) * step
            stamps = [
                round(first + i * step, 3) for i in range(int((summary.end - first) // step) + 1)
            ]
            values = alert_series(server.query_range(rule.expr, first, summary.end, step))
            episodes = run_state_machine(values, stamps, rule.for_seconds,
                                         rule.keep_firing_for_seconds, rule_labels={
                                             **rule.labels, "alertname": rule.alert})  # fmt: skip
            result = AlertResult(rule, episodes)
            if plots and episodes:
                _add_signal(result, server, recorded, summary.start, summary.end, step)
            results.append(result)
        timings["alert_rules"] = time.monotonic() - started
    return BacktestResult(summary.start, summary.end, summary, evaluation_seconds, results,
                          log.phases, timings)  # fmt: skip


def alert_series(series: Series) -> Series:
    """The expression's series as Prometheus turns them into alerts: without the metric name.

    An alert that ORs several windows returns, from one evaluation to the next, the series of
    whichever window holds (``psi_excess:2m`` now, ``psi_excess:15m`` later); Prometheus drops
    ``__name__`` from an alert's labels, so it stays one alert across that switch.
    """
    merged: Series = {}
    for key, values in series.items():
        labels = tuple(pair for pair in key if pair[0] != "__name__")
        merged.setdefault(labels, {}).update(values)
    return merged


def _backfill_and_drop(tools: Tools, path: Path, tsdb: Path) -> None:
    backfill_openmetrics(tools, path, tsdb)
    path.unlink()


def _add_signal(result: AlertResult, server: PrometheusOnBlocks, recorded: set[str],
                start: float, end: float, step: float) -> None:  # fmt: skip
    signals, threshold = signal_of(result.rule, recorded)
    plot_step = max(step, math.ceil((end - start) / PLOT_POINTS / step) * step)
    result.threshold_query = threshold
    for query in signals:
        result.signals[query] = server.query_range(query, start, end, plot_step)
    if threshold is not None:
        result.threshold = server.query_range(threshold, start, end, plot_step)


def matching(series: Series, labels: dict[str, str], keys: Sequence[str]) -> Series:
    """The series whose labels agree with ``labels`` on every key of ``keys`` both carry."""
    found = {}
    for key, values in series.items():
        own = dict(key)
        if all(own[k] == labels[k] for k in keys if k in own and k in labels):
            found[key] = values
    return found
