"""Synthetic datasets with known structure.

All generators are pure functions of an explicit PRNG key, jittable and vmappable. Shapes are
static; anything a sweep may vary (noise, the number of clusters when ``max_clusters`` is given)
may be a traced value, so conditions that differ only in those run in one compiled vmap.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

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
    """

    x: jax.Array
    labels: jax.Array
    mask: jax.Array


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

    Cluster ``k`` is generated from ``fold_in(key, k)`` alone, so the first ``K`` clusters are
    the same whatever ``n_clusters`` or ``max_clusters`` is: a dataset with K=3 is the K=5
    dataset with two clusters removed (common random numbers across conditions).

    Args:
      key: PRNG key.
      n_clusters: number of clusters K. A static int, or, when ``max_clusters`` is given, an int
        that may be traced (1 <= K <= max_clusters).
      points_per_cluster: points per cluster P (static).
      dim: dimension D (static).
      noise: standard deviation of every cluster (may be traced).
      center_box: half-width (uniform) or scale (normal) of the centre distribution (may be traced).
      centers: ``"uniform"`` or ``"normal"``.
      max_clusters: if given, the output always has ``max_clusters * P`` rows and clusters
        ``k >= n_clusters`` are masked out, so different K share one shape.

    Returns:
      ``Clusters`` with N = P * (max_clusters or n_clusters) rows, ordered by cluster.
    """
    P = _checks.positive_int("points_per_cluster", points_per_cluster)
    D = _checks.positive_int("dim", dim)
    _checks.choice("centers", centers, CENTER_LAYOUTS)
    _checks.real("noise", noise, low=0.0)
    _checks.real("center_box", center_box, low=0.0)
    if max_clusters is None:
        if not _checks.is_concrete(n_clusters):
            raise ValueError(
                "n_clusters is traced but max_clusters is None: pass max_clusters (a static int) "
                "so the output shape does not depend on n_clusters"
            )
        M = _checks.positive_int("n_clusters", int(n_clusters) if _is_intlike(n_clusters) else n_clusters)
    else:
        M = _checks.positive_int("max_clusters", max_clusters)
        if _checks.is_concrete(n_clusters):
            k = _checks.positive_int("n_clusters", int(n_clusters) if _is_intlike(n_clusters) else n_clusters)
            if k > M:
                raise ValueError(f"n_clusters must be <= max_clusters={M}, got {k}")
    return _generate(key, jnp.asarray(n_clusters, jnp.int32), jnp.asarray(noise, jnp.float32),
                     jnp.asarray(center_box, jnp.float32), M, P, D, centers)


def _is_intlike(value) -> bool:
    try:
        return float(value) == int(value) and not isinstance(value, bool) and jnp.ndim(value) == 0
    except (TypeError, ValueError):
        return False


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _generate(key, n_clusters, noise, center_box, M, P, D, centers):
    def one_cluster(k):
        kc, kx = jax.random.split(jax.random.fold_in(key, k))
        if centers == "uniform":
            c = jax.random.uniform(kc, (D,), minval=-1.0, maxval=1.0)
        else:
            c = jax.random.normal(kc, (D,))
        z = jax.random.normal(kx, (P, D))
        return center_box * c + noise * z  # (P, D)

    x = jax.vmap(one_cluster)(jnp.arange(M)).reshape(M * P, D)  # (M*P, D)
    cluster = jnp.repeat(jnp.arange(M, dtype=jnp.int32), P)  # (M*P,)
    mask = cluster < n_clusters
    x = jnp.where(mask[:, None], x, 0.0)
    labels = jnp.where(mask, cluster, -1)
    return Clusters(x=x, labels=labels, mask=mask)
