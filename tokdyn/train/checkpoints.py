"""The checkpoint of :func:`~tokdyn.train.train_many`: the state, the curves and the kept
:class:`~tokdyn.train.Best` of every model in one verified file (:func:`save_checkpoint`), read back
whole (:func:`load_checkpoint`, :func:`read_checkpoint`) or for its best state (:func:`load_best`).

Two formats (:data:`FORMATS`), the same content and the same checks: ``"npz"`` (the default: one
``.npz`` file carrying its SHA-256, :func:`tokdyn.io.save_pytree`) and ``"orbax"`` (a directory in
orbax's format with a checked record of its files' SHA-256, :func:`tokdyn.io.save_orbax`; the extra
``orbax``). A checkpoint is read in the format it was written in (:func:`checkpoint_format`): a
directory holding an orbax checkpoint's record is one, anything else is read as an ``.npz``."""

from __future__ import annotations

import json
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import io
from tokdyn.train import loggers
from tokdyn.train.options import CHECKPOINT_FORMATS
from tokdyn.train.results import Best
from tokdyn.train.trainer import TrainState

FORMATS = CHECKPOINT_FORMATS  # the formats of a checkpoint (Checkpointing.format)


def checkpoint_format(path: str) -> str:
    """The format of the checkpoint at ``path``: ``"orbax"`` for a directory that holds an orbax
    checkpoint's record (:func:`tokdyn.io.is_orbax`), ``"npz"`` otherwise."""
    return "orbax" if io.is_orbax(path) else "npz"


def save_checkpoint(
    path: str,
    state: TrainState,
    curves: dict,
    stamp: str,
    *,
    stopped: bool = False,
    best: Optional[Best] = None,
    format: str = "npz",
) -> str:
    """Write the state, the curves and the kept :class:`Best` of :func:`~tokdyn.train.train_many` to one file, atomically.

    Args:
      path: the ``.npz`` file to write (``format="npz"``), or the directory (``format="orbax"``).
      state: the stacked :class:`TrainState` (leading (M,) axis).
      curves: column name -> (M, C) float32 curve over the C = ``steps / steps_per_call`` calls
        (NaN: not recorded yet).
      stamp: a string identifying the run's settings; :func:`checkpoint_stamp` reads it back.
      stopped: whether the stop rule ended the run (it is not resumed then).
      best: optional :class:`Best` (the best state of each model kept by ``keep_best``).
      format: ``"npz"`` (:func:`tokdyn.io.save_pytree`) or ``"orbax"`` (:func:`tokdyn.io.save_orbax`,
        the extra ``orbax``); both carry the stamp and the checksums their reader verifies.

    Returns:
      ``path``.

    The open loggers of the process (:func:`tokdyn.train.loggers.flush_open`) write what they hold
    first, so that after a kill the curves on disk reach at least the checkpoint's step.
    """
    loggers.flush_open()  # the curves on disk reach the checkpoint before the checkpoint does
    tree = {"state": state, "curves": curves}
    meta = {}
    if best is not None:
        tree["best"] = {"state": best.state, "step": best.step, "value": best.value}
        meta = {"best_column": best.column, "best_mode": best.mode}
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    host = jax.tree_util.tree_map(np.asarray, tree)
    save = io.save_orbax if format == "orbax" else io.save_pytree
    return save(path, host, step=int(np.asarray(state.step)[0]), stamp=stamp, stopped=bool(stopped), **meta)


