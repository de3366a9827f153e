"""``dynamics.run``'s ``adjoint=``, checked against closed forms on a rule whose run is known exactly:
every token is pulled a fraction ``rate`` of the way to the masked data mean ``m`` each step, so
after ``k`` steps ``t_k = m + (1 - rate)^k (t_0 - m)`` and the fixed point is ``m`` itself.

- ``CheckpointAdjoint`` (with and without rematerialisation, ``run_fixed``): reverse-mode
  derivatives of the unrolled steps in the knob, the initial tokens and the points; with a traced
  ``n_steps`` below its static bound, the steps past ``n_steps`` are frozen.
- ``ImplicitAdjoint`` (and ``implicit=True``): the derivatives of the fixed point ``m``.
- ``EarlyExit`` (the default): forward mode under ``vmap``; reverse mode refused with a message
  that names the two adjoints that allow it.
- Bad ``adjoint=`` values are refused before anything is traced.

The built-in rule's derivatives through each adjoint are checked against finite differences by the
transformation table (tests/test_transformations.py) and tests/test_gradients.py."""

from __future__ import annotations

import dataclasses
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn import dynamics


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Pull:
    rate: jax.Array | float = 0.5


def _step(tokens, points, hp, step, key):
    return tokens + hp.rate * (points.total / points.count - tokens)


PULL = dynamics.Rule(lambda points, tokens, hp: tokens, _step, hparams=Pull(), name="pull")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(7, 2)).astype(np.float32)
MASK = np.array([True] * 6 + [False])
T0 = RNG.normal(size=(3, 2)).astype(np.float32)
M = X[MASK].mean(0)  # (D,) the fixed point of every token
N = MASK.sum()


def _closed_form(rate, k):
    """sum(t_k) and its derivatives in rate, t_0 and x after k steps (a (N, D) x derivative, 0 on
    the padded point)."""
    c = (1.0 - rate) ** k
    loss = np.sum(M + c * (T0 - M))
    d_rate = np.sum(-k * (1.0 - rate) ** (k - 1) * (T0 - M))
    d_t0 = np.full(T0.shape, c)
    d_x = np.where(MASK[:, None], T0.shape[0] * (1.0 - c) / N, 0.0) * np.ones_like(X)
    return loss, d_rate, d_t0, d_x


def _loss(adjoint, n_steps, tol=0.0, **kw):
    def f(rate, t0, x):
        r = dynamics.run(x, t0, Pull(rate), rule=PULL, mask=MASK, n_steps=n_steps, tol=tol, adjoint=adjoint, **kw)
        return jnp.sum(r.tokens), r.steps

    return f


def _grads(f, rate=0.3):
    (loss, steps), g = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(jnp.float32(rate), T0, X)
    return float(loss), int(steps), *(np.asarray(v) for v in g)


@pytest.mark.parametrize("remat", [True, False])
def test_checkpoint_adjoint_is_the_derivative_of_the_unrolled_steps(remat):
    loss, steps, d_rate, d_t0, d_x = _grads(_loss(dynamics.CheckpointAdjoint(remat=remat), 5))
    want = _closed_form(0.3, 5)
    assert steps == 5
    np.testing.assert_allclose(loss, want[0], rtol=1e-5)
    np.testing.assert_allclose(d_rate, want[1], rtol=1e-4)
    np.testing.assert_allclose(d_t0, want[2], rtol=1e-5)
    np.testing.assert_allclose(d_x, want[3], rtol=1e-4, atol=1e-6)
    # run_fixed is this adjoint without rematerialisation
    fixed = jax.grad(
        lambda r: jnp.sum(dynamics.run_fixed(X, T0, Pull(r), rule=PULL, mask=MASK, n_steps=5, tol=0.0).tokens)
    )
    np.testing.assert_allclose(float(fixed(jnp.float32(0.3))), want[1], rtol=1e-4)


def test_checkpoint_adjoint_with_a_traced_n_steps_under_its_bound_freezes_the_steps_past_it():
    ck = dynamics.CheckpointAdjoint(max_steps=8)

    def one(k):
        return jax.value_and_grad(_loss(ck, k), has_aux=True)(jnp.float32(0.3), T0, X)

    (loss, steps), d_rate = jax.jit(jax.vmap(one))(jnp.asarray([1, 4, 8], jnp.int32))
    for i, k in enumerate((1, 4, 8)):
        want = _closed_form(0.3, k)
        assert int(steps[i]) == k
        np.testing.assert_allclose(float(loss[i]), want[0], rtol=1e-5, err_msg=f"k={k}")
        np.testing.assert_allclose(float(d_rate[i]), want[1], rtol=1e-4, err_msg=f"k={k}")


