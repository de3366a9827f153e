"""Rotary position embeddings: the inverse frequencies, the cos/sin tables (1D, multimodal M-RoPE, axial 2D)
and their application to queries and keys with the rotate-half convention.

Angles are computed in float32 as in the reference implementations; :func:`apply` rotates in the dtype of
its input unless told to rotate in float32 (the Qwen2.5-VL vision tower does).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def inverse_frequencies(dim: int, theta: float) -> jax.Array:
    """``1 / theta ** (arange(0, dim, 2) / dim)`` in float32: ``dim // 2`` frequencies."""
    exponents = jnp.arange(0, dim, 2, dtype=jnp.float32) / jnp.float32(dim)
    return 1.0 / (jnp.float32(theta) ** exponents)


def angles(positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotation angles ``positions[..., None] * inv_freq`` in float32."""
    return positions.astype(jnp.float32)[..., None] * inv_freq


def mrope_tables(positions: jax.Array, inv_freq: jax.Array, sections: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """cos and sin of multimodal rotary positions (M-RoPE), shaped ``positions.shape[1:] + (2 * len(inv_freq),)``.

    ``positions`` is (3, ...): temporal, height and width positions. The frequencies are split into
    ``sections`` (summing to ``len(inv_freq)``); section ``i`` takes its angles from axis ``i % 3``, and the
    result is repeated twice along the last axis (the rotate-half layout).
    """
    if positions.shape[0] != 3:
        raise ValueError(f"positions must have 3 rows (t, h, w), got shape {positions.shape}")
    if sum(sections) != inv_freq.shape[0]:
        raise ValueError(f"mrope sections {list(sections)} must sum to {inv_freq.shape[0]} (head_dim // 2)")
    freqs = angles(positions, inv_freq)  # (3, ..., dim/2)
    bounds = np.cumsum([0, *sections])
    parts = [freqs[i % 3, ..., bounds[i] : bounds[i + 1]] for i in range(len(sections))]
    freq = jnp.concatenate(parts, axis=-1)
    freq = jnp.concatenate([freq, freq], axis=-1)
    return jnp.cos(freq), jnp.sin(freq)


def axial_tables(positions: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos and sin of axial 2D rotary positions: ``positions`` (N, 2) rows and columns, the row angles then the
    column angles, repeated twice along the last axis: (N, 4 * len(inv_freq))."""
    freqs = angles(positions, inv_freq)  # (N, 2, f)
    freq = jnp.concatenate([freqs[:, 0], freqs[:, 1]], axis=-1)
    freq = jnp.concatenate([freq, freq], axis=-1)
    return jnp.cos(freq), jnp.sin(freq)


def rotate_half(x: jax.Array) -> jax.Array:
    """``[-x2, x1]`` for ``x = [x1, x2]`` split in halves along the last axis."""
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply(x: jax.Array, cos: jax.Array, sin: jax.Array, *, float32: bool = False) -> jax.Array:
    """Rotate ``x`` (..., heads, head_dim) by tables ``cos``/``sin`` (..., head_dim), broadcast over the heads.

    With ``float32`` the rotation is computed in float32 and cast back to ``x``'s dtype; otherwise the tables
    are cast to ``x``'s dtype first.
    """
    dtype = x.dtype
    cos, sin = cos[..., None, :], sin[..., None, :]
    if float32:
        x32 = x.astype(jnp.float32)
        return (x32 * cos + rotate_half(x32) * sin).astype(dtype)
    cos, sin = cos.astype(dtype), sin.astype(dtype)
    return x * cos + rotate_half(x) * sin
