"""``model-exporter backtest``: which alerts a prediction log would have raised, and when.

Tune thresholds on a week of your own history before deploying: replay the log through the
monitor of your config, evaluate your rule files with a real Prometheus over it, and read the
table (terminal), report.json and report.html (a plot per alert: the signal against its
threshold, pending and firing shaded). --simulate generates the log for the examples instead.
It needs the prometheus and promtool binaries of the stack (Debian package prometheus), nothing
else.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from exporter.backtest.engine import BacktestResult, run_backtest
from exporter.backtest.log import LogError, PredictionLog
from exporter.backtest.report import text_table, write_html, write_json
from exporter.backtest.rules import RuleFileError, RuleSet, load_rules
from exporter.backtest.tsdb import BacktestToolError
from exporter.config import ConfigError, MonitorConfig, load_config
from exporter.windows import parse_duration

EXIT_USAGE = 2
#: Where the rules are looked for when --rules is not given: the checkout's rule files.
DEFAULT_RULES = Path("prometheus") / "rules"


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--log", type=Path, metavar="FILE",
        help="the prediction log, CSV or Parquet: time, features, prediction, and optionally "
        "confidence, latency_seconds, error, actual, actual_time (see the docs)",
    )  # fmt: skip
    source.add_argument(
        "--simulate", metavar="SCENARIO",
        help="generate the log for an example model instead: stable, realistic, drift, "
        "moderate-drift, mae (fare), degrade (intent), errors, latency",
    )  # fmt: skip
    parser.add_argument(
        "--config", type=Path, help="the monitor's config (required with --log; "
        "with --simulate, the example's own)",
    )  # fmt: skip
    parser.add_argument(
        "--rules", type=Path, action="append", metavar="FILE",
        help=f"a rule file; repeat for several (default: {DEFAULT_RULES}/*.yml)",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("backtest"),
        help="where report.json and report.html go (default ./backtest)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=_duration,
        default=15,
        metavar="DURATION",
        help="time between scrapes (default 15s)",
    )
    parser.add_argument(
        "--evaluation-interval",
        type=_duration,
        default=15,
        metavar="DURATION",
        help="rule evaluation interval where a group sets none (default 15s)",
    )
    parser.add_argument(
        "--truth-delay",
        type=_duration,
        default=0,
        metavar="DURATION",
        help="when the log has `actual` but no `actual_time`: the delay",
    )
    parser.add_argument(
        "--keep-tsdb",
        action="store_true",
        help="keep the TSDB built from the log in OUT/tsdb (to query it yourself)",
    )
    simulation = parser.add_argument_group("with --simulate")
    simulation.add_argument("--example", choices=("fare", "intent"), default="fare")
    simulation.add_argument(
        "--rate", type=_positive, default=1.0, help="mean predictions per second (default 1)"
    )
    simulation.add_argument(
        "--hours", type=_positive, default=6.0, help="hours of traffic (default 6)"
    )
    simulation.add_argument(
        "--inject-after",
        type=_duration,
        default=3 * 3600,
        metavar="DURATION",
        help="fault starts after (default 3h)",
    )
    simulation.add_argument(
        "--recover-after",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="fault stops after (default: never)",
    )
    simulation.add_argument("--seed", type=int, default=0)
    simulation.add_argument(
        "--save-log",
        type=Path,
        metavar="FILE",
        help="also write the generated log here (.csv or .parquet)",
    )


def _rules(args: argparse.Namespace) -> RuleSet:
    paths = args.rules
    if not paths:
        paths = sorted(DEFAULT_RULES.glob("*.yml"))
        if not paths:
            raise RuleFileError(
                f"no {DEFAULT_RULES}/*.yml here: run from a checkout or pass --rules FILE"
            )
    return load_rules(list(paths))


def _source(args: argparse.Namespace) -> tuple[PredictionLog, MonitorConfig]:
    if args.log is not None:
        if args.config is None:
            raise ConfigError("--log needs --config (the monitor's config the log was made with)")
        config = load_config(args.config)
        features = None if config.model.derive_features else config.features
        log = PredictionLog.read(args.log, features=features, truth_delay=args.truth_delay)
        return log, config
    from exporter.backtest.simulate import simulate

    simulated = simulate(
        args.example, args.simulate, rate=args.rate, hours=args.hours,
        start=float(int(time.time()) // 86_400 * 86_400 - 86_400),
        inject_after=float(args.inject_after), seed=args.seed,
        recover_after=None if args.recover_after is None else float(args.recover_after),
    )  # fmt: skip
    config = load_config(args.config or simulated.config)
    if args.save_log is not None:
        if args.save_log.suffix.lower() in (".parquet", ".pq"):
            simulated.frame.to_parquet(args.save_log)
        else:
            simulated.frame.to_csv(args.save_log, index=False)
    features = None if config.model.derive_features else config.features
    return PredictionLog.from_frame(simulated.frame, features=features), config


def run(args: argparse.Namespace) -> int:
    from exporter.server import import_callable

    try:
        rules = _rules(args)
        log, config = _source(args)
        derive = (
            import_callable(config.model.derive_features, "model.derive_features")
            if config.model.derive_features
            else None
        )
        args.out.mkdir(parents=True, exist_ok=True)
    except (ConfigError, LogError, RuleFileError, ValueError) as exc:
        print(f"model-exporter backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"model-exporter backtest: {args.out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    work = Path(tempfile.mkdtemp(prefix="backtest-", dir=args.out))
    try:
        result = run_backtest(
            log, config, rules, work, derive=derive, scrape_seconds=args.scrape_interval,
            evaluation_seconds=args.evaluation_interval, say=lambda line: print(f"  {line}"),
        )  # fmt: skip
    except (BacktestToolError, RuleFileError) as exc:
        print(f"model-exporter backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if args.keep_tsdb and (work / "tsdb").exists():
            target = args.out / "tsdb"
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(work / "tsdb"), str(target))
        shutil.rmtree(work, ignore_errors=True)
    _write(result, args.out)
    return 0


def _write(result: BacktestResult, out: Path) -> None:
    print()
    print(text_table(result))
    write_json(result, out / "report.json")
    write_html(result, out / "report.html")
    print(f"\nwrote {out / 'report.json'} and {out / 'report.html'}")
