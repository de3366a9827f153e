"""Intervals of a mean or a rate: the percentile bootstrap of the mean (:func:`bootstrap_ci`), the
Wilson score interval of a rate (:func:`wilson_interval`) and Student's t interval of a mean of
values in a known range, made on the logit scale of that range (:func:`bounded_mean_interval`)."""

from __future__ import annotations

from numbers import Real

import numpy as np
from scipy import special

from tokdyn.stats.inference._common import (
    RESAMPLE_CHUNK,
    int_at_least,
    normalise_axis,
    real_array,
    require_finite,
    resampling_args,
    scalar_or_array,
)

_BOOTSTRAP_STATISTICS = ("mean",)


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
    seed, n_resamples = resampling_args(seed, n_resamples, confidence)
    x = real_array("samples", samples)
    require_finite("samples", x)
    ax = normalise_axis("samples", axis, x.ndim)
    n = x.shape[ax]
    if n < 2:
        raise ValueError(f"samples must hold at least 2 observations along axis={axis}, got {n} (shape {x.shape})")

    x = np.moveaxis(x, ax, -1)
    batch_shape = x.shape[:-1]
    x_flat = x.reshape(-1, n)  # (S, n)
    rng = np.random.default_rng(seed)
    means = np.empty((x_flat.shape[0], n_resamples))  # (S, B)
    for start in range(0, n_resamples, RESAMPLE_CHUNK):
        r = min(RESAMPLE_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(r, n))  # (r, n)
        counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
        means[:, start : start + r] = x_flat @ counts.T.astype(np.float64) / n
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1.0 - alpha / 2], axis=-1)  # (2, S)
    return scalar_or_array(low.reshape(batch_shape)), scalar_or_array(high.reshape(batch_shape))


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

    n = int_at_least("n", n, 1)
    k = int_at_least("k", k, 0)
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

    x = real_array("values", values).ravel()
    require_finite("values", x)
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
