"""A run holds the defaults of its knobs as one field, ``hparams``: ``ClusterRun(hparams=
dynamics.Hparams(...))`` runs the rule at those knobs (against ``dynamics.run`` on the same data and
scikit-learn's ARI), a condition given at call time or a method row overrides them, the old
spelling (one field per knob) is refused naming the new one, and ``TrackRun`` holds its predictor
knobs (``tracking.Hparams``) the same way."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import f32_atol
from sklearn.metrics import adjusted_rand_score

from tokdyn import data, dynamics, refinement, tracking
from tokdyn.engine.runs import BUILTIN_RULES, PACKAGE_RULES, ClusterRun, TrackRun

SMALL = dict(dim=2, points_per_cluster=15, max_clusters=3, n_clusters=3)
HP = dynamics.Hparams(temperature=0.5, momentum=0.5, repulsion=0.02, anneal_ratio=4.0, anneal_steps=3.0)


def test_hparams_are_the_knobs_the_run_uses():
    run = ClusterRun(**SMALL, hparams=HP)
    key = jax.random.key(3)
    got = jax.jit(run)(key)
    # the same run by hand: the run's data and Forgy tokens, dynamics.run at HP, scikit-learn's ARI
    c = data.clusters_from_draw(run.draw(key), 3, noise=0.6, center_box=10.0)
    t0 = dynamics.forgy(c.x, c.init_noise, c.mask, run.n_tokens)
    ref = dynamics.run(c.x, t0, HP, mask=c.mask, n_steps=run.n_steps, tol=run.tol)
    valid = np.asarray(c.mask)
    assert int(got["steps"]) == int(ref.steps)
    ari = adjusted_rand_score(np.asarray(c.labels)[valid], np.asarray(ref.labels)[valid])
    np.testing.assert_allclose(float(got["ari"]), ari, atol=1e-5)
    # the defaults and the same knobs given as conditions are one run
    given = jax.jit(lambda k: ClusterRun(**SMALL)(k, **{f: getattr(HP, f) for f in dynamics.FIELDS}))(key)
    # two programs (knobs traced, or constants XLA may fold): float32 rounding of the tokens, at the
    # data's magnitude, moves the SSE, a sum of n squared distances d_i, by at most
    # 2 * sum |d_i| * delta <= 2 * sqrt(n * SSE) * delta
    for f in ("ari", "nmi", "steps"):
        np.testing.assert_allclose(np.asarray(given[f]), np.asarray(got[f]), rtol=1e-6, atol=1e-6, err_msg=f)
    sse_atol = 2 * np.sqrt(np.sum(valid) * float(got["sse"])) * f32_atol(np.asarray(c.x)[valid])
    np.testing.assert_allclose(float(given["sse"]), float(got["sse"]), rtol=1e-6, atol=sse_atol, err_msg="sse")
    # a condition overrides the default; a method row too, and a short row takes the defaults after it
    assert run.defaults() == HP.row()
    other = jax.jit(lambda k: run(k, momentum=0.0))(key)
    plain = jax.jit(ClusterRun(**SMALL, hparams=dataclasses.replace(HP, momentum=0.0)))(key)
    assert int(other["steps"]) == int(plain["steps"])
    row = ClusterRun(**SMALL, hparams=HP, methods=((0.5, 0.0),))
    np.testing.assert_allclose(float(jax.jit(lambda k: row(k, method=0))(key)["sse"]), float(plain["sse"]), rtol=1e-6)


def test_both_forms_of_the_builtin_rule_take_hparams_and_other_rules_their_own():
    assert BUILTIN_RULES == (dynamics.BUILTIN, dynamics.BUILTIN_ORIGIN)
    origin = ClusterRun(hparams=HP, rule=dynamics.BUILTIN_ORIGIN)
    assert origin.knobs == dynamics.FIELDS and origin.defaults() == HP.row()
    own = ClusterRun(rule=refinement.REFINEMENT)
    assert own.knobs == refinement.REFINEMENT.knobs and own.defaults() == tuple(
        jax.tree_util.tree_leaves(refinement.Hparams())
    )
    with pytest.raises(
        ValueError,
        match=r"hparams sets \['temperature'\], knobs of the built-in rule; rule "
        r"'refinement' has the knobs",
    ):
        ClusterRun(rule=refinement.REFINEMENT, hparams=dynamics.Hparams(temperature=2.0))
    assert PACKAGE_RULES == {"refinement": refinement.REFINEMENT}


@pytest.mark.parametrize(
    "build, error, pattern",
    [
        (
            lambda: ClusterRun(temperature=0.5),
            TypeError,
            r"ClusterRun has no field 'temperature'.*write ClusterRun\(hparams=dynamics.Hparams\(temperature=0.5\)\)",
        ),
        (
            lambda: ClusterRun(momentum=0.5, langevin=0.1),
            TypeError,
            r"write ClusterRun\(hparams=dynamics.Hparams\(momentum=0.5, langevin=0.1\)\)",
        ),
        (lambda: dataclasses.replace(ClusterRun(), damping=0.5), TypeError, r"dynamics.Hparams\(damping=0.5\)"),
        (lambda: ClusterRun().temperature, AttributeError, r"run.hparams.temperature"),
        (lambda: ClusterRun().nothing, AttributeError, r"no attribute 'nothing'"),
        (lambda: ClusterRun(hparams=(1.0, 0.0)), TypeError, r"hparams must be a tokdyn.dynamics.Hparams"),
        (
            lambda: ClusterRun(hparams=dynamics.Hparams(temperature=jnp.float32(1.0))),
            TypeError,
            r"hparams.temperature must be a Python number.*run\(key, temperature=...\)",
        ),
        (lambda: ClusterRun(hparams=dynamics.Hparams(momentum=True)), TypeError, r"hparams.momentum"),
        (lambda: ClusterRun(hparams=dynamics.Hparams(momentum=1.0)), ValueError, r"momentum must be in \[0, 1\)"),
        (lambda: ClusterRun(hparams=dynamics.Hparams(temperature=-1.0)), ValueError, r"temperature must be in"),
        (lambda: TrackRun(predictor=0), TypeError, r"write TrackRun\(hparams=tracking.Hparams\(predictor=0\)\)"),
        (lambda: TrackRun(hparams=tracking.Hparams(decay=2.0)), ValueError, r"decay must be in \[0, 1\]"),
    ],
)
def test_bad_hparams_and_the_old_fields_are_refused_naming_the_way(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()


def test_hparams_are_static_hashable_and_normalised():
    a = ClusterRun(hparams=dynamics.Hparams(temperature=np.float32(0.5), momentum=np.float64(0.25)))
    b = ClusterRun(hparams=dynamics.Hparams(temperature=0.5, momentum=0.25))
    assert a == b and hash(a) == hash(b)  # one compilation for equal runs
    assert type(a.hparams.temperature) is float
    assert "hparams=Hparams(temperature=0.5" in repr(a)


@pytest.mark.full
def test_track_run_hparams_are_the_predictor_defaults():
    fn = TrackRun(n_frames=3, n_clusters=2, points_per_cluster=10, n_tokens=2, n_steps=10)
    key = jax.random.key(5)
    by_field = jax.jit(dataclasses.replace(fn, hparams=tracking.Hparams(predictor=tracking.REINIT, separation=0.5)))(
        key
    )
    by_condition = jax.jit(lambda k: fn(k, predictor=tracking.REINIT, separation=0.5))(key)
    default = jax.jit(fn)(key)
    carried = jax.jit(lambda k: fn(k, predictor=tracking.CARRY))(key)
    for f in ("ari", "steps", "identity"):
        np.testing.assert_allclose(np.asarray(by_field[f]), np.asarray(by_condition[f]), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(default[f]), np.asarray(carried[f]), rtol=1e-6, atol=1e-6)
    assert fn.hparams == tracking.Hparams() and fn.hparams.predictor == tracking.CARRY
