"""Synthetic datasets with known structure.

Every generator is a pure function of an explicit PRNG key, jitted and vmappable, callable inside
a user's own ``jit``/``vmap``. Shapes are static; anything a sweep may vary (noise, the number of
clusters when ``max_clusters`` is given) may be traced, so conditions that differ only in those
run in one compiled vmap.

- :func:`gaussian_clusters`: isotropic Gaussian clusters (the ``make_blobs`` family), padded to a
  fixed shape with a mask; its random part :func:`cluster_draw` and the rest
  :func:`clusters_from_draw`, so that conditions sharing a key share one draw.
- :func:`point_cloud`: the named point clouds of the collapse study (:data:`SHAPES`).
- :func:`moving_clusters`: a sequence of frames of Gaussian clusters moving at constant velocity
  (two crossing, one leaving the view), for token dynamics through time (:mod:`tokdyn.tracking`);
  its random part :func:`moving_draw`, the rest :func:`moving_from_draw`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

CENTER_LAYOUTS = ("uniform", "normal")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")  # the dtypes a generator's ``dtype`` may name


def float_dtype(dtype=None) -> np.dtype:
    """The ``dtype`` argument of a data generator, checked: one of :data:`FLOAT_DTYPES` (a name, a
    NumPy dtype or a JAX type such as ``jnp.float64``), or ``None``, JAX's default float (float64
    under ``jax_enable_x64``, as JAX's own constructors, float32 otherwise); float64 needs
    ``jax_enable_x64`` (else JAX would silently hand back float32). ``ValueError`` naming ``dtype``
    otherwise. Every generator draws its random numbers in float32 / uint32 whatever ``dtype`` is
    and casts the result, so the same key gives the same data with and without x64: float64 data
    hold exactly the float32 values (a cast up is exact).

    Examples:
      >>> from tokdyn import data
      >>> data.float_dtype(), data.float_dtype("bfloat16")   # without x64
      (dtype('float32'), dtype(bfloat16))
    """
    if dtype is None:
        return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    try:
        d = jnp.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d.name not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {list(FLOAT_DTYPES)}, got {dtype!r}")
    if d == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype=float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 or jax.config.update("
            "'jax_enable_x64', True) before creating arrays"
        )
    return d


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Clusters:
    """A labelled point cloud.

    Attributes:
      x: (N, D) points. Padded rows (``mask == False``) are zeros; every row is NaN when a traced
        cluster count was out of range (:func:`clusters_from_draw`).
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


def _check_clusters(key, n_clusters, points_per_cluster, dim, noise, center_box, centers, max_clusters, dtype=None):
    float_dtype(dtype)
    _checks.prng_key("key", key)
    _checks.positive_int("points_per_cluster", points_per_cluster)
    _checks.positive_int("dim", dim)
    _checks.choice("centers", centers, CENTER_LAYOUTS)
    _checks.real("noise", noise, low=0.0)
    _checks.real("center_box", center_box, low=0.0)
    if max_clusters is None:
        if not _checks.on_host(n_clusters):
            raise ValueError(
                "n_clusters is a JAX array but max_clusters is None: pass max_clusters (a static int) "
                "so the output shape does not depend on n_clusters"
            )
        m = _checks.positive_int("n_clusters", _as_int(n_clusters))
        _draw_fits(dict(n_clusters=m, points_per_cluster=points_per_cluster, dim=dim))
        return dict(max_clusters=m)
    m = _checks.positive_int("max_clusters", max_clusters)
    _draw_fits(dict(max_clusters=m, points_per_cluster=points_per_cluster, dim=dim))
    if _checks.on_host(n_clusters):
        k = _checks.positive_int("n_clusters", _as_int(n_clusters))
        if k > m:
            raise ValueError(f"n_clusters must be <= max_clusters={m}, got {k}")
    return None


def _draw_fits(sizes: dict) -> None:
    """``sizes``: the clusters M, points per cluster P and dimension D, by argument name; the
    draw's bits (M, P + 1, D + 1) within one array's limit (the points, (M * P, D), are fewer)."""
    m, p, d = sizes.values()
    _checks.elements_fit("the random draw (M, P + 1, D + 1)", sizes, m * (p + 1) * (d + 1))


