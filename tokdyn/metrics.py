"""Clustering metrics as pure JAX functions: ARI, NMI, contingency tables, SSE, cluster usage.

Every function is jittable and vmappable and works on fixed-shape inputs with an optional boolean
``mask`` that marks the valid entries; invalid entries are ignored entirely (they may hold any
label, ``-1`` included), so labelings of different lengths can share one padded shape in a vmap.

Public functions

- :func:`ari` -- adjusted Rand index, equal to ``sklearn.metrics.adjusted_rand_score``.
- :func:`nmi` -- normalised mutual information (arithmetic mean normaliser), equal to
  ``sklearn.metrics.normalized_mutual_info_score``.
- :func:`contingency` -- the ``(n_true, n_pred)`` table of co-occurrence counts.
- :func:`sse` -- sum of squared distances of points to their assigned centre.
- :func:`cluster_sizes`, :func:`n_used`, :func:`collapsed` -- how many points each cluster (token)
  receives, how many clusters are used, and whether fewer tokens are used than there are clusters.
- :func:`fg_ari`, :func:`matched_iou` -- object-centric segmentation of a scene (an instance mask,
  0 = background, against predicted segment ids, any shape): ARI over the foreground pixels, and
  the mean IoU of the objects with the segments matched to them one-to-one (the matching by the
  auction of :mod:`tokdyn.assignment`); :func:`matched_iou_host` is the NumPy + SciPy reference.
- :func:`video_fg_ari`, :func:`frame_fg_ari`, :func:`track_labels`, :func:`track_switches`,
  :func:`identity_persistence` -- segmentation of a clip through time (masks of shape ``(F, ...)``
  whose ids are track identities): FG-ARI of the whole clip (an identity switch is an error) and
  of every frame alone, the predicted id that carries each track in each frame, the switches of
  that id while a track stays visible, and whether a track gets its id back after a gap.

Two code paths for ARI/NMI, with identical results
---------------------------------------------------

* **Bounded labels** (``n_true`` and ``n_pred`` given as static ints, labels in ``[0, n_true)`` and
  ``[0, n_pred)``): the contingency table is built with one ``segment_sum`` over the cell index
  ``true * n_pred + pred`` and everything is computed from it. This is the fast path (see the
  benchmark in ``benchmarks/bench_metrics.py``).
* **Arbitrary labels** (no bounds; any integer values, negative too, even under ``jit``): the
  elements are sorted by ``(true, pred)`` and by ``pred``; group ids come from a cumulative sum of
  "key changed" flags, group sizes from a ``segment_sum``. Each element then knows the size of its
  true class ``a``, its predicted cluster ``b`` and its cell ``n_ij``, and every statistic is a sum
  over elements (a cell of size ``n_ij`` is visited ``n_ij`` times).

Both paths reduce to the same sufficient statistics (``_Stats``), and one private function
(``_finish``) turns them into ARI and NMI, with sklearn's special cases written with
``jnp.where`` so that nothing divides zero by zero (no valid points, one point, all singletons,
a single cluster on either side).

Numerical notes
---------------

* ARI uses the pair-confusion form ``2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn))``
  in which each of the four pair counts is a sum of non-negative integers (no cancellation), and
  each product in the numerator is at most half the denominator, so the result is accurate to a few
  units of the float's epsilon.
* MI is summed cell-wise, ``sum n_ij / N log(N n_ij / (a_i b_j))``, and entropies as
  ``-sum a_i / N log(a_i / N)``; a log whose argument is close to 1 is evaluated as ``log1p`` of the
  exactly computed integer difference, which keeps nearly-degenerate labelings accurate.
* Counts are held in the default float dtype and are exact up to 2**24 valid points in float32.
* Results use JAX's default float: float32 normally, float64 under ``jax.enable_x64(True)``. In
  float32 the results agree with sklearn to ~1e-6 on typical inputs; NMI of near-degenerate
  labelings (both almost a single cluster, so both entropies are tiny) can lose float32 accuracy.
  Under ``jax.enable_x64(True)`` the agreement is ~1e-12.

Validation
----------

The public functions are jitted kernels; their arguments are checked in plain Python before anything
is traced: label lengths, mask length and dtype and integer label dtypes always (under a user's
``jit`` and ``vmap`` too), and, when the labels are host data (NumPy), that every valid label lies
in range; errors are ``ValueError``/``TypeError`` that name the argument, the value and what is
allowed. Values held in JAX arrays (device arrays, or tracers inside a user's ``jit``/``vmap``) are
not inspected (that would copy them to the host); instead the kernels detect a valid (unmasked)
label outside its bounds and return a value that cannot be mistaken for a result: NaN for the
float metrics (:func:`ari`, :func:`nmi` and :func:`fg_ari` with bounds, :func:`sse`,
:func:`matched_iou`), ``-1`` in every entry for the counts (:func:`contingency`,
:func:`cluster_sizes`) and ``-1`` for :func:`n_used`; :func:`collapsed`, a bool, is then True.
The detection costs no extra pass over the labels: on the contingency-table path such entries are
counted in one extra segment of its ``segment_sum`` (and of :func:`cluster_sizes`'), and in
:func:`sse` the gather of their centre returns NaN (``mode="fill"``).
Without ``n_true``/``n_pred`` every integer label is allowed, so nothing is out of range.

Label ``-1``
------------

``-1`` means "no label" wherever the package produces it: a padded point, and, from
:func:`tokdyn.dynamics.hard_labels` and the runs, a valid point whose distances are not finite
(the tokens blew up or a traced knob was out of range). Per function:

* :func:`ari`, :func:`nmi`, :func:`contingency`, :func:`fg_ari` and :func:`matched_iou` with
  bounds (``n_true``/``n_pred``), :func:`sse`, :func:`cluster_sizes`, :func:`n_used`: a masked-in
  ``-1`` is a label out of range, so the result is the sentinel above (NaN for the float metrics,
  ``-1`` for the counts); masked-out entries may hold ``-1`` (padding) and are ignored.
* :func:`collapsed` is a bool and has no room for NaN: a masked-in ``-1`` makes it True (as
  :func:`n_used` gives ``-1``); :class:`tokdyn.engine.runs.ClusterRun` reports collapse as a float
  and NaN for a run whose tokens are not finite.
* :func:`ari` and :func:`nmi` *without* bounds (the sort path) take every integer as a label,
  ``-1`` included (scikit-learn's semantics for arbitrary labels): pass ``n_true``/``n_pred`` for the
  NaN rule.
* :func:`fg_ari`: a negative id in ``masks_true`` is background (left out); a masked-in
  (foreground) ``labels_pred`` of ``-1`` gives NaN with bounds, and is a label without them.
* :func:`video_fg_ari` and :func:`frame_fg_ari` as :func:`fg_ari`; :func:`track_labels`,
  :func:`track_switches` and :func:`identity_persistence` (bounds required) look at foreground
  pixels only, where a ``-1`` in ``labels_pred`` is out of range: every entry -2 for
  :func:`track_labels` (where -1 means "not visible"), -1 for the counts.
"""

