"""Host-side statistics for comparing conditions: paired tests, effect sizes, corrections, bootstrap.

Everything here runs in float64 NumPy and SciPy on concrete arrays, after the JAX work is done:
p-values from a float32 ``betainc`` lose accuracy at the large degrees of freedom that sweeps over
thousands of seeds produce, and these inputs (one number per run) are small. Student t tail
probabilities come from ``scipy.special.stdtr`` (SciPy is installed with JAX); SciPy, statsmodels
and, where installed, mpmath are the tests' references.

Public functions

- :func:`paired_ttest` -- two-sided paired t-test, vectorised over all but one axis.
- :func:`cohens_d` -- paired effect size ``d_z``.
- :func:`bonferroni`, :func:`holm`, :func:`benjamini_hochberg` -- adjusted p-values over a family
  of tests of any shape (NaN entries are not part of the family); :data:`P_ADJUSTMENTS` names them.
- :func:`bootstrap_ci` -- percentile bootstrap confidence interval of the mean.
- :func:`wilson_interval` -- Wilson score interval of a rate ``k / n`` (SciPy's ``binomtest``).
- :func:`bounded_mean_interval` -- Student's t interval of a mean of values in a known range,
  made on the logit scale of that range, so it never leaves it.
- :func:`point_biserial` -- correlation of a score with a binary outcome, its p-value and a
  bootstrap interval.
- :func:`gain_retained` -- the share of a gain (full vs. baseline) a setting retains, with a
  paired bootstrap interval.

Every user-facing argument is validated before any computation: errors are ``ValueError`` or
``TypeError`` and name the argument, the offending value and what is allowed.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
from scipy import special

__all__ = [
    "TTestResult",
    "paired_ttest",
    "cohens_d",
    "bonferroni",
    "holm",
    "benjamini_hochberg",
    "P_ADJUSTMENTS",
    "bootstrap_ci",
    "wilson_interval",
    "bounded_mean_interval",
    "CorrelationResult",
    "point_biserial",
]


# ---------------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------------


def _describe(arr: np.ndarray) -> str:
    if arr.ndim == 0:
        return repr(arr.item())
    return f"array of shape {arr.shape} (first values {arr.ravel()[:3].tolist()})"


def _real_array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array; TypeError unless it holds real numbers."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype} ({_describe(arr)})")
    return arr.astype(np.float64)


def _require_finite(name: str, arr: np.ndarray) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum()) - n_nan
        raise ValueError(
            f"{name} must hold finite values only, got {n_nan} NaN and {n_inf} infinite value(s) "
            f"in an array of shape {arr.shape}"
        )


def _normalise_axis(name: str, axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, Integral):
        raise TypeError(f"axis must be an int, got {axis!r} of type {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        allowed = f"in [{-ndim}, {ndim - 1}]" if ndim else "unusable: it is 0-dimensional"
        raise ValueError(f"axis={axis} is out of range for {name} with {ndim} dimension(s); axis must be {allowed}")
    return int(axis) % ndim


def _int_at_least(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _paired_differences(a, b, axis) -> np.ndarray:
    """Validated ``a - b`` with the observation axis moved last: shape ``(..., n)``, n >= 2."""
    a_arr = _real_array("a", a)
    b_arr = _real_array("b", b)
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"a and b must have the same shape (one pair per entry), got a.shape={a_arr.shape} "
            f"and b.shape={b_arr.shape}"
        )
    _require_finite("a", a_arr)
    _require_finite("b", b_arr)
    ax = _normalise_axis("a and b", axis, a_arr.ndim)
    n = a_arr.shape[ax]
    if n < 2:
        raise ValueError(f"a and b must hold at least 2 pairs along axis={axis}, got {n} (shape {a_arr.shape})")
    return np.moveaxis(a_arr - b_arr, ax, -1)


def _scalar_or_array(x: np.ndarray):
    """0-d results come back as NumPy scalars (like SciPy), others as arrays."""
    return x[()] if x.ndim == 0 else x


# ---------------------------------------------------------------------------------------------
# Paired comparisons
# ---------------------------------------------------------------------------------------------


class TTestResult(NamedTuple):
    """Result of :func:`paired_ttest`; unpacks as ``statistic, pvalue, df``."""

    statistic: np.ndarray | np.float64
    pvalue: np.ndarray | np.float64
    df: np.ndarray | np.float64


def _mean_and_sd(d: np.ndarray):
    """Mean and sample standard deviation (ddof=1) over the last axis, plus degeneracy masks.

    The variance is computed as SciPy does (mean of squared deviations times n/(n-1)), so the
    t statistic agrees with ``scipy.stats.ttest_rel`` to rounding. ``constant`` marks slices whose
    differences are all exactly equal; their standard deviation is set to exactly 0 (rounding in the
    mean would otherwise leave a spurious ~1e-17).
    """
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    var = ((d - mean[..., None]) ** 2).mean(axis=-1) * (n / (n - 1))
    constant = np.all(d == d[..., :1], axis=-1)
    all_zero = constant & (d[..., 0] == 0.0)
    mean = np.where(all_zero, 0.0, mean)
    sd = np.where(constant, 0.0, np.sqrt(var))
    return mean, sd, constant, all_zero


def paired_ttest(a, b, axis: int = -1) -> TTestResult:
    """Two-sided paired t-test of ``mean(a - b) == 0``, vectorised over every axis but ``axis``.

    With ``d = a - b`` holding n pairs along ``axis``: ``t = mean(d) / (sd(d) / sqrt(n))`` (sd with
    ddof = 1), ``df = n - 1``, ``p = 2 * scipy.special.stdtr(df, -|t|)``, so the result matches
    ``scipy.stats.ttest_rel(a, b, axis=axis)`` to ~1e-12 relative. Degenerate slices give no NaN: all
    differences exactly zero give ``t = 0``, ``p = 1``; all equal and non-zero give ``t = +-inf``, ``p = 0``.

    Args:
        a: real, finite array, the first member of every pair.
        b: real, finite array of ``a``'s shape (no broadcasting: pairs must line up).
        axis: the axis holding the pairs; it needs at least 2 entries.

    Returns:
        ``TTestResult(statistic, pvalue, df)``, each with the input shape minus ``axis`` (NumPy
        scalars for 1-D input). ``df`` is a float, like SciPy's.

    Raises:
        ValueError: shapes differ, NaN/inf inputs, fewer than 2 pairs, ``axis`` out of range.
        TypeError: non-real inputs or a non-integer ``axis``.

    Examples:
        >>> from tokdyn import stats
        >>> r = stats.paired_ttest([0.8, 0.9, 0.85, 0.7], [0.6, 0.7, 0.8, 0.65])
        >>> print(f"t={r.statistic:.3f} p={r.pvalue:.3f} df={r.df:.0f}")
        t=2.887 p=0.063 df=3

    References:
        Student (1908). The probable error of a mean. *Biometrika* 6(1), 1-25.
    """
    d = _paired_differences(a, b, axis)  # (..., n)
    n = d.shape[-1]
    mean, sd, _, all_zero = _mean_and_sd(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = mean / (sd / np.sqrt(n))
    statistic = np.where(all_zero, 0.0, statistic)
    df = np.full(statistic.shape, float(n - 1))
    pvalue = 2.0 * special.stdtr(df, -np.abs(statistic))  # NaN stays NaN, +-inf gives 0
    return TTestResult(_scalar_or_array(statistic), _scalar_or_array(pvalue), _scalar_or_array(df))


def cohens_d(a, b, axis: int = -1):
    """Paired effect size ``d_z = mean(a - b) / sd(a - b)`` (sd with ddof = 1) along ``axis``.

    This is the standardised mean difference of the pairs, so ``t = d_z * sqrt(n)``. Degenerate
    slices follow :func:`paired_ttest`: 0.0 when all differences are exactly zero, ``+-inf`` when
    they are all equal and non-zero. Same arguments and errors as :func:`paired_ttest`.

    Examples:
        >>> from tokdyn import stats
        >>> print(f"{stats.cohens_d([0.8, 0.9, 0.85, 0.7], [0.6, 0.7, 0.8, 0.65]):.3f}")
        1.443

    References:
        Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences* (2nd ed.).
        Lawrence Erlbaum.
    """
    d = _paired_differences(a, b, axis)  # (..., n)
    mean, sd, _, all_zero = _mean_and_sd(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = mean / sd
    return _scalar_or_array(np.where(all_zero, 0.0, effect))


# ---------------------------------------------------------------------------------------------
# Multiple-comparison corrections
# ---------------------------------------------------------------------------------------------


def _pvalue_family(p):
    """Validated float64 copy of ``p``, the flat values that form the family and their positions."""
    arr = _real_array("p", p)
    flat = arr.ravel()
    present = ~np.isnan(flat)
    outside = present & ~((flat >= 0.0) & (flat <= 1.0))
    if outside.any():
        shown = flat[outside][0].item()
        raise ValueError(
            f"p must hold p-values in [0, 1] (NaN entries are ignored), got {_describe(arr)} "
            f"with {int(outside.sum())} value(s) outside, e.g. {shown!r}"
        )
    return arr, flat[present], present


def _restore(arr: np.ndarray, present: np.ndarray, adjusted: np.ndarray):
    out = np.full(arr.size, np.nan)
    out[present] = adjusted
    return _scalar_or_array(out.reshape(arr.shape))


def bonferroni(p):
    """Bonferroni-adjusted p-values: ``min(1, m * p_i)``, with ``m`` the number of non-NaN entries.

    ``p`` may have any shape; the family is all of its non-NaN entries and the result has the same
    shape, with NaN left in place. Controls the family-wise error rate under any dependence.

    Examples:
        >>> from tokdyn import stats
        >>> print(stats.bonferroni([0.01, 0.04, 0.03, float("nan")]).round(3))
        [0.03 0.12 0.09  nan]
    """
    arr, family, present = _pvalue_family(p)
    return _restore(arr, present, np.minimum(family * family.size, 1.0))


def holm(p):
    """Holm step-down adjusted p-values over all non-NaN entries of ``p`` (any shape).

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``::

        adj_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))

    and each value is put back at its original position (NaN entries stay NaN and are not
    counted in ``m``). Controls the family-wise error rate like Bonferroni, never less powerful.
    Equals ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``.

    Examples:
        >>> from tokdyn import stats
        >>> print(stats.holm([0.01, 0.04, 0.03]).round(3))
        [0.03 0.06 0.06]

    References:
        Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scandinavian
        Journal of Statistics* 6(2), 65-70.
    """
    arr, family, present = _pvalue_family(p)
    m = family.size
    order = np.argsort(family, kind="stable")
    stepped = np.maximum.accumulate(family[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return _restore(arr, present, adjusted)


def benjamini_hochberg(p):
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate) over ``p`` (any shape).

    With the ``m`` non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``::

        adj_(i) = min(1, min_{j >= i} p_(j) * m / j)

    put back at their original positions (NaN entries stay NaN, not counted in ``m``). Controls
    the FDR for independent or positively dependent tests. Equals
    ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``.

    Examples:
        >>> from tokdyn import stats
        >>> print(stats.benjamini_hochberg([0.01, 0.04, 0.03]).round(3))
        [0.03 0.04 0.04]

    References:
        Benjamini, Y. and Hochberg, Y. (1995). Controlling the false discovery rate: a practical
        and powerful approach to multiple testing. *Journal of the Royal Statistical Society,
        Series B* 57(1), 289-300.
    """
    arr, family, present = _pvalue_family(p)
    m = family.size
    order = np.argsort(family, kind="stable")
    scaled = family[order] / (np.arange(1, m + 1) / m)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return _restore(arr, present, adjusted)


