"""tokdyn.es: the REINFORCE / evolution-strategies gradient estimate against closed forms
(unbiasedness and variance on quadratic rewards), against evosax's OpenAI-ES on the same noise,
and the optax maximiser."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import EPS32, f32_atol

from tokdyn import es

D = 5
SIGMA = 0.3
B = np.array([0.5, -1.0, 0.25, 2.0, -0.75])
H = np.array([-1.0, -2.0, 0.5, -0.3, -4.0])  # diagonal curvature (one direction convex: R is any quadratic)
C = 0.7
X0 = np.array([0.2, -0.4, 1.0, 0.0, 0.5])


def quadratic(x, c=C):
    """R(x) = c + b.x + x.diag(h).x / 2."""
    return c + jnp.dot(B, x) + 0.5 * jnp.dot(H * x, x)


def closed_form_variance(n_pairs: int, antithetic: bool, c: float = C) -> np.ndarray:
    """Per coordinate, the variance of the estimate with a population of 2 n_pairs, shaping none.

    With z ~ N(0, I), R(x + s z) = R0 + s g.z + s^2 z.Hz / 2 (g the gradient at x):
    - an antithetic pair gives (g.z) z exactly, whose j-th variance is |g|^2 + g_j^2;
    - one independent draw gives R(x + s z) z / s, whose j-th second moment is
      R0^2 / s^2 + |g|^2 + 2 g_j^2 + R0 (S + 2 h_j) + s^2 (S^2 + 2 |h|^2 + 4 h_j S + 8 h_j^2) / 4
      (S = sum h; Gaussian moments E z^4 = 3, E z^6 = 15).
    """
    g = B + H * X0
    r0 = c + B @ X0 + 0.5 * (H * X0) @ X0
    if antithetic:
        return (g @ g + g**2) / n_pairs
    s, hs = SIGMA, H.sum()
    second = (
        r0**2 / s**2 + g @ g + 2 * g**2 + r0 * (hs + 2 * H) + s**2 * (hs**2 + 2 * H @ H + 4 * H * hs + 8 * H**2) / 4
    )
    return (second - g**2) / (2 * n_pairs)


N_PAIRS = 2
N = 100_000


@functools.partial(jax.jit, static_argnames=("antithetic", "shaping"))
def _estimates(c, *, antithetic: bool, shaping: str):
    keys = jax.random.split(jax.random.key(0), N)
    reward = lambda x: quadratic(x, c)
    return jax.vmap(
        lambda k: es.es_grad(
            k,
            reward,
            jnp.asarray(X0, jnp.float32),
            sigma=SIGMA,
            n_pairs=N_PAIRS,
            antithetic=antithetic,
            shaping=shaping,
        )[0]
    )(keys)


def estimates(*, antithetic: bool, shaping: str = "none", c: float = C) -> np.ndarray:
    """N estimates (N, D), each from its own key, with a population of 2 N_PAIRS."""
    return np.asarray(_estimates(c, antithetic=antithetic, shaping=shaping), np.float64)


@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("shaping", ["none", "baseline"])
def test_unbiased_on_a_quadratic(antithetic, shaping):
    """Mean of 10^5 vmapped estimates within 3 standard errors of the analytic gradient, per
    coordinate (the Gaussian-smoothed quadratic has the quadratic's gradient)."""
    g = estimates(antithetic=antithetic, shaping=shaping)
    grad = B + H * X0
    se = g.std(0, ddof=1) / np.sqrt(len(g))
    assert np.all(np.abs(g.mean(0) - grad) < 3 * se), (g.mean(0), grad, se)


@pytest.mark.parametrize("antithetic", [True, False])
def test_variance_follows_the_closed_form(antithetic):
    g = estimates(antithetic=antithetic)
    np.testing.assert_allclose(g.var(0, ddof=1), closed_form_variance(N_PAIRS, antithetic), rtol=0.04)


@pytest.mark.full
def test_antithetic_pairs_and_a_baseline_lower_the_variance():
    """Same number of reward evaluations. A reward far from 0 (here R(x) = 10.6, a confidence near
    1 with small sigma is the same regime): the R0^2 / sigma^2 term dominates independent draws,
    and antithetic pairs (which cancel it) or the leave-one-out baseline (which removes it) lower
    the variance by more than 10x. Near R0 = 0 the closed form says antithetic pairs cost up to
    2x (a pair spends two evaluations on one direction), and the draws agree."""
    anti, indep = (estimates(antithetic=a, c=10.0).var(0) for a in (True, False))
    base = estimates(antithetic=False, shaping="baseline", c=10.0).var(0)
    assert np.all(10 * anti < indep) and np.all(10 * base < indep)
    assert np.all(10 * closed_form_variance(N_PAIRS, True, 10.0) < closed_form_variance(N_PAIRS, False, 10.0))
    c0 = -(B @ X0 + 0.5 * (H * X0) @ X0)  # R(x) = 0
    anti, indep = (estimates(antithetic=a, c=c0).var(0) for a in (True, False))
    assert np.all(closed_form_variance(N_PAIRS, True, c0) > closed_form_variance(N_PAIRS, False, c0))
    assert np.all(anti > indep)


evosax = pytest.importorskip("evosax")
from evosax.algorithms import Open_ES  # noqa: E402
from evosax.core.fitness_shaping import (  # noqa: E402
    centered_rank_fitness_shaping_fn,
    identity_fitness_shaping_fn,
)


@pytest.mark.parametrize(
    "shaping,evosax_shaping",
    [("none", identity_fitness_shaping_fn), ("centered_rank", centered_rank_fitness_shaping_fn)],
)
@pytest.mark.parametrize("antithetic", [True, False])
def test_equals_evosax_open_es_on_the_same_noise(shaping, evosax_shaping, antithetic):
    """evosax's OpenAI-ES gradient of the fitness (computed by one SGD step of rate 1 from its
    mean), with the reward as fitness, equals es_grad on the same key."""
    x = jnp.asarray(X0, jnp.float32)
    n_pairs, key = 6, jax.random.key(3)
    strategy = Open_ES(
        population_size=2 * n_pairs,
        solution=x,
        use_antithetic_sampling=antithetic,
        optimizer=optax.sgd(1.0),
        std_schedule=optax.constant_schedule(SIGMA),
        fitness_shaping_fn=evosax_shaping,
    )
    params = strategy.default_params
    state = strategy.init(jax.random.key(9), x, params)
    population, state = strategy.ask(key, state, params)
    fitness = jax.vmap(quadratic)(population)
    new_state, _ = strategy.tell(jax.random.key(1), population, fitness, state, params)
    evosax_grad = state.mean - new_state.mean  # sgd(1): mean - grad

    grad, info = es.es_grad(key, quadratic, x, sigma=SIGMA, n_pairs=n_pairs, antithetic=antithetic, shaping=shaping)
    np.testing.assert_allclose(info.rewards, fitness, rtol=1e-6)
    # evosax's gradient is a difference of two float32 means, tokdyn's a sum of 2 * n_pairs rounded
    # terms (reward x noise / sigma): the rounding of both scales with those numbers, not with the
    # (possibly small) gradient
    terms = np.asarray(fitness)[:, None] * (np.asarray(population) - np.asarray(state.mean)) / SIGMA**2
    atol = f32_atol(state.mean, new_state.mean) + len(terms) * EPS32 * np.abs(terms).mean(0).max()
    np.testing.assert_allclose(grad, evosax_grad, rtol=1e-5, atol=atol)


def test_centered_ranks_equal_evosax_with_ties_and_nan_lowest():
    r = jnp.array([0.3, -1.0, 0.3, 2.0, 5.0, -3.0])
    np.testing.assert_allclose(
        es.shape_rewards(r, "centered_rank"), centered_rank_fitness_shaping_fn(None, r, None, None)
    )
    w = es.shape_rewards(jnp.array([1.0, jnp.nan, 0.0]), "centered_rank")
    np.testing.assert_allclose(w, [0.5, -0.5, 0.0])  # maximising: a NaN reward ranks lowest


def test_pytree_points_and_vmapping_over_instances():
    """x may be any pytree (flattened leaf by leaf, as ravel_pytree does); vmapped over instances,
    each instance's estimate equals a plain NumPy computation from the same noise."""
    targets = np.arange(12.0).reshape(4, 3)  # 4 instances, each its own reward

    def reward(x, t):
        return -jnp.sum((x["a"] - t) ** 2) - jnp.sum(x["b"] ** 2)

    x = {"a": jnp.zeros(3), "b": jnp.ones((2, 2))}
    keys = jax.random.split(jax.random.key(0), 4)
    g, info = jax.vmap(lambda k, t: es.es_grad(k, lambda x: reward(x, t), x, sigma=0.1, n_pairs=16))(keys, targets)
    assert g["a"].shape == (4, 3) and g["b"].shape == (4, 2, 2) and info.rewards.shape == (4, 32)
    flat = np.concatenate([np.zeros(3), np.ones(4)])
    for i in range(4):
        z = np.asarray(es.noise(keys[i], 7, 16), np.float64)  # (32, 7)
        pop = flat + 0.1 * z
        r = -((pop[:, :3] - targets[i]) ** 2).sum(1) - (pop[:, 3:] ** 2).sum(1)
        want = r @ z / (32 * 0.1)
        np.testing.assert_allclose(info.rewards[i], r, rtol=1e-5)
        np.testing.assert_allclose(np.concatenate([g["a"][i], np.ravel(g["b"][i])]), want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("estimator", ["es", "exact"])
def test_maximiser_ascends_with_any_optax_optimizer(estimator):
    """The maximiser climbs a concave reward to its maximum (optax minimises: the sign is handled
    inside); sigma may be a schedule; the whole loop is one lax.scan, compiled once."""
    chex.clear_trace_counter()
    target = jnp.array([1.0, -2.0, 0.5])
    reward = lambda x, t: -jnp.sum((x - t) ** 2)
    opt = es.maximiser(
        reward, optax.adam(0.05), sigma=optax.exponential_decay(0.2, 1, 0.99), n_pairs=16, estimator=estimator
    )

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key, x0, t):
        def body(state, k):
            state, info = opt.step(k, state, t)
            return state, info.sigma

        return jax.lax.scan(body, opt.init(x0), jax.random.split(key, 300))

    state, sigmas = run(jax.random.key(0), jnp.zeros(3), target)
    np.testing.assert_allclose(state.x, target, atol=0.05)
    assert int(state.count) == 300
    if estimator == "es":
        np.testing.assert_allclose(np.asarray(sigmas)[[0, 10]], [0.2, 0.2 * 0.99**10], rtol=1e-5)
    run(jax.random.key(1), jnp.ones(3), target)  # no retrace


def test_a_nan_reward_is_counted_and_skips_the_step():
    reward = lambda x: jnp.where(x[0] > 0.0, jnp.nan, -jnp.sum(x**2))  # NaN on half the space
    opt = es.maximiser(lambda x: reward(x), optax.sgd(0.1), sigma=0.5, n_pairs=8)
    state = opt.init(jnp.array([0.01, 1.0]))
    new, info = jax.jit(opt.step)(jax.random.key(0), state)
    assert int(info.n_nan) > 0
    np.testing.assert_array_equal(new.x, state.x)  # not moved by a NaN estimate
    assert int(new.count) == 1


def test_bad_input_is_named_before_anything_compiles():
    x = jnp.zeros(3)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="sigma must be in \\(0, inf\\], got 0.0"):
        es.es_grad(key, jnp.sum, x, sigma=0.0, n_pairs=2)
    with pytest.raises(ValueError, match="n_pairs must be an int >= 1, got 0"):
        es.es_grad(key, jnp.sum, x, sigma=0.1, n_pairs=0)
    with pytest.raises(ValueError, match="shaping must be one of"):
        es.es_grad(key, jnp.sum, x, sigma=0.1, n_pairs=2, shaping="rank")
    with pytest.raises(TypeError, match="reward_fn must return a scalar reward, got \\(3,\\)"):
        es.es_grad(key, lambda x: x * 2, x, sigma=0.1, n_pairs=2)
    with pytest.raises(TypeError, match="x must hold floating-point arrays"):
        es.es_grad(key, jnp.sum, jnp.zeros(3, jnp.int32), sigma=0.1, n_pairs=2)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        es.es_grad(0, jnp.sum, x, sigma=0.1, n_pairs=2)
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        es.maximiser(jnp.sum, "adam")
    with pytest.raises(ValueError, match="estimator must be one of"):
        es.maximiser(jnp.sum, optax.sgd(0.1), estimator="spsa")


