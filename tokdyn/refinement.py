"""Variational refinement: a mixture of isotropic Gaussians fitted by preconditioned gradient steps
on its evidence lower bound, as an update rule (:data:`REFINEMENT`, a :class:`tokdyn.dynamics.Rule`).

The tokens (T, D) are the mixture's means; the state (:class:`Mixture`) also carries one
log-scale and one learned log mixing weight per token. Each step is the E-step, then
preconditioned gradient steps of size ``step_size`` uphill on :func:`objective` (the
log-likelihood plus a log-prior on each scale; :class:`Hparams`, traced). At step size 1 a step is
exactly one EM step; for any step size in (0, 1] the objective never decreases.

:data:`REFINEMENT` runs wherever a rule runs (:func:`tokdyn.dynamics.run`,
:func:`~tokdyn.dynamics.run_fixed`, :func:`~tokdyn.dynamics.trajectory`,
:class:`tokdyn.engine.runs.ClusterRun`, the sweeps), every setting sharing one compilation. The
loop's labels are the nearest final means; the mixture's own assignment is :func:`labels` of
``Result.state``. :func:`init`, :func:`step`, :func:`objective` and :func:`gradient` are
differentiable in both modes and vmappable; the key is unused.

The equations, the initial state, the knobs' ranges and the clamps that keep any valid input
finite: :doc:`/concepts/token-dynamics`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics

LOG_SCALE_MIN = -20.0  # the smallest log-scale s_j of a token (sigma >= 2.1e-9)
LOG_SCALE_MAX = 20.0  # the largest (sigma <= 4.9e8)
LOG_WEIGHT_MIN = -50.0  # the smallest log mixing weight (pi >= 1.9e-22)
EPS_MASS = dynamics.EPS_MASS  # the anchors' weight (1e-8): a token with no mass stays where it is

__all__ = [
    "Hparams",
    "Mixture",
    "REFINEMENT",
    "init",
    "step",
    "movement",
    "may_stop",
    "check",
    "objective",
    "gradient",
    "responsibilities",
    "labels",
    "LOG_SCALE_MIN",
    "LOG_SCALE_MAX",
    "LOG_WEIGHT_MIN",
    "EPS_MASS",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """The refinement rule's knobs; every leaf is traced (one value per run: a scalar), so every
    setting and every sweep over them share one compilation.

    Attributes:
      step_size: alpha in (0, 1]: the fraction of the way to the EM update that each block moves
        per step (its gradient, preconditioned; 1 = one EM step).
      prior_log_scale: s0 in [LOG_SCALE_MIN, LOG_SCALE_MAX] = [-20, 20]: the prior's location, the log
        of the per-coordinate standard deviation a token is expected to have (``log(noise)`` on
        Gaussian clusters of that standard deviation).
      prior_strength: kappa >= 0: the prior's weight in pseudo-points per token; 0 = maximum
        likelihood. It also sets the initial scale (:func:`init`).

    The defaults, ``(1, 0, 1)``: EM steps, with a prior worth one point at scale 1. Host values out
    of range are a ``ValueError`` naming the knob (:meth:`validate`); a traced value out of range makes
    the run's state NaN from its start (:meth:`in_range`): NaN tokens, labels -1, never converged.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import dynamics, refinement
      >>> x = np.array([[-1, 0], [-1, 1], [2, 0], [2, 1]], np.float32)
      >>> r = dynamics.run(x, x[[0, 2]], refinement.Hparams(step_size=1.0), rule=refinement.REFINEMENT)
      >>> print(np.asarray(r.tokens).round(3))   # EM steps: the two clusters' means
      [[-1.   0.5]
       [ 2.   0.5]]
      >>> print(np.exp(np.asarray(r.state.log_scale)).round(3))   # scales pulled toward the prior's 1
      [0.646 0.646]

    References:
      Dempster, A. P., Laird, N. M. and Rubin, D. B. (1977). Maximum likelihood from incomplete data
      via the EM algorithm. *Journal of the Royal Statistical Society, Series B* 39(1), 1-38.
    """

    step_size: jax.Array | float = 1.0
    prior_log_scale: jax.Array | float = 0.0
    prior_strength: jax.Array | float = 1.0

    def validate(self) -> "Hparams":
        """Check the knobs: one value each (shape ``()``; always, also for tracers) and, for host
        data, its range. Raises ``ValueError`` naming the knob; returns ``self``."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) and np.shape(value) != ():
                raise ValueError(
                    f"hparams.{f.name} must be a scalar (one value per run), got shape "
                    f"{np.shape(value)}; to batch runs, jax.vmap over stacked knobs"
                )
        _checks.real("step_size", self.step_size, low=0.0, high=1.0, low_open=True)
        _checks.real("prior_log_scale", self.prior_log_scale, low=LOG_SCALE_MIN, high=LOG_SCALE_MAX)
        _checks.real("prior_strength", self.prior_strength, low=0.0)
        return self

    def in_range(self) -> jax.Array:
        """Scalar bool (traceable): every knob is finite and in its range."""
        a, s0, k = self.step_size, self.prior_log_scale, self.prior_strength
        ok = (a > 0) & (a <= 1) & (s0 >= LOG_SCALE_MIN) & (s0 <= LOG_SCALE_MAX) & (k >= 0) & jnp.isfinite(k)
        return jnp.asarray(ok)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Mixture:
    """The refinement rule's state: a mixture of isotropic Gaussians.

    Attributes:
      tokens: (T, D) the means.
      log_scale: (T,) the log of each token's standard deviation per coordinate, in
        [LOG_SCALE_MIN, LOG_SCALE_MAX].
      log_weight: (T,) the log mixing weights (they sum to 1 up to rounding; at least
        LOG_WEIGHT_MIN each).
    """

    tokens: jax.Array
    log_scale: jax.Array
    log_weight: jax.Array


