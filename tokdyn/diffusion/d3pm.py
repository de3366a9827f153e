"""The discrete process, D3PM (:class:`Discrete`: a uniform or absorbing kernel, applied in O(S)
without S x S matrices): :func:`marginal`, :func:`step_likelihood`, :func:`posterior_logits`,
:func:`hybrid_loss`, :func:`q_sample_discrete`, :func:`sample_discrete`, :func:`nll_bound`; the
matrices for checks (:func:`transition_matrix`, :func:`cumulative_matrix`)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.diffusion._common import (
    alpha_bar_of,
    as_f32,
    check_betas,
    check_float,
    check_fn,
    check_ints,
    check_same_shape,
    check_shape_arg,
    check_tables,
    check_time,
    in_range,
    nan_unless,
    ok_time,
    one_minus_alpha_bar_of,
)
from tokdyn.diffusion.schedules import betas

KERNELS = ("uniform", "absorbing")
_TINY = 1e-30  # floor inside logarithms of probabilities that may be exactly 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Discrete:
    """A D3PM process: ``kernel`` and ``classes`` (static), ``betas`` (T,), ``alpha_bar`` (T+1,)
    and ``one_minus_alpha_bar`` (T+1,) (float32, traced; built by :func:`discrete` in float64)."""

    betas: jax.Array
    alpha_bar: jax.Array
    one_minus_alpha_bar: jax.Array
    kernel: str = dataclasses.field(default="uniform", metadata=dict(static=True))
    classes: int = dataclasses.field(default=2, metadata=dict(static=True))

    @property
    def T(self) -> int:
        """The number of diffusion steps T (the length of ``betas``)."""
        return self.betas.shape[-1]

    @property
    def states(self) -> int:
        """S, the number of states of a cell: C for ``uniform``, C + 1 for ``absorbing`` (the mask)."""
        return n_states(self.kernel, self.classes)

    @property
    def mask(self) -> int:
        """The mask state (absorbing), else -1."""
        return self.classes if self.kernel == "absorbing" else -1


def _check_discrete(proc) -> int:
    if not isinstance(proc, Discrete):
        raise TypeError(f"proc must be a tokdyn.diffusion.Discrete (from discrete()), got {type(proc).__name__}")
    _checks.choice("proc.kernel", proc.kernel, KERNELS)
    _checks.positive_int("proc.classes", proc.classes, minimum=2)
    check_tables(proc, ("betas",), ("alpha_bar", "one_minus_alpha_bar"))
    return proc.T


def _check_classes(name: str, x0, proc: Discrete):
    return check_ints(name, x0, proc.classes, "classes", "classes")


def _check_states(name: str, x_t, proc: Discrete):
    return check_ints(name, x_t, proc.states, "states", "states")


def _check_last_axis(name: str, value, size: int, what: str, cells=None, cells_name: str = ""):
    """A float array ``(..., size)``; its leading axes equal to ``np.shape(cells)`` when given."""
    dtype = _checks.dtype_of(value)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a float array (..., {size}), got dtype {dtype}")
    if np.ndim(value) < 1 or np.shape(value)[-1] != size:
        raise ValueError(f"{name} must have a last axis of {size} ({what}), got shape {np.shape(value)}")
    if cells is not None and np.shape(value)[:-1] != np.shape(cells):
        raise ValueError(
            f"{name} must have shape {np.shape(cells) + (size,)} ({cells_name} of shape "
            f"{np.shape(cells)}, then {what}), got {np.shape(value)}"
        )
    return value


def n_states(kernel: str, classes: int) -> int:
    """S: ``classes`` for the uniform kernel, ``classes + 1`` (the mask) for the absorbing one."""
    _checks.choice("kernel", kernel, KERNELS)
    return classes + 1 if kernel == "absorbing" else classes


def discrete(kernel: str, classes: int, schedule_or_betas=None, T: int | None = None) -> Discrete:
    """A :class:`Discrete` (D3PM) process; its tables are computed in float64 and stored as float32.

    Args:
      kernel: "uniform" or "absorbing" (static).
      classes: C >= 2, the number of classes (static).
      schedule_or_betas: a schedule name (with ``T``) or explicit (T,) betas, each in (0, 1]. None:
        "cosine" for the uniform kernel (Nichol & Dhariwal's cos², not D3PM's cos, which is
        "cosine_d3pm"; see the module docstring), "absorbing" (1 / (T - t + 1)) for the absorbing one.
      T: the number of steps, required with a schedule name.

    Returns:
      The :class:`Discrete` process.
    """
    _checks.choice("kernel", kernel, KERNELS)
    classes = _checks.positive_int("classes", classes, minimum=2)
    if schedule_or_betas is None:
        schedule_or_betas = "absorbing" if kernel == "absorbing" else "cosine"
    if isinstance(schedule_or_betas, str):
        if T is None:
            raise ValueError(f"T must be given with schedule={schedule_or_betas!r}, got None")
        b = betas(schedule_or_betas, T)
    else:
        b = check_betas("betas", schedule_or_betas, high_open=False)
    return Discrete(
        betas=as_f32(b),
        alpha_bar=as_f32(alpha_bar_of(b)),
        one_minus_alpha_bar=as_f32(one_minus_alpha_bar_of(b)),
        kernel=kernel,
        classes=classes,
    )


def stationary(proc: Discrete) -> jax.Array:
    """(S,) the limit distribution: uniform over the C classes, or all mass on the mask."""
    _check_discrete(proc)
    if proc.kernel == "absorbing":
        return jax.nn.one_hot(proc.mask, proc.states, dtype=jnp.float32)
    return jnp.full((proc.states,), 1.0 / proc.classes, jnp.float32)


def transition_matrix(proc: Discrete, t) -> jax.Array:
    """(S, S) Q_t (rows: x_{t-1}, columns: x_t), t in 1..T (a traced ``t`` outside: NaN)."""
    T = _check_discrete(proc)
    check_time(t, T)
    b = proc.betas[t - 1]
    return nan_unless(ok_time(t, T), (1.0 - b) * jnp.eye(proc.states) + b * stationary(proc)[None, :])


def cumulative_matrix(proc: Discrete, t) -> jax.Array:
    """(S, S) Qbar_t = Q_1 ... Q_t in closed form, t in 0..T (the identity at t = 0; a traced
    ``t`` outside: NaN)."""
    T = _check_discrete(proc)
    check_time(t, T, low=0)
    a, one_minus = proc.alpha_bar[t], proc.one_minus_alpha_bar[t]
    return nan_unless(ok_time(t, T, 0), a * jnp.eye(proc.states) + one_minus * stationary(proc)[None, :])


def published_cumulative_matrix(alpha_bar_t, classes: int) -> jax.Array:
    """(C, C) the published discrete-grid kernel, for contrast: stay with probability abar_t,
    move to each *other* colour with (1 - abar_t) / (C - 1). Not a valid D3PM kernel: at
    abar_T = 0 a cell never keeps its colour. ``alpha_bar_t`` a scalar in [0, 1]."""
    classes = _checks.positive_int("classes", classes, minimum=2)
    if np.ndim(alpha_bar_t) != 0:
        raise ValueError(f"alpha_bar_t must be a scalar in [0, 1], got shape {np.shape(alpha_bar_t)}")
    _checks.real("alpha_bar_t", alpha_bar_t, low=0.0, high=1.0)
    a = jnp.asarray(alpha_bar_t, jnp.float32)
    off = (1.0 - a) / (classes - 1)
    return (a - off) * jnp.eye(classes) + off


def _pad_states(proc: Discrete, probs):
    """(..., C) class probabilities -> (..., S) state probabilities (mask state 0)."""
    if proc.kernel == "absorbing":
        return jnp.concatenate([probs, jnp.zeros(probs.shape[:-1] + (1,), probs.dtype)], -1)
    return probs


def marginal(proc: Discrete, probs, t):
    """``probs @ Qbar_t`` for (..., S) distributions over states, in O(S); t in 0..T (a traced
    ``t`` outside: NaN)."""
    T = _check_discrete(proc)
    _check_last_axis("probs", probs, proc.states, "states")
    check_time(t, T, low=0)
    a, one_minus = proc.alpha_bar[t], proc.one_minus_alpha_bar[t]
    return nan_unless(ok_time(t, T, 0), a * probs + one_minus * probs.sum(-1, keepdims=True) * stationary(proc))


def step_likelihood(proc: Discrete, x_t, t):
    """(..., S): ``Q_t[x_{t-1}, x_t]`` as a function of x_{t-1}, for integer states ``x_t`` (...)
    in ``[0, S)`` and t in 1..T. Held in JAX arrays, a ``t`` outside 1..T makes every entry NaN,
    a state outside ``[0, S)`` its cell's row."""
    T = _check_discrete(proc)
    _check_states("x_t", x_t, proc)
    check_time(t, T)
    b = proc.betas[t - 1]
    out = (1.0 - b) * jax.nn.one_hot(x_t, proc.states, dtype=jnp.float32) + b * stationary(proc)[x_t][..., None]
    ok = in_range(x_t, proc.states)[..., None]  # (..., 1) cells
    time_ok = ok_time(t, T)
    return nan_unless(ok if time_ok is None else ok & time_ok, out)


