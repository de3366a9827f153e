"""Qwen3-VL as a model of the diagnostics' ``apply`` protocol (:mod:`tokdyn.diagnostics.protocol`): the adapter
every family shares (:mod:`tokdyn.models.vlm.adapter`) bound to Qwen3-VL's forward pass (:data:`DECODER`: its
vision tower with the deepstack mergers, decoder layers with per-head query and key norms, interleaved rotary
tables and head).

A prompt holds one image per row and, optionally, a block of latent tokens between two boundary markers, as
the latent-reasoning methods place them::

    [... <vision_start> image tokens <vision_end> question ... <start> L latent slots <end> ... answer]

:func:`prompt` builds such ids, :func:`layout` finds the positions, :func:`make_batch` adds the mask, the
multimodal rotary positions and the pixel rows, and :func:`make_apply` returns ``apply(params, batch, *,
latents=None, intervene=None, drop=None, inject=None, select=None)``
(:func:`tokdyn.models.vlm.adapter.make_apply` says what each does).

Deepstack: each image's deepstack features are added to the outputs of the decoder's first layers at its image
tokens, as in the model's own forward pass (:func:`tokdyn.models.qwen3_vl.model.apply`); :func:`image_features`
keeps them beside the features (``"image_extra"``, (B, n_deep, image tokens, hidden)). With ``inject``, a copy
of an image token gets that token's deepstack features too: it is the image token presented again, as the
vision tower hands it to the decoder (at the input and after the first layers), read only by the positions
after it where ``inject`` is True; ``hidden`` entry ``i`` is layer ``i``'s output with its deepstack addition
(the next layer's input).
"""

from __future__ import annotations

from tokdyn.models.qwen3_vl import inputs as inputs_lib
from tokdyn.models.qwen3_vl import model as model_lib
from tokdyn.models.qwen3_vl import positions as positions_lib
from tokdyn.models.qwen3_vl import text, vision
from tokdyn.models.qwen3_vl.config import Config
from tokdyn.models.vlm import adapter as adapter_lib
from tokdyn.models.vlm.adapter import NOISES, Layout, injection_point, layout, noised_pixels, prompt


def encode(cfg: Config, params: dict, pixel_values, plan: vision.Plan):
    """One image's features (image tokens, hidden) of ``pixel_values`` (patches, patch_dim) under ``plan`` and
    its deepstack features (n_deep, image tokens, hidden) (:func:`tokdyn.models.qwen3_vl.inputs.image_features`)."""
    return inputs_lib.image_features(cfg, params, pixel_values, plan)


def n_deepstack(cfg: Config) -> int:
    """The decoder layers whose output gets a deepstack addition at the image tokens (the first ones)."""
    return len(cfg.vision.deepstack_visual_indexes)


def decode_span(cfg, params: dict, x, positions, mask, extra=None):
    """The decoder layers of ``params["layers"]`` over ``x`` (:func:`tokdyn.models.qwen3_vl.text.decode`), the
    hidden states after them; ``extra`` (None, or (span layers, B, T, hidden)) the deepstack additions of the
    span's first layers."""
    return text.decode(cfg, params, x, positions, mask, extra)[0]


DECODER = adapter_lib.Decoder(
    check_grid=positions_lib.check_grid,
    check_inputs=model_lib.check_inputs,
    rope_index=model_lib.rope_index,
    plan=vision.plan,
    encode=encode,
    n_extra=n_deepstack,
    embed=model_lib.embed_tokens,
    rope_tables=text.rope_tables,
    project=text.project,
    decode=decode_span,
    head=text.head,
)
"""Qwen3-VL's forward pass as the shared adapter takes it (:class:`tokdyn.models.vlm.adapter.Decoder`)."""


def make_batch(cfg: Config, input_ids, pixel_values, image_grid_thw, attention_mask=None) -> dict:
    """The batch ``apply`` reads (:func:`tokdyn.models.vlm.adapter.make_batch`): ``input_ids`` (B, T),
    ``attention_mask`` (B, T), ``positions`` (B, 3, T) (``transformers``' ``get_rope_index``, instance-major)
    and ``pixel_values`` (B, patches, patch_dim), one image per row, all of one grid ``image_grid_thw``
    ([[1, h, w]] or one such row per image)."""
    return adapter_lib.make_batch(DECODER, cfg, input_ids, pixel_values, image_grid_thw, attention_mask)


def image_features(cfg: Config, params, batch: dict, image_grid_thw) -> dict:
    """``batch`` holding the vision tower's features (B, image tokens, D) of its ``"pixel_values"`` as
    ``"image_features"`` and their deepstack features (B, n_deep, image tokens, D) as ``"image_extra"``, so that
    the calls of an analysis that share an image encode it once (:func:`tokdyn.models.vlm.adapter.image_features`).
    Traceable."""
    return adapter_lib.image_features(DECODER, cfg, params, batch, image_grid_thw)


def make_apply(cfg: Config, image_grid_thw, lay: Layout):
    """``apply(params, batch, *, latents=None, intervene=None, drop=None, inject=None, select=None) -> Outputs``
    for prompts of layout ``lay`` and images of grid ``image_grid_thw`` ([[1, h, w]]): the protocol of
    :mod:`tokdyn.diagnostics.protocol` (:func:`tokdyn.models.vlm.adapter.make_apply`, which says what each
    keyword does), with ``params`` the model's parameter tree and ``batch`` from :func:`make_batch`; the
    deepstack features added after the first layers at the image tokens, and at their injected copies. The
    layers between those whose input or output is read run as one scan of
    :func:`tokdyn.models.qwen3_vl.text.decode`. Traceable: ``jit``, ``vmap`` and ``grad`` apply."""
    return adapter_lib.make_apply(DECODER, cfg, image_grid_thw, lay)


__all__ = [
    "DECODER",
    "Layout",
    "NOISES",
    "decode_span",
    "encode",
    "image_features",
    "injection_point",
    "layout",
    "make_apply",
    "make_batch",
    "n_deepstack",
    "noised_pixels",
    "prompt",
]
