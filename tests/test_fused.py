"""tokdyn.fused: the built-in rule's run as one kernel per run, against tokdyn.dynamics.run.

On a CPU the kernel runs in the Pallas interpreter (the same kernel function that Triton compiles
on a GPU); on a GPU these tests run the compiled kernel.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import data, dynamics, fused
from tokdyn.engine import runs, sweep

pytestmark = pytest.mark.fast_compile  # compile-bound (the Pallas interpreter's programs)

NAMES = tuple(dynamics.METHODS)


@pytest.fixture(scope="module")
def problem():
    c = data.gaussian_clusters(
        jax.random.key(0), 4, points_per_cluster=40, dim=3, noise=0.6, center_box=5.0, max_clusters=5
    )
    t0 = dynamics.forgy(c.x, c.init_noise, c.mask, 4)
    return c, t0


def _both(c, t0, hp, *, key, mass_anchor="token", n_steps=30):
    """dynamics.run and fused.run of every run of a stacked ``hp`` (one compile each)."""
    rule = dynamics.MASS_ANCHORS[mass_anchor]
    ref = jax.jit(jax.vmap(lambda h: dynamics.run(c.x, t0, h, rule=rule, mask=c.mask, n_steps=n_steps, key=key)))(hp)
    got = jax.jit(
        jax.vmap(lambda h: fused.run(c.x, t0, h, mask=c.mask, n_steps=n_steps, key=key, mass_anchor=mass_anchor))
    )(hp)
    return ref, got


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
    one = jax.vmap(lambda h: fused.run(c.x, t0[:1], h, mask=c.mask))(hp)
    mean = np.asarray(c.x)[np.asarray(c.mask)].mean(0)
    np.testing.assert_allclose(np.asarray(one.tokens)[:, 0], np.broadcast_to(mean, (2, 3)), atol=1e-4)


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
        for k in ("xla", "fused")
    }
    same = np.mean(out["xla"]["steps"] == out["fused"]["steps"])
    assert same >= 0.9, same  # a step count may differ where a run's last movement sits at the tolerance
    np.testing.assert_allclose(np.nanmean(out["fused"]["ari"]), np.nanmean(out["xla"]["ari"]), atol=0.02)
    assert not runs.ClusterRun().uses_fused or jax.default_backend() == "gpu"


def test_preferred_backend():
    assert fused.preferred("gpu") and not fused.preferred("cpu") and not fused.preferred("tpu")


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
        fused.run(c.x, t0, mask=c.mask, **kwargs)


def test_too_many_token_coordinates_refused():
    x = jnp.zeros((10, 64))
    with pytest.raises(ValueError, match="MAX_TOKEN_COORDS"):
        fused.run(x, jnp.zeros((8, 64)))
    with pytest.raises(ValueError, match="kernel"):
        runs.ClusterRun(kernel="triton")
    lloyd = dynamics.Rule(lambda p, t, h: t, lambda t, p, h, s, k: t, hparams=(), name="still")
    with pytest.raises(ValueError, match="built-in rule only"):
        runs.ClusterRun(rule=lloyd, kernel="fused")
