"""The backtest's traffic simulator: known rates, shares, PSIs and latencies, not just shapes."""

from __future__ import annotations

import hashlib
import math
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from exporter.backtest import faults, traffic
from exporter.backtest import simulate as sim
from exporter.backtest.simulate import Example, SimulatedLog, fault_psi, input_psi, simulate
from exporter.config import load_config
from exporter.demo_models import fare, intent

#: 2024-06-01 00:00:00 UTC.
MIDNIGHT = 1_717_200_000.0
#: Deviations from an expected count or share accepted as chance (p < 1e-4 two-sided).
SIGMAS = 4.0
#: synthetic_trips(1000, 9) and (1000, 9, shift=2.5) before ``hours=`` existed (SHA-256 of the
#: float64 bytes of the frame): the new argument must leave existing calls untouched.
TRIPS_SHA256 = {
    None: "60aa08d9ddb8e47ace656ce19b2471548ac32d23e77cb95cf83012c5bf4092ec",
    2.5: "56a63c02c4a4e9dd69273c70fdc782dffad773c26f3367c8c673a54a4e8a5e8a",
}


@cache
def make(example: Example, scenario: str, **options: Any) -> SimulatedLog:
    """One log per argument set, shared by the tests that read it."""
    options.setdefault("start", MIDNIGHT)
    return simulate(example, scenario, **options)


def near_share(hits: int, n: int, p: float) -> bool:
    """``hits`` out of ``n`` is within SIGMAS binomial standard deviations of ``p``."""
    return abs(hits - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)) + 1


def window(log: SimulatedLog, low: float, high: float) -> pd.DataFrame:
    frame = log.frame
    return frame[(frame["time"] >= low) & (frame["time"] < high)]


def p95(frame: pd.DataFrame) -> float:
    return float(np.quantile(frame["latency_seconds"], 0.95))


# -- the log's shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["fare", "intent"])
def test_the_log_has_the_contract_columns_in_order(example: Example) -> None:
    log = make(example, "stable", rate=2.0, hours=1.0)
    frame = log.frame
    assert tuple(frame.columns) == sim.log_columns(example)
    assert list(frame.columns[1:-7]) == list(sim.RAW_FEATURES[example])
    times = frame["time"].to_numpy()
    assert frame["time"].dtype == np.float64 and np.all(np.diff(times) >= 0)
    assert log.end == MIDNIGHT + 3600
    assert times.min() >= log.start and times.max() <= log.end
    assert (frame["latency_seconds"] > 0).all()
    assert set(frame["phase"]) == {"stable"}
    answered = frame[frame["error"].isna()]
    assert answered["prediction"].notna().all()
    if example == "fare":
        assert frame["prediction"].dtype == np.float64 and frame["confidence"].isna().all()
        assert frame["trip_seconds"].dtype == np.int64 and frame["hour"].dtype == np.int64
    else:
        assert set(answered["prediction"]) <= set(intent.intents())
        assert answered["confidence"].between(1 / len(intent.intents()), 1.0).all()
        assert set(frame["channel"]) <= set(intent.CHANNELS)
    assert log.config == sim.config_path(example)
    assert load_config(log.config).model.name == example


def test_a_log_too_short_for_any_call_is_empty_but_well_formed() -> None:
    log = simulate("intent", "drift", rate=0.05, hours=1 / 3600, start=MIDNIGHT, seed=3)
    assert len(log.frame) <= 3
    assert tuple(log.frame.columns) == sim.log_columns("intent")


# -- when calls come -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "hours"), [(0.05, 24.0), (1.0, 2.0), (20.0, 0.5)])
def test_stable_arrivals_are_a_poisson_process_at_the_rate(rate: float, hours: float) -> None:
    times = make("fare", "stable", rate=rate, hours=hours, seed=1).frame["time"].to_numpy()
    expected = rate * hours * 3600
    assert abs(times.size - expected) <= SIGMAS * math.sqrt(expected)
    gaps = np.diff(times)
    assert scipy_stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 1e-4


