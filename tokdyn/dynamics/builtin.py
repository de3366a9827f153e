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
from tokdyn.dynamics import equations as eq
from tokdyn.dynamics._common import as_float, check_points, labels_t, point_weights, real_array, valid_rows
from tokdyn.dynamics.hparams import FIELDS, MAX_SINKHORN_ITERS, Hparams
from tokdyn.dynamics.rule import Points, Rule


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


def _logits_t(x_t, tokens, temperature):
    """(T, N) ``-(|x_i - t_j|^2 - min_k |x_i - t_k|^2) / tau`` (:func:`~tokdyn.dynamics.equations.logits`)."""
    s = eq.scores(tokens, x_t, eq.STACKED)  # (T, N)
    return eq.logits(s, eq.effective_temperature(temperature, s.dtype), eq.STACKED)


def _soft_assignment_t(x_t, w, tokens, temperature):
    return eq.softmax_rows(_logits_t(x_t, tokens, temperature), w, eq.STACKED)  # (T, N); zero columns on padded points


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

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [1, 0], [2, 0]], np.float32)
      >>> tokens = np.array([[0, 0], [2, 0]], np.float32)
      >>> a = dynamics.soft_assignment(x, tokens, 1.0)   # the middle point: e^-1 against e^-1
      >>> print(np.round(np.asarray(a), 3))
      [[0.982 0.018]
       [0.5   0.5  ]
       [0.018 0.982]]
      >>> print(np.asarray(dynamics.soft_assignment(x, tokens, 1.0, mask=np.array([1, 1, 0], bool)))[2])
      [0. 0.]

    References:
      Rose, K., Gurewitz, E. and Fox, G. C. (1990). Statistical mechanics and phase transitions in
      clustering. *Physical Review Letters* 65(8), 945-948 (the Gibbs assignment at a temperature).
    """
    x = valid_rows(as_float(x), mask)  # padding never reaches a product (0 * inf is NaN)
    centre = eq.masked_mean(x, point_weights(x, mask))  # distances keep their precision far from the origin
    return _soft_assignment_t((x - centre).T, point_weights(x, mask), tokens.astype(x.dtype) - centre, temperature).T


def _sinkhorn_round(l, w, log_row):
    """One Sinkhorn round on a (T, N) log-plan (:func:`~tokdyn.dynamics.equations.sinkhorn_round`)."""
    return eq.sinkhorn_round(l, w, log_row, eq.STACKED)


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


def _static_rounds(l, w, log_row, n_iters):
    """A Python int count of rounds (:func:`sinkhorn`): a loop of static length, any count."""
    return jax.lax.fori_loop(0, n_iters, lambda _, l: _sinkhorn_round(l, w, log_row), l)


def _balanced_assignment_t(x_t, w, tokens, temperature, n_iters):
    # shifted logits (the plan does not change under a per-point shift): finite or -inf, never inf - inf
    return eq.sinkhorn_rows(_logits_t(x_t, tokens, temperature), w, n_iters, eq.STACKED, _sinkhorn_rounds)


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

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> logits = np.array([[0, -1], [0, -1], [0, -1], [-1, 0]], np.float32)   # 3 points prefer token 0
      >>> plan = np.asarray(dynamics.sinkhorn(logits, n_iters=50))
      >>> print(plan.sum(1).round(3), plan.sum(0).round(2))   # rows sum to 1, columns near 4 / 2
      [1. 1. 1. 1.] [2. 2.]

    References:
      Cuturi, M. (2013). Sinkhorn distances: lightspeed computation of optimal transport. *Advances
      in Neural Information Processing Systems* 26. arXiv:1306.0895.
    """
    logits = as_float(logits)
    w = point_weights(logits, mask)
    return eq.sinkhorn_rows(logits.T, w, int(n_iters), eq.STACKED, _static_rounds).T


def coulomb(tokens):
    """(T, D) ``sum_{k != j} (t_j - t_k) / max(|t_j - t_k|, MIN_DISTANCE)^3``.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> tokens = np.array([[0, 0], [2, 0]], np.float32)   # each pushed away from the other by 1 / 2^2
      >>> print(np.asarray(dynamics.coulomb(tokens)))
      [[-0.25  0.  ]
       [ 0.25  0.  ]]
    """
    return eq.coulomb_stacked(tokens)


def _temperature_at(hparams, step):
    """tau_s = tau * r ** max(0, 1 - s / S) (:func:`~tokdyn.dynamics.equations.temperature`)."""
    return eq.temperature(hparams.temperature, hparams.anneal_ratio, hparams.anneal_steps, step)


def _check_schedule(hparams, n_steps):
    _check_scalar_knobs(hparams)
    hparams.validate()
    _checks.positive_int("n_steps", n_steps)


