"""What the studies share (a study never imports another study); submodules loaded on first access.

- :mod:`tokdyn.experiment.runner`: one runner for every study (``Spec``, ``run_study``).
- :mod:`tokdyn.experiment.tables`: a summary's cells (``select``, ``EmptyCell``) and its tables' files.
- :mod:`tokdyn.experiment.user_code`: a study of one's own stamped with its modules' code (``code_stamp``).
- :mod:`tokdyn.experiment.study`: the study directory, stamped before any work, parts kept with
  checksums, the output path and the resources checked.
- :mod:`tokdyn.experiment.findings`: a seed finding's claim, rule and verdict (``Finding``).
- :mod:`tokdyn.experiment.paired`: paired comparisons of a sweep's settings by seed (``paired_tests``).
- :mod:`tokdyn.experiment.variants`: trained variants compared per family: convergence from the learning
  curves, the accuracy tables, paired tests against references, the summary table and the curves' figure.
- :mod:`tokdyn.experiment.presets`: the ``preset`` field and the line a quick run's summary opens with.
- :mod:`tokdyn.experiment.attributes`: a class docstring's ``Attributes:`` as ``{field: text}``.
- :mod:`tokdyn.experiment.registry`: the studies, listed once.
- :mod:`tokdyn.experiment.loading`: a study by name (its module, ``SPEC`` and ``main``), or of one's own from
  a file (re-exported by :mod:`tokdyn.studies`).
- :mod:`tokdyn.experiment.rates`: how fast the running backend does each kind of work.
- :mod:`tokdyn.experiment.analysis`: the studies that analyse another study's trained models (its store by name).

How a study is written and run: :doc:`/studies/writing-a-study`.
"""

import importlib

__all__ = [
    "analysis",
    "attributes",
    "findings",
    "loading",
    "paired",
    "presets",
    "rates",
    "registry",
    "runner",
    "study",
    "tables",
    "user_code",
    "variants",
]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.experiment.{name}")
    raise AttributeError(f"module 'tokdyn.experiment' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
