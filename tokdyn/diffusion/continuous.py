"""The continuous (Gaussian) process, DDPM and DDIM: :class:`Gaussian`, :func:`gaussian`,
:func:`q_sample`, :func:`predict_x0`, :func:`posterior_mean_var`, :func:`ddpm_step`, the ancestral
:func:`sample` and the deterministic :func:`ddim_sample`."""

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
    check_clip,
    check_float,
    check_fn,
    check_same_shape,
    check_shape_arg,
    check_tables,
    check_time,
    nan_unless,
    ok_time,
    one_minus_alpha_bar_of,
)
from tokdyn.diffusion.schedules import betas


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gaussian:
    """A Gaussian diffusion (float32, traced), built by :func:`gaussian` in float64 and rounded once:

    ``betas`` (T,), ``alpha_bar`` (T+1,), ``one_minus_alpha_bar`` (T+1,), ``sqrt_alpha_bar`` and
    ``sqrt_one_minus_alpha_bar`` (T+1,) (the coefficients of :func:`q_sample`), and the posterior's
    ``posterior_x0`` = ``sqrt(abar_{t-1}) beta_t / (1 - abar_t)``, ``posterior_xt`` =
    ``sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t)`` and ``posterior_var`` =
    ``beta_t (1 - abar_{t-1}) / (1 - abar_t)`` (T,), entry t - 1 for time t."""

    betas: jax.Array
    alpha_bar: jax.Array
    one_minus_alpha_bar: jax.Array
    sqrt_alpha_bar: jax.Array
    sqrt_one_minus_alpha_bar: jax.Array
    posterior_x0: jax.Array
    posterior_xt: jax.Array
    posterior_var: jax.Array

    @property
    def T(self) -> int:
        """The number of diffusion steps T (the length of ``betas``)."""
        return self.betas.shape[-1]


_GAUSSIAN_T = ("betas", "posterior_x0", "posterior_xt", "posterior_var")
_GAUSSIAN_T1 = ("alpha_bar", "one_minus_alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar")


def _check_gaussian(proc) -> int:
    if not isinstance(proc, Gaussian):
        raise TypeError(f"proc must be a tokdyn.diffusion.Gaussian (from gaussian()), got {type(proc).__name__}")
    check_tables(proc, _GAUSSIAN_T, _GAUSSIAN_T1)
    return proc.T


def gaussian(schedule_or_betas="cosine", T: int | None = None) -> Gaussian:
    """A :class:`Gaussian` from a schedule name and ``T``, or from explicit betas (each in (0, 1)).
    Its tables are computed in float64 and stored as float32 (see the module docstring)."""
    if isinstance(schedule_or_betas, str):
        if T is None:
            raise ValueError(f"T must be given with schedule={schedule_or_betas!r}, got None")
        b = betas(schedule_or_betas, T)
        if schedule_or_betas == "absorbing":
            raise ValueError(
                "schedule must be 'linear', 'cosine' or 'cosine_d3pm' for a Gaussian diffusion, got "
                "'absorbing' (its last beta is 1, so x_T keeps no signal and x_0 cannot be recovered "
                "from epsilon)"
            )
    else:
        b = check_betas("betas", schedule_or_betas, high_open=True)
    abar = alpha_bar_of(b)
    one_minus = one_minus_alpha_bar_of(b)
    return Gaussian(
        betas=as_f32(b),
        alpha_bar=as_f32(abar),
        one_minus_alpha_bar=as_f32(one_minus),
        sqrt_alpha_bar=as_f32(np.sqrt(abar)),
        sqrt_one_minus_alpha_bar=as_f32(np.sqrt(one_minus)),
        posterior_x0=as_f32(np.sqrt(abar[:-1]) * b / one_minus[1:]),
        posterior_xt=as_f32(np.sqrt(1.0 - b) * one_minus[:-1] / one_minus[1:]),
        posterior_var=as_f32(b * one_minus[:-1] / one_minus[1:]),
    )