from __future__ import annotations

import functools
from numbers import Integral
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tokdyn import _checks, assignment

__all__ = [
    "ari",
    "nmi",
    "contingency",
    "sse",
    "cluster_sizes",
    "n_used",
    "collapsed",
    "fg_ari",
    "matched_iou",
    "matched_iou_host",
    "video_fg_ari",
    "frame_fg_ari",
    "track_labels",
    "track_switches",
    "identity_persistence",
]


def _float_dtype():
    """JAX's default float: float32, or float64 under ``jax.enable_x64(True)``."""
    return jnp.zeros(()).dtype


def _int_dtype():
    """JAX's default int: int32, or int64 under ``jax.enable_x64(True)``."""
    return jnp.zeros((), dtype=int).dtype


# ---------------------------------------------------------------------------------------------
# Shared final formulas
# ---------------------------------------------------------------------------------------------


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
    """``(ari, nmi)`` from the sufficient statistics, with sklearn's special cases."""
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
    return ari, nmi


# ---------------------------------------------------------------------------------------------
# Path (a): bounded labels, via the contingency table
# ---------------------------------------------------------------------------------------------


def _comparable(labels):
    """Integer labels in a dtype in which ``labels < bound`` is exact for any bound < 2**31: int32
    for the narrow types (a Python bound would wrap in uint8), the wide ones as they are (a cast to
    int32 could wrap an out-of-range label into range)."""
    if jnp.iinfo(labels.dtype).bits <= 16:
        return labels.astype(jnp.int32)
    return labels


def _inside(labels, bound: int):
    """``(N,)`` bool: the label lies in ``[0, bound)`` (elementwise; fused into its consumer). One
    unsigned comparison: a negative label, reinterpreted as unsigned, is above any bound."""
    labels = _comparable(labels)
    if jnp.issubdtype(labels.dtype, jnp.signedinteger):
        labels = lax.bitcast_convert_type(labels, jnp.dtype(f"uint{jnp.iinfo(labels.dtype).bits}"))
    return labels < bound


def _table(labels_true, labels_pred, weights, n_true: int, n_pred: int):
    """Weighted co-occurrence counts ``(n_true, n_pred)`` via one ``segment_sum``, and a scalar
    bool: some entry of non-zero weight has a label outside ``[0, n_true)`` / ``[0, n_pred)``.

    Such entries go to one extra segment (instead of a wrong cell: ``t * n_pred + p`` of an
    out-of-range ``p`` lands in another row), so detecting them costs no pass over the labels."""
    inside = _inside(labels_true, n_true) & _inside(labels_pred, n_pred)
    cell = labels_true.astype(jnp.int32) * n_pred + labels_pred.astype(jnp.int32)  # (N,) flat cell index
    cell = jnp.where(inside, cell, n_true * n_pred)
    flat = jax.ops.segment_sum(weights, cell, num_segments=n_true * n_pred + 1)  # (n_true * n_pred + 1,)
    return flat[:-1].reshape(n_true, n_pred), flat[-1] > 0


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


