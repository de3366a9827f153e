"""tokdyn.dynamics.pallas (formerly tokdyn.fused): the built-in rule's run as one kernel per run,
against tokdyn.dynamics.run.

On a CPU the kernel runs in the Pallas interpreter (the same kernel function that Triton compiles
on a GPU); on a GPU these tests run the compiled kernel. Interpreter programs compile slowly: each
test batches its runs into one vmapped call.
"""

import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import data, dynamics
from tokdyn.dynamics import hparams as hparams_module
from tokdyn.dynamics import pallas
from tokdyn.engine import runs, sweep

NAMES = tuple(dynamics.METHODS)


@pytest.fixture(scope="module")
def problem():
    c = data.gaussian_clusters(
        jax.random.key(0), 4, points_per_cluster=40, dim=3, noise=0.6, center_box=5.0, max_clusters=5
    )
    t0 = dynamics.forgy(c.x, c.init_noise, c.mask, 4)
    return c, t0


_PROGRAMS: dict = {}  # (run, mass anchor, drawing or not) -> its vmapped program, shared by the tests


def _program(run, mass_anchor, draws):
    """``run`` (dynamics.run or pallas.run) vmapped over a stacked ``hp``, the data, initial tokens,
    mask and key its arguments (tests with the same shapes share one compile)."""
    name = (run.__module__, mass_anchor, draws)
    if name not in _PROGRAMS:
        rule = dynamics.MASS_ANCHORS[mass_anchor]

        def one(x, t0, mask, key, h):
            return run(x, t0, h, rule=rule, mask=mask, n_steps=30, key=key if draws else None)

        _PROGRAMS[name] = jax.jit(jax.vmap(one, in_axes=(None, None, None, None, 0)))
    return _PROGRAMS[name]


def _both(c, t0, hp, *, key, mass_anchor="token"):
    """dynamics.run and pallas.run of every run of a stacked ``hp`` (one compile each)."""
    draws = key is not None
    key = key if draws else jax.random.key(0)  # not read
    args = (c.x, t0, c.mask, key, hp)
    return _program(dynamics.run, mass_anchor, draws)(*args), _program(pallas.run, mass_anchor, draws)(*args)


def _same_steps(ref, got):
    """Runs that took the same number of steps in both programs. The stop compares a movement with
    ``tol``, which two programs' roundings may put on either side: at most one run of a batch may
    stop a step apart, and only runs that stopped together are compared value by value."""
    same = np.asarray(got.steps) == np.asarray(ref.steps)
    assert (~same).sum() <= 1, (np.asarray(ref.steps), np.asarray(got.steps))
    return same


def _agree(ref, got, atol=1e-3):
    same = _same_steps(ref, got)
    np.testing.assert_array_equal(np.asarray(got.converged)[same], np.asarray(ref.converged)[same])
    np.testing.assert_allclose(np.asarray(got.tokens)[same], np.asarray(ref.tokens)[same], atol=atol, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(got.velocity)[same], np.asarray(ref.velocity)[same], atol=atol, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(got.state.tokens), np.asarray(got.tokens))
    # labels: the same nearest token, except where two final tokens (nearly) coincide
    t = np.asarray(ref.tokens)
    gap = np.linalg.norm(t[:, :, None] - t[:, None], axis=-1) + np.eye(t.shape[1]) * 1e9
    apart = (gap.min(axis=(1, 2)) > 1e-2) & same
    np.testing.assert_array_equal(np.asarray(got.labels)[apart], np.asarray(ref.labels)[apart])


def test_every_method_equals_dynamics_run(problem):
    c, t0 = problem
    hp = dynamics.Hparams.stack([dynamics.METHODS[n] for n in NAMES])
    ref, got = _both(c, t0, hp, key=jax.random.key(5))  # the Langevin method draws; the others ignore the key
    _agree(ref, got)
    assert np.asarray(ref.converged).sum() >= 5  # the comparison covers converged runs and stopped ones
    assert not np.asarray(ref.converged).all()


