"""The stand-in's decoder as pure functions of ``params["lm"]``: pre-norm blocks (RMSNorm, grouped-query
attention with 1D rotary positions, a gated SiLU MLP), the final RMSNorm and an untied unembedding.

Positions arrive as the loop hands them, (3, B, T); the stand-in's are one-dimensional, its three rows equal,
and it reads the first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn.models.blocks import attention, norm, rotary


def rope(dec, positions) -> tuple:
    """cos and sin (B, T, head_width) of the first row of the (3, B, T) ``positions``."""
    inv = rotary.inverse_frequencies(dec.head_width, dec.rope_base)
    ang = rotary.angles(positions[0], inv)
    ang = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(ang), jnp.sin(ang)


def project(dec, p: dict, x, cos, sin) -> tuple:
    """A block's rotated queries (B, T, heads, hw), keys and values (B, T, kv_heads, hw) of its input ``x``."""
    b, t, _ = x.shape
    hw = dec.head_width
    h = norm.rms_norm(x, p["ln_attn"], dec.eps)
    q = (h @ p["q"]).reshape(b, t, dec.heads, hw)
    k = (h @ p["k"]).reshape(b, t, dec.kv_heads, hw)
    v = (h @ p["v"]).reshape(b, t, dec.kv_heads, hw)
    return rotary.apply(q, cos, sin), rotary.apply(k, cos, sin), v


def finish(dec, p: dict, x, attended) -> jax.Array:
    """The block's output from its input ``x`` and the attention's output (B, T, heads, hw)."""
    b, t = x.shape[:2]
    x = x + attended.reshape(b, t, -1) @ p["o"]
    h = norm.rms_norm(x, p["ln_ffn"], dec.eps)
    return x + (jax.nn.silu(h @ p["gate"]) * (h @ p["up"])) @ p["down"]


def block(dec, p: dict, x, cos, sin, mask) -> jax.Array:
    """One block over ``x`` (B, T, D) under ``mask`` (B, T, T)."""
    q, k, v = project(dec, p, x, cos, sin)
    return finish(dec, p, x, attention.attend(q, k, v, mask))


def weights_at(dec, p: dict, x, cos, sin, mask, rows) -> jax.Array:
    """The softmax weights (B, heads, R, T), float32, of one block's attention at query ``rows``."""
    q, k, _ = project(dec, p, x, cos, sin)
    g = dec.heads // dec.kv_heads
    k = jnp.repeat(k, g, axis=2)  # query head h reads key head h // g
    s = jnp.einsum("bqhd,bthd->bhqt", q[:, rows], k).astype(jnp.float32) * dec.head_width**-0.5
    s = jnp.where(mask[:, None, rows], s, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(s, axis=-1)


def layer(lm: dict, i: int) -> dict:
    """Block ``i``'s parameters."""
    return jax.tree_util.tree_map(lambda a: a[i], lm["blocks"])


def run(dec, lm: dict, x, positions, mask, start: int = 0, stop: int | None = None) -> jax.Array:
    """Blocks ``start`` to ``stop - 1`` over ``x`` (B, T, D) at (3, B, T) ``positions`` under ``mask``
    (B, T, T): a scan over that slice of the stacked blocks."""
    stop = dec.depth if stop is None else stop
    if stop <= start:
        return x
    cos, sin = rope(dec, positions)
    part = jax.tree_util.tree_map(lambda a: a[start:stop], lm["blocks"])
    x, _ = jax.lax.scan(lambda h, p: (block(dec, p, h, cos, sin, mask), None), x, part)
    return x


def final_norm(dec, lm: dict, h) -> jax.Array:
    """The final RMSNorm."""
    return norm.rms_norm(h, lm["ln_out"], dec.eps)


def unembed(dec, lm: dict, normed) -> jax.Array:
    """Logits of final-norm states."""
    return normed @ lm["unembed"]


def new_cache(dec, batch: int, length: int, dtype) -> dict:
    """An empty cache: ``{"keys", "values"}``, each (depth, B, length, kv_heads, hw)."""
    shape = (dec.depth, batch, length, dec.kv_heads, dec.head_width)
    return {"keys": jnp.zeros(shape, dtype), "values": jnp.zeros(shape, dtype)}


def decode_cached(dec, lm: dict, x, positions, mask, cache: dict, start):
    """Every block over ``x`` (B, T, D) with the cache, writing slots ``start`` onwards; ``mask`` (B, T,
    length). Returns the last block's output and the cache."""
    cos, sin = rope(dec, positions)

    def step(carry, pi):
        h, keys, values = carry
        p, i = pi
        q, k, v = project(dec, p, h, cos, sin)
        keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype)[None], (i, 0, start, 0, 0))
        values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype)[None], (i, 0, start, 0, 0))
        att = attention.attend(q, keys[i], values[i], mask)
        return (finish(dec, p, h, att), keys, values), None

    (x, keys, values), _ = jax.lax.scan(
        step, (x, cache["keys"], cache["values"]), (lm["blocks"], jnp.arange(dec.depth))
    )
    return x, {"keys": keys, "values": values}
