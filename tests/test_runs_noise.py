"""``ClusterRun`` draws no Langevin noise when no value can make ``langevin`` positive (no
``langevin`` condition, 0 in its ``hparams`` and in every method row): the compiled run holds no
random-number generation at all, and its results equal those of the same runs made with the draws
(a ``langevin`` condition of 0), in a sweep on one device (a sequential map: XLA's form on a CPU) and
vmapped (the accelerator's form), and through the fused kernel; where ``langevin`` can be positive,
the noise is drawn as before."""

import re

import jax
import numpy as np
import pytest

from tokdyn import dynamics, refinement
from tokdyn.engine import sweep
from tokdyn.engine.runs import ClusterRun

SMALL = {"n_tokens": 3, "dim": 2, "points_per_cluster": 12, "max_clusters": 3, "n_clusters": 3}  # a token per cluster:
# no token boundary through a cluster, where rounding could move a point
NOISELESS = tuple(m for m in dynamics.METHODS if dynamics.METHODS[m].langevin == 0)
TABLE = tuple(dynamics.METHODS[m].row() for m in NOISELESS)
RNG = r"threefry|random_bits|rng_bit_generator|erf_inv"  # what a Gaussian draw lowers to


def test_a_run_is_deterministic_when_no_value_can_make_langevin_positive():
    assert len(NOISELESS) == len(dynamics.METHODS) - 1  # every method but "langevin"
    run = ClusterRun(methods=TABLE)
    assert run.deterministic() and run.deterministic(("temperature", "noise"))
    assert not run.deterministic(("langevin",))  # a condition may be anything
    assert not ClusterRun(methods=TABLE + (dynamics.METHODS["langevin"].row(),)).deterministic()
    assert not ClusterRun(hparams=dynamics.Hparams(langevin=0.01)).deterministic()
    assert ClusterRun(methods=((1.0, 0.5),)).deterministic()  # a short row: the default langevin, 0
    assert not ClusterRun(hparams=dynamics.Hparams(langevin=0.01), methods=((1.0, 0.5),)).deterministic()
    assert ClusterRun(rule=dynamics.BUILTIN_ORIGIN).deterministic()
    assert not ClusterRun(rule=refinement.REFINEMENT).deterministic()  # any other rule may use its key


def test_the_deterministic_run_compiles_no_random_draw():
    run = ClusterRun(**SMALL, methods=TABLE)
    key = jax.random.key(0)
    draw = run.draw(key)  # the data's randomness, made outside the run (as a sweep shares it)

    def text(**given):
        return jax.jit(lambda k, d, m: run(k, draw=d, method=m, **given)).lower(key, draw, 0).as_text()

    assert not re.search(RNG, text())
    assert re.search(RNG, text(langevin=0.0))  # a langevin condition: the draws are made


@pytest.mark.parametrize("batch_size", [pytest.param(1, marks=pytest.mark.full), None], ids=["sequential", "vmapped"])
def test_results_equal_with_and_without_the_draws(batch_size):
    run = ClusterRun(**SMALL, methods=TABLE)
    axes = {"method": np.arange(len(TABLE)), "noise": [0.3, 0.9]}
    kw = {"key": jax.random.key(11), "common_random_numbers": True, "progress": False, "batch_size": batch_size}
    skip = sweep.run(run, sweep.Grid(**axes, seeds=6), **kw)
    drawn = sweep.run(run, sweep.Grid(**axes, langevin=[0.0], seeds=6), **kw)
    assert len(skip) == len(drawn) == len(TABLE) * 2 * 6
    np.testing.assert_array_equal(skip["method"], drawn["method"])
    np.testing.assert_array_equal(skip["seed"], drawn["seed"])
    # two programs (with and without the kick's branch): equal up to float32 rounding, which can move a
    # run whose last movement sits at the tolerance by a step: at most one run apart
    same = np.asarray(skip["steps"]) == np.asarray(drawn["steps"])
    assert same.sum() >= len(same) - 1, same
    np.testing.assert_array_equal(np.asarray(skip["collapsed"])[same], np.asarray(drawn["collapsed"])[same])
    # a point on the boundary of two tokens (the clusters at noise 0.9 overlap) sits at a tie to float32
    # rounding, which the two programs may decide differently: at most one run's scores move, by one point
    moved = np.zeros(len(same), bool)
    for f in ("ari", "nmi", "sse"):
        a, b = np.asarray(skip[f]), np.asarray(drawn[f])
        moved |= same & ~np.isclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a[same], b[same], rtol=0.05, atol=0.02, err_msg=f)
    assert moved.sum() <= 1, np.flatnonzero(moved)
    np.testing.assert_array_equal(np.asarray(skip["converged"])[same], np.asarray(drawn["converged"])[same])


@pytest.mark.full
def test_the_fused_kernel_skips_the_draws_to_the_same_results():
    run = ClusterRun(**SMALL, methods=TABLE[:2], kernel="fused")
    grid = {"method": [0, 1], "seeds": 2}
    kw = {"key": jax.random.key(5), "common_random_numbers": True, "progress": False}
    skip = sweep.run(run, sweep.Grid(**grid), **kw)
    drawn = sweep.run(run, sweep.Grid(**grid, langevin=[0.0]), **kw)
    np.testing.assert_array_equal(skip["steps"], drawn["steps"])
    np.testing.assert_allclose(skip["sse"], drawn["sse"], rtol=1e-5)


@pytest.mark.full
def test_noise_is_still_drawn_where_langevin_can_be_positive():
    key = jax.random.key(2)
    hot = ClusterRun(**SMALL, hparams=dynamics.Hparams(langevin=0.05))
    given = jax.jit(lambda k: ClusterRun(**SMALL)(k, langevin=0.05))(key)
    default = jax.jit(hot)(key)
    cold = jax.jit(ClusterRun(**SMALL))(key)
    np.testing.assert_allclose(float(default["sse"]), float(given["sse"]), rtol=1e-5)  # the same draws
    assert abs(float(default["sse"]) - float(cold["sse"])) > 1e-4  # and they move the tokens
