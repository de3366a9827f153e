"""The Qwen3-VL vision tower as a pure function of its parameters: the 3D patch embedding, the learned position
embedding resampled to each image's grid, 2D rotary positions, blocks of full attention within each image
(LayerNorm, a plain MLP), the merger of 2x2 patches into the image features, and the deepstack mergers, which
map the residual stream after chosen blocks into features the decoder adds to its first layers' outputs.

:func:`plan` does the index arithmetic on the host from ``image_grid_thw`` (it fixes the shapes);
:func:`encode` is the traced part (:func:`embed_patches`, the blocks: :func:`streams`, :func:`merge` after the
last block and after each deepstack index).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tokdyn.models.blocks import attention, mlp, norm, rotary
from tokdyn.models.qwen3_vl import positions
from tokdyn.models.qwen3_vl.config import VisionConfig

NORM_EPS = 1e-6
"""Epsilon of the vision tower's LayerNorms (fixed in ``transformers``, not a configuration field)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Plan:
    """The vision tower's index arrays for one ``image_grid_thw``, in ``pixel_values``' order.

    Attributes:
        positions: (patches, 2) row and column of each patch (the 2D rotary positions).
        frames: the frames the blocks attend within (each image's one frame, for images).
        taps: (patches, 4) the rows of the learned position embedding each patch interpolates.
        weights: (patches, 4) float32 bilinear weights of those rows.
    """

    positions: jax.Array
    frames: attention.Segments
    taps: jax.Array
    weights: jax.Array


def plan(cfg: VisionConfig, grid) -> Plan:
    """The :class:`Plan` of ``grid`` (``image_grid_thw``), computed on the host; a ValueError when the grid is
    malformed (:func:`tokdyn.models.qwen3_vl.positions.check_grid`)."""
    merge = cfg.spatial_merge_size
    grid = positions.check_grid(grid, merge)
    taps, weights = positions.interpolation(grid, merge, cfg.grid_side)
    return Plan(
        positions=jnp.asarray(positions.vision_positions(grid, merge), jnp.int32),
        frames=attention.segments_of(positions.frame_lengths(grid)),
        taps=jnp.asarray(taps, jnp.int32),
        weights=jnp.asarray(weights, jnp.float32),
    )


def embed_patches(params: dict, pixel_values: jax.Array, plan_: Plan) -> jax.Array:
    """The patches' embeddings (patches, hidden): the patch embedding of ``pixel_values`` (patches,
    patch_dim) plus the learned position embedding interpolated at each patch (a weighted sum of four rows,
    in float32, cast to the embedding's dtype)."""
    p = params["patch_embed"]
    dtype = p["kernel"].dtype
    x = mlp.linear(pixel_values.astype(dtype), p)
    rows = params["pos_embed"][plan_.taps].astype(jnp.float32)  # (patches, 4, hidden)
    pos = jnp.sum(rows * plan_.weights[:, :, None], axis=1)
    return x + pos.astype(x.dtype)


def block(cfg: VisionConfig, p: dict, x: jax.Array, cos: jax.Array, sin: jax.Array, seg) -> jax.Array:
    """One vision block over ``x`` (patches, hidden): attention within the segments ``seg`` (queries and keys
    rotated in float32), then the MLP, each after a LayerNorm and added to the residual stream."""
    n = x.shape[0]
    h = norm.layer_norm(x, p["norm1"]["scale"], p["norm1"]["bias"], NORM_EPS)
    qkv = mlp.linear(h, p["attn"]["qkv"]).reshape(n, 3, cfg.num_heads, cfg.head_dim)
    q = rotary.apply(qkv[:, 0], cos, sin, float32=True)
    k = rotary.apply(qkv[:, 1], cos, sin, float32=True)
    out = attention.attend_within(q, k, qkv[:, 2], seg)
    x = x + mlp.linear(out.reshape(n, -1), p["attn"]["proj"])
    h = norm.layer_norm(x, p["norm2"]["scale"], p["norm2"]["bias"], NORM_EPS)
    return x + mlp.feed_forward(h, p["mlp"], cfg.hidden_act)


def merge(cfg: VisionConfig, p: dict, x: jax.Array, postshuffle: bool) -> jax.Array:
    """A merger over the residual stream ``x`` (patches, hidden): each ``spatial_merge_size**2`` consecutive
    patches (one merged token) normalised (each patch alone, or with ``postshuffle`` the merged token's
    concatenation, as the deepstack mergers do), concatenated and mapped to one feature (tokens,
    out_hidden_size) by fc1, GELU (exact) and fc2."""
    width = cfg.hidden_size * cfg.spatial_merge_size**2
    if postshuffle:
        x = norm.layer_norm(x.reshape(-1, width), p["norm"]["scale"], p["norm"]["bias"], NORM_EPS)
    else:
        x = norm.layer_norm(x, p["norm"]["scale"], p["norm"]["bias"], NORM_EPS).reshape(-1, width)
    return mlp.linear(jax.nn.gelu(mlp.linear(x, p["fc1"]), approximate=False), p["fc2"])


def streams(cfg: VisionConfig, params: dict, pixel_values: jax.Array, plan_: Plan) -> list[jax.Array]:
    """The residual stream (patches, hidden), in ``pixel_values``' order, after each run of blocks
    (:func:`tokdyn.models.qwen3_vl.params.block_runs`, each run scanned): entry ``j`` for ``j`` below the number
    of deepstack indexes is the stream after block ``deepstack_visual_indexes[j]``, the last entry the stream
    after the last block (which the merger reads)."""
    x = embed_patches(params, pixel_values, plan_)
    inv_freq = rotary.inverse_frequencies(cfg.head_dim // 2, cfg.rope_theta)
    cos, sin = rotary.axial_tables(plan_.positions, inv_freq)
    out = []
    for run in params["blocks"]:
        x, _ = jax.lax.scan(lambda x, p: (block(cfg, p, x, cos, sin, plan_.frames), None), x, run)
        out.append(x)
    return out


def encode(cfg: VisionConfig, params: dict, pixel_values: jax.Array, plan_: Plan) -> tuple[jax.Array, jax.Array]:
    """Image features (tokens, out_hidden_size) of ``pixel_values`` (patches, patch_dim), in the order of the
    image tokens they replace, and the deepstack features (n_deep, tokens, out_hidden_size): deepstack
    merger ``j`` over the residual stream after block ``deepstack_visual_indexes[j]`` (:func:`streams`)."""
    out = streams(cfg, params, pixel_values, plan_)
    n_deep = len(cfg.deepstack_visual_indexes)
    deep = [merge(cfg, params["deepstack"][j], out[j], postshuffle=True) for j in range(n_deep)]
    features = merge(cfg, params["merger"], out[-1], postshuffle=False)
    if not deep:
        return features, jnp.zeros((0, *features.shape), features.dtype)
    return features, jnp.stack(deep)
