"""A tiny multimodal latent reasoner: tasks that need visual imagination, a transformer with a
latent mode behind one functional protocol, and its training variants.

- :mod:`tokdyn.latent.tasks`  synthetic grid tasks (rotate, gravity, recolour, path), pure JAX
- :mod:`tokdyn.latent.model`  decoder-only transformer (Flax) with latent feedback; ``apply`` protocol
- :mod:`tokdyn.latent.train`  training variants (optax, vmapped over seeds), evaluation, checkpoints
"""

import importlib

__all__ = ["tasks", "model", "train"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.latent.{name}")
    raise AttributeError(f"module 'tokdyn.latent' has no attribute {name!r}")
