"""``model-exporter baseline``: profile training data once into the reference the monitor
compares live traffic with (see ``model-exporter baseline --help``).

Apart from the command line's module so that the other commands (the alert receiver above all)
do not load pandas and numpy to start.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from exporter.errors import CommandError
from exporter.profile import (
    MIN_SEGMENT_ROWS,
    OUTPUT,
    CategoricalFeature,
    ProfileError,
    ReferenceProfile,
    category_key,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    from exporter.server import import_callable, split_output

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
            prediction, _confidence = split_output(answer)
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
