"""What the tests and intervals share: the checks of their arguments (each error names the
argument, the value and what is allowed), the paired differences, a bootstrap's settings and its
percentile interval."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np


def describe(arr: np.ndarray) -> str:
    """A short description of ``arr`` for a message: its value, or its shape and first values."""
    if arr.ndim == 0:
        return repr(arr.item())
    return f"array of shape {arr.shape} (first values {arr.ravel()[:3].tolist()})"


def real_array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array; TypeError unless it holds real numbers."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype} ({describe(arr)})")
    return arr.astype(np.float64)


def require_finite(name: str, arr: np.ndarray) -> None:
    """ValueError naming ``name`` and its NaN and infinite counts unless every value is finite."""
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum()) - n_nan
        raise ValueError(
            f"{name} must hold finite values only, got {n_nan} NaN and {n_inf} infinite value(s) "
            f"in an array of shape {arr.shape}"
        )


def normalise_axis(name: str, axis, ndim: int) -> int:
    """``axis`` of an ``ndim``-dimensional ``name`` as an index in ``[0, ndim)``, checked."""
    if isinstance(axis, bool) or not isinstance(axis, Integral):
        raise TypeError(f"axis must be an int, got {axis!r} of type {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        allowed = f"in [{-ndim}, {ndim - 1}]" if ndim else "unusable: it is 0-dimensional"
        raise ValueError(f"axis={axis} is out of range for {name} with {ndim} dimension(s); axis must be {allowed}")
    return int(axis) % ndim


def int_at_least(name: str, value, minimum: int) -> int:
    """``value`` as an int, checked to be an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def paired_differences(a, b, axis) -> np.ndarray:
    """Validated ``a - b`` with the observation axis moved last: shape ``(..., n)``, n >= 2."""
    a_arr = real_array("a", a)
    b_arr = real_array("b", b)
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"a and b must have the same shape (one pair per entry), got a.shape={a_arr.shape} "
            f"and b.shape={b_arr.shape}"
        )
    require_finite("a", a_arr)
    require_finite("b", b_arr)
    ax = normalise_axis("a and b", axis, a_arr.ndim)
    n = a_arr.shape[ax]
    if n < 2:
        raise ValueError(f"a and b must hold at least 2 pairs along axis={axis}, got {n} (shape {a_arr.shape})")
    return np.moveaxis(a_arr - b_arr, ax, -1)


def scalar_or_array(x: np.ndarray):
    """0-d results come back as NumPy scalars (like SciPy), others as arrays."""
    return x[()] if x.ndim == 0 else x


RESAMPLE_CHUNK = 1024  # resamples drawn per step; fixed, so results depend on the seed only


def resampling_args(seed, n_resamples, confidence) -> tuple[int, int]:
    """Check a percentile bootstrap's settings; returns ``(seed, n_resamples)``."""
    seed = int_at_least("seed", seed, 0)
    n_resamples = int_at_least("n_resamples", n_resamples, 1)
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a real number in (0, 1), got {confidence!r}")
    return seed, n_resamples


def percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of the finite resampled statistics (NaN when there are none)."""
    boot = boot[np.isfinite(boot)]
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if boot.size else (np.nan, np.nan)
    return float(low), float(high)
