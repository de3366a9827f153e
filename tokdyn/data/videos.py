"""Synthetic multi-object videos ("sprite videos") with track identities, and their physics.

- :func:`sprite_videos`: n clips of ``frames`` frames: the flat-coloured shapes of
  :mod:`tokdyn.data.scenes` moving at constant speed, bouncing off walls (and, optionally, off each
  other), occluding each other by depth and entering and leaving the view, with per-frame instance
  masks whose ids are **track identities** (slot ``j`` is id ``j + 1`` in every frame), per-frame
  positions, velocities and pixel counts, and every object's attributes (:class:`Videos`).
- :func:`simulate`: the physics alone, for one clip of any objects (hand-placed ones included):
  positions and velocities per frame.

Units are canvas sides and frames. Video ``i`` is drawn from ``fold_in(key, start + i)`` alone,
as scenes are. Every function is pure and jittable; :func:`sprite_videos` is vmappable over keys
and over its traced arguments (``scale``, ``speed``, ``margin``, ``mass_exponent``, the colour
ranges, ``texture_amplitude``, ``start``), so a sweep over them shares one compilation.

The keys, the arena and its walls, the closed-form motion, elastic collisions and the extreme
cases: :ref:`scenes-videos`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.data import scenes
from tokdyn.data.clusters import float_dtype
from tokdyn.data.drawing import between

__all__ = ["Videos", "sprite_videos", "simulate"]

_PER_OBJECT = 10  # uniforms per object slot: shape, hue, saturation, value, row, col, scale, depth, speed, direction
_PER_VIDEO = 16  # uniforms per video: n_objects, background hue/saturation/value, 3 waves x 3, 3 spare


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Videos:
    """A batch of n clips of F = ``frames`` frames of ``size x size`` pixels, with up to
    M = ``max_objects`` objects each.

    Object slots ``0 .. n_objects - 1`` hold the video's objects; the other slots are padding
    (``present == False``) and hold the fill values given below. Slot ``j`` is track ``j + 1`` in
    ``masks``, in every frame.

    Attributes:
      images: (n, F, size, size, 3) RGB in [0, 1].
      masks: (n, F, size, size) int32 instance masks: 0 on background, ``j + 1`` where object slot
        ``j`` is the top-most object covering the pixel centre (the same id in every frame: a
        track identity).
      n_objects: (n,) int32 number of objects, uniform in [min_objects, max_objects].
      present: (n, M) bool, True on the slots that hold an object.
      shape: (n, M) int32 index into the ``shapes`` tuple the videos were drawn with; -1 if absent.
      colour: (n, M, 3) float32 RGB of each object in [0, 1]; 0 if absent.
      scale: (n, M) float32 side of the object's bounding box (canvas units); 0 if absent.
      mass: (n, M) float32 ``scale ** mass_exponent`` (what collisions use); 0 if absent.
      depth: (n, M) int32 drawing order, fixed over the clip: a permutation of ``0 .. n_objects -
        1`` over the present slots (greater on top); -1 if absent.
      position: (n, F, M, 2) float32 centre (row, col) of the bounding box in every frame, in canvas
        units (outside [0, 1] when the object is outside the view); 0 if absent.
      velocity: (n, F, M, 2) float32 velocity in every frame (canvas units per frame, after the
        bounces and collisions up to that frame); 0 if absent.
      visible: (n, F, M) int32 number of pixels labelled ``j + 1`` in each frame's mask (0: absent,
        wholly occluded or out of view).
      area: (n, F, M) int32 number of pixels the object covers in each frame, occluded or not (0:
        absent, out of view, or too small to cover a pixel centre). ``area > 0`` and ``visible ==
        0``: wholly occluded; ``area == 0``: out of view.
      background: (n, 3) float32 base RGB of the background (fixed over the clip).
    """

    images: jax.Array
    masks: jax.Array
    n_objects: jax.Array
    present: jax.Array
    shape: jax.Array
    colour: jax.Array
    scale: jax.Array
    mass: jax.Array
    depth: jax.Array
    position: jax.Array
    velocity: jax.Array
    visible: jax.Array
    area: jax.Array
    background: jax.Array


# ---------------------------------------------------------------------------------------------- physics


def _scalar(name: str, value, **interval):
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    _checks.real(name, value, **interval)


def _check_flag(name: str, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False (static), got {value!r} of type {type(value).__name__}")


def _check_simulate(position, velocity, scale, present=None, mass=None, *, frames, margin, collisions, substeps):
    if np.ndim(position) != 2 or np.shape(position)[-1] != 2:
        raise ValueError(f"position must have shape (M, 2) (one clip; vmap for more), got {np.shape(position)}")
    M = np.shape(position)[0]
    for name, value, shape in (
        ("velocity", velocity, (M, 2)),
        ("scale", scale, (M,)),
        ("present", present, (M,)),
        ("mass", mass, (M,)),
    ):
        if value is not None and np.shape(value) != shape:
            raise ValueError(
                f"{name} must have shape {shape} to match position of shape {(M, 2)}, got {np.shape(value)}"
            )
    for name, value in (("position", position), ("velocity", velocity), ("scale", scale), ("mass", mass)):
        if value is not None:
            _checks.finite_array(name, value)
    if present is not None and _checks.dtype_of(present) != np.bool_:
        raise TypeError(f"present must be boolean, got dtype {_checks.dtype_of(present)}")
    _checks.positive_int("frames", frames)
    _checks.positive_int("substeps", substeps)
    _check_flag("collisions", collisions)
    _scalar("margin", margin, low=0.0)
    _checks.real("scale", scale, low=0.0, high=1.0, low_open=True)
    if mass is not None:
        _checks.real("mass", mass, low=0.0, low_open=True)
    if _checks.on_host((position, scale, margin, present)):
        pos, half = np.asarray(position, np.float64), 0.5 * np.asarray(scale, np.float64)[:, None]
        keep = np.ones(M, bool) if present is None else np.asarray(present)
        lo, hi = half - float(margin) - 1e-6, 1.0 + float(margin) - half + 1e-6
        outside = keep[:, None] & ((pos < lo) | (pos > hi))
        if outside.any():
            j = int(np.flatnonzero(outside.any(axis=1))[0])
            raise ValueError(
                f"position must keep every object's bounding box inside the arena [-margin, 1 + margin]^2 = "
                f"[{-float(margin):g}, {1 + float(margin):g}]^2, i.e. each centre in [scale/2 - margin, 1 + margin "
                f"- scale/2]; object {j} has position {pos[j].tolist()} and scale {2 * half[j, 0]:g}"
            )


def _fold(x, v, lo, length, t):
    """Closed-form motion between two walls for a time ``t``: (position, velocity) of a point that
    starts at ``x`` in ``[lo, lo + length]`` with velocity ``v`` and reflects at both ends (length
    > 0 where used)."""
    span = jnp.where(length > 0, length, 1.0)
    m = jnp.mod(x - lo + v * t, 2.0 * span)  # in [0, 2L): the unfolded path, folded
    back = m > span  # on the way back from the far wall
    return lo + jnp.where(back, 2.0 * span - m, m), jnp.where(back, -v, v)


def _collide(x, v, half, mass, present, pairs):
    """Elastic collisions of overlapping, approaching discs, pair after pair (the order of
    ``pairs``): (M, 2) velocities after them."""

    def one(v, ij):
        i, j = ij[0], ij[1]
        d = x[j] - x[i]  # (2,) from i to j
        dv = v[j] - v[i]  # (2,)
        dist2 = d[0] * d[0] + d[1] * d[1]
        closing = dv[0] * d[0] + dv[1] * d[1]  # < 0: approaching
        reach = half[i] + half[j]
        hit = present[i] & present[j] & (dist2 < reach * reach) & (closing < 0) & (dist2 > 0)
        k = jnp.where(hit, 2.0 * closing / jnp.where(hit, dist2, 1.0), 0.0) / (mass[i] + mass[j])
        return v.at[i].add(k * mass[j] * d).at[j].add(-k * mass[i] * d), None

    v, _ = jax.lax.scan(one, v, pairs)
    return v


@_checks.checked_jit(_check_simulate, static_argnames=("frames", "collisions", "substeps"))
def simulate(
    position,
    velocity,
    scale,
    present=None,
    mass=None,
    *,
    frames: int,
    margin=0.0,
    collisions: bool = False,
    substeps: int = 4,
):
    """The motion of one clip's objects: positions and velocities in every frame (:ref:`scenes-videos`
    has the arena, the walls and the collisions).

    Args:
      position: (M, 2) centres (row, col) at frame 0, in canvas units, each inside the arena:
        ``[scale/2 - margin, 1 + margin - scale/2]`` on both axes (checked for host data; traced
        positions outside it are folded in, as if they had bounced).
      velocity: (M, 2) velocities at frame 0 (canvas units per frame).
      scale: (M,) sides of the bounding boxes, in (0, 1] (the discs' diameters for collisions).
      present: optional (M,) bool; absent slots neither move nor collide (their rows are returned
        as given, velocity 0).
      mass: optional (M,) masses > 0 (collisions only); default equal masses.
      frames: F >= 1, the number of frames (static).
      margin: >= 0, how far the arena's walls lie outside the view (may be traced).
      collisions: whether objects collide with each other (static).
      substeps: sub-steps per frame for collisions (static; unused without them).

    Returns:
      ``(positions, velocities)``, each (F, M, 2) float32; frame 0 holds the initial state (velocity 0
      for an absent object and for one as large as the arena). Without collisions ``jax.grad`` gives
      the exact derivative of the closed form (away from the bounces); with collisions it holds the
      collisions' sub-steps fixed, which is not the derivative of the motion.
    """
    f32 = jnp.float32
    x0, v0 = jnp.asarray(position, f32), jnp.asarray(velocity, f32)
    M = x0.shape[0]
    present = jnp.ones(M, bool) if present is None else jnp.asarray(present)
    mass = jnp.ones(M, f32) if mass is None else jnp.asarray(mass, f32)
    half = 0.5 * jnp.asarray(scale, f32)  # (M,)
    margin = jnp.asarray(margin, f32)
    lo = (half - margin)[:, None]  # (M, 1) lowest centre on either axis
    length = (1.0 + 2.0 * margin - 2.0 * half)[:, None]  # (M, 1) the centre's range
    moves = present[:, None] & (length > 0)  # (M, 1) free to move (an object as large as the arena is not)
    v0 = jnp.where(moves, v0, 0.0)

    if not collisions or M < 2:  # static: closed form at every frame
        t = jnp.arange(frames, dtype=f32)[:, None, None]  # (F, 1, 1)
        x, v = _fold(x0, v0, lo, length, t)  # (F, M, 2)
        return jnp.where(moves, x, x0), jnp.where(moves, v, v0)

    pairs = jnp.asarray(np.stack(np.triu_indices(M, 1), axis=1), jnp.int32)  # (P, 2), i < j
    dt = 1.0 / substeps

    def substep(state, _):
        x, v = state
        xf, vf = _fold(x, v, lo, length, dt)
        x, v = jnp.where(moves, xf, x), jnp.where(moves, vf, v)
        v = _collide(x, v, half, mass, present, pairs)
        return (x, jnp.where(moves, v, 0.0)), None  # an object that cannot move: its walls absorb the impulse

    def frame(state, _):
        state, _ = jax.lax.scan(substep, state, None, length=substeps)
        return state, state

    _, (xs, vs) = jax.lax.scan(frame, (x0, v0), None, length=frames - 1)  # (F - 1, M, 2) each
    return jnp.concatenate([x0[None], xs]), jnp.concatenate([v0[None], vs])


# ---------------------------------------------------------------------------------------------- videos


def _check_motion(speed, scale, margin, collisions, mass_exponent, substeps) -> None:
    """The checks of the options that set how the videos' objects move."""
    _checks.interval_pair("speed", speed)
    _scalar("margin", margin, low=0.0)
    _check_flag("collisions", collisions)
    _scalar("mass_exponent", mass_exponent)
    _checks.positive_int("substeps", substeps)
    if collisions and _checks.on_host((speed, scale)):
        fastest, smallest = float(np.asarray(speed)[1]), float(np.asarray(scale)[0])
        if 2.0 * fastest / substeps > smallest:
            raise ValueError(
                f"substeps={substeps} is too few for speed={speed!r} and scale={scale!r}: two objects may pass "
                f"through each other between sub-steps. Need 2 * speed[1] / substeps <= scale[0] (the relative "
                f"motion in a sub-step at most the smallest diameter): substeps >= "
                f"{int(np.ceil(2.0 * fastest / smallest))}"
            )


def _check_videos(
    key,
    n,
    *,
    frames,
    size,
    min_objects,
    max_objects,
    shapes,
    scale,
    speed,
    margin,
    collisions,
    mass_exponent,
    substeps,
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
    _checks.positive_int("frames", frames)
    _checks.positive_int("size", size, minimum=4)
    _checks.positive_int("min_objects", min_objects, minimum=0)
    _checks.positive_int("max_objects", max_objects, minimum=0)
    if min_objects > max_objects:
        raise ValueError(f"min_objects must be <= max_objects={max_objects}, got min_objects={min_objects}")
    shapes = scenes.check_appearance(
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
    _check_motion(speed, scale, margin, collisions, mass_exponent, substeps)
    _checks.start_index("start", start, "video")
    return dict(
        shapes=shapes,
        **_checks.host_arrays(
            scale=scale,
            speed=speed,
            colour_saturation=colour_saturation,
            colour_value=colour_value,
            background_saturation=background_saturation,
            background_value=background_value,
        ),
    )


@_checks.checked_jit(
    _check_videos,
    static_argnames=(
        "n",
        "frames",
        "size",
        "min_objects",
        "max_objects",
        "shapes",
        "collisions",
        "substeps",
        "background",
        "dtype",
    ),
)
def sprite_videos(
    key: jax.Array,
    n: int,
    *,
    frames: int = 8,
    size: int = 32,
    min_objects: int = 2,
    max_objects: int = 4,
    shapes: tuple = ("square", "circle", "triangle"),
    scale=(0.15, 0.3),
    speed=(0.03, 0.08),
    margin=0.0,
    collisions: bool = False,
    mass_exponent=0.0,
    substeps: int = 4,
    background: str = "plain",
    colour_saturation=(0.6, 1.0),
    colour_value=(0.75, 1.0),
    background_saturation=(0.0, 0.3),
    background_value=(0.1, 0.4),
    texture_amplitude=0.08,
    start=0,
    dtype=None,
) -> Videos:
    """n clips of moving flat-coloured shapes with per-frame instance masks whose ids are track
    identities (:ref:`scenes-videos` has the keys, the arena, the walls and the collisions). Objects
    are drawn as in :func:`~tokdyn.data.scenes.sprite_scenes`, each starting anywhere in the arena
    with a speed uniform in ``speed`` and a uniform direction; nothing is resampled, so objects may
    start overlapping, be hidden for a while or stay out of view.

    Args:
      key: PRNG key. Video i is drawn from ``fold_in(key, start + i)`` alone.
      n: number of videos (static).
      frames: F >= 1, frames per video (static; 1: a still).
      size: side of the square frames in pixels, >= 4 (static).
      min_objects, max_objects: range of the number of objects, 0 <= min <= max (static; M =
        max_objects object slots; 0 gives videos of the background alone).
      shapes: names from :data:`tokdyn.data.scenes.SHAPES` (static).
      scale: (low, high), 0 < low <= high <= 1, with ``low * size >= 1`` (may be traced).
      speed: (low, high) in [0, 1], canvas units per frame (may be traced).
      margin: >= 0, how far the arena's walls lie outside the view: 0 keeps every object in view;
        more lets objects enter and leave it (may be traced).
      collisions: elastic collisions between objects (static).
      mass_exponent: mass = ``scale ** mass_exponent`` (0: equal masses, 2: by area; collisions only;
        may be traced).
      substeps: sub-steps per frame for collisions (static), with ``2 speed[1] / substeps <=
        scale[0]`` (checked for host values).
      background: "plain" or "textured" (static), as in :func:`~tokdyn.data.scenes.sprite_scenes`.
      colour_saturation, colour_value: (low, high) in [0, 1], the objects' HSV saturation and value
        (may be traced).
      background_saturation, background_value: (low, high) in [0, 1], the background base colour's
        (may be traced).
      texture_amplitude: in [0, 1], the texture's amplitude ("textured" only; may be traced).
      start: index of the first video, an int >= 0 (may be traced).
      dtype: of ``images`` (static; JAX's default float by default, float64 under x64): drawn and
        computed in float32, then cast.

    Returns:
      :class:`Videos` with n rows, F frames and M = max_objects object slots.
    """
    S, F = size, frames
    f32 = jnp.float32
    speed, margin = jnp.asarray(speed, f32), jnp.asarray(margin, f32)
    obj, video = scenes.row_uniforms(
        key, n, start, max_objects=max_objects, per_object=_PER_OBJECT, per_row=_PER_VIDEO
    )  # (n, M, 10), (n, 16)
    o = scenes.draw_objects(
        obj,
        video,
        min_objects=min_objects,
        shapes=shapes,
        scale=scale,
        colour_saturation=colour_saturation,
        colour_value=colour_value,
        background_saturation=background_saturation,
        background_value=background_value,
    )
    positions, velocities, mass = _motion(
        obj, o.scale, o.present, speed, margin, mass_exponent, frames=F, collisions=collisions, substeps=substeps
    )
    back = scenes.background_image(
        o.background, video[:, 4:13], size=S, background=background, texture_amplitude=texture_amplitude
    )  # (n, S, S, 3)

    return _drawn_videos(o, back, positions, velocities, mass, shapes=shapes, dtype=dtype)


def _drawn_videos(o, back, positions, velocities, mass, *, shapes, dtype) -> Videos:
    """The :class:`Videos` of the objects ``o`` (a :class:`~tokdyn.data.Objects`) at their
    simulated ``positions`` (n, F, M, 2), every frame drawn at once on its video's background."""
    n, F = positions.shape[:2]
    present, shape, s, depth, colour = o.present, o.shape, o.scale, o.depth, o.colour
    per_frame = lambda a: jnp.broadcast_to(a[:, None], (n, F, *a.shape[1:]))  # noqa: E731
    drawn = scenes.render(
        back[:, None],
        positions,
        per_frame(s),
        per_frame(shape),
        per_frame(depth),
        per_frame(present),
        per_frame(colour),
        shapes=shapes,
    )

    absent = ~present
    gone = absent[:, None, :, None]  # (n, 1, M, 1)
    return Videos(
        images=drawn.images.astype(float_dtype(dtype)),
        masks=drawn.masks,
        n_objects=o.n_objects,
        present=present,
        shape=jnp.where(absent, -1, shape),
        colour=jnp.where(absent[..., None], 0.0, colour),
        scale=jnp.where(absent, 0.0, s),
        mass=jnp.where(absent, 0.0, mass),
        depth=depth,
        position=jnp.where(gone, 0.0, positions),
        velocity=jnp.where(gone, 0.0, velocities),
        visible=drawn.visible,
        area=drawn.area,
        background=o.background,
    )


def _motion(obj, s, present, speed, margin, mass_exponent, *, frames, collisions, substeps):
    """``(positions, velocities, mass)`` of every video's objects: where they start, their velocity
    and mass drawn from the uniforms ``obj`` (n, M, 10), then simulated over ``frames``."""
    f32 = jnp.float32
    position = (0.5 * s - margin)[..., None] + obj[..., 4:6] * (1.0 + 2.0 * margin - s)[..., None]  # (n, M, 2)
    angle = 2.0 * jnp.pi * obj[..., 9]  # (n, M)
    velocity = between(obj[..., 8], speed)[..., None] * jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1)
    mass = s ** jnp.asarray(mass_exponent, f32)  # (n, M)
    positions, velocities = jax.vmap(
        lambda x, v, sc, p, m: simulate(
            x, v, sc, p, m, frames=frames, margin=margin, collisions=collisions, substeps=substeps
        )
    )(position, velocity, s, present, mass)  # (n, F, M, 2) each
    return positions, velocities, mass
