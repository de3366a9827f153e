"""The drawing of sprites, which scenes and videos share: :func:`render` (coverage, occlusion by
depth, colours of any objects on any backgrounds), :func:`background_image`, :func:`hsv_to_rgb`,
:func:`drawing_order`; the shapes it draws (:data:`SHAPES`, :func:`check_shapes`) and the
backgrounds (:data:`BACKGROUNDS`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

# Each shape is a gauge g(u, v) (covered when g <= 1) of the offsets from the centre in units of
# half the scale; names in a fixed order (the registry).
_GAUGES = {
    "square": lambda u, v: jnp.maximum(jnp.abs(u), jnp.abs(v)),
    "circle": lambda u, v: u * u + v * v,
    "triangle": lambda u, v: jnp.maximum(v, 2.0 * jnp.abs(u) - v),
    "diamond": lambda u, v: jnp.abs(u) + jnp.abs(v),
    "ellipse": lambda u, v: u * u + 4.0 * v * v,
}
SHAPES = tuple(_GAUGES)  # the shapes sprite_scenes can draw
BACKGROUNDS = ("plain", "textured")


WAVES = 3  # plane waves in a textured background
_FREQUENCIES = (1.0, 4.0)  # cycles per canvas of each wave


def between(u, pair):
    """Map uniforms in [0, 1) to [pair[0], pair[1])."""
    return pair[0] + (pair[1] - pair[0]) * u


def hsv_to_rgb(h, s, v):
    """(...,) HSV in [0, 1] -> (..., 3) RGB in [0, 1] (the standard hexcone formula; pure, traceable)."""
    k = jnp.mod(jnp.array([5.0, 3.0, 1.0], jnp.float32) + 6.0 * h[..., None], 6.0)
    return v[..., None] - (v * s)[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def drawing_order(keys, present):
    """Depths from random sort keys: (..., M) keys and (..., M) bool ``present`` -> (..., M) int32.

    A present slot's depth is the rank of its key among the present slots' keys (0 for the smallest:
    drawn first, at the bottom; equal keys rank by slot), so the depths of a scene are a permutation
    of ``0 .. n_present - 1``; absent slots get -1. Pure and traceable (what :func:`~tokdyn.data.scenes.sprite_scenes`
    and :func:`tokdyn.data.videos.sprite_videos` draw their orders with, from uniform keys).
    """
    M = keys.shape[-1]
    order = jnp.where(present, keys, jnp.inf)  # (..., M) absent slots last
    slot = jnp.arange(M)
    before = (order[..., None, :] < order[..., :, None]) | (
        (order[..., None, :] == order[..., :, None]) & (slot[None, :] < slot[:, None])
    )  # (..., j, k): k before j
    return jnp.where(present, jnp.sum(before, axis=-1, dtype=jnp.int32), -1)


def background_image(base, waves, *, size: int, background: str = "plain", texture_amplitude=0.08):
    """The background of :func:`~tokdyn.data.scenes.sprite_scenes`: (..., 3) base colours -> (..., size, size, 3) RGB.

    Args:
      base: (..., 3) RGB base colours.
      waves: (..., 9) uniforms ``u`` in [0, 1), the texture's waves (ignored when plain).
      size: the canvas side in pixels (static).
      background: "plain": the base colour everywhere; "textured": plus a smooth luminance texture,
        the mean of three plane waves ``cos(2 pi f (cos(theta) row + sin(theta) col) + phi)`` over the
        pixel centres (wave ``k``: ``theta = pi u[k]``, ``f = 1 + 3 u[3 + k]`` cycles per canvas,
        ``phi = 2 pi u[6 + k]``) times ``texture_amplitude``, added to every channel and clipped to
        [0, 1]. Static.
      texture_amplitude: the texture's amplitude (may be traced).

    Returns:
      (..., size, size, 3) RGB. Pure and traceable.
    """
    if background == "plain":
        return jnp.broadcast_to(base[..., None, None, :], (*base.shape[:-1], size, size, 3))
    lead = waves.shape[:-1]
    centres = (jnp.arange(size, dtype=None) + 0.5) / size  # (S,)
    waves = waves.reshape(*lead, 3, WAVES)
    theta, phi = jnp.pi * waves[..., 0, :], 2.0 * jnp.pi * waves[..., 2, :]  # (..., K)
    freq = 2.0 * jnp.pi * between(waves[..., 1, :], _FREQUENCIES)  # (..., K)
    a = freq[..., None] * jnp.cos(theta)[..., None] * centres + phi[..., None]  # (..., K, S) row phase
    b = freq[..., None] * jnp.sin(theta)[..., None] * centres  # (..., K, S) col phase
    # cos(a + b) = cos a cos b - sin a sin b: separable, 4 K S transcendentals instead of K S^2.
    rows = jnp.concatenate([jnp.cos(a), jnp.sin(a)], axis=-2)  # (..., 2K, S)
    cols = jnp.concatenate([jnp.cos(b), -jnp.sin(b)], axis=-2) / WAVES  # (..., 2K, S)
    texture = jnp.einsum(
        "...ki,...kj->...ij", rows, cols, precision=jax.lax.Precision.HIGHEST
    )  # (..., S, S) in [-1, 1]
    amplitude = jnp.asarray(texture_amplitude, jnp.float32)
    return jnp.clip(base[..., None, None, :] + amplitude * texture[..., None], 0.0, 1.0)  # (..., S, S, 3)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rendered:
    """What :func:`render` draws: images, instance masks and per-object pixel counts.

    Attributes:
      images: (..., H, W, 3) RGB: each pixel the colour of its top-most covering object, else the
        background's.
      masks: (..., H, W) int32: 0 on background, ``j + 1`` where object slot ``j`` is top-most.
      visible: (..., M) int32 number of pixels labelled ``j + 1`` in ``masks``.
      area: (..., M) int32 number of pixel centres the object covers, occluded or not (0: it lies
        wholly outside the canvas, or is too small to cover a pixel centre, or is absent).
    """

    images: jax.Array
    masks: jax.Array
    visible: jax.Array
    area: jax.Array


def _check_render(back, position, scale, shape, depth, present, colour, *, shapes):
    if np.ndim(back) < 3 or np.shape(back)[-1] != 3:
        raise ValueError(f"back must have shape (..., H, W, 3), got {np.shape(back)}")
    if np.ndim(position) < 2 or np.shape(position)[-1] != 2:
        raise ValueError(f"position must have shape (..., M, 2), got {np.shape(position)}")
    lead = np.shape(position)[:-1]  # (..., M)
    for name, value, tail in (
        ("scale", scale, ()),
        ("shape", shape, ()),
        ("depth", depth, ()),
        ("present", present, ()),
        ("colour", colour, (3,)),
    ):
        if np.shape(value) != (*lead, *tail):
            raise ValueError(
                f"{name} must have shape {(*lead, *tail)} to match position of shape "
                f"{np.shape(position)}, got {np.shape(value)}"
            )
    for name, value in (("shape", shape), ("depth", depth)):
        if _checks.dtype_of(value).kind not in "iu":
            raise TypeError(f"{name} must be integer, got dtype {_checks.dtype_of(value)}")
    if _checks.dtype_of(present) != np.bool_:
        raise TypeError(f"present must be boolean, got dtype {_checks.dtype_of(present)}")
    check_shapes(shapes)
    try:
        np.broadcast_shapes(np.shape(back)[:-3], lead[:-1])
    except ValueError:
        raise ValueError(
            f"back's leading shape {np.shape(back)[:-3]} must broadcast with the objects' {lead[:-1]}"
        ) from None
    return dict(shapes=tuple(shapes))


def check_shapes(shapes) -> tuple:
    """Check a ``shapes`` argument (a non-empty tuple of distinct names from :data:`SHAPES`) before
    tracing; ``TypeError``/``ValueError`` naming the bad entry. Returns it as a tuple."""
    if isinstance(shapes, str) or not isinstance(shapes, (tuple, list)) or not shapes:
        raise TypeError(f"shapes must be a non-empty tuple of names from {list(SHAPES)}, got {shapes!r}")
    for name in shapes:
        if name not in _GAUGES:
            raise ValueError(f"shapes must hold names from {list(SHAPES)}, got unknown shape {name!r}")
    if len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes must not repeat a name, got {tuple(shapes)!r}")
    return tuple(shapes)


@_checks.checked_jit(_check_render, static_argnames=("shapes",))
def render(back, position, scale, shape, depth, present, colour, *, shapes: tuple) -> Rendered:
    """Draw objects onto backgrounds with the geometry, occlusion and colouring of :func:`~tokdyn.data.scenes.sprite_scenes`
    (:ref:`scenes-sprites`), for any objects (a video's frames, hand-placed scenes): a pixel shows the
    covering object of greatest ``depth`` (equal depths: the higher slot), else the background.

    Args:
      back: (..., H, W, 3) float background images (e.g. :func:`background_image`); its leading
        shape broadcasts with the objects'.
      position: (..., M, 2) centres (row, col) in canvas units (pixel ``(i, j)`` has its centre at
        ``((i + 0.5) / H, (j + 0.5) / W)``); objects may lie partly or wholly outside the canvas.
      scale: (..., M) sides of the bounding boxes (> 0 to cover anything).
      shape: (..., M) int indices into ``shapes``.
      depth: (..., M) int drawing order (greater on top).
      present: (..., M) bool; absent slots cover nothing.
      colour: (..., M, 3) RGB.
      shapes: static tuple of names from :data:`SHAPES`.

    Returns:
      :class:`Rendered` (images in the promoted dtype of ``back`` and ``colour``); ``M = 0`` gives the
      backgrounds, all-zero masks and empty counts. Jittable and vmappable.
    """
    H, W = back.shape[-3], back.shape[-2]
    M = position.shape[-2]
    lead = jnp.broadcast_shapes(back.shape[:-3], position.shape[:-2])
    f32 = jnp.float32
    half = 0.5 * jnp.asarray(scale, f32)
    present = present & (half > 0)
    inv = 1.0 / jnp.where(present, half, 1.0)  # (..., M)
    position = jnp.asarray(position, f32)
    rows = (jnp.arange(H, dtype=f32) + 0.5) / H  # (H,)
    cols = (jnp.arange(W, dtype=f32) + 0.5) / W  # (W,)
    v = (rows - position[..., 0:1]) * inv[..., None]  # (..., M, H) rows
    w = (cols - position[..., 1:2]) * inv[..., None]  # (..., M, W) cols
    uu, vv = w[..., None, :], v[..., :, None]  # (..., M, 1, W), (..., M, H, 1)
    gauge = _GAUGES[shapes[-1]](uu, vv)
    for k in range(len(shapes) - 2, -1, -1):  # static: one select per shape name
        gauge = jnp.where((shape == k)[..., None, None], _GAUGES[shapes[k]](uu, vv), gauge)
    covered = (gauge <= 1.0) & present[..., None, None]  # (..., M, H, W)

    # Compositing: the covering object of greatest depth wins; the largest code ``depth * M + slot``
    # over the covering objects names it (distinct codes: equal depths rank by slot).
    slot = jnp.arange(M, dtype=jnp.int32)
    if M == 0:  # static: nothing to draw
        masks = jnp.zeros((*lead, H, W), jnp.int32)
    else:
        code = jnp.where(covered, (depth * M + slot)[..., None, None], -1)  # (..., M, H, W)
        top = jnp.max(code, axis=-3)  # (..., H, W)
        masks = jnp.where(top >= 0, jax.lax.rem(top, jnp.asarray(M, top.dtype)) + 1, 0)  # (..., H, W)
    masks = jnp.broadcast_to(masks, (*lead, H, W))
    visible = jnp.sum(masks[..., None, :, :] == (slot + 1)[:, None, None], axis=(-2, -1), dtype=jnp.int32)  # (..., M)
    area = jnp.broadcast_to(jnp.sum(covered, axis=(-2, -1), dtype=jnp.int32), (*lead, M))  # (..., M)

    images = jnp.broadcast_to(back, (*lead, H, W, 3))
    for j in range(M):  # static: one select per object slot
        images = jnp.where((masks == j + 1)[..., None], colour[..., j, None, None, :], images)  # (..., H, W, 3)
    return Rendered(images=images, masks=masks, visible=visible, area=area)