def q_sample_discrete(key, proc: Discrete, x0, t):
    """A draw of ``x_t ~ q(x_t | x_0)``, by Gumbel-max over ``log Qbar_t[x_0]``.

    Args:
      key: PRNG key of the draw.
      proc: a :class:`Discrete` (a pytree; its tables may be traced).
      x0: (...) integer classes in ``[0, C)``.
      t: integer scalar in 0..T (t = 0 gives x_0); may be traced.

    Returns:
      (...) int32 states in ``[0, S)``. Host values out of range are a ``ValueError``; held in JAX
      arrays, a ``t`` outside 0..T makes every cell -1, a class outside ``[0, C)`` its own cell.
    """
    _checks.prng_key("key", key)
    T = _check_discrete(proc)
    _check_classes("x0", x0, proc)
    check_time(t, T, low=0)
    p = marginal(proc, jax.nn.one_hot(x0, proc.states, dtype=jnp.float32), t)
    g = jax.random.gumbel(key, p.shape, jnp.float32)
    draw = jnp.argmax(jnp.log(jnp.maximum(p, _TINY)) + g, -1).astype(jnp.int32)
    ok = in_range(x0, proc.classes)
    time_ok = ok_time(t, T, 0)
    return jnp.where(ok if time_ok is None else ok & time_ok, draw, -1)


