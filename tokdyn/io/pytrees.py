"""Checkpoints of any pytree of arrays, each leaf named by its tree path, in a verified ``.npz``
(:func:`save_pytree`, :func:`load_pytree`, :func:`leaf_names`)."""

from __future__ import annotations

import numpy as np

from tokdyn.io.verified import (
    load_npz,
    save_npz,
)

LEAF_PREFIX = "leaf:"  # a saved leaf's name: this prefix and its tree path (jax.tree_util.keystr)


def leaf_names(tree) -> list[str]:
    """Every leaf's name in :func:`save_pytree`'s files: its tree path, e.g. ``.params['Dense_0']['kernel']``."""
    import jax

    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def save_pytree(path: str, tree, **meta) -> str:
    """Save every leaf of ``tree`` (arrays), each under its tree path (:func:`leaf_names`), and the
    scalars ``meta`` to an ``.npz`` with a checksum (:func:`save_npz`), atomically. Read it back
    with :func:`load_pytree`."""
    import jax

    leaves = jax.tree_util.tree_leaves(tree)
    return save_npz(
        path,
        **{f"meta_{k}": np.asarray(v) for k, v in meta.items()},
        **{LEAF_PREFIX + n: np.asarray(x) for n, x in zip(leaf_names(tree), leaves)},
    )


def load_pytree(path: str, like):
    """``(tree, meta)`` from :func:`save_pytree`'s file, in the structure of ``like``. Every leaf is
    matched by its tree path: ``ValueError`` naming the first leaf that the file lacks, holds in
    excess or holds with another shape (a checkpoint of another model or version);
    :class:`~tokdyn.io.CorruptFile` when the file cannot be read whole."""
    import jax

    leaves_like, treedef = jax.tree_util.tree_flatten(like)
    want = leaf_names(like)
    z = load_npz(path)
    have = [k[len(LEAF_PREFIX) :] for k in z if k.startswith(LEAF_PREFIX)]
    if not have and any(k.startswith("leaf") for k in z):
        raise ValueError(
            f"{path} stores its arrays by position (an earlier version's checkpoint): it cannot be "
            "matched leaf by leaf; remove it to start afresh"
        )
    missing = [n for n in want if n not in set(have)]
    extra = [n for n in have if n not in set(want)]
    if missing or extra:
        what = f"lacks the leaf {missing[0]!r}" if missing else f"holds a leaf {extra[0]!r} the state does not have"
        raise ValueError(
            f"{path} {what} ({len(missing)} missing, {len(extra)} unexpected of {len(want)}): it is a "
            "checkpoint of something else"
        )
    leaves = [z[LEAF_PREFIX + n] for n in want]
    meta = {k[5:]: z[k][()] for k in z if k.startswith("meta_")}
    for n, a, b in zip(want, leaves, leaves_like):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"{path}: leaf {n!r} has shape {np.shape(a)}, the state expects {np.shape(b)}")
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