@pytest.mark.parametrize("spelling", ["adjoint", "implicit=True"])
def test_implicit_adjoint_is_the_derivative_of_the_fixed_point(spelling):
    kw = dict(adjoint=dynamics.ImplicitAdjoint()) if spelling == "adjoint" else dict(implicit=True)
    f = _loss(kw.pop("adjoint", dynamics.EarlyExit()), 200, tol=1e-6, **kw)
    loss, steps, d_rate, d_t0, d_x = _grads(f, rate=0.5)
    assert steps < 200  # converged
    np.testing.assert_allclose(loss, T0.shape[0] * M.sum(), rtol=1e-5)
    np.testing.assert_allclose(d_rate, 0.0, atol=1e-5)  # the fixed point m does not depend on the rate
    np.testing.assert_array_equal(d_t0, 0.0)  # nor on where the run started
    np.testing.assert_allclose(d_x, np.where(MASK[:, None], T0.shape[0] / N, 0.0) * np.ones_like(X), rtol=1e-4)


def test_early_exit_forward_mode_under_vmap_and_reverse_mode_names_the_adjoints():
    f = lambda rate, t0, x: _loss(dynamics.EarlyExit(), 5)(rate, t0, x)[0]  # noqa: E731
    fwd = jax.vmap(jax.jacfwd(f), in_axes=(0, None, None))(jnp.asarray([0.3, 0.6], jnp.float32), T0, X)
    np.testing.assert_allclose(np.asarray(fwd), [_closed_form(0.3, 5)[1], _closed_form(0.6, 5)[1]], rtol=1e-4)
    for transform in (jax.grad, lambda g: jax.jit(jax.grad(g)), lambda g: jax.grad(jax.jit(g))):
        with pytest.raises(ValueError, match=r"(?s)adjoint=dynamics\.CheckpointAdjoint\(\).*ImplicitAdjoint\(\)"):
            transform(f)(jnp.float32(0.3), T0, X)


def test_bad_adjoints_are_refused_before_anything_is_traced():
    cases = [
        (dict(adjoint=dynamics.CheckpointAdjoint), TypeError, r"instance: adjoint=dynamics\.CheckpointAdjoint\(\)"),
        (dict(adjoint="checkpoint"), TypeError, "adjoint must be one of"),
        (dict(adjoint=dynamics.Adjoint()), TypeError, "adjoint must be one of"),
        (dict(adjoint=dynamics.CheckpointAdjoint(), implicit=True), ValueError, "cannot be combined"),
        (dict(adjoint=dynamics.CheckpointAdjoint(max_steps=3), n_steps=5), ValueError, r"n_steps=5 exceeds"),
        (dict(adjoint=dynamics.CheckpointAdjoint(), n_steps=jnp.int32(5)), TypeError, r"max_steps=\.\.\."),
        (dict(adjoint=dynamics.CheckpointAdjoint(), n_steps=0), ValueError, "n_steps must be an int >= 1"),
        (dict(implicit=1), TypeError, "implicit must be a bool"),
    ]
    with jax_compilations() as compiled:
        for kw, error, match in cases:
            with pytest.raises(error, match=match):
                dynamics.run(X, T0, mask=MASK, **kw)
    assert compiled == []
    for bad in (0, 2.0, True):
        with pytest.raises(TypeError, match="max_steps"):
            dynamics.CheckpointAdjoint(max_steps=bad)
    with pytest.raises(TypeError, match="remat"):
        dynamics.CheckpointAdjoint(remat=1)
    for bad in (0, -1.0, float("nan"), "0.1", True):
        with pytest.raises(TypeError, match=r"ImplicitAdjoint\(rtol=\.\.\.\) must be a Python float > 0"):
            dynamics.ImplicitAdjoint(rtol=bad)
    assert set(dynamics.ADJOINTS.values()) == {dynamics.EarlyExit, dynamics.CheckpointAdjoint, dynamics.ImplicitAdjoint}
    assert dynamics.CheckpointAdjoint(max_steps=4) == dynamics.CheckpointAdjoint(max_steps=4)  # static: hashable
    assert hash(dynamics.EarlyExit()) == hash(dynamics.EarlyExit())