def posterior_logits(proc: Discrete, x0_probs, x_t, t):
    """The normalised log of ``Q_t[x_{t-1}, x_t] (x0_probs Qbar_{t-1})[x_{t-1}]``: the posterior
    ``q(x_{t-1} | x_t, x_0)`` for one-hot ``x0_probs``, the model's ``p(x_{t-1} | x_t)`` for predicted ones.

    Args:
      proc: a :class:`Discrete` (a pytree; its tables may be traced).
      x0_probs: (..., C) float probabilities over classes (>= 0).
      x_t: (...) integer states in ``[0, S)``.
      t: integer scalar in 1..T; may be traced. At t = 1 (``Qbar_0 = I``) this is
        ``Q_1[x_0, x_1] x0_probs[x_0]`` normalised; :func:`hybrid_loss` and :func:`sample_discrete`
        use the x_0 distribution itself there.

    Returns:
      (..., S) log-probabilities of x_{t-1}: NaN everywhere for a traced ``t`` outside 1..T, NaN in a
      cell whose state is outside ``[0, S)``.
    """
    T = _check_discrete(proc)
    _check_last_axis("x0_probs", x0_probs, proc.classes, "classes", x_t, "x_t")
    _check_states("x_t", x_t, proc)
    check_time(t, T)
    if _checks.on_host(x0_probs) and np.any(np.asarray(x0_probs) < 0):
        raise ValueError("x0_probs must hold probabilities (>= 0), got a negative entry")
    check_float("x0_probs", x0_probs)
    p = step_likelihood(proc, x_t, t) * marginal(proc, _pad_states(proc, x0_probs), t - 1)
    p = p / jnp.maximum(p.sum(-1, keepdims=True), _TINY)
    ok = in_range(x_t, proc.states)[..., None]  # (..., 1) cells
    time_ok = ok_time(t, T)
    return nan_unless(ok if time_ok is None else ok & time_ok, jnp.log(jnp.maximum(p, _TINY)))


