"""Checkpoints of any pytree of arrays in orbax's format (the Flax ecosystem's ``orbax-checkpoint``),
verified as tokdyn's ``.npz`` checkpoints are (:func:`save_orbax`, :func:`load_orbax`, :func:`is_orbax`).

A checkpoint is a directory::

    run.orbax/
      tokdyn.json          the record: which tree is current, the SHA-256 of each of its files, the meta
      tree-<id>/           the tree as orbax's PyTreeCheckpointer writes it

Each save writes a new ``tree-<id>/`` (orbax finishes it under a temporary name), then replaces the
record atomically, then removes the older trees: a reader sees the old checkpoint or the new one,
never half of one, and a run killed in between loses nothing finished. One writer at a time per
directory (two processes saving to one path can remove each other's new tree: the one left
unreadable is refused as corrupt, never read as a result). The current tree reads back
with orbax alone (``orbax.checkpoint.PyTreeCheckpointer().restore(path + "/tree-<id>")``, its
leaves by their tree path as nested dicts); through :func:`load_orbax` every file is checked against
its recorded SHA-256 first (:class:`~tokdyn.io.CorruptFile` when one differs or is missing) and the
leaves are matched by tree path to the structure asked for.

Needs the optional extra ``orbax`` (``pip install -e ".[orbax]"``).
"""

from __future__ import annotations

import os
import shutil
import uuid

import numpy as np

from tokdyn import extras
from tokdyn.io.errors import CorruptFile, OutputConflict
from tokdyn.io.files import file_sha256, read_checked_json, write_checked_json

RECORD = "tokdyn.json"  # the record inside an orbax checkpoint's directory
FORMAT = "tokdyn-orbax-1"  # the record's "format" field
_TREE = "tree-"  # the prefix of a saved tree's folder


def require_orbax():
    """``orbax.checkpoint``, or an ImportError naming the extra that installs it (``orbax``:
    :class:`tokdyn.extras.MissingExtra`)."""
    return extras.load("orbax.checkpoint", "checkpoints in orbax's format")


def is_orbax(path: str) -> bool:
    """Whether ``path`` is a directory that holds a :func:`save_orbax` record (its content is not checked)."""
    return os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(os.path.join(path, RECORD))


