"""The paired t-test (:func:`paired_ttest`, :class:`TTestResult`) and its effect size
(:func:`cohens_d`)."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special

from tokdyn.stats.inference._common import (
    paired_differences,
    scalar_or_array,
)


@dataclasses.dataclass(frozen=True)
class TTestResult:
    """Result of :func:`paired_ttest`: what the studies print of a paired comparison. Unpacks, and
    indexes, as ``statistic, pvalue, df`` (as SciPy's result does).

    Attributes:
      statistic: t.
      pvalue: the two-sided p.
      df: the degrees of freedom, n - 1 (a float).
      difference: the mean difference ``mean(a - b)``.
      low: the lower end of its ``confidence`` interval, ``difference - t_q * sd / sqrt(n)`` with
        ``t_q`` Student's quantile at (1 + confidence) / 2 on ``df``: SciPy's
        ``ttest_rel(a, b).confidence_interval(confidence)``.
      high: its upper end.
      d_z: the effect size, ``difference / sd`` (:func:`cohens_d`).
      n: the pairs.
      confidence: the interval's level.
    """

    statistic: np.ndarray | np.float64
    pvalue: np.ndarray | np.float64
    df: np.ndarray | np.float64
    difference: np.ndarray | np.float64 = np.nan
    low: np.ndarray | np.float64 = np.nan
    high: np.ndarray | np.float64 = np.nan
    d_z: np.ndarray | np.float64 = np.nan
    n: int = 0
    confidence: float = 0.95

    def __iter__(self):
        return iter((self.statistic, self.pvalue, self.df))

    def __getitem__(self, i):
        return (self.statistic, self.pvalue, self.df)[i]

    def __len__(self) -> int:
        return 3


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


def paired_ttest(a, b, axis: int = -1, *, confidence: float = 0.95) -> TTestResult:
    """Two-sided paired t-test of ``mean(a - b) == 0``, vectorised over every axis but ``axis``,
    with the mean difference, its interval and the effect size.

    With ``d = a - b`` holding n pairs along ``axis``: ``t = mean(d) / (sd(d) / sqrt(n))`` (sd with
    ddof = 1), ``df = n - 1``, ``p = 2 * scipy.special.stdtr(df, -|t|)``, so the result matches
    ``scipy.stats.ttest_rel(a, b, axis=axis)`` to ~1e-12 relative. Degenerate slices give no NaN: all
    differences exactly zero give ``t = 0``, ``p = 1``; all equal and non-zero give ``t = +-inf``, ``p = 0``.

    Args:
        a: real, finite array, the first member of every pair.
        b: real, finite array of ``a``'s shape (no broadcasting: pairs must line up).
        axis: the axis holding the pairs; it needs at least 2 entries.
        confidence: the level of the difference's interval, in (0, 1).

    Returns:
        :class:`TTestResult`: ``statistic, pvalue, df`` (it unpacks as these three), the mean
        ``difference``, its ``confidence`` interval ``low, high`` (Student's t, equal to SciPy's
        ``ttest_rel(a, b).confidence_interval(confidence)``) and ``d_z``, each with the input
        shape minus ``axis`` (NumPy scalars for 1-D input). ``df`` is a float, like SciPy's. All
        differences equal: the interval is that value, d_z 0 (all zero) or +-inf.

    Raises:
        ValueError: shapes differ, NaN/inf inputs, fewer than 2 pairs, ``axis`` out of range, a
            ``confidence`` outside (0, 1).
        TypeError: non-real inputs or a non-integer ``axis``.

    Examples:
        >>> from tokdyn import stats
        >>> r = stats.paired_ttest([0.8, 0.9, 0.85, 0.7], [0.6, 0.7, 0.8, 0.65])
        >>> print(f"t={r.statistic:.3f} p={r.pvalue:.3f} df={r.df:.0f}")
        t=2.887 p=0.063 df=3
        >>> print(f"{r.difference:+.3f} [{r.low:+.3f}, {r.high:+.3f}], d_z={r.d_z:.2f}")
        +0.125 [-0.013, +0.263], d_z=1.44
        >>> t, p, df = r  # as SciPy's result unpacks

    References:
        Student (1908). The probable error of a mean. *Biometrika* 6(1), 1-25.
    """
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    d = paired_differences(a, b, axis)  # (..., n)
    n = d.shape[-1]
    mean, sd, _, all_zero = _mean_and_sd(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = mean / (sd / np.sqrt(n))
        d_z = np.where(all_zero, 0.0, mean / sd)
    statistic = np.where(all_zero, 0.0, statistic)
    df = np.full(statistic.shape, float(n - 1))
    pvalue = 2.0 * special.stdtr(df, -np.abs(statistic))  # NaN stays NaN, +-inf gives 0
    half = special.stdtrit(df, 0.5 + confidence / 2.0) * sd / np.sqrt(n)  # 0 where every difference is equal
    return TTestResult(
        *(scalar_or_array(v) for v in (statistic, pvalue, df, mean, mean - half, mean + half, d_z)),
        n=int(n),
        confidence=float(confidence),
    )


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
