"""What the modules of :mod:`tokdyn.dynamics` share (package-internal): the dtype the kernels
compute in, the checks of points and tokens, the token-major distance scores and nearest-token
labels, and a stable name for a function in messages."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.dynamics import equations


def as_float(x):
    """``x`` as a JAX array in the dtype the kernels compute in: float32, or float64 as given (under
    ``jax.enable_x64``). Half precision (float16, bfloat16) is computed in float32: the rule's
    ``1e-8`` mass epsilon underflows there and squared distances overflow early."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32:
        return x
    return x.astype(jnp.float32)


def real_array(name, value, *, ndim=None):
    """:func:`tokdyn._checks.finite_array`, bfloat16 included (NumPy reports its dtype kind as 'V',
    not a float): rank always, finiteness of host data."""
    if _checks.dtype_of(value) != jnp.dtype(jnp.bfloat16):
        return _checks.finite_array(name, value, ndim=ndim)
    if ndim is not None and np.ndim(value) not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {np.shape(value)}")
    if _checks.on_host(value):
        _checks.finite_array(name, np.asarray(value, np.float32))
    return value


def point_weights(x, mask):
    if mask is None:
        return jnp.ones(x.shape[:1], x.dtype)
    return mask.astype(x.dtype)


def valid_rows(x, mask):
    """(N, D) ``x`` with its padded rows (``mask`` False) set to zero, so that whatever the caller
    put there (an infinity, a NaN) never reaches a product with a zero weight (``0 * inf`` is NaN)."""
    return x if mask is None else jnp.where(jnp.asarray(mask, bool)[:, None], x, jnp.zeros((), x.dtype))


def _not_bool(name, value):
    if _checks.dtype_of(value) == np.bool_:
        raise TypeError(
            f"{name} must hold floating-point numbers (coordinates), got dtype bool: cast it "
            f"({name}.astype(np.float32)) if the 0/1 values are meant as coordinates"
        )


def check_points(x, tokens, mask):
    _not_bool("x", x)
    _not_bool("tokens", tokens)
    real_array("x", x, ndim=2)
    real_array("tokens", tokens, ndim=2)
    n, d = np.shape(x)
    t, dt = np.shape(tokens)
    if t < 1:
        raise ValueError(f"tokens must hold at least one token, got shape {np.shape(tokens)}")
    if dt != d:
        raise ValueError(f"tokens and x must have the same dimension: tokens has D={dt}, x has D={d}")
    _checks.mask_for("mask", mask, n)
    return _checks.host_arrays(x=x, tokens=tokens, mask=mask)


def check_some_valid(x, mask, what: str):
    """A run needs a point to run on: ``ValueError`` when ``x`` has no row, or ``mask`` is host data
    and all False (a traced mask is not inspected: ``what`` documents what happens then)."""
    n = np.shape(x)[0]
    if n == 0:
        raise ValueError(f"x must hold at least one point, got shape {np.shape(x)}: {what} needs data to run on")
    if mask is not None and _checks.on_host(mask) and not np.any(mask):
        raise ValueError(
            f"mask must select at least one valid point, got an all-False mask of {n} entries: {what} "
            "on no data has nothing to converge to (pass the points to use as True)"
        )


TN_ARRAYS = 3  # (T, N) arrays a step keeps at once, at most (measured: about 2 on XLA:CPU)


def check_run_memory(x, tokens, what: str, *, pairwise: bool):
    """Refuse, before compiling, a run whose intermediates cannot fit: the (T, N) scores and weights
    of every token and point (:data:`TN_ARRAYS` of them) and, with ``pairwise`` (the built-in rule's
    repulsion), the (T, T, D) token differences; more elements than one array may hold, or more
    bytes than the device (on the CPU backend: the host) has available. ``ValueError`` naming T, N,
    the bytes needed and the limit."""
    n, t, d = int(np.shape(x)[0]), int(np.shape(tokens)[0]), int(np.shape(x)[1])
    _checks.elements_fit(f"{what}'s (T, N) scores", {"tokens (T)": t, "points (N)": n})
    if pairwise:
        _checks.elements_fit(f"{what}'s (T, T, D) token differences", {"tokens (T)": t, "dimension (D)": d}, t * t * d)
    dtype = _checks.dtype_of(x)
    itemsize = 8 if dtype == np.float64 else 4  # the compute dtype (as_float)
    need = itemsize * (TN_ARRAYS * t * n + (pairwise * (d + 2) * t * t))
    if need <= 2**28:  # below 256 MiB there is nothing to ask
        return
    free, where = _checks.available_memory()
    if need > free:
        parts = f"{TN_ARRAYS} (T, N) arrays" + (" and the (T, T, D) token differences" if pairwise else "")
        raise ValueError(
            f"tokens with T={t} and x with N={n} points (D={d}) make {what}'s intermediates need about "
            f"{_checks.gib(need)} ({parts} of {itemsize}-byte floats), more than the {_checks.gib(free)} "
            f"{where}: use fewer tokens or points"
        )


def scores_t(x_t, tokens, precision=None):
    """(T, N) ``2 t.x - |t|^2``: minus the squared distance up to a per-point constant.

    Token-major layout: with the long points axis minor, the softmax over the few tokens is a
    reduction over the leading axis, which XLA:CPU vectorises along the points (about 2x faster
    per step than the (N, T) layout in our measurements). ``precision``: of the product (``None``:
    JAX's default, which is TF32 for float32 on recent GPUs)."""
    return equations.scores(tokens, x_t, equations.STACKED, precision=precision)


def labels_t(x_t, tokens, mask, precision=None):
    """Hard labels from the points in token-major layout (traceable; not jitted).

    Args:
      x_t: (D, N) the points, transposed.
      tokens: (T, D) tokens.
      mask: (N,) bool or ``None``.
      precision: of the product, as in :func:`scores_t`.

    Returns:
      (N,) int32 nearest token (first on ties); -1 on padded points and on points with a distance
      that is not finite (a NaN or infinite token, or point: no nearest token to report).
    """
    s = scores_t(x_t, tokens, precision=precision)  # (T, N)
    finite = jnp.all(jnp.isfinite(s), axis=0)  # (N,); one reduction per run, after the loop
    labels = jnp.where(finite, jnp.argmax(s, axis=0).astype(jnp.int32), -1)
    return labels if mask is None else jnp.where(mask, labels, -1)


def callable_name(fn) -> str:
    """A stable name of a function (no address): ``module.qualname``."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"