def test_published_mass_anchor_and_empty_token(problem):
    """A token far from every point owns no mass: token-anchored, it stays; origin-anchored, it
    jumps toward the coordinate origin. Both as dynamics.run's rules do."""
    c, t0 = problem
    far = t0.at[3].set(jnp.full((3,), 1e3))
    hp = dynamics.Hparams.stack([dynamics.METHODS["baseline"], dynamics.METHODS["inertia"]])
    for anchor in ("token", "origin"):
        ref, got = _both(c, far, hp, key=None, mass_anchor=anchor)
        _agree(ref, got, atol=1e-2)
    assert np.abs(np.asarray(got.tokens)[:, 3]).max() < 1e3  # the origin anchor moved the empty token


def test_extremes_tiny_temperature_and_out_of_range_knobs(problem):
    c, t0 = problem
    hp = dynamics.Hparams.stack(
        [
            dynamics.Hparams(temperature=1e-38),
            dynamics.Hparams(temperature=1e4),
            dynamics.Hparams(momentum=1.5),
            dynamics.Hparams(temperature=-1.0),
            dynamics.Hparams(sinkhorn_iters=1000.0),
        ]
    )  # traced: no host check
    ref, got = _both(c, t0, hp, key=None)
    tok = np.asarray(got.tokens)
    assert np.isfinite(tok[[0, 1, 4]]).all()
    assert np.isnan(tok[[2, 3]]).all() and (np.asarray(got.steps)[[2, 3]] == 30).all()
    assert (np.asarray(got.labels)[[2, 3]][:, np.asarray(c.mask)] == -1).all()
    ok = np.zeros(5, bool)
    ok[[0, 1, 4]] = True
    ok &= _same_steps(ref, got)
    np.testing.assert_allclose(tok[ok], np.asarray(ref.tokens)[ok], atol=1e-3, rtol=1e-4)


def test_masked_points_do_not_count_and_a_lone_token(problem):
    c, t0 = problem
    junk = jnp.where(c.mask[:, None], c.x, 1e6)  # padded rows hold far-away junk
    hp = dynamics.Hparams.stack([dynamics.METHODS["baseline"], dynamics.METHODS["sinkhorn"]])
    c2 = dataclasses.replace(c, x=junk)
    ref, got = _both(c2, t0, hp, key=None)
    _agree(ref, got)
    one = jax.vmap(lambda h: pallas.run(c.x, t0[:1], h, mask=c.mask))(hp)
    mean = np.asarray(c.x)[np.asarray(c.mask)].mean(0)
    np.testing.assert_allclose(np.asarray(one.tokens)[:, 0], np.broadcast_to(mean, (2, 3)), atol=1e-4)


@pytest.mark.full
def test_cluster_run_kernels_agree_through_a_sweep():
    table = tuple(dynamics.METHODS[m].row() for m in ("baseline", "inertia", "repulsion", "annealing"))
    grid = sweep.Grid(method=(0, 1, 2, 3), noise=(0.3, 0.9), seeds=3)
    out = {
        k: sweep.run(
            runs.ClusterRun(methods=table, kernel=k),
            grid,
            key=jax.random.key(1),
            common_random_numbers=True,
            progress=False,
        )
        for k in ("xla", "pallas")
    }
    same = np.mean(out["xla"]["steps"] == out["pallas"]["steps"])
    assert same >= 0.9, same  # a step count may differ where a run's last movement sits at the tolerance
    np.testing.assert_allclose(np.nanmean(out["pallas"]["ari"]), np.nanmean(out["xla"]["ari"]), atol=0.02)
    assert (runs.ClusterRun().backend == "pallas") == (jax.default_backend() == "gpu")
    assert runs.ClusterRun(kernel="fused").backend == "pallas"  # the former name
    assert runs.ClusterRun(kernel="pallas", rule=dynamics.BUILTIN_ORIGIN).backend == "pallas"


def test_preferred_backend():
    assert pallas.preferred("gpu") and not pallas.preferred("cpu") and not pallas.preferred("tpu")


