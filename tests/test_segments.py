"""Segments: a reference per value of a context feature (the hour), and drift measured against
the reference of the segments the traffic came from."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter import ModelMonitor, ReferenceProfile, stats
from exporter.metrics import flush_registry
from exporter.profile import OUTPUT, CategoricalFeature, NumericFeature, ProfileError
from tests.service_fixtures import live_server, write_setup

HOURS = 24
ROWS_PER_HOUR = 1_000
#: Hour 4 is quiet in the reference: fewer rows than the default min_segment_rows (500).
RARE_HOUR, RARE_ROWS = 4, 300
NIGHT = (1, 2, 3)
BASE = {"model": "m", "version": "unversioned"}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def day(seed: int, hours: list[int]) -> pd.DataFrame:
    """Trips at the given hours: night trips are fast and start from the suburbs."""
    rng = np.random.default_rng(seed)
    hour = np.asarray(hours, dtype=np.int64)
    night = (hour >= 22) | (hour <= 5)
    rush = ((hour >= 7) & (hour <= 9)) | ((hour >= 16) & (hour <= 19))
    speed = np.where(night, 21.0, np.where(rush, 10.0, 14.0)) + rng.normal(0, 2, hour.size)
    zone = np.where(rng.random(hour.size) < np.where(night, 0.8, 0.2), "suburb", "center")
    return pd.DataFrame(
        {
            "hour": hour,
            "speed": speed,
            "zone": zone,
            "fare": 3 + 0.5 * speed + rng.normal(0, 0.5, hour.size),
        }
    )


def reference_hours() -> list[int]:
    return [h for h in range(HOURS) for _ in range(RARE_ROWS if h == RARE_HOUR else ROWS_PER_HOUR)]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return day(0, reference_hours())


@pytest.fixture(scope="module")
def segmented(frame: pd.DataFrame) -> ReferenceProfile:
    return ReferenceProfile.from_frame(
        frame, ["speed", "hour"], ["zone"], prediction="fare", target_kind="numeric",
        segment_by="hour",
    )  # fmt: skip


@pytest.fixture(scope="module")
def flat(frame: pd.DataFrame) -> ReferenceProfile:
    return ReferenceProfile.from_frame(
        frame, ["speed", "hour"], ["zone"], prediction="fare", target_kind="numeric"
    )


def monitor_for(
    profile: ReferenceProfile, registry: CollectorRegistry, clock: Clock, **kwargs: object
) -> ModelMonitor:
    """A regression monitor, segmented by hour unless ``segment_by`` says otherwise."""
    kwargs.setdefault("segment_by", "hour")
    return ModelMonitor("m", task="regression", reference=profile, registry=registry, clock=clock,
                        min_samples=10, **kwargs)  # type: ignore[arg-type]  # fmt: skip


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    flush_registry(registry)  # a read sees what the monitors' flush has written
    found = registry.get_sample_value(name, {**BASE, **labels})
    return 0.0 if found is None else found


def feed(monitor: ModelMonitor, trips: pd.DataFrame) -> None:
    for row in trips.to_dict("records"):
        monitor.observe({k: row[k] for k in ("hour", "speed", "zone")}, float(row["fare"]))


def shares_of(profile: ReferenceProfile, key: int | str, feature: str) -> np.ndarray:
    """The reference shares of ``feature`` in the segment ``key``."""
    assert profile.segments is not None
    segment = profile.segments.values[str(key)]
    found = segment.output if feature == OUTPUT else segment.features[feature]
    assert found is not None
    return np.asarray(found.reference_share)


def bin_labels(profile: ReferenceProfile, feature: str) -> list[str]:
    ref = profile.output if feature == OUTPUT else profile.features[feature]
    assert ref is not None
    return ref.bin_labels


def expected_bins(
    registry: CollectorRegistry, profile: ReferenceProfile, feature: str
) -> np.ndarray:
    return np.asarray([
        value(registry, "model_feature_expected_bin_total", feature=feature, bin=b)
        for b in bin_labels(profile, feature)
    ])  # fmt: skip


# -- the profile -----------------------------------------------------------------------------


def test_segment_shares_are_those_of_the_segment_rows_alone() -> None:
    # Hour 0: x = 1, 1, 1, 2, 2, 3; hour 1: 3, 3, 3, 3, 1; hour 2: one row (too rare).
    frame = pd.DataFrame({
        "hour": [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2],
        "x": [1.0, 1, 1, 2, 2, 3, 3, 3, 3, 3, 1, 9],
        "color": ["red", "red", "blue", "blue", "blue", "green", "red", "red", "red", "red",
                  "red", "blue"],
    })  # fmt: skip
    profile = ReferenceProfile.from_frame(
        frame, ["x", "hour"], ["color"], bins=2, top_k=2, segment_by="hour", min_segment_rows=2
    )
    x = profile.features["x"]
    color = profile.features["color"]
    assert isinstance(x, NumericFeature) and isinstance(color, CategoricalFeature)
    assert x.edges == [2.0]  # the median of all rows: bin 0 is x < 2, bin 1 is x >= 2
    assert color.bin_labels == ["red", "blue", "__other__"]
    segments = profile.segments
    assert segments is not None and segments.feature == "hour" and segments.min_rows == 2
    assert list(segments.values) == ["0", "1"]  # hour 2 has one row, under min_segment_rows
    zero, one = segments.values["0"], segments.values["1"]
    assert zero.count == 6 and one.count == 5
    assert zero.features["x"].reference_share == pytest.approx([3 / 6, 3 / 6])
    assert zero.features["x"].mean == pytest.approx(10 / 6)
    assert one.features["x"].reference_share == pytest.approx([1 / 5, 4 / 5])
    assert one.features["x"].mean == pytest.approx(13 / 5)
    assert zero.features["color"].reference_share == pytest.approx([2 / 6, 3 / 6, 1 / 6])
    assert one.features["color"].reference_share == pytest.approx([1.0, 0.0, 0.0])
    assert zero.features["color"].mean is None
    # The segment feature is context: it has no shares of its own in a segment.
    assert "hour" not in zero.features and zero.output is None


def test_rare_segments_and_sparse_features_are_left_out(
    segmented: ReferenceProfile, frame: pd.DataFrame
) -> None:
    assert segmented.segments is not None
    values = segmented.segments.values
    assert list(values) == [str(h) for h in range(HOURS) if h != RARE_HOUR]
    assert values["3"].count == ROWS_PER_HOUR
    night = frame[frame["hour"] == 3]
    speed = segmented.features["speed"]
    assert isinstance(speed, NumericFeature)
    expected = stats.shares(stats.bin_counts(night["speed"], speed.edges))
    assert values["3"].features["speed"].reference_share == pytest.approx(expected.tolist())
    assert values["3"].output is not None
    # A feature with fewer valid values than min_segment_rows in a segment is left out of it.
    sparse = frame.assign(speed=np.where(frame["hour"] == 3, np.nan, frame["speed"]))
    profile = ReferenceProfile.from_frame(sparse, ["speed", "hour"], ["zone"], segment_by="hour")
    assert profile.segments is not None
    assert "speed" not in profile.segments.values["3"].features
    assert "zone" in profile.segments.values["3"].features


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"segment_by": "weekday"}, "segment_by 'weekday' must be one of the profiled features"),
        ({"segment_by": "speed"}, "must hold whole numbers"),
        ({"segment_by": "hour", "min_segment_rows": 0}, "min_segment_rows must be at least 1"),
    ],
)
def test_segment_errors(frame: pd.DataFrame, kwargs: dict, expected: str) -> None:
    with pytest.raises(ProfileError, match=expected):
        ReferenceProfile.from_frame(frame, ["speed", "hour"], ["zone"], **kwargs)


def test_profiles_round_trip_with_segments_and_without_them_unchanged(
    tmp_path: Path, segmented: ReferenceProfile, flat: ReferenceProfile
) -> None:
    path = tmp_path / "segmented.json"
    segmented.save(path)
    assert ReferenceProfile.load(path) == segmented
    assert ReferenceProfile.load(path).fingerprint() == segmented.fingerprint()
    assert json.loads(path.read_text())["segments"]["feature"] == "hour"
    assert segmented.fingerprint() != flat.fingerprint()
    # Without segments the file has no "segments" key: the layout (and fingerprint) of before.
    plain = tmp_path / "flat.json"
    flat.save(plain)
    written = plain.read_bytes()
    assert "segments" not in json.loads(written)
    ReferenceProfile.load(plain).save(plain)
    assert plain.read_bytes() == written
    assert ReferenceProfile.load(plain).fingerprint() == flat.fingerprint()
    assert flat.model_copy(update={"segments": None}).fingerprint() == flat.fingerprint()


def test_malformed_segments_are_named(tmp_path: Path, segmented: ReferenceProfile) -> None:
    document = json.loads(segmented.model_dump_json())
    document["segments"]["values"]["3"]["features"]["speed"]["reference_share"] = [1.0]
    with pytest.raises(ProfileError, match=r"segments: .*values\.3\.features\.speed: "
                                           r"reference_share has 1 entries"):  # fmt: skip
        ReferenceProfile.from_document(document)
    document = json.loads(segmented.model_dump_json())
    document["segments"]["feature"] = "weekday"
    with pytest.raises(ProfileError, match="'weekday' is not a profiled feature"):
        ReferenceProfile.from_document(document)


# -- the monitor -----------------------------------------------------------------------------


def test_values_of_one_segment_expect_that_segments_shares_exactly(
    segmented: ReferenceProfile,
) -> None:
    registry, clock = CollectorRegistry(), Clock()
    monitor = monitor_for(segmented, registry, clock)
    night = day(1, [3] * 700)
    feed(monitor, night)
    monitor.flush()
    n = len(night)
    for feature in ("speed", "zone", OUTPUT):
        assert expected_bins(registry, segmented, feature) == pytest.approx(
            n * shares_of(segmented, 3, feature), rel=1e-12
        ), feature
        # The live counts are the usual ones.
        counted = sum(value(registry, "model_feature_bin_total", feature=feature, bin=b)
                      for b in bin_labels(segmented, feature))  # fmt: skip
        assert counted == n
    assert segmented.segments is not None
    mean = segmented.segments.values["3"].features["speed"].mean
    assert mean is not None and mean > 0
    assert value(registry, "model_feature_expected_value_sum_total", feature="speed",
                 sign="positive") == pytest.approx(n * mean, rel=1e-12)  # fmt: skip
    assert value(registry, "model_feature_expected_value_sum_total", feature="speed",
                 sign="negative") == 0  # fmt: skip
    # Categorical features have no value sums.
    assert (
        registry.get_sample_value(
            "model_feature_expected_value_sum_total",
            {**BASE, "feature": "zone", "sign": "positive"},
        )
        is None
    )


def test_a_mix_of_segments_expects_the_count_weighted_mixture(
    segmented: ReferenceProfile,
) -> None:
    registry, clock = CollectorRegistry(), Clock()
    monitor = monitor_for(segmented, registry, clock)
    counts = {3: 150, 8: 400, 17: 250}
    trips = day(2, [h for h, n in counts.items() for _ in range(n)])
    feed(monitor, trips.sample(frac=1.0, random_state=0))
    monitor.flush()
    for feature in ("speed", "zone", OUTPUT):
        mixture = sum(n * shares_of(segmented, h, feature) for h, n in counts.items())
        assert expected_bins(registry, segmented, feature) == pytest.approx(mixture, rel=1e-9)


def test_missing_unknown_and_invalid_segment_values_use_the_overall_shares(
    segmented: ReferenceProfile,
) -> None:
    registry, clock = CollectorRegistry(), Clock()
    monitor = monitor_for(segmented, registry, clock, domains={"hour": (0, 23)})
    rows = [
        {"speed": 12.0, "zone": "center"},  # missing
        {"hour": None, "speed": 12.0, "zone": "center"},  # missing
        {"hour": "3", "speed": 12.0, "zone": "center"},  # wrong type
        {"hour": float("nan"), "speed": 12.0, "zone": "center"},  # NaN
        {"hour": 30, "speed": 12.0, "zone": "center"},  # out of the domain
        {"hour": 3.5, "speed": 12.0, "zone": "center"},  # valid, no segment
        {"hour": RARE_HOUR, "speed": 12.0, "zone": "center"},  # too rare in the reference
    ]
    for row in rows:
        monitor.observe(cast(dict[str, object], row), 9.0)
    monitor.flush()
    speed = segmented.features["speed"]
    assert isinstance(speed, NumericFeature)
    assert expected_bins(registry, segmented, "speed") == pytest.approx(
        len(rows) * np.asarray(speed.reference_share), rel=1e-12
    )
    assert value(registry, "model_feature_expected_value_sum_total", feature="speed",
                 sign="positive") == pytest.approx(len(rows) * speed.mean)  # fmt: skip
    for reason, count in (("missing", 2), ("wrong_type", 1), ("nan", 1), ("out_of_domain", 1)):
        assert value(registry, "model_input_invalid_total", feature="hour",
                     reason=reason) == count, reason  # fmt: skip


def test_the_segment_feature_is_context_not_a_drift_input(
    segmented: ReferenceProfile,
) -> None:
    registry, clock = CollectorRegistry(), Clock()
    monitor = monitor_for(segmented, registry, clock)
    feed(monitor, day(3, [3] * 50))
    monitor.observe({"hour": [3], "speed": 20.0, "zone": "suburb"}, 9.0)
    monitor.count_invalid("hour", "wrong_type")  # as the service counts a refused request
    monitor.flush()
    assert value(registry, "model_input_invalid_total", feature="hour", reason="wrong_type") == 2
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.labels.get("feature") == "hour":
                assert metric.name == "model_input_invalid", sample
    assert "hour" not in monitor.drift(max_age=0).features
    # A feature of a segmented monitor has no KS: there is no reference sample per segment.
    drift = monitor.drift(max_age=0)["speed"]["5m"]
    assert drift.ready and drift.psi is not None and drift.zscore is not None
    assert drift.ks_statistic is None and drift.ks_pvalue is None
    labels = {**BASE, "feature": "speed", "window": "5m"}
    assert registry.get_sample_value("model_feature_psi", labels) is not None
    assert registry.get_sample_value("model_feature_ks_statistic", labels) is None


def test_night_traffic_does_not_drift_against_its_own_hours(
    segmented: ReferenceProfile, flat: ReferenceProfile
) -> None:
    """Night trips against the night's reference: stable. Against all hours mixed: drift."""
    night = day(4, [h for h in NIGHT for _ in range(1_000)])
    results = {}
    for name, profile, segment_by in (("segmented", segmented, "hour"), ("flat", flat, None)):
        registry, clock = CollectorRegistry(), Clock()
        monitor = monitor_for(profile, registry, clock, segment_by=segment_by)
        feed(monitor, night)
        results[name] = monitor.drift(max_age=0)
    for feature in ("speed", "zone", OUTPUT):
        stable = results["segmented"][feature]["1h"]
        drifted = results["flat"][feature]["1h"]
        assert stable.psi is not None and drifted.psi is not None
        assert stable.psi < 0.05, feature
        assert drifted.psi > 0.5, feature
    assert results["segmented"]["speed"]["1h"].zscore == pytest.approx(0, abs=0.1)
    assert (results["flat"]["speed"]["1h"].zscore or 0) > 1.0
    # Unsegmented, the hour itself is a drift input, and it drifts enormously.
    assert (results["flat"]["hour"]["1h"].psi or 0) > 2