def _as_int(value):
    """A whole-number host scalar as an int (so np.int64(3) and 3.0 pass); anything else unchanged."""
    try:
        if np.ndim(value) == 0 and not isinstance(value, bool) and float(value) == int(value):
            return int(value)
    except (TypeError, ValueError):
        pass
    return value


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ClusterDraw:
    """The random part of :func:`gaussian_clusters`: everything that depends on the key alone.

    Conditions that differ only in the cluster count, the noise or the centre scale reuse one
    draw (:func:`clusters_from_draw`), which is how a sweep with common random numbers generates
    a seed's data once for all its conditions.

    Attributes:
      centers: (M, D) unit centres: uniform in [-1, 1) (``"uniform"``) or standard normal
        (``"normal"``); cluster k's centre is ``center_box * centers[k]``.
      z: (M, P, D) standard normal noise of every point.
      init_noise: (M * P,) uniform [0, 1) noise per point (see :class:`Clusters`).
    """

    centers: jax.Array
    z: jax.Array
    init_noise: jax.Array


def _check_draw(key, max_clusters, points_per_cluster, dim, centers):
    _checks.prng_key("key", key)
    _checks.positive_int("max_clusters", max_clusters)
    _checks.positive_int("points_per_cluster", points_per_cluster)
    _checks.positive_int("dim", dim)
    _checks.choice("centers", centers, CENTER_LAYOUTS)
    _draw_fits(dict(max_clusters=max_clusters, points_per_cluster=points_per_cluster, dim=dim))


def _draw(key, M, P, D, centers):
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
    init_noise = _uniform(bits[:, :P, D], 0.0, 1.0).reshape(M * P)  # (M*P,)
    return ClusterDraw(centers=c, z=z, init_noise=init_noise)


@_checks.checked_jit(_check_draw, static_argnames=("max_clusters", "points_per_cluster", "dim", "centers"))
def cluster_draw(
    key: jax.Array, *, max_clusters: int, points_per_cluster: int = 50, dim: int = 16, centers: str = "uniform"
) -> ClusterDraw:
    """The random part of :func:`gaussian_clusters`: ``clusters_from_draw(cluster_draw(key, ...), K,
    noise=..., center_box=...)`` equals ``gaussian_clusters(key, K, ..., max_clusters=...)`` (the
    points up to one rounding). One ``random.bits`` call, of which cluster k uses only its own block,
    so it depends only on the key and k (:doc:`/concepts/token-dynamics`, "Data and scores").

    Args:
      key: PRNG key.
      max_clusters: M, the clusters drawn (static).
      points_per_cluster: P (static).
      dim: D (static).
      centers: "uniform" or "normal" (static; see :func:`gaussian_clusters`).

    Returns:
      A :class:`ClusterDraw`: (M, D) unit centres, (M, P, D) noise, (M * P,) ``init_noise``.

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import data
      >>> draw = data.cluster_draw(jax.random.key(0), max_clusters=3, points_per_cluster=2, dim=2)
      >>> draw.centers.shape, draw.z.shape
      ((3, 2), (3, 2, 2))
      >>> c = data.gaussian_clusters(jax.random.key(0), 2, points_per_cluster=2, dim=2, max_clusters=3)
      >>> bool(np.allclose(data.clusters_from_draw(draw, 2).x, c.x, atol=1e-5))
      True
    """
    return _draw(key, max_clusters, points_per_cluster, dim, centers)


def _from_draw(draw, n_clusters, noise, center_box, dtype=None):
    M, P, D = draw.z.shape
    noise, center_box = jnp.asarray(noise, jnp.float32), jnp.asarray(center_box, jnp.float32)
    x = (center_box * draw.centers[:, None, :] + noise * draw.z).reshape(M * P, D)  # (M*P, D)
    cluster = jnp.repeat(jnp.arange(M, dtype=jnp.int32), P)  # (M*P,)
    k = jnp.asarray(n_clusters)
    mask = cluster < k.astype(jnp.int32)
    # a traced count outside [1, M] (host values are refused) gives NaN points, padding included,
    # rather than M clusters (or none) that look like a result; fused into the select below
    in_range = (k >= 1) & (k <= M) & (k == jnp.floor(k) if jnp.issubdtype(k.dtype, jnp.floating) else True)
    x = jnp.where(mask[:, None] & in_range, x, jnp.where(in_range, 0.0, jnp.nan))
    labels = jnp.where(mask, cluster, -1)
    return Clusters(x=x.astype(float_dtype(dtype)), labels=labels, mask=mask, init_noise=draw.init_noise)


