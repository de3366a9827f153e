"""Clearing a study directory for ``fresh``: what tokdyn wrote there goes, nothing else
(:func:`clear`), under the exclusive locks of the directory and of the studies inside it
(:func:`clear_afresh`)."""

from __future__ import annotations

import os
import re

from tokdyn import io
from tokdyn.experiment.study.locks import lock_nested, unlock
from tokdyn.experiment.study.ownership import check_in_the_way, drawn_by_tokdyn, owned_outputs, stamped_or_empty
from tokdyn.experiment.study.paths import (
    KNOWN_FOLDERS,
    RECORD,
    STAMP,
    regular_file,
    remove_file,
    resolve_inside,
    walk,
)
from tokdyn.experiment.study.stamps import read_stamp, read_stamp_file


_TEMPORARY = re.compile(r"\.([0-9a-f]{12}|\d+\.[0-9a-f]{8})\.tmp$")  # atomic_write's and stamp_once's


def _is_verified(path: str) -> bool:
    try:
        return regular_file(path) and io.is_verified(path)
    except OSError:
        return False


def _is_stamp(path: str) -> bool:
    """Whether ``path`` is a study's stamp whose checksum verifies (either format)."""
    try:
        return regular_file(path) and isinstance(read_stamp_file(path), dict)
    except (io.CorruptFile, OSError, ValueError):
        return False


def clear(out: str) -> list[str]:
    """Remove what tokdyn wrote in the study directory ``out``, and nothing else: the record,
    the outputs the stamp declares and the record lists, files that carry tokdyn's verification
    header (parts, chunks, checkpoints), the temporaries of its writes, what it set aside in
    ``corrupt/`` folders (files and links; a directory set aside is left), the figures it drew;
    then the folders this emptied, and the stamp last (a cut-off clear leaves a directory still
    recognised as the old study's). A directory without a verified stamp is refused
    (``OutputConflict``). Never removes a folder that holds anything. Returns the paths removed.
    Call it under the directory's exclusive lock (:meth:`~tokdyn.experiment.study.Study.open` with
    ``fresh`` does).

    Never follows a symbolic link: every path is resolved against the real output directory
    (``out`` itself may be a link the user chose), and before anything is removed, every path the
    stamp and the record list (those of the study directories inside ``out`` too) is checked
    (:func:`~tokdyn.experiment.study.paths.resolve_inside`): where any entry on its way is a
    symbolic link, or it resolves outside ``out``, :class:`~tokdyn.experiment.study.Refused` names
    the link and nothing is removed. The walk for the rest never enters a link."""
    if read_stamp(out) is None:
        stamped_or_empty(out)
        return []
    real = os.path.realpath(out)
    owned = owned_outputs(real)
    for rel_root, root, _, files in walk(real):  # a study directory inside this one (reproduce's): its outputs too
        if rel_root and STAMP in files:
            owned |= {f"{rel_root}/{rel}" for rel in owned_outputs(root) | {RECORD}}
    listed = sorted(owned | {RECORD})
    for rel in listed:  # every path checked before anything goes
        resolve_inside(out, rel)
    removed, touched = [], set()

    def remove(path):
        os.remove(path)
        removed.append(path)
        touched.add(os.path.dirname(path))

    for rel in listed:
        if remove_file(out, rel):
            removed.append(os.path.join(real, *rel.split("/")))
            touched.add(os.path.dirname(removed[-1]))
    for path in _tokdyn_files(real):
        remove(path)
    for root, _dirs, _files in os.walk(real, topdown=False, followlinks=False):
        if os.path.samefile(root, real) or os.path.islink(root):
            continue
        if (root in touched or os.path.basename(root) in KNOWN_FOLDERS) and not os.listdir(root):
            os.rmdir(root)
            touched.add(os.path.dirname(root))
    if remove_file(out, STAMP):
        removed.append(os.path.join(real, STAMP))
    return removed


def _tokdyn_files(real: str) -> list[str]:
    """The files under the directory ``real`` that :func:`clear` removes beyond the listed ones
    (verified files, temporaries, what was set aside, figures tokdyn drew), found by a walk that
    never enters a link; the stamp is not among them."""
    found = []
    for rel_root, root, dirs, files in walk(real):
        in_corrupt = os.path.basename(root) == "corrupt" and rel_root != ""
        if in_corrupt:
            dirs[:] = []  # a directory set aside is someone else's: never entered
        for name in files:
            path = os.path.join(root, name)
            if rel_root == "" and name == STAMP:
                continue
            if (
                (in_corrupt and (os.path.islink(path) or regular_file(path)))
                or (_TEMPORARY.search(name) and regular_file(path))
                or _is_verified(path)
                or (name == STAMP and _is_stamp(path))  # a study directory's inside this one
                or drawn_by_tokdyn(path)
            ):
                found.append(path)
    return found


def clear_afresh(out: str, declared=()) -> list[str]:
    """What ``fresh`` does to the study directory ``out`` of another configuration, under its
    exclusive lock: refuse (:func:`~tokdyn.experiment.study.ownership.check_in_the_way`) where a
    file tokdyn did not write stands where one of the ``declared`` outputs belongs, take the
    exclusive locks of the study directories inside it
    (:func:`~tokdyn.experiment.study.locks.lock_nested`), then :func:`clear` it. Returns the paths
    removed."""
    check_in_the_way(out, declared, owned_outputs(out))
    nested = lock_nested(out)
    try:
        return clear(out)
    finally:
        for other in nested:
            unlock(other)