def test_observe_and_observe_batch_give_the_same_counters(segmented: ReferenceProfile) -> None:
    rng = np.random.default_rng(9)
    trips = day(5, rng.integers(0, HOURS, 600).tolist())
    frame = trips[["hour", "speed", "zone"]].astype(object)
    frame.loc[3, "hour"] = None
    frame.loc[4, "hour"] = "seven"
    frame.loc[5, "hour"] = 99  # out of the domain
    frame.loc[6, "hour"] = 2.5  # no segment
    frame.loc[7, "speed"] = None
    frame.loc[8, "zone"] = "harbour"  # unknown category
    frame.loc[9, "speed"] = 1e6  # out of speed's domain
    predictions: list[float | None] = trips["fare"].tolist()
    predictions[10] = None
    single, batch = CollectorRegistry(), CollectorRegistry()
    clock = Clock()
    domains = {"hour": (0.0, 23.0), "speed": (0.0, 100.0)}
    one = monitor_for(segmented, single, clock, domains=domains)
    many = monitor_for(segmented, batch, clock, domains=domains)
    for row, prediction in zip(frame.to_dict("records"), predictions, strict=True):
        one.observe({str(k): v for k, v in row.items()}, prediction)
    many.observe_batch(frame, predictions)
    one.flush()
    many.flush()

    def samples(registry: CollectorRegistry) -> dict:
        flush_registry(registry)
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created") and metric.name != "model_info"
        }

    a, b = samples(single), samples(batch)
    assert a.keys() == b.keys()
    assert any(name == "model_feature_expected_bin_total" for name, _ in a)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
    assert value(single, "model_input_invalid_total", feature="hour", reason="out_of_domain") == 1


