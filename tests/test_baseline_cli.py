"""``model-exporter baseline``: the output reference is the model's predictions, not the labels.

Output drift compares the model's live predictions with the profile's ``output``; an imperfect
classifier predicts a different class mix than its labels, so a reference built from the labels
raises ``ModelOutputDrift`` on stable traffic. These tests run the command as a user does.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from exporter import stats
from exporter.cli import build_parser, main
from exporter.demo_models import intent
from exporter.profile import OTHER, CategoricalFeature, NumericFeature, ReferenceProfile
from tests.toy_models import classify

ROOT = Path(__file__).resolve().parent.parent
WARNING = "model-exporter baseline: warning: "

# -- models loaded by import path, as --model and --derive-features load them ------------------


def keys_model(features: Mapping[str, Any]) -> tuple[str, float]:
    """Predicts the names of the features it was given, so a test sees what the model got."""
    return ",".join(sorted(features)), 0.9


def types_model(features: Mapping[str, Any]) -> str:
    """Predicts the Python type of ``miles`` as the model received it."""
    return type(features["miles"]).__name__


def list_model(features: Mapping[str, Any]) -> list[float]:
    return [0.1, 0.9]


def nan_model(features: Mapping[str, Any]) -> float:
    return float("nan")


def failing_model(features: Mapping[str, Any]) -> str:
    if features["miles"] > 5:
        raise ValueError("zone\nnot known")
    return "short"


def not_a_mapping(features: Mapping[str, Any]) -> list[str]:
    return ["miles"]


def double_miles(features: Mapping[str, Any]) -> dict[str, Any]:
    return {"double_miles": 2 * features["miles"]}


# -- data --------------------------------------------------------------------------------------


def _classes(frame: pd.DataFrame) -> list[str]:
    """The toy classifier's class for each row (the first of its (class, confidence))."""
    return [classify({str(k): v for k, v in row.items()})[0] for row in frame.to_dict("records")]


def _trips(n: int = 2_000) -> pd.DataFrame:
    """Trips with the toy classifier's true label: right about 70% of the time, and wrong in
    one direction (short trips labelled long), so its predictions have a different class mix."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"miles": rng.gamma(2.0, 2.0, n), "zone": rng.choice(["north", "south", "east"], n)}
    )
    predicted = np.array(_classes(frame))
    mislabelled = (predicted == "short") & (rng.random(n) < 0.4)
    frame["label"] = np.where(mislabelled, "long", predicted)
    return frame


@pytest.fixture
def trips(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    _trips().to_csv(path, index=False)
    return path


def _baseline(data: Path, out: Path, *options: str) -> int:
    return main(["baseline", "--data", str(data), "--numeric", "miles", "--categorical", "zone",
                 *options, "--out", str(out)])  # fmt: skip


def _shares(values: pd.Series) -> dict[str, float]:
    return {str(k): float(v) for k, v in values.value_counts(normalize=True).items()}


def _profile_shares(feature: CategoricalFeature | NumericFeature | None) -> dict[str, float]:
    assert isinstance(feature, CategoricalFeature)
    return {
        c: s for c, s in zip(feature.bin_labels, feature.reference_share, strict=True) if c != OTHER
    }


def _psi(reference: CategoricalFeature | NumericFeature | None, values: pd.Series) -> float:
    """PSI of ``values`` against a categorical reference, as output drift computes it."""
    assert isinstance(reference, CategoricalFeature)
    counts = values.value_counts().reindex(reference.categories, fill_value=0).tolist()
    other = len(values) - sum(counts)
    return float(stats.psi(reference.reference_share, [*counts, other]).statistic)


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(WARNING)]


# -- the right thing -----------------------------------------------------------------------------


def test_model_predictions_are_the_output_and_labels_are_kept_apart(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reference.json"
    code = _baseline(trips, out, "--model", "tests.toy_models:classify", "--label", "label")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # nothing looks wrong: no warning
    assert "output categorical from --model tests.toy_models:classify" in captured.out
    profile = ReferenceProfile.load(out)
    frame = _trips()
    # What the service would export for these rows: the label of (label, confidence).
    predicted = pd.Series(_classes(frame[["miles", "zone"]]))
    assert _profile_shares(profile.output) == pytest.approx(_shares(predicted))
    assert _profile_shares(profile.labels) == pytest.approx(_shares(frame["label"]))
    # The point of the change: the model's predictions on these very rows are past the shipped
    # alert's output_psi threshold (0.25) against the label mix, and identical to the output.
    assert _psi(profile.labels, predicted) > 0.25
    assert _psi(profile.output, predicted) == pytest.approx(0, abs=1e-9)
    assert set(profile.features) == {"miles", "zone"}


def test_a_prediction_column_is_the_output(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _trips()
    frame["predicted"] = _classes(frame)
    frame.to_csv(trips, index=False)
    out = tmp_path / "reference.json"
    assert _baseline(trips, out, "--prediction", "predicted", "--label", "label") == 0
    assert capsys.readouterr().err == ""
    profile = ReferenceProfile.load(out)
    assert _profile_shares(profile.output) == pytest.approx(_shares(frame["predicted"]))
    assert _profile_shares(profile.labels) == pytest.approx(_shares(frame["label"]))


def test_the_model_gets_each_row_as_the_service_would(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the label or prediction columns (requests do not carry them), with Python values,
    and a missing value as null."""
    frame = _trips(200)
    frame["predicted"] = "x"
    frame.loc[3, "miles"] = np.nan
    frame.to_csv(trips, index=False)
    out = tmp_path / "reference.json"
    assert _baseline(trips, out, "--model", f"{__name__}:keys_model", "--label", "label") == 0
    output = ReferenceProfile.load(out).output
    assert isinstance(output, CategoricalFeature)
    assert output.categories == ["miles,predicted,zone"]  # no label column
    assert _baseline(trips, out, "--model", f"{__name__}:types_model") == 0
    output = ReferenceProfile.load(out).output
    assert isinstance(output, CategoricalFeature)
    assert set(output.categories) == {"float", "NoneType"}
    capsys.readouterr()


