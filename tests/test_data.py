import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_floats
from tokdyn import data


def test_shapes_mask_and_labels():
    c = data.gaussian_clusters(jax.random.key(0), 3, points_per_cluster=7, dim=5, noise=0.5, max_clusters=5)
    assert c.x.shape == (35, 5) and c.labels.shape == (35,) and c.mask.shape == (35,)
    assert np.asarray(c.mask).sum() == 21
    assert np.all(np.asarray(c.labels)[~np.asarray(c.mask)] == -1)
    assert np.all(np.asarray(c.x)[~np.asarray(c.mask)] == 0)
    assert sorted(set(np.asarray(c.labels)[np.asarray(c.mask)].tolist())) == [0, 1, 2]


def test_clusters_do_not_depend_on_k_or_padding():
    key = jax.random.key(3)
    small = data.gaussian_clusters(key, 3, points_per_cluster=10, dim=4, noise=0.3)
    padded = data.gaussian_clusters(key, 3, points_per_cluster=10, dim=4, noise=0.3, max_clusters=6)
    big = data.gaussian_clusters(key, 5, points_per_cluster=10, dim=4, noise=0.3)
    assert_same_floats(np.asarray(small.x), np.asarray(padded.x)[:30])
    assert_same_floats(np.asarray(small.x), np.asarray(big.x)[:30])


def test_noise_and_centre_statistics():
    """Within-cluster deviations are N(0, noise^2); uniform centres have variance box^2 / 3."""
    c = data.gaussian_clusters(jax.random.key(1), 200, points_per_cluster=100, dim=8, noise=0.7, center_box=4.0)
    x = np.asarray(c.x, np.float64).reshape(200, 100, 8)
    dev = x - x.mean(1, keepdims=True)
    var = (dev**2).sum(1) / 99
    assert abs(var.mean() - 0.49) < 0.01  # 1600 variance estimates, each with sd ~0.07
    centres = x.mean(1)
    assert np.abs(centres).max() <= 4.0 + 0.5
    assert abs(centres.var() - 16 / 3) < 0.3
    normal = data.gaussian_clusters(
        jax.random.key(2), 2000, points_per_cluster=1, dim=4, noise=0.0, center_box=2.0, centers="normal"
    )
    assert abs(np.asarray(normal.x).std() - 2.0) < 0.05


def test_traced_k_and_noise_share_one_compilation():
    f = jax.jit(
        jax.vmap(lambda key, k, s: data.gaussian_clusters(key, k, points_per_cluster=4, dim=2, noise=s, max_clusters=5))
    )
    keys = jax.random.split(jax.random.key(0), 3)
    out = f(keys, jnp.array([3, 4, 5]), jnp.array([0.3, 0.6, 0.9]))
    assert np.asarray(out.mask).sum(1).tolist() == [12, 16, 20]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise=-0.1), "noise"),
        (dict(noise=float("nan")), "noise"),
        (dict(points_per_cluster=0), "points_per_cluster"),
        (dict(dim=0), "dim"),
        (dict(centers="grid"), "centers"),
        (dict(max_clusters=2), "n_clusters must be <= max_clusters"),
        (dict(n_clusters=0), "n_clusters"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(n_clusters=3, points_per_cluster=5, dim=2, noise=0.3)
    args.update(kwargs)
    n = args.pop("n_clusters")
    with pytest.raises(ValueError, match=match):
        data.gaussian_clusters(jax.random.key(0), n, **args)


def test_same_clusters_with_x64_enabled():
    """With 64-bit types enabled the generator still draws uint32 bits: the same float32 points, held
    in JAX's default float (float64 under x64)."""
    x32 = data.gaussian_clusters(jax.random.key(3), 3, points_per_cluster=20, dim=4)
    with jax.enable_x64(True):
        x64 = data.gaussian_clusters(jax.random.key(3), 3, points_per_cluster=20, dim=4)
    assert x64.x.dtype == np.float64 and x32.x.dtype == np.float32
    # two programs (traced with and without x64): the same points up to float32 rounding; the labels
    # are integers
    assert_same_floats(x64.x, x32.x)  # float32 rounding at the points' magnitude
    np.testing.assert_array_equal(np.asarray(x64.labels), np.asarray(x32.labels))


@pytest.mark.parametrize("centers", ["uniform", "normal"])
def test_draw_then_clusters_equals_gaussian_clusters(centers):
    key = jax.random.key(11)
    draw = data.cluster_draw(key, max_clusters=5, points_per_cluster=30, dim=3, centers=centers)
    assert draw.centers.shape == (5, 3) and draw.z.shape == (5, 30, 3) and draw.init_noise.shape == (150,)
    for k, noise, box in ((3, 0.3, 10.0), (5, 0.9, 2.0), (1, 0.0, 1.0)):
        a = data.clusters_from_draw(draw, k, noise=noise, center_box=box)
        b = data.gaussian_clusters(
            key, k, points_per_cluster=30, dim=3, noise=noise, center_box=box, centers=centers, max_clusters=5
        )
        # two programs, but integers, and init_noise is exact arithmetic on the same uint32 bits (a
        # bit cast to [1, 2) minus 1, times 1, plus 0: no rounding anywhere), so these stay exact
        for f in ("labels", "mask", "init_noise"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        # a multiply-add (centre + noise * z) fused or not: rounding at the magnitude of the centres
        # (their box, at most: the scale), not of the point, which may lie near 0
        assert_same_floats(a.x, b.x, operands=(box, draw.centers))


def test_clusters_from_draw_refuses_bad_input():
    draw = data.cluster_draw(jax.random.key(0), max_clusters=3, points_per_cluster=4, dim=2)
    with pytest.raises(ValueError, match="n_clusters must be <= the draw's 3"):
        data.clusters_from_draw(draw, 4)
    with pytest.raises(ValueError, match="noise"):
        data.clusters_from_draw(draw, 2, noise=-1.0)
    with pytest.raises(TypeError, match="ClusterDraw"):
        data.clusters_from_draw({"z": draw.z}, 2)
    with pytest.raises(ValueError, match="max_clusters"):
        data.cluster_draw(jax.random.key(0), max_clusters=0)