def stamp_difference(held: str, asked: str, limit: int = 3) -> str:
    """Where the stamp a checkpoint holds (``held``) differs from the one asked for (``asked``), in a
    few words for a message, never the whole stamps (they may run to kilobytes): for stamps that
    are JSON objects, the first ``limit`` fields that differ (dotted, ``config.train.steps: 3000
    there, 500 asked``); otherwise the first place they part, with a little context."""

    def short(v) -> str:
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        return text if len(text) <= 40 else text[:37] + "..."

    def fields(a, b, prefix=""):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                yield from fields(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        elif a != b:
            yield f"{prefix[:-1] or 'stamp'}: {short(a)} there, {short(b)} asked"

    try:
        found = list(fields(json.loads(held), json.loads(asked)))
    except (ValueError, TypeError):
        found = None
    if found:
        return "; ".join(found[:limit]) + (f"; and {len(found) - limit} more" if len(found) > limit else "")
    i = next((i for i, (x, y) in enumerate(zip(held, asked)) if x != y), min(len(held), len(asked)))
    return f"the stamps part at character {i}: {short(held[max(i - 10, 0) :])!r} there, {short(asked[max(i - 10, 0) :])!r} asked"


def checkpoint_stamp(path: str) -> Optional[str]:
    """The stamp :func:`save_checkpoint` wrote into ``path`` (None for a file without one), in
    either format."""
    if checkpoint_format(path) == "orbax":
        stamp = io.read_orbax(path)[1].get("stamp")
        return None if stamp is None else str(stamp)
    z = io.load_npz(path)
    return str(z["meta_stamp"]) if "meta_stamp" in z else None


def read_checkpoint(path: str, like: TrainState, stamp: Optional[str]):
    """``(state, curves, stopped, best or None)`` from :func:`save_checkpoint`'s file or directory
    (in the format it was written in, :func:`checkpoint_format`)."""
    if checkpoint_format(path) == "orbax":
        restored, meta = io.read_orbax(path)
        curves = dict(restored.get("curves", {})) if isinstance(restored, dict) else {}
        has_best = isinstance(restored, dict) and "best" in restored
    else:
        z = io.load_npz(path)
        prefix = io.LEAF_PREFIX + "['curves']"
        names = [k[len(prefix) :] for k in z if k.startswith(prefix)]
        curves = {n[2:-2]: z[prefix + n] for n in names}  # "['loss']" -> "loss"
        has_best = any(k.startswith(io.LEAF_PREFIX + "['best']") for k in z)
    want = {"state": like, "curves": curves}
    if has_best:
        m = np.shape(like.step)[0]
        want["best"] = {"state": like, "step": np.zeros(m, np.int64), "value": np.zeros(m, np.float32)}
    if checkpoint_format(path) == "orbax":
        tree = io.match_tree(path, restored, want)
    else:
        tree, meta = io.load_pytree(path, want)
    if stamp is not None and str(meta.get("stamp", "")) != stamp:
        raise ValueError(
            f"{path} was written for another configuration ({stamp_difference(str(meta.get('stamp', '')), stamp)}): "
            "use another checkpoint path, or remove it to start afresh"
        )
    paths = jax.tree_util.tree_flatten_with_path(like.hparams)[0]
    for (p, want_hp), got in zip(paths, jax.tree_util.tree_leaves(tree["state"].hparams)):
        if not np.array_equal(np.asarray(want_hp), np.asarray(got)):
            raise ValueError(
                f"{path} holds models with other hyper-parameters ({jax.tree_util.keystr(p)} "
                f"{np.asarray(got)} instead of {np.asarray(want_hp)}): use another checkpoint"
            )
    state = jax.tree_util.tree_map(jnp.asarray, tree["state"])
    best = None
    if has_best:
        b = tree["best"]
        best = Best(
            str(meta.get("best_column", "")),
            str(meta.get("best_mode", "max")),
            jax.tree_util.tree_map(np.asarray, b["state"]),
            np.asarray(b["step"], np.int64),
            np.asarray(b["value"], np.float32),
        )
    return state, {k: np.asarray(v) for k, v in tree["curves"].items()}, bool(meta.get("stopped", False)), best


def check_same_best(path, saved: Optional[Best], keep_best, best_mode) -> None:
    """Refuse to resume from ``path``, whose kept best state is ``saved`` (None: none kept), with
    another ``keep_best`` column or ``best_mode`` than it was written with (``ValueError``)."""
    if saved is None and keep_best is None:
        return
    if saved is None:
        raise ValueError(
            f"{path} was written without keep_best, asked keep_best={keep_best!r}: its best state is "
            "lost; use another checkpoint path, or keep_best=None"
        )
    if (saved.column, saved.mode) != (keep_best, best_mode):
        raise ValueError(
            f"{path} keeps the best state of {saved.column!r} (best_mode={saved.mode!r}), asked "
            f"keep_best={keep_best!r}, best_mode={best_mode!r}: pass the same, or use another checkpoint"
        )


def load_checkpoint(path: str, like: TrainState, stamp: Optional[str] = None):
    """``(state, curves, stopped)`` from :func:`save_checkpoint`'s file; ``like``: the initial state
    of the same models (e.g. :func:`~tokdyn.train.init_states`; its tree, shapes and hyper-parameters must
    match). ValueError naming what differs for a checkpoint of another tree, hyper-parameters or
    (when ``stamp`` is given) another stamp. :func:`load_best` reads the kept best state."""
    return read_checkpoint(path, like, stamp)[:3]


def load_best(path: str, like: TrainState, stamp: Optional[str] = None) -> Best:
    """The :class:`Best` that :func:`~tokdyn.train.train_many` kept (``keep_best``) in ``path`` (``like`` and
    ``stamp`` as for :func:`load_checkpoint`); ValueError for a checkpoint without one."""
    best = read_checkpoint(path, like, stamp)[3]
    if best is None:
        raise ValueError(f"{path} holds no best state: it was trained without keep_best")
    return best
