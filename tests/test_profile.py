"""Reference profiles: building, saving, loading and the errors a user sees."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exporter import ReferenceProfile, stats
from exporter.cli import main
from exporter.profile import OTHER, CategoricalFeature, NumericFeature, ProfileError


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 2_000
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "income": np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(10, 1, n)),
            "city": rng.choice(["paris", "lyon", "nice", "lille"], n, p=[0.5, 0.3, 0.15, 0.05]),
            "label": rng.choice(["yes", "no"], n),
        }
    )


def test_numeric_reference_has_deciles_shares_and_moments(frame: pd.DataFrame) -> None:
    profile = ReferenceProfile.from_frame(frame, numeric=["age", "income"], sample_size=500)
    age = profile.features["age"]
    assert isinstance(age, NumericFeature)
    assert len(age.edges) == 9 and len(age.reference_share) == 10
    np.testing.assert_allclose(age.reference_share, 0.1, atol=0.001)
    assert age.mean == pytest.approx(frame["age"].mean())
    assert age.std == pytest.approx(frame["age"].std())  # ddof=1, as pandas
    assert age.count == 2_000 and age.missing_rate == 0
    assert len(age.sample) == 500 and age.sample == sorted(age.sample)
    income = profile.features["income"]
    assert isinstance(income, NumericFeature)
    assert income.missing_rate == pytest.approx(frame["income"].isna().mean())
    assert income.count == frame["income"].notna().sum()


def test_categorical_reference_keeps_top_k_and_other(frame: pd.DataFrame) -> None:
    profile = ReferenceProfile.from_frame(frame, categorical=["city"], top_k=2)
    city = profile.features["city"]
    assert isinstance(city, CategoricalFeature)
    assert city.categories == ["paris", "lyon"]
    assert city.bin_labels == ["paris", "lyon", OTHER]
    shares = frame["city"].value_counts(normalize=True)
    assert city.reference_share[0] == pytest.approx(shares["paris"])
    assert city.reference_share[2] == pytest.approx(shares["nice"] + shares["lille"])
    assert sorted(city.known_other) == ["lille", "nice"] and city.known_other_complete


def test_output_is_profiled_by_kind(frame: pd.DataFrame) -> None:
    classes = ReferenceProfile.from_frame(frame, numeric=["age"], prediction="label")
    assert isinstance(classes.output, CategoricalFeature)
    regression = ReferenceProfile.from_frame(frame, numeric=["age"], prediction="income")
    assert isinstance(regression.output, NumericFeature)
    forced = ReferenceProfile.from_frame(
        frame.assign(k=frame.index % 3), numeric=["age"], prediction="k", target_kind="numeric"
    )
    assert isinstance(forced.output, NumericFeature)


def _classifier_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a classifier's predictions: 'yes' under 40, whatever the label says."""
    return frame.assign(predicted=np.where(frame["age"] < 40, "yes", "no"))


def _shares(feature: object) -> dict[str, float]:
    assert isinstance(feature, CategoricalFeature)
    return dict(zip(feature.bin_labels, feature.reference_share, strict=True))


def test_predictions_are_the_output_and_labels_are_kept_apart(frame: pd.DataFrame) -> None:
    data = _classifier_frame(frame)
    profile = ReferenceProfile.from_frame(data, ["age"], prediction="predicted", label="label")
    predicted = data["predicted"].value_counts(normalize=True)
    labels = data["label"].value_counts(normalize=True)
    assert _shares(profile.output) == pytest.approx({**predicted.to_dict(), OTHER: 0.0})
    assert _shares(profile.labels) == pytest.approx({**labels.to_dict(), OTHER: 0.0})
    # A label alone is kept, and is not the output reference.
    alone = ReferenceProfile.from_frame(data, ["age"], label="label")
    assert alone.output is None and alone.labels == profile.labels
    # The same column for both is how a caller asks for the labels as the output reference.
    asked = ReferenceProfile.from_frame(data, ["age"], prediction="label", label="label")
    assert asked.output == asked.labels == profile.labels


def test_labels_take_the_kind_of_the_predictions(frame: pd.DataFrame) -> None:
    data = frame.assign(pred=frame["income"].fillna(0) * 1.1, truth=frame.index % 5)
    profile = ReferenceProfile.from_frame(data, ["age"], prediction="pred", label="truth")
    assert isinstance(profile.output, NumericFeature)
    assert isinstance(profile.labels, NumericFeature)  # not 5 classes: it is compared with output
    alone = ReferenceProfile.from_frame(data, ["age"], label="truth")
    assert isinstance(alone.labels, CategoricalFeature)


def test_target_is_the_older_name_of_prediction(frame: pd.DataFrame) -> None:
    data = _classifier_frame(frame)
    old = ReferenceProfile.from_frame(data, ["age"], target="predicted")
    new = ReferenceProfile.from_frame(data, ["age"], prediction="predicted")
    assert old.fingerprint() == new.fingerprint()
    with pytest.raises(ProfileError, match="target is the older name of prediction"):
        ReferenceProfile.from_frame(data, ["age"], target="predicted", prediction="predicted")