def _check_from_draw(draw, n_clusters, noise, center_box, dtype=None):
    float_dtype(dtype)
    if not isinstance(draw, ClusterDraw):
        raise TypeError(f"draw must be a tokdyn.data.ClusterDraw (from cluster_draw), got {type(draw).__name__}")
    if jnp.ndim(draw.z) != 3 or jnp.shape(draw.centers) != (jnp.shape(draw.z)[0], jnp.shape(draw.z)[2]):
        raise ValueError(
            f"draw has inconsistent shapes: centers {jnp.shape(draw.centers)}, z {jnp.shape(draw.z)}; "
            "expected (M, D) and (M, P, D)"
        )
    _checks.real("noise", noise, low=0.0)
    _checks.real("center_box", center_box, low=0.0)
    if _checks.on_host(n_clusters):
        k = _checks.positive_int("n_clusters", _as_int(n_clusters))
        if k > draw.z.shape[0]:
            raise ValueError(f"n_clusters must be <= the draw's {draw.z.shape[0]} clusters, got {k}")


@_checks.checked_jit(_check_from_draw, static_argnames=("dtype",))
def clusters_from_draw(draw: ClusterDraw, n_clusters, *, noise=0.3, center_box=10.0, dtype=None) -> Clusters:
    """The clusters of a :class:`ClusterDraw` at a cluster count, noise and centre scale: one
    multiply-add per coordinate, no random bits.

    Args:
      draw: a :class:`ClusterDraw` of M clusters of P points in D dimensions.
      n_clusters: K, a whole number in ``[1, M]``; may be traced. A host value outside is a
        ``ValueError`` naming ``n_clusters``; a traced one gives NaN in every row of ``x`` (padded rows
        included), so a run on it reports NaN, never a result for another cluster count.
      noise: every cluster's standard deviation, >= 0 (may be traced).
      center_box: the centres' scale, >= 0 (may be traced).
      dtype: of ``x`` (static; one of :data:`FLOAT_DTYPES`, computed in float32 and cast, see
        :func:`float_dtype`).

    Returns:
      :class:`Clusters` of ``M * P`` rows, clusters ``k >= n_clusters`` masked out.

    Examples:
      >>> import jax
      >>> from tokdyn import data
      >>> draw = data.cluster_draw(jax.random.key(0), max_clusters=3, points_per_cluster=2, dim=2)
      >>> for k in (1, 3):   # the same draw at two cluster counts
      ...     print(data.clusters_from_draw(draw, k, noise=0.1).labels.tolist())
      [0, 0, -1, -1, -1, -1]
      [0, 0, 1, 1, 2, 2]
    """
    return _from_draw(draw, n_clusters, noise, center_box, dtype)


@_checks.checked_jit(_check_clusters, static_argnames=("points_per_cluster", "dim", "centers", "max_clusters", "dtype"))
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
    dtype=None,
) -> Clusters:
    """Isotropic Gaussian clusters with known labels (the ``make_blobs`` family): cluster ``k`` has
    centre ``c_k`` and points ``c_k + noise * z``, ``z ~ N(0, I_D)``. Cluster ``k`` depends only on the
    key and k, so the first K clusters are the same whatever ``n_clusters`` or ``max_clusters`` is
    (common random numbers; :doc:`/concepts/token-dynamics` has the draw and a validation set).

    Args:
      key: PRNG key.
      n_clusters: K, a static int, or, when ``max_clusters`` is given, an int that may be traced
        (1 <= K <= max_clusters; a traced one outside gives NaN in every row of ``x``).
      points_per_cluster: P (static).
      dim: D (static).
      noise: every cluster's standard deviation, >= 0 (may be traced).
      center_box: half-width (uniform) or scale (normal) of the centres' distribution (may be traced).
      centers: "uniform" (``[-center_box, center_box]^D``, as ``make_blobs``) or "normal"
        (``center_box * N(0, I_D)``); static.
      max_clusters: if given, the output has ``max_clusters * P`` rows and clusters ``k >= n_clusters``
        are masked out, so different K share one shape (static).
      dtype: of ``x`` (static): float32, float16, bfloat16 or float64 (needs x64); default JAX's
        default float (float64 under x64, float32 otherwise). Drawn and computed in float32 and
        cast, so a key gives the same clusters (the same values) with and without x64.

    Returns:
      :class:`Clusters` with N = P * (max_clusters or n_clusters) rows, ordered by cluster.

    Examples:
      >>> import jax
      >>> from tokdyn import data
      >>> c = data.gaussian_clusters(jax.random.key(0), 2, points_per_cluster=2, dim=2, max_clusters=3)
      >>> c.x.shape, c.labels.tolist()   # the third cluster is padding
      ((6, 2), [0, 0, 1, 1, -1, -1])
      >>> c.mask.tolist()
      [True, True, True, True, False, False]
    """
    draw = _draw(key, max_clusters, points_per_cluster, dim, centers)
    return _from_draw(draw, n_clusters, noise, center_box, dtype)


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


