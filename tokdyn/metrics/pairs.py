"""The sufficient statistics of a pair of labelings, from which :func:`ari_nmi` gives the adjusted
Rand index and the normalised mutual information with scikit-learn's special cases: the kernels of
:mod:`tokdyn.metrics.partition` (:func:`~tokdyn.metrics.partition.ari`,
:func:`~tokdyn.metrics.partition.nmi`) and :mod:`tokdyn.metrics.segmentation`
(:func:`~tokdyn.metrics.segmentation.fg_ari`) score through them.

Two paths give the same :class:`Stats`: :func:`table_stats` from a contingency table (labels with
static bounds, one ``segment_sum`` over the table's cells) and :func:`sorted_stats` by sorting (any
integer labels); :func:`pair_stats` picks one. The numerics: :ref:`metrics-partition`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from tokdyn.metrics._labels import count_table, float_dtype


class Stats(NamedTuple):
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


def ari_nmi(s: Stats):
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


def table_stats(table) -> Stats:
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

    return Stats(
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


def sorted_stats(labels_true, labels_pred, weights) -> Stats:
    """Sufficient statistics for arbitrary integer labels, by sorting. Inputs are ``(N,)``."""
    n_elems = labels_true.shape[0]
    if n_elems == 0:  # static: nothing to sort
        zero = jnp.zeros((), weights.dtype)
        return Stats(*([zero] * len(Stats._fields)))
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
    row_only, col_only, neither = a - c, b - c, n - a - b + c  # (N,) as in table_stats
    tp = jnp.sum(w * (c - 1.0))
    fn = jnp.sum(w * row_only)
    fp = jnp.sum(w * col_only)
    tn = jnp.sum(w * neither)
    diff = jnp.where(valid, c * neither - row_only * col_only, 0.0)  # N n_ij - a_i b_j
    mi = jnp.sum(w * _log_ratio(diff, a * b)) / n_safe

    return Stats(
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


def pair_stats(labels_true, labels_pred, mask, n_true, n_pred):
    """``(stats, bad)``: the sufficient statistics, and a scalar bool, some valid label out of
    range: outside ``[0, n_true)`` / ``[0, n_pred)`` with bounds, negative (no label) without."""
    weights = _weights(mask, labels_true.shape[0])  # (N,)
    if n_true is None:
        bad = jnp.any((weights > 0) & (_negative(labels_true) | _negative(labels_pred)))
        return sorted_stats(labels_true, labels_pred, weights), bad
    table, bad = count_table(labels_true, labels_pred, weights, n_true, n_pred)
    return table_stats(table), bad


def nan_if(bad, value):
    """``value``, or NaN where ``bad`` (a traced out-of-range label)."""
    return jnp.where(bad, jnp.nan, value)
