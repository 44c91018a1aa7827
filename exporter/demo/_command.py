"""``model-exporter demo`` on the command line: its arguments, its exit status and the summary
it prints."""

from __future__ import annotations

import argparse
import math
import sys

from exporter.demo._run import run_demo
from exporter.demo._targets import DemoSummary, TargetError
from exporter.demo._traffic import DEFAULT_TARGET, SCENARIOS

# -- command line ----------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", action="append", metavar="URL",
        help=f"a running model service; repeat for several (default {DEFAULT_TARGET})",
    )  # fmt: skip
    parser.add_argument(
        "--scenario", default="all", choices=SCENARIOS,
        help="what the traffic injects after 10 s of steady traffic (default: all, every "
        "injection in turn); canary: steady traffic from the start, for a service with a canary",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=_positive, default=300.0, help="seconds of traffic (default 300)"
    )
    parser.add_argument(
        "--rate", type=_positive, default=20.0,
        help="mean requests per second per target, Poisson arrivals (default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--feedback-delay", type=_non_negative, default=5.0, metavar="SECONDS",
        help="mean delay before a prediction's ground truth is posted (default 5)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """``model-exporter demo``: 0 when the run ends (or is stopped), 2 for an unusable target."""
    targets = args.target or [DEFAULT_TARGET]
    try:
        summary = run_demo(
            targets,
            args.scenario,
            args.duration,
            args.rate,
            feedback_delay=args.feedback_delay,
            seed=args.seed,
            out=sys.stdout,
        )
    except TargetError as exc:
        print(f"model-exporter demo: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"model-exporter demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("model-exporter demo: stopped before any traffic was sent", file=sys.stderr)
        return 0
    print(describe(summary))
    return 0


def describe(summary: DemoSummary) -> str:
    """The run's summary in one line."""
    how = "stopped by Ctrl-C after" if summary["interrupted"] else "done in"
    statuses = ", ".join(f"{code}: {n}" for code, n in summary["status"].items()) or "none"
    return (
        f"{how} {summary['seconds']:.1f} s: sent {summary['requests']}, ok {summary['ok']}, "
        f"errors {summary['errors']} (HTTP {statuses}); ground truth posted "
        f"{summary['feedback_sent']}, refused {summary['feedback_failed']}, "
        f"dropped {summary['feedback_dropped']} (not yet due)"
    )
