"""Tests for tokdyn.metrics: ARI/NMI against sklearn on both code paths, masks, edge cases,
float64, jit/vmap, properties (hypothesis), validation errors, SSE and cluster usage.

Compile time dominates on CPU, so the random comparisons run as a few vmapped batches padded to
fixed lengths with masks (one compile per path and length), and the property tests pad every
example to one length.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tokdyn import metrics

K_MAX = 12  # labels in [0, 12) on the bounded path
BOUNDS = dict(n_true=K_MAX, n_pred=K_MAX)
PATHS = {"bounded": BOUNDS, "general": {}}
TOL32 = 1e-5
BATCH = 64  # every (BATCH, 1024) batch shares one compiled function per path


def sk_scores(t, p):
    return adjusted_rand_score(t, p), normalized_mutual_info_score(t, p)


def _both(t, p, m, **bounds):
    return metrics.ari(t, p, m, **bounds), metrics.nmi(t, p, m, **bounds)


# One compiled batch function per (path, masked); shapes are kept to a few fixed lengths.
_BATCHED = {
    (path, masked): jax.jit(
        jax.vmap(
            (lambda t, p, m, b=bounds: _both(t, p, m, **b))
            if masked
            else (lambda t, p, b=bounds: _both(t, p, None, **b))
        )
    )
    for path, bounds in PATHS.items()
    for masked in (False, True)
}


def random_labelings(rng, count, length, *, n_max=None, k_max=K_MAX):
    """``count`` labelings padded to ``length``: (t, p, mask, n) with garbage in the padding."""
    if n_max is None:
        n = np.full(count, length)
    else:  # log-uniform in [1, n_max], always including the smallest and largest
        n = np.clip(np.exp(rng.uniform(0, np.log(n_max + 1), count)).astype(int), 1, n_max)
        n[:3] = [1, 2, n_max]
    kt = rng.integers(1, k_max + 1, count)
    kp = rng.integers(1, k_max + 1, count)
    t = rng.integers(0, kt[:, None], (count, length))
    p = rng.integers(0, kp[:, None], (count, length))
    # Some labelings are correlated, so that scores are not all near 0.
    copy = rng.random(count) < 0.4
    noise = rng.random((count, length)) < 0.2
    p = np.where(copy[:, None] & ~noise, t % kp[:, None], p)
    mask = np.arange(length)[None, :] < n[:, None]
    garbage = rng.choice(np.array([-1, 999, -7, 12]), size=(count, length))
    t = np.where(mask, t, garbage).astype(np.int32)
    p = np.where(mask, p, garbage[:, ::-1]).astype(np.int32)
    return t, p, mask, n


def sklearn_batch(t, p, mask):
    """sklearn's (ari, nmi) for each row, on its valid entries: two (B,) float64 arrays."""
    rows = [sk_scores(t[i][mask[i]], p[i][mask[i]]) for i in range(t.shape[0])]
    return tuple(np.array(col) for col in zip(*rows))


@functools.lru_cache(maxsize=None)
def random_dataset(seed):
    """A (BATCH, 1024) masked batch and its sklearn scores, shared by the tests of both paths."""
    t, p, mask, _ = random_labelings(np.random.default_rng(seed), BATCH, 1024, n_max=1000)
    return t, p, mask, sklearn_batch(t, p, mask)


def assert_matches_sklearn(t, p, mask, got_ari, got_nmi, tol, want=None):
    want_ari, want_nmi = sklearn_batch(t, p, mask) if want is None else want
    n = mask.sum(axis=1)
    for name, got, ref in (("ari", got_ari, want_ari), ("nmi", got_nmi, want_nmi)):
        err = np.abs(np.asarray(got, np.float64) - ref)
        worst = int(np.argmax(err))
        assert err[worst] <= tol, (
            f"{name} row {worst} (n={n[worst]}): got {float(got[worst])!r}, sklearn {ref[worst]!r}"
        )


