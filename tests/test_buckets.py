"""Eager calls on host arrays: padded to a few lengths (``_checks.Buckets``), or, for ARI and NMI,
computed in NumPy (the ``host`` form). Every padded result and every NumPy result equals the
unpadded call (``fn.jitted``, the same kernel without the padding) and, where one exists,
scikit-learn; lengths in one bucket compile one program; the NumPy form compiles nothing; JAX
arrays and tracers are neither padded nor computed on the host.

Compile time dominates: each kernel is checked at one length that is not a bucket size (the
padded program and the unpadded one), with a mask where the kernel takes one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_floats, jax_compilations
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tokdyn import _checks, checks, dynamics, metrics, tracking

N = 37  # padded to 64


def _labels(seed, n=N, k=5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n), rng.integers(0, k + 2, n), rng.random(n) < 0.8


def test_bucket_sizes():
    sizes = [checks.bucket_size(n) for n in range(0, 5000)]
    assert sizes[:33] == [32] * 33
    assert all(s >= n for n, s in enumerate(sizes))
    assert all(s & (s - 1) == 0 for s in sizes)  # powers of two
    assert all(s < 2 * n for n, s in enumerate(sizes) if n > 32)  # padding at most doubles
    assert len({checks.bucket_size(n) for n in range(10, 10_001)}) == 10  # 32 ... 16,384
    big = _checks.BUCKET_LIMIT + 1
    assert checks.bucket_size(big) == big  # not padded past the limit


def test_pad_host_only():
    spec = checks.Buckets(points=("a", "b"), mask="mask")
    args = {"a": np.arange(5), "b": np.ones(5, np.int8), "mask": None}
    assert spec.pad(args) == 5
    assert args["a"].shape == args["b"].shape == args["mask"].shape == (32,)
    assert args["b"].dtype == np.int8 and args["mask"].dtype == np.bool_
    np.testing.assert_array_equal(args["mask"], np.arange(32) < 5)
    np.testing.assert_array_equal(args["a"][:5], np.arange(5))
    given = {"a": np.arange(5), "b": np.arange(5), "mask": np.array([1, 0, 1, 1, 0], bool)}
    spec.pad(given)
    np.testing.assert_array_equal(given["mask"], np.r_[[1, 0, 1, 1, 0], np.zeros(27)].astype(bool))
    on_device = {"a": jnp.arange(5), "b": np.arange(5), "mask": None}
    assert spec.pad(on_device) is None and on_device["a"].shape == (5,)  # a JAX array: left as it is
    clip = checks.Buckets(points=("ids",), flatten=True)
    image = {"ids": np.ones((4, 8), int)}
    assert clip.pad(image) is None  # 32 ids: already a bucket, nothing to pad
    image = {"ids": np.ones((3, 5), int)}
    assert clip.pad(image) == 15 and image["ids"].shape == (32,) and image["ids"][15:].sum() == 0


def _padded_kernel(fn, **arguments):
    """``fn``'s kernel on the arguments as its buckets pad them (the path of host calls that the
    NumPy form hands on): the padded program."""
    n = fn.buckets.pad(arguments)
    assert n is not None and n < next(np.shape(v)[-1] for v in arguments.values() if v is not None)
    return fn.jitted(**arguments)


@pytest.mark.parametrize("bounds", [{}, {"n_true": 5, "n_pred": 7}], ids=["sort", "table"])
def test_ari_nmi_host_and_padded_equal_unpadded_and_sklearn(bounds):
    t, p, m = _labels(0)
    for mask in (None, m):
        sel = slice(None) if mask is None else m
        want = adjusted_rand_score(t[sel], p[sel]), normalized_mutual_info_score(t[sel], p[sel])
        for fn, ref in zip((metrics.ari, metrics.nmi), want):
            host = fn(t, p, mask, **bounds)  # the NumPy form
            padded = _padded_kernel(fn, labels_true=t, labels_pred=p, mask=mask, **bounds)
            assert isinstance(host, jax.Array) and host.shape == () and host.dtype == padded.dtype
            np.testing.assert_allclose([host, padded], [ref, ref], atol=1e-5)
            if mask is not None:  # the unpadded kernel (one more compile): masked calls
                plain = fn.jitted(t, p, mask, **bounds)
                assert_same_floats(host, plain)
                assert_same_floats(padded, plain)


SPECIAL = {
    "one point": ([3], [1]),
    "two points split": ([0, 0], [1, 2]),
    "all singletons": (np.arange(7), np.arange(7)[::-1]),
    "one cluster both": (np.zeros(5, int), np.full(5, 9)),
    "one cluster true": (np.zeros(5, int), np.arange(5)),
    "one cluster pred": (np.arange(5), np.zeros(5, int)),
    "large ids": ([2**31 - 1, 5, 5, 0], [2, 2, 7, 7]),
    "independent": (np.repeat([0, 1], 4), np.tile([0, 1], 4)),
}


def test_host_form_special_cases_equal_sklearn():
    # (the kernel's special cases are checked against scikit-learn in test_metrics.py)
    for case, (t, p) in SPECIAL.items():
        t, p = np.asarray(t), np.asarray(p)
        want = adjusted_rand_score(t, p), normalized_mutual_info_score(t, p)
        got = float(metrics.ari(t, p)), float(metrics.nmi(t, p))
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=case)


def test_host_form_compiles_nothing_and_device_arrays_go_to_the_kernel():
    t, p, m = _labels(9, n=123)
    with jax_compilations() as events:
        for n in (11, 57, 123):
            metrics.ari(t[:n], p[:n], m[:n]), metrics.nmi(t[:n].tolist(), p[:n].tolist())
            metrics.fg_ari(t[:n].reshape(1, n), p[:n].reshape(1, n))
    assert events == []
    on_device = metrics.ari(jnp.asarray(t), jnp.asarray(p), jnp.asarray(m))  # the kernel, unpadded
    assert_same_floats(on_device, metrics.ari(t, p, m))
    with jax.enable_x64(True):
        assert metrics.ari(t, p).dtype == jnp.float64


def test_ari_nmi_no_valid_point_padded_as_unpadded():
    empty = np.zeros(0, int)
    for fn in (metrics.ari, metrics.nmi):
        np.testing.assert_array_equal(fn(empty, empty), fn.jitted(empty, empty))
        t, p, _ = _labels(1, n=5)
        none = np.zeros(5, bool)
        np.testing.assert_array_equal(fn(t, p, none), fn.jitted(t, p, none))


def test_lists_are_padded_too():
    assert float(metrics.ari([0, 0, 1, 1], [1, 1, 0, 0])) == 1.0


def test_contingency_and_cluster_usage_padded_equal_unpadded():
    t, p, m = _labels(2)
    for mask in (None, m):
        table = metrics.contingency(t, p, mask, n_true=5, n_pred=7)
        np.testing.assert_array_equal(table, metrics.contingency.jitted(t, p, mask, n_true=5, n_pred=7))
        sel = slice(None) if mask is None else m
        np.testing.assert_array_equal(table, np.histogram2d(t[sel], p[sel], bins=(range(6), range(8)))[0])
        sizes = metrics.cluster_sizes(p, 7, mask)
        np.testing.assert_array_equal(sizes, np.bincount(p[sel], minlength=7))
        assert int(metrics.n_used(p, 7, mask)) == len(np.unique(p[sel]))
        for n_true in (3, 8):
            assert bool(metrics.collapsed(p, 7, n_true, mask)) == bool(metrics.collapsed.jitted(p, 7, n_true, mask))


def test_sse_padded_equal_unpadded():
    rng = np.random.default_rng(3)
    x, centers = rng.normal(size=(N, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    labels, _, m = _labels(3)
    for mask in (None, m):
        sel = slice(None) if mask is None else m
        want = np.sum((x[sel].astype(np.float64) - centers[labels[sel]]) ** 2)
        got = metrics.sse(x, labels, centers, mask)
        assert_same_floats(got, metrics.sse.jitted(x, labels, centers, mask), operands=(want,))
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_fg_ari_host_and_padded_equal_unpadded_and_sklearn():
    rng = np.random.default_rng(4)
    masks, pred = rng.integers(0, 4, (5, 7)), rng.integers(0, 3, (5, 7))  # 35 pixels: padded to 64
    fg = masks > 0
    want = adjusted_rand_score(masks[fg], pred[fg])
    for bounds in ({}, {"n_true": 4, "n_pred": 3}):
        plain = metrics.fg_ari.jitted(masks, pred, **bounds)
        padded = _padded_kernel(metrics.fg_ari, masks_true=masks, labels_pred=pred, **bounds)
        for got in (metrics.fg_ari(masks, pred, **bounds), padded):
            assert_same_floats(got, plain)
            np.testing.assert_allclose(got, want, atol=1e-5)
    clip = np.stack([masks, masks[::-1]]), np.stack([pred, pred])  # (2, 5, 7): 70 pixels, padded to 128
    fg = clip[0] > 0
    plain = metrics.video_fg_ari.jitted(*clip)
    padded = _padded_kernel(metrics.video_fg_ari, masks_true=clip[0], labels_pred=clip[1])
    for got in (metrics.video_fg_ari(*clip), padded):
        assert_same_floats(got, plain)
        np.testing.assert_allclose(got, adjusted_rand_score(clip[0][fg], clip[1][fg]), atol=1e-5)
    no_object = np.zeros((3, 4), int)  # no foreground: the kernel's call (padded), as unpadded
    np.testing.assert_array_equal(metrics.fg_ari(no_object, no_object), metrics.fg_ari.jitted(no_object, no_object))


def test_lengths_in_one_bucket_compile_once():
    t, p, _ = _labels(5, n=40)
    metrics.contingency(t, p, n_true=5, n_pred=7)  # the bucket of 64 (compiled here or before)
    with jax_compilations() as events:
        for n in (33, 41, 50, 63, 64):
            t, p, _ = _labels(n, n=n)
            table = metrics.contingency(t, p, n_true=5, n_pred=7)
            np.testing.assert_array_equal(table, np.histogram2d(t, p, bins=(range(6), range(8)))[0])
    assert events == []


def test_traced_and_device_calls_are_not_padded():
    t, p, _ = _labels(6)
    shapes = []

    def spy(a, b):
        shapes.append(a.shape)
        return metrics.ari(a, b)

    assert_same_floats(jax.jit(spy)(t, p), metrics.ari(t, p))
    assert shapes == [(N,)]
    assert "37" in str(jax.make_jaxpr(lambda a, b: metrics.nmi(a, b))(t, p))


def _cluster_points(seed, n):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], np.float32)
    return (centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 2))).astype(np.float32)


@pytest.mark.parametrize(
    "form",
    ["run", pytest.param("run_fixed", marks=pytest.mark.full), pytest.param("trajectory", marks=pytest.mark.full)],
)  # the same padding (one Buckets) in front of three loops: run in the default tier, the others in the full one
def test_dynamics_padded_equal_unpadded(form):
    x = _cluster_points(7, N)
    tokens, hp = x[:3], dynamics.Hparams()
    m = np.arange(N) % 5 != 0
    fn = getattr(dynamics, form)
    kwargs = {} if form == "run" else {"n_steps": 12}
    padded, plain = fn(x, tokens, hp, mask=m, **kwargs), fn.jitted(x, tokens, hp, mask=m, **kwargs)
    assert padded.labels.shape == (N,)
    np.testing.assert_array_equal(padded.labels, plain.labels)
    assert int(padded.steps) == int(plain.steps)
    assert_same_floats(padded.tokens, plain.tokens, operands=(x,), ulps=64)
    if form == "run":  # host points inside a user's jit (traced tokens): the kernel as it is
        traced = jax.jit(lambda t: fn(x, t, hp, mask=m).labels)(tokens)
        np.testing.assert_array_equal(traced, plain.labels)
    other = _cluster_points(9, 50)  # another length of the bucket of 64, without a mask
    with jax_compilations() as events:
        labels = fn(other, other[:3], hp, **kwargs).labels
    assert events == [] and labels.shape == (50,) and labels.dtype == jnp.int32


def test_rules_of_ones_own_are_not_padded():
    seen = []
    rule = dynamics.Rule(init=lambda points, tokens, hp: tokens, step=lambda s, points, hp, i, key: s, hparams=())

    def init(points, tokens, hp):
        seen.append(points.x_t.shape)
        return tokens

    rule = dynamics.Rule(init=init, step=rule.step, hparams=())
    x = _cluster_points(8, 11)
    assert dynamics.run(x, x[:2], rule=rule).labels.shape == (11,)
    assert seen == [(2, 11)]


@pytest.mark.full  # a scan over frames of while loops: ~10 s to compile twice on 2 cores
def test_track_padded_equal_unpadded():
    rng = np.random.default_rng(10)
    frames = rng.normal(size=(3, N, 2)).astype(np.float32)
    frames[:, : N // 2] += 6.0
    mask = rng.random((3, N)) < 0.85
    key, args = jax.random.key(1), dict(n_tokens=2, init="kmeans++", n_steps=10)  # k-means++ draws from the points
    padded = tracking.track(key, frames, mask=mask, **args)
    plain = tracking.track.jitted(key, frames, tracking.Hparams(), dynamics.BUILTIN.hparams, mask=mask, **args)
    assert padded.labels.shape == (3, N)
    np.testing.assert_array_equal(padded.labels, plain.labels)
    np.testing.assert_array_equal(padded.steps, plain.steps)
    assert_same_floats(padded.tokens, plain.tokens, operands=(frames,), ulps=64)
