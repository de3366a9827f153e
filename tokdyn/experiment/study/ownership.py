"""What in a directory is tokdyn's: the outputs its stamp declares and its record lists
(:func:`owned_outputs`), the figures it drew, the tables a study records and the files of others it
leaves alone (:func:`foreign_tables`, :func:`check_in_the_way`); a directory not known to be a
study's is never written into nor cleared (:func:`check_directory`)."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from tokdyn import io
from tokdyn.experiment.study.paths import (
    FIGURE_FOLDER,
    LOCK_FILE,
    RECORD,
    STAMP,
    TABLE_SUFFIXES,
    VERIFIED_FOLDERS,
    Refused,
    file_id,
    regular_file,
    relative,
    walk,
)
from tokdyn.experiment.study.records import read_record
from tokdyn.experiment.study.stamps import read_stamp


def drawn_by_tokdyn(path: str) -> bool:
    """Whether ``path`` is a regular file holding a figure tokdyn drew
    (:func:`tokdyn.stats.figures.drawn_by_tokdyn`); a symbolic link never is."""
    from tokdyn.stats import figures

    return regular_file(path) and figures.drawn_by_tokdyn(path)


def owned_outputs(out: str) -> set:
    """The outputs of the study directory ``out`` that tokdyn wrote by name: those its stamp
    declares and those its record lists (when the record verifies)."""
    owned = set()
    try:
        stamp = read_stamp(out) or {}
    except io.OutputConflict:
        stamp = {}
    for rel in stamp.get("outputs", ()) if isinstance(stamp.get("outputs"), list) else ():
        try:
            owned.add(relative(rel))
        except (TypeError, ValueError):
            pass
    try:
        listed = read_record(out).get("outputs", {})
    except (OSError, ValueError):
        listed = {}
    for rel in listed if isinstance(listed, dict) else ():
        try:
            owned.add(relative(rel))
        except (TypeError, ValueError):
            pass
    return owned


def check_in_the_way(out: str, declared: Sequence[str], owned: set) -> None:
    """:class:`~tokdyn.experiment.study.Refused` naming the first entry where the study will write
    one of its ``declared`` outputs (or its record) that tokdyn did not write."""
    for rel in (*declared, RECORD):
        path = os.path.join(out, rel)
        if not os.path.lexists(path):
            continue
        if rel == RECORD and regular_file(path):
            continue
        if io.not_a_file(path) or rel not in owned:
            raise Refused(
                f"{path} is in the way of the study's output {rel!r}: "
                f"{io.not_a_file(path) or 'a file tokdyn did not write'}, left as it is; move it away, or "
                "choose another --out"
            )


def recorded_tables(out: str) -> list[str]:
    """The tables under ``out`` that :meth:`~tokdyn.experiment.study.Study.finish` records
    (relative paths)."""
    found = []
    for rel_root, root, dirs, files in walk(out):
        dirs[:] = [d for d in dirs if d not in VERIFIED_FOLDERS and d != FIGURE_FOLDER]
        for name in files:
            rel = f"{rel_root}/{name}" if rel_root else name
            if rel in (STAMP, RECORD) or not name.endswith(TABLE_SUFFIXES):
                continue
            if regular_file(os.path.join(root, name)):
                found.append(rel)
    return sorted(found)


def foreign_tables(out: str, owned: set) -> dict:
    """Tables in ``out`` that tokdyn did not write (not listed by stamp or record), with their
    file identity: :meth:`~tokdyn.experiment.study.Study.finish` leaves them out of the record
    unless the study replaced them."""
    return {rel: file_id(os.path.join(out, rel)) for rel in recorded_tables(out) if rel not in owned}


def _has_files(out: str) -> bool:
    """Whether ``out`` holds anything but the temporaries of writes cut short (or under way) and
    the lock."""
    return any(not io.is_temporary(e.name) and e.name != LOCK_FILE for e in os.scandir(out))


def check_directory(out: str) -> None:
    """:class:`tokdyn.io.OutputConflict` when ``out`` is a directory that is not known to be a
    study's (it holds files and no verified stamp): such a directory is never written into nor
    cleared. :meth:`~tokdyn.experiment.study.Study.open` checks this first; the study runner checks
    it before a study touches anything else (a source it reads, say)."""
    if os.path.isdir(out):
        stamped_or_empty(out)


def stamped_or_empty(out: str) -> Optional[dict]:
    """The stamp of ``out`` (None for an empty directory); ``OutputConflict`` for a directory not
    known to be a study's: a stamp that cannot be verified, or files and no stamp. Such a directory
    is never written into nor cleared, with ``fresh`` or without.

    The files are looked at before the stamp: several processes of one job may open a new
    directory at once, and every file of a study is written after its stamp, which stays (a
    ``fresh`` start removes it under the exclusive lock; a run refused before any work,
    ``unstamp_untouched``, removes it after its empty folders). So files seen before a look that finds
    no stamp were there without one; the other order would take a stamp linked between the two
    looks for a stranger's file."""
    files = _has_files(out)
    old = read_stamp(out)
    if old is None and files:
        loose = sorted(e for e in os.listdir(out) if e != LOCK_FILE and not io.is_temporary(e))
        raise io.OutputConflict(
            f"out={out!r} holds files that no tokdyn study stamped ({', '.join(loose[:5])}"
            f"{', ...' if len(loose) > 5 else ''}): they are left as they are; choose an empty or new directory"
        )
    return old