def _kl(log_q, log_p):
    q = jnp.exp(log_q)
    return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), -1)


def hybrid_loss(proc: Discrete, x0, x_t, t, x0_logits, lam=0.01):
    """D3PM's hybrid loss per cell: the bound's term at ``t`` plus ``lam`` times the x_0 cross-entropy.

    Args:
      proc: a :class:`Discrete` (a pytree; its tables may be traced).
      x0: (...) integer classes in ``[0, C)``.
      x_t: (...) integer states in ``[0, S)``, of ``x0``'s shape.
      t: integer scalar in 1..T; may be traced.
      x0_logits: (..., C) float logits of the model's ``p~(x_0 | x_t)``.
      lam: scalar >= 0; may be traced.

    Returns:
      ``(loss, vb, ce)``, each (...): ``vb`` = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for
      t >= 2 and ``-log p(x_0 | x_1)`` at t = 1, ``ce = -log p~(x_0 | x_t)``, ``loss = vb + lam ce``;
      in the logits' float dtype, at least float32. Held in JAX arrays, a ``t`` outside 1..T makes all
      three NaN, a class or state out of range NaN in its cell (host values: ``ValueError``).
    """
    T = _check_discrete(proc)
    _check_classes("x0", x0, proc)
    _check_states("x_t", x_t, proc)
    check_same_shape("x_t", x_t, "x0", x0)
    _check_last_axis("x0_logits", x0_logits, proc.classes, "proc.classes", x0, "x0")
    check_time(t, T)
    if np.ndim(lam) != 0:
        raise ValueError(f"lam must be a scalar >= 0, got shape {np.shape(lam)}")
    _checks.real("lam", lam, low=0.0)
    x0, x_t = jnp.asarray(x0), jnp.asarray(x_t)
    x0_logits = jnp.asarray(x0_logits)
    logp0 = jax.nn.log_softmax(x0_logits.astype(jnp.promote_types(x0_logits.dtype, jnp.float32)), -1)  # float64 stays
    ce = -jnp.take_along_axis(logp0, x0[..., None], -1)[..., 0]
    tt = jnp.maximum(t, 2)  # the t >= 2 branch, evaluated harmlessly at t = 1 and discarded
    log_q = posterior_logits(proc, jax.nn.one_hot(x0, proc.classes, dtype=jnp.float32), x_t, tt)
    log_p = posterior_logits(proc, jnp.exp(logp0), x_t, tt)
    vb = jnp.where(t == 1, ce, _kl(log_q, log_p))
    ok = in_range(x0, proc.classes) & in_range(x_t, proc.states)  # (...) cells
    time_ok = ok_time(t, T)
    ok = ok if time_ok is None else ok & time_ok
    return tuple(nan_unless(ok, v) for v in (vb + lam * ce, vb, ce))


def prior_kl(proc: Discrete, x0):
    """(...) KL(q(x_T | x_0) || stationary): the constant last term of the bound, per cell.
    ``x0`` integer classes in ``[0, C)`` (held in a JAX array, a class outside: NaN in its cell)."""
    _check_discrete(proc)
    _check_classes("x0", x0, proc)
    q = marginal(proc, jax.nn.one_hot(x0, proc.states, dtype=jnp.float32), proc.T)
    pi = stationary(proc)
    kl = jnp.sum(jnp.where(q > 0, q * (jnp.log(jnp.maximum(q, _TINY)) - jnp.log(jnp.maximum(pi, _TINY))), 0.0), -1)
    return jnp.where(in_range(x0, proc.classes), kl, jnp.nan)


