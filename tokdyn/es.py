"""Evolution-strategies (REINFORCE) estimates of a reward's gradient, and a maximiser on optax.

:func:`es_grad` estimates the gradient of the Gaussian-smoothed reward ``E[R(x + eps)]``,
``eps ~ N(0, sigma^2 I)``, of any jittable reward ``R`` of any pytree ``x``, from ``2 * n_pairs``
perturbations: independent draws or antithetic pairs, the rewards shaped by ``"none"``,
``"baseline"`` (leave-one-out, unbiased) or ``"centered_rank"``. The noise is drawn as evosax's
OpenAI-ES draws it, so both give the same estimate on the same key. With
``reward_takes_key=True`` every member of the population gets its own key.

Everything here *maximises* R: :func:`es_grad` returns an ascent direction, and
:func:`maximiser` (:class:`Maximiser`) hands ``-es_grad`` (or the exact gradient) to an optax
optimiser, the one place the sign is flipped. Every function is pure, key-first and traceable
(vmapping over instances is the intended use); a reward that is NaN for some perturbation is
counted in :class:`Info` (``n_nan``), never dropped.

The estimators, the shapings, keys for noisy rewards: :ref:`latent-optimisation-es`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from tokdyn import _checks

SHAPINGS = ("none", "baseline", "centered_rank")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Info:
    """What one estimate saw. rewards: (P,) the raw rewards of the population, in the order of the
    noise (antithetic: the ``+eps`` half, then the ``-eps`` half); n_nan: how many are NaN;
    sigma: the perturbation scale used."""

    rewards: jax.Array
    n_nan: jax.Array
    sigma: jax.Array


def _check_takes_key(reward_takes_key) -> None:
    if not isinstance(reward_takes_key, bool):
        raise TypeError(f"reward_takes_key must be a bool (True: reward_fn(key, x)), got {reward_takes_key!r}")


def _check(key, reward_fn, x, sigma, n_pairs, antithetic, shaping, reward_takes_key=False) -> None:
    _check_takes_key(reward_takes_key)
    if not callable(reward_fn):
        want = "(key, x)" if reward_takes_key else "x"
        raise TypeError(f"reward_fn must be a callable {want} -> scalar reward, got {type(reward_fn).__name__}")
    _checks.real("sigma", sigma, low=0.0, low_open=True)
    _checks.positive_int("n_pairs", n_pairs)
    if not isinstance(antithetic, bool):
        raise TypeError(f"antithetic must be a bool, got {antithetic!r}")
    _checks.choice("shaping", shaping, SHAPINGS)
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise ValueError("x must hold at least one array (the point whose reward is maximised), got an empty pytree")
    for leaf in leaves:
        if not jnp.issubdtype(_checks.dtype_of(leaf), jnp.floating):
            raise TypeError(f"x must hold floating-point arrays, got dtype {_checks.dtype_of(leaf)}")
    out = jax.eval_shape(reward_fn, key, x) if reward_takes_key else jax.eval_shape(reward_fn, x)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise TypeError(f"reward_fn must return a scalar reward, got {shape}")


def noise(key: jax.Array, dims: int, n_pairs: int, antithetic: bool = True) -> jax.Array:
    """The standard-normal directions ``z`` of a population, ``eps = sigma * z``.

    Args:
      key: PRNG key.
      dims: static int, the size of the flattened point.
      n_pairs: static int >= 1.
      antithetic: static bool: ``n_pairs`` draws followed by their negatives; otherwise
        ``2 * n_pairs`` independent draws.

    Returns:
      (2 * n_pairs, dims) in JAX's default float dtype.

    Raises:
      TypeError: ``antithetic`` not a bool, or ``key`` not a PRNG key.
      ValueError: ``dims`` or ``n_pairs`` not an int >= 1, or a population of more elements than one
        array may hold.

    Examples:
      >>> import jax
      >>> from tokdyn import es
      >>> z = es.noise(jax.random.key(0), dims=3, n_pairs=2)
      >>> z.shape, bool((z[:2] == -z[2:]).all())   # each draw followed, after all of them, by its negative
      ((4, 3), True)

    References:
      Salimans, T., Ho, J., Chen, X., Sidor, S. and Sutskever, I. (2017). Evolution strategies as a
      scalable alternative to reinforcement learning. arXiv:1703.03864 (antithetic sampling).
    """
    _checks.prng_key("key", key)
    _checks.positive_int("dims", dims)
    _checks.positive_int("n_pairs", n_pairs)
    if not isinstance(antithetic, (bool, np.bool_)):
        raise TypeError(f"antithetic must be a bool (static), got {antithetic!r} of type {type(antithetic).__name__}")
    _checks.elements_fit("the population (2 * n_pairs, dims)", dict(n_pairs=n_pairs, dims=dims), 2 * n_pairs * dims)
    if antithetic:
        z = jax.random.normal(key, (n_pairs, dims))
        return jnp.concatenate([z, -z])
    return jax.random.normal(key, (2 * n_pairs, dims))


def shape_rewards(rewards: jax.Array, shaping: str = "none", *, antithetic: bool = False) -> jax.Array:
    """The weights of a population's rewards (P,) under ``shaping`` (:ref:`latent-optimisation-es`;
    ``antithetic`` says whether the population is antithetic pairs, which changes "baseline").

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import es
      >>> rewards = jnp.array([3.0, -1.0, 10.0, 0.0])
      >>> print(np.asarray(es.shape_rewards(rewards, "centered_rank")).round(3))   # ranks mapped to [-0.5, 0.5]
      [ 0.167 -0.5    0.5   -0.167]
      >>> print(es.shape_rewards(rewards, "baseline", antithetic=True))   # minus the mean
      [ 0. -4.  7. -3.]

    References:
      Wierstra, D., Schaul, T., Glasmachers, T., Sun, Y., Peters, J. and Schmidhuber, J. (2014).
      Natural evolution strategies. *Journal of Machine Learning Research* 15, 949-980 (fitness
      shaping).

      Salimans, T., Ho, J., Chen, X., Sidor, S. and Sutskever, I. (2017). Evolution strategies as a
      scalable alternative to reinforcement learning. arXiv:1703.03864 (centered ranks).
    """
    _checks.choice("shaping", shaping, SHAPINGS)
    p = rewards.shape[-1]
    if shaping == "none":
        return rewards
    if shaping == "baseline":
        scale = 1.0 if antithetic else p / max(p - 1, 1)  # leave-one-out for independent draws
        return (rewards - jnp.mean(rewards, -1, keepdims=True)) * scale
    ranks = jax.scipy.stats.rankdata(jnp.where(jnp.isnan(rewards), -jnp.inf, rewards), axis=-1) - 1.0
    return ranks / max(p - 1, 1) - 0.5


def es_grad(
    key: jax.Array,
    reward_fn: Callable,
    x,
    *,
    sigma,
    n_pairs: int,
    antithetic: bool = True,
    shaping: str = "none",
    reward_takes_key: bool = False,
):
    """An estimate of the gradient of ``E[reward_fn(x + eps)]``, ``eps ~ N(0, sigma^2 I)``: an ascent
    direction of the reward (the estimators are in :ref:`latent-optimisation-es`).

    Args:
      key: PRNG key of the perturbations (and, with ``reward_takes_key``, of the rewards).
      reward_fn: jittable ``x -> scalar`` (the reward, maximised), or ``(key, x) -> scalar`` with
        ``reward_takes_key``.
      x: the point, any pytree of float arrays.
      sigma: perturbation scale > 0; may be traced (e.g. a schedule's value).
      n_pairs: static int; the population is P = ``2 * n_pairs`` reward evaluations.
      antithetic: static bool: draw pairs ``(eps, -eps)``.
      shaping: "none" | "baseline" | "centered_rank" (static).
      reward_takes_key: static bool: call ``reward_fn(key_i, x_i)``, member i with its own key; the
        perturbations then come from ``split(key)[0]``, the keys from ``split(split(key)[1], P)``.

    Returns:
      ``(grad, info)``: ``grad`` has the structure of ``x``; ``info`` is an :class:`Info`.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn import es
      >>> c = jnp.array([1.0, -2.0])   # a linear reward: its gradient is c everywhere
      >>> g, info = es.es_grad(jax.random.key(0), lambda x: x @ c, jnp.zeros(2), sigma=0.1, n_pairs=500)
      >>> print(np.asarray(g).round(1), info.rewards.shape)
      [ 1. -2.] (1000,)

    References:
      Williams, R. J. (1992). Simple statistical gradient-following algorithms for connectionist
      reinforcement learning. *Machine Learning* 8, 229-256.

      Salimans, T., Ho, J., Chen, X., Sidor, S. and Sutskever, I. (2017). Evolution strategies as a
      scalable alternative to reinforcement learning. arXiv:1703.03864.
    """
    _checks.prng_key("key", key)
    _check(key, reward_fn, x, sigma, n_pairs, antithetic, shaping, reward_takes_key)
    flat, unravel = ravel_pytree(x)
    if reward_takes_key:
        key, reward_key = jax.random.split(key)
    z = noise(key, flat.size, n_pairs, antithetic)  # (P, dims)
    sigma = jnp.asarray(sigma, flat.dtype)
    if reward_takes_key:
        keys = jax.random.split(reward_key, z.shape[0])  # one per member, in the order of the noise
        rewards = jax.vmap(lambda k, d: reward_fn(k, unravel(flat + sigma * d)))(keys, z.astype(flat.dtype))
    else:
        rewards = jax.vmap(lambda d: reward_fn(unravel(flat + sigma * d)))(z.astype(flat.dtype))  # (P,)
    weights = shape_rewards(rewards, shaping, antithetic=antithetic)
    grad = weights @ z.astype(flat.dtype) / (z.shape[0] * sigma)  # sum_i w_i eps_i / (P sigma^2)
    return unravel(grad), Info(rewards=rewards, n_nan=jnp.sum(jnp.isnan(rewards)), sigma=sigma)


def exact_grad(key: jax.Array, reward_fn: Callable, x, *, reward_takes_key: bool = False):
    """The exact gradient of ``reward_fn`` at ``x`` (``jax.grad``), in :func:`es_grad`'s form.

    Args:
      key: handed to the reward, ``reward_fn(key, x)``, with ``reward_takes_key``; unused otherwise
        (kept so that both estimators share one signature).
      reward_fn: jittable ``x -> scalar``, or ``(key, x) -> scalar`` with ``reward_takes_key``.
      x: the point, any pytree of float arrays.
      reward_takes_key: static bool.

    Returns:
      ``(grad, info)``: ``grad`` has the structure of ``x``; ``info`` an :class:`Info` whose population
      is the reward of ``x`` alone (``sigma`` 0).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn import es
      >>> g, info = es.exact_grad(jax.random.key(0), lambda x: -jnp.sum(x**2), jnp.array([1.0, 2.0]))
      >>> print(g, info.rewards)
      [-2. -4.] [-5.]
    """
    _check_takes_key(reward_takes_key)
    if reward_takes_key:
        reward, grad = jax.value_and_grad(lambda x: reward_fn(key, x))(x)
    else:
        reward, grad = jax.value_and_grad(reward_fn)(x)
    return grad, Info(rewards=reward[None], n_nan=jnp.isnan(reward).astype(jnp.int32), sigma=jnp.zeros(()))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
    """The maximiser's state: the point ``x``, the optax state, the iteration count."""

    x: object
    opt_state: object
    count: jax.Array


class Maximiser(NamedTuple):
    """``init(x) -> State``; ``step(key, state, *args) -> (State, Info)``: one ascent step of
    ``reward_fn(x, *args)`` (or ``reward_fn(key_i, x, *args)``, see :func:`maximiser`). The extra
    arguments, e.g. one instance's data, make it vmappable over instances; they are the same for
    every member of the population, so randomness of the reward's own must come from its key
    (``reward_takes_key=True``), not from a key among ``args`` (one draw shared by every member)."""

    init: Callable
    step: Callable


Schedule = Union[float, Callable[[jax.Array], jax.Array]]


def maximiser(
    reward_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    sigma: Schedule = 0.1,
    n_pairs: int = 8,
    antithetic: bool = True,
    shaping: str = "none",
    estimator: str = "es",
    reward_takes_key: bool = False,
) -> Maximiser:
    """Maximise ``reward_fn(x, *args)`` with ``optimizer`` fed the negated gradient estimate.

    Args:
      reward_fn: jittable ``(x, *args) -> scalar``, or ``(key, x, *args) -> scalar`` with
        ``reward_takes_key`` (a noisy reward: observation noise, a minibatch).
      optimizer: any optax transformation (e.g. ``optax.sgd(1e-3)``). It minimises, so it receives
        ``-grad``: the one place the sign is flipped. A step whose estimate is not finite (a NaN
        reward) leaves ``x`` and the optimiser state unchanged (``optax.apply_if_finite``).
      sigma: the perturbation scale, a number or an optax schedule of the iteration count.
      n_pairs, antithetic, shaping: as in :func:`es_grad`.
      estimator: "es" (:func:`es_grad`) or "exact" (:func:`exact_grad`: the true gradient).
      reward_takes_key: hand the reward a key, key first: under "es" each member of the population its
        own (see :func:`es_grad`), under "exact" the step's key. False: the reward gets no key.

    Returns:
      A :class:`Maximiser`: ``init(x) -> State``, ``step(key, state, *args) -> (State, Info)``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> import optax
      >>> from tokdyn import es
      >>> m = es.maximiser(lambda x: -jnp.sum((x - 3.0) ** 2), optax.sgd(0.1), sigma=0.1, n_pairs=8)
      >>> step = jax.jit(m.step)
      >>> state = m.init(jnp.zeros(2))
      >>> for i in range(50):
      ...     state, info = step(jax.random.fold_in(jax.random.key(0), i), state)
      >>> print(np.asarray(state.x).round(2), int(state.count))   # the maximum at 3
      [3. 3.] 50
    """
    _checks.choice("estimator", estimator, ("es", "exact"))
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if not callable(sigma):
        _checks.real("sigma", sigma, low=0.0, low_open=True)
    _checks.positive_int("n_pairs", n_pairs)
    _checks.choice("shaping", shaping, SHAPINGS)
    _check_takes_key(reward_takes_key)
    safe = optax.apply_if_finite(optimizer, max_consecutive_errors=2**30)

    def init(x) -> State:
        return State(x=x, opt_state=safe.init(x), count=jnp.zeros((), jnp.int32))

    def step(key, state: State, *args):
        if reward_takes_key:
            reward = lambda k, x: reward_fn(k, x, *args)
        else:
            reward = lambda x: reward_fn(x, *args)
        if estimator == "exact":
            grad, info = exact_grad(key, reward, state.x, reward_takes_key=reward_takes_key)
        else:
            s = sigma(state.count) if callable(sigma) else sigma
            grad, info = es_grad(
                key,
                reward,
                state.x,
                sigma=s,
                n_pairs=n_pairs,
                antithetic=antithetic,
                shaping=shaping,
                reward_takes_key=reward_takes_key,
            )
        descent = jax.tree_util.tree_map(jnp.negative, grad)  # optax minimises: -grad ascends the reward
        updates, opt_state = safe.update(descent, state.opt_state, state.x)
        return State(x=optax.apply_updates(state.x, updates), opt_state=opt_state, count=state.count + 1), info

    return Maximiser(init=init, step=step)