# ---------------------------------------------------------------------------------------------- where the implicit
# derivative is not the fixed point's, it is NaN


def test_an_unconverged_run_has_a_nan_implicit_derivative_counted_by_converged():
    """The implicit function theorem at a state that is no fixed point gives no derivative of the run
    (the fixed point's, 0 in the rate, is not the 3-step run's): NaN, in every input, for that run
    alone under ``vmap``; as many NaN as runs that did not converge. A map whose every state is a
    fixed point (rate 0: a singular system) has no derivative either: NaN."""

    def one(k):
        f = _loss(dynamics.ImplicitAdjoint(), k, tol=1e-6)
        (_, steps), g = jax.value_and_grad(f, argnums=(0, 2), has_aux=True)(jnp.float32(0.5), T0, X)
        return steps, g

    steps, (d_rate, d_x) = jax.jit(jax.vmap(one))(jnp.asarray([3, 200, 2], jnp.int32))
    converged = np.asarray(steps) < np.asarray([3, 200, 2])
    assert converged.tolist() == [False, True, False]
    assert np.isnan(d_rate[0]) and np.isnan(d_rate[2]) and np.isnan(np.asarray(d_x)[[0, 2]][:, MASK]).all()
    np.testing.assert_array_equal(np.asarray(d_x)[:, ~MASK], 0.0)  # a padded point has none to give
    assert int(np.isnan(np.asarray(d_rate)).sum()) == int((~converged).sum())
    np.testing.assert_allclose(d_rate[1], 0.0, atol=1e-5)  # converged: the fixed point's
    np.testing.assert_allclose(d_x[1], np.where(MASK[:, None], T0.shape[0] / N, 0.0) * np.ones_like(X), rtol=1e-4)
    # the 3-step run's own derivative in the rate, by central differences of the run, is the closed
    # form's and far from the fixed point's 0: a finite implicit value there would be a wrong one
    # a rate of 0: every state is a fixed point (I - df/ds = 0), none has a derivative: NaN although
    # the run converged at once
    (_, steps0), d0 = jax.value_and_grad(_loss(dynamics.ImplicitAdjoint(), 50, tol=1e-6), has_aux=True)(
        jnp.float32(0.0), T0, X
    )
    assert int(steps0) == 1 and np.isnan(float(d0))
    run3 = lambda r: float(jnp.sum(dynamics.run(X, T0, Pull(r), rule=PULL, mask=MASK, n_steps=3, tol=1e-6).tokens))  # noqa: E731
    fd = (run3(0.51) - run3(0.49)) / 0.02
    np.testing.assert_allclose(fd, _closed_form(0.5, 3)[1], rtol=1e-2)
    assert abs(fd) > 0.5


# four points whose covariance is diag(1/2, 1/8): two tokens at their mean split below temperature
# 2 * 1/2 = 1 (the softmax rule's critical temperature), where the merged fixed point is a bifurcation
SYMMETRIC = np.array([[1, 0], [-1, 0], [0, 0.5], [0, -0.5]])
APART = np.array([[0.3, 0.1], [-0.3, -0.1]])
COINCIDENT = np.array([[0.3, 0.1], [0.3, 0.1]])


@functools.partial(jax.jit, static_argnames=("adjoint",))
def _first_coordinate(x, t0, tau, tol, adjoint):
    """run's first token's first coordinate (float64, up to 200,000 steps), its derivative in the
    temperature and in the points, and whether the run converged."""

    def f(tau, x):
        r = dynamics.run.jitted(x, t0, dynamics.Hparams(temperature=tau), n_steps=200_000, tol=tol, adjoint=adjoint)
        return r.tokens[0, 0], r.converged

    (value, converged), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(tau, x)
    return value, converged, grads


def _at(t0, tau, tol, adjoint):
    """:func:`_first_coordinate` of the four symmetric points (float64) as host values."""
    x = jnp.asarray(SYMMETRIC, jnp.float64)
    v, c, (d_tau, d_x) = _first_coordinate(x, jnp.asarray(t0, jnp.float64), jnp.float64(tau), tol, adjoint)
    return float(v), bool(c), float(d_tau), np.asarray(d_x)


