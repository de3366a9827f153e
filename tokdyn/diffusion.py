"""Diffusion processes, continuous (DDPM / DDIM) and discrete (D3PM), as pure kernels.

Time runs over ``t = 1..T``; ``betas`` (T,) holds beta_1..beta_T and ``alpha_bar`` (T+1,)
holds ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` with ``alpha_bar_0 = 1``.

**Schedules** (:func:`betas`): ``linear`` (DDPM: beta from 1e-4 to 0.02 at T = 1000, both scaled
by 1000/T), ``cosine`` (Nichol & Dhariwal 2021: alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)
normalised, s = 0.008, each beta capped at 0.999) and ``absorbing`` (Austin et al. 2021:
beta_t = 1/(T - t + 1), so alpha_bar_T = 0 exactly: every cell is masked at T).

**Continuous** (:class:`Gaussian`): ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``;
:func:`q_sample`, the posterior :func:`posterior_mean_var`, one ancestral step :func:`ddpm_step`
from an epsilon prediction, the ancestral sampler :func:`sample` (T steps under ``lax.scan``)
and the deterministic DDIM sampler :func:`ddim_sample` on a sub-sequence of the steps.

**Discrete** (:class:`Discrete`, D3PM) over C classes, with S states (S = C for ``uniform``,
S = C + 1 for ``absorbing``: the last state is the mask):

- uniform: ``Q_t = (1 - beta_t) I + beta_t / C 11^T``, so ``Qbar_t = abar_t I + (1 - abar_t) / C 11^T``;
- absorbing: ``Q_t = (1 - beta_t) I + beta_t 1 e_mask^T``, so ``Qbar_t = abar_t I + (1 - abar_t) 1 e_mask^T``.

Both act on a distribution in O(S) (:func:`marginal`, :func:`step_likelihood`): no S x S matrix
is formed, so token-level diffusion over a large vocabulary costs no more memory than over
colours. :func:`transition_matrix` and :func:`cumulative_matrix` build the matrices for checks
and figures. :func:`published_cumulative_matrix` is the kernel of the published discrete-grid
code, kept for contrast only: it stays with probability abar_t and spreads the rest over the
*other* colours, so a fully noised cell avoids its original colour (P(x_T = x_0) = abar_T, not 1/C).

The posterior ``q(x_{t-1} | x_t, x_0) ∝ Q_t[x_{t-1}, x_t] Qbar_{t-1}[x_0, x_{t-1}]`` and the
model's ``p(x_{t-1} | x_t) ∝ Q_t[x_{t-1}, x_t] (p~(x_0 | x_t) Qbar_{t-1})[x_{t-1}]`` (the x_0
parameterisation of D3PM) are :func:`posterior_logits`; at t = 1 the model's x_0 distribution is
used directly. :func:`hybrid_loss` is the variational-bound term at t (the KL for t >= 2, the
negative log-likelihood of x_0 at t = 1) plus ``lam`` times the auxiliary x_0 cross-entropy;
:func:`q_sample_discrete` draws by Gumbel-max; :func:`sample_discrete` is the ancestral sampler.

Every function works on one example (any array shape of cells) with a scalar ``t``: ``vmap``
over a batch. Processes are pytrees (their schedules traced), so a sweep over schedules does not
recompile; the kernel name and class count are static.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

SCHEDULES = ("linear", "cosine", "absorbing")
KERNELS = ("uniform", "absorbing")
_TINY = 1e-30  # floor inside logarithms of probabilities that may be exactly 0


# --- schedules ---------------------------------------------------------------------------------------

def betas(schedule: str, T: int) -> np.ndarray:
    """(T,) float64 beta_1..beta_T of a named schedule (see the module docstring)."""
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
    return 1.0 / (T - np.arange(1, T + 1) + 1.0)


def _check_betas(name: str, b, *, high_open: bool):
    arr = np.asarray(b, np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a 1-D array of T >= 1 values, got shape {arr.shape}")
    _checks.real(name, arr, low=0.0, high=1.0, low_open=True, high_open=high_open)
    return arr


def _alpha_bar(b: np.ndarray) -> np.ndarray:
    return np.concatenate([[1.0], np.cumprod(1.0 - b)])


# --- continuous (DDPM / DDIM) ---------------------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gaussian:
    """A Gaussian diffusion: ``betas`` (T,) and ``alpha_bar`` (T+1,), float32, traced."""

    betas: jax.Array
    alpha_bar: jax.Array

    @property
    def T(self) -> int:
        return self.betas.shape[-1]


def gaussian(schedule_or_betas="cosine", T: int | None = None) -> Gaussian:
    """A :class:`Gaussian` from a schedule name and ``T``, or from explicit betas (each in (0, 1))."""
    if isinstance(schedule_or_betas, str):
        if T is None:
            raise ValueError(f"T must be given with schedule={schedule_or_betas!r}, got None")
        b = betas(schedule_or_betas, T)
        if schedule_or_betas == "absorbing":
            raise ValueError("schedule must be 'linear' or 'cosine' for a Gaussian diffusion, got 'absorbing' "
                             "(its last beta is 1, so x_T keeps no signal and x_0 cannot be recovered from epsilon)")
    else:
        b = _check_betas("betas", schedule_or_betas, high_open=True)
    return Gaussian(betas=jnp.asarray(b, jnp.float32), alpha_bar=jnp.asarray(_alpha_bar(b), jnp.float32))


def q_sample(key, proc: Gaussian, x0, t):
    """``(x_t, eps)``: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, eps ~ N(0, I)."""
    eps = jax.random.normal(key, jnp.shape(x0), jnp.float32)
    a = proc.alpha_bar[t]
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * eps, eps


def predict_x0(proc: Gaussian, x_t, t, eps):
    """x_0 implied by ``x_t`` and an epsilon prediction."""
    a = proc.alpha_bar[t]
    return (x_t - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)


def posterior_mean_var(proc: Gaussian, x0, x_t, t):
    """Mean and variance of ``q(x_{t-1} | x_t, x_0)`` (t >= 1; the variance is 0 at t = 1)."""
    b = proc.betas[t - 1]
    a_t, a_prev = proc.alpha_bar[t], proc.alpha_bar[t - 1]
    mean = (jnp.sqrt(a_prev) * b / (1.0 - a_t)) * x0 + (jnp.sqrt(1.0 - b) * (1.0 - a_prev) / (1.0 - a_t)) * x_t
    return mean, b * (1.0 - a_prev) / (1.0 - a_t)


def ddpm_step(key, proc: Gaussian, x_t, t, eps, clip=None):
    """One ancestral step ``x_t -> x_{t-1}`` from an epsilon prediction (x_0 clipped to
    [-clip, clip] first when ``clip`` is given)."""
    x0 = predict_x0(proc, x_t, t, eps)
    if clip is not None:
        x0 = jnp.clip(x0, -clip, clip)
    mean, var = posterior_mean_var(proc, x0, x_t, t)
    return mean + jnp.sqrt(var) * jax.random.normal(key, jnp.shape(x_t), jnp.float32)


def sample(key, proc: Gaussian, eps_fn: Callable, shape, clip=None):
    """Ancestral sampling: x_T ~ N(0, I), then T calls of ``eps_fn(x_t, t)`` under ``lax.scan``.
    Returns x_0 of ``shape``."""
    k0, k1 = jax.random.split(key)
    x = jax.random.normal(k0, tuple(shape), jnp.float32)

    def step(x, args):
        t, k = args
        return ddpm_step(k, proc, x, t, eps_fn(x, t), clip), None

    ts = jnp.arange(proc.T, 0, -1)
    x, _ = jax.lax.scan(step, x, (ts, jax.random.split(k1, proc.T)))
    return x


def ddim_times(T: int, steps: int) -> np.ndarray:
    """The DDIM sub-sequence: ``steps`` times from T down to 1, evenly spaced (then 0)."""
    steps = _checks.positive_int("steps", steps)
    if steps > T:
        raise ValueError(f"steps must be <= T={T}, got {steps}")
    ts = np.unique(np.round(np.linspace(1, T, steps)).astype(np.int32))[::-1]
    return np.concatenate([ts, [0]]).astype(np.int32)


def ddim_sample(key, proc: Gaussian, eps_fn: Callable, shape, steps: int, eta=0.0, clip=None):
    """DDIM sampling (Song et al. 2021) over ``steps`` of the T times; ``eta = 0`` is
    deterministic given x_T, ``eta = 1`` matches the ancestral variance."""
    times = jnp.asarray(ddim_times(proc.T, steps))
    k0, k1 = jax.random.split(key)
    x = jax.random.normal(k0, tuple(shape), jnp.float32)

    def step(x, args):
        t, s, k = args
        eps = eps_fn(x, t)
        x0 = predict_x0(proc, x, t, eps)
        if clip is not None:
            x0 = jnp.clip(x0, -clip, clip)
            eps = (x - jnp.sqrt(proc.alpha_bar[t]) * x0) / jnp.sqrt(1.0 - proc.alpha_bar[t])
        a_t, a_s = proc.alpha_bar[t], proc.alpha_bar[s]
        sigma = eta * jnp.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
        noise = jax.random.normal(k, jnp.shape(x), jnp.float32)
        return jnp.sqrt(a_s) * x0 + jnp.sqrt(jnp.maximum(1.0 - a_s - sigma ** 2, 0.0)) * eps + sigma * noise, None

    n = times.shape[0] - 1
    x, _ = jax.lax.scan(step, x, (times[:-1], times[1:], jax.random.split(k1, n)))
    return x


# --- discrete (D3PM) --------------------------------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Discrete:
    """A D3PM process: ``kernel`` and ``classes`` (static), ``betas`` (T,) and ``alpha_bar``
    (T+1,) (float32, traced)."""

    betas: jax.Array
    alpha_bar: jax.Array
    kernel: str = dataclasses.field(default="uniform", metadata=dict(static=True))
    classes: int = dataclasses.field(default=2, metadata=dict(static=True))

    @property
    def T(self) -> int:
        return self.betas.shape[-1]

    @property
    def states(self) -> int:
        return n_states(self.kernel, self.classes)

    @property
    def mask(self) -> int:
        """The mask state (absorbing), else -1."""
        return self.classes if self.kernel == "absorbing" else -1


def n_states(kernel: str, classes: int) -> int:
    return classes + 1 if kernel == "absorbing" else classes


def discrete(kernel: str, classes: int, schedule_or_betas=None, T: int | None = None) -> Discrete:
    """A :class:`Discrete` process. ``schedule_or_betas``: a schedule name (with ``T``) or explicit
    betas, each in (0, 1]; the default is D3PM's: ``cosine`` for uniform, ``absorbing`` for absorbing."""
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
    return Discrete(betas=jnp.asarray(b, jnp.float32), alpha_bar=jnp.asarray(_alpha_bar(b), jnp.float32),
                    kernel=kernel, classes=classes)


