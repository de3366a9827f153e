"""Qwen3-VL's forward pass as a pure function (:func:`apply`), the :class:`Model` that holds a loaded checkpoint
and takes the arguments ``Qwen3VLForConditionalGeneration`` takes, and the few functions the one generation loop
of :mod:`tokdyn.models.vlm.generation` runs over (:data:`tokdyn.models.vlm.family.LOOP`): :func:`encode_images`,
:func:`embed_prompt`, :func:`embed_tokens`, :func:`new_cache`, :func:`decode_cached`, :func:`final_norm`,
:func:`output_head`, with :func:`check_inputs` and :func:`rope_index` on the host.

Deepstack, as the loop carries it: :func:`encode_images` hands back the pair (image features (F, hidden),
deepstack features (n_deep, F, hidden)), which the loop pads to a bucket along the image tokens (axis -2 of
both); :func:`embed_prompt` scatters the first at the image tokens of the prompts and the second, per layer, at
the same tokens (zeros elsewhere) as its ``extra`` (n_deep, B, T, hidden); the prefill hands each chunk its slice
of ``extra`` along T, and :func:`decode_cached` adds ``extra[i]`` to layer ``i``'s output. A step after the
prompt holds no image token and passes None."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import attention
from tokdyn.models.qwen3_vl import params as params_lib
from tokdyn.models.qwen3_vl import positions as positions_lib
from tokdyn.models.qwen3_vl import text, vision
from tokdyn.models.qwen3_vl.config import Config
from tokdyn.models.qwen3_vl.inputs import (  # noqa: F401 -- check_inputs re-exported: a function of the loop
    check_inputs,
    image_features,
    image_features_jit,
)
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


# ---------------------------------------------------------------------------------------------- the loop's functions


def rope_index(cfg: Config, input_ids, grid, mask):
    """The prompts' (3, B, T) multimodal positions and each row's first generated position (B,), on the host:
    :func:`tokdyn.models.qwen3_vl.positions.rope_index`."""
    return positions_lib.rope_index(cfg, input_ids, grid, mask)


def encode_images(cfg: Config, params: dict, pixel_values, grid) -> tuple[jax.Array, jax.Array]:
    """The images' features of ``pixel_values`` (patches, patch_dim) of grids ``grid`` (images, 3), in order:
    the pair (image features (image tokens, hidden), deepstack features (n_deep, image tokens, hidden)), the
    image tokens on axis -2 of both. One compiled program per grid."""
    plan = vision.plan(cfg.vision, grid)
    return image_features_jit(cfg, params, jnp.asarray(pixel_values, jnp.float32), plan)


def embed_prompt(cfg: Config, params: dict, input_ids, mask, visual):
    """The prompts' input embeddings (B, T, hidden), with ``visual``'s image features (:func:`encode_images`'
    pair, image tokens in order, padded rows at the end) at the unmasked image tokens, and the deepstack
    additions ``extra`` (n_deep, B, T, hidden): each layer's deepstack features at the same tokens, zeros
    elsewhere (:func:`tokdyn.models.qwen3_vl.text.deepstack_embeddings`); ``(x, None)`` without images.
    Traced."""
    if visual is None:
        return text.embed(params["text"], input_ids, None, cfg.image_token_id, mask), None
    feats, deep = visual
    x = text.embed(params["text"], input_ids, feats, cfg.image_token_id, mask)
    return x, text.deepstack_embeddings(input_ids, deep, cfg.image_token_id, mask)


def embed_tokens(cfg: Config, params: dict, ids) -> jax.Array:
    """The input embeddings (..., hidden) of token ids ``ids``. Traced."""
    return params["text"]["embed"][ids]


def new_cache(cfg: Config, batch: int, length: int, dtype):
    """An empty key/value cache of ``length`` slots (:func:`tokdyn.models.qwen3_vl.text.new_cache`)."""
    return text.new_cache(cfg.text, batch, length, dtype)


def decode_cached(cfg: Config, params: dict, x, positions, mask, cache, start, extra=None):
    """The decoder over ``x`` (B, T, hidden) at ``positions`` (3, B, T) with the cache, writing slots ``start``
    onwards (:func:`tokdyn.models.qwen3_vl.text.decode_cached`): the last layer's output before the final
    norm (deepstack included) and the cache. ``extra``: None, or these T tokens' slice (n_deep, B, T, hidden) of
    :func:`embed_prompt`'s deepstack additions, ``extra[i]`` added to layer ``i``'s output. Traced."""
    return text.decode_cached(cfg.text, params["text"], x, positions, mask, cache, start, extra)


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
    """:func:`encode_images`' output shapes for ``n_tokens`` image tokens: the pair ((n_tokens, hidden),
    (n_deep, n_tokens, hidden))."""
    d = cfg.text.hidden_size
    return (
        jax.ShapeDtypeStruct((n_tokens, d), dtype),
        jax.ShapeDtypeStruct((len(cfg.vision.deepstack_visual_indexes), n_tokens, d), dtype),
    )


apply_jit = jax.jit(apply, static_argnums=0)
""":func:`apply`, compiled (per configuration and shapes)."""


@dataclasses.dataclass(frozen=True)
class Model:
    """A Qwen3-VL checkpoint in memory: its configuration and parameter tree, called as
    ``Qwen3VLForConditionalGeneration`` is.

    Attributes:
        config: the model's structure.
        params: the parameter tree (:mod:`tokdyn.models.qwen3_vl.params`), on the devices.
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
        tokens (padding anywhere). Positions follow ``transformers``' ``get_rope_index`` (checked on the host
        first: :func:`tokdyn.models.qwen3_vl.inputs.check_inputs`)."""
        ids, mask, grid = check_inputs(self.config, input_ids, pixel_values, image_grid_thw, attention_mask)
        pos, _ = positions_lib.rope_index(self.config, ids, grid, mask)
        plan = None if grid is None else vision.plan(self.config.vision, grid)
        pixels = None if pixel_values is None else jnp.asarray(np.asarray(pixel_values, np.float32))
        return apply_jit(self.config, self.params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos), pixels, plan)

    def generate(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None, **options):
        """New tokens after each prompt, decoded as the checkpoint's ``generation_config.json`` says:
        :func:`tokdyn.models.vlm.generation.generate` with this model (a (B, max_new_tokens) array, or,
        with ``latent=LatentMode(...)`` or ``score_ids``, a :class:`~tokdyn.models.vlm.latent.Generation`)."""
        return generation.generate(self, input_ids, pixel_values, image_grid_thw, attention_mask, **options)

    def with_dtype(self, dtype) -> Model:
        """The same model with its parameters cast to ``dtype``."""
        cast = functools.partial(jnp.asarray, dtype=dtype)
        return dataclasses.replace(self, params=jax.tree_util.tree_map(cast, self.params))
