"""tokdyn.models.vtae.diagnostics against NumPy and scikit-learn references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
from sklearn.manifold import trustworthiness as sk_trustworthiness

from tokdyn.models.vtae import diagnostics as dg

# Each diagnostic called as one jitted program (eagerly, each of its operations is compiled on its own).
trustworthiness = jax.jit(
    lambda x, y, k: dg.trustworthiness(dg.euclidean_distances(x), dg.euclidean_distances(y), k), static_argnums=2
)
knn_preservation = jax.jit(dg.knn_preservation, static_argnums=2)
euclidean_distances = jax.jit(dg.euclidean_distances)
pairwise_hamming = jax.jit(dg.pairwise_hamming, static_argnums=1)
grid_uniqueness = jax.jit(dg.grid_uniqueness, static_argnums=1)
codebook_usage = jax.jit(dg.codebook_usage, static_argnums=1)
accuracy = jax.jit(dg.accuracy)
dominant_frequency = jax.jit(dg.dominant_frequency, static_argnums=1)
pattern_std = jax.jit(dg.pattern_std)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_trustworthiness_matches_sklearn(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(40, 6))
    y = x[:, :2] + 0.3 * rng.normal(size=(40, 2))
    ours = float(trustworthiness(jnp.asarray(x), jnp.asarray(y), k))
    assert ours == pytest.approx(sk_trustworthiness(x, y, n_neighbors=k), abs=1e-5)


def test_knn_preservation_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 2))
    k = 4
    dx, dy = scipy.spatial.distance.cdist(x, x), scipy.spatial.distance.cdist(y, y)
    np.fill_diagonal(dx, np.inf)
    np.fill_diagonal(dy, np.inf)
    ref = np.mean([len(set(np.argsort(dx[i])[:k]) & set(np.argsort(dy[i])[:k])) / k for i in range(30)])
    ours = float(knn_preservation(euclidean_distances(jnp.asarray(x)), euclidean_distances(jnp.asarray(y)), k))
    assert ours == pytest.approx(ref, abs=1e-6)
    assert float(knn_preservation(jnp.asarray(dx), jnp.asarray(dx), k)) == 1.0


def test_hamming_uniqueness_and_usage():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, size=(12, 6))
    codes[7] = codes[2]
    codes[9] = codes[2]
    h = np.asarray(pairwise_hamming(jnp.asarray(codes), 3))
    np.testing.assert_array_equal(h, (codes[:, None] != codes[None]).sum(-1))
    uniq, min_h = grid_uniqueness(jnp.asarray(codes), 3)
    assert float(uniq) == pytest.approx(len({tuple(c) for c in codes}) / 12)
    assert int(min_h) == 0
    codes[7, 0] = (codes[2, 0] + 1) % 3
    codes[9, 1] = (codes[2, 1] + 1) % 3
    ref = scipy.spatial.distance.pdist(codes, "hamming").min() * 6
    assert int(grid_uniqueness(jnp.asarray(codes), 3)[1]) == round(ref)
    w = rng.random(12)
    perp, usage = codebook_usage(jnp.asarray(codes), 4, jnp.asarray(w))
    counts = np.array([w[np.nonzero(codes == c)[0]].sum() for c in range(4)])
    assert float(perp) == pytest.approx(np.exp(scipy.stats.entropy(counts / counts.sum())), rel=1e-5)
    assert float(usage) == pytest.approx(np.mean(counts > 0))


def test_accuracy_dominance_and_pattern_std():
    pred = np.array([0, 0, 0, 3, 0, 5])
    ids = np.arange(6)
    w = np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert float(accuracy(jnp.asarray(pred), jnp.asarray(ids))) == pytest.approx(3 / 6)
    assert float(accuracy(jnp.asarray(pred), jnp.asarray(ids), jnp.asarray(w))) == pytest.approx(0.7)
    assert float(dominant_frequency(jnp.asarray(pred), 6)) == pytest.approx(4 / 6)
    assert float(dominant_frequency(jnp.asarray(pred), 6, jnp.asarray(w))) == pytest.approx(0.8)
    x = np.random.default_rng(2).normal(size=(6, 4, 2))
    assert float(pattern_std(jnp.asarray(x))) == pytest.approx(x.reshape(6, -1).std(0).mean(), rel=1e-5)
