"""Synthetic multi-object scenes ("sprites") with known instance masks, and per-pixel features.

- :func:`sprite_scenes`: n images of flat-coloured shapes (:data:`SHAPES`) on a plain or textured
  background, with instance masks, visible pixel counts and every object's attributes, padded to
  ``max_objects`` slots (:class:`Scenes`).
- :func:`render`: the drawing itself (coverage, occlusion by depth, colours) of any objects onto
  any backgrounds, with :func:`background_image`, :func:`hsv_to_rgb` and :func:`drawing_order`: the
  pieces :func:`tokdyn.data.videos.sprite_videos` draws its frames with.
- :func:`pixel_features`: (..., H*W, F) per-pixel features (position, colour, optional Fourier
  features of the position): the tokens that token dynamics clusters.
- :func:`flat_masks`: (..., H*W) labels that pair with those features.

Every function is pure and jittable; :func:`sprite_scenes` is vmappable over keys and over its
``start`` index. Scene ``i`` is drawn from ``fold_in(key, start + i)`` alone, so a scene never
depends on ``n``, on chunking or on batching. Objects may be wholly hidden (nothing is
resampled): filter on ``visible``.

The keys, the shapes' geometry, occlusion and colours: :ref:`scenes-sprites`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.data.clusters import FLOAT_DTYPES, float_dtype  # noqa: F401  (the dtype argument's check)

__all__ = [
    "SHAPES",
    "BACKGROUNDS",
    "Scenes",
    "sprite_scenes",
    "Rendered",
    "render",
    "background_image",
    "hsv_to_rgb",
    "drawing_order",
    "check_shapes",
    "pixel_features",
    "flat_masks",
]

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

_PER_OBJECT = 8  # uniforms per object slot: shape, hue, saturation, value, row, col, scale, depth
_PER_SCENE = 16  # uniforms per scene: n_objects, background hue/saturation/value, 3 waves x 3, 3 spare
_WAVES = 3  # plane waves in a textured background
_FREQUENCIES = (1.0, 4.0)  # cycles per canvas of each wave


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scenes:
    """A batch of n scenes of ``size x size`` pixels with up to M = ``max_objects`` objects each.

    Object slots ``0 .. n_objects - 1`` hold the scene's objects; the other slots are padding
    (``present == False``) and hold the fill values given below.

    Attributes:
      images: (n, size, size, 3) RGB in [0, 1], in ``dtype`` (JAX's default float by default).
      masks: (n, size, size) int32 instance masks: 0 on background, ``j + 1`` where object slot
        ``j`` is the top-most object covering the pixel centre.
      n_objects: (n,) int32 number of objects, uniform in [min_objects, max_objects].
      present: (n, M) bool, True on the slots that hold an object (``slot < n_objects``).
      shape: (n, M) int32 index into the ``shapes`` tuple the scenes were drawn with; -1 if absent.
      colour: (n, M, 3) float32 RGB of each object in [0, 1]; 0 if absent.
      position: (n, M, 2) float32 centre (row, col) of the object's bounding box in canvas units
        [0, 1]; 0 if absent.
      scale: (n, M) float32 side of the object's bounding box as a fraction of the canvas side;
        0 if absent.
      depth: (n, M) int32 drawing order, a permutation of ``0 .. n_objects - 1`` over the present
        slots (0 is drawn first; a greater depth is drawn on top); -1 if absent.
      visible: (n, M) int32 number of pixels labelled ``j + 1`` in ``masks`` (0 if absent or wholly
        occluded).
      background: (n, 3) float32 base RGB of the background (the whole background if plain; the
        centre of the texture if textured).
    """

    images: jax.Array
    masks: jax.Array
    n_objects: jax.Array
    present: jax.Array
    shape: jax.Array
    colour: jax.Array
    position: jax.Array
    scale: jax.Array
    depth: jax.Array
    visible: jax.Array
    background: jax.Array


def _check_scenes(
    key,
    n,
    *,
    size,
    min_objects,
    max_objects,
    shapes,
    scale,
    background,
    colour_saturation,
    colour_value,
    background_saturation,
    background_value,
    texture_amplitude,
    start,
    dtype=None,
):
    float_dtype(dtype)
    _checks.prng_key("key", key)
    _checks.positive_int("n", n)
    _checks.positive_int("size", size, minimum=4)
    _checks.positive_int("min_objects", min_objects)
    _checks.positive_int("max_objects", max_objects)
    if min_objects > max_objects:
        raise ValueError(f"min_objects must be <= max_objects={max_objects}, got min_objects={min_objects}")
    shapes = check_appearance(
        size=size,
        shapes=shapes,
        scale=scale,
        background=background,
        colour_saturation=colour_saturation,
        colour_value=colour_value,
        background_saturation=background_saturation,
        background_value=background_value,
        texture_amplitude=texture_amplitude,
    )
    if _checks.on_host(scale):
        low = float(np.asarray(scale)[0])
        if max_objects * low**2 > 1.0:
            raise ValueError(
                f"scale and max_objects ask for more objects than the canvas can hold: max_objects * scale[0]^2 "
                f"must be <= 1 (the bounding boxes of max_objects objects of the smallest scale, "
                f"{max_objects} x ({low:g} * {size})^2 pixels, must fit in the {size}^2-pixel canvas), got "
                f"max_objects={max_objects}, scale={scale!r} ({max_objects * low**2:g})"
            )
    _checks.start_index("start", start, "scene")
    return dict(
        shapes=shapes,
        **_checks.host_arrays(
            scale=scale,
            colour_saturation=colour_saturation,
            colour_value=colour_value,
            background_saturation=background_saturation,
            background_value=background_value,
        ),
    )


def check_appearance(
    *,
    size: int,
    shapes,
    scale,
    background: str,
    colour_saturation,
    colour_value,
    background_saturation,
    background_value,
    texture_amplitude,
) -> tuple:
    """Check the options that set how :func:`sprite_scenes`' and
    :func:`tokdyn.data.videos.sprite_videos`' objects and backgrounds look, before tracing.

    Args:
      size: the image side in pixels.
      shapes: sprite shape names (:func:`check_shapes`).
      scale: (low, high) object side as a fraction of ``size``, 0 < low <= high <= 1; for host
        values also ``low * size >= 1`` (objects at least a pixel across).
      background: one of :data:`BACKGROUNDS`.
      colour_saturation: (low, high) in [0, 1], the objects' HSV saturation range.
      colour_value: (low, high) in [0, 1], the objects' HSV value range.
      background_saturation: (low, high) in [0, 1], the background's saturation range.
      background_value: (low, high) in [0, 1], the background's value range.
      texture_amplitude: a scalar in [0, 1], the texture's amplitude on a textured background.

    Returns:
      ``shapes`` as a tuple; ``ValueError``/``TypeError`` naming the argument otherwise.
    """
    shapes = check_shapes(shapes)
    _checks.choice("background", background, BACKGROUNDS)
    _checks.interval_pair("scale", scale, low_open=True)
    if _checks.on_host(scale):
        low = float(np.asarray(scale)[0])
        if low * size < 1.0:
            raise ValueError(
                f"scale must give objects at least one pixel across: scale[0] * size >= 1, got "
                f"scale={scale!r} with size={size} ({low * size:g} pixels)"
            )
    for name, value in (
        ("colour_saturation", colour_saturation),
        ("colour_value", colour_value),
        ("background_saturation", background_saturation),
        ("background_value", background_value),
    ):
        _checks.interval_pair(name, value)
    if np.ndim(texture_amplitude) != 0:
        raise ValueError(f"texture_amplitude must be a scalar, got shape {np.shape(texture_amplitude)}")
    _checks.real("texture_amplitude", texture_amplitude, low=0.0, high=1.0)
    return shapes


def _between(u, pair):
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
    of ``0 .. n_present - 1``; absent slots get -1. Pure and traceable (what :func:`sprite_scenes`
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
    """The background of :func:`sprite_scenes`: (..., 3) base colours -> (..., size, size, 3) RGB.

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
    waves = waves.reshape(*lead, 3, _WAVES)
    theta, phi = jnp.pi * waves[..., 0, :], 2.0 * jnp.pi * waves[..., 2, :]  # (..., K)
    freq = 2.0 * jnp.pi * _between(waves[..., 1, :], _FREQUENCIES)  # (..., K)
    a = freq[..., None] * jnp.cos(theta)[..., None] * centres + phi[..., None]  # (..., K, S) row phase
    b = freq[..., None] * jnp.sin(theta)[..., None] * centres  # (..., K, S) col phase
    # cos(a + b) = cos a cos b - sin a sin b: separable, 4 K S transcendentals instead of K S^2.
    rows = jnp.concatenate([jnp.cos(a), jnp.sin(a)], axis=-2)  # (..., 2K, S)
    cols = jnp.concatenate([jnp.cos(b), -jnp.sin(b)], axis=-2) / _WAVES  # (..., 2K, S)
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
    """Draw objects onto backgrounds with the geometry, occlusion and colouring of :func:`sprite_scenes`
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


def row_uniforms(key, n: int, start, *, max_objects: int, per_object: int, per_row: int):
    """The uniforms that rows ``start`` to ``start + n - 1`` of a batch (scenes, videos) take all
    their randomness from: row i's ``per_object * max_objects + per_row`` float32 numbers in [0, 1)
    from one ``random.uniform`` call with ``fold_in(key, start + i)``, drawn whatever the options
    are. Pure and traceable (``start`` may be traced; the rest static).

    Args:
      key: the batch's PRNG key.
      n: the number of rows.
      start: the first row's index (an int, or a traced int32 scalar).
      max_objects: M, the object slots of a row.
      per_object: uniforms per object slot.
      per_row: uniforms per row beside the objects'.

    Returns:
      ``(per_slot, per_row)``: (n, max_objects, per_object) the first numbers of each row, object
      slot by slot, and (n, per_row) the rest.
    """
    M = max_objects
    index = jnp.asarray(start, jnp.int32) + jnp.arange(n, dtype=jnp.int32)  # (n,)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, index)
    u = jax.vmap(lambda k: jax.random.uniform(k, (per_object * M + per_row,), jnp.float32))(keys)  # (n, R)
    return u[:, : per_object * M].reshape(n, M, per_object), u[:, per_object * M :]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Objects:
    """The objects of n rows (scenes or videos) with M object slots each, as :func:`draw_objects`
    draws them (absent slots keep their draws: the callers fill them).

    Attributes:
      n_objects: (n,) int32 number of objects, uniform in [min_objects, M].
      present: (n, M) bool, ``slot < n_objects``.
      shape: (n, M) int32 index into ``shapes``, uniform.
      scale: (n, M) float32 side of the bounding box, uniform in ``scale``.
      depth: (n, M) int32 drawing order (:func:`drawing_order`; -1 where absent).
      colour: (n, M, 3) float32 RGB: hue uniform, saturation and value uniform in their ranges.
      background: (n, 3) float32 RGB of the background's base colour, drawn likewise.
    """

    n_objects: jax.Array
    present: jax.Array
    shape: jax.Array
    scale: jax.Array
    depth: jax.Array
    colour: jax.Array
    background: jax.Array


def draw_objects(
    per_slot,
    per_row,
    *,
    min_objects: int,
    shapes: tuple,
    scale,
    colour_saturation,
    colour_value,
    background_saturation,
    background_value,
) -> Objects:
    """The draws :func:`sprite_scenes` and :func:`tokdyn.data.videos.sprite_videos` share, from the
    uniforms of :func:`row_uniforms`: the number of objects, each slot's shape, scale, drawing
    order and colour, and the background's base colour. Pure and traceable.

    Args:
      per_slot: (n, M, P) uniforms per object slot, P >= 8; columns 0 (shape), 1-3 (hue,
        saturation, value), 6 (scale) and 7 (drawing order) are read here, the others (4-5: the
        position; from 8 on) are the caller's.
      per_row: (n, R) uniforms per row, R >= 4; column 0 (the number of objects) and 1-3 (the
        background's hue, saturation, value) are read here.
      min_objects: the least number of objects (static; the most is M).
      shapes: the shape names (static; ``Objects.shape`` indexes it).
      scale, colour_saturation, colour_value, background_saturation, background_value: (low,
        high) ranges, as :func:`sprite_scenes` takes them (may be traced).

    Returns:
      :class:`Objects`.
    """
    n, M = per_slot.shape[:2]
    f32 = jnp.float32
    scale, sat, val = (jnp.asarray(a, f32) for a in (scale, colour_saturation, colour_value))
    bg_sat, bg_val = jnp.asarray(background_saturation, f32), jnp.asarray(background_value, f32)
    n_objects = jnp.minimum(min_objects + (per_row[:, 0] * (M - min_objects + 1)).astype(jnp.int32), M)  # (n,)
    present = jnp.arange(M, dtype=jnp.int32) < n_objects[:, None]  # (n, M)
    shape = jnp.minimum((per_slot[..., 0] * len(shapes)).astype(jnp.int32), len(shapes) - 1)  # (n, M)
    s = _between(per_slot[..., 6], scale)  # (n, M)
    depth = drawing_order(per_slot[..., 7], present)  # (n, M)

    # Colours, one table: row 0 the background's base colour, rows 1..M the objects' (n, M+1, 3).
    hsv = jnp.concatenate([per_row[:, None, 1:4], per_slot[..., 1:4]], axis=1)  # (n, M+1, 3) uniforms
    sat_range = jnp.concatenate([bg_sat[:, None], jnp.broadcast_to(sat[:, None], (2, M))], axis=1)  # (2, M+1)
    val_range = jnp.concatenate([bg_val[:, None], jnp.broadcast_to(val[:, None], (2, M))], axis=1)  # (2, M+1)
    table = hsv_to_rgb(hsv[..., 0], _between(hsv[..., 1], sat_range), _between(hsv[..., 2], val_range))
    return Objects(
        n_objects=n_objects,
        present=present,
        shape=shape,
        scale=s,
        depth=depth,
        colour=table[:, 1:],
        background=table[:, 0],
    )


@_checks.checked_jit(
    _check_scenes, static_argnames=("n", "size", "min_objects", "max_objects", "shapes", "background", "dtype")
)
def sprite_scenes(
    key: jax.Array,
    n: int,
    *,
    size: int = 32,
    min_objects: int = 2,
    max_objects: int = 4,
    shapes: tuple = ("square", "circle", "triangle"),
    scale=(0.15, 0.3),
    background: str = "plain",
    colour_saturation=(0.6, 1.0),
    colour_value=(0.75, 1.0),
    background_saturation=(0.0, 0.3),
    background_value=(0.1, 0.4),
    texture_amplitude=0.08,
    start=0,
    dtype=None,
) -> Scenes:
    """n scenes of flat-coloured shapes with instance masks (:ref:`scenes-sprites` has the geometry,
    occlusion and colour model). Per scene ``n_objects`` is uniform in [min_objects, max_objects]; per
    object a shape uniform over ``shapes``, a scale uniform in ``scale``, a centre uniform among those
    that keep the object inside the canvas, a colour and a random place in the drawing order.

    Args:
      key: PRNG key. Scene i is drawn from ``fold_in(key, start + i)`` alone.
      n: number of scenes (static).
      size: side of the square canvas in pixels, >= 4 (static).
      min_objects, max_objects: range of the number of objects per scene, 1 <= min <= max
        (static; M = max_objects is the padded number of object slots).
      shapes: names from :data:`SHAPES` to draw from, uniformly (static; ``Scenes.shape`` indexes it).
      scale: (low, high), 0 < low <= high <= 1: object size as a fraction of the canvas side, with
        ``max_objects * low^2 <= 1`` and ``low * size >= 1`` (checked for host values). May be traced.
      background: "plain" (one colour per scene) or "textured" (:func:`background_image`); static.
      colour_saturation, colour_value: (low, high) in [0, 1], the objects' HSV saturation and value
        (may be traced).
      background_saturation, background_value: (low, high) in [0, 1], the background base colour's
        (may be traced).
      texture_amplitude: in [0, 1], the texture's amplitude ("textured" only; may be traced).
      start: index of the first scene, an int >= 0 (may be traced).
      dtype: of ``images`` (static; JAX's default float by default, float64 under x64; float16,
        bfloat16, float32 or float64 with x64):
        drawn and computed in float32, then cast, so a key gives the same scenes with and without x64.

    Returns:
      :class:`Scenes` with n rows and M = max_objects object slots.
    """
    obj, scene = row_uniforms(
        key, n, start, max_objects=max_objects, per_object=_PER_OBJECT, per_row=_PER_SCENE
    )  # (n, M, 8), (n, 16)
    o = draw_objects(
        obj,
        scene,
        min_objects=min_objects,
        shapes=shapes,
        scale=scale,
        colour_saturation=colour_saturation,
        colour_value=colour_value,
        background_saturation=background_saturation,
        background_value=background_value,
    )
    present, shape, s, colour = o.present, o.shape, o.scale, o.colour
    half = 0.5 * s
    position = half[..., None] + obj[..., 4:6] * (1.0 - s)[..., None]  # (n, M, 2) in [s/2, 1 - s/2]

    back = background_image(
        o.background,
        scene[:, 4 : 4 + 3 * _WAVES],
        size=size,
        background=background,
        texture_amplitude=texture_amplitude,
    )  # (n, size, size, 3)
    drawn = render(back, position, s, shape, o.depth, present, colour, shapes=shapes)

    absent = ~present
    return Scenes(
        images=drawn.images.astype(float_dtype(dtype)),
        masks=drawn.masks,
        n_objects=o.n_objects,
        present=present,
        shape=jnp.where(absent, -1, shape),
        colour=jnp.where(absent[..., None], 0.0, colour),
        position=jnp.where(absent[..., None], 0.0, position),
        scale=jnp.where(absent, 0.0, s),
        depth=o.depth,
        visible=drawn.visible,
        background=o.background,
    )


# ---------------------------------------------------------------------------------------------- features


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
