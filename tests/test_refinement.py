"""The variational-refinement rule (tokdyn.refinement) against an independent float64 NumPy
implementation written here (the E-step, the preconditioned steps and the gradients derived by
hand), and at step size 1 against scikit-learn's EM of a spherical Gaussian mixture; the objective
never decreases; ``jax.grad`` of the objective is the closed-form gradient; the rule runs through
``dynamics.run`` / ``run_fixed`` / ``trajectory``, ``ClusterRun`` and a sweep over its knobs (one
compilation); padding never counts; extreme input stays finite; bad knobs are refused before
anything is compiled."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn import dynamics, refinement as rf
from tokdyn.engine import sweep
from tokdyn.engine.runs import ClusterRun

EPS = 1e-8  # the anchors' weight, as documented


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _problem(seed=0, n_per=30, dim=2, k=3, pad=7, n_tokens=4, spread=0.6):
    """float64 points: k Gaussian clusters, then ``pad`` padded rows holding junk; a mask; initial
    tokens at distinct valid points."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5, 5, size=(k, dim))
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
    x = np.concatenate([x, rng.uniform(50, 90, size=(pad, dim))])  # padded rows: far away, must not count
    mask = np.arange(len(x)) < k * n_per
    t0 = x[rng.choice(k * n_per, n_tokens, replace=False)]
    return x, mask, t0


# ---------------------------------------------------------------------------------------------- the reference


def ref_init(x, w, t0, s0, kappa):
    """float64: the documented initial state (means, log-scales, log-weights)."""
    dim, n_tokens = x.shape[1], len(t0)
    d2 = ((x[:, None, :] - t0[None, :, :]) ** 2).sum(-1)  # (N, T)
    spread = np.sum(w * d2.min(axis=1))
    v = (spread / dim + kappa * np.exp(2 * s0)) / (w.sum() + kappa)
    return t0.copy(), np.full(n_tokens, np.clip(0.5 * np.log(v), -20, 20)), np.full(n_tokens, -np.log(n_tokens))


def ref_resp(x, w, mu, s, lw):
    """(N, T) E-step posterior, times the point weights."""
    dim = x.shape[1]
    d2 = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    logp = lw[None, :] - dim * s[None, :] - d2 / (2 * np.exp(2 * s))[None, :]
    logp -= logp.max(axis=1, keepdims=True)
    r = np.exp(logp)
    return r / r.sum(axis=1, keepdims=True) * w[:, None]


def ref_step(x, w, mu, s, lw, alpha, s0, kappa):
    """float64: one documented step (E-step; weights, means, then variances at the new means)."""
    dim = x.shape[1]
    r = ref_resp(x, w, mu, s, lw)
    nj = r.sum(axis=0)
    mu_new = mu + alpha * (r.T @ x - nj[:, None] * mu) / (nj + EPS)[:, None]
    pi = np.exp(lw) / np.exp(lw).sum()
    pi_new = pi + alpha * ((nj + EPS * pi) / (w.sum() + EPS) - pi)
    lw_new = np.log(np.maximum(pi_new, np.exp(-50.0)))
    sj = (r * ((x[:, None, :] - mu_new[None, :, :]) ** 2).sum(-1)).sum(axis=0)
    v = np.exp(2 * s)
    v_star = (sj / dim + kappa * np.exp(2 * s0) + EPS * v) / (nj + kappa + EPS)
    s_new = np.clip(0.5 * np.log(v + alpha * (v_star - v)), -20, 20)
    return mu_new, s_new, lw_new


def ref_run(x, w, t0, alpha, s0, kappa, n_steps, tol):
    """float64: the documented loop (stop after the first step whose largest mean movement is below
    tol, once (s + 1) alpha >= 1). Returns the states after each step, steps, converged."""
    state = ref_init(x, w, t0, s0, kappa)
    states = [state]
    for step in range(n_steps):
        new = ref_step(x, w, *state, alpha, s0, kappa)
        move = np.max(np.abs(new[0] - state[0]))
        state = new
        states.append(state)
        if move < tol and (step + 1) * alpha >= 1:
            return states, step + 1, True
    return states, n_steps, False


