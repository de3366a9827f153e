"""The built-in update rule: its step (:func:`update`; the softmax assignment
:func:`soft_assignment`, the balanced one :func:`sinkhorn`, the repulsion :func:`coulomb`, the
annealed temperature :func:`temperature_schedule`), the nearest-token labels (:func:`hard_labels`)
and the rule as a value, :data:`BUILTIN` (and :data:`BUILTIN_ORIGIN`, the published form of the
weighted mean). Its knobs are :class:`~tokdyn.dynamics.hparams.Hparams`; the equations are on the
concepts page, :ref:`dynamics-rule`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.dynamics._common import as_float, check_points, labels_t, point_weights, real_array, scores_t
from tokdyn.dynamics.hparams import FIELDS, MAX_SINKHORN_ITERS, Hparams
from tokdyn.dynamics.rule import Points, Rule


EPS_MASS = 1e-8
MIN_DISTANCE = 1e-3


_SINKHORN_BLOCK = 10  # rounds per block of the differentiable Sinkhorn loop (divides MAX_SINKHORN_ITERS)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Motion:
    """The state of the built-in rule (:data:`BUILTIN`): tokens (T, D) and velocity (T, D)."""

    tokens: jax.Array
    velocity: jax.Array


def _check_scalar_knobs(hparams):
    """Every leaf one value per run (shape ()): shapes are known even for tracers, so always checked."""
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.dynamics.Hparams, got {type(hparams).__name__}")
    for name in FIELDS:
        value = getattr(hparams, name)
        if isinstance(value, (int, float)):  # the common case, without NumPy's cost per call
            continue
        shape = np.shape(value)
        if shape != ():
            raise ValueError(
                f"hparams.{name} must be a scalar (one value per run), got shape {shape}. A knob with one "
                f"value per step is not supported: for a temperature schedule use anneal_ratio and "
                f"anneal_steps; for any other per-step values call dynamics.update in your own lax.scan "
                f"with a scalar Hparams per step; to batch runs, jax.vmap over a stacked Hparams "
                f"(Hparams.stack)"
            )


def _check_hparams(hparams, key):
    _check_scalar_knobs(hparams)
    hparams.validate()
    if key is None:
        if hparams.stochastic:
            raise ValueError(
                f"hparams.langevin={hparams.langevin!r} > 0 makes the dynamics stochastic: pass "
                "key=jax.random.key(seed)"
            )
    else:
        _checks.prng_key("key", key)


def _check_update(x, tokens, velocity, hparams, mask, step, key):
    arrays = check_points(x, tokens, mask)
    real_array("velocity", velocity, ndim=2)
    if np.shape(velocity) != np.shape(tokens):
        raise ValueError(f"velocity must have the shape of tokens {np.shape(tokens)}, got {np.shape(velocity)}")
    _check_hparams(hparams, key)
    return {**arrays, **_checks.host_arrays(velocity=velocity)}


def _effective_temperature(temperature, dtype):
    """The temperature a step divides by: ``temperature`` clamped up to the smallest normal float
    (a traced 0 or subnormal value, which the CPU may flush to 0, acts as the hard-assignment
    limit), NaN when negative or NaN (a traced value out of range cannot be refused)."""
    dtype = jnp.result_type(dtype, temperature)
    return jnp.where(temperature >= 0, jnp.maximum(temperature, jnp.finfo(dtype).tiny), jnp.nan)


def _logits_t(x_t, tokens, temperature):
    """(T, N) ``-(|x_i - t_j|^2 - min_k |x_i - t_k|^2) / tau``: each point's nearest token gets
    exactly 0 and the others a value <= 0, so a tiny temperature gives ``-inf`` (weight 0), never
    ``inf - inf``: the soft assignment tends to the hard one as tau -> 0. At tau = 1 these are the
    logits ``s - max_j s`` bit for bit."""
    s = scores_t(x_t, tokens)  # (T, N)
    return (s - jnp.max(s, axis=0, keepdims=True)) / _effective_temperature(temperature, s.dtype)


def _soft_assignment_t(x_t, w, tokens, temperature):
    e = jnp.exp(_logits_t(x_t, tokens, temperature))  # (T, N); the nearest token's entry is 1
    return e * (w / jnp.sum(e, axis=0))  # (T, N); zero columns on padded points


def _check_soft_assignment(x, tokens, temperature, mask):
    _checks.real("temperature", temperature, low=0.0, low_open=True)
    return check_points(x, tokens, mask)


@_checks.checked_jit(_check_soft_assignment)
def soft_assignment(x, tokens, temperature, mask=None):
    """The built-in rule's soft assignment of points to tokens. Jitted; vmappable and differentiable.

    Args:
      x: (N, D) points.
      tokens: (T, D) tokens.
      temperature: the softmax temperature, > 0 (traced; a traced 0 acts as the hard limit).
      mask: optional (N,) bool; False rows are padding.

    Returns:
      (N, T) the softmax over tokens of ``-|x_i - t_j|^2 / temperature``; zero rows on padded points.
    """
    x = as_float(x)
    return _soft_assignment_t(x.T, point_weights(x, mask), tokens.astype(x.dtype), temperature).T


def _sinkhorn_cols(l):
    """Every point's mass over tokens sums to 1: normalise the (T, N) log-plan over tokens."""
    return l - jax.nn.logsumexp(l, axis=0, keepdims=True)


