"""A finished unit of work kept on disk with a stamp and read back by a rerun (:func:`kept`,
:func:`kept_rows`), recomputed when damaged; read without computing it (:func:`read_kept`), as a process
reads the units another process keeps."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tokdyn.io.errors import CorruptFile
from tokdyn.io.interrupt import check_interrupt
from tokdyn.io.verified import (
    load_npz,
    not_a_file,
    read_verified,
    save_npz,
    set_aside,
    write_verified,
)


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
            if _stamped(z, stamp):
                return _value(z)
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
            if _stamped(saved, stamp):
                return saved["rows"]
    check_interrupt()
    text = json.dumps({"stamp": stamp, "rows": [dict(r) for r in compute()]}, default=_plain)
    write_verified(path, text.encode())
    check_interrupt()
    return json.loads(text)["rows"]  # what a rerun reads back: the same values, the same types


def _stamped(saved, stamp: str) -> bool:
    """Whether a file's content (an npz's arrays, or the rows' JSON object) was kept with ``stamp``."""
    if isinstance(saved, dict):
        return saved.get("stamp") == stamp
    return "stamp" in saved and str(saved["stamp"]) == stamp


def _value(z) -> dict:
    """A kept npz's arrays (0-d ones as scalars), its stamp left out."""
    return {k: v if v.ndim else v[()] for k, v in z.items() if k != "stamp"}


def read_kept(path: str, stamp: str, *, rows: bool = False):
    """What :func:`kept` (or, with ``rows``, :func:`kept_rows`) keeps at ``path`` for ``stamp``, read without
    computing anything: the dict of arrays (the rows), or None where there is none yet (no file, another stamp,
    not a regular file, or a file that fails its checksum: left where it is, for its writer to redo)."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    try:
        if rows:
            saved = json.loads(read_verified(path))
            return saved["rows"] if _stamped(saved, stamp) else None
        z = load_npz(path)
    except (CorruptFile, ValueError, OSError, KeyError):
        return None
    return _value(z) if _stamped(z, stamp) else None


def _plain(obj):
    """JSON's fallback for NumPy values (non-finite floats stay floats: Python's JSON writes them)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-able: {obj!r}")
