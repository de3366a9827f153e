"""Argument validation shared by the public entry points.

Every check runs in plain Python on concrete values, before anything is traced or compiled, and
raises a ``ValueError``/``TypeError`` that names the argument, the offending value and what is
allowed. Traced values (inside a user's ``jit``/``vmap``) cannot be inspected and are skipped.
"""

from __future__ import annotations

from numbers import Integral

import jax
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` holds data we can look at now (not a tracer)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def _describe(value) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    bad = arr.ravel()
    return f"array of shape {arr.shape} (first values {bad[:3].tolist()})"


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def real(name: str, value, *, low=None, high=None, low_open=False, high_open=False):
    """Check a scalar or array of reals against an interval, if it is concrete."""
    if not is_concrete(value):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real number, got {value!r}")
    interval = (
        ("(" if low_open else "[")
        + ("-inf" if low is None else f"{low:g}")
        + ", "
        + ("inf" if high is None else f"{high:g}")
        + (")" if high_open else "]")
    )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite and in {interval}, got {_describe(value)}")
    bad = np.zeros(arr.shape, bool)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if bad.any():
        shown = arr[bad].ravel()[0].item()
        where = "" if arr.ndim == 0 else f" (offending entry {shown!r})"
        raise ValueError(f"{name} must be in {interval}, got {_describe(value)}{where}")
    return value


def finite_array(name: str, value, *, ndim=None):
    """Check an array is real, finite and (optionally) of a given rank, if concrete."""
    if not is_concrete(value):
        if ndim is not None and jax.numpy.ndim(value) not in np.atleast_1d(ndim):
            raise ValueError(f"{name} must have {ndim} dimensions, got shape {jax.numpy.shape(value)}")
        return value
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.isfinite(arr).sum())
        raise ValueError(f"{name} must be finite: it holds {n_bad} NaN or infinite value(s)")
    return value


def choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value
