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
- :mod:`~tokdyn.models.qwen2_5_vl.model`       the forward pass, and the functions the one generation loop runs
  over (:data:`tokdyn.models.vlm.family.LOOP`)
- :mod:`~tokdyn.models.qwen2_5_vl.processor`   the image processor
- :mod:`~tokdyn.models.qwen2_5_vl.inputs`      the inputs checked on the host, the images' features
- :mod:`~tokdyn.models.qwen2_5_vl.adapter`     the model under the diagnostics' ``apply`` protocol
- :mod:`~tokdyn.models.qwen2_5_vl.probes`      read-outs of the vision tower (patch features before and after
  the merger)

This package is one of :mod:`tokdyn.models.families` (``model_type`` ``"qwen2_5_vl"``) and exposes the names
every family does. Generation, latent mode, interventions, decoding and the chat template are the shared layer
:mod:`tokdyn.models.vlm` (``model.generate`` calls it); the blocks other families share are in
:mod:`tokdyn.models.blocks`.
"""

from __future__ import annotations

from pathlib import Path

from tokdyn.models.qwen2_5_vl import (
    adapter,
    checkpoint,
    config,
    inputs,
    model,
    params,
    positions,
    probes,
    processor,
    saving,
    text,
    vision,
)
from tokdyn.models.qwen2_5_vl.config import Config, TextConfig, VisionConfig
from tokdyn.models.qwen2_5_vl.model import Model, apply
from tokdyn.models.qwen2_5_vl.processor import ImageProcessor
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
    "saving",
    "text",
    "vision",
]

_MOVED = {
    "Chat": ("tokdyn.models.vlm.chat", "Chat"),
    "Generation": ("tokdyn.models.vlm.latent", "Generation"),
    "GenerationConfig": ("tokdyn.models.vlm.decoding", "GenerationConfig"),
    "Intervention": ("tokdyn.models.vlm.interventions", "Intervention"),
    "LatentMode": ("tokdyn.models.vlm.latent", "LatentMode"),
    "chat": ("tokdyn.models.vlm.chat", None),
    "decoding": ("tokdyn.models.vlm.decoding", None),
    "generation": ("tokdyn.models.vlm.generation", None),
    "latent": ("tokdyn.models.vlm.latent", None),
}
"""The family-agnostic names that moved to :mod:`tokdyn.models.vlm`, still reachable here with a
``DeprecationWarning`` (:mod:`tokdyn._deprecations`)."""


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    from tokdyn import _deprecations

    module, attr = _MOVED[name]
    warnings.warn(
        f"tokdyn.models.qwen2_5_vl.{name} moved to {module}{'.' + attr if attr else ''}: import it from there"
        + _deprecations.notice("tokdyn.models.qwen2_5_vl generation names"),
        DeprecationWarning,
        stacklevel=2,
    )
    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)


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
