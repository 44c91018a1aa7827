"""``model-exporter``: the command line.

Every user mistake (a missing file, a bad column, a malformed config) ends with one clear line on
stderr and exit code 2, never a traceback; nothing is written half-way.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import importlib
import inspect
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from exporter import __version__
from exporter.errors import CommandError

if TYPE_CHECKING:
    import uvicorn

    from exporter.config import MonitorConfig, ServiceSection
    from exporter.server import Service

EXIT_USAGE = 2
#: How long a new worker may take to start before uvicorn's supervisor replaces it.
WORKER_START_SECONDS = 60


#: One-line help of each subcommand, listed by ``model-exporter --help``.
HELP = {
    "baseline": "build a reference profile (JSON) from training data",
    "serve": "serve a model over HTTP with monitoring",
    "receiver": "run the Alertmanager webhook receiver",
    "demo": "send demo traffic (with delayed feedback and injected faults) to running services",
    "demo-stack": "run the example services, receiver, Prometheus and Alertmanager with traffic",
    "backtest": (
        "replay a prediction log through the monitor and the alert rules: which alerts "
        "would have fired, when"
    ),
    "generate": "write the rules, alerts, Alertmanager subtree and dashboards for your settings",
    "batch": (
        "monitor a batch scoring job (a Parquet or CSV file) and push its counts to a Pushgateway"
    ),
    "status": "per model and version: healthy or not, and what to do (reads Prometheus)",
}
_AddSubcommand = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _add_baseline(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "baseline",
        help=HELP["baseline"],
        description=(
            "Profile training data once; the monitor compares live traffic with it. Output drift "
            "compares the model's live predictions with its predictions on these rows: give "
            "them with --model (the model run over the rows as the service calls it) or "
            "--prediction (a column holding them). The true labels (--label) are kept in the "
            "profile but are not the output reference: an imperfect classifier predicts a "
            "different class mix than its labels, so comparing with them raises output drift "
            "on stable traffic."
        ),
    )
    from exporter import baseline_command

    baseline_command.add_arguments(p)
    p.set_defaults(func=baseline_command.cmd_baseline)


def _add_receiver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from exporter import receiver

    p = sub.add_parser(
        "receiver",
        help=HELP["receiver"],
        description="Store Alertmanager notifications durably and run per-alert actions.",
    )
    receiver.add_arguments(p)
    p.set_defaults(func=receiver.run)


#: glibc malloc arenas per ``serve`` process, unless ``MALLOC_ARENA_MAX`` is set. glibc gives
#: threads arenas of their own, up to 8 per core, and memory freed in one stays there: with
#: the request and SQLite threads taking turns, each worker's heap grew 2 to 4 MiB a minute once
#: the outcome store reached its cap and started deleting (9 to 18 MiB in the soak, not levelled
#: after 25 minutes). With 2 arenas it stayed within 80 to 84 MiB at 2,200 to 2,900 requests/s.
MALLOC_ARENAS = 2
#: ``M_ARENA_MAX`` of glibc's ``<malloc.h>``.
M_ARENA_MAX = -8


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas in this process and in the workers it spawns (they read
    ``MALLOC_ARENA_MAX`` when they start). A value the operator set is kept; on a C library
    without ``mallopt`` (musl, macOS) only the variable is set, which they ignore."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    # This process's threads: the request thread pool is started after this call.
    mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(MALLOC_ARENAS))


def cmd_serve(args: argparse.Namespace) -> int:

    from exporter import security
    from exporter import server as service
    from exporter.config import load_config, with_overrides

    data_dir = Path(args.data_dir)
    try:
        config = with_overrides(
            load_config(args.config), token_file=args.token_file, metrics_port=args.metrics_port
        )
        warnings = security.check_tls(args.ssl_certfile, args.ssl_keyfile)
        _check_store_fits_workers(config, args.workers)
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock_data_dir(data_dir)
        try:
            # Built once here, in every case, so a mistake is one clear line before any worker
            # starts.
            checked = service.build_service(config, data_dir)
        except BaseException:
            lock.close()
            raise
    except service.STARTUP_ERRORS + (security.TLSError,) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{data_dir}: cannot use the data directory: {exc}") from None
    for warning in warnings + (checked.tokens.warnings() if checked.tokens else []):
        print(f"model-exporter serve: warning: {warning}", file=sys.stderr)
    limit_malloc_arenas()
    with lock:  # held until the service has stopped
        try:
            listener = _metrics_listener(args.host, args.port, config.service.metrics_port)
        except CommandError:
            checked.store.close()
            raise
        if args.workers == 1:
            _serve_in_this_process(args, checked, listener)
        else:
            checked.store.close()
            _serve_with_workers(args, config, data_dir, listener)
    return 0


#: In the data directory: held (flock) by the `serve` that uses the directory, with its pid.
DATA_DIR_LOCK = "serve.lock"


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data directory for this process, before anything in it is read or cleared.

    A second `serve` on the same directory used to clear the running one's multiprocess counter
    files before failing to bind its port. The lock is an flock on an open file: the kernel drops
    it when this process ends, even by SIGKILL, so a stale lock file never blocks a restart.
    """
    path = data_dir / DATA_DIR_LOCK
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise CommandError(
            f"{data_dir} is in use by another model-exporter serve (pid {holder}); give this one "
            "its own --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _check_store_fits_workers(config: MonitorConfig, workers: int) -> None:
    """A memory outcome store lives in one process: with several workers a feedback usually
    reaches a worker that never saw its prediction and is answered 404."""
    if workers > 1 and config.outcomes.store == "memory":
        raise CommandError(
            f"outcomes.store: memory keeps each worker's predictions in that worker alone, so "
            f"with --workers {workers} most feedback would find no prediction (404); use "
            f"outcomes.store: sqlite (the default), which the workers share, or --workers 1"
        )


def _log_level(args: argparse.Namespace) -> str:
    return "warning" if args.quiet else "info"


def _serve_in_this_process(
    args: argparse.Namespace, checked: Service, listener: socket.socket | None
) -> None:
    import prometheus_client
    import uvicorn

    from exporter import server as service

    settings = checked.config.service
    if not settings.created_series:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    app = service.BodyLimit(service.create_app(checked), settings.max_body_bytes)
    with _serving_metrics(checked, listener, args):
        uvicorn.run(app, host=args.host, port=args.port, log_level=_log_level(args),
                    timeout_graceful_shutdown=10, ssl_certfile=args.ssl_certfile,
                    ssl_keyfile=args.ssl_keyfile, http=_guarded_http(settings))  # fmt: skip


def _guarded_http(settings: ServiceSection) -> Any:
    """uvicorn's h11 protocol with the service's header deadline and connection bounds (see
    :mod:`exporter.http_guard`); each process, each worker included, counts its own."""
    from exporter.http_guard import ConnectionLimits, guarded_http

    return guarded_http(
        ConnectionLimits(
            header_timeout_seconds=settings.header_timeout_seconds,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
        )
    )


def _serve_with_workers(
    args: argparse.Namespace, config: MonitorConfig, data_dir: Path, listener: socket.socket | None
) -> None:
    import uvicorn

    from exporter import server as service

    multiproc = service.prepare_multiprocess_dir(data_dir)
    os.environ[service.MULTIPROC_ENV] = str(multiproc)
    os.environ[service.ENV_CONFIG] = str(Path(args.config).resolve())
    os.environ[service.ENV_DATA_DIR] = str(data_dir.resolve())
    _hand_to_workers(config)
    reader = None
    if listener is not None:
        # This process (the workers' supervisor) serves the metrics port: the workers' counter
        # files plus the windows they publish, as any worker's /metrics would.
        reader = service.build_service(
            config, data_dir, multiprocess_dir=multiproc, metrics_reader=True
        )
    settings: dict[str, object] = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # uvicorn >= 0.5x kills a worker that has not answered its health check in 5 s; a
        # worker imports pandas, scipy and the model first, which takes longer on a busy host.
        settings["timeout_worker_healthcheck"] = WORKER_START_SECONDS
    uvicorn_config = uvicorn.Config(
        "exporter.server:app_from_environment", factory=True, host=args.host, port=args.port,
        workers=args.workers, log_level=_log_level(args), timeout_graceful_shutdown=10,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        http=_guarded_http(config.service), **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    try:
        with _serving_metrics(reader, listener, args):
            _run_workers(uvicorn_config)
    finally:
        if reader is not None:
            reader.store.close()


def _run_workers(config: uvicorn.Config) -> None:
    """``uvicorn.run``'s multi-worker branch, with the listening socket declared as TCP.

    uvicorn binds it with protocol 0, so asyncio never sets ``TCP_NODELAY`` on the connections
    it accepts (Kludex/uvicorn#3149): on a kept-alive connection every response then waits for
    Nagle's algorithm and the client's delayed ACK, about 40 ms, against 3 ms with one worker.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from exporter.supervisor import use_watched_processes

    use_watched_processes()
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        sock.set_inheritable(True)
    # The supervisor's signature changed: older uvicorn takes the worker's target explicitly.
    if "target" in inspect.signature(Multiprocess).parameters:
        supervisor = Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])  # type: ignore[call-arg]
    else:
        supervisor = Multiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    except KeyboardInterrupt:
        pass


def _hand_to_workers(config: MonitorConfig) -> None:
    """What the command line changed in the config, for the workers that re-read the file: the
    token file's path (never a token) and the metrics port."""
    from exporter import server as service

    token_path = config.token_path()
    metrics_port = config.service.metrics_port
    for name, value in (
        (service.ENV_TOKEN_FILE, str(token_path.resolve()) if token_path else None),
        (service.ENV_METRICS_PORT, str(metrics_port) if metrics_port else None),
    ):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _metrics_listener(host: str, api_port: int, metrics_port: int | None) -> socket.socket | None:
    """The metrics port's socket, bound now so that a busy port is one line before any start."""
    if metrics_port is None:
        return None
    if metrics_port == api_port:
        raise CommandError(f"the metrics port {metrics_port} is the API port; choose another")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, metrics_port))
    except OSError as exc:
        sock.close()
        raise CommandError(
            f"cannot listen on {host}:{metrics_port} for /metrics: {exc.strerror or exc}"
        ) from None
    return sock