#: Named p-value adjustments (keys follow statsmodels' ``multipletests`` method names).
P_ADJUSTMENTS = {"bonferroni": bonferroni, "holm": holm, "fdr_bh": benjamini_hochberg}


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------

_BOOTSTRAP_STATISTICS = ("mean",)
_RESAMPLE_CHUNK = 1024  # resamples drawn per step; fixed, so results depend on the seed only


def bootstrap_ci(
    samples,
    *,
    seed: int = 0,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    axis: int = -1,
    statistic: str = "mean",
):
    """Percentile bootstrap confidence interval of the mean along ``axis``, vectorised.

    Each resample draws n indices with replacement (``numpy.random.default_rng(seed)``), the same draws
    for every slice, so a slice's interval does not depend on the others; ``(low, high)`` are the
    ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the resampled means, ``alpha = 1 - confidence``
    (linear interpolation, as ``scipy.stats.bootstrap(..., method="percentile")``).

    Args:
        samples: real, finite array with at least 2 entries along ``axis``.
        seed: non-negative int seeding the NumPy Generator.
        n_resamples: number of bootstrap resamples, >= 1.
        confidence: confidence level in (0, 1).
        axis: the axis holding the observations.
        statistic: the resampled statistic; only ``"mean"`` is implemented.

    Returns:
        ``(low, high)``, each with the shape of ``samples`` minus ``axis`` (NumPy scalars for 1-D).
    """
    if statistic not in _BOOTSTRAP_STATISTICS:
        raise ValueError(f"statistic must be one of {list(_BOOTSTRAP_STATISTICS)}, got {statistic!r}")
    seed, n_resamples = _resampling_args(seed, n_resamples, confidence)
    x = _real_array("samples", samples)
    _require_finite("samples", x)
    ax = _normalise_axis("samples", axis, x.ndim)
    n = x.shape[ax]
    if n < 2:
        raise ValueError(f"samples must hold at least 2 observations along axis={axis}, got {n} (shape {x.shape})")

    x = np.moveaxis(x, ax, -1)
    batch_shape = x.shape[:-1]
    x_flat = x.reshape(-1, n)  # (S, n)
    rng = np.random.default_rng(seed)
    means = np.empty((x_flat.shape[0], n_resamples))  # (S, B)
    for start in range(0, n_resamples, _RESAMPLE_CHUNK):
        r = min(_RESAMPLE_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(r, n))  # (r, n)
        counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
        means[:, start : start + r] = x_flat @ counts.T.astype(np.float64) / n
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1.0 - alpha / 2], axis=-1)  # (2, S)
    return _scalar_or_array(low.reshape(batch_shape)), _scalar_or_array(high.reshape(batch_shape))


