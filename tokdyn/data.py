"""Synthetic datasets with known structure.

Every generator is a pure function of an explicit PRNG key, jitted and vmappable, callable inside
a user's own ``jit``/``vmap``. Shapes are static; anything a sweep may vary (noise, the number of
clusters when ``max_clusters`` is given) may be traced, so conditions that differ only in those
run in one compiled vmap.

- :func:`gaussian_clusters`: isotropic Gaussian clusters (the ``make_blobs`` family), padded to a
  fixed shape with a mask.
- :func:`point_cloud`: the named point clouds of the collapse study (:data:`SHAPES`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

CENTER_LAYOUTS = ("uniform", "normal")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Clusters:
    """A labelled point cloud.

    Attributes:
      x: (N, D) points. Padded rows (``mask == False``) are zeros.
      labels: (N,) int32 true cluster of each point, ``-1`` on padded rows.
      mask: (N,) bool, True on valid points.
      init_noise: (N,) uniform [0, 1) noise per point, drawn from the same random bits as the
        points: ``dynamics.forgy(x, init_noise, mask, T)`` starts T tokens at distinct random
        points without another random draw.
    """

    x: jax.Array
    labels: jax.Array
    mask: jax.Array
    init_noise: jax.Array


def _check_clusters(key, n_clusters, points_per_cluster, dim, noise, center_box, centers, max_clusters):
    _checks.prng_key("key", key)
    _checks.positive_int("points_per_cluster", points_per_cluster)
    _checks.positive_int("dim", dim)
    _checks.choice("centers", centers, CENTER_LAYOUTS)
    _checks.real("noise", noise, low=0.0)
    _checks.real("center_box", center_box, low=0.0)
    if max_clusters is None:
        if not _checks.on_host(n_clusters):
            raise ValueError("n_clusters is a JAX array but max_clusters is None: pass max_clusters (a static int) "
                             "so the output shape does not depend on n_clusters")
        return dict(max_clusters=_checks.positive_int("n_clusters", _as_int(n_clusters)))
    m = _checks.positive_int("max_clusters", max_clusters)
    if _checks.on_host(n_clusters):
        k = _checks.positive_int("n_clusters", _as_int(n_clusters))
        if k > m:
            raise ValueError(f"n_clusters must be <= max_clusters={m}, got {k}")
    return None


def _as_int(value):
    """A whole-number host scalar as an int (so np.int64(3) and 3.0 pass); anything else unchanged."""
    try:
        if np.ndim(value) == 0 and not isinstance(value, bool) and float(value) == int(value):
            return int(value)
    except (TypeError, ValueError):
        pass
    return value


@_checks.checked_jit(_check_clusters, static_argnames=("points_per_cluster", "dim", "centers", "max_clusters"))
def gaussian_clusters(
    key: jax.Array,
    n_clusters,
    *,
    points_per_cluster: int = 50,
    dim: int = 16,
    noise=0.3,
    center_box=10.0,
    centers: str = "uniform",
    max_clusters: int | None = None,
) -> Clusters:
    """Isotropic Gaussian clusters with known labels (the ``make_blobs`` family).

    Cluster ``k`` has centre ``c_k`` and points ``c_k + noise * z`` with ``z ~ N(0, I_D)``.
    Centres are drawn uniformly from ``[-center_box, center_box]^D`` (``centers="uniform"``,
    as scikit-learn's ``make_blobs``) or as ``center_box * N(0, I_D)`` (``centers="normal"``).

    Cluster ``k`` depends only on the key and k (for given P and D), so the first ``K`` clusters
    are the same whatever ``n_clusters`` or ``max_clusters`` is: a dataset with K=3 is the K=5
    dataset with two clusters removed (common random numbers across conditions). This relies on
    JAX's default ``jax_threefry_partitionable=True``.

    All randomness comes from one ``random.bits`` call of shape (M, P + 1, D + 1): rows ``:P`` are
    the points' noise, row ``P`` the centre, column ``D`` of rows ``:P`` the per-point
    ``init_noise``. One call keeps compile time low.

    Args:
      key: PRNG key.
      n_clusters: number of clusters K. A static int, or, when ``max_clusters`` is given, an int
        that may be traced (1 <= K <= max_clusters).
      points_per_cluster: points per cluster P (static).
      dim: dimension D (static).
      noise: standard deviation of every cluster (may be traced).
      center_box: half-width (uniform) or scale (normal) of the centre distribution (may be traced).
      centers: ``"uniform"`` or ``"normal"`` (static).
      max_clusters: if given, the output always has ``max_clusters * P`` rows and clusters
        ``k >= n_clusters`` are masked out, so different K share one shape (static).

    Returns:
      ``Clusters`` with N = P * (max_clusters or n_clusters) rows, ordered by cluster.
    """
    M, P, D = max_clusters, points_per_cluster, dim
    bits = jax.random.bits(key, (M, P + 1, D + 1), jnp.uint32)  # (M, P+1, D+1); uint32 under x64 too
    lo = jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0))
    if centers == "uniform":
        c = _uniform(bits[:, P, :D], -1.0, 1.0)  # (M, D)
    else:
        c = jnp.sqrt(2.0) * jax.scipy.special.erfinv(_uniform(bits[:, P, :D], lo, 1.0))
    # The barriers keep XLA:CPU from fusing erfinv into the bit twiddling, where it does not
    # vectorise (measured: 165 -> 115 us per (5, 100, 4) dataset).
    u = jax.lax.optimization_barrier(_uniform(bits[:, :P, :D], lo, 1.0))
    z = jax.lax.optimization_barrier(jnp.sqrt(2.0) * jax.scipy.special.erfinv(u))  # (M, P, D) ~ N(0, 1)
    noise, center_box = jnp.asarray(noise, jnp.float32), jnp.asarray(center_box, jnp.float32)
    x = (center_box * c[:, None, :] + noise * z).reshape(M * P, D)  # (M*P, D)
    cluster = jnp.repeat(jnp.arange(M, dtype=jnp.int32), P)  # (M*P,)
    mask = cluster < jnp.asarray(n_clusters, jnp.int32)
    x = jnp.where(mask[:, None], x, 0.0)
    labels = jnp.where(mask, cluster, -1)
    init_noise = _uniform(bits[:, :P, D], 0.0, 1.0).reshape(M * P)  # (M*P,)
    return Clusters(x=x, labels=labels, mask=mask, init_noise=init_noise)


def _uniform(bits, low, high):
    """Floats uniform in [low, high) from uint32 bits (23 mantissa bits, as jax.random does)."""
    one_two = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)  # [1, 2)
    return jnp.maximum(low, low + (high - low) * (one_two - 1.0))


# ---------------------------------------------------------------------------------------------- named shapes

SHAPES = {  # name: (dim, description)
    "blobs2": (2, "3 isotropic Gaussian clusters in 2-D, centres uniform in [-3, 3]^2, std = noise"),
    "aniso2": (2, "one anisotropic Gaussian in 2-D, std (3, 1) * noise, rotated by 30 degrees"),
    "overlap4": (4, "4 overlapping clusters in 4-D, centres uniform in [-1.5, 1.5]^4, std = noise"),
    "blobs8": (8, "4 isotropic clusters in 8-D, centres uniform in [-3, 3]^8, std = noise"),
}
_SHAPE_CLUSTERS = {"blobs2": (3, 3.0), "overlap4": (4, 1.5), "blobs8": (4, 3.0)}  # (clusters, centre box)


def _check_point_cloud(key, shape, n_points, noise):
    _checks.prng_key("key", key)
    _checks.choice("shape", shape, SHAPES)
    _checks.positive_int("n_points", n_points)
    _checks.real("noise", noise, low=0.0)
    k = _SHAPE_CLUSTERS.get(shape, (1, 0.0))[0]
    if n_points % k:
        raise ValueError(f"n_points must be a multiple of {k} for shape {shape!r}, got {n_points}")


@_checks.checked_jit(_check_point_cloud, static_argnames=("shape", "n_points"))
def point_cloud(key, shape: str, n_points: int, noise=1.0):
    """(n_points, D) points of a named data shape (:data:`SHAPES`; ``noise`` may be traced):
    clusters of equal size drawn by :func:`gaussian_clusters`, or one rotated anisotropic
    Gaussian (``aniso2``)."""
    if shape == "aniso2":
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        z = jax.random.normal(key, (n_points, 2)) * jnp.array([3.0, 1.0]) * noise
        return z @ jnp.array([[c, s], [-s, c]], jnp.float32)
    k, box = _SHAPE_CLUSTERS[shape]
    return gaussian_clusters(key, k, points_per_cluster=n_points // k, dim=SHAPES[shape][0], noise=noise,
                             center_box=box, max_clusters=k).x
