"""Agreement of a segmentation with instance masks: :func:`fg_ari` (the adjusted Rand index over the
foreground pixels, as Slot Attention's and SAVi's evaluations score) and :func:`matched_iou` (mean
IoU of the objects with the segments matched to them one-to-one; :func:`matched_iou_host` is the
NumPy + SciPy reference).

:func:`fg_ari` scores through :func:`tokdyn.metrics.partition.ari`'s statistics
(:mod:`tokdyn.metrics.pairs`): with ``n_true`` and ``n_pred`` (static id bounds) from the
contingency table, without them by sorting, with identical results. Called eagerly on host ids
(NumPy, Python lists) it computes the same number in float64 NumPy (no compile); a scene with no
foreground pixel goes on to the kernel, padded to a power of two (:func:`tokdyn.checks.bucket_size`).
JAX arrays, and calls inside a ``jit``/``vmap``, run the kernels as they are
(:ref:`metrics-host-calls`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, assignment
from tokdyn.metrics._labels import (
    check_scene,
    count_table,
    float_dtype,
    host_foreground,
    host_result,
    host_scores,
    in_range,
)
from tokdyn.metrics.pairs import ari_nmi, nan_if, pair_stats


def _host_fg_ari(arguments):
    """:func:`fg_ari` of host ids in NumPy (no compile); ``None``: the kernel's call."""
    fg = host_foreground(arguments)
    return None if fg is None else host_result(host_scores(*fg)[0])


# Scenes: ids raveled and padded with the background id 0, which the score leaves out.
_SCENE_BUCKETS = _checks.Buckets(points=("masks_true", "labels_pred"), flatten=True)


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
    scene with **no foreground pixel gives NaN** (nothing to score;
    :func:`~tokdyn.metrics.partition.ari` on no point).

    Args:
      masks_true: integer instance ids of any shape (e.g. ``(H, W)``, or flattened ``(N,)``);
        ``0`` is background (negative ids, e.g. ``-1`` padding, are left out too).
      labels_pred: integer predicted segment ids, the same shape.
      n_true, n_pred: optional static ints, given together: ids lie in ``[0, n_true)`` (background
        included) and ``[0, n_pred)``, and the contingency-table path of
        :func:`~tokdyn.metrics.partition.ari` is used (the fast one); without them any integer ids are allowed
        (sort-based path). Same results.

    Returns:
      Scalar float in ``[-0.5, 1]`` (JAX's default float; precision as
      :func:`~tokdyn.metrics.partition.ari`). With ``n_true``/``n_pred``: host ids outside ``[0, n_true)`` / ``[0, n_pred)`` (any pixel) are a
      ``ValueError``; ids held in JAX arrays are not inspected, and a foreground pixel whose id
      (``masks_true >= n_true``, or its ``labels_pred`` outside ``[0, n_pred)``) is out of range
      makes the result **NaN** (background pixels do not enter the score and are not looked at).

    Edge cases: NaN in, NaN out, with or without bounds: a foreground pixel whose ``labels_pred`` is
    negative (``-1``, "no label") makes the result **NaN** when held in a JAX array, a
    ``ValueError`` for host data.

    Jittable and vmappable: a batch of scenes ``(B, H, W)`` with ``jax.vmap(fg_ari)`` (bind the
    bounds with ``functools.partial``).

    Host calls: ids on the host are scored in float64 NumPy (no compile), as
    :func:`~tokdyn.metrics.partition.ari`; a scene with no foreground pixel goes on to the kernel, padded to a power
    of two.

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
    stats, bad = pair_stats(t, p, t > 0, n_true, n_pred)
    return nan_if(bad, ari_nmi(stats)[0])


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
