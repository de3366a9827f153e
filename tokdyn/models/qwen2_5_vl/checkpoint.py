"""Reading a Qwen2.5-VL checkpoint directory in the Hugging Face layout, with no PyTorch and no download.

A directory holds ``config.json`` and either ``model.safetensors`` or shards listed by
``model.safetensors.index.json``. Before any weight is read, every file's safetensors header is read and checked
on its own (:func:`read_header`: a header length the file can hold, JSON, each tensor's dtype, shape and byte
range inside the file, the ranges covering the data once, so a truncated or damaged shard is found by its
header), every tensor name is mapped to the parameter tree (:mod:`~tokdyn.models.qwen2_5_vl.params`) and its
shape and dtype checked against the configuration (:func:`inspect`); then the tensors are read and placed on
the devices, sharded over a ``Mesh`` when one is given (:func:`load_params`). The reading itself is
:mod:`tokdyn.models.blocks.weights`, which the families share; :func:`read_header`, :class:`Tensor`,
:class:`Plan` and :func:`sharding_for` are its names.

Tensors that map to no parameter (a head a fine-tune added, say) are refused, naming the first few and their
count, unless the caller says ``unknown="ignore"``. A tensor stored in one 16-bit format while ``config.json``'s
``torch_dtype`` names the other (float16 against bfloat16) is refused: the same bits read as the other format
are other numbers.
"""

from __future__ import annotations

from pathlib import Path

from tokdyn.models.blocks import weights
from tokdyn.models.blocks.weights import (
    FLOAT_DTYPES,
    ITEM_BYTES,
    MAX_HEADER_BYTES,
    UNKNOWN,
    Plan,
    Tensor,
    read_header,
    sharding_for,
)
from tokdyn.models.qwen2_5_vl import params as params_lib
from tokdyn.models.qwen2_5_vl.config import Config

__all__ = [
    "FLOAT_DTYPES",
    "ITEM_BYTES",
    "LAYOUT",
    "MAX_HEADER_BYTES",
    "UNKNOWN",
    "Plan",
    "Tensor",
    "files",
    "inspect",
    "load_params",
    "read_header",
    "sharding_for",
    "tensors",
]

LAYOUT = (
    "a Qwen2.5-VL checkpoint directory in the Hugging Face layout: config.json and model.safetensors, or "
    "shards model-0000i-of-0000n.safetensors listed by model.safetensors.index.json"
)
"""What a Qwen2.5-VL checkpoint directory holds, for messages."""


def tensors(directory: str | Path) -> dict[str, Tensor]:
    """Every tensor of the checkpoint in ``directory`` (one file, or the shards of the index), from the files'
    headers (:func:`read_header`, each checked against its file); a ValueError naming the index when a tensor
    it lists is not in its shard."""
    return weights.tensors(directory, LAYOUT)


def files(directory: str | Path) -> dict[str, Path]:
    """The safetensors file of each tensor name in ``directory`` (one file, or the shards of the index)."""
    return {name: t.file for name, t in tensors(directory).items()}


def inspect(directory: str | Path, cfg: Config, unknown: str = "error") -> Plan:
    """Check the checkpoint in ``directory`` against ``cfg`` from the files' headers alone (no weight is read):
    every parameter's tensor present once, of the shape ``cfg`` implies (the error names the configuration's
    field an axis comes from), stored as a float, and in the 16-bit format ``config.json``'s ``torch_dtype``
    names when it names one; tensors that map to no parameter refused (``unknown="error"``, their count and
    the first five named) or left out (``unknown="ignore"``); an ``lm_head.weight`` beside tied embeddings is
    left out (the embedding is the head). Returns the :class:`Plan`."""
    return weights.match(
        directory,
        params_lib.layout(cfg),
        params_lib.canonical,
        family="Qwen2.5-VL",
        ignored=("lm_head.weight",) if cfg.text.tie_word_embeddings else (),
        dtype=cfg.dtype,
        dtype_field="torch_dtype",
        unknown=unknown,
        layout=LAYOUT,
    )


def load_params(directory: str | Path, cfg: Config, dtype=None, mesh=None, unknown: str = "error") -> dict:
    """The parameter tree of the checkpoint in ``directory`` for configuration ``cfg``, cast to ``dtype``
    (default: each tensor's own), placed on the devices (each array's largest axis split over ``mesh``'s first
    axis when a ``jax.sharding.Mesh`` is given and the axis divides evenly).

    Everything :func:`inspect` checks is checked first, from the headers (a ValueError naming the file and
    the tensor); ``unknown`` says what to do with tensors that map to no parameter (``"error"`` or
    ``"ignore"``).
    """
    plan = inspect(directory, cfg, unknown)
    tree = weights.read(plan, dtype, mesh, later=params_lib.stacked)
    return params_lib.stack_layers(tree, cfg, weights.placer(mesh))
