"""Time-sliced windows and reservoirs, with a clock the tests move by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest

from exporter.windows import (
    Reservoir,
    Stream,
    TickClock,
    WindowSpec,
    merge_samples,
    parse_duration,
    tick_seconds,
)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1w", 604800)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m5", "1.5h", "0m", "-1h", "5 minutes"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_window_spec_needs_whole_second_slices() -> None:
    assert WindowSpec.parse("1h").slice_seconds == 300
    with pytest.raises(ValueError, match="whole-second"):
        WindowSpec.parse("7s", slices=12)


def test_tick_fits_every_window() -> None:
    specs = [WindowSpec.parse(w) for w in ("5m", "1h", "1d")]
    tick = tick_seconds(specs)
    assert tick == 25
    assert all(s.slice_seconds % tick == 0 for s in specs)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _feed(stream: Stream, ticks: TickClock, values: list[float]) -> None:
    for value in values:
        ended = ticks.advance()
        if ended is not None:
            stream.seal(ended[1])
        stream.live[0] += 1
        stream.live[1] += value
        stream.reservoir.add(value)


def test_values_leave_a_window_when_their_slice_expires() -> None:
    clock = Clock()
    specs = [WindowSpec.parse("5m"), WindowSpec.parse("1h")]
    ticks = TickClock(specs, clock)
    stream = Stream(specs, width=2, sample_size=100)
    _feed(stream, ticks, [1.0] * 50)
    clock.now += 60
    _feed(stream, ticks, [3.0] * 30)
    view = stream.view("5m", clock.now)
    assert view.totals.tolist() == [80.0, 140.0]
    assert sorted(view.sample.tolist()) == [1.0] * 50 + [3.0] * 30
    clock.now += 5 * 60  # the first 50 values are now older than 5 minutes
    ended = ticks.advance()
    assert ended is not None
    stream.seal(ended[1])
    assert stream.view("5m", clock.now).totals.tolist() == [0.0, 0.0]
    assert stream.view("1h", clock.now).totals.tolist() == [80.0, 140.0]
    clock.now += 3600
    assert stream.view("1h", clock.now).totals.tolist() == [0.0, 0.0]


def test_memory_does_not_grow_with_traffic() -> None:
    clock = Clock()
    specs = [WindowSpec.parse("5m")]
    ticks = TickClock(specs, clock)
    stream = Stream(specs, width=2, sample_size=64)
    rng = np.random.default_rng(0)
    for _ in range(40):
        _feed(stream, ticks, rng.normal(size=500).tolist())
        clock.now += 10
    view = stream.view("5m", clock.now)
    assert len(view.sample) <= 64
    assert len(stream.reservoir.values) <= 64


def test_reservoir_is_uniform_over_the_stream() -> None:
    # Each quarter of a 100k stream should hold about a quarter of the 2,000 kept values.
    reservoir = Reservoir(2_000, random.Random(1))
    for value in range(100_000):
        reservoir.add(float(value))
    kept = np.array(reservoir.values)
    assert reservoir.seen == 100_000 and kept.size == 2_000
    quarters = np.histogram(kept, bins=4, range=(0, 100_000))[0]
    np.testing.assert_allclose(quarters, 500, atol=80)  # ~3.5 standard deviations


def test_reservoir_add_many_matches_add_in_distribution() -> None:
    reservoir = Reservoir(1_000, random.Random(2))
    reservoir.add_many(np.arange(50_000, dtype=np.float64))
    reservoir.add_many(np.arange(50_000, 100_000, dtype=np.float64))
    kept = np.array(reservoir.values)
    assert reservoir.seen == 100_000 and kept.size == 1_000
    assert len(set(kept.tolist())) == 1_000
    np.testing.assert_allclose(np.histogram(kept, bins=4)[0], 250, atol=60)
    empty = Reservoir(0, random.Random(0))
    empty.add_many(np.ones(10))
    assert empty.seen == 10 and empty.values == []


def test_merge_samples_weights_by_stream_size() -> None:
    rng = np.random.default_rng(0)
    busy = (np.zeros(100), 9_000)  # a sample of 100 standing for 9,000 zeros
    quiet = (np.ones(100), 1_000)
    merged = merge_samples([busy, quiet], 100, rng)
    assert merged.size == 100
    assert merged.sum() == 10  # 10% ones, as in the streams
    everything = merge_samples([(np.ones(3), 3), (np.zeros(2), 2)], 100, rng)
    assert sorted(everything.tolist()) == [0, 0, 1, 1, 1]
