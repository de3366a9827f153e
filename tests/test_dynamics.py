"""The JAX dynamics against the float64 NumPy reference, for every registered method; vmap vs
loop; determinism; extreme but valid input; bad input errors before compilation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from reference import reference_collapsed, reference_run
from tokdyn import data, dynamics, metrics

# the four rules of the published study, checked against tests/reference.py; the other registered
# rules are checked against tests/reference_rules.py in tests/test_rules.py
METHODS = sorted(["baseline", "inertia", "repulsion", "inertia+repulsion"])


def _problem(seed, k=4, noise=0.6, max_clusters=5, dim=16, ppc=50, box=10.0):
    key = jax.random.key(seed)
    c = data.gaussian_clusters(
        key, k, points_per_cluster=ppc, dim=dim, noise=noise, center_box=box, max_clusters=max_clusters
    )
    t0 = dynamics.init_tokens(jax.random.fold_in(key, 1), 4, dim, method="data", x=c.x, mask=c.mask)
    return c, t0


@pytest.mark.parametrize("name", METHODS)
def test_trajectory_matches_reference(name):
    """Fixed-length trajectories (tol=0: no early stop) agree with the reference step by step."""
    p = dynamics.METHODS[name]
    for seed in range(3):
        # moderate scale so assignments are soft and every term of the rule matters
        c, t0 = _problem(seed, noise=0.8, box=1.5, dim=4)
        ref = reference_run(
            np.asarray(c.x, np.float64),
            np.asarray(t0, np.float64),
            p.temperature,
            p.momentum,
            p.repulsion,
            mask=np.asarray(c.mask),
            n_steps=12,
            tol=0.0,
        )
        tr = dynamics.trajectory(c.x, t0, p, mask=c.mask, n_steps=12, tol=0.0)
        np.testing.assert_allclose(np.asarray(tr.tokens), ref["trajectory"], rtol=1e-4, atol=1e-4)
        assert int(tr.steps) == ref["steps"] == 12


def _assert_labels_match_up_to_ties(labels, ref, x):
    """Equal labels, except on points the reference itself places within 1e-3 (in squared
    distance) of a tie between two tokens: two tokens sharing a cluster sit nearly on top of each
    other, and float32 cannot order such points the way float64 does."""
    d = np.sort(((x[:, None] - ref["tokens"][None]) ** 2).sum(-1), axis=1)
    bad = np.flatnonzero(labels != ref["labels"])
    assert np.all(d[bad, 1] - d[bad, 0] < 1e-3), (bad, d[bad, 1] - d[bad, 0])


@pytest.mark.parametrize("name", METHODS)
def test_run_matches_reference(name):
    """Steps, convergence, final tokens and labels agree on the study's workload."""
    p = dynamics.METHODS[name]
    agree = 0
    for seed in range(8):
        c, t0 = _problem(seed, k=3 + seed % 3, noise=(0.3, 0.6, 0.9)[seed % 3])
        ref = reference_run(
            np.asarray(c.x, np.float64),
            np.asarray(t0, np.float64),
            p.temperature,
            p.momentum,
            p.repulsion,
            mask=np.asarray(c.mask),
            n_steps=30,
            tol=1e-3,
        )
        r = dynamics.run(c.x, t0, p, mask=c.mask)
        _assert_labels_match_up_to_ties(np.asarray(r.labels), ref, np.asarray(c.x, np.float64))
        np.testing.assert_allclose(np.asarray(r.tokens), ref["tokens"], rtol=1e-4, atol=1e-3)
        # the stopping step can differ by one when the float32 change sits at tol, and collapse is
        # decided on labels that may differ on a tie: allow a disagreement rarely
        n_true = int(np.asarray(c.mask).sum() // 50)
        agree += (
            int(r.steps) == ref["steps"]
            and bool(r.converged) == ref["converged"]
            and bool(metrics.collapsed(r.labels, 4, n_true, c.mask))
            == reference_collapsed(ref["labels"], 4, n_true, np.asarray(c.mask))
        )
        assert abs(int(r.steps) - ref["steps"]) <= 1
    assert agree >= 7


def test_trajectory_final_equals_run():
    c, t0 = _problem(3)
    for name in METHODS:
        p = dynamics.METHODS[name]
        r = dynamics.run(c.x, t0, p, mask=c.mask)
        tr = dynamics.trajectory(c.x, t0, p, mask=c.mask, n_steps=30)
        # a while_loop and a scan: two programs, equal up to float32 rounding (the stopping step
        # may differ by one when the last change sits within rounding of tol)
        scale = float(np.max(np.abs(np.asarray(r.tokens))))  # rounding carried over up to 30 steps
        np.testing.assert_allclose(np.asarray(tr.tokens[-1]), np.asarray(r.tokens), rtol=0, atol=1e-5 * scale * 30)
        assert abs(int(tr.steps) - int(r.steps)) <= 1
        # after convergence the trajectory is frozen (its own final state, copied) and deltas are zero
        s = int(tr.steps)
        np.testing.assert_array_equal(
            np.asarray(tr.tokens[s:]), np.broadcast_to(np.asarray(tr.tokens[s]), tr.tokens[s:].shape)
        )
        assert np.all(np.asarray(tr.delta[s:]) == 0)


def test_vmap_equals_loop_and_params_do_not_recompile():
    cs, ts = zip(*[_problem(s) for s in range(6)])
    xs = jnp.stack([c.x for c in cs])
    ms = jnp.stack([c.mask for c in cs])
    t0 = jnp.stack(ts)
    params = dynamics.Hparams.stack([dynamics.METHODS[METHODS[i % 4]] for i in range(6)])
    batched = jax.jit(jax.vmap(lambda x, t, p, m: dynamics.run(x, t, p, mask=m)))(xs, t0, params, ms)
    for i in range(6):
        one = dynamics.run(xs[i], t0[i], dynamics.METHODS[METHODS[i % 4]], mask=ms[i])
        # vmapped and single: two programs, whose float32 rounding the iterated update carries over
        # up to 30 steps (2e-5 on tokens of size 10 seen on one CPU): equal to 1e-5 of the tokens'
        # scale per step; steps and labels may differ on a last-bit tie
        scale = float(np.max(np.abs(np.asarray(one.tokens))))
        np.testing.assert_allclose(
            np.asarray(batched.tokens[i]), np.asarray(one.tokens), rtol=0, atol=1e-5 * scale * 30
        )
        assert abs(int(batched.steps[i]) - int(one.steps)) <= 1
        assert np.mean(np.asarray(batched.labels[i]) == np.asarray(one.labels)) >= 0.99
    # Hparams are traced leaves: a new value reuses the compiled kernel (nothing traced or compiled),
    # whether run is called directly or inside a user's jit
    dynamics.run(xs[0], t0[0], dynamics.Hparams(1.0, 0.5, 0.05), mask=ms[0])
    with jax_compilations() as compiled:
        dynamics.run(xs[0], t0[0], dynamics.Hparams(0.37, 0.21, 0.013), mask=ms[0])
        dynamics.run(xs[0], t0[0], dynamics.Hparams(2.5, 0.0, 0.1), mask=ms[0])
    assert compiled == []
    user = jax.jit(chex.assert_max_traces(lambda p: dynamics.run(xs[0], t0[0], p, mask=ms[0]).tokens, n=1))
    for p in (dynamics.Hparams(0.37, 0.21, 0.013), dynamics.Hparams(2.5, 0.0, 0.1), dynamics.METHODS["damped"]):
        user(p)


def test_determinism_same_key_same_bits():
    a, ta = _problem(11)
    b, tb = _problem(11)
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    np.testing.assert_array_equal(np.asarray(ta), np.asarray(tb))
    ra = dynamics.run(a.x, ta, dynamics.METHODS["inertia+repulsion"], mask=a.mask)
    rb = dynamics.run(b.x, tb, dynamics.METHODS["inertia+repulsion"], mask=b.mask)
    np.testing.assert_array_equal(np.asarray(ra.tokens), np.asarray(rb.tokens))


def test_masked_points_are_ignored():
    c, t0 = _problem(5, k=3)
    valid = np.asarray(c.mask)
    p = dynamics.METHODS["inertia+repulsion"]
    full = dynamics.run(c.x, t0, p, mask=c.mask)
    # garbage in the padded rows must not matter
    x_garbage = np.where(valid[:, None], np.asarray(c.x), 123.0)
    g = dynamics.run(x_garbage, t0, p, mask=c.mask)
    np.testing.assert_array_equal(np.asarray(full.tokens), np.asarray(g.tokens))
    sub = dynamics.run(np.asarray(c.x)[valid], t0, p)
    scale = float(np.max(np.abs(np.asarray(full.tokens))))  # two programs: rounding carried over the steps
    np.testing.assert_allclose(np.asarray(full.tokens), np.asarray(sub.tokens), rtol=0, atol=1e-5 * scale * 30)
    assert np.all(np.asarray(full.labels)[~valid] == -1)


def test_one_token_goes_to_the_mean_in_one_step():
    c, _ = _problem(2, k=3)
    t0 = jnp.zeros((1, 16))
    r = dynamics.run(c.x, t0, dynamics.Hparams(), mask=c.mask)
    mean = np.asarray(c.x)[np.asarray(c.mask)].mean(0)
    np.testing.assert_allclose(np.asarray(r.tokens[0]), mean, rtol=1e-5, atol=1e-5)
    assert int(r.steps) == 2 and bool(r.converged)


def test_heavy_ball_recurrence():
    """With one token the target is fixed (the mean), and the error e = t - mean follows the
    heavy-ball recurrence e' = beta v, v' = beta v - e, whose spectral radius is sqrt(beta)."""
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    beta = 0.5
    tr = dynamics.trajectory(x, np.full((1, 3), 5.0, np.float32), dynamics.Hparams(1.0, beta, 0.0), n_steps=20, tol=0.0)
    e, v = 5.0 - x.astype(np.float64).mean(0), np.zeros(3)
    for n in range(1, 21):
        v = beta * v - e
        e = e + v
        np.testing.assert_allclose(np.asarray(tr.tokens[n, 0]) - x.mean(0), e, atol=2e-5)
    m = np.array([[0.0, beta], [-1.0, beta]])
    assert np.isclose(np.abs(np.linalg.eigvals(m)).max(), np.sqrt(beta))


@pytest.mark.parametrize("tau", [1e-4, 1e4])
def test_extreme_temperature_no_nan(tau):
    c, t0 = _problem(4)
    for name in METHODS:
        p = dynamics.Hparams(tau, dynamics.METHODS[name].momentum, dynamics.METHODS[name].repulsion)
        r = dynamics.run(c.x, t0, p, mask=c.mask)
        assert np.all(np.isfinite(np.asarray(r.tokens)))
        assert np.all(np.asarray(r.labels)[np.asarray(c.mask)] >= 0)


def test_coincident_tokens_with_repulsion_no_nan():
    c, _ = _problem(6)
    t0 = jnp.zeros((4, 16))  # all four tokens at the same point
    for name in ("repulsion", "inertia+repulsion"):
        r = dynamics.run(c.x, t0, dynamics.METHODS[name], mask=c.mask)
        assert np.all(np.isfinite(np.asarray(r.tokens)))
    assert np.all(np.asarray(dynamics.coulomb(t0)) == 0)
    near = t0.at[1, 0].set(1e-7)  # nearly coincident: force bounded by the softening
    f = np.asarray(dynamics.coulomb(near))
    # three partners at distance 1e-7 < MIN_DISTANCE: each pushes with 1e-7 / MIN_DISTANCE^3
    np.testing.assert_allclose(f[1, 0], 3 * 1e-7 / dynamics.MIN_DISTANCE**3, rtol=1e-3)
    assert np.all(np.isfinite(f))


def test_single_point_cluster_no_nan():
    x = np.array([[0.0, 0.0], [5.0, 5.0], [5.1, 5.0], [4.9, 5.1]], np.float32)
    for name in METHODS:
        r = dynamics.run(x, x[:2], dynamics.METHODS[name])
        assert np.all(np.isfinite(np.asarray(r.tokens)))
        assert np.asarray(r.labels).tolist() == [0, 1, 1, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hparams=dynamics.Hparams(temperature=0.0)), "temperature"),
        (dict(hparams=dynamics.Hparams(temperature=-1.0)), "temperature"),
        (dict(hparams=dynamics.Hparams(momentum=1.0)), "momentum"),
        (dict(hparams=dynamics.Hparams(momentum=-0.1)), "momentum"),
        (dict(hparams=dynamics.Hparams(repulsion=-0.1)), "repulsion"),
        (dict(tokens=np.zeros((0, 2), np.float32)), "at least one token"),
        (dict(tokens=np.zeros((2, 3), np.float32)), "same dimension"),
        (dict(x=np.array([[np.nan, 0.0], [1.0, 1.0]], np.float32)), "x must be finite"),
        (dict(x=np.array([[np.inf, 0.0], [1.0, 1.0]], np.float32)), "x must be finite"),
        (dict(mask=np.ones(3, bool)), "mask must have shape"),
        (dict(n_steps=0), "n_steps"),
        (dict(tol=-1.0), "tol"),
    ],
)
def test_bad_input_raises_before_compiling(kwargs, match):
    args = dict(
        x=np.zeros((2, 2), np.float32),
        tokens=np.zeros((2, 2), np.float32),
        hparams=dynamics.Hparams(),
        mask=None,
        n_steps=5,
        tol=1e-3,
    )
    args.update(kwargs)
    with jax_compilations() as compiled, pytest.raises(ValueError, match=match):
        dynamics.run(
            args["x"], args["tokens"], args["hparams"], mask=args["mask"], n_steps=args["n_steps"], tol=args["tol"]
        )
    assert compiled == []


def test_unknown_method_and_init_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        dynamics.method("nope")
    with pytest.raises(ValueError, match="needs the data"):
        dynamics.init_tokens(jax.random.key(0), 4, 2, method="data")
    with pytest.raises(ValueError, match="n_tokens"):
        dynamics.init_tokens(jax.random.key(0), 5, 2, method="data", x=np.zeros((3, 2)))


def test_forgy_init_picks_distinct_valid_points():
    c, _ = _problem(1, k=3)
    for s in range(20):
        t = np.asarray(dynamics.init_tokens(jax.random.key(s), 4, 16, x=c.x, mask=c.mask))
        rows = [np.flatnonzero((np.asarray(c.x) == ti).all(1)) for ti in t]
        idx = [r[0] for r in rows]
        assert len(set(idx)) == 4 and all(np.asarray(c.mask)[i] for i in idx)
