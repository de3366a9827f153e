"""A tiny multimodal latent reasoner: tasks that need visual imagination, a transformer with a
latent mode behind one functional protocol, and its training variants.

- :mod:`tokdyn.models.latent.tasks`       synthetic grid tasks (rotate, gravity, recolour, path), pure JAX
- :mod:`tokdyn.models.latent.model`       decoder-only transformer (Flax) with latent feedback; ``apply`` protocol
- :mod:`tokdyn.models.latent.variants`    the training variants (``VARIANTS``), curriculum stages, model per stage
- :mod:`tokdyn.models.latent.losses`      answer / caption cross-entropy, Mirage / Monet / LVR alignment
- :mod:`tokdyn.models.latent.config`      static ``Config`` (size, budget, curriculum, pools, seeds), traced ``Hparams``
- :mod:`tokdyn.models.latent.training`    the trainer of each variant for :mod:`tokdyn.train`, keys, data
- :mod:`tokdyn.models.latent.evaluation`  greedy prediction, per-family accuracy, majority-answer baseline
"""

import importlib

__all__ = ["tasks", "model", "config", "variants", "losses", "training", "evaluation"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.models.latent.{name}")
    raise AttributeError(f"module 'tokdyn.models.latent' has no attribute {name!r}")
