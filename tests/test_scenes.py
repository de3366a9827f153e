import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_floats, deterministic_and_key_dependent
from tokdyn.data import scenes

N = 64
KEY = jax.random.key(7)
ALL = dict(shapes=scenes.SHAPES, size=24, min_objects=1, max_objects=5, scale=(0.2, 0.4))


def host(s: scenes.Scenes) -> dict:
    return {f: np.asarray(getattr(s, f)) for f in s.__dataclass_fields__}


def assert_same_scenes(a: dict, b: dict, names, err_msg=""):
    """The same scenes made by two different programs (another batch, a vmap, another background):
    the integer fields (counts, shapes, depths) come from the same random bits through single
    multiplies and comparisons, which no fusion changes, hence exact; the float fields are equal up to float32 rounding; the masks and
    images follow the float32 geometry, where a pixel centre within rounding of an object's
    boundary may fall either way: all but 0.1% of their pixels (or 2) must agree, and the visible
    counts with them."""
    for f in names:
        x, y = a[f], b[f]
        if f in ("masks", "images"):
            same = x == y if f == "masks" else np.isclose(x, y, rtol=1e-6, atol=1e-6).all(-1)
            assert np.sum(~same) <= max(2, same.size // 1000), (f, np.sum(~same), err_msg)
        elif f == "visible":
            assert np.abs(x - y).sum() <= 2 * np.sum(a["masks"] != b["masks"]), (f, err_msg)
        elif x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=f"{f} {err_msg}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{f} {err_msg}")


@pytest.fixture(scope="module")
def plain():
    return host(scenes.sprite_scenes(KEY, N))


@pytest.fixture(scope="module")
def textured():
    return host(scenes.sprite_scenes(KEY, N, background="textured", **ALL))


# ---------------------------------------------------------------------------------------------- reference


def reference_object(name, centre, scale, size):
    """(size, size) bool coverage of pixel centres by one object, and (size, size) bool "within 1e-4 of
    its boundary" (pixels whose float32 and float64 answers may differ), from the shape's geometry."""
    h = scale / 2.0
    centres = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(centres - centre[0], centres - centre[1], indexing="ij")  # offsets, canvas units
    eps = 1e-4
    if name == "square":
        d = np.maximum(np.abs(x), np.abs(y)) - h  # <= 0 inside
    elif name == "circle":
        d = np.hypot(x, y) - h
    elif name == "diamond":
        d = (np.abs(x) + np.abs(y) - h) / np.sqrt(2.0)
    elif name == "ellipse":
        d = np.hypot(x / h, y / (h / 2.0)) - 1.0
        d = d * h / 2.0  # a lower bound on the distance scale near the boundary
    elif name == "triangle":  # apex (-h, 0), base corners (h, -h) and (h, h) as (row, col)
        verts = np.array([[-h, 0.0], [h, h], [h, -h]])  # clockwise in (row, col)
        d = np.full(x.shape, -np.inf)
        for i in range(3):
            (r0, c0), (r1, c1) = verts[i], verts[(i + 1) % 3]
            edge = np.array([r1 - r0, c1 - c0])
            normal = np.array([edge[1], -edge[0]]) / np.linalg.norm(edge)  # outward
            centroid = verts.mean(0)
            if normal @ (centroid - verts[i]) > 0:
                normal = -normal
            d = np.maximum(d, normal[0] * (y - r0) + normal[1] * (x - c0))
    else:
        raise AssertionError(name)
    return d <= 0.0, np.abs(d) < eps


def reference_masks(s: dict, i: int, shapes, size):
    """Paint scene i's objects in increasing depth (the painter's algorithm), float64."""
    mask = np.zeros((size, size), np.int32)
    unsure = np.zeros((size, size), bool)
    slots = [j for j in range(s["present"].shape[1]) if s["present"][i, j]]
    for j in sorted(slots, key=lambda j: s["depth"][i, j]):
        inside, near = reference_object(
            shapes[s["shape"][i, j]], s["position"][i, j].astype(np.float64), float(s["scale"][i, j]), size
        )
        mask[inside] = j + 1
        unsure |= near
    return mask, unsure


