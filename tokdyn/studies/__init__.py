"""End-to-end studies, one module per study, or one package per study that holds several concepts
(:mod:`tokdyn.studies.video`, :mod:`tokdyn.studies.token_dynamics_sweep`; one concept a module).
Each holds a study's science (its ``Config``, how it runs, its figures, summary and findings) and
declares it as a value, its ``SPEC`` (a :class:`tokdyn.experiment.runner.Spec`), which the one
runner drives (:func:`tokdyn.experiment.runner.run_study`: its ``main`` is that call). The studies are listed
once, in :mod:`tokdyn.experiment.registry`; :func:`spec` gives a listed study's value by name. A
study never imports another; their quick presets are labelled through :mod:`tokdyn.experiment.presets`.
Each study module is an attribute too (``tokdyn.studies.token_dynamics``), imported on first use.
"""

import importlib
import pkgutil

__all__ = ["spec"]


def _study_modules() -> list[str]:
    """The modules of this package (one per study), found without importing them."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name):
    if name in _study_modules():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_study_modules()))


def spec(name: str):
    """The :class:`~tokdyn.experiment.runner.Spec` of the study ``name`` of
    :data:`tokdyn.experiment.registry.STUDIES` (its module's ``SPEC``; ``ValueError`` naming the
    studies for another name)."""
    from tokdyn.experiment import registry

    return importlib.import_module(registry.entry(name).module).SPEC
