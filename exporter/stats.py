"""Pure statistics kernels: binning and drift tests.

Everything here takes numpy arrays (or sequences) and returns numbers. Nothing here touches
prometheus_client, HTTP or files, so every function can be checked against scipy or by hand.

Binning convention (used by the profile, the windows, the PromQL rules and these kernels alike):
``edges`` are the interior cut points, strictly increasing. A value ``x`` falls in bin
``searchsorted(edges, x, side="right")``, so bin ``0`` is ``(-inf, edges[0])``, bin ``i`` is
``[edges[i-1], edges[i])`` and the last bin is ``[edges[-1], +inf)``: ``len(edges) + 1`` bins, the
first and last open-ended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

# scipy.special only: importing scipy.stats costs every process start over a second.
from scipy import special

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Shares are clamped to at least this before PSI's logarithm, so a bin that is empty on one side
#: adds a large but finite term instead of infinity. The same value is used by the PromQL rules
#: (``clamp_min(..., 1e-4)``), which is what makes the in-process and fleet-wide PSI agree.
PSI_EPSILON = 1e-4


class PsiResult(NamedTuple):
    """Population stability index of a current distribution against a reference one."""

    statistic: float
    current_share: FloatArray


class KsResult(NamedTuple):
    """Two-sample Kolmogorov-Smirnov test result."""

    statistic: float
    pvalue: float


class ZScoreResult(NamedTuple):
    """Shift of the current mean in units of the reference standard deviation."""

    statistic: float
    current_mean: float


class ChiSquareResult(NamedTuple):
    """Pearson chi-square goodness-of-fit of current counts against reference shares."""

    statistic: float
    pvalue: float


def quantile_edges(values: npt.ArrayLike, bins: int) -> FloatArray:
    """Interior bin edges at the reference's quantiles, with ties collapsed.

    Parameters
    ----------
    values : array_like
        Finite reference values (NaN and infinities must be removed by the caller).
    bins : int
        Wanted number of bins, at least 1.

    Returns
    -------
    edges : ndarray
        Strictly increasing interior cut points, at most ``bins - 1`` of them.

    Notes
    -----
    The cut points are the ``k / bins`` quantiles (``k = 1 .. bins-1``) by the inverted-CDF
    method, so each is a value that occurs in the data. Duplicates are dropped, and so is any cut
    point equal to the minimum. With the ``side="right"`` convention of the module docstring, bin
    ``0`` then holds the minimum and bin ``i >= 1`` holds ``edges[i-1]`` itself, so no bin is empty
    on the reference by construction. A constant feature gets no edges: a single bin.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return np.empty(0, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise ValueError("quantile_edges needs finite values; drop NaN and infinities first")
    probabilities = np.arange(1, bins) / bins
    cuts = np.unique(np.quantile(data, probabilities, method="inverted_cdf"))
    return np.asarray(cuts[cuts > data.min()], dtype=np.float64)


def bin_counts(values: npt.ArrayLike, edges: npt.ArrayLike) -> IntArray:
    """Count finite ``values`` per bin of ``edges`` (``len(edges) + 1`` bins, open ends)."""
    cut = np.asarray(edges, dtype=np.float64)
    data = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(cut, data, side="right")
    return np.bincount(index, minlength=cut.size + 1).astype(np.int64)


def sorted_bin_counts(ordered: npt.ArrayLike, edges: npt.ArrayLike) -> IntArray:
    """:func:`bin_counts` of values already sorted ascending, in ``len(edges)`` binary searches
    instead of one per value: bin ``i`` holds the values ``< edges[i]`` less those of the bins
    before it (ties with an edge go to the bin above it, as in :func:`bin_counts`)."""
    data = np.asarray(ordered, dtype=np.float64)
    below = np.searchsorted(data, np.asarray(edges, dtype=np.float64), side="left")
    return np.diff(np.concatenate(([0], below, [data.size]))).astype(np.int64)


def psi(reference_share: npt.ArrayLike, current_count: npt.ArrayLike) -> PsiResult:
    """Population stability index over fixed reference bins.

    Parameters
    ----------
    reference_share : array_like
        Share of the reference in each bin (sums to 1).
    current_count : array_like
        Count (or share) of the current sample in the same bins.

    Returns
    -------
    PsiResult
        ``statistic = sum((c - r) * ln(c / r))`` with both shares clamped below at
        :data:`PSI_EPSILON`, and the current shares before clamping. An empty current sample
        gives ``nan``.

    Notes
    -----
    Bins come from the reference alone (see :func:`quantile_edges`); the current sample is never
    used to place edges. Common reading: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25
    significant shift.
    """
    ref = np.asarray(reference_share, dtype=np.float64)
    cur_count = np.asarray(current_count, dtype=np.float64)
    if ref.shape != cur_count.shape:
        raise ValueError(f"reference has {ref.size} bins, current has {cur_count.size}")
    total = float(cur_count.sum())
    if total <= 0:
        return PsiResult(float("nan"), np.zeros_like(cur_count))
    cur = cur_count / total
    # A profile has ~10 bins: plain float arithmetic beats numpy's per-call overhead here, and a
    # scrape computes this for every feature and window.
    statistic = 0.0
    for r, c in zip(ref.tolist(), cur.tolist(), strict=True):
        r = max(r, PSI_EPSILON)
        c = max(c, PSI_EPSILON)
        statistic += (c - r) * math.log(c / r)
    return PsiResult(statistic, cur)


def ks_2samp_sorted(reference_sorted: npt.ArrayLike, current: npt.ArrayLike) -> KsResult:
    """Two-sided two-sample Kolmogorov-Smirnov test against a pre-sorted reference sample.

    Parameters
    ----------
    reference_sorted : array_like
        Reference sample, sorted ascending (the profile stores it that way).
    current : array_like
        Current sample, any order.

    Returns
    -------
    KsResult
        ``statistic`` is exactly ``D = max |F_ref(x) - F_cur(x)|``, the same as
        ``scipy.stats.ks_2samp``. ``pvalue`` is the Kolmogorov limiting distribution with Stephens'
        small-sample correction: ``kstwobign.sf((sqrt(en) + 0.12 + 0.11 / sqrt(en)) * D)`` with
        ``en = n*m/(n+m)``. Either sample empty gives ``nan`` for both.

    Notes
    -----
    Between two consecutive distinct current values ``u_j < u_{j+1}`` the current ECDF is flat
    and the reference ECDF only rises, so ``|F_ref - F_cur|`` is largest at ``u_j`` or just before
    ``u_{j+1}``. D is therefore found from the reference ECDF at (and just below) each distinct
    current value: two ``searchsorted`` calls of the ``m`` current values into the ``n`` reference
    values, ``O(m log n)``, instead of evaluating both ECDFs at all ``n + m`` points.

    The p-value avoids scipy's exact finite-``n`` distribution (``kstwo``, about 0.3 ms a call at
    ``en`` near 1000), which a scrape of 60 feature-windows cannot afford; Stephens' correction
    keeps it within about 0.02 of scipy's ``method="asymp"`` p-value at the window sizes the monitor
    uses (see the tests).

    References
    ----------
    M. A. Stephens, "Use of the Kolmogorov-Smirnov, Cramer-Von Mises and related statistics
    without extensive tables", JRSS B 32 (1970); Numerical Recipes, ``probks``.
    """
    ref = np.asarray(reference_sorted, dtype=np.float64)
    cur = np.sort(np.asarray(current, dtype=np.float64))
    n, m = ref.size, cur.size
    if n == 0 or m == 0:
        return KsResult(float("nan"), float("nan"))
    # Distinct values of the sorted sample and where each first occurs (no second sort); the
    # common case of no ties skips the bookkeeping.
    steps = cur[1:] != cur[:-1]
    if steps.all():
        values = cur
        below_cur = np.arange(m) / m
        at_cur = np.arange(1, m + 1) / m
    else:
        first = np.flatnonzero(np.concatenate(([True], steps)))
        values = cur[first]
        # F_cur at each distinct value, and just below it (the ECDF before that value's step).
        below_cur = first / m
        at_cur = np.append(first[1:], m) / m
    right = np.searchsorted(ref, values, side="right")
    left = right.copy()
    # Only values that also occur in the reference need the second search (ties); for
    # continuous data that is almost none of them.
    tied = np.flatnonzero((right > 0) & (ref[np.maximum(right - 1, 0)] == values))
    if tied.size:
        left[tied] = np.searchsorted(ref, values[tied], side="left")
    at_ref = right / n
    below_ref = left / n
    statistic = float(max(np.max(np.abs(at_ref - at_cur)), np.max(np.abs(below_ref - below_cur))))
    root = math.sqrt(n * m / (n + m))
    # scipy.special.kolmogorov is kstwobign's survival function as a bare ufunc (no
    # distribution-object overhead, which would cost more than the whole statistic).
    pvalue = float(np.clip(special.kolmogorov((root + 0.12 + 0.11 / root) * statistic), 0.0, 1.0))
    return KsResult(statistic, pvalue)


def mean_zscore(
    reference_mean: float, reference_std: float, current_sum: float, current_count: float
) -> ZScoreResult:
    """``|mean_current - mean_ref| / std_ref``: the shift of the mean in reference std units.

    Takes the current sum and count rather than the values so that windows (and PromQL, from
    counters) can compute it without keeping the values. A zero reference std gives ``0`` when the
    means agree and ``inf`` when they differ; an empty current sample gives ``nan``.
    """
    if current_count <= 0:
        return ZScoreResult(float("nan"), float("nan"))
    current_mean = current_sum / current_count
    shift = abs(current_mean - reference_mean)
    if reference_std > 0:
        return ZScoreResult(shift / reference_std, current_mean)
    return ZScoreResult(0.0 if shift == 0 else float("inf"), current_mean)


def js_distance(reference_share: npt.ArrayLike, current_count: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, so in ``[0, 1]``) between two binned distributions.

    Both inputs are normalised to sum 1; no epsilon is needed because the mixture is never zero
    where either side is positive. Equals ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    An empty side gives ``nan``.
    """
    p_values = np.asarray(reference_share, dtype=np.float64).tolist()
    q_values = np.asarray(current_count, dtype=np.float64).tolist()
    p_total, q_total = sum(p_values), sum(q_values)
    if p_total <= 0 or q_total <= 0:
        return float("nan")
    # Plain floats: a handful of bins, computed for every feature and window at each scrape.
    divergence = 0.0
    for p_raw, q_raw in zip(p_values, q_values, strict=True):
        p, q = p_raw / p_total, q_raw / q_total
        mixture = (p + q) / 2
        if p > 0:
            divergence += p * math.log(p / mixture)
        if q > 0:
            divergence += q * math.log(q / mixture)
    return math.sqrt(max(divergence / (2 * math.log(2)), 0.0))


def chi_square(reference_share: npt.ArrayLike, current_count: npt.ArrayLike) -> ChiSquareResult:
    """Pearson chi-square test of current category counts against reference shares.

    Expected counts are ``reference_share * sum(current_count)``. Categories with a zero reference
    share are dropped from the test (their expected count is 0; PSI is the statistic that sees
    them). Degrees of freedom are ``k - 1`` for the ``k`` categories kept. Equals
    ``scipy.stats.chisquare(observed, expected)`` on those categories. Fewer than two categories or
    an empty current sample give ``nan``.
    """
    ref = np.asarray(reference_share, dtype=np.float64)
    observed = np.asarray(current_count, dtype=np.float64)
    total = observed.sum()
    keep = ref > 0
    if total <= 0 or keep.sum() < 2:
        return ChiSquareResult(float("nan"), float("nan"))
    expected = ref[keep] / ref[keep].sum() * observed[keep].sum()
    kept = observed[keep]
    if kept.sum() <= 0:
        return ChiSquareResult(float("nan"), float("nan"))
    statistic = float(np.sum((kept - expected) ** 2 / expected))
    pvalue = float(special.chdtrc(kept.size - 1, statistic))  # = scipy.stats.chi2.sf
    return ChiSquareResult(statistic, pvalue)


class Moments(NamedTuple):
    """Mean and sample standard deviation (``ddof=1``) of finite values."""

    mean: float
    std: float
    n: int


def moments(values: npt.ArrayLike) -> Moments:
    """Mean and sample std of finite values, safe for values near the float64 limit.

    The values are divided by their largest magnitude before summing, so ``1e308`` values do not
    overflow the sum. One value has std ``0``; no values give ``nan`` for both.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return Moments(float("nan"), float("nan"), 0)
    scale = float(np.max(np.abs(data)))
    if scale == 0.0:
        return Moments(0.0, 0.0, int(data.size))
    scaled = data / scale
    mean = float(np.mean(scaled)) * scale
    std = float(np.std(scaled, ddof=1)) * scale if data.size > 1 else 0.0
    return Moments(mean, std, int(data.size))


def shares(counts: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """Counts normalised to sum 1 (all zeros stay zeros)."""
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else np.zeros_like(array)
