"""tokdyn: token dynamics in latent visual reasoning, as pure jitted and vmapped JAX functions.

Subpackages and modules load on first access, so ``import tokdyn`` does not import JAX and the
command line can set XLA flags first. By layer:

- kernels: :mod:`tokdyn.dynamics` (token update rules and the loop that runs them),
  :mod:`tokdyn.refinement`, :mod:`tokdyn.fused` (deprecated: :mod:`tokdyn.dynamics.pallas`), :mod:`tokdyn.tracking`, :mod:`tokdyn.metrics`,
  :mod:`tokdyn.analysis`, :mod:`tokdyn.diffusion`, :mod:`tokdyn.es`, :mod:`tokdyn.assignment`,
  :mod:`tokdyn.geometry`, :mod:`tokdyn.probes`;
- data and models: :mod:`tokdyn.data`, :mod:`tokdyn.datasets` (readers of published datasets' files),
  :mod:`tokdyn.models`, :mod:`tokdyn.diagnostics`;
- running: :mod:`tokdyn.engine` (chunked, sharded, resumable sweeps), :mod:`tokdyn.train` (the
  training loop), :mod:`tokdyn.io`, :mod:`tokdyn.stats`, :mod:`tokdyn.checks` (the argument
  checks, for code of one's own), :mod:`tokdyn.extras` (the optional extras and the error for a
  package of one that is missing);
- studies: :mod:`tokdyn.experiment` (what the studies share), :mod:`tokdyn.studies`,
  :mod:`tokdyn.reproduce`, :mod:`tokdyn.cli` (the ``tokdyn`` command).

What each module owns: :doc:`/architecture`.
"""

import importlib

__version__ = "0.1.0"
__all__ = [
    "data",
    "datasets",
    "dynamics",
    "refinement",
    "fused",
    "tracking",
    "metrics",
    "diffusion",
    "es",
    "assignment",
    "geometry",
    "probes",
    "analysis",
    "io",
    "checks",
    "extras",
    "engine",
    "stats",
    "models",
    "diagnostics",
    "experiment",
    "train",
    "studies",
    "reproduce",
    "cli",
]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.{name}")
    raise AttributeError(f"module 'tokdyn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