@contextlib.contextmanager
def _serving_metrics(
    source: Service | None, listener: socket.socket | None, args: argparse.Namespace
) -> Iterator[None]:
    """Serve ``source``'s /metrics on ``listener`` from a thread of this process while the API
    runs; stopped when the API stops. Without a listener, nothing."""
    if source is None or listener is None:
        yield
        return
    import uvicorn

    from exporter import server as service

    config = uvicorn.Config(
        service.metrics_app(source), host=args.host, port=listener.getsockname()[1],
        log_level=_log_level(args), lifespan="off", timeout_graceful_shutdown=5,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        http=_guarded_http(source.config.service),
    )  # fmt: skip
    server = uvicorn.Server(config)
    # Not the main thread, so uvicorn leaves the signals to the API server.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="metrics-server", daemon=True
    )
    thread.start()
    scheme = "https" if args.ssl_certfile else "http"
    logging.getLogger("uvicorn.error").info(
        "Serving /metrics on %s://%s:%d/metrics", scheme, args.host, config.port
    )
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from exporter.receiver import port_number
    from exporter.security import add_tls_arguments

    p = sub.add_parser(
        "serve",
        help=HELP["serve"],
        description="Serve /predict, /feedback, /metrics, /healthz, /readyz and /docs.",
    )
    p.add_argument("--config", required=True, help="the monitor's YAML config")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--data-dir", default="data", help="outcome store and worker files")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument(
        "--token-file", type=Path, default=None,
        help="bearer tokens, one per line, that /predict and /feedback require "
        "(instead of service.auth.token_file)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-port", type=port_number, default=None,
        help="serve /metrics on this port only, not on --port (instead of service.metrics_port)",
    )  # fmt: skip
    add_tls_arguments(p)
    p.set_defaults(func=cmd_serve)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str) -> None:
    from exporter import demo
    from exporter.demo import stack as demo_stack

    if name == "demo":
        p = sub.add_parser(
            "demo",
            help=HELP["demo"],
            description="Traffic generator for the example models, with scenarios.",
        )
        demo.add_arguments(p)
        p.set_defaults(func=demo.run)
        return
    p = sub.add_parser(
        "demo-stack",
        help=HELP["demo-stack"],
        description="What `make demo` runs: the whole stack on 127.0.0.1, stopped by Ctrl-C.",
    )
    demo_stack.add_arguments(p)
    p.set_defaults(func=demo_stack.run)


