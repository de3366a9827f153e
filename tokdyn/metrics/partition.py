r"""Agreement of two partitions: :func:`ari`, :func:`nmi` (equal to scikit-learn's), the
:func:`contingency` table, and of a segmentation with instance masks: :func:`fg_ari` (ARI over the
foreground) and :func:`matched_iou` (mean IoU of one-to-one matched segments; :func:`matched_iou_host`
is the NumPy + SciPy reference).

Give ``n_true`` and ``n_pred`` (static label bounds) for the fast path, one ``segment_sum`` over
the contingency table's cells; without them any integer labels are taken (a sort-based path),
with identical results. Both follow scikit-learn's special cases without dividing zero by zero,
and agree with it to ~1e-6 in float32 (~1e-12 under ``jax.enable_x64(True)``).

The two code paths and the numerics in detail: :ref:`metrics-partition`.

Called eagerly on host arrays (NumPy, Python lists), :func:`ari`, :func:`nmi` and :func:`fg_ari`
compute the same numbers in float64 NumPy (no compile); :func:`contingency` and those three when
no entry is valid pad the labels to one of a few lengths (powers of two from 32, the padding
masked out: :func:`tokdyn.checks.bucket_size`), so labelings of many lengths compile one program
a bucket, not one a length, with the results of the unpadded call. JAX arrays, and calls inside a
``jit``/``vmap``, run the kernel as they are. Many labelings score fastest in one call: padded to
one length with a mask, under ``jax.vmap``. Measured costs: :ref:`metrics-host-calls`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tokdyn import _checks, assignment
from tokdyn.metrics._labels import (
    check_bounds,
    check_labels,
    check_mask,
    check_scene,
    count_table,
    float_dtype,
    host_foreground,
    host_result,
    host_scores,
    host_valid_pair,
    in_range,
    int_dtype,
)


class _Stats(NamedTuple):
    """Sufficient statistics of a pair of labelings; every field is a float scalar.

    The pair counts are over ordered pairs of distinct valid points (sklearn's pair confusion
    matrix): ``tp`` same class and same cluster, ``fp`` different class but same cluster, ``fn``
    same class but different cluster, ``tn`` different class and different cluster.
    """

    n: jax.Array  # number of valid points N
    tp: jax.Array
    fp: jax.Array
    fn: jax.Array
    tn: jax.Array
    mi: jax.Array  # mutual information (nats)
    h_true: jax.Array  # entropy of the true labeling (nats)
    h_pred: jax.Array  # entropy of the predicted labeling (nats)
    k_true: jax.Array  # number of non-empty true classes
    k_pred: jax.Array  # number of non-empty predicted clusters


def _log_ratio(diff, den):
    """``log((den + diff) / den)`` for ``den > 0``, ``den + diff > 0``, accurate near 1.

    Callers pass an integer-valued ``diff`` computed from small exact factors, so that when the
    ratio is close to 1 (where ``log`` of a rounded ratio is only accurate to ``eps`` absolutely),
    ``log1p(diff / den)`` keeps full relative accuracy.
    """
    near_one = jnp.abs(diff) < 0.5 * den
    return jnp.where(near_one, jnp.log1p(diff / den), jnp.log((den + diff) / den))


def _finish(s: _Stats):
    """``(ari, nmi)`` from the sufficient statistics, with sklearn's special cases; NaN for both
    with no valid point."""
    # ARI. fn == fp == 0 covers N <= 1, identical partitions, all singletons on both sides and a
    # single cluster on both sides: sklearn returns 1. Otherwise the denominator is > 0, because
    # fn > 0 gives (tp + fn)(fn + tn) >= fn**2, and likewise for fp.
    perfect = (s.fn == 0) & (s.fp == 0)
    num = 2.0 * (s.tp * s.tn - s.fn * s.fp)
    den = (s.tp + s.fn) * (s.fn + s.tn) + (s.tp + s.fp) * (s.fp + s.tn)
    ari = jnp.where(perfect, 1.0, num / jnp.where(perfect, 1.0, den))

    # NMI. Both labelings a single cluster (or no points at all) is a perfect match: 1. A single
    # cluster on one side only gives MI = 0 and so NMI = 0, as does MI <= 0 (after rounding).
    # When both sides have >= 2 clusters, both entropies are > 0 and so is the normaliser.
    trivial = (s.k_true <= 1) & (s.k_pred <= 1)
    mi = jnp.maximum(s.mi, 0.0)
    informative = (s.k_true > 1) & (s.k_pred > 1) & (mi > 0)
    normaliser = 0.5 * (s.h_true + s.h_pred)
    ratio = mi / jnp.where(informative, normaliser, 1.0)
    # MI <= min(H_true, H_pred) <= their mean, so clipping at 1 only removes rounding excess.
    nmi = jnp.where(trivial, 1.0, jnp.where(informative, jnp.minimum(ratio, 1.0), 0.0))
    # no valid point at all: there is no partition to score (sklearn's 1.0 would count as perfect)
    empty = s.n == 0
    return jnp.where(empty, jnp.nan, ari), jnp.where(empty, jnp.nan, nmi)


def _entropy_terms(weight, size, n):
    """``-sum weight * log(size / n) / n`` over entries with ``weight > 0``."""
    valid = weight > 0
    logs = _log_ratio(jnp.where(valid, size - n, 0.0), n)  # log(size / n)
    return -jnp.sum(jnp.where(valid, weight * logs, 0.0)) / n


def _table_stats(table) -> _Stats:
    """Sufficient statistics from a contingency table ``(n_true, n_pred)`` of float counts."""
    a = table.sum(axis=1, keepdims=True)  # (n_true, 1) class sizes
    b = table.sum(axis=0, keepdims=True)  # (1, n_pred) cluster sizes
    n = a.sum()
    n_safe = jnp.maximum(n, 1.0)

    # For a point in cell (i, j): the other points of its class outside the cell, of its cluster
    # outside the cell, and in neither its class nor its cluster. All (n_true, n_pred), >= 0.
    row_only = a - table
    col_only = b - table
    neither = n - a - b + table

    # Pair counts, cell by cell: each term is a product of non-negative integers.
    tp = jnp.sum(table * (table - 1.0))
    fn = jnp.sum(table * row_only)
    fp = jnp.sum(table * col_only)
    tn = jnp.sum(table * neither)

    # MI terms log(N n_ij / (a_i b_j)), using N n_ij - a_i b_j = n_ij neither - row_only col_only.
    occupied = table > 0
    diff = jnp.where(occupied, table * neither - row_only * col_only, 0.0)
    log_cell = _log_ratio(diff, jnp.where(occupied, a * b, 1.0))
    mi = jnp.sum(jnp.where(occupied, table * log_cell, 0.0)) / n_safe

    return _Stats(
        n=n,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        mi=mi,
        h_true=_entropy_terms(a, a, n_safe),
        h_pred=_entropy_terms(b, b, n_safe),
        k_true=jnp.sum(a > 0).astype(table.dtype),
        k_pred=jnp.sum(b > 0).astype(table.dtype),
    )


def _starts(*sorted_keys):
    """``(N,)`` bool: True where any key differs from the previous element (and at 0)."""
    changed = jnp.zeros(sorted_keys[0].shape[0] - 1, dtype=bool)
    for key in sorted_keys:
        changed = changed | (key[1:] != key[:-1])
    return jnp.concatenate([jnp.ones(1, dtype=bool), changed])


def _group_sizes(starts, weights):
    """Per-element weighted group size and number of non-empty groups, in sorted order.

    ``starts`` (N,) marks the first element of each run of equal keys; ``weights`` (N,) are the
    element weights in the same order.
    """
    n = starts.shape[0]
    group = jnp.cumsum(starts) - 1  # (N,) group id, non-decreasing
    totals = jax.ops.segment_sum(weights, group, num_segments=n, indices_are_sorted=True)  # (N,)
    size = totals[group]  # (N,)
    n_groups = jnp.sum(starts & (size > 0)).astype(weights.dtype)
    return size, n_groups


def _sorted_stats(labels_true, labels_pred, weights) -> _Stats:
    """Sufficient statistics for arbitrary integer labels, by sorting. Inputs are ``(N,)``."""
    n_elems = labels_true.shape[0]
    if n_elems == 0:  # static: nothing to sort
        zero = jnp.zeros((), weights.dtype)
        return _Stats(*([zero] * len(_Stats._fields)))
    index = jnp.arange(n_elems)

    # Sorted by (true, pred): cells are runs, and so are true classes (runs of the first key).
    # (XLA:CPU sorts get much slower with every extra operand, so weights are gathered instead.)
    t_s, p_s, order_tp = lax.sort((labels_true, labels_pred, index), num_keys=2)
    w = weights[order_tp]
    true_starts = _starts(t_s)
    a, k_true = _group_sizes(true_starts, w)  # (N,) class size of each element
    c, _ = _group_sizes(true_starts | _starts(p_s), w)  # (N,) cell size n_ij of each element

    # Sorted by pred alone for the cluster sizes, then moved into the (true, pred) order.
    p_only, order_p = lax.sort((labels_pred, index), num_keys=1)
    w_p = weights[order_p]
    b_p, k_pred = _group_sizes(_starts(p_only), w_p)
    b_orig = jnp.zeros_like(b_p).at[order_p].set(b_p, unique_indices=True)  # (N,) original order
    b = b_orig[order_tp]  # (N,) cluster size of each element, in (true, pred) order

    n = jnp.sum(w)
    n_safe = jnp.maximum(n, 1.0)
    valid = w > 0
    a, b, c = (jnp.where(valid, x, 1.0) for x in (a, b, c))  # invalid elements: harmless sizes

    # A cell (class, cluster) of size s is visited s times, so a sum over cells of s * f(cell)
    # is a sum over elements of f(own cell), e.g. sum_cells n_ij (n_ij - 1) = sum_el (c - 1).
    row_only, col_only, neither = a - c, b - c, n - a - b + c  # (N,) as in _table_stats
    tp = jnp.sum(w * (c - 1.0))
    fn = jnp.sum(w * row_only)
    fp = jnp.sum(w * col_only)
    tn = jnp.sum(w * neither)
    diff = jnp.where(valid, c * neither - row_only * col_only, 0.0)  # N n_ij - a_i b_j
    mi = jnp.sum(w * _log_ratio(diff, a * b)) / n_safe

    return _Stats(
        n=n,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        mi=mi,
        h_true=_entropy_terms(w, a, n_safe),
        h_pred=_entropy_terms(w, b, n_safe),
        k_true=k_true,
        k_pred=k_pred,
    )


def _weights(mask, n: int):
    if mask is None:
        return jnp.ones(n, float_dtype())
    return jnp.asarray(mask).astype(float_dtype())


def _negative(labels):
    """``(N,)`` bool: the label is negative (never for unsigned dtypes)."""
    if jnp.issubdtype(labels.dtype, jnp.unsignedinteger):
        return jnp.zeros(labels.shape, bool)
    return labels < 0


def _stats(labels_true, labels_pred, mask, n_true, n_pred):
    """``(stats, bad)``: the sufficient statistics, and a scalar bool, some valid label out of
    range: outside ``[0, n_true)`` / ``[0, n_pred)`` with bounds, negative (no label) without."""
    weights = _weights(mask, labels_true.shape[0])  # (N,)
    if n_true is None:
        bad = jnp.any((weights > 0) & (_negative(labels_true) | _negative(labels_pred)))
        return _sorted_stats(labels_true, labels_pred, weights), bad
    table, bad = count_table(labels_true, labels_pred, weights, n_true, n_pred)
    return _table_stats(table), bad


def _nan_if(bad, value):
    """``value``, or NaN where ``bad`` (a traced out-of-range label)."""
    return jnp.where(bad, jnp.nan, value)


def _check_pair(labels_true, labels_pred, mask, n_true, n_pred, *, bounds_required: bool = False):
    """Validate the arguments shared by ari/nmi/contingency."""
    n_true, n_pred = check_bounds(n_true, n_pred, bounds_required)
    len_true, len_pred = np.shape(labels_true)[:1], np.shape(labels_pred)[:1]
    if np.ndim(labels_true) == 1 and np.ndim(labels_pred) == 1 and len_true != len_pred:
        raise ValueError(
            f"labels_true and labels_pred must have the same length, got labels_true of length "
            f"{len_true[0]} and labels_pred of length {len_pred[0]}"
        )
    if mask is not None and np.ndim(labels_true) == 1:
        check_mask(mask, len_true[0], "labels_true and labels_pred")
    check_labels("labels_true", labels_true, bound_name="n_true", bound=n_true, mask=mask)
    check_labels("labels_pred", labels_pred, bound_name="n_pred", bound=n_pred, mask=mask)
    return _checks.host_arrays(labels_true=labels_true, labels_pred=labels_pred, mask=mask)


def _check_contingency(labels_true, labels_pred, mask, n_true, n_pred):
    return _check_pair(labels_true, labels_pred, mask, n_true, n_pred, bounds_required=True)


def _host_ari(arguments):
    """:func:`ari` of host labels in NumPy (no compile); ``None``: the kernel's call."""
    valid = host_valid_pair(arguments)
    return None if valid is None else host_result(host_scores(*valid)[0])


