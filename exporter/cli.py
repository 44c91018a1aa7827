"""``model-exporter``: the command line.

Every user mistake (a missing file, a bad column, a malformed config) ends with one clear line on
stderr and exit code 2, never a traceback; nothing is written half-way.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import inspect
import logging
import math
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from exporter import __version__
from exporter.profile import (
    MIN_SEGMENT_ROWS,
    OUTPUT,
    CategoricalFeature,
    ProfileError,
    ReferenceProfile,
    category_key,
)

if TYPE_CHECKING:
    import uvicorn

    from exporter.config import MonitorConfig
    from exporter.service import Service

EXIT_USAGE = 2
#: How long a new worker may take to start before uvicorn's supervisor replaces it.
WORKER_START_SECONDS = 60


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
    label, label_flag = _baseline_label(args)
    _check_baseline_options(args, label, label_flag)
    if args.min_segment_rows is not None and args.segment_by is None:
        raise CommandError("--min-segment-rows applies to --segment-by COLUMN: give both")
    frame = read_table(args.data)
    prediction: str | None = args.prediction
    if args.model is not None or args.derive_features is not None:
        frame = _run_over_rows(frame, args, keep=[c for c in (label, prediction) if c])
        if args.model is not None:
            prediction = OUTPUT
    if args.label_as_output:
        prediction = label
    try:
        profile = ReferenceProfile.from_frame(
            frame,
            numeric=_columns(args.numeric),
            categorical=_columns(args.categorical),
            prediction=prediction,
            label=label,
            target_kind=args.output_kind,
            bins=args.bins,
            top_k=args.top_k,
            sample_size=args.sample_size,
            segment_by=args.segment_by,
            min_segment_rows=(
                MIN_SEGMENT_ROWS if args.min_segment_rows is None else args.min_segment_rows
            ),
        )
    except ProfileError as exc:
        raise CommandError(f"{args.data}: {exc}") from None
    try:
        profile.save(args.out)
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot write the profile: {exc}") from None
    kinds = ", ".join(f"{name} ({ref.kind})" for name, ref in profile.features.items())
    if profile.output is None:
        output = "; no output reference"
    else:
        output = f"; output {profile.output.kind} from {_output_source(args)}"
    labels = f"; labels {profile.labels.kind}" if profile.labels is not None else ""
    segments = ""
    if profile.segments is not None:
        kept = profile.segments
        rarer = len({category_key(v) for v in frame[kept.feature].tolist()} - {None, *kept.values})
        segments = f"; {len(kept.values)} segments by {kept.feature}"
        if rarer:
            segments += (
                f" (the rows of {rarer} values with fewer than {kept.min_rows} rows are compared "
                "with the overall reference)"
            )
    print(f"wrote {args.out}: {len(frame)} rows; features {kinds}{output}{labels}{segments}")
    for warning in _baseline_warnings(profile, frame, args, prediction, label, label_flag):
        print(f"model-exporter baseline: warning: {warning}", file=sys.stderr)
    return 0


#: A reference this many rows long, every one predicted exactly as labelled, is suspicious: a
#: 99.5%-accurate classifier is right on all of 1,000 held-out rows less than 1% of the time, so
#: such predictions were usually made on the model's own training rows or copied from the labels.
SUSPICIOUS_AGREEMENT_ROWS = 1_000


def _baseline_label(args: argparse.Namespace) -> tuple[str | None, str]:
    """The label column and the option that named it (``--target`` is the older name)."""
    if args.label is not None and args.target is not None:
        raise CommandError("--target is the older name of --label: give only --label")
    if args.target is not None:
        return args.target, "--target"
    return args.label, "--label"


def _check_baseline_options(args: argparse.Namespace, label: str | None, label_flag: str) -> None:
    """Refuse contradictory options before reading any data."""
    if args.model is not None and args.prediction is not None:
        raise CommandError(
            "--model computes the predictions and --prediction reads them from a column: give one"
        )
    if args.label_as_output and label is None:
        raise CommandError("--label-as-output needs the label column: --label COLUMN")
    if args.label_as_output and (args.model is not None or args.prediction is not None):
        raise CommandError(
            "--label-as-output is for data without predictions; with --prediction or --model "
            "the predictions are the output reference: drop --label-as-output"
        )
    if args.prediction is not None and args.prediction == label:
        raise CommandError(
            f"--prediction and {label_flag} name the same column {label!r}: output drift needs "
            "the model's predictions, not the labels (pass --label-as-output to compare with "
            "the labels anyway)"
        )
    for option, path in (("--model", args.model), ("--derive-features", args.derive_features)):
        module, _, attribute = (path or "").partition(":")
        if path is not None and not (module and attribute):
            raise CommandError(f"{option}: expected package.module:callable, got {path!r}")


def _output_source(args: argparse.Namespace) -> str:
    if args.model is not None:
        return f"--model {args.model}"
    if args.prediction is not None:
        return f"--prediction {args.prediction}"
    return "the labels (--label-as-output)"


def _request_value(value: Any) -> Any:
    """A cell of the data as the service would get it in a JSON request: missing is ``None``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _run_over_rows(frame: pd.DataFrame, args: argparse.Namespace, keep: list[str]) -> pd.DataFrame:
    """``frame`` as the service sees it: each row, without the ``keep`` columns (labels and
    given predictions, which requests do not carry), is a request's features. With ``--model``
    the model's prediction of each row is added as the column :data:`OUTPUT`; with
    ``--derive-features`` the derived features are merged into the row, as the service does
    before monitoring it. The ``keep`` columns are carried over unchanged."""
    from exporter.config import ConfigError
    from exporter.service import _split_output, import_callable

    try:
        model = import_callable(args.model, "--model") if args.model else None
        derive = (
            import_callable(args.derive_features, "--derive-features")
            if args.derive_features
            else None
        )
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    absent = [c for c in keep if c not in frame.columns]
    if absent:
        raise CommandError(
            f"{args.data}: columns not in the data: {absent}; the data has {list(frame.columns)}"
        )
    if frame.empty:
        raise CommandError(f"{args.data}: the data has no rows")
    if model is not None and OUTPUT in frame.columns:
        raise CommandError(
            f"{args.data}: the data has a column named {OUTPUT!r}, the name the model's "
            "predictions are profiled under; rename that column"
        )
    requests = frame.drop(columns=keep).to_dict("records")
    rows: list[dict[str, Any]] = []
    predictions: list[Any] = []
    for index, request in zip(frame.index, requests, strict=True):
        # The service calls the model, then derive_features, with the same dict.
        raw = {str(name): _request_value(value) for name, value in request.items()}
        if model is not None:
            answer = _call(model, raw, f"--model {args.model}", index)
            prediction, _confidence = _split_output(answer)
            if isinstance(prediction, (list, dict)):
                raise CommandError(
                    f"--model {args.model} returned {_excerpt(repr(prediction))} for row "
                    f"{index}; a prediction must be a class or a number, alone or as "
                    "(prediction, confidence)"
                )
            predictions.append(prediction)
        watched = raw
        if derive is not None:
            derived = _call(derive, raw, f"--derive-features {args.derive_features}", index)
            if not isinstance(derived, Mapping):
                raise CommandError(
                    f"--derive-features {args.derive_features} returned "
                    f"{type(derived).__name__} for row {index}; it must return a mapping"
                )
            watched = {**raw, **derived}
        rows.append(watched)
    if model is not None and all(p is None for p in predictions):
        raise CommandError(f"--model {args.model} returned no prediction (None or NaN) for any row")
    result = pd.DataFrame(rows, index=frame.index) if derive is not None else frame.copy()
    for column in keep:
        result[column] = frame[column]
    if model is not None:
        result[OUTPUT] = pd.Series(predictions, index=frame.index)
    return result


