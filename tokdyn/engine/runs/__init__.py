"""One run of an experiment as a sweepable function ``fn(key, **condition) -> dict of scalars``.

These are what the sweep engine (:func:`tokdyn.engine.sweep.run`) maps over a grid of conditions x
seeds, and what the studies, the ``tokdyn sweep`` command and the benchmarks share:

- :class:`ClusterRun`: token dynamics on Gaussian clusters, scored against the true clusters
  (ARI, NMI, SSE, steps, convergence, collapse): the published token-dynamics study's run.
- :class:`CollapseRun`: token dynamics on a named point cloud at a temperature given relative to
  the collapse threshold of its own data (token groups, collapse, convergence).
- :class:`TrackRun`: token dynamics through time (:mod:`tokdyn.tracking`) on a sequence of moving
  clusters, scored per frame (ARI) and across frames (identity consistency), with the predictor a
  condition.

Each is a frozen dataclass: its fields are static structure (hashable, so equal instances share
one compilation) and the defaults of every condition that is not a sweep axis; every condition
passed at call time is traced, so a sweep over any of them compiles once. :class:`ClusterRun`
runs any update rule (``rule=``, a :class:`tokdyn.dynamics.Rule`, the built-in one by default),
whose knobs are then its conditions.

One concept a module, every public name re-exported here (``tokdyn.engine.runs.ClusterRun``):

- :mod:`~tokdyn.engine.runs.structure` the static structure of a run and the sizes one run can hold
  (:class:`RunStructure`, :data:`MAX_ELEMENTS`, :data:`MAX_RUN_BYTES`)
- :mod:`~tokdyn.engine.runs.cluster` :class:`ClusterRun`, :data:`KERNELS`, :data:`BUILTIN_RULES`,
  :data:`PACKAGE_RULES`
- :mod:`~tokdyn.engine.runs.collapse` :class:`CollapseRun`
- :mod:`~tokdyn.engine.runs.tracks` :class:`TrackRun`
"""

from tokdyn.engine.runs.cluster import BUILTIN_RULES, KERNELS, PACKAGE_RULES, ClusterRun
from tokdyn.engine.runs.collapse import CollapseRun
from tokdyn.engine.runs.structure import MAX_ELEMENTS, MAX_RUN_BYTES, RunStructure
from tokdyn.engine.runs.tracks import TrackRun

__all__ = [
    "BUILTIN_RULES",
    "KERNELS",
    "MAX_ELEMENTS",
    "MAX_RUN_BYTES",
    "PACKAGE_RULES",
    "ClusterRun",
    "CollapseRun",
    "RunStructure",
    "TrackRun",
]
