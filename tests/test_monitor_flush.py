"""A scrape only reads: the monitor's held-back counts reach the counters on its own clock
(``flush()``, the library's timer, the service's task), never inside ``collect()``."""

from __future__ import annotations

import gc
import time

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import ModelMonitor, ReferenceProfile
from exporter._flusher import _Timer
from exporter.metrics import flush_registry
from exporter.profile import NumericFeature
from tests.test_monitor import Clock


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(11)
    n = 5_000
    frame = pd.DataFrame({"x": rng.normal(0, 1, n), "y": rng.uniform(0, 10, n),
                          "color": rng.choice(["red", "green", "blue"], n)})  # fmt: skip
    return ReferenceProfile.from_frame(frame, ["x", "y"], ["color"])


BASE = {"model": "m", "version": "unversioned"}


def bins(registry: CollectorRegistry, feature: str = "x") -> float:
    """``model_feature_bin_total`` of one feature summed over its bins, as a scrape reads it."""
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "model_feature_bin_total" and s.labels["feature"] == feature
    )


def test_a_scrape_writes_nothing_and_flush_brings_the_counts(profile: ReferenceProfile) -> None:
    registry, clock = CollectorRegistry(), Clock()
    monitor = ModelMonitor("m", reference=profile, registry=registry, clock=clock,
                           flush_interval=None)  # fmt: skip
    for x in (0.1, 0.2, 0.3):
        monitor.observe({"x": x, "y": 1.0, "color": "red"}, "dog")
    # The first observe flushed (nothing yet); the other two wait in the live tick.
    predicted = {**BASE, "predicted": "dog", "confidence_bucket": "none"}
    assert registry.get_sample_value("model_predictions_total", predicted) == 3
    held_back = bins(registry)
    assert held_back < 3
    generate_latest(registry)
    monitor.drift(max_age=0)
    assert bins(registry) == held_back, "a scrape (and a drift snapshot) wrote the counters"
    monitor.flush()
    assert bins(registry) == 3


def test_a_scrape_does_not_call_flush(
    profile: ReferenceProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", reference=profile, registry=registry, flush_interval=None)
    monitor.observe({"x": 0.1, "y": 1.0, "color": "red"}, "dog")

    def refuse() -> None:
        raise AssertionError("collect() flushed")

    monkeypatch.setattr(monitor, "flush", refuse)
    assert b"model_feature_window_samples" in generate_latest(registry)


def test_counts_of_a_tick_sealed_by_a_snapshot_still_reach_the_counters(
    profile: ReferenceProfile,
) -> None:
    """A drift snapshot seals an ended tick without flushing: the sealed counts stay owed to
    the counters and the next flush adds them, once."""
    registry, clock = CollectorRegistry(), Clock()
    monitor = ModelMonitor("m", reference=profile, registry=registry, clock=clock,
                           windows=["5m"], flush_interval=None)  # fmt: skip
    ref = profile.features["x"]
    assert isinstance(ref, NumericFeature)
    for i in range(50):
        monitor.observe({"x": float(i % 7) - 3, "y": 1.0, "color": "red"}, "dog")
    clock.now += 60  # past the end of the 25 s tick
    monitor.drift(max_age=0)  # seals the tick: its 49 held-back counts leave the live tick
    for i in range(30):
        monitor.observe({"x": float(i % 5), "y": 1.0, "color": "red"}, "dog")
    monitor.flush()
    assert bins(registry) == 80
    clock.now += 60
    monitor.drift(max_age=0)
    monitor.flush()
    assert bins(registry) == 80, "a sealed tick was counted twice"
    snapshot = monitor.drift(max_age=0)
    assert snapshot.features["x"]["5m"].samples == 80


def test_the_library_timer_flushes_without_traffic_or_scrapes(profile: ReferenceProfile) -> None:
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", reference=profile, registry=registry, flush_interval=0.05)
    for x in (0.1, 0.2, 0.3):
        monitor.observe({"x": x, "y": 1.0, "color": "red"}, "dog")
    deadline = time.monotonic() + 5
    while bins(registry) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bins(registry) == 3


def test_the_timer_holds_monitors_weakly_and_stops_when_none_is_left(
    profile: ReferenceProfile,
) -> None:
    """On a timer of its own (the process-wide one also serves other tests' monitors)."""
    timer = _Timer()
    monitor = ModelMonitor("m", reference=profile, registry=CollectorRegistry(),
                           flush_interval=None)  # fmt: skip
    timer.add(monitor, 0.01)
    thread = timer._thread
    assert thread is not None and thread.is_alive()
    del monitor
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the timer kept running for a monitor that is gone"
    assert timer._thread is None and not timer._due


@pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan")])
def test_a_flush_interval_must_be_positive_or_none(
    profile: ReferenceProfile, interval: float
) -> None:
    with pytest.raises(ValueError, match="flush_interval"):
        ModelMonitor("m", reference=profile, registry=CollectorRegistry(),
                     flush_interval=interval)  # fmt: skip


def test_flush_registry_flushes_every_monitor_of_a_registry(profile: ReferenceProfile) -> None:
    registry = CollectorRegistry()
    one = ModelMonitor("m", reference=profile, registry=registry, flush_interval=None)
    two = ModelMonitor("n", reference=profile, registry=registry, flush_interval=None)
    for monitor in (one, two):
        for x in (0.1, 0.2):
            monitor.observe({"x": x, "y": 1.0, "color": "red"}, "dog")
    flush_registry(registry)
    assert bins(registry) == 4
    flush_registry(CollectorRegistry())  # a registry without monitors: nothing to do
