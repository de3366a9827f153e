"""Valid but extreme input never yields NaN silently, and impossible input never yields plausible
numbers: tiny temperatures, non-finite tokens, traced knobs and cluster counts out of range, half
precision, empty masks and absurd sizes. References are NumPy (float64) or closed forms."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from conftest import assert_same_floats, jax_compilations
from tokdyn import cli, data, dynamics, metrics
from tokdyn.engine.runs import MAX_ELEMENTS, ClusterRun, RunStructure

# --------------------------------------------------------------------------------------- NumPy references


def _blobs(seed=0, k=3, per=30, dim=2, spread=0.4, box=6.0):
    """Well-separated clusters (no near-ties between tokens), float32, and their true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-box, box, (k, dim))
    centres[:, 0] = np.linspace(-box, box, k)  # at least 2 box / (k - 1) apart
    x = np.concatenate([c + spread * rng.standard_normal((per, dim)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), per)


def _nearest(x, tokens):
    """(N,) index of the nearest token, float64."""
    d2 = ((np.asarray(x, np.float64)[:, None] - np.asarray(tokens, np.float64)[None]) ** 2).sum(-1)
    return d2.argmin(1)


def _hard_run(x, tokens, momentum=0.0, n_steps=30, tol=1e-3):
    """The rule in its tau -> 0 limit (one-hot assignments, the mass epsilon 1e-8), float64."""
    x, t = np.asarray(x, np.float64), np.array(tokens, np.float64)
    v = np.zeros_like(t)
    for _ in range(n_steps):
        a = np.eye(len(t))[_nearest(x, t)]  # (N, T)
        means = (a.T @ x) / (a.sum(0) + 1e-8)[:, None]
        v = momentum * v + (means - t)
        t = t + v
        if np.abs(v).max() < tol:
            break
    return t


def _start(x, idx=(0, 1, 31, 62)):
    return x[list(idx)].copy()  # two tokens in the first cluster, one in each other


# --------------------------------------------------------------------------------------- case 5


def test_case5_tiny_temperature_is_hard_assignment():
    x, _ = _blobs()
    t0 = _start(x)
    # the soft assignment at tau = 1e-38 is the one-hot of the nearest token (no inf - inf)
    a = np.asarray(dynamics.soft_assignment(x, t0, 1e-38))
    np.testing.assert_array_equal(a, np.eye(4)[_nearest(x, t0)])
    # a traced 0 (or a subnormal, which the CPU flushes to 0) is the same limit
    a0 = np.asarray(jax.jit(dynamics.soft_assignment)(x, t0, jnp.float32(0.0)))
    np.testing.assert_array_equal(a0, np.eye(4)[_nearest(x, t0)])

    for momentum in (0.0, 0.5):
        r = dynamics.run(x, t0, dynamics.Hparams(temperature=1e-38, momentum=momentum))
        ref = _hard_run(x, t0, momentum=momentum)
        assert np.isfinite(np.asarray(r.tokens)).all()
        np.testing.assert_allclose(np.asarray(r.tokens), ref, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(r.labels), _nearest(x, ref))


def test_case5_tiny_temperature_every_rule_path():
    x, _ = _blobs()
    t0 = _start(x)
    # every other path of the rule at the same temperature: finite, labels the nearest final tokens
    for hp in (
        dict(repulsion=0.05),
        dict(sinkhorn_iters=10.0),
        dict(slot_norm=1.0),
        dict(damping=0.5),
        dict(anneal_ratio=100.0, anneal_steps=5.0),
        dict(langevin=1e-6),
    ):
        r = dynamics.run(x, t0, dynamics.Hparams(temperature=1e-38, **hp), key=jax.random.key(0))
        tokens = np.asarray(r.tokens)
        assert np.isfinite(tokens).all(), hp
        np.testing.assert_array_equal(np.asarray(r.labels), _nearest(x, tokens), err_msg=str(hp))
    # a hard Sinkhorn plan is the hard assignment: the same run as the plain limit
    r = dynamics.run(x, t0, dynamics.Hparams(temperature=1e-38, sinkhorn_iters=10.0))
    np.testing.assert_allclose(np.asarray(r.tokens), _hard_run(x, t0), atol=1e-4)

    # the sweep's per-run function: finite metrics, the ARI of scikit-learn on the same labels
    run = ClusterRun(n_tokens=4, dim=2, points_per_cluster=30, max_clusters=3, n_clusters=3)
    out = jax.jit(lambda tau: run(jax.random.key(1), temperature=tau))(jnp.float32(1e-38))
    assert all(np.isfinite(np.asarray(out[k])) for k in ("ari", "nmi", "sse", "collapsed"))


def test_case5_nan_tokens_label_minus_one_and_nan_ari():
    x, truth = _blobs()
    t0 = _start(x)
    labels = np.asarray(dynamics.hard_labels(x, t0))
    np.testing.assert_array_equal(labels, _nearest(x, t0))  # finite tokens: the nearest token
    bad = jnp.asarray(t0).at[2, 0].set(jnp.nan)
    assert (np.asarray(dynamics.hard_labels(x, bad)) == -1).all()  # argmax over NaN would say 0
    mask = np.arange(len(x)) < 50
    lab = np.asarray(dynamics.hard_labels(x, bad, mask))
    assert (lab == -1).all()
    inf_tokens = jnp.asarray(t0).at[1].set(jnp.inf)
    assert (np.asarray(dynamics.hard_labels(x, inf_tokens)) == -1).all()

    # metrics: a masked-in -1 (a JAX array, not inspected on the host) is NaN, a masked-out one is ignored
    pred = jnp.asarray(_nearest(x, _hard_run(x, t0)), jnp.int32)
    kw = dict(n_true=3, n_pred=4)
    ok = float(metrics.ari(jnp.asarray(truth), pred, **kw))
    assert ok == pytest.approx(adjusted_rand_score(truth, np.asarray(pred)), abs=1e-6)
    holed = pred.at[5].set(-1)
    assert np.isnan(float(metrics.ari(jnp.asarray(truth), holed, **kw)))
    assert np.isnan(float(metrics.nmi(jnp.asarray(truth), holed, **kw)))
    assert np.isnan(float(metrics.sse(x, holed, jnp.asarray(t0))))
    assert int(metrics.n_used(holed, 4)) == -1
    keep = np.ones(len(x), bool)
    keep[5] = False
    assert float(metrics.ari(jnp.asarray(truth), holed, jnp.asarray(keep), **kw)) == pytest.approx(
        adjusted_rand_score(truth[keep], np.asarray(pred)[keep]), abs=1e-6
    )


def test_case5_nan_tokens_kmeans_and_cluster_run_report_nan():
    x, _ = _blobs()
    bad = jnp.asarray(_start(x)).at[2, 0].set(jnp.nan)
    # k-means: a NaN centre labels no point and has no inertia
    km = dynamics.kmeans(x, bad, n_steps=1)
    assert (np.asarray(km.labels) == -1).all() and np.isnan(float(km.inertia))

    # the per-run function: a run with NaN tokens reports NaN, not ARI 0.0 or 'collapsed'
    run = ClusterRun(n_tokens=4, dim=2, points_per_cluster=30, max_clusters=3, n_clusters=3)
    out = jax.jit(lambda m: run(jax.random.key(0), momentum=m))(jnp.float32(1.5))
    for k in ("ari", "nmi", "sse", "collapsed"):
        assert np.isnan(float(out[k])), k
    assert not bool(out["converged"])


BAD_KNOBS = [
    ("temperature", -1.0),
    ("temperature", np.nan),
    ("temperature", np.inf),
    ("momentum", 1.5),
    ("momentum", 1.0),
    ("momentum", -0.1),
    ("repulsion", -0.05),
    ("damping", 0.0),
    ("damping", 1.5),
    ("langevin", -0.01),
    ("anneal_ratio", 1 - 2e-3),
    ("sinkhorn_iters", -1.0),
    ("slot_norm", 1.5),
    ("slot_norm", -0.5),
    ("anneal_ratio", 0.5),
    ("anneal_steps", -2.0),
]
GOOD_KNOBS = [
    ("temperature", 1e-38),
    ("temperature", 1e30),
    ("momentum", 0.0),
    ("momentum", 0.9),
    ("damping", 1.0),
    ("slot_norm", 1.0),
    ("anneal_ratio", 1.0),
    ("sinkhorn_iters", 150.0),
    ("repulsion", -1e-4),
    ("slot_norm", 1 + 1e-4),
]  # within KNOB_EDGE_TOL of a closed edge


def _hp32(**kw):
    return jax.tree_util.tree_map(jnp.float32, dataclasses.replace(dynamics.Hparams(), **kw))


def test_case5_traced_knob_out_of_range_is_nan():
    x, _ = _blobs()
    t0 = _start(x)
    f = jax.jit(lambda hp: dynamics.run(x, t0, hp))
    for name, value in BAD_KNOBS:
        r = f(_hp32(**{name: value}))
        assert np.isnan(np.asarray(r.tokens)).all(), (name, value)
        assert (np.asarray(r.labels) == -1).all(), (name, value)
        assert not bool(r.converged)
        assert not bool(_hp32(**{name: value}).in_range())
        if np.isfinite(value):  # the same value from the host is refused, naming the knob
            with pytest.raises(ValueError, match=name):
                dynamics.run(x, t0, dataclasses.replace(dynamics.Hparams(), **{name: value}))
    for name, value in GOOD_KNOBS:
        r = f(_hp32(**{name: value}))
        assert np.isfinite(np.asarray(r.tokens)).all(), (name, value)
        assert (np.asarray(r.labels) >= 0).all(), (name, value)


def test_case5_traced_knob_out_of_range_other_kernels():
    x, _ = _blobs()
    t0 = _start(x)
    # one bad lane in a vmapped sweep leaves the others alone
    stacked = dynamics.Hparams.stack(
        [dynamics.Hparams(), dynamics.Hparams(momentum=0.5), dynamics.Hparams(momentum=0.5, temperature=2.0)]
    )
    stacked = dataclasses.replace(stacked, momentum=stacked.momentum.at[1].set(1.5))
    out = jax.jit(jax.vmap(lambda hp: dynamics.run(x, t0, hp).tokens))(stacked)
    finite = np.isfinite(np.asarray(out)).reshape(3, -1).all(1)
    np.testing.assert_array_equal(finite, [True, False, True])
    # one step, the schedule, the fixed-length loop
    tok, vel = jax.jit(lambda hp: dynamics.update(x, t0, np.zeros_like(t0), hp))(_hp32(damping=2.0))
    assert np.isnan(np.asarray(tok)).all() and np.isnan(np.asarray(vel)).all()
    sched = jax.jit(lambda hp: dynamics.temperature_schedule(hp, 5))(_hp32(anneal_ratio=0.5, anneal_steps=3.0))
    assert np.isnan(np.asarray(sched)).all()
    good = jax.jit(lambda hp: dynamics.temperature_schedule(hp, 4))(
        _hp32(temperature=0.5, anneal_ratio=16.0, anneal_steps=4.0)
    )
    np.testing.assert_allclose(np.asarray(good), 0.5 * 16.0 ** (1 - np.arange(4) / 4), rtol=1e-6)
    rf = jax.jit(lambda hp: dynamics.run_fixed(x, t0, hp, n_steps=5).tokens)(_hp32(temperature=-1.0))
    assert np.isnan(np.asarray(rf)).all()
    # the per-run function: a traced temperature of -1 reports NaN
    run = ClusterRun(n_tokens=4, dim=2, points_per_cluster=30, max_clusters=3, n_clusters=3)
    out = jax.jit(lambda tau: run(jax.random.key(0), temperature=tau))(jnp.float32(-1.0))
    assert all(np.isnan(float(out[k])) for k in ("ari", "nmi", "sse", "collapsed"))


# --------------------------------------------------------------------------------------- case 6


@pytest.mark.parametrize(
    "dtype", [pytest.param(np.float16, marks=pytest.mark.full), ml_dtypes.bfloat16], ids=["float16", "bfloat16"]
)
def test_case6_bfloat16_like_float16(dtype):
    x, _ = _blobs(per=20)
    x = np.round(x * 4) / 4  # quarters: exact in float16, bfloat16 and float32
    t0 = _start(x, (0, 1, 21, 42))
    ref = dynamics.run(x.astype(np.float32), t0.astype(np.float32), dynamics.Hparams(temperature=0.5))
    for as_jax in (False, True):
        xs = jnp.asarray(x, dtype) if as_jax else x.astype(dtype)
        ts = jnp.asarray(t0, dtype) if as_jax else t0.astype(dtype)
        r = dynamics.run(xs, ts, dynamics.Hparams(temperature=0.5))
        assert r.tokens.dtype == jnp.float32  # computed in float32, whatever the half type
        # another input dtype is another program (a conversion XLA may fuse): float32 rounding
        assert_same_floats(r.tokens, ref.tokens)
        np.testing.assert_array_equal(np.asarray(r.labels), np.asarray(ref.labels))
        np.testing.assert_array_equal(np.asarray(dynamics.hard_labels(xs, ts)), _nearest(x, t0))
        np.testing.assert_allclose(
            np.asarray(dynamics.soft_assignment(xs, ts, 1.0)),
            np.asarray(dynamics.soft_assignment(x, t0, 1.0)),
            rtol=0,
            atol=0,
        )
        labels = _nearest(x, t0)
        want = float(((x.astype(np.float64) - t0.astype(np.float64)[labels]) ** 2).sum())
        assert float(metrics.sse(xs, labels, ts)) == pytest.approx(want, rel=1e-6)
    tok = dynamics.init_tokens(jax.random.key(0), 3, 2, x=x.astype(dtype), method="kmeans++")
    assert tok.dtype == jnp.float32
    # bad half-precision host data is refused as float32 data is: naming the argument
    bad = x.astype(dtype)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="x must be finite"):
        dynamics.run(bad, t0.astype(dtype))
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        dynamics.run(jnp.asarray(x[:, 0], dtype), t0)
    with pytest.raises(TypeError, match="real-valued"):
        dynamics.run(x.astype(np.complex64), t0)


