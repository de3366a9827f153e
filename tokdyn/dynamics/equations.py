"""The built-in rule's equations, written once: every piece of a step of
:data:`~tokdyn.dynamics.BUILTIN` (the scores, the softmax and Sinkhorn rows, the anchored means,
the repulsion, the temperature schedule, the Langevin scale, the stop test) as one function that
both of its programs call: the XLA loop (:mod:`tokdyn.dynamics.builtin`, run by
:mod:`tokdyn.dynamics.loop`) and the Pallas kernel (:mod:`tokdyn.dynamics.pallas`).

The two programs hold the token axis differently. XLA holds it as an array axis (tokens ``(T, D)``,
scores ``(T, N)``): :data:`STACKED`. The kernel, which Triton compiles and which cannot index a
vector held in registers, holds it as a Python tuple of ``T`` rows (each an ``(N,)`` vector, or a
token's ``D`` scalars): :data:`UNROLLED`. A :class:`Layout` is those few primitives (a reduction
over the tokens, one over the points, a product of tokens and points); the equations below are
written once in terms of them, and the elementwise ones (means, forces, schedule) take arrays and
scalars alike. The equations themselves are on the concepts page, :ref:`dynamics-rule`.

Every step works in the coordinates the loop hands it: for the built-in rule those centred on the
run's masked data mean (``tokdyn.dynamics.Rule.centred``), so the scores ``2 t.x - |t|^2`` keep
float32's precision wherever the data sit.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

EPS_MASS = 1e-8  # the weighted mean's epsilon (step 2 of the rule)
MIN_DISTANCE = 1e-3  # the repulsion's closest distance (step 3)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a program holds the token axis: the primitives the equations are written in.

    Attributes:
      name: ``"stacked"`` or ``"unrolled"``.
      map: ``map(f, *rows)``: ``f`` applied to every token's rows (stacked: once, to the arrays).
      max: the maximum over tokens of ``rows`` (per point).
      sum: the sum over tokens of ``rows`` (per point).
      logsumexp: ``log sum_j exp(rows_j)`` over tokens (per point; a column of ``-inf`` gives
        ``-inf``).
      point_logsumexp: ``point_logsumexp(rows, w)``: per token, ``log sum_i w_i exp(rows_i)`` over
        the points (``-inf`` where no point has weight).
      dots: ``dots(tokens, xs, precision=None)``: per token, ``t . x_i`` for every point
        (``precision``: of the stacked form's product; ``None`` is JAX's default, TF32 for float32
        on recent GPUs).
      squares: per token, ``|t|^2``.
    """

    name: str
    map: Callable
    max: Callable
    sum: Callable
    logsumexp: Callable
    point_logsumexp: Callable
    dots: Callable
    squares: Callable


STACKED = Layout(
    name="stacked",
    map=lambda f, *rows: f(*rows),
    max=lambda rows: jnp.max(rows, axis=0, keepdims=True),
    sum=lambda rows: jnp.sum(rows, axis=0, keepdims=True),
    logsumexp=lambda rows: jax.nn.logsumexp(rows, axis=0, keepdims=True),
    point_logsumexp=lambda rows, w: jax.nn.logsumexp(rows, axis=1, b=w[None, :], keepdims=True),
    dots=lambda tokens, x_t, precision=None: jnp.matmul(tokens, x_t, precision=precision),  # one product
    squares=lambda tokens: jnp.sum(tokens * tokens, axis=-1)[:, None],
)
"""The XLA form: tokens ``(T, D)``, points transposed ``(D, N)``, rows ``(T, N)``."""


def _unrolled_point_logsumexp(rows, w):
    out = []
    for r in rows:
        m = jnp.max(jnp.where(w > 0, r, -jnp.inf))
        out.append(m + jnp.log(jnp.sum(w * jnp.exp(r - jnp.where(jnp.isfinite(m), m, 0.0)))))
    return tuple(out)


def _unrolled_logsumexp(rows):
    top = functools.reduce(jnp.maximum, rows)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    return safe + jnp.log(functools.reduce(jnp.add, [jnp.exp(r - safe) for r in rows]))


def _unrolled_dots(tokens, xs, precision=None):
    out = []
    for t in tokens:  # multiply-adds over the D coordinates: no product unit in the kernel
        acc = t[0] * xs[0]
        for d in range(1, len(xs)):
            acc = acc + t[d] * xs[d]
        out.append(acc)
    return tuple(out)


