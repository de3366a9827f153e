"""Qwen2.5-VL's forward pass as a pure function (:func:`apply`), the :class:`Model` that holds a loaded
checkpoint and takes the arguments ``Qwen2_5_VLForConditionalGeneration`` takes, and the few functions the one
generation loop of :mod:`tokdyn.models.vlm.generation` runs over (:data:`tokdyn.models.vlm.family.LOOP`):
:func:`encode_images`, :func:`embed_prompt`, :func:`embed_tokens`, :func:`new_cache`, :func:`decode_cached`,
:func:`final_norm`, :func:`output_head`, with :func:`check_inputs` and :func:`rope_index` on the host."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import attention
from tokdyn.models.qwen2_5_vl import positions as positions_lib
from tokdyn.models.qwen2_5_vl import params as params_lib
from tokdyn.models.qwen2_5_vl import text, vision
from tokdyn.models.qwen2_5_vl.inputs import (  # noqa: F401 -- check_inputs, image_features_jit re-exported
    check_inputs,
    image_features,
    image_features_jit,
)
from tokdyn.models.qwen2_5_vl.config import Config
from tokdyn.models.vlm import decoding, generation


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


# ---------------------------------------------------------------------------------------------- the loop's functions


def rope_index(cfg: Config, input_ids, grid, mask):
    """The prompts' (3, B, T) multimodal positions and each row's first generated position (B,), on the host:
    :func:`tokdyn.models.qwen2_5_vl.positions.rope_index`."""
    return positions_lib.rope_index(cfg, input_ids, grid, mask)


def encode_images(cfg: Config, params: dict, pixel_values, grid) -> jax.Array:
    """The images' features (image tokens, hidden) of ``pixel_values`` (patches, patch_dim) of grids ``grid``
    (images, 3), in order: one compiled program per grid."""
    plan = vision.plan(cfg.vision, grid)
    return image_features_jit(cfg, params, jnp.asarray(pixel_values, jnp.float32), plan)


def embed_prompt(cfg: Config, params: dict, input_ids, mask, visual):
    """The prompts' input embeddings (B, T, hidden), ``visual`` (:func:`encode_images`' features, image tokens
    first) at the unmasked image tokens, and no per-layer additions (None): Qwen2.5-VL feeds the images at the
    input alone. Traced."""
    return text.embed(params["text"], input_ids, visual, cfg.image_token_id, mask), None


def embed_tokens(cfg: Config, params: dict, ids) -> jax.Array:
    """The input embeddings (..., hidden) of token ids ``ids``. Traced."""
    return params["text"]["embed"][ids]


def new_cache(cfg: Config, batch: int, length: int, dtype):
    """An empty key/value cache of ``length`` slots (:func:`tokdyn.models.qwen2_5_vl.text.new_cache`)."""
    return text.new_cache(cfg.text, batch, length, dtype)


def decode_cached(cfg: Config, params: dict, x, positions, mask, cache, start, extra=None):
    """The decoder over ``x`` (B, T, hidden) at ``positions`` (3, B, T) with the cache, writing slots ``start``
    onwards (:func:`tokdyn.models.qwen2_5_vl.text.decode_cached`): the last layer's output before the final
    norm and the cache. ``extra`` (per-layer additions) is None for this family. Traced."""
    return text.decode_cached(cfg.text, params["text"], x, positions, mask, cache, start)


def final_norm(cfg: Config, params: dict, h) -> jax.Array:
    """The final RMSNorm of the last layer's output ``h`` (..., hidden). Traced."""
    return text.final_norm(cfg.text, params["text"], h)


def output_head(cfg: Config, params: dict, normed) -> jax.Array:
    """Logits (..., vocab) of final-norm states. Traced."""
    return text.output_head(cfg.text, params["text"], normed)


def param_dtype(params: dict):
    """The dtype of the parameters."""
    return params["text"]["embed"].dtype


def abstract_params(cfg: Config, dtype) -> dict:
    """The parameter tree's shapes and dtypes (``jax.ShapeDtypeStruct`` leaves), for lowering a program
    without weights."""
    return jax.eval_shape(lambda k: params_lib.init(k, cfg, dtype), jax.random.key(0))


def abstract_visual(cfg: Config, n_tokens: int, dtype):
    """:func:`encode_images`' output shape for ``n_tokens`` image tokens: (n_tokens, hidden)."""
    return jax.ShapeDtypeStruct((n_tokens, cfg.text.hidden_size), dtype)


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
            :class:`~tokdyn.models.vlm.latent.LatentMode` token strings), or None.
    """

    config: Config
    params: dict
    generation_config: decoding.GenerationConfig | None = None
    source: str | None = None

    @property
    def dtype(self):
        """The parameters' dtype."""
        return param_dtype(self.params)

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
        :func:`tokdyn.models.vlm.generation.generate` with this model (a (B, max_new_tokens) array, or,
        with ``latent=LatentMode(...)`` or ``score_ids``, a :class:`~tokdyn.models.vlm.latent.Generation`)."""
        return generation.generate(self, input_ids, pixel_values, image_grid_thw, attention_mask, **options)

    def with_dtype(self, dtype) -> Model:
        """The same model with its parameters cast to ``dtype``."""
        cast = functools.partial(jnp.asarray, dtype=dtype)
        return dataclasses.replace(self, params=jax.tree_util.tree_map(cast, self.params))
