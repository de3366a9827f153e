"""Finding a study by name, tokdyn's or one's own: its module (:func:`module`), its value (:func:`spec`, the
module's ``SPEC``) and its entry point (:func:`main_of`), through the registry
(:mod:`tokdyn.experiment.registry`), which names each study's module by import path; and a study of one's
own loaded from a file or module (:func:`add_study_module`, :func:`load_file`).

The loading sits in the experiment layer, below the studies: a module here imports a study only by the name
the registry gives, at run time. ``tokdyn.studies`` re-exports every name (``tokdyn.studies.spec``).
"""

import hashlib
import importlib
import importlib.util
import os
import sys

__all__ = ["spec", "module", "main_of", "add_study_module", "is_file_target", "load_file", "file_sha256", "LOADED_SHA"]


def module(name: str):
    """The module of the study ``name`` (:func:`tokdyn.experiment.registry.entry`), imported;
    ``ValueError`` naming the studies for an unknown name, and naming the module for a study of
    one's own that cannot be imported."""
    from tokdyn.experiment import registry

    e = registry.entry(name)
    if not e.plugin:
        return importlib.import_module(e.module)
    try:
        return importlib.import_module(e.module)
    except Exception as err:  # noqa: BLE001 (the user's module: any failure to import it is named)
        raise ValueError(
            f"study {name!r} ({e.origin}): cannot import {e.module!r}: {type(err).__name__}: {err}"
        ) from err


def spec(name: str):
    """The :class:`~tokdyn.experiment.runner.Spec` of the study ``name`` (its module's ``SPEC``,
    or the attribute its entry names; :func:`tokdyn.experiment.registry.entry`); ``ValueError``
    naming the studies for another name, and for a study of one's own whose attribute is not a
    ``Spec`` of that name or an incomplete one (:func:`tokdyn.experiment.runner.check_spec`)."""
    from tokdyn.experiment import registry, runner

    e = registry.entry(name)
    value = getattr(module(name), e.spec, None)
    if e.plugin and not isinstance(value, runner.Spec):
        raise ValueError(
            f"study {name!r} ({e.origin}): {e.module}.{e.spec} must be a tokdyn.experiment.runner.Spec, "
            f"got {type(value).__name__}"
        )
    if e.plugin and value.name != name:
        raise ValueError(
            f"study {name!r} ({e.origin}): its Spec is named {value.name!r}: the entry point's name must be "
            "the Spec's (it names the study's stamp and its directory)"
        )
    if e.plugin:
        runner.check_spec(value, f"study {name!r} ({e.origin})")
    return value


def main_of(name: str):
    """The entry point ``main(cfg, out, *, quiet=False, plots=True, fresh=False)`` of the study
    ``name``: its module's ``main``; for a study of one's own whose module's ``main`` does not run
    its spec (a module of several studies, or none), :func:`tokdyn.experiment.runner.entry` of it."""
    from tokdyn.experiment import registry, runner

    value, loaded = spec(name), module(name)
    main = getattr(loaded, "main", None)
    if not registry.entry(name).plugin or (callable(main) and getattr(main, "spec", None) is value):
        return main
    return runner.entry(value, loaded.__name__, returns="The study's Result.value.")


LOADED_SHA = "__tokdyn_file_sha256__"  # a module attribute: the digest of the file load_file ran it from


