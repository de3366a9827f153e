"""Lloyd's k-means, the hard-assignment baseline of the dynamics: :func:`kmeans` and its outcome
:class:`KMeans`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tokdyn import _checks
from tokdyn.dynamics._common import as_float, check_points, check_some_valid, labels_t, scores_t
from tokdyn.dynamics.loop import varying


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KMeans:
    """Outcome of :func:`kmeans`.

    Attributes:
      tokens: (K, D) final centres.
      labels: (N,) int32 index of the nearest final centre (first on ties), -1 on padded points and
        on points whose distances are not finite (NaN or infinite centres or points).
      inertia: the sum over valid points of the squared distance to their centre (x's dtype); NaN
        when some valid point has label -1.
      steps: int32 number of Lloyd iterations applied (scikit-learn's ``n_iter_``).
      converged: bool, whether the last iteration changed no label or moved the centres by at most
        ``tol`` (False when the run stopped at ``n_steps``, and whenever a valid point, an initial
        centre or a final centre is not finite).
    """

    tokens: jax.Array
    labels: jax.Array
    inertia: jax.Array
    steps: jax.Array
    converged: jax.Array


def _check_kmeans(x, tokens, mask, n_steps, tol):
    arrays = check_points(x, tokens, mask)
    check_some_valid(x, arrays.get("mask", mask), "k-means")
    if isinstance(n_steps, (int, float)):
        _checks.positive_int("n_steps", n_steps)
    _checks.real("n_steps", n_steps, low=1)
    _checks.real("tol", tol, low=0.0)
    return arrays


_HIGHEST = jax.lax.Precision.HIGHEST


@_checks.checked_jit(_check_kmeans)
def kmeans(x, tokens, mask=None, *, n_steps=100, tol=0.0) -> KMeans:
    r"""Lloyd's k-means from given initial centres: the hard-assignment baseline of the dynamics.

    Each iteration assigns every valid point to its nearest centre (the first on ties) and moves
    every centre to the mean of its points; a centre that gets no point keeps its position. The run
    stops after the first iteration that changes no label or whose total squared centre shift is at
    most ``tol``; the labels are then recomputed at the final centres. Equal to scikit-learn's
    Lloyd ``KMeans`` from the same centres while no cluster empties (:ref:`dynamics-initial`).

    Args:
      x: (N, D) points (NumPy or JAX).
      tokens: (K, D) initial centres (e.g. :func:`~tokdyn.dynamics.init_tokens` with
        ``method="kmeans++"``).
      mask: optional (N,) bool; False rows are ignored (their values never enter the result).
      n_steps: the most iterations (traced; >= 1).
      tol: threshold on the total squared centre shift :math:`\sum_j \|t_j' - t_j\|^2` of an
        iteration (traced; >= 0; absolute, where scikit-learn's is relative to the data's mean
        variance). 0 = stop only when the labels stop changing.

    Returns:
      :class:`KMeans`; the inertia in the exact form :math:`\sum_i \|x_i - t_{l_i}\|^2` (as
      :func:`tokdyn.metrics.sse`). Initial centres that are not all finite (only possible traced)
      give NaN centres, labels -1 and a NaN inertia.

      Edge cases: NaN in, NaN out. Host data must be finite (a ``ValueError``); a valid point
      that is not finite (only possible traced) spoils the centre it joins, so the labels near it
      are -1 and the inertia NaN, and ``converged`` is False whatever the labels did. Jitted, vmappable over ``x``, ``tokens`` and
      ``mask``; products at the highest precision (no TF32 on GPUs).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
      >>> km = dynamics.kmeans(x, x[[0, 1]])   # both centres start in the first cluster
      >>> print(np.asarray(km.tokens).round(3))
      [[ 0.333  0.333]
       [10.333 10.333]]
      >>> km.labels.tolist(), f"{float(km.inertia):.3f}", bool(km.converged)
      ([0, 0, 0, 1, 1, 1], '2.667', True)

    References:
      Lloyd, S. P. (1982). Least squares quantization in PCM. *IEEE Transactions on Information
      Theory* 28(2), 129-137.
    """
    x = as_float(x)
    valid = jnp.ones(x.shape[:1], bool) if mask is None else mask
    x = jnp.where(valid[:, None], x, 0.0)  # padded rows cannot poison the products
    x_t = x.T
    tokens = tokens.astype(x.dtype)
    ids = jnp.arange(tokens.shape[0], dtype=jnp.int32)[:, None]  # (K, 1)

    def assign(t):  # (N,) int32
        nearest = jnp.argmax(scores_t(x_t, t, precision=_HIGHEST), axis=0).astype(jnp.int32)
        return jnp.where(valid, nearest, -1)

    def body(s):
        t, labels_old, step, _ = s
        labels = assign(t)
        members = (labels[None, :] == ids).astype(x.dtype)  # (K, N); no row on padded points (-1)
        count = jnp.sum(members, axis=1)[:, None]  # (K, 1)
        sums = jnp.matmul(members, x, precision=_HIGHEST)  # (K, D)
        new = jnp.where(count > 0, sums / jnp.maximum(count, 1.0), t)  # an empty cluster stays put
        done = jnp.all(labels == labels_old) | (jnp.sum((new - t) ** 2) <= tol)
        return new, labels, step + 1, done

    start = varying(
        (tokens, jnp.full(x.shape[:1], -1, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)), x, valid, tokens
    )
    t, _, steps, done = jax.lax.while_loop(lambda s: ~s[3] & (s[2] < n_steps), body, start)
    # a non-finite initial centre (traced: not inspected) would lose every point to it and come back
    # as a finite mean: report NaN centres, labels -1 and a NaN inertia instead
    t = jnp.where(jnp.all(jnp.isfinite(tokens)), t, jnp.nan)
    # non-finite data (traced: not inspected) has no converged clustering: NaN in, NaN out
    finite = jnp.all(jnp.isfinite(t)) & jnp.all(jnp.isfinite(x))
    labels = labels_t(x_t, t, valid, precision=_HIGHEST)  # -1 also where a distance is not finite
    sq = (x - t[jnp.maximum(labels, 0)]) ** 2  # (N, D), exact form
    inertia = jnp.where(jnp.any(valid & (labels < 0)), jnp.nan, jnp.sum(jnp.where(valid[:, None], sq, 0.0)))
    return KMeans(tokens=t, labels=labels, inertia=inertia, steps=steps, converged=done & finite)
