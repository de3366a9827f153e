"""tokdyn.geometry: cosines, step similarity, participation ratio and top-PC share against NumPy
(explicit loops, SVD of the centred rows), closed forms, degenerate and extreme input, masks, vmap,
and argument errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn import geometry

SHAPES = [(5, 12), (12, 5), (8, 8)]  # N < D, N > D, N = D


def np_cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def np_spectrum(x, mask):
    rows = x[mask].astype(np.float64)
    lam = np.linalg.svd(rows - rows.mean(0), compute_uv=False) ** 2
    return lam.sum() ** 2 / (lam**2).sum(), lam[0] / lam.sum()


def random_mask(rng, n):
    mask = rng.random(n) < 0.7
    mask[:3] = True
    return mask


@pytest.mark.parametrize("shape", SHAPES)
def test_against_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape).astype(np.float32) + rng.normal(size=shape[1]).astype(np.float32)
    n = shape[0]
    np.testing.assert_allclose(
        geometry.cosine_matrix(x), [[np_cos(x[i], x[j]) for j in range(n)] for i in range(n)], atol=1e-6
    )
    for mask in (None, random_mask(rng, n)):
        m = np.ones(n, bool) if mask is None else mask
        idx = np.flatnonzero(m)
        pairs = [np_cos(x[i], x[j]) for i, j in itertools.permutations(idx, 2)]
        np.testing.assert_allclose(geometry.mean_pairwise_cosine(x, mask), np.mean(pairs), atol=1e-6)
        pr, share = np_spectrum(x, m)
        np.testing.assert_allclose(geometry.participation_ratio(x, mask), pr, rtol=1e-5)
        np.testing.assert_allclose(geometry.top_pc_share(x, mask), share, rtol=1e-5)
        assert 1.0 <= pr <= min(len(idx) - 1, shape[1]) + 1e-9


def test_step_similarity_against_a_loop():
    rng = np.random.default_rng(1)
    seq = rng.normal(size=(6, 4, 3)).astype(np.float32)
    seq[2, 1] = 0.0  # a zero vector: similarity 0 with its neighbours
    mask = np.array([True, False, True, True, False, True])
    for m in (None, mask):
        rows = np.arange(6) if m is None else np.flatnonzero(m)
        want = [np.mean([np_cos(seq[i, s], seq[i, s + 1]) for i in rows]) for s in range(3)]
        np.testing.assert_allclose(geometry.step_similarity(seq, m), want, atol=1e-6)


def test_closed_forms():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # orthonormal rows
    # rank 1: points on a line (off the origin) -> one direction of variance
    line = rng.normal(size=(9, 1)) * q[0] + q[1]
    np.testing.assert_allclose(geometry.participation_ratio(line), 1.0, rtol=1e-5)
    np.testing.assert_allclose(geometry.top_pc_share(line), 1.0, rtol=1e-5)
    # +-e_j along k orthonormal directions: k equal variances
    for k in (2, 3, 5):
        pts = np.concatenate([q[:k], -q[:k]]) * 2.0 + 7.0
        np.testing.assert_allclose(geometry.participation_ratio(pts), k, rtol=1e-5)
        np.testing.assert_allclose(geometry.top_pc_share(pts), 1.0 / k, rtol=1e-5)
    same = np.tile(rng.normal(size=(1, 6)), (5, 1))
    np.testing.assert_allclose(geometry.mean_pairwise_cosine(same), 1.0, rtol=1e-6)
    np.testing.assert_allclose(geometry.mean_pairwise_cosine(q * 3.0), 0.0, atol=1e-6)
    np.testing.assert_allclose(geometry.cosine_matrix(q * 3.0), np.eye(6), atol=1e-6)
    np.testing.assert_allclose(geometry.step_similarity(np.stack([same, same, -same], 1)), [1.0, -1.0], rtol=1e-6)


def test_degenerate_and_extreme_input_gives_no_nan():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    zeros = np.zeros((4, 3), np.float32)
    np.testing.assert_array_equal(geometry.cosine_matrix(zeros), np.zeros((4, 4)))
    assert float(geometry.mean_pairwise_cosine(zeros)) == 0.0
    with_zero = x.copy()
    with_zero[0] = 0.0
    c = geometry.cosine_matrix(with_zero)
    assert float(c[0, 0]) == 0.0 and np.all(np.asarray(c)[0] == 0.0)
    np.testing.assert_allclose(geometry.step_similarity(np.zeros((3, 4, 2))), np.zeros(3))
    # no variance: participation ratio and top-PC share are 0 (documented)
    for const in (np.full((4, 3), 0.1), np.tile(x[:1], (9, 1)), zeros, x[:1]):
        assert float(geometry.participation_ratio(const)) == 0.0
        assert float(geometry.top_pc_share(const)) == 0.0
    one_row = np.zeros(7, bool)
    one_row[3] = True
    assert float(geometry.participation_ratio(x, one_row)) == 0.0
    # scale invariance from 1e-30 to 1e30 (float32)
    for scale in (1e-30, 1e30):
        np.testing.assert_allclose(geometry.participation_ratio(x * scale), geometry.participation_ratio(x), rtol=1e-5)
        np.testing.assert_allclose(geometry.top_pc_share(x * scale), geometry.top_pc_share(x), rtol=1e-5)
        np.testing.assert_allclose(
            geometry.mean_pairwise_cosine(x * scale), geometry.mean_pairwise_cosine(x), atol=1e-6
        )
        assert np.all(np.isfinite(geometry.cosine_matrix(x * scale)))
    # excluded rows may hold NaN padding
    padded = np.concatenate([x, np.full((2, 5), np.nan, np.float32)])
    mask = np.arange(9) < 7
    for fn in (geometry.mean_pairwise_cosine, geometry.participation_ratio, geometry.top_pc_share):
        np.testing.assert_allclose(fn(padded, mask), fn(x), rtol=1e-5)
    # a traced mask with too few rows: the documented NaN for a mean over no pairs
    assert np.isnan(geometry.mean_pairwise_cosine(x, jnp.asarray(one_row)))


def test_summary_and_vmap_over_seeds_equal_a_loop():
    rng = np.random.default_rng(4)
    latents = rng.normal(size=(3, 10, 4, 6)).astype(np.float32)  # (seeds, N, S, D)
    latents[1] = latents[1, :, :1] + 0.01 * latents[1]  # a nearly collapsed run
    mask = np.ones(10, bool)
    mask[-2:] = False
    batched = jax.vmap(geometry.summary, in_axes=(0, None))(latents, mask)
    for r in range(3):
        one = geometry.summary(latents[r], mask)
        for name in ("inter_cosine", "step_similarity", "participation_ratio", "top_pc_share"):
            np.testing.assert_allclose(getattr(batched, name)[r], getattr(one, name), rtol=2e-5, atol=1e-6)
        s = 2
        step = latents[r, :, s]
        np.testing.assert_allclose(one.inter_cosine[s], geometry.mean_pairwise_cosine(step, mask), rtol=1e-6)
        np.testing.assert_allclose(one.participation_ratio[s], np_spectrum(step, mask)[0], rtol=1e-5)
        np.testing.assert_allclose(one.top_pc_share[s], np_spectrum(step, mask)[1], rtol=1e-5)
        np.testing.assert_allclose(one.step_similarity, geometry.step_similarity(latents[r], mask), rtol=1e-6)
    assert batched.participation_ratio.shape == (3, 4) and batched.step_similarity.shape == (3, 3)
    stack = latents[:, :, 0]
    np.testing.assert_allclose(
        jax.vmap(geometry.participation_ratio)(stack), [geometry.participation_ratio(s) for s in stack], rtol=1e-5
    )


def test_bad_input_is_refused_before_tracing():
    x = np.zeros((5, 3), np.float32)
    cases = [
        (lambda: geometry.cosine_matrix(np.zeros(3)), r"x must be a 2-D array \(N, D\), got shape \(3,\)"),
        (lambda: geometry.participation_ratio(np.zeros((2, 3, 4))), r"x must be a 2-D array"),
        (lambda: geometry.step_similarity(x), r"seq must be a 3-D array \(N, S, D\), got shape \(5, 3\)"),
        (lambda: geometry.summary(x), r"latents must be a 3-D array"),
        (lambda: geometry.top_pc_share(x, np.ones(4, bool)), r"mask must have shape \(5,\).*got \(4,\)"),
        (lambda: geometry.mean_pairwise_cosine(x, np.ones(5)), r"mask must be boolean, got dtype float64"),
        (lambda: geometry.mean_pairwise_cosine(x[:1]), r"x must have at least 2 row"),
        (lambda: geometry.mean_pairwise_cosine(x, np.eye(5, dtype=bool)[0]), r"mask must include at least 2 row"),
        (lambda: geometry.cosine_matrix(np.full((2, 2), np.nan)), r"x must be finite"),
        (lambda: geometry.cosine_matrix(x.astype(complex)), r"x must be a real-valued array"),
    ]
    with jax_compilations() as compiled:
        for call, match in cases:
            with pytest.raises((ValueError, TypeError), match=match):
                call()
    assert compiled == []