UNROLLED = Layout(
    name="unrolled",
    map=lambda f, *rows: tuple(f(*r) for r in zip(*rows)),
    max=lambda rows: functools.reduce(jnp.maximum, rows),
    sum=lambda rows: functools.reduce(jnp.add, rows),
    logsumexp=_unrolled_logsumexp,
    point_logsumexp=_unrolled_point_logsumexp,
    dots=_unrolled_dots,
    squares=lambda tokens: tuple(sum(c * c for c in t) for t in tokens),
)
"""The kernel's form: tokens a tuple of ``T`` tuples of ``D`` scalars, points a tuple of ``D``
``(N,)`` vectors, rows a tuple of ``T`` ``(N,)`` vectors."""


# ---------------------------------------------------------------------------------------------- step 1


def temperature(tau, ratio, n_anneal, step):
    """The annealed temperature of step ``step``: ``tau * r ** max(0, 1 - s / S)``, exactly ``tau``
    when ``r = 1``, ``S = 0`` or ``s >= S`` (scalars; ``r ** f`` as ``exp(f log r)``, which Triton
    has).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> print(np.asarray(eq.temperature(1.0, 100.0, 4, jnp.arange(6))).round(2))
      [100.    31.62  10.     3.16   1.     1.  ]
    """
    frac = jnp.clip(1.0 - step / jnp.maximum(n_anneal, 1.0), 0.0, 1.0)
    on = (n_anneal > 0) & (frac > 0)
    frac = jnp.where(on, frac, 0.0)
    # at r = 1 the factor is exactly 1 but keeps its derivative frac in r (a branch on r != 1 alone
    # would zero the gradient there)
    factor = jnp.where(ratio != 1.0, jnp.exp(frac * jnp.log(ratio)), 1.0 + (ratio - 1.0) * frac)
    return jnp.where(on, tau * factor, tau)


def effective_temperature(tau, dtype):
    """The temperature a step divides by: ``tau`` clamped up to the smallest normal float of
    ``dtype`` (a 0 or subnormal value acts as the hard-assignment limit), NaN when negative or NaN
    (a traced value out of range cannot be refused).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.dynamics import equations as eq
      >>> float(eq.effective_temperature(0.0, jnp.float32)) == float(jnp.finfo(jnp.float32).tiny)
      True
      >>> print(float(eq.effective_temperature(-1.0, jnp.float32)))
      nan
    """
    dtype = jnp.result_type(dtype, tau)
    return jnp.where(tau >= 0, jnp.maximum(tau, jnp.finfo(dtype).tiny), jnp.nan)


# ---------------------------------------------------------------------------------------------- step 2


def scores(tokens, points, layout: Layout, precision=None):
    """Per token, ``2 t.x_i - |t|^2``: minus the squared distance up to a per-point constant
    (``points``: ``(D, N)`` stacked, ``D`` vectors unrolled). Its float32 rounding grows with
    ``|t|^2``, hence the centred coordinates (module docstring).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> tokens = jnp.array([[0.0, 0.0], [2.0, 0.0]])
      >>> x_t = jnp.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])   # 3 points, transposed (D, N)
      >>> print(np.asarray(eq.scores(tokens, x_t, eq.STACKED)))   # (T, N)
      [[ 0.  0.  0.]
       [-4.  0.  4.]]
    """
    tx = layout.dots(tokens, points, precision=precision)
    return layout.map(lambda a, tt: 2.0 * a - tt, tx, layout.squares(tokens))


def logits(s, tau, layout: Layout):
    """``(s - max_k s) / tau``: each point's nearest token gets exactly 0, the others <= 0, so a
    tiny temperature gives ``-inf`` (weight 0), never ``inf - inf``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> tokens = jnp.array([[0.0, 0.0], [2.0, 0.0]])
      >>> x_t = jnp.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])   # 3 points, transposed (D, N)
      >>> print(np.asarray(eq.logits(eq.scores(tokens, x_t, eq.STACKED), 1.0, eq.STACKED)))
      [[ 0.  0. -4.]
       [-4.  0.  0.]]
    """
    top = layout.max(s)
    return layout.map(lambda r: (r - top) / tau, s)


def softmax_rows(l, w, layout: Layout):
    """The softmax over tokens of the logits ``l`` (their maximum is 0), weighted by the points'
    weights ``w`` (zero on padded points).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> tokens = jnp.array([[0.0, 0.0], [2.0, 0.0]])
      >>> x_t = jnp.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])   # 3 points, transposed (D, N)
      >>> l = eq.logits(eq.scores(tokens, x_t, eq.STACKED), 1.0, eq.STACKED)
      >>> print(np.asarray(eq.softmax_rows(l, jnp.ones(3), eq.STACKED)).round(3))   # columns sum to 1
      [[0.982 0.5   0.018]
       [0.018 0.5   0.982]]
    """
    e = layout.map(jnp.exp, l)
    scale = w / layout.sum(e)
    return layout.map(lambda r: r * scale, e)