@pytest.mark.parametrize(("example", "rate"), [("fare", 1.0), ("intent", 0.5)])
def test_a_realistic_day_follows_the_hourly_demand(example: Example, rate: float) -> None:
    # Started off the hour: the first and last partial hours make one whole hour of each.
    log = make(example, "realistic", rate=rate, hours=24.0, start=MIDNIGHT + 1234.5, seed=2)
    frame = log.frame
    hours = pd.to_datetime(frame["time"], unit="s", utc=True).dt.hour.to_numpy()
    observed = np.bincount(hours, minlength=24)
    demand = np.asarray(fare.HOURLY_DEMAND)
    expected = demand / demand.sum() * observed.sum()
    assert scipy_stats.chisquare(observed, expected).pvalue > 1e-4
    # The day's mean rate is ``rate``; the busiest hour is over six times the quietest.
    day = rate * 86_400
    assert abs(len(frame) - day) <= SIGMAS * math.sqrt(day)
    assert observed[18] > 6 * observed[4]
    if example == "fare":
        assert (frame["hour"].to_numpy() == hours).all()


def test_realistic_trips_take_as_long_as_their_clock_hour_says() -> None:
    frame = make("fare", "realistic", rate=1.0, hours=24.0, start=MIDNIGHT + 1234.5, seed=2).frame
    rush, night = fare.rush_and_night(frame["hour"].to_numpy(dtype=np.float64))
    pace = (frame["trip_seconds"] / frame["trip_miles"]).to_numpy()
    assert np.median(pace[rush]) > 1.2 * np.median(pace[~rush & ~night])
    assert np.median(pace[~rush & ~night]) > 1.2 * np.median(pace[night])


def test_synthetic_trips_hours_fix_the_hour_and_leave_old_calls_alone() -> None:
    for shift, digest in TRIPS_SHA256.items():
        trips = fare.synthetic_trips(1000, 9, shift=shift)
        assert hashlib.sha256(trips.to_numpy(dtype=np.float64).tobytes()).hexdigest() == digest
    hours = np.repeat([8, 13, 2], 2000)
    trips = fare.synthetic_trips(hours.size, 4, hours=hours)
    assert (trips["hour"].to_numpy() == hours).all()
    pace = (trips["trip_seconds"] / trips["trip_miles"]).groupby(trips["hour"]).median()
    assert pace[8] > pace[13] > pace[2]
    assert trips.equals(fare.synthetic_trips(hours.size, 4, hours=hours.tolist()))
    for bad in ([1, 2], [0, 24, 3], [1.5, 2, 3], ["1", "2", "3"], [np.nan, 1, 2], [True] * 3):
        with pytest.raises(ValueError, match="hours"):
            fare.synthetic_trips(3, 4, hours=bad)


# -- inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "scenario", "target", "rate"),
    [
        ("fare", "drift", 0.30, 20.0),
        ("fare", "moderate-drift", 0.12, 20.0),
        ("intent", "drift", 0.30, 6.0),
        ("intent", "moderate-drift", 0.12, 6.0),
    ],
)
def test_drift_moves_the_most_drifted_input_to_its_psi_after_injection(
    example: Example, scenario: str, target: float, rate: float
) -> None:
    log = make(example, scenario, rate=rate, hours=2.0, inject_after=3600.0, seed=4)
    assert log.injected_at == MIDNIGHT + 3600 and log.recovered_at is None
    before = window(log, log.start, MIDNIGHT + 3600)
    after = window(log, MIDNIGHT + 3600, log.end)
    assert set(before["phase"]) == {"stable"} and set(after["phase"]) == {scenario}
    assert max(input_psi(example, before).values()) < 0.02
    assert max(input_psi(example, after).values()) == pytest.approx(target, abs=0.1 * target)


