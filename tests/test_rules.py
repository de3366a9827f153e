"""The extended update rules (annealing, Sinkhorn, Slot-Attention normalisation, damping,
Langevin) against the float64 NumPy reference in tests/reference_rules.py; closed forms; Sinkhorn
marginals; Langevin reproducibility across batch sizes; annealing split temperatures against the
within-group collapse threshold 2 lambda_max(Cov); bad input."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from reference_rules import groups, reference_run_rules, schedule, sinkhorn_plan
from tokdyn import data, dynamics

ALL = sorted(dynamics.METHODS)


def _problem(seed, k=4, noise=0.8, dim=4, ppc=50, box=1.5, max_clusters=5):
    key = jax.random.key(seed)
    c = data.gaussian_clusters(
        key, k, points_per_cluster=ppc, dim=dim, noise=noise, center_box=box, max_clusters=max_clusters
    )
    t0 = dynamics.init_tokens(jax.random.fold_in(key, 1), 4, dim, method="data", x=c.x, mask=c.mask)
    return c, t0


def _kw(p: dynamics.Hparams) -> dict:
    return {f: float(getattr(p, f)) for f in dynamics.FIELDS}


def _noise(key, n_steps, shape):
    """The Langevin draws the documented key scheme gives: step s uses fold_in(key, s)."""
    return np.stack(
        [np.asarray(jax.random.normal(jax.random.fold_in(key, s), shape, jnp.float32)) for s in range(n_steps)]
    )


@pytest.mark.parametrize("name", ALL)
def test_every_method_trajectory_matches_reference(name):
    """Fixed-length trajectories (tol=0) agree with the float64 reference step by step, for every
    registered method, including the Langevin draws of the documented key scheme."""
    p = dynamics.METHODS[name]
    key = jax.random.key(42)
    for seed in range(2):
        c, t0 = _problem(seed)
        ref = reference_run_rules(
            np.asarray(c.x),
            np.asarray(t0),
            **_kw(p),
            mask=np.asarray(c.mask),
            n_steps=12,
            tol=0.0,
            noise=_noise(key, 12, t0.shape),
        )
        tr = dynamics.trajectory(c.x, t0, p, mask=c.mask, n_steps=12, tol=0.0, key=key)
        np.testing.assert_allclose(np.asarray(tr.tokens), ref["trajectory"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(tr.temperature), ref["temperatures"], rtol=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        dynamics.Hparams(temperature=0.7, momentum=0.3, damping=0.6, sinkhorn_iters=3, slot_norm=1.0),
        dynamics.Hparams(temperature=0.5, repulsion=0.02, slot_norm=0.4, anneal_ratio=20.0, anneal_steps=5),
        dynamics.Hparams(temperature=2.0, momentum=0.5, langevin=0.01, damping=0.3, sinkhorn_iters=1),
    ],
)
def test_combined_knobs_match_reference(params):
    key = jax.random.key(3)
    c, t0 = _problem(5, k=3)
    ref = reference_run_rules(
        np.asarray(c.x),
        np.asarray(t0),
        **_kw(params),
        mask=np.asarray(c.mask),
        n_steps=10,
        tol=0.0,
        noise=_noise(key, 10, t0.shape),
    )
    tr = dynamics.trajectory(c.x, t0, params, mask=c.mask, n_steps=10, tol=0.0, key=key)
    np.testing.assert_allclose(np.asarray(tr.tokens), ref["trajectory"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["annealing", "sinkhorn", "slot-attention", "damped"])
def test_run_with_stopping_matches_reference(name):
    """Steps (stopping only once annealing is over) and final tokens on the study's workload."""
    p = dynamics.METHODS[name]
    agree = 0
    for seed in range(4):
        c, t0 = _problem(seed, k=3 + seed % 3, noise=(0.3, 0.6, 0.9)[seed % 3], box=10.0)
        ref = reference_run_rules(np.asarray(c.x), np.asarray(t0), **_kw(p), mask=np.asarray(c.mask))
        r = dynamics.run(c.x, t0, p, mask=c.mask)
        assert abs(int(r.steps) - ref["steps"]) <= 1
        agree += int(r.steps) == ref["steps"]
        assert int(r.steps) >= min(p.anneal_steps + 1, 30)
        np.testing.assert_allclose(np.asarray(r.tokens), ref["tokens"], rtol=1e-4, atol=2e-3)
    assert agree >= 3


