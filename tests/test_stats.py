"""Tests for tokdyn.stats against SciPy / statsmodels references (test-only dependencies)."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from tokdyn.stats import (
    bootstrap_statistic,
    P_ADJUSTMENTS,
    TTestResult,
    benjamini_hochberg,
    bonferroni,
    bootstrap_ci,
    cohens_d,
    holm,
    paired_ttest,
    point_biserial,
)

RTOL = 1e-10


def scipy_ttest(a, b, axis=-1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sps.ttest_rel(a, b, axis=axis)


def assert_matches_scipy(a, b, axis=-1):
    ours = paired_ttest(a, b, axis=axis)
    ref = scipy_ttest(a, b, axis=axis)
    np.testing.assert_allclose(ours.statistic, ref.statistic, rtol=RTOL, atol=0)
    np.testing.assert_allclose(ours.pvalue, ref.pvalue, rtol=RTOL, atol=0)
    np.testing.assert_array_equal(ours.df, ref.df)
    return ours


# ---------------------------------------------------------------------------------------------
# paired_ttest
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 10, 31, 100, 500])
@pytest.mark.parametrize("effect", [0.0, 0.1, 0.5, 1.0, 3.0])
def test_ttest_matches_scipy_random(n, effect):
    rng = np.random.default_rng(1000 * n + int(10 * effect))
    for _ in range(8):
        scale = rng.uniform(0.01, 100.0)
        a = rng.normal(size=n) * scale
        b = 0.7 * a + rng.normal(effect * scale, scale, size=n)
        assert_matches_scipy(a, b)


def test_ttest_large_df_from_long_arrays():
    rng = np.random.default_rng(7)
    n = 100_001  # df = 1e5
    a = rng.normal(size=n)
    for shift in (0.0, 0.003, 0.01, 0.02):
        res = assert_matches_scipy(a + shift + rng.normal(size=n), a)
        assert res.df == 1e5


def pairs_with_statistic(target, df):
    """(a, b, t) with df + 1 pair differences [m + h, m - h, m, ..., m] and statistic t ~ ``target``.

    t = m / h * sqrt(n (n - 1) / 2); m and h are integers (h a power of 2) with n * m < 2**53, so the
    sum, mean and deviations are exact and paired_ttest's statistic is t to a few ulps.
    """
    n = int(df) + 1
    scale = np.sqrt(n * (n - 1) / 2)
    h = 2 ** int(np.clip(np.floor(np.log2(2.0**53 / (n * target / scale))) - 1, 0, 40))
    m = round(target / scale * h)
    a = np.full(n, float(m))
    a[0] += h
    a[1] -= h
    return a, np.zeros(n), m / h * scale


def mpmath_pvalue(mpmath, t, df):
    """P(|T_df| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2) in mpmath, at 60 digits (30 fall short at huge df)."""
    with mpmath.workdps(60):
        t, df = mpmath.mpf(float(t)), mpmath.mpf(float(df))
        return float(mpmath.betainc(df / 2, mpmath.mpf(1) / 2, 0, df / (df + t**2), regularized=True))


@pytest.mark.parametrize("df", [1e4, 1e5, 1e6, 1e7])
def test_ttest_large_df_matches_mpmath(df):
    mpmath = pytest.importorskip("mpmath")
    for target in (0.01, 0.3, 1.0, 1.5, 1.8, 2.0, 3.0, 5.0, 8.0, 20.0):
        a, b, t = pairs_with_statistic(target, df)
        res = paired_ttest(a, b)
        assert res.df == df
        assert res.statistic == pytest.approx(t, rel=1e-14)
        assert res.pvalue == pytest.approx(mpmath_pvalue(mpmath, res.statistic, df), rel=1e-12, abs=0)


def test_ttest_tiny_pvalues_keep_relative_accuracy():
    mpmath = pytest.importorskip("mpmath")
    cases = [
        (5e15, 3),
        (5e15, 10),
        (6e15, 19),
        (1e10, 30),
        (3e10, 30),
        (1e4, 99),
        (1.2e4, 99),
        (40.0, 1000),
        (47.0, 1000),
        (8.0, 1e6),
        (37.5, 1e6),
        (37.4, 1e7),
    ]  # p from 1e-15 to ~1e-307
    for target, df in cases:
        a, b, t = pairs_with_statistic(target, df)
        res = paired_ttest(a, b)
        ref = mpmath_pvalue(mpmath, res.statistic, df)
        assert res.statistic == pytest.approx(t, rel=1e-14)
        assert ref > np.finfo(np.float64).tiny and res.pvalue > 0
        assert abs(res.pvalue - ref) <= 1e-12 * ref, (target, df, res.pvalue, ref)


def test_tiny_pvalue_from_data_is_not_zero():
    rng = np.random.default_rng(3)
    n = 40
    b = rng.normal(size=n)
    a = b + 1.0 + 1e-6 * rng.normal(size=n)  # t ~ 1e7, p ~ 1e-260
    res = assert_matches_scipy(a, b)
    assert 0.0 < res.pvalue < 1e-200


def test_ttest_pvalue_limits():
    zero = paired_ttest([1.0, -1.0, 0.0, 2.0, -2.0], np.zeros(5))  # mean exactly 0
    tiny = paired_ttest([1.0, -1.0, 3e-200], np.zeros(3))  # t ~ 1e-200
    assert (zero.statistic, zero.pvalue) == (0.0, 1.0)
    assert 0.0 < tiny.statistic < 1e-199 and tiny.pvalue == 1.0
    a, b, t = pairs_with_statistic(1e12, 30)  # p ~ 1e-339 underflows, as it must
    res = paired_ttest(a, b)
    assert res.statistic == pytest.approx(t, rel=1e-14) and res.pvalue == 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # differences overflow: inf - inf in the mean
        res = paired_ttest([1e308, -1e308, 0.0], [-1e308, 1e308, 0.0])
    assert np.isnan(res.statistic) and np.isnan(res.pvalue)


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_ttest_vectorised_2d(axis):
    rng = np.random.default_rng(axis + 5)
    shape = (25, 6) if axis in (0, -2) else (6, 25)
    a = rng.normal(size=shape)
    b = a + rng.normal(np.linspace(-1, 1, 6)[:, None] if axis in (1, -1) else np.linspace(-1, 1, 6), 1, shape)
    res = assert_matches_scipy(a, b, axis=axis)
    assert res.statistic.shape == res.pvalue.shape == res.df.shape == (6,)
    for i in range(6):  # each slice equals the 1-D test of that slice
        sl = (slice(None), i) if axis in (0, -2) else (i, slice(None))
        one = paired_ttest(a[sl], b[sl])
        assert one.statistic == pytest.approx(res.statistic[i], rel=1e-12)
        assert one.pvalue == pytest.approx(res.pvalue[i], rel=1e-12)


def test_ttest_3d_middle_axis():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(2, 3, 17, 4))
    res = assert_matches_scipy(a + 0.3, b, axis=1)
    assert res.pvalue.shape == (3, 4)


def test_ttest_result_type_and_integer_input():
    res = paired_ttest([1, 2, 3, 5], [0, 2, 1, 1])
    assert isinstance(res, TTestResult)
    statistic, pvalue, df = res
    assert np.ndim(statistic) == 0 and isinstance(pvalue, np.floating) and df == 3.0
    ref = scipy_ttest([1.0, 2, 3, 5], [0.0, 2, 1, 1])
    assert statistic == pytest.approx(ref.statistic, rel=RTOL)
    assert pvalue == pytest.approx(ref.pvalue, rel=RTOL)


finite_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(2, 40).flatmap(
        lambda n: st.tuples(
            st.lists(finite_floats, min_size=n, max_size=n), st.lists(finite_floats, min_size=n, max_size=n)
        )
    )
)
def test_ttest_property_matches_scipy(pair):
    a, b = (np.array(v) for v in pair)
    d = a - b
    assume(not np.all(d == d[0]))  # degenerate slices are handled differently on purpose
    assume(np.std(d) > 1e-6 * (np.abs(d).max() + 1e-300))  # keep away from cancellation noise
    assert_matches_scipy(a, b)


# ---------------------------------------------------------------------------------------------
# Degenerate cases
# ---------------------------------------------------------------------------------------------


def test_ttest_all_differences_zero():
    x = np.arange(6.0)
    res = paired_ttest(x, x)
    assert (res.statistic, res.pvalue, res.df) == (0.0, 1.0, 5.0)
    assert np.isnan(scipy_ttest(x, x).pvalue)  # why we differ: no NaN in our tables
    assert cohens_d(x, x) == 0.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ttest_constant_nonzero_differences(sign):
    a = np.full(5, 0.3)
    b = a - sign * 0.1
    res = paired_ttest(a, b)
    assert res.statistic == sign * np.inf and res.pvalue == 0.0
    assert cohens_d(a, b) == sign * np.inf


def test_degenerate_rows_mixed_with_regular_rows():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 12))
    b = a.copy()
    b[1] -= 2.0  # constant positive difference
    b[2] += rng.normal(size=12)  # regular
    b[3] += 5.0  # constant negative difference
    res = paired_ttest(a, b)
    np.testing.assert_array_equal(res.statistic[[0, 1, 3]], [0.0, np.inf, -np.inf])
    np.testing.assert_array_equal(res.pvalue[[0, 1, 3]], [1.0, 0.0, 0.0])
    ref = scipy_ttest(a[2], b[2])
    assert res.pvalue[2] == pytest.approx(ref.pvalue, rel=RTOL)
    assert not np.isnan(res.pvalue).any()


# ---------------------------------------------------------------------------------------------
# Cohen's d
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, -1])
def test_cohens_d_matches_formula(axis):
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 20))
    b = 0.5 * a + rng.normal(0.4, 2.0, size=(30, 20))
    d = a - b
    expected = d.mean(axis=axis) / d.std(axis=axis, ddof=1)
    np.testing.assert_allclose(cohens_d(a, b, axis=axis), expected, rtol=1e-12)
    # t = d_z * sqrt(n)
    n = a.shape[axis]
    np.testing.assert_allclose(paired_ttest(a, b, axis=axis).statistic, expected * np.sqrt(n), rtol=1e-12)


def test_cohens_d_scalar_and_sign():
    value = cohens_d([2.0, 3.0, 5.0], [1.0, 1.0, 1.0])  # d = [1, 2, 4]
    assert value == pytest.approx(7 / 3 / np.std([1, 2, 4], ddof=1), rel=1e-14)
    assert cohens_d([1.0, 1.0, 1.0], [2.0, 3.0, 5.0]) == pytest.approx(-value, rel=1e-14)


# ---------------------------------------------------------------------------------------------
# Argument errors of the paired functions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [paired_ttest, cohens_d])
def test_paired_argument_errors(fn):
    with pytest.raises(ValueError, match=r"a and b must have the same shape.*a\.shape=\(3,\).*b\.shape=\(4,\)"):
        fn(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"a and b must hold at least 2 pairs along axis=-1, got 1"):
        fn([1.0], [2.0])
    with pytest.raises(ValueError, match=r"at least 2 pairs along axis=0, got 1"):
        fn(np.zeros((1, 5)), np.ones((1, 5)), axis=0)
    with pytest.raises(ValueError, match=r"a must hold finite values only, got 1 NaN"):
        fn([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"b must hold finite values only, got 0 NaN and 1 infinite"):
        fn([1.0, 2.0, 3.0], [1.0, np.inf, 3.0])
    with pytest.raises(ValueError, match=r"axis=2 is out of range.*\[-2, 1\]"):
        fn(np.zeros((3, 3)), np.ones((3, 3)), axis=2)
    with pytest.raises(TypeError, match=r"axis must be an int, got 0.5"):
        fn(np.zeros(3), np.ones(3), axis=0.5)
    with pytest.raises(TypeError, match=r"a must be an array of real numbers, got dtype complex128"):
        fn(np.zeros(3, complex), np.ones(3))
    with pytest.raises(TypeError, match=r"b must be an array of real numbers"):
        fn([1.0, 2.0], ["x", "y"])
    with pytest.raises(ValueError, match=r"0-dimensional"):
        fn(1.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Multiple-comparison corrections
# ---------------------------------------------------------------------------------------------

METHODS = sorted(P_ADJUSTMENTS)


@pytest.fixture(autouse=True)
def _no_gc_in_statsmodels(monkeypatch):
    # multipletests(method="holm") calls gc.collect() on every call (~80 ms with JAX loaded);
    # skipping it keeps this file fast and changes no result.
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)


def reference_adjust(p, method):
    return multipletests(p, method=method)[1]


def random_pvalues(rng, m):
    kind = rng.integers(4)
    if kind == 0:  # continuous
        return rng.uniform(size=m)
    if kind == 1:  # many ties
        return np.round(rng.uniform(size=m), 1)
    if kind == 2:  # mostly small, some exact 0 and 1
        p = rng.uniform(size=m) ** 4
        p[rng.uniform(size=m) < 0.15] = 0.0
        p[rng.uniform(size=m) < 0.15] = 1.0
        return p
    return rng.choice([0.0, 0.01, 0.04, 0.05, 0.5, 1.0], size=m)  # heavy ties with 0 and 1


@pytest.mark.parametrize("method", METHODS)
def test_adjustments_match_statsmodels(method):
    rng = np.random.default_rng(METHODS.index(method))
    for _ in range(150):
        p = random_pvalues(rng, int(rng.integers(1, 60)))
        np.testing.assert_allclose(P_ADJUSTMENTS[method](p), reference_adjust(p, method), rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_adjustments_ignore_nan(method):
    rng = np.random.default_rng(17)
    for _ in range(40):
        p = random_pvalues(rng, int(rng.integers(2, 40)))
        p[rng.uniform(size=p.size) < 0.3] = np.nan
        out = P_ADJUSTMENTS[method](p)
        nan = np.isnan(p)
        np.testing.assert_array_equal(np.isnan(out), nan)
        if (~nan).any():
            np.testing.assert_allclose(out[~nan], reference_adjust(p[~nan], method), rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_adjustments_keep_shape(method):
    rng = np.random.default_rng(4)
    p = rng.uniform(size=(3, 4, 5)) ** 3
    p[0, 1, 2] = np.nan
    out = P_ADJUSTMENTS[method](p)
    assert out.shape == p.shape
    flat = p.ravel()
    keep = ~np.isnan(flat)
    np.testing.assert_allclose(out.ravel()[keep], reference_adjust(flat[keep], method), rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_adjustments_edge_inputs(method):
    fn = P_ADJUSTMENTS[method]
    assert fn(np.array([])).shape == (0,)
    assert np.isnan(fn([np.nan, np.nan])).all()
    assert fn(0.03) == pytest.approx(0.03)  # a family of one is left alone
    assert np.ndim(fn(0.03)) == 0
    np.testing.assert_allclose(fn([0.01, 0.02]), reference_adjust(np.array([0.01, 0.02]), method))


def test_adjustment_ordering():
    rng = np.random.default_rng(9)
    p = rng.uniform(size=50) ** 2
    assert np.all(bonferroni(p) >= holm(p) - 1e-15)
    assert np.all(holm(p) >= benjamini_hochberg(p) - 1e-15)
    assert np.all(benjamini_hochberg(p) >= p - 1e-15)
    order = np.argsort(p)
    for fn in (bonferroni, holm, benjamini_hochberg):
        assert np.all(np.diff(fn(p)[order]) >= -1e-15)  # monotone in p


@pytest.mark.parametrize("method", METHODS)
def test_adjustment_errors(method):
    fn = P_ADJUSTMENTS[method]
    with pytest.raises(ValueError, match=r"p must hold p-values in \[0, 1\].*1 value\(s\) outside, e\.g\. 1\.5"):
        fn([0.1, 1.5, 0.2])
    with pytest.raises(ValueError, match=r"outside, e\.g\. -0\.01"):
        fn(np.array([[0.1, -0.01]]))
    with pytest.raises(ValueError, match=r"outside, e\.g\. inf"):
        fn([0.1, np.inf])
    with pytest.raises(TypeError, match=r"p must be an array of real numbers"):
        fn(["0.1"])


# ---------------------------------------------------------------------------------------------
# bootstrap_ci
# ---------------------------------------------------------------------------------------------


def test_bootstrap_matches_scipy_percentile():
    rng = np.random.default_rng(21)
    x = rng.normal(size=200)
    low, high = bootstrap_ci(x, seed=1, n_resamples=10_000)
    ref = sps.bootstrap((x,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(2))
    assert abs(low - ref.confidence_interval.low) < 0.02
    assert abs(high - ref.confidence_interval.high) < 0.02
    assert low < x.mean() < high


def test_bootstrap_confidence_level_scales_width():
    x = np.random.default_rng(0).normal(size=100)
    widths = [np.subtract(*bootstrap_ci(x, confidence=c, n_resamples=4000)[::-1]) for c in (0.5, 0.9, 0.99)]
    assert widths[0] < widths[1] < widths[2]
    se = x.std(ddof=1) / 10
    assert widths[1] == pytest.approx(2 * 1.645 * se, rel=0.15)


def test_bootstrap_vectorised_equals_per_slice_and_is_deterministic():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, 30))
    low, high = bootstrap_ci(x, seed=3, n_resamples=3000)
    assert low.shape == high.shape == (5,)
    for i in range(5):
        lo_i, hi_i = bootstrap_ci(x[i], seed=3, n_resamples=3000)
        assert lo_i == pytest.approx(low[i], rel=1e-12) and hi_i == pytest.approx(high[i], rel=1e-12)
    low0, high0 = bootstrap_ci(x.T, seed=3, n_resamples=3000, axis=0)
    np.testing.assert_allclose(low0, low, rtol=1e-12)
    np.testing.assert_allclose(high0, high, rtol=1e-12)
    again = bootstrap_ci(x, seed=3, n_resamples=3000)
    np.testing.assert_array_equal(again[0], low)
    assert not np.array_equal(bootstrap_ci(x, seed=4, n_resamples=3000)[0], low)


def test_bootstrap_coverage_is_sane():
    rng = np.random.default_rng(12)
    x = rng.normal(loc=2.0, size=(400, 50))  # 400 independent data sets
    low, high = bootstrap_ci(x, seed=0, n_resamples=2000, confidence=0.9)
    coverage = np.mean((low < 2.0) & (2.0 < high))
    assert 0.84 <= coverage <= 0.95, coverage  # nominal 0.90; percentile CIs undercover slightly


def test_bootstrap_argument_errors():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match=r"confidence must be a real number in \(0, 1\), got 1\.5"):
        bootstrap_ci(x, confidence=1.5)
    with pytest.raises(ValueError, match=r"confidence must be .* got 0"):
        bootstrap_ci(x, confidence=0)
    with pytest.raises(ValueError, match=r"n_resamples must be an int >= 1, got 0"):
        bootstrap_ci(x, n_resamples=0)
    with pytest.raises(TypeError, match=r"n_resamples must be an int >= 1, got 10\.0 of type float"):
        bootstrap_ci(x, n_resamples=10.0)
    with pytest.raises(ValueError, match=r"seed must be an int >= 0, got -1"):
        bootstrap_ci(x, seed=-1)
    with pytest.raises(ValueError, match=r"statistic must be one of \['mean'\], got 'median'"):
        bootstrap_ci(x, statistic="median")
    with pytest.raises(ValueError, match=r"samples must hold finite values only, got 1 NaN"):
        bootstrap_ci(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match=r"samples must hold at least 2 observations along axis=-1, got 1"):
        bootstrap_ci(np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"axis=1 is out of range for samples"):
        bootstrap_ci(x, axis=1)


# ---------------------------------------------------------------------------------------------
# point_biserial
# ---------------------------------------------------------------------------------------------


def test_point_biserial_equals_scipy_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.4
    x = rng.normal(size=400) + 0.5 * y
    res = point_biserial(x, y, seed=1, n_resamples=4000)
    ref = sps.pointbiserialr(y, x)
    np.testing.assert_allclose(res.r, ref.statistic, rtol=1e-12)
    np.testing.assert_allclose(res.pvalue, ref.pvalue, rtol=1e-9)
    # SciPy's percentile bootstrap of the same statistic, another random stream: within a few 0.01
    boot = sps.bootstrap(
        (x, y.astype(float)),
        lambda a, b: np.corrcoef(a, b)[0, 1],
        paired=True,
        vectorized=False,
        method="percentile",
        n_resamples=4000,
        random_state=2,
    )
    np.testing.assert_allclose(
        [res.low, res.high], [boot.confidence_interval.low, boot.confidence_interval.high], atol=0.02
    )
    assert res.low < res.r < res.high and res.n == 400
    # population value of the point-biserial r of this model: d sqrt(pq) / sqrt(1 + d^2 pq), d = 0.5, p = 0.4
    pq = 0.4 * 0.6
    assert res.low < 0.5 * np.sqrt(pq) / np.sqrt(1 + 0.25 * pq) < res.high


def test_point_biserial_edge_cases_and_bad_input():
    nan = point_biserial([1.0, 2.0, 3.0], [1, 1, 1])  # constant outcome: no correlation defined
    assert np.isnan(nan.r) and np.isnan(nan.pvalue)
    perfect = point_biserial([0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1])
    assert perfect.r == 1.0 and perfect.pvalue == 0.0
    with pytest.raises(ValueError, match="y must be binary"):
        point_biserial([1.0, 2.0, 3.0], [0, 1, 2])
    with pytest.raises(ValueError, match="same length"):
        point_biserial([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="x must hold finite values only"):
        point_biserial([1.0, np.nan, 3.0], [0, 1, 1])


def test_bootstrap_statistic_uses_the_same_draws_as_bootstrap_ci():
    x = np.random.default_rng(7).normal(size=40)
    for n_resamples in (10, 1500):  # within one chunk and across two
        assert bootstrap_statistic(lambda i: x[i].mean(), 40, seed=5, n_resamples=n_resamples) == pytest.approx(
            bootstrap_ci(x, seed=5, n_resamples=n_resamples), rel=1e-12
        )
    lo, hi = bootstrap_statistic(lambda i: np.median(x[i]), 40, seed=1, n_resamples=500)
    assert lo < np.median(x) < hi
    with pytest.raises(TypeError, match="statistic must be a callable"):
        bootstrap_statistic(x, 40)
    with pytest.raises(ValueError, match="n must be"):
        bootstrap_statistic(np.mean, 1)


def test_paired_ttest_gives_the_difference_its_interval_and_d_z_as_scipy():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.3, 1.0, (3, 12)), rng.normal(0.0, 1.0, (3, 12))
    for conf in (0.95, 0.8):
        res = paired_ttest(a, b, axis=1, confidence=conf)
        ref = sps.ttest_rel(a, b, axis=1)
        lo, hi = ref.confidence_interval(conf)
        np.testing.assert_allclose(res.low, lo, rtol=1e-10)
        np.testing.assert_allclose(res.high, hi, rtol=1e-10)
        np.testing.assert_allclose(res.difference, (a - b).mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(res.d_z, (a - b).mean(1) / (a - b).std(1, ddof=1), rtol=1e-12)
        assert res.n == 12 and res.confidence == conf
    t, p, df = res  # unpacks as SciPy's three
    assert (t, p, df) == (res.statistic, res.pvalue, res.df) and res[1] is res.pvalue
    same = paired_ttest([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])  # every difference 1: the interval is the value
    assert (same.low, same.high, same.difference) == (1.0, 1.0, 1.0) and same.d_z == np.inf
    with pytest.raises(ValueError, match="confidence must be a number in \\(0, 1\\), got 1.5"):
        paired_ttest(a[0], b[0], confidence=1.5)