def q_sample(key, proc: Gaussian, x0, t):
    """A draw of ``x_t ~ q(x_t | x_0)``: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, eps ~ N(0, I).

    Args:
      key: PRNG key of ``eps``.
      proc: a :class:`Gaussian` (a pytree; may be traced).
      x0: (...) real array, any shape.
      t: integer scalar in 0..T (t = 0 gives ``x0`` itself); may be traced.

    Returns:
      ``(x_t, eps)``, both of ``x0``'s shape (``eps`` float32). A traced ``t`` outside 0..T makes
      ``x_t`` NaN (``eps`` is still the draw); a host one is a ``ValueError``.
    """
    _checks.prng_key("key", key)
    T = _check_gaussian(proc)
    check_float("x0", x0)
    check_time(t, T, low=0)
    eps = jax.random.normal(key, jnp.shape(x0), jnp.float32)
    x_t = proc.sqrt_alpha_bar[t] * x0 + proc.sqrt_one_minus_alpha_bar[t] * eps
    return nan_unless(ok_time(t, T, 0), x_t), eps


def predict_x0(proc: Gaussian, x_t, t, eps):
    """The x_0 implied by ``x_t`` and an epsilon prediction: ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``.

    Args:
      proc: a :class:`Gaussian` (a pytree; may be traced).
      x_t: (...) real array.
      t: integer scalar in 1..T; may be traced.
      eps: (...) the predicted noise, of ``x_t``'s shape.

    Returns:
      (...) x_0; NaN everywhere for a traced ``t`` outside 1..T (a host one is a ``ValueError``).
    """
    T = _check_gaussian(proc)
    check_float("x_t", x_t)
    check_float("eps", eps)
    check_same_shape("eps", eps, "x_t", x_t)
    check_time(t, T)
    return nan_unless(ok_time(t, T), (x_t - proc.sqrt_one_minus_alpha_bar[t] * eps) / proc.sqrt_alpha_bar[t])


def posterior_mean_var(proc: Gaussian, x0, x_t, t):
    """Mean and variance of the posterior ``q(x_{t-1} | x_t, x_0)``, from :class:`Gaussian`'s tables.

    Args:
      proc: a :class:`Gaussian` (a pytree; may be traced).
      x0: (...) real array.
      x_t: (...) real array of ``x0``'s shape.
      t: integer scalar in 1..T (t = 0 would divide by ``1 - abar_0 = 0``); may be traced.

    Returns:
      ``(mean, var)``: ``mean`` (...), ``var`` a scalar (0 at t = 1). A traced ``t`` outside 1..T
      makes both NaN; a host one is a ``ValueError``.
    """
    T = _check_gaussian(proc)
    check_float("x0", x0)
    check_float("x_t", x_t)
    check_same_shape("x_t", x_t, "x0", x0)
    check_time(t, T)
    ok = ok_time(t, T)
    mean = proc.posterior_x0[t - 1] * x0 + proc.posterior_xt[t - 1] * x_t
    return nan_unless(ok, mean), nan_unless(ok, proc.posterior_var[t - 1])


def ddpm_step(key, proc: Gaussian, x_t, t, eps, clip=None):
    """One ancestral step ``x_t -> x_{t-1}`` from an epsilon prediction (DDPM): the posterior mean given
    the predicted x_0, plus the posterior's noise.

    Args:
      key: PRNG key of the step's noise.
      proc: a :class:`Gaussian` (a pytree; may be traced).
      x_t: (...) the current sample.
      t: integer scalar in 1..T; may be traced (outside it the result is NaN).
      eps: (...) the epsilon prediction at ``(x_t, t)``.
      clip: None, or a scalar > 0: the predicted x_0 is clipped to [-clip, clip] before the posterior
        mean is taken (as in DDPM).

    Returns:
      (...) x_{t-1}.
    """
    _checks.prng_key("key", key)
    check_clip(clip)
    x0 = predict_x0(proc, x_t, t, eps)
    if clip is not None:
        x0 = jnp.clip(x0, -clip, clip)
    mean, var = posterior_mean_var(proc, x0, x_t, t)
    return mean + jnp.sqrt(var) * jax.random.normal(key, jnp.shape(x_t), jnp.float32)


