"""The lock of a study directory: shared while a study runs there, exclusive for ``fresh``
(:func:`lock`, :func:`take_exclusive`), one descriptor per directory and process."""

from __future__ import annotations

import errno
import fcntl
import os

from tokdyn.experiment.study.paths import LOCK_FILE, STAMP, Refused, walk


_HELD: dict = {}  # (st_dev, st_ino) of a study directory -> this process's lock of it: fd, count, token


def lock(out: str, *, exclusive: bool = False, blocking: bool = True) -> int:
    """Take the lock of the study directory ``out`` (``fcntl.flock`` on the directory itself, or on
    its ``.tokdyn-lock`` where a file system cannot lock a directory): shared, as a running study
    holds it, or ``exclusive``, as ``fresh`` does; ``BlockingIOError`` when not ``blocking`` and
    another open description holds it in a conflicting mode. Returns the descriptor that holds it
    (:func:`unlock` releases it; so does the end of the process)."""
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, mode)
            return fd
        except BlockingIOError:
            raise
        except OSError as e:  # a file system that locks no directory: a lock file inside it
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                raise
        os.close(fd)
        path = os.path.join(out, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise Refused(
                f"{path} cannot be opened as the study's lock ({e.strerror}): it is not tokdyn's; move it "
                "away, or choose another --out"
            ) from None
        fcntl.flock(fd, mode)
        return fd
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise


def unlock(fd: int) -> None:
    """Release a lock :func:`lock` took."""
    try:
        os.close(fd)
    except OSError:
        pass


def _dir_id(out: str):
    st = os.stat(out)
    return st.st_dev, st.st_ino


def register(out: str, fd: int) -> tuple:
    """Keep ``fd`` (a shared lock of ``out``) as this process's; one descriptor per directory,
    counted per study. Returns the token :func:`release` takes."""
    ident = _dir_id(out)
    held = _HELD.get(ident)
    if held is None:
        held = _HELD[ident] = {"fd": fd, "count": 0, "token": object()}
    elif held["fd"] != fd:
        unlock(fd)  # this process holds the directory's lock already: one descriptor is enough
    held["count"] += 1
    return ident, held["token"]


def release(ident, token) -> None:
    """Give back one study's count of this process's lock of a directory (``ident`` and ``token``
    from :func:`register`); the descriptor is closed, and the lock released, with the last."""
    held = _HELD.get(ident)
    if held is None or held["token"] is not token:
        return
    held["count"] -= 1
    if held["count"] <= 0:
        del _HELD[ident]
        unlock(held["fd"])


def lock_nested(out: str) -> list:
    """The exclusive locks of the study directories inside ``out`` (whose files ``fresh`` removes
    too); :class:`~tokdyn.experiment.study.Refused` naming the first where a study is running."""
    fds = []
    try:
        for rel_root, root, _, files in walk(out):
            if rel_root and STAMP in files:
                fds.append(take_exclusive(root))
    except BaseException:
        for fd in fds:
            unlock(fd)
        raise
    return fds


def take_exclusive(out: str) -> int:
    """``out``'s lock, exclusive, for ``fresh``: this process's own studies there let theirs go;
    :class:`~tokdyn.experiment.study.Refused` when another study runs there."""
    held = _HELD.pop(_dir_id(out), None)
    if held is not None:
        unlock(held["fd"])
    try:
        return lock(out, exclusive=True, blocking=False)
    except BlockingIOError:
        raise Refused(
            f"a study is running in out={out!r} (it holds the directory's lock): --fresh would remove "
            "its files under it; wait until it ends, or choose another --out"
        ) from None