def _host_nmi(arguments):
    """:func:`nmi` of host labels in NumPy (no compile); ``None``: the kernel's call."""
    valid = host_valid_pair(arguments)
    return None if valid is None else host_result(host_scores(*valid)[1])


def _host_fg_ari(arguments):
    """:func:`fg_ari` of host ids in NumPy (no compile); ``None``: the kernel's call."""
    fg = host_foreground(arguments)
    return None if fg is None else host_result(host_scores(*fg)[0])


# Eager calls on host labels are padded to a few lengths (masked out): one program a bucket.
_PAIR_BUCKETS = _checks.Buckets(points=("labels_true", "labels_pred"), mask="mask")
# Scenes: ids raveled and padded with the background id 0, which the score leaves out.
_SCENE_BUCKETS = _checks.Buckets(points=("masks_true", "labels_pred"), flatten=True)


@_checks.checked_jit(_check_pair, static_argnames=("n_true", "n_pred"), buckets=_PAIR_BUCKETS, host=_host_ari)
def ari(labels_true, labels_pred, mask=None, *, n_true=None, n_pred=None):
    """Adjusted Rand index, equal to ``sklearn.metrics.adjusted_rand_score`` on the valid entries.

    Args:
      labels_true: ``(N,)`` integer reference labels.
      labels_pred: ``(N,)`` integer predicted labels.
      mask: optional ``(N,)`` bool; only entries where it is True are used (others may hold any
        label, e.g. ``-1`` padding).
      n_true, n_pred: optional static ints, given together. When given, labels must lie in
        ``[0, n_true)`` / ``[0, n_pred)`` and the fast contingency-table path is used; otherwise any
        integer values are allowed (sort-based path). Both paths give the same result.

    Returns:
      Scalar float in ``[-0.5, 1]``: 1 for identical partitions (up to relabelling), ~0 for
      independent ones. As in sklearn it is 1 when no pair of points is split differently by the
      two labelings (``fn == fp == 0``): one valid point, identical partitions, all singletons on
      both sides, a single cluster on both sides. **NaN with no valid point** (an all-False
      ``mask``, or no entry): there is no partition to score (scikit-learn returns 1.0 there).

    Edge cases: NaN in, NaN out. A valid label that is out of range -- negative (``-1``, "no label",
    what :func:`tokdyn.dynamics.run` gives a point whose distances are not finite, e.g. after a
    blow-up), or, with ``n_true``/``n_pred``, outside ``[0, n_true)`` / ``[0, n_pred)`` -- is a
    ``ValueError`` when the labels (and mask) are host data, and makes the result **NaN** when they
    are JAX arrays (not inspected on the host), never a plausible score such as 0.0; invalid
    (masked) entries are never looked at.
    Precision: JAX's default float (float32, or float64 under ``jax.enable_x64(True)``), agreeing
    with sklearn to ~1e-6 in float32 and ~1e-12 in float64 (the module's numerical notes).

    Host calls: on host labels (NumPy, lists) the score is computed in float64 NumPy from the sparse
    contingency table (the same numbers, rounded to JAX's default float; no compile, and less time
    than scikit-learn's score); with no valid entry the call goes on to the kernel,
    padded to a power of two (:func:`tokdyn.checks.bucket_size`). JAX arrays and traced calls run
    the kernel. Many labelings on a device score fastest in one call: padded to one length with a
    mask, under ``jax.vmap`` (:ref:`metrics-host-calls`).

    Examples:
      >>> import numpy as np
      >>> from sklearn.metrics import adjusted_rand_score
      >>> from tokdyn import metrics
      >>> true, pred = np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 0, 2])
      >>> print(f"{float(metrics.ari(true, pred)):.4f} {adjusted_rand_score(true, pred):.4f}")
      0.4444 0.4444
      >>> print(f"{float(metrics.ari(true, 5 - true)):.1f}")   # a relabelling scores 1
      1.0

    References:
      Hubert, L. and Arabie, P. (1985). Comparing partitions. *Journal of Classification* 2(1),
      193-218.
    """
    stats, bad = _stats(jnp.asarray(labels_true), jnp.asarray(labels_pred), mask, n_true, n_pred)
    return _nan_if(bad, _finish(stats)[0])


