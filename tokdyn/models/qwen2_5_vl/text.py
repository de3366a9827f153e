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


def project(cfg: TextConfig, p: dict, x: jax.Array, cos: jax.Array, sin: jax.Array):
    """One decoder layer's queries (B, T, heads, head_dim), keys and values (B, T, kv_heads, head_dim) of its
    input ``x`` (B, T, hidden), queries and keys rotated by ``cos``/``sin`` (B, T, head_dim)."""
    b, t, _ = x.shape
    hd = cfg.head_dim
    h = norm.rms_norm(x, p["input_norm"], cfg.rms_norm_eps)
    a = p["attn"]
    q = mlp.linear(h, a["q"]).reshape(b, t, cfg.num_attention_heads, hd)
    k = mlp.linear(h, a["k"]).reshape(b, t, cfg.num_key_value_heads, hd)
    v = mlp.linear(h, a["v"]).reshape(b, t, cfg.num_key_value_heads, hd)
    return rotary.apply(q, cos, sin), rotary.apply(k, cos, sin), v


def finish(cfg: TextConfig, p: dict, x: jax.Array, attended: jax.Array) -> jax.Array:
    """The rest of a decoder layer after attention: the output projection of ``attended`` (B, T, heads,
    head_dim) added to the layer's input ``x`` (B, T, hidden), then the gated MLP's residual."""
    b, t, _ = x.shape
    x = x + mlp.linear(attended.reshape(b, t, -1), p["attn"]["o"])
    return x + mlp.gated_mlp(norm.rms_norm(x, p["post_norm"], cfg.rms_norm_eps), p["mlp"], cfg.hidden_act)


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
    q, k, v = project(cfg, p, x, cos, sin)
    if cache is not None:
        ck, cv = cache
        k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, start, 0, 0))
        v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, start, 0, 0))
        cache = (k, v)
    return finish(cfg, p, x, attention.attend(q, k, v, mask)), cache


def final_norm(cfg: TextConfig, params: dict, x: jax.Array) -> jax.Array:
    """The final RMSNorm of the last layer's output ``x`` (..., hidden): the hidden state Hugging Face
    returns as the last of ``hidden_states``."""
    return norm.rms_norm(x, params["norm"], cfg.rms_norm_eps)


def output_head(cfg: TextConfig, params: dict, normed: jax.Array) -> jax.Array:
    """The output head alone: logits (..., vocab) of final-norm states ``normed`` (..., hidden)."""
    if cfg.tie_word_embeddings:
        return jnp.matmul(normed, params["embed"].T)
    return mlp.linear(normed, params["lm_head"])


def head(cfg: TextConfig, params: dict, x: jax.Array) -> jax.Array:
    """The final norm and the output head: logits (..., vocab) in ``x``'s dtype."""
    return output_head(cfg, params, final_norm(cfg, params, x))


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


def attend_grouped(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """:func:`tokdyn.models.blocks.attention.attend` of queries (B, T, heads, head_dim) over keys and values
    (B, L, kv_heads, head_dim) under ``mask`` (B, T, L), each group of query heads that shares a key/value head
    passed as that head's extra queries (B, T x group, kv_heads, head_dim), so that the keys and values are
    read as they are, never repeated per query head. Equal to ``attend(q, k, v, mask)``."""
    b, t, h, d = q.shape
    hkv = k.shape[2]
    g = h // hkv
    if g == 1:
        return attention.attend(q, k, v, mask)
    qg = q.reshape(b, t, hkv, g, d).transpose(0, 1, 3, 2, 4).reshape(b, t * g, hkv, d)
    out = attention.attend(qg, k, v, jnp.repeat(mask, g, axis=1))  # (B, T x group, kv_heads, head_dim)
    return out.reshape(b, t, g, hkv, d).transpose(0, 1, 3, 2, 4).reshape(b, t, h, d)


def new_cache(cfg: TextConfig, batch: int, length: int, dtype) -> tuple[jax.Array, jax.Array]:
    """An empty key/value cache for :func:`decode_cached`: (keys, values), each (layers, B, L, kv_heads,
    head_dim) zeros of ``dtype``."""
    shape = (cfg.num_hidden_layers, batch, length, cfg.num_key_value_heads, cfg.head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def decode_cached(
    cfg: TextConfig,
    params: dict,
    x: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    cache: tuple[jax.Array, jax.Array],
    start: jax.Array | int,
):
    """The decoder over ``x`` (B, T, hidden) at (3, B, T) ``positions`` with the key/value ``cache`` from
    :func:`new_cache`: each layer writes its T new keys and values at slots ``start`` .. ``start + T - 1`` and
    attends over the whole cache under ``mask`` (B, T, L). Returns the last layer's output (before the final
    norm) and the cache.

    Unlike :func:`decode` (which takes the cache as the scanned input and returns a new one), the cache is
    carried through the scan over layers and updated in place, so one step holds one copy of it and writes
    only the new slots; attention reads the grouped keys and values as they are (:func:`attend_grouped`)."""
    cos, sin = rope_tables(cfg, positions)

    def step(carry, p_i):
        x, ck, cv = carry
        p, i = p_i
        q, k, v = project(cfg, p, x, cos, sin)
        ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype)[None], (i, 0, start, 0, 0))
        cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype)[None], (i, 0, start, 0, 0))
        keys = jax.lax.dynamic_index_in_dim(ck, i, keepdims=False)  # (B, L, kv_heads, head_dim)
        values = jax.lax.dynamic_index_in_dim(cv, i, keepdims=False)
        return (finish(cfg, p, x, attend_grouped(q, keys, values, mask)), ck, cv), None

    layers = jnp.arange(cfg.num_hidden_layers)
    (x, ck, cv), _ = jax.lax.scan(step, (x, *cache), (params["layers"], layers))
    return x, (ck, cv)
