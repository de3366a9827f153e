"""A tiny multimodal latent reasoner: tasks that need visual imagination, a transformer with a
latent mode behind one functional protocol, and its training variants.

- :mod:`tokdyn.models.latent.model`       decoder-only transformer (Flax) with latent feedback; ``apply`` protocol
- :mod:`tokdyn.models.latent.variants`    the training variants (``VARIANTS``), curriculum stages, model per stage
- :mod:`tokdyn.models.latent.losses`      answer / caption cross-entropy, Mirage / Monet / LVR alignment
- :mod:`tokdyn.models.latent.config`      static ``Config`` (size, budget, curriculum, pools, seeds), traced ``Hparams``
- :mod:`tokdyn.models.latent.training`    the trainer of each variant for :mod:`tokdyn.train`, keys, data
- :mod:`tokdyn.models.latent.evaluation`  greedy prediction, per-family accuracy, majority-answer baseline

Its tasks are :mod:`tokdyn.data.grid_tasks` (the Qwen2.5-VL organisms of :mod:`tokdyn.models.organism` draw the same
instances); ``tokdyn.models.latent.tasks`` is a deprecated name of that module.
"""

import importlib
import warnings

__all__ = ["model", "config", "variants", "losses", "training", "evaluation"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.models.latent.{name}")
    if name == "tasks":  # deprecated: the grid tasks' own module, loaded (and warned of) on first use
        from tokdyn._deprecations import notice

        warnings.warn(
            "tokdyn.models.latent.tasks is deprecated: use tokdyn.data.grid_tasks"
            + notice("tokdyn.models.latent.tasks"),
            DeprecationWarning,
            stacklevel=2,
        )
        globals()["tasks"] = importlib.import_module("tokdyn.data.grid_tasks")
        return globals()["tasks"]
    raise AttributeError(f"module 'tokdyn.models.latent' has no attribute {name!r}")
