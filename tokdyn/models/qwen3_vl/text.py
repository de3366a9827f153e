"""The Qwen3 decoder of Qwen3-VL as pure functions of its parameters: token embedding, image features scattered
at the image tokens, layers of grouped-query attention (each head's queries and keys RMS-normalised) with
interleaved multimodal rotary positions (M-RoPE), RMSNorm and SwiGLU, the deepstack features added to the
first layers' outputs at the image tokens, and the output head; optionally over a key/value cache.

Deepstack, as the decoder takes it: ``deepstack`` is None or an array (n_deep, B, T, hidden) for the T tokens
of the call, each layer's features already scattered at the image tokens and zeros elsewhere
(:func:`deepstack_embeddings`); ``deepstack[i]`` is added to the output of layer ``i`` for ``i < n_deep``. A
prompt prefilled in chunks passes each chunk its slice along T (``deepstack[:, :, a:b]``); a step after the
prompt holds no image token and passes None. A span of layers that starts at layer ``s`` (a decoder whose
``params["layers"]`` holds layers ``s`` on) passes ``deepstack[s:]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn.models.blocks import attention, mlp, norm, rotary
from tokdyn.models.qwen3_vl.config import TextConfig


def _scatter(input_ids: jax.Array, rows: jax.Array, image_token_id: int, mask, base: jax.Array) -> jax.Array:
    """``base`` (..., B, T, D) with the rows of ``rows`` (..., tokens, D), in order, at the image tokens of
    ``input_ids`` (B, T) (row-major over the batch; with ``mask`` (B, T), only the unmasked ones)."""
    if rows.shape[-2] == 0:
        return base
    is_image = input_ids == image_token_id
    if mask is not None:
        is_image = is_image & mask.astype(bool)
    slot = jnp.cumsum(is_image.reshape(-1)).reshape(is_image.shape) - 1
    slot = jnp.clip(slot, 0, rows.shape[-2] - 1)
    return jnp.where(is_image[..., None], jnp.take(rows, slot, axis=rows.ndim - 2).astype(base.dtype), base)


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
    return _scatter(input_ids, image_features, image_token_id, mask, x)


def deepstack_embeddings(
    input_ids: jax.Array, deepstack_features: jax.Array, image_token_id: int, mask: jax.Array | None = None
) -> jax.Array:
    """The deepstack features (n_deep, tokens, hidden) scattered at the image tokens of ``input_ids`` (B, T) as
    :func:`embed` scatters the image features, zeros elsewhere: (n_deep, B, T, hidden), the ``deepstack``
    argument of :func:`decode` and :func:`decode_cached`."""
    n, _, d = deepstack_features.shape
    base = jnp.zeros((n, *input_ids.shape, d), deepstack_features.dtype)
    return _scatter(input_ids, deepstack_features, image_token_id, mask, base)


def rope_tables(cfg: TextConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos and sin (B, T, head_dim) of the (3, B, T) multimodal positions, their frequencies interleaved."""
    inv_freq = rotary.inverse_frequencies(cfg.head_dim, cfg.rope_theta)
    return rotary.interleaved_mrope_tables(positions, inv_freq, cfg.mrope_section)


def project(cfg: TextConfig, p: dict, x: jax.Array, cos: jax.Array, sin: jax.Array):
    """One decoder layer's queries (B, T, heads, head_dim), keys and values (B, T, kv_heads, head_dim) of its
    input ``x`` (B, T, hidden): each head's queries and keys RMS-normalised, then rotated by ``cos``/``sin``
    (B, T, head_dim)."""
    b, t, _ = x.shape
    hd = cfg.head_dim
    h = norm.rms_norm(x, p["input_norm"], cfg.rms_norm_eps)
    a = p["attn"]
    q = norm.rms_norm(mlp.linear(h, a["q"]).reshape(b, t, cfg.num_attention_heads, hd), a["q_norm"], cfg.rms_norm_eps)
    k = norm.rms_norm(mlp.linear(h, a["k"]).reshape(b, t, cfg.num_key_value_heads, hd), a["k_norm"], cfg.rms_norm_eps)
    v = mlp.linear(h, a["v"]).reshape(b, t, cfg.num_key_value_heads, hd)
    return rotary.apply(q, cos, sin), rotary.apply(k, cos, sin), v