# ---------------------------------------------------------------------------------------------- pieces


def _points_t(points: dynamics.Points):
    """(D, N) the points, padded ones set to 0: whatever a padded row holds never enters a sum."""
    return jnp.where(points.mask[None, :], points.x_t, 0.0)


def _diff(tokens, x_t):
    """(T, D, N) ``x_i - mu_j``: the long axis minor, the exact form of every distance."""
    return x_t[None, :, :] - tokens[:, :, None]


def _squared(diff):
    """(T, N) squared distances, capped at the largest float (an overflow is never ``inf``)."""
    d2 = jnp.sum(diff * diff, axis=1)
    return jnp.minimum(d2, jnp.finfo(d2.dtype).max)


def _logits(d2, log_scale, log_weight, dim: int):
    """(T, N) ``log pi_j - D s_j - d2_ij / (2 sigma_j^2)`` (``log_weight`` as given), never ``-inf``
    (at least minus the largest float), so that a shift by the per-point maximum is never
    ``inf - inf``."""
    l = log_weight[:, None] - dim * log_scale[:, None] - d2 * (0.5 * jnp.exp(-2.0 * log_scale))[:, None]
    return jnp.maximum(l, -jnp.finfo(l.dtype).max)


def _responsibilities(d2, log_scale, log_weight, weights, dim: int):
    """(T, N) E-step posterior ``r_ij = w_i softmax_j(l_ij)``; zero columns on padded points."""
    l = _logits(d2, log_scale, log_weight, dim)
    # the largest entry of each column is 1; the shift has no derivative (the softmax does not depend
    # on it), which also spares reverse mode jnp.max's, a division by the count of maximal entries
    e = jnp.exp(l - jax.lax.stop_gradient(jnp.max(l, axis=0, keepdims=True)))
    return e * (weights / jnp.sum(e, axis=0))


def _e_step(points: dynamics.Points, state: Mixture):
    """The points (D, N), differences to the means (T, D, N), squared distances (T, N) and
    responsibilities (T, N) at ``state``."""
    x_t = _points_t(points)
    diff = _diff(state.tokens, x_t)
    d2 = _squared(diff)
    r = _responsibilities(d2, state.log_scale, state.log_weight, points.weights, state.tokens.shape[1])
    return x_t, diff, d2, r


