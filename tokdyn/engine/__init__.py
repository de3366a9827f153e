"""The execution engine: what runs a study's many runs (submodules loaded on first access).

- :mod:`tokdyn.engine.execute`  chunked, sharded map of a per-run function (``map_runs``,
  ``sharded_map``, ``plan``, ``stream``)
- :mod:`tokdyn.engine.sweep`    grids of conditions x seeds run to disk, resumable (``Grid``, ``run``,
  ``load``, ``iter_chunks``)
- :mod:`tokdyn.engine.runs`     one run of an experiment as ``fn(key, **condition)`` (``ClusterRun``,
  ``CollapseRun``)
- :mod:`tokdyn.engine.launch`   one job on several processes or hosts: ``jax.distributed`` started from
  a SLURM job step or a plain launch, checked first (``resolve``, ``initialize``)
"""

import importlib

__all__ = ["execute", "sweep", "runs", "launch"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.engine.{name}")
    raise AttributeError(f"module 'tokdyn.engine' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
