"""A sweep's directory on disk: its chunk files (``chunks/START-STOP.npz``, each verified by a
checksum and stamped with :func:`sweep_id`) and its ``manifest.json`` (the arguments, the code
digests, the output fields): writing, checking and resuming them (:func:`check_resume`), and
reading a finished sweep back (:func:`iter_chunks`, :func:`load`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import time
import warnings

import jax
import numpy as np

from tokdyn import io
from tokdyn.engine.sweep.grid import Grid
from tokdyn.engine.sweep.result import SweepResult
from tokdyn.engine.sweep.task import fn_id


CHUNK_STAMP = "__sweep__"  # the member of a chunk file holding the digest of its sweep's arguments
_CHUNK_NAME = re.compile(r"^(\d{12})-(\d{12})\.npz$")


def chunk_path(out: str, start: int, stop: int) -> str:
    """The file of the chunk of runs ``start..stop-1`` in the sweep directory ``out``."""
    return os.path.join(out, "chunks", f"{start:012d}-{stop:012d}.npz")


def read_chunk(path: str, start: int, stop: int, fields, expected: str | None = None) -> tuple[dict | None, str | None]:
    """``(outputs, None)`` of a finished chunk; ``(None, None)`` when its file is absent; ``(None,
    reason)`` when it cannot be used: not a plain file (a directory or a symbolic link, never
    followed), without the verification header of :func:`tokdyn.io.save_npz` (written by something
    else), truncated or altered (its checksum, :func:`tokdyn.io.load_npz`), of other runs or fields,
    without a stamp or stamped by a sweep of other arguments than ``expected`` (a :func:`sweep_id`)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None, None
    if stat.S_ISLNK(mode):
        return None, "it is a symbolic link, not a chunk file (never followed)"
    if not stat.S_ISREG(mode):
        return None, f"it is {'a directory' if stat.S_ISDIR(mode) else 'not a regular file'}, not a chunk file"
    try:
        if not io.is_verified(path):
            return None, "it has no verification header (every chunk is written with one): not a chunk this sweep wrote"
        data = io.load_npz(path)
    except FileNotFoundError:
        return None, None
    except io.CorruptFile as e:
        return None, e.reason
    except OSError as e:
        return None, f"it cannot be read: {type(e).__name__}: {e}"
    index = data.pop("index", None)
    stamp = data.pop(CHUNK_STAMP, None)
    if index is None or not np.array_equal(index, np.arange(start, stop)):
        return None, f"it does not hold the runs [{start}, {stop}) its name says"
    if stamp is None:
        return None, "it carries no stamp of the sweep that wrote it"
    if expected is not None and str(stamp) != expected:
        return None, "it is stamped by a sweep of other arguments"
    if fields is not None and set(data) != set(fields):
        return None, f"it holds the fields {sorted(data)}, not {sorted(fields)}"
    if any(len(v) != stop - start for v in data.values()):
        return None, f"its fields do not hold {stop - start} runs each"
    return data, None


def write_chunk(path: str, start: int, stop: int, outputs: dict, stamp: str = "") -> None:
    """A finished chunk, atomically, with a checksum (:func:`tokdyn.io.save_npz`) and ``stamp``."""
    io.save_npz(path, index=np.arange(start, stop, dtype=np.int64), **{CHUNK_STAMP: np.asarray(stamp)}, **outputs)