# ---------------------------------------------------------------------------------------------- scenes


def test_shapes_dtypes_and_ranges(plain):
    s, M = plain, 4
    assert s["images"].shape == (N, 32, 32, 3) and s["images"].dtype == np.float32
    assert s["masks"].shape == (N, 32, 32) and s["masks"].dtype == np.int32
    for f, shape, dtype in [
        ("n_objects", (N,), np.int32),
        ("present", (N, M), bool),
        ("shape", (N, M), np.int32),
        ("colour", (N, M, 3), np.float32),
        ("position", (N, M, 2), np.float32),
        ("scale", (N, M), np.float32),
        ("depth", (N, M), np.int32),
        ("visible", (N, M), np.int32),
        ("background", (N, 3), np.float32),
    ]:
        assert s[f].shape == shape and s[f].dtype == dtype, f
    assert s["images"].min() >= 0 and s["images"].max() <= 1
    assert s["masks"].min() >= 0 and s["masks"].max() <= M
    assert set(np.unique(s["n_objects"])) == {2, 3, 4}
    np.testing.assert_array_equal(s["present"], np.arange(M) < s["n_objects"][:, None])
    p = s["present"]
    assert np.all((s["shape"][p] >= 0) & (s["shape"][p] < 3)) and np.all(s["shape"][~p] == -1)
    assert np.all((s["scale"][p] >= 0.15) & (s["scale"][p] <= 0.3)) and np.all(s["scale"][~p] == 0)
    assert np.all(s["colour"][~p] == 0) and np.all(s["position"][~p] == 0) and np.all(s["depth"][~p] == -1)
    for i in range(N):  # depth: a permutation of 0..n_objects-1 over the present slots
        assert sorted(s["depth"][i, p[i]]) == list(range(s["n_objects"][i]))
    counts = np.stack([(s["masks"] == j + 1).sum((1, 2)) for j in range(M)], 1)
    np.testing.assert_array_equal(s["visible"], counts)
    assert np.all(s["visible"][~p] == 0)


@pytest.mark.parametrize("which", ["plain", "textured"])
def test_objects_inside_canvas(which, request):
    s = request.getfixturevalue(which)
    p = s["present"]
    half = s["scale"][..., None] / 2
    lo, hi = s["position"] - half, s["position"] + half
    assert np.all(lo[p] >= -1e-6) and np.all(hi[p] <= 1 + 1e-6)


@pytest.mark.parametrize("which", ["plain", "textured"])
def test_masks_equal_numpy_painter(which, request):
    """The whole mask of every scene equals an independent float64 rasterisation, objects painted in
    depth order, except on pixel centres within 1e-4 of an object's boundary."""
    s = request.getfixturevalue(which)
    shapes, size = (("square", "circle", "triangle"), 32) if which == "plain" else (ALL["shapes"], ALL["size"])
    unsure_total = 0
    for i in range(N):
        ref, unsure = reference_masks(s, i, shapes, size)
        np.testing.assert_array_equal(s["masks"][i][~unsure], ref[~unsure], err_msg=f"scene {i}")
        unsure_total += unsure.sum()
    assert unsure_total < 0.001 * N * size * size
    if which == "textured":  # every shape of the registry was drawn and compared
        assert set(s["shape"][s["present"]]) == set(range(len(scenes.SHAPES)))


def test_textured_scene_has_the_plain_scenes_objects(textured):
    plain = host(scenes.sprite_scenes(KEY, N, background="plain", **ALL))
    assert_same_scenes(plain, textured, ("masks", "colour", "position", "scale", "depth", "shape", "background"))


def test_plain_colours(plain):
    s = plain
    for i in range(N):
        labels = s["masks"][i]
        back = s["images"][i][labels == 0]
        assert_same_floats(back, np.broadcast_to(s["background"][i], back.shape))  # two outputs, maybe fused apart
        for j in range(4):
            got = s["images"][i][labels == j + 1]
            assert_same_floats(got, np.broadcast_to(s["colour"][i, j], got.shape))
    hsv = np.array([colorsys.rgb_to_hsv(*c) for c in s["colour"][s["present"]]])
    assert np.all(hsv[:, 1] >= 0.6 - 1e-5) and np.all(hsv[:, 2] >= 0.75 - 1e-5)
    bg = np.array([colorsys.rgb_to_hsv(*c) for c in s["background"]])
    assert np.all(bg[:, 1] <= 0.3 + 1e-5) and np.all((bg[:, 2] >= 0.1 - 1e-5) & (bg[:, 2] <= 0.4 + 1e-5))
    assert np.ptp(hsv[:, 0]) > 0.8  # hues spread over the circle