def _check_point_cloud(key, shape, n_points, noise, dtype=None):
    float_dtype(dtype)
    _checks.prng_key("key", key)
    _checks.choice("shape", shape, SHAPES)
    _checks.positive_int("n_points", n_points)
    _checks.real("noise", noise, low=0.0)
    k = _SHAPE_CLUSTERS.get(shape, (1, 0.0))[0]
    if n_points % k:
        raise ValueError(f"n_points must be a multiple of {k} for shape {shape!r}, got {n_points}")


@_checks.checked_jit(_check_point_cloud, static_argnames=("shape", "n_points", "dtype"))
def point_cloud(key, shape: str, n_points: int, noise=1.0, *, dtype=None):
    """Points of a named data shape: clusters of equal size drawn by :func:`gaussian_clusters`, or one
    rotated anisotropic Gaussian (``aniso2``).

    Args:
      key: PRNG key.
      shape: a name in :data:`SHAPES` (static).
      n_points: static int, a multiple of the shape's cluster count.
      noise: the clusters' standard deviation, >= 0 (may be traced).
      dtype: of the points (static; default JAX's default float; drawn in float32 and cast, as
        :func:`gaussian_clusters`).

    Returns:
      (n_points, D) points, D the shape's dimension.

    Examples:
      >>> import jax
      >>> from tokdyn import data
      >>> data.point_cloud(jax.random.key(0), "blobs8", 8).shape   # 4 clusters of 2 points in 8-D
      (8, 8)
    """
    if shape == "aniso2":
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        z = jax.random.normal(key, (n_points, 2), jnp.float32) * jnp.array([3.0, 1.0], jnp.float32) * jnp.float32(noise)
        return (z @ jnp.array([[c, s], [-s, c]], jnp.float32)).astype(float_dtype(dtype))
    k, box = _SHAPE_CLUSTERS[shape]
    return gaussian_clusters(
        key,
        k,
        points_per_cluster=n_points // k,
        dim=SHAPES[shape][0],
        noise=noise,
        center_box=box,
        max_clusters=k,
        dtype=dtype,
    ).x


# ---------------------------------------------------------------------------------------------- moving clusters


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MovingDraw:
    """The random part of :func:`moving_clusters`: everything that depends on the key alone.

    Attributes:
      place: (K, 2) uniform [0, 1): where each cluster sits at the middle frame (see
        :func:`moving_clusters`).
      heading: (K,) uniform [0, 1): each cluster's direction of motion.
      z: (F, K, P, 2) standard normal noise of every point of every frame.
    """

    place: jax.Array
    heading: jax.Array
    z: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MovingClusters:
    """A sequence of frames of moving Gaussian clusters (:func:`moving_clusters`).

    Attributes:
      x: (F, N, 2) points of every frame, N = K * P, ordered by cluster (points outside the view
        keep their coordinates and are masked out).
      labels: (F, N) int32 the cluster of every point, ``-1`` where masked.
      mask: (F, N) bool, True on points inside the view ``[-view, view]^2``.
      centers: (F, K, 2) every cluster's centre in every frame.
      velocity: (K, 2) every cluster's displacement per frame.
    """

    x: jax.Array
    labels: jax.Array
    mask: jax.Array
    centers: jax.Array
    velocity: jax.Array