def _nan_unless(ok, state: Mixture) -> Mixture:
    return jax.tree_util.tree_map(lambda v: jnp.where(ok, v, jnp.nan), state)


# ---------------------------------------------------------------------------------------------- the rule


def init(points: dynamics.Points, tokens, hparams: Hparams) -> Mixture:
    """The rule's initial state (the ``init`` of :data:`REFINEMENT`): the given (T, D) ``tokens``
    as means, uniform weights, and one shared log-scale from the data and the prior (its formula is on
    :doc:`/concepts/token-dynamics`). A traced knob out of range gives a NaN state. A plain traceable
    function of a :class:`tokdyn.dynamics.Points`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import dynamics, refinement
      >>> x = np.array([[-1, 0], [-1, 1], [2, 0], [2, 1]], np.float32)
      >>> points = dynamics.Points.of(x)
      >>> state = refinement.init(points, jnp.asarray(x[[0, 2]]), refinement.Hparams())
      >>> print(np.asarray(state.log_weight).round(3), np.exp(np.asarray(state.log_scale)).round(3))
      [-0.693 -0.693] [0.632 0.632]
    """
    dtype = tokens.dtype
    n_tokens, dim = tokens.shape
    x_t = _points_t(points)
    d2 = _squared(_diff(tokens, x_t))  # (T, N)
    # each point's distance to its nearest token, as a gather: its derivative goes to that entry alone
    nearest = jnp.take_along_axis(d2, jnp.argmin(d2, axis=0)[None, :], axis=0)[0]  # (N,)
    spread = jnp.sum(points.weights * nearest)
    kappa, s0 = hparams.prior_strength, hparams.prior_log_scale
    v0 = jnp.exp(2.0 * jnp.clip(s0, LOG_SCALE_MIN, LOG_SCALE_MAX))
    den = points.count + kappa
    some = den > 0  # no valid point and no prior: the prior's location
    v = jnp.where(some, (spread / dim + kappa * v0) / jnp.where(some, den, 1.0), v0)
    log_scale = jnp.clip(0.5 * jnp.log(jnp.maximum(v, jnp.finfo(dtype).tiny)), LOG_SCALE_MIN, LOG_SCALE_MAX)
    state = Mixture(
        tokens=tokens,
        log_scale=jnp.full((n_tokens,), log_scale, dtype),
        log_weight=jnp.full((n_tokens,), -np.log(n_tokens), dtype),
    )
    return _nan_unless(hparams.in_range(), state)


def _scale_ratio_step(log_scale, spread, mass, hparams: Hparams, dim: int):
    """``s + log(1 + alpha (v*/v - 1)) / 2``, clamped, with ``v*/v`` formed from bounded factors
    (``exp(2 (s0 - s)) <= e^80``), so that an overflow can only mean a variance above the range."""
    alpha, kappa = hparams.step_size, hparams.prior_strength
    den = mass + kappa + EPS_MASS  # (T,) > 0
    # (T,) v*/v >= 0, each term a product whose factors are finite: a term overflows only when it
    # exceeds the largest float itself (exactly 1 for a token without mass when kappa = 0)
    rho = (
        spread * (jnp.exp(-2.0 * log_scale) / (dim * den))
        + EPS_MASS / den
        + (kappa / den) * jnp.exp(2.0 * (hparams.prior_log_scale - log_scale))
    )
    rho = jnp.minimum(rho, 0.25 * jnp.finfo(rho.dtype).max)
    # 1 + alpha (rho - 1) without cancellation: as written for rho near 1 (exactly 1 when rho is),
    # as (1 - alpha) + alpha rho, a sum of nonnegative terms, for rho near 0
    u = jnp.where(rho > 0.5, 1.0 + alpha * (rho - 1.0), (1.0 - alpha) + alpha * rho)
    return jnp.clip(log_scale + 0.5 * jnp.log(u), LOG_SCALE_MIN, LOG_SCALE_MAX)