@_checks.checked_jit(_check_pair, static_argnames=("n_true", "n_pred"), buckets=_PAIR_BUCKETS, host=_host_nmi)
def nmi(labels_true, labels_pred, mask=None, *, n_true=None, n_pred=None):
    """Normalised mutual information, ``MI / mean(H_true, H_pred)``, on the valid entries.

    Equal to ``sklearn.metrics.normalized_mutual_info_score`` (``average_method="arithmetic"``),
    including its special cases: 1 when both labelings are a single cluster; 0 when only one of
    them is, or when the mutual information is 0. **NaN with no valid point** (scikit-learn
    returns 1.0 there), as :func:`ari`. MI is summed
    cell-wise, ``sum n_ij / N log(N n_ij / (a_i b_j))``.

    Args:
      labels_true: ``(N,)`` integer reference labels.
      labels_pred: ``(N,)`` integer predicted labels.
      mask: optional ``(N,)`` bool; only entries where it is True are used.
      n_true, n_pred: optional static ints, given together: labels then lie in ``[0, n_true)`` /
        ``[0, n_pred)`` (the contingency-table path); otherwise any integer values (sort-based path).

    Returns:
      Scalar float in ``[0, 1]``.

    Edge cases: as :func:`ari`, NaN in, NaN out: **NaN** when a valid label held in a JAX array is
    negative (``-1``, "no label") or, with ``n_true``/``n_pred``, outside its bounds (host labels
    are refused with a ``ValueError``).
    Precision: as :func:`ari`.

    Host calls: on host labels (NumPy, lists) the score is computed in float64 NumPy from the sparse
    contingency table (the same numbers, rounded to JAX's default float; no compile, and less time
    than scikit-learn's score); with no valid entry the call goes on to the kernel,
    padded to a power of two (:func:`tokdyn.checks.bucket_size`). JAX arrays and traced calls run
    the kernel. Many labelings on a device score fastest in one call: padded to one length with a
    mask, under ``jax.vmap`` (:ref:`metrics-host-calls`).

    Examples:
      >>> import numpy as np
      >>> from sklearn.metrics import normalized_mutual_info_score
      >>> from tokdyn import metrics
      >>> true, pred = np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 0, 2])
      >>> print(f"{float(metrics.nmi(true, pred)):.4f} {normalized_mutual_info_score(true, pred):.4f}")
      0.7397 0.7397

    References:
      Vinh, N. X., Epps, J. and Bailey, J. (2010). Information theoretic measures for clusterings
      comparison: variants, properties, normalization and correction for chance. *Journal of
      Machine Learning Research* 11, 2837-2854.
    """
    stats, bad = _stats(jnp.asarray(labels_true), jnp.asarray(labels_pred), mask, n_true, n_pred)
    return _nan_if(bad, _finish(stats)[1])


