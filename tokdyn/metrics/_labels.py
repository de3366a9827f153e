"""What the modules of :mod:`tokdyn.metrics` share (package-internal): the dtypes of results, the
checks of label arrays, masks, bounds and id images (plain Python, before tracing; values only when
they are host data), the range test of a label and the contingency table by one ``segment_sum``."""

from __future__ import annotations

from numbers import Integral

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tokdyn import _checks


def float_dtype():
    """JAX's default float: float32, or float64 under ``jax.enable_x64(True)``."""
    return jnp.zeros(()).dtype


def int_dtype():
    """JAX's default int: int32, or int64 under ``jax.enable_x64(True)``."""
    return jnp.zeros((), dtype=int).dtype


def _comparable(labels):
    """Integer labels in a dtype in which ``labels < bound`` is exact for any bound < 2**31: int32
    for the narrow types (a Python bound would wrap in uint8), the wide ones as they are (a cast to
    int32 could wrap an out-of-range label into range)."""
    if jnp.iinfo(labels.dtype).bits <= 16:
        return labels.astype(jnp.int32)
    return labels


def in_range(labels, bound: int):
    """``(N,)`` bool: the label lies in ``[0, bound)`` (elementwise; fused into its consumer). One
    unsigned comparison: a negative label, reinterpreted as unsigned, is above any bound."""
    labels = _comparable(labels)
    if jnp.issubdtype(labels.dtype, jnp.signedinteger):
        labels = lax.bitcast_convert_type(labels, jnp.dtype(f"uint{jnp.iinfo(labels.dtype).bits}"))
    return labels < bound


def count_table(labels_true, labels_pred, weights, n_true: int, n_pred: int):
    """Weighted co-occurrence counts via one ``segment_sum`` (traceable).

    Entries with a label out of range go to one extra segment (instead of a wrong cell:
    ``t * n_pred + p`` of an out-of-range ``p`` lands in another row), so detecting them costs no
    pass over the labels.

    Args:
      labels_true: (N,) integer labels.
      labels_pred: (N,) integer labels.
      weights: (N,) the weight of each entry (0 drops it).
      n_true, n_pred: static ints, the table's shape.

    Returns:
      ``(table, bad)``: the ``(n_true, n_pred)`` table of summed weights, and a scalar bool, True
      when some entry of non-zero weight has a label outside ``[0, n_true)`` / ``[0, n_pred)``.
    """
    inside = in_range(labels_true, n_true) & in_range(labels_pred, n_pred)
    cell = labels_true.astype(jnp.int32) * n_pred + labels_pred.astype(jnp.int32)  # (N,) flat cell index
    cell = jnp.where(inside, cell, n_true * n_pred)
    flat = jax.ops.segment_sum(weights, cell, num_segments=n_true * n_pred + 1)  # (n_true * n_pred + 1,)
    return flat[:-1].reshape(n_true, n_pred), flat[-1] > 0


def check_labels(name: str, value, *, bound_name=None, bound=None, mask=None):
    """Check one label array before tracing: rank and integer dtype always, values when it (and
    ``mask``) are host data.

    Args:
      name: the argument's name, for the messages.
      value: the (N,) labels.
      bound_name: the name of the bound, for the messages.
      bound: optional int; valid labels must lie in ``[0, bound)``. Without it, in ``[0, max]``
        of JAX's default int (a negative label is "no label", which has no score).
      mask: optional (N,) bool; only entries where it is True are checked.

    Raises:
      ValueError: not 1-D, or a valid label out of range.
      TypeError: not an integer dtype.
    """
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
        if (valid < 0).any():
            first = int(np.flatnonzero(valid < 0)[0])
            where = "" if mask is None else " where mask is True"
            raise ValueError(
                f"{name} must hold labels >= 0{where}, got {valid[first].item()!r} at index "
                f"{positions[first]}: a negative label means no label (-1: a padded point, or one whose "
                "distances were not finite in a run that blew up), which has no score; mask such points "
                "out, or relabel (e.g. np.unique(..., return_inverse=True))"
            )
        target = np.iinfo(jax.dtypes.canonicalize_dtype(dtype))
        high = valid.max().item()
        if high > target.max:
            raise ValueError(
                f"{name} holds {high!r}, outside the range of JAX's "
                f"{target.dtype} labels [{target.min}, {target.max}]; relabel (e.g. np.unique(..., "
                "return_inverse=True)) or enable 64-bit mode with jax.enable_x64(True)"
            )