def step(state: Mixture, points: dynamics.Points, hparams: Hparams, step, key) -> Mixture:
    """One refinement step (the ``step`` of :data:`REFINEMENT`): the E-step at ``state``, then
    preconditioned gradient steps of size ``hparams.step_size`` on the weights, the means and, at the
    new means, the scales.

    Args:
      state: the current :class:`Mixture` ((T, D) means, (T,) log-scales, (T,) log-weights).
      points: a :class:`tokdyn.dynamics.Points` (N points of dimension D, and their mask).
      hparams: the :class:`Hparams` (traced).
      step: unused (the rule is the same at every step).
      key: unused (the rule draws nothing).

    Returns:
      The next :class:`Mixture`, of the same shapes and dtypes.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import dynamics, refinement
      >>> x = np.array([[-1, 0], [-1, 1], [2, 0], [2, 1]], np.float32)
      >>> points = dynamics.Points.of(x)
      >>> state = refinement.init(points, jnp.asarray(x[[0, 2]]), refinement.Hparams())
      >>> new = refinement.step(state, points, refinement.Hparams(), 0, None)   # one EM step
      >>> print(np.asarray(new.tokens).round(3))
      [[-1.   0.5]
       [ 2.   0.5]]
    """
    del step, key
    mu, s, lw = state.tokens, state.log_scale, state.log_weight
    dtype, dim = mu.dtype, mu.shape[1]
    alpha = hparams.step_size
    x_t, diff, _, r = _e_step(points, state)
    mass = jnp.sum(r, axis=1)  # (T,)
    pull = jnp.sum(r[:, None, :] * diff, axis=2)  # (T, D): sum_i r_ij (x_i - mu_j); 0 for a token without mass
    tokens = mu + alpha * pull / (mass + EPS_MASS)[:, None]
    pi = jax.nn.softmax(lw)
    pi = pi + alpha * ((mass + EPS_MASS * pi) / (points.count + EPS_MASS) - pi)
    log_weight = jnp.log(jnp.maximum(pi, np.exp(LOG_WEIGHT_MIN)))
    spread = jnp.sum(r * _squared(_diff(tokens, x_t)), axis=1)  # (T,) about the new means
    log_scale = _scale_ratio_step(s, spread, mass, hparams, dim)
    return Mixture(tokens=tokens.astype(dtype), log_scale=log_scale.astype(dtype), log_weight=log_weight.astype(dtype))


def movement(old: Mixture, new: Mixture):
    """(T, D) the step's movement: the change of the means (the ``movement`` of :data:`REFINEMENT`)."""
    return new.tokens - old.tokens


def may_stop(hparams: Hparams, step):
    """Whether a run may stop after step ``step`` (the ``may_stop`` of :data:`REFINEMENT`): once
    ``(step + 1) * step_size >= 1``, i.e. once its steps add up to one EM step (always at step size
    1). A NaN step size never stops."""
    return (step + 1) * hparams.step_size >= 1


def check(hparams, key) -> None:
    """The ``check`` of :data:`REFINEMENT`, run before anything is traced: ``hparams`` must be a
    :class:`Hparams` of scalars whose host values are in range (:meth:`Hparams.validate`); ``key``
    is not used (any value, or None)."""
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.refinement.Hparams, got {type(hparams).__name__}: {hparams!r}")
    hparams.validate()


REFINEMENT = dynamics.Rule(
    init, step, hparams=Hparams(), name="refinement", movement=movement, may_stop=may_stop, check=check
)
"""The variational-refinement rule (the module docstring) as a :class:`tokdyn.dynamics.Rule`: its
state is :class:`Mixture`, its knobs :class:`Hparams` (``step_size``, ``prior_log_scale``,
``prior_strength``). Also reachable as ``tokdyn.dynamics.REFINEMENT``, beside the built-in rule."""


# ---------------------------------------------------------------------------------------------- kernels


