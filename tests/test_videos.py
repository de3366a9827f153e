"""Tests for tokdyn.data.videos: sprite videos and their physics.

The references are written here in float64 NumPy: walls by an event-driven reflection (the time to
the next wall, then the reflection: not the closed form the package uses), collisions by the same
sub-step rule as docs/concepts/scenes.md states, and every frame's mask by the painter's algorithm of
tests/test_scenes.py (objects painted in increasing depth). Conservation of momentum and kinetic
energy, and the textbook 1-D elastic collision, are checked on hand-placed objects.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import deterministic_and_key_dependent, without_host_reads
from test_scenes import BAD_APPEARANCE, BAD_ROWS, reference_object
from tokdyn import data
from tokdyn.data import scenes, videos

KEY = jax.random.key(11)
N, F = 24, 7
OPEN = dict(
    frames=F,
    size=20,
    min_objects=0,
    max_objects=4,
    shapes=scenes.SHAPES,
    scale=(0.2, 0.35),
    speed=(0.04, 0.12),
    margin=0.3,
)  # objects enter and leave the view
COLLIDE = dict(OPEN, collisions=True, margin=0.05, substeps=4, min_objects=3)


def host(v) -> dict:
    return {f: np.asarray(getattr(v, f)) for f in v.__dataclass_fields__}


@pytest.fixture(scope="module")
def plain():
    return host(videos.sprite_videos(KEY, N))


@pytest.fixture(scope="module")
def open_arena():
    return host(videos.sprite_videos(KEY, N, **OPEN))


@pytest.fixture(scope="module")
def colliding():
    f = jax.jit(lambda e: videos.sprite_videos(KEY, N, mass_exponent=e, **COLLIDE))  # the exponent traced
    return {e: host(f(jnp.float32(e))) for e in (0.0, 2.0)}


def assert_same_videos(a: dict, b: dict, err_msg=""):
    """The same videos from two different programs (another batch, a vmap, a chunk): integer fields
    exact, floats to float32 rounding, masks and images but for pixel centres within rounding of
    an object's boundary (at most 0.1% of them, or 2), and the counts with them."""
    for f in a:
        x, y = a[f], b[f]
        if f in ("masks", "images"):
            same = x == y if f == "masks" else np.isclose(x, y, rtol=1e-6, atol=1e-6).all(-1)
            assert np.sum(~same) <= max(2, same.size // 1000), (f, np.sum(~same), err_msg)
        elif f in ("visible", "area"):
            assert np.abs(x - y).sum() <= 2 * max(2, x.size // 1000), (f, err_msg)
        elif x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=f"{f} {err_msg}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{f} {err_msg}")


# ---------------------------------------------------------------------------------------------- references


def wall_motion(x, v, lo, hi, time):
    """float64, event by event: a point in [lo, hi] moving at v for ``time``, reflected at both ends."""
    if hi - lo <= 0:
        return x, 0.0
    while time > 0 and v != 0:
        wall = hi if v > 0 else lo
        hit = (wall - x) / v
        if hit >= time:
            return x + v * time, v
        x, v, time = wall, -v, time - hit
    return x, v


def reference_walls(x0, v0, scale, margin, frames):
    """(F, M, 2) positions and velocities without collisions."""
    M = len(scale)
    xs, vs = np.zeros((frames, M, 2)), np.zeros((frames, M, 2))
    for j in range(M):
        lo, hi = scale[j] / 2 - margin, 1 + margin - scale[j] / 2
        for a in range(2):
            for t in range(frames):
                xs[t, j, a], vs[t, j, a] = wall_motion(float(x0[j, a]), float(v0[j, a]), lo, hi, float(t))
    return xs, vs


def reference_collisions(x0, v0, scale, mass, present, margin, frames, substeps):
    """(F, M, 2) positions and velocities with elastic collisions, float64: per sub-step the wall
    motion, then the pairs in order (0, 1), (0, 2), ..., each colliding when its discs overlap and
    approach; and the number of collisions, and whether any decision was within rounding of its
    threshold (then float32 may decide otherwise)."""
    x, v = np.array(x0, np.float64), np.array(v0, np.float64)
    M, half = len(scale), np.asarray(scale, np.float64) / 2
    xs, vs, hits, unsure = [x.copy()], [v.copy()], 0, False
    for _ in range(frames - 1):
        for _ in range(substeps):
            for j in range(M):
                if present[j]:
                    for a in range(2):
                        x[j, a], v[j, a] = wall_motion(
                            x[j, a], v[j, a], half[j] - margin, 1 + margin - half[j], 1.0 / substeps
                        )
            for i in range(M):
                for j in range(i + 1, M):
                    if not (present[i] and present[j]):
                        continue
                    d, dv = x[j] - x[i], v[j] - v[i]
                    dist2, closing, reach2 = d @ d, dv @ d, (half[i] + half[j]) ** 2
                    unsure |= abs(dist2 - reach2) < 1e-4 * reach2 or (dist2 < reach2 and abs(closing) < 1e-7)
                    if dist2 < reach2 and closing < 0:
                        n = d / np.sqrt(dist2)
                        u = (v[i] - v[j]) @ n
                        v[i] = v[i] - 2 * mass[j] / (mass[i] + mass[j]) * u * n
                        v[j] = v[j] + 2 * mass[i] / (mass[i] + mass[j]) * u * n
                        hits += 1
        xs.append(x.copy())
        vs.append(v.copy())
    return np.stack(xs), np.stack(vs), hits, unsure


def reference_frame(v: dict, i: int, t: int, shapes, size):
    """Frame t of video i painted in increasing depth (float64), the pixels within 1e-4 of a
    boundary, and every object's coverage count."""
    mask = np.zeros((size, size), np.int32)
    unsure = np.zeros((size, size), bool)
    area = np.zeros(v["present"].shape[1], np.int64)
    slots = [j for j in range(v["present"].shape[1]) if v["present"][i, j]]
    for j in sorted(slots, key=lambda j: v["depth"][i, j]):
        inside, near = reference_object(
            shapes[v["shape"][i, j]], v["position"][i, t, j].astype(np.float64), float(v["scale"][i, j]), size
        )
        mask[inside] = j + 1
        unsure |= near
        area[j] = inside.sum()
    return mask, unsure, area


# ---------------------------------------------------------------------------------------------- the videos


def test_shapes_dtypes_fills_and_ranges(plain):
    v, M = plain, 4
    for f, shape, dtype in [
        ("images", (N, 8, 32, 32, 3), np.float32),
        ("masks", (N, 8, 32, 32), np.int32),
        ("n_objects", (N,), np.int32),
        ("present", (N, M), bool),
        ("shape", (N, M), np.int32),
        ("colour", (N, M, 3), np.float32),
        ("scale", (N, M), np.float32),
        ("mass", (N, M), np.float32),
        ("depth", (N, M), np.int32),
        ("position", (N, 8, M, 2), np.float32),
        ("velocity", (N, 8, M, 2), np.float32),
        ("visible", (N, 8, M), np.int32),
        ("area", (N, 8, M), np.int32),
        ("background", (N, 3), np.float32),
    ]:
        assert v[f].shape == shape and v[f].dtype == dtype, f
    p = v["present"]
    np.testing.assert_array_equal(p, np.arange(M) < v["n_objects"][:, None])
    assert set(np.unique(v["n_objects"])) == {2, 3, 4}
    assert np.all(v["shape"][~p] == -1) and np.all(v["depth"][~p] == -1) and np.all(v["scale"][~p] == 0)
    assert np.all(v["colour"][~p] == 0) and np.all(v["mass"][~p] == 0)
    for i in range(N):
        assert sorted(v["depth"][i, p[i]]) == list(range(v["n_objects"][i]))
        assert np.all(v["position"][i][:, ~p[i]] == 0) and np.all(v["velocity"][i][:, ~p[i]] == 0)
        assert np.all(v["visible"][i][:, ~p[i]] == 0) and np.all(v["area"][i][:, ~p[i]] == 0)
    np.testing.assert_array_equal(v["mass"][p], 1.0)  # mass_exponent 0: equal masses
    speeds = np.linalg.norm(v["velocity"][:, 0][p], axis=-1)
    assert np.all((speeds >= 0.03 - 1e-6) & (speeds <= 0.08 + 1e-6))
    counts = np.stack([(v["masks"] == j + 1).sum((2, 3)) for j in range(M)], -1)  # (N, F, M)
    np.testing.assert_array_equal(v["visible"], counts)
    assert np.all(v["area"] >= v["visible"])
    # margin 0: every object wholly in view, in every frame
    half = v["scale"][:, None, :, None] / 2
    box = (v["position"] - half >= -1e-6) & (v["position"] + half <= 1 + 1e-6)
    assert np.all(box[np.broadcast_to(p[:, None, :, None], box.shape)])


@pytest.mark.parametrize("which", ["plain", "open_arena"])
def test_every_frame_equals_the_numpy_painter(which, request):
    """Each frame's mask is the float64 painter's (objects in increasing depth, so the mask is
    consistent with the depth order), but for pixel centres within 1e-4 of a boundary; ``area`` is
    each object's coverage and ``images`` each object's colour on its pixels."""
    v = request.getfixturevalue(which)
    shapes, size = (("square", "circle", "triangle"), 32) if which == "plain" else (OPEN["shapes"], OPEN["size"])
    unsure_total = 0
    frames = v["masks"].shape[1]
    for i in range(N):
        for t in range(frames):
            ref, unsure, area = reference_frame(v, i, t, shapes, size)
            np.testing.assert_array_equal(v["masks"][i, t][~unsure], ref[~unsure], err_msg=f"video {i} frame {t}")
            unsure_total += unsure.sum()
            if not unsure.any():
                np.testing.assert_array_equal(v["area"][i, t], area)
            for j in range(v["present"].shape[1]):
                got = v["images"][i, t][v["masks"][i, t] == j + 1]
                np.testing.assert_allclose(got, np.broadcast_to(v["colour"][i, j], got.shape), atol=1e-6)
    assert unsure_total < 0.001 * v["masks"].size


def test_overlaps_are_resolved_by_depth(open_arena):
    """Where several objects cover a pixel, the mask shows the one of greatest depth: checked
    directly on the pixels the reference covers more than once (away from boundaries)."""
    v, checked = open_arena, 0
    for i in range(N):
        slots = np.flatnonzero(v["present"][i])
        for t in range(F):
            cover, unsure = [], np.zeros((OPEN["size"],) * 2, bool)
            for j in slots:
                inside, near = reference_object(
                    OPEN["shapes"][v["shape"][i, j]],
                    v["position"][i, t, j].astype(float),
                    float(v["scale"][i, j]),
                    OPEN["size"],
                )
                cover.append(inside)
                unsure |= near
            if not cover:
                continue
            cover = np.stack(cover)  # (objects, S, S)
            many = (cover.sum(0) > 1) & ~unsure
            depth = np.where(cover, v["depth"][i, slots][:, None, None], -1)
            top = slots[np.argmax(depth, axis=0)] + 1  # (S, S) the id of greatest depth
            np.testing.assert_array_equal(v["masks"][i, t][many], top[many])
            checked += many.sum()
    assert checked > 40  # (61 pixels in these videos)


def test_track_ids_persist_across_frames(open_arena):
    """Id j + 1 is object j in every frame: its pixels have object j's colour and lie in the
    bounding box at object j's position of that frame."""
    v = open_arena
    size = OPEN["size"]
    centres = (np.arange(size) + 0.5) / size
    for i in range(N):
        for t in range(F):
            for j in np.flatnonzero(v["present"][i]):
                rows, cols = np.nonzero(v["masks"][i, t] == j + 1)
                h = v["scale"][i, j] / 2 + 1e-5
                assert np.all(np.abs(centres[rows] - v["position"][i, t, j, 0]) <= h)
                assert np.all(np.abs(centres[cols] - v["position"][i, t, j, 1]) <= h)


def test_objects_enter_and_leave_the_view(open_arena):
    v = open_arena
    p = np.broadcast_to(v["present"][:, None], v["area"].shape)
    out = p & (v["area"] == 0)
    assert out.any(), "some object is wholly out of view in some frame"
    half = v["scale"][:, None, :] / 2
    pos = v["position"]
    outside = np.any((pos + half[..., None] < 0) | (pos - half[..., None] > 1), axis=-1)  # (N, F, M) box wholly out
    assert np.all(out[outside & p]) and np.all(v["visible"][out] == 0)  # wholly outside: nothing drawn
    seen = v["area"] > 0
    entered = p[:, 1:] & ~seen[:, :-1] & seen[:, 1:]
    left = p[:, 1:] & seen[:, :-1] & ~seen[:, 1:]
    assert entered.any() and left.any()
    # every object's bounding box stays in the arena
    inside = np.abs(pos - 0.5) <= 0.5 + OPEN["margin"] - half[..., None] + 1e-5  # (N, F, M, 2)
    assert np.all(inside[p])


# ---------------------------------------------------------------------------------------------- physics


@pytest.mark.parametrize("which", ["plain", "open_arena"])
def test_walls_equal_the_event_driven_reference(which, request):
    v = request.getfixturevalue(which)
    margin = 0.0 if which == "plain" else OPEN["margin"]
    bounces = 0
    for i in range(N):
        p = v["present"][i]
        xs, vs = reference_walls(
            v["position"][i, 0, p], v["velocity"][i, 0, p], v["scale"][i, p], margin, v["position"].shape[1]
        )
        np.testing.assert_allclose(v["position"][i][:, p], xs, atol=2e-6, err_msg=f"video {i}")
        np.testing.assert_allclose(v["velocity"][i][:, p], vs, atol=1e-7, err_msg=f"video {i}")
        bounces += np.sum(np.sign(vs[1:]) != np.sign(vs[:-1]))
    assert bounces > 10  # the walls were met


def test_collisions_equal_the_numpy_reference(colliding):
    """Positions and velocities of every frame against the float64 sub-step reference, with equal
    masses and masses by area; videos whose float32 decisions could differ (a pair within rounding
    of touching) are left out, and there are few of them."""
    compared = hits = 0
    for exponent, v in colliding.items():
        for i in range(N):
            p = v["present"][i]
            scale = v["scale"][i, p].astype(np.float64)
            xs, vs, n_hits, unsure = reference_collisions(
                v["position"][i, 0, p],
                v["velocity"][i, 0, p],
                scale,
                scale**exponent,
                np.ones(p.sum(), bool),
                COLLIDE["margin"],
                F,
                COLLIDE["substeps"],
            )
            if unsure:
                continue
            np.testing.assert_allclose(v["position"][i][:, p], xs, atol=3e-5, err_msg=f"exponent {exponent} video {i}")
            np.testing.assert_allclose(v["velocity"][i][:, p], vs, atol=3e-5, err_msg=f"exponent {exponent} video {i}")
            np.testing.assert_allclose(v["mass"][i, p], scale**exponent, rtol=1e-5)
            compared += 1
            hits += n_hits
    assert compared >= 2 * N - 4 and hits >= 10


def test_collisions_conserve_kinetic_energy(colliding):
    """Walls and collisions are elastic: each video's kinetic energy is the same in every frame."""
    for v in colliding.values():
        ke = 0.5 * np.sum(v["mass"][:, None, :] * np.sum(v["velocity"].astype(np.float64) ** 2, -1), -1)  # (N, F)
        np.testing.assert_allclose(ke, np.broadcast_to(ke[:, :1], ke.shape), rtol=2e-5)
        assert np.all(ke > 0)


def test_same_objects_with_and_without_collisions(colliding):
    without = host(videos.sprite_videos(KEY, N, **dict(COLLIDE, collisions=False)))
    v = colliding[0.0]
    for f in ("n_objects", "present", "shape", "depth"):
        np.testing.assert_array_equal(v[f], without[f])
    for f in ("colour", "scale", "background"):
        np.testing.assert_allclose(v[f], without[f], rtol=1e-6)
    np.testing.assert_allclose(v["position"][:, 0], without["position"][:, 0], rtol=1e-6, atol=1e-7)
    assert np.abs(v["velocity"] - without["velocity"]).max() > 0.01  # collisions changed something


def test_head_on_collision_closed_form():
    """Two discs on one row in a wide arena: the 1-D elastic collision's closed form, momentum and
    energy conserved, with masses by area."""
    m1, m2, u1, u2 = 0.3**2, 0.2**2, 0.1, -0.05
    pos = np.array([[0.5, 0.2], [0.5, 0.8]], np.float32)
    vel = np.array([[0.0, u1], [0.0, u2]], np.float32)
    scale = np.array([0.3, 0.2], np.float32)
    mass = scale.astype(np.float32) ** 2
    xs, vs = videos.simulate(pos, vel, scale, None, mass, frames=12, margin=5.0, collisions=True, substeps=8)
    vs = np.asarray(vs, np.float64)
    w1 = ((m1 - m2) * u1 + 2 * m2 * u2) / (m1 + m2)
    w2 = ((m2 - m1) * u2 + 2 * m1 * u1) / (m1 + m2)
    np.testing.assert_allclose(vs[-1], [[0.0, w1], [0.0, w2]], atol=1e-6)
    np.testing.assert_allclose(vs[0], vel, atol=0)
    momentum = np.einsum("m,fmk->fk", mass.astype(np.float64), vs)
    np.testing.assert_allclose(momentum, np.broadcast_to(momentum[0], momentum.shape), atol=1e-7)
    # equal masses exchange velocities
    _, vs_eq = videos.simulate(pos, vel, scale, frames=12, margin=5.0, collisions=True, substeps=8)
    np.testing.assert_allclose(np.asarray(vs_eq)[-1], vel[::-1], atol=1e-6)


def test_many_body_collisions_conserve_momentum_away_from_walls():
    """Five discs thrown together in an arena whose walls they never reach: every frame has the
    same momentum and kinetic energy, and some velocities changed."""
    rng = np.random.default_rng(3)
    pos = (0.5 + rng.uniform(-0.15, 0.15, (5, 2))).astype(np.float32)
    vel = (0.5 - pos) * 0.08 + rng.normal(0, 0.01, (5, 2)).astype(np.float32)  # towards the centre
    scale = rng.uniform(0.1, 0.2, 5).astype(np.float32)
    mass = rng.uniform(0.5, 2.0, 5).astype(np.float32)
    xs, vs = videos.simulate(
        pos, vel.astype(np.float32), scale, None, mass, frames=10, margin=20.0, collisions=True, substeps=6
    )
    vs = np.asarray(vs, np.float64)
    momentum = np.einsum("m,fmk->fk", mass.astype(np.float64), vs)
    np.testing.assert_allclose(momentum, np.broadcast_to(momentum[0], momentum.shape), atol=1e-7)
    ke = 0.5 * np.einsum("m,fm->f", mass.astype(np.float64), np.sum(vs**2, -1))
    np.testing.assert_allclose(ke, ke[0], rtol=1e-5)
    assert np.abs(vs[-1] - vs[0]).max() > 0.01


# ---------------------------------------------------------------------------------------------- keys


def test_video_depends_only_on_key_and_index(open_arena):
    """Row i is the n=1 video at start=i: under vmap, in chunks, and as a prefix of a larger batch;
    and fewer frames are a prefix of more."""
    rows = host(jax.jit(jax.vmap(lambda i: videos.sprite_videos(KEY, 1, start=i, **OPEN)))(jnp.arange(5)))
    assert_same_videos({f: x[:, 0] for f, x in rows.items()}, {f: x[:5] for f, x in open_arena.items()}, "vmap")
    first = host(videos.sprite_videos(KEY, 2, **OPEN))
    second = host(videos.sprite_videos(KEY, 3, start=2, **OPEN))
    assert_same_videos(
        {f: np.concatenate([first[f], second[f]]) for f in first}, {f: x[:5] for f, x in open_arena.items()}, "chunks"
    )
    short = host(videos.sprite_videos(KEY, N, **dict(OPEN, frames=3)))
    per_frame = ("images", "masks", "position", "velocity", "visible", "area")
    assert_same_videos(short, {f: (x[:, :3] if f in per_frame else x) for f, x in open_arena.items()}, "frames")


def test_deterministic_and_key_dependent(plain):
    deterministic_and_key_dependent(lambda k: host(videos.sprite_videos(k, N)), KEY, jax.random.key(12), plain)


def test_jit_vmap_over_keys_and_traced_knobs():
    """Keys, speed and margin vmapped in one compilation, each batch equal to its own call."""
    keys = jax.random.split(jax.random.key(5), 3)
    speeds = np.array([[0.0, 0.01], [0.05, 0.1], [0.2, 0.3]], np.float32)
    margins = np.array([0.0, 0.2, 1.0], np.float32)
    f = jax.jit(jax.vmap(lambda k, sp, m: videos.sprite_videos(k, 2, frames=3, size=12, speed=sp, margin=m)))
    out = host(f(keys, jnp.asarray(speeds), jnp.asarray(margins)))
    assert out["images"].shape == (3, 2, 3, 12, 12, 3)
    for b in range(3):
        one = host(videos.sprite_videos(keys[b], 2, frames=3, size=12, speed=speeds[b], margin=margins[b]))
        assert_same_videos({f: x[b] for f, x in out.items()}, one, f"batch {b}")
        sp = np.linalg.norm(out["velocity"][b][:, 0][out["present"][b]], axis=-1)
        assert np.all((sp >= speeds[b, 0] - 1e-6) & (sp <= speeds[b, 1] + 1e-6))


# ---------------------------------------------------------------------------------------------- extremes


def test_zero_objects():
    v = host(videos.sprite_videos(KEY, 3, frames=4, size=8, min_objects=0, max_objects=0))
    assert v["present"].shape == (3, 0) and v["position"].shape == (3, 4, 0, 2) and v["visible"].shape == (3, 4, 0)
    assert np.all(v["masks"] == 0) and np.all(v["n_objects"] == 0)
    np.testing.assert_allclose(
        v["images"], np.broadcast_to(v["background"][:, None, None, None], v["images"].shape), atol=1e-6
    )
    some = host(
        videos.sprite_videos(KEY, 64, frames=2, size=8, min_objects=0, max_objects=2, collisions=True, scale=(0.3, 0.4))
    )
    empty = some["n_objects"] == 0
    assert empty.any() and np.all(some["masks"][empty] == 0)


@pytest.mark.parametrize("collisions", [False, True])
def test_all_objects_overlapping(collisions):
    """Objects as large as the view fill it and cannot move; objects nearly as large overlap in
    every frame. Masks follow depth, nothing is NaN, energy is kept."""
    full = host(
        videos.sprite_videos(
            KEY,
            4,
            frames=3,
            size=8,
            min_objects=3,
            max_objects=3,
            shapes=("square",),
            scale=(1.0, 1.0),
            collisions=collisions,
        )
    )
    assert np.all(full["velocity"] == 0)
    np.testing.assert_allclose(full["position"], 0.5, atol=1e-7)
    top = np.argmax(full["depth"], axis=1) + 1  # (4,)
    assert np.all(full["masks"] == top[:, None, None, None])
    assert np.all(full["area"] == 64) and np.all(full["visible"].sum(-1) == 64)
    big = host(
        videos.sprite_videos(
            KEY,
            8,
            frames=6,
            size=16,
            min_objects=4,
            max_objects=4,
            shapes=("square",),
            scale=(0.9, 0.95),
            speed=(0.05, 0.1),
            collisions=collisions,
            substeps=1,
        )
    )
    for f in ("position", "velocity", "images"):
        assert np.all(np.isfinite(big[f])), f
    centre = big["masks"][:, :, 7:9, 7:9]  # every object covers the centre: the top one shows
    top = np.argmax(big["depth"], axis=1) + 1
    assert np.all(centre == top[:, None, None, None])
    ke = np.sum(big["velocity"].astype(np.float64) ** 2, axis=(-1, -2))
    np.testing.assert_allclose(ke, np.broadcast_to(ke[:, :1], ke.shape), rtol=2e-5)


def test_single_frame():
    v = host(videos.sprite_videos(KEY, 4, frames=1, collisions=True))
    assert v["masks"].shape == (4, 1, 32, 32)
    many = host(videos.sprite_videos(KEY, 4, frames=5, collisions=True))
    per_frame = ("images", "masks", "position", "velocity", "visible", "area")
    assert_same_videos(v, {f: (x[:, :1] if f in per_frame else x) for f, x in many.items()})


def test_objects_wholly_out_of_view():
    """A wide arena with small objects: most are out of view most of the time; they keep their ids,
    draw nothing and count nothing."""
    v = host(
        videos.sprite_videos(KEY, 16, frames=4, size=16, min_objects=4, max_objects=4, margin=3.0, scale=(0.1, 0.2))
    )
    out = v["area"] == 0
    assert out.mean() > 0.6
    assert np.all(v["visible"][out] == 0)
    for i, t, j in zip(*np.nonzero(out)):
        assert not np.any(v["masks"][i, t] == j + 1)
    assert np.all(np.isfinite(v["position"]))
    hand = np.asarray(
        videos.simulate(
            np.array([[2.0, 2.0]], np.float32),
            np.zeros((1, 2), np.float32),
            np.array([0.2], np.float32),
            frames=2,
            margin=2.0,
        )[0]
    )
    drawn = scenes.render(
        jnp.zeros((2, 8, 8, 3)),
        hand,
        jnp.full((2, 1), 0.2),
        jnp.zeros((2, 1), jnp.int32),
        jnp.zeros((2, 1), jnp.int32),
        jnp.ones((2, 1), bool),
        jnp.ones((2, 1, 3)),
        shapes=("square",),
    )
    assert np.all(np.asarray(drawn.masks) == 0) and np.all(np.asarray(drawn.area) == 0)


# ---------------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "n must"),
        (dict(frames=0), "frames"),
        (dict(size=3), "size"),
        (dict(min_objects=-1), "min_objects"),
        (dict(min_objects=5, max_objects=4), "min_objects"),
        (dict(speed=(0.1, 0.05)), "speed"),
        (dict(speed=(-0.1, 0.05)), "speed"),
        (dict(speed=(0.1,)), "speed"),
        (dict(margin=-0.1), "margin"),
        (dict(margin=(0.1, 0.2)), "margin"),
        (dict(collisions=1), "collisions"),
        (dict(collisions=True, speed=(0.1, 0.4), scale=(0.15, 0.3), substeps=2), "substeps >= 6"),
        (dict(mass_exponent=float("nan")), "mass_exponent"),
        (dict(substeps=0), "substeps"),
    ]
    + BAD_APPEARANCE
    + BAD_ROWS,
)
def test_bad_input(kwargs, match):
    args = dict(key=KEY, n=4)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        videos.sprite_videos(args.pop("key"), args.pop("n"), **args)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((3, 3)), np.zeros((3, 2)), np.full(3, 0.2)), {}, "position must have shape \\(M, 2\\)"),
        ((np.full((3, 2), 0.5), np.zeros((2, 2)), np.full(3, 0.2)), {}, "velocity must have shape \\(3, 2\\)"),
        ((np.full((3, 2), 0.5), np.zeros((3, 2)), np.full(3, 1.5)), {}, "scale"),
        ((np.full((1, 2), 0.95), np.zeros((1, 2)), np.full(1, 0.2)), {}, "object 0 has position \\[0.95, 0.95\\]"),
        ((np.full((1, 2), 0.5), np.zeros((1, 2)), np.full(1, 0.2), None, np.zeros(1)), {}, "mass"),
        ((np.full((1, 2), 0.5), np.zeros((1, 2)), np.full(1, 0.2), np.ones(1, int)), {}, "present must be boolean"),
        ((np.full((1, 2), 0.5), np.zeros((1, 2)), np.full(1, 0.2)), dict(frames=0), "frames"),
        ((np.full((1, 2), 0.5), np.full((1, 2), np.inf), np.full(1, 0.2)), {}, "velocity must be finite"),
    ],
)
def test_simulate_bad_input(args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        videos.simulate(*args, **{"frames": 3, **kwargs})


def test_reexported_from_data():
    assert data.sprite_videos is videos.sprite_videos and data.Videos is videos.Videos
    assert data.simulate is videos.simulate and data.render is scenes.render


def test_a_sweep_of_traced_knobs_compiles_once():
    from conftest import jax_compilations

    kw = dict(frames=3, size=8, max_objects=3, collisions=True)
    videos.sprite_videos(KEY, 2, speed=(0.01, 0.02), margin=0.1, mass_exponent=0.0, scale=(0.3, 0.4), **kw)
    with jax_compilations() as events:
        videos.sprite_videos(KEY, 2, speed=(0.02, 0.05), margin=0.4, mass_exponent=2.0, scale=(0.2, 0.5), start=7, **kw)
    assert events == []


def test_checks_never_copy_device_arrays_to_the_host():
    args = dict(
        speed=jnp.array([0.02, 0.05]),
        margin=jnp.float32(0.2),
        mass_exponent=jnp.float32(2.0),
        scale=jnp.array([0.2, 0.3]),
        start=jnp.int32(3),
    )
    hand = (jnp.full((2, 2), 0.5), jnp.zeros((2, 2)), jnp.full((2,), 0.2), jnp.ones(2, bool), jnp.ones(2))
    without_host_reads(videos.sprite_videos, KEY, 2, frames=2, size=8, collisions=True, **args)
    without_host_reads(videos.simulate, *hand, frames=3, margin=jnp.float32(0.1), collisions=True)


def test_gradient_through_the_walls():
    """Without collisions the motion is a reflection: d position(t) / d position(0) is +1 after an
    even number of bounces and -1 after an odd one, i.e. velocity(t) / velocity(0)."""
    pos = np.array([[0.5, 0.3], [0.2, 0.8], [0.7, 0.6]], np.float32)
    vel = np.array([[0.07, 0.11], [-0.09, 0.05], [0.02, -0.13]], np.float32)
    scale = np.array([0.2, 0.3, 0.25], np.float32)
    grad = jax.grad(lambda p: videos.simulate(p, vel, scale, frames=12, margin=0.1)[0].sum())(jnp.asarray(pos))
    _, vs = reference_walls(pos, vel, scale, 0.1, 12)
    np.testing.assert_allclose(grad, np.sum(vs / vel, axis=0), atol=1e-5)
    assert np.any(np.sum(vs / vel, axis=0) < 10)  # some bounced


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(back=jnp.zeros((8, 8))), r"back must have shape \(\.\.\., H, W, 3\)"),
        (dict(position=jnp.zeros((2, 3))), r"position must have shape \(\.\.\., M, 2\)"),
        (dict(scale=jnp.zeros((2, 2))), r"scale must have shape \(2, 3\)"),
        (dict(colour=jnp.zeros((2, 3))), r"colour must have shape \(2, 3, 3\)"),
        (dict(depth=jnp.zeros((2, 3))), "depth must be integer"),
        (dict(present=jnp.zeros((2, 3), jnp.int32)), "present must be boolean"),
        (dict(back=jnp.zeros((5, 8, 8, 3))), "must broadcast"),
        (dict(shapes=("square", "blob")), "blob"),
    ],
)
def test_render_bad_input(change, match):
    args = dict(
        back=jnp.zeros((2, 8, 8, 3)),
        position=jnp.full((2, 3, 2), 0.5),
        scale=jnp.full((2, 3), 0.2),
        shape=jnp.zeros((2, 3), jnp.int32),
        depth=jnp.zeros((2, 3), jnp.int32),
        present=jnp.ones((2, 3), bool),
        colour=jnp.ones((2, 3, 3)),
        shapes=("square",),
    )
    args.update(change)
    shapes = args.pop("shapes")
    with pytest.raises((ValueError, TypeError), match=match):
        scenes.render(*args.values(), shapes=shapes)


def test_textured_background_is_fixed_over_the_clip():
    kw = dict(frames=4, size=16, margin=0.2)
    plain = host(videos.sprite_videos(KEY, 6, **kw))
    textured = host(videos.sprite_videos(KEY, 6, background="textured", texture_amplitude=0.1, **kw))
    assert_same_videos(
        {f: x for f, x in plain.items() if f != "images"}, {f: x for f, x in textured.items() if f != "images"}
    )
    back = textured["masks"] == 0  # (6, 4, 16, 16)
    dev = textured["images"] - textured["background"][:, None, None, None, :]
    assert 0.03 < np.abs(dev[back]).max() <= 0.1 + 1e-6
    both = back[:, 1:] & back[:, :1]  # background in frame 0 and in frame t: the same pixel value
    np.testing.assert_array_equal(
        textured["images"][:, 1:][both],
        np.broadcast_to(textured["images"][:, :1], textured["images"][:, 1:].shape)[both],
    )