def test_derive_features_and_model_rebuild_the_intent_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The intent example's reference, from a CSV of requests with the config's model and
    derive_features, is the committed one: the model is called as the service calls it."""
    data = tmp_path / "requests.csv"
    intent.synthetic_requests(5 * len(intent.load_utterances()), 11).to_csv(data, index=False)
    out = tmp_path / "reference.json"
    code = main(["baseline", "--data", str(data),
                 "--numeric", "text_length,token_count,oov_share", "--categorical", "channel",
                 "--model", "exporter.demo_models.intent:predict",
                 "--derive-features", "exporter.demo_models.intent:derive_features",
                 "--label", "intent", "--output-kind", "categorical",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().err == ""
    committed = ReferenceProfile.load(ROOT / "examples" / "intent" / "reference.json")
    assert ReferenceProfile.load(out).fingerprint() == committed.fingerprint()


def test_regression_model_output_is_numeric(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _trips()
    frame["fare"] = 3 + 2.5 * frame["miles"]
    frame.to_csv(trips, index=False)
    out = tmp_path / "reference.json"
    assert _baseline(trips, out, "--model", "tests.toy_models:regress", "--label", "fare") == 0
    assert capsys.readouterr().err == ""
    profile = ReferenceProfile.load(out)
    assert isinstance(profile.output, NumericFeature) and isinstance(profile.labels, NumericFeature)
    assert profile.output.mean == pytest.approx(3 + 2 * frame["miles"].mean())
    assert profile.labels.mean == pytest.approx(frame["fare"].mean())


# -- what looks wrong --------------------------------------------------------------------------


def test_a_label_alone_is_not_the_output_and_says_how_to_fix_it(
    trips: Path, tmp_path: Path
) -> None:
    """An existing user's command: ``--target`` with the label column, as the README used to say."""
    out = tmp_path / "reference.json"
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "baseline", "--data", str(trips),
         "--numeric", "miles", "--target", "label", "--target-kind", "categorical",
         "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING), result.stderr
    assert "--target 'label' holds the true labels" in lines[0]
    assert "output drift is not measured" in lines[0]
    assert "different class mix than its labels" in lines[0]
    assert "--prediction COLUMN or --model package.module:callable" in lines[0]
    profile = ReferenceProfile.load(out)
    assert profile.output is None
    assert _profile_shares(profile.labels) == pytest.approx(_shares(_trips()["label"]))
    assert "no output reference; labels categorical" in result.stdout