def ref_objective(x, w, mu, s, lw, s0, kappa):
    """float64: log-likelihood of the weighted points plus the scales' log-prior."""
    dim = x.shape[1]
    logpi = lw - np.log(np.exp(lw).sum())
    d2 = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    logp = logpi[None, :] - 0.5 * dim * np.log(2 * np.pi) - dim * s[None, :] - d2 / (2 * np.exp(2 * s))[None, :]
    top = logp.max(axis=1, keepdims=True)
    ll = np.sum(w * (top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))))
    z = s - s0
    return ll - 0.5 * kappa * dim * np.sum(np.exp(-2 * z) + 2 * z - 1)


def ref_gradient(x, w, mu, s, lw, s0, kappa):
    """float64: the gradient of ref_objective in (mu, s, lw), derived by hand."""
    dim = x.shape[1]
    r = ref_resp(x, w, mu, s, lw)  # (N, T)
    nj = r.sum(axis=0)
    v = np.exp(2 * s)
    g_mu = (r.T @ x - nj[:, None] * mu) / v[:, None]
    d2 = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    g_s = (r * d2).sum(axis=0) / v - dim * nj + kappa * dim * (np.exp(2 * (s0 - s)) - 1)
    g_lw = nj - w.sum() * np.exp(lw) / np.exp(lw).sum()
    return g_mu, g_s, g_lw


def _mixture(state):
    return rf.Mixture(*(jnp.asarray(v) for v in state))


def _assert_state(actual, desired, rtol, atol, msg=""):
    for name, a, d in zip(
        ("tokens", "log_scale", "log_weight"), (actual.tokens, actual.log_scale, actual.log_weight), desired
    ):
        np.testing.assert_allclose(np.asarray(a), d, rtol=rtol, atol=atol, err_msg=f"{msg} {name}")


# ---------------------------------------------------------------------------------------------- the reference


