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
    assert set(dynamics.ADJOINTS.values()) == {dynamics.EarlyExit, dynamics.CheckpointAdjoint, dynamics.ImplicitAdjoint}
    assert dynamics.CheckpointAdjoint(max_steps=4) == dynamics.CheckpointAdjoint(max_steps=4)  # static: hashable
    assert hash(dynamics.EarlyExit()) == hash(dynamics.EarlyExit())
