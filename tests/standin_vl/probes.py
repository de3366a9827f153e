"""Read-outs of the stand-in's tower: its patch embeddings and its merged tokens, both in raster order."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from standin_vl import vision


def raster_order(cfg, grid) -> np.ndarray:
    """(patches,) the pixel row of each patch of a one-image ``grid``, in raster order."""
    arr = vision.check_grid(grid, cfg.vision.merge)
    if arr.shape[0] != 1:
        raise ValueError(f"grid must be one image, got {arr.tolist()}")
    return np.argsort(vision.plan(cfg.vision, arr).cell, kind="stable")


def vision_taps(cfg, params, pixel_values, plan, raster) -> dict:
    """``{"patches": (h * w, width), "merged": (tokens, hidden)}`` of one image, each in raster order."""
    x = vision.patch_features(cfg.vision, params, pixel_values, plan)
    return {"patches": x[jnp.asarray(raster)], "merged": vision.merge(cfg.vision, params, x)}
