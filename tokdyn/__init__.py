"""tokdyn: token dynamics in latent visual reasoning, as pure jitted and vmapped JAX functions.

Subpackages and modules, by layer (loaded on first access, so ``import tokdyn`` does not import
JAX and the command line can set XLA flags first):

- :mod:`tokdyn.data`         synthetic data: Gaussian clusters, named point clouds (``data.clusters``),
  moving clusters, multi-object sprite scenes (``data.scenes``) and videos (``data.videos``)
- :mod:`tokdyn.dynamics`     token update rules (``Hparams``, ``METHODS``) and the loop that runs them
- :mod:`tokdyn.refinement`   variational refinement: a Gaussian mixture's EM as an update rule (``REFINEMENT``)
- :mod:`tokdyn.fused`        the built-in rule's whole run as one kernel per run (the fast form on GPUs)
- :mod:`tokdyn.tracking`     token dynamics through time: a rule run on every frame of a sequence, each frame
  started from a prediction (re-initialised, carried, constant velocity, inertia)
- :mod:`tokdyn.metrics`      ARI, NMI, SSE, collapse, segmentation scores (pure, jittable)
- :mod:`tokdyn.diffusion`    diffusion kernels: Gaussian (DDPM, DDIM) and discrete (D3PM) processes
- :mod:`tokdyn.es`           evolution-strategies / REINFORCE gradient estimates, a maximiser on optax
- :mod:`tokdyn.assignment`   one-to-one matching under ``jit`` (an auction) and on the host (SciPy)
- :mod:`tokdyn.geometry`     collapse geometry of vector sets: pairwise cosine, participation ratio, top PC
- :mod:`tokdyn.probes`       linear probes (multinomial logistic regression on optax), vmappable
- :mod:`tokdyn.analysis`     energy, Jacobians, fixed points, the collapse threshold
- :mod:`tokdyn.io`           atomic files, CSV/JSON, checkpoints, run metadata, progress
- :mod:`tokdyn.engine`       execution: chunked, sharded runs (``engine.execute``), grids of conditions x
  seeds on disk, resumable (``engine.sweep``), one run as a sweepable function (``engine.runs``)
- :mod:`tokdyn.stats`        host-side statistics: paired tests, corrections, bootstrap (``stats.inference``,
  its names also at ``tokdyn.stats``), sweep summaries (``stats.summary``), figures
  (``stats.figures``), text metrics (``stats.text``)
- :mod:`tokdyn.models`       the models: Slot Attention (``models.slots``) and its video form
  (``models.savi``), visual-token autoencoders (``models.vtae``), generative models over grid
  sequences (``models.sequence``), the latent reasoner (``models.latent``)
- :mod:`tokdyn.diagnostics`  diagnostics of latent reasoners over the ``apply`` protocol: mediation,
  DMLR, perturbations, grounding
- :mod:`tokdyn.experiment`   what the studies share: the one runner that drives every study
  (``experiment.runner``), the study directory (``experiment.study``), findings and their verdicts
  (``experiment.findings``), the registry of studies, the store of trained latent reasoners
  (``experiment.reasoners``)
- :mod:`tokdyn.train`        the generic training loop: optimiser, trainer, seeds x settings
- :mod:`tokdyn.studies`      end-to-end studies, each its science declared as a value (``SPEC``)
- :mod:`tokdyn.reproduce`    ``tokdyn reproduce``: every study, then each study's findings with a verdict
- :mod:`tokdyn.cli`          the ``tokdyn`` command, generated from the studies' configs
"""

import importlib

__version__ = "0.1.0"
__all__ = ["data", "dynamics", "refinement", "fused", "tracking", "metrics", "diffusion", "es", "assignment",
           "geometry", "probes", "analysis", "io", "engine", "stats", "models", "diagnostics", "experiment", "train",
           "studies", "reproduce", "cli"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.{name}")
    raise AttributeError(f"module 'tokdyn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