@pytest.mark.parametrize("alpha, s0, kappa", [(1.0, 0.0, 0.0), (0.5, -0.5, 2.0), (0.3, 1.0, 0.5)])
def test_runs_equal_the_float64_reference(x64, alpha, s0, kappa):
    x, mask, t0 = _problem(0)
    w = mask.astype(float)
    hp = rf.Hparams(alpha, s0, kappa)
    states, steps, conv = ref_run(x, w, t0, alpha, s0, kappa, n_steps=60, tol=1e-6)
    tr = dynamics.trajectory(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=60, tol=1e-6)
    assert tr.tokens.dtype == jnp.float64
    assert int(tr.steps) == steps and bool(tr.converged) == conv
    for k in range(steps + 1):
        np.testing.assert_allclose(np.asarray(tr.tokens[k]), states[k][0], rtol=1e-9, atol=1e-9, err_msg=f"step {k}")
    r = dynamics.run(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=60, tol=1e-6)
    assert int(r.steps) == steps and bool(r.converged) == conv
    _assert_state(r.state, states[-1], 1e-9, 1e-9, "run")
    np.testing.assert_allclose(np.asarray(r.velocity), states[-1][0] - states[-2][0], rtol=1e-6, atol=1e-12)
    f = dynamics.run_fixed(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=60, tol=1e-6)
    _assert_state(f.state, states[-1], 1e-9, 1e-9, "run_fixed")
    # the loop's labels: nearest final means; the mixture's own: the most responsible token
    d2 = ((x[:, None] - states[-1][0][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(r.labels), np.where(mask, d2.argmin(1), -1))
    resp = ref_resp(x, np.ones(len(x)), *states[-1])
    np.testing.assert_array_equal(np.asarray(rf.labels(x, r.state, mask)), np.where(mask, resp.argmax(1), -1))
    np.testing.assert_allclose(np.asarray(rf.responsibilities(x, r.state, mask)), resp * mask[:, None], atol=1e-12)


@pytest.mark.parametrize("n_steps", [1, 4, 25])
def test_step_size_one_is_the_em_of_scikit_learns_spherical_mixture(x64, n_steps):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x, mask, t0 = _problem(1, dim=3)
    hp = rf.Hparams(step_size=1.0, prior_strength=0.0)
    state0 = jax.jit(rf.init)(dynamics.Points.of(jnp.asarray(x), jnp.asarray(mask)), jnp.asarray(t0), hp)
    gm = GaussianMixture(
        n_components=4,
        covariance_type="spherical",
        reg_covar=0.0,
        tol=0.0,
        max_iter=n_steps,
        n_init=1,
        init_params="random_from_data",
        weights_init=np.full(4, 0.25),
        means_init=t0,
        precisions_init=np.exp(-2 * np.asarray(state0.log_scale)),
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x[mask])
    r = dynamics.run_fixed(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=n_steps, tol=0.0)
    # equal up to the anchors' relative 1e-8 / N_j (and scikit-learn's 10 * eps on the masses)
    np.testing.assert_allclose(np.asarray(r.tokens), gm.means_, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(np.exp(2 * np.asarray(r.state.log_scale)), gm.covariances_, rtol=1e-7)
    np.testing.assert_allclose(np.exp(np.asarray(r.state.log_weight)), gm.weights_, rtol=1e-7, atol=1e-12)
    assert int(r.steps) == n_steps


@pytest.mark.parametrize("alpha, kappa", [(1.0, 0.0), (1.0, 3.0), (0.4, 0.0), (0.7, 1.0)])
def test_the_objective_never_decreases(x64, alpha, kappa):
    x, mask, t0 = _problem(2, k=4, spread=1.2)
    hp = rf.Hparams(alpha, -0.3, kappa)
    points = dynamics.Points.of(jnp.asarray(x), jnp.asarray(mask))

    @jax.jit
    def values(hp):
        def body(state, _):
            new = rf.step(state, points, hp, 0, None)
            return new, rf.objective(x, new, hp, mask)

        s0 = rf.init(points, jnp.asarray(t0), hp)
        return jnp.concatenate([rf.objective(x, s0, hp, mask)[None], jax.lax.scan(body, s0, None, length=40)[1]])

    f = np.asarray(values(hp))
    assert f[-1] - f[0] > 1.0  # it does climb
    assert np.all(np.diff(f) >= -1e-9 * np.abs(f[1:])), np.diff(f).min()
    # the objective is the reference's
    state = jax.jit(rf.init)(points, jnp.asarray(t0), hp)
    assert float(rf.objective(x, state, hp, mask)) == pytest.approx(
        ref_objective(
            x,
            mask.astype(float),
            *(np.asarray(v) for v in (state.tokens, state.log_scale, state.log_weight)),
            -0.3,
            kappa,
        ),
        rel=1e-12,
    )


def test_jax_grad_of_the_objective_is_the_closed_form_gradient(x64):
    x, mask, t0 = _problem(3, dim=3)
    rng = np.random.default_rng(3)
    state = (t0 + rng.normal(size=t0.shape), rng.uniform(-0.5, 0.8, 4), np.log(rng.dirichlet(np.ones(4))) + 0.3)
    hp = rf.Hparams(0.5, 0.2, 1.7)
    auto = jax.jit(jax.grad(lambda st: rf.objective(x, st, hp, mask)))(_mixture(state))
    closed = rf.gradient(x, _mixture(state), hp, mask)
    ref = ref_gradient(x, mask.astype(float), *state, 0.2, 1.7)
    _assert_state(closed, ref, 1e-10, 1e-10, "closed form vs hand")
    _assert_state(auto, ref, 1e-10, 1e-10, "jax.grad vs hand")
    assert np.max(np.abs(np.asarray(auto.tokens))) > 1.0  # not at a stationary point
    # the step is the preconditioned gradient: mean moves alpha sigma^2 / (N_j + eps) * gradient
    new = jax.jit(lambda st, points: rf.step(st, points, hp, 0, None))(
        _mixture(state), dynamics.Points.of(jnp.asarray(x), jnp.asarray(mask))
    )
    nj = ref_resp(x, mask.astype(float), *state).sum(0)
    np.testing.assert_allclose(
        np.asarray(new.tokens) - state[0], 0.5 * np.exp(2 * state[1])[:, None] / (nj + EPS)[:, None] * ref[0], rtol=1e-9
    )


# ---------------------------------------------------------------------------------------------- the loop, runs, sweeps


def test_run_run_fixed_trajectory_and_implicit_derivative(x64):
    x, mask, t0 = _problem(4)
    hp = rf.Hparams(1.0, -0.5, 1.0)
    r = dynamics.run(x, t0, hp, rule=dynamics.REFINEMENT, mask=mask, n_steps=300, tol=1e-12)
    assert bool(r.converged) and dynamics.REFINEMENT is rf.REFINEMENT

    # the fixed point does not depend on the step size; it does on the prior's location
    def final(hp):
        return dynamics.run(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=300, tol=1e-12, implicit=True).state

    g = jax.grad(lambda hp: jnp.sum(final(hp).log_scale) + jnp.sum(final(hp).tokens ** 2))(hp)
    assert abs(float(g.step_size)) < 1e-6
    h = 1e-5
    up = final(dataclasses.replace(hp, prior_log_scale=-0.5 + h))
    down = final(dataclasses.replace(hp, prior_log_scale=-0.5 - h))
    fd = (np.sum(up.log_scale) - np.sum(down.log_scale) + np.sum(up.tokens**2) - np.sum(down.tokens**2)) / (2 * h)
    assert abs(fd) > 1e-3
    np.testing.assert_allclose(float(g.prior_log_scale), fd, rtol=1e-5)


@pytest.mark.full
def test_knob_values_share_one_compilation_and_run_fixed_is_differentiable():
    x, mask, t0 = _problem(5)
    x, t0 = x.astype(np.float32), t0.astype(np.float32)
    dynamics.run(x, t0, rf.Hparams(jnp.float32(0.5), jnp.float32(0.0), jnp.float32(1.0)), rule=rf.REFINEMENT, mask=mask)
    with jax_compilations() as compiled:
        for a, s0, k in ((0.3, -1.0, 0.0), (1.0, 0.5, 4.0)):
            r = dynamics.run(
                x, t0, rf.Hparams(jnp.float32(a), jnp.float32(s0), jnp.float32(k)), rule=rf.REFINEMENT, mask=mask
            )
            assert np.all(np.isfinite(np.asarray(r.tokens)))
    assert compiled == []
    g = jax.grad(
        lambda hp: jnp.sum(
            dynamics.run_fixed(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=8, tol=0.0).state.log_scale
        )
    )(rf.Hparams(0.5, -0.2, 2.0))
    assert all(np.isfinite(float(v)) and float(v) != 0.0 for v in jax.tree_util.tree_leaves(g))


@pytest.mark.full
def test_cluster_run_and_a_sweep_over_its_knobs_compile_once():
    task = ClusterRun(dim=2, points_per_cluster=20, max_clusters=4, rule=rf.REFINEMENT)
    assert task.knobs == ("step_size", "prior_log_scale", "prior_strength")
    out = jax.jit(lambda k: task(k, step_size=1.0, prior_log_scale=np.log(0.6), n_clusters=3))(jax.random.key(0))
    assert np.isfinite(float(out["ari"])) and 0 < int(out["steps"]) <= task.n_steps

    def grid(steps, locations):
        return sweep.Grid(
            step_size=steps, prior_log_scale=locations, n_clusters=[3], noise=[0.4], seeds=4, seed_major=True
        )

    key = jax.random.key(1)
    res = sweep.run(
        task, grid([0.5, 1.0], [-1.0, 0.0]), key=key, common_random_numbers=True, chunk_size=16, progress=False
    )
    assert len(res) == 2 * 2 * 4 and not np.any(np.isnan(res["ari"]))
    with jax_compilations() as compiled:  # other values of the knobs: the same program
        res2 = sweep.run(
            task, grid([0.25, 0.75], [-0.5, 0.5]), key=key, common_random_numbers=True, chunk_size=16, progress=False
        )
    assert compiled == [] and len(res2) == 16
    # smaller steps take more of them (paired by seed and condition)
    assert np.mean(res2["steps"][res2["step_size"] == 0.25]) > np.mean(res2["steps"][res2["step_size"] == 0.75])
    # well-separated clusters: EM finds them on most seeds
    assert np.mean(res["ari"][res["step_size"] == 1.0]) > 0.6


# ---------------------------------------------------------------------------------------------- padding and extremes


def test_padded_points_do_not_count_whatever_they_hold():
    x, mask, t0 = _problem(6)
    x, t0 = x.astype(np.float32), t0.astype(np.float32)
    junk = jnp.asarray(x).at[~mask].set(jnp.nan)  # a JAX array: its values are not inspected
    hp = rf.Hparams(0.8, 0.0, 0.5)
    alone = dynamics.run(x[mask], t0, hp, rule=rf.REFINEMENT, n_steps=50, tol=1e-5)
    for xs in (x, junk):
        r = dynamics.run(xs, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=50, tol=1e-5)
        assert int(r.steps) == int(alone.steps)
        _assert_state(
            r.state,
            [np.asarray(v) for v in (alone.state.tokens, alone.state.log_scale, alone.state.log_weight)],
            1e-5,
            1e-5,
        )
        np.testing.assert_array_equal(np.asarray(r.labels)[~mask], -1)
        assert np.all(np.isfinite(float(rf.objective(xs, r.state, hp, mask))))


def test_a_token_with_no_mass_stays_put_and_a_single_token_fits_the_data(x64):
    x, mask, t0 = _problem(7, n_tokens=3)
    t0 = np.concatenate([t0, [[400.0, -300.0]]])  # no point is anywhere near it
    r = dynamics.run(x, t0, rf.Hparams(1.0, 0.0, 0.0), rule=rf.REFINEMENT, mask=mask, n_steps=40, tol=1e-8)
    np.testing.assert_array_equal(np.asarray(r.tokens[3]), t0[3])  # bit for bit
    assert float(r.state.log_scale[3]) == float(
        jax.jit(rf.init)(dynamics.Points.of(x, mask), jnp.asarray(t0), rf.Hparams(1.0, 0.0, 0.0)).log_scale[3]
    )
    assert float(r.state.log_weight[3]) == rf.LOG_WEIGHT_MIN
    # T = 1, no prior: one EM step is the closed form, the mean and the per-coordinate variance
    one = dynamics.run_fixed(x, t0[:1], rf.Hparams(1.0, 0.0, 0.0), rule=rf.REFINEMENT, mask=mask, n_steps=1, tol=0.0)
    # (up to the anchor: the step is (x_bar - t) N / (N + 1e-8), here 1e-10 of the way short)
    np.testing.assert_allclose(np.asarray(one.tokens[0]), x[mask].mean(0), rtol=1e-9)
    np.testing.assert_allclose(np.exp(2 * float(one.state.log_scale[0])), x[mask].var(0).mean(), rtol=1e-7)


def test_translation_and_scale_equivariance(x64):
    x, mask, t0 = _problem(8)
    hp = rf.Hparams(0.6, 0.0, 0.0)
    base = dynamics.run(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=40, tol=1e-9)
    moved = dynamics.run(x + 1e3, t0 + 1e3, hp, rule=rf.REFINEMENT, mask=mask, n_steps=40, tol=1e-9)
    np.testing.assert_allclose(np.asarray(moved.tokens) - 1e3, np.asarray(base.tokens), atol=1e-8)
    np.testing.assert_allclose(np.asarray(moved.state.log_scale), np.asarray(base.state.log_scale), atol=1e-8)
    scaled = dynamics.run(x * 1e-3, t0 * 1e-3, hp, rule=rf.REFINEMENT, mask=mask, n_steps=40, tol=1e-12)
    np.testing.assert_allclose(np.asarray(scaled.tokens) * 1e3, np.asarray(base.tokens), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(
        np.asarray(scaled.state.log_scale) - np.log(1e-3), np.asarray(base.state.log_scale), atol=1e-8
    )


def _extremes():
    x, mask, t0 = _problem(9)
    x, t0 = x.astype(np.float32), t0.astype(np.float32)
    same = np.zeros_like(x) + 3.0
    return {
        "one token": (x, mask, t0[:1], rf.Hparams(1.0, 0.0, 0.0)),
        "identical points, no prior": (same, mask, same[:4], rf.Hparams(1.0, 0.0, 0.0)),
        "identical points, prior": (same, mask, same[:4], rf.Hparams(0.5, -3.0, 2.0)),
        "huge coordinates": (x * 1e8, mask, t0 * 1e8, rf.Hparams(1.0, 0.0, 0.0)),
        "spread beyond the scales' range": (x * 1e15, mask, t0 * 1e15, rf.Hparams(1.0, 0.0, 0.0)),
        "huge offset, prior far below": (x + 1e6, mask, t0 + 1e6, rf.Hparams(1.0, rf.LOG_SCALE_MIN, 1e3)),
        "tiny coordinates": (x * 1e-6, mask, t0 * 1e-6, rf.Hparams(1.0, 0.0, 0.0)),
        "tiny prior": (x, mask, t0, rf.Hparams(1.0, rf.LOG_SCALE_MAX, 1e-30)),
        "strong prior": (x, mask, t0, rf.Hparams(0.05, -1.0, 1e6)),
        # a traced all-False mask (a NumPy one is refused before tracing: tests/test_hostile_errors.py)
        "no valid point": (x, jnp.zeros(np.shape(mask), bool), t0, rf.Hparams(1.0, 0.0, 0.0)),
    }


@pytest.mark.parametrize("case", list(_extremes()))
def test_extreme_input_stays_finite(case):
    x, mask, t0, hp = _extremes()[case]
    r = dynamics.run(x, t0, hp, rule=rf.REFINEMENT, mask=mask, n_steps=30)
    for leaf in jax.tree_util.tree_leaves(r.state):
        assert np.all(np.isfinite(np.asarray(leaf))), case
    s = np.asarray(r.state.log_scale)
    assert np.all((s >= rf.LOG_SCALE_MIN) & (s <= rf.LOG_SCALE_MAX)) and np.all(np.asarray(r.state.log_weight) <= 0)
    if case == "strong prior":  # pinned at the prior's location
        np.testing.assert_allclose(s, -1.0, atol=1e-3)
    if case == "huge coordinates":  # the scale follows the data (equivariance, to float32 rounding over 5 steps)
        big, base = (
            dynamics.run_fixed(x * c, t0 * c, hp, rule=rf.REFINEMENT, mask=mask, n_steps=5, tol=0.0).state
            for c in (1.0, 1e-8)
        )
        np.testing.assert_allclose(np.asarray(big.log_scale) - np.log(1e8), np.asarray(base.log_scale), atol=1e-4)
        np.testing.assert_allclose(np.asarray(big.tokens) * 1e-8, np.asarray(base.tokens), rtol=1e-4, atol=1e-4)
    if case == "spread beyond the scales' range":  # sigma ~ 1e14: held at the largest scale
        np.testing.assert_array_equal(s, rf.LOG_SCALE_MAX)
    if case == "no valid point":  # nothing moves
        np.testing.assert_array_equal(np.asarray(r.tokens), t0)


def test_a_traced_knob_out_of_range_gives_a_nan_run():
    x, mask, t0 = _problem(10)
    run = jax.jit(lambda a, k: dynamics.run(x, t0, rf.Hparams(a, 0.0, k), rule=rf.REFINEMENT, mask=mask, n_steps=12))
    for a, k in ((-0.5, 1.0), (1.5, 1.0), (jnp.nan, 1.0), (1.0, -1.0), (1.0, jnp.inf)):
        r = run(a, k)
        assert np.all(np.isnan(np.asarray(r.tokens))) and not bool(r.converged) and int(r.steps) == 12
        np.testing.assert_array_equal(np.asarray(r.labels)[mask], -1)
    assert np.all(np.isfinite(np.asarray(run(1.0, 1.0).tokens)))


# ---------------------------------------------------------------------------------------------- refusals


def _bad_calls():
    x, mask, t0 = _problem(11)
    state = rf.Mixture(t0, np.zeros(4), np.zeros(4))
    short = rf.Mixture(t0, np.zeros(3), np.zeros(4))
    return [
        (
            lambda: dynamics.run(x, t0, rf.Hparams(step_size=-0.1), rule=rf.REFINEMENT),
            ValueError,
            r"step_size must be in \(0, 1\], got -0.1",
        ),
        (lambda: dynamics.run_fixed(x, t0, rf.Hparams(step_size=0.0), rule=rf.REFINEMENT), ValueError, "step_size"),
        (lambda: dynamics.trajectory(x, t0, rf.Hparams(step_size=1.5), rule=rf.REFINEMENT), ValueError, "step_size"),
        (
            lambda: dynamics.run(x, t0, rf.Hparams(step_size=float("nan")), rule=rf.REFINEMENT),
            ValueError,
            "step_size must be finite",
        ),
        (
            lambda: dynamics.run(x, t0, rf.Hparams(prior_strength=-1.0), rule=rf.REFINEMENT),
            ValueError,
            "prior_strength must be in",
        ),
        (
            lambda: dynamics.run(x, t0, rf.Hparams(prior_strength=np.inf), rule=rf.REFINEMENT),
            ValueError,
            "prior_strength must be finite",
        ),
        (
            lambda: dynamics.run(x, t0, rf.Hparams(prior_log_scale=25.0), rule=rf.REFINEMENT),
            ValueError,
            r"prior_log_scale must be in \[-20, 20\]",
        ),
        (
            lambda: dynamics.run(x, t0, rf.Hparams(step_size=np.array([0.5, 1.0])), rule=rf.REFINEMENT),
            ValueError,
            "hparams.step_size must be a scalar",
        ),
        (lambda: dynamics.run(x, t0, dynamics.Hparams(), rule=rf.REFINEMENT), TypeError, "refinement.Hparams"),
        (lambda: dynamics.run(x, t0, rf.Hparams()), TypeError, "Hparams"),
        (lambda: rf.objective(x, state, rf.Hparams(step_size=2.0)), ValueError, "step_size"),
        (lambda: rf.gradient(x, state, rf.Hparams(prior_strength=-2.0)), ValueError, "prior_strength"),
        (lambda: rf.objective(x, t0, rf.Hparams()), TypeError, "state must be a tokdyn.refinement.Mixture"),
        (lambda: rf.labels(x[:, :1], state), ValueError, "same dimension"),
        (lambda: rf.responsibilities(x, short), ValueError, r"state.log_scale must have shape \(4,\)"),
    ]


@pytest.mark.parametrize("i", range(len(_bad_calls())))
def test_bad_knobs_are_refused_before_compiling(i):
    call, error, match = _bad_calls()[i]
    with jax_compilations() as compiled, pytest.raises(error, match=match):
        call()
    assert compiled == []
