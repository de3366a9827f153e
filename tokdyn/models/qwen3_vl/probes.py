"""Read-outs of Qwen3-VL's internals that its forward pass does not hand back, built from the public pieces of
:mod:`tokdyn.models.qwen3_vl`.

:func:`vision_taps` gives the vision tower's patch features twice, before and after the merger of 2x2
patches, both in raster order over their grids (row-major), so that a feature's index is its place in the
image; :func:`raster_order` is the host-side index arithmetic behind it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.qwen3_vl import positions, vision
from tokdyn.models.qwen3_vl.config import Config


def raster_order(cfg: Config, grid) -> np.ndarray:
    """(patches,) the row of ``pixel_values`` that holds each patch of a one-image ``grid`` ([[1, h, w]]), in
    raster order: entry ``r * w + c`` is the row of the patch at row ``r``, column ``c``.

    ``pixel_values`` keeps patches in blocks of ``spatial_merge_size`` x ``spatial_merge_size``
    (:func:`tokdyn.models.qwen3_vl.positions.vision_positions`); the merged tokens are already in raster
    order over the merged grid. A ValueError unless ``grid`` is one image of one frame.
    """
    merge = cfg.vision.spatial_merge_size
    arr = positions.check_grid(grid, merge)
    if arr.shape[0] != 1 or arr[0, 0] != 1:
        raise ValueError(f"grid must be one image of one frame, [[1, h, w]], got {arr.tolist()}")
    _, _, w = arr[0]
    rc = positions.vision_positions(arr, merge)  # (patches, 2) in pixel_values' order
    return np.argsort(rc[:, 0] * w + rc[:, 1], kind="stable")


def vision_taps(cfg: Config, params: dict, pixel_values: jax.Array, plan: vision.Plan, raster) -> dict:
    """The vision tower's features of one image, before and after the merger.

    Args:
      cfg: the model's configuration.
      params: the model's parameter tree (:mod:`tokdyn.models.qwen3_vl.params`).
      pixel_values: (patches, patch_dim) one image's rows, as the image processor makes them.
      plan: :func:`tokdyn.models.qwen3_vl.vision.plan` of the image's grid.
      raster: (patches,) :func:`raster_order` of the same grid.

    Returns:
      ``{"patches": (h * w, hidden_size), "merged": (h * w / merge**2, out_hidden_size)}``, each in raster
      order over its grid: ``patches`` the last vision block's output (the last of
      :func:`tokdyn.models.qwen3_vl.vision.streams`, the residual stream the merger's LayerNorm reads),
      ``merged`` the merger's output (:func:`tokdyn.models.qwen3_vl.vision.merge`), equal to the image features of
      :func:`tokdyn.models.qwen3_vl.inputs.image_features` (the features the decoder receives at its input; the
      deepstack features are left out). Traceable (``jit``, ``vmap`` over images of one grid, ``grad``).
    """
    x = vision.streams(cfg.vision, params["vision"], pixel_values, plan)[-1]  # pixel_values' order
    merged = vision.merge(cfg.vision, params["vision"]["merger"], x, postshuffle=False)
    return {"patches": x[jnp.asarray(raster)], "merged": merged}


__all__ = ["raster_order", "vision_taps"]
