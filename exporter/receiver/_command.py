"""``model-exporter receiver``: its options and the server's run."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from exporter.http_guard import ConnectionLimits, guarded_http
from exporter.receiver._actions import ReceiverConfigError, load_actions
from exporter.receiver._app import DEFAULT_MAX_STORED_ALERTS, DEFAULT_RETENTION_DAYS, create_app
from exporter.receiver._runner import DEFAULT_SHUTDOWN_SECONDS
from exporter.receiver.store import AlertStore, StoreError
from exporter.security import (
    BearerTokens,
    TLSError,
    TokenFileError,
    add_tls_arguments,
    check_tls,
)

log = logging.getLogger("exporter.receiver")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9099
#: Relative to the working directory; ``/data/`` is ignored by the repository's .gitignore.
DEFAULT_DATA_DIR = Path("data/receiver")
#: A hundred years: a longer retention is no bound, and would overflow a date.
MAX_RETENTION_DAYS = 36_500


def _whole_number(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {value!r}") from None


def port_number(value: str) -> int:
    port = _whole_number(value, "a port number")
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {value}")
    return seconds


def retention_days(value: str) -> float:
    days = positive_seconds(value)
    if days > MAX_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(f"at most {MAX_RETENTION_DAYS} days: {value}")
    return days


def positive_int(value: str) -> int:
    number = _whole_number(value, "a whole number")
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {number}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``model-exporter receiver`` to ``parser``."""
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"directory of the SQLite alert store (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file of the bearer tokens, one per line, that POST and GET /alerts require "
        "(without it, anyone is served and a warning is logged)",
    )
    parser.add_argument(
        "--actions",
        type=Path,
        default=None,
        help="YAML file mapping alertname to {command: [argv...], timeout_seconds, on: [firing]}",
    )
    parser.add_argument(
        "--action-shutdown-seconds",
        type=positive_seconds,
        default=DEFAULT_SHUTDOWN_SECONDS,
        help="on SIGTERM, run queued actions this long, then kill the running ones; all that did "
        "not finish runs at the next start (default: %(default)s; keep it below the "
        "termination grace period)",
    )
    parser.add_argument(
        "--retention-days",
        type=retention_days,
        default=DEFAULT_RETENTION_DAYS,
        help="delete stored alerts last received longer ago than this (default: %(default)s); "
        "an alert whose action is pending stays",
    )
    parser.add_argument(
        "--max-stored-alerts",
        type=positive_int,
        default=DEFAULT_MAX_STORED_ALERTS,
        help="keep at most this many alerts, deleting the oldest first (default: %(default)s)",
    )
    add_tls_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Serve the receiver until interrupted. Returns 2, with a message, for a bad token file,
    actions file or data directory."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tokens = None if args.token_file is None else BearerTokens.from_file(args.token_file)
        warnings = check_tls(args.ssl_certfile, args.ssl_keyfile)
        actions = {} if args.actions is None else load_actions(args.actions)
        store = AlertStore.in_directory(args.data_dir)
    except (ReceiverConfigError, StoreError, TokenFileError, TLSError) as exc:
        print(f"model-exporter receiver: {exc}", file=sys.stderr)
        return 2
    for warning in warnings + (tokens.warnings() if tokens else []):
        log.warning("%s", warning)
    try:
        app = create_app(
            store,
            token=tokens,
            actions=actions,
            action_shutdown_seconds=args.action_shutdown_seconds,
            retention_days=args.retention_days,
            max_stored_alerts=args.max_stored_alerts,
        )
        config = uvicorn.Config(
            app, host=args.host, port=args.port,
            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
            # A header deadline and connection bounds, as serve has (defaults: 5 s, 1,000 open
            # connections, 100 per client address; Alertmanager needs a handful).
            http=guarded_http(ConnectionLimits()),
        )  # fmt: skip
        server = uvicorn.Server(config)
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot bind; it logged why
            return exc.code if isinstance(exc.code, int) else 1
        return 0
    finally:
        store.close()
