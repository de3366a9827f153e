"""RMSNorm as the Qwen and Llama families compute it: the mean square in float32, the weight after the cast back."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Normalise ``x`` over its last axis by its root mean square and scale by ``weight``.

    The statistics are taken in float32 whatever ``x``'s dtype; the normalised values are cast back to
    ``x``'s dtype before the weight multiplies them (so bfloat16 inputs round where the reference rounds).
    """
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = (x32 * jax.lax.rsqrt(variance + eps)).astype(dtype)
    return (weight * normed).astype(jnp.promote_types(weight.dtype, dtype))