def test_fault_psi_is_the_population_psi_of_the_faulty_inputs() -> None:
    stable = fault_psi("fare", "stable")
    # A segmented reference's context feature (the hour) is not a drift input.
    segments = traffic.reference("fare").segments
    assert set(stable) == set(fare.FEATURES) - ({segments.feature} if segments else set())
    assert max(stable.values()) < 0.005
    assert max(fault_psi("fare", "errors").values()) < 0.005  # inputs untouched
    assert fault_psi("fare", "drift")["trip_miles"] == pytest.approx(0.30, abs=0.01)
    assert fault_psi("fare", "moderate-drift")["trip_miles"] == pytest.approx(0.12, abs=0.01)
    assert max(fault_psi("intent", "stable", rows=20_000).values()) < 0.01
    shifted = fault_psi("intent", "drift", rows=30_000)
    assert set(shifted) == {"text_length", "token_count", "oov_share", "channel"}
    assert max(shifted.values()) == pytest.approx(0.30, abs=0.02)
    assert shifted["token_count"] < shifted["oov_share"]


# -- faults on calls -------------------------------------------------------------------------------


@pytest.mark.parametrize(("example", "rate"), [("fare", 20.0), ("intent", 8.0)])
def test_errors_fail_a_tenth_of_calls_only_during_the_fault(example: Example, rate: float) -> None:
    log = make(example, "errors", rate=rate, hours=1.0, inject_after=1800.0, seed=5)
    frame = log.frame
    failed = frame["error"].notna()
    fault = (frame["phase"] == "errors").to_numpy()
    assert (fault == (frame["time"] >= MIDNIGHT + 1800).to_numpy()).all()
    assert near_share(int(failed[~fault].sum()), int((~fault).sum()), faults.BASELINE_ERROR_SHARE)
    during = faults.FAULT_ERROR_SHARE + (1 - faults.FAULT_ERROR_SHARE) * faults.BASELINE_ERROR_SHARE
    assert near_share(int(failed[fault].sum()), int(fault.sum()), during)
    assert set(frame.loc[failed, "error"]) == {"DemoModelError"}
    broken = frame[failed]
    assert broken["prediction"].isna().all() and broken["actual"].isna().all()
    assert broken["actual_time"].isna().all() and broken["confidence"].isna().all()


def test_latency_puts_the_p95_at_three_thresholds_only_during_the_fault() -> None:
    log = make(
        "fare", "latency", rate=20.0, hours=1.0, inject_after=1200.0, recover_after=2400.0,
        latency_threshold=0.1,
    )  # fmt: skip
    assert p95(window(log, log.start, MIDNIGHT + 1200)) < 0.01
    assert 0.30 <= p95(window(log, MIDNIGHT + 1200, MIDNIGHT + 2400)) <= 0.33
    assert p95(window(log, MIDNIGHT + 2400, log.end)) < 0.01
    assert "0.3-0.33 s" in log.description


def test_latency_threshold_defaults_to_the_example_config() -> None:
    threshold = load_config(sim.config_path("intent")).thresholds["latency_p95_seconds"]
    log = make("intent", "latency", rate=5.0, hours=1.0, inject_after=0.0)
    assert 3.0 * threshold <= p95(log.frame) <= 3.3 * threshold
    assert f"{threshold:g} s p95 threshold" in log.description


# -- ground truth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_ground_truth_comes_for_truth_share_of_answered_calls(share: float) -> None:
    frame = make("fare", "errors", rate=10.0, hours=1.0, inject_after=0.0, truth_share=share).frame
    answered = frame["error"].isna()
    known = frame["actual"].notna()
    assert not (known & ~answered).any()
    assert near_share(int(known.sum()), int(answered.sum()), share)
    assert (known == frame["actual_time"].notna()).all()


def test_a_fare_is_known_when_the_trip_ends() -> None:
    frame = make("fare", "stable", rate=10.0, hours=1.0).frame
    known = frame[frame["actual"].notna()]
    lag = known["actual_time"] - known["time"] - known["trip_seconds"]
    assert lag.between(*traffic.FARE_TRUTH_LAG_SECONDS).all()
    # The true fare, which the healthy model predicts within its "OK" MAE band.
    assert (known["actual"] - known["prediction"]).abs().mean() < 3.5