def check_mask(mask, length: int, what: str):
    if mask is None:
        return
    if np.ndim(mask) != 1 or np.shape(mask)[0] != length:
        raise ValueError(
            f"mask must be a 1-D bool array of the same length as {what} ({length}), got shape {np.shape(mask)}"
        )
    if _checks.dtype_of(mask) != np.bool_:
        raise TypeError(f"mask must have dtype bool, got {_checks.dtype_of(mask)}")


def check_bound(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"{name} must be a static Python int >= 1 (it sets the table's shape), got {value!r} of type "
            f"{type(value).__name__}"
        )
    return _checks.positive_int(name, value)


def check_bounds(n_true, n_pred, bounds_required: bool):
    """``(n_true, n_pred)`` as ints (or both None): given together, each >= 1, table < 2**31."""
    if (n_true is None) != (n_pred is None):
        raise ValueError(
            f"n_true and n_pred must be given together (both static ints) or not at all, got "
            f"n_true={n_true!r} and n_pred={n_pred!r}"
        )
    if n_true is None and bounds_required:
        raise TypeError("n_true and n_pred are required (static ints >= 1), got None")
    if n_true is not None:
        n_true = check_bound("n_true", n_true)
        n_pred = check_bound("n_pred", n_pred)
        if n_true * n_pred > np.iinfo(np.int32).max:
            raise ValueError(f"n_true * n_pred must be < 2**31 (the table's size), got {n_true} * {n_pred}")
    return n_true, n_pred


def check_ids(name: str, value, *, bound_name=None, bound=None):
    """Check an id image before tracing: integer dtype always; when host data, ids in
    ``[0, bound)`` (or, without ``bound``, in the range of JAX's default int).

    Args:
      name: the argument's name, for the messages.
      value: integer ids of any shape.
      bound_name: the name of the bound, for the messages.
      bound: optional int, the exclusive upper bound.

    Raises:
      TypeError: not an integer dtype.
      ValueError: an id out of range (its index in the message).
    """
    dtype = _checks.dtype_of(value)
    if dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer ids, got dtype {dtype}")
    if not _checks.on_host(value) or np.size(value) == 0:
        return
    arr = np.asarray(value)
    if bound is None:  # the general ARI path: JAX's int range (negative ids: padding, left out)
        check_labels(name, arr.ravel()[arr.ravel() >= 0])
        return
    outside = (arr < 0) | (arr >= bound)
    if outside.any():
        where = tuple(int(i) for i in np.unravel_index(np.flatnonzero(outside)[0], arr.shape))
        raise ValueError(
            f"{name} must hold ids in [0, {bound_name}) = [0, {bound}), got {arr[where].item()!r} at index {where}"
        )


def check_scene(masks_true, labels_pred, n_true, n_pred, *, bounds_required: bool):
    """Validate a scene before tracing: equal shapes, integer ids, static bounds, ids in range
    (host data).

    Args:
      masks_true: integer instance ids of any shape.
      labels_pred: integer segment ids of the same shape.
      n_true, n_pred: static ints >= 1, or both ``None`` when ``bounds_required`` is False.
      bounds_required: whether ``n_true``/``n_pred`` must be given.

    Returns:
      A dict of those of ``masks_true``/``labels_pred`` given as Python lists or tuples, as NumPy
      arrays (to pass on from a check).
    """
    n_true, n_pred = check_bounds(n_true, n_pred, bounds_required)
    if np.shape(masks_true) != np.shape(labels_pred):
        raise ValueError(
            f"masks_true and labels_pred must have the same shape (one id per pixel), got masks_true of "
            f"shape {np.shape(masks_true)} and labels_pred of shape {np.shape(labels_pred)}"
        )
    check_ids("masks_true", masks_true, bound_name="n_true", bound=n_true)
    check_ids("labels_pred", labels_pred, bound_name="n_pred", bound=n_pred)
    if n_pred is None and _checks.on_host(masks_true) and _checks.on_host(labels_pred) and np.size(masks_true):
        # without bounds a predicted id is any integer >= 0 on the foreground (masks_true > 0)
        fg = np.ravel(np.asarray(masks_true)) > 0
        check_labels("labels_pred", np.ravel(np.asarray(labels_pred)), mask=fg)
    return _checks.host_arrays(masks_true=masks_true, labels_pred=labels_pred)


