"""Bootstrap intervals of any statistic of resampled units (:func:`bootstrap_statistic`), the
correlation of a score with a binary outcome (:func:`point_biserial`) and the share of a gain a
setting retains (:func:`gain_retained`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special

from tokdyn.stats.inference._common import (
    RESAMPLE_CHUNK,
    int_at_least,
    percentile_interval,
    real_array,
    require_finite,
    resampling_args,
)


def bootstrap_statistic(
    statistic, n: int, *, seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of any statistic of ``n`` units. The draws are those of
    :func:`~tokdyn.stats.inference.bootstrap_ci` with the same seed (``statistic = mean of x[idx]`` gives its interval);
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
    n = int_at_least("n", n, 2)
    seed, n_resamples = resampling_args(seed, n_resamples, confidence)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    for start in range(0, n_resamples, RESAMPLE_CHUNK):
        r = min(RESAMPLE_CHUNK, n_resamples - start)
        for j, idx in enumerate(rng.integers(0, n, size=(r, n))):
            boot[start + j] = statistic(idx)
    return percentile_interval(boot, confidence)


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
    xa = real_array("x", x).ravel()
    ya = real_array("y", y).ravel()
    require_finite("x", xa)
    require_finite("y", ya)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    if not np.all((ya == 0) | (ya == 1)):
        raise ValueError(f"y must be binary (0/1 or bool), got values {np.unique(ya)[:5].tolist()}")
    n = xa.size
    if n < 3:
        raise ValueError(f"x and y must hold at least 3 pairs, got {n}")
    seed, n_resamples = resampling_args(seed, n_resamples, confidence)

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
    low, high = percentile_interval(corr(xa[idx], ya[idx]), confidence)  # a constant resample has no r
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
        a = real_array(name, value).ravel()
        require_finite(name, a)
        arrays.append(a)
    if len({a.size for a in arrays}) != 1:
        raise ValueError(
            f"setting, full and baseline must score the same instances, got lengths {[a.size for a in arrays]}"
        )
    n = arrays[0].size
    if n < 2:
        raise ValueError(f"setting, full and baseline must hold at least 2 instances, got {n}")
    seed, n_resamples = resampling_args(seed, n_resamples, confidence)
    s = np.stack(arrays)[:, None, :]  # (3, 1, n)

    def share(x):  # x (3, R, n) -> (R,)
        m = x.mean(-1)
        gain = m[1] - m[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gain != 0, (m[0] - m[2]) / np.where(gain != 0, gain, 1.0), np.nan)

    point = float(share(s)[0])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    low, high = percentile_interval(share(np.stack(arrays)[:, idx]), confidence)  # resamples without a gain: none
    return GainResult(point, low, high, n)
