"""A store of trained models: a directory that keeps, per named model (a variant, a condition), its
checkpoint, its learning curve, its test answers and a result that commits them, and that says
which models are finished, reads one back at its best or final state and trains what is missing.

A model ``NAME`` of the directory ``out`` has four files (:func:`paths`):

- ``checkpoints/NAME.npz``: the training state :func:`tokdyn.train.train_many` keeps (the best
  state too, with ``keep_best``), with tokdyn's verification header;
- ``curves/NAME.csv``: its learning curve, one row per (step, seed);
- ``results/NAME.npz``: its test answers, with a copy of the finished curve (``curve_csv``) and
  the steps trained (``steps``), written by :func:`tokdyn.io.save_npz`;
- ``results/NAME.json``: the result (:func:`write_result`), written last: it records the answers'
  SHA-256 (:func:`answers_digest`) and that of its checkpoint's stamp (:func:`checkpoint_record`),
  and carries its own, so a model is finished only when all four are whole and agree
  (:func:`finished`): a checkpoint of another model put in its place is told apart.

Two ways of reading it: the store's owner (the study that trains the models) reads leniently, a
damaged file set aside with a warning naming it and recomputed (:func:`finished`,
:func:`resume_rows`, :func:`read_checkpoint`); a reader of another study's store reads strictly,
a damaged file refused naming it and nothing changed (:func:`verify`, :func:`load`). What is
missing is trained by the owner's own function (:func:`train_missing`). Host functions: they read
and write files.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tokdyn import io
from tokdyn.train import checkpoints, loop

TESTED = ("best", "final")  # which state of a trained model answers for it (load)
ANSWERS_KEYS = ("answers", "curve_csv", "steps")  # what results/NAME.npz holds


def paths(out: str, name: str) -> dict:
    """The files of model ``name`` in the store ``out``: ``result``, ``answers``, ``checkpoint``,
    ``curve``."""
    return {
        "result": os.path.join(out, "results", f"{name}.json"),
        "answers": os.path.join(out, "results", f"{name}.npz"),
        "checkpoint": os.path.join(out, "checkpoints", f"{name}.npz"),
        "curve": os.path.join(out, "curves", f"{name}.csv"),
    }


def read_curve(path: str) -> dict:
    """The learning curve at ``path`` (columns; empty when there is none yet)."""
    return io.read_csv(path) if os.path.exists(path) else {}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(io.jsonable(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def answers_digest(answers) -> str:
    """The SHA-256 of an answers array (its shape, dtype and bytes), as ``results/NAME.json`` records it."""
    a = np.ascontiguousarray(answers)
    return hashlib.sha256(f"{a.shape}{a.dtype.str}".encode() + a.tobytes()).hexdigest()


def stamp_digest(checkpoint: Optional[dict]) -> Optional[str]:
    """The SHA-256 of the stamp a checkpoint's arrays (``checkpoint``, as :func:`read_checkpoint`
    gives them) carry, None without a checkpoint: what ``results/NAME.json`` records as
    ``checkpoint_stamp_sha256`` (:func:`checkpoint_record`), so that a checkpoint of another model
    put in its place is told apart (:func:`finished`, :func:`verify`)."""
    if checkpoint is None:
        return None
    return hashlib.sha256(str(checkpoint.get("meta_stamp", "")).encode()).hexdigest()


def checkpoint_record(path: str) -> dict:
    """The fields of a model's result that name its final checkpoint at ``path``:
    ``{"checkpoint_stamp_sha256": ...}`` (:func:`stamp_digest`), to write with :func:`write_result`."""
    return {"checkpoint_stamp_sha256": stamp_digest(io.load_npz(path))}


def _other_model(p: dict, res: dict, ck: Optional[dict]) -> Optional[str]:
    """Why the checkpoint ``ck`` of the model whose files are ``p`` is not the one its result
    ``res`` records (None: it is, or the result records none)."""
    recorded = res.get("checkpoint_stamp_sha256")
    if ck is None or recorded is None or stamp_digest(ck) == recorded:
        return None
    return (
        f"it holds the checkpoint of another model: its stamp is not the one {p['result']} records (a "
        "checkpoint of another variant or configuration put in its place)"
    )


def write_result(path: str, record: dict) -> str:
    """``record`` as plain JSON at ``path`` (atomically), with ``sha256``: the SHA-256 of the rest,
    which :func:`read_result` checks."""
    record = io.jsonable({k: v for k, v in record.items() if k != "sha256"})
    return io.write_json(path, {**record, "sha256": _digest(record)})


def read_result(path: str) -> dict:
    """The record :func:`write_result` wrote at ``path``; :class:`tokdyn.io.CorruptFile` naming the
    file when it is not whole JSON or its content differs from its checksum."""
    try:
        record = io.read_json(path)
    except ValueError as e:
        raise io.CorruptFile(path, f"not whole JSON: {e}") from None
    if not isinstance(record, dict) or "sha256" not in record:
        raise io.CorruptFile(path, "no sha256: not a result this version wrote")
    sha = record.pop("sha256")
    if _digest(record) != sha:
        raise io.CorruptFile(path, "its content differs from the SHA-256 recorded when it was written")
    return record


def read_answers(out: str, name: str) -> np.ndarray:
    """(seeds, n_test) the test answers of the finished model ``name`` in ``out``, verified
    (:class:`tokdyn.io.CorruptFile` naming the file when damaged)."""
    return io.load_npz(paths(out, name)["answers"])["answers"]


def _set_aside(path: str, reason: str = "", *, warn: bool = True) -> str:
    """:func:`tokdyn.io.set_aside` of the file ``path`` of a model (``<out>/<folder>/<file>``,
    :func:`paths`), rooted at the store's directory: a linked folder between them is refused, named."""
    return io.set_aside(path, reason, warn=warn, root=os.path.dirname(os.path.dirname(os.path.abspath(path))))


