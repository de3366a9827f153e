"""Clearing a study directory for ``fresh``: what tokdyn wrote there goes, nothing else
(:func:`clear`), under the exclusive locks of the directory and of the studies inside it
(:func:`clear_afresh`)."""

from __future__ import annotations

import os
import re

from tokdyn import io
from tokdyn.experiment.study.locks import lock_nested, unlock
from tokdyn.experiment.study.ownership import check_in_the_way, drawn_by_tokdyn, owned_outputs, stamped_or_empty
from tokdyn.experiment.study.paths import KNOWN_FOLDERS, RECORD, STAMP, regular_file, walk
from tokdyn.experiment.study.stamps import read_stamp


_TEMPORARY = re.compile(r"\.([0-9a-f]{12}|\d+\.[0-9a-f]{8})\.tmp$")  # atomic_write's and stamp_once's


def _is_verified(path: str) -> bool:
    try:
        return regular_file(path) and io.is_verified(path)
    except OSError:
        return False


def clear(out: str) -> list[str]:
    """Remove what tokdyn wrote in the study directory ``out``, and nothing else: the record,
    the outputs the stamp declares and the record lists, files that carry tokdyn's verification
    header (parts, chunks, checkpoints), the temporaries of its writes, what it set aside in
    ``corrupt/`` folders (files and links; a directory set aside is left), the figures it drew;
    then the folders this emptied, and the stamp last (a cut-off clear leaves a directory still
    recognised as the old study's). A directory without a verified stamp is refused
    (``OutputConflict``). Never follows a symbolic link; never removes a folder that holds
    anything. Returns the paths removed. Call it under the directory's exclusive lock
    (:meth:`~tokdyn.experiment.study.Study.open` with ``fresh`` does)."""
    if read_stamp(out) is None:
        stamped_or_empty(out)
        return []
    owned = owned_outputs(out)
    for rel_root, root, _, files in walk(out):  # a study directory inside this one (reproduce's): its outputs too
        if rel_root and STAMP in files:
            owned |= {f"{rel_root}/{rel}" for rel in owned_outputs(root) | {RECORD}}
    removed, touched = [], set()

    def remove(path):
        os.remove(path)
        removed.append(path)
        touched.add(os.path.dirname(path))

    for rel in sorted(owned | {RECORD}):
        path = os.path.join(out, rel)
        if regular_file(path):
            remove(path)
    for rel_root, root, dirs, files in walk(out):
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
                or drawn_by_tokdyn(path)
            ):
                remove(path)
    for root, _dirs, _files in os.walk(out, topdown=False, followlinks=False):
        if os.path.samefile(root, out) or os.path.islink(root):
            continue
        if (root in touched or os.path.basename(root) in KNOWN_FOLDERS) and not os.listdir(root):
            os.rmdir(root)
            touched.add(os.path.dirname(root))
    stamp = os.path.join(out, STAMP)
    if regular_file(stamp):
        remove(stamp)
    return removed


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