def _noisy(key, x, t=0.0):
    """A reward observed with noise: the true reward plus a standard-normal draw of its own key."""
    return -jnp.sum((x - t) ** 2) + jax.random.normal(key)


@pytest.mark.full
def test_a_noisy_reward_gets_independent_noise_per_member():
    """With reward_takes_key every member of the population draws its own observation noise: the
    noise is exactly normal(key_i) of the documented keys, different for every member (the two
    members of an antithetic pair included), uncorrelated across 4000 keys and of unit variance;
    through the maximiser each step's population does too, with shared data in args."""
    x, n_pairs, sigma = jnp.array([0.3, -0.2]), 4, 0.1
    key = jax.random.key(5)
    _, info = es.es_grad(key, _noisy, x, sigma=sigma, n_pairs=n_pairs, reward_takes_key=True)
    k_noise, k_reward = jax.random.split(key)
    z = es.noise(k_noise, 2, n_pairs)
    truth = -np.sum((np.asarray(x) + sigma * np.asarray(z)) ** 2, 1)
    draws = np.asarray(jax.vmap(jax.random.normal)(jax.random.split(k_reward, 2 * n_pairs)))
    np.testing.assert_allclose(info.rewards, truth + draws, rtol=1e-5, atol=1e-5)
    assert len(np.unique(np.round(draws, 6))) == 2 * n_pairs

    @jax.jit
    def noise_of(keys):  # (K,) keys -> (K, P) the observation noise of each member
        def one(k):
            r = es.es_grad(k, _noisy, x, sigma=sigma, n_pairs=n_pairs, reward_takes_key=True)[1].rewards
            zk = es.noise(jax.random.split(k)[0], 2, n_pairs)
            return r + jnp.sum((x + sigma * zk) ** 2, 1)

        return jax.vmap(one)(keys)

    e = np.asarray(noise_of(jax.random.split(jax.random.key(6), 4000)), np.float64)
    corr = np.corrcoef(e.T)[np.triu_indices(2 * n_pairs, 1)]
    assert np.max(np.abs(corr)) < 0.08  # 4000 draws: |r| < 0.08 at about 5 standard errors
    np.testing.assert_allclose(e.var(0), 1.0, atol=0.1)

    opt = es.maximiser(_noisy, optax.sgd(0.01), sigma=sigma, n_pairs=n_pairs, reward_takes_key=True)
    t = jnp.array([1.0, 1.0])
    _, info = jax.jit(opt.step)(key, opt.init(x), t)
    truth = -np.sum((np.asarray(x) + sigma * np.asarray(z) - 1.0) ** 2, 1)
    np.testing.assert_allclose(info.rewards, truth + draws, rtol=1e-5, atol=1e-5)
    exact = es.maximiser(_noisy, optax.sgd(0.01), estimator="exact", reward_takes_key=True)
    _, info = exact.step(key, exact.init(x), t)
    np.testing.assert_allclose(info.rewards, [-np.sum((np.asarray(x) - 1.0) ** 2) + jax.random.normal(key)], rtol=1e-5)


