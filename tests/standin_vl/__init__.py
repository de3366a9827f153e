"""A stand-in checkpoint family for the tests: a small vision-language model of its own design, registered
under the ``model_type`` ``"standin_vl"`` (the tests put it in :data:`tokdyn.models.families.FAMILIES`).

Its vision tower embeds 8-pixel patches linearly with their place and fuses 2 x 2 of them into an image
token; its decoder is pre-norm grouped-query attention with 1D rotary positions and a gated MLP. Its
``config.json``, parameter tree and tensor names are its own (``tower``/``decoder``/``special``;
``{"tower": {"patches", "merge"}, "lm": {"tok_emb", "blocks", "ln_out", "unembed"}}``); only the names the
families' contract lists (:mod:`tokdyn.models.families`) match another family's, so that the family-agnostic
layer, the analyses and the ``vlm-diagnostics`` study find nothing else to lean on.
"""

from __future__ import annotations

from pathlib import Path

from standin_vl import adapter, checkpoint, config, decoder, model, params, probes, processor, vision
from standin_vl.config import Config
from standin_vl.model import Model
from standin_vl.processor import ImageProcessor
from tokdyn.models.vlm import decoding

__all__ = [
    "Config",
    "ImageProcessor",
    "Model",
    "adapter",
    "checkpoint",
    "config",
    "decoder",
    "load",
    "model",
    "params",
    "probes",
    "processor",
    "vision",
]


def load(directory: str | Path, dtype=None, mesh=None, unknown: str = "error") -> Model:
    """The stand-in checkpoint in ``directory`` as a :class:`Model` (weights cast to ``dtype``, default
    their stored dtype)."""
    cfg = config.read(directory)
    tree = checkpoint.load_params(directory, cfg, dtype, mesh, unknown)
    return Model(cfg, tree, decoding.read(directory), str(directory))