# ---------------------------------------------------------------------------------------------
# Path (b): arbitrary labels, via sorting
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Jitted kernels (no validation; the public wrappers validate first)
# ---------------------------------------------------------------------------------------------


def _weights(mask, n: int):
    if mask is None:
        return jnp.ones(n, _float_dtype())
    return jnp.asarray(mask).astype(_float_dtype())


def _stats(labels_true, labels_pred, mask, n_true, n_pred):
    """``(stats, bad)``: the sufficient statistics, and (bounded labels) a scalar bool, some valid
    label out of range (None on the sort path, where every label is allowed)."""
    weights = _weights(mask, labels_true.shape[0])  # (N,)
    if n_true is None:
        return _sorted_stats(labels_true, labels_pred, weights), None
    table, bad = _table(labels_true, labels_pred, weights, n_true, n_pred)
    return _table_stats(table), bad


def _nan_if(bad, value):
    """``value``, or NaN where ``bad`` (a traced out-of-range label); ``bad`` None: ``value``."""
    return value if bad is None else jnp.where(bad, jnp.nan, value)


# ---------------------------------------------------------------------------------------------
# Validation (plain Python, before tracing; values only when they are host data)
# ---------------------------------------------------------------------------------------------


def _check_labels(name: str, value, *, bound_name=None, bound=None, mask=None):
    """Check one label array: rank and integer dtype always, values when it is host data."""
    if np.ndim(value) != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {np.shape(value)}")
    dtype = _checks.dtype_of(value)
    if dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer labels, got dtype {dtype}")
    if not (_checks.on_host(value) and _checks.on_host(mask)) or np.size(value) == 0:
        return
    arr = np.asarray(value)
    positions = np.arange(arr.size) if mask is None else np.flatnonzero(np.asarray(mask))
    valid = arr[positions]
    if valid.size == 0:
        return
    if bound is not None:
        outside = (valid < 0) | (valid >= bound)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            where = "" if mask is None else " where mask is True"
            raise ValueError(
                f"{name} must hold labels in [0, {bound_name}) = [0, {bound}){where}, got "
                f"{valid[first].item()!r} at index {positions[first]}"
            )
    else:
        target = np.iinfo(jax.dtypes.canonicalize_dtype(dtype))
        low, high = valid.min().item(), valid.max().item()
        if low < target.min or high > target.max:
            raise ValueError(
                f"{name} holds {low if low < target.min else high!r}, outside the range of JAX's "
                f"{target.dtype} labels [{target.min}, {target.max}]; relabel (e.g. np.unique(..., "
                "return_inverse=True)) or enable 64-bit mode with jax.enable_x64(True)"
            )


def _check_mask(mask, length: int, what: str):
    if mask is None:
        return
    if np.ndim(mask) != 1 or np.shape(mask)[0] != length:
        raise ValueError(
            f"mask must be a 1-D bool array of the same length as {what} ({length}), got shape {np.shape(mask)}"
        )
    if _checks.dtype_of(mask) != np.bool_:
        raise TypeError(f"mask must have dtype bool, got {_checks.dtype_of(mask)}")


def _check_bound(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"{name} must be a static Python int >= 1 (it sets the table's shape), got {value!r} of type "
            f"{type(value).__name__}"
        )
    return _checks.positive_int(name, value)


def _check_bounds(n_true, n_pred, bounds_required: bool):
    """``(n_true, n_pred)`` as ints (or both None): given together, each >= 1, table < 2**31."""
    if (n_true is None) != (n_pred is None):
        raise ValueError(
            f"n_true and n_pred must be given together (both static ints) or not at all, got "
            f"n_true={n_true!r} and n_pred={n_pred!r}"
        )
    if n_true is None and bounds_required:
        raise TypeError("n_true and n_pred are required (static ints >= 1), got None")
    if n_true is not None:
        n_true = _check_bound("n_true", n_true)
        n_pred = _check_bound("n_pred", n_pred)
        if n_true * n_pred > np.iinfo(np.int32).max:
            raise ValueError(f"n_true * n_pred must be < 2**31 (the table's size), got {n_true} * {n_pred}")
    return n_true, n_pred


