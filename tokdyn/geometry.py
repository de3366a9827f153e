"""Representation geometry ("collapse") of a set of vectors, as pure JAX functions on plain arrays.

A set of N vectors -- the latent tokens of a transformer across instances, the slots of token
dynamics -- collapses in three ways, each measured here:

- the vectors point the same way: :func:`cosine_matrix`, and :func:`mean_pairwise_cosine`, the mean
  cosine over distinct pairs ``i != j`` (the inter-instance similarity);
- a sequence of them stops moving: :func:`step_similarity`, the cosine between consecutive steps of
  each instance, averaged over instances (the within-instance step-to-step similarity);
- their spread is low-dimensional: :func:`participation_ratio`, the effective rank
  ``(sum lambda)^2 / sum lambda^2`` of the eigenvalues ``lambda`` of the rows' covariance, and
  :func:`top_pc_share`, the share ``lambda_max / sum lambda`` of the variance on the first
  principal component.

:func:`summary` measures latents (N instances, S steps, D) at every step. An optional boolean
``mask`` selects the rows to include. Every function is pure, jittable and vmappable; a zero
vector has cosine 0, no variance reads as 0 and a mean over an empty set as NaN
(:ref:`diagnostics-geometry`, with the numerics).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

__all__ = [
    "cosine_matrix",
    "mean_pairwise_cosine",
    "step_similarity",
    "participation_ratio",
    "top_pc_share",
    "Summary",
    "summary",
]

_HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------------


def _check_rows(name: str, value, mask, *, layout: str, min_rows: int):
    """``value`` has layout ``(N, ...)`` with ``len(layout)`` axes; ``mask`` (N,) bool; at least
    ``min_rows`` rows (included rows, for a host mask); finite included rows (host data)."""
    ndim = layout.count(",") + 1
    if np.ndim(value) != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array {layout}, got shape {np.shape(value)}")
    dtype = _checks.dtype_of(value)
    if dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real-valued array, got dtype {dtype}")
    n = np.shape(value)[0]
    _checks.mask_for("mask", mask, n)
    if n < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s) {layout}, got shape {np.shape(value)}")
    if mask is not None and _checks.on_host(mask) and int(np.sum(mask)) < min_rows:
        raise ValueError(
            f"mask must include at least {min_rows} row(s) of {name}, got {int(np.sum(mask))} True entries"
        )
    if _checks.on_host(value) and _checks.on_host(mask) and dtype.kind == "f":
        rows = np.asarray(value) if mask is None else np.asarray(value)[np.asarray(mask)]
        if not np.all(np.isfinite(rows)):
            n_bad = int(np.size(rows) - np.isfinite(rows).sum())
            raise ValueError(f"{name} must be finite on the included rows: it holds {n_bad} NaN or infinite value(s)")
    return _checks.host_arrays(**{name: value, "mask": mask})


def _check_x(x, mask=None):
    return _check_rows("x", x, mask, layout="(N, D)", min_rows=1)


def _check_pairs(x, mask=None):
    return _check_rows("x", x, mask, layout="(N, D)", min_rows=2)


def _check_seq(seq, mask=None):
    return _check_rows("seq", seq, mask, layout="(N, S, D)", min_rows=1)


def _check_latents(latents, mask=None):
    return _check_rows("latents", latents, mask, layout="(N, S, D)", min_rows=2)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _rows(x, mask):
    """``x`` as a float array with excluded rows zeroed, and the row weights (1 included, 0 not)."""
    x = jnp.asarray(x)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    if mask is None:
        return x, jnp.ones(x.shape[0], x.dtype)
    keep = jnp.asarray(mask).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x, 0), jnp.asarray(mask).astype(x.dtype)


def _nonzero(m):
    return jnp.where(m > 0, m, 1)


def _unit(x):
    """Rows (last axis) scaled to unit norm; zero rows stay zero."""
    y = x / _nonzero(jnp.max(jnp.abs(x), -1, keepdims=True))
    return y / _nonzero(jnp.linalg.norm(y, axis=-1, keepdims=True))


def _gram(x, mask):
    """The Gram matrix of the centred included rows (scaled), N x N or D x D whichever is smaller:
    its eigenvalues are the covariance's, up to one positive factor."""
    x, w = _rows(x, mask)
    d = (x - x[jnp.argmax(w)]) * w[:, None]  # shifted by the first included row: equal rows give exact zeros
    d = d / _nonzero(jnp.max(jnp.abs(d)))
    c = (d - jnp.sum(d, 0) / _nonzero(jnp.sum(w))) * w[:, None]
    c = c / _nonzero(jnp.max(jnp.abs(c)))
    n, dim = c.shape
    return jnp.matmul(c, c.T, precision=_HIGHEST) if n <= dim else jnp.matmul(c.T, c, precision=_HIGHEST)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@_checks.checked_jit(_check_x)