@_checks.checked_jit(_check_contingency, static_argnames=("n_true", "n_pred"), buckets=_PAIR_BUCKETS)
def contingency(labels_true, labels_pred, mask=None, *, n_true, n_pred):
    """Contingency table: ``C[i, j]`` = number of valid points with true label i and predicted j.

    Args:
      labels_true: ``(N,)`` integer labels in ``[0, n_true)`` (where ``mask`` is True).
      labels_pred: ``(N,)`` integer labels in ``[0, n_pred)`` (where ``mask`` is True).
      mask: optional ``(N,)`` bool selecting the valid entries.
      n_true, n_pred: static ints, the table's shape.

    Returns:
      ``(n_true, n_pred)`` array of JAX's default int dtype. A valid label outside its bounds is a
      ``ValueError`` for host data; held in a JAX array, it makes **every entry -1** (a count is
      never negative), instead of a table with the label dropped or counted in another cell.

    Host calls: NumPy inputs are padded to a power of two from 32 (masked out; results as unpadded),
    so inputs of many lengths compile one program a bucket, not one a length (:ref:`metrics-host-calls`).

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> true, pred = np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 0, 2])
      >>> metrics.contingency(true, pred, n_true=3, n_pred=3).tolist()
      [[0, 2, 0], [2, 0, 0], [1, 0, 1]]
    """
    n = jnp.shape(labels_true)[0]
    weights = jnp.ones(n, int_dtype()) if mask is None else jnp.asarray(mask).astype(int_dtype())
    table, bad = count_table(jnp.asarray(labels_true), jnp.asarray(labels_pred), weights, n_true, n_pred)
    return jnp.where(bad, -1, table)


