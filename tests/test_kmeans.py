"""The k-means baseline against scikit-learn (same initial centres, Lloyd's algorithm), with a mask
and under vmap; k-means++ seeding (valid, distinct points; the D^2 law by a chi-square test); bad
input errors before compilation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.cluster import KMeans

from conftest import jax_compilations
from tokdyn import dynamics

N, D, K = 1024, 5, 5  # the per-pixel features of one image


def _blobs(seed, spread, n=N):
    """(n, D) float32 points around K centres in [-5, 5]^D, isotropic noise of std ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5.0, 5.0, (K, D))
    return (centres[rng.integers(0, K, n)] + spread * rng.standard_normal((n, D))).astype(np.float32)


def _sklearn(x, t0, max_iter):
    return KMeans(
        n_clusters=len(t0), init=np.asarray(t0, np.float64), n_init=1, algorithm="lloyd", tol=0.0, max_iter=max_iter
    ).fit(np.asarray(x, np.float64))


def _assert_equal_to_sklearn(r, x, t0, max_iter, mask=None):
    valid = np.ones(len(x), bool) if mask is None else np.asarray(mask)
    ref = _sklearn(np.asarray(x)[valid], t0, max_iter)
    labels = np.asarray(r.labels)
    assert np.all(labels[~valid] == -1)
    # float32 XLA and float64 scikit-learn: two programs; a point within rounding of a tie between
    # two centres may go either way
    assert np.mean(labels[valid] == ref.labels_) >= 0.99
    assert np.bincount(ref.labels_, minlength=len(t0)).min() > 0  # no cluster emptied: same rule as ours
    np.testing.assert_allclose(np.asarray(r.tokens), ref.cluster_centers_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(r.inertia), ref.inertia_, rtol=1e-5)
    assert abs(int(r.steps) - ref.n_iter_) <= 1  # the same ties may cost or save one iteration
    if int(r.steps) < max_iter:
        assert bool(r.converged)


@pytest.mark.parametrize("spread", [0.3, 2.5], ids=["separated", "overlapping"])
def test_matches_sklearn(spread):
    """Same kmeans++ centres in, same labels, centres, inertia and iteration count out; also when
    stopped early by ``n_steps`` (both recompute the labels at the last centres)."""
    for seed in range(3):
        x = _blobs(seed, spread)
        t0 = dynamics.init_tokens(jax.random.key(seed), K, D, method="kmeans++", x=x)
        r = dynamics.kmeans(x, t0, n_steps=300)
        assert bool(r.converged) and int(r.steps) < 300
        _assert_equal_to_sklearn(r, x, t0, 300)
        if spread > 1.0:  # an overlapping run takes several iterations: stop it after two
            assert int(r.steps) > 3
            _assert_equal_to_sklearn(dynamics.kmeans(x, t0, n_steps=2), x, t0, 2)


def test_mask_ignores_padded_rows():
    """Padded rows (here NaN and huge values in a JAX array, which skips the host check) never
    enter the result: equal to scikit-learn on the valid rows only."""
    x = _blobs(7, 2.0)
    mask = np.arange(N) < 900
    x_pad = jnp.asarray(x).at[900:950].set(jnp.nan).at[950:].set(1e30)
    t0 = dynamics.init_tokens(jax.random.key(7), K, D, method="kmeans++", x=x_pad, mask=mask)
    assert np.all(np.isfinite(np.asarray(t0)))
    r = dynamics.kmeans(x_pad, t0, mask)
    _assert_equal_to_sklearn(r, x, t0, 100, mask)


def test_vmap_matches_sklearn_per_problem():
    """Problems of different sizes (masks) and iteration counts in one vmapped call."""
    xs = np.stack([_blobs(10 + b, (0.5, 1.5, 2.5, 3.0)[b]) for b in range(4)])
    masks = np.arange(N)[None, :] < np.array([1024, 700, 512, 1000])[:, None]
    keys = jax.random.split(jax.random.key(3), 4)
    t0 = jax.vmap(lambda k, x, m: dynamics.init_tokens(k, K, D, method="kmeans++", x=x, mask=m))(keys, xs, masks)
    r = jax.vmap(lambda x, t, m: dynamics.kmeans(x, t, m, n_steps=200))(xs, t0, masks)
    assert len(set(np.asarray(r.steps).tolist())) > 1  # the batch members stop at different steps
    for b in range(4):
        _assert_equal_to_sklearn(jax.tree_util.tree_map(lambda a: a[b], r), xs[b], t0[b], 200, masks[b])


def test_n_steps_and_tol_are_traced():
    x = _blobs(1, 2.5)
    t0 = dynamics.init_tokens(jax.random.key(1), K, D, method="kmeans++", x=x)
    full = dynamics.kmeans(x, t0, n_steps=100)
    with jax_compilations() as compiled:
        short = dynamics.kmeans(x, t0, n_steps=1, tol=1e-3)
        loose = dynamics.kmeans(x, t0, n_steps=100, tol=1e9)
    assert compiled == []
    assert int(short.steps) == 1 and not bool(short.converged)
    assert int(loose.steps) == 1 and bool(loose.converged)  # any shift is within tol
    assert int(full.steps) > 1 and float(full.inertia) <= float(loose.inertia)


def test_empty_cluster_keeps_its_centre():
    """A centre that never gets a point stays where it is (scikit-learn would relocate it)."""
    x = np.array([[0.0, 0.0], [0.0, 1.0], [4.0, 0.0], [4.0, 1.0]], np.float32)
    t0 = np.array([[0.0, 0.5], [4.0, 0.5], [100.0, 100.0]], np.float32)
    r = dynamics.kmeans(x, t0)
    np.testing.assert_array_equal(np.asarray(r.tokens), [[0.0, 0.5], [4.0, 0.5], [100.0, 100.0]])
    assert np.asarray(r.labels).tolist() == [0, 0, 1, 1]
    assert float(r.inertia) == 1.0 and int(r.steps) == 1 and bool(r.converged)