def test_a_classifier_segmented_by_a_category_counts_alike_one_by_one_and_in_batches(
    frame: pd.DataFrame,
) -> None:
    """A categorical segment feature (zone) and a class output, through both paths."""
    labelled = frame.assign(predicted=np.where(frame["speed"] > 15, "fast", "slow"))
    profile = ReferenceProfile.from_frame(
        labelled, ["speed", "hour"], ["zone"], prediction="predicted", segment_by="zone"
    )
    assert profile.segments is not None and sorted(profile.segments.values) == ["center", "suburb"]
    trips = day(10, np.random.default_rng(1).integers(0, HOURS, 400).tolist())
    rows = trips[["hour", "speed", "zone"]].astype(object)
    rows.loc[0, "zone"] = None
    rows.loc[1, "zone"] = "harbour"  # unknown category: counted, and compared with the overall
    rows.loc[2, "zone"] = ["center"]
    predictions: list[str | None] = np.where(trips["speed"] > 15, "fast", "slow").tolist()
    predictions[3] = None
    registries = CollectorRegistry(), CollectorRegistry()
    one, many = (ModelMonitor("m", reference=profile, registry=r, clock=Clock(), segment_by="zone")
                 for r in registries)  # fmt: skip
    for row, prediction in zip(rows.to_dict("records"), predictions, strict=True):
        one.observe({str(k): v for k, v in row.items()}, prediction)
    many.observe_batch(rows, predictions)
    one.flush()
    many.flush()
    a, b = (
        {(s.name, tuple(sorted(s.labels.items()))): s.value
         for metric in r.collect() for s in metric.samples
         if s.name.endswith("_total") and metric.name.startswith("model_")}
        for r in registries
    )  # fmt: skip
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
    for reason in ("missing", "unknown_category", "wrong_type"):
        assert value(registries[0], "model_input_invalid_total", feature="zone", reason=reason) == 1
    output = profile.output
    assert output is not None
    # Each counted prediction expects its zone's shares; rows without a valid zone, the overall.
    expected = [
        shares_of(profile, zone, OUTPUT)
        if isinstance(zone, str) and zone in ("suburb", "center")
        else np.asarray(output.reference_share)
        for zone, prediction in zip(rows["zone"].tolist(), predictions, strict=True)
        if prediction is not None
    ]
    mixture = np.sum(expected, axis=0)
    got = [value(registries[1], "model_feature_expected_bin_total", feature=OUTPUT, bin=b)
           for b in output.bin_labels]  # fmt: skip
    assert got == pytest.approx(mixture.tolist(), rel=1e-9)


