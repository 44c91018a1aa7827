"""``model-exporter``: the command line.

Every user mistake (a missing file, a bad column, a malformed config) ends with one clear line on
stderr and exit code 2, never a traceback; nothing is written half-way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from exporter import __version__
from exporter.profile import ProfileError, ReferenceProfile

EXIT_USAGE = 2


class CommandError(Exception):
    """A user mistake, reported as one line without a traceback."""


def _columns(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def read_table(path: str) -> pd.DataFrame:
    """Read training data: CSV always, Parquet when pyarrow is installed."""
    source = Path(path)
    if not source.is_file():
        raise CommandError(f"{path}: no such file")
    if source.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CommandError(
                f"{path}: reading Parquet needs pyarrow; install it with "
                "`pip install 'model-exporter[parquet]'` or convert the file to CSV"
            ) from None
        try:
            return pd.read_parquet(source)
        except Exception as exc:  # pyarrow raises many types for a broken file
            raise CommandError(f"{path}: not a readable Parquet file: {exc}") from None
    try:
        return pd.read_csv(source)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: not a readable CSV file: {exc}") from None


def cmd_baseline(args: argparse.Namespace) -> int:
    frame = read_table(args.data)
    try:
        profile = ReferenceProfile.from_frame(
            frame,
            numeric=_columns(args.numeric),
            categorical=_columns(args.categorical),
            target=args.target,
            target_kind=args.target_kind,
            bins=args.bins,
            top_k=args.top_k,
            sample_size=args.sample_size,
        )
    except ProfileError as exc:
        raise CommandError(f"{args.data}: {exc}") from None
    try:
        profile.save(args.out)
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot write the profile: {exc}") from None
    kinds = ", ".join(f"{name} ({ref.kind})" for name, ref in profile.features.items())
    output = f"; output {profile.output.kind}" if profile.output is not None else ""
    print(f"wrote {args.out}: {len(frame)} rows; features {kinds}{output}")
    return 0


def _add_baseline(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "baseline",
        help="build a reference profile (JSON) from training data",
        description="Profile training data once; the monitor compares live traffic with it.",
    )
    p.add_argument("--data", required=True, help="training data, CSV (or Parquet with pyarrow)")
    p.add_argument("--numeric", default="", help="comma-separated numeric feature columns")
    p.add_argument("--categorical", default="", help="comma-separated categorical columns")
    p.add_argument("--target", default=None, help="column the model's output should follow")
    p.add_argument(
        "--target-kind", default="auto", choices=("auto", "numeric", "categorical"),
        help="profile the target as classes or as numeric bins (default: guess from the data)",
    )  # fmt: skip
    p.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature")
    p.add_argument("--top-k", type=int, default=20, help="categories kept before __other__")
    p.add_argument("--sample-size", type=int, default=10_000, help="values kept for KS")
    p.add_argument("--out", required=True, help="where to write the profile JSON")
    p.set_defaults(func=cmd_baseline)


def _add_receiver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from exporter import receiver

    p = sub.add_parser(
        "receiver",
        help="run the Alertmanager webhook receiver",
        description="Store Alertmanager notifications durably and run per-alert actions.",
    )
    receiver.add_arguments(p)
    p.set_defaults(func=receiver.run)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from exporter import service
    from exporter.config import load_config

    data_dir = Path(args.data_dir)
    try:
        config = load_config(args.config)
        data_dir.mkdir(parents=True, exist_ok=True)
        # Built once here, in every case, so a mistake is one clear line before any worker starts.
        checked = service.build_service(config, data_dir)
    except service.STARTUP_ERRORS as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{data_dir}: cannot use the data directory: {exc}") from None
    log_level = "warning" if args.quiet else "info"
    if args.workers == 1:
        import prometheus_client

        if not config.service.created_series:
            prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        app = service.BodyLimit(service.create_app(checked), config.service.max_body_bytes)
        uvicorn.run(app, host=args.host, port=args.port, log_level=log_level,
                    timeout_graceful_shutdown=10)  # fmt: skip
        return 0
    checked.store.close()
    multiproc = service.prepare_multiprocess_dir(data_dir)
    os.environ[service.MULTIPROC_ENV] = str(multiproc)
    os.environ[service.ENV_CONFIG] = str(Path(args.config).resolve())
    os.environ[service.ENV_DATA_DIR] = str(data_dir.resolve())
    uvicorn.run(
        "exporter.service:app_from_environment", factory=True, host=args.host, port=args.port,
        workers=args.workers, log_level=log_level, timeout_graceful_shutdown=10,
    )  # fmt: skip
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP with monitoring",
        description="Serve /predict, /feedback, /metrics, /healthz, /readyz and /docs.",
    )
    p.add_argument("--config", required=True, help="the monitor's YAML config")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--data-dir", default="data", help="outcome store and worker files")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    p.set_defaults(func=cmd_serve)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from exporter import demo, demo_stack

    p = sub.add_parser(
        "demo",
        help="send demo traffic (with delayed feedback and injected faults) to running services",
        description="Traffic generator for the example models, with scenarios.",
    )
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)
    p = sub.add_parser(
        "demo-stack",
        help="run the example services, receiver, Prometheus and Alertmanager with traffic",
        description="What `make demo` runs: the whole stack on 127.0.0.1, stopped by Ctrl-C.",
    )
    demo_stack.add_arguments(p)
    p.set_defaults(func=demo_stack.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-exporter",
        description="Prometheus exporter for ML models: latency, classes, drift and performance.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_baseline,
    _add_serve,
    _add_receiver,
    _add_demo,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CommandError as exc:
        print(f"model-exporter {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