def test_labels_round_trip_and_count_in_the_fingerprint(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    data = _classifier_frame(frame)
    with_labels = ReferenceProfile.from_frame(data, ["age"], prediction="predicted", label="label")
    without = ReferenceProfile.from_frame(data, ["age"], prediction="predicted")
    path = tmp_path / "ref.json"
    with_labels.save(path)
    assert ReferenceProfile.load(path) == with_labels
    assert with_labels.fingerprint() != without.fingerprint()
    without.save(path)
    # Without labels the file has no "labels" key: exactly the layout older exporters read.
    assert "labels" not in json.loads(path.read_text())
    assert ReferenceProfile.load(path) == without


def test_malformed_labels_are_named(tmp_path: Path, frame: pd.DataFrame) -> None:
    data = _classifier_frame(frame)
    profile = ReferenceProfile.from_frame(data, ["age"], prediction="predicted", label="label")
    document = json.loads(profile.model_dump_json())
    document["labels"]["reference_share"][0] += 0.5
    with pytest.raises(ProfileError, match=r"labels\.categorical.*sum to 1"):
        ReferenceProfile.load(_write(tmp_path, document))


#: A profile as the exporter wrote it before labels were kept apart (its output built from the
#: label column, as the README then showed), with the fingerprint that exporter gave it.
PROFILE_BEFORE_LABELS = """{"schema_version": 1, "created_at": "2025-01-01T00:00:00+00:00",
"bins": 4, "top_k": 20, "sample_size": 4, "features": {"amount": {"kind": "numeric",
"edges": [2.0, 4.0, 6.0], "reference_share": [0.125, 0.25, 0.25, 0.375], "mean": 4.5,
"std": 2.449489742783178, "count": 8, "missing_rate": 0.0, "min": 1.0, "max": 8.0,
"sample": [3.0, 4.0, 5.0, 7.0]}, "country": {"kind": "categorical",
"categories": ["fr", "de", "es"], "reference_share": [0.625, 0.25, 0.125, 0.0], "count": 8,
"missing_rate": 0.0, "known_other": [], "known_other_complete": true}},
"output": {"kind": "categorical", "categories": ["ok", "fraud"],
"reference_share": [0.75, 0.25, 0.0], "count": 8, "missing_rate": 0.0, "known_other": [],
"known_other_complete": true}}"""
FINGERPRINT_BEFORE_LABELS = "b9f4907eb0a0"


def test_a_profile_written_before_labels_still_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(PROFILE_BEFORE_LABELS)
    profile = ReferenceProfile.load(path)
    assert profile.labels is None
    assert _shares(profile.output) == {"ok": 0.75, "fraud": 0.25, OTHER: 0.0}
    assert set(profile.features) == {"amount", "country"}
    # The same model_info{reference} as before the upgrade, and saved back in the same layout.
    assert profile.fingerprint() == FINGERPRINT_BEFORE_LABELS
    profile.save(path)
    assert json.loads(path.read_text()) == json.loads(PROFILE_BEFORE_LABELS)


def test_save_load_round_trip(tmp_path: Path, frame: pd.DataFrame) -> None:
    profile = ReferenceProfile.from_frame(frame, ["age"], ["city"], prediction="label")
    path = tmp_path / "ref.json"
    profile.save(path)
    assert ReferenceProfile.load(path) == profile
    assert json.loads(path.read_text())["schema_version"] == 1
    assert not list(tmp_path.glob(".ref.json.*"))  # no temp file left behind
    assert path.stat().st_mode & 0o777 == 0o644


def test_same_data_same_profile(frame: pd.DataFrame) -> None:
    a = ReferenceProfile.from_frame(frame, ["age"], sample_size=100)
    b = ReferenceProfile.from_frame(frame, ["age"], sample_size=100)
    assert a.fingerprint() == b.fingerprint()


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    return path


def _valid_document(frame: pd.DataFrame) -> dict:
    return json.loads(ReferenceProfile.from_frame(frame, ["age"], ["city"]).model_dump_json())


def test_malformed_profile_names_file_field_and_problem(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    document = _valid_document(frame)
    document["features"]["age"]["edges"] = [3.0, 2.0, 1.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    path = _write(tmp_path, document)
    with pytest.raises(ProfileError) as error:
        ReferenceProfile.load(path)
    message = str(error.value)
    assert str(path) in message and "features.age" in message and "increasing" in message


def test_shares_that_do_not_sum_to_one_are_rejected(tmp_path: Path, frame: pd.DataFrame) -> None:
    document = _valid_document(frame)
    document["features"]["city"]["reference_share"][0] += 0.2
    with pytest.raises(ProfileError, match=r"features\.city.*sum to 1"):
        ReferenceProfile.load(_write(tmp_path, document))


def test_newer_schema_is_refused_clearly(tmp_path: Path, frame: pd.DataFrame) -> None:
    document = _valid_document(frame)
    document["schema_version"] = 2
    with pytest.raises(ProfileError, match=r"schema_version: 2 .*newer.*reads up to 1"):
        ReferenceProfile.load(_write(tmp_path, document))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"features": {"x": {"kind": "numeric"}}}', "features.x.numeric.edges"),
        ('{"features": {}, "surprise": 1}', "surprise"),
    ],
)
def test_broken_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=expected):
        ReferenceProfile.load(path)


