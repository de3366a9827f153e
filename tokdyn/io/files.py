"""Files written atomically (:func:`atomic_write`), CSV and JSON (:func:`write_csv`, :func:`write_json`,
:func:`write_checked_json`: JSON that carries the checksum of its fields), row <-> column tables."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io as _bytes_io
import json
import os
import uuid
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from tokdyn.io.errors import DISK_FULL, CorruptFile, DiskFull, disk_full


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


_CSV_SPECIAL = (",", '"', "\r", "\n")  # a field holding one of these is quoted (csv.QUOTE_MINIMAL)


def _column_text(col: np.ndarray) -> list | None:
    """The cells of a column as :func:`write_csv` writes them, made a column at a time: booleans as
    0 / 1, integers, floats as their shortest text that reads back to the same value (what
    ``str`` of a NumPy scalar gives), strings quoted as ``csv.writer`` quotes them; None for a
    column of other values (written cell by cell)."""
    if col.dtype == np.bool_:
        return np.where(col, "1", "0").tolist()
    if col.dtype.kind in "iuf":
        return col.astype(str).tolist()
    if col.dtype.kind == "U":
        return ['"' + v.replace('"', '""') + '"' if any(c in v for c in _CSV_SPECIAL) else v for v in col.tolist()]
    return None


def write_csv(path: str, columns: Mapping[str, Sequence]) -> str:
    """Write columns (name -> equal-length sequence) as a CSV with a header row, atomically.

    Columns of numbers, booleans and strings are made into text a column at a time (a table of
    10^5 runs in a fraction of a second); a table with a column of other values, or of one
    column, is written row by row by ``csv.writer``, to the same text."""
    names = list(columns)
    cols = [np.asarray(columns[n]) for n in names]
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise ValueError(f"columns must have equal lengths, got { {n: len(c) for n, c in zip(names, cols)} }")
    texts = [_column_text(c) for c in cols] if len(cols) > 1 and all(c.ndim == 1 for c in cols) else [None]
    with atomic_write(path) as f:
        w = csv.writer(f)
        w.writerow(names)
        if all(t is not None for t in texts):
            f.writelines(",".join(row) + "\r\n" for row in zip(*texts))  # csv.writer's line ending
        else:
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
    row's keys). ``ValueError`` naming the first row that lacks one of them (ragged rows)."""
    given = keys is not None
    if keys is None:
        keys = list(rows[0]) if rows else []
    for i, r in enumerate(rows):
        missing = [k for k in keys if k not in r]
        if missing:
            extra = [k for k in r if k not in keys]
            raise ValueError(
                f"to_columns: row {i} lacks {', '.join(map(repr, missing))} (the columns: {list(keys)}"
                f"{'' if given else ', from the first row'}){'; it holds ' + ', '.join(map(repr, extra)) if extra else ''}: "
                "every row must hold every column (fill a missing value with NaN, or give keys=)"
            )
    return {k: [r[k] for r in rows] for k in keys}


def to_rows(columns: Mapping[str, Sequence], order: Iterable[int] | None = None) -> list[dict]:
    """A dict of columns as a list of row dicts (optionally in the given row order), NumPy
    scalars as Python ones."""
    n = len(next(iter(columns.values())))
    order = range(n) if order is None else order
    return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in columns.items()} for i in order]
