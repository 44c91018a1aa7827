"""The statistics core against independent sources: scipy and hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from exporter import stats

finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


def test_psi_matches_hand_computation() -> None:
    reference = [0.25, 0.25, 0.25, 0.25]
    current = [10, 20, 30, 40]  # shares 0.1, 0.2, 0.3, 0.4
    expected = (
        (0.1 - 0.25) * math.log(0.1 / 0.25)
        + (0.2 - 0.25) * math.log(0.2 / 0.25)
        + (0.3 - 0.25) * math.log(0.3 / 0.25)
        + (0.4 - 0.25) * math.log(0.4 / 0.25)
    )
    # 0.137444 + 0.011157 + 0.009116 + 0.070500, term by term
    assert expected == pytest.approx(0.228217, abs=1e-6)
    result = stats.psi(reference, current)
    assert result.statistic == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(result.current_share, [0.1, 0.2, 0.3, 0.4])


def test_psi_clamps_empty_bins_at_epsilon() -> None:
    result = stats.psi([0.5, 0.5], [0, 10])
    eps = stats.PSI_EPSILON
    expected = (eps - 0.5) * math.log(eps / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert result.statistic == pytest.approx(expected)
    assert math.isfinite(result.statistic)


def test_psi_identical_distributions_is_zero_and_empty_is_nan() -> None:
    assert stats.psi([0.2, 0.3, 0.5], [20, 30, 50]).statistic == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(stats.psi([0.5, 0.5], [0, 0]).statistic)
    with pytest.raises(ValueError, match="bins"):
        stats.psi([0.5, 0.5], [1, 2, 3])


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("sizes", [(500, 300), (10_000, 1_000), (37, 4_001)])
def test_ks_matches_scipy(shift: float, sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(42)
    ref = np.sort(rng.normal(size=sizes[0]))
    cur = rng.normal(shift, 1, size=sizes[1])
    ours = stats.ks_2samp_sorted(ref, cur)
    theirs = sps.ks_2samp(ref, cur, method="asymp")
    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-12)
    # The p-value is Stephens' corrected Kolmogorov limit (documented), close to scipy's asymp.
    root = math.sqrt(sizes[0] * sizes[1] / sum(sizes))
    stephens = sps.kstwobign.sf((root + 0.12 + 0.11 / root) * ours.statistic)
    assert ours.pvalue == pytest.approx(stephens, rel=1e-12)
    assert ours.pvalue == pytest.approx(theirs.pvalue, abs=0.025)


def test_ks_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    ref = np.sort(rng.integers(0, 5, size=800).astype(float))
    cur = rng.integers(0, 7, size=300).astype(float)
    assert stats.ks_2samp_sorted(ref, cur).statistic == pytest.approx(
        sps.ks_2samp(ref, cur).statistic, abs=1e-12
    )


def test_ks_empty_is_nan() -> None:
    assert all(math.isnan(v) for v in stats.ks_2samp_sorted([1.0, 2.0], []))
    assert all(math.isnan(v) for v in stats.ks_2samp_sorted([], [1.0]))


def test_zscore_is_seed_000_formula() -> None:
    result = stats.mean_zscore(reference_mean=10.0, reference_std=2.0, current_sum=115.0,
                               current_count=10)  # fmt: skip
    assert result.statistic == pytest.approx(0.75)  # |11.5 - 10| / 2
    assert result.current_mean == pytest.approx(11.5)
    assert stats.mean_zscore(1.0, 0.0, 10.0, 10).statistic == 0.0
    assert stats.mean_zscore(1.0, 0.0, 11.0, 10).statistic == math.inf
    assert math.isnan(stats.mean_zscore(1.0, 1.0, 0.0, 0).statistic)


@given(
    hnp.arrays(np.float64, 5, elements=st.floats(0, 100)),
    hnp.arrays(np.float64, 5, elements=st.floats(0, 100)),
)
def test_js_distance_matches_scipy(p: np.ndarray, q: np.ndarray) -> None:
    if p.sum() <= 0 or q.sum() <= 0:
        assert math.isnan(stats.js_distance(p, q))
        return
    with warnings.catch_warnings():
        # scipy takes sqrt of a rounding error just below 0 for equal distributions (NaN); ours
        # clamps it to 0, the true distance.
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = jensenshannon(p, q, base=2)
    expected = 0.0 if math.isnan(expected) else expected
    assert stats.js_distance(p, q) == pytest.approx(expected, abs=1e-7)


def test_chi_square_matches_scipy() -> None:
    share = np.array([0.5, 0.3, 0.2])
    observed = np.array([40, 35, 25])
    ours = stats.chi_square(share, observed)
    theirs = sps.chisquare(observed, share * observed.sum())
    assert ours.statistic == pytest.approx(theirs.statistic)
    assert ours.pvalue == pytest.approx(theirs.pvalue)


def test_chi_square_drops_zero_reference_categories() -> None:
    ours = stats.chi_square([0.5, 0.5, 0.0], [30, 60, 10])
    theirs = sps.chisquare([30, 60], [45, 45])
    assert ours.statistic == pytest.approx(theirs.statistic)
    assert math.isnan(stats.chi_square([1.0], [5]).pvalue)  # one category: no test


def test_quantile_edges_are_reference_deciles_and_no_bin_is_empty() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=10_000)
    edges = stats.quantile_edges(values, 10)
    np.testing.assert_allclose(
        edges, np.quantile(values, np.arange(1, 10) / 10, method="inverted_cdf")
    )
    counts = stats.bin_counts(values, edges)
    assert counts.sum() == values.size
    assert counts.min() > 0
    np.testing.assert_allclose(counts / values.size, 0.1, atol=0.001)


def test_quantile_edges_collapse_ties() -> None:
    # Deciles 0.1 .. 0.7 all fall on 0 (the minimum, dropped), 0.8 and 0.9 on 1: one edge left.
    values = np.array([0.0] * 70 + [1.0] * 20 + [2.0] * 10)
    edges = stats.quantile_edges(values, 10)
    np.testing.assert_array_equal(edges, [1.0])
    np.testing.assert_array_equal(stats.bin_counts(values, edges), [70, 30])
    assert stats.quantile_edges(np.full(50, 3.5), 10).size == 0  # constant: one bin


def test_bin_convention_is_right_closed_at_edges() -> None:
    # bin i is [edges[i-1], edges[i]): a value equal to an edge goes to the bin above it.
    np.testing.assert_array_equal(stats.bin_counts([1.0, 2.0, 0.5, 9.0], [1.0, 2.0]), [1, 1, 2])


@settings(max_examples=200, deadline=None)
@given(
    values=hnp.arrays(np.float64, st.integers(0, 300), elements=st.integers(-5, 5).map(float)),
    edges=st.lists(st.integers(-6, 6), min_size=0, max_size=6, unique=True).map(sorted),
)
def test_sorted_bin_counts_equal_bin_counts_ties_included(
    values: np.ndarray, edges: list[int]
) -> None:
    # Whole numbers from a small range: many values sit exactly on an edge.
    cuts = [float(e) for e in edges]
    np.testing.assert_array_equal(
        stats.sorted_bin_counts(np.sort(values), cuts), stats.bin_counts(values, cuts)
    )


def test_moments_do_not_overflow() -> None:
    big = np.array([1e308, 1e308, -1e308, 1e308])
    result = stats.moments(big)
    assert result.mean == pytest.approx(0.5e308)
    assert math.isfinite(result.std)
    assert stats.moments([]).n == 0


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(0, 300), elements=finite_floats),
    st.integers(1, 20),
)
def test_edges_never_leave_an_empty_reference_bin(values: np.ndarray, bins: int) -> None:
    edges = stats.quantile_edges(values, bins)
    assert edges.size <= max(bins - 1, 0)
    assert np.all(np.diff(edges) > 0)
    if values.size:
        counts = stats.bin_counts(values, edges)
        assert counts.sum() == values.size
        assert counts.min() > 0  # holds for empty, constant, one-bin and huge inputs alike


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 200), elements=finite_floats),
    hnp.arrays(np.float64, st.integers(0, 200), elements=finite_floats),
)
def test_psi_is_finite_and_non_negative(reference: np.ndarray, current: np.ndarray) -> None:
    edges = stats.quantile_edges(reference, 10)
    share = stats.shares(stats.bin_counts(reference, edges))
    result = stats.psi(share, stats.bin_counts(current, edges))
    if current.size == 0:
        assert math.isnan(result.statistic)
    else:
        assert math.isfinite(result.statistic)
        assert result.statistic >= -1e-12


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 100), elements=finite_floats),
    hnp.arrays(np.float64, st.integers(1, 100), elements=finite_floats),
)
def test_ks_statistic_matches_scipy_on_any_data(ref: np.ndarray, cur: np.ndarray) -> None:
    ours = stats.ks_2samp_sorted(np.sort(ref), cur)
    with warnings.catch_warnings():
        # scipy's p-value machinery warns on tiny samples; D itself does not depend on it.
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = sps.ks_2samp(ref, cur, method="asymp").statistic
    assert ours.statistic == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= ours.pvalue <= 1.0


def test_all_missing_input_is_empty_after_filtering() -> None:
    values = np.array([np.nan, np.nan])
    finite = values[np.isfinite(values)]
    assert stats.quantile_edges(finite, 10).size == 0
    assert math.isnan(stats.psi([1.0], stats.bin_counts(finite, [])).statistic)
    with pytest.raises(ValueError, match="finite"):
        stats.quantile_edges(values, 10)