@pytest.mark.parametrize("method", ["data", "data_mean", "kmeans++"])
def test_case6_all_false_mask_refused(method):
    x, _ = _blobs(per=10)
    none = np.zeros(len(x), bool)
    key = jax.random.key(0)  # made outside the block: the first key of a process compiles
    with jax_compilations() as compiled, pytest.raises(ValueError, match=r"mask must select at least one point"):
        dynamics.init_tokens(key, 3, 2, method=method, x=x, mask=none)
    assert compiled == []
    f = jax.jit(lambda m: dynamics.init_tokens(jax.random.key(0), 3, 2, method=method, x=x, mask=m))
    assert np.isnan(np.asarray(f(jnp.asarray(none)))).all()  # traced: NaN tokens, not padding rows
    some = np.arange(len(x)) % 7 == 0
    tok = np.asarray(f(jnp.asarray(some)))
    assert np.isfinite(tok).all()
    if method != "data_mean":  # tokens are valid rows of x
        rows = {tuple(r) for r in x[some].tolist()}
        assert all(tuple(t) in rows for t in tok.tolist())
    else:  # the selected points' mean (float64 NumPy) plus scale (1) times the key's normal draws
        want = x[some].astype(np.float64).mean(0) + np.asarray(jax.random.normal(jax.random.key(0), (3, 2)))
        assert_same_floats(tok, want, operands=(x[some],))
    # forgy (the sweep's initialisation) likewise
    ff = jax.jit(lambda m: dynamics.forgy(jnp.asarray(x), jnp.linspace(0, 1, len(x)), m, 3))
    assert np.isnan(np.asarray(ff(jnp.asarray(none)))).all()
    np.testing.assert_array_equal(np.asarray(ff(jnp.asarray(some))), x[np.flatnonzero(some)[::-1][:3]])
    # and a run from such tokens reports nothing
    r = dynamics.run(x, f(jnp.asarray(none)))
    assert (np.asarray(r.labels) == -1).all()


