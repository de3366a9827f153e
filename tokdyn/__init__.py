"""tokdyn: token dynamics in latent visual reasoning, as pure jitted and vmapped JAX functions.

Submodules (loaded on first access, so ``import tokdyn`` does not import JAX and the command
line can set XLA flags first):

- :mod:`tokdyn.data`      synthetic datasets: Gaussian clusters, named point clouds
- :mod:`tokdyn.dynamics`  token update rules (``Hparams``, ``METHODS``) and the loop that runs them
- :mod:`tokdyn.metrics`   ARI, NMI, SSE, collapse (pure, jittable)
- :mod:`tokdyn.analysis`  energy, Jacobians, fixed points, the collapse threshold
- :mod:`tokdyn.runs`      one run as a sweepable function (``ClusterRun``, ``CollapseRun``)
- :mod:`tokdyn.execute`   the execution engine: chunked, sharded runs (``map_runs``)
- :mod:`tokdyn.sweep`     grids of conditions x seeds, run to disk, resumable (``Grid``, ``run``)
- :mod:`tokdyn.summary`   per-condition statistics, Pareto fronts, bootstrap intervals
- :mod:`tokdyn.geometry`  collapse geometry of vector sets: pairwise cosine, participation ratio, top PC
- :mod:`tokdyn.probes`    linear probes (multinomial logistic regression on optax), vmappable
- :mod:`tokdyn.es`        evolution-strategies / REINFORCE gradient estimates, a maximiser on optax
- :mod:`tokdyn.stats`     paired tests, effect sizes, multiple-comparison corrections, bootstrap
- :mod:`tokdyn.io`        atomic files, CSV/JSON, checkpoints, run metadata, progress
- :mod:`tokdyn.report`    figures
- :mod:`tokdyn.vtae`      visual-token autoencoders: token <-> colour grid, corpora, diagnostics
- :mod:`tokdyn.latent`    tiny multimodal latent reasoner: tasks, model (``apply`` protocol), training
- :mod:`tokdyn.studies`   end-to-end studies (config -> runs -> tables -> figures)
- :mod:`tokdyn.cli`       the ``tokdyn`` command, generated from the studies' configs
"""

import importlib

__version__ = "0.1.0"
__all__ = ["data", "dynamics", "metrics", "analysis", "runs", "execute", "sweep", "summary", "geometry", "probes", "es", "stats", "io", "report",
           "vtae", "latent", "studies", "cli"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.{name}")
    raise AttributeError(f"module 'tokdyn' has no attribute {name!r}")
