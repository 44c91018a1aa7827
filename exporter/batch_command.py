"""``model-exporter batch``: monitor a batch scoring job and push its counts to a Pushgateway.

A nightly job over a table ends before Prometheus could scrape it. This command reads the table
(Parquet or CSV), scores it through the configured model (or takes the predictions already in a
column), counts everything :meth:`ModelMonitor.observe_batch` counts, and pushes the counts to a
Pushgateway as totals over runs (:mod:`exporter.pushgateway`), where the rules read them like a
service's. Every mistake in the file or the options is one line before anything is pushed; the
model's own failures on some rows are counted, like a service counts them, and are not mistakes.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from exporter._calls import default_output
from exporter.baseline_command import read_table
from exporter.config import ConfigError, MonitorConfig, load_config
from exporter.errors import CommandError
from exporter.monitor import ModelMonitor
from exporter.outcomes import MemoryOutcomeStore
from exporter.profile import NumericFeature, ProfileError, ReferenceProfile
from exporter.pushgateway import DEFAULT_JOB, GatewayPush, PushError, PushReport, group_labels

#: Drifting features named in the summary line, the most drifted first.
SUMMARY_FEATURES = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the monitor's YAML config (as for serve)")
    p.add_argument("--data", required=True, help="the scored (or to-score) rows: Parquet or CSV")
    p.add_argument(
        "--model-column", default=None, metavar="COLUMN",
        help="the column holding the predictions already made; without it the config's model "
        "(model.import_path) scores every row",
    )  # fmt: skip
    p.add_argument(
        "--confidence-column", default=None, metavar="COLUMN",
        help="with --model-column: the column holding each prediction's confidence",
    )  # fmt: skip
    p.add_argument("--pushgateway", required=True, metavar="URL",
                   help="the Pushgateway, e.g. http://pushgateway:9091")  # fmt: skip
    p.add_argument(
        "--job", default=DEFAULT_JOB,
        help=f"the pushed series' job label (default {DEFAULT_JOB}, which the rules' default "
        "selector job=~\"model-exporter.*\" matches)",
    )  # fmt: skip
    p.add_argument(
        "--grouping-key", action="append", default=[], metavar="LABEL=VALUE",
        help="more labels of the Pushgateway group besides job, model and version, e.g. "
        "instance=shard-3 for jobs that run at the same time (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--scrape-interval", type=float, default=15.0, metavar="SECONDS",
        help="how often Prometheus scrapes the Pushgateway (default 15): series new to the group "
        "are pushed at 0 first and their totals that long after, so the first run is counted",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="for each request to the Pushgateway (default 10)")  # fmt: skip


@dataclass(frozen=True)
class Scored:
    """The rows the model answered, their answers, and what was counted apart."""

    frame: pd.DataFrame
    predictions: list[Any] | pd.Series
    confidences: list[Any] | pd.Series | None
    errors: int
    unscored: int


def cmd_batch(args: argparse.Namespace) -> int:
    config = _config(args.config)
    grouping = _grouping_key(args.grouping_key)
    reference = _reference(config)
    frame = _first_line(lambda: read_table(args.data))
    watched = config.features or (list(reference.features) if reference else [])
    _check_columns(args, config, frame, watched, reference)
    predict = None if args.model_column else _model(config)
    registry = CollectorRegistry()
    monitor = _monitor(config, reference, registry)
    try:
        group = group_labels(args.job, monitor.model_labels, grouping)
        pusher = GatewayPush(
            args.pushgateway, group, monitor.model_labels,
            scrape_interval=args.scrape_interval, timeout=args.timeout,
        )  # fmt: skip
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        # The run's series at 0 now, so the wait for Prometheus to see them overlaps the scoring.
        pusher.announce(registry)
        scored = (
            _score(frame, predict, config, monitor)
            if predict
            else _read_scored(args, frame, config)
        )
        monitor.observe_batch(scored.frame, scored.predictions, scored.confidences, keep=False)
        monitor.flush()
        report = pusher.push(registry)
    except PushError as exc:
        raise CommandError(str(exc)) from None
    print(_summary(args, monitor, scored, report))
    return 0


def _first_line(read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    try:
        return read()
    except CommandError as exc:  # pyarrow's messages run over several lines
        raise CommandError(str(exc).strip().splitlines()[0]) from None


def _config(path: str) -> MonitorConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _grouping_key(pairs: list[str]) -> dict[str, str]:
    key = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CommandError(f"--grouping-key {pair!r}: give LABEL=VALUE")
        key[name.strip()] = value.strip()
    return key


def _reference(config: MonitorConfig) -> ReferenceProfile | None:
    path = config.reference_path()
    if path is None:
        return None
    try:
        return ReferenceProfile.load(path)
    except ProfileError as exc:
        raise CommandError(str(exc)) from None


def _model(config: MonitorConfig) -> Callable[[Mapping[str, Any]], Any]:
    from exporter.server import import_callable

    try:
        return import_callable(config.model.import_path, "model.import_path")
    except ConfigError as exc:
        raise CommandError(f"{config.source}: {exc}") from None


def _monitor(
    config: MonitorConfig, reference: ReferenceProfile | None, registry: CollectorRegistry
) -> ModelMonitor:
    from exporter.server import check_segments, monitor_for

    try:
        check_segments(config, reference)
        # No prediction waits for ground truth: a batch run ends before any could come.
        return monitor_for(config, reference, registry=registry,
                           outcomes=MemoryOutcomeStore(max_pending=1))  # fmt: skip
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:
        raise CommandError(f"{config.source}: monitoring: {exc}") from None


def _check_columns(
    args: argparse.Namespace, config: MonitorConfig, frame: pd.DataFrame, watched: list[str],
    reference: ReferenceProfile | None,
) -> None:  # fmt: skip
    """A column the run needs and the file lacks, or one of the wrong kind altogether, stops the
    run before anything is pushed; single bad values are counted, as a service counts them."""
    columns = set(frame.columns)
    needed = {"--model-column": args.model_column, "--confidence-column": args.confidence_column}
    for flag, column in needed.items():
        if column is not None and column not in columns:
            raise CommandError(f"{args.data}: no column {column!r} ({flag}); it has {_some(frame)}")
    if args.confidence_column and not args.model_column:
        raise CommandError("--confidence-column goes with --model-column")
    derived = config.model.derive_features is not None
    for feature in watched:
        if feature not in columns and not derived:
            raise CommandError(
                f"{args.data}: no column {feature!r}, which the config watches; "
                f"it has {_some(frame)}"
            )
    if not args.model_column:
        for feature in config.model.required_features:
            if feature not in columns:
                raise CommandError(
                    f"{args.data}: no column {feature!r}, which the model requires "
                    f"(model.required_features)"
                )
    if frame.empty:
        raise CommandError(f"{args.data}: no rows")
    numeric = [
        f for f in watched if reference and isinstance(reference.features.get(f), NumericFeature)
    ]
    for feature in numeric:
        if feature in columns:
            _check_numeric(args.data, frame[feature], f"column {feature!r} (a numeric feature)")
    if args.model_column and config.model.task == "regression":
        _check_numeric(args.data, frame[args.model_column], f"--model-column {args.model_column!r}")


def _check_numeric(path: str, column: pd.Series, what: str) -> None:
    """A column of text where numbers belong is a wrong file, not a few wrong values."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return
    present = column.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and numbers.isna().all():
        example = str(present.iloc[0])[:40]
        raise CommandError(f"{path}: {what} holds text, not numbers (e.g. {example!r})")