def add_study_module(target: str):
    """Load a study of one's own and add it to the studies of this process
    (:func:`tokdyn.experiment.registry.add`): ``target`` is ``path/to/file.py:SPEC`` (a file,
    imported as the module named by its stem) or ``module:SPEC`` (an importable module), ``SPEC``
    the attribute that holds its :class:`~tokdyn.experiment.runner.Spec`; the study's name is its
    spec's. Its command is ``tokdyn study NAME``, its default ``--out`` ``results/NAME``. A file
    imported before is imported anew when it changed. Returns the study's
    :class:`~tokdyn.experiment.registry.Entry`; ``ValueError`` naming ``study_module`` for anything
    that does not resolve, and everything a spec lacks (:func:`tokdyn.experiment.runner.check_spec`)."""
    from tokdyn.experiment import registry, runner

    what = f"study_module {target!r}"
    where, sep, attr = str(target).rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise ValueError(f"{what}: give path/to/file.py:SPEC or module:SPEC")
    try:
        loaded = load_file(where) if is_file_target(where) else importlib.import_module(where)
    except Exception as e:  # noqa: BLE001 (the user's module: any failure to import it is named)
        raise ValueError(f"{what}: cannot import {where!r}: {type(e).__name__}: {e}") from e
    value = getattr(loaded, attr, None)
    if not isinstance(value, runner.Spec):
        raise ValueError(f"{what}: {attr} must be a tokdyn.experiment.runner.Spec, got {type(value).__name__}")
    runner.check_spec(value, what)
    doc = " ".join((loaded.__doc__ or "").strip().split("\n\n")[0].split())
    e = registry.Entry(
        value.name,
        ("study", value.name),
        loaded.__name__,
        doc or f"the study of {where}",
        f"results/{value.name}",
        spec=attr,
        origin=f"--study-module {target}",
        reads=tuple(dict.fromkeys(value.sources.values())),  # the studies its sources name
    )
    return registry.add(e)


def is_file_target(target: str) -> bool:
    """Whether ``target`` (the part before ``:NAME`` of ``--study-module`` or ``--rule-module``)
    names a file (it ends in ``.py`` or holds a path separator) rather than an importable module."""
    return target.endswith(".py") or "/" in target or os.sep in target


def file_sha256(path: str) -> str:
    """The SHA-256 (hex) of the bytes of the file ``path``."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_file(path: str):
    """The module of the Python file ``path``, imported as the module named by its stem and kept
    in ``sys.modules`` (dataclasses look a class's module up there): the module imported before
    when the file is unchanged (its SHA-256 is kept on the module, :data:`LOADED_SHA`), else the
    file run anew. The file's folder is added to the end of the import path (``sys.path``), so
    that ``import helper`` of a module beside it works as under ``python path.py`` (an installed
    module of the same name comes first). The modules its loading imported are kept on it
    (:data:`tokdyn.engine.sweep.digest.LOADING_IMPORTS`), so that a helper it imports a value from
    (``from helper import RATE``) keys its results too. Serves ``--study-module`` (:func:`add_study_module`) and the token-dynamics
    sweep's ``--rule-module``
    (:func:`tokdyn.studies.token_dynamics_sweep.rule_module.load_rules`).

    Raises:
      FileNotFoundError: no such file.
      ImportError: a module of that name is imported already, from another file (rename the file).
      Exception: whatever running the file raises (nothing is left in ``sys.modules`` then).
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file {path}")
    sha = file_sha256(path)
    name = os.path.splitext(os.path.basename(path))[0]
    old = sys.modules.get(name)
    if old is not None:
        if os.path.abspath(getattr(old, "__file__", None) or "") != path:
            raise ImportError(
                f"a module named {name!r} is imported already, from {getattr(old, '__file__', None)}: rename the file"
            )
        if getattr(old, LOADED_SHA, None) == sha:
            return old
    folder = os.path.dirname(path)
    if folder not in sys.path:  # its helpers beside it import, as under python path.py (last: shadowing nothing)
        sys.path.append(folder)
        importlib.invalidate_caches()
    loader = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(loader)
    sys.modules[name] = loaded  # (dataclasses look a class's module up there)
    setattr(loaded, LOADED_SHA, sha)
    from tokdyn.engine.sweep import reads  # here: listing the studies imports no JAX
    from tokdyn.engine.sweep.digest import LOADING_IMPORTS

    try:
        with reads.recording() as seen:  # every import its loading makes: its modules are keyed by them
            loader.loader.exec_module(loaded)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    setattr(loaded, LOADING_IMPORTS, tuple(sorted(seen.modules)))
    return loaded
