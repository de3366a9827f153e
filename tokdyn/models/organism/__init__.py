"""The model organism as Qwen2.5-VL checkpoints: the data and the checkpoint files.

- :mod:`tokdyn.models.organism.tasks`       the grid tasks as images, questions, options and answer letters
- :mod:`tokdyn.models.organism.tokenizer`   a small tokenizer with Qwen's special tokens and three latent tokens
- :mod:`tokdyn.models.organism.checkpoint`  a complete Hugging Face Qwen2.5-VL checkpoint directory, written
  atomically, and its ``latent_mode.json`` read back
- :mod:`tokdyn.models.organism.training`    the organism trained under the published recipes, every seed in one
  program, saved as checkpoints
- :mod:`tokdyn.models.organism.evaluation`  the answers scored per task family, and the chance level
"""

import importlib

__all__ = ["tasks", "tokenizer", "checkpoint", "training", "evaluation"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.models.organism.{name}")
    raise AttributeError(f"module 'tokdyn.models.organism' has no attribute {name!r}")