def _sinkhorn_round(l, w, log_row):
    """One Sinkhorn round on a (T, N) log-plan: token rows to ``log_row``, then point columns to 1."""
    r = jax.nn.logsumexp(l, axis=1, b=w[None, :], keepdims=True)  # (T, 1) log token mass
    r = jnp.where(jnp.isfinite(r), r, log_row)  # no valid point: leave the row alone
    return _sinkhorn_cols(l + (log_row - r))


@jax.custom_jvp
def _sinkhorn_rounds(l, w, log_row, n):
    """``n`` rounds (traced int32 in [0, MAX_SINKHORN_ITERS]) of :func:`_sinkhorn_round`.

    Evaluated as a loop of exactly ``n`` rounds (under ``vmap``: the batch's largest ``n``), so
    the forward pass costs what it did with a plain ``fori_loop``; its derivatives (``jvp``, hence
    ``jacfwd``, ``grad``, ``vjp``) are those of :func:`_sinkhorn_rounds_masked`, a ``scan`` over the
    static MAX_SINKHORN_ITERS whose rounds at index >= n leave the plan unchanged: the same function,
    written so that reverse mode can transpose it (it cannot transpose a loop with a traced count)."""
    return jax.lax.fori_loop(0, n, lambda _, l: _sinkhorn_round(l, w, log_row), l)


def _sinkhorn_rounds_masked(l, w, log_row, n):
    """:func:`_sinkhorn_rounds` as a ``scan`` of static length: MAX_SINKHORN_ITERS rounds in blocks
    of _SINKHORN_BLOCK, every round at index >= n masked (``where``); a block with no round below n
    is skipped by a ``cond`` (unbatched; under ``vmap`` a select computes it), and each block is
    rematerialised, so reverse mode stores one (T, N) plan per block, not one per round."""

    @jax.checkpoint
    def rounds(l, start):
        for k in range(_SINKHORN_BLOCK):
            l = jnp.where(start + k < n, _sinkhorn_round(l, w, log_row), l)
        return l

    def block(l, start):
        return jax.lax.cond(start < n, rounds, lambda l, _: l, l, start), None

    starts = jnp.arange(0, MAX_SINKHORN_ITERS, _SINKHORN_BLOCK, dtype=jnp.int32)
    return jax.lax.scan(block, l, starts)[0]


@_sinkhorn_rounds.defjvp
def _sinkhorn_rounds_jvp(primals, tangents):
    l, w, log_row, n = primals
    dl, dw, dlog_row, _ = tangents  # n is an integer: its tangent is float0
    # rematerialised: reverse mode keeps only the inputs of the rounds, not MAX_SINKHORN_ITERS plans
    # per step (which a softmax step, K_S = 0, would also carry as zeros: the cond keeps both branches')
    rounds = jax.checkpoint(lambda l, w, log_row: _sinkhorn_rounds_masked(l, w, log_row, n))
    return jax.jvp(rounds, (l, w, log_row), (dl, dw, dlog_row))