def _check_mixture(x, state, mask, hparams=None, need_hparams=True):
    _checks.finite_array("x", x, ndim=2)
    if not isinstance(state, Mixture):
        raise TypeError(
            f"state must be a tokdyn.refinement.Mixture (e.g. Result.state of a run of "
            f"REFINEMENT, or refinement.init), got {type(state).__name__}"
        )
    shape = np.shape(state.tokens)
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"state.tokens must have shape (T, D) with T >= 1, got {shape}")
    if shape[1] != np.shape(x)[1]:
        raise ValueError(
            f"state.tokens and x must have the same dimension: state.tokens has D={shape[1]}, x has D={np.shape(x)[1]}"
        )
    for name in ("log_scale", "log_weight"):
        if np.shape(getattr(state, name)) != shape[:1]:
            raise ValueError(
                f"state.{name} must have shape ({shape[0]},) (one per token), got {np.shape(getattr(state, name))}"
            )
    _checks.mask_for("mask", mask, np.shape(x)[0])
    if not need_hparams:
        return {}
    if hparams is None:
        return {"hparams": Hparams()}
    check(hparams, None)
    return {}


def _check_objective(x, state, hparams, mask):
    return _check_mixture(x, state, mask, hparams)


def _check_assignment(x, state, mask):
    return _check_mixture(x, state, mask, need_hparams=False)


def _float_state(state: Mixture, dtype) -> Mixture:
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v).astype(dtype), state)


def _log_prior(log_scale, hparams: Hparams, dim: int):
    """(T,) ``-(kappa D / 2) (exp(-2 (s - s0)) + 2 (s - s0) - 1)``: 0 at s = s0."""
    z = log_scale - hparams.prior_log_scale
    return -0.5 * hparams.prior_strength * dim * (jnp.exp(-2.0 * z) + 2.0 * z - 1.0)


@_checks.checked_jit(_check_objective)
def objective(x, state: Mixture, hparams: Hparams | None = None, mask=None):
    r"""The objective :math:`F` that the rule ascends: the log-likelihood of the valid points under
    the mixture ``state`` (the normal densities' constant :math:`-\tfrac D2 \log 2\pi` included),
    plus the log-prior of every log-scale (0 at its location). It equals the evidence lower bound at
    the E-step posterior. The weights are ``softmax(state.log_weight)``.

    Args:
      x: (N, D) points.
      state: a :class:`Mixture` ((T, D) means, (T,) log-scales, (T,) log-weights).
      hparams: the knobs (:class:`Hparams`, traced; only the prior's enter); default ``Hparams()``.
      mask: optional (N,) bool; padded points do not count.

    Returns:
      A scalar in the points' dtype (float32, or float64 under x64). Differentiable in both modes
      in ``x``, ``state`` and ``hparams``: :func:`gradient` is its gradient in ``state``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import refinement
      >>> x = np.array([[-1, 0], [-1, 1], [2, 0], [2, 1]], np.float32)
      >>> state = refinement.Mixture(
      ...     tokens=jnp.array([[-1.0, 0.5], [2.0, 0.5]]), log_scale=jnp.zeros(2), log_weight=jnp.log(jnp.full(2, 0.5))
      ... )
      >>> print(f"{float(refinement.objective(x, state)):.3f}")
      -10.580

    References:
      Dempster, A. P., Laird, N. M. and Rubin, D. B. (1977). Maximum likelihood from incomplete data
      via the EM algorithm. *Journal of the Royal Statistical Society, Series B* 39(1), 1-38.
    """
    points = dynamics.Points.of(x, mask)
    state = _float_state(state, points.x.dtype)
    dim = state.tokens.shape[1]
    d2 = _squared(_diff(state.tokens, _points_t(points)))
    l = _logits(d2, state.log_scale, jax.nn.log_softmax(state.log_weight), dim)
    evidence = jnp.sum(points.weights * jax.nn.logsumexp(l, axis=0)) - 0.5 * dim * np.log(2 * np.pi) * points.count
    return evidence + jnp.sum(_log_prior(state.log_scale, hparams, dim))


