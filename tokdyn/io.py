"""Files and progress: the one place where tokdyn writes to disk or to the terminal.

- :func:`atomic_write`: every file is written to a temporary name unique to its writer, flushed
  to disk and renamed over the final name, so a reader (or a resumed run) sees the old file or
  the new one, never half of one -- also when several processes write the same file at once.
- :func:`write_csv` / :func:`read_csv` (one row per record), :func:`write_json` /
  :func:`read_json` (metadata, test results), :func:`to_columns` / :func:`to_rows`.
- :func:`save_pytree` / :func:`load_pytree`: checkpoints of any pytree of arrays (``.npz``).
- :func:`write_verified` / :func:`read_verified`: a file that carries the SHA-256 of its own
  content, checked on every read; checkpoints and the parts of studies are written this way, so a
  truncated or altered file is recognised (:class:`CorruptFile`, naming the file) instead of being
  read as a result. :func:`set_aside` moves such a file out of the way, to be recomputed.
- :func:`write_checked_json` / :func:`read_checked_json`: plain JSON that carries ``"checksum"``,
  the SHA-256 of its other fields (a study's ``config.json``).
- :class:`DiskFull`: a write that found no space left names the file, the bytes it needed and the
  bytes free (the temporary is removed: nothing half-written is kept).
- :func:`environment`: versions and machine facts recorded next to every output.
- :class:`Progress`: a bar with rate and ETA on a terminal, one line per update otherwise,
  nothing when quiet; used by sweeps, studies and training loops.

Figures live in :mod:`tokdyn.stats.figures`.
"""

from __future__ import annotations

import contextlib
import csv
import errno as _errno
import hashlib
import io as _bytes_io
import json
import os
import warnings
import platform
import sys
import time
import uuid
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np


class OutputConflict(ValueError):
    """An output directory holds the results of a different configuration (a usage error: choose
    another directory, or rerun with the configuration that wrote it)."""


class CorruptFile(ValueError):
    """A file tokdyn wrote cannot be read back whole: truncated, altered, or not what its name
    says. ``path`` names it, ``reason`` says what is wrong."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{self.path} is corrupt ({reason})")


class DiskFull(OSError):
    """A write found no space left on the device (or the user's quota spent): ``path`` names the
    file that could not be written, ``needed`` the bytes it needed (None when unknown), ``free``
    the bytes free on its file system (None when unknown). Nothing half-written is kept."""

    def __init__(self, path: str, needed: int | None = None, free: int | None = None, code: int = _errno.ENOSPC):
        self.path, self.needed, self.free = os.fspath(path), needed, free
        what = "no space left on the device" if code == _errno.ENOSPC else "the disk quota is spent"
        need = f" (it needs {needed:,} bytes" if needed is not None else " ("
        free_text = f"{free:,} bytes free" if free is not None else "free space unknown"
        text = (
            f"cannot write {self.path}: {what}{need}{'; ' if needed is not None else ''}{free_text}): "
            "free some space, or choose another --out"
        )
        super().__init__(text)
        self.errno, self.filename = code, self.path

    def __str__(self) -> str:
        return self.args[0]


DISK_FULL = (_errno.ENOSPC, _errno.EDQUOT)  # the errors :class:`DiskFull` stands for


def free_bytes(path: str) -> int | None:
    """Bytes free to an unprivileged writer on the file system of ``path`` (or of its nearest
    existing ancestor); None when that cannot be read."""
    probe = os.path.abspath(os.fspath(path))
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize)


def disk_full(error: OSError, path: str, needed: int | None = None) -> OSError:
    """``error`` as a :class:`DiskFull` naming ``path`` when it says the disk is full (ENOSPC,
    EDQUOT); otherwise ``error`` itself."""
    if isinstance(error, DiskFull) or getattr(error, "errno", None) not in DISK_FULL:
        return error
    return DiskFull(path, needed, free_bytes(path), error.errno)


# ---------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", *, size: int | None = None):
    """Open a temporary file next to ``path`` for writing; on a clean exit flush it to disk and
    rename it over ``path`` (atomic on POSIX; a symbolic link at ``path`` is replaced, never
    followed), on an exception remove it. The temporary name holds a random part, so concurrent
    writers never share one. Creates missing directories. A full disk (ENOSPC, EDQUOT) raises
    :class:`DiskFull` naming ``path``, the bytes needed (``size`` when given, else what was written
    so far) and the bytes free."""
    path = os.fspath(path)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    written = None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, mode, **({} if "b" in mode else {"newline": ""})) as f:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            finally:
                with contextlib.suppress(OSError, ValueError):
                    written = f.tell()
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and getattr(e, "errno", None) in DISK_FULL and not isinstance(e, DiskFull):
            raise disk_full(e, path, size if size is not None else written) from None
        raise


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporaries (a write cut short)."""
    return name.endswith(".tmp")


def _cell(v):
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, np.floating):  # the shortest text that reads back to the same value
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return v