def test_textured_background(textured):
    s = textured
    back = s["masks"] == 0
    dev = s["images"] - s["background"][:, None, None, :]
    assert np.abs(dev[back]).max() <= 0.08 + 1e-6
    assert np.abs(dev[back]).max() > 0.03  # there is a texture
    np.testing.assert_allclose(dev[back][:, 0], dev[back][:, 1], atol=1e-6)  # luminance: every channel alike
    for i in range(4):
        for j in range(5):
            got = s["images"][i][s["masks"][i] == j + 1]
            assert_same_floats(got, np.broadcast_to(s["colour"][i, j], got.shape))


def test_scene_depends_only_on_key_and_index(plain):
    """Row i is the n=1 scene at start=i: under vmap, in chunks, and as a prefix of a larger batch."""
    f = jax.jit(jax.vmap(lambda i: scenes.sprite_scenes(KEY, 1, start=i)))
    rows = host(f(jnp.arange(6)))
    first, second = host(scenes.sprite_scenes(KEY, 3)), host(scenes.sprite_scenes(KEY, 3, start=3))
    # each batch shape is another program: the same scenes up to float32 rounding
    assert_same_scenes({f: v[:, 0] for f, v in rows.items()}, {f: v[:6] for f, v in plain.items()}, plain, "vmap")
    assert_same_scenes(
        {f: np.concatenate([first[f], second[f]]) for f in plain}, {f: v[:6] for f, v in plain.items()}, plain, "chunks"
    )


def test_deterministic_and_key_dependent(plain):
    deterministic_and_key_dependent(lambda k: host(scenes.sprite_scenes(k, N)), KEY, jax.random.key(8), plain)


def test_jit_vmap_over_keys_and_traced_scale():
    keys = jax.random.split(jax.random.key(0), 3)
    pairs = np.array([[0.1, 0.15], [0.2, 0.25], [0.3, 0.35]], np.float32)
    f = jax.jit(jax.vmap(lambda k, sc: scenes.sprite_scenes(k, 2, size=16, scale=sc)))
    out = host(f(keys, jnp.asarray(pairs)))
    assert out["images"].shape == (3, 2, 16, 16, 3)
    for b in range(3):
        one = host(scenes.sprite_scenes(keys[b], 2, size=16, scale=pairs[b]))
        # vmapped with a traced scale, or alone: two programs, the same scenes up to float32 rounding
        assert_same_scenes({f: v[b] for f, v in out.items()}, one, one, f"scene batch {b}")
        sc = out["scale"][b][out["present"][b]]
        assert np.all((sc >= pairs[b, 0]) & (sc <= pairs[b, 1]))


# What scenes.check_appearance refuses, for scenes and videos alike (test_videos.py runs them too),
# and the key and start index both take.
BAD_APPEARANCE = [
    (dict(scale=(0.0, 0.3)), "scale"),
    (dict(scale=(0.2, 1.5)), "scale"),
    (dict(scale=(0.3, 0.2)), "scale"),
    (dict(scale=(0.2,)), "scale"),
    (dict(scale=(0.02, 0.1)), "scale"),  # under one pixel at size 32
    (dict(shapes=("square", "hexagon")), "'circle'.*hexagon"),
    (dict(shapes=("square", "square")), "shapes"),
    (dict(shapes="square"), "shapes"),
    (dict(shapes=()), "shapes"),
    (dict(background="noise"), "background"),
    (dict(colour_value=(0.5, 1.2)), "colour_value"),
    (dict(colour_saturation=(0.9, 0.2)), "colour_saturation"),
    (dict(background_value=(-0.1, 0.2)), "background_value"),
    (dict(background_saturation=(0.1, float("nan"))), "background_saturation"),
    (dict(texture_amplitude=-0.1), "texture_amplitude"),
]
BAD_ROWS = [(dict(start=-1), "start"), (dict(start=1.5), "start"), (dict(key=np.zeros(3)), "key")]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "n must"),
        (dict(size=3), "size"),
        (dict(min_objects=0), "min_objects"),
        (dict(min_objects=5, max_objects=4), "min_objects"),
        (dict(max_objects=0), "max_objects"),
        (dict(max_objects=30, scale=(0.2, 0.3)), "max_objects \\* scale\\[0\\]\\^2"),
    ]
    + BAD_APPEARANCE
    + BAD_ROWS,
)
def test_bad_input(kwargs, match):
    args = dict(key=KEY, n=4)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        scenes.sprite_scenes(args.pop("key"), args.pop("n"), **args)