def test_promql_expected_share_is_the_mixture_of_the_ranges_segments(
    segmented: ReferenceProfile,
) -> None:
    """increase(expected_bin[w]) / sum over bins, and the mean from the value sums, read from
    the counters at two moments as PromQL's increase() would: the mixture of exactly the
    segments of the values between them."""
    registry, clock = CollectorRegistry(), Clock()
    monitor = monitor_for(segmented, registry, clock)
    feed(monitor, day(6, [12] * 500))  # before the range
    monitor.flush()

    def read() -> tuple[np.ndarray, float, float]:
        bins = expected_bins(registry, segmented, "speed")
        positive = value(registry, "model_feature_expected_value_sum_total", feature="speed",
                         sign="positive")  # fmt: skip
        negative = value(registry, "model_feature_expected_value_sum_total", feature="speed",
                         sign="negative")  # fmt: skip
        return bins, positive, negative

    start = read()
    counts = {0: 300, 2: 100, 18: 600}
    clock.now += 60
    feed(monitor, day(7, [h for h, n in counts.items() for _ in range(n)]))
    clock.now += 60
    monitor.flush()
    end = read()
    increase = end[0] - start[0]
    share = increase / increase.sum()
    total = sum(counts.values())
    mixture = sum(n * shares_of(segmented, h, "speed") for h, n in counts.items()) / total
    assert share == pytest.approx(mixture, rel=1e-9)
    assert segmented.segments is not None
    means = {h: segmented.segments.values[str(h)].features["speed"].mean for h in counts}
    expected_mean = sum(n * (means[h] or 0.0) for h, n in counts.items()) / total
    counted = increase.sum()
    assert counted == pytest.approx(total)
    assert ((end[1] - start[1]) - (end[2] - start[2])) / counted == pytest.approx(expected_mean)