def write_csv(path: str, columns: Mapping[str, Sequence]) -> str:
    """Write columns (name -> equal-length sequence) as a CSV with a header row, atomically."""
    names = list(columns)
    cols = [np.asarray(columns[n]) for n in names]
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise ValueError(f"columns must have equal lengths, got { {n: len(c) for n, c in zip(names, cols)} }")
    with atomic_write(path) as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*cols):
            w.writerow([_cell(v) for v in row])
    return path


def read_csv(path: str) -> dict[str, np.ndarray]:
    """Read a CSV written by :func:`write_csv` back into columns (float64 where every value parses)."""
    with open(path, newline="") as f:
        return parse_csv(f.read())


def parse_csv(text: str) -> dict[str, np.ndarray]:
    """:func:`read_csv` of a CSV's text."""
    rows = list(csv.reader(_bytes_io.StringIO(text, newline="")))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    out = {}
    for j, name in enumerate(header):
        col = [r[j] for r in body]
        try:
            out[name] = np.asarray(col, dtype=np.float64)
        except ValueError:
            out[name] = np.asarray(col)
    return out


def jsonable(obj):
    """``obj`` with NumPy values turned into Python ones (non-finite floats as strings: JSON has
    no inf/nan), tuples into lists and keys into strings."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if np.isfinite(v) else str(v)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str, obj) -> str:
    """Write ``jsonable(obj)`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(jsonable(obj), f, indent=2)
        f.write("\n")
    return path


def read_json(path: str):
    """The JSON value in the file ``path`` (as :func:`write_json` writes it; no checksum)."""
    with open(path) as f:
        return json.load(f)


def _canonical(obj) -> bytes:
    """The canonical JSON text of a JSON value (sorted keys, no spaces): what a checksum covers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def json_checksum(obj) -> str:
    """The SHA-256 (hex) of the canonical JSON (sorted keys) of ``jsonable(obj)``, a mapping's
    ``"checksum"`` field left out."""
    value = json.loads(json.dumps(jsonable(obj)))
    if isinstance(value, dict):
        value.pop("checksum", None)
    return hashlib.sha256(_canonical(value)).hexdigest()


def write_checked_json(path: str, obj: Mapping) -> str:
    """Write the mapping ``obj`` as indented JSON (:func:`write_json`, atomically) with a field
    ``"checksum"``: the SHA-256 of its other fields' canonical JSON (:func:`json_checksum`), so it
    stays plain readable JSON and :func:`read_checked_json` recognises any change."""
    value = {k: v for k, v in jsonable(dict(obj)).items() if k != "checksum"}
    return write_json(path, {**value, "checksum": json_checksum(value)})


def read_checked_json(path: str) -> dict:
    """The mapping :func:`write_checked_json` wrote to ``path`` (without its checksum);
    :class:`CorruptFile` naming the file when it is not JSON, lacks its checksum or the checksum
    differs; ``FileNotFoundError`` when absent."""
    try:
        value = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFile(path, f"not JSON: {e}") from None
    except IsADirectoryError:
        raise CorruptFile(path, "a directory, not a file tokdyn wrote") from None
    if not isinstance(value, dict) or "checksum" not in value:
        raise CorruptFile(path, "it carries no checksum: not written whole by this version of tokdyn")
    recorded = value.pop("checksum")
    if recorded != json_checksum(value):
        raise CorruptFile(path, "its checksum differs from that of its content: it was changed after tokdyn wrote it")
    return value


def file_sha256(path: str) -> str:
    """The SHA-256 (hex) of the file ``path``'s bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_columns(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> dict[str, list]:
    """A list of row dicts as a dict of columns: ``keys`` in that order (default: the first
    row's keys)."""
    if keys is None:
        keys = list(rows[0]) if rows else []
    return {k: [r[k] for r in rows] for k in keys}


def to_rows(columns: Mapping[str, Sequence], order: Iterable[int] | None = None) -> list[dict]:
    """A dict of columns as a list of row dicts (optionally in the given row order), NumPy
    scalars as Python ones."""
    n = len(next(iter(columns.values())))
    order = range(n) if order is None else order
    return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in columns.items()} for i in order]


# ---------------------------------------------------------------------------------------------- verified files


MAGIC = b"TOKDYN-VERIFIED-1"  # first line: MAGIC, the SHA-256 of the content and its length in bytes


def write_verified(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically, behind a first line that records its SHA-256 and
    length; :func:`read_verified` checks both."""
    digest = hashlib.sha256(data).hexdigest().encode()
    with atomic_write(path, "wb", size=len(data) + len(MAGIC) + 100) as f:
        f.write(MAGIC + b" " + digest + b" " + str(len(data)).encode() + b"\n")
        f.write(data)
    return path


def read_verified(path: str) -> bytes:
    """The content :func:`write_verified` wrote to ``path``; :class:`CorruptFile` naming the file
    when it is truncated, altered or not such a file."""
    with open(path, "rb") as f:
        raw = f.read()
    head, sep, body = raw.partition(b"\n")
    fields = head.split(b" ")
    if not sep or len(fields) != 3 or fields[0] != MAGIC or not fields[2].isdigit():
        raise CorruptFile(path, "no verification header: not a file tokdyn wrote, or cut before its first line")
    if len(body) != int(fields[2]):
        raise CorruptFile(path, f"{len(body)} bytes where {int(fields[2])} were written: truncated")
    if hashlib.sha256(body).hexdigest().encode() != fields[1]:
        raise CorruptFile(path, "its SHA-256 differs from the one recorded when it was written")
    return body


def is_verified(path: str) -> bool:
    """Whether ``path`` begins like a :func:`write_verified` file (its content is not checked)."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def recomputing(path: str, compute, *, before_retry=None):
    """``compute()``; when it raises :class:`CorruptFile` for the file ``path`` (a checkpoint it
    resumes from), that file is set aside (:func:`set_aside`, with a warning) and ``compute()``
    runs once more from scratch, after ``before_retry()`` when given. A corrupt file elsewhere is
    raised as it is."""
    try:
        return compute()
    except CorruptFile as e:
        if os.path.abspath(e.path) != os.path.abspath(path):
            raise
        set_aside(path, e.reason)
    if before_retry is not None:
        before_retry()
    return compute()


def set_aside(path: str, reason: str = "", *, warn: bool = True, root: str | None = None) -> str:
    """Move the unreadable file ``path`` to a ``corrupt/`` folder beside it (a unique name, never
    overwriting), with a warning naming both; returns the new path. Whoever needed the file then
    recomputes it. A directory or a symbolic link at ``path`` is moved as it is (the entry itself:
    a link is never followed, a directory never emptied).

    Nothing is moved through a link: :class:`OutputConflict` names the link, and nothing moves,
    where the ``corrupt/`` folder beside ``path`` is a symbolic link (or not a directory) or, with
    ``root`` (the directory that holds ``path``, e.g. a study's output directory; it may itself be
    a link), where a folder between ``root`` and ``path`` is one, or ``path`` lies outside ``root``."""
    parent = os.path.dirname(os.path.abspath(path))
    folder = os.path.join(parent, "corrupt")
    link = None if root is None else link_between(root, parent)
    if link is None and os.path.lexists(folder) and (os.path.islink(folder) or not os.path.isdir(folder)):
        link = folder
    if link is not None:
        what = f"a symbolic link (to {os.readlink(link)!r})" if os.path.islink(link) else "not a folder"
        raise OutputConflict(
            f"{path} cannot be set aside: {link} is {what}, and tokdyn moves or removes nothing through a "
            "link; nothing was moved. Replace the link by a folder, or choose another directory"
        )
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{os.path.basename(path)}.{time.strftime('%Y%m%d-%H%M%S')}.{uuid.uuid4().hex[:6]}")
    os.replace(path, target)
    if warn:
        warnings.warn(
            f"{path} could not be read back{' (' + reason + ')' if reason else ''}: set aside as {target}; "
            "it is recomputed",
            RuntimeWarning,
            stacklevel=2,
        )
    return target


def link_between(root: str, path: str) -> str | None:
    """The first symbolic link on the way from the directory ``root`` down to ``path`` (the
    entries below ``root``, ``path`` itself included; ``root`` itself may be a link), as a path
    under ``root``; ``path`` itself when it does not lie under ``root``; None when there is none.
    ``path`` is absolute, or relative to the working directory, as ``root`` is."""
    top = os.path.abspath(root)
    full = os.path.abspath(path)
    if full == top:
        return None
    if os.path.commonpath([top, full]) != top:
        return path
    current = top
    for part in os.path.relpath(full, top).split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
    return None


def not_a_file(path: str) -> str | None:
    """Why the entry at ``path`` cannot be a file tokdyn wrote: ``"a directory"`` or ``"a symbolic
    link"``; None for a regular file or nothing."""
    if os.path.islink(path):
        return "a symbolic link, not a file tokdyn wrote (never followed)"
    if os.path.isdir(path):
        return "a directory, not a file tokdyn wrote"
    return None


def load_npz(path: str) -> dict:
    """Every array of an ``.npz`` that tokdyn wrote, verified against its checksum and read into
    memory; :class:`CorruptFile` naming the file when it cannot be read whole or carries no
    verification header (every part, chunk and checkpoint carries one: a plain ``.npz`` is not
    read as a result); ``FileNotFoundError`` when absent."""
    import zipfile

    try:
        problem = not_a_file(path)
        if problem is not None:
            raise CorruptFile(path, problem)
        source = _bytes_io.BytesIO(read_verified(path))
        with np.load(source, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except CorruptFile:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptFile(path, f"{type(e).__name__}: {e}") from None


def save_npz(path: str, **arrays) -> str:
    """``arrays`` as an ``.npz`` with a checksum (:func:`write_verified`), atomically; read it
    back with :func:`load_npz`."""
    buf = _bytes_io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return write_verified(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------- checkpoints


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
    :class:`CorruptFile` when the file cannot be read whole."""
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


_interrupted = [False]  # a Ctrl-C was seen (by :func:`on_interrupt`) in this process


def on_interrupt(signum=None, frame=None) -> None:
    """The ``tokdyn`` command's SIGINT handler: remembers the Ctrl-C, then raises
    ``KeyboardInterrupt`` as Python's own handler does. Remembered, it cannot be lost where a
    library catches the exception on its way (code run by JAX's compiler): :func:`check_interrupt`
    raises it again at the next unit of work (:func:`kept`, :func:`kept_rows`,
    :meth:`Progress.update`), and :func:`interrupted` tells the command it must not exit 0."""
    _interrupted[0] = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether :func:`on_interrupt` has seen a Ctrl-C in this process (since :func:`reset_interrupt`)."""
    return _interrupted[0]


def reset_interrupt() -> None:
    """Forget a Ctrl-C seen before (a new command in the same process)."""
    _interrupted[0] = False


def check_interrupt() -> None:
    """``KeyboardInterrupt`` when a Ctrl-C was seen: the work stops at a unit's boundary, its
    finished units on disk."""
    if _interrupted[0]:
        raise KeyboardInterrupt


def kept(path: str, stamp: str, compute: Callable[[], Mapping[str, Any]]) -> dict:
    """``compute()`` (a dict of arrays and numbers), saved to ``path`` (an ``.npz`` with a
    checksum, atomically) with ``stamp``, a string naming what was computed; read back instead when
    ``path`` already holds a result of the same ``stamp``. How studies keep each finished unit of
    work: a rerun after an interruption loses nothing, a changed configuration (another stamp)
    recomputes, and a corrupt file is set aside with a warning (:func:`set_aside`) and recomputed,
    as is a directory or a symbolic link at ``path`` (moved, never followed)."""
    if os.path.lexists(path) and not_a_file(path):
        set_aside(path, not_a_file(path))
    if os.path.exists(path):
        try:
            z = load_npz(path)
        except CorruptFile as e:
            set_aside(path, e.reason)
        else:
            if "stamp" in z and str(z["stamp"]) == stamp:
                return {k: v if v.ndim else v[()] for k, v in z.items() if k != "stamp"}
    check_interrupt()
    value = dict(compute())
    save_npz(path, stamp=np.asarray(stamp), **{k: np.asarray(v) for k, v in value.items()})
    check_interrupt()  # finished and kept: stop here after a Ctrl-C lost inside the work
    return value


def kept_rows(path: str, stamp: str, compute: Callable[[], Sequence[Mapping[str, Any]]]) -> list[dict]:
    """:func:`kept` for a list of JSON-able rows (a table's records): ``compute()`` saved to
    ``path`` with ``stamp`` and a checksum, read back by a rerun of the same ``stamp``."""
    if os.path.lexists(path) and not_a_file(path):
        set_aside(path, not_a_file(path))
    if os.path.exists(path):
        try:
            saved = json.loads(read_verified(path))
        except (CorruptFile, ValueError) as e:
            set_aside(path, getattr(e, "reason", str(e)))
        else:
            if isinstance(saved, dict) and saved.get("stamp") == stamp:
                return saved["rows"]
    check_interrupt()
    text = json.dumps({"stamp": stamp, "rows": [dict(r) for r in compute()]}, default=_plain)
    write_verified(path, text.encode())
    check_interrupt()
    return json.loads(text)["rows"]  # what a rerun reads back: the same values, the same types


def _plain(obj):
    """JSON's fallback for NumPy values (non-finite floats stay floats: Python's JSON writes them)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-able: {obj!r}")


# ---------------------------------------------------------------------------------------------- metadata


def environment() -> dict:
    """Versions and machine facts recorded next to every output."""
    import jax

    return {
        "tokdyn": __import__("tokdyn").__version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.local_devices()],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


# ---------------------------------------------------------------------------------------------- progress


class Progress:
    """Progress of ``total`` units of work (runs, steps, models).

    On a terminal: a live bar with the count, the rate and the time left (:mod:`rich`). Otherwise
    (logs, CI, files): one line per :meth:`update` on stderr. With ``quiet``: nothing. ``done``
    counts work finished before this session (a resumed run); the rate counts this session only.
    Use as a context manager, or call :meth:`close`. :meth:`note` prints a message the same way.
    """

    def __init__(
        self, total: int, *, desc: str = "", unit: str = "runs", done: int = 0, quiet: bool = False, stream=None
    ):
        self.total, self.done, self.desc, self.unit, self.quiet = int(total), int(done), desc, unit, quiet
        self.stream = sys.stderr if stream is None else stream
        self._start_done, self._t0 = self.done, time.perf_counter()
        self._bar = None
        if not quiet and self.stream.isatty():
            self._bar = _rich_bar(self.stream, desc, unit, total, done)

    def rate(self) -> float:
        """Units done per second in this session (those done before it not counted); NaN before any
        time has passed."""
        dt = time.perf_counter() - self._t0
        return (self.done - self._start_done) / dt if dt > 0 else float("nan")

    def update(self, n: int = 1, **info) -> None:
        """``n`` more units are done; ``info`` (name -> number) is shown beside the count.
        ``KeyboardInterrupt`` after a Ctrl-C (:func:`check_interrupt`)."""
        self.done += int(n)
        check_interrupt()
        if self.quiet:
            return
        extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        if self._bar is not None:
            bar, task = self._bar
            bar.update(task, completed=self.done, info=extra)
            return
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / max(self.total, 1)
        self.stream.write(
            f"{self.desc + ': ' if self.desc else ''}{self.done}/{self.total} {self.unit} ({pct:.1f}%), "
            f"{rate:,.3g} {self.unit}/s, ETA {eta:,.0f} s{'  ' + extra if extra else ''}\n"
        )
        self.stream.flush()

    def note(self, message: str) -> None:
        """Print a line (above the bar on a terminal), unless quiet."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar[0].console.print(message, highlight=False, markup=False)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop the live bar (nothing to do off a terminal); called on leaving the ``with`` block."""
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rich_bar(stream, desc, unit, total, done):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress as Bar,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text("" if task.speed is None else f"{task.speed:,.3g} {unit}/s")

    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(file=stream),
        transient=False,
    )
    task = bar.add_task(desc, total=total, completed=done, info="")
    bar.start()
    return bar, task
