"""tokdyn.analysis: energy, descent, Jacobians, the collapse threshold, against independent references
(NumPy float64 re-implementations, SciPy, finite differences, closed forms)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.cluster.hierarchy as sch
import scipy.spatial.distance as ssd
from scipy.special import logsumexp

from tokdyn import analysis, data, dynamics


def np_free_energy(x, t, tau, gamma=0.0, w=None):
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    d2 = ((x[:, None, :] - t[None]) ** 2).sum(-1)
    f = -tau * np.sum(w * logsumexp(-d2 / tau, axis=1))
    if gamma and len(t) > 1:
        r = ssd.pdist(t)
        rmin = dynamics.MIN_DISTANCE
        f += gamma * np.sum(np.where(r >= rmin, 1.0 / np.maximum(r, rmin), 1.5 / rmin - r**2 / (2 * rmin**3)))
    return f


def blobs(seed, k=3, dim=2, noise=1.0, box=3.0, ppc=40):
    c = data.gaussian_clusters(jax.random.key(seed), k, points_per_cluster=ppc, dim=dim, noise=noise, center_box=box)
    return np.asarray(c.x)


# ---------------------------------------------------------------------------------------------- energy


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_free_energy_matches_numpy(gamma):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    t = rng.normal(size=(4, 3)).astype(np.float32)
    t[3] = t[2] + 1e-4  # inside the softened core
    mask = rng.random(40) < 0.7
    for tau in (0.05, 1.0, 30.0):
        got = float(analysis.free_energy(x, t, tau, mask, repulsion=gamma))
        want = np_free_energy(x, t, tau, gamma, mask)
        np.testing.assert_allclose(got, want, rtol=2e-5)


def test_step_is_preconditioned_gradient_step():
    x = blobs(1)
    t = jax.random.normal(jax.random.key(2), (4, 2)) * 3

    @jax.jit
    def step(t, tau):  # one program for every temperature
        g = jax.grad(lambda t: analysis.free_energy(x, t, tau))(t)
        a = dynamics.soft_assignment(x, t, tau)  # (N, T)
        new, _ = dynamics.update(x, t, jnp.zeros_like(t), dynamics.Hparams(temperature=tau))
        return g, a, new

    for tau in (0.3, 2.0, 10.0):
        g, a, new = step(t, jnp.float32(tau))
        np.testing.assert_allclose(new - t, -g / (2 * a.sum(0)[:, None]), atol=2e-4 * np.abs(x).max())


def test_coulomb_energy_gradient_is_minus_the_force():
    t = jax.random.normal(jax.random.key(3), (5, 3))
    t = t.at[4].set(t[3] + 3e-4)  # one pair inside the softened core
    t = t.at[2].set(t[1])  # one coincident pair
    g = jax.jit(jax.grad(analysis.coulomb_energy))(t)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, -dynamics.coulomb(t), rtol=1e-5, atol=1e-2)


def _descent_cases(key, runs=4096, n=30, t=3, d=2):
    k = jax.random.split(key, 6)
    x = jax.random.normal(k[0], (runs, n, d), jnp.float64) * jax.random.uniform(k[1], (runs, 1, 1), jnp.float64, 0.3, 3)
    tokens = 2.0 * jax.random.normal(k[2], (runs, t, d), jnp.float64)
    tau = jnp.exp(jax.random.uniform(k[3], (runs,), jnp.float64, np.log(0.05), np.log(20.0)))
    velocity = jax.random.normal(k[4], (runs, t, d), jnp.float64)
    return x, tokens, tau, velocity


def _energy_change(x, tokens, velocity, tau, momentum, repulsion, pre_steps):
    p = dynamics.Hparams(tau, momentum, repulsion)
    # some cases start near a fixed point, where the decrease is tiny (a loop: one step compiled)
    tokens = jax.lax.fori_loop(
        0, pre_steps, lambda _, t: dynamics.update(x, t, jnp.zeros_like(t), dynamics.Hparams(tau))[0], tokens
    )
    f0 = analysis.energy_of(p)(x, tokens)
    new, _ = dynamics.update(x, tokens, velocity, p)
    return f0, analysis.energy_of(p)(x, new)


@pytest.mark.parametrize("pre_steps", [0, 25])
def test_baseline_step_never_increases_free_energy(pre_steps):
    with jax.enable_x64(True):
        x, tokens, tau, velocity = _descent_cases(jax.random.key(pre_steps))
        f = jax.jit(jax.vmap(lambda *a: _energy_change(*a, 0.0, 0.0, pre_steps)))
        f0, f1 = f(x, tokens, jnp.zeros_like(velocity), tau)
        assert f0.dtype == jnp.float64 and len(f0) == 4096
        rel = np.asarray((f1 - f0) / np.abs(f0))
        assert np.all(rel <= 1e-12), rel.max()
        if pre_steps:  # near fixed points: decreases are small but the claim still holds
            assert np.median(rel) > -1e-3


@pytest.mark.parametrize("momentum,repulsion", [(0.5, 0.0), (0.0, 0.05)])
def test_inertia_and_repulsion_are_not_descent_methods(momentum, repulsion):
    with jax.enable_x64(True):
        x, tokens, tau, velocity = _descent_cases(jax.random.key(7))
        velocity = velocity if momentum else jnp.zeros_like(velocity)
        f = jax.jit(jax.vmap(lambda *a: _energy_change(*a, momentum, repulsion, 0)))
        f0, f1 = f(x, tokens, velocity, tau)
        # the energy goes up in some cases (counter-examples) but down in most
        up = np.asarray(f1 > f0 + 1e-9 * jnp.abs(f0))
        assert 0 < up.sum() < 0.5 * len(up)


# ---------------------------------------------------------------------------------------------- Jacobians


def test_jacobian_matches_finite_differences():
    x = blobs(4)  # drawn in float32
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        t = jax.random.normal(jax.random.key(5), (3, 2), jnp.float64) * 2
        v = jax.random.normal(jax.random.key(6), (3, 2), jnp.float64) * 0.1
        p = dynamics.Hparams(1.5, 0.6, 0.2)
        jac = np.asarray(analysis.jacobian(x, t, p, velocity=v))
        z0 = np.concatenate([np.ravel(t), np.ravel(v)])
        f = jax.jit(analysis.update_map(x, p, with_velocity=True), static_argnums=1)  # (one program)
        fd = np.zeros_like(jac)
        h = 1e-6
        for i in range(len(z0)):
            e = np.zeros_like(z0)
            e[i] = h
            fd[:, i] = (np.asarray(f(jnp.asarray(z0 + e), t.shape)) - np.asarray(f(jnp.asarray(z0 - e), t.shape))) / (
                2 * h
            )
        np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-6)
        assert jac.shape == (12, 12)


def _sorted(ev):
    ev = np.asarray(ev, np.complex128)
    return ev[np.lexsort((np.round(ev.imag, 6), np.round(ev.real, 6)))]


@pytest.mark.parametrize(
    "n_tokens,dim,ratio",
    [(2, 2, 0.5), pytest.param(4, 3, 1.7, marks=pytest.mark.full), pytest.param(5, 2, 0.9, marks=pytest.mark.full)],
)
def test_collapse_eigenvalues_baseline(n_tokens, dim, ratio):
    x = blobs(10 + dim, k=3, dim=dim)
    tau = ratio * float(analysis.collapse_threshold(x))
    t = analysis.collapsed_state(x, n_tokens)
    num = analysis.eigenvalues(analysis.jacobian(x, t, dynamics.Hparams(temperature=tau)))
    pred = analysis.collapse_eigenvalues(x, n_tokens, tau)
    # the closed form from NumPy's covariance, independent of the package's covariance
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True))
    closed = np.concatenate([np.zeros(dim), np.repeat(2 * lam / tau, n_tokens - 1)])
    np.testing.assert_allclose(_sorted(pred).real, np.sort(closed), atol=1e-6)
    np.testing.assert_allclose(_sorted(num), _sorted(pred), atol=2e-4 * max(1, np.abs(closed).max()))
    assert (analysis.spectral_radius(np.asarray(analysis.jacobian(x, t, dynamics.Hparams(tau)))) < 1) == (ratio > 1)


@pytest.mark.parametrize("momentum", [0.3, 0.9])
@pytest.mark.parametrize("ratio", [0.8, 1.25])
def test_collapse_eigenvalues_heavy_ball(momentum, ratio):
    x = blobs(20, k=2, dim=2, noise=0.7)
    tau = ratio * float(analysis.collapse_threshold(x))
    t = analysis.collapsed_state(x, 3)
    jac = analysis.jacobian(x, t, dynamics.Hparams(tau, momentum), velocity=jnp.zeros_like(t))
    num = analysis.eigenvalues(jac)
    pred = analysis.collapse_eigenvalues(x, 3, tau, momentum=momentum)
    assert len(num) == len(pred) == 12
    np.testing.assert_allclose(_sorted(num), _sorted(pred), atol=5e-4)
    # NumPy's roots of z^2 - (mu + beta) z + beta, independently of heavy_ball_eigenvalues
    mu = 2 * np.linalg.eigvalsh(np.cov(x.T, bias=True)).max() / tau
    roots = np.roots([1.0, -(mu + momentum), momentum])
    assert np.isclose(np.abs(num).max(), np.abs(roots).max(), atol=5e-4)
    # the stability boundary does not move with momentum; the rate is at least sqrt(beta)
    rho = analysis.spectral_radius(np.asarray(jac))
    assert (rho < 1) == (ratio > 1)
    assert rho >= np.sqrt(momentum) - 1e-4


def test_collapse_threshold_matches_numpy_with_mask():
    c = data.gaussian_clusters(jax.random.key(3), 2, points_per_cluster=30, dim=3, noise=0.5, max_clusters=4)
    xv = np.asarray(c.x)[np.asarray(c.mask)]
    want = 2 * np.linalg.eigvalsh(np.cov(xv.T, bias=True)).max()
    np.testing.assert_allclose(float(analysis.collapse_threshold(c.x, c.mask)), want, rtol=1e-5)
    np.testing.assert_allclose(float(analysis.collapse_threshold(xv)), want, rtol=1e-5)
    batched = jax.vmap(analysis.collapse_threshold)(jnp.stack([c.x, 2 * c.x]), jnp.stack([c.mask, c.mask]))
    np.testing.assert_allclose(np.asarray(batched), [want, 4 * want], rtol=1e-5)


def test_jacobian_is_finite_at_coincident_tokens_with_repulsion():
    x = blobs(5)
    t = jnp.zeros((3, 2)).at[2].set(1.0)  # tokens 0 and 1 coincide
    for p in (dynamics.Hparams(1.0, 0.0, 0.05), dynamics.Hparams(1.0, 0.5, 0.5)):
        jac = analysis.jacobian(x, t, p, velocity=jnp.zeros_like(t))
        assert np.all(np.isfinite(np.asarray(jac)))
        assert np.isfinite(float(analysis.free_energy(x, t, 1.0, repulsion=p.repulsion)))


# ---------------------------------------------------------------------------------------------- threshold


def _threshold_sweep(ratios, n_tokens, seeds, make):
    def one(key, ratio):
        x = make(key)
        tau = ratio * analysis.collapse_threshold(x)
        t0 = dynamics.forgy(x, jax.random.uniform(jax.random.fold_in(key, 1), x.shape[:1]), None, n_tokens)
        tol = analysis.MERGE_REL * jnp.sqrt(jnp.trace(analysis.covariance(x)[0]))
        r = dynamics.run(x, t0, dynamics.Hparams(tau), n_steps=3000, tol=1e-5 * tol / analysis.MERGE_REL)
        return dynamics.token_groups(r.tokens, tol)[1] == 1

    keys = jax.random.split(jax.random.key(0), seeds)
    f = jax.jit(jax.vmap(jax.vmap(one, (0, None)), (None, 0)))
    return np.asarray(f(keys, jnp.asarray(ratios))).mean(axis=1)  # (ratios,)


@pytest.mark.parametrize("shape", [pytest.param("blobs", marks=pytest.mark.full), "anisotropic"])
def test_collapse_rate_switches_within_10_percent(shape):
    def make(key):
        if shape == "blobs":
            return data.gaussian_clusters(key, 3, points_per_cluster=40, dim=2, noise=1.0, center_box=3.0).x
        z = jax.random.normal(key, (120, 3))
        return z * jnp.array([3.0, 1.0, 0.5])

    ratios = [0.25, 0.8, 0.9, 1.1, 1.25, 4.0]
    rate = _threshold_sweep(ratios, 4, 24, make)
    assert rate[0] == 0 and rate[-1] == 1
    assert np.all(rate[:3] <= 0.1) and np.all(rate[3:] >= 0.9), rate


def test_repulsion_keeps_tokens_apart_at_the_predicted_distance():
    x = jnp.asarray(blobs(8, k=1, dim=2, noise=1.0, ppc=200))
    tc = float(analysis.collapse_threshold(x))
    t0 = analysis.collapsed_state(x, 2) + jnp.array([[0.05, 0.0], [-0.05, 0.0]])
    for ratio, gamma in ((2.0, 1e-3), (2.5, 1e-2), (4.0, 1e-2)):
        tau = ratio * tc
        r = analysis.fixed_point(x, t0, dynamics.Hparams(tau, 0.0, gamma), tol=1e-6, n_steps=3000)
        mu = tc / tau
        want = (2 * gamma / (1 - mu)) ** (1 / 3)  # r' = mu r + 2 gamma / r^2 at equilibrium
        r_star, mult = analysis.pair_equilibrium(x, tau, gamma)
        np.testing.assert_allclose([float(r_star), float(mult)], [want, 3 * mu - 2], rtol=1e-5)
        if ratio < 3:  # multiplier 3 mu - 2 > -1: the pair settles at r_*
            assert bool(r.converged)
            np.testing.assert_allclose(float(analysis.min_separation(r.tokens)), want, rtol=0.05)
        else:  # multiplier < -1: a period-2 oscillation that never converges
            assert not bool(r.converged) and float(r.delta) > 0.1 * want
        # without repulsion the same run collapses exactly (within float rounding)
        r0 = analysis.fixed_point(x, t0, dynamics.Hparams(tau), tol=1e-7)
        assert float(analysis.min_separation(r0.tokens)) < 1e-4 * want


@pytest.mark.full
def test_predicted_convergence_time_tracks_observed_steps():
    """rho at the fixed point and the first step's change predict the steps; over 64 runs the
    rank correlation is high and the median ratio is near 1 (figures: see the study)."""
    from scipy.stats import spearmanr

    pred, obs = [], []
    for seed in range(64):
        x = blobs(100 + seed, k=3, dim=2, noise=0.8, box=4.0)
        tau = float(np.exp(np.random.default_rng(seed).uniform(np.log(0.3), np.log(3.0))))
        t0 = dynamics.init_tokens(jax.random.key(seed), 3, 2, x=x)
        p = dynamics.Hparams(tau)
        tol = 1e-3
        r = dynamics.run(x, t0, p, n_steps=500, tol=tol)
        fp = analysis.fixed_point(x, t0, p)
        rho = analysis.spectral_radius(np.asarray(analysis.jacobian(x, fp.tokens, p)))
        tr = dynamics.trajectory(x, t0, p, n_steps=2, tol=tol)
        if not bool(r.converged) or int(r.steps) < 3:
            continue
        pred.append(float(analysis.predicted_steps(rho, float(tr.delta[0]), tol)))
        obs.append(int(r.steps))
    pred, obs = np.asarray(pred), np.asarray(obs)
    assert len(obs) >= 40
    assert spearmanr(pred, obs).statistic > 0.6
    assert 0.5 < np.median(obs / pred) < 2.0


# ---------------------------------------------------------------------------------------------- groups


def test_token_groups_match_scipy_single_linkage():
    rng = np.random.default_rng(1)
    agree = 0
    for _ in range(50):
        t = rng.normal(size=(rng.integers(1, 9), 2)) * rng.choice([0.01, 0.1, 1.0])
        tol = 0.05
        want = 1 if len(t) == 1 else len(set(sch.fcluster(sch.linkage(t, "single"), tol, "distance")))
        group, n_groups = dynamics.token_groups(t, tol)
        same = int(n_groups) == want
        if len(t) > 1:  # the same partition as SciPy's, labelled by each group's first token
            ref = sch.fcluster(sch.linkage(t, "single"), tol, "distance")
            same &= all(
                (ref == ref[i]).tolist() == (np.asarray(group) == int(group[i])).tolist() for i in range(len(t))
            )
        agree += same
    # float32 XLA and float64 SciPy: two programs; a distance within rounding of tol may link or not
    assert agree >= 49


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument():
    x = blobs(0)
    t = x[:3]
    with pytest.raises(ValueError, match="temperature"):
        analysis.free_energy(x, t, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        analysis.collapse_eigenvalues(x, 3, -1.0)
    with pytest.raises(ValueError, match="temperature"):
        analysis.jacobian(x, t, dynamics.Hparams(temperature=-2.0))
    with pytest.raises(ValueError, match="tol"):
        analysis.fixed_point(x, t, tol=0.0)
    with pytest.raises(ValueError, match="merge_tol"):
        dynamics.token_groups(t, -1.0)
    with pytest.raises(ValueError, match="tol"):
        analysis.predicted_steps(0.5, 1.0, 0.0)
    with pytest.raises(ValueError, match="rel"):
        analysis.merge_tolerance(x, rel=0.0)
    with pytest.raises(ValueError, match="momentum"):
        analysis.collapse_eigenvalues(x, 3, 1.0, momentum=1.0)
    with pytest.raises(ValueError, match="mask"):
        analysis.collapse_threshold(x, np.zeros(len(x), bool))
    with pytest.raises(ValueError, match="dimension"):
        analysis.jacobian(x, np.zeros((3, 5)), dynamics.Hparams())
    with pytest.raises(ValueError, match="velocity"):
        analysis.jacobian(x, t, dynamics.Hparams(), velocity=np.zeros((2, 2)))
    with pytest.raises(TypeError, match="hparams"):
        analysis.jacobian(x, t, {"temperature": 1.0})
    with pytest.raises(ValueError, match="x must be finite"):
        analysis.collapse_threshold(np.full((3, 2), np.nan))