def host_scores(labels_true, labels_pred) -> tuple[float, float]:
    """``(ari, nmi)`` of two host labelings (1-D integer NumPy arrays of one length >= 1, every entry
    valid) in float64 NumPy, from the sparse contingency table: the kernels' numbers (the
    pair-confusion ARI, the cell-wise MI, scikit-learn's special cases as :mod:`tokdyn.metrics.partition` writes
    them), without a compile: three sorts of N labels."""
    _, t = np.unique(labels_true, return_inverse=True)  # (N,) dense class ids
    _, p = np.unique(labels_pred, return_inverse=True)  # (N,) dense cluster ids
    t, p = t.ravel().astype(np.int64), p.ravel().astype(np.int64)
    a, b = np.bincount(t), np.bincount(p)  # class and cluster sizes, all > 0
    cells, n_ij = np.unique(t * b.size + p, return_counts=True)  # the occupied cells
    a_i, b_j = a[cells // b.size], b[cells % b.size]
    n = t.size
    # Pair counts, exact integers (as products of sizes: below 2**63 up to ~3e9 points)
    sum_sq = int(np.sum(n_ij * n_ij))
    fn = int(np.sum(a * a)) - sum_sq
    fp = int(np.sum(b * b)) - sum_sq
    tp = sum_sq - n
    tn = n * n - sum_sq - fn - fp
    if fn == 0 and fp == 0:
        ari = 1.0
    else:
        tp, fp, fn, tn = float(tp), float(fp), float(fn), float(tn)
        ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    if a.size <= 1 and b.size <= 1:
        return ari, 1.0
    # MI: log(N n_ij / (a_i b_j)) as log1p of the exact integer difference over a_i b_j
    ab = a_i.astype(np.float64) * b_j
    diff = (n * n_ij - a_i * b_j).astype(np.float64)
    mi = max(float(np.sum(n_ij * np.log1p(diff / ab))) / n, 0.0)
    if a.size <= 1 or b.size <= 1 or mi <= 0.0:
        return ari, 0.0
    h_true = -float(np.sum(a * np.log(a / n))) / n
    h_pred = -float(np.sum(b * np.log(b / n))) / n
    return ari, min(mi / (0.5 * (h_true + h_pred)), 1.0)


def host_result(value: float):
    """A score of the host path as the kernels give it: a JAX scalar of the default float (placed
    by ``device_put``, which compiles nothing)."""
    return jax.device_put(np.asarray(value, jax.dtypes.canonicalize_dtype(np.float64)))


def host_valid_pair(arguments: dict):
    """The valid labels ``(true, pred)`` of a call of :func:`tokdyn.metrics.ari` / ``nmi`` on host data,
    or ``None``: some argument is a JAX array or tracer, or no entry is valid (the kernel's case)."""
    t, p, mask = arguments["labels_true"], arguments["labels_pred"], arguments["mask"]
    if not (_checks.on_host(t) and _checks.on_host(p) and _checks.on_host(mask)):
        return None
    t, p = np.asarray(t), np.asarray(p)
    if mask is not None:
        keep = np.asarray(mask)
        t, p = t[keep], p[keep]
    return (t, p) if t.size else None


def host_foreground(arguments: dict):
    """The foreground ids ``(true, pred)`` (``masks_true > 0``) of a call of ``fg_ari`` /
    ``video_fg_ari`` on host data, or ``None``: a JAX array or tracer, or no foreground pixel."""
    masks, pred = arguments["masks_true"], arguments["labels_pred"]
    if not (_checks.on_host(masks) and _checks.on_host(pred)):
        return None
    masks, pred = np.ravel(np.asarray(masks)), np.ravel(np.asarray(pred))
    fg = masks > 0
    return (masks[fg], pred[fg]) if fg.any() else None
