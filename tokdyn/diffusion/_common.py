"""What the diffusion processes share: the checks of their arguments (plain Python, before tracing;
values only when they are host data), the cumulative products of a schedule, and the rule that a
traced value out of range gives NaN."""

from __future__ import annotations

from numbers import Integral

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks


def check_betas(name: str, b, *, high_open: bool):
    """``b`` as a float64 (T,) array of betas in (0, 1) (1 allowed unless ``high_open``), checked."""
    arr = np.asarray(b, np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a 1-D array of T >= 1 values, got shape {arr.shape}")
    _checks.real(name, arr, low=0.0, high=1.0, low_open=True, high_open=high_open)
    return arr


def alpha_bar_of(b: np.ndarray) -> np.ndarray:
    """(T+1,) float64 ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``, ``alpha_bar_0 = 1``."""
    return np.concatenate([[1.0], np.cumprod(1.0 - b)])


def one_minus_alpha_bar_of(b: np.ndarray) -> np.ndarray:
    """(T+1,) float64 ``1 - alpha_bar_t``, accurate when alpha_bar_t is close to 1:
    ``-expm1(sum log1p(-beta))`` (a beta of 1 gives exactly 1)."""
    with np.errstate(divide="ignore"):
        log_abar = np.concatenate([[0.0], np.cumsum(np.log1p(-b))])
    return -np.expm1(log_abar)


def as_f32(a) -> jax.Array:
    """A host table as float32, rounded once from float64."""
    return jnp.asarray(np.asarray(a, np.float64), jnp.float32)


def check_time(t, T: int, *, low: int = 1, name: str = "t"):
    """An integer scalar time step; in ``low..T`` when it is host data."""
    dtype = _checks.dtype_of(t)
    if isinstance(t, bool) or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer time step in {low}..{T}, got {t!r} of dtype {dtype}")
    if np.ndim(t) != 0:
        raise ValueError(f"{name} must be a scalar time step (vmap over a batch of examples), got shape {np.shape(t)}")
    if _checks.on_host(t):
        value = int(np.asarray(t))
        if not low <= value <= T:
            raise ValueError(f"{name} must be in {low}..{T} (T = {T}), got {value}")
    return t


def ok_time(t, T: int, low: int = 1):
    """Scalar bool: ``t`` lies in ``low..T``; None for host ``t`` (checked already)."""
    if _checks.on_host(t):
        return None
    return (t >= low) & (t <= T)


def nan_unless(ok, value):
    """``value``, or NaN (everywhere, or where the bool array ``ok`` is False) when not ``ok``: a
    traced index out of range, which a gather would clamp to a plausible neighbour. Applied to the
    outputs (NaN in a coefficient need not survive: XLA may turn a product with a constant 0/1
    matrix into a select). ``ok`` None: ``value``."""
    return value if ok is None else jnp.where(ok, value, jnp.nan)


def check_ints(name: str, value, bound: int, bound_name: str, meaning: str):
    """Integer array (always); values in ``[0, bound)`` when it is host data."""
    dtype = _checks.dtype_of(value)
    if isinstance(value, bool) or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must hold integer {meaning} in [0, {bound_name}) = [0, {bound}), got dtype {dtype}")
    if _checks.on_host(value) and np.size(value):
        arr = np.asarray(value)
        outside = (arr < 0) | (arr >= bound)
        if outside.any():
            where = tuple(int(i) for i in np.unravel_index(np.flatnonzero(outside)[0], arr.shape))
            raise ValueError(
                f"{name} must hold {meaning} in [0, {bound_name}) = [0, {bound}), got "
                f"{arr[where].item()!r}" + (f" at index {where}" if arr.ndim else "")
            )
    return value


def in_range(x, bound: int):
    """Elementwise bool: the integer ``x`` lies in ``[0, bound)`` (compared in int32 for narrow
    types, in which a Python bound could wrap)."""
    x = jnp.asarray(x)
    if jnp.iinfo(x.dtype).bits <= 16:
        x = x.astype(jnp.int32)
    return (x >= 0) & (x < bound)


def check_float(name: str, value, *, what: str = "array"):
    """A real-valued array (floating or integer dtype); finite when it is host data."""
    dtype = _checks.dtype_of(value)
    if isinstance(value, bool) or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real-valued {what}, got dtype {dtype}")
    if _checks.on_host(value):
        finite = np.isfinite(np.asarray(value, np.float64))
        if not finite.all():
            raise ValueError(
                f"{name} must be finite: it holds {finite.size - int(finite.sum())} NaN or infinite value(s)"
            )
    return value


def check_same_shape(name: str, value, other_name: str, other):
    """Refuse ``value`` unless it has the shape of ``other`` (when both shapes are known)."""
    if np.shape(value) != np.shape(other):
        raise ValueError(f"{name} must have the shape of {other_name} {np.shape(other)}, got {np.shape(value)}")


def check_shape_arg(shape):
    """``shape`` (the shape of one example) as a tuple of non-negative ints, checked."""
    if isinstance(shape, Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints >= 0, got {shape!r}") from None
    if not all(isinstance(d, Integral) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise ValueError(f"shape must be a tuple of ints >= 0, got {shape!r}")
    return tuple(int(d) for d in dims)


def check_fn(name: str, fn, signature: str):
    """Refuse ``fn`` unless it is callable, naming the ``signature`` it must have."""
    if not callable(fn):
        raise TypeError(f"{name} must be a callable {signature}, got {type(fn).__name__}")


def check_clip(clip):
    """Refuse a ``clip`` that is neither None nor a scalar > 0."""
    if clip is not None:
        if np.ndim(clip) != 0:
            raise ValueError(f"clip must be None or a scalar > 0, got shape {np.shape(clip)}")
        _checks.real("clip", clip, low=0.0, low_open=True)


def check_tables(proc, fields_t, fields_t1):
    """Refuse a process (one, not a batch) whose tables ``fields_t`` do not have shape (T,) or
    ``fields_t1`` shape (T + 1,)."""
    T = np.shape(proc.betas)[-1] if np.ndim(proc.betas) else None
    for field in fields_t + fields_t1:
        value = getattr(proc, field)
        want = (T,) if field in fields_t else (None if T is None else T + 1,)
        if np.ndim(value) != 1 or np.shape(value) != want:
            raise ValueError(
                f"proc.{field} must have shape {want} (one process: vmap over a batch of processes), got "
                f"{np.shape(value)}; build processes with gaussian() / discrete()"
            )