def test_segment_by_must_match_the_profile(
    segmented: ReferenceProfile, flat: ReferenceProfile
) -> None:
    with pytest.raises(ValueError, match="this one has no segments"):
        monitor_for(flat, CollectorRegistry(), Clock(), segment_by="hour")
    with pytest.raises(ValueError, match="this one has segments by 'hour'"):
        monitor_for(segmented, CollectorRegistry(), Clock(), segment_by="zone")
    # A segmented profile still serves a monitor that does not segment: as any profile.
    registry = CollectorRegistry()
    plain = monitor_for(segmented, registry, Clock(), segment_by=None)
    feed(plain, day(8, [3] * 20))
    plain.flush()
    assert "hour" in plain.drift(max_age=0).features
    assert not any(m.name == "model_feature_expected_bin" and m.samples
                   for m in registry.collect())  # fmt: skip


# -- the service, with two workers -----------------------------------------------------------

ZONES = ("north", "south", "east")


def _zone_setup(directory: Path) -> tuple[Path, ReferenceProfile]:
    """The toy regression service of tests/service_fixtures.py, segmented by zone (where trips
    are longer in the east)."""
    config = write_setup(directory, "regression", segment_by="zone")
    rng = np.random.default_rng(1)
    zone = rng.choice(ZONES, 6_000)
    miles = rng.gamma(2.0, np.where(zone == "east", 4.0, 2.0))
    frame = pd.DataFrame({"miles": miles, "zone": zone, "target": 3 + 2 * miles})
    profile = ReferenceProfile.from_frame(
        frame, ["miles"], ["zone"], prediction="target", target_kind="numeric", segment_by="zone"
    )
    profile.save(directory / "reference.json")
    assert yaml.safe_load(config.read_text())["monitoring"]["segment_by"] == "zone"
    return config, profile


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_two_workers_sum_the_expected_counters_exactly(tmp_path: Path) -> None:
    """The same requests served by 1 and by 2 workers: the expected counters are the mixture of
    the segments' shares weighted by the requests per zone, exactly, in both."""
    rng = np.random.default_rng(3)
    zones = rng.choice(ZONES, size=150, p=[0.2, 0.2, 0.6]).tolist()
    miles = rng.gamma(2.0, 3.0, size=150).tolist()
    results = {}
    profiles = {}
    for workers in (1, 2):
        directory = tmp_path / f"w{workers}"
        directory.mkdir()
        config, profiles[workers] = _zone_setup(directory)
        with live_server(config, directory / "data", workers=workers) as (url, _):
            with httpx.Client(base_url=url, timeout=10) as client:
                for zone, distance in zip(zones, miles, strict=True):
                    body = {"features": {"miles": distance, "zone": zone}}
                    assert client.post("/predict", json=body).status_code == 200
            time.sleep(2.5)  # every worker flushes and publishes its windows each second
            results[workers] = httpx.get(f"{url}/metrics", timeout=10).text
    profile = profiles[1]
    assert profile.fingerprint() == profiles[2].fingerprint()
    sent = {zone: zones.count(zone) for zone in ZONES}
    for feature in ("miles", OUTPUT):
        mixture = sum(sent[zone] * shares_of(profile, zone, feature) for zone in ZONES)
        for workers, text in results.items():
            got = [_sample(text, "model_feature_expected_bin_total", feature=feature, bin=b)
                   for b in bin_labels(profile, feature)]  # fmt: skip
            assert got == pytest.approx(mixture.tolist(), rel=1e-9), (feature, workers)
    for text in results.values():
        zone_series = {
            family.name
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.labels.get("feature") == "zone"
        }
        assert zone_series <= {"model_input_invalid"}
    psi = [_sample(t, "model_feature_psi", feature="miles", window="5m") for t in results.values()]
    assert not math.isnan(psi[0]) and psi[0] == pytest.approx(psi[1], rel=1e-9)