def sinkhorn_columns(l, layout: Layout):
    """Every point's mass over tokens sums to 1: the log-plan ``l`` normalised over tokens."""
    lse = layout.logsumexp(l)
    return layout.map(lambda r: r - lse, l)


def sinkhorn_round(l, w, log_row, layout: Layout):
    """One Sinkhorn round on a log-plan: every token's mass (over valid points) to ``log_row``
    (a token with no valid point left alone), then every point's column to 1."""
    r = layout.point_logsumexp(l, w)
    return sinkhorn_columns(
        layout.map(lambda row, m: row + (log_row - jnp.where(jnp.isfinite(m), m, log_row)), l, r), layout
    )


def sinkhorn_log_row(w, n_tokens: int, dtype):
    """The log of each token's target mass, ``log(sum(w) / T)`` (``sum(w)`` at least the smallest
    normal float).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.dynamics import equations as eq
      >>> print(f"{float(eq.sinkhorn_log_row(jnp.ones(4), 2, jnp.float32)):.4f}")   # log(4 / 2)
      0.6931
    """
    return jnp.log(jnp.maximum(jnp.sum(w), jnp.finfo(dtype).tiny) / n_tokens)


def sinkhorn_rows(l, w, n_iters, layout: Layout, rounds: Callable):
    """The balanced assignment: ``rounds(l0, w, log_row, n_iters)`` Sinkhorn rounds from the
    column-normalised logits, exponentiated and weighted. ``rounds`` is the program's loop over
    :func:`sinkhorn_round` (the XLA form's is differentiable in reverse mode)."""
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(l))
    n_tokens = len(l) if layout.name == "unrolled" else l.shape[0]
    ls = rounds(sinkhorn_columns(l, layout), w, sinkhorn_log_row(w, n_tokens, dtype), n_iters)
    return layout.map(lambda r: jnp.exp(r) * w, ls)


def anchored_mean(weighted_sum, mass, anchor, x_sum, n_valid, sigma):
    """Step 2's weighted mean of a token, ``(sum_i a_i x_i + eps (1 - sigma) anchor + sigma eps
    sum_i x_i) / (sum_i a_i + eps (1 - sigma) + sigma eps n)``: sigma = 0 puts the mass epsilon on
    ``anchor`` (the token itself, or the user's origin for the published form), sigma = 1 on
    every valid point (Slot Attention). Elementwise (a coordinate or a ``(T, D)`` array).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.dynamics import equations as eq
      >>> # 3 points of mass 1 summing to 6: the mean 2, the anchor's weight 1e-8 negligible
      >>> print(f"{float(eq.anchored_mean(jnp.array(6.0), jnp.array(3.0), 10.0, 0.0, 3.0, 0.0)):.4f}")
      2.0000
      >>> print(f"{float(eq.anchored_mean(jnp.array(0.0), jnp.array(0.0), 10.0, 0.0, 3.0, 0.0)):.4f}")   # no mass
      10.0000
    """
    return (weighted_sum + (EPS_MASS * (1.0 - sigma)) * anchor + (sigma * EPS_MASS) * x_sum) / (
        mass + (EPS_MASS * (1.0 - sigma) + (sigma * EPS_MASS) * n_valid)
    )


# ---------------------------------------------------------------------------------------------- step 3


def inverse_cube(r2):
    """The repulsion's weight of a pair at squared distance ``r2``: ``max(r, MIN_DISTANCE)^-3``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> print(np.asarray(eq.inverse_cube(jnp.array([4.0, 0.0]))))   # r = 2; r = 0 clamped to MIN_DISTANCE
      [1.25e-01 1.00e+09]
    """
    r2 = jnp.maximum(r2, MIN_DISTANCE**2)
    return jax.lax.rsqrt(r2) / r2