def cosine_matrix(x):
    """Cosine similarities of the rows of ``x`` (N, D): (N, N), in [-1, 1].

    A zero row has similarity 0 with every row, itself included (its diagonal entry is 0, not 1).

    Examples:
        >>> import numpy as np
        >>> from tokdyn import geometry
        >>> x = np.array([[1, 0], [2, 0], [0, 3]], np.float32)
        >>> print(np.asarray(geometry.cosine_matrix(x)).round(3))
        [[1. 1. 0.]
         [1. 1. 0.]
         [0. 0. 1.]]
    """
    u = _unit(_rows(x, None)[0])
    return jnp.clip(jnp.matmul(u, u.T, precision=_HIGHEST), -1.0, 1.0)


@_checks.checked_jit(_check_pairs)
def mean_pairwise_cosine(x, mask=None):
    """The mean cosine similarity over distinct pairs ``i != j`` of the included rows of ``x`` (N, D).

    1 when every included row points the same way, about 0 for random directions in high
    dimension; a zero row counts with similarity 0. Computed in O(N D) as
    ``(||sum_i u_i||^2 - sum_i ||u_i||^2) / (n (n - 1))`` over the unit rows ``u_i``. NaN when
    fewer than 2 rows are included (a traced mask; a host mask is refused).

    Examples:
        >>> import numpy as np
        >>> from tokdyn import geometry
        >>> x = np.array([[1, 0], [2, 0], [0, 3]], np.float32)   # two rows one way, one orthogonal
        >>> print(f"{float(geometry.mean_pairwise_cosine(x)):.3f}")
        0.333
    """
    x, w = _rows(x, mask)
    u = _unit(x) * w[:, None]
    s = jnp.sum(u, 0)
    n = jnp.sum(w)
    pairs = jnp.sum(s * s) - jnp.sum(u * u)
    return jnp.where(n >= 2, jnp.clip(pairs / _nonzero(n * (n - 1)), -1.0, 1.0), jnp.nan)


@_checks.checked_jit(_check_seq)
def step_similarity(seq, mask=None):
    """Within-instance step-to-step similarity of ``seq`` (N instances, S steps, D): (S - 1,), entry
    s the mean over the included instances of ``cos(seq[i, s], seq[i, s + 1])``.

    A zero vector counts with similarity 0; NaN when no instance is included (a traced mask).

    Examples:
        >>> import numpy as np
        >>> from tokdyn import geometry
        >>> seq = np.array([[[1, 0], [1, 1], [0, 1]], [[0, 2], [0, 1], [1, 1]]], np.float32)   # (2, 3, 2)
        >>> print(np.asarray(geometry.step_similarity(seq)).round(3))   # (1 + 0.707) / 2, then 0.707
        [0.854 0.707]
    """
    seq, w = _rows(seq, mask)
    u = _unit(seq)
    c = jnp.sum(u[:, :-1] * u[:, 1:], -1)  # (N, S - 1)
    n = jnp.sum(w)
    return jnp.where(n > 0, jnp.clip(w @ c / _nonzero(n), -1.0, 1.0), jnp.nan)


