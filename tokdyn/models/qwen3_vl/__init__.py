"""Qwen3-VL in JAX, from a Hugging Face checkpoint directory, equal to ``transformers``' implementation.

``load(directory)`` reads ``config.json`` and the safetensors weights (no PyTorch, nothing downloaded) and
returns a :class:`Model`; ``model(input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None)``
gives the logits (B, T, vocab) as ``Qwen3VLForConditionalGeneration`` does, and ``model.generate(...)`` new
tokens (the one generation loop of :mod:`tokdyn.models.vlm`, in text or latent mode). Underneath, :func:`apply`
is a pure function of the parameter tree, and :mod:`~tokdyn.models.qwen3_vl.text` the decoder's pieces the
generation loop runs (embed, a cached step with the deepstack features, the head).

What sets it apart from Qwen2.5-VL: a vision tower of LayerNorm blocks with full attention within each image,
a learned position embedding interpolated to each grid, and deepstack (the residual stream after chosen
vision blocks, merged, added to the decoder's first layers' outputs at the image tokens); a Qwen3 decoder
(per-head RMSNorm of queries and keys, an explicit head width) with interleaved M-RoPE.

Modules (``tokdyn.models.qwen3_vl.*``):

- :mod:`~tokdyn.models.qwen3_vl.config`      the configuration
- :mod:`~tokdyn.models.qwen3_vl.params`      the parameter tree and the checkpoint's names
- :mod:`~tokdyn.models.qwen3_vl.checkpoint`  reading the files
- :mod:`~tokdyn.models.qwen3_vl.positions`   index arithmetic on the host
- :mod:`~tokdyn.models.qwen3_vl.vision`      the vision tower and its deepstack mergers
- :mod:`~tokdyn.models.qwen3_vl.text`        the decoder
- :mod:`~tokdyn.models.qwen3_vl.inputs`      the inputs checked on the host, the images' features
- :mod:`~tokdyn.models.qwen3_vl.model`       the forward pass, and the functions the one generation loop runs
  over (:data:`tokdyn.models.vlm.family.LOOP`)
- :mod:`~tokdyn.models.qwen3_vl.processor`   the image processor
- :mod:`~tokdyn.models.qwen3_vl.adapter`     the model under the diagnostics' ``apply`` protocol
- :mod:`~tokdyn.models.qwen3_vl.probes`      read-outs of the vision tower (patch features before and after
  the merger)

This package is one of :mod:`tokdyn.models.families` (``model_type`` ``"qwen3_vl"``) and exposes the names
every family does. Generation, latent mode, interventions, decoding and the chat template are the shared layer
:mod:`tokdyn.models.vlm` (``model.generate`` calls it), and the ``apply`` adapter is written once in
:mod:`tokdyn.models.vlm.adapter` over this family's decoder; the blocks the families share are in
:mod:`tokdyn.models.blocks`.
"""

from __future__ import annotations

from pathlib import Path

from tokdyn.models.qwen3_vl import (
    adapter,
    checkpoint,
    config,
    inputs,
    model,
    params,
    positions,
    probes,
    processor,
    text,
    vision,
)
from tokdyn.models.qwen3_vl.config import Config, TextConfig, VisionConfig
from tokdyn.models.qwen3_vl.model import Model, apply
from tokdyn.models.qwen3_vl.processor import ImageProcessor
from tokdyn.models.vlm import decoding

__all__ = [
    "Config",
    "ImageProcessor",
    "Model",
    "TextConfig",
    "VisionConfig",
    "adapter",
    "apply",
    "checkpoint",
    "config",
    "inputs",
    "load",
    "model",
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
    """The Qwen3-VL checkpoint in ``directory`` (Hugging Face layout) as a :class:`Model`.

    ``dtype`` casts every weight (``"float32"``, ``"bfloat16"``, ``"float16"`` or the jnp dtype; default: the
    dtype ``config.json`` states, else each tensor's own); ``mesh`` (a ``jax.sharding.Mesh``) shards each
    weight's largest axis over the mesh's first axis; ``unknown`` says what to do with tensors that map to no
    parameter (a module a fine-tune added): ``"error"`` refuses the checkpoint naming them, ``"ignore"`` loads
    the model without them. Nothing is downloaded: a missing directory or file is a FileNotFoundError that
    names the layout expected; every file and field is checked before any weight is read, a ValueError naming
    the file, the field, its value and what is allowed (:mod:`~tokdyn.models.qwen3_vl.config`,
    :func:`~tokdyn.models.qwen3_vl.checkpoint.inspect`). The decoding settings of ``generation_config.json``
    (:func:`tokdyn.models.vlm.decoding.read`) come with the model, for ``model.generate``.
    """
    import jax.numpy as jnp

    if dtype is not None:
        try:
            name = jnp.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
        if name not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; expected one of {DTYPES}")
        dtype = name
    cfg = config.read(directory)
    if dtype is None and cfg.dtype in DTYPES:
        dtype = cfg.dtype
    params_ = checkpoint.load_params(directory, cfg, dtype, mesh, unknown)
    return Model(cfg, params_, decoding.read(directory), str(directory))