@pytest.mark.parametrize("estimator", ["es", "exact"])
def test_rewards_without_a_key_are_unchanged(estimator):
    """The default (reward_takes_key=False): the step's key draws the perturbations alone, exactly
    as es_grad / exact_grad do with that key; a key-taking reward that ignores its key sees the
    same population but from split(key)[0]."""
    reward = lambda x, t: -jnp.sum((x - t) ** 2)
    x, t, key = jnp.array([0.3, -0.2, 0.1]), jnp.array([1.0, 0.0, -1.0]), jax.random.key(7)
    opt = es.maximiser(reward, optax.sgd(0.1), sigma=0.2, n_pairs=3, estimator=estimator)
    state, info = jax.jit(opt.step)(key, opt.init(x), t)
    if estimator == "es":
        grad, want = es.es_grad(key, lambda x: reward(x, t), x, sigma=0.2, n_pairs=3)
        z = es.noise(key, 3, 3)
        np.testing.assert_allclose(want.rewards, jax.vmap(lambda d: reward(x + 0.2 * d, t))(z), rtol=1e-6)
    else:
        grad, want = es.exact_grad(key, lambda x: reward(x, t), x)
    np.testing.assert_allclose(info.rewards, want.rewards, rtol=1e-6)
    np.testing.assert_allclose(state.x, x + 0.1 * grad, rtol=1e-6)
    keyed = es.maximiser(
        lambda k, x, t: reward(x, t), optax.sgd(0.1), sigma=0.2, n_pairs=3, estimator=estimator, reward_takes_key=True
    )
    _, info = jax.jit(keyed.step)(key, keyed.init(x), t)
    if estimator == "es":
        z = es.noise(jax.random.split(key)[0], 3, 3)
        np.testing.assert_allclose(info.rewards, jax.vmap(lambda d: reward(x + 0.2 * d, t))(z), rtol=1e-6)
    else:
        np.testing.assert_allclose(info.rewards, want.rewards, rtol=1e-6)
    with pytest.raises(TypeError, match="reward_takes_key must be a bool"):
        es.maximiser(reward, optax.sgd(0.1), reward_takes_key="yes")
    with pytest.raises(TypeError, match="reward_fn must return a scalar"):
        es.es_grad(key, lambda k, x: x, x, sigma=0.1, n_pairs=2, reward_takes_key=True)
