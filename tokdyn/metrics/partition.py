r"""Agreement of two partitions: :func:`ari`, :func:`nmi` (equal to scikit-learn's) and the
:func:`contingency` table. The agreement of a segmentation with instance masks,
:func:`~tokdyn.metrics.segmentation.fg_ari` (ARI over the foreground) and
:func:`~tokdyn.metrics.segmentation.matched_iou` (mean IoU of one-to-one matched segments;
:func:`~tokdyn.metrics.segmentation.matched_iou_host` is the NumPy + SciPy reference), is
:mod:`tokdyn.metrics.segmentation`'s, also reached from here; the sufficient statistics both
score from, :mod:`tokdyn.metrics.pairs`'s.

Give ``n_true`` and ``n_pred`` (static label bounds) for the fast path, one ``segment_sum`` over
the contingency table's cells; without them any integer labels are taken (a sort-based path),
with identical results. Both follow scikit-learn's special cases without dividing zero by zero,
and agree with it to ~1e-6 in float32 (~1e-12 under ``jax.enable_x64(True)``).

The two code paths and the numerics in detail: :ref:`metrics-partition`.

Called eagerly on host arrays (NumPy, Python lists), :func:`ari`, :func:`nmi` and
:func:`~tokdyn.metrics.segmentation.fg_ari` compute the same numbers in float64 NumPy (no
compile); :func:`contingency` and those three when no entry is valid pad the labels to one of a
few lengths (powers of two from 32, the padding masked out: :func:`tokdyn.checks.bucket_size`),
so labelings of many lengths compile one program a bucket, not one a length, with the results of
the unpadded call. JAX arrays, and calls inside a
``jit``/``vmap``, run the kernel as they are. Many labelings score fastest in one call: padded to
one length with a mask, under ``jax.vmap``. Measured costs: :ref:`metrics-host-calls`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.metrics._labels import (
    check_bounds,
    check_labels,
    check_mask,
    count_table,
    host_result,
    host_scores,
    host_valid_pair,
    int_dtype,
)
from tokdyn.metrics.pairs import ari_nmi, nan_if, pair_stats

# A segmentation's scores, reached from here as they always were.
from tokdyn.metrics.segmentation import fg_ari, matched_iou, matched_iou_host  # noqa: F401


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


# Eager calls on host labels are padded to a few lengths (masked out): one program a bucket.
_PAIR_BUCKETS = _checks.Buckets(points=("labels_true", "labels_pred"), mask="mask")


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
    stats, bad = pair_stats(jnp.asarray(labels_true), jnp.asarray(labels_pred), mask, n_true, n_pred)
    return nan_if(bad, ari_nmi(stats)[0])


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
    stats, bad = pair_stats(jnp.asarray(labels_true), jnp.asarray(labels_pred), mask, n_true, n_pred)
    return nan_if(bad, ari_nmi(stats)[1])


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