def _check_pair(labels_true, labels_pred, mask, n_true, n_pred, *, bounds_required: bool = False):
    """Validate the arguments shared by ari/nmi/contingency."""
    n_true, n_pred = _check_bounds(n_true, n_pred, bounds_required)
    len_true, len_pred = np.shape(labels_true)[:1], np.shape(labels_pred)[:1]
    if np.ndim(labels_true) == 1 and np.ndim(labels_pred) == 1 and len_true != len_pred:
        raise ValueError(
            f"labels_true and labels_pred must have the same length, got labels_true of length "
            f"{len_true[0]} and labels_pred of length {len_pred[0]}"
        )
    if mask is not None and np.ndim(labels_true) == 1:
        _check_mask(mask, len_true[0], "labels_true and labels_pred")
    _check_labels("labels_true", labels_true, bound_name="n_true", bound=n_true, mask=mask)
    _check_labels("labels_pred", labels_pred, bound_name="n_pred", bound=n_pred, mask=mask)
    return _checks.host_arrays(labels_true=labels_true, labels_pred=labels_pred, mask=mask)


def _check_contingency(labels_true, labels_pred, mask, n_true, n_pred):
    return _check_pair(labels_true, labels_pred, mask, n_true, n_pred, bounds_required=True)


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
    _check_mask(mask, n, "x")
    _check_labels("labels", labels, bound_name="K", bound=k, mask=mask)
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
    _check_bound("n_clusters", n_clusters)
    if np.ndim(labels) != 1:
        raise ValueError(f"labels must be a 1-D array of integer labels, got shape {np.shape(labels)}")
    _check_mask(mask, np.shape(labels)[0], "labels")
    _check_labels("labels", labels, bound_name="n_clusters", bound=n_clusters, mask=mask)
    return _checks.host_arrays(labels=labels, mask=mask)


def _check_collapsed(labels, n_tokens, n_true_clusters, mask):
    if _checks.on_host(n_true_clusters):
        value = np.asarray(n_true_clusters)
        if value.ndim != 0 or value.dtype.kind not in "iu":
            raise TypeError(f"n_true_clusters must be an integer scalar, got {n_true_clusters!r}")
        if value < 1:
            raise ValueError(f"n_true_clusters must be >= 1, got {value.item()!r}")
    return _check_sizes(labels, n_tokens, mask)


# ---------------------------------------------------------------------------------------------
# Public API: jitted kernels, arguments checked first
# ---------------------------------------------------------------------------------------------


@_checks.checked_jit(_check_pair, static_argnames=("n_true", "n_pred"))
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
      two labelings (``fn == fp == 0``): fewer than two valid points, identical partitions, all
      singletons on both sides, a single cluster on both sides.

    Edge cases: with ``n_true``/``n_pred``, a valid label outside ``[0, n_true)`` / ``[0, n_pred)``
    (``-1``, "no label", included) is a ``ValueError`` when the labels (and mask) are host data, and
    makes the result **NaN** when they are JAX arrays (not inspected on the host); invalid (masked)
    entries are never looked at. Without bounds ``-1`` is an ordinary label (see "Label -1" in the
    module docstring).
    Precision: results use JAX's default float (float32, or float64 under
    ``jax.enable_x64(True)``). In float32 they agree with sklearn to ~1e-6 on typical inputs;
    near-degenerate NMI (both labelings almost a single cluster) can lose float32 accuracy. Under
    ``jax.enable_x64(True)`` agreement is ~1e-12.
    """
    stats, bad = _stats(jnp.asarray(labels_true), jnp.asarray(labels_pred), mask, n_true, n_pred)
    return _nan_if(bad, _finish(stats)[0])


@_checks.checked_jit(_check_pair, static_argnames=("n_true", "n_pred"))
def nmi(labels_true, labels_pred, mask=None, *, n_true=None, n_pred=None):
    """Normalised mutual information, ``MI / mean(H_true, H_pred)``, on the valid entries.

    Equal to ``sklearn.metrics.normalized_mutual_info_score`` (``average_method="arithmetic"``),
    including its special cases: 1 when both labelings are a single cluster (or there are no valid
    points); 0 when only one of them is, or when the mutual information is 0. Arguments as in
    :func:`ari`; MI is summed cell-wise, ``sum n_ij / N log(N n_ij / (a_i b_j))``.

    Returns:
      Scalar float in ``[0, 1]``; **NaN** when, with ``n_true``/``n_pred``, a valid label held in a
      JAX array lies outside its bounds (host labels are refused with a ``ValueError``), as in
      :func:`ari`.
    Precision: as :func:`ari`.
    """
    stats, bad = _stats(jnp.asarray(labels_true), jnp.asarray(labels_pred), mask, n_true, n_pred)
    return _nan_if(bad, _finish(stats)[1])


@_checks.checked_jit(_check_contingency, static_argnames=("n_true", "n_pred"))
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
    """
    n = jnp.shape(labels_true)[0]
    weights = jnp.ones(n, _int_dtype()) if mask is None else jnp.asarray(mask).astype(_int_dtype())
    table, bad = _table(jnp.asarray(labels_true), jnp.asarray(labels_pred), weights, n_true, n_pred)
    return jnp.where(bad, -1, table)


