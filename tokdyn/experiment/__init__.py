"""What the studies share (a study never imports another study); submodules loaded on first access.

- :mod:`tokdyn.experiment.study`  the study runner: an output directory stamped with the whole
  configuration before any work, parts kept with checksums, checks of the output path and of the
  resources a configuration asks for, analysis sources checked against their own stamps

- :mod:`tokdyn.experiment.runner`  one runner for every study: a study is a value (``Spec``: its
  name, ``Config``, outputs, and the functions that are its science: ``run``, ``figures``,
  ``summary``, ``findings``) that ``run_study`` drives: checks, stamp, ``--fresh``, timings, writes,
  figures, ``config.json``, the printed summary

- :mod:`tokdyn.experiment.findings`  a seed finding's claim, rule and verdict (``Finding``), judged
  by the study that measures it from its own verified tables; the intervals and rules they share

- :mod:`tokdyn.experiment.presets`  the ``preset`` field of a study's config and the line a quick
  run's summary opens with

- :mod:`tokdyn.experiment.attributes`  a class docstring's ``Attributes:`` section as ``{field: text}``:
  the command line's help text, and the sweep's knob axes' (from ``tokdyn.dynamics.Hparams``)

- :mod:`tokdyn.experiment.registry`  the studies, listed once (name, command, module, default output),
  which the command line and ``tokdyn reproduce`` read

- :mod:`tokdyn.experiment.rates`  how fast the running backend does each kind of work (token
  dynamics, training), measured once by short probes and kept, so that a study's time estimate
  (its work in seconds of the reference CPU, by kind) is said for this machine

- :mod:`tokdyn.experiment.reasoners`  the store of trained latent reasoners: the latent-reasoning
  study's ``Config``, training a variant to convergence into a study directory
  (``train_variants``, ``run_variant``, ``ensure_trained``) and loading it back (``load_variant``,
  ``load_midway``)
"""

import importlib

__all__ = ["attributes", "findings", "presets", "rates", "reasoners", "registry", "runner", "study"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.experiment.{name}")
    raise AttributeError(f"module 'tokdyn.experiment' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