def coulomb_stacked(tokens):
    """(T, D) ``sum_{k != j} (t_j - t_k) / max(|t_j - t_k|, MIN_DISTANCE)^3`` (the XLA form).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> print(np.asarray(eq.coulomb_stacked(jnp.array([[0.0, 0.0], [2.0, 0.0]]))))
      [[-0.25  0.  ]
       [ 0.25  0.  ]]
    """
    diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D)
    inv_r3 = inverse_cube(jnp.sum(diff * diff, axis=-1))  # (T, T)
    # the diagonal (diff 0) contributes 0 either way, but its weight MIN_DISTANCE^-3 would reach the
    # reverse-mode derivative as +1e9 g - 1e9 g on the same token: cancellation that wipes out float32
    inv_r3 = jnp.where(jnp.eye(tokens.shape[0], dtype=bool), 0.0, inv_r3)
    return jnp.sum(diff * inv_r3[..., None], axis=1)


def coulomb_unrolled(tokens):
    """:func:`coulomb_stacked` on a tuple of tokens, each a tuple of scalars (the kernel's form).

    Examples:
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> force = eq.coulomb_unrolled(((0.0, 0.0), (2.0, 0.0)))   # tokens as tuples of scalars
      >>> print(np.asarray(force))
      [[-0.25  0.  ]
       [ 0.25  0.  ]]
    """
    out = []
    for j, tj in enumerate(tokens):
        rep = [0.0] * len(tj)
        for k, tk in enumerate(tokens):
            if k == j:
                continue
            diff = [a - b for a, b in zip(tj, tk)]
            w = inverse_cube(sum(c * c for c in diff))
            rep = [r + c * w for r, c in zip(rep, diff)]
        out.append(tuple(rep))
    return tuple(out)


def velocity(v, token, mean, rep, momentum, damping, repulsion):
    """Step 3: ``beta v + alpha (m - t + gamma coulomb(t))`` (elementwise).

    Examples:
      >>> from tokdyn.dynamics import equations as eq
      >>> print(float(eq.velocity(0.5, 0.0, 1.0, 0.0, 0.5, 1.0, 0.0)))   # 0.5 * 0.5 + (1 - 0)
      1.25
    """
    return momentum * v + damping * (mean - token + repulsion * rep)


def langevin_scale(damping, langevin):
    """The Langevin kick's standard deviation ``sqrt(2 alpha T)``, 0 when ``2 alpha T <= 0``
    (``sqrt`` away from 0 only: a zero variance's infinite derivative would turn an untaken
    branch's zero cotangent into NaN).

    Examples:
      >>> from tokdyn.dynamics import equations as eq
      >>> print(float(eq.langevin_scale(0.5, 1.0)), float(eq.langevin_scale(0.5, 0.0)))   # sqrt(2 * 0.5 * 1)
      1.0 0.0
    """
    var = 2.0 * damping * langevin
    return jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)


# ---------------------------------------------------------------------------------------------- step 4


def may_stop(anneal_steps, step):
    """Whether the run may stop after step ``step``: not while the temperature still anneals.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.dynamics import equations as eq
      >>> eq.may_stop(3, jnp.arange(5)).tolist()   # annealing over 3 steps
      [False, False, False, True, True]
    """
    return step >= anneal_steps


def stops(delta, tol, anneal_steps, step):
    """The stop test after step ``step``: the largest coordinate movement ``delta`` below ``tol``
    once the annealing is over.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.dynamics import equations as eq
      >>> eq.stops(1e-4, 1e-3, 3, jnp.arange(5)).tolist()   # still, but annealing until step 3
      [False, False, False, True, True]
    """
    return (delta < tol) & may_stop(anneal_steps, step)


def masked_mean(x, w):
    """The (D,) mean of the valid points of (N, D) ``x`` (weights ``w``): the centre of the
    coordinates the built-in rule runs in (zeros when no point is valid).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.dynamics import equations as eq
      >>> x = jnp.array([[0.0, 0.0], [2.0, 4.0], [9.0, 9.0]])
      >>> print(np.asarray(eq.masked_mean(x, jnp.array([1.0, 1.0, 0.0]))))   # the third point is padding
      [1. 2.]
    """
    return (w @ x) / jnp.maximum(jnp.sum(w), 1.0)


__all__ = [
    "Layout",
    "STACKED",
    "UNROLLED",
    "EPS_MASS",
    "MIN_DISTANCE",
    "temperature",
    "effective_temperature",
    "scores",
    "logits",
    "softmax_rows",
    "sinkhorn_columns",
    "sinkhorn_round",
    "sinkhorn_log_row",
    "sinkhorn_rows",
    "anchored_mean",
    "inverse_cube",
    "coulomb_stacked",
    "coulomb_unrolled",
    "velocity",
    "langevin_scale",
    "may_stop",
    "stops",
    "masked_mean",
]