@_checks.checked_jit(_check_sse)
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
    """
    dtype = jnp.result_type(x, centers, _float_dtype())
    x = jnp.asarray(x).astype(dtype)
    centers = jnp.asarray(centers).astype(dtype)
    valid = jnp.ones(x.shape[0], bool) if mask is None else mask
    # (N, D) centre of each point; a valid label outside [0, K) gathers NaN (a plain gather would
    # clamp it to a neighbouring centre), which the sum carries to the result at no extra cost
    labels = jnp.asarray(labels)
    n_centers = centers.shape[0]
    index = jnp.where(valid, jnp.where(_inside(labels, n_centers), labels, n_centers), 0)  # K: out of bounds
    assigned = centers.at[index].get(mode="fill", fill_value=jnp.nan)
    sq = (x - assigned) ** 2  # (N, D)
    # One reduction over both axes (no per-row reduction over a tiny trailing D).
    return jnp.sum(jnp.where(valid[:, None], sq, 0.0))


@_checks.checked_jit(_check_sizes, static_argnames=("n_clusters",))
def cluster_sizes(labels, n_clusters, mask=None):
    """Number of valid points assigned to each cluster: ``(n_clusters,)`` of JAX's default int.

    ``labels`` is ``(N,)`` with values in ``[0, n_clusters)`` where ``mask`` is True;
    ``n_clusters`` is a static int. A valid label outside that range is a ``ValueError`` for host
    data; held in a JAX array it makes **every entry -1** (rather than dropping the point).
    """
    labels = jnp.asarray(labels)
    weights = jnp.ones(labels.shape[0], _int_dtype()) if mask is None else jnp.asarray(mask).astype(_int_dtype())
    # labels out of range go to an extra segment (segment_sum would drop them silently)
    index = jnp.where(_inside(labels, n_clusters), labels.astype(jnp.int32), n_clusters)
    sizes = jax.ops.segment_sum(weights, index, num_segments=n_clusters + 1)  # (K + 1,)
    return jnp.where(sizes[-1] > 0, -1, sizes[:-1])  # (K,)


def n_used(labels, n_clusters, mask=None):
    """Number of clusters with at least one valid point (int scalar). Arguments as in
    :func:`cluster_sizes`; ``-1`` when a valid label held in a JAX array lies outside
    ``[0, n_clusters)`` (the sentinel of :func:`cluster_sizes`; host labels are checked first)."""
    sizes = cluster_sizes(labels, n_clusters, mask)
    return jnp.where(sizes[0] < 0, -1, jnp.sum(sizes > 0))


@_checks.checked_jit(_check_collapsed, static_argnames=("n_tokens",))
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
    """
    needed = jnp.minimum(n_true_clusters, n_tokens)
    return n_used(labels, n_tokens, mask) < needed


# ---------------------------------------------------------------------------------------------
# Object-centric segmentation: foreground ARI and mean IoU of matched segments
# ---------------------------------------------------------------------------------------------
#
# A scene is an instance mask ``masks_true`` (any shape, e.g. (H, W); 0 = background, objects
# 1, 2, ...) and a predicted segmentation ``labels_pred`` of the same shape (e.g. the slot that
# wins each pixel). Both are flattened.


def _check_ids(name: str, value, *, bound_name=None, bound=None):
    """Integer dtype always; when host data, ids in ``[0, bound)`` (or in JAX's int range)."""
    dtype = _checks.dtype_of(value)
    if dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer ids, got dtype {dtype}")
    if not _checks.on_host(value) or np.size(value) == 0:
        return
    arr = np.asarray(value)
    if bound is None:  # the general ARI path: only JAX's int range matters
        _check_labels(name, arr.ravel())
        return
    outside = (arr < 0) | (arr >= bound)
    if outside.any():
        where = tuple(int(i) for i in np.unravel_index(np.flatnonzero(outside)[0], arr.shape))
        raise ValueError(
            f"{name} must hold ids in [0, {bound_name}) = [0, {bound}), got {arr[where].item()!r} at index {where}"
        )


def _check_scene(masks_true, labels_pred, n_true, n_pred, *, bounds_required: bool):
    """Validate a scene: equal shapes, integer ids, static bounds, ids in range (host data)."""
    n_true, n_pred = _check_bounds(n_true, n_pred, bounds_required)
    if np.shape(masks_true) != np.shape(labels_pred):
        raise ValueError(
            f"masks_true and labels_pred must have the same shape (one id per pixel), got masks_true of "
            f"shape {np.shape(masks_true)} and labels_pred of shape {np.shape(labels_pred)}"
        )
    _check_ids("masks_true", masks_true, bound_name="n_true", bound=n_true)
    _check_ids("labels_pred", labels_pred, bound_name="n_pred", bound=n_pred)
    return _checks.host_arrays(masks_true=masks_true, labels_pred=labels_pred)


