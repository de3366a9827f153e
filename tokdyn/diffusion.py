"""Diffusion processes, continuous (DDPM / DDIM) and discrete (D3PM), as pure kernels.

Time runs over ``t = 1..T``; ``betas`` (T,) holds beta_1..beta_T and ``alpha_bar`` (T+1,)
holds ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` with ``alpha_bar_0 = 1``.

* Schedules (:func:`betas`): ``linear``, ``cosine`` (improved DDPM's), ``cosine_d3pm`` and
  ``absorbing``.
* Continuous (:class:`Gaussian`): :func:`q_sample`, :func:`posterior_mean_var`, :func:`ddpm_step`,
  the ancestral :func:`sample` and the deterministic :func:`ddim_sample`.
* Discrete (:class:`Discrete`, D3PM, uniform or absorbing kernel, applied in O(S) without S x S
  matrices): :func:`marginal`, :func:`step_likelihood`, :func:`posterior_logits`,
  :func:`hybrid_loss`, :func:`q_sample_discrete`, :func:`sample_discrete`.

Every function works on one example (any array shape of cells) with a scalar ``t``: ``vmap``
over a batch. Processes are pytrees (their schedules traced), so a sweep over schedules does not
recompile. Host values are checked before tracing; a traced ``t`` (or class, or state) out of
range gives NaN in float outputs and -1 in integer ones (:ref:`diffusion-checks`).

The schedules, kernels and posteriors in detail: :ref:`diffusion-kernels`.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

SCHEDULES = ("linear", "cosine", "cosine_d3pm", "absorbing")
KERNELS = ("uniform", "absorbing")
_TINY = 1e-30  # floor inside logarithms of probabilities that may be exactly 0


# --- schedules ---------------------------------------------------------------------------------------


def betas(schedule: str, T: int) -> np.ndarray:
    """(T,) float64 beta_1..beta_T of a named schedule (see the module docstring).

    ``linear``: ``linspace(1e-4 * 1000/T, min(0.02 * 1000/T, 0.999), T)`` (the cap binds for
    T <= 20); ``cosine``: Nichol & Dhariwal's cos²; ``cosine_d3pm``: D3PM's cos; ``absorbing``:
    ``1 / (T - t + 1)``. Cosine betas are capped at 0.999.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import diffusion
      >>> b = diffusion.betas("linear", 1000)
      >>> print(b.shape, f"{b[0]:.4f} {b[-1]:.4f}")
      (1000,) 0.0001 0.0200
      >>> print(f"{np.prod(1 - diffusion.betas('cosine', 1000)):.1e}")   # alpha_bar_T: almost pure noise
      2.4e-09

    References:
      Ho, J., Jain, A. and Abbeel, P. (2020). Denoising diffusion probabilistic models. *NeurIPS*
      (the linear schedule). Nichol, A. and Dhariwal, P. (2021). Improved denoising diffusion
      probabilistic models. *ICML* (the cosine schedule). Austin, J., Johnson, D. D., Ho, J.,
      Tarlow, D. and van den Berg, R. (2021). Structured denoising diffusion models in discrete
      state-spaces. *NeurIPS* (``cosine_d3pm``, ``absorbing``).
    """
    _checks.choice("schedule", schedule, SCHEDULES)
    T = _checks.positive_int("T", T)
    if schedule == "linear":
        scale = 1000.0 / T
        return np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T)
    if schedule == "cosine":
        s = 0.008
        f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        return np.minimum(1.0 - abar[1:] / np.maximum(abar[:-1], 1e-300), 0.999)
    if schedule == "cosine_d3pm":
        f = np.cos((np.arange(T + 1, dtype=np.float64) / T + 0.008) / 1.008 * np.pi / 2)
        return np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    return 1.0 / (T - np.arange(1, T + 1) + 1.0)


def _check_betas(name: str, b, *, high_open: bool):
    arr = np.asarray(b, np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a 1-D array of T >= 1 values, got shape {arr.shape}")
    _checks.real(name, arr, low=0.0, high=1.0, low_open=True, high_open=high_open)
    return arr


def _alpha_bar(b: np.ndarray) -> np.ndarray:
    return np.concatenate([[1.0], np.cumprod(1.0 - b)])


def _one_minus_alpha_bar(b: np.ndarray) -> np.ndarray:
    """(T+1,) float64 ``1 - alpha_bar_t``, accurate when alpha_bar_t is close to 1:
    ``-expm1(sum log1p(-beta))`` (a beta of 1 gives exactly 1)."""
    with np.errstate(divide="ignore"):
        log_abar = np.concatenate([[0.0], np.cumsum(np.log1p(-b))])
    return -np.expm1(log_abar)


def _f32(a) -> jax.Array:
    return jnp.asarray(np.asarray(a, np.float64), jnp.float32)


# --- argument checks (plain Python, before tracing; values only when they are host data) ---------------


def _check_time(t, T: int, *, low: int = 1, name: str = "t"):
    """An integer scalar time step; in ``low..T`` when it is host data."""
    dtype = _checks.dtype_of(t)
    if isinstance(t, bool) or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer time step in {low}..{T}, got {t!r} of dtype {dtype}")
    if np.ndim(t) != 0:
        raise ValueError(f"{name} must be a scalar time step (vmap over a batch of examples), got shape {np.shape(t)}")
    if _checks.on_host(t):
        value = int(np.asarray(t))
        if not low <= value <= T:
            raise ValueError(f"{name} must be in {low}..{T} (T = {T}), got {value}")
    return t


def _ok_time(t, T: int, low: int = 1):
    """Scalar bool: ``t`` lies in ``low..T``; None for host ``t`` (checked already)."""
    if _checks.on_host(t):
        return None
    return (t >= low) & (t <= T)


def _nan_unless(ok, value):
    """``value``, or NaN (everywhere, or where the bool array ``ok`` is False) when not ``ok``: a
    traced index out of range, which a gather would clamp to a plausible neighbour. Applied to the
    outputs (NaN in a coefficient need not survive: XLA may turn a product with a constant 0/1
    matrix into a select). ``ok`` None: ``value``."""
    return value if ok is None else jnp.where(ok, value, jnp.nan)


def _check_ints(name: str, value, bound: int, bound_name: str, meaning: str):
    """Integer array (always); values in ``[0, bound)`` when it is host data."""
    dtype = _checks.dtype_of(value)
    if isinstance(value, bool) or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must hold integer {meaning} in [0, {bound_name}) = [0, {bound}), got dtype {dtype}")
    if _checks.on_host(value) and np.size(value):
        arr = np.asarray(value)
        outside = (arr < 0) | (arr >= bound)
        if outside.any():
            where = tuple(int(i) for i in np.unravel_index(np.flatnonzero(outside)[0], arr.shape))
            raise ValueError(
                f"{name} must hold {meaning} in [0, {bound_name}) = [0, {bound}), got "
                f"{arr[where].item()!r}" + (f" at index {where}" if arr.ndim else "")
            )
    return value


def _inside(x, bound: int):
    """Elementwise bool: the integer ``x`` lies in ``[0, bound)`` (compared in int32 for narrow
    types, in which a Python bound could wrap)."""
    x = jnp.asarray(x)
    if jnp.iinfo(x.dtype).bits <= 16:
        x = x.astype(jnp.int32)
    return (x >= 0) & (x < bound)


def _check_float(name: str, value, *, what: str = "array"):
    """A real-valued array (floating or integer dtype); finite when it is host data."""
    dtype = _checks.dtype_of(value)
    if isinstance(value, bool) or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real-valued {what}, got dtype {dtype}")
    if _checks.on_host(value):
        finite = np.isfinite(np.asarray(value, np.float64))
        if not finite.all():
            raise ValueError(
                f"{name} must be finite: it holds {finite.size - int(finite.sum())} NaN or infinite value(s)"
            )
    return value


def _check_same_shape(name: str, value, other_name: str, other):
    if np.shape(value) != np.shape(other):
        raise ValueError(f"{name} must have the shape of {other_name} {np.shape(other)}, got {np.shape(value)}")


def _check_shape_arg(shape):
    if isinstance(shape, Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints >= 0, got {shape!r}") from None
    if not all(isinstance(d, Integral) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise ValueError(f"shape must be a tuple of ints >= 0, got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_fn(name: str, fn, signature: str):
    if not callable(fn):
        raise TypeError(f"{name} must be a callable {signature}, got {type(fn).__name__}")


def _check_clip(clip):
    if clip is not None:
        if np.ndim(clip) != 0:
            raise ValueError(f"clip must be None or a scalar > 0, got shape {np.shape(clip)}")
        _checks.real("clip", clip, low=0.0, low_open=True)


def _check_tables(proc, fields_t, fields_t1):
    T = np.shape(proc.betas)[-1] if np.ndim(proc.betas) else None
    for field in fields_t + fields_t1:
        value = getattr(proc, field)
        want = (T,) if field in fields_t else (None if T is None else T + 1,)
        if np.ndim(value) != 1 or np.shape(value) != want:
            raise ValueError(
                f"proc.{field} must have shape {want} (one process: vmap over a batch of processes), got "
                f"{np.shape(value)}; build processes with gaussian() / discrete()"
            )


# --- continuous (DDPM / DDIM) ---------------------------------------------------------------------------


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
    _check_tables(proc, _GAUSSIAN_T, _GAUSSIAN_T1)
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
        b = _check_betas("betas", schedule_or_betas, high_open=True)
    abar = _alpha_bar(b)
    one_minus = _one_minus_alpha_bar(b)
    return Gaussian(
        betas=_f32(b),
        alpha_bar=_f32(abar),
        one_minus_alpha_bar=_f32(one_minus),
        sqrt_alpha_bar=_f32(np.sqrt(abar)),
        sqrt_one_minus_alpha_bar=_f32(np.sqrt(one_minus)),
        posterior_x0=_f32(np.sqrt(abar[:-1]) * b / one_minus[1:]),
        posterior_xt=_f32(np.sqrt(1.0 - b) * one_minus[:-1] / one_minus[1:]),
        posterior_var=_f32(b * one_minus[:-1] / one_minus[1:]),
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
    _check_float("x0", x0)
    _check_time(t, T, low=0)
    eps = jax.random.normal(key, jnp.shape(x0), jnp.float32)
    x_t = proc.sqrt_alpha_bar[t] * x0 + proc.sqrt_one_minus_alpha_bar[t] * eps
    return _nan_unless(_ok_time(t, T, 0), x_t), eps


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
    _check_float("x_t", x_t)
    _check_float("eps", eps)
    _check_same_shape("eps", eps, "x_t", x_t)
    _check_time(t, T)
    return _nan_unless(_ok_time(t, T), (x_t - proc.sqrt_one_minus_alpha_bar[t] * eps) / proc.sqrt_alpha_bar[t])


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
    _check_float("x0", x0)
    _check_float("x_t", x_t)
    _check_same_shape("x_t", x_t, "x0", x0)
    _check_time(t, T)
    ok = _ok_time(t, T)
    mean = proc.posterior_x0[t - 1] * x0 + proc.posterior_xt[t - 1] * x_t
    return _nan_unless(ok, mean), _nan_unless(ok, proc.posterior_var[t - 1])


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
    _check_clip(clip)
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
    _check_fn("eps_fn", eps_fn, "(x_t, t) -> eps")
    shape = _check_shape_arg(shape)
    _check_clip(clip)
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
    _check_fn("eps_fn", eps_fn, "(x_t, t) -> eps")
    shape = _check_shape_arg(shape)
    if np.ndim(eta) != 0:
        raise ValueError(f"eta must be a scalar in [0, 1], got shape {np.shape(eta)}")
    _checks.real("eta", eta, low=0.0, high=1.0)
    _check_clip(clip)
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


# --- discrete (D3PM) --------------------------------------------------------------------------------------


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
    _check_tables(proc, ("betas",), ("alpha_bar", "one_minus_alpha_bar"))
    return proc.T


def _check_classes(name: str, x0, proc: Discrete):
    return _check_ints(name, x0, proc.classes, "classes", "classes")


def _check_states(name: str, x_t, proc: Discrete):
    return _check_ints(name, x_t, proc.states, "states", "states")


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
        b = _check_betas("betas", schedule_or_betas, high_open=False)
    return Discrete(
        betas=_f32(b),
        alpha_bar=_f32(_alpha_bar(b)),
        one_minus_alpha_bar=_f32(_one_minus_alpha_bar(b)),
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
    _check_time(t, T)
    b = proc.betas[t - 1]
    return _nan_unless(_ok_time(t, T), (1.0 - b) * jnp.eye(proc.states) + b * stationary(proc)[None, :])


def cumulative_matrix(proc: Discrete, t) -> jax.Array:
    """(S, S) Qbar_t = Q_1 ... Q_t in closed form, t in 0..T (the identity at t = 0; a traced
    ``t`` outside: NaN)."""
    T = _check_discrete(proc)
    _check_time(t, T, low=0)
    a, one_minus = proc.alpha_bar[t], proc.one_minus_alpha_bar[t]
    return _nan_unless(_ok_time(t, T, 0), a * jnp.eye(proc.states) + one_minus * stationary(proc)[None, :])


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
    _check_time(t, T, low=0)
    a, one_minus = proc.alpha_bar[t], proc.one_minus_alpha_bar[t]
    return _nan_unless(_ok_time(t, T, 0), a * probs + one_minus * probs.sum(-1, keepdims=True) * stationary(proc))


def step_likelihood(proc: Discrete, x_t, t):
    """(..., S): ``Q_t[x_{t-1}, x_t]`` as a function of x_{t-1}, for integer states ``x_t`` (...)
    in ``[0, S)`` and t in 1..T. Held in JAX arrays, a ``t`` outside 1..T makes every entry NaN,
    a state outside ``[0, S)`` its cell's row."""
    T = _check_discrete(proc)
    _check_states("x_t", x_t, proc)
    _check_time(t, T)
    b = proc.betas[t - 1]
    out = (1.0 - b) * jax.nn.one_hot(x_t, proc.states, dtype=jnp.float32) + b * stationary(proc)[x_t][..., None]
    ok = _inside(x_t, proc.states)[..., None]  # (..., 1) cells
    time_ok = _ok_time(t, T)
    return _nan_unless(ok if time_ok is None else ok & time_ok, out)


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
    _check_time(t, T, low=0)
    p = marginal(proc, jax.nn.one_hot(x0, proc.states, dtype=jnp.float32), t)
    g = jax.random.gumbel(key, p.shape, jnp.float32)
    draw = jnp.argmax(jnp.log(jnp.maximum(p, _TINY)) + g, -1).astype(jnp.int32)
    ok = _inside(x0, proc.classes)
    time_ok = _ok_time(t, T, 0)
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
    _check_time(t, T)
    if _checks.on_host(x0_probs) and np.any(np.asarray(x0_probs) < 0):
        raise ValueError("x0_probs must hold probabilities (>= 0), got a negative entry")
    _check_float("x0_probs", x0_probs)
    p = step_likelihood(proc, x_t, t) * marginal(proc, _pad_states(proc, x0_probs), t - 1)
    p = p / jnp.maximum(p.sum(-1, keepdims=True), _TINY)
    ok = _inside(x_t, proc.states)[..., None]  # (..., 1) cells
    time_ok = _ok_time(t, T)
    return _nan_unless(ok if time_ok is None else ok & time_ok, jnp.log(jnp.maximum(p, _TINY)))


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
    _check_same_shape("x_t", x_t, "x0", x0)
    _check_last_axis("x0_logits", x0_logits, proc.classes, "proc.classes", x0, "x0")
    _check_time(t, T)
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
    ok = _inside(x0, proc.classes) & _inside(x_t, proc.states)  # (...) cells
    time_ok = _ok_time(t, T)
    ok = ok if time_ok is None else ok & time_ok
    return tuple(_nan_unless(ok, v) for v in (vb + lam * ce, vb, ce))