def _check_fg_ari(masks_true, labels_pred, n_true, n_pred):
    return check_scene(masks_true, labels_pred, n_true, n_pred, bounds_required=False)


def _check_matched_iou(masks_true, labels_pred, n_true, n_pred):
    return check_scene(masks_true, labels_pred, n_true, n_pred, bounds_required=True)


@_checks.checked_jit(_check_fg_ari, static_argnames=("n_true", "n_pred"), buckets=_SCENE_BUCKETS, host=_host_fg_ari)
def fg_ari(masks_true, labels_pred, *, n_true=None, n_pred=None):
    """Foreground adjusted Rand index: ARI over the pixels of objects only (``masks_true > 0``).

    The background pixels are left out, as in the evaluations of Slot Attention and SAVi (FG-ARI):
    the result equals ``sklearn.metrics.adjusted_rand_score(masks_true[fg], labels_pred[fg])`` with
    ``fg = masks_true > 0``, special cases included (1 with one foreground pixel, 1 when a single
    object is predicted as a single segment, 0 when a single object is split), except that a
    scene with **no foreground pixel gives NaN** (nothing to score; :func:`ari` on no point).

    Args:
      masks_true: integer instance ids of any shape (e.g. ``(H, W)``, or flattened ``(N,)``);
        ``0`` is background (negative ids, e.g. ``-1`` padding, are left out too).
      labels_pred: integer predicted segment ids, the same shape.
      n_true, n_pred: optional static ints, given together: ids lie in ``[0, n_true)`` (background
        included) and ``[0, n_pred)``, and the contingency-table path of :func:`ari` is used (the
        fast one); without them any integer ids are allowed (sort-based path). Same results.

    Returns:
      Scalar float in ``[-0.5, 1]`` (JAX's default float; precision as :func:`ari`). With
      ``n_true``/``n_pred``: host ids outside ``[0, n_true)`` / ``[0, n_pred)`` (any pixel) are a
      ``ValueError``; ids held in JAX arrays are not inspected, and a foreground pixel whose id
      (``masks_true >= n_true``, or its ``labels_pred`` outside ``[0, n_pred)``) is out of range
      makes the result **NaN** (background pixels do not enter the score and are not looked at).

    Edge cases: NaN in, NaN out, with or without bounds: a foreground pixel whose ``labels_pred`` is
    negative (``-1``, "no label") makes the result **NaN** when held in a JAX array, a
    ``ValueError`` for host data.

    Jittable and vmappable: a batch of scenes ``(B, H, W)`` with ``jax.vmap(fg_ari)`` (bind the
    bounds with ``functools.partial``).

    Host calls: ids on the host are scored in float64 NumPy (no compile), as :func:`ari`; a scene
    with no foreground pixel goes on to the kernel, padded to a power of two.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks = np.array([[0, 0, 1, 1], [0, 2, 2, 2]])   # 0 is background
      >>> pred = np.array([[1, 1, 1, 1], [1, 0, 0, 0]])   # the background's label does not count
      >>> print(f"{float(metrics.fg_ari(masks, pred)):.1f}")
      1.0

    References:
      Greff, K., Kaufman, R. L., Kabra, R., Watters, N., Burgess, C., Zoran, D., Matthey, L.,
      Botvinick, M. and Lerchner, A. (2019). Multi-object representation learning with iterative
      variational inference. *ICML 2019*. arXiv:1903.00450.
    """
    t = jnp.ravel(jnp.asarray(masks_true))  # (N,)
    p = jnp.ravel(jnp.asarray(labels_pred))  # (N,)
    stats, bad = _stats(t, p, t > 0, n_true, n_pred)
    return _nan_if(bad, _finish(stats)[0])