def _check_fg_ari(masks_true, labels_pred, n_true, n_pred):
    return _check_scene(masks_true, labels_pred, n_true, n_pred, bounds_required=False)


def _check_matched_iou(masks_true, labels_pred, n_true, n_pred):
    return _check_scene(masks_true, labels_pred, n_true, n_pred, bounds_required=True)


@_checks.checked_jit(_check_fg_ari, static_argnames=("n_true", "n_pred"))
def fg_ari(masks_true, labels_pred, *, n_true=None, n_pred=None):
    """Foreground adjusted Rand index: ARI over the pixels of objects only (``masks_true > 0``).

    The background pixels are left out, as in the evaluations of Slot Attention and SAVi (FG-ARI):
    the result equals ``sklearn.metrics.adjusted_rand_score(masks_true[fg], labels_pred[fg])`` with
    ``fg = masks_true > 0``, special cases included (1 with fewer than two foreground pixels, 1 when
    a single object is predicted as a single segment, 0 when a single object is split).

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

    Jittable and vmappable: a batch of scenes ``(B, H, W)`` with ``jax.vmap(fg_ari)`` (bind the
    bounds with ``functools.partial``).
    """
    t = jnp.ravel(jnp.asarray(masks_true))  # (N,)
    p = jnp.ravel(jnp.asarray(labels_pred))  # (N,)
    stats, bad = _stats(t, p, t > 0, n_true, n_pred)
    return _nan_if(bad, _finish(stats)[0])


def _object_iou(t, p, n_true: int, n_pred: int):
    """``(n_true - 1, n_pred)`` IoU of every object (ids 1..n_true-1) with every predicted
    segment, over all pixels, ``(n_true - 1,)`` bool: the object has at least one pixel, and a
    scalar bool: some id lies outside ``[0, n_true)`` / ``[0, n_pred)``."""
    table, bad = _table(t, p, jnp.ones(t.shape[0], _float_dtype()), n_true, n_pred)  # (n_true, n_pred)
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
      ``n_true == 1``) **gives 1.0**: nothing to find, nothing missed -- the convention of
      :func:`fg_ari` (1 with no foreground pixels) and of scikit-learn's scores on empty input. To
      leave such scenes out of an average instead, weight each scene by its number of objects,
      ``jnp.sum(cluster_sizes(masks_true.ravel(), n_true)[1:] > 0)`` (weights 0 drop them).

    Jittable and vmappable: a batch of scenes ``(B, H, W)`` with
    ``jax.vmap(functools.partial(matched_iou, n_true=..., n_pred=...))``.
    """
    n_objects = n_true - 1
    t = jnp.ravel(jnp.asarray(masks_true))  # (N,)
    p = jnp.ravel(jnp.asarray(labels_pred))  # (N,)
    if n_objects == 0:  # static: only background ids
        bad = ~jnp.all(_inside(t, 1) & _inside(p, n_pred))
        return jnp.where(bad, jnp.nan, jnp.ones((), _float_dtype()))
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
    ``linear_sum_assignment`` (the Hungarian reference). Same arguments, conventions and checks;
    returns a Python float. JAX arrays are copied to the host."""
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


# ---------------------------------------------------------------------------------------------
# Videos: segmentation through time
# ---------------------------------------------------------------------------------------------
#
# A clip is an instance mask ``masks_true`` of shape (F, ...) (F frames first, e.g. (F, H, W);
# 0 = background, ids 1, 2, ... are track identities: the same object has the same id in every
# frame, as :func:`tokdyn.data.videos.sprite_videos` gives them) and predicted ids ``labels_pred``
# of the same shape (e.g. the token or slot that wins each pixel in each frame).


def _check_clip(masks_true, labels_pred, n_true, n_pred, *, bounds_required: bool):
    """A clip: a frame axis first and at least one pixel axis, then the checks of a scene."""
    if np.ndim(masks_true) < 2:
        raise ValueError(f"masks_true must have shape (F, ...): frames first, then the pixels of a frame (e.g. "
                         f"(F, H, W) or (F, N)), got shape {np.shape(masks_true)}")
    return _check_scene(masks_true, labels_pred, n_true, n_pred, bounds_required=bounds_required)


def _check_video_ari(masks_true, labels_pred, n_true, n_pred):
    return _check_clip(masks_true, labels_pred, n_true, n_pred, bounds_required=False)


def _check_tracks(masks_true, labels_pred, n_true, n_pred, min_pixels):
    changed = _check_clip(masks_true, labels_pred, n_true, n_pred, bounds_required=True)
    if np.ndim(min_pixels) != 0 or _checks.dtype_of(min_pixels).kind not in "iu":
        raise TypeError(f"min_pixels must be an integer scalar (pixels a track needs in a frame to count as "
                        f"visible there), got {min_pixels!r}")
    if _checks.on_host(min_pixels) and int(min_pixels) < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels!r}")
    return changed


