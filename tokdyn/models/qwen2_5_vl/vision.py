"""The Qwen2.5-VL vision tower as a pure function of its parameters: the 3D patch embedding, 2D rotary
positions, blocks of windowed or full attention (RMSNorm, SwiGLU), and the merger of 2x2 patches.

:func:`plan` does the index arithmetic on the host from ``image_grid_thw`` (it fixes the shapes);
:func:`encode` is the traced part.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models.blocks import attention, mlp, norm, rotary
from tokdyn.models.qwen2_5_vl import positions
from tokdyn.models.qwen2_5_vl.config import VisionConfig

NORM_EPS = 1e-6


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Plan:
    """The vision tower's index arrays for one ``image_grid_thw``.

    Attributes:
        order: (patches,) the patches in window order (windows of merged tokens, 4 patches each kept together).
        restore: (tokens,) the merged tokens back from window order to ``pixel_values``' order.
        positions: (patches,) x 2 rows and columns of the patches, in window order.
        window_segment: (patches,) the window each patch (in window order) attends within.
        full_segment: (patches,) the frame each patch (in window order) attends within in full-attention blocks.
    """

    order: jax.Array
    restore: jax.Array
    positions: jax.Array
    window_segment: jax.Array
    full_segment: jax.Array


def plan(cfg: VisionConfig, grid) -> Plan:
    """The :class:`Plan` of ``grid`` (``image_grid_thw``), computed on the host."""
    merge = cfg.spatial_merge_size
    grid = positions.check_grid(grid, merge)
    unit = merge * merge
    window_index, lengths = positions.window_order(grid, merge, cfg.window_size, cfg.patch_size)
    order = (window_index[:, None] * unit + np.arange(unit)[None]).reshape(-1)
    pos = positions.vision_positions(grid, merge)[order]
    full = positions.segments(positions.frame_lengths(grid))
    # window order keeps every frame's patches together, so frame segments by position are unchanged
    return Plan(
        order=jnp.asarray(order, jnp.int32),
        restore=jnp.asarray(np.argsort(window_index), jnp.int32),
        positions=jnp.asarray(pos, jnp.int32),
        window_segment=jnp.asarray(positions.segments(lengths), jnp.int32),
        full_segment=jnp.asarray(full, jnp.int32),
    )


def block(cfg: VisionConfig, p: dict, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array) -> jax.Array:
    """One vision block over ``x`` (patches, hidden): attention within ``mask``'s segments, then the MLP."""
    n = x.shape[0]
    h = norm.rms_norm(x, p["norm1"], NORM_EPS)
    qkv = mlp.linear(h, p["attn"]["qkv"]).reshape(n, 3, cfg.num_heads, cfg.head_dim)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    q = rotary.apply(q, cos, sin, float32=True)
    k = rotary.apply(k, cos, sin, float32=True)
    out = attention.attend(q[None], k[None], v[None], mask[None])[0]
    x = x + mlp.linear(out.reshape(n, -1), p["attn"]["proj"])
    return x + mlp.gated_mlp(norm.rms_norm(x, p["norm2"], NORM_EPS), p["mlp"], cfg.hidden_act)


def encode(cfg: VisionConfig, params: dict, pixel_values: jax.Array, plan_: Plan) -> jax.Array:
    """Image features (tokens, out_hidden_size) of ``pixel_values`` (patches, patch_dim), in the order of the
    image tokens they replace."""
    dtype = params["patch_embed"]["kernel"].dtype
    x = jnp.matmul(pixel_values.astype(dtype), params["patch_embed"]["kernel"])
    x = x[plan_.order]
    inv_freq = rotary.inverse_frequencies(cfg.head_dim // 2, cfg.rope_theta)
    cos, sin = rotary.axial_tables(plan_.positions, inv_freq)
    window_mask = plan_.window_segment[:, None] == plan_.window_segment[None, :]
    full_mask = plan_.full_segment[:, None] == plan_.full_segment[None, :]
    for i, p in enumerate(params["blocks"]):
        mask = full_mask if i in cfg.fullatt_block_indexes else window_mask
        x = block(cfg, p, x, cos, sin, mask)
    merger = params["merger"]
    x = norm.rms_norm(x, merger["norm"], NORM_EPS).reshape(-1, cfg.hidden_size * cfg.spatial_merge_size**2)
    x = mlp.linear(jax.nn.gelu(mlp.linear(x, merger["fc1"]), approximate=False), merger["fc2"])
    return x[plan_.restore]