def wilson_interval(k, n, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the rate ``k / n`` (``scipy.stats.binomtest(k, n)
    .proportion_ci(method="wilson")``): always inside [0, 1], and sensible at ``k = 0`` or ``k = n``,
    where a normal interval collapses to a point.

    Args:
        k: successes, an int in ``[0, n]``.
        n: trials, an int >= 1.
        confidence: confidence level in (0, 1).

    Returns:
        ``(low, high)`` as floats.
    """
    from scipy import stats as sps

    n = _int_at_least("n", n, 1)
    k = _int_at_least("k", k, 0)
    if k > n:
        raise ValueError(f"k must be at most n={n}, got {k}")
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a real number in (0, 1), got {confidence!r}")
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=float(confidence), method="wilson")
    return float(ci.low), float(ci.high)


def bounded_mean_interval(values, low: float, high: float, *, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of ``values`` that lie in ``[low, high]`` (a bounded score:
    an ARI, a rate, an accuracy), made on the logit scale of the range and mapped back, so that it
    never leaves ``(low, high)``: with ``u = (mean - low) / (high - low)`` and ``s_u`` the standard
    error of ``u``, the interval of ``logit(u)`` is ``logit(u) ± t * s_u / (u (1 - u))`` (the delta
    method). Values all equal give the point ``(mean, mean)``.

    Args:
        values: real, finite 1-D array of at least 2 values, each in ``[low, high]``.
        low: the range's lower end.
        high: its upper end (> ``low``).
        confidence: confidence level in (0, 1).

    Returns:
        ``(lower, upper)`` as floats, inside ``[low, high]``.
    """
    from scipy import stats as sps

    x = _real_array("values", values).ravel()
    _require_finite("values", x)
    if x.size < 2:
        raise ValueError(f"values must hold at least 2 values, got {x.size}")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"low and high must be finite with low < high, got low={low!r}, high={high!r}")
    if x.min() < low or x.max() > high:
        raise ValueError(f"values must lie in [{low}, {high}], got values in [{x.min()}, {x.max()}]")
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a real number in (0, 1), got {confidence!r}")
    mean = float(x.mean())
    if np.all(x == x[0]):
        return mean, mean
    u = (mean - low) / (high - low)  # in (0, 1): not all values sit at one end
    se = float(x.std(ddof=1) / np.sqrt(x.size)) / (high - low)
    half = float(sps.t.ppf(0.5 + confidence / 2, x.size - 1)) * se / (u * (1.0 - u))
    centre = float(special.logit(u))
    lo, hi = special.expit(centre - half), special.expit(centre + half)
    return float(low + (high - low) * lo), float(low + (high - low) * hi)