@_checks.checked_jit(_check_video_ari, static_argnames=("n_true", "n_pred"))
def video_fg_ari(masks_true, labels_pred, *, n_true=None, n_pred=None):
    """Foreground ARI of a whole clip: one segmentation of the foreground pixels of all frames.

    The clip's pixels, all frames together, are one set of points: a point's true class is its
    track id, its predicted cluster its predicted id. So a prediction must keep one id per object
    through the clip: an object labelled ``a`` in some frames and ``b`` in others (an identity
    switch) is an object split in two, and scores below 1 although every frame alone is perfect
    (:func:`frame_fg_ari`). Equal to ``sklearn.metrics.adjusted_rand_score(masks_true[fg],
    labels_pred[fg])`` with ``fg = masks_true > 0``: :func:`fg_ari` of the clip taken whole.

    Args:
      masks_true: (F, ...) integer track ids, frames first (e.g. ``(F, H, W)``); 0 is background
        (negative ids are left out too).
      labels_pred: integer predicted ids, the same shape.
      n_true, n_pred: optional static ints, given together: as in :func:`fg_ari`.

    Returns:
      Scalar float in ``[-0.5, 1]``, with :func:`fg_ari`'s special cases (1 with fewer than two
      foreground pixels in the whole clip) and its NaN for traced ids out of range with bounds.
      Jittable and vmappable over clips.
    """
    return fg_ari(masks_true, labels_pred, n_true=n_true, n_pred=n_pred)


@_checks.checked_jit(_check_video_ari, static_argnames=("n_true", "n_pred"))
def frame_fg_ari(masks_true, labels_pred, *, n_true=None, n_pred=None):
    """Foreground ARI of every frame of a clip alone: ``(F,)``, frame ``t`` equal to
    ``fg_ari(masks_true[t], labels_pred[t])``.

    Blind to identities over time (each frame is scored up to its own relabelling): its mean is the
    per-frame segmentation quality, and its gap to :func:`video_fg_ari` what identity switches cost.
    A frame with fewer than two foreground pixels scores 1 (:func:`fg_ari`'s convention): to leave
    such frames out of a mean, weight each frame by its number of foreground pixels.

    Args:
      masks_true, labels_pred, n_true, n_pred: as in :func:`video_fg_ari`.

    Returns:
      (F,) float (JAX's default float); NaN in the frames holding a traced foreground id out of
      range (with bounds). Jittable and vmappable over clips.
    """
    score = functools.partial(fg_ari, n_true=n_true, n_pred=n_pred)
    return jax.vmap(score)(jnp.asarray(masks_true), jnp.asarray(labels_pred))


def _tracks(masks_true, labels_pred, n_true: int, n_pred: int, min_pixels):
    """``(labels, bad)``: (F, n_true - 1) the predicted id holding most of each track's pixels in
    each frame (-1 where the track has fewer than ``min_pixels``), and a scalar bool, some
    foreground pixel's id out of range."""
    frames = masks_true.shape[0]
    t = jnp.reshape(jnp.asarray(masks_true), (frames, -1))  # (F, N)
    p = jnp.reshape(jnp.asarray(labels_pred), (frames, -1))  # (F, N)
    weights = (t > 0).astype(_int_dtype())  # (F, N) foreground pixels only
    tables, bad = jax.vmap(lambda a, b, w: _table(a, b, w, n_true, n_pred))(t, p, weights)  # (F, n_true, n_pred)
    counts = tables[:, 1:]  # (F, K, n_pred), K = n_true - 1 tracks
    size = jnp.sum(counts, axis=-1)  # (F, K)
    best = jnp.argmax(counts, axis=-1).astype(_int_dtype())  # (F, K) ties: the lowest id
    seen = size >= jnp.maximum(jnp.asarray(min_pixels), 1)
    return jnp.where(seen, best, -1), jnp.any(bad)


@_checks.checked_jit(_check_tracks, static_argnames=("n_true", "n_pred"))
def track_labels(masks_true, labels_pred, *, n_true, n_pred, min_pixels=1):
    """The predicted id that carries each true track in each frame: ``(F, n_true - 1)``.

    Entry ``[t, k - 1]`` is, among the pixels of track ``k`` in frame ``t``, the predicted id that
    labels most of them (ties: the lowest id); ``-1`` where the track has fewer than
    ``min_pixels`` pixels in that frame (it is then *not visible*: occluded, out of view, absent,
    or too small to trust). Each track is matched on its own, so two tracks may share an id (a
    merge), which is not a switch of either. The building block of :func:`track_switches` and
    :func:`identity_persistence`, and of any other reading of which token follows which object.

    Args:
      masks_true: (F, ...) integer track ids in ``[0, n_true)``, frames first; 0 is background.
      labels_pred: integer predicted ids in ``[0, n_pred)``, the same shape.
      n_true, n_pred: static ints >= 1 (``n_true`` counts the background id).
      min_pixels: int >= 1 (may be traced): the pixels a track needs in a frame to be visible.

    Returns:
      (F, n_true - 1) int (JAX's default int). An id outside its range is a ``ValueError`` for
      host data (any pixel); held in a JAX array, a foreground pixel's out-of-range id makes
      **every entry -2** (no label takes it: ids are >= 0 and -1 is "not visible"). Jittable and
      vmappable over clips.
    """
    labels, bad = _tracks(masks_true, labels_pred, n_true, n_pred, min_pixels)
    return jnp.where(bad, -2, labels)