def _call(function: Callable[..., Any], raw: dict[str, Any], option: str, index: Any) -> Any:
    try:
        return function(raw)
    except Exception as exc:  # user code: any failure is reported, not raised
        raise CommandError(
            f"{option} raised {type(exc).__name__} on row {index}: {_excerpt(str(exc))}"
        ) from None


def _excerpt(text: str, length: int = 200) -> str:
    text = " ".join(text.split())  # one line, whatever the model's message holds
    return text if len(text) <= length else f"{text[:length]}..."


def _baseline_warnings(
    profile: ReferenceProfile,
    frame: pd.DataFrame,
    args: argparse.Namespace,
    prediction: str | None,
    label: str | None,
    label_flag: str,
) -> list[str]:
    """What looks wrong in a reference that was built: one line each."""
    if label is None or profile.labels is None:
        return []
    classifier = isinstance(profile.labels, CategoricalFeature)
    fix = "pass --prediction COLUMN or --model package.module:callable"
    if profile.output is None:
        why = (
            "an imperfect classifier predicts a different class mix than its labels"
            if classifier
            else "a model's predictions are spread differently from its labels"
        )
        return [
            f"{label_flag} {label!r} holds the true labels, so the profile has no output "
            "reference and output drift is not measured (comparing live predictions with labels "
            f"would raise it on stable traffic: {why}); {fix}"
        ]
    if args.label_as_output:
        if not classifier:
            return []
        return [
            "output drift will compare the model's predictions with the labels' class mix, "
            "which an imperfect classifier does not reproduce, so ModelOutputDrift can fire on "
            f"stable traffic; {fix} instead of --label-as-output"
        ]
    if prediction is None:
        return []
    pairs = [
        (category_key(p), category_key(t))
        for p, t in zip(frame[prediction].tolist(), frame[label].tolist(), strict=True)
    ]
    known = [(p, t) for p, t in pairs if p is not None and t is not None]
    varied = len({t for _, t in known}) > 1  # a single label value leaves nothing to get wrong
    if len(known) >= SUSPICIOUS_AGREEMENT_ROWS and varied and all(p == t for p, t in known):
        return [
            f"the predictions ({_output_source(args)}) equal the labels ({label_flag} "
            f"{label!r}) on all {len(known)} rows; predictions on the model's own training rows "
            "(or a copy of the label column) follow the labels more closely than live "
            "predictions will, so profile held-out rows"
        ]
    return []