@_checks.checked_jit(_check_schedule, static_argnames=("n_steps",))
def temperature_schedule(hparams: Hparams, n_steps: int) -> jax.Array:
    """(n_steps,) the temperature used at each step: ``tau * r ** max(0, 1 - s / S)``; NaN when a
    traced knob is out of its range (:meth:`Hparams.in_range`).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> hp = dynamics.Hparams(temperature=1.0, anneal_ratio=100.0, anneal_steps=4.0)
      >>> print(np.asarray(dynamics.temperature_schedule(hp, 6)).round(2))   # 100 down to 1 over 4 steps
      [100.    31.62  10.     3.16   1.     1.  ]

    References:
      Rose, K. (1998). Deterministic annealing for clustering, compression, classification,
      regression, and related optimization problems. *Proceedings of the IEEE* 86(11), 2210-2239.
    """
    taus = jax.vmap(lambda s: _temperature_at(hparams, s))(jnp.arange(n_steps, dtype=jnp.int32))
    return jnp.where(hparams.in_range(), taus, jnp.nan)


def _update(points: Points, tokens, velocity, hparams, step, key, mass_anchor: str = "token"):
    w = points.weights
    # a traced count above the bound (which cannot be checked) is clipped to it
    n_iters = jnp.minimum(jnp.asarray(hparams.sinkhorn_iters).astype(jnp.int32), MAX_SINKHORN_ITERS)
    temperature = _temperature_at(hparams, step)
    a = jax.lax.cond(
        n_iters > 0,
        lambda: _balanced_assignment_t(points.x_t, w, tokens, temperature, n_iters),
        lambda: _soft_assignment_t(points.x_t, w, tokens, temperature),
    )  # (T, N)
    # sigma = 0: (a x + eps t) / (sum a + eps); sigma = 1: ((a + eps) w x) / sum (a + eps) w. Both are
    # weighted means of points and the token itself, so the rule commutes with translations: a token
    # with no mass stays where it is (sigma = 0) or goes to the points' mean (sigma = 1), never to the
    # coordinate origin (as the published form's (a x) / (sum a + eps) did: "origin" anchors there)
    sums = a @ points.x1  # (T, D + 1): sum_i a_ki x_i, then the mass sum_i a_ki
    anchor = tokens if mass_anchor == "token" else points.origin  # the user's origin in the rule's coordinates
    means = eq.anchored_mean(sums[:, :-1], sums[:, -1:], anchor, points.total, points.count, hparams.slot_norm)
    velocity = eq.velocity(
        velocity, tokens, means, eq.coulomb_stacked(tokens), hparams.momentum, hparams.damping, hparams.repulsion
    )
    if key is not None:

        def kick(v):
            xi = jax.random.normal(jax.random.fold_in(key, step), v.shape, v.dtype)
            return v + eq.langevin_scale(hparams.damping, hparams.langevin).astype(v.dtype) * xi

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

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0, 1], [10, 0], [10, 1]], np.float32)
      >>> tokens = np.array([[1, 0], [9, 1]], np.float32)
      >>> t, v = dynamics.update(x, tokens, np.zeros_like(tokens), dynamics.Hparams())
      >>> print(np.asarray(t).round(3))   # undamped, no momentum: each token jumps to its points' mean
      [[ 0.   0.5]
       [10.   0.5]]
    """
    x = as_float(x)
    points = Points.of(x, mask, centred=True)  # the rule's coordinates (Rule.centred), the tokens back after
    tokens, velocity = _update(
        points,
        tokens.astype(x.dtype) + points.origin,
        velocity.astype(x.dtype),
        hparams,
        jnp.asarray(step, jnp.int32),
        key,
    )
    tokens = tokens - points.origin
    ok = hparams.in_range()  # a traced knob out of range: NaN (see Hparams)
    return jnp.where(ok, tokens, jnp.nan), jnp.where(ok, velocity, jnp.nan)


def _check_hard_labels(x, tokens, mask):
    return check_points(x, tokens, mask)


@_checks.checked_jit(_check_hard_labels)
def hard_labels(x, tokens, mask=None):
    """(N,) int32 index of the nearest token (first on ties); -1 on padded points, and -1 on points
    whose squared distances are not finite (a NaN or infinite token, e.g. the final tokens of a run
    that blew up, or a traced NaN point): ``argmax`` over NaN would report token 0.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics
      >>> x = np.array([[0, 0], [0.8, 0], [3, 0]], np.float32)
      >>> tokens = np.array([[0, 0], [2, 0]], np.float32)
      >>> dynamics.hard_labels(x, tokens).tolist()
      [0, 0, 1]
      >>> dynamics.hard_labels(x, tokens, mask=np.array([1, 1, 0], bool)).tolist()
      [0, 0, -1]
    """
    x = valid_rows(as_float(x), mask)  # padding never reaches a product (0 * inf is NaN)
    centre = eq.masked_mean(x, point_weights(x, mask))  # distances keep their precision far from the origin
    return labels_t((x - centre).T, tokens.astype(x.dtype) - centre, mask)


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
    return eq.may_stop(hparams.anneal_steps, step)  # no stop while the temperature is still annealing


BUILTIN = Rule(
    init=_builtin_init,
    step=_builtin_step,
    hparams=Hparams(),
    name="builtin",
    movement=_builtin_movement,
    may_stop=_builtin_may_stop,
    temperature=_temperature_at,
    check=_check_hparams,
    centred=True,
    backends=(("pallas", "tokdyn.dynamics.pallas:run"),),
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
    centred=True,
    backends=(("pallas", "tokdyn.dynamics.pallas:run"),),
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
