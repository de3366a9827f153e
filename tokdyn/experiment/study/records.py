"""Reading a finished study's files back: its record (``config.json``, :func:`read_record`) and
the outputs it lists, each verified against the SHA-256 the record holds (:func:`verify_output`,
:func:`read_table`, :func:`read_output_json`)."""

from __future__ import annotations

import errno
import hashlib
import json
import os

from tokdyn import io
from tokdyn.experiment.study.paths import RECORD, relative


def read_record(out: str) -> dict:
    """The verified ``config.json`` of the study directory ``out`` (without its checksum):
    :class:`tokdyn.io.CorruptFile` naming the file when it lacks its checksum or the checksum
    differs; ``FileNotFoundError`` when absent."""
    return io.read_checked_json(os.path.join(os.fspath(out), RECORD))


def _verified_bytes(out: str, name: str) -> tuple[str, bytes]:
    rel = relative(name, "name")
    path = os.path.join(os.fspath(out), rel)
    if not os.path.lexists(path):
        raise FileNotFoundError(errno.ENOENT, f"{path}: no such output of the study in {out!r}", path)
    record = read_record(out)
    listed = record.get("outputs")
    if not isinstance(listed, dict) or rel not in listed:
        raise io.CorruptFile(
            path,
            f"{os.path.join(os.fspath(out), RECORD)} does not list it among the study's "
            "outputs: not a file the study wrote",
        )
    problem = io.not_a_file(path)
    if problem:
        raise io.CorruptFile(path, problem)
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != listed[rel]:
        raise io.CorruptFile(
            path, f"its SHA-256 differs from the one {RECORD} records: it was changed after the study wrote it"
        )
    return path, data


def verify_output(out: str, name: str) -> str:
    """The path of the output ``name`` (relative to the study directory ``out``) after checking
    its SHA-256 against the record (:func:`read_record`): :class:`tokdyn.io.CorruptFile` naming
    the file when it differs or the record does not list it; ``FileNotFoundError`` when absent."""
    return _verified_bytes(out, name)[0]


def read_table(out: str, name: str) -> dict:
    """The columns of the CSV output ``name`` of the study directory ``out``
    (:func:`tokdyn.io.read_csv`), verified first (:func:`verify_output`)."""
    return io.parse_csv(_verified_bytes(out, name)[1].decode())


def read_output_json(out: str, name: str):
    """The JSON value of the output ``name`` of the study directory ``out``, verified first
    (:func:`verify_output`)."""
    path, data = _verified_bytes(out, name)
    try:
        return json.loads(data)
    except ValueError as e:
        raise io.CorruptFile(path, f"not JSON: {e}") from None