def _from_module(name: str, module: str, handler: str = "run") -> _AddSubcommand:
    """A subcommand whose module defines ``add_arguments(parser)`` and its handler, and whose
    docstring's second paragraph describes it; the module is imported only when it runs."""

    def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        target = importlib.import_module(module)
        doc = target.__doc__ or ""
        paragraphs = doc.split("\n\n")
        p = sub.add_parser(name, help=HELP[name],
                           description=paragraphs[1] if len(paragraphs) > 1 else None)  # fmt: skip
        target.add_arguments(p)
        p.set_defaults(func=getattr(target, handler))

    return add


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``command``, only that subcommand's arguments are defined (the
    others are listed with their one-line help), so running one command imports only its
    modules: the receiver starts without numpy, pandas or the monitor."""
    parser = argparse.ArgumentParser(
        prog="model-exporter",
        description="Prometheus exporter for ML models: latency, classes, drift and performance.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add) in _SUBCOMMANDS.items():
        if command is None or command == name:
            add(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _add_demo_traffic(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_demo(sub, "demo")


def _add_demo_stack(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_demo(sub, "demo-stack")


#: Subcommand -> (one-line help, what defines its arguments and handler).
_SUBCOMMANDS: dict[str, tuple[str, _AddSubcommand]] = {
    "baseline": (HELP["baseline"], _add_baseline),
    "serve": (HELP["serve"], _add_serve),
    "receiver": (HELP["receiver"], _add_receiver),
    "demo": (HELP["demo"], _add_demo_traffic),
    "demo-stack": (HELP["demo-stack"], _add_demo_stack),
    "backtest": (HELP["backtest"], _from_module("backtest", "exporter.backtest.command")),
    "generate": (HELP["generate"], _from_module("generate", "exporter.mixin.command")),
    "batch": (HELP["batch"], _from_module("batch", "exporter.batch_command", "cmd_batch")),
    "status": (HELP["status"], _from_module("status", "exporter.status.command")),
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in _SUBCOMMANDS else None)
    args = parser.parse_args(arguments)
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
