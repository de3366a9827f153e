"""The Qwen2 decoder of Qwen2.5-VL as pure functions of its parameters: token embedding, image features
scattered at the image tokens, layers of grouped-query attention with multimodal rotary positions (M-RoPE),
RMSNorm and SwiGLU, and the output head; optionally over a key/value cache for generation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn.models.blocks import attention, mlp, norm, rotary
from tokdyn.models.qwen2_5_vl.config import TextConfig


def embed(
    params: dict,
    input_ids: jax.Array,
    image_features: jax.Array | None,
    image_token_id: int,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Token embeddings (B, T, hidden) with the rows of ``image_features`` (tokens, hidden), in order, in place
    of the image tokens (row-major over the batch; with ``mask`` (B, T), only the unmasked ones)."""
    x = params["embed"][input_ids]
    if image_features is None:
        return x
    is_image = input_ids == image_token_id
    if mask is not None:
        is_image = is_image & mask.astype(bool)
    slot = jnp.cumsum(is_image.reshape(-1)).reshape(is_image.shape) - 1
    slot = jnp.clip(slot, 0, image_features.shape[0] - 1)
    return jnp.where(is_image[..., None], image_features.astype(x.dtype)[slot], x)


def rope_tables(cfg: TextConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos and sin (B, T, head_dim) of the (3, B, T) multimodal positions."""
    inv_freq = rotary.inverse_frequencies(cfg.head_dim, cfg.rope_theta)
    return rotary.mrope_tables(positions, inv_freq, cfg.mrope_section)


def layer(
    cfg: TextConfig,
    p: dict,
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    cache: tuple[jax.Array, jax.Array] | None = None,
    start: jax.Array | int = 0,
):
    """One decoder layer over ``x`` (B, T, hidden). With ``cache`` (keys, values), each (B, L, kv_heads,
    head_dim), the new keys and values are written at slot ``start`` and attention reads the whole cache;
    ``mask`` is (B, T, L) (or (B, T, T) without a cache). Returns the output and the updated cache."""
    b, t, _ = x.shape
    hd = cfg.head_dim
    h = norm.rms_norm(x, p["input_norm"], cfg.rms_norm_eps)
    a = p["attn"]
    q = mlp.linear(h, a["q"]).reshape(b, t, cfg.num_attention_heads, hd)
    k = mlp.linear(h, a["k"]).reshape(b, t, cfg.num_key_value_heads, hd)
    v = mlp.linear(h, a["v"]).reshape(b, t, cfg.num_key_value_heads, hd)
    q, k = rotary.apply(q, cos, sin), rotary.apply(k, cos, sin)
    if cache is not None:
        ck, cv = cache
        k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, start, 0, 0))
        v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, start, 0, 0))
        cache = (k, v)
    out = attention.attend(q, k, v, mask).reshape(b, t, -1)
    x = x + mlp.linear(out, a["o"])
    x = x + mlp.gated_mlp(norm.rms_norm(x, p["post_norm"], cfg.rms_norm_eps), p["mlp"], cfg.hidden_act)
    return x, cache


def head(cfg: TextConfig, params: dict, x: jax.Array) -> jax.Array:
    """The final norm and the output head: logits (..., vocab) in ``x``'s dtype."""
    x = norm.rms_norm(x, params["norm"], cfg.rms_norm_eps)
    if cfg.tie_word_embeddings:
        return jnp.matmul(x, params["embed"].T)
    return mlp.linear(x, params["lm_head"])


def decode(
    cfg: TextConfig,
    params: dict,
    x: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    cache: tuple[jax.Array, jax.Array] | None = None,
    start: jax.Array | int = 0,
):
    """The decoder over embeddings ``x`` (B, T, hidden) at (3, B, T) ``positions`` under ``mask``: the hidden
    states after the last layer (before the final norm) and the updated cache (None without one).

    The layers are scanned (``params["layers"]`` stacked along a leading layer axis); ``cache`` is (keys,
    values), each (layers, B, L, kv_heads, head_dim)."""
    cos, sin = rope_tables(cfg, positions)

    def step(x, layer_and_cache):
        p, c = layer_and_cache
        return layer(cfg, p, x, cos, sin, mask, c, start)

    return jax.lax.scan(step, x, (params["layers"], cache))