# ---------------------------------------------------------------------------------------------
# Against sklearn
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_masked_random_labelings_match_sklearn(path):
    for seed in range(3):  # 3 x 64 labelings, n log-uniform in [1, 1000], 1..12 classes per side
        t, p, mask, want = random_dataset(seed)
        got_ari, got_nmi = _BATCHED[path, True](t, p, mask)
        assert got_ari.dtype == jnp.float32 and got_nmi.dtype == jnp.float32
        assert_matches_sklearn(t, p, mask, got_ari, got_nmi, TOL32, want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("length", [1, 250])
def test_unmasked_random_labelings_match_sklearn(path, length):
    t, p, mask, _ = random_labelings(np.random.default_rng(length), 24, length)
    got_ari, got_nmi = _BATCHED[path, False](t, p)
    assert_matches_sklearn(t, p, mask, got_ari, got_nmi, TOL32)


def test_general_path_arbitrary_label_values():
    """Large and non-contiguous labels (0 and the int32 maximum included) on the general path."""
    rng = np.random.default_rng(10)
    t, p, mask, _ = random_labelings(rng, BATCH, 1024, n_max=1000)
    info = np.iinfo(np.int32)
    values = rng.choice(np.arange(0, info.max, 9_999_991, dtype=np.int64), size=K_MAX, replace=False)
    values[:3] = [0, 1, info.max]
    t_wild = np.where(mask, values[t % K_MAX], t).astype(np.int32)
    p_wild = np.where(mask, values[::-1][p % K_MAX], p).astype(np.int32)
    got_ari, got_nmi = _BATCHED["general", True](t_wild, p_wild, mask)
    assert_matches_sklearn(t_wild, p_wild, mask, got_ari, got_nmi, TOL32)


def test_two_paths_agree():
    t, p, mask, _ = random_dataset(0)
    bounded = _BATCHED["bounded", True](t, p, mask)
    general = _BATCHED["general", True](t, p, mask)
    np.testing.assert_allclose(bounded[0], general[0], atol=1e-6)
    np.testing.assert_allclose(bounded[1], general[1], atol=1e-6)


def near_degenerate_batch(count=BATCH, length=1024):
    """Labelings with both sides almost a single cluster (tiny entropies and MI), padded."""
    t = np.zeros((count, length), np.int32)
    p = np.zeros((count, length), np.int32)
    mask = np.zeros((count, length), bool)
    rng = np.random.default_rng(12)
    for i in range(count):
        n = (100, 1000)[i % 2]
        mask[i, :n] = True
        t[i, rng.choice(n, size=1 + i % 3, replace=False)] = 1
        p[i, rng.choice(n, size=1 + (i // 3) % 3, replace=False)] = 1 + i % 2
        if i % 5 == 0:
            p[i] = t[i]
    return t, p, mask


def test_float32_near_degenerate_is_still_close():
    """The documented weak spot: log1p of exact integer differences keeps it at float32 accuracy."""
    t, p, mask = near_degenerate_batch()
    for path in PATHS:
        got_ari, got_nmi = _BATCHED[path, True](t, p, mask)
        assert_matches_sklearn(t, p, mask, got_ari, got_nmi, 1e-6)


def test_float64_matches_sklearn_including_near_degenerate():
    t, p, mask, _ = random_labelings(np.random.default_rng(13), BATCH, 1024, n_max=1000)
    t_deg, p_deg, mask_deg = near_degenerate_batch()
    t, p, mask = (np.concatenate(pair)[::2] for pair in ((t, t_deg), (p, p_deg), (mask, mask_deg)))
    with jax.enable_x64(True):
        for bounds in PATHS.values():
            got_ari, got_nmi = jax.jit(jax.vmap(lambda a, b, m, bb=bounds: _both(a, b, m, **bb)))(t, p, mask)
            assert got_ari.dtype == jnp.float64 and got_nmi.dtype == jnp.float64
            assert_matches_sklearn(t, p, mask, got_ari, got_nmi, 1e-10)


# ---------------------------------------------------------------------------------------------
# Edge cases, single labelings padded to one length (one compile per path)
# ---------------------------------------------------------------------------------------------

PAD = 48
_single = {path: jax.jit(lambda t, p, m, b=bounds: _both(t, p, m, **b)) for path, bounds in PATHS.items()}


def _pad(labels, fill=-1):
    out = np.full(PAD, fill, np.int32)
    out[: len(labels)] = labels
    return out


def scores(t, p, path="bounded"):
    """(ari, nmi) as floats, through the jitted single-labeling function at length PAD."""
    mask = np.arange(PAD) < len(t)
    return tuple(float(x) for x in _single[path](_pad(t), _pad(p, fill=99), mask))


EDGE_CASES = {
    "one_cluster_true": ([0] * 6, [0, 0, 1, 1, 2, 2]),
    "one_cluster_pred": ([0, 1, 1, 2, 2, 2], [3] * 6),
    "both_single": ([1] * 5, [4] * 5),
    "all_singletons": ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0]),
    "singletons_vs_one": ([0, 1, 2, 3, 4], [0] * 5),
    "n1": ([3], [5]),
    "n2_same": ([0, 0], [1, 1]),
    "n2_split": ([0, 0], [0, 1]),
    "identical": ([0, 0, 1, 2, 2, 2, 1], [0, 0, 1, 2, 2, 2, 1]),
    "permuted": ([0, 0, 1, 2, 2, 2, 1], [2, 2, 0, 1, 1, 1, 0]),
    "independent": ([0, 0, 1, 1], [0, 1, 0, 1]),
    "sklearn_doc": ([0, 0, 1, 2], [0, 0, 1, 1]),
    "singletons_using_every_label": (list(range(K_MAX)), list(range(K_MAX))[::-1]),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_cases(case, path):
    t, p = EDGE_CASES[case]
    got = scores(t, p, path)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, sk_scores(t, p), atol=TOL32)


@pytest.mark.parametrize("path", PATHS)
def test_no_valid_points(path):
    # sklearn gives 1.0 for both on empty input, which would read as a perfect score: with no valid
    # point there is no partition to score, so both are NaN, masked or truly empty, -1 labels included
    empty = np.zeros(0, np.int32)
    assert sk_scores(empty, empty) == (1.0, 1.0)
    assert np.all(np.isnan(scores([], [], path)))
    assert np.isnan(float(metrics.ari(empty, empty, **PATHS[path])))
    assert np.isnan(float(metrics.nmi(empty, empty, **PATHS[path])))
    unlabelled, none = np.full(5, -1, np.int32), np.zeros(5, bool)
    assert np.isnan(float(metrics.ari(unlabelled, unlabelled, none, **PATHS[path])))
    assert np.isnan(float(metrics.nmi(unlabelled, unlabelled, none, **PATHS[path])))


def test_eager_calls_with_concrete_masked_inputs():
    """The public functions called directly (validation, then the kernels), -1 in the padding."""
    t = _pad([0, 1, 1, 2, 2, 0])
    p = _pad([1, 1, 0, 0, 2, 2])
    mask = np.arange(PAD) < 6
    want = sk_scores(t[:6], p[:6])
    for bounds in PATHS.values():
        assert abs(float(metrics.ari(t, p, mask, **bounds)) - want[0]) < TOL32
        assert abs(float(metrics.nmi(t, p, mask, **bounds)) - want[1]) < TOL32


# ---------------------------------------------------------------------------------------------
# jit and vmap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_vmap_equals_loop(path):
    rng = np.random.default_rng(4)
    t, p, mask, _ = random_labelings(rng, 8, PAD, n_max=PAD)
    batched = jax.jit(jax.vmap(_single[path]))(t, p, mask)
    for i in range(t.shape[0]):
        single = _single[path](t[i], p[i], mask[i])
        np.testing.assert_allclose(batched[0][i], single[0], atol=1e-6)
        np.testing.assert_allclose(batched[1][i], single[1], atol=1e-6)


def test_jit_general_path_with_traced_large_labels():
    t = [5, 5, 3, 3, 100, 100, 0]
    p = [7, 7, 7, 2, 2, 2, 2**31 - 1]
    np.testing.assert_allclose(scores(t, p, "general"), sk_scores(t, p), atol=TOL32)


@pytest.mark.parametrize("path", PATHS)
def test_blown_up_run_labels_score_nan_not_zero(path):
    """A labelling with -1 ("no label": what a run whose tokens became non-finite returns) inside
    the mask scores NaN on both paths, for ARI, NMI and FG-ARI (traced labels); masked out, -1 is
    ignored and the score is scikit-learn's."""
    t = jnp.asarray(_pad([0, 0, 1, 1, 2, 2]))
    mask = jnp.arange(PAD) < 6
    blown = jnp.full(PAD, -1, jnp.int32)
    one = blown.at[:6].set(jnp.asarray([0, 0, 1, 1, 2, 2])).at[3].set(-1)  # one bad point is enough
    bounds = PATHS[path]
    for p in (blown, one):
        assert np.isnan(float(metrics.ari(t, p, mask, **bounds)))
        assert np.isnan(float(metrics.nmi(t, p, mask, **bounds)))
    assert np.isnan(float(metrics.fg_ari(t + 1, one, **bounds)))
    ok = jnp.where(mask, t, -1)
    want = sk_scores(np.asarray(t)[:6], np.asarray(t)[:6])
    assert abs(float(metrics.ari(t, ok, mask, **bounds)) - want[0]) < TOL32


def test_blown_up_run_labels_on_host_name_the_label():
    """Host labels with -1 inside the mask are refused, naming the argument, value and index."""
    with pytest.raises(ValueError, match=r"labels_pred must hold labels >= 0 where mask is True, got -1 at index 2"):
        metrics.ari(np.array([0, 0, 1, 1]), np.array([0, 0, -1, 1]), np.ones(4, bool))
    with pytest.raises(ValueError, match=r"labels_true must hold labels >= 0, got -5 at index 0"):
        metrics.nmi([-5, 0], [0, 0])
    with pytest.raises(ValueError, match=r"labels_pred must hold labels >= 0 where mask is True, got -1"):
        metrics.fg_ari(np.array([0, 1, 1, 2]), np.array([-1, 0, -1, 1]))
    assert float(metrics.fg_ari(np.array([0, 1, 1, 2]), np.array([-1, 0, 0, 1]))) == 1.0  # background: any id


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis); every example is padded to PAD so nothing recompiles
# ---------------------------------------------------------------------------------------------

pairs = st.integers(1, PAD).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 7), min_size=n, max_size=n),
        st.lists(st.integers(0, 7), min_size=n, max_size=n),
    )
)