def test_all_methods_share_one_compilation():
    c, t0 = _problem(0)
    dynamics.run(c.x, t0, dynamics.METHODS["baseline"], mask=c.mask, key=jax.random.key(0))
    with jax_compilations() as compiled:
        for name in ALL:
            dynamics.run(c.x, t0, dynamics.METHODS[name], mask=c.mask, key=jax.random.key(1))
    assert compiled == []


def test_schedule_is_geometric_and_never_increases():
    p = dynamics.Hparams(temperature=0.5, anneal_ratio=64.0, anneal_steps=6)
    tau = np.asarray(dynamics.temperature_schedule(p, 10))
    np.testing.assert_allclose(tau, schedule(0.5, 64.0, 6, 10), rtol=1e-6)
    np.testing.assert_allclose(tau[:7], 0.5 * 2.0 ** (6 - np.arange(7)), rtol=1e-6)  # 64^(1/6) = 2 per step
    assert np.all(np.diff(tau) <= 0) and tau[-1] == np.float32(0.5)
    # r = 1 or S = 0: the constant temperature, exactly
    assert np.all(
        np.asarray(dynamics.temperature_schedule(dynamics.Hparams(0.3, anneal_ratio=5.0), 4)) == np.float32(0.3)
    )


def test_damped_single_token_closed_form():
    """One token: m is the data mean, so the error follows e <- (1 - alpha) e exactly."""
    x = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    alpha = 0.3
    tr = dynamics.trajectory(x, np.full((1, 3), 4.0, np.float32), dynamics.Hparams(damping=alpha), n_steps=8, tol=0.0)
    e0 = 4.0 - x.astype(np.float64).mean(0)
    for n in range(9):
        np.testing.assert_allclose(np.asarray(tr.tokens[n, 0]) - x.mean(0), (1 - alpha) ** n * e0, atol=2e-5)


