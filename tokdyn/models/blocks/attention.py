"""Scaled dot-product attention with grouped key/value heads (GQA) and boolean masks.

The scores are computed in the inputs' dtype, the softmax in float32 and cast back, as the reference
implementations do. A masked score is the dtype's most negative finite value, never ``-inf``, so a query
whose every key is masked (a padding position) gets a uniform average instead of NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attend(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, scale: float | None = None
) -> jax.Array:
    """Attention of queries (B, Tq, H, D) over keys and values (B, Tk, Hkv, D), H a multiple of Hkv.

    ``mask`` broadcasts to (B, Tq, Tk) (or (B, H, Tq, Tk)); True where a query may attend a key. Query head
    ``h`` reads key/value head ``h // (H // Hkv)``. Returns (B, Tq, H, D).
    """
    b, tq, h, d = q.shape
    hkv = k.shape[2]
    if h % hkv:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({hkv})")
    if hkv != h:
        k = jnp.repeat(k, h // hkv, axis=2)
        v = jnp.repeat(v, h // hkv, axis=2)
    scale = d**-0.5 if scale is None else scale
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.asarray(scale, q.dtype)
    if mask is not None:
        if mask.ndim == 3:
            mask = mask[:, None]
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def causal_mask(query_positions: jax.Array, key_positions: jax.Array, key_valid: jax.Array) -> jax.Array:
    """(B, Tq, Tk) mask: key slot ``j`` visible to query slot ``i`` when ``j <= i`` in slot order and the key
    is valid. ``query_positions`` (B, Tq) and ``key_positions`` (Tk,) are slot indices, ``key_valid`` (B, Tk)."""
    return (key_positions[None, None, :] <= query_positions[:, :, None]) & key_valid[:, None, :]