# float64 programs of the built-in rule's implicit derivative and its finite differences (about 6 s)
@pytest.mark.full
def test_where_the_derivative_does_not_exist_it_is_nan_and_where_it_does_it_is_the_finite_difference():
    """float64, the built-in rule at repulsion 0. Coincident tokens at the critical temperature: the
    linear system is singular (a bifurcation), no derivative: NaN. Coincident tokens away from it (2)
    have one (0 in the temperature: the tokens stay at the mean; 1/4 in each point), and tokens apart
    at 0.5 one that equals the central differences of the run."""
    with jax.enable_x64(True):
        _, converged, d_tau, d_x = _at(COINCIDENT, 1.0, 1e-8, dynamics.ImplicitAdjoint())
        assert converged and np.isnan(d_tau) and np.isnan(d_x).all()
        value, converged, d_tau, d_x = _at(COINCIDENT, 2.0, 1e-8, dynamics.ImplicitAdjoint())
        assert converged and abs(value) < 1e-15 and abs(d_tau) < 1e-12
        np.testing.assert_allclose(d_x[:, 0], 0.25)  # the mean's derivative: 1/4 a point
        value, converged, d_tau, d_x = _at(APART, 0.5, 1e-12, dynamics.ImplicitAdjoint())
        x = jnp.asarray(SYMMETRIC, jnp.float64)

        def run(tau=0.5, x=x):
            hp = dynamics.Hparams(temperature=tau)
            return float(dynamics.run(x, jnp.asarray(APART, jnp.float64), hp, n_steps=10_000, tol=1e-12).tokens[0, 0])

        h = 1e-5
        assert converged and abs(d_tau) > 0.01
        np.testing.assert_allclose(d_tau, (run(0.5 + h) - run(0.5 - h)) / (2 * h), rtol=1e-6)
        fd_x = (run(x=x.at[0, 0].add(h)) - run(x=x.at[0, 0].add(-h))) / (2 * h)
        np.testing.assert_allclose(d_x[0, 0], fd_x, rtol=1e-6)


# runs of thousands of steps at the critical temperature, two programs (about 10 s on 2 cores)
@pytest.mark.full
def test_a_slow_approach_to_a_bifurcation_gives_nan_not_a_value_that_moves_with_tol():
    """float64: tokens started apart at the critical temperature converge (by the step test) ever
    more slowly towards the merged bifurcation; the unguarded implicit value grows as tol shrinks
    (no derivative exists), ImplicitAdjoint() gives NaN at both tolerances."""
    with jax.enable_x64(True):
        unguarded = dynamics.ImplicitAdjoint(rtol=float("inf"))
        loose, tight = _at(APART, 1.0, 1e-5, unguarded), _at(APART, 1.0, 1e-6, unguarded)
        assert loose[1] and tight[1]  # both converged by the step test
        assert abs(tight[2]) > 1.5 * abs(loose[2]) > 5  # finite values that grow as tol shrinks
        for tol in (1e-5, 1e-6):
            _, converged, d_tau, d_x = _at(APART, 1.0, tol, dynamics.ImplicitAdjoint())
            assert converged and np.isnan(d_tau) and np.isnan(d_x).all()


DOCS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "concepts", "token-dynamics.md"
)
MARK = "<!-- tests/test_adjoint.py runs this block -->"


# the built-in rule's gradients by two adjoints and a float64 run: three programs (about 15 s on 2 cores)
@pytest.mark.full
def test_the_docs_implicit_gradient_example_runs_and_is_the_finite_difference(capsys):
    """The concepts page's example (float32, a tolerance float32 reaches): the run converges, its
    implicit derivative in the temperature equals the central differences of the float64 run, and the
    run stopped before converging has NaN; what it prints is what the page shows."""
    text = open(DOCS, encoding="utf-8").read()
    (block,) = re.findall(re.escape(MARK) + r"\n```python\n(.*?)```", text, re.S)
    names = {"__name__": "__example__"}
    exec(compile(block, DOCS, "exec"), names)  # noqa: S102
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [line.split("# prints: ")[1].strip() for line in block.splitlines() if "# prints: " in line]
    implicit, short = names["implicit"], names["short"]
    assert np.isnan(float(short.temperature)) and np.isfinite(float(implicit.temperature))
    with jax.enable_x64(True):
        x, t0 = (jnp.asarray(names[k], jnp.float64) for k in ("x", "t0"))

        def spread(tau):
            r = dynamics.run(x, t0, dynamics.Hparams(temperature=tau), n_steps=3000, tol=1e-13)
            return float(((r.tokens - x.mean(0)) ** 2).sum())

        fd = (spread(1.0 + 1e-5) - spread(1.0 - 1e-5)) / 2e-5
    np.testing.assert_allclose(float(implicit.temperature), fd, rtol=1e-2)
