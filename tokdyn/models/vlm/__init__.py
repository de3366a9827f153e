"""The family-agnostic VLM layer: what every checkpoint family shares, written once over the few functions a
family provides (:mod:`tokdyn.models.vlm.family`).

Modules (``tokdyn.models.vlm.*``):

- :mod:`~tokdyn.models.vlm.family`         what a family provides to the loop, and its check
- :mod:`~tokdyn.models.vlm.generation`     the one cached generation loop, in text or latent mode (the block
  mode: a block forced after the prompt)
- :mod:`~tokdyn.models.vlm.decoding`       ``generation_config.json`` and how a token is chosen (the logits
  processors, in ``transformers``' order)
- :mod:`~tokdyn.models.vlm.latent`         latent mode (``LatentMode``, ``latent_mode.json``) and what generation
  hands back (``Generation``)
- :mod:`~tokdyn.models.vlm.interventions`  the one table of interventions on a latent block
- :mod:`~tokdyn.models.vlm.chat`           the tokenizer, the chat template's sandbox, the batched prompt encoder
- :mod:`~tokdyn.models.vlm.adapter`        the model under the diagnostics' ``apply`` protocol, over a family's
  forward pass (its ``Decoder``), and the image perturbations
- :mod:`~tokdyn.models.vlm.devices`        the rows of a batch split over devices, the weights replicated on each

A family package (:data:`tokdyn.models.families.FAMILIES`) holds its architecture only and calls
:func:`~tokdyn.models.vlm.generation.generate` from its ``Model.generate``.
"""

from __future__ import annotations

import importlib

_MODULES = ("adapter", "chat", "decoding", "devices", "family", "generation", "interventions", "latent", "training")
_NAMES = {
    "Chat": "chat",
    "GenerationConfig": "decoding",
    "generate": "generation",
    "KINDS": "interventions",
    "TABLE": "interventions",
    "Intervention": "interventions",
    "Generation": "latent",
    "LatentMode": "latent",
}
__all__ = sorted(set(_MODULES) | set(_NAMES))


def __getattr__(name: str):
    # the modules load on first use, so that what needs one (the multiple-choice prompt of chat, say) does not
    # import JAX through generation
    if name in _MODULES:
        return importlib.import_module(f"tokdyn.models.vlm.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"tokdyn.models.vlm.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tokdyn.models.vlm' has no attribute {name!r}")


def __dir__():
    return __all__