def test_the_rule_knows_its_backends_and_the_old_module_is_an_alias():
    assert dynamics.BUILTIN.backend_names == ("xla", "pallas") == dynamics.BUILTIN_ORIGIN.backend_names
    assert dynamics.REFINEMENT.backend_names == ("xla",)
    assert dynamics.BUILTIN.backend("pallas").func is pallas.run
    assert dynamics.BUILTIN_ORIGIN.backend("pallas").keywords == {"rule": dynamics.BUILTIN_ORIGIN}
    assert dynamics.BUILTIN.backend("xla").func is dynamics.run
    with pytest.raises(ValueError, match="backend"):
        dynamics.REFINEMENT.backend("pallas")
    with pytest.warns(DeprecationWarning, match="tokdyn.dynamics.pallas"):
        spec = importlib.util.spec_from_file_location("fused_copy", pallas.__file__.replace("dynamics/pallas", "fused"))
        fused = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fused)
    assert fused.run is pallas.run and fused.preferred is pallas.preferred
    assert fused.MAX_TOKEN_COORDS == pallas.MAX_TOKEN_COORDS and fused.MAX_POINTS == pallas.MAX_POINTS


def test_a_knob_the_kernel_does_not_read_is_refused(problem, monkeypatch):
    """A copy of Hparams with one more knob: the kernel refuses it (naming it) rather than run
    without it, and importing the kernel's module with such a FIELDS fails."""
    c, t0 = problem

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass(frozen=True)
    class Knobs(dynamics.Hparams):
        friction: float = 0.0

    with pytest.raises(ValueError, match="friction"):
        pallas.knob_vector(Knobs(), 1e-3, 10.0)
    with pytest.raises(ValueError, match="friction"):
        pallas.run(c.x, t0, Knobs(), mask=c.mask)
    with pytest.raises(ValueError, match="friction"):
        pallas.check_fields(dynamics.FIELDS + ("friction",))
    assert pallas.check_fields(dynamics.FIELDS) == dynamics.FIELDS  # every knob of today's Hparams is read
    # the module itself refuses to load beside an Hparams with a knob it does not read
    monkeypatch.setattr(hparams_module, "FIELDS", dynamics.FIELDS + ("friction",))
    spec = importlib.util.spec_from_file_location("pallas_copy", pallas.__file__)
    with pytest.raises(ValueError, match="friction"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_derivatives_are_refused_before_anything_compiles(problem):
    """jax.grad / jacfwd through the kernel raise naming run_fixed while tracing: under make_jaxpr,
    which only traces, so nothing was compiled for it."""
    c, t0 = problem

    def loss(h):
        return pallas.run(c.x, t0, h, mask=c.mask, n_steps=5).tokens.sum()

    hp = dynamics.Hparams(temperature=jnp.float32(1.0))
    for transform in (jax.grad, jax.jacfwd):
        with pytest.raises(ValueError, match="run_fixed"):
            jax.make_jaxpr(transform(loss))(hp)
    with pytest.raises(ValueError, match="run_fixed"):
        jax.make_jaxpr(jax.grad(lambda x: pallas.run(x, t0, mask=c.mask, n_steps=5).tokens.sum()))(c.x)
    with pytest.raises(ValueError, match="run_fixed"):
        jax.grad(loss)(hp)  # called, too


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mass_anchor="middle"), "mass_anchor"),
        (dict(hparams=(1.0, 0.0)), "hparams"),
        (dict(hparams=dynamics.Hparams(langevin=1e-3)), "key"),
        (dict(hparams=dynamics.Hparams(momentum=1.0)), "momentum"),
        (dict(n_steps=2.5), "n_steps"),
        (dict(interpret="yes"), "interpret"),
    ],
)
def test_bad_arguments_refused_before_compile(problem, kwargs, match):
    c, t0 = problem
    with pytest.raises((ValueError, TypeError), match=match):
        pallas.run(c.x, t0, mask=c.mask, **kwargs)


def test_too_many_token_coordinates_refused():
    x = jnp.zeros((10, 64))
    with pytest.raises(ValueError, match="MAX_TOKEN_COORDS"):
        pallas.run(x, jnp.zeros((8, 64)))
    with pytest.raises(ValueError, match="kernel"):
        runs.ClusterRun(kernel="triton")
    lloyd = dynamics.Rule(lambda p, t, h: t, lambda t, p, h, s, k: t, hparams=(), name="still")
    with pytest.raises(ValueError, match="built-in rule only"):
        runs.ClusterRun(rule=lloyd, kernel="fused")
    with pytest.raises(ValueError, match="built-in rule only"):
        runs.ClusterRun(rule=lloyd, kernel="pallas")
    with pytest.raises(ValueError, match="built-in rule only"):
        pallas.run(x[:, :2], jnp.zeros((2, 2)), rule=lloyd)
