"""``model-exporter batch`` as a user runs it: a scored file in, counts pushed to a real
Pushgateway; every mistake one line on stderr, exit code 2, and nothing pushed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from exporter.cli import main
from exporter.demo_models.fare import synthetic_trips
from tests.gateway import gateway_samples, pushgateway, total

ROOT = Path(__file__).resolve().parent.parent
FARE = ROOT / "examples" / "fare"
FEATURES = ["trip_miles", "trip_seconds", "straight_line_km", "hour"]


def flaky_fare(features: Mapping[str, Any]) -> float:
    """A fare model that fails on long trips, as a model with a bug in one branch does."""
    miles = float(features["trip_miles"])
    if miles > 10:
        raise OverflowError("trip too long for this model")
    return 3.0 + 2.5 * miles


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    with pushgateway(tmp_path) as url:
        yield url


def write_config(directory: Path, import_path: str = "exporter.demo_models.fare:predict") -> Path:
    """The example fare config with another model, beside a copy of its reference."""
    text = (FARE / "monitor.yml").read_text()
    text = text.replace("exporter.demo_models.fare:predict", import_path)
    (directory / "reference.json").write_bytes((FARE / "reference.json").read_bytes())
    path = directory / "monitor.yml"
    path.write_text(text)
    return path


def trips(n: int, seed: int) -> pd.DataFrame:
    frame = synthetic_trips(n, seed=seed)
    return frame[FEATURES].copy()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.stack
def test_scoring_a_csv_through_the_model_counts_predictions_and_failures_and_pushes(
    tmp_path: Path, gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "tests.test_batch_command:flaky_fare")
    frame = trips(2000, seed=3)
    frame.loc[:9, "trip_miles"] = np.nan  # required: not scored, counted as missing
    data = tmp_path / "trips.csv"
    frame.to_csv(data, index=False)
    long_trips = int((frame["trip_miles"] > 10).sum())
    assert long_trips > 0
    code, out, err = run(
        ["batch", "--config", str(config), "--data", str(data), "--pushgateway", gateway,
         "--scrape-interval", "0"], capsys,
    )  # fmt: skip
    assert code == 0, err
    answered = 2000 - 10 - long_trips
    assert f"{answered} predictions counted ({long_trips} failed, 10 not scored" in out
    assert "PSI of this run against the reference:" in out
    predictions = gateway_samples(gateway, "model_predictions_total")
    assert total(predictions, job="model-exporter-batch", model="fare") == answered
    errors = gateway_samples(gateway, "model_prediction_errors_total")
    assert total(errors, error="OverflowError") == long_trips
    invalid = gateway_samples(gateway, "model_input_invalid_total")
    assert total(invalid, feature="trip_miles", reason="missing") == 10
    # Every call was timed: answered and failed ones.
    latency = gateway_samples(gateway, "model_prediction_duration_seconds_count")
    assert total(latency) == answered + long_trips


@pytest.mark.stack
def test_predictions_already_in_a_parquet_file_are_counted_and_two_runs_add_up(
    tmp_path: Path, gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    for seed, n in ((1, 1500), (2, 500)):
        frame = trips(n, seed=seed)
        frame["fare_predicted"] = 3.0 + 2.5 * frame["trip_miles"]
        data = tmp_path / f"scored-{seed}.parquet"
        frame.to_parquet(data)
        code, out, err = run(
            ["batch", "--config", str(config), "--data", str(data), "--pushgateway", gateway,
             "--model-column", "fare_predicted", "--grouping-key", "instance=nightly",
             "--scrape-interval", "0"], capsys,
        )  # fmt: skip
        assert code == 0, err
        assert "instance=nightly" in out
    predictions = gateway_samples(gateway, "model_predictions_total")
    assert total(predictions, instance="nightly", model="fare") == 2000
    bins = gateway_samples(gateway, "model_feature_bin_total")
    assert total(bins, instance="nightly", feature="trip_miles") == 2000
    # No model ran: no latency.
    assert total(gateway_samples(gateway, "model_prediction_duration_seconds_count")) == 0


def mistakes(tmp_path: Path) -> list[tuple[list[str], str]]:
    """Arguments (after --config and --pushgateway) and the one line each must give."""
    good = tmp_path / "good.csv"
    frame = trips(50, seed=5)
    frame["fare_predicted"] = 10.0
    frame.to_csv(good, index=False)
    lacking = tmp_path / "lacking.csv"
    frame.drop(columns=["hour"]).to_csv(lacking, index=False)
    text = tmp_path / "text.csv"
    frame.assign(trip_seconds="fast").to_csv(text, index=False)
    text_prediction = tmp_path / "text-prediction.csv"
    frame.assign(fare_predicted="cheap").to_csv(text_prediction, index=False)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    empty = tmp_path / "empty.csv"
    frame.iloc[:0].to_csv(empty, index=False)
    return [
        (["--data", str(tmp_path / "nowhere.csv")], "nowhere.csv: no such file"),
        (["--data", str(broken)], "broken.parquet: not a readable Parquet file"),
        (["--data", str(lacking)], "lacking.csv: no column 'hour', which the config watches"),
        (["--data", str(text)], "column 'trip_seconds' (a numeric feature) holds text"),
        (["--data", str(text_prediction), "--model-column", "fare_predicted"],
         "--model-column 'fare_predicted' holds text"),
        (["--data", str(good), "--model-column", "fare"], "no column 'fare' (--model-column)"),
        (["--data", str(good), "--confidence-column", "fare_predicted"],
         "--confidence-column goes with --model-column"),
        (["--data", str(empty)], "empty.csv: no rows"),
        (["--data", str(good), "--grouping-key", "instance"], "give LABEL=VALUE"),
        (["--data", str(good), "--grouping-key", "model=x"], "grouping key 'model'"),
    ]  # fmt: skip


@pytest.mark.stack
def test_every_mistake_is_one_line_and_nothing_is_pushed(
    tmp_path: Path, gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    for arguments, expected in mistakes(tmp_path):
        argv = ["batch", "--config", str(config), "--pushgateway", gateway, *arguments]
        code, out, err = run(argv, capsys)
        assert code == 2, (arguments, out, err)
        assert expected in err, (arguments, err)
        assert err.count("\n") == 1 and err.startswith("model-exporter batch: "), err
    assert not gateway_samples(gateway, "model_info")


def test_an_unreachable_gateway_or_a_bad_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    data = tmp_path / "trips.csv"
    trips(20, seed=6).to_csv(data, index=False)
    code, _, err = run(
        ["batch", "--config", str(config), "--data", str(data),
         "--pushgateway", "http://127.0.0.1:9", "--timeout", "2"], capsys,
    )  # fmt: skip
    assert code == 2 and "cannot reach the Pushgateway at http://127.0.0.1:9" in err
    assert err.count("\n") == 1
    bad = tmp_path / "bad.yml"
    bad.write_text("model: {name: fare}\n")
    code, _, err = run(
        ["batch", "--config", str(bad), "--data", str(data), "--pushgateway", "x:1"], capsys
    )
    assert code == 2 and "bad.yml" in err and err.count("\n") == 1


@pytest.mark.stack
def test_a_classifier_with_derived_features_scores_texts_and_counts_confidences(
    tmp_path: Path, gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The intent example: the model reads raw text; the monitor watches numbers derived from it.
    from exporter.demo_models.intent import load_utterances

    intent = ROOT / "examples" / "intent"
    (tmp_path / "reference.json").write_bytes((intent / "reference.json").read_bytes())
    config = tmp_path / "monitor.yml"
    config.write_text((intent / "monitor.yml").read_text())
    texts = [u.text for u in load_utterances()][:300]
    frame = pd.DataFrame({"text": texts, "channel": ["app"] * len(texts)})
    data = tmp_path / "texts.csv"
    frame.to_csv(data, index=False)
    code, out, err = run(
        ["batch", "--config", str(config), "--data", str(data), "--pushgateway", gateway,
         "--scrape-interval", "0"], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert f"{len(texts)} predictions counted (0 failed" in out
    predictions = gateway_samples(gateway, "model_predictions_total")
    assert total(predictions, model="intent") == len(texts)
    # Every answer carried its confidence; the derived features were counted per row.
    assert total(gateway_samples(gateway, "model_prediction_confidence_count")) == len(texts)
    bins = gateway_samples(gateway, "model_feature_bin_total")
    for feature in ("text_length", "token_count", "oov_share", "channel"):
        assert total(bins, feature=feature) == len(texts), feature
    # The same rows again with the answers already in the file: the totals add up.
    from exporter.demo_models.intent import predict

    answers = [predict({"text": t}) for t in texts]
    frame["intent"] = [a[0] for a in answers]
    frame["confidence"] = [a[1] for a in answers]
    frame.to_parquet(tmp_path / "scored.parquet")
    code, out, err = run(
        ["batch", "--config", str(config), "--data", str(tmp_path / "scored.parquet"),
         "--model-column", "intent", "--confidence-column", "confidence",
         "--pushgateway", gateway, "--scrape-interval", "0"], capsys,
    )  # fmt: skip
    assert code == 0, err
    predictions = gateway_samples(gateway, "model_predictions_total")
    assert total(predictions, model="intent") == 2 * len(texts)
    assert total(gateway_samples(gateway, "model_prediction_confidence_count")) == 2 * len(texts)
    assert total(gateway_samples(gateway, "model_feature_bin_total"), feature="oov_share") == (
        2 * len(texts)
    )