@settings(max_examples=40, deadline=None)
@given(pairs, st.permutations(range(8)), st.sampled_from(sorted(PATHS)))
def test_property_invariances(pair, perm, path):
    t, p = pair
    perm = np.asarray(perm)
    base = scores(t, p, path)
    np.testing.assert_allclose(scores(perm[t].tolist(), p, path), base, atol=1e-6)  # relabel true
    np.testing.assert_allclose(scores(t, perm[p].tolist(), path), base, atol=1e-6)  # relabel pred
    np.testing.assert_allclose(scores(p, t, path), base, atol=1e-6)  # symmetry
    ari, nmi = base
    assert -0.5 - 1e-6 <= ari <= 1.0 + 1e-6
    assert 0.0 <= nmi <= 1.0
    np.testing.assert_allclose(scores(t, t, path), (1.0, 1.0), atol=1e-6)  # identical -> 1


@settings(max_examples=25, deadline=None)
@given(pairs)
def test_property_matches_sklearn(pair):
    t, p = pair
    want = sk_scores(t, p)
    for path in PATHS:
        np.testing.assert_allclose(scores(t, p, path), want, atol=TOL32)


# ---------------------------------------------------------------------------------------------
# Validation errors
# ---------------------------------------------------------------------------------------------


def test_error_messages():
    a = np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"labels_true of length 3 and labels_pred of length 2"):
        metrics.ari(a, a[:2])
    with pytest.raises(ValueError, match=r"mask must be .* length .* \(3\), got shape \(2,\)"):
        metrics.nmi(a, a, np.ones(2, bool))
    with pytest.raises(TypeError, match=r"mask must have dtype bool, got float"):
        metrics.nmi(a, a, np.ones(3))
    with pytest.raises(TypeError, match=r"labels_pred must hold integer labels, got dtype float64"):
        metrics.ari(a, a.astype(float))
    with pytest.raises(ValueError, match=r"labels_true must hold labels in \[0, n_true\) = \[0, 2\), got 2 at index 1"):
        metrics.ari([0, 2], [0, 0], n_true=2, n_pred=2)
    with pytest.raises(ValueError, match=r"labels_pred must hold labels in \[0, n_pred\) = \[0, 3\), got -1"):
        metrics.contingency([0, 1], [0, -1], n_true=2, n_pred=3)
    with pytest.raises(ValueError, match=r"\[0, 3\) where mask is True, got 5 at index 2"):
        metrics.nmi([0, -1, 5], [0, 0, 0], np.array([True, False, True]), n_true=3, n_pred=1)
    with pytest.raises(ValueError, match=r"given together.*n_true=3 and n_pred=None"):
        metrics.ari(a, a, n_true=3)
    with pytest.raises(TypeError, match=r"n_pred must be a static Python int.*2.0"):
        metrics.nmi(a, a, n_true=3, n_pred=2.0)
    with pytest.raises(ValueError, match=r"n_true must be an int >= 1, got 0"):
        metrics.nmi(a, a, n_true=0, n_pred=2)
    with pytest.raises(ValueError, match=r"1-D array of integer labels, got shape \(1, 3\)"):
        metrics.ari(a[None], a[None])
    with pytest.raises(ValueError, match=r"labels_true holds 4294967296, outside the range"):
        metrics.ari(np.array([0, 2**32]), np.array([0, 1]))
    # Masked-out entries may hold anything, including -1 and out-of-range values.
    metrics.ari(_pad([0, -1, 99]), _pad([1, -1, 0]), np.arange(PAD) < 1, **BOUNDS)