# ---------------------------------------------------------------------------------------------
# Correlation with a binary outcome
# ---------------------------------------------------------------------------------------------


def _resampling_args(seed, n_resamples, confidence) -> tuple[int, int]:
    """Check a percentile bootstrap's settings; returns ``(seed, n_resamples)``."""
    seed = _int_at_least("seed", seed, 0)
    n_resamples = _int_at_least("n_resamples", n_resamples, 1)
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a real number in (0, 1), got {confidence!r}")
    return seed, n_resamples


def _percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of the finite resampled statistics (NaN when there are none)."""
    boot = boot[np.isfinite(boot)]
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if boot.size else (np.nan, np.nan)
    return float(low), float(high)


def bootstrap_statistic(
    statistic, n: int, *, seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of any statistic of ``n`` units. The draws are those of
    :func:`bootstrap_ci` with the same seed (``statistic = mean of x[idx]`` gives its interval);
    non-finite resampled values are dropped.

    Args:
        statistic: ``idx -> float``, called on an (n,) int array of unit indices drawn with
            replacement (e.g. a KL divergence of the resampled sentences' bigram counts).
        n: the number of units, >= 2.
        seed: non-negative int seeding ``numpy.random.default_rng``.
        n_resamples: number of resamples, >= 1.
        confidence: confidence level in (0, 1).

    Returns:
        ``(low, high)``, two floats (NaN when no resampled value is finite).
    """
    if not callable(statistic):
        raise TypeError(f"statistic must be a callable idx -> float, got {type(statistic).__name__}")
    n = _int_at_least("n", n, 2)
    seed, n_resamples = _resampling_args(seed, n_resamples, confidence)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    for start in range(0, n_resamples, _RESAMPLE_CHUNK):
        r = min(_RESAMPLE_CHUNK, n_resamples - start)
        for j, idx in enumerate(rng.integers(0, n, size=(r, n))):
            boot[start + j] = statistic(idx)
    return _percentile_interval(boot, confidence)