def test_slot_norm_epsilon_placement():
    """A token that no point attends to (a = 0 after underflow): with the mass epsilon its target is
    itself, so it stays where it is (the published form, BUILTIN_ORIGIN, sends it to the origin); the
    attention-epsilon mean is the plain mean of the valid points."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 2)).astype(np.float32) + 3.0
    mask = np.arange(20) < 15
    t0 = np.array([[3.0, 3.0], [500.0, 500.0]], np.float32)
    for sigma, expect in ((0.0, t0[1]), (1.0, x[mask].astype(np.float64).mean(0))):
        t1, _ = dynamics.update(
            jnp.asarray(x),
            jnp.asarray(t0),
            jnp.zeros((2, 2)),
            dynamics.Hparams(slot_norm=sigma),
            mask=jnp.asarray(mask),
        )
        np.testing.assert_allclose(np.asarray(t1[1]), expect, rtol=1e-5, atol=1e-5)
    one = dynamics.run(
        jnp.asarray(x),
        jnp.asarray(t0),
        dynamics.Hparams(slot_norm=0.0),
        mask=jnp.asarray(mask),
        n_steps=1,
        tol=0.0,
        rule=dynamics.BUILTIN_ORIGIN,
    )  # one step of the published form
    np.testing.assert_allclose(np.asarray(one.tokens[1]), np.zeros(2), atol=1e-5)


@pytest.mark.parametrize("use_mask", [False, True])
def test_sinkhorn_marginals_converge_to_uniform(use_mask):
    rng = np.random.default_rng(3)
    n, t = 60, 4
    # a skewed problem: most points prefer token 0
    logits = (rng.normal(size=(n, t)) + np.array([3.0, 0.0, -1.0, -2.0])).astype(np.float32)
    mask = (np.arange(n) < 45) if use_mask else None
    valid = np.ones(n, bool) if mask is None else mask
    errs = []
    for k in (1, 5, 50, 300):
        plan = np.asarray(dynamics.sinkhorn(logits, k, mask=mask))
        np.testing.assert_allclose(plan, sinkhorn_plan(logits, k, valid), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(plan[valid].sum(1), 1.0, rtol=1e-5)  # every point's mass is 1
        assert np.all(plan[~valid] == 0)
        errs.append(np.abs(plan.sum(0) - valid.sum() / t).max())
    assert errs[0] > 1.0  # far from balanced after one round on this skewed problem ...
    assert all(b <= a + 1e-4 for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-3 * valid.sum()  # ... and converged to n/T per token


def test_sinkhorn_balances_token_masses_but_not_the_symmetric_collapse():
    """Three tokens on two equal clusters: the softmax rule shares the clusters unequally (masses
    n/2, n/4, n/4 or with a starving token); the balanced rule ends with every token holding n/3.
    Far above the collapse threshold the plan tends to the uniform coupling, so balanced tokens
    merge too: balance prevents unequal sharing, not the symmetric collapse."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=(100, 2)) * 0.5 + [-2, 0], rng.normal(size=(100, 2)) * 0.5 + [2, 0]])
    x = x.astype(np.float32)
    t0 = x[[0, 1, 150]]
    masses = {}
    for k in (0, 50):
        r = dynamics.run(x, t0, dynamics.Hparams(temperature=2.0, sinkhorn_iters=k), n_steps=300)
        logits = -((x[:, None] - np.asarray(r.tokens)[None]) ** 2).sum(-1) / 2.0
        plan = np.asarray(dynamics.sinkhorn(logits, k)) if k else np.asarray(dynamics.soft_assignment(x, r.tokens, 2.0))
        masses[k] = np.sort(plan.sum(0))
    assert np.abs(masses[0] - 200 / 3).max() > 15
    np.testing.assert_allclose(masses[50], 200 / 3, rtol=0.02)
    tau = 4 * 2 * np.linalg.eigvalsh(np.cov(x.T.astype(np.float64), bias=True)).max()
    for k in (0, 20):
        r = dynamics.run(x, t0, dynamics.Hparams(temperature=tau, sinkhorn_iters=k), n_steps=300)
        assert int(dynamics.token_groups(r.tokens, 1e-2)[1]) == 1


def test_langevin_reproducible_across_batch_sizes():
    cs, ts = zip(*[_problem(s, k=3) for s in range(6)])
    xs, ms, t0 = jnp.stack([c.x for c in cs]), jnp.stack([c.mask for c in cs]), jnp.stack(ts)
    root = jax.random.key(7)
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(6))
    p = dynamics.METHODS["langevin"]

    f = jax.jit(jax.vmap(lambda x, t, m, k: dynamics.run(x, t, p, mask=m, n_steps=15, key=k).tokens))

    def batch(sl):
        return np.asarray(f(xs[sl], t0[sl], ms[sl], keys[sl]))

    whole = batch(slice(0, 6))
    halves = np.concatenate([batch(slice(0, 3)), batch(slice(3, 6))])  # batches of 3: another program
    single = np.stack(
        [np.asarray(dynamics.run(xs[i], t0[i], p, mask=ms[i], n_steps=15, key=keys[i]).tokens) for i in range(6)]
    )
    np.testing.assert_allclose(halves, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single, whole, rtol=1e-5, atol=1e-5)
    other = np.asarray(dynamics.run(xs[0], t0[0], p, mask=ms[0], n_steps=15, key=keys[1]).tokens)
    assert np.abs(other - single[0]).max() > 1e-4  # the key matters
    tr = dynamics.trajectory(xs[0], t0[0], p, mask=ms[0], n_steps=15, key=keys[0])
    np.testing.assert_allclose(np.asarray(tr.tokens[-1]), single[0], rtol=1e-5, atol=1e-5)  # a scan: another program