def _object_iou(t, p, n_true: int, n_pred: int):
    """``(n_true - 1, n_pred)`` IoU of every object (ids 1..n_true-1) with every predicted
    segment, over all pixels, ``(n_true - 1,)`` bool: the object has at least one pixel, and a
    scalar bool: some id lies outside ``[0, n_true)`` / ``[0, n_pred)``."""
    table, bad = count_table(t, p, jnp.ones(t.shape[0], float_dtype()), n_true, n_pred)  # (n_true, n_pred)
    area_true = table.sum(axis=1)  # (n_true,) background first
    area_pred = table.sum(axis=0)  # (n_pred,) background pixels included
    inter = table[1:]  # (n_true - 1, n_pred)
    union = area_true[1:, None] + area_pred[None, :] - inter
    iou = jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)
    return iou, area_true[1:] > 0, bad


@_checks.checked_jit(_check_matched_iou, static_argnames=("n_true", "n_pred"))
def matched_iou(masks_true, labels_pred, *, n_true, n_pred):
    """Mean IoU of the objects with the predicted segments matched to them one-to-one.

    The objects are the ids ``1 .. n_true - 1`` of ``masks_true`` that hold at least one pixel;
    the background (id 0) is not an object and is never matched. Each predicted segment is all the
    pixels with that label, **background pixels included** (IoU over all pixels, the standard in
    slot-based segmentation: a slot that also covers background is penalised). The matching
    maximises the total IoU, each segment matched to at most one object
    (:func:`tokdyn.assignment.linear_assignment`, the auction; equal to SciPy's Hungarian matching
    up to the auction's margin, ``(n_true - 1) / levels(C)`` on the total, ``C = max(n_pred,
    n_true - 1)``: below float32 resolution for the usual sizes). With fewer segments than
    objects, the unmatched objects count IoU 0.

    Args:
      masks_true: integer instance ids in ``[0, n_true)`` of any shape (e.g. ``(H, W)``); 0 is
        background.
      labels_pred: integer segment ids in ``[0, n_pred)``, the same shape.
      n_true, n_pred: static ints >= 1 (``n_true`` counts the background id).

    Returns:
      Scalar float in ``[0, 1]``, never NaN for ids in range. An id outside ``[0, n_true)`` /
      ``[0, n_pred)`` is a ``ValueError`` for host data; held in a JAX array it makes the result
      **NaN** (any pixel: every pixel counts in the IoU). **A scene with no object** (all background, or
      ``n_true == 1``) **gives 1.0**: nothing to find, nothing missed (where :func:`fg_ari`, a
      partition of the foreground pixels, has nothing to partition and gives NaN). To
      leave such scenes out of an average instead, weight each scene by its number of objects,
      ``jnp.sum(cluster_sizes(masks_true.ravel(), n_true)[1:] > 0)`` (weights 0 drop them).

    Jittable and vmappable: a batch of scenes ``(B, H, W)`` with
    ``jax.vmap(functools.partial(matched_iou, n_true=..., n_pred=...))``.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks = np.array([0, 1, 1, 2, 2, 2])   # objects 1 and 2
      >>> pred = np.array([2, 2, 2, 0, 0, 1])   # segment 2 covers object 1 and a background pixel
      >>> print(f"{float(metrics.matched_iou(masks, pred, n_true=3, n_pred=3)):.4f}")   # (2/3 + 2/3) / 2
      0.6667
      >>> print(f"{metrics.matched_iou_host(masks, pred, n_true=3, n_pred=3):.4f}")
      0.6667

    References:
      Kuhn, H. W. (1955). The Hungarian method for the assignment problem. *Naval Research
      Logistics Quarterly* 2(1-2), 83-97.
    """
    n_objects = n_true - 1
    t = jnp.ravel(jnp.asarray(masks_true))  # (N,)
    p = jnp.ravel(jnp.asarray(labels_pred))  # (N,)
    if n_objects == 0:  # static: only background ids
        bad = ~jnp.all(in_range(t, 1) & in_range(p, n_pred))
        return jnp.where(bad, jnp.nan, jnp.ones((), float_dtype()))
    iou, present, bad = _object_iou(t, p, n_true, n_pred)  # (n_objects, n_pred), (n_objects,), ()
    width = max(n_pred, n_objects)  # too few segments: columns of IoU 0 stand for "unmatched"
    benefit = jnp.pad(iou, ((0, 0), (0, width - n_pred)))  # (n_objects, width)
    col = assignment.linear_assignment(benefit)  # (n_objects,)
    matched = jnp.take_along_axis(benefit, col[:, None], axis=1)[:, 0]  # (n_objects,)
    count = jnp.sum(present)
    total = jnp.sum(jnp.where(present, matched, 0.0))
    return jnp.where(bad, jnp.nan, jnp.where(count > 0, total / jnp.maximum(count, 1), 1.0))


