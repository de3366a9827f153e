"""The errors of files and disks: :class:`OutputConflict`, :class:`CorruptFile`, :class:`DiskFull`
(:data:`DISK_FULL`, :func:`free_bytes`, :func:`disk_full`)."""

from __future__ import annotations

import errno as _errno
import os


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