def test_langevin_stationary_spread():
    """One token at temperature T: e <- (1 - alpha) e + sqrt(2 alpha T) xi is an AR(1) process with
    stationary variance 2 alpha T / (1 - (1 - alpha)^2) = 2T / (2 - alpha) per coordinate."""
    x = np.zeros((5, 2), np.float32)
    alpha, T = 0.5, 0.02
    p = dynamics.Hparams(damping=alpha, langevin=T)
    finals = jax.jit(jax.vmap(lambda k: dynamics.run(x, jnp.zeros((1, 2)), p, n_steps=40, tol=0.0, key=k).tokens))(
        jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(4000))
    )
    var = np.asarray(finals).reshape(-1).var()
    expect = 2 * T / (2 - alpha)
    assert abs(var - expect) < 4 * expect * np.sqrt(2 / 8000)  # 4 standard errors


def test_token_groups_match_reference():
    rng = np.random.default_rng(4)
    for _ in range(30):
        t = rng.integers(0, 4, size=(6, 2)).astype(np.float32) * 0.6
        g, n = dynamics.token_groups(t, 0.7)
        assert int(n) == groups(t, 0.7)
        g = np.asarray(g)
        for i in range(6):
            for j in range(6):
                if np.linalg.norm(t[i] - t[j]) < 0.7:
                    assert g[i] == g[j]


def test_annealing_splits_below_the_within_group_threshold():
    """Four tokens anneal over two well-separated pairs of clusters. Each split must happen below
    2 lambda_max of the covariance of the points the splitting group covers (where the merged group
    loses stability) and not far below it (the detection lag of a slow schedule), in the order of
    those thresholds."""
    rng = np.random.default_rng(0)
    centers = np.array([[-10, -2], [-10, 2], [10, -4], [10, 4]], float)
    x = np.concatenate([c + 0.5 * rng.normal(size=(100, 2)) for c in centers]).astype(np.float32)
    t0 = x[rng.choice(400, 4, replace=False)]
    p = dynamics.Hparams(temperature=2.0, anneal_ratio=200.0, anneal_steps=200, langevin=1e-6)
    tr = dynamics.trajectory(x, t0, p, n_steps=220, tol=0.0, key=jax.random.key(1))
    merge_tol = 0.05
    splits = np.asarray(dynamics.split_temperatures(tr, merge_tol=merge_tol))
    assert np.all(np.isfinite(splits)) and np.all(np.diff(splits) < 0)
    toks, taus = np.asarray(tr.tokens, np.float64), np.asarray(tr.temperature)
    counts = np.array([groups(t, merge_tol) for t in toks])
    thresholds = []
    for k, tau in zip(range(2, 5), splits):
        s = max(i for i in range(len(taus)) if counts[i + 1] >= k > counts[i])  # the split that stayed
        assert taus[s] == tau
        before = toks[s]
        # the group (within merge_tol, single linkage) whose tokens end up in different groups
        comp = _components(before, merge_tol)
        after = _components(toks[s + 1], merge_tol)
        split = [c for c in comp if len({after_id(after, j) for j in c}) > 1]
        assert len(split) == 1
        nearest = np.argmin(((x[:, None] - before[None]) ** 2).sum(-1), axis=1)
        pts = x[np.isin(nearest, list(split[0]))].astype(np.float64)
        tau_c = 2 * np.linalg.eigvalsh(np.cov(pts.T, bias=True)).max()
        thresholds.append(tau_c)
        assert 0.5 * tau_c < tau <= tau_c, (k, tau, tau_c)
    # the thresholds are those of the whole data, then of the wider pair, then of the narrow pair
    np.testing.assert_allclose(
        thresholds,
        [
            2 * np.linalg.eigvalsh(np.cov(x[a:b].T.astype(np.float64), bias=True)).max()
            for a, b in ((0, 400), (200, 400), (0, 200))
        ],
        rtol=0.05,
    )