# ---------------------------------------------------------------------------------------------- features


def numpy_features(images, ps, cs, bands):
    H, W = images.shape[-3:-1]
    y = np.repeat((2 * np.arange(H) + 1) / H - 1, W)
    x = np.tile((2 * np.arange(W) + 1) / W - 1, H)
    cols = [ps * y, ps * x]
    lead = images.shape[:-3]
    rgb = cs * images.reshape(*lead, H * W, 3).astype(np.float64)
    fourier = []
    for b in range(bands):
        a = 2.0**b * np.pi
        fourier += [ps * np.sin(a * y), ps * np.sin(a * x), ps * np.cos(a * y), ps * np.cos(a * x)]
    geo = np.broadcast_to(np.stack(cols + fourier, -1), (*lead, H * W, 2 + 4 * bands))
    return np.concatenate([geo[..., :2], rgb, geo[..., 2:]], -1)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("bands", [0, 3])
def test_pixel_features_against_numpy(plain, batched, bands):
    images = plain["images"][:3, :8, :6] if batched else plain["images"][0, :8, :6]
    got = np.asarray(scenes.pixel_features(images, position_scale=2.0, colour_scale=0.5, fourier_bands=bands))
    assert got.dtype == np.float32 and got.shape == (*images.shape[:-3], 48, 5 + 4 * bands)
    np.testing.assert_allclose(got, numpy_features(images, 2.0, 0.5, bands), atol=1e-5)


def test_flat_masks_pair_with_features(plain):
    images, masks = plain["images"][:2], plain["masks"][:2]
    feats = np.asarray(scenes.pixel_features(images))
    labels = np.asarray(scenes.flat_masks(jnp.asarray(masks)))
    assert labels.shape == (2, 32 * 32)
    i, j = 5, 17
    np.testing.assert_allclose(feats[1, i * 32 + j, 2:5], images[1, i, j])
    np.testing.assert_allclose(feats[1, i * 32 + j, :2], [(2 * i + 1) / 32 - 1, (2 * j + 1) / 32 - 1], atol=1e-7)
    assert labels[1, i * 32 + j] == masks[1, i, j]


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (np.zeros((4, 4)), {}, "images"),
        (np.zeros((2, 4, 4, 4)), {}, "images"),
        (np.zeros((1, 2, 4, 4, 3)), {}, "images"),
        (np.zeros((4, 4, 3), np.uint8), {}, "images"),
        (np.full((4, 4, 3), 1.5), {}, "images"),
        (np.full((4, 4, 3), -0.1), {}, "images"),
        (np.zeros((4, 4, 3)), dict(fourier_bands=-1), "fourier_bands"),
        (np.zeros((4, 4, 3)), dict(position_scale=-0.1), "position_scale"),
        (np.zeros((4, 4, 3)), dict(colour_scale=-1.0), "colour_scale"),
    ],
)
def test_pixel_features_bad_input(images, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        scenes.pixel_features(images, **kwargs)


def test_flat_masks_bad_input():
    with pytest.raises(ValueError, match="masks"):
        scenes.flat_masks(np.zeros(5, np.int32))
    with pytest.raises(TypeError, match="masks"):
        scenes.flat_masks(np.zeros((2, 2), np.float32))
