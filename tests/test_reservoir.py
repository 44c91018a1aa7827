"""The KS reservoir (Algorithm L): the same sample whichever way the values arrive, and uniform."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats as sps

from exporter.windows import Reservoir

Feed = Callable[[Reservoir, np.ndarray], None]


def _all_at_once(reservoir: Reservoir, values: np.ndarray) -> None:
    reservoir.add_many(values)


def _one_by_one(reservoir: Reservoir, values: np.ndarray) -> None:
    for value in values.tolist():
        reservoir.add(value)


def _arrays_of_one(reservoir: Reservoir, values: np.ndarray) -> None:
    for i in range(len(values)):
        reservoir.add_many(values[i : i + 1])


def _random_chunks(seed: int) -> Feed:
    def feed(reservoir: Reservoir, values: np.ndarray) -> None:
        rng = random.Random(seed)
        position = 0
        while position < len(values):
            # Empty chunks, single values through add, short and long arrays.
            size = rng.choice([0, 1, 2, 7, 64, 999, 1000, 1001, 5000])
            chunk = values[position : position + size]
            if size == 1 and rng.random() < 0.5:
                reservoir.add(float(chunk[0]))
            else:
                reservoir.add_many(chunk)
            position += size

    return feed


FEEDS: dict[str, Feed] = {
    "all at once": _all_at_once,
    "one by one": _one_by_one,
    "arrays of one": _arrays_of_one,
    "random chunks 1": _random_chunks(1),
    "random chunks 2": _random_chunks(2),
}


def _sample(capacity: int, seed: int, feed: Feed, values: np.ndarray) -> tuple[list[float], int]:
    reservoir = Reservoir(capacity, random.Random(seed))
    feed(reservoir, values)
    return list(reservoir.values), reservoir.seen


@pytest.mark.parametrize("capacity", [0, 1, 5, 1_000])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_add_and_add_many_keep_the_same_sample_however_the_values_are_split(
    capacity: int, seed: int
) -> None:
    # 12,000 distinct values: with k = 1,000, about 2,500 replacements over several blocks.
    values = np.random.default_rng(seed).permutation(12_000).astype(np.float64)
    samples = {name: _sample(capacity, seed, feed, values) for name, feed in FEEDS.items()}
    expected = samples["one by one"]
    assert expected[1] == 12_000
    assert len(expected[0]) == capacity
    assert len(set(expected[0])) == capacity
    for name, got in samples.items():
        assert got == expected, name


def test_the_same_sample_across_clears_and_long_streams() -> None:
    # A reservoir cleared at each tick (as Stream.seal does) and streams long enough for the
    # largest blocks of the schedule (k = 1,000 over 2,000,000 values: about 7,600 replacements).
    rng = np.random.default_rng(3)
    ticks = [rng.normal(size=n) for n in (0, 3, 999, 1_000, 1_001, 40_000, 2_000_000, 17)]
    by_one = Reservoir(1_000, random.Random(5))
    by_array = Reservoir(1_000, random.Random(5))
    for tick in ticks:
        if tick.size < 50_000:
            _one_by_one(by_one, tick)
        else:  # a long tick through add too would take seconds; split it very unevenly instead
            _random_chunks(9)(by_one, tick[:60_000])
            by_one.add_many(tick[60_000:])
        by_array.add_many(tick)
        assert by_one.seen == by_array.seen == tick.size
        assert by_one.values == by_array.values
        assert len(by_array.values) == min(tick.size, 1_000)
        assert set(by_array.values) <= set(tick.tolist())
        by_one.clear()
        by_array.clear()
        assert by_array.values == [] and by_array.seen == 0


def test_a_zero_capacity_reservoir_counts_and_keeps_nothing() -> None:
    reservoir = Reservoir(0, random.Random(0))
    reservoir.add(1.0)
    reservoir.add_many(np.ones(10))
    reservoir.add_many(np.empty(0))
    assert reservoir.seen == 11 and reservoir.values == []
    reservoir.clear()
    assert reservoir.seen == 0


def test_until_full_the_reservoir_keeps_every_value_in_order() -> None:
    reservoir = Reservoir(10, random.Random(0))
    reservoir.add_many(np.arange(4, dtype=np.float64))
    reservoir.add(4.0)
    reservoir.add_many(np.arange(5, 10, dtype=np.float64))
    assert reservoir.values == [float(i) for i in range(10)] and reservoir.seen == 10
    assert all(type(v) is float for v in reservoir.values)


def test_every_position_is_kept_with_probability_k_over_n() -> None:
    # 6,000 runs of k = 5 over 60 values (one reservoir, cleared between runs, values in uneven
    # chunks): each position is kept in about 6,000 * 5/60 = 500 runs, binomial sd 21.4.
    capacity, n, runs = 5, 60, 6_000
    reservoir = Reservoir(capacity, random.Random(11))
    counts = np.zeros(n, dtype=np.int64)
    positions = np.arange(n, dtype=np.float64)
    cuts = random.Random(12)
    for _ in range(runs):
        a, b = sorted(cuts.sample(range(n + 1), 2))
        reservoir.add_many(positions[:a])
        reservoir.add_many(positions[a:b])
        reservoir.add_many(positions[b:])
        kept = np.asarray(reservoir.values, dtype=np.int64)
        assert kept.size == capacity and np.unique(kept).size == capacity
        counts[kept] += 1
        reservoir.clear()
    p = capacity / n
    sd = np.sqrt(runs * p * (1 - p))
    assert np.all(np.abs(counts - runs * p) < 4.5 * sd), counts
    # Positions just before, at and after the sample fills, and the last ones, are where an
    # off-by-one would show; together all positions pass a chi-square test.
    assert sps.chisquare(counts).pvalue > 1e-3


def test_the_kept_positions_of_a_long_stream_are_uniform() -> None:
    # k = 100 over 100,000 values (about 690 replacements, several blocks), 200 runs: the 20,000
    # kept positions pass a KS test against the uniform distribution on the stream.
    n = 100_000
    reservoir = Reservoir(100, random.Random(13))
    kept = []
    for _ in range(200):
        reservoir.add_many(np.arange(n, dtype=np.float64))
        kept.extend(reservoir.values)
        reservoir.clear()
    assert sps.kstest(np.asarray(kept) / n, "uniform").pvalue > 1e-3
    quarters = np.histogram(kept, bins=4, range=(0, n))[0]
    np.testing.assert_allclose(quarters, 5_000, atol=300)  # sd 61


def test_a_pickled_reservoir_goes_on_with_the_same_schedule() -> None:
    values = np.random.default_rng(4).normal(size=30_000)
    original = Reservoir(100, random.Random(8))
    original.add_many(values[:10_000])
    copy = pickle.loads(pickle.dumps(original))
    original.add_many(values[10_000:])
    _one_by_one(copy, values[10_000:])
    assert copy.seen == original.seen == 30_000
    assert copy.values == original.values
