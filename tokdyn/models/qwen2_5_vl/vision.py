"""The Qwen2.5-VL vision tower as a pure function of its parameters: the 3D patch embedding, 2D rotary
positions, blocks of windowed or full attention (RMSNorm, SwiGLU), and the merger of 2x2 patches.

:func:`plan` does the index arithmetic on the host from ``image_grid_thw`` (it fixes the shapes);
:func:`encode` is the traced part (:func:`patch_features`, the blocks, then :func:`merge`, the merger).
Attention within windows and frames is :mod:`tokdyn.models.blocks.attention`'s (:class:`Segments`,
:func:`segments_of` and :func:`attend_within` are its names).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import mlp, norm, rotary
from tokdyn.models.blocks.attention import Segments, attend_within, segments_of
from tokdyn.models.qwen2_5_vl import params as params_lib
from tokdyn.models.qwen2_5_vl import positions
from tokdyn.models.qwen2_5_vl.config import VisionConfig

__all__ = [
    "NORM_EPS",
    "Plan",
    "Segments",
    "attend_within",
    "block",
    "encode",
    "merge",
    "patch_features",
    "plan",
    "segments_of",
]

NORM_EPS = 1e-6


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Plan:
    """The vision tower's index arrays for one ``image_grid_thw``.

    Attributes:
        order: (patches,) the patches in window order (windows of merged tokens, 4 patches each kept together).
        restore: (tokens,) the merged tokens back from window order to ``pixel_values``' order.
        positions: (patches, 2) rows and columns of the patches, in window order.
        windows: the windows (in window order) the windowed blocks attend within.
        frames: the frames (in window order, which keeps each frame together) full-attention blocks attend within.
    """

    order: jax.Array
    restore: jax.Array
    positions: jax.Array
    windows: Segments
    frames: Segments


def plan(cfg: VisionConfig, grid) -> Plan:
    """The :class:`Plan` of ``grid`` (``image_grid_thw``), computed on the host."""
    merge = cfg.spatial_merge_size
    grid = positions.check_grid(grid, merge)
    unit = merge * merge
    window_index, lengths = positions.window_order(grid, merge, cfg.window_size, cfg.patch_size)
    order = (window_index[:, None] * unit + np.arange(unit)[None]).reshape(-1)
    pos = positions.vision_positions(grid, merge)[order]
    return Plan(
        order=jnp.asarray(order, jnp.int32),
        restore=jnp.asarray(np.argsort(window_index), jnp.int32),
        positions=jnp.asarray(pos, jnp.int32),
        windows=segments_of(lengths),
        frames=segments_of(positions.frame_lengths(grid)),
    )


def block(cfg: VisionConfig, p: dict, x: jax.Array, cos: jax.Array, sin: jax.Array, seg: Segments) -> jax.Array:
    """One vision block over ``x`` (patches, hidden): attention within the segments ``seg``, then the MLP."""
    n = x.shape[0]
    h = norm.rms_norm(x, p["norm1"], NORM_EPS)
    qkv = mlp.linear(h, p["attn"]["qkv"]).reshape(n, 3, cfg.num_heads, cfg.head_dim)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    q = rotary.apply(q, cos, sin, float32=True)
    k = rotary.apply(k, cos, sin, float32=True)
    out = attend_within(q, k, v, seg)
    x = x + mlp.linear(out.reshape(n, -1), p["attn"]["proj"])
    return x + mlp.gated_mlp(norm.rms_norm(x, p["norm2"], NORM_EPS), p["mlp"], cfg.hidden_act)


def patch_features(cfg: VisionConfig, params: dict, pixel_values: jax.Array, plan_: Plan) -> jax.Array:
    """The last block's output (patches, hidden) of ``pixel_values`` (patches, patch_dim), in window order
    (``plan_.order``): the residual stream the merger reads."""
    dtype = params["patch_embed"]["kernel"].dtype
    x = jnp.matmul(pixel_values.astype(dtype), params["patch_embed"]["kernel"])
    x = x[plan_.order]
    inv_freq = rotary.inverse_frequencies(cfg.head_dim // 2, cfg.rope_theta)
    cos, sin = rotary.axial_tables(plan_.positions, inv_freq)
    for (full, _), run in zip(params_lib.block_runs(cfg), params["blocks"]):
        seg = plan_.frames if full else plan_.windows
        x, _ = jax.lax.scan(lambda x, p: (block(cfg, p, x, cos, sin, seg), None), x, run)
    return x


def merge(cfg: VisionConfig, params: dict, x: jax.Array, plan_: Plan) -> jax.Array:
    """The merger over :func:`patch_features` ``x`` (window order): each ``spatial_merge_size**2`` patches'
    features normalised, concatenated and mapped to one image feature, in the order of the image tokens."""
    merger = params["merger"]
    x = norm.rms_norm(x, merger["norm"], NORM_EPS).reshape(-1, cfg.hidden_size * cfg.spatial_merge_size**2)
    x = mlp.linear(jax.nn.gelu(mlp.linear(x, merger["fc1"]), approximate=False), merger["fc2"])
    return x[plan_.restore]


def encode(cfg: VisionConfig, params: dict, pixel_values: jax.Array, plan_: Plan) -> jax.Array:
    """Image features (tokens, out_hidden_size) of ``pixel_values`` (patches, patch_dim), in the order of the
    image tokens they replace: :func:`merge` of :func:`patch_features`."""
    return merge(cfg, params, patch_features(cfg, params, pixel_values, plan_), plan_)