def stationary(proc: Discrete) -> jax.Array:
    """(S,) the limit distribution: uniform over the C classes, or all mass on the mask."""
    if proc.kernel == "absorbing":
        return jax.nn.one_hot(proc.mask, proc.states, dtype=jnp.float32)
    return jnp.full((proc.states,), 1.0 / proc.classes, jnp.float32)


def transition_matrix(proc: Discrete, t) -> jax.Array:
    """(S, S) Q_t (rows: x_{t-1}, columns: x_t), t in 1..T."""
    b = proc.betas[t - 1]
    return (1.0 - b) * jnp.eye(proc.states) + b * stationary(proc)[None, :]


def cumulative_matrix(proc: Discrete, t) -> jax.Array:
    """(S, S) Qbar_t = Q_1 ... Q_t in closed form (the identity at t = 0)."""
    a = proc.alpha_bar[t]
    return a * jnp.eye(proc.states) + (1.0 - a) * stationary(proc)[None, :]


def published_cumulative_matrix(alpha_bar_t, classes: int) -> jax.Array:
    """(C, C) the published discrete-grid kernel, for contrast: stay with probability abar_t,
    move to each *other* colour with (1 - abar_t) / (C - 1). Not a valid D3PM kernel: at
    abar_T = 0 a cell never keeps its colour."""
    a = jnp.asarray(alpha_bar_t, jnp.float32)
    off = (1.0 - a) / (classes - 1)
    return (a - off) * jnp.eye(classes) + off