def read_checkpoint(path: str) -> Optional[dict]:
    """The arrays of the checkpoint at ``path`` (verified), None when there is none; a damaged one
    is set aside (a warning naming it) and None returned: its training starts again."""
    if not os.path.exists(path):
        return None
    try:
        return io.load_npz(path)
    except io.CorruptFile as e:
        _set_aside(path, e.reason)
        return None


def finished(out: str, name: str) -> bool:
    """Whether model ``name`` is finished in ``out``: its result, answers, final checkpoint and
    curve all whole and in agreement. What cannot be read back is set aside (a warning naming it)
    for the owner to recompute: the result and answers from the final checkpoint, the checkpoint by
    training again; a damaged curve is restored at once from its copy in the answers file
    (:func:`restore_curve`)."""
    p = paths(out, name)
    if not os.path.exists(p["result"]) and not os.path.exists(p["answers"]):
        return False
    kept = None
    if os.path.exists(p["answers"]):
        try:
            kept = io.load_npz(p["answers"])
            missing = [k for k in ANSWERS_KEYS if k not in kept]
            if missing:
                raise io.CorruptFile(p["answers"], f"it lacks {missing}")
        except io.CorruptFile as e:
            _set_aside(p["answers"], e.reason)
            kept = None
    ck = read_checkpoint(p["checkpoint"])
    final = ck is not None and kept is not None and int(ck.get("meta_step", -1)) == int(kept["steps"])
    if final:
        restore_curve(p, kept["curve_csv"].tobytes(), name)
    if not os.path.exists(p["result"]):
        return False
    try:
        res = read_result(p["result"])
    except io.CorruptFile as e:
        _set_aside(p["result"], e.reason)
        return False
    other = _other_model(p, res, ck)
    if other is not None:  # the owner trains it again
        _set_aside(p["checkpoint"], other)
        return False
    if kept is None:
        return False
    if answers_digest(kept["answers"]) != res.get("answers_sha256") or int(res["steps"]) != int(kept["steps"]):
        _set_aside(p["answers"], f"its answers are not those {p['result']} records")
        return False
    return final


def missing(out: str, names: Sequence[str]) -> list:
    """The models of ``names`` (each once, in order) that are not :func:`finished` in ``out``."""
    return [n for n in dict.fromkeys(names) if not finished(out, n)]


def restore_curve(p: dict, curve: bytes, name: str) -> None:
    """Write the finished curve ``curve`` of model ``name`` (whose files are ``p``, :func:`paths`)
    back when its file differs (a warning naming it; the damaged file set aside)."""
    try:
        with open(p["curve"], "rb") as f:
            if f.read() == curve:
                return
    except FileNotFoundError:
        pass
    else:
        warnings.warn(
            f"{p['curve']} is not the curve the finished variant {name} recorded (truncated or altered): "
            f"set aside and restored from {p['answers']}",
            RuntimeWarning,
            stacklevel=3,
        )
        _set_aside(p["curve"], warn=False)
    os.makedirs(os.path.dirname(p["curve"]), exist_ok=True)
    with io.atomic_write(p["curve"], "wb") as f:
        f.write(curve)


