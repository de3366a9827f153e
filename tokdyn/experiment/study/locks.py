"""The lock of a study directory, one descriptor per directory and process: held exclusively while
a study runs there (:func:`hold`), so that a second run into the same directory is refused before
any work, naming the process that runs there; shared by the processes of one job that fill it
together (a sweep's parts); exclusive for ``fresh`` (:func:`take_exclusive`).

The lock is ``fcntl.flock`` on the directory itself (or, where a file system cannot lock a
directory, on its ``.tokdyn-lock``); the lock file ``.tokdyn-lock`` names the process that holds it
exclusively (its id, host, study and start), written when it takes the lock and removed when it
lets it go. A process killed without letting it go leaves that file behind: the next run on the
same host takes the lock over, saying so (the kernel released the lock with the process); a file
naming a process on another host, which this host cannot check, is refused, naming the file to
remove once that process is known to be gone."""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from typing import Optional

from tokdyn.experiment.study.paths import LOCK_FILE, STAMP, Refused, walk


_HELD: dict = {}  # (st_dev, st_ino) of a study directory -> this process's lock of it: fd, count, token, record


def lock(out: str, *, exclusive: bool = False, blocking: bool = True) -> int:
    """Take the lock of the study directory ``out`` (``fcntl.flock`` on the directory itself, or on
    its ``.tokdyn-lock`` where a file system cannot lock a directory): shared, as the processes of
    one job filling it together hold it, or ``exclusive``, as a study running alone there and
    ``fresh`` do; ``BlockingIOError`` when not ``blocking`` and another open description holds it in
    a conflicting mode. Returns the descriptor that holds it (:func:`unlock` releases it; so does
    the end of the process)."""
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


def holder(out: str) -> Optional[dict]:
    """The process that holds the lock of the study directory ``out`` exclusively, as its lock file
    names it: ``{"pid", "host", "study", "since"}``; None when the file is absent, empty or not one
    tokdyn wrote (a process that holds the lock shared, a file cut short while written)."""
    path = os.path.join(out, LOCK_FILE)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as f:
            record = json.loads(f.read(4096) or b"null")
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("pid"), int)
        or not isinstance(record.get("host"), str)
    ):
        return None
    return record


def describe_holder(record: Optional[dict]) -> str:
    """Words for the process a lock file names (:func:`holder`): ``process 123 on host h (the
    scenes study, since 2026-11-28 10:00:00)``."""
    if record is None:
        return "another process (its lock file names none: the processes of one job that share a directory do not)"
    what = [f"the {record['study']} study" if isinstance(record.get("study"), str) else None]
    what.append(f"since {record['since']}" if isinstance(record.get("since"), str) else None)
    what = ", ".join(w for w in what if w)
    return f"process {record['pid']} on host {record['host']}" + (f" ({what})" if what else "")


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(out: str, record: Optional[dict], why: str) -> Refused:
    path = os.path.join(out, LOCK_FILE)
    return Refused(
        f"out={out!r} is in use: {describe_holder(record)} {why} (lock file {path}); two runs into one "
        "directory would both do all the work: wait until it ends, or choose another --out"
    )