def _pad_states(proc: Discrete, probs):
    """(..., C) class probabilities -> (..., S) state probabilities (mask state 0)."""
    if proc.kernel == "absorbing":
        return jnp.concatenate([probs, jnp.zeros(probs.shape[:-1] + (1,), probs.dtype)], -1)
    return probs


def marginal(proc: Discrete, probs, t):
    """``probs @ Qbar_t`` for (..., S) distributions over states, in O(S)."""
    a = proc.alpha_bar[t]
    return a * probs + (1.0 - a) * probs.sum(-1, keepdims=True) * stationary(proc)


def step_likelihood(proc: Discrete, x_t, t):
    """(..., S): ``Q_t[x_{t-1}, x_t]`` as a function of x_{t-1}, for integer states ``x_t`` (...)."""
    b = proc.betas[t - 1]
    return (1.0 - b) * jax.nn.one_hot(x_t, proc.states, dtype=jnp.float32) + b * stationary(proc)[x_t][..., None]


def q_sample_discrete(key, proc: Discrete, x0, t):
    """x_t ~ q(x_t | x_0) by Gumbel-max over ``log Qbar_t[x_0]``; ``x0`` integer classes (...)."""
    p = marginal(proc, jax.nn.one_hot(x0, proc.states, dtype=jnp.float32), t)
    g = jax.random.gumbel(key, p.shape, jnp.float32)
    return jnp.argmax(jnp.log(jnp.maximum(p, _TINY)) + g, -1).astype(jnp.int32)