def test_labels_as_output_only_when_asked_and_warned_for_a_classifier(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reference.json"
    assert _baseline(trips, out, "--label", "label", "--label-as-output") == 0
    warnings = _warnings(capsys.readouterr().err)
    assert len(warnings) == 1
    assert "compare the model's predictions with the labels' class mix" in warnings[0]
    assert "ModelOutputDrift can fire on stable traffic" in warnings[0]
    profile = ReferenceProfile.load(out)
    assert profile.output is not None and profile.output == profile.labels


def test_numeric_labels_as_output_are_taken_without_a_warning(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _trips()
    frame["fare"] = 3 + 2.5 * frame["miles"]
    frame.to_csv(trips, index=False)
    out = tmp_path / "reference.json"
    assert _baseline(trips, out, "--label", "fare", "--label-as-output") == 0
    assert capsys.readouterr().err == ""
    assert isinstance(ReferenceProfile.load(out).output, NumericFeature)


def test_predictions_equal_to_the_labels_on_every_row_are_warned(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _trips()
    frame["predicted"] = frame["label"]
    frame.to_csv(trips, index=False)
    out = tmp_path / "reference.json"
    assert _baseline(trips, out, "--prediction", "predicted", "--label", "label") == 0
    warnings = _warnings(capsys.readouterr().err)
    assert len(warnings) == 1
    assert (
        "the predictions (--prediction predicted) equal the labels (--label 'label')" in warnings[0]
    )
    assert f"on all {len(frame)} rows" in warnings[0] and "held-out rows" in warnings[0]
    assert out.exists()
    # A single class predicted and labelled leaves nothing to get wrong: no warning.
    frame.assign(predicted="long", label="long").to_csv(trips, index=False)
    assert _baseline(trips, out, "--prediction", "predicted", "--label", "label") == 0
    assert capsys.readouterr().err == ""
    # A good model that is wrong now and then is normal: no warning.
    frame.loc[:4, "predicted"] = np.where(frame.loc[:4, "label"] == "long", "short", "long")
    frame.to_csv(trips, index=False)
    assert _baseline(trips, out, "--prediction", "predicted", "--label", "label") == 0
    assert capsys.readouterr().err == ""


# -- bad input: one line, exit 2, nothing written ------------------------------------------------


def _with_columns(**columns: Any) -> pd.DataFrame:
    return _trips(50).assign(**columns)


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        (["--model", "tests.toy_models:classify", "--prediction", "label"], None,
         "--model computes the predictions and --prediction reads them from a column: give one"),
        (["--label", "label", "--target", "label"], None, "--target is the older name of --label"),
        (["--label-as-output"], None, "--label-as-output needs the label column"),
        (["--label", "label", "--prediction", "p", "--label-as-output"], None,
         "--label-as-output is for data without predictions"),
        (["--target", "label", "--prediction", "label"], None,
         "--prediction and --target name the same column 'label'"),
        (["--model", "classify"], None,
         "--model: expected package.module:callable, got 'classify'"),
        (["--derive-features", "tests.toy_models:"], None,
         "--derive-features: expected package.module:callable"),
        (["--model", "no_such_package.model:predict"], None,
         "--model: cannot import 'no_such_package.model'"),
        (["--model", "tests.toy_models:nope"], None, "has no attribute 'nope'"),
        (["--model", "tests.toy_models:ToyFailure.args"], None, "is not callable"),
        (["--model", f"{__name__}:failing_model"], None,
         f"--model {__name__}:failing_model raised ValueError on row 0: zone not known"),
        (["--model", f"{__name__}:list_model"], None, "returned [0.1, 0.9] for row 0"),
        (["--model", f"{__name__}:nan_model"], None, "returned no prediction (None or NaN)"),
        (["--derive-features", f"{__name__}:not_a_mapping"], None,
         "returned list for row 0; it must return a mapping"),
        (["--model", "tests.toy_models:classify", "--label", "truth"], None,
         "columns not in the data: ['truth']"),
        (["--model", "tests.toy_models:classify"], _with_columns(__prediction__=1),
         "the data has a column named '__prediction__'"),
        (["--model", "tests.toy_models:classify"], _trips(50).iloc[:0], "the data has no rows"),
        (["--prediction", "nope"], None, "columns not in the data: ['nope']"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(
    trips: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    data: pd.DataFrame | None,
    expected: str,
) -> None:
    if data is not None:
        data.to_csv(trips, index=False)
    else:
        _trips(50).to_csv(trips, index=False)
    # failing_model raises on the first long trip: make it row 0.
    frame = pd.read_csv(trips)
    if len(frame):
        frame.loc[0, "miles"] = 9.0
        frame.to_csv(trips, index=False)
    out = tmp_path / "reference.json"
    assert _baseline(trips, out, *options) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("model-exporter baseline: ") and expected in lines[0], lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_derived_features_are_profiled(
    trips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reference.json"
    code = main(["baseline", "--data", str(trips), "--numeric", "double_miles,miles",
                 "--derive-features", f"{__name__}:double_miles", "--out", str(out)])  # fmt: skip
    assert code == 0 and capsys.readouterr().err == ""
    profile = ReferenceProfile.load(out)
    doubled, miles = profile.features["double_miles"], profile.features["miles"]
    assert isinstance(doubled, NumericFeature) and isinstance(miles, NumericFeature)
    assert doubled.mean == pytest.approx(2 * miles.mean)
    assert profile.output is None and profile.labels is None


# -- the documentation makes the right thing the easy thing ---------------------------------------


def test_help_says_labels_are_not_the_output_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["baseline", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--model PACKAGE.MODULE:CALLABLE" in text and "--prediction COLUMN" in text
    assert "not used for output drift" in text
    assert "--target COLUMN older name of --label" in text
    assert "--label-as-output" in text and "usually wrong" in text


def test_readme_builds_the_reference_from_the_models_predictions() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Serving a model", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    command = block.group(1).replace("\\\n", " ").splitlines()[0]
    argv = shlex.split(command)
    assert argv[:2] == ["model-exporter", "baseline"]
    args = build_parser().parse_args(argv[1:])
    assert args.model is not None and args.label is not None and args.target is None
