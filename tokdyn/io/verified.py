"""Verified files, which carry the SHA-256 of their content (:func:`write_verified`, :func:`read_verified`,
:func:`save_npz`, :func:`load_npz`), and a damaged one set aside to be recomputed (:func:`set_aside`,
never into or through a symbolic link: :func:`link_between`)."""

from __future__ import annotations

import hashlib
import io as _bytes_io
import os
import time
import uuid
import warnings

import numpy as np

from tokdyn.io.errors import CorruptFile, OutputConflict
from tokdyn.io.files import (
    atomic_write,
)

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


def save_npz(path: str, /, **arrays) -> str:
    """``arrays`` as an ``.npz`` with a checksum (:func:`write_verified`), atomically; read it
    back with :func:`load_npz`. ``path`` is positional and the archive is written member by member
    (NumPy's ``.npy`` format in a zip, as ``np.savez`` writes it), so that an array may have any
    name: ``path``, or ``file`` and ``allow_pickle`` (``np.savez``'s own arguments), a sweep's
    outputs of those names."""
    import zipfile

    buf = _bytes_io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    return write_verified(path, buf.getvalue())
