"""``model-exporter status``: per model and version, whether it is healthy and what to do.

Reads Prometheus' recorded series (the fleet, every replica and worker summed) and the alerts
firing now, judges each model version against its own thresholds, and prints a table with a
recommendation per finding, or the same as JSON (--json). An unreachable Prometheus or a bad URL
is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json

from exporter.errors import CommandError
from exporter.status.prometheus import DEFAULT_SELECTOR, PrometheusError, read_fleet
from exporter.status.render import document, text_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prometheus", required=True, metavar="URL",
        help="the Prometheus that scrapes the exporters and evaluates the project's rules, "
        "for example http://localhost:9090",
    )  # fmt: skip
    parser.add_argument("--model", metavar="NAME", help="this model only (default: every one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--selector", default=DEFAULT_SELECTOR, metavar="MATCHERS",
        help="the exporters' series, as in the generated rules' settings "
        f"(default {DEFAULT_SELECTOR})",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS",
        help="per query (default 10)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        fleet = read_fleet(
            args.prometheus, model=args.model, selector=args.selector, timeout=args.timeout
        )
    except PrometheusError as exc:
        raise CommandError(str(exc)) from None
    source = f"prometheus {args.prometheus.rstrip('/')}"
    if args.model is not None and not fleet.models:
        # Most likely a misspelt name: an empty table would read as "nothing wrong".
        raise CommandError(
            f"{source} knows no model {args.model!r} (no model_info{{{args.selector}}} in the "
            "last hour)"
        )
    if args.json:
        answer = document(fleet.models, source=source, other_alerts=fleet.other_alerts)
        print(json.dumps(answer, indent=2))
    else:
        print(text_table(fleet.models, source=source, other_alerts=fleet.other_alerts))
    return 0
