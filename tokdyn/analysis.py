r"""The formal view of the update rule: energy, Jacobians, fixed points and the collapse threshold.

**Energy.** For points :math:`x_i` (weights :math:`w_i`, 0 on padded points) and tokens
:math:`t_j`, the free energy is

.. math:: F(t) = -\tau \sum_i w_i \log \sum_j \exp(-\|x_i - t_j\|^2/\tau) + \gamma\, U(t),
          \qquad U(t) = \sum_{j<k} \phi(\|t_j - t_k\|)

with the Coulomb potential :math:`\phi(r) = 1/r` softened below :math:`r_{\min}` =
``dynamics.MIN_DISTANCE`` to :math:`\phi(r) = 3/(2r_{\min}) - r^2/(2r_{\min}^3)` (continuous, with
a continuous derivative), so that :math:`-\nabla U` is exactly :func:`tokdyn.dynamics.coulomb` and
:math:`F` is finite for coincident tokens. Since
:math:`\partial F_0/\partial t_j = -2 A_j (m_j - t_j)` with :math:`A_j = \sum_i w_i a_{ij}`, the
baseline step :math:`t_j \leftarrow m_j` is a preconditioned gradient step,
:math:`m_j - t_j = -\partial F_0/\partial t_j / (2A_j)`, and it is the EM step of an equal-weight
isotropic Gaussian mixture with variance :math:`\tau/2`: it never increases :math:`F_0`
(Jensen). Which variants are descent methods on :math:`F`:

* baseline (:math:`\beta = 0, \gamma = 0`): yes, monotone, for every :math:`\tau > 0`.
* inertia (:math:`\beta > 0`): no. Heavy-ball steps can raise :math:`F_0` (the velocity carries
  a token past the minimum); the energy still decreases on average and the fixed points are the
  same.
* repulsion (:math:`\gamma > 0`): no. The force :math:`m_j - t_j - \gamma\nabla_j U` scales the
  data part by :math:`1/(2A_j)` but not the repulsion part, so it is not a gradient step of
  :math:`F_0 + \gamma U` with a common preconditioner, and the unit step can overshoot
  (the Coulomb force near :math:`r_{\min}` is huge). Its fixed points solve
  :math:`-\nabla_j F_0 = 2A_j\,\gamma\nabla_j U`, not the stationarity condition
  :math:`-\nabla_j F_0 = \gamma\nabla_j U` of :math:`F`: they are stationary points of :math:`F`
  only if every :math:`2A_j = 1`.
  The tests measure how often each variant raises the energy.

**Collapse.** At the collapsed state (every token at the data mean :math:`\bar x`) the baseline map
:math:`t \mapsto m(t)` has Jacobian :math:`(I_T - \mathbf{1}\mathbf{1}^\top/T) \otimes (2/\tau)C`,
:math:`C` the population covariance of the data: eigenvalue 0 on the shared mode (D of them) and
:math:`\mu_k = (2/\tau)\lambda_k(C)` on the between-token modes (T - 1 copies each). Collapse is
locally stable exactly when :math:`\tau > \tau_c = 2\lambda_{\max}(C)` (:func:`collapse_threshold`).

With heavy-ball momentum :math:`\beta` the state is (tokens, velocity) and the linearised map is
:math:`[[J, \beta I], [J - I, \beta I]]`; on an eigenvector of :math:`J` with eigenvalue
:math:`\mu` it acts as :math:`[[\mu, \beta], [\mu - 1, \beta]]`, whose eigenvalues are the roots
of :math:`z^2 - (\mu + \beta) z + \beta = 0` (:func:`heavy_ball_eigenvalues`). By the Jury
conditions both roots lie in the unit disc iff :math:`\beta < 1`, :math:`\mu < 1` and
:math:`\mu > -(1 + 2\beta)`; with :math:`\mu \ge 0` the threshold is the same,
:math:`\tau > 2\lambda_{\max}(C)`, for every :math:`\beta \in [0, 1)`. Momentum changes the rate,
not the boundary: the spectral radius is at least :math:`\sqrt\beta` (complex roots when
:math:`(\mu+\beta)^2 < 4\beta`).

With repulsion the softened Coulomb force between tokens closer than :math:`r_{\min}` is linear
with gain :math:`\gamma/r_{\min}^3`, so exact collapse is unstable for any :math:`\gamma > 0`:
tokens settle at a finite distance instead. For two tokens above the threshold (linear regime,
:math:`\mu = 2\lambda_{\max}/\tau`) the separation map is :math:`r' = \mu r + 2\gamma/r^2`,
with equilibrium :math:`r_*^3 = 2\gamma/(1 - \mu)` and multiplier :math:`3\mu - 2`
(:func:`pair_equilibrium`): it is stable only for :math:`\mu > 1/3`, i.e.
:math:`\tau < 3\tau_c`; at higher temperatures the pair flips back and forth for ever (a
period-2 oscillation) whatever :math:`\gamma > 0` — repulsion makes hot runs never converge.
We therefore speak of tokens *merging within a tolerance*: :func:`merge_tolerance` is
``rel`` (default :data:`MERGE_REL`) times the data's RMS radius
:math:`\sqrt{\mathrm{tr}\,C}`; :func:`tokdyn.dynamics.token_groups` counts the groups of tokens
linked by distances below it (single linkage) and a run has collapsed when there is one group.

Everything is for one run; the public functions are jitted kernels (vmappable, callable inside a
user's ``jit``) with their arguments checked first (non-positive temperature or tolerance raise
``ValueError`` naming the argument). The closed forms (:func:`collapse_eigenvalues`,
:func:`heavy_ball_eigenvalues`, :func:`predicted_steps`) are float64 NumPy on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics

MERGE_REL = 1e-2  # merge tolerance relative to the data's RMS radius sqrt(tr Cov X)


# ---------------------------------------------------------------------------------------------- checks


def _check_x(x, mask=None):
    _checks.finite_array("x", x, ndim=2)
    _checks.mask_for("mask", mask, np.shape(x)[0])
    if mask is not None and _checks.on_host(mask) and not np.any(np.asarray(mask)):
        raise ValueError("mask must keep at least one point, got an all-False mask")
    return _checks.host_arrays(x=x, mask=mask)


def _check_xt(x, tokens, mask=None):
    arrays = _check_x(x, mask)
    _checks.finite_array("tokens", tokens, ndim=2)
    if np.shape(tokens)[0] < 1:
        raise ValueError(f"tokens must hold at least one token, got shape {np.shape(tokens)}")
    if np.shape(tokens)[1] != np.shape(x)[1]:
        raise ValueError(f"tokens and x must have the same dimension: tokens has D={np.shape(tokens)[1]}, "
                         f"x has D={np.shape(x)[1]}")
    return {**arrays, **_checks.host_arrays(tokens=tokens)}


def _check_hparams(hparams):
    if not isinstance(hparams, dynamics.Hparams):
        raise TypeError(f"hparams must be a tokdyn.dynamics.Hparams, got {type(hparams).__name__}")
    hparams.validate()


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _weights(x, mask):
    return jnp.ones(x.shape[:1], x.dtype) if mask is None else mask.astype(x.dtype)


# ---------------------------------------------------------------------------------------------- energy


def coulomb_energy(tokens):
    r"""Softened Coulomb potential :math:`\sum_{j<k} \phi(\|t_j - t_k\|)` of (T, D) tokens, whose
    negative gradient is :func:`tokdyn.dynamics.coulomb` (see the module docstring). Finite and
    differentiable everywhere, coincident tokens included."""
    tokens = _float(tokens)
    rmin = dynamics.MIN_DISTANCE
    diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D)
    r2 = jnp.sum(diff * diff, axis=-1)  # (T, T)
    far = r2 >= rmin**2
    phi = jnp.where(far, jax.lax.rsqrt(jnp.maximum(r2, rmin**2)), 1.5 / rmin - r2 / (2 * rmin**3))
    upper = jnp.triu(jnp.ones(r2.shape, bool), k=1)
    return jnp.sum(jnp.where(upper, phi, 0.0))


def _check_free_energy(x, tokens, temperature, mask, repulsion):
    _checks.real("temperature", temperature, low=0.0, low_open=True)
    _checks.real("repulsion", repulsion, low=0.0)
    return _check_xt(x, tokens, mask)


@_checks.checked_jit(_check_free_energy)
def free_energy(x, tokens, temperature, mask=None, *, repulsion=0.0):
    r"""Free energy :math:`-\tau\sum_i \log\sum_j e^{-\|x_i-t_j\|^2/\tau} + \gamma U(t)`.

    Args:
      x: (N, D) points; tokens: (T, D); temperature: :math:`\tau > 0`;
      mask: optional (N,) bool (False rows are ignored); repulsion: :math:`\gamma \ge 0`.
    Returns:
      A scalar.
    """
    x = _float(x)
    tokens = tokens.astype(x.dtype)
    w = _weights(x, mask)
    d2 = jnp.sum((x[:, None, :] - tokens[None, :, :]) ** 2, axis=-1)  # (N, T)
    lse = jax.nn.logsumexp(-d2 / temperature, axis=1)  # (N,)
    return -temperature * jnp.sum(w * lse) + repulsion * coulomb_energy(tokens)


def energy_of(hparams: dynamics.Hparams):
    """``F(x, tokens, mask)`` at the temperature and repulsion of ``hparams``."""
    return lambda x, tokens, mask=None: free_energy(x, tokens, hparams.temperature, mask, repulsion=hparams.repulsion)


# ---------------------------------------------------------------------------------------------- the update map


def update_map(x, hparams: dynamics.Hparams, mask=None, *, with_velocity: bool = False):
    """The update rule as a function of the state.

    ``with_velocity=False``: ``tokens (T, D) -> tokens (T, D)``, one step from rest (velocity 0);
    this is the whole dynamics when the momentum is 0. ``with_velocity=True``: ``z (2*T*D,) ->
    z'``, the flat state ``concat(tokens.ravel(), velocity.ravel())`` of heavy-ball dynamics.
    """
    def tokens_only(tokens):
        new, _ = dynamics.update(x, tokens, jnp.zeros_like(tokens), hparams, mask)
        return new

    if not with_velocity:
        return tokens_only

    def full(z, shape):
        n = z.shape[0] // 2
        tokens, velocity = z[:n].reshape(shape), z[n:].reshape(shape)
        new_t, new_v = dynamics.update(x, tokens, velocity, hparams, mask)
        return jnp.concatenate([new_t.ravel(), new_v.ravel()])

    return full


def _check_jacobian(x, tokens, hparams, velocity, mask):
    _check_hparams(hparams)
    if velocity is not None:
        _checks.finite_array("velocity", velocity, ndim=2)
        if np.shape(velocity) != np.shape(tokens):
            raise ValueError(f"velocity must have the shape of tokens {np.shape(tokens)}, got {np.shape(velocity)}")
    return {**_check_xt(x, tokens, mask), **_checks.host_arrays(velocity=velocity)}


@_checks.checked_jit(_check_jacobian)
def jacobian(x, tokens, hparams: dynamics.Hparams = dynamics.Hparams(), *, velocity=None, mask=None):
    """Jacobian of one update step by ``jax.jacfwd``.

    Without ``velocity``: the (T*D, T*D) Jacobian of ``tokens -> tokens'`` (velocity 0; the whole
    map when momentum is 0), rows and columns in ``tokens.ravel()`` order. With ``velocity``
    (T, D): the (2*T*D, 2*T*D) Jacobian of the heavy-ball state ``concat(tokens, velocity)``.
    Finite everywhere, coincident tokens with repulsion included (the Coulomb force is softened,
    see :mod:`tokdyn.dynamics`).
    """
    x = _float(x)
    tokens = tokens.astype(x.dtype)
    if velocity is None:
        f = update_map(x, hparams, mask)
        t, d = tokens.shape
        return jax.jacfwd(lambda flat: f(flat.reshape(t, d)).ravel())(tokens.ravel())  # (T*D, T*D)
    f = update_map(x, hparams, mask, with_velocity=True)
    z = jnp.concatenate([tokens.ravel(), velocity.astype(x.dtype).ravel()])
    return jax.jacfwd(lambda z: f(z, tokens.shape))(z)  # (2*T*D, 2*T*D)


def eigenvalues(jac):
    """Eigenvalues of a square matrix (complex), sorted by decreasing modulus: float64 NumPy on the
    host for a concrete matrix, ``jnp.linalg.eigvals`` inside a transformation."""
    if not _checks.is_traced(jac):
        ev = np.linalg.eigvals(np.asarray(jac, np.float64))
        return ev[np.argsort(-np.abs(ev), kind="stable")]
    ev = jnp.linalg.eigvals(jac)
    return ev[jnp.argsort(-jnp.abs(ev))]


def spectral_radius(jac):
    """Largest eigenvalue modulus of a square matrix (host NumPy unless traced, as :func:`eigenvalues`)."""
    return jnp.max(jnp.abs(jnp.linalg.eigvals(jac))) if _checks.is_traced(jac) else np.abs(eigenvalues(jac))[0]


def fixed_point(x, tokens, hparams: dynamics.Hparams = dynamics.Hparams(), *, mask=None, n_steps=5000, tol=1e-6):
    """Run the rule to convergence (a :class:`tokdyn.dynamics.Result`; check ``converged``):
    :func:`tokdyn.dynamics.run` with a tight tolerance and a large step budget."""
    _checks.real("tol", tol, low=0.0, low_open=True)
    return dynamics.run(x, tokens, hparams, mask=mask, n_steps=n_steps, tol=tol)


def predicted_steps(rho, delta0, tol):
    r"""Steps for a linear contraction with rate ``rho`` to bring a first change ``delta0`` below
    ``tol``: :math:`1 + \log(\mathrm{tol}/\Delta_0)/\log\rho` (at least 1; ``inf`` for
    :math:`\rho \ge 1`). Vectorised over arrays."""
    _checks.real("tol", tol, low=0.0, low_open=True)
    rho, delta0 = np.asarray(rho, np.float64), np.asarray(delta0, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = 1.0 + np.log(tol / delta0) / np.log(rho)
    n = np.where(delta0 < tol, 1.0, n)
    return np.where(rho >= 1.0, np.inf, np.maximum(n, 1.0))


# ---------------------------------------------------------------------------------------------- collapse theory


@_checks.checked_jit(_check_x)
def covariance(x, mask=None):
    """(D, D) population covariance (divide by N) of the valid points; and their (D,) mean."""
    x = _float(x)
    w = _weights(x, mask)
    n = jnp.maximum(jnp.sum(w), 1.0)
    mean = (w @ x) / n
    y = (x - mean) * w[:, None]
    return (y.T @ y) / n, mean


@_checks.checked_jit(_check_x)
def collapse_threshold(x, mask=None):
    r""":math:`\tau_c = 2\lambda_{\max}(\mathrm{Cov}\,X)` (population covariance of the valid
    points): the collapsed state is locally stable iff :math:`\tau > \tau_c`, for any number of
    tokens and any momentum in [0, 1)."""
    cov, _ = covariance(x, mask)
    return 2.0 * jnp.linalg.eigvalsh(cov)[-1]


def _check_collapsed_state(x, n_tokens, mask):
    _checks.positive_int("n_tokens", n_tokens)
    return _check_x(x, mask)


@_checks.checked_jit(_check_collapsed_state, static_argnames=("n_tokens",))
def collapsed_state(x, n_tokens: int, mask=None):
    """(n_tokens, D) tokens all at the mean of the valid points: a fixed point of every variant."""
    _, mean = covariance(x, mask)
    return jnp.broadcast_to(mean, (n_tokens, mean.shape[0]))


def heavy_ball_eigenvalues(mu, momentum):
    r"""The two eigenvalues (..., 2) (complex) that heavy-ball momentum :math:`\beta` makes of a
    baseline Jacobian eigenvalue :math:`\mu`: roots of :math:`z^2 - (\mu+\beta)z + \beta`."""
    mu = np.asarray(mu, np.complex128)
    b = np.asarray(momentum, np.float64)
    s = np.sqrt((mu + b) ** 2 - 4.0 * b + 0j)
    return np.stack([(mu + b + s) / 2.0, (mu + b - s) / 2.0], axis=-1)


def collapse_eigenvalues(x, n_tokens: int, temperature, mask=None, *, momentum=0.0):
    r"""Predicted Jacobian eigenvalues at the collapsed state, sorted by decreasing modulus (complex).

    Momentum 0: D zeros (the shared mode) and :math:`(2/\tau)\lambda_k(C)`, T - 1 copies each
    (T*D in all). Momentum :math:`\beta > 0`: each of those through
    :func:`heavy_ball_eigenvalues` (2*T*D in all), the spectrum of :func:`jacobian` with
    ``velocity=0`` at :func:`collapsed_state`. Float64 NumPy on the host.
    """
    _checks.positive_int("n_tokens", n_tokens)
    _checks.real("temperature", temperature, low=0.0, low_open=True)
    _checks.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    cov, _ = covariance(x, mask)
    lam = np.linalg.eigvalsh(np.asarray(cov, np.float64))
    mu = np.concatenate([np.zeros_like(lam), np.repeat(2.0 * lam / float(temperature), n_tokens - 1)])
    ev = mu.astype(np.complex128) if float(momentum) == 0.0 else heavy_ball_eigenvalues(mu, momentum).ravel()
    return ev[np.argsort(-np.abs(ev), kind="stable")]


def _check_merge_tolerance(x, mask, rel):
    _checks.real("rel", rel, low=0.0, low_open=True)
    return _check_x(x, mask)


@_checks.checked_jit(_check_merge_tolerance)
def merge_tolerance(x, mask=None, rel=MERGE_REL):
    r"""``rel`` times the RMS radius :math:`\sqrt{\mathrm{tr}\,C}` of the valid points: tokens
    closer than this count as merged (:func:`tokdyn.dynamics.token_groups`). Scale-free: rescaling
    the data rescales the tolerance."""
    cov, _ = covariance(x, mask)
    return rel * jnp.sqrt(jnp.trace(cov))


def _check_pair(x, temperature, repulsion, mask):
    _checks.real("temperature", temperature, low=0.0, low_open=True)
    _checks.real("repulsion", repulsion, low=0.0)
    return _check_x(x, mask)


@_checks.checked_jit(_check_pair)
def pair_equilibrium(x, temperature, repulsion, mask=None):
    r"""Two tokens with repulsion near the collapsed state (:math:`\tau > \tau_c`): the equilibrium
    separation :math:`r_* = (2\gamma/(1-\mu))^{1/3}` along the top principal axis and the
    multiplier :math:`3\mu - 2` of the separation map (stable iff > -1, i.e. :math:`\tau < 3\tau_c`),
    with :math:`\mu = 2\lambda_{\max}/\tau`. Valid while :math:`r_*` is small against the data."""
    mu = collapse_threshold(x, mask) / temperature
    return (2.0 * repulsion / (1.0 - mu)) ** (1.0 / 3.0), 3.0 * mu - 2.0


def min_separation(tokens):
    """Smallest distance between two distinct tokens (``inf`` for one token)."""
    tokens = _float(tokens)
    diff = tokens[:, None, :] - tokens[None, :, :]
    r2 = jnp.sum(diff * diff, axis=-1)
    r2 = jnp.where(jnp.eye(tokens.shape[0], dtype=bool), jnp.inf, r2)
    return jnp.sqrt(jnp.min(r2))
