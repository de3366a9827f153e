"""End-to-end studies, one module per study, or one package per study that holds several concepts
(:mod:`tokdyn.studies.video`, :mod:`tokdyn.studies.token_dynamics_sweep`; one concept a module).
Each holds a study's science (its ``Config``, how it runs, its figures, summary and findings) and
declares it as a value, its ``SPEC`` (a :class:`tokdyn.experiment.runner.Spec`), which the one
runner drives (:func:`tokdyn.experiment.runner.run_study`: its ``main`` is that call). The studies are listed
once, in :mod:`tokdyn.experiment.registry`; :func:`spec` gives a listed study's value by name (the
loading is :mod:`tokdyn.experiment.loading`'s, re-exported here). A
study never imports another; their quick presets are labelled through :mod:`tokdyn.experiment.presets`.
Each study module is an attribute too (``tokdyn.studies.token_dynamics``), imported on first use.

A study of one's own lives outside the package (:doc:`/studies/writing-a-study`): an installed
package's entry point (:data:`tokdyn.experiment.registry.ENTRY_POINTS`) or a module given to the
command (``tokdyn --study-module path.py:SPEC``, :func:`add_study_module`); :func:`spec`,
:func:`module` and :func:`main_of` give any study by name, the package's and those alike.
"""

import importlib
import pkgutil

from tokdyn.experiment.loading import (  # the loading, in the layer below (re-exported: tokdyn.studies.spec)
    LOADED_SHA,
    add_study_module,
    file_sha256,
    is_file_target,
    load_file,
    main_of,
    module,
    spec,
)

__all__ = ["spec", "module", "main_of", "add_study_module", "is_file_target", "load_file", "file_sha256", "LOADED_SHA"]


def _study_modules() -> list[str]:
    """The modules of this package (one per study), found without importing them."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name):
    if name in _study_modules():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_study_modules()))