def _check_moving_draw(key, n_frames, n_clusters, points_per_cluster):
    _checks.prng_key("key", key)
    _checks.positive_int("n_frames", n_frames)
    _checks.positive_int("n_clusters", n_clusters)
    _checks.positive_int("points_per_cluster", points_per_cluster)
    sizes = dict(n_frames=n_frames, n_clusters=n_clusters, points_per_cluster=points_per_cluster)
    _checks.elements_fit(
        "the noise (n_frames, n_clusters, points_per_cluster, 2)", sizes, 2 * n_frames * n_clusters * points_per_cluster
    )


@_checks.checked_jit(_check_moving_draw, static_argnames=("n_frames", "n_clusters", "points_per_cluster"))
def moving_draw(key, *, n_frames: int, n_clusters: int, points_per_cluster: int = 50) -> MovingDraw:
    """The random part of :func:`moving_clusters`: ``moving_from_draw(moving_draw(key, ...), speed=...,
    spread=..., view=...)`` equals ``moving_clusters(key, ...)``, so conditions that differ only in
    speed, spread or view share it.

    Args:
      key: PRNG key.
      n_frames: F (static).
      n_clusters: K (static).
      points_per_cluster: P (static).

    Returns:
      A :class:`MovingDraw`: (K, 2) places, (K,) headings, (F, K, P, 2) noise.

    Examples:
      >>> import jax
      >>> from tokdyn import data
      >>> draw = data.moving_draw(jax.random.key(0), n_frames=5, n_clusters=3, points_per_cluster=4)
      >>> draw.place.shape, draw.heading.shape, draw.z.shape
      ((3, 2), (3,), (5, 3, 4, 2))
    """
    place = jax.random.uniform(jax.random.fold_in(key, 0), (n_clusters, 2), jnp.float32)
    heading = jax.random.uniform(jax.random.fold_in(key, 1), (n_clusters,), jnp.float32)
    z = jax.random.normal(jax.random.fold_in(key, 2), (n_frames, n_clusters, points_per_cluster, 2), jnp.float32)
    return MovingDraw(place=place, heading=heading, z=z)


def _moving(draw: MovingDraw, speed, spread, view) -> MovingClusters:
    n_frames, k, p, _ = draw.z.shape
    speed, spread, view = (jnp.asarray(v, jnp.float32) for v in (speed, spread, view))
    place, heading = draw.place, draw.heading
    mid = view * 1.2 * (place - 0.5)  # (K, 2): free clusters, in [-0.6, 0.6] view at the middle frame
    theta = 2.0 * jnp.pi * heading  # (K,)
    if k >= 2:  # clusters 0 and 1 pass one point at the middle frame, at 60 to 120 degrees
        cross = view * (place[0] - 0.5)
        mid = mid.at[0].set(cross).at[1].set(cross)
        theta = theta.at[1].set(theta[0] + jnp.pi / 3 * (1.0 + heading[1]))
    if k >= 3:  # the last one crosses an edge of the view at the middle frame, outward
        side = jnp.minimum(jnp.floor(4.0 * place[-1, 0]), 3.0).astype(jnp.int32)
        normal = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], jnp.float32)[side]
        along = view * (place[-1, 1] - 0.5)
        mid = mid.at[-1].set(view * normal + along * jnp.stack([-normal[1], normal[0]]))
        theta = theta.at[-1].set(jnp.arctan2(normal[1], normal[0]) + jnp.pi / 2 * (heading[-1] - 0.5))
    velocity = speed * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)  # (K, 2)
    frames = jnp.arange(n_frames, dtype=None) - (n_frames - 1) / 2.0  # (F,) relative to the middle
    centers = mid[None] + frames[:, None, None] * velocity[None]  # (F, K, 2)
    x = (centers[:, :, None, :] + spread * draw.z).reshape(n_frames, k * p, 2)  # (F, N, 2)
    mask = jnp.all(jnp.abs(x) <= view, axis=-1)  # (F, N)
    cluster = jnp.repeat(jnp.arange(k, dtype=jnp.int32), p)  # (N,)
    labels = jnp.where(mask, cluster[None, :], -1)
    f = float_dtype(None)  # computed in float32; JAX's default float (float64 under x64), the same values
    return MovingClusters(
        x=x.astype(f), labels=labels, mask=mask, centers=centers.astype(f), velocity=velocity.astype(f)
    )