def json_digest(obj) -> str:
    """A short SHA-256 (16 hex digits) of ``obj`` as canonical JSON: a manifest's ``checksum`` and
    :func:`sweep_id`."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sweep_id(manifest: dict) -> str:
    """The digest of a manifest's arguments (its tokdyn version and its own checksum aside): the
    stamp of every chunk of that sweep."""
    return json_digest({k: v for k, v in manifest.items() if k not in ("tokdyn", "checksum")})


def make_manifest(fn, grid: Grid, key, chunk_size: int, common_random_numbers: bool, code: dict, outputs: dict) -> dict:
    """The manifest of a sweep of ``fn`` over ``grid``: its arguments, the code digests ``code`` and
    the output fields ``outputs``, exactly as JSON reads it back, with the ``checksum`` of its fields."""
    from tokdyn import __version__

    m = {
        "format": 2,
        "fn": fn_id(fn),
        "code": dict(code),
        "outputs": dict(outputs),
        "grid": grid.to_dict(),
        "runs": len(grid),
        "chunk_size": int(chunk_size),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "key_impl": str(jax.random.key_impl(key)),
        "common_random_numbers": bool(common_random_numbers),
        "tokdyn": __version__,
    }
    m = json.loads(json.dumps(m))  # exactly what a reader of the file gets back
    m["checksum"] = json_digest(m)
    return m


MANIFEST_WAIT_S = 600.0  # how long a part waits for the part that owns the manifest to write it


def write_manifest(path: str, manifest: dict) -> None:
    """Write ``manifest`` to ``path`` atomically, as plain JSON."""
    with io.atomic_write(path) as f:  # plain json (not io.jsonable): read back to the dict its checksum covers
        json.dump(manifest, f, indent=2)
        f.write("\n")


STUDY_STAMP = "study.json"  # the stamp of a tokdyn study's directory (tokdyn.experiment.study.STAMP)


def _study_stamped(out: str) -> bool:
    """Whether ``out`` carries a tokdyn study's stamp (a :data:`STUDY_STAMP` whose checksum
    verifies: JSON with its ``"checksum"``, :func:`tokdyn.io.write_checked_json`, or the older
    format behind a verification line, :func:`tokdyn.io.write_verified`): the study owns that
    directory and has checked it."""
    path = os.path.join(out, STUDY_STAMP)
    try:
        if not os.path.isfile(path) or os.path.islink(path):
            return False
        if io.is_verified(path):
            return True
        io.read_checked_json(path)
        return True
    except (OSError, io.CorruptFile):
        return False


def _chunk_entry(name: str) -> bool:
    """Whether ``name`` in a sweep's ``chunks/`` is one a sweep writes: a chunk file, a chunk
    file's temporary (a write cut short) or ``corrupt/`` (damaged chunks set aside)."""
    if name == "corrupt" or _CHUNK_NAME.match(name):
        return True
    return io.is_temporary(name) and bool(re.match(r"^\d{12}-\d{12}", name))


def _holds_a_chunk(chunk_dir: str, names) -> bool:
    """Whether ``chunk_dir`` holds a file a sweep wrote (a chunk's name and verification header):
    the evidence that a damaged ``manifest.json`` beside it is a sweep's."""
    for name in names:
        path = os.path.join(chunk_dir, name)
        try:
            if _CHUNK_NAME.match(name) and os.path.isfile(path) and not os.path.islink(path) and io.is_verified(path):
                return True
        except OSError:
            continue
    return False


def check_owned(out: str) -> None:
    """Refuse ``out`` before any work when it cannot be a sweep's directory: a file (or a path under
    one), or a directory that holds anything a sweep never writes (a sweep writes only
    ``manifest.json``, ``chunks/`` holding chunk files named ``START-STOP.npz`` and a ``corrupt/``
    for damaged ones, and ``corrupt/``, where a damaged manifest is set aside; a directory stamped by a tokdyn study,
    :data:`STUDY_STAMP`, is the study's, which has checked it), or whose ``manifest.json`` is not a
    sweep's manifest at all with no chunk file of a sweep beside it (an empty ``chunks/`` is no
    evidence). :class:`tokdyn.io.OutputConflict` naming the files; nothing in
    ``out`` is touched. The rule of the command line (a study's directory is its own only once it
    carries the study's stamp), here for a sweep's directory: nothing of a user's is ever moved or
    overwritten."""
    probe = out
    while probe and not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        where = "is a file" if probe == out else f"is under {probe!r}, which is a file"
        raise io.OutputConflict(f"out={out!r} {where}: a sweep writes into a directory; choose a new or empty one")
    if not os.path.isdir(out) or _study_stamped(out):
        return
    foreign = sorted(
        name
        for name in os.listdir(out)
        if name not in ("manifest.json", "chunks", "corrupt")  # corrupt/: a damaged manifest set aside
        and not (name.startswith("manifest.json.") and io.is_temporary(name))
    )
    chunk_dir = os.path.join(out, "chunks")
    chunks = sorted(os.listdir(chunk_dir)) if os.path.isdir(chunk_dir) and not os.path.islink(chunk_dir) else []
    foreign += [f"chunks/{name}" for name in chunks if not _chunk_entry(name)]
    path = os.path.join(out, "manifest.json")
    if not foreign and os.path.lexists(path) and not _holds_a_chunk(chunk_dir, chunks):
        try:
            m = io.read_json(path)
        except (ValueError, OSError):
            m = None
        if not (isinstance(m, dict) and all(k in m for k in MANIFEST_KEYS)):
            foreign = ["manifest.json (not a sweep's manifest, and no chunk of a sweep beside it)"]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise io.OutputConflict(
            f"out={out!r} holds files that no tokdyn sweep wrote ({shown}): a sweep writes only into a new or "
            "empty directory, or one it wrote; choose another directory (nothing in this one was changed)"
        )