@_checks.checked_jit(_check_objective)
def gradient(x, state: Mixture, hparams: Hparams | None = None, mask=None) -> Mixture:
    """The gradient of :func:`objective` in the state, in closed form (the formulas are on
    :doc:`/concepts/token-dynamics`); the rule's steps are these gradients, preconditioned.

    Args:
      x: (N, D) points.
      state: a :class:`Mixture` ((T, D) means, (T,) log-scales, (T,) log-weights).
      hparams: the knobs (:class:`Hparams`, traced; only the prior's enter); default ``Hparams()``.
      mask: optional (N,) bool; padded points do not count.

    Returns:
      A :class:`Mixture` of the state's shapes holding the gradient in each field: in the means, in
      the log-scales, and in the log-weights (the weights being ``softmax(log_weight)``).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import refinement
      >>> x = np.array([[-1, 0], [-1, 1], [2, 0], [2, 1]], np.float32)
      >>> state = refinement.Mixture(
      ...     tokens=jnp.array([[-1.0, 0.5], [2.0, 0.5]]), log_scale=jnp.zeros(2), log_weight=jnp.log(jnp.full(2, 0.5))
      ... )
      >>> g = refinement.gradient(x, state)
      >>> print(np.asarray(g.log_scale).round(2))   # scale 1 is too wide for these clusters
      [-3.3 -3.3]
    """
    points = dynamics.Points.of(x, mask)
    state = _float_state(state, points.x.dtype)
    dim = state.tokens.shape[1]
    _, diff, d2, r = _e_step(points, state)
    mass = jnp.sum(r, axis=1)
    inv_v = jnp.exp(-2.0 * state.log_scale)
    prior = hparams.prior_strength * dim * (jnp.exp(2.0 * (hparams.prior_log_scale - state.log_scale)) - 1.0)
    return Mixture(
        tokens=jnp.sum(r[:, None, :] * diff, axis=2) * inv_v[:, None],
        log_scale=jnp.sum(r * d2, axis=1) * inv_v - dim * mass + prior,
        log_weight=mass - points.count * jax.nn.softmax(state.log_weight),
    )


@_checks.checked_jit(_check_assignment)
def responsibilities(x, state: Mixture, mask=None):
    """(N, T) the E-step posterior of each point over the mixture's tokens (rows sum to 1 on valid
    points, 0 on padded ones), computed as the rule's step computes it.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import refinement
      >>> x = np.array([[-1, 0], [-1, 1], [2, 0], [2, 1]], np.float32)
      >>> state = refinement.Mixture(
      ...     tokens=jnp.array([[-1.0, 0.5], [2.0, 0.5]]), log_scale=jnp.zeros(2), log_weight=jnp.log(jnp.full(2, 0.5))
      ... )
      >>> print(np.asarray(refinement.responsibilities(x, state)).round(3))
      [[0.989 0.011]
       [0.989 0.011]
       [0.011 0.989]
       [0.011 0.989]]
    """
    points = dynamics.Points.of(x, mask)
    return _e_step(points, _float_state(state, points.x.dtype))[3].T


@_checks.checked_jit(_check_assignment)
def labels(x, state: Mixture, mask=None):
    """(N,) int32 the mixture's assignment: each point's most responsible token (first on ties),
    which weighs each token's scale and weight in (the loop's ``Result.labels`` are the nearest
    means instead); -1 on padded points and where the state is NaN (a run whose knobs were out of
    range).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import refinement
      >>> x = np.array([[-1, 0], [-1, 1], [2, 0], [2, 1]], np.float32)
      >>> state = refinement.Mixture(
      ...     tokens=jnp.array([[-1.0, 0.5], [2.0, 0.5]]), log_scale=jnp.zeros(2), log_weight=jnp.log(jnp.full(2, 0.5))
      ... )
      >>> refinement.labels(x, state).tolist()
      [0, 0, 1, 1]
    """
    points = dynamics.Points.of(x, mask)
    state = _float_state(state, points.x.dtype)
    d2 = _squared(_diff(state.tokens, _points_t(points)))
    l = _logits(d2, state.log_scale, state.log_weight, state.tokens.shape[1])
    known = jnp.all(~jnp.isnan(l), axis=0)  # (N,) a NaN state (or point) has no assignment
    out = jnp.where(known, jnp.argmax(l, axis=0).astype(jnp.int32), -1)
    return jnp.where(points.mask, out, -1)