class CorrelationResult(NamedTuple):
    """Result of :func:`point_biserial`: ``r``, its two-sided ``pvalue``, the bootstrap interval
    ``low``, ``high`` and the number of pairs ``n``."""

    r: float
    pvalue: float
    low: float
    high: float
    n: int


def point_biserial(x, y, *, seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95) -> CorrelationResult:
    """Point-biserial correlation of a score with a binary outcome (e.g. a sequence's grounding or
    confidence against its correctness): Pearson's r, its two-sided p-value (t with n - 2 degrees of
    freedom, as ``scipy.stats.pointbiserialr``) and a percentile bootstrap interval over pairs
    resampled together.

    Args:
        x: (n,) real, finite scores, n >= 3 (flattened).
        y: (n,) binary outcomes, 0/1 or bool (flattened).
        seed: non-negative int seeding ``numpy.random.default_rng``.
        n_resamples: number of resamples, >= 1.
        confidence: confidence level in (0, 1).

    Returns:
        :class:`CorrelationResult` ``(r, pvalue, low, high, n)``; r, its p-value and its interval are
        NaN when either variable is constant (no correlation is defined).
    """
    xa = _real_array("x", x).ravel()
    ya = _real_array("y", y).ravel()
    _require_finite("x", xa)
    _require_finite("y", ya)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    if not np.all((ya == 0) | (ya == 1)):
        raise ValueError(f"y must be binary (0/1 or bool), got values {np.unique(ya)[:5].tolist()}")
    n = xa.size
    if n < 3:
        raise ValueError(f"x and y must hold at least 3 pairs, got {n}")
    seed, n_resamples = _resampling_args(seed, n_resamples, confidence)

    def corr(a, b):  # Pearson's r along the last axis
        a = a - a.mean(-1, keepdims=True)
        b = b - b.mean(-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))

    r = float(corr(xa, ya))
    if not np.isfinite(r):
        return CorrelationResult(float("nan"), float("nan"), float("nan"), float("nan"), n)
    r = min(max(r, -1.0), 1.0)
    with np.errstate(divide="ignore"):
        t = r * np.sqrt((n - 2) / (1.0 - r * r)) if abs(r) < 1 else np.copysign(np.inf, r)
    pvalue = float(2.0 * special.stdtr(n - 2, -abs(t)))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    low, high = _percentile_interval(corr(xa[idx], ya[idx]), confidence)  # a constant resample has no r
    return CorrelationResult(r, pvalue, low, high, n)


