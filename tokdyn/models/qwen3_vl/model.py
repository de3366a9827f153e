"""Qwen3-VL's forward pass as a pure function (:func:`apply`) and the :class:`Model` that holds a loaded
checkpoint and takes the arguments ``Qwen3VLForConditionalGeneration`` takes."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import attention
from tokdyn.models.qwen3_vl import positions as positions_lib
from tokdyn.models.qwen3_vl import text, vision
from tokdyn.models.qwen3_vl.config import Config
from tokdyn.models.qwen3_vl.inputs import check_inputs, image_features


def apply(
    cfg: Config,
    params: dict,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    positions: jax.Array,
    pixel_values: jax.Array | None = None,
    plan: vision.Plan | None = None,
) -> jax.Array:
    """Logits (B, T, vocab) of ``input_ids`` (B, T) under ``attention_mask`` (B, T) at (3, B, T) ``positions``
    (from :func:`tokdyn.models.qwen3_vl.positions.rope_index`), with images' ``pixel_values`` encoded under
    ``plan`` (from :func:`tokdyn.models.qwen3_vl.vision.plan`): their features in place of the image tokens,
    their deepstack features added after the first layers there. Traceable: ``jit``, ``vmap`` and ``grad``
    apply."""
    valid = attention_mask.astype(bool)
    feats = deepstack = None
    if pixel_values is not None:
        feats, deep = image_features(cfg, params, pixel_values, plan)
        deepstack = text.deepstack_embeddings(input_ids, deep, cfg.image_token_id, valid)
    x = text.embed(params["text"], input_ids, feats, cfg.image_token_id, valid)
    slots = jnp.arange(input_ids.shape[1])
    mask = attention.causal_mask(jnp.broadcast_to(slots, input_ids.shape), slots, valid)
    h, _ = text.decode(cfg.text, params["text"], x, positions, mask, deepstack)
    return text.head(cfg.text, params["text"], h)


apply_jit = jax.jit(apply, static_argnums=0)
""":func:`apply`, compiled (per configuration and shapes)."""


@dataclasses.dataclass(frozen=True)
class Model:
    """A Qwen3-VL checkpoint in memory: its configuration and parameter tree, called as
    ``Qwen3VLForConditionalGeneration`` is.

    Attributes:
        config: the model's structure.
        params: the parameter tree (:mod:`tokdyn.models.qwen3_vl.params`), on the devices.
        generation_config: the checkpoint's decoding settings (its ``generation_config.json``, read by the
            generation layer the families share), or None.
        source: the checkpoint directory it was loaded from, or None.
    """

    config: Config
    params: dict
    generation_config: object | None = None
    source: str | None = None

    @property
    def dtype(self):
        """The parameters' dtype."""
        return self.params["text"]["embed"].dtype

    def __call__(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None) -> jax.Array:
        """Logits (B, T, vocab) of ``input_ids`` (B, T), with the images of ``pixel_values`` (patches,
        patch_dim) and ``image_grid_thw`` (images, 3) at the image tokens; ``attention_mask`` (B, T) marks real
        tokens (padding anywhere). Positions follow ``transformers``' ``get_rope_index`` (checked on the host
        first: :func:`tokdyn.models.qwen3_vl.inputs.check_inputs`)."""
        ids, mask, grid = check_inputs(self.config, input_ids, pixel_values, image_grid_thw, attention_mask)
        pos, _ = positions_lib.rope_index(self.config, ids, grid, mask)
        plan = None if grid is None else vision.plan(self.config.vision, grid)
        pixels = None if pixel_values is None else jnp.asarray(np.asarray(pixel_values, np.float32))
        return apply_jit(self.config, self.params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos), pixels, plan)

    def with_dtype(self, dtype) -> Model:
        """The same model with its parameters cast to ``dtype``."""
        cast = functools.partial(jnp.asarray, dtype=dtype)
        return dataclasses.replace(self, params=jax.tree_util.tree_map(cast, self.params))