def posterior_logits(proc: Discrete, x0_probs, x_t, t):
    """(..., S) log of ``Q_t[x_{t-1}, x_t] (x0_probs Qbar_{t-1})[x_{t-1}]``, normalised: the
    posterior q(x_{t-1} | x_t, x_0) for one-hot ``x0_probs``, the model's p(x_{t-1} | x_t) for
    predicted ones. ``x0_probs`` (..., C) over classes, ``x_t`` (...) integer states, t >= 2."""
    p = step_likelihood(proc, x_t, t) * marginal(proc, _pad_states(proc, x0_probs), t - 1)
    p = p / jnp.maximum(p.sum(-1, keepdims=True), _TINY)
    return jnp.log(jnp.maximum(p, _TINY))


def _kl(log_q, log_p):
    q = jnp.exp(log_q)
    return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), -1)


def hybrid_loss(proc: Discrete, x0, x_t, t, x0_logits, lam=0.01):
    """``(loss, vb, ce)`` per cell: ``vb`` = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for
    t >= 2 and ``-log p(x_0 | x_1)`` at t = 1; ``ce`` = ``-log p~(x_0 | x_t)``; loss = vb + lam ce.
    ``x0`` (...) integer classes, ``x_t`` (...) states, ``x0_logits`` (..., C)."""
    logp0 = jax.nn.log_softmax(x0_logits.astype(jnp.float32), -1)
    ce = -jnp.take_along_axis(logp0, x0[..., None], -1)[..., 0]
    tt = jnp.maximum(t, 2)  # the t >= 2 branch, evaluated harmlessly at t = 1 and discarded
    log_q = posterior_logits(proc, jax.nn.one_hot(x0, proc.classes, dtype=jnp.float32), x_t, tt)
    log_p = posterior_logits(proc, jnp.exp(logp0), x_t, tt)
    vb = jnp.where(t == 1, ce, _kl(log_q, log_p))
    return vb + lam * ce, vb, ce


def prior_kl(proc: Discrete, x0):
    """(...) KL(q(x_T | x_0) || stationary): the constant last term of the bound, per cell."""
    q = marginal(proc, jax.nn.one_hot(x0, proc.states, dtype=jnp.float32), proc.T)
    pi = stationary(proc)
    return jnp.sum(jnp.where(q > 0, q * (jnp.log(jnp.maximum(q, _TINY)) - jnp.log(jnp.maximum(pi, _TINY))), 0.0), -1)


def sample_discrete(key, proc: Discrete, x0_logits_fn: Callable, shape):
    """Ancestral sampling: x_T from the stationary distribution, T - 1 steps of p(x_{t-1} | x_t)
    from ``x0_logits_fn(x_t, t) -> (*shape, C)``, then x_0 ~ p~(x_0 | x_1). Returns (*shape,) classes."""
    k0, k1, k2 = jax.random.split(key, 3)
    shape = tuple(shape)
    pi = stationary(proc)
    x = jax.random.categorical(k0, jnp.log(jnp.maximum(pi, _TINY)), shape=shape).astype(jnp.int32)

    def step(x, args):
        t, k = args
        probs = jax.nn.softmax(x0_logits_fn(x, t).astype(jnp.float32), -1)
        logits = posterior_logits(proc, probs, x, t)
        return jnp.argmax(logits + jax.random.gumbel(k, logits.shape, jnp.float32), -1).astype(jnp.int32), None

    ts = jnp.arange(proc.T, 1, -1)
    x, _ = jax.lax.scan(step, x, (ts, jax.random.split(k1, proc.T - 1)))
    logits = x0_logits_fn(x, jnp.asarray(1, jnp.int32)).astype(jnp.float32)
    return jnp.argmax(logits + jax.random.gumbel(k2, logits.shape, jnp.float32), -1).astype(jnp.int32)


def nll_bound(key, proc: Discrete, x0_logits_fn: Callable, x0):
    """The variational bound on ``-log p(x_0)`` in nats, summed over the cells of ``x0`` (any
    shape of integer classes): every term of the bound, ``sum_{t=2}^T KL(q(x_{t-1} | x_t, x_0) ||
    p(x_{t-1} | x_t)) - log p(x_0 | x_1) + KL(q(x_T | x_0) || stationary)``, each at one draw of
    x_t ~ q(x_t | x_0) (T calls of ``x0_logits_fn(x_t, t) -> (..., C)`` under ``lax.map``)."""
    def term(t):
        x_t = q_sample_discrete(jax.random.fold_in(key, t), proc, x0, t)
        return jnp.sum(hybrid_loss(proc, x0, x_t, t, x0_logits_fn(x_t, t), 0.0)[1])

    terms = jax.lax.map(term, jnp.arange(1, proc.T + 1))
    return jnp.sum(terms) + jnp.sum(prior_kl(proc, x0))
