"""Qwen2.5-VL in JAX, from a Hugging Face checkpoint directory, equal to ``transformers``' implementation.

``load(directory)`` reads ``config.json`` and the safetensors weights (no PyTorch, nothing downloaded) and
returns a :class:`Model`; ``model(input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None)``
gives the logits (B, T, vocab) as ``Qwen2_5_VLForConditionalGeneration`` does, and ``model.generate(...)``
new tokens. Underneath, :func:`apply` is a pure function of the parameter tree.

Modules (``tokdyn.models.qwen2_5_vl.*``):

- :mod:`~tokdyn.models.qwen2_5_vl.config`      the configuration
- :mod:`~tokdyn.models.qwen2_5_vl.params`      the parameter tree and the checkpoint's names
- :mod:`~tokdyn.models.qwen2_5_vl.checkpoint`  reading the files
- :mod:`~tokdyn.models.qwen2_5_vl.positions`   index arithmetic on the host
- :mod:`~tokdyn.models.qwen2_5_vl.vision`      the vision tower
- :mod:`~tokdyn.models.qwen2_5_vl.text`        the decoder
- :mod:`~tokdyn.models.qwen2_5_vl.model`       the forward pass
- :mod:`~tokdyn.models.qwen2_5_vl.generation`  decoding with a key/value cache, in text or latent mode
- :mod:`~tokdyn.models.qwen2_5_vl.decoding`    ``generation_config.json`` and how a token is chosen
- :mod:`~tokdyn.models.qwen2_5_vl.latent`      latent mode, interventions on latents, what generation returns
- :mod:`~tokdyn.models.qwen2_5_vl.processor`   the image processor
- :mod:`~tokdyn.models.qwen2_5_vl.chat`        the tokenizer and the chat template
- :mod:`~tokdyn.models.qwen2_5_vl.inputs`      the inputs checked on the host, the images' features
- :mod:`~tokdyn.models.qwen2_5_vl.adapter`     the model under the diagnostics' ``apply`` protocol
- :mod:`~tokdyn.models.qwen2_5_vl.probes`      read-outs of the vision tower (patch features before and after
  the merger)

This package is one of :mod:`tokdyn.models.families` (``model_type`` ``"qwen2_5_vl"``) and exposes the names
every family does. The blocks other families share are in :mod:`tokdyn.models.blocks`.
"""

from __future__ import annotations

from pathlib import Path

from tokdyn.models.qwen2_5_vl import (
    adapter,
    chat,
    checkpoint,
    config,
    decoding,
    generation,
    inputs,
    latent,
    params,
    positions,
    probes,
    processor,
    text,
    vision,
)
from tokdyn.models.qwen2_5_vl.chat import Chat
from tokdyn.models.qwen2_5_vl.config import Config, TextConfig, VisionConfig
from tokdyn.models.qwen2_5_vl.decoding import GenerationConfig
from tokdyn.models.qwen2_5_vl.latent import Generation, Intervention, LatentMode
from tokdyn.models.qwen2_5_vl.model import Model, apply
from tokdyn.models.qwen2_5_vl.processor import ImageProcessor

__all__ = [
    "Chat",
    "Config",
    "Generation",
    "GenerationConfig",
    "ImageProcessor",
    "Intervention",
    "LatentMode",
    "Model",
    "TextConfig",
    "VisionConfig",
    "adapter",
    "apply",
    "chat",
    "checkpoint",
    "config",
    "decoding",
    "generation",
    "inputs",
    "latent",
    "load",
    "params",
    "positions",
    "probes",
    "processor",
    "text",
    "vision",
]

DTYPES = ("float32", "bfloat16", "float16")
"""The dtypes ``load`` casts to."""


def load(directory: str | Path, dtype=None, mesh=None, unknown: str = "error") -> Model:
    """The Qwen2.5-VL checkpoint in ``directory`` (Hugging Face layout) as a :class:`Model`.

    ``dtype`` casts every weight (``"float32"``, ``"bfloat16"``, ``"float16"`` or the jnp dtype; default: the
    dtype ``config.json`` states, else each tensor's own); ``mesh`` (a ``jax.sharding.Mesh``) shards each
    weight's largest axis over the mesh's first axis; ``unknown`` says what to do with tensors that map to no
    parameter (a module a fine-tune added): ``"error"`` refuses the checkpoint naming them, ``"ignore"`` loads
    the model without them. Nothing is downloaded: a missing directory or file is a FileNotFoundError that
    names the layout expected; every file and field is checked before any weight is read, a ValueError naming
    the file, the field, its value and what is allowed (:mod:`~tokdyn.models.qwen2_5_vl.config`,
    :func:`~tokdyn.models.qwen2_5_vl.checkpoint.inspect`). The decoding settings of ``generation_config.json``
    (:func:`tokdyn.models.qwen2_5_vl.decoding.read`) come with the model, for ``model.generate``.
    """
    import jax.numpy as jnp

    if dtype is not None:
        name = jnp.dtype(dtype).name
        if name not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; expected one of {DTYPES}")
        dtype = name
    cfg = config.read(directory)
    if dtype is None and cfg.dtype in DTYPES:
        dtype = cfg.dtype
    params = checkpoint.load_params(directory, cfg, dtype, mesh, unknown)
    return Model(cfg, params, decoding.read(directory), str(directory))
