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

A family package (:data:`tokdyn.models.families.FAMILIES`) holds its architecture only and calls
:func:`~tokdyn.models.vlm.generation.generate` from its ``Model.generate``.
"""

from __future__ import annotations

from tokdyn.models.vlm import adapter, chat, decoding, family, generation, interventions, latent
from tokdyn.models.vlm.chat import Chat
from tokdyn.models.vlm.decoding import GenerationConfig
from tokdyn.models.vlm.generation import generate
from tokdyn.models.vlm.interventions import KINDS, TABLE, Intervention
from tokdyn.models.vlm.latent import Generation, LatentMode

__all__ = [
    "Chat",
    "Generation",
    "GenerationConfig",
    "Intervention",
    "KINDS",
    "LatentMode",
    "TABLE",
    "adapter",
    "chat",
    "decoding",
    "family",
    "generate",
    "generation",
    "interventions",
    "latent",
]
