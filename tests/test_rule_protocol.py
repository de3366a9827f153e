"""An update rule written outside the package, as a user would (public names only): a Lloyd-like
hard-assignment rule with a traced step size and a soft rule whose temperature decays, run through
``dynamics.run`` / ``run_fixed`` / ``trajectory`` (the loop's stopping test, steps and labels
against a float64 NumPy reference; ``jax.grad`` through ``run_fixed`` in the knobs against central
finite differences in float64), through ``ClusterRun`` and ``engine.sweep.run`` with a knob as a
swept axis (one compilation for every value), and into the token-dynamics study, paired with the
built-in baseline by seed; a bad rule refused with a clear error before anything is compiled."""

import dataclasses
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_floats, jax_compilations
from tokdyn import data, dynamics, stats
from tokdyn.engine import sweep
from tokdyn.engine.runs import ClusterRun
from tokdyn.studies import token_dynamics as td


# ---------------------------------------------------------------------------------------------- the user's rules


class Lloyd(NamedTuple):
    step_size: float = 1.0


def lloyd_init(points, tokens, hp):
    return tokens  # the state is the tokens alone


def lloyd_step(tokens, points, hp, step, key):
    d2 = jnp.sum((points.x[:, None, :] - tokens[None, :, :]) ** 2, axis=-1)  # (N, T)
    a = jax.nn.one_hot(jnp.argmin(d2, axis=1), tokens.shape[0], dtype=tokens.dtype) * points.weights[:, None]
    sums = a.T @ points.x1  # (T, D + 1): the sum of each token's points, then their count
    means = jnp.where(sums[:, -1:] > 0, sums[:, :-1] / jnp.maximum(sums[:, -1:], 1.0), tokens)
    return tokens + hp.step_size * (means - tokens)


LLOYD = dynamics.Rule(lloyd_init, lloyd_step, hparams=Lloyd(), name="lloyd")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Decay:
    temperature: float = 2.0
    decay: float = 0.8


class Cooling(NamedTuple):  # the state: tokens and the current temperature
    tokens: jax.Array
    tau: jax.Array


def cooling_init(points, tokens, hp):
    return Cooling(tokens, jnp.asarray(hp.temperature, tokens.dtype))


def cooling_step(state, points, hp, step, key):
    logits = -jnp.sum((points.x[:, None, :] - state.tokens[None, :, :]) ** 2, axis=-1) / state.tau
    a = jax.nn.softmax(logits, axis=1) * points.weights[:, None]  # (N, T), no weight on padded points
    means = (a.T @ points.x) / (jnp.sum(a, axis=0)[:, None] + 1e-8)
    return Cooling(means, state.tau * hp.decay)


COOLING = dynamics.Rule(
    cooling_init, cooling_step, hparams=Decay(), name="cooling", temperature=lambda hp, s: hp.temperature * hp.decay**s
)


# ---------------------------------------------------------------------------------------------- references


def lloyd_reference(x, tokens, step_size, mask, n_steps, tol):
    """float64 NumPy: the documented loop around the Lloyd rule (stop after the first step whose
    largest coordinate movement is below tol). Returns (tokens, steps, converged, labels)."""
    x, t = np.asarray(x, np.float64), np.array(tokens, np.float64)
    valid = np.asarray(mask)
    for s in range(n_steps):  # noqa: B007 (s counts the steps taken, read after the loop)
        lab = np.argmin(((x[:, None] - t[None]) ** 2).sum(-1), axis=1)
        means = np.array([x[valid & (lab == j)].mean(0) if np.any(valid & (lab == j)) else t[j] for j in range(len(t))])
        move = step_size * (means - t)
        t = t + move
        if np.max(np.abs(move)) < tol:
            break
    labels = np.where(valid, np.argmin(((x[:, None] - t[None]) ** 2).sum(-1), axis=1), -1)
    return t, s + 1, np.max(np.abs(move)) < tol, labels


def _problem(seed, k=3, noise=0.6):
    c = data.gaussian_clusters(
        jax.random.key(seed), k, points_per_cluster=30, dim=2, noise=noise, center_box=6.0, max_clusters=5
    )
    return c, dynamics.forgy(c.x, c.init_noise, c.mask, 4)


# ---------------------------------------------------------------------------------------------- the loop


