"""The stand-in's forward pass (:func:`apply`), its :class:`Model`, and the functions the one generation loop
runs over (:data:`tokdyn.models.vlm.family.LOOP`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from standin_vl import decoder, vision
from standin_vl import params as params_lib
from tokdyn.models.blocks import attention
from tokdyn.models.vlm import decoding, generation


def check_inputs(cfg, input_ids, pixel_values, grid, mask):
    """The inputs as NumPy arrays ``(ids, mask, grid)``, checked: a ValueError naming the argument."""
    ids = np.asarray(input_ids)
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be (batch, length) integers, got {ids.shape} {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.text.vocab):
        raise ValueError(f"input_ids must lie in [0, {cfg.text.vocab})")
    mask = np.ones(ids.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    mask = mask[None] if mask.ndim == 1 else mask
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {mask.shape}; input_ids has {ids.shape}")
    if ((ids == cfg.video_token_id) & mask).any():
        raise ValueError(f"input_ids hold the video placeholder (id {cfg.video_token_id}): the stand-in reads images")
    n_image = int(((ids == cfg.image_token_id) & mask).sum())
    if (pixel_values is None) != (grid is None):
        raise ValueError("pixel_values and image_grid_thw go together: give both or neither")
    if grid is None:
        if n_image:
            raise ValueError(f"input_ids hold {n_image} image tokens but no pixel_values")
        return ids, mask, None
    grid = vision.check_grid(grid, cfg.vision.merge)
    patches = int(grid.prod(axis=1).sum())
    if tuple(np.shape(pixel_values)) != (patches, cfg.vision.patch_dim):
        raise ValueError(
            f"pixel_values has shape {np.shape(pixel_values)}; the grid needs ({patches}, {cfg.vision.patch_dim})"
        )
    if patches // cfg.vision.merge**2 != n_image:
        raise ValueError(f"input_ids hold {n_image} image tokens; the images make {patches // cfg.vision.merge**2}")
    return ids, mask, grid


def rope_index(cfg, ids, grid, mask):
    """Positions (3, B, T), the three rows equal: each unmasked token's count of unmasked tokens before it
    (images included, one position a token); the next position (B,) after the last."""
    m = np.asarray(mask, bool)
    pos = np.where(m, np.cumsum(m, axis=1) - 1, 0).astype(np.int64)
    return np.broadcast_to(pos, (3, *pos.shape)).copy(), m.sum(axis=1).astype(np.int64)


_encode = jax.jit(lambda tower, params, px, plan: vision.encode(tower, params, px, plan), static_argnums=0)


def image_features(cfg, params, pixel_values, plan):
    """The features (image tokens, hidden) of ``pixel_values`` under ``plan`` (traced)."""
    return vision.encode(cfg.vision, params, pixel_values, plan)


def encode_images(cfg, params, pixel_values, grid):
    """The images' features (image tokens, hidden), in order."""
    return _encode(cfg.vision, params, jnp.asarray(pixel_values, jnp.float32), vision.plan(cfg.vision, grid))


def embed_tokens(cfg, params, ids):
    """Input embeddings of token ids."""
    return params["lm"]["tok_emb"][ids]


def embed_prompt(cfg, params, ids, mask, visual):
    """The prompts' embeddings with ``visual``'s rows, in order, at the unmasked image tokens; no per-layer
    additions."""
    x = embed_tokens(cfg, params, ids)
    if visual is None:
        return x, None
    is_image = (ids == cfg.image_token_id) & mask.astype(bool)
    slot = jnp.clip(jnp.cumsum(is_image.reshape(-1)).reshape(is_image.shape) - 1, 0, visual.shape[0] - 1)
    return jnp.where(is_image[..., None], visual.astype(x.dtype)[slot], x), None


def new_cache(cfg, batch, length, dtype):
    """An empty key/value cache (:func:`standin_vl.decoder.new_cache`)."""
    return decoder.new_cache(cfg.text, batch, length, dtype)


def decode_cached(cfg, params, x, positions, mask, cache, start, extra=None):
    """The decoder with the cache (:func:`standin_vl.decoder.decode_cached`)."""
    return decoder.decode_cached(cfg.text, params["lm"], x, positions, mask, cache, start)


def final_norm(cfg, params, h):
    """The final RMSNorm."""
    return decoder.final_norm(cfg.text, params["lm"], h)


def output_head(cfg, params, normed):
    """Logits of final-norm states."""
    return decoder.unembed(cfg.text, params["lm"], normed)


def param_dtype(params):
    """The parameters' dtype."""
    return params["lm"]["tok_emb"].dtype


def abstract_params(cfg, dtype):
    """The parameter tree's shapes (``jax.ShapeDtypeStruct`` leaves)."""
    tree = params_lib.random(cfg)
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), tree)


def abstract_visual(cfg, n_tokens, dtype):
    """:func:`encode_images`' output shape for ``n_tokens`` image tokens."""
    return jax.ShapeDtypeStruct((n_tokens, cfg.text.width), dtype)


def apply(cfg, params, ids, mask, positions, pixel_values=None, plan=None):
    """Logits (B, T, vocab) of the whole sequence. Traceable."""
    visual = None if pixel_values is None else vision.encode(cfg.vision, params, pixel_values, plan)
    x, _ = embed_prompt(cfg, params, ids, mask, visual)
    slots = jnp.arange(ids.shape[1])
    causal = attention.causal_mask(jnp.broadcast_to(slots, ids.shape), slots, mask.astype(bool))
    h = decoder.run(cfg.text, params["lm"], x, positions, causal)
    return output_head(cfg, params, final_norm(cfg, params, h))


_apply = jax.jit(apply, static_argnums=0)


@dataclasses.dataclass(frozen=True)
class Model:
    """A stand-in checkpoint in memory.

    Attributes:
      config: its :class:`standin_vl.config.Config`.
      params: its parameter tree.
      generation_config: its ``generation_config.json`` (None: the defaults).
      source: the directory it was read from.
    """

    config: object
    params: dict
    generation_config: decoding.GenerationConfig | None = None
    source: str | None = None

    def __call__(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None):
        """Logits (B, T, vocab)."""
        ids, mask, grid = check_inputs(self.config, input_ids, pixel_values, image_grid_thw, attention_mask)
        pos, _ = rope_index(self.config, ids, grid, mask)
        plan = None if grid is None else vision.plan(self.config.vision, grid)
        px = None if pixel_values is None else jnp.asarray(np.asarray(pixel_values, np.float32))
        return _apply(self.config, self.params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos), px, plan)

    def generate(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None, **options):
        """New tokens: :func:`tokdyn.models.vlm.generation.generate` with this model."""
        return generation.generate(self, input_ids, pixel_values, image_grid_thw, attention_mask, **options)