def sample_discrete(key, proc: Discrete, x0_logits_fn: Callable, shape):
    """Ancestral sampling: x_T from the stationary distribution, T - 1 steps of ``p(x_{t-1} | x_t)``
    (:func:`posterior_logits`) under ``lax.scan``, then x_0 ~ ``p~(x_0 | x_1)``.

    Args:
      key: PRNG key of every draw.
      proc: a :class:`Discrete` (a pytree; its tables may be traced).
      x0_logits_fn: ``(x_t, t) -> (*shape, C)`` float logits of x_0 (``t`` a traced int scalar).
      shape: the static shape of a sample (a tuple of ints, or an int).

    Returns:
      ``shape`` int32 classes.
    """
    _checks.prng_key("key", key)
    _check_discrete(proc)
    check_fn("x0_logits_fn", x0_logits_fn, "(x_t, t) -> (*shape, C) logits")
    shape = check_shape_arg(shape)
    k0, k1, k2 = jax.random.split(key, 3)
    pi = stationary(proc)
    x = jax.random.categorical(k0, jnp.log(jnp.maximum(pi, _TINY)), shape=shape).astype(jnp.int32)

    def x0_logits(x, t):
        logits = x0_logits_fn(x, t)
        _check_last_axis("x0_logits_fn(x_t, t)", logits, proc.classes, "proc.classes", x, "x_t")
        return logits.astype(jnp.float32)

    def step(x, args):
        t, k = args
        probs = jax.nn.softmax(x0_logits(x, t), -1)
        logits = posterior_logits(proc, probs, x, t)
        return jnp.argmax(logits + jax.random.gumbel(k, logits.shape, jnp.float32), -1).astype(jnp.int32), None

    ts = jnp.arange(proc.T, 1, -1)
    x, _ = jax.lax.scan(step, x, (ts, jax.random.split(k1, proc.T - 1)))
    logits = x0_logits(x, jnp.asarray(1, jnp.int32))
    return jnp.argmax(logits + jax.random.gumbel(k2, logits.shape, jnp.float32), -1).astype(jnp.int32)


def nll_bound(key, proc: Discrete, x0_logits_fn: Callable, x0):
    """The variational bound on ``-log p(x_0)`` in nats, summed over the cells of ``x0``: every term,
    ``sum_{t=2}^T KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) - log p(x_0 | x_1) + KL(q(x_T | x_0) ||
    stationary)``, each at one draw of x_t ~ q(x_t | x_0) (key ``fold_in(key, t)``).

    Args:
      key: PRNG key of the draws of x_t.
      proc: a :class:`Discrete` (a pytree; its tables may be traced).
      x0_logits_fn: ``(x_t, t) -> (..., C)`` float logits of x_0, called T times under ``lax.map``.
      x0: (...) integer classes in ``[0, C)``.

    Returns:
      The scalar bound; NaN when ``x0`` is a JAX array holding a class outside ``[0, C)`` (host data:
      ``ValueError``).
    """
    _checks.prng_key("key", key)
    _check_discrete(proc)
    check_fn("x0_logits_fn", x0_logits_fn, "(x_t, t) -> (..., C) logits")
    _check_classes("x0", x0, proc)

    def term(t):
        x_t = q_sample_discrete(jax.random.fold_in(key, t), proc, x0, t)
        return jnp.sum(hybrid_loss(proc, x0, x_t, t, x0_logits_fn(x_t, t), 0.0)[1])

    terms = jax.lax.map(term, jnp.arange(1, proc.T + 1))
    return jnp.sum(terms) + jnp.sum(prior_kl(proc, x0))
