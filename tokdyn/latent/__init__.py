"""A tiny multimodal latent reasoner: tasks that need visual imagination, a transformer with a
latent mode behind one functional protocol, and its training variants.

- :mod:`tokdyn.latent.tasks`       synthetic grid tasks (rotate, gravity, recolour, path), pure JAX
- :mod:`tokdyn.latent.model`       decoder-only transformer (Flax) with latent feedback; ``apply`` protocol
- :mod:`tokdyn.latent.variants`    the training variants (``VARIANTS``), curriculum stages, model per stage
- :mod:`tokdyn.latent.losses`      answer / caption cross-entropy, Mirage / Monet / LVR alignment
- :mod:`tokdyn.latent.training`    static ``Config``, traced ``Hparams``, ``train_step``, ``train_many``
                                   (scanned chunks, vmapped over seeds x settings, sharded, checkpointed)
- :mod:`tokdyn.latent.evaluation`  greedy prediction, per-family accuracy, majority-answer baseline
"""

import importlib

__all__ = ["tasks", "model", "variants", "losses", "training", "evaluation"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.latent.{name}")
    raise AttributeError(f"module 'tokdyn.latent' has no attribute {name!r}")