def _check_moving_from_draw(draw, speed, spread, view):
    if not isinstance(draw, MovingDraw):
        raise TypeError(f"draw must be a tokdyn.data.MovingDraw (from moving_draw), got {type(draw).__name__}")
    if np.ndim(draw.z) != 4 or np.shape(draw.place) != (np.shape(draw.z)[1], 2):
        raise ValueError(
            f"draw has inconsistent shapes: place {np.shape(draw.place)}, z {np.shape(draw.z)}; "
            "expected (K, 2) and (F, K, P, 2)"
        )
    _check_motion(speed, spread, view)


def _check_motion(speed, spread, view):
    _checks.real("speed", speed, low=0.0)
    _checks.real("spread", spread, low=0.0)
    _checks.real("view", view, low=0.0, low_open=True)


@_checks.checked_jit(_check_moving_from_draw)
def moving_from_draw(draw: MovingDraw, *, speed=1.0, spread=0.5, view=10.0) -> MovingClusters:
    """The sequence of a :class:`MovingDraw` (see :func:`moving_clusters`); no random bits.

    Args:
      draw: a :class:`MovingDraw` of F frames and K clusters of P points.
      speed: distance a centre moves per frame, >= 0 (may be traced).
      spread: every cluster's standard deviation, >= 0 (may be traced).
      view: half-width of the field of view, > 0 (may be traced).

    Returns:
      :class:`MovingClusters` (``x`` (F, K * P, 2) in JAX's default float: float32, float64 under x64).

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from tokdyn import data
      >>> draw = data.moving_draw(jax.random.key(0), n_frames=5, n_clusters=3, points_per_cluster=4)
      >>> slow = data.moving_from_draw(draw, speed=0.5)
      >>> print(np.linalg.norm(np.asarray(slow.velocity), axis=1).round(3))
      [0.5 0.5 0.5]
    """
    return _moving(draw, speed, spread, view)


def _check_moving(key, n_frames, n_clusters, points_per_cluster, speed, spread, view):
    _check_moving_draw(key, n_frames, n_clusters, points_per_cluster)
    _check_motion(speed, spread, view)


@_checks.checked_jit(_check_moving, static_argnames=("n_frames", "n_clusters", "points_per_cluster"))
def moving_clusters(
    key, n_frames: int, n_clusters: int, *, points_per_cluster: int = 50, speed=1.0, spread=0.5, view=10.0
) -> MovingClusters:
    """A sequence of F frames of K Gaussian clusters in 2-D, each moving at constant velocity: two of
    them cross each other and one leaves the view, so that tokens tracking them meet an occlusion
    and an exit (the layout is on :doc:`/concepts/tracking`).

    Cluster ``k`` has centre ``c_k(f) = c_k + (f - (F - 1) / 2) v_k``, ``|v_k| = speed``, and in every
    frame P points ``c_k(f) + spread * z``, ``z ~ N(0, I_2)`` drawn anew; a point is valid while it
    lies in the view ``[-view, view]^2``.

    Args:
      key: PRNG key.
      n_frames: F (static).
      n_clusters: K (static).
      points_per_cluster: P, points per cluster and frame (static).
      speed: distance a centre moves per frame, >= 0 (may be traced).
      spread: every cluster's standard deviation, >= 0 (may be traced).
      view: half-width of the field of view, > 0 (may be traced). The defaults (speed 1, spread 0.5,
        view 10) suit the rule's default temperature 1: clusters a few units apart are told apart.

    Returns:
      :class:`MovingClusters` (``x`` (F, K * P, 2) in JAX's default float, ordered by cluster). The random part is
      :func:`moving_draw`, the rest :func:`moving_from_draw`.

    Examples:
      >>> import jax
      >>> from tokdyn import data
      >>> clip = data.moving_clusters(jax.random.key(0), 5, 3, points_per_cluster=4)
      >>> clip.x.shape, clip.mask.shape, clip.centers.shape   # (F, K * P, 2), (F, K * P), (F, K, 2)
      ((5, 12, 2), (5, 12), (5, 3, 2))
    """
    draw = moving_draw(key, n_frames=n_frames, n_clusters=n_clusters, points_per_cluster=points_per_cluster)
    return _moving(draw, speed, spread, view)
