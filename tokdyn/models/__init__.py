"""The models: networks, losses and a trainer each for :mod:`tokdyn.train` (submodules loaded on first access).

- :mod:`tokdyn.models.protocol`  the ``apply`` protocol's types (``ApplyFn``, ``Outputs``), which the models
  implement and :mod:`tokdyn.diagnostics` reads
- :mod:`tokdyn.models.slots`     the learned Slot Attention and its object-discovery autoencoder
- :mod:`tokdyn.models.iodine`    IODINE: object discovery by iterative amortised variational inference
- :mod:`tokdyn.models.savi`      Slot Attention for video: each frame's slots started from the last
  frame's by a learned predictor (SAVi-style)
- :mod:`tokdyn.models.vtae`      visual-token autoencoders: text tokens <-> colour grids, corpora, diagnostics
- :mod:`tokdyn.models.sequence`  the second stage: generative models over grid sequences (DDPM, D3PM)
  and the token-level baselines

Checkpoint families (pure functions over a checkpoint's parameter tree, one package each, listed in
:mod:`tokdyn.models.families`):

- :mod:`tokdyn.models.families`  the families by ``config.json``'s ``model_type``, and what each package exposes
- :mod:`tokdyn.models.qwen2_5_vl` Qwen2.5-VL loaded from a Hugging Face checkpoint directory (no PyTorch),
  equal to ``transformers``' implementation: logits, generation, image processor, chat template, the
  ``apply`` adapter (``qwen2_5_vl.adapter``) and the vision tower's read-outs (``qwen2_5_vl.probes``)
- :mod:`tokdyn.models.qwen3_vl`   Qwen3-VL (deepstack), the same names, equal to ``transformers``' implementation
- :mod:`tokdyn.models.blocks`    the transformer blocks the families share (RMSNorm, SwiGLU, rotary
  positions, grouped-query attention), and the checked fields, weights and image processing they read
- :mod:`tokdyn.models.vlm`       what every family shares: the one generation loop, latent mode, the one table
  of interventions, decoding, the chat template, the ``apply`` adapter, training with the latent mode
- :mod:`tokdyn.models.organism`  the organism as a Qwen2.5-VL: its tasks as images and questions, its
  tokenizer, its checkpoints in the Hugging Face layout, its training under the published recipes

``tokdyn.models.qwen2_5_vl_apply``, ``qwen2_5_vl_probes`` and ``qwen2_5_vl_analyses`` are deprecated names of
``qwen2_5_vl.adapter``, ``qwen2_5_vl.probes`` and :mod:`tokdyn.diagnostics.vlm`, and ``tokdyn.models.latent.tasks``
(the removed Flax reasoner's package keeps only that name) of :mod:`tokdyn.data.grid_tasks`
(``tokdyn._deprecations``).
"""

import importlib
import warnings

__all__ = [
    "protocol",
    "slots",
    "iodine",
    "savi",
    "vtae",
    "sequence",
    "families",
    "qwen2_5_vl",
    "qwen3_vl",
    "blocks",
    "vlm",
    "organism",
]

_MOVED = {
    "qwen2_5_vl_apply": "tokdyn.models.qwen2_5_vl.adapter",
    "qwen2_5_vl_probes": "tokdyn.models.qwen2_5_vl.probes",
    "qwen2_5_vl_analyses": "tokdyn.diagnostics.vlm",
}


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"tokdyn.models.{name}")
    if name == "latent":  # the removed Flax reasoner's package, kept for its one deprecated name (its tasks)
        return importlib.import_module("tokdyn.models.latent")
    if name in _MOVED:  # deprecated: the module's new home, loaded on use (never at import)
        from tokdyn._deprecations import notice

        warnings.warn(
            f"tokdyn.models.{name} is deprecated: use {_MOVED[name]}" + notice(f"tokdyn.models.{name}"),
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'tokdyn.models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
