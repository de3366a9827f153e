"""Per-pixel features of images (:func:`pixel_features`: position, colour, optional Fourier features
of the position), the tokens that token dynamics clusters, and the labels that pair with them
(:func:`flat_masks`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.data.clusters import float_dtype


def _check_images(images):
    if np.ndim(images) not in (3, 4) or np.shape(images)[-1] != 3:
        raise ValueError(f"images must have shape (H, W, 3) or (n, H, W, 3), got {np.shape(images)}")
    dtype = _checks.dtype_of(images)
    if dtype.kind != "f":
        raise TypeError(
            f"images must be floating point with values in [0, 1], got dtype {dtype} "
            "(convert 8-bit images with images / 255)"
        )
    if isinstance(images, np.ndarray):  # host data: values are free to check
        _checks.real("images", images, low=0.0, high=1.0)


def _check_features(images, *, position_scale, colour_scale, fourier_bands, dtype=None):
    float_dtype(dtype)
    _check_images(images)
    for name, value in (("position_scale", position_scale), ("colour_scale", colour_scale)):
        if np.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
        _checks.real(name, value, low=0.0, low_open=name == "colour_scale")  # position 0: colour alone
    _checks.positive_int("fourier_bands", fourier_bands, minimum=0)


@_checks.checked_jit(_check_features, static_argnames=("fourier_bands", "dtype"))
def pixel_features(
    images: jax.Array, *, position_scale=1.0, colour_scale=1.0, fourier_bands: int = 0, dtype=None
) -> jax.Array:
    """Per-pixel feature vectors of images: the tokens of token dynamics, one per pixel.

    For pixel (i, j) of an H x W image, with ``y = (2 i + 1) / H - 1`` and ``x = (2 j + 1) / W - 1``
    (the pixel centre mapped to [-1, 1]; a scene's ``position`` p maps to ``2 p - 1``), the features
    are, in order::

        position_scale * (y, x),  colour_scale * (r, g, b),
        position_scale * (sin(2^b pi y), sin(2^b pi x), cos(2^b pi y), cos(2^b pi x))  for b = 0 .. B-1

    so F = 5 + 4 B. Pixels are in row-major order (pixel (i, j) is row ``i * W + j``), as
    :func:`flat_masks` orders the labels.

    Args:
      images: (H, W, 3) or (n, H, W, 3) floating RGB in [0, 1] (values checked if a NumPy array).
      position_scale: >= 0, weight of the position features (0: colour alone; may be traced).
      colour_scale: > 0, weight of the colour features (may be traced).
      fourier_bands: B >= 0 (static).
      dtype: of the features (static; default JAX's default float, float64 under x64; computed
        in float32, then cast; float64 needs x64).

    Returns:
      (H*W, F) or (n, H*W, F) in ``dtype`` (JAX's default float by default).
    """
    H, W = images.shape[-3], images.shape[-2]
    lead = images.shape[:-3]
    y = (2.0 * jnp.arange(H, dtype=None) + 1.0) / H - 1.0
    x = (2.0 * jnp.arange(W, dtype=None) + 1.0) / W - 1.0
    pos = jnp.stack(jnp.meshgrid(y, x, indexing="ij"), axis=-1).reshape(H * W, 2)  # (HW, 2)
    parts = [pos]
    if fourier_bands:
        angle = (jnp.pi * 2.0 ** jnp.arange(fourier_bands, dtype=None))[:, None, None] * pos  # (B, HW, 2)
        parts.append(
            jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)  # (B, HW, 4)
            .transpose(1, 0, 2)
            .reshape(H * W, 4 * fourier_bands)
        )
    geometric = jnp.asarray(position_scale, jnp.float32) * jnp.concatenate(parts, axis=-1)  # (HW, 2 + 4B)
    colour = jnp.asarray(colour_scale, jnp.float32) * jnp.asarray(images, jnp.float32).reshape(*lead, H * W, 3)
    geometric = jnp.broadcast_to(geometric, (*lead, *geometric.shape))
    return jnp.concatenate([geometric[..., :2], colour, geometric[..., 2:]], axis=-1).astype(float_dtype(dtype))


def flat_masks(masks: jax.Array) -> jax.Array:
    """(..., H, W) integer masks -> (..., H*W) labels in the row-major pixel order of
    :func:`pixel_features` (a reshape; pure, traceable)."""
    if np.ndim(masks) < 2:
        raise ValueError(f"masks must have shape (..., H, W), got {np.shape(masks)}")
    dtype = _checks.dtype_of(masks)
    if dtype.kind not in "biu":
        raise TypeError(f"masks must be integer labels, got dtype {dtype}")
    shape = np.shape(masks)
    return jnp.reshape(masks, (*shape[:-2], shape[-2] * shape[-1]))
