"""The stand-in's vision tower: each patch embedded linearly with its (row, column) place, LayerNorm-free,
then ``merge`` x ``merge`` neighbouring patches concatenated and projected to one image token.

Pixel rows come in the processor's order (blocks of ``merge`` x ``merge`` patches, row-major inside and
between blocks), so a token's patches are ``merge**2`` consecutive rows and the tokens come out in raster
order over the merged grid. :func:`plan` is the host side: each row's place in its image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Plan:
    """The tower's host-side arrays of one image grid.

    Attributes:
      place: (patches, 2) each pixel row's (row, column) in its image, scaled to [0, 1].
      cell: (patches,) each pixel row's index in raster order over the image's patches.
    """

    place: jax.Array
    cell: jax.Array


def check_grid(grid, merge: int) -> np.ndarray:
    """``grid`` as an (images, 3) int64 array of one-frame images whose sides are multiples of ``merge``."""
    arr = np.asarray(grid)
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"image_grid_thw must be an (images, 3) integer array, got shape {arr.shape}")
    if (arr[:, 0] != 1).any() or (arr[:, 1:] <= 0).any() or (arr[:, 1:] % merge).any():
        raise ValueError(f"image_grid_thw={arr.tolist()}: one frame an image, sides positive multiples of {merge}")
    return arr.astype(np.int64)


def plan(tower, grid) -> Plan:
    """The :class:`Plan` of the images of ``grid`` ((images, 3): 1, rows, columns of patches), in order."""
    arr = check_grid(grid, tower.merge)
    m = tower.merge
    places, cells = [], []
    for _, h, w in arr:
        r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        blocks = lambda a: a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)  # noqa: E731
        r, c = blocks(r), blocks(c)
        places.append(np.stack([r / max(h - 1, 1), c / max(w - 1, 1)], -1))
        cells.append(r * w + c)
    return Plan(np.concatenate(places).astype(np.float32), np.concatenate(cells).astype(np.int32))


def patch_features(tower, params: dict, pixel_values, plan: Plan) -> jax.Array:
    """(patches, width) each pixel row embedded: ``gelu(row @ w + b + place @ pos)``."""
    p = params["tower"]["patches"]
    x = jnp.asarray(pixel_values, p["w"].dtype)
    return jax.nn.gelu(x @ p["w"] + p["b"] + jnp.asarray(plan.place, p["w"].dtype) @ p["pos"])


def merge(tower, params: dict, x) -> jax.Array:
    """(tokens, hidden): each ``merge**2`` consecutive patch features concatenated and projected."""
    p = params["tower"]["merge"]
    return x.reshape(-1, tower.merge**2 * x.shape[-1]) @ p["w"] + p["b"]


def encode(tower, params: dict, pixel_values, plan: Plan) -> jax.Array:
    """The image tokens' features (tokens, hidden) of pixel rows (patches, patch_dim)."""
    return merge(tower, params, patch_features(tower, params, pixel_values, plan))