def sample(key, proc: Gaussian, eps_fn: Callable, shape, clip=None):
    """Ancestral sampling: x_T ~ N(0, I), then T steps of :func:`ddpm_step` under ``lax.scan``.

    Args:
      key: PRNG key of x_T and of every step.
      proc: a :class:`Gaussian` (a pytree; may be traced).
      eps_fn: ``(x_t, t) -> eps``, an epsilon prediction of ``x_t``'s shape (``t`` a traced int scalar).
      shape: the static shape of a sample (a tuple of ints, or an int).
      clip: as in :func:`ddpm_step`.

    Returns:
      x_0 of ``shape``.
    """
    _checks.prng_key("key", key)
    _check_gaussian(proc)
    check_fn("eps_fn", eps_fn, "(x_t, t) -> eps")
    shape = check_shape_arg(shape)
    check_clip(clip)
    k0, k1 = jax.random.split(key)
    x = jax.random.normal(k0, shape, jnp.float32)

    def step(x, args):
        t, k = args
        return ddpm_step(k, proc, x, t, eps_fn(x, t), clip), None

    ts = jnp.arange(proc.T, 0, -1)
    x, _ = jax.lax.scan(step, x, (ts, jax.random.split(k1, proc.T)))
    return x


def ddim_times(T: int, steps: int) -> np.ndarray:
    """The DDIM sub-sequence: ``steps`` times from T down to 1, evenly spaced (then 0).

    Examples:
      >>> from tokdyn import diffusion
      >>> diffusion.ddim_times(1000, 5).tolist()
      [1000, 750, 500, 251, 1, 0]

    References:
      Song, J., Meng, C. and Ermon, S. (2021). Denoising diffusion implicit models. *ICLR*.
    """
    T = _checks.positive_int("T", T)
    steps = _checks.positive_int("steps", steps)
    if steps > T:
        raise ValueError(f"steps must be <= T={T}, got {steps}")
    ts = np.unique(np.round(np.linspace(1, T, steps)).astype(np.int32))[::-1]
    return np.concatenate([ts, [0]]).astype(np.int32)


def ddim_sample(key, proc: Gaussian, eps_fn: Callable, shape, steps: int, eta=0.0, clip=None):
    """DDIM sampling (Song et al. 2021) over ``steps`` of the T times (:func:`ddim_times`).

    Args:
      key: PRNG key of x_T and of the steps' noise.
      proc: a :class:`Gaussian` (a pytree; may be traced).
      eps_fn: ``(x_t, t) -> eps``, an epsilon prediction of ``x_t``'s shape.
      shape: the static shape of a sample (a tuple of ints, or an int).
      steps: static int in 1..T, the number of denoising steps.
      eta: scalar in [0, 1]: 0 is deterministic given x_T, 1 gives the ancestral variance. May be traced.
      clip: None, or a scalar > 0: the predicted x_0 is clipped to [-clip, clip] and epsilon is
        re-derived from it, ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``, which keeps the step
        on the DDIM trajectory of the clipped prediction (as diffusers' ``clip_sample`` does).

    Returns:
      x_0 of ``shape``.
    """
    _checks.prng_key("key", key)
    T = _check_gaussian(proc)
    check_fn("eps_fn", eps_fn, "(x_t, t) -> eps")
    shape = check_shape_arg(shape)
    if np.ndim(eta) != 0:
        raise ValueError(f"eta must be a scalar in [0, 1], got shape {np.shape(eta)}")
    _checks.real("eta", eta, low=0.0, high=1.0)
    check_clip(clip)
    times = jnp.asarray(ddim_times(T, steps))
    k0, k1 = jax.random.split(key)
    x = jax.random.normal(k0, shape, jnp.float32)

    def step(x, args):
        t, s, k = args
        eps = eps_fn(x, t)
        x0 = predict_x0(proc, x, t, eps)
        if clip is not None:
            x0 = jnp.clip(x0, -clip, clip)
            eps = (x - proc.sqrt_alpha_bar[t] * x0) / proc.sqrt_one_minus_alpha_bar[t]
        a_t, a_s = proc.alpha_bar[t], proc.alpha_bar[s]
        sigma = eta * jnp.sqrt(proc.one_minus_alpha_bar[s] / proc.one_minus_alpha_bar[t] * (1.0 - a_t / a_s))
        noise = jax.random.normal(k, jnp.shape(x), jnp.float32)
        return (
            proc.sqrt_alpha_bar[s] * x0
            + jnp.sqrt(jnp.maximum(proc.one_minus_alpha_bar[s] - sigma**2, 0.0)) * eps
            + sigma * noise
        ), None

    n = times.shape[0] - 1
    x, _ = jax.lax.scan(step, x, (times[:-1], times[1:], jax.random.split(k1, n)))
    return x