# ---------------------------------------------------------------------------------------------
# Share of a gain retained
# ---------------------------------------------------------------------------------------------


class GainResult(NamedTuple):
    """Result of :func:`gain_retained`: the ``share`` of the gain retained, its paired bootstrap
    interval ``low``, ``high`` and the number of instances ``n``."""

    share: float
    low: float
    high: float
    n: int


def gain_retained(
    setting, full, baseline, *, seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95
) -> GainResult:
    """Share of a gain a setting retains, ``(mean(setting) - mean(baseline)) / (mean(full) -
    mean(baseline))``, with a percentile bootstrap interval over instances resampled together.

    Args:
        setting: (n,) real, finite per-instance scores under the setting (e.g. correctness with a part
            of the latent block), n >= 2.
        full: (n,) the same instances' scores with all of it.
        baseline: (n,) their scores with none of it.
        seed: non-negative int seeding ``numpy.random.default_rng``.
        n_resamples: number of resamples, >= 1.
        confidence: confidence level in (0, 1).

    Returns:
        :class:`GainResult` ``(share, low, high, n)``. The share is NaN when ``full`` and ``baseline``
        have the same mean (no gain to retain); resamples without a gain are left out of the interval.
    """
    arrays = []
    for name, value in (("setting", setting), ("full", full), ("baseline", baseline)):
        a = _real_array(name, value).ravel()
        _require_finite(name, a)
        arrays.append(a)
    if len({a.size for a in arrays}) != 1:
        raise ValueError(
            f"setting, full and baseline must score the same instances, got lengths {[a.size for a in arrays]}"
        )
    n = arrays[0].size
    if n < 2:
        raise ValueError(f"setting, full and baseline must hold at least 2 instances, got {n}")
    seed, n_resamples = _resampling_args(seed, n_resamples, confidence)
    s = np.stack(arrays)[:, None, :]  # (3, 1, n)

    def share(x):  # x (3, R, n) -> (R,)
        m = x.mean(-1)
        gain = m[1] - m[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gain != 0, (m[0] - m[2]) / np.where(gain != 0, gain, 1.0), np.nan)

    point = float(share(s)[0])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    low, high = _percentile_interval(share(np.stack(arrays)[:, idx]), confidence)  # resamples without a gain: none
    return GainResult(point, low, high, n)
