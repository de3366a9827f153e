"""The models: networks, losses and a trainer each for :mod:`tokdyn.train` (submodules loaded on first access).

- :mod:`tokdyn.models.slots`     the learned Slot Attention and its object-discovery autoencoder
- :mod:`tokdyn.models.iodine`    IODINE: object discovery by iterative amortised variational inference
- :mod:`tokdyn.models.savi`      Slot Attention for video: each frame's slots started from the last
  frame's by a learned predictor (SAVi-style)
- :mod:`tokdyn.models.vtae`      visual-token autoencoders: text tokens <-> colour grids, corpora, diagnostics
- :mod:`tokdyn.models.sequence`  the second stage: generative models over grid sequences (DDPM, D3PM)
  and the token-level baselines
- :mod:`tokdyn.models.latent`    the tiny multimodal latent reasoner: tasks, model (the ``apply``
  protocol), variants, losses, training, evaluation
- :mod:`tokdyn.models.qwen2_5_vl` Qwen2.5-VL loaded from a Hugging Face checkpoint directory (no PyTorch),
  equal to ``transformers``' implementation: logits, generation, image processor, chat template
- :mod:`tokdyn.models.blocks`    the transformer blocks the language-model families share (RMSNorm, SwiGLU,
  rotary positions, grouped-query attention)
- :mod:`tokdyn.models.qwen2_5_vl_probes` read-outs of Qwen2.5-VL's vision tower (patch features before
  and after the merger)
- :mod:`tokdyn.models.qwen2_5_vl_apply` Qwen2.5-VL under the diagnostics' ``apply`` protocol
- :mod:`tokdyn.models.qwen2_5_vl_analyses` the latent-reasoning analyses on Qwen2.5-VL (decomposition, causal
  mediation, DMLR), each one compiled program over instances, perturbations and seeds
"""

import importlib

__all__ = [
    "slots",
    "iodine",
    "savi",
    "vtae",
    "sequence",
    "latent",
    "qwen2_5_vl",
    "blocks",
    "qwen2_5_vl_probes",
    "qwen2_5_vl_apply",
    "qwen2_5_vl_analyses",
]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.models.{name}")
    raise AttributeError(f"module 'tokdyn.models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