def _rows(tokens, x):
    """Index of the row of ``x`` equal to each token (the first such row)."""
    eq = np.all(np.asarray(tokens)[..., None, :] == np.asarray(x), axis=-1)  # (..., K, N)
    assert np.all(eq.any(-1)), "a token is not a point of x"
    return eq.argmax(-1)


def test_kmeans_plus_plus_draws_distinct_valid_points():
    x = _blobs(5, 1.0, n=64)
    mask = np.random.default_rng(5).random(64) < 0.5
    keys = jax.random.split(jax.random.key(0), 200)
    t = jax.vmap(lambda k: dynamics.init_tokens(k, K, D, method="kmeans++", x=x, mask=mask))(keys)
    idx = _rows(t, x)  # (200, K); the rows of x are distinct
    assert mask[idx].all()
    assert all(len(set(row)) == K for row in idx.tolist())
    # copies of drawn points have no D^2 weight: 3 distinct values among 5 valid rows give all three
    dup = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [5.0, 5.0], [1.0, 0.0], [9.0, 9.0]], np.float32)
    dmask = np.array([True, True, True, True, True, False])
    for k in range(20):
        t3 = np.asarray(dynamics.init_tokens(jax.random.key(k), 3, 2, method="kmeans++", x=dup, mask=dmask))
        assert sorted(map(tuple, t3.tolist())) == [(0.0, 0.0), (1.0, 0.0), (5.0, 5.0)]
        # once the distinct values are used up, the remaining valid rows (copies), never the padded one
        t5 = np.asarray(dynamics.init_tokens(jax.random.key(k), 5, 2, method="kmeans++", x=dup, mask=dmask))
        assert sorted(map(tuple, t5.tolist())) == sorted(map(tuple, dup[dmask].tolist()))


def test_kmeans_plus_plus_follows_the_d2_law():
    """20k vmapped draws of three tokens from four valid points (and a padded one): the frequencies
    of the ordered triples match k-means++'s law (uniform first; then D^2 to the nearest drawn)."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.5, 0.5]], np.float32)
    mask = np.array([True, True, True, True, False])
    n_draws = 20_000
    keys = jax.random.split(jax.random.key(42), n_draws)
    t = jax.vmap(lambda k: dynamics.init_tokens(k, 3, 2, method="kmeans++", x=x, mask=mask))(keys)
    idx = _rows(t, x)  # (n_draws, 3)
    assert mask[idx].all()
    d2 = ((x[:4, None].astype(np.float64) - x[None, :4]) ** 2).sum(-1)
    cells = list(itertools.permutations(range(4), 3))
    prob = []
    for i, j, k in cells:
        near = np.minimum(d2[i], d2[j])
        prob.append(0.25 * d2[i, j] / d2[i].sum() * near[k] / near.sum())
    prob = np.array(prob)
    assert np.isclose(prob.sum(), 1.0)
    code = {c: n for n, c in enumerate(cells)}
    observed = np.bincount([code[tuple(row)] for row in idx.tolist()], minlength=len(cells))
    assert observed.sum() == n_draws  # every draw is an ordered triple of distinct valid points
    assert stats.chisquare(observed, n_draws * prob).pvalue > 1e-3
    # the second token alone, as a frequency comparison: P(j) = sum_i (1/4) d2_ij / sum_k d2_ik
    second = np.bincount(idx[:, 1], minlength=4) / n_draws
    np.testing.assert_allclose(second, (0.25 * d2 / d2.sum(1, keepdims=True)).sum(0), atol=0.01)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tokens=np.zeros((K, D + 1), np.float32)), ValueError, "same dimension"),
        (dict(tokens=np.zeros((0, D), np.float32)), ValueError, "at least one token"),
        (dict(tokens=np.zeros(D, np.float32)), ValueError, "tokens must have 2 dimensions"),
        (dict(x=np.full((8, D), np.nan, np.float32)), ValueError, "x must be finite"),
        (dict(mask=np.ones(7, bool)), ValueError, "mask must have shape"),
        (dict(mask=np.ones(8, np.int32)), TypeError, "mask must be boolean"),
        (dict(n_steps=0), ValueError, "n_steps"),
        (dict(n_steps=2.5), TypeError, "n_steps"),
        (dict(tol=-1.0), ValueError, "tol"),
    ],
)
def test_kmeans_bad_input_raises_before_compiling(kwargs, error, match):
    args = dict(x=np.zeros((8, D), np.float32), tokens=np.zeros((K, D), np.float32), mask=None, n_steps=5, tol=0.0)
    args.update(kwargs)
    with jax_compilations() as compiled, pytest.raises(error, match=match):
        dynamics.kmeans(args.pop("x"), args.pop("tokens"), args.pop("mask"), **args)
    assert compiled == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "needs the data"),
        (dict(x=np.zeros((4, 2), np.float32)), "n_tokens=5 exceeds the number of valid points \\(4\\)"),
        (dict(x=np.zeros((8, 2), np.float32), mask=np.arange(8) < 3), "n_tokens=5 exceeds .* \\(3\\)"),
        (dict(x=np.zeros((8, 3), np.float32)), "x must have dimension dim=2"),
    ],
)
def test_kmeans_plus_plus_bad_input_raises_before_compiling(kwargs, match):
    with jax_compilations() as compiled, pytest.raises(ValueError, match=match):
        dynamics.init_tokens(jax.random.key(0), 5, 2, method="kmeans++", **kwargs)
    assert compiled == []