def _sinkhorn_log_t(logits_t, w, n_iters):
    """Log-domain Sinkhorn on (T, N) logits: returns (T, N) log-plan whose columns (points) sum to 1
    and whose rows (tokens) approach ``sum(w) / T``; padded points (w = 0) do not count.

    ``n_iters``: a Python int (:func:`sinkhorn`: a loop of static length, any count), or a traced
    int32 in [0, MAX_SINKHORN_ITERS] (the update rule's knob, see :func:`_sinkhorn_rounds`)."""
    n_tokens = logits_t.shape[0]
    log_row = jnp.log(jnp.maximum(jnp.sum(w), jnp.finfo(logits_t.dtype).tiny) / n_tokens)
    l0 = _sinkhorn_cols(logits_t)
    if isinstance(n_iters, (int, np.integer)):
        return jax.lax.fori_loop(0, n_iters, lambda _, l: _sinkhorn_round(l, w, log_row), l0)
    return _sinkhorn_rounds(l0, w, log_row, n_iters)


def _balanced_assignment_t(x_t, w, tokens, temperature, n_iters):
    # shifted logits (the plan does not change under a per-point shift): finite or -inf, never inf - inf
    return jnp.exp(_sinkhorn_log_t(_logits_t(x_t, tokens, temperature), w, n_iters)) * w


def _check_sinkhorn(logits, n_iters, mask):
    real_array("logits", logits, ndim=2)
    _checks.positive_int("n_iters", n_iters)
    _checks.mask_for("mask", mask, np.shape(logits)[0])


@_checks.checked_jit(_check_sinkhorn, static_argnames=("n_iters",))
def sinkhorn(logits, n_iters: int, mask=None):
    r"""Entropic optimal transport with uniform token marginals, by Sinkhorn iterations.

    Args:
      logits: (N, T) logits :math:`\ell_{ij}` (e.g. :math:`-\|x_i - t_j\|^2/\tau`).
      n_iters: the number of rounds (static, a positive int): each normalises every token's mass
        to :math:`n/T` of the :math:`n` valid points, then every point's row to 1.
      mask: optional (N,) bool; padded points get zero rows and are not counted in :math:`n`.

    Returns:
      (N, T) the plan closest to the softmax of ``logits`` in KL with those marginals: rows sum to 1
      exactly, columns approach :math:`n/T` as ``n_iters`` grows (slowly at low temperature). What
      it does as a rule (``Hparams.sinkhorn_iters``) is on the concepts page, :ref:`dynamics-rule`.
    """
    logits = as_float(logits)
    w = point_weights(logits, mask)
    return (jnp.exp(_sinkhorn_log_t(logits.T, w, int(n_iters))) * w).T


def coulomb(tokens):
    """(T, D) ``sum_{k != j} (t_j - t_k) / max(|t_j - t_k|, MIN_DISTANCE)^3``."""
    diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D)
    r2 = jnp.sum(diff * diff, axis=-1)  # (T, T)
    r2 = jnp.maximum(r2, MIN_DISTANCE**2)
    inv_r3 = jax.lax.rsqrt(r2) / r2  # r^-3
    # the diagonal (diff 0) contributes 0 either way, but its weight MIN_DISTANCE^-3 would reach the
    # reverse-mode derivative as +1e9 g - 1e9 g on the same token: cancellation that wipes out float32
    inv_r3 = jnp.where(jnp.eye(tokens.shape[0], dtype=bool), 0.0, inv_r3)
    return jnp.sum(diff * inv_r3[..., None], axis=1)


def _temperature_at(hparams, step):
    """tau_s = tau * r ** max(0, 1 - s / S) (exactly tau when r = 1 or S = 0 or s >= S)."""
    r, n_anneal = hparams.anneal_ratio, hparams.anneal_steps
    frac = jnp.clip(1.0 - step / jnp.maximum(n_anneal, 1.0), 0.0, 1.0)
    on = (n_anneal > 0) & (frac > 0)
    frac = jnp.where(on, frac, 0.0)
    # at r = 1 the factor is exactly 1 but keeps its derivative frac in r (a plain r ** frac at r = 1
    # is 1 too, but not on every backend bit for bit; a branch on r != 1 would zero the gradient)
    factor = jnp.where(r != 1.0, r**frac, 1.0 + (r - 1.0) * frac)
    return jnp.where(on, hparams.temperature * factor, hparams.temperature)