def test_an_intent_is_known_after_about_ten_minutes() -> None:
    frame = make("intent", "stable", rate=5.0, hours=2.0).frame
    known = frame[frame["actual"].notna()]
    delay = (known["actual_time"] - known["time"]).to_numpy()
    cap, mean = traffic.INTENT_TRUTH_CAP_SECONDS, traffic.INTENT_TRUTH_MEAN_SECONDS
    assert delay.min() > 0 and delay.max() <= cap
    expected = mean * (1 - math.exp(-cap / mean))  # the mean of the capped exponential
    assert delay.mean() == pytest.approx(expected, abs=SIGMAS * mean / math.sqrt(delay.size))
    assert set(known["actual"]) <= set(intent.intents())
    assert (known["actual"] == known["prediction"]).mean() > 0.85


def test_mae_adds_six_dollars_to_actual_fares_only_during_the_fault() -> None:
    options: dict[str, Any] = {"rate": 10.0, "hours": 1.0, "inject_after": 1800.0, "seed": 6}
    stable, mae = make("fare", "stable", **options).frame, make("fare", "mae", **options).frame
    degrade = make("fare", "degrade", **options).frame
    assert degrade.drop(columns="phase").equals(mae.drop(columns="phase"))
    pd.testing.assert_frame_equal(
        stable.drop(columns=["actual", "phase"]), mae.drop(columns=["actual", "phase"])
    )
    # The fault hits the ground truth that arrives while it lasts.
    fault = (mae["actual_time"] >= MIDNIGHT + 1800).to_numpy()
    offset = (mae["actual"] - stable["actual"]).to_numpy()
    assert np.array_equal(np.isnan(offset), stable["actual"].isna().to_numpy())
    known = ~np.isnan(offset)
    assert np.allclose(offset[known & fault], faults.MAE_FARE_OFFSET)
    assert (offset[known & ~fault] == 0).all()


def test_degrade_makes_thirty_percent_of_actual_intents_wrong_during_the_fault() -> None:
    options: dict[str, Any] = {"rate": 5.0, "hours": 2.0, "inject_after": 3600.0, "seed": 6}
    stable = make("intent", "stable", **options).frame
    degraded = make("intent", "degrade", **options).frame
    known = stable["actual"].notna().to_numpy()
    assert np.array_equal(known, degraded["actual"].notna().to_numpy())
    fault = (degraded["actual_time"] >= MIDNIGHT + 3600).to_numpy()
    changed = (stable["actual"] != degraded["actual"]).to_numpy() & known
    assert not changed[~fault].any()
    assert near_share(int(changed[fault].sum()), int((known & fault).sum()), 0.30)
    assert set(degraded.loc[known, "actual"]) <= set(intent.intents())


# -- recovery, determinism, errors -----------------------------------------------------------------


def test_recover_after_brings_stable_traffic_back() -> None:
    options: dict[str, Any] = {
        "rate": 20.0, "hours": 1.5, "inject_after": 1800.0, "recover_after": 3600.0, "seed": 7,
    }  # fmt: skip
    drifted = make("fare", "drift", **options)
    assert drifted.recovered_at == MIDNIGHT + 3600
    after = window(drifted, MIDNIGHT + 3600, drifted.end)
    assert set(after["phase"]) == {"stable"}
    assert max(input_psi("fare", after).values()) < 0.02
    assert max(input_psi("fare", window(drifted, MIDNIGHT + 1800, MIDNIGHT + 3600)).values()) > 0.2
    errors = make("fare", "errors", **options)
    late = window(errors, MIDNIGHT + 3600, errors.end)
    assert near_share(int(late["error"].notna().sum()), len(late), faults.BASELINE_ERROR_SHARE)
    stable = make("fare", "stable", **options).frame
    mae = make("fare", "mae", **options).frame
    recovered = (stable["time"] >= MIDNIGHT + 3600).to_numpy()
    assert stable["actual"][recovered].equals(mae["actual"][recovered])