def test_case6_traced_n_clusters_beyond_max():
    key = jax.random.key(3)
    kw = dict(points_per_cluster=4, dim=2, noise=0.3, max_clusters=5)
    with pytest.raises(ValueError, match=r"n_clusters must be <= max_clusters=5, got 7"):
        data.gaussian_clusters(key, 7, **kw)
    with pytest.raises(ValueError, match="n_clusters"):
        data.gaussian_clusters(key, 0, **kw)
    f = jax.jit(lambda k: data.gaussian_clusters(key, k, **kw))
    for k in (7, 6, 0, -1):
        c = f(jnp.int32(k))
        assert np.isnan(np.asarray(c.x)).all(), k  # not 5 (or 0) clusters that look like a result
    host = data.gaussian_clusters(key, 3, **kw)
    c = f(jnp.int32(3))
    assert_same_floats(c.x, host.x)  # a traced count against a static one: two programs
    np.testing.assert_array_equal(np.asarray(c.mask), np.arange(20) < 12)
    draw = data.cluster_draw(key, max_clusters=5, points_per_cluster=4, dim=2)
    g = jax.jit(lambda k: data.clusters_from_draw(draw, k))
    assert np.isnan(np.asarray(g(jnp.int32(7)).x)).all()
    assert np.isfinite(np.asarray(g(jnp.int32(5)).x)).all()
    # the per-run function reports NaN for such a condition
    run = ClusterRun(n_tokens=4, dim=2, points_per_cluster=30, max_clusters=3, n_clusters=3)
    out = jax.jit(lambda k: run(jax.random.key(0), n_clusters=k))(jnp.int32(4))
    assert all(np.isnan(float(out[k])) for k in ("ari", "nmi", "sse", "collapsed"))