def _claim(out: str, fd: int, study: str, note) -> str:
    """Under the exclusive lock ``fd`` of ``out``: refuse a lock file that names a live holder this
    host cannot check (another host's), take over one left by a process of this host that no longer
    holds the lock (saying so through ``note``), then write this process's record. Returns the lock
    file's path."""
    path = os.path.join(out, LOCK_FILE)
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        raise Refused(
            f"{path} is where a study records the process that runs in its directory, and it is not a file "
            "tokdyn wrote: move it away, or choose another --out"
        )
    old = holder(out)
    host = socket.gethostname()
    if old is not None and (old["pid"] != os.getpid() or old["host"] != host):
        if old["host"] != host:
            raise Refused(
                f"out={out!r} is locked by {describe_holder(old)} (lock file {path}): this host cannot tell "
                f"whether it still runs; wait until it ends, or, once it no longer runs, remove {path}; "
                "or choose another --out"
            )
        gone = "which no longer runs" if not _alive(old["pid"]) else "which no longer holds it"
        note(f"tokdyn: took over the lock of out={out!r} left by {describe_holder(old)}, {gone} (lock file {path})")
    record = {
        "pid": os.getpid(),
        "host": host,
        "study": study,
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    data = json.dumps(record).encode() + b"\n"
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"  # the directory is the lock: the file may be replaced
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:  # the file is the lock itself: written in place
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    return path


def _let_go_record(held: dict) -> None:
    """Remove (or, where the lock file is the lock itself, empty) this process's record of a lock
    it lets go."""
    path = held.get("record")
    if path is None:
        return
    held["record"] = None
    try:
        mine = holder(os.path.dirname(path))
        if mine is None or mine.get("pid") != os.getpid():
            return
        if held["on_dir"]:
            os.remove(path)
        else:
            os.ftruncate(held["fd"], 0)
    except OSError:
        pass


def hold(out: str, study: str, *, shared: bool = False, fresh: bool = False, note=None) -> tuple:
    """Take the lock of the study directory ``out`` for a study that runs there (this process's
    one descriptor, counted per study: a study that opens its source twice, or trains into it,
    holds it once).

    Args:
      out: the study directory (it exists).
      study: the study's name, recorded in the lock file.
      shared: this process is one of several of one job that fill ``out`` together (a sweep's
        parts): the lock is taken shared, and another such process may hold it too.
      fresh: ``fresh`` is about to clear ``out``: the lock is taken exclusive first
        (:func:`take_exclusive`, refused while any other study runs there), then kept exclusive
        (or made shared with ``shared``).
      note: where the line saying a lock was taken over goes (default: stderr).

    Returns:
      The token :func:`release` takes.

    Raises:
      Refused: another process runs a study in ``out`` (naming its id and host as its lock file
        gives them, and the lock file), or a lock file names a process on another host.
    """
    note = note or (lambda s: print(s, file=sys.stderr, flush=True))
    ident = _dir_id(out)
    held = _HELD.get(ident)
    if held is not None and not fresh:  # this process holds it already
        held["count"] += 1
        return ident, held["token"]
    if fresh:
        fd = take_exclusive(out)
    else:
        try:
            fd = lock(out, exclusive=not shared, blocking=False)
        except BlockingIOError:
            raise _busy(out, holder(out), "runs a study in it") from None
    try:
        record = None
        if not shared:
            record = _claim(out, fd, study, note)
        elif fresh:
            fcntl.flock(fd, fcntl.LOCK_SH)
        _HELD[ident] = held = {
            "fd": fd,
            "count": 1,
            "token": object(),
            "record": record,
            "on_dir": stat.S_ISDIR(os.fstat(fd).st_mode),
        }
    except BaseException:
        unlock(fd)
        raise
    return ident, held["token"]


def register(out: str, fd: int) -> tuple:
    """Keep ``fd`` (a lock of ``out`` taken with :func:`lock`) as this process's; one descriptor per
    directory, counted per study. Returns the token :func:`release` takes."""
    ident = _dir_id(out)
    held = _HELD.get(ident)
    if held is None:
        on_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        held = _HELD[ident] = {"fd": fd, "count": 0, "token": object(), "record": None, "on_dir": on_dir}
    elif held["fd"] != fd:
        unlock(fd)  # this process holds the directory's lock already: one descriptor is enough
    held["count"] += 1
    return ident, held["token"]


def release(ident, token) -> None:
    """Give back one study's count of this process's lock of a directory (``ident`` and ``token``
    from :func:`hold` or :func:`register`); with the last, the lock file's record is removed and
    the descriptor closed, which releases the lock."""
    held = _HELD.get(ident)
    if held is None or held["token"] is not token:
        return
    held["count"] -= 1
    if held["count"] <= 0:
        del _HELD[ident]
        _let_go_record(held)
        unlock(held["fd"])


@atexit.register
def _let_go_at_exit() -> None:
    """At the end of the process (a study that failed, an analysis that never finished its
    source): the lock files' records of the locks still held go; the kernel releases the locks."""
    for held in list(_HELD.values()):
        _let_go_record(held)


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
    :class:`~tokdyn.experiment.study.Refused` when another study runs there (naming the process its
    lock file names)."""
    held = _HELD.pop(_dir_id(out), None)
    if held is not None:
        _let_go_record(held)
        unlock(held["fd"])
    try:
        return lock(out, exclusive=True, blocking=False)
    except BlockingIOError:
        raise Refused(
            f"a study is running in out={out!r} ({describe_holder(holder(out))} holds the directory's lock, "
            f"lock file {os.path.join(out, LOCK_FILE)}): --fresh would remove its files under it; wait until "
            "it ends, or choose another --out"
        ) from None