@pytest.mark.parametrize("step_size", [1.0, 0.5])
def test_user_rule_gets_the_loop_stopping_test_labels_and_result(step_size):
    agree = 0
    for seed in range(4):
        c, t0 = _problem(seed)
        r = dynamics.run(c.x, t0, Lloyd(step_size), rule=LLOYD, mask=c.mask, n_steps=40, tol=1e-4)
        ref_t, ref_steps, ref_conv, ref_labels = lloyd_reference(c.x, t0, step_size, c.mask, 40, 1e-4)
        np.testing.assert_allclose(np.asarray(r.tokens), ref_t, rtol=1e-5, atol=1e-4)
        assert abs(int(r.steps) - ref_steps) <= 1  # float32 against float64 at the tolerance's edge
        agree += int(r.steps) == ref_steps and bool(r.converged) == ref_conv
        np.testing.assert_array_equal(np.asarray(r.labels), ref_labels)
        np.testing.assert_array_equal(np.asarray(r.state), np.asarray(r.tokens))  # the rule's final state
        assert float(r.delta) == float(np.max(np.abs(np.asarray(r.velocity))))  # the last step's movement
        # the same run as a fixed-length scan, and recorded step by step
        f = dynamics.run_fixed(c.x, t0, Lloyd(step_size), rule=LLOYD, mask=c.mask, n_steps=40, tol=1e-4)
        assert int(f.steps) == int(r.steps)
        assert_same_floats(f.tokens, r.tokens)  # another program: float32 rounding at the tokens' magnitude
        tr = dynamics.trajectory(c.x, t0, Lloyd(step_size), rule=LLOYD, mask=c.mask, n_steps=40, tol=1e-4)
        assert int(tr.steps) == int(r.steps) and tr.tokens.shape == (41, 4, 2)
        assert_same_floats(tr.tokens[-1], r.tokens)
        assert np.all(np.isnan(np.asarray(tr.temperature)))  # a rule without a temperature
    assert agree >= 3
    # Lloyd's algorithm at step size 1 is the package's k-means, from the same initial centres
    if step_size == 1.0:
        km = dynamics.kmeans(c.x, t0, c.mask, n_steps=40)
        np.testing.assert_allclose(np.asarray(r.tokens), np.asarray(km.tokens), rtol=1e-5, atol=1e-5)


def test_default_knobs_state_and_temperature_hook():
    c, t0 = _problem(1)
    r = dynamics.run(c.x, t0, rule=COOLING, mask=c.mask, n_steps=25)  # hparams: the rule's defaults
    same = dynamics.run(c.x, t0, Decay(), rule=COOLING, mask=c.mask, n_steps=25)
    np.testing.assert_array_equal(np.asarray(r.tokens), np.asarray(same.tokens))
    assert isinstance(r.state, Cooling)
    np.testing.assert_allclose(float(r.state.tau), 2.0 * 0.8 ** int(r.steps), rtol=1e-5)  # carried by the rule
    tr = dynamics.trajectory(c.x, t0, rule=COOLING, mask=c.mask, n_steps=6)
    np.testing.assert_allclose(np.asarray(tr.temperature), 2.0 * 0.8 ** np.arange(6), rtol=1e-6)
    # the built-in rule is the default and a value of the same protocol
    b = dynamics.run(c.x, t0, dynamics.METHODS["inertia"], mask=c.mask)
    b2 = dynamics.run(c.x, t0, dynamics.METHODS["inertia"], rule=dynamics.BUILTIN, mask=c.mask)
    np.testing.assert_array_equal(np.asarray(b.tokens), np.asarray(b2.tokens))
    np.testing.assert_array_equal(np.asarray(b.velocity), np.asarray(b.state.velocity))


def test_knob_values_share_one_compilation():
    c, t0 = _problem(2)
    dynamics.run(c.x, t0, Lloyd(jnp.float32(0.3)), rule=LLOYD, mask=c.mask)
    with jax_compilations() as compiled:
        for s in (0.4, 0.7, 1.0):
            dynamics.run(c.x, t0, Lloyd(jnp.float32(s)), rule=LLOYD, mask=c.mask)
    assert compiled == []