def _components(tokens, tol):
    comps, seen = [], set()
    for i in range(len(tokens)):
        if i in seen:
            continue
        comp, stack = set(), [i]
        while stack:
            j = stack.pop()
            if j in comp:
                continue
            comp.add(j)
            stack += [k for k in range(len(tokens)) if np.linalg.norm(tokens[j] - tokens[k]) <= tol]
        comps.append(comp)
        seen |= comp
    return comps


def after_id(comps, j):
    return next(i for i, c in enumerate(comps) if j in c)


@pytest.mark.parametrize(
    "params, match",
    [
        (dynamics.Hparams(temperature=0.0), "temperature"),
        (dynamics.Hparams(anneal_ratio=0.5, anneal_steps=5), "may never increase"),
        (dynamics.Hparams(anneal_steps=-1), "anneal_steps"),
        (dynamics.Hparams(anneal_steps=2.5), "anneal_steps must be a whole number"),
        (dynamics.Hparams(sinkhorn_iters=-1), "sinkhorn_iters"),
        (dynamics.Hparams(sinkhorn_iters=1.5), "sinkhorn_iters must be a whole number"),
        (dynamics.Hparams(damping=0.0), "damping"),
        (dynamics.Hparams(damping=1.5), "damping"),
        (dynamics.Hparams(langevin=-0.1), "langevin"),
        (dynamics.Hparams(slot_norm=1.2), "slot_norm"),
        (dynamics.Hparams(langevin=0.1), "needs? a key|pass key"),
        (dynamics.Hparams(langevin=float("nan")), "langevin"),
    ],
)
def test_bad_params_raise_before_compiling(params, match):
    x = np.zeros((3, 2), np.float32)
    with jax_compilations() as compiled:
        with pytest.raises(ValueError, match=match):
            dynamics.run(x, x[:2], params)
        with pytest.raises(ValueError, match=match):
            dynamics.trajectory(x, x[:2], params, n_steps=3)
    assert compiled == []


def test_other_bad_input():
    with pytest.raises(ValueError, match="n_iters"):
        dynamics.sinkhorn(np.zeros((3, 2), np.float32), 0)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        dynamics.run(np.zeros((3, 2), np.float32), np.zeros((1, 2), np.float32), key=3)
    tr = dynamics.trajectory(np.zeros((3, 2), np.float32), np.zeros((2, 2), np.float32), n_steps=2)
    with pytest.raises(ValueError, match="merge_tol"):
        dynamics.split_temperatures(tr, merge_tol=0.0)
    with pytest.raises(TypeError, match="Trajectory"):
        dynamics.split_temperatures(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="anneal_ratio"):
        dynamics.temperature_schedule(dynamics.Hparams(anneal_ratio=0.9), 5)


# ----------------------------------------------------------------------------------------------
# The new rules in the study's run function and in sweeps