@_checks.checked_jit(_check_x)
def participation_ratio(x, mask=None):
    """Effective rank ``(sum lambda)^2 / sum lambda^2`` of the covariance eigenvalues of the
    (centred) included rows of ``x`` (N, D).

    In ``[1, min(n - 1, D)]`` (n included rows): 1 for data on a line, k for k orthogonal
    directions of equal variance. **0 when there is no variance** (every included row equal, or a
    single row), see :ref:`diagnostics-geometry`.

    Examples:
        >>> import numpy as np
        >>> from tokdyn import geometry
        >>> x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]], np.float32)
        >>> print(f"{float(geometry.participation_ratio(x)):.3f}")
        2.333
        >>> print(f"{float(geometry.participation_ratio(x, mask=np.array([1, 0, 0, 1], bool))):.3f}")
        1.000

    References:
        Gao, P., Trautmann, E., Yu, B., Santhanam, G., Ryu, S., Shenoy, K. and Ganguli, S. (2017).
        A theory of multineuronal dimensionality, dynamics and measurement. bioRxiv 214262.
    """
    g = _gram(x, mask)
    total = jnp.trace(g)
    return jnp.where(total > 0, jnp.maximum(total * total / _nonzero(jnp.sum(g * g)), 1.0), 0.0)


@_checks.checked_jit(_check_x)
def top_pc_share(x, mask=None):
    """Share ``lambda_max / sum lambda`` of the variance of the included rows of ``x`` (N, D) on the
    first principal component.

    In ``[1 / min(n - 1, D), 1]`` (n included rows): 1 for data on a line. **0 when there is no
    variance** (every included row equal, or a single row), see :ref:`diagnostics-geometry`.

    Examples:
        >>> import numpy as np
        >>> from tokdyn import geometry
        >>> line = np.array([[0, 0], [1, 1], [2, 2]], np.float32)
        >>> square = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
        >>> print(f"{float(geometry.top_pc_share(line)):.3f} {float(geometry.top_pc_share(square)):.3f}")
        1.000 0.500
    """
    g = _gram(x, mask)
    total = jnp.trace(g)
    top = jnp.linalg.eigvalsh(g)[-1]
    return jnp.where(total > 0, jnp.clip(top / _nonzero(total), 0.0, 1.0), 0.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Summary:
    """The geometry of latents (N, S, D) at every step: the inter-instance cosine
    (:func:`mean_pairwise_cosine`) (S,), the step-to-step similarity (:func:`step_similarity`)
    (S - 1,), the participation ratio (S,) and the top-PC share (S,) of the instances' vectors."""

    inter_cosine: jax.Array
    step_similarity: jax.Array
    participation_ratio: jax.Array
    top_pc_share: jax.Array


@_checks.checked_jit(_check_latents)
def summary(latents, mask=None) -> Summary:
    """:class:`Summary` of ``latents`` (N instances, S steps, D); ``mask`` (N,) selects instances
    (at least 2). Step s measures the set ``latents[:, s]`` of the included instances.

    Examples:
        >>> import numpy as np
        >>> from tokdyn import geometry
        >>> latents = np.array([[[1, 0], [1, 0]], [[0, 1], [1, 0.1]], [[-1, 0], [1, -0.1]]], np.float32)
        >>> s = geometry.summary(latents)   # 3 instances, 2 steps: spread out, then collapsed
        >>> print(np.asarray(s.inter_cosine).round(2), np.asarray(s.top_pc_share).round(2))
        [-0.33  0.99] [0.75 1.  ]
    """
    per_step = lambda fn: jax.vmap(fn, in_axes=(1, None))(latents, mask)
    return Summary(
        inter_cosine=per_step(mean_pairwise_cosine),
        step_similarity=step_similarity(latents, mask),
        participation_ratio=per_step(participation_ratio),
        top_pc_share=per_step(top_pc_share),
    )