def test_grad_of_run_fixed_in_the_rules_knobs_matches_finite_differences():
    """d loss / d (temperature, decay) through 8 steps of the cooling rule, reverse mode against
    fourth-order central differences of the same run in float64."""
    c, t0 = _problem(3, noise=0.9)
    w = np.random.default_rng(0).normal(size=(4, 2))
    with jax.enable_x64(True):
        x, tokens, mask = jnp.asarray(c.x, jnp.float64), jnp.asarray(t0, jnp.float64), c.mask

        def loss(hp):
            t = dynamics.run_fixed(x, tokens, hp, rule=COOLING, mask=mask, n_steps=8, tol=0.0).tokens
            return jnp.sum(w * t) + 0.5 * jnp.sum(t**2)

        hp = Decay(temperature=jnp.float64(1.5), decay=jnp.float64(0.85))
        g = jax.grad(loss)(hp)
        assert g.decay.dtype == jnp.float64
        for name in ("temperature", "decay"):
            v = float(getattr(hp, name))
            at = lambda u: float(loss(dataclasses.replace(hp, **{name: jnp.float64(u)})))  # noqa: E731
            h = 1e-4 * v
            fd = (8 * (at(v + h) - at(v - h)) - (at(v + 2 * h) - at(v - 2 * h))) / (12 * h)
            assert abs(fd) > 1e-3  # the knob matters
            np.testing.assert_allclose(float(getattr(g, name)), fd, rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------------------------- runs and sweeps


@pytest.mark.full
def test_cluster_run_and_sweep_over_the_rules_knob_compile_once():
    traces = []

    def counted_step(tokens, points, hp, step, key):
        traces.append(1)
        return lloyd_step(tokens, points, hp, step, key)

    rule = dynamics.Rule(lloyd_init, counted_step, hparams=Lloyd(), name="lloyd-counted")
    task = ClusterRun(dim=2, points_per_cluster=20, max_clusters=4, rule=rule)
    assert task.knobs == ("step_size",) and task.conditions == ("step_size", "noise", "n_clusters", "method")

    def grid(values):
        return sweep.Grid(step_size=values, n_clusters=[3, 4], noise=[0.5], seeds=5, seed_major=True)

    key = jax.random.key(0)
    res = sweep.run(task, grid([0.25, 0.5, 1.0]), key=key, common_random_numbers=True, chunk_size=16, progress=False)
    assert len(res) == 3 * 2 * 5 and set(res.fields) >= {"ari", "steps", "converged"}
    n_traces = len(traces)
    with jax_compilations() as compiled:  # other knob values: the same program, nothing traced or compiled
        res2 = sweep.run(
            task, grid([0.3, 0.6, 0.9]), key=key, common_random_numbers=True, chunk_size=16, progress=False
        )
    assert compiled == [] and len(traces) == n_traces
    assert not np.array_equal(res["sse"], res2["sse"])
    # smaller steps take more of them to converge (paired by seed and condition)
    slow, fast = res["step_size"] == 0.25, res["step_size"] == 1.0
    assert np.mean(res["steps"][slow]) > np.mean(res["steps"][fast])
    # a run of the sweep is the run function called on its own (its own draw: equal up to rounding)
    i = 7
    row = {k: res[k][i] for k in ("step_size", "n_clusters", "noise", "seed")}
    alone = jax.jit(lambda k: task(k, step_size=row["step_size"], n_clusters=row["n_clusters"], noise=row["noise"]))(
        jax.random.fold_in(key, int(row["seed"]))
    )
    assert abs(int(alone["steps"]) - int(res["steps"][i])) <= 1
    np.testing.assert_allclose(float(alone["sse"]), res["sse"][i], rtol=1e-4)
    # a method table of the rule's settings, as rows of its knobs
    table = ClusterRun(dim=2, points_per_cluster=20, max_clusters=4, rule=rule, methods=((0.25,), (1.0,)))
    by_row = jax.jit(lambda k: table(k, method=1, n_clusters=3, noise=0.5))(jax.random.key(4))
    direct = jax.jit(lambda k: table(k, step_size=1.0, n_clusters=3, noise=0.5))(jax.random.key(4))
    assert int(by_row["steps"]) == int(direct["steps"])


@pytest.mark.full
def test_study_pairs_a_users_rule_with_the_baseline(tmp_path):
    rules = {"lloyd": LLOYD, "lloyd-half": dataclasses.replace(LLOYD, hparams=Lloyd(0.5))}
    cfg = td.Config(
        seeds=6,
        noise=(0.6,),
        n_clusters=(3,),
        dim=2,
        points_per_cluster=20,
        methods=("baseline", "lloyd", "lloyd-half"),
    )
    tasks = cfg.tasks(rules)
    assert [idx for _, idx in tasks] == [(0,), (1, 2)]  # the two Lloyd settings: one run function
    assert tasks[1][0].methods == ((1.0,), (0.5,))
    runs = td.simulate(cfg, rules=rules)
    assert runs["seed"].size == 3 * 6
    for name in cfg.methods:
        np.testing.assert_array_equal(runs["seed"][runs["method"] == name], np.arange(6))
    # the Lloyd rows are the Lloyd run function on each seed's key: the baseline's data and tokens
    task = tasks[1][0]
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(cfg.root_seed), s))(jnp.arange(6))
    alone = jax.jit(jax.vmap(lambda k: task(k, step_size=1.0, n_clusters=3, noise=np.float32(0.6))))(keys)
    lloyd = runs["method"] == "lloyd"
    assert np.sum(np.isclose(alone["sse"], runs["sse"][lloyd], rtol=1e-4)) >= 5
    # paired statistics against the built-in baseline, by seed
    tests = td.stat_tests(runs, cfg)
    assert {t["method"] for t in tests} == {"lloyd", "lloyd-half"}
    base = runs["ari"][runs["method"] == "baseline"].astype(np.float64)
    mine = runs["ari"][lloyd].astype(np.float64)
    t = next(t for t in tests if t["method"] == "lloyd")
    ref = stats.paired_ttest(mine, base)
    assert t["n"] == 6 and t["mean_diff"] == pytest.approx(np.mean(mine - base))
    if np.isfinite(ref.pvalue):
        assert t["p"] == pytest.approx(float(ref.pvalue))
    # end to end, recorded in config.json
    td.main(cfg, str(tmp_path), quiet=True, plots=False, rules=rules)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["config"]["methods"] == ["baseline", "lloyd", "lloyd-half"]
    assert record["rules"]["lloyd"].startswith("Rule(name='lloyd'")
    with pytest.raises(ValueError, match="methods must be one of"):
        td.simulate(cfg)  # the names need their rules


