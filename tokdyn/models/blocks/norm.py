"""RMSNorm as the Qwen and Llama families compute it: the mean square in float32, the weight after the cast back;
and LayerNorm as PyTorch computes it (the vision towers of Qwen3-VL), in float32 throughout."""

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


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """Normalise ``x`` over its last axis by its mean and (biased) variance, then scale and shift.

    As ``torch.nn.LayerNorm`` computes it: the statistics, the normalisation and the affine map in float32
    whatever ``x``'s dtype, the result cast back to ``x``'s dtype once at the end.
    """
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    normed = (x32 - mean) * jax.lax.rsqrt(variance + eps)
    return (normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)