def test_error_messages_other_functions():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"centers must have shape \(K, 2\)"):
        metrics.sse(x, [0, 0, 0], np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"labels must hold labels in \[0, K\) = \[0, 2\), got 2"):
        metrics.sse(x, [0, 2, 1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"labels must be a 1-D array of length N = 3"):
        metrics.sse(x, [0, 1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"x must be finite on valid rows"):
        metrics.sse(np.full((3, 2), np.nan), [0, 1, 1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"labels must hold labels in \[0, n_clusters\) = \[0, 3\), got 5"):
        metrics.cluster_sizes([0, 5], 3)
    with pytest.raises(TypeError, match=r"n_clusters must be a static Python int"):
        metrics.n_used([0, 1], jnp.array(3))
    with pytest.raises(ValueError, match=r"n_true_clusters must be >= 1, got 0"):
        metrics.collapsed([0, 1], 3, 0)
    with pytest.raises(TypeError, match=r"n_true and n_pred are required"):
        metrics.contingency([0], [0], n_true=None, n_pred=None)


# ---------------------------------------------------------------------------------------------
# contingency, SSE, cluster usage
# ---------------------------------------------------------------------------------------------


def test_contingency_matches_numpy():
    rng = np.random.default_rng(5)
    t = rng.integers(0, 4, 200)
    p = rng.integers(0, 3, 200)
    mask = rng.random(200) < 0.7
    want = np.zeros((4, 3), int)
    np.add.at(want, (t[mask], p[mask]), 1)
    got = metrics.contingency(t, p, mask, n_true=4, n_pred=3)
    assert got.shape == (4, 3) and jnp.issubdtype(got.dtype, jnp.integer)
    np.testing.assert_array_equal(got, want)


def test_sse_matches_numpy_and_ignores_masked_rows():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    centers = rng.normal(size=(4, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 100)
    mask = rng.random(100) < 0.8
    want = float(((x.astype(np.float64) - centers[labels]) ** 2)[mask].sum())
    np.testing.assert_allclose(float(metrics.sse(x, labels, centers, mask)), want, rtol=1e-5)
    x_pad = np.where(mask[:, None], x, np.nan)  # padding may hold NaN and labels -1
    labels_pad = np.where(mask, labels, -1)
    np.testing.assert_allclose(float(metrics.sse(x_pad, labels_pad, centers, mask)), want, rtol=1e-5)
    unmasked = float(((x.astype(np.float64) - centers[labels]) ** 2).sum())
    np.testing.assert_allclose(float(metrics.sse(x, labels, centers)), unmasked, rtol=1e-5)
    with jax.enable_x64(True):
        got = metrics.sse(x.astype(np.float64), labels, centers.astype(np.float64), mask)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), want, rtol=1e-12)


def test_cluster_usage():
    labels = np.array([0, 0, 2, 2, 2, -1, 4])
    mask = np.array([True, True, True, True, True, False, False])
    np.testing.assert_array_equal(metrics.cluster_sizes(labels, 5, mask), [2, 0, 3, 0, 0])
    np.testing.assert_array_equal(metrics.cluster_sizes(labels[:5], 3), [2, 0, 3])
    assert int(metrics.n_used(labels, 5, mask)) == 2
    assert int(metrics.n_used(labels, 5, np.zeros(7, bool))) == 0
    assert bool(metrics.collapsed(labels, 5, 3, mask))  # 2 used < min(3, 5)
    assert not bool(metrics.collapsed(labels, 5, 2, mask))  # 2 used, 2 needed
    assert not bool(metrics.collapsed([0, 1, 1, 0], 2, 4))  # 2 used, min(4 clusters, 2 tokens) needed


def test_collapsed_under_vmap_with_traced_cluster_counts():
    # Four conditions, padded to 6 points and 4 tokens; true cluster counts differ per condition.
    labels = np.array([[0, 1, 2, 3, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0], [2, 2, 3, 3, -1, -1]])
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    n_true = jnp.array([4, 2, 2, 3])
    got = jax.jit(jax.vmap(lambda lab, k, m: metrics.collapsed(lab, 4, k, m)))(labels, n_true, mask)
    np.testing.assert_array_equal(got, [False, False, True, True])
    used = jax.vmap(lambda lab, m: metrics.n_used(lab, 4, m))(labels, mask)
    np.testing.assert_array_equal(used, [4, 2, 1, 2])