def _bytes(m, t, d, p):
    """The documented per-run working set, 4 bytes x (6 N (D + 1) + 6 T N + 2 T^2 (D + 1))."""
    n = m * p
    return 4 * (6 * n * (d + 1) + 6 * t * n + 2 * t * t * (d + 1))


@pytest.mark.parametrize(
    "field, value, init", [("points_per_cluster", 10**8, "data"), ("dim", 10**9, "data"), ("n_tokens", 10**5, "normal")]
)
def test_case6_absurd_sizes_refused_naming_option(field, value, init, capsys):
    s = RunStructure(**{field: value, "init": init})
    with pytest.raises(ValueError, match=rf"{field}={value} is too large") as e:
        s.validate_structure(3)
    msg = str(e.value)
    fit = int(msg.rsplit(f"{field} <= ", 1)[1].split()[0])
    # the value said to fit does, one more does not: by the documented limits
    sizes = dict(n_tokens=s.n_tokens, dim=s.dim, points_per_cluster=s.points_per_cluster)

    def fits(v):
        z = {**sizes, field: v}
        t, d, n = z["n_tokens"], z["dim"], 3 * z["points_per_cluster"]
        return max(n * (d + 1), t * n, t * t * d) <= MAX_ELEMENTS and _bytes(3, t, d, z["points_per_cluster"]) <= 2**30

    assert fits(fit) and not fits(fit + 1)
    dataclasses.replace(s, **{field: fit}).validate_structure(3)
    with pytest.raises(ValueError):
        ClusterRun(**{field: value, "init": init}, max_clusters=3)
    RunStructure().validate_structure(3)  # the defaults are fine
    # the command line refuses it with exit 2 before compiling anything
    flag = "--" + field.replace("_", "-")
    argv = [
        "study",
        "token-dynamics",
        "--seeds",
        "2",
        "--noise",
        "0.3",
        "--n-clusters",
        "3",
        flag,
        str(value),
        "--init",
        init,
        "--out",
        "/nonexistent/never-written",
    ]
    with jax_compilations() as compiled:
        assert cli.main(argv) == 2
    assert compiled == []
    assert f"{field}={value} is too large" in capsys.readouterr().err


def test_case5_collapse_run_never_reads_nan_tokens_as_a_collapse():
    """Tokens that blew up (here: a traced momentum of 1.5, outside [0, 1)) have no groups: the
    collapse run reports NaN groups, collapse and merge, never one group read as a collapse."""
    from tokdyn.engine.runs import CollapseRun

    run = jax.jit(CollapseRun(n_points=60, n_steps=40))
    bad = run(jax.random.key(0), 0.5, 1.0, 1.5, 0.0)
    for name in ("groups", "collapsed", "merged", "min_sep_rel"):
        assert np.isnan(float(bad[name])), (name, bad[name])
    good = run(jax.random.key(0), 0.5, 1.0, 0.0, 0.0)  # below the threshold: tokens stay apart
    assert float(good["groups"]) >= 2 and float(good["collapsed"]) == 0.0 and np.isfinite(float(good["min_sep_rel"]))