@pytest.mark.parametrize("example", ["fare", "intent"])
def test_the_same_seed_gives_the_same_log(example: Example) -> None:
    def run(seed: int) -> pd.DataFrame:
        return simulate(
            example, "drift", rate=2.0, hours=0.5, start=MIDNIGHT, inject_after=600.0, seed=seed
        ).frame

    first = run(8)
    pd.testing.assert_frame_equal(first, run(8))
    assert not first["time"].equals(run(9)["time"])


def test_predictions_are_the_models_own() -> None:
    trips = make("fare", "drift", rate=20.0, hours=2.0, inject_after=3600.0, seed=4).frame
    for row in trips.sample(200, random_state=0).to_dict("records"):
        if not pd.isna(row["prediction"]):
            features = {name: row[name] for name in fare.FEATURES}
            assert fare.predict(features) == row["prediction"]
    requests = make("intent", "drift", rate=2.0, hours=1.0, inject_after=0.0, seed=10).frame
    answered = requests[requests["error"].isna()].drop_duplicates("text")
    assert (answered["text"].str.contains(" -- ")).mean() > 0.2  # shifted texts are asked too
    for text, label, confidence in answered[["text", "prediction", "confidence"]].itertuples(
        index=False
    ):
        assert intent.predict({"text": text}) == (label, confidence)


def test_scenarios_and_metadata() -> None:
    assert "mae" in sim.scenarios("fare") and "mae" not in sim.scenarios("intent")
    assert set(sim.scenarios("intent")) == set(sim.SCENARIOS) - {"mae"}
    log = make("fare", "errors", rate=1.0, hours=2.0)
    assert log.injected_at == MIDNIGHT + 3600 and log.end == MIDNIGHT + 7200  # half way
    assert (log.example, log.scenario, log.rate, log.seed) == ("fare", "errors", 1.0, 0)
    calm = make("fare", "stable", rate=1.0, hours=2.0, inject_after=60.0, recover_after=120.0)
    assert calm.injected_at is None and calm.recovered_at is None
    for example in sim.EXAMPLES:
        for scenario in sim.scenarios(example):
            described = make(example, scenario, rate=0.1, hours=0.1).description
            assert described and "\n" not in described


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"example": "taxi"}, "example must be one of"),
        ({"scenario": "chaos"}, "scenario must be one of"),
        ({"example": "intent", "scenario": "mae"}, "does not apply to 'intent'"),
        ({"rate": 0.0}, "rate must be"),
        ({"rate": math.nan}, "rate must be"),
        ({"hours": -1.0}, "hours must be"),
        ({"hours": math.inf}, "hours must be"),
        ({"start": math.nan}, "start must be"),
        ({"truth_share": 1.5}, "truth_share"),
        ({"seed": -1}, "seed must be"),
        ({"latency_threshold": 0.0}, "latency_threshold must be"),
        ({"inject_after": 3600.0}, "inject_after must be"),
        ({"inject_after": -1.0}, "inject_after must be"),
        ({"inject_after": 600.0, "recover_after": 600.0}, "recover_after must be"),
        ({"inject_after": 600.0, "recover_after": 3601.0}, "recover_after must be"),
        ({"rate": 1e6, "hours": 100.0}, "at most"),
    ],
)
def test_bad_arguments_are_value_errors(arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"example": "fare", "scenario": "errors", "rate": 1.0, "hours": 1.0}
    call.update({"start": MIDNIGHT, **arguments})
    with pytest.raises(ValueError, match=message):
        simulate(call.pop("example"), call.pop("scenario"), **call)


def test_fault_psi_refuses_what_simulate_refuses() -> None:
    with pytest.raises(ValueError, match="does not apply"):
        fault_psi("intent", "mae")
    with pytest.raises(ValueError, match="rows"):
        fault_psi("fare", "drift", rows=0)
    with pytest.raises(ValueError, match="example"):
        input_psi("taxi", pd.DataFrame())  # type: ignore[arg-type]
