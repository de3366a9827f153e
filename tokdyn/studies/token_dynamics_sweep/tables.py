"""The sweep's tables as written: the SHA-256 of each recorded in ``tables.json`` with a checksum of
its own and the sweep's id (:func:`write_table`), so that a later reader (:func:`read_table`) can
tell it is the table the sweep wrote; and where a sweep of several rules keeps its engine sweeps
(:func:`group_dirs`)."""

from __future__ import annotations

import hashlib
import json
import os

from tokdyn import io
from tokdyn.engine import sweep
from tokdyn.studies.token_dynamics_sweep.config import GROUPS

TABLES = "tables.json"  # the SHA-256 of each table the sweep wrote, with a checksum of its own


def _json_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def group_dirs(out: str) -> list:
    """The engine sweeps' directories of the sweep of several rules in ``out`` (``groups/*`` with a
    manifest), sorted; [] for a sweep of one rule (its manifest is ``out``'s own)."""
    folder = os.path.join(out, GROUPS)
    if os.path.exists(os.path.join(out, "manifest.json")) or not os.path.isdir(folder):
        return []
    return [
        os.path.join(folder, d)
        for d in sorted(os.listdir(folder))
        if os.path.isfile(os.path.join(folder, d, "manifest.json"))
    ]


def sweep_key(out: str) -> str:
    """The id of the sweep in ``out``: its manifest's :func:`tokdyn.engine.sweep.sweep_id`, or for a
    sweep of several rules a digest of each engine sweep's (:func:`group_dirs`). ``ValueError`` when
    there is none or a manifest is damaged."""
    dirs = group_dirs(out)
    if not dirs:
        return sweep.sweep_id(sweep.read_manifest(out))
    return _json_digest({os.path.basename(d): sweep.sweep_id(sweep.read_manifest(d)) for d in dirs})


def _tables_record(out: str) -> dict:
    """``tables.json`` of ``out`` when it is intact and of the sweep now in ``out``; else ``{}``."""
    path = os.path.join(out, TABLES)
    try:
        record = io.read_json(path)
        sid = sweep_key(out)
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(record, dict)
        or record.get("checksum") != _json_digest({k: v for k, v in record.items() if k != "checksum"})
        or record.get("sweep") != sid
        or not isinstance(record.get("tables"), dict)
    ):
        return {}
    return record


def tables_entry(out: str, name: str) -> dict:
    """``tables.json`` of ``out`` with the SHA-256 of its table ``name`` (written already) recorded."""
    with open(os.path.join(out, name), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    record = _tables_record(out) or {"sweep": sweep_key(out), "tables": {}}
    record = {"sweep": record["sweep"], "tables": {**record["tables"], name: sha}}
    record["checksum"] = _json_digest(record)
    return record


def write_table(out: str, name: str, columns: dict) -> str:
    """Write the table ``name`` (a CSV of ``columns``) into the sweep directory ``out`` and record
    its SHA-256 in ``tables.json`` (itself carrying a checksum of its fields and the sweep's id),
    so that :func:`read_table` can tell it is the table written here. Returns its path."""
    path = io.write_csv(os.path.join(out, name), columns)
    io.write_json(os.path.join(out, TABLES), tables_entry(out, name))
    return path


def read_table(out: str, name: str) -> tuple:
    """``(columns, None)`` of the table ``name`` of the sweep in ``out`` when its bytes are those
    recorded by :func:`write_table`; ``(None, reason)`` otherwise (absent, altered since, cut
    short, or without a record)."""
    path = os.path.join(out, name)
    if not os.path.isfile(path) or os.path.islink(path):
        return None, None if not os.path.lexists(path) else "it is not a plain file"
    with open(path, "rb") as f:
        data = f.read()
    recorded = _tables_record(out).get("tables", {}).get(name)
    if recorded is None:
        return None, f"no SHA-256 of it is recorded in an intact {TABLES}"
    if hashlib.sha256(data).hexdigest() != recorded:
        return None, "its SHA-256 differs from the one recorded when it was written"
    try:
        return io.read_csv(path), None
    except (ValueError, IndexError, OSError) as e:
        return None, f"it cannot be read: {e}"
