"""A study of one's own is stamped with its code: the files of the modules of the user's that define
its ``Config`` and hooks, that they import, and that its ``run`` reached (:func:`code_stamp`,
:func:`stamp_reached`), so that a directory a changed module made is refused on resume, naming the
module, like another configuration. tokdyn's own code, which every study runs, is in every stamp
(:func:`tokdyn.experiment.study.stamps.package_code`: the whole package, module by module), so
nothing here is needed for it. :func:`tokdyn.experiment.runner.run_study` calls both; the names are also reached
from :mod:`tokdyn.experiment.runner`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from typing import Optional

from tokdyn import io
from tokdyn.engine.sweep import digest, reads
from tokdyn.experiment import study as study_dir

_HOOKS = ("config", "run", "summary", "figures", "findings", "check", "prepare", "stamp_extra", "printed")


def code_stamp(spec, out: Optional[str] = None) -> dict:
    """``{module: SHA-256 of its file}`` of the modules outside tokdyn that define the ``Config``
    and hooks of ``spec`` (a :class:`~tokdyn.experiment.runner.Spec`: a study of one's own; the
    standard library and modules without a file left out), of every module of the user's they import
    (``import helper`` at their top level, transitively:
    :func:`tokdyn.engine.sweep.digest.imported_modules`) and of the modules an earlier run into
    ``out`` reached while it ran (an ``import helper`` inside ``run``, stamped as it was reached:
    :func:`stamp_reached`): :func:`~tokdyn.experiment.runner.run_study` stamps it with the
    configuration (``extra.code``), so that a directory a changed module made is refused on resume,
    naming the module, like another configuration (``--fresh`` starts afresh). Any change to a file
    counts, comments included. Empty for tokdyn's own studies (tokdyn's code, theirs included, is
    in every stamp: :func:`tokdyn.experiment.study.stamps.package_code`)."""
    files = {}
    for hook in _HOOKS:
        value = getattr(spec, hook, None)
        while isinstance(value, functools.partial):
            value = value.func
        name = getattr(value, "__module__", None) if value is not None else None
        top = name.partition(".")[0] if isinstance(name, str) else None
        if top is None or top == "tokdyn" or top in sys.stdlib_module_names:
            continue
        code = getattr(value, "__code__", None)  # a function's file, also of a module not in sys.modules
        path = code.co_filename if code is not None else getattr(sys.modules.get(name), "__file__", None)
        if path and os.path.isfile(path):
            files.setdefault(name, path)
    loaded = [vars(sys.modules[name]) for name in files if name in sys.modules]
    for ns in digest.imported_modules(loaded):  # the modules of the user's they import
        files.setdefault(ns["__name__"], digest.user_module_file(ns))
    if not files:
        return {}
    stamped = _stamped_code(out)
    for name in stamped:  # reached by an earlier run inside its run: that module as it is now
        files.setdefault(name, _module_file(name))
    return {name: (reads.file_digest(path) if path else "absent") for name, path in sorted(files.items())}


def _stamped_code(out: Optional[str]) -> dict:
    """``extra.code`` of the stamp of the study directory ``out`` ({} without one)."""
    if out is None:
        return {}
    try:
        old = study_dir.read_stamp(out)
    except (io.OutputConflict, OSError):
        return {}
    code = ((old or {}).get("extra") or {}).get("code")
    return dict(code) if isinstance(code, dict) else {}


def _module_file(name: str) -> Optional[str]:
    """The source file of the module ``name``: the one this process imported, or where an import
    would find it (None: none)."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) if module is not None else None
    if path is None:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            found = None
        path = getattr(found, "origin", None) if found is not None and found.has_location else None
    return path if path and os.path.isfile(path) else None


def stamp_reached(session) -> None:
    """Stamp the modules of the user's that a study of one's own imported while it ran (and those
    they import; ``session.reads`` of the :class:`~tokdyn.experiment.runner.Session`) into its directory's stamp (``extra.code``,
    :meth:`~tokdyn.experiment.study.Study.stamp_code`): a part kept after such an import is keyed
    by that module's code as the configuration is, so a rerun after the module changed is refused
    naming it. Nothing for tokdyn's own studies (nothing is recorded for them)."""
    seen, study = session.reads, session.study
    if seen is None or study is None:
        return
    known = (study.stamp.get("extra") or {}).get("code") or {}
    new = {}
    for ns in digest.imported_modules(seen.user_modules()):
        if ns["__name__"] not in known:
            new[ns["__name__"]] = reads.file_digest(digest.user_module_file(ns))
    if new:
        study.stamp_code(new)
