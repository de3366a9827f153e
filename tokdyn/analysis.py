"""The formal view of the update rule: energy, Jacobians, fixed points and the collapse threshold.

:func:`free_energy` is the energy whose preconditioned gradient step is the baseline rule
(:func:`coulomb_energy`, its softened repulsion term, has :func:`tokdyn.dynamics.coulomb` as negative
gradient); :func:`update_map` and :func:`jacobian` linearise one step and :func:`fixed_point` runs the
rule to convergence; :func:`collapse_threshold`, :func:`collapse_eigenvalues`,
:func:`heavy_ball_eigenvalues` and :func:`pair_equilibrium` are the closed forms at the collapsed
state (every token at the data mean), and :func:`merge_tolerance` is the distance below which
tokens count as merged. The derivations (which variants descend the energy, the spectrum at the
collapsed state, what momentum and repulsion do to it) are on the concept page
:doc:`/concepts/formal-view`.

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
        raise ValueError(
            f"tokens and x must have the same dimension: tokens has D={np.shape(tokens)[1]}, x has D={np.shape(x)[1]}"
        )
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
    r"""Softened Coulomb potential :math:`\sum_{j<k} \phi(\|t_j - t_k\|)` of (T, D) tokens, with
    :math:`\phi(r) = 1/r` above ``dynamics.MIN_DISTANCE`` (:math:`r_{\min}`) and
    :math:`3/(2r_{\min}) - r^2/(2r_{\min}^3)` below: its negative gradient is
    :func:`tokdyn.dynamics.coulomb`. Finite and differentiable everywhere, coincident tokens included.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> print(f"{float(analysis.coulomb_energy(np.array([[0, 0], [2, 0]], np.float32))):.3f}")
      0.500
    """
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
    r"""Free energy :math:`-\tau\sum_i w_i \log\sum_j e^{-\|x_i-t_j\|^2/\tau} + \gamma U(t)`
    (:math:`U` the :func:`coulomb_energy` of the tokens).

    Args:
      x: (N, D) points.
      tokens: (T, D) tokens.
      temperature: :math:`\tau > 0`; may be traced.
      mask: optional (N,) bool: the weights :math:`w_i` (False rows are ignored).
      repulsion: :math:`\gamma \ge 0`; may be traced.

    Returns:
      A scalar, in the points' float dtype.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> print(f"{float(analysis.free_energy(x, x, 1.0)):.4f}")   # -2 log(1 + e^-4)
      -0.0363

    References:
      Rose, K., Gurewitz, E. and Fox, G. C. (1990). Statistical mechanics and phase transitions in
      clustering. *Physical Review Letters* 65(8), 945-948.
    """
    x = _float(x)
    tokens = tokens.astype(x.dtype)
    w = _weights(x, mask)
    x = jnp.where(w[:, None] > 0, x, 0.0)  # padding never reaches a product (0 * inf is NaN)
    d2 = jnp.sum((x[:, None, :] - tokens[None, :, :]) ** 2, axis=-1)  # (N, T)
    lse = jax.nn.logsumexp(-d2 / temperature, axis=1)  # (N,)
    return -temperature * jnp.sum(w * lse) + repulsion * coulomb_energy(tokens)


def energy_of(hparams: dynamics.Hparams):
    """``F(x, tokens, mask)`` at the temperature and repulsion of ``hparams``.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> from tokdyn import dynamics
      >>> energy = analysis.energy_of(dynamics.Hparams(temperature=1.0))
      >>> print(f"{float(energy(x, x)):.4f}")
      -0.0363
    """
    return lambda x, tokens, mask=None: free_energy(x, tokens, hparams.temperature, mask, repulsion=hparams.repulsion)


# ---------------------------------------------------------------------------------------------- the update map


def update_map(x, hparams: dynamics.Hparams, mask=None, *, with_velocity: bool = False):
    """The update rule as a function of the state, for ``jax.jacfwd`` and fixed-point analyses.

    Args:
      x: (N, D) points.
      hparams: the rule's knobs, a :class:`tokdyn.dynamics.Hparams` (may be traced).
      mask: optional (N,) bool; False rows are ignored.
      with_velocity: static bool: the map's state (below).

    Returns:
      ``with_velocity=False``: ``f(tokens (T, D)) -> tokens (T, D)``, one step from rest (velocity 0),
      the whole dynamics when the momentum is 0. ``with_velocity=True``: ``f(z, shape) -> z'`` on the
      flat heavy-ball state ``z = concat(tokens.ravel(), velocity.ravel())`` (2*T*D,), ``shape`` the
      tokens' (T, D).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> from tokdyn import dynamics
      >>> step = analysis.update_map(x, dynamics.Hparams(temperature=0.1))
      >>> print(np.asarray(step(np.array([[-2, 0], [2, 0]], np.float32))).round(3))
      [[-1.  0.]
       [ 1.  0.]]
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
    """Jacobian of one update step, by ``jax.jacfwd``; finite everywhere, coincident tokens with
    repulsion included (the Coulomb force is softened).

    Args:
      x: (N, D) points.
      tokens: (T, D) tokens at which the step is linearised.
      hparams: a :class:`tokdyn.dynamics.Hparams` (traced).
      velocity: optional (T, D) velocity: the Jacobian of the heavy-ball state instead.
      mask: optional (N,) bool; False rows are ignored.

    Returns:
      Without ``velocity``: (T*D, T*D), the Jacobian of ``tokens -> tokens'`` (velocity 0; the whole
      map when momentum is 0), rows and columns in ``tokens.ravel()`` order. With ``velocity``:
      (2*T*D, 2*T*D), that of ``concat(tokens.ravel(), velocity.ravel())``.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> from tokdyn import dynamics
      >>> jac = analysis.jacobian(x, analysis.collapsed_state(x, 2), dynamics.Hparams(temperature=4.0))
      >>> jac.shape
      (4, 4)
      >>> print(np.abs(analysis.eigenvalues(jac)).round(3))   # as collapse_eigenvalues predicts
      [0.5 0.  0.  0. ]
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
    host for a concrete matrix, ``jnp.linalg.eigvals`` inside a transformation.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> print(analysis.eigenvalues(np.array([[0.5, 0], [0, -0.9]])).real)
      [-0.9  0.5]
    """
    if not _checks.is_traced(jac):
        ev = np.linalg.eigvals(np.asarray(jac, np.float64))
        return ev[np.argsort(-np.abs(ev), kind="stable")]
    ev = jnp.linalg.eigvals(jac)
    return ev[jnp.argsort(-jnp.abs(ev))]