def _files(folder: str) -> dict[str, str]:
    """Every file under ``folder`` (relative path with ``/``) -> its SHA-256."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            out[os.path.relpath(full, folder).replace(os.sep, "/")] = file_sha256(full)
    return out


def check_target(path: str) -> None:
    """Refuse (:class:`~tokdyn.io.OutputConflict`) to write an orbax checkpoint at ``path`` when it
    is a file, a link, or a directory holding anything but a record and saved trees; nothing or
    such a directory passes."""
    if os.path.islink(path):
        raise OutputConflict(f"{path} is a symbolic link: an orbax checkpoint is never written through one")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputConflict(
            f"{path} is a file (an .npz checkpoint?), not an orbax checkpoint's directory: use another path, "
            "or the npz format"
        )
    if os.path.isdir(path):
        foreign = sorted(e for e in os.listdir(path) if e != RECORD and not e.startswith(_TREE))
        if foreign:
            raise OutputConflict(
                f"{path} holds {foreign[:3]}, which no tokdyn checkpoint writes: it is not written into "
                "(nothing was changed); choose another path"
            )


def save_orbax(path: str, tree, **meta) -> str:
    """Save every leaf of ``tree`` (arrays) in orbax's format to the directory ``path``, with the
    JSON-able scalars ``meta`` and the SHA-256 of every file in a checked record (see the module).
    Replaces an earlier checkpoint of ``path`` atomically; refuses (:class:`~tokdyn.io.OutputConflict`)
    a file, a link, or a directory holding what no tokdyn checkpoint writes. Returns ``path``."""
    import jax

    ocp = require_orbax()
    check_target(path)
    seen: dict[str, tuple] = {}
    for p in _paths(tree):  # orbax names a leaf by its path joined with "." ("a.b" and a/b would collide)
        joined = ".".join(p)
        if joined in seen:
            raise ValueError(
                f"the leaves {list(seen[joined])} and {list(p)} share orbax's name {joined!r}: rename a "
                "key (without '.'), or use the npz format"
            )
        seen[joined] = p
    os.makedirs(path, exist_ok=True)
    name = f"{_TREE}{uuid.uuid4().hex[:12]}"
    target = os.path.abspath(os.path.join(path, name))
    ocp.PyTreeCheckpointer().save(target, jax.tree_util.tree_map(np.asarray, tree))
    write_checked_json(
        os.path.join(path, RECORD), {"format": FORMAT, "tree": name, "files": _files(target), "meta": meta}
    )
    for entry in os.listdir(path):
        if entry.startswith(_TREE) and entry != name:
            shutil.rmtree(os.path.join(path, entry), ignore_errors=True)
    return path


def read_orbax(path: str):
    """``(tree, meta)``: the tree of :func:`save_orbax`'s checkpoint as orbax restores it (nested
    dicts and lists of NumPy arrays, keyed by the saved tree's paths) and its meta, after every file
    was checked against the record (:class:`~tokdyn.io.CorruptFile` naming the first that differs,
    is missing or was added)."""
    ocp = require_orbax()
    if not os.path.isdir(path) or os.path.islink(path):
        raise FileNotFoundError(f"{path} is not an orbax checkpoint's directory")
    record_path = os.path.join(path, RECORD)
    if not os.path.isfile(record_path):
        raise CorruptFile(path, f"it holds no {RECORD}: not an orbax checkpoint tokdyn wrote, or cut before its record")
    try:
        record = read_checked_json(record_path)
    except CorruptFile as e:  # named by the checkpoint, the unit a caller sets aside and recomputes
        raise CorruptFile(path, f"its {RECORD}: {e.reason}") from None
    if record.get("format") != FORMAT or not isinstance(record.get("files"), dict):
        raise CorruptFile(path, f"its {RECORD} has the format {record.get('format')!r}, expected {FORMAT!r}")
    folder = os.path.join(path, str(record["tree"]))
    if not os.path.isdir(folder):
        raise CorruptFile(path, f"its tree {record['tree']!r} is missing")
    have = _files(folder)
    for rel, digest in sorted(record["files"].items()):
        if rel not in have:
            raise CorruptFile(path, f"{record['tree']}/{rel} is missing")
        if have[rel] != digest:
            raise CorruptFile(
                path, f"{record['tree']}/{rel}: its SHA-256 differs from the one recorded when it was written"
            )
    added = sorted(set(have) - set(record["files"]))
    if added:
        raise CorruptFile(path, f"{record['tree']}/{added[0]} was added after it was written")
    try:
        tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(folder))
    except Exception as e:  # orbax and tensorstore raise their own types for unreadable content
        raise CorruptFile(path, f"orbax cannot restore it: {type(e).__name__}: {e}") from None
    return tree, dict(record.get("meta", {}))


def _key(entry) -> str:
    """One step of a tree path as text: an attribute's name, a dict's key, a sequence's index
    (orbax restores attributes and named tuples as dicts of their fields)."""
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _paths(tree) -> dict[tuple, object]:
    import jax

    return {tuple(_key(k) for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def match_tree(path: str, restored, like):
    """``restored`` (as :func:`read_orbax` gives it) in the structure of ``like``, every leaf
    matched by its tree path: ``ValueError`` naming the first leaf that it lacks, holds in excess
    or holds with another shape (a checkpoint of another model or version)."""
    import jax

    from tokdyn.io.pytrees import leaf_names

    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = leaf_names(like)
    want = [tuple(_key(k) for k in p) for p, _ in flat]
    have = _paths(restored)
    missing = [n for n, w in zip(names, want) if w not in have]
    extra = ["".join(f"[{k!r}]" for k in h) for h in have if h not in set(want)]
    if missing or extra:
        what = f"lacks the leaf {missing[0]!r}" if missing else f"holds a leaf {extra[0]!r} the state does not have"
        raise ValueError(
            f"{path} {what} ({len(missing)} missing, {len(extra)} unexpected of {len(want)}): it is a "
            "checkpoint of something else"
        )
    leaves = [np.asarray(have[w]) for w in want]
    for n, a, (_, b) in zip(names, leaves, flat):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"{path}: leaf {n!r} has shape {np.shape(a)}, the state expects {np.shape(b)}")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def load_orbax(path: str, like):
    """``(tree, meta)`` from :func:`save_orbax`'s checkpoint, in the structure of ``like``
    (:func:`read_orbax`, then :func:`match_tree`)."""
    restored, meta = read_orbax(path)
    return match_tree(path, restored, like), meta
