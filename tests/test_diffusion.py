"""Diffusion kernels (tokdyn.diffusion) against hand computations, closed forms and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import diffusion


@jax.jit
def _kernel_tables(proc, p, t):
    """Q_t, Qbar_t, p Qbar_t and the step likelihood of every state at a traced ``t``: one program
    per process for the whole loop over t (eagerly, each operation of each is its own program)."""
    return (
        diffusion.transition_matrix(proc, t),
        diffusion.cumulative_matrix(proc, t),
        diffusion.marginal(proc, p, t),
        diffusion.step_likelihood(proc, jnp.arange(proc.states), t),
    )


@pytest.mark.parametrize("kernel", diffusion.KERNELS)
def test_kernels_are_stochastic_and_cumulate(kernel):
    proc = diffusion.discrete(kernel, 4, "cosine" if kernel == "uniform" else "absorbing", T=12)
    S = proc.states
    assert S == (5 if kernel == "absorbing" else 4)
    np.testing.assert_allclose(diffusion.cumulative_matrix(proc, 0), np.eye(S), atol=1e-7)
    acc = np.eye(S)
    for t in range(1, proc.T + 1):
        p = np.random.default_rng(t).dirichlet(np.ones(S))
        Q, Qbar, marg, like = (np.asarray(v, np.float64) for v in _kernel_tables(proc, np.float32(p), t))
        assert (Q >= 0).all()
        np.testing.assert_allclose(Q.sum(1), 1.0, atol=1e-6)
        acc = acc @ Q
        np.testing.assert_allclose(Qbar.sum(1), 1.0, atol=1e-6)
        np.testing.assert_allclose(Qbar, acc, atol=2e-6)
        # the O(S) operations equal the matrix products
        np.testing.assert_allclose(marg, p @ Qbar, atol=1e-6)
        np.testing.assert_allclose(like, Q.T, atol=1e-6)


@pytest.mark.full
def test_stationary_marginals_over_1e5_draws():
    C, n = 4, 100_000
    x0 = jnp.asarray(np.random.default_rng(0).integers(0, C, n), jnp.int32)
    uni = diffusion.discrete("uniform", C, T=50)
    keys = jax.random.split(jax.random.key(0), n)
    xT = jax.vmap(lambda k, x: diffusion.q_sample_discrete(k, uni, x, uni.T))(keys, x0)
    hit = float(jnp.mean(xT == x0))
    se = np.sqrt(0.25 * 0.75 / n)
    assert abs(hit - 1 / C) < 4 * se
    np.testing.assert_allclose(np.bincount(np.asarray(xT), minlength=C) / n, 1 / C, atol=5 * np.sqrt(0.25 * 0.75 / n))
    # the published kernel (stay = abar_T, rest on the other colours) avoids the original colour
    bad = np.asarray(diffusion.published_cumulative_matrix(uni.alpha_bar[-1], C))
    np.testing.assert_allclose(bad.sum(1), 1.0, atol=1e-6)
    draws = jax.vmap(lambda k, x: jax.random.categorical(k, jnp.log(jnp.asarray(bad)[x])))(keys, x0)
    assert float(jnp.mean(draws == x0)) < 0.01
    ab = diffusion.discrete("absorbing", C, T=50)
    xT = jax.vmap(lambda k, x: diffusion.q_sample_discrete(k, ab, x, ab.T))(keys, x0)
    assert bool(jnp.all(xT == C))
    mid = jax.vmap(lambda k, x: diffusion.q_sample_discrete(k, ab, x, 20))(keys, x0)
    masked = float(jnp.mean(mid == C))  # 1 - abar_20 = 20 / 50 under the absorbing schedule
    assert abs(masked - 0.4) < 4 * np.sqrt(0.24 / n)
    assert bool(jnp.all((mid == C) | (mid == x0)))


def test_posterior_by_hand_two_and_three_states():
    posterior_logits = jax.jit(diffusion.posterior_logits, static_argnums=3)  # t on the host, as eagerly
    # two states, uniform kernel, betas 0.2 and 0.5 (T = 2): q(x_1 | x_2 = 1, x_0 = 0)
    proc = diffusion.discrete("uniform", 2, [0.2, 0.5])
    Q1 = np.array([[0.9, 0.1], [0.1, 0.9]])  # (1 - b) I + b / 2
    Q2 = np.array([[0.75, 0.25], [0.25, 0.75]])
    post = Q2[:, 1] * Q1[0]  # q(x_2 = 1 | x_1) q(x_1 | x_0 = 0)
    post /= post.sum()  # [0.75, 0.25]: 0.25 * 0.9 vs 0.75 * 0.1 -> [0.75, 0.25]
    np.testing.assert_allclose(post, [0.75, 0.25])
    got = np.exp(posterior_logits(proc, jnp.array([1.0, 0.0]), jnp.int32(1), 2))
    np.testing.assert_allclose(got, post, atol=1e-6)
    # three states = two classes + mask, absorbing, betas 0.5 then 1: x_2 = mask
    proc = diffusion.discrete("absorbing", 2, [0.5, 1.0])
    # x_1 | x_0 = 1: stays 1 w.p. 0.5, masked w.p. 0.5; then x_2 = mask surely: posterior = [0, .5, .5]
    got = np.exp(posterior_logits(proc, jnp.array([0.0, 1.0]), jnp.int32(2), 2))
    np.testing.assert_allclose(got, [0.0, 0.5, 0.5], atol=1e-6)
    # a predicted x_0 distribution (0.3, 0.7): p(x_1) ∝ Q_2[x_1, mask] (p Qbar_1)[x_1] = (0.15, 0.35, 0.5)
    got = np.exp(posterior_logits(proc, jnp.array([0.3, 0.7]), jnp.int32(2), 2))
    np.testing.assert_allclose(got, [0.15, 0.35, 0.5], atol=1e-6)


def test_hybrid_loss_terms():
    proc = diffusion.discrete("uniform", 3, T=10)
    hybrid_loss = jax.jit(diffusion.hybrid_loss, static_argnums=3)  # t on the host, as eagerly
    x0, xt = np.array([0, 2]), np.array([1, 2])
    perfect = 30.0 * np.eye(3, dtype=np.float32)[x0]
    loss, vb, ce = hybrid_loss(proc, x0, xt, 5, perfect, 0.5)
    np.testing.assert_allclose(vb, 0.0, atol=1e-4)  # the model's posterior is the true one
    flat = np.zeros((2, 3), np.float32)
    loss, vb, ce = (np.asarray(v) for v in hybrid_loss(proc, x0, xt, 5, flat, 0.5))
    np.testing.assert_allclose(ce, np.log(3), rtol=1e-6)
    assert np.all(vb > 0)
    np.testing.assert_allclose(loss, vb + np.float32(0.5) * ce, rtol=1e-6)
    _, vb1, ce1 = hybrid_loss(proc, x0, xt, 1, flat, 0.0)
    np.testing.assert_allclose(vb1, ce1)  # t = 1: the negative log-likelihood of x_0


def test_gaussian_marginal_over_1e5_samples():
    proc = diffusion.gaussian("linear", 100)
    b = np.linspace(1e-3, 0.2, 100)  # the closed form, in float64
    np.testing.assert_allclose(proc.betas, b, rtol=1e-6)
    abar = np.cumprod(1 - b)
    x0 = jnp.array([1.0, -0.5])
    keys = jax.random.split(jax.random.key(1), 100_000)
    for t in (1, 30, 100):
        xt = np.asarray(jax.vmap(lambda k: diffusion.q_sample(k, proc, x0, t)[0])(keys), np.float64)
        mean, var = np.sqrt(abar[t - 1]) * np.asarray(x0), 1 - abar[t - 1]
        se = np.sqrt(var / 1e5)
        assert np.all(np.abs(xt.mean(0) - mean) < 4.5 * se)
        assert np.all(np.abs(xt.var(0) / var - 1) < 4.5 * np.sqrt(2 / 1e5))


def test_oracle_denoisers_reproduce_x0():
    x0 = jnp.asarray(np.random.default_rng(3).choice([-1.0, 1.0], size=(4, 6)), jnp.float32)
    proc = diffusion.gaussian("cosine", 50)

    def eps(x, t):  # the true epsilon given x_t and x_0
        a = proc.alpha_bar[t]
        return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)

    sample = jax.jit(diffusion.sample, static_argnums=(2, 3))
    ddim_sample = jax.jit(diffusion.ddim_sample, static_argnums=(2, 3, 4))
    np.testing.assert_allclose(sample(jax.random.key(0), proc, eps, x0.shape), x0, atol=1e-4)
    np.testing.assert_allclose(ddim_sample(jax.random.key(0), proc, eps, x0.shape, 10), x0, atol=1e-4)
    c0 = jnp.asarray(np.random.default_rng(4).integers(0, 5, (3, 7)), jnp.int32)
    for kernel in diffusion.KERNELS:
        dproc = diffusion.discrete(kernel, 5, T=30)
        sample_discrete = jax.jit(diffusion.sample_discrete, static_argnums=(2, 3))
        out = sample_discrete(jax.random.key(1), dproc, lambda x, t: 50.0 * jax.nn.one_hot(c0, 5), c0.shape)
        np.testing.assert_array_equal(out, c0)


def test_posterior_mean_matches_bayes():
    proc = diffusion.gaussian("linear", 20)
    x0, xt, t = jnp.array(0.7), jnp.array(-0.3), 8
    mean, var = diffusion.posterior_mean_var(proc, x0, xt, t)
    b, ab, abp = (np.float64(v) for v in (proc.betas[t - 1], proc.alpha_bar[t], proc.alpha_bar[t - 1]))
    # product of N(x_{t-1}; sqrt(abp) x0, 1 - abp) and N(xt; sqrt(1 - b) x_{t-1}, b) in x_{t-1}
    prec = 1 / (1 - abp) + (1 - b) / b
    m = (np.sqrt(abp) * 0.7 / (1 - abp) + np.sqrt(1 - b) * -0.3 / b) / prec
    np.testing.assert_allclose([mean, var], [m, 1 / prec], rtol=1e-4)


def test_ddim_times_and_bad_input():
    assert diffusion.ddim_times(10, 4).tolist() == [10, 7, 4, 1, 0]
    with pytest.raises(ValueError, match="betas must be in"):
        diffusion.gaussian([0.1, 1.0])
    with pytest.raises(ValueError, match="betas must be in"):
        diffusion.discrete("uniform", 3, [0.0, 0.5])
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        diffusion.betas("linear", 0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        diffusion.discrete("gaussian", 3, T=5)
    with pytest.raises(ValueError, match="schedule must be one of"):
        diffusion.gaussian("quadratic", 10)
    with pytest.raises(ValueError, match="absorbing"):
        diffusion.gaussian("absorbing", 10)
    with pytest.raises(ValueError, match="classes must be an int >= 2"):
        diffusion.discrete("uniform", 1, T=5)
    with pytest.raises(ValueError, match="steps must be <= T"):
        diffusion.ddim_times(5, 6)


def test_nll_bound_of_an_oracle_is_the_prior_term_and_of_a_guess_exceeds_the_entropy():
    x0 = jnp.array([0, 2, 1, 1], jnp.int32)
    nll_bound = jax.jit(diffusion.nll_bound, static_argnums=2)  # one program per model, not one per operation

    def oracle_fn(x, t):
        return 40.0 * jax.nn.one_hot(x0, 3)

    def guess_fn(x, t):
        return jnp.zeros((4, 3))

    for kernel in diffusion.KERNELS:
        proc = diffusion.discrete(kernel, 3, T=15)
        oracle = nll_bound(jax.random.key(0), proc, oracle_fn, x0)
        np.testing.assert_allclose(oracle, np.sum(jax.jit(diffusion.prior_kl)(proc, x0)), atol=1e-4)
        # a model that ignores x_t and guesses uniformly pays at least log 3 per cell (the data's
        # entropy under that guess); the bound is an upper bound on it
        guess = nll_bound(jax.random.key(1), proc, guess_fn, x0)
        assert float(guess) >= 4 * np.log(3) - 1e-4
    # uniform kernel, T = 1: the bound is exactly -log p(x_0 | x_1) + KL(q(x_1 | x_0) || uniform)
    proc = diffusion.discrete("uniform", 3, [0.5])
    logits = jnp.array([[1.0, 0.0, -1.0]])
    got = nll_bound(jax.random.key(2), proc, lambda x, t: logits, jnp.array([0]))
    q = np.array([0.5 + 0.5 / 3, 0.5 / 3, 0.5 / 3])
    want = -np.log(np.exp(1) / np.exp([1.0, 0.0, -1.0]).sum()) + np.sum(q * np.log(q * 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_named_schedules_keep_their_values_and_d3pm_cosine_is_cos_not_cos_squared():
    def abar(schedule, T=1000):
        return np.concatenate([[1.0], np.cumprod(1.0 - diffusion.betas(schedule, T))])

    marks = [250, 500, 750]
    # "cosine" (Nichol & Dhariwal's cos², the default of the uniform kernel): unchanged
    np.testing.assert_allclose(abar("cosine")[marks], [0.847, 0.494, 0.144], atol=6e-4)
    np.testing.assert_allclose(
        np.asarray(diffusion.discrete("uniform", 3, T=1000).alpha_bar)[marks], [0.847, 0.494, 0.144], atol=6e-4
    )
    # "cosine_d3pm": google-research's d3pm, alpha_bar(t) = f(t) / f(0) with f = cos (no square) below the cap
    np.testing.assert_allclose(abar("cosine_d3pm")[marks], [0.920, 0.703, 0.380], atol=6e-4)
    for T in (10, 1000):
        f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * np.pi / 2)
        np.testing.assert_allclose(abar("cosine_d3pm", T)[:T], f[:T] / f[0], rtol=1e-12)
        assert diffusion.betas("cosine_d3pm", T)[-1] == 0.999  # 1 - f(T) / f(T - 1) = 1, capped
    proc = diffusion.discrete("uniform", 3, "cosine_d3pm", T=1000)
    np.testing.assert_allclose(np.asarray(proc.alpha_bar)[marks], [0.920, 0.703, 0.380], atol=6e-4)
    diffusion.gaussian("cosine_d3pm", 50)  # a valid Gaussian schedule too (every beta < 1)
    # "linear": the end, 0.02 * 1000 / T, is capped at 0.999 for T <= 20
    assert diffusion.betas("linear", 10)[-1] == 0.999 and diffusion.betas("linear", 20)[-1] == 0.999
    np.testing.assert_allclose(diffusion.betas("linear", 21)[[0, -1]], [1e-4 * 1000 / 21, 0.02 * 1000 / 21])
    np.testing.assert_allclose(diffusion.betas("linear", 1000)[[0, -1]], [1e-4, 0.02])


@pytest.mark.parametrize("schedule,T", [("linear", 1000), ("cosine", 1000), ("linear", 100), ("cosine_d3pm", 1000)])
def test_coefficients_near_t_1_agree_with_mpmath(schedule, T):
    """1 - alpha_bar_t is ~beta_1 near t = 1: formed in float32 it loses up to 5e-4 of its relative
    precision. The tables are built in float64 and rounded once, so every coefficient (read through
    the public functions) is within float32 rounding of the exact value."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    b = [mpmath.mpf(float(v)) for v in diffusion.betas(schedule, T)]  # the float64 betas, exactly
    abar = [mpmath.mpf(1)]
    for v in b:
        abar.append(abar[-1] * (1 - v))
    proc = diffusion.gaussian(schedule, T)
    key = jax.random.key(3)
    one, zero = jnp.ones(()), jnp.zeros(())
    worst = 0.0
    for t in (1, 2, 3, 5, 10, T // 2):
        c_x0 = mpmath.sqrt(abar[t - 1]) * b[t - 1] / (1 - abar[t])
        c_xt = mpmath.sqrt(1 - b[t - 1]) * (1 - abar[t - 1]) / (1 - abar[t])
        var = b[t - 1] * (1 - abar[t - 1]) / (1 - abar[t])
        got = {
            "x0 coefficient": (diffusion.posterior_mean_var(proc, one, zero, t)[0], c_x0),
            "x_t coefficient": (diffusion.posterior_mean_var(proc, zero, one, t)[0], c_xt),
            "variance": (diffusion.posterior_mean_var(proc, one, one, t)[1], var),
            "sqrt(1 - abar)": (
                diffusion.q_sample(key, proc, zero, t)[0] / diffusion.q_sample(key, proc, zero, t)[1],
                mpmath.sqrt(1 - abar[t]),
            ),
            "1 / sqrt(abar)": (diffusion.predict_x0(proc, one, t, zero), 1 / mpmath.sqrt(abar[t])),
            "1 - abar": (proc.one_minus_alpha_bar[t], 1 - abar[t]),
        }
        for name, (value, exact) in got.items():
            exact = float(exact)
            if exact == 0.0:  # x_t coefficient and variance at t = 1
                assert float(value) == 0.0, (t, name)
                continue
            err = abs(float(value) - exact) / abs(exact)
            worst = max(worst, err)
            assert err < 1e-6, (t, name, err)
    # the float32 computation the tables replace misses by far more near t = 1
    a32 = np.float32(float(abar[1]))
    assert abs(float(np.float32(1) - a32) - float(1 - abar[1])) / float(1 - abar[1]) > 10 * max(worst, 1e-7)


def test_ddim_with_clip_re_derives_epsilon_from_the_clipped_x0():
    """Two DDIM steps (T = 10: times 10 -> 1 -> 0), the network's epsilon c = 3 at t = 10 (x_0
    far outside [-1, 1]) and 0 at t = 1: x_1 follows the epsilon re-derived from the clipped x_0,
    not the network's."""
    proc = diffusion.gaussian("linear", 10)
    c = 3.0
    key = jax.random.key(4)
    out = diffusion.ddim_sample(
        key, proc, lambda x, t: jnp.where(t == 10, c, 0.0) * jnp.ones_like(x), (5,), 2, clip=1.0
    )
    assert diffusion.ddim_times(10, 2).tolist() == [10, 1, 0]
    sa = np.asarray(proc.sqrt_alpha_bar, np.float64)
    s1m = np.asarray(proc.sqrt_one_minus_alpha_bar, np.float64)
    x = np.asarray(jax.random.normal(jax.random.split(key)[0], (5,), jnp.float32), np.float64)  # x_T
    x0 = np.clip((x - s1m[10] * c) / sa[10], -1, 1)
    eps = (x - sa[10] * x0) / s1m[10]  # re-derived from the clipped x_0
    x1 = sa[1] * x0 + s1m[1] * eps
    np.testing.assert_allclose(out, np.clip(x1 / sa[1], -1, 1), rtol=1e-5, atol=1e-5)
    kept = sa[1] * x0 + s1m[1] * c  # x_1 had the network's epsilon been kept
    assert np.all(np.abs(np.clip(kept / sa[1], -1, 1) - np.asarray(out)) > 0.05)
