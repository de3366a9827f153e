"""A masked-out (padding) point never touches a run: an infinity or a NaN there gives the same
result as the valid points alone, in the XLA loop, the Pallas kernel (interpreted on the CPU),
the initial tokens, the soft assignment and the analysis of the data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import analysis, dynamics
from tokdyn.dynamics import pallas

N_VALID = 24


def _data():
    rng = np.random.default_rng(3)
    centres = np.array([[-3.0, 0.0], [3.0, 0.5], [0.0, 4.0]], np.float32)
    valid = (centres[np.arange(N_VALID) % 3] + 0.6 * rng.normal(size=(N_VALID, 2))).astype(np.float32)
    padded = np.concatenate([valid, np.array([[np.inf, -np.inf], [np.nan, 1.0], [2.0, 2.0]], np.float32)])
    mask = np.arange(padded.shape[0]) < N_VALID
    # traced values are never inspected: the padding reaches the kernels as a JAX array
    return valid, jnp.asarray(padded), jnp.asarray(mask)


@pytest.mark.parametrize("name", ["baseline", "inertia+repulsion"])
def test_non_finite_padding_leaves_run_unchanged(name):
    valid, padded, mask = _data()
    t0 = jnp.asarray(valid[:4])
    hp = dynamics.METHODS[name]
    ref = dynamics.run(valid, t0, hp, n_steps=200)  # the valid points alone, no mask
    got = dynamics.run(padded, t0, hp, mask=mask, n_steps=200)
    kernel = pallas.run(padded, t0, hp, mask=mask, n_steps=200, interpret=True)
    for out in (got, kernel):
        assert np.all(np.isfinite(np.asarray(out.tokens)))
        np.testing.assert_allclose(out.tokens, ref.tokens, rtol=1e-4, atol=1e-4)
        assert int(out.steps) == int(ref.steps)
        # two programs: labels compared where a point is not within rounding of a tie between tokens
        d = ((valid[:, None, :] - np.asarray(ref.tokens)[None]) ** 2).sum(-1)  # (N, T)
        two = np.sort(d, axis=1)[:, :2]
        sure = two[:, 1] - two[:, 0] > 1e-3 * (1.0 + two[:, 1])
        assert sure.mean() > 0.9
        np.testing.assert_array_equal(np.asarray(out.labels)[:N_VALID][sure], np.asarray(ref.labels)[sure])
        assert np.all(np.asarray(out.labels)[N_VALID:] == -1)


def test_non_finite_padding_in_helpers():
    valid, padded, mask = _data()
    t0 = jnp.asarray(valid[:4])
    np.testing.assert_allclose(
        np.asarray(dynamics.soft_assignment(padded, t0, 1.0, mask=mask))[:N_VALID],
        dynamics.soft_assignment(valid, t0, 1.0),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        dynamics.init_tokens(jax.random.key(0), 3, 2, method="data_mean", x=padded, mask=mask, scale=0.0),
        np.repeat(valid.astype(np.float64).mean(0, keepdims=True), 3, 0),
        rtol=1e-5,
        atol=1e-5,
    )
    cov, mean = analysis.covariance(padded, mask=mask)
    np.testing.assert_allclose(cov, np.cov(valid.T, bias=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, valid.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        analysis.free_energy(padded, t0, 1.0, mask=mask), analysis.free_energy(valid, t0, 1.0), rtol=1e-5
    )