@pytest.mark.full
def test_cluster_run_method_rows_equal_direct_runs():
    """ClusterRun with a method table of the new rules gives the same metrics as passing each
    method's knobs explicitly, and the Langevin rule draws from fold_in(key, LANGEVIN_STREAM)."""
    from tokdyn.engine.runs import ClusterRun

    names = ["annealing", "sinkhorn", "slot-attention", "damped", "langevin"]
    run = ClusterRun(
        dim=2,
        points_per_cluster=20,
        max_clusters=4,
        n_clusters=3,
        methods=tuple(dynamics.METHODS[m].row() for m in names),
    )
    key = jax.random.key(3)
    by_index_fn = jax.jit(lambda k, i: run(k, method=i))  # one compilation each: method and knobs are traced
    explicit_fn = jax.jit(lambda k, knobs: run(k, **knobs))
    agree = 0
    for i, m in enumerate(names):
        by_index = by_index_fn(key, i)
        explicit = explicit_fn(key, {f: np.float32(getattr(dynamics.METHODS[m], f)) for f in dynamics.FIELDS})
        # knobs gathered from the table or passed in: two programs, equal up to float32 rounding, which
        # may move a stopping step by one; all but one method must agree
        assert abs(int(by_index["steps"]) - int(explicit["steps"])) <= 1
        agree += all(np.isclose(by_index[f], explicit[f], rtol=1e-5, atol=1e-6) for f in ("ari", "steps", "sse"))
    assert agree >= len(names) - 1
    langevin_fn = jax.jit(lambda k, t: run(k, langevin=t))
    a = langevin_fn(key, 0.05)
    b = langevin_fn(key, 0.0)
    assert float(a["sse"]) != float(b["sse"])


@pytest.mark.full
def test_sweep_cli_method_and_knob_axes(tmp_path, capsys):
    from tokdyn import cli
    from tokdyn.engine import sweep
    from tokdyn.studies import token_dynamics_sweep as tds

    common = [
        "--temperature",
        "1",
        "--repulsion",
        "0",
        "--momentum",
        "0",
        "--noise",
        "0.5",
        "--n-clusters",
        "3",
        "--seeds",
        "3",
        "--dim",
        "2",
        "--points-per-cluster",
        "10",
        "--no-cache",
        "--n-resamples",
        "50",
        "--no-plots",
        "--quiet",
    ]
    outs = []
    for chunk in ("4", "7"):
        out = str(tmp_path / f"c{chunk}")
        assert (
            cli.main(
                [
                    "sweep",
                    "token-dynamics",
                    "--out",
                    out,
                    "--chunk-size",
                    chunk,
                    *common,
                    "--method",
                    "baseline,langevin,sinkhorn",
                    "--damping",
                    "0.5,1",
                ]
            )
            == 0
        )
        outs.append(sweep.load(out))
    assert len(outs[0]) == 3 * 2 * 3
    for f in ("ari", "sse", "steps"):  # Langevin runs do not depend on the chunking
        np.testing.assert_array_equal(outs[0][f], outs[1][f])
    # each run equals the run function called with that method's knobs and the sweep's damping
    cfg = tds.Config(
        temperature="1",
        repulsion="0",
        momentum="0",
        noise="0.5",
        n_clusters="3",
        method="baseline,langevin,sinkhorn",
        damping="0.5,1",
        seeds=3,
        dim=2,
        points_per_cluster=10,
    )
    task = cfg.task()
    res = outs[0]
    one_fn = jax.jit(lambda k, knobs: task(k, n_clusters=3, noise=0.5, **knobs))  # knobs traced: one compile
    for i in (0, 5, 11, 17):
        key = jax.random.fold_in(jax.random.key(0), int(res["seed"][i]))
        m = ("baseline", "langevin", "sinkhorn")[int(res["method"][i])]
        knobs = {f: np.float32(getattr(dynamics.METHODS[m], f)) for f in dynamics.FIELDS}
        knobs.update(temperature=np.float32(1.0), damping=np.float32(res["damping"][i]))
        one = one_fn(key, knobs)
        np.testing.assert_allclose(float(one["sse"]), float(res["sse"][i]), rtol=1e-5)
    assert "1 = langevin" in open(os.path.join(str(tmp_path / "c4"), "report.md")).read()
    for bad, match in (
        (["--method", "nope"], "method must be one of"),
        (["--sinkhorn-iters", "-1"], "sinkhorn_iters"),
        (["--anneal-ratio", "0.5"], "never increase"),
        (["--damping", "0"], "damping"),
    ):
        assert cli.main(["sweep", "token-dynamics", "--out", str(tmp_path / "bad"), *common, *bad]) == 2
        assert match in capsys.readouterr().err