def _some(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns[:8]]
    more = f" and {len(frame.columns) - 8} more" if len(frame.columns) > 8 else ""
    return ", ".join(names) + more if names else "no columns"


def _read_scored(args: argparse.Namespace, frame: pd.DataFrame, config: MonitorConfig) -> Scored:
    confidences = frame[args.confidence_column] if args.confidence_column else None
    derive = _derive(config)
    if derive is not None:
        rows = [_raw(row) for row in frame.to_dict("records")]
        frame = _with_derived(frame, [_derived(derive, raw) for raw in rows])
    return Scored(frame, frame[args.model_column], confidences, errors=0, unscored=0)


def _derive(config: MonitorConfig) -> Callable[[Mapping[str, Any]], Mapping[str, Any]] | None:
    from exporter.server import import_callable

    if config.model.derive_features is None:
        return None
    try:
        return import_callable(config.model.derive_features, "model.derive_features")
    except ConfigError as exc:
        raise CommandError(f"{config.source}: {exc}") from None


def _raw(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row as the model gets it from ``serve``: an empty cell is null, as in JSON."""
    return {str(k): (None if _is_missing(v) else v) for k, v in row.items()}


def _with_derived(frame: pd.DataFrame, derived_rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows with the derived features as columns (replacing raw ones of the same name)."""
    extra = pd.DataFrame(derived_rows, index=frame.index)
    if extra.empty:
        return frame
    return pd.concat([frame.drop(columns=[c for c in extra if c in frame]), extra], axis=1)


def _score(
    frame: pd.DataFrame, predict: Callable[[Mapping[str, Any]], Any], config: MonitorConfig,
    monitor: ModelMonitor,
) -> Scored:  # fmt: skip
    """Every row through the model as ``serve`` calls it: one features mapping per call, timed,
    a failure counted by its exception class; a row lacking a required feature is counted as a
    missing input and not scored (``serve`` answers it 422)."""
    derive = _derive(config)
    required = config.model.required_features
    kept: list[int] = []
    derived_rows: list[Mapping[str, Any]] = []
    predictions: list[Any] = []
    confidences: list[Any] = []
    errors = unscored = 0
    records = frame.to_dict("records")
    for index, row in enumerate(records):
        raw = _raw(row)
        lacking = [f for f in required if raw.get(f) is None]
        if lacking:
            for feature in lacking:
                monitor.count_invalid(feature, "missing")
            unscored += 1
            continue
        start = time.perf_counter()
        try:
            prediction, confidence = default_output(predict(raw))
        except Exception as exc:
            monitor.observe_latency(time.perf_counter() - start)
            monitor.record_error(exc)
            errors += 1
            continue
        monitor.observe_latency(time.perf_counter() - start)
        kept.append(index)
        predictions.append(prediction)
        confidences.append(confidence)
        if derive is not None:
            derived_rows.append(_derived(derive, raw))
    scored = frame.iloc[kept].reset_index(drop=True)
    if derive is not None:
        scored = _with_derived(scored, derived_rows)
    has_confidence = any(c is not None for c in confidences)
    return Scored(scored, predictions, confidences if has_confidence else None, errors, unscored)


def _derived(
    derive: Callable[[Mapping[str, Any]], Mapping[str, Any]], raw: Mapping[str, Any]
) -> Mapping[str, Any]:
    try:
        return dict(derive(raw))
    except Exception:  # as in serve: the raw features are still watched
        return {}


def _is_missing(value: Any) -> bool:
    return (
        value is None or value is pd.NA or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )  # fmt: skip


def _summary(
    args: argparse.Namespace, monitor: ModelMonitor, scored: Scored, report: PushReport
) -> str:
    model, version = monitor.model_labels
    group = ", ".join(f"{k}={v}" for k, v in report.group.items())
    lines = [
        f"model {model} version {version}: {len(scored.frame)} predictions counted"
        f" ({scored.errors} failed, {scored.unscored} not scored for a missing required feature)",
        f"pushed to {args.pushgateway} as group {{{group}}}: {report.series} series, totals over"
        f" every run of this group",
    ]
    if report.waited_seconds:
        lines.append(
            f"waited {report.waited_seconds:.0f} s before pushing the totals (--scrape-interval): "
            f"{'the group is new, so ' if report.first_run else ''}series new to it were pushed "
            "at 0 first, and Prometheus needs a sample at 0 to count this run"
        )
    drifted = _drift_line(monitor)
    if drifted:
        lines.append(drifted)
    return "\n".join(lines)


def _drift_line(monitor: ModelMonitor) -> str | None:
    """This run's PSI per feature against the reference, as computed in this process."""
    snapshot = monitor.drift(max_age=0)
    best: dict[str, float] = {}
    for row in snapshot.rows():
        if row.ready and row.psi is not None and np.isfinite(row.psi):
            best[row.feature] = max(best.get(row.feature, 0.0), row.psi)
    if not best:
        return None
    top = sorted(best.items(), key=lambda item: -item[1])[:SUMMARY_FEATURES]
    return "PSI of this run against the reference: " + ", ".join(f"{f} {v:.3f}" for f, v in top)
