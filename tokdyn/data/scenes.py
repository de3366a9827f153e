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

The drawing lives in :mod:`tokdyn.data.drawing` and the features in :mod:`tokdyn.data.features`;
their public names are re-exported here (``tokdyn.data.scenes.render``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.data.clusters import FLOAT_DTYPES, float_dtype  # noqa: F401  (the dtype argument's check)
from tokdyn.data.drawing import (
    BACKGROUNDS,
    SHAPES,
    WAVES,
    Rendered,
    background_image,
    between,
    check_shapes,
    drawing_order,
    hsv_to_rgb,
    render,
)
from tokdyn.data.features import flat_masks, pixel_features

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

_PER_OBJECT = 8  # uniforms per object slot: shape, hue, saturation, value, row, col, scale, depth
_PER_SCENE = 16  # uniforms per scene: n_objects, background hue/saturation/value, 3 waves x 3, 3 spare


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
    s = between(per_slot[..., 6], scale)  # (n, M)
    depth = drawing_order(per_slot[..., 7], present)  # (n, M)

    # Colours, one table: row 0 the background's base colour, rows 1..M the objects' (n, M+1, 3).
    hsv = jnp.concatenate([per_row[:, None, 1:4], per_slot[..., 1:4]], axis=1)  # (n, M+1, 3) uniforms
    sat_range = jnp.concatenate([bg_sat[:, None], jnp.broadcast_to(sat[:, None], (2, M))], axis=1)  # (2, M+1)
    val_range = jnp.concatenate([bg_val[:, None], jnp.broadcast_to(val[:, None], (2, M))], axis=1)  # (2, M+1)
    table = hsv_to_rgb(hsv[..., 0], between(hsv[..., 1], sat_range), between(hsv[..., 2], val_range))
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
        scene[:, 4 : 4 + 3 * WAVES],
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