def _check_schedule(hparams, n_steps):
    _check_scalar_knobs(hparams)
    hparams.validate()
    _checks.positive_int("n_steps", n_steps)


@_checks.checked_jit(_check_schedule, static_argnames=("n_steps",))
def temperature_schedule(hparams: Hparams, n_steps: int) -> jax.Array:
    """(n_steps,) the temperature used at each step: ``tau * r ** max(0, 1 - s / S)``; NaN when a
    traced knob is out of its range (:meth:`Hparams.in_range`)."""
    taus = jax.vmap(lambda s: _temperature_at(hparams, s))(jnp.arange(n_steps, dtype=jnp.int32))
    return jnp.where(hparams.in_range(), taus, jnp.nan)


def _update(points: Points, tokens, velocity, hparams, step, key, mass_anchor: str = "token"):
    x1, x_t, w, x_sum, n_valid = points.x1, points.x_t, points.weights, points.total, points.count
    temperature = _temperature_at(hparams, step)
    # a traced count above the bound (which cannot be checked) is clipped to it
    n_iters = jnp.minimum(jnp.asarray(hparams.sinkhorn_iters).astype(jnp.int32), MAX_SINKHORN_ITERS)
    a = jax.lax.cond(
        n_iters > 0,
        lambda: _balanced_assignment_t(x_t, w, tokens, temperature, n_iters),
        lambda: _soft_assignment_t(x_t, w, tokens, temperature),
    )  # (T, N)
    sigma = hparams.slot_norm
    # sigma = 0: (a x + eps t) / (sum a + eps); sigma = 1: ((a + eps) w x) / sum (a + eps) w. Both are
    # weighted means of points and the token itself, so the rule commutes with translations: a token
    # with no mass stays where it is (sigma = 0) or goes to the points' mean (sigma = 1), never to the
    # coordinate origin (as the published form's (a x) / (sum a + eps) did)
    sums = a @ x1  # (T, D + 1): sum_i a_ki x_i, then the mass sum_i a_ki
    anchor = (EPS_MASS * (1.0 - sigma)) * tokens if mass_anchor == "token" else 0.0  # "origin": the published form
    means = (sums[:, :-1] + anchor + (sigma * EPS_MASS) * x_sum) / (
        sums[:, -1] + (EPS_MASS * (1.0 - sigma) + (sigma * EPS_MASS) * n_valid)
    )[:, None]  # (T, D)
    force = means - tokens + hparams.repulsion * coulomb(tokens)
    velocity = hparams.momentum * velocity + hparams.damping * force
    if key is not None:

        def kick(v):
            xi = jax.random.normal(jax.random.fold_in(key, step), v.shape, v.dtype)
            var = 2.0 * hparams.damping * hparams.langevin
            # sqrt away from 0 only: under vmap the cond is a select, and a zero variance's
            # infinite derivative would turn the untaken branch's zero cotangent into NaN
            scale = jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)
            return v + scale.astype(v.dtype) * xi

        velocity = jax.lax.cond(hparams.langevin > 0, kick, lambda v: v, velocity)
    return tokens + velocity, velocity


@_checks.checked_jit(_check_update)
def update(x, tokens, velocity, hparams: Hparams, mask=None, *, step=0, key=None):
    """One application of the built-in rule. Jitted; vmappable; differentiable in both modes
    (``grad`` and ``jacfwd``), the Sinkhorn branch included, also in a user's ``lax.scan`` over
    steps (the route for knobs that change per step, see :class:`Hparams`).

    Args:
      x: (N, D) points.
      tokens: (T, D) tokens before the step.
      velocity: (T, D) velocity before the step (zeros at rest).
      hparams: :class:`Hparams` (every leaf traced).
      mask: optional (N,) bool; False rows are padding.
      step: the step index (int or traced int32), which sets the annealed temperature and the
        Langevin noise ``fold_in(key, step)``.
      key: optional PRNG key; without one the Langevin term is absent.

    Returns:
      ``(tokens, velocity)``, each (T, D), after the step; NaN where a traced knob is out of its
      range (:meth:`Hparams.in_range`).
    """
    x = as_float(x)
    tokens, velocity = _update(
        Points.of(x, mask), tokens.astype(x.dtype), velocity.astype(x.dtype), hparams, jnp.asarray(step, jnp.int32), key
    )
    ok = hparams.in_range()  # a traced knob out of range: NaN (see Hparams)
    return jnp.where(ok, tokens, jnp.nan), jnp.where(ok, velocity, jnp.nan)


