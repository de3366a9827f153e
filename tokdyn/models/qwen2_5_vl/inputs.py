"""Qwen2.5-VL's inputs on the host and the images' features: :func:`check_inputs` (the arguments
``Qwen2_5_VLForConditionalGeneration`` takes, checked) and :func:`image_features` (the vision tower's
output), which the forward pass (:mod:`~tokdyn.models.qwen2_5_vl.model`), generation
(:mod:`tokdyn.models.vlm.generation`) and the ``apply`` adapter share."""

from __future__ import annotations

import jax
import numpy as np

from tokdyn.models.qwen2_5_vl import positions as positions_lib
from tokdyn.models.qwen2_5_vl import vision
from tokdyn.models.qwen2_5_vl.config import Config


def image_features(cfg: Config, params: dict, pixel_values: jax.Array, plan: vision.Plan) -> jax.Array:
    """The vision tower's features (image tokens, hidden) of ``pixel_values`` under ``plan``."""
    return vision.encode(cfg.vision, params["vision"], pixel_values, plan)


image_features_jit = jax.jit(image_features, static_argnums=0)
""":func:`image_features`, compiled (per configuration and image grid)."""


def check_inputs(cfg: Config, input_ids, pixel_values, image_grid_thw, attention_mask):
    """The inputs as NumPy arrays, checked: ValueError naming the argument when one is malformed, or when
    ``input_ids`` hold the video placeholder token (video input is not supported)."""
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be a (batch, length) integer array, got shape {ids.shape} {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.text.vocab_size):
        raise ValueError(f"input_ids must lie in [0, {cfg.text.vocab_size}), got [{ids.min()}, {ids.max()}]")
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {mask.shape}; input_ids has {ids.shape}")
    mask = mask.astype(bool)
    video = np.argwhere((ids == cfg.video_token_id) & mask)
    if len(video):
        row, col = video[0]
        raise ValueError(
            f"input_ids hold the video placeholder token (id {cfg.video_token_id}, <|video_pad|>) at row {row}, "
            f"position {col}: video input is not supported; give images (<|image_pad|>) or text"
        )
    n_image = int(((ids == cfg.image_token_id) & mask).sum())
    if (pixel_values is None) != (image_grid_thw is None):
        raise ValueError("pixel_values and image_grid_thw go together: give both or neither")
    grid = None
    if pixel_values is not None:
        grid = positions_lib.check_grid(image_grid_thw, cfg.vision.spatial_merge_size)
        shape = tuple(np.shape(pixel_values))
        patches = int(grid.prod(axis=1).sum())
        if shape != (patches, cfg.vision.patch_dim):
            raise ValueError(
                f"pixel_values has shape {shape}; image_grid_thw={grid.tolist()} needs ({patches}, "
                f"{cfg.vision.patch_dim})"
            )
        tokens = patches // cfg.vision.spatial_merge_size**2
        if tokens != n_image:
            raise ValueError(f"input_ids hold {n_image} image tokens; the images make {tokens} (image_grid_thw)")
    elif n_image:
        raise ValueError(f"input_ids hold {n_image} image tokens (id {cfg.image_token_id}) but no pixel_values")
    return ids, mask, grid