@_checks.checked_jit(_check_tracks, static_argnames=("n_true", "n_pred"))
def track_switches(masks_true, labels_pred, *, n_true, n_pred, min_pixels=1):
    """Identity switches while visible: the number of (track, frame) pairs where a track visible
    in two consecutive frames changes the predicted id that carries it.

    With ``c[t, k]`` = :func:`track_labels` (the predicted id holding most of track k's pixels in
    frame t, -1 where the track is not visible), a switch is a pair ``(k, t)``, ``t >= 1``, with
    ``c[t - 1, k] >= 0``, ``c[t, k] >= 0`` and ``c[t, k] != c[t - 1, k]``; the result is their
    count, summed over the tracks. A change across frames where the track is not visible (it was
    occluded, or out of view) is not counted here: :func:`identity_persistence` measures those.
    The number of chances to switch, for a rate, is the number of (k, t) pairs visible in both
    frames: ``jnp.sum((c[1:] >= 0) & (c[:-1] >= 0))``.

    Args:
      masks_true, labels_pred, n_true, n_pred, min_pixels: as in :func:`track_labels`.

    Returns:
      Integer scalar >= 0 (JAX's default int); **-1** when a foreground pixel's traced id lies out
      of range (host ids are refused with a ``ValueError``). 0 for a single frame or no track.
      Jittable and vmappable over clips.
    """
    c, bad = _tracks(masks_true, labels_pred, n_true, n_pred, min_pixels)  # (F, K)
    switched = (c[1:] >= 0) & (c[:-1] >= 0) & (c[1:] != c[:-1])  # (F - 1, K)
    return jnp.where(bad, -1, jnp.sum(switched, dtype=_int_dtype()))


@_checks.checked_jit(_check_tracks, static_argnames=("n_true", "n_pred"))
def identity_persistence(masks_true, labels_pred, *, n_true, n_pred, min_pixels=1):
    """Identity through absence: of the times a track reappears, how often it gets back its id.

    With ``c[t, k]`` = :func:`track_labels` (-1 where track k is not visible in frame t), a
    *reappearance* of track k is a frame ``t`` where it is visible (``c[t, k] >= 0``), was not
    visible in frame ``t - 1``, and was visible in some earlier frame; let ``s`` be the last such
    earlier frame (the last frame before the gap). The reappearance *keeps* its identity when
    ``c[t, k] == c[s, k]``: the id that carried the track before the gap carries it after. A track
    that first appears late (never seen before) has no reappearance, and one that leaves for good
    none either. The gap may be an occlusion or a stay out of view (the masks cannot tell; with
    :class:`tokdyn.data.videos.Videos`, ``area > 0`` in the gap's frames means occluded).

    Args:
      masks_true, labels_pred, n_true, n_pred, min_pixels: as in :func:`track_labels`.

    Returns:
      ``(kept, reappearances)``: two integer scalars (JAX's default int), ``0 <= kept <=
      reappearances``, summed over the tracks; their ratio is the persistence (sum both over
      clips before dividing, so that a clip without reappearances weighs nothing). Both **-1**
      when a foreground pixel's traced id lies out of range (host ids are refused with a
      ``ValueError``). Jittable and vmappable over clips.
    """
    c, bad = _tracks(masks_true, labels_pred, n_true, n_pred, min_pixels)  # (F, K)
    visible = c >= 0
    frame = jnp.arange(c.shape[0])[:, None]  # (F, 1)
    last = jax.lax.cummax(jnp.where(visible, frame, -1), axis=0)  # (F, K) last visible frame <= t
    before = jnp.concatenate([jnp.full((1, c.shape[1]), -1, last.dtype), last[:-1]])  # last visible frame < t
    after_gap = jnp.concatenate([jnp.zeros((1, c.shape[1]), bool), ~visible[:-1]])  # not visible at t - 1
    back = visible & after_gap & (before >= 0)  # (F, K) reappearances
    kept = back & (c == jnp.take_along_axis(c, jnp.maximum(before, 0), axis=0))
    count = lambda a: jnp.where(bad, -1, jnp.sum(a, dtype=_int_dtype()))  # noqa: E731
    return count(kept), count(back)