def finish(cfg: TextConfig, p: dict, x: jax.Array, attended: jax.Array) -> jax.Array:
    """The rest of a decoder layer after attention: the output projection of ``attended`` (B, T, heads,
    head_dim) added to the layer's input ``x`` (B, T, hidden), then the gated MLP's residual."""
    b, t, _ = x.shape
    x = x + mlp.linear(attended.reshape(b, t, -1), p["attn"]["o"])
    return x + mlp.gated_mlp(norm.rms_norm(x, p["post_norm"], cfg.rms_norm_eps), p["mlp"], cfg.hidden_act)


def layer(cfg: TextConfig, p: dict, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array) -> jax.Array:
    """One decoder layer over ``x`` (B, T, hidden) under ``mask`` (B, T, T): True where a query may attend a
    key."""
    q, k, v = project(cfg, p, x, cos, sin)
    return finish(cfg, p, x, attention.attend(q, k, v, mask))


def add_deepstack(x: jax.Array, deepstack: jax.Array | None, i: jax.Array) -> jax.Array:
    """``x`` (B, T, hidden), the output of layer ``i`` (traced), plus ``deepstack[i]`` when ``i`` is below
    ``deepstack``'s length (exactly ``x`` otherwise, and where the features are zeros)."""
    if deepstack is None or deepstack.shape[0] == 0:
        return x
    n = deepstack.shape[0]
    d = jax.lax.dynamic_index_in_dim(deepstack, jnp.minimum(i, n - 1), keepdims=False).astype(x.dtype)
    return x + jnp.where(i < n, d, jnp.zeros((), x.dtype))


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
    deepstack: jax.Array | None = None,
) -> tuple[jax.Array, None]:
    """The decoder over embeddings ``x`` (B, T, hidden) at (3, B, T) ``positions`` under ``mask`` (B, T, T),
    with ``deepstack`` (None, or (n_deep, B, T, hidden): :func:`deepstack_embeddings`) added after the first
    layers. Returns the hidden states after the last layer (before the final norm) and None (no cache), as
    every family's ``decode`` does.

    The layers are scanned (``params["layers"]`` stacked along a leading layer axis; fewer layers than the
    configuration's run a span of the decoder)."""
    cos, sin = rope_tables(cfg, positions)

    def step(x, p_i):
        p, i = p_i
        return add_deepstack(layer(cfg, p, x, cos, sin, mask), deepstack, i), None

    n = jax.tree_util.tree_leaves(params["layers"])[0].shape[0]
    x, _ = jax.lax.scan(step, x, (params["layers"], jnp.arange(n)))
    return x, None


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
    deepstack: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The decoder over ``x`` (B, T, hidden) at (3, B, T) ``positions`` with the key/value ``cache`` from
    :func:`new_cache`: each layer writes its T new keys and values at slots ``start`` .. ``start + T - 1`` and
    attends over the whole cache under ``mask`` (B, T, L); ``deepstack`` (None, or (n_deep, B, T, hidden): this
    call's T tokens' slice of :func:`deepstack_embeddings`) is added after the first layers. Returns the last
    layer's output (before the final norm) and the cache.

    The cache is carried through the scan over layers and updated in place, so one step holds one copy of it
    and writes only the new slots."""
    cos, sin = rope_tables(cfg, positions)

    def step(carry, p_i):
        x, ck, cv = carry
        p, i = p_i
        q, k, v = project(cfg, p, x, cos, sin)
        ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype)[None], (i, 0, start, 0, 0))
        cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype)[None], (i, 0, start, 0, 0))
        keys = jax.lax.dynamic_index_in_dim(ck, i, keepdims=False)  # (B, L, kv_heads, head_dim)
        values = jax.lax.dynamic_index_in_dim(cv, i, keepdims=False)
        x = finish(cfg, p, x, attention.attend(q, keys, values, mask))
        return (add_deepstack(x, deepstack, i), ck, cv), None

    layers = jnp.arange(cfg.num_hidden_layers)
    (x, ck, cv), _ = jax.lax.scan(step, (x, *cache), (params["layers"], layers))
    return x, (ck, cv)
