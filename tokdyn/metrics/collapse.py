"""How a clustering uses its clusters (tokens): :func:`sse` (the squared distances of points to their
centres), :func:`cluster_sizes` (points per cluster), :func:`n_used` (clusters with a point) and
:func:`collapsed` (fewer tokens used than there are true clusters)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.metrics._labels import check_bound, check_labels, check_mask, float_dtype, in_range, int_dtype


def _is_bfloat16(value) -> bool:
    return _checks.dtype_of(value) == jnp.dtype(jnp.bfloat16)  # NumPy's dtype kind for it is 'V'


def _check_sse(x, labels, centers, mask):
    for name, value in (("x", x), ("centers", centers)):
        if np.ndim(value) != 2:
            raise ValueError(f"{name} must be a 2-D array, got shape {np.shape(value)}")
        if _checks.dtype_of(value).kind not in "biuf" and not _is_bfloat16(value):
            raise TypeError(f"{name} must be a real-valued array, got dtype {_checks.dtype_of(value)}")
    if _is_bfloat16(x) and _checks.on_host(x):
        x = np.asarray(x, np.float32)  # host bfloat16: checked (and summed) in float32
    if _is_bfloat16(centers) and _checks.on_host(centers):
        centers = np.asarray(centers, np.float32)
    n, d = np.shape(x)
    k, d_c = np.shape(centers)
    if d_c != d:
        raise ValueError(f"centers must have shape (K, {d}) to match x of shape {(n, d)}, got shape {(k, d_c)}")
    if np.ndim(labels) != 1 or np.shape(labels)[0] != n:
        raise ValueError(f"labels must be a 1-D array of length N = {n} (rows of x), got shape {np.shape(labels)}")
    check_mask(mask, n, "x")
    check_labels("labels", labels, bound_name="K", bound=k, mask=mask)
    # Finiteness matters only where it is used: valid rows of x (padding may hold NaN), all centres.
    if _checks.on_host(x) and _checks.on_host(mask):
        rows = np.asarray(x) if mask is None else np.asarray(x)[np.asarray(mask)]
        if not np.all(np.isfinite(rows)):
            n_bad = int(np.sum(~np.isfinite(rows)))
            raise ValueError(f"x must be finite on valid rows: it holds {n_bad} NaN or infinite value(s)")
    if _is_bfloat16(centers):  # traced bfloat16: nothing to look at but the rank, checked above
        return _checks.host_arrays(x=x, labels=labels, centers=centers, mask=mask)
    _checks.finite_array("centers", centers)
    return _checks.host_arrays(x=x, labels=labels, centers=centers, mask=mask)


def _check_sizes(labels, n_clusters, mask):
    check_bound("n_clusters", n_clusters)
    if np.ndim(labels) != 1:
        raise ValueError(f"labels must be a 1-D array of integer labels, got shape {np.shape(labels)}")
    check_mask(mask, np.shape(labels)[0], "labels")
    check_labels("labels", labels, bound_name="n_clusters", bound=n_clusters, mask=mask)
    return _checks.host_arrays(labels=labels, mask=mask)


def _check_collapsed(labels, n_tokens, n_true_clusters, mask):
    if _checks.on_host(n_true_clusters):
        value = np.asarray(n_true_clusters)
        if value.ndim != 0 or value.dtype.kind not in "iu":
            raise TypeError(f"n_true_clusters must be an integer scalar, got {n_true_clusters!r}")
        if value < 1:
            raise ValueError(f"n_true_clusters must be >= 1, got {value.item()!r}")
    return _check_sizes(labels, n_tokens, mask)


# Eager calls on host data are padded to a few lengths (masked out): one program a bucket.
_SSE_BUCKETS = _checks.Buckets(points=("x", "labels"), mask="mask")
_LABEL_BUCKETS = _checks.Buckets(points=("labels",), mask="mask")


@_checks.checked_jit(_check_sse, buckets=_SSE_BUCKETS)
def sse(x, labels, centers, mask=None):
    """Sum of squared distances of the valid points to the centre of their assigned cluster.

    Args:
      x: ``(N, D)`` points.
      labels: ``(N,)`` integer assignments in ``[0, K)`` (where ``mask`` is True).
      centers: ``(K, D)`` cluster centres.
      mask: optional ``(N,)`` bool selecting the valid points.

    Returns:
      Scalar in the promoted float dtype of ``x`` and ``centers`` (at least JAX's default float;
      float16 and bfloat16 inputs alike are summed in it).
      Computed as ``sum ||x_n - c_{l_n}||^2`` with a gather, which avoids the cancellation of the
      expanded form ``||x||^2 - 2 x.c + ||c||^2`` when points sit close to their centres.
      A valid label outside ``[0, K)`` (``-1``, "no label", included) is a ``ValueError`` for host
      data; held in a JAX array it makes the result **NaN** (a gather would clamp it to a
      neighbouring centre). Non-finite centres make it NaN too (their squared distances are).

    Host calls: NumPy inputs are padded to a power of two from 32 (masked out; results as unpadded),
    so inputs of many lengths compile one program a bucket, not one a length (:ref:`metrics-host-calls`).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> x = np.array([[0, 0], [0, 2], [5, 5]], np.float32)
      >>> centres = np.array([[0, 1], [5, 5]], np.float32)
      >>> print(f"{float(metrics.sse(x, np.array([0, 0, 1]), centres)):.1f}")   # 1 + 1 + 0
      2.0
    """
    dtype = jnp.result_type(x, centers, float_dtype())
    x = jnp.asarray(x).astype(dtype)
    centers = jnp.asarray(centers).astype(dtype)
    valid = jnp.ones(x.shape[0], bool) if mask is None else mask
    # (N, D) centre of each point; a valid label outside [0, K) gathers NaN (a plain gather would
    # clamp it to a neighbouring centre), which the sum carries to the result at no extra cost
    labels = jnp.asarray(labels)
    n_centers = centers.shape[0]
    index = jnp.where(valid, jnp.where(in_range(labels, n_centers), labels, n_centers), 0)  # K: out of bounds
    assigned = centers.at[index].get(mode="fill", fill_value=jnp.nan)
    sq = (x - assigned) ** 2  # (N, D)
    # One reduction over both axes (no per-row reduction over a tiny trailing D).
    return jnp.sum(jnp.where(valid[:, None], sq, 0.0))


@_checks.checked_jit(_check_sizes, static_argnames=("n_clusters",), buckets=_LABEL_BUCKETS)
def cluster_sizes(labels, n_clusters, mask=None):
    """Number of valid points assigned to each cluster: ``(n_clusters,)`` of JAX's default int.

    ``labels`` is ``(N,)`` with values in ``[0, n_clusters)`` where ``mask`` is True;
    ``n_clusters`` is a static int. A valid label outside that range is a ``ValueError`` for host
    data; held in a JAX array it makes **every entry -1** (rather than dropping the point).

    Host calls: NumPy inputs are padded to a power of two from 32 (masked out; results as unpadded),
    so inputs of many lengths compile one program a bucket, not one a length (:ref:`metrics-host-calls`).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> metrics.cluster_sizes(np.array([0, 0, 2, 2, 2]), 4).tolist()
      [2, 0, 3, 0]
      >>> metrics.cluster_sizes(np.array([0, 0, 2, 2, 2]), 4, mask=np.array([1, 0, 1, 1, 0], bool)).tolist()
      [1, 0, 2, 0]
    """
    labels = jnp.asarray(labels)
    weights = jnp.ones(labels.shape[0], int_dtype()) if mask is None else jnp.asarray(mask).astype(int_dtype())
    # labels out of range go to an extra segment (segment_sum would drop them silently)
    index = jnp.where(in_range(labels, n_clusters), labels.astype(jnp.int32), n_clusters)
    sizes = jax.ops.segment_sum(weights, index, num_segments=n_clusters + 1)  # (K + 1,)
    return jnp.where(sizes[-1] > 0, -1, sizes[:-1])  # (K,)


def n_used(labels, n_clusters, mask=None):
    """Number of clusters with at least one valid point (int scalar). Arguments as in
    :func:`cluster_sizes`; ``-1`` when a valid label held in a JAX array lies outside
    ``[0, n_clusters)`` (the sentinel of :func:`cluster_sizes`; host labels are checked first).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> int(metrics.n_used(np.array([0, 0, 2, 2, 2]), 4))
      2
    """
    sizes = cluster_sizes(labels, n_clusters, mask)
    return jnp.where(sizes[0] < 0, -1, jnp.sum(sizes > 0))


@_checks.checked_jit(_check_collapsed, static_argnames=("n_tokens",), buckets=_LABEL_BUCKETS)
def collapsed(labels, n_tokens, n_true_clusters, mask=None):
    """True when fewer than ``min(n_true_clusters, n_tokens)`` tokens receive a valid point.

    Args:
      labels: ``(N,)`` hard assignments of points to tokens, in ``[0, n_tokens)`` where valid.
      n_tokens: static int, the number of tokens.
      n_true_clusters: number of ground-truth clusters; may be a traced int (e.g. vmapped over
        conditions with different cluster counts).
      mask: optional ``(N,)`` bool selecting the valid points.

    Returns:
      Bool scalar. A valid label held in a JAX array outside ``[0, n_tokens)`` makes it True (a bool
      has no room for a sentinel: :func:`n_used` gives ``-1`` there, which is below any threshold);
      host labels are checked first (``ValueError``).

    Host calls: NumPy inputs are padded to a power of two from 32 (masked out; results as unpadded),
    so inputs of many lengths compile one program a bucket, not one a length (:ref:`metrics-host-calls`).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> labels = np.array([0, 0, 2, 2, 2])   # 2 of 4 tokens used
      >>> bool(metrics.collapsed(labels, 4, 3)), bool(metrics.collapsed(labels, 4, 2))
      (True, False)
    """
    needed = jnp.minimum(n_true_clusters, n_tokens)
    return n_used(labels, n_tokens, mask) < needed