def _check_hard_labels(x, tokens, mask):
    return check_points(x, tokens, mask)


@_checks.checked_jit(_check_hard_labels)
def hard_labels(x, tokens, mask=None):
    """(N,) int32 index of the nearest token (first on ties); -1 on padded points, and -1 on points
    whose squared distances are not finite (a NaN or infinite token, e.g. the final tokens of a run
    that blew up, or a traced NaN point): ``argmax`` over NaN would report token 0."""
    x = as_float(x)
    return labels_t(x.T, tokens.astype(x.dtype), mask)


def _builtin_init(points, tokens, hparams):
    # a traced knob out of range (host values are refused before tracing) starts the run at NaN
    # tokens: one scalar test per run, and every output of the run (tokens, labels -1) says so
    tokens = jnp.where(hparams.in_range(), tokens, jnp.nan)
    return Motion(tokens=tokens, velocity=jnp.zeros_like(tokens))  # at rest


def _builtin_step(state, points, hparams, step, key):
    tokens, velocity = _update(points, state.tokens, state.velocity, hparams, step, key)
    return Motion(tokens=tokens, velocity=velocity)


def _builtin_origin_step(state, points, hparams, step, key):
    tokens, velocity = _update(points, state.tokens, state.velocity, hparams, step, key, mass_anchor="origin")
    return Motion(tokens=tokens, velocity=velocity)


def _builtin_movement(old, new):
    return new.velocity


def _builtin_may_stop(hparams, step):
    return step >= hparams.anneal_steps  # no stop while the temperature is still annealing


BUILTIN = Rule(
    init=_builtin_init,
    step=_builtin_step,
    hparams=Hparams(),
    name="builtin",
    movement=_builtin_movement,
    may_stop=_builtin_may_stop,
    temperature=_temperature_at,
    check=_check_hparams,
)
"""The package's update rule (steps 1-4 of :ref:`dynamics-rule`, every knob of :class:`Hparams`) as
a :class:`Rule`: its state is :class:`Motion`, its movement the velocity, and it may stop only once
its annealing is over. What :func:`~tokdyn.dynamics.run`, :func:`~tokdyn.dynamics.run_fixed` and
:func:`~tokdyn.dynamics.trajectory` use by default; :data:`~tokdyn.dynamics.METHODS` are settings
of its knobs."""

BUILTIN_ORIGIN = Rule(
    init=_builtin_init,
    step=_builtin_origin_step,
    hparams=Hparams(),
    name="builtin-origin",
    movement=_builtin_movement,
    may_stop=_builtin_may_stop,
    temperature=_temperature_at,
    check=_check_hparams,
)
"""The built-in rule with the published form of step 2, :math:`m_j = \\sum_i a_{ij} x_i / (\\sum_i a_{ij}
+ 10^{-8})` (``mass_anchor="origin"``): the mass epsilon pulls a token toward the coordinate
origin, with a weight that matters only when its mass is near or below :math:`10^{-8}` (a token that
owns no point jumps to the origin), so its runs depend on where the data sit. Kept to reproduce
the published token-dynamics figures (``tokdyn study token-dynamics --mass-anchor origin``); the same
knobs (:class:`Hparams`, :data:`~tokdyn.dynamics.METHODS`) as :data:`BUILTIN`, which it equals wherever every token's
mass is far above :math:`10^{-8}` (to float32 rounding)."""

MASS_ANCHORS = {"token": BUILTIN, "origin": BUILTIN_ORIGIN}
"""The built-in rule by where its mass epsilon anchors the weighted mean (step 2 of
:ref:`dynamics-rule`): ``"token"`` (:data:`BUILTIN`, translation-invariant) or ``"origin"``
(:data:`BUILTIN_ORIGIN`, the published form)."""