def spectral_radius(jac):
    """Largest eigenvalue modulus of a square matrix (host NumPy unless traced, as :func:`eigenvalues`).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> print(f"{analysis.spectral_radius(np.array([[0.5, 0], [0, -0.9]])):.2f}")
      0.90
    """
    return jnp.max(jnp.abs(jnp.linalg.eigvals(jac))) if _checks.is_traced(jac) else np.abs(eigenvalues(jac))[0]


def fixed_point(x, tokens, hparams: dynamics.Hparams = dynamics.Hparams(), *, mask=None, n_steps=5000, tol=1e-6):
    """Run the rule to convergence: :func:`tokdyn.dynamics.run` with a tight tolerance and a large step
    budget.

    Args:
      x: (N, D) points.
      tokens: (T, D) initial tokens.
      hparams: a :class:`tokdyn.dynamics.Hparams` (traced).
      mask: optional (N,) bool; False rows are ignored.
      n_steps: the most steps to take (traced).
      tol: convergence threshold > 0 on a step's largest coordinate movement (traced).

    Returns:
      A :class:`tokdyn.dynamics.Result`; check its ``converged``.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> r = analysis.fixed_point(x, np.array([[-2, 0], [2, 0]], np.float32))
      >>> print(np.asarray(r.tokens).round(3), bool(r.converged))   # each pulled in by the other point
      [[-0.958  0.   ]
       [ 0.958  0.   ]] True
    """
    _checks.real("tol", tol, low=0.0, low_open=True)
    return dynamics.run(x, tokens, hparams, mask=mask, n_steps=n_steps, tol=tol)