# ---------------------------------------------------------------------------------------------- bad rules


def _bad_calls():
    x, t0 = np.zeros((6, 2), np.float32), np.zeros((2, 2), np.float32)

    def my_fn(tokens, points):
        return tokens

    return [
        (lambda: dynamics.run(x, t0, my_fn), TypeError, "an update rule of your own is a dynamics.Rule"),
        (lambda: dynamics.run(x, t0, rule=my_fn), TypeError, "rule must be a tokdyn.dynamics.Rule"),
        (lambda: dynamics.run_fixed(x, t0, rule="lloyd"), TypeError, "rule must be a tokdyn.dynamics.Rule"),
        (lambda: dynamics.trajectory(x, t0, LLOYD), TypeError, "hparams is a Rule"),
        (lambda: dynamics.run(x, t0, dynamics.Hparams(), rule=LLOYD), TypeError, "hparams must be"),
        (lambda: dynamics.run(x, t0, dynamics.METHODS["inertia"], rule=COOLING), TypeError, "Decay"),
        (lambda: dynamics.Rule(step=lloyd_step), TypeError, "init"),
        (lambda: dynamics.Rule(None, lloyd_step), TypeError, "Rule.init must be a function"),
        (lambda: dynamics.Rule(lloyd_init, my_fn), TypeError, r"Rule.step must take the arguments step\(state, "),
        (lambda: dynamics.Rule(lloyd_init, lloyd_step, hparams={"step_size": 1.0}), TypeError, "hashable"),
        (lambda: dynamics.Rule(lloyd_init, lloyd_step, movement=3), TypeError, "Rule.movement must be a function"),
        (lambda: ClusterRun(methods=(my_fn,)), TypeError, "methods must be a tuple of rows"),
        (lambda: ClusterRun(rule=my_fn), TypeError, "rule must be a tokdyn.dynamics.Rule"),
        (
            lambda: ClusterRun(rule=LLOYD, hparams=dynamics.Hparams(temperature=2.0)),
            ValueError,
            "knobs of the built-in rule",
        ),
        (lambda: ClusterRun(rule=LLOYD, methods=((0.5, 1.0),)), TypeError, "at most 1 numbers"),
        (lambda: ClusterRun(rule=LLOYD)(jax.random.key(0), temperature=1.0), TypeError, "unknown conditions"),
        (
            lambda: sweep.run(
                ClusterRun(rule=LLOYD), sweep.Grid(temperature=[1.0]), key=jax.random.key(0), progress=False
            ),
            ValueError,
            "grid axis 'temperature' is not an argument",
        ),
        (
            lambda: td.simulate(td.Config(methods=("baseline", "mine")), rules={"mine": my_fn}),
            TypeError,
            r"rules\['mine'\] must be a tokdyn.dynamics.Rule",
        ),
    ]


@pytest.mark.parametrize("i", range(len(_bad_calls())))
def test_bad_rule_is_refused_before_compiling(i):
    call, error, match = _bad_calls()[i]
    with jax_compilations() as compiled, pytest.raises(error, match=match):
        call()
    assert compiled == []


def test_a_step_returning_the_wrong_state_is_named_while_tracing():
    c, t0 = _problem(0)
    wrong = dynamics.Rule(lloyd_init, lambda state, points, hp, step, key: state[:2], hparams=Lloyd(), name="wrong")
    with pytest.raises(TypeError, match="wrong.step must return the tokens"):
        dynamics.run(c.x, t0, rule=wrong, mask=c.mask)
