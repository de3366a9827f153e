"""Host-side statistics for comparing conditions: paired tests, effect sizes, corrections, bootstrap.

Everything here runs in float64 NumPy on concrete arrays, after the JAX work is done: p-values from
a float32 ``betainc`` lose accuracy at the large degrees of freedom that sweeps over thousands of
seeds produce, and these inputs (one number per run) are small. The module deliberately depends on
NumPy and the standard library only; SciPy and statsmodels are used by the tests as references.

Public functions

- :func:`paired_ttest` -- two-sided paired t-test, vectorised over all but one axis.
- :func:`cohens_d` -- paired effect size ``d_z``.
- :func:`bonferroni`, :func:`holm`, :func:`benjamini_hochberg` -- adjusted p-values over a family
  of tests of any shape (NaN entries are not part of the family); :data:`P_ADJUSTMENTS` names them.
- :func:`bootstrap_ci` -- percentile bootstrap confidence interval of the mean.

Every user-facing argument is validated before any computation: errors are ``ValueError`` or
``TypeError`` and name the argument, the offending value and what is allowed.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

__all__ = [
    "TTestResult",
    "paired_ttest",
    "cohens_d",
    "bonferroni",
    "holm",
    "benjamini_hochberg",
    "P_ADJUSTMENTS",
    "bootstrap_ci",
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
        raise ValueError(
            f"axis={axis} is out of range for {name} with {ndim} dimension(s); axis must be {allowed}"
        )
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
        raise ValueError(
            f"a and b must hold at least 2 pairs along axis={axis}, got {n} (shape {a_arr.shape})"
        )
    return np.moveaxis(a_arr - b_arr, ax, -1)


def _scalar_or_array(x: np.ndarray):
    """0-d results come back as NumPy scalars (like SciPy), others as arrays."""
    return x[()] if x.ndim == 0 else x


# ---------------------------------------------------------------------------------------------
# Student t tail probability via the regularised incomplete beta function
# ---------------------------------------------------------------------------------------------

_LGAMMA_HALF = math.lgamma(0.5)  # log(sqrt(pi))
_CF_TOLERANCE = 1e-15
_CF_MAX_ITER = 2_000
_STIRLING_FROM = 10.0  # below this, log B(a, 1/2) comes from math.lgamma directly


def _stirling_remainder(x: np.ndarray) -> np.ndarray:
    """delta(x) = lgamma(x) - [(x - 1/2) log x - x + log(2 pi) / 2], by its asymptotic series.

    delta(x) = 1/(12x) - 1/(360x^3) + 1/(1260x^5) - 1/(1680x^7) + 1/(1188x^9) - 691/(360360x^11);
    the first omitted term is below 1e-15 for x >= 10.
    """
    inv = 1.0 / x
    inv2 = inv * inv
    series = 1 / 1188 - inv2 * (691 / 360360)
    for coef in (1 / 1680, 1 / 1260, 1 / 360, 1 / 12):
        series = coef - inv2 * series
    return inv * series


def _log_beta_half(a: np.ndarray) -> np.ndarray:
    """log B(a, 1/2) = lgamma(a) + lgamma(1/2) - lgamma(a + 1/2), accurate for any a > 0.

    For large ``a`` the difference of two lgamma values of size ~a log a cancels and loses digits
    (an absolute error of ~1e-9 at a = 5e5, i.e. 1e-9 relative in every p-value). There Stirling's
    formula is used instead, in which the large terms cancel analytically:

        lgamma(a) - lgamma(a + 1/2) = -log(a)/2 + 1/2 - a log1p(1/(2a)) + delta(a) - delta(a + 1/2).
    """
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    small = a < _STIRLING_FROM
    out[small] = [math.lgamma(v) + _LGAMMA_HALF - math.lgamma(v + 0.5) for v in a[small]]
    big = a[~small]
    out[~small] = (
        _LGAMMA_HALF
        - 0.5 * np.log(big)
        + (0.5 - big * np.log1p(0.5 / big))
        + (_stirling_remainder(big) - _stirling_remainder(big + 0.5))
    )
    return out


def _incomplete_beta_fraction(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The continued fraction R in I_x(a, b) = x^a y^b / B(a, b) * R, for 1-D arrays (y = 1 - x).

    This is DiDonato & Morris' form of the incomplete beta continued fraction (routine BFRAC of
    ACM TOMS 708), in which ``1 - x`` enters only through the separately supplied, accurate ``y``
    and through lambda = (a + b) y - b. The textbook form evaluated with Lentz's method loses
    accuracy in proportion to 1 / (1 - x) when x is close to 1 (large df with moderate t: ~1e-10
    relative at df = 1e7); this one stays near 1e-15 and needs only tens of iterations there.

    With c = 1 + lambda, c0 = b / a, c1 = 1 + 1/a, the n-th partial numerator and denominator are

        alpha_n = p_n (p_n + c0) (a / s_n)^2 * w_n x,     w_n = n (b - n) x,
        beta_n  = n + w_n / s_n + (1 + n/a) / (c1 + 2n/a) * (c + n (1 + y)),

    where p_1 = 1, p_n = 1 + (n - 1)/a and s_n = a + 2n - 1. The convergents r_n = A_n / B_n follow
    from A_n = alpha_n A_{n-2} + beta_n A_{n-1} (same for B), starting at A_0 = 1, B_0 = c / c1,
    A_{-1} = 0, B_{-1} = 1, renormalised to B_n = 1 every step; iteration stops per entry once r_n
    changes by less than one part in 1e-15. Callers use it where x < (a + 1)/(a + b + 2), which
    keeps c > 0.
    """
    result = np.empty(x.shape)
    todo = np.arange(x.size)  # entries still iterating; the state arrays below shrink with it
    c = 1.0 + (a + b) * y - b
    c0, c1 = b / a, 1.0 + 1.0 / a
    a_prev, b_prev = np.zeros(x.shape), np.ones(x.shape)
    a_curr, b_curr = np.ones(x.shape), c / c1
    r = c1 / c
    for n in range(1, _CF_MAX_ITER + 1):
        if todo.size == 0:
            return result
        p = 1.0 + (n - 1) / a
        s = a + (2 * n - 1)
        w = n * (b - n) * x
        alpha = p * (p + c0) * (a / s) ** 2 * (w * x)
        beta = n + w / s + (1.0 + n / a) / (c1 + 2.0 * n / a) * (c + n * (1.0 + y))
        a_next = alpha * a_prev + beta * a_curr
        b_next = alpha * b_prev + beta * b_curr
        r_next = a_next / b_next
        done = np.abs(r_next - r) <= _CF_TOLERANCE * r_next
        a_prev, b_prev = a_curr / b_next, b_curr / b_next
        a_curr, b_curr, r = r_next, np.ones_like(r_next), r_next
        result[todo[done]] = r[done]
        keep = ~done
        todo = todo[keep]
        a, b, x, y, c, c0, c1 = (v[keep] for v in (a, b, x, y, c, c0, c1))
        a_prev, b_prev, a_curr, b_curr, r = (v[keep] for v in (a_prev, b_prev, a_curr, b_curr, r))
    if todo.size == 0:
        return result
    raise RuntimeError(  # pragma: no cover - converges in well under 100 steps where it is used
        f"incomplete beta continued fraction did not converge in {_CF_MAX_ITER} iterations"
    )