def _add_baseline(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "baseline",
        help="build a reference profile (JSON) from training data",
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
    p.add_argument("--data", required=True, help="training data, CSV (or Parquet with pyarrow)")
    p.add_argument("--numeric", default="", help="comma-separated numeric feature columns")
    p.add_argument("--categorical", default="", help="comma-separated categorical columns")
    p.add_argument(
        "--model", metavar="PACKAGE.MODULE:CALLABLE",
        help="the model (model.import_path of the config): called with each row's columns, "
        "as the service calls it with a request's features; its predictions (the first of a "
        "(prediction, confidence) pair, as the service reads it) are the output reference",
    )  # fmt: skip
    p.add_argument(
        "--prediction", metavar="COLUMN",
        help="column holding the model's predictions on these rows: the output reference",
    )  # fmt: skip
    p.add_argument(
        "--label", metavar="COLUMN",
        help="column holding the true labels: kept in the profile (the label mix), not used "
        "for output drift; --model does not see it",
    )  # fmt: skip
    p.add_argument(
        "--target", metavar="COLUMN",
        help="older name of --label: the true labels, no longer the output reference",
    )  # fmt: skip
    p.add_argument(
        "--label-as-output", action="store_true",
        help="use the labels as the output reference when the model's predictions are not "
        "available; usually wrong: a classifier's predicted class mix differs from its labels', "
        "so output drift fires on stable traffic",
    )  # fmt: skip
    p.add_argument(
        "--derive-features", metavar="PACKAGE.MODULE:CALLABLE",
        help="model.derive_features of the config: turns each row's columns into the watched "
        "features before profiling, as the service does (the model still gets the columns)",
    )  # fmt: skip
    p.add_argument(
        "--output-kind", "--target-kind", dest="output_kind", default="auto",
        choices=("auto", "numeric", "categorical"),
        help="profile predictions and labels as classes (a classifier) or numeric bins (a "
        "regressor); default: guess from the data (--target-kind is the older name)",
    )  # fmt: skip
    p.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature")
    p.add_argument("--top-k", type=int, default=20, help="categories kept before __other__")
    p.add_argument("--sample-size", type=int, default=10_000, help="values kept for KS")
    p.add_argument(
        "--segment-by", metavar="COLUMN",
        help="a profiled feature that sets the context (the hour of the day, the weekday): "
        "categorical, or numeric with whole numbers. The profile then also keeps every other "
        "feature's reference per value of it, and a monitor with monitoring.segment_by compares "
        "each value with the reference of its own segment instead of the mix of all of them",
    )  # fmt: skip
    p.add_argument(
        "--min-segment-rows", type=int, metavar="N",
        help=f"rows a value of --segment-by needs to get a reference of its own (default "
        f"{MIN_SEGMENT_ROWS}: a reference estimated on N rows adds about (bins - 1) / N to the "
        "PSI of unchanged traffic); rows of rarer values are compared with the overall reference",
    )  # fmt: skip
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

    from exporter import security, service
    from exporter.config import load_config, with_overrides

    data_dir = Path(args.data_dir)
    try:
        config = with_overrides(
            load_config(args.config), token_file=args.token_file, metrics_port=args.metrics_port
        )
        warnings = security.check_tls(args.ssl_certfile, args.ssl_keyfile)
        data_dir.mkdir(parents=True, exist_ok=True)
        # Built once here, in every case, so a mistake is one clear line before any worker starts.
        checked = service.build_service(config, data_dir)
    except service.STARTUP_ERRORS + (security.TLSError,) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{data_dir}: cannot use the data directory: {exc}") from None
    for warning in warnings + (checked.tokens.warnings() if checked.tokens else []):
        print(f"model-exporter serve: warning: {warning}", file=sys.stderr)
    limit_malloc_arenas()
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


def _log_level(args: argparse.Namespace) -> str:
    return "warning" if args.quiet else "info"


def _serve_in_this_process(
    args: argparse.Namespace, checked: Service, listener: socket.socket | None
) -> None:
    import prometheus_client
    import uvicorn

    from exporter import service

    settings = checked.config.service
    if not settings.created_series:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    app = service.BodyLimit(service.create_app(checked), settings.max_body_bytes)
    with _serving_metrics(checked, listener, args):
        uvicorn.run(app, host=args.host, port=args.port, log_level=_log_level(args),
                    timeout_graceful_shutdown=10, ssl_certfile=args.ssl_certfile,
                    ssl_keyfile=args.ssl_keyfile)  # fmt: skip


def _serve_with_workers(
    args: argparse.Namespace, config: MonitorConfig, data_dir: Path, listener: socket.socket | None
) -> None:
    import uvicorn

    from exporter import service

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
        "exporter.service:app_from_environment", factory=True, host=args.host, port=args.port,
        workers=args.workers, log_level=_log_level(args), timeout_graceful_shutdown=10,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, **settings,  # type: ignore[arg-type]
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
    from exporter import service

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

    from exporter import service

    config = uvicorn.Config(
        service.metrics_app(source), host=args.host, port=listener.getsockname()[1],
        log_level=_log_level(args), lifespan="off", timeout_graceful_shutdown=5,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
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
        help="serve a model over HTTP with monitoring",
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


def _add_backtest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from exporter.backtest import command

    p = sub.add_parser(
        "backtest",
        help="replay a prediction log through the monitor and the alert rules: which alerts "
        "would have fired, when",
        description=command.__doc__.split("\n\n")[1] if command.__doc__ else None,
    )
    command.add_arguments(p)
    p.set_defaults(func=command.run)


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
    _add_backtest,
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
