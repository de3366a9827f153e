"""Qwen2.5-VL's forward pass as a pure function (:func:`apply`) and the :class:`Model` that holds a loaded
checkpoint and takes the arguments ``Qwen2_5_VLForConditionalGeneration`` takes."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import attention
from tokdyn.models.qwen2_5_vl import positions as positions_lib
from tokdyn.models.qwen2_5_vl import decoding, generation, text, vision
from tokdyn.models.qwen2_5_vl.inputs import (  # noqa: F401 -- check_inputs, image_features_jit re-exported
    check_inputs,
    image_features,
    image_features_jit,
)
from tokdyn.models.qwen2_5_vl.config import Config


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
    (from :func:`tokdyn.models.qwen2_5_vl.positions.rope_index`), with images' ``pixel_values`` encoded under
    ``plan`` (from :func:`tokdyn.models.qwen2_5_vl.vision.plan`) scattered at the image tokens. Traceable:
    ``jit``, ``vmap`` and ``grad`` apply."""
    feats = None if pixel_values is None else image_features(cfg, params, pixel_values, plan)
    x = text.embed(params["text"], input_ids, feats, cfg.image_token_id, attention_mask)
    t = input_ids.shape[1]
    slots = jnp.arange(t)
    mask = attention.causal_mask(jnp.broadcast_to(slots, input_ids.shape), slots, attention_mask.astype(bool))
    x, _ = text.decode(cfg.text, params["text"], x, positions, mask)
    return text.head(cfg.text, params["text"], x)


_apply = jax.jit(apply, static_argnums=0)


@dataclasses.dataclass(frozen=True)
class Model:
    """A Qwen2.5-VL checkpoint in memory: its configuration and parameter tree, called as
    ``Qwen2_5_VLForConditionalGeneration`` is.

    Attributes:
        config: the model's structure.
        params: the parameter tree (:mod:`tokdyn.models.qwen2_5_vl.params`), on the devices.
        generation_config: the checkpoint's decoding settings (its ``generation_config.json``), which
            :meth:`generate` follows; None: ``transformers``' defaults and the configuration's stop tokens.
        source: the checkpoint directory it was loaded from (its tokenizer resolves
            :class:`~tokdyn.models.qwen2_5_vl.latent.LatentMode` token strings), or None.
    """

    config: Config
    params: dict
    generation_config: decoding.GenerationConfig | None = None
    source: str | None = None

    @property
    def dtype(self):
        """The parameters' dtype."""
        return self.params["text"]["embed"].dtype

    def __call__(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None) -> jax.Array:
        """Logits (B, T, vocab) of ``input_ids`` (B, T), with the images of ``pixel_values`` (patches,
        patch_dim) and ``image_grid_thw`` (images, 3) at the image tokens; ``attention_mask`` (B, T) marks real
        tokens (padding anywhere). Positions follow ``transformers``' ``get_rope_index``."""
        ids, mask, grid = check_inputs(self.config, input_ids, pixel_values, image_grid_thw, attention_mask)
        pos, _ = positions_lib.rope_index(self.config, ids, grid, mask)
        plan = None if grid is None else vision.plan(self.config.vision, grid)
        pixels = None if pixel_values is None else jnp.asarray(np.asarray(pixel_values, np.float32))
        return _apply(self.config, self.params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos), pixels, plan)

    def generate(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None, **options):
        """New tokens after each prompt, decoded as the checkpoint's ``generation_config.json`` says:
        :func:`tokdyn.models.qwen2_5_vl.generation.generate` with this model (a (B, max_new_tokens) array, or,
        with ``latent=LatentMode(...)`` or ``score_ids``, a :class:`~tokdyn.models.qwen2_5_vl.latent.Generation`)."""
        return generation.generate(self, input_ids, pixel_values, image_grid_thw, attention_mask, **options)

    def with_dtype(self, dtype) -> Model:
        """The same model with its parameters cast to ``dtype``."""
        cast = functools.partial(jnp.asarray, dtype=dtype)
        return dataclasses.replace(self, params=jax.tree_util.tree_map(cast, self.params))