def check_resume(out: str, manifest: dict, resume: bool, part: tuple) -> bool:
    """Write the manifest (part 0 owns it) or check the one already there against ``manifest``;
    returns whether an intact manifest was there already.

    Several processes may start the same sweep at once: part 0 writes the manifest when it is
    absent, or sets a damaged one aside (with a warning) and writes it anew from the arguments;
    every other part waits for a readable one (it may not see part 0's directory yet) and then
    checks that it describes the same sweep."""
    path = os.path.join(out, "manifest.json")
    old, damage = None, None
    if os.path.exists(path):
        try:
            old = read_manifest(out)
        except io.CorruptFile as e:
            damage = e
    if old is None:
        if damage is not None and not resume:
            raise io.OutputConflict(
                f"out={out!r} already holds a sweep (its {path} is damaged: {damage.reason}); pass "
                "resume=True to continue it, or choose a new directory"
            )
        if part[0] == 0:
            if damage is not None:
                target = io.set_aside(path, damage.reason, warn=False, root=out)
                warnings.warn(
                    f"{path} could not be read ({damage.reason}): set aside as {target} and written anew "
                    "from the arguments (it is fully determined by them; every chunk is checked against "
                    "it by its stamp)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            write_manifest(path, manifest)
            return False
        os.makedirs(out, exist_ok=True)
        deadline = time.monotonic() + MANIFEST_WAIT_S
        while old is None:
            if time.monotonic() > deadline:
                why = f"it is damaged ({damage.reason})" if damage is not None else "it is absent"
                raise TimeoutError(
                    f"part {part[0]} of {part[1]} waited {MANIFEST_WAIT_S:.0f} s for part 0 to write "
                    f"{path} ({why}): start every part with the same out, on a filesystem all of "
                    "them see"
                )
            time.sleep(0.05)
            try:
                old = read_manifest(out) if os.path.exists(path) else None
            except io.CorruptFile as e:
                damage = e
        resume = True
    elif not resume:
        raise io.OutputConflict(
            f"out={out!r} already holds a sweep; pass resume=True to continue it, or choose a new directory"
        )
    differ = [k for k in manifest if k not in ("tokdyn", "checksum") and old.get(k) != manifest[k]]
    if differ:
        raise io.OutputConflict(_resume_conflict(out, old, manifest, differ))
    return damage is None


def _resume_conflict(out: str, old: dict, new: dict, differ: list) -> str:
    """Why the sweep in ``out`` (manifest ``old``) cannot be resumed by ``new``."""
    if "code" not in old or "outputs" not in old:
        return (
            f"out={out!r} holds a sweep written before sweeps recorded the code that made their results (its "
            "manifest has no 'code'): they cannot be matched to the code run now; rerun with --fresh (or remove "
            "the directory), or run into another directory"
        )
    if set(differ) <= {"code", "outputs", "fn", "format"}:
        what = []
        for k in sorted(set(old["code"]) | set(new["code"])):
            if old["code"].get(k) != new["code"].get(k) and not (k == "fn" and "fn" in differ):  # said below
                what.append(f"the code of {new['fn']}" if k == "fn" else _changed_module(k, old["code"], new["code"]))
        if "outputs" in differ:
            what.append(
                f"output fields ({', '.join(old['outputs']) or 'none'} there, "
                f"{', '.join(new['outputs']) or 'none'} now)"
            )
        if "fn" in differ:
            what.append(f"fn ({old.get('fn')} there, {new['fn']} now)")
        return (
            f"out={out!r}: the rule's code changed since these results ({'; '.join(what)} differ): rerun with "
            "--fresh (or remove the directory), or into another directory"
        )
    return (
        f"out={out!r} holds a sweep started with different arguments ({', '.join(differ)} differ); resume it with "
        "the same arguments or choose a new directory"
    )


def _changed_module(key: str, old: dict, new: dict) -> str:
    """Words for the code digest ``key`` that differs between ``old`` and ``new``: a module of the
    user's by its name and file, else ``KEY code``."""
    if key.startswith("file "):
        path = key[len("file ") :]
        if key not in old:
            return f"file {path!r} (read by the code now, not by the code of these results)"
        if key not in new:
            return f"file {path!r} (read by the code of these results, not by the code now)"
        return f"file {path!r} (read while tracing) content"
    if not key.startswith("module "):
        return f"{key} code"
    name = key[len("module ") :]
    module = sys.modules.get(name)
    where = f" ({module.__file__})" if getattr(module, "__file__", None) else ""
    if key not in old:
        return f"module {name!r}{where} (not used by the code of these results)"
    if key not in new:
        return f"module {name!r} (used by the code of these results, not by the code now)"
    return f"module {name!r}{where} code"


def resumed_chunk_size(out: str) -> int | None:
    """The chunk size of the sweep already in ``out`` (None: none there): its manifest's or, when
    the manifest cannot be read, the size its chunk files were written with."""
    if not os.path.exists(os.path.join(out, "manifest.json")):
        return None
    try:
        return read_manifest(out)["chunk_size"]
    except io.CorruptFile:
        chunk_dir = os.path.join(out, "chunks")
        sizes = [
            int(m[2]) - int(m[1])
            for m in map(_CHUNK_NAME.match, os.listdir(chunk_dir) if os.path.isdir(chunk_dir) else [])
            if m
        ]
        return max(sizes) if sizes else None


def set_aside_chunk(path: str, problem: str, out: str) -> None:
    """Set the damaged chunk file ``path`` of the sweep directory ``out`` aside
    (:func:`tokdyn.io.set_aside`, with a warning naming ``problem``); nothing when it is gone
    meanwhile. Nothing is moved through a link: :class:`tokdyn.io.OutputConflict` names a linked
    folder between ``out`` and the chunk."""
    try:
        io.set_aside(path, problem, root=out)
    except FileNotFoundError:  # gone meanwhile (removed by hand, or set aside by a rerun of its part)
        pass


MANIFEST_KEYS = ("grid", "runs", "chunk_size", "key")


def read_manifest(out: str) -> dict:
    """The ``manifest.json`` of the sweep in ``out``: ``ValueError`` if there is none, and
    :class:`tokdyn.io.CorruptFile` (a ``ValueError`` naming the file) when it is truncated, altered
    or without its ``checksum``, or not a sweep's manifest."""
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        raise ValueError(f"no sweep found in {out!r} (it has no manifest.json)")
    try:
        m = io.read_json(path)
    except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, unreadable
        raise io.CorruptFile(path, f"not readable JSON: {e}") from None
    if not isinstance(m, dict) or any(k not in m for k in MANIFEST_KEYS):
        raise io.CorruptFile(
            path,
            f"not a sweep's manifest: it lacks {[k for k in MANIFEST_KEYS if k not in m]}"
            if isinstance(m, dict)
            else "not a sweep's manifest",
        )
    if "checksum" not in m:
        raise io.CorruptFile(path, "it carries no checksum (every manifest is written with one)")
    if m["checksum"] != json_digest({k: v for k, v in m.items() if k != "checksum"}):
        raise io.CorruptFile(path, "its fields differ from the checksum recorded when it was written")
    try:
        grid = Grid.from_dict(m["grid"])
        ok = len(grid) == m["runs"] and isinstance(m["chunk_size"], int) and m["chunk_size"] >= 1
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise io.CorruptFile(path, f"its grid cannot be read: {type(e).__name__}: {e}") from None
    if not ok:
        raise io.CorruptFile(path, f"its runs ({m['runs']!r}) or chunk_size ({m['chunk_size']!r}) do not fit its grid")
    return m


def missing_chunks(out: str) -> list[tuple[int, int]]:
    """``(start, stop)`` of every chunk of the sweep in ``out`` that has no file yet (nothing is
    read: a file that is there may still be damaged; :func:`iter_chunks` checks each)."""
    m = read_manifest(out)
    step, total = m["chunk_size"], m["runs"]
    chunk_dir = os.path.join(out, "chunks")
    have = set(os.listdir(chunk_dir)) if os.path.isdir(chunk_dir) else set()
    return [
        (s0, min(s0 + step, total))
        for s0 in range(0, total, step)
        if os.path.basename(chunk_path(out, s0, min(s0 + step, total))) not in have
    ]


def runs_kept_before(out: str, since: float) -> int:
    """How many runs of the sweep in ``out`` lie in chunk files written before the time ``since``
    (a ``time.time()``): after a :func:`~tokdyn.engine.sweep.run` started at ``since``, the runs
    it read back from an earlier run instead of computing them (0 without a manifest)."""
    try:
        m = read_manifest(out)
    except ValueError:
        return 0
    step, total, kept = m["chunk_size"], m["runs"], 0
    for s0 in range(0, total, step):
        s1 = min(s0 + step, total)
        try:
            if os.lstat(chunk_path(out, s0, s1)).st_mtime < since:
                kept += s1 - s0
        except OSError:
            continue
    return kept


def output_fields(out: str) -> tuple:
    """The output fields of the sweep in ``out`` (recorded in its manifest; for a sweep written
    before manifests recorded them, from its first chunk on disk)."""
    m = read_manifest(out)
    if isinstance(m.get("outputs"), dict):
        return tuple(m["outputs"])
    stop = min(m["chunk_size"], m["runs"])
    path = chunk_path(out, 0, stop)
    first, problem = read_chunk(path, 0, stop, None, sweep_id(m))
    if first is None:
        raise ValueError(f"sweep in {out!r} has no finished first chunk ({path}: {problem or 'absent'}): run it first")
    return tuple(first)


def iter_chunks(out: str):
    """Yield ``(start, stop, columns)`` for every chunk of the finished sweep in ``out``, in order,
    where ``columns`` holds the grid's columns and every output field for runs ``start..stop-1``.
    Reads one chunk at a time, so summaries of 10^8-run sweeps stay in constant memory.
    ``ValueError`` naming the first missing or damaged chunk's file."""
    m = read_manifest(out)
    grid = Grid.from_dict(m["grid"])
    step, total = m["chunk_size"], m["runs"]
    sid = sweep_id(m)
    fields = tuple(m["outputs"]) if isinstance(m.get("outputs"), dict) else None
    for s0 in range(0, total, step):
        s1 = min(s0 + step, total)
        path = chunk_path(out, s0, s1)
        got, problem = read_chunk(path, s0, s1, fields, sid)
        if got is None:
            raise ValueError(
                f"sweep in {out!r} is incomplete or damaged at runs [{s0}, {s1}): {path} "
                f"{'is damaged (' + problem + ')' if problem else 'is missing'}; resume it first (the "
                "same sweep.run call redoes it)"
            )
        fields = fields or tuple(got)
        cols = grid.rows(s0, s1)
        cols.update(got)
        yield s0, s1, cols


def load(out: str) -> SweepResult:
    """Read a finished sweep back from its directory (every chunk must be present and intact)."""
    grid = Grid.from_dict(read_manifest(out)["grid"])
    parts = [cols for _, _, cols in iter_chunks(out)]
    fields = tuple(k for k in parts[0] if k not in grid.names and k not in Grid.RESERVED)
    columns = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
    return SweepResult(columns, fields, grid)