def matched_iou_host(masks_true, labels_pred, *, n_true, n_pred) -> float:
    """:func:`matched_iou` on host data in float64 NumPy, matched with SciPy's
    ``linear_sum_assignment`` (the Hungarian reference), with the same conventions and checks.
    Not traceable: JAX arrays are copied to the host.

    Args:
      masks_true: integer instance ids in ``[0, n_true)`` of any shape (e.g. ``(H, W)``); 0 is
        background.
      labels_pred: integer segment ids in ``[0, n_pred)``, the same shape.
      n_true, n_pred: ints >= 1 (``n_true`` counts the background id).

    Returns:
      A Python float in ``[0, 1]``; 1.0 for a scene with no object.

    Raises:
      ValueError: shapes that differ, or an id outside its bounds.
      TypeError: ids of a non-integer dtype, or bounds that are not ints.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks, pred = np.array([0, 1, 1, 2]), np.array([0, 1, 1, 0])   # IoU 1 and 1/2
      >>> print(f"{metrics.matched_iou_host(masks, pred, n_true=3, n_pred=2):.2f}")
      0.75
    """
    from scipy.optimize import linear_sum_assignment

    masks_true, labels_pred = np.asarray(masks_true), np.asarray(labels_pred)
    _check_matched_iou(masks_true, labels_pred, n_true, n_pred)
    t, p = masks_true.ravel().astype(np.int64), labels_pred.ravel().astype(np.int64)
    table = np.bincount(t * n_pred + p, minlength=n_true * n_pred).reshape(n_true, n_pred).astype(np.float64)
    area_true, area_pred = table.sum(axis=1), table.sum(axis=0)
    objects = np.flatnonzero(area_true[1:] > 0) + 1
    if objects.size == 0:
        return 1.0
    iou = table[objects] / (area_true[objects, None] + area_pred[None, :] - table[objects])  # unions > 0
    rows, cols = linear_sum_assignment(iou, maximize=True)  # min(objects, n_pred) pairs
    return float(iou[rows, cols].sum() / objects.size)