def prior_kl(proc: Discrete, x0):
    """(...) KL(q(x_T | x_0) || stationary): the constant last term of the bound, per cell.
    ``x0`` integer classes in ``[0, C)`` (held in a JAX array, a class outside: NaN in its cell)."""
    _check_discrete(proc)
    _check_classes("x0", x0, proc)
    q = marginal(proc, jax.nn.one_hot(x0, proc.states, dtype=jnp.float32), proc.T)
    pi = stationary(proc)
    kl = jnp.sum(jnp.where(q > 0, q * (jnp.log(jnp.maximum(q, _TINY)) - jnp.log(jnp.maximum(pi, _TINY))), 0.0), -1)
    return jnp.where(_inside(x0, proc.classes), kl, jnp.nan)


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
    _check_fn("x0_logits_fn", x0_logits_fn, "(x_t, t) -> (*shape, C) logits")
    shape = _check_shape_arg(shape)
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
    _check_fn("x0_logits_fn", x0_logits_fn, "(x_t, t) -> (..., C) logits")
    _check_classes("x0", x0, proc)

    def term(t):
        x_t = q_sample_discrete(jax.random.fold_in(key, t), proc, x0, t)
        return jnp.sum(hybrid_loss(proc, x0, x_t, t, x0_logits_fn(x_t, t), 0.0)[1])

    terms = jax.lax.map(term, jnp.arange(1, proc.T + 1))
    return jnp.sum(terms) + jnp.sum(prior_kl(proc, x0))
