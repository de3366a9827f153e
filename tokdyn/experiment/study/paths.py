"""The paths of a study directory: the output path a study may write into (:func:`check_output`),
the names of the files and folders tokdyn keeps in it, paths inside it (:func:`relative`), and a walk
of it that never follows a symbolic link (:func:`walk`)."""

from __future__ import annotations

import json
import os
import stat

from tokdyn import io


STAMP = "study.json"  # the stamp of a study directory
RECORD = "config.json"  # what the finished study records: configuration, environment, timings, outputs
LOCK_FILE = ".tokdyn-lock"  # the lock, where the directory itself cannot be locked (never removed)
TABLE_SUFFIXES = (".csv", ".json", ".md", ".txt")  # the files Study.finish records the SHA-256 of
VERIFIED_FOLDERS = ("parts", "corrupt", "checkpoints", "chunks")  # files verified one by one (not recorded)
FIGURE_FOLDER = "plots"
DEEPEST = 100  # room left in a path for the deepest file a study writes under ``out``


class Refused(ValueError):
    """A study refused before any work: an output path it cannot write, or a configuration this
    machine cannot hold (a usage error: the command exits 2)."""


def check_output(out) -> str:
    """``out`` as a path a study can write into; :class:`Refused` (a ``ValueError``) naming ``out``
    when it is a file, cannot be created or cannot be written. Creates nothing."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise TypeError(f"out must be a directory path, got {out!r}")
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise Refused(f"out={out!r} is a file, not a directory: choose a directory for the study's outputs")
    probe = out
    while not os.path.exists(probe):  # the nearest existing ancestor must let us create the rest
        parent = os.path.dirname(os.path.abspath(probe))
        if parent == os.path.abspath(probe):
            break
        probe = parent
    if not os.path.isdir(probe):
        raise Refused(f"out={out!r} cannot be created: {probe!r} is a file")
    name_max, path_max = _pathconf(probe, "PC_NAME_MAX", 255), _pathconf(probe, "PC_PATH_MAX", 4096)
    full = os.path.abspath(out)
    for part in full.split(os.sep):
        if len(os.fsencode(part)) > name_max:
            raise Refused(
                f"out={shorten(out, 80)!r} holds a name of {len(os.fsencode(part))} bytes ({shorten(part, 24)!r}), "
                f"more than the {name_max} this file system allows: choose a shorter --out"
            )
    if len(os.fsencode(full)) + DEEPEST > path_max:
        raise Refused(
            f"out={shorten(out, 80)!r} is {len(os.fsencode(full))} bytes long: with the {DEEPEST} a study's "
            f"files need under it, more than the {path_max} this file system allows in a path: choose a "
            "shorter --out"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot be written" if probe == out else f"cannot be created ({probe!r} is not writable)"
        raise Refused(f"out={out!r} {what}: choose a directory you can write to")
    if os.path.abspath(probe).startswith(("/proc", "/sys")):
        raise Refused(f"out={out!r} lies in a virtual file system ({probe!r}): choose a directory on a disk")
    return out


def _pathconf(path: str, name: str, fallback: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return fallback
    return value if value and value > 0 else fallback


def relative(name, what: str = "name") -> str:
    """``name`` as a normalised path inside a study directory (``/`` separated); ``ValueError``
    naming ``what`` for an absolute path or one that leaves the directory."""
    text = os.fspath(name)
    norm = os.path.normpath(text).replace(os.sep, "/")
    if not text or os.path.isabs(text) or norm == "." or norm == ".." or norm.startswith("../"):
        raise ValueError(f"{what}: {text!r} is not a path inside the study directory")
    return norm


def resolve_inside(out: str, name) -> str:
    """The path of ``name`` (relative to the study directory ``out``, :func:`relative`) resolved
    against the real output directory (``out`` itself may be a link the user chose), for a file
    tokdyn is about to remove: :class:`Refused` naming the link where any entry of ``name`` (a
    folder on its way, or the file itself) is a symbolic link, or where it resolves outside ``out``.
    Nothing is ever removed through a link."""
    real = os.path.realpath(out)
    rel = relative(name)
    path = os.path.join(real, *rel.split("/"))
    link = io.link_between(real, path)
    if link is None and os.path.commonpath([real, os.path.realpath(path)]) != real:
        link = path
    if link is not None:
        shown = os.path.join(out, os.path.relpath(link, real))
        what = f"a symbolic link (to {os.readlink(link)!r})" if os.path.islink(link) else "outside it"
        raise Refused(
            f"{shown} is {what}, on the way to the study's file {rel!r} in out={out!r}: tokdyn removes "
            "nothing through a link, and nothing was removed; replace the link by what it points to, or "
            "choose another --out"
        )
    return path


def remove_file(out: str, name) -> bool:
    """Remove the regular file ``name`` of the study directory ``out`` (:func:`resolve_inside`
    first, so a link on its way is refused), opening each folder on its way without following a
    link (``O_NOFOLLOW``), so that a folder swapped for a link meanwhile is never followed either.
    Returns whether a file was removed (False: nothing there, or not a regular file: left as it is)."""
    path = resolve_inside(out, name)
    parts = os.path.relpath(path, os.path.realpath(out)).split(os.sep)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        fd = os.open(os.path.realpath(out), flags)
    except OSError:
        return False
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:  # gone, not a folder, or a link put there meanwhile: nothing is followed
                return False
            os.close(fd)
            fd = inner
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        os.unlink(parts[-1], dir_fd=fd)
        return True
    finally:
        os.close(fd)


def shorten(v, width: int = 60) -> str:
    """``v`` (a string, or any JSON value as its JSON) cut to ``width`` characters for a message,
    ``...`` marking the cut."""
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= width else text[: width - 3] + "..."


def regular_file(path: str) -> bool:
    """A regular file (a symbolic link is not: tokdyn never writes one)."""
    return not os.path.islink(path) and os.path.isfile(path)


def file_id(path: str):
    """``(st_dev, st_ino)`` of the entry at ``path`` itself (a link is not followed); None when there
    is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def walk(out: str):
    """``(folder relative to out, folder path, subfolder names, file names)`` under ``out``, never
    following a symbolic link; the caller may prune the subfolder names."""
    for root, dirs, files in os.walk(out, followlinks=False):
        rel = os.path.relpath(root, out).replace(os.sep, "/")
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]
        yield ("" if rel == "." else rel), root, dirs, files + links


KNOWN_FOLDERS = (*VERIFIED_FOLDERS, FIGURE_FOLDER)  # folders tokdyn makes: removed by clear() once empty