def _incomplete_beta_series(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The power series S in I_x(a, b) = x^a / (a B(a, b)) * S, elementwise (DiDonato & Morris' BPSER).

    Expanding (1 - u)^(b - 1) under the integral of u^(a-1) (1 - u)^(b-1) from 0 to x gives

        S = 1 + a * sum_{j >= 1} (1 - b)(2 - b)...(j - b) / j! * x^j / (a + j).

    Used for small x (the p-close-to-1 side of the t-test), where the terms shrink quickly once
    j > b x; the summation stops when a term falls below 1e-17 of the sum past that point.
    """
    total = np.ones(x.shape)
    term = np.ones(x.shape)  # (1 - b)_j / j! * x^j
    active = np.ones(x.shape, dtype=bool)
    for j in range(1, _CF_MAX_ITER + 1):
        if not active.any():
            return total
        term = term * ((j - b) / j) * x
        contribution = a * term / (a + j)
        total = np.where(active, total + contribution, total)
        active &= (j < b * x) | (np.abs(contribution) > 1e-17 * np.abs(total))
    raise RuntimeError(  # pragma: no cover - x < 0.6 where it is used: < 100 terms
        f"incomplete beta series did not converge in {_CF_MAX_ITER} terms"
    )


def _t_two_sided_pvalue(t, df) -> np.ndarray:
    """P(|T| >= |t|) for Student's T with ``df`` > 0 degrees of freedom, elementwise, in float64.

        p = I_x(df/2, 1/2),   x = df / (df + t^2),   1 - x = t^2 / (df + t^2),

    with I the regularised incomplete beta function. Where x < (a + 1)/(a + b + 2) (a = df/2,
    b = 1/2: the tail is small or moderate) p is evaluated directly as
    exp(a log x + b log(1-x) - log B(a, b)) * R, staying in log space, with
    log x = -log1p(t^2/df) and log(1-x) = -log1p(df/t^2); tiny p-values keep their relative
    accuracy down to the subnormal range. Elsewhere (p close to 1) the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) is used. ``t = 0`` gives 1, ``t = +-inf`` gives 0, NaN stays NaN.
    """
    t_abs, df = np.broadcast_arrays(np.abs(np.asarray(t, np.float64)), np.asarray(df, np.float64))
    shape = t_abs.shape
    t_abs, df = t_abs.ravel(), df.ravel()
    with np.errstate(over="ignore", under="ignore"):
        ratio = t_abs**2 / df  # t^2 / df; inf beyond |t| ~ 1e154, 0 for subnormal-sized t
    p = np.where(np.isnan(t_abs), np.nan, np.where(np.isinf(t_abs), 0.0, 1.0))
    work = np.flatnonzero(np.isfinite(t_abs) & (ratio > 0))
    if work.size == 0:
        return p.reshape(shape)

    ratio, t_abs, a = ratio[work], t_abs[work], 0.5 * df[work]
    b = np.full(a.shape, 0.5)
    finite = np.isfinite(ratio)
    r = np.where(finite, ratio, 1.0)
    # log x = -log(1 + t^2/df); for overflowing t^2, log(t^2/df) to double precision.
    log_x = np.where(finite, -np.log1p(r), np.log(df[work]) - 2.0 * np.log(t_abs))
    log_y = np.where(finite, -np.log1p(1.0 / r), 0.0)  # log(1 - x)
    x = np.where(finite, 1.0 / (1.0 + r), 0.0)
    y = np.where(finite, r / (1.0 + r), 1.0)
    log_prefactor = a * log_x + b * log_y - _log_beta_half(a)  # log[x^a y^b / B(a, b)]

    out = np.empty(work.size)
    direct = x < (a + 1.0) / (a + b + 2.0)
    fraction = _incomplete_beta_fraction(a[direct], b[direct], x[direct], y[direct])
    out[direct] = np.exp(log_prefactor[direct] + np.log(fraction))
    flip = ~direct
    series = _incomplete_beta_series(b[flip], a[flip], y[flip])
    log_head = b[flip] * log_y[flip] - np.log(b[flip]) - _log_beta_half(a[flip])  # log[y^b / (b B)]
    out[flip] = 1.0 - np.exp(log_head) * series
    p[work] = np.clip(out, 0.0, 1.0)
    return p.reshape(shape)


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

    With ``d = a - b`` holding ``n`` pairs along ``axis``::

        t  = mean(d) / (sd(d) / sqrt(n)),   sd with ddof = 1
        df = n - 1
        p  = P(|T_df| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)

    where I is the regularised incomplete beta function, evaluated here in float64 by a continued
    fraction (no SciPy). Matches ``scipy.stats.ttest_rel(a, b, axis=axis)`` to ~1e-12 relative, and
    keeps relative accuracy for tiny p-values (down to the float64 subnormal range) and large df.

    Degenerate slices (where SciPy returns NaN or divides by zero):

    - all differences exactly zero: ``statistic = 0.0``, ``pvalue = 1.0`` -- "no evidence of a
      difference", so result tables never carry NaN;
    - all differences equal and non-zero: ``statistic = +-inf``, ``pvalue = 0.0``.

    Args:
        a, b: real arrays of the same shape (no broadcasting: pairs must line up), finite.
        axis: the axis holding the pairs; it needs at least 2 entries.

    Returns:
        ``TTestResult(statistic, pvalue, df)``, each with the input shape minus ``axis`` (NumPy
        scalars for 1-D input). ``df`` is a float, like SciPy's.

    Raises:
        ValueError: shapes differ, NaN/inf inputs, fewer than 2 pairs, ``axis`` out of range.
        TypeError: non-real inputs or a non-integer ``axis``.
    """
    d = _paired_differences(a, b, axis)  # (..., n)
    n = d.shape[-1]
    mean, sd, _, all_zero = _mean_and_sd(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = mean / (sd / np.sqrt(n))
    statistic = np.where(all_zero, 0.0, statistic)
    df = np.full(statistic.shape, float(n - 1))
    pvalue = _t_two_sided_pvalue(statistic, df)
    return TTestResult(_scalar_or_array(statistic), _scalar_or_array(pvalue), _scalar_or_array(df))


def cohens_d(a, b, axis: int = -1):
    """Paired effect size ``d_z = mean(a - b) / sd(a - b)`` (sd with ddof = 1) along ``axis``.

    This is the standardised mean difference of the pairs, so ``t = d_z * sqrt(n)``. Degenerate
    slices follow :func:`paired_ttest`: 0.0 when all differences are exactly zero, ``+-inf`` when
    they are all equal and non-zero. Same arguments and errors as :func:`paired_ttest`.
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

    Each resample draws ``n`` indices with replacement from ``0..n-1`` (``n = samples.shape[axis]``)
    with ``numpy.random.default_rng(seed)``; the same index draws are applied to every slice, so
    slices are resampled consistently and the result for one slice does not depend on the others.
    With ``theta_1..theta_B`` the resampled means and ``alpha = 1 - confidence``::

        low, high = quantile(theta, alpha / 2), quantile(theta, 1 - alpha / 2)

    (linear interpolation, as ``scipy.stats.bootstrap(..., method="percentile")``). Resampled means
    are formed as ``x @ counts.T / n`` from per-resample index counts drawn in fixed-size chunks,
    so the only large buffer is the (slices, n_resamples) array of resampled means.

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
    seed = _int_at_least("seed", seed, 0)
    n_resamples = _int_at_least("n_resamples", n_resamples, 1)
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a real number in (0, 1), got {confidence!r}")
    x = _real_array("samples", samples)
    _require_finite("samples", x)
    ax = _normalise_axis("samples", axis, x.ndim)
    n = x.shape[ax]
    if n < 2:
        raise ValueError(
            f"samples must hold at least 2 observations along axis={axis}, got {n} (shape {x.shape})"
        )

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