def predicted_steps(rho, delta0, tol):
    r"""Steps for a linear contraction with rate ``rho`` to bring a first change ``delta0`` below
    ``tol``: :math:`1 + \log(\mathrm{tol}/\Delta_0)/\log\rho` (at least 1; ``inf`` for
    :math:`\rho \ge 1`). Vectorised over arrays.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> print(analysis.predicted_steps(np.array([0.5, 0.9, 1.0]), 1.0, 1e-3).round(2))
      [10.97 66.56   inf]
    """
    _checks.real("tol", tol, low=0.0, low_open=True)
    rho, delta0 = np.asarray(rho, np.float64), np.asarray(delta0, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = 1.0 + np.log(tol / delta0) / np.log(rho)
    n = np.where(delta0 < tol, 1.0, n)
    return np.where(rho >= 1.0, np.inf, np.maximum(n, 1.0))


# ---------------------------------------------------------------------------------------------- collapse theory


@_checks.checked_jit(_check_x)
def covariance(x, mask=None):
    """(D, D) population covariance (divide by N) of the valid points; and their (D,) mean.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> cov, mean = analysis.covariance(x)
      >>> print(np.asarray(cov), np.asarray(mean))
      [[1. 0.]
       [0. 0.]] [0. 0.]
    """
    x = _float(x)
    w = _weights(x, mask)
    x = jnp.where(w[:, None] > 0, x, 0.0)  # padding never reaches a product (0 * inf is NaN)
    n = jnp.maximum(jnp.sum(w), 1.0)
    mean = (w @ x) / n
    y = (x - mean) * w[:, None]
    return (y.T @ y) / n, mean


@_checks.checked_jit(_check_x)
def collapse_threshold(x, mask=None):
    r""":math:`\tau_c = 2\lambda_{\max}(\mathrm{Cov}\,X)` (population covariance of the valid
    points): the collapsed state is locally stable iff :math:`\tau > \tau_c`, for any number of
    tokens and any momentum in [0, 1).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-2, 0], [2, 0], [-2, 1], [2, -1]], np.float32)
      >>> print(f"{float(analysis.collapse_threshold(x)):.3f}")   # twice the top variance, about 4
      8.531

    References:
      Rose, K., Gurewitz, E. and Fox, G. C. (1990). Statistical mechanics and phase transitions in
      clustering. *Physical Review Letters* 65(8), 945-948. (the critical temperature
      of deterministic annealing).
    """
    cov, _ = covariance(x, mask)
    return 2.0 * jnp.linalg.eigvalsh(cov)[-1]


def _check_collapsed_state(x, n_tokens, mask):
    _checks.positive_int("n_tokens", n_tokens)
    return _check_x(x, mask)


@_checks.checked_jit(_check_collapsed_state, static_argnames=("n_tokens",))
def collapsed_state(x, n_tokens: int, mask=None):
    """(n_tokens, D) tokens all at the mean of the valid points: a fixed point of every variant.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> print(np.asarray(analysis.collapsed_state(np.array([[0, 0], [2, 4]], np.float32), 3)))
      [[1. 2.]
       [1. 2.]
       [1. 2.]]
    """
    _, mean = covariance(x, mask)
    return jnp.broadcast_to(mean, (n_tokens, mean.shape[0]))


def heavy_ball_eigenvalues(mu, momentum):
    r"""The two eigenvalues (..., 2) (complex) that heavy-ball momentum :math:`\beta` makes of a
    baseline Jacobian eigenvalue :math:`\mu`: roots of :math:`z^2 - (\mu+\beta)z + \beta`.

    Examples:
      >>> from tokdyn import analysis
      >>> print(analysis.heavy_ball_eigenvalues(0.5, 0.25).round(3))   # modulus sqrt(beta) = 0.5
      [0.375+0.331j 0.375-0.331j]

    References:
      Polyak, B. T. (1964). Some methods of speeding up the convergence of iteration methods.
      *USSR Computational Mathematics and Mathematical Physics* 4(5), 1-17.
    """
    mu = np.asarray(mu, np.complex128)
    b = np.asarray(momentum, np.float64)
    s = np.sqrt((mu + b) ** 2 - 4.0 * b + 0j)
    return np.stack([(mu + b + s) / 2.0, (mu + b - s) / 2.0], axis=-1)


def collapse_eigenvalues(x, n_tokens: int, temperature, mask=None, *, momentum=0.0):
    r"""Predicted Jacobian eigenvalues at the collapsed state, sorted by decreasing modulus (complex).

    Momentum 0: D zeros (the shared mode) and :math:`(2/\tau)\lambda_k(C)`, T - 1 copies each
    (T*D in all), :math:`C` the population covariance of the points. Momentum :math:`\beta > 0`: each
    of those through :func:`heavy_ball_eigenvalues` (2*T*D in all), the spectrum of :func:`jacobian`
    with ``velocity=0`` at :func:`collapsed_state`.

    Args:
      x: (N, D) points.
      n_tokens: T >= 1, a Python int.
      temperature: :math:`\tau > 0`, a host number.
      mask: optional (N,) bool; False rows are ignored.
      momentum: :math:`\beta` in [0, 1), a host number.

    Returns:
      (T*D,) or (2*T*D,) complex128 NumPy array, computed in float64 on the host (not traceable).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> print(analysis.collapse_eigenvalues(x, 2, 4.0).real)   # 2 lambda / tau = 0.5, then zeros
      [0.5 0.  0.  0. ]
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
    the data rescales the tolerance.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> print(f"{float(analysis.merge_tolerance(x)):.3f}")   # 1e-2 of the RMS radius 1
      0.010
    """
    cov, _ = covariance(x, mask)
    return rel * jnp.sqrt(jnp.trace(cov))


def _check_pair(x, temperature, repulsion, mask):
    _checks.real("temperature", temperature, low=0.0, low_open=True)
    _checks.real("repulsion", repulsion, low=0.0)
    return _check_x(x, mask)


@_checks.checked_jit(_check_pair)
def pair_equilibrium(x, temperature, repulsion, mask=None):
    r"""Two tokens with repulsion near the collapsed state (:math:`\tau > \tau_c`): their equilibrium
    separation along the top principal axis and the multiplier of the separation map.

    With :math:`\mu = 2\lambda_{\max}/\tau`, the separation is :math:`r_* = (2\gamma/(1-\mu))^{1/3}` and
    the multiplier :math:`3\mu - 2` (stable iff > -1, i.e. :math:`\tau < 3\tau_c`). Valid while
    :math:`r_*` is small against the data.

    Args:
      x: (N, D) points.
      temperature: :math:`\tau > 0`; may be traced.
      repulsion: :math:`\gamma \ge 0`; may be traced.
      mask: optional (N,) bool; False rows are ignored.

    Returns:
      ``(r_star, multiplier)``, two scalars.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> x = np.array([[-1, 0], [1, 0]], np.float32)   # variance 1 along the first axis
      >>> r_star, multiplier = analysis.pair_equilibrium(x, 4.0, 0.01)   # mu = 2 / 4
      >>> print(f"{float(r_star):.3f} {float(multiplier):.2f}")   # (0.02 / 0.5)^(1/3), 3 mu - 2
      0.342 -0.50
    """
    mu = collapse_threshold(x, mask) / temperature
    return (2.0 * repulsion / (1.0 - mu)) ** (1.0 / 3.0), 3.0 * mu - 2.0


def min_separation(tokens):
    """Smallest distance between two distinct tokens (``inf`` for one token).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import analysis
      >>> print(f"{float(analysis.min_separation(np.array([[0, 0], [3, 4], [0, 1]], np.float32))):.1f}")
      1.0
    """
    tokens = _float(tokens)
    diff = tokens[:, None, :] - tokens[None, :, :]
    r2 = jnp.sum(diff * diff, axis=-1)
    r2 = jnp.where(jnp.eye(tokens.shape[0], dtype=bool), jnp.inf, r2)
    return jnp.sqrt(jnp.min(r2))
