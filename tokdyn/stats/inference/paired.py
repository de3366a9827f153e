"""The paired t-test (:func:`paired_ttest`, :class:`TTestResult`) and its effect size
(:func:`cohens_d`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special

from tokdyn.stats.inference._common import (
    paired_differences,
    scalar_or_array,
)


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
    d = paired_differences(a, b, axis)  # (..., n)
    n = d.shape[-1]
    mean, sd, _, all_zero = _mean_and_sd(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = mean / (sd / np.sqrt(n))
    statistic = np.where(all_zero, 0.0, statistic)
    df = np.full(statistic.shape, float(n - 1))
    pvalue = 2.0 * special.stdtr(df, -np.abs(statistic))  # NaN stays NaN, +-inf gives 0
    return TTestResult(scalar_or_array(statistic), scalar_or_array(pvalue), scalar_or_array(df))


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
    d = paired_differences(a, b, axis)  # (..., n)
    mean, sd, _, all_zero = _mean_and_sd(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = mean / sd
    return scalar_or_array(np.where(all_zero, 0.0, effect))
