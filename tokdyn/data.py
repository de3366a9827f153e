"""Synthetic datasets with known structure.

All generators are pure functions of an explicit PRNG key, jittable and vmappable. Shapes are
static; anything a sweep may vary (noise, the number of clusters when ``max_clusters`` is given)
may be a traced value, so conditions that differ only in those run in one compiled vmap.
"""

from __future__ import annotations

import dataclasses

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

    Cluster ``k`` depends only on the key and k (for given P and D), so the first ``K`` clusters
    are the same whatever ``n_clusters`` or ``max_clusters`` is: a dataset with K=3 is the K=5
    dataset with two clusters removed (common random numbers across conditions). This relies on
    JAX's default ``jax_threefry_partitionable=True``.

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
    clusters, _ = _generate_jit(key, jnp.asarray(n_clusters, jnp.int32), jnp.asarray(noise, jnp.float32),
                                jnp.asarray(center_box, jnp.float32), M, P, D, centers)
    return clusters


def _is_intlike(value) -> bool:
    try:
        return float(value) == int(value) and not isinstance(value, bool) and jnp.ndim(value) == 0
    except (TypeError, ValueError):
        return False


def _uniform(bits, low, high):
    """Floats uniform in [low, high) from uint32 bits (23 mantissa bits, as jax.random does)."""
    one_two = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)  # [1, 2)
    return jnp.maximum(low, low + (high - low) * (one_two - 1.0))


def _generate(key, n_clusters, noise, center_box, M, P, D, centers):
    """Clusters plus (N,) uniform per-point noise for token initialisation.

    All randomness comes from one ``random.bits`` call of shape (M, P + 1, D + 1): rows ``:P`` are
    the points' noise, row ``P`` the centre, column ``D`` of rows ``:P`` the per-point init noise.
    With JAX's default partitionable threefry, element (k, i, j) depends on the key and its index
    only, so cluster k is the same whatever M is. One bits call also keeps compile time low.
    """
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
    x = (center_box * c[:, None, :] + noise * z).reshape(M * P, D)  # (M*P, D)
    cluster = jnp.repeat(jnp.arange(M, dtype=jnp.int32), P)  # (M*P,)
    mask = cluster < n_clusters
    x = jnp.where(mask[:, None], x, 0.0)
    labels = jnp.where(mask, cluster, -1)
    init_noise = _uniform(bits[:, :P, D], 0.0, 1.0).reshape(M * P)  # (M*P,)
    return Clusters(x=x, labels=labels, mask=mask), init_noise


_generate_jit = jax.jit(_generate, static_argnums=(4, 5, 6, 7))


# Token corpora and semantic embeddings (defined in tokdyn/corpus.py, re-exported here).
from tokdyn.corpus import (  # noqa: E402,F401
    Corpus, cooccurrence, grammar_corpus, grammar_vocab, load_embeddings, ppmi, ppmi_embeddings, text_corpus,
    zipf_corpus, zipf_probs,
)