def test_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        ReferenceProfile.load(tmp_path / "nope.json")


def test_require_names_the_missing_features(frame: pd.DataFrame) -> None:
    profile = ReferenceProfile.from_frame(frame, ["age"])
    with pytest.raises(ProfileError, match=r"\['height'\] are watched but not profiled"):
        profile.require(["age", "height"])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"numeric": ["nope"]}, "not in the data"),
        ({"numeric": ["city"]}, "listed as numeric but row 0 holds"),
        ({}, "no features"),
        ({"numeric": ["age"], "categorical": ["age"]}, "numeric and categorical"),
    ],
)
def test_from_frame_errors(frame: pd.DataFrame, kwargs: dict, expected: str) -> None:
    with pytest.raises(ProfileError, match=expected):
        ReferenceProfile.from_frame(frame, **kwargs)


def test_all_missing_column_is_refused() -> None:
    with pytest.raises(ProfileError, match="no finite values"):
        ReferenceProfile.from_frame(pd.DataFrame({"x": [np.nan, np.nan]}), ["x"])


def test_constant_and_huge_columns_profile_cleanly() -> None:
    frame = pd.DataFrame({"c": [5.0] * 100, "h": np.linspace(-1e300, 1e300, 100)})
    profile = ReferenceProfile.from_frame(frame, ["c", "h"])
    constant = profile.features["c"]
    assert isinstance(constant, NumericFeature)
    assert constant.edges == [] and constant.reference_share == [1.0] and constant.std == 0
    huge = profile.features["h"]
    assert isinstance(huge, NumericFeature)
    counts = stats.bin_counts(frame["h"], huge.edges)
    assert counts.min() > 0


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_baseline_writes_a_loadable_profile(
    tmp_path: Path, frame: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "reference.json"
    code = main(["baseline", "--data", str(data), "--numeric", "age,income",
                 "--categorical", "city", "--label", "label", "--out", str(out)])  # fmt: skip
    assert code == 0
    profile = ReferenceProfile.load(out)
    assert set(profile.features) == {"age", "income", "city"}
    # The labels are kept, and are not the output reference (tests/test_baseline_cli.py).
    assert isinstance(profile.labels, CategoricalFeature) and profile.output is None
    assert "wrote" in capsys.readouterr().out


def test_cli_baseline_segments_by_a_column(
    tmp_path: Path, frame: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "reference.json"
    argv = ["baseline", "--data", str(data), "--numeric", "age", "--categorical", "city",
            "--segment-by", "city", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    profile = ReferenceProfile.load(out)
    assert profile.segments is not None and profile.segments.min_rows == 500
    # 2,000 rows: paris (about 1,000) and lyon (600) pass 500 rows, nice and lille do not.
    assert sorted(profile.segments.values) == ["lyon", "paris"]
    said = capsys.readouterr().out
    assert "2 segments by city (the rows of 2 values with fewer than 500 rows" in said
    assert main([*argv[:-2], "--min-segment-rows", "200", "--out", str(out)]) == 0
    segments = ReferenceProfile.load(out).segments
    assert segments is not None and sorted(segments.values) == ["lyon", "nice", "paris"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--numeric", "nope"], "columns not in the data"),
        (["--numeric", "city"], "listed as numeric"),
        (["--numeric", "age", "--segment-by", "city"], "segment_by 'city' must be one of the"),
        (["--numeric", "age", "--segment-by", "age"], "must hold whole numbers"),
        (["--numeric", "age", "--min-segment-rows", "9"], "--min-segment-rows applies to"),
    ],
)
def test_cli_baseline_errors_are_one_clear_line(
    tmp_path: Path,
    frame: pd.DataFrame,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: str,
) -> None:
    data = tmp_path / "train.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "reference.json"
    assert main(["baseline", "--data", str(data), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists()  # nothing written half-way


def test_cli_parquet_without_pyarrow_says_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyarrow is a dev dependency; an installation without the parquet extra lacks it.
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    data = tmp_path / "train.parquet"
    data.write_bytes(b"PAR1")
    assert main(["baseline", "--data", str(data), "--numeric", "a", "--out", "x.json"]) == 2
    assert "needs pyarrow" in capsys.readouterr().err


def test_cli_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["baseline", "--data", str(tmp_path / "no.csv"), "--numeric", "a",
                 "--out", str(tmp_path / "r.json")])  # fmt: skip
    assert code == 2
    assert "no such file" in capsys.readouterr().err
