"""Rotary position embeddings: the inverse frequencies, the cos/sin tables (1D, multimodal M-RoPE in sections
or interleaved, axial 2D) and their application to queries and keys with the rotate-half convention.

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


def interleaved_axes(sections: Sequence[int], n: int) -> np.ndarray:
    """The position axis (0 temporal, 1 height, 2 width) each of ``n`` frequencies takes in the interleaved
    multimodal layout (Qwen3-VL's): frequency ``j`` follows the height when ``j % 3 == 1`` and ``j < 3 *
    sections[1]``, the width when ``j % 3 == 2`` and ``j < 3 * sections[2]``, the time otherwise. (n,) int."""
    if len(sections) != 3:
        raise ValueError(f"interleaved mrope sections must be three (t, h, w), got {list(sections)}")
    j = np.arange(n)
    axis = np.zeros(n, np.int64)
    axis[(j % 3 == 1) & (j < 3 * sections[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * sections[2])] = 2
    return axis


def interleaved_mrope_tables(
    positions: jax.Array, inv_freq: jax.Array, sections: Sequence[int]
) -> tuple[jax.Array, jax.Array]:
    """cos and sin of interleaved multimodal rotary positions, shaped ``positions.shape[1:] + (2 * len(inv_freq),)``.

    ``positions`` is (3, ...): temporal, height and width positions. Unlike :func:`mrope_tables`, whose sections
    are contiguous runs of frequencies, the height and width take every third frequency from the second and
    third on (``sections[1]`` and ``sections[2]`` of them) and the time the rest (:func:`interleaved_axes`), so
    every axis spans low and high frequencies; repeated twice along the last axis (the rotate-half layout).
    """
    if positions.shape[0] != 3:
        raise ValueError(f"positions must have 3 rows (t, h, w), got shape {positions.shape}")
    if sum(sections) != inv_freq.shape[0]:
        raise ValueError(f"mrope sections {list(sections)} must sum to {inv_freq.shape[0]} (head_dim // 2)")
    axis = interleaved_axes(sections, inv_freq.shape[0])
    freqs = angles(positions, inv_freq)  # (3, ..., dim/2)
    freq = jnp.where(axis == 1, freqs[1], freqs[0])
    freq = jnp.where(axis == 2, freqs[2], freq)
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