def curve_problem(rows: dict, ck: dict, seeds: int, steps_per_call: int, steps: int) -> Optional[str]:
    """What is wrong with the curve rows of a checkpoint ``ck`` at ``steps`` of ``seeds`` models
    that logged every ``steps_per_call`` steps (None: they are complete and their training logs are
    the checkpoint's)."""
    if not rows or "step" not in rows or "seed" not in rows:
        return "no rows"
    upto = np.asarray(rows["step"], float) <= steps
    per = steps_per_call
    want = [(k, s) for k in range(per, steps + 1, per) for s in range(seeds)]
    have = [(int(a), int(b)) for a, b in zip(np.asarray(rows["step"])[upto], np.asarray(rows["seed"])[upto])]
    if have != want:
        return f"{len(have)} rows up to step {steps} where {len(want)} were written"
    prefix = io.LEAF_PREFIX + "['curves']"
    for key in ck:
        col = key[len(prefix) + 2 : -2] if key.startswith(prefix) else None
        if col is None or col not in rows:
            continue
        ours = np.asarray(rows[col], float)[upto].astype(np.float32)
        theirs = np.asarray(ck[key])[[s for _, s in want], [k // per - 1 for k, _ in want]]
        recorded = np.isfinite(theirs)  # a column the checkpoint records only at some calls is NaN at the others
        if not np.array_equal(ours[recorded], theirs[recorded]):
            return f"its column {col!r} differs from the checkpoint's"
    return None


def resume_rows(p: dict, seeds: int, steps_per_call: int) -> dict:
    """The curve rows a resumed training continues from (the model's files ``p``, :func:`paths`):
    those of the steps its checkpoint has done (none without a checkpoint). A checkpoint that
    cannot be read, or whose rows are damaged or missing, is set aside with them (a warning naming
    both): the model trains from the start."""
    ck = read_checkpoint(p["checkpoint"])
    steps = 0 if ck is None else int(ck.get("meta_step", 0))
    if steps <= 0:
        return {}
    if not any(k.startswith(io.LEAF_PREFIX + "['best']") for k in ck):
        _set_aside(p["checkpoint"], "it keeps no best state (written by an earlier tokdyn)")
        return {}
    try:
        with open(p["curve"], "rb") as f:
            whole = f.read().endswith(b"\n")
        rows = read_curve(p["curve"]) if whole else {}
        problem = None if whole else "its last line is cut"
    except FileNotFoundError:
        rows, problem = {}, "it is missing"
    except (ValueError, IndexError) as e:
        rows, problem = {}, f"it cannot be read ({e})"
    problem = problem or curve_problem(rows, ck, seeds, steps_per_call, steps)
    if problem is not None:
        moved = [_set_aside(f, problem, warn=False) for f in (p["curve"], p["checkpoint"]) if os.path.exists(f)]
        warnings.warn(
            f"{p['curve']} does not hold the learning curve of {p['checkpoint']} ({problem}): both are set "
            f"aside ({', '.join(moved)}) and the variant is trained from the start",
            RuntimeWarning,
            stacklevel=3,
        )
        return {}
    upto = np.asarray(rows["step"], float) <= steps
    return {k: [int(x) if k in ("step", "seed") else float(x) for x in np.asarray(v)[upto]] for k, v in rows.items()}


def steps_recorded(out: str, name: str, budget: int) -> int:
    """Steps of ``name`` already done, as far as the files on disk tell (``budget`` once it has a
    result; for a progress bar)."""
    if os.path.exists(paths(out, name)["result"]):
        return budget
    try:
        c = read_curve(paths(out, name)["curve"])
        return int(np.max(c["step"])) if len(c.get("step", [])) else 0
    except (ValueError, IndexError, KeyError):
        return 0


def verified_npz(path: str) -> dict:
    """The arrays of the ``.npz`` at ``path``, which must carry tokdyn's verification header and
    match it (:class:`tokdyn.io.CorruptFile` naming it otherwise: a file rewritten by plain
    ``np.savez`` has no header)."""
    if not io.is_verified(path):
        raise io.CorruptFile(path, "no verification header: not a file tokdyn wrote, or rewritten since")
    return io.load_npz(path)


def verify(out: str, name: str) -> None:
    """Check, strictly and without changing anything, the files of model ``name`` in ``out``: its
    result (its own SHA-256), answers and checkpoint (verification header and checksum) where
    present, and their agreement (the answers the result records, the final checkpoint, the curve
    the answers keep). A model with no result is not checked further (its checkpoint, verified,
    is still to be resumed). :class:`tokdyn.io.CorruptFile` naming the first file that fails;
    unlike :func:`finished`, nothing is set aside."""
    p = paths(out, name)
    res = read_result(p["result"]) if os.path.exists(p["result"]) else None
    kept = verified_npz(p["answers"]) if os.path.exists(p["answers"]) else None
    ck = verified_npz(p["checkpoint"]) if os.path.exists(p["checkpoint"]) else None
    if kept is not None:
        lacking = [k for k in ANSWERS_KEYS if k not in kept]
        if lacking:
            raise io.CorruptFile(p["answers"], f"it lacks {lacking}")
    if res is None:
        return  # not finished: its checkpoint (verified above) is resumed
    if kept is None:
        raise io.CorruptFile(p["answers"], f"missing, though {p['result']} records the finished variant")
    if answers_digest(kept["answers"]) != res.get("answers_sha256") or int(res["steps"]) != int(kept["steps"]):
        raise io.CorruptFile(p["answers"], f"its answers are not those {p['result']} records")
    if ck is None:
        raise io.CorruptFile(p["checkpoint"], f"missing, though {p['result']} records the finished variant")
    other = _other_model(p, res, ck)
    if other is not None:
        raise io.CorruptFile(p["checkpoint"], other)
    if int(ck.get("meta_step", -1)) != int(kept["steps"]):
        raise io.CorruptFile(
            p["checkpoint"],
            f"it holds step {int(ck.get('meta_step', -1))}, not the {int(kept['steps'])} steps {p['result']} records",
        )
    if os.path.exists(p["curve"]):
        with open(p["curve"], "rb") as f:
            if f.read() != kept["curve_csv"].tobytes():
                raise io.CorruptFile(p["curve"], f"not the curve the finished variant recorded in {p['answers']}")


def load(out: str, name: str, like, stamp: str, tested: str = "best"):
    """The state of model ``name`` in ``out`` that answers for it: its checkpoint's best state
    (``tested="best"``, :func:`tokdyn.train.load_best`) or its last (``"final"``,
    :func:`tokdyn.train.load_checkpoint`). A checkpoint without its verification header, or that
    fails it, is refused (:class:`tokdyn.io.CorruptFile` naming it, left where it is).

    Args:
      out: the store's directory.
      name: the model's name.
      like: a state of the same structure (the initial states of its models).
      stamp: what the checkpoint is keyed on (a checkpoint of anything else is refused,
        :class:`tokdyn.io.CorruptFile` naming where the stamps differ).
      tested: one of :data:`TESTED`.

    Returns:
      The stacked :class:`tokdyn.train.TrainState` of its models.
    """
    if tested not in TESTED:
        raise ValueError(f"tested must be one of {list(TESTED)}, got {tested!r}")
    path = paths(out, name)["checkpoint"]
    if not io.is_verified(path):
        raise io.CorruptFile(path, "no verification header: not a file tokdyn wrote, or rewritten since")
    held = checkpoints.checkpoint_stamp(path)
    if held is not None and held != stamp:  # a checkpoint of another model: named in a few words
        raise io.CorruptFile(
            path,
            f"it holds the checkpoint of another model or configuration than {name!r} "
            f"({checkpoints.stamp_difference(held, stamp)})",
        )
    if tested == "best":
        return loop.load_best(path, like, stamp).state
    return loop.load_checkpoint(path, like, stamp)[0]


def train_missing(out: str, names: Sequence[str], fit: Callable[[list], Any]) -> list:
    """Train the models of ``names`` that ``out`` lacks (:func:`missing`) with the store owner's
    ``fit(missing) -> bool`` (True when every one finished); the finished ones are kept. Returns
    the models it trained (empty when none was missing); ``RuntimeError`` when ``fit`` did not
    finish them (a deadline ran out)."""
    todo = missing(out, names)
    if todo and not fit(todo):
        raise RuntimeError(f"training the source variants in {out} did not finish")
    return todo
