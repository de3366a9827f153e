"""The CLEVR v1.0 reader (tokdyn.datasets.clevr) on a directory the test writes in CLEVR's layout:
PNG images and a scenes JSON, and broken ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")

from tokdyn.datasets import clevr  # noqa: E402

OBJECTS = [
    {"color": "red", "size": "large", "shape": "cube", "material": "metal", "3d_coords": [1.0, -2.0, 0.7],
     "rotation": 30.5, "pixel_coords": [100, 150, 11.5]},
    {"color": "cyan", "size": "small", "shape": "sphere", "material": "rubber", "3d_coords": [-1.5, 0.5, 0.35],
     "rotation": 200.0, "pixel_coords": [300, 90, 13.0]},
    {"color": "yellow", "size": "small", "shape": "cylinder", "material": "rubber", "3d_coords": [0.0, 2.0, 0.35],
     "rotation": 0.0, "pixel_coords": [240, 200, 9.0]},
]  # fmt: skip


def _relations(objects):
    """CLEVR's relationships from the x (left/right) and y (front/behind) coordinates, list per object."""
    out = {}
    for name, axis, sign in (("left", 0, -1), ("right", 0, 1), ("front", 1, -1), ("behind", 1, 1)):
        out[name] = [
            [j for j, b in enumerate(objects) if j != i and sign * (b["3d_coords"][axis] - a["3d_coords"][axis]) > 0]
            for i, a in enumerate(objects)
        ]
    return out


def write_clevr(tmp_path, scenes_objects, split="val", size=(32, 48)):
    root = tmp_path / "CLEVR_v1.0"
    (root / "images" / split).mkdir(parents=True)
    (root / "scenes").mkdir()
    rng = np.random.default_rng(0)
    scenes, images = [], []
    for i, objects in enumerate(scenes_objects):
        name = f"CLEVR_{split}_{i:06d}.png"
        rgba = rng.integers(0, 256, size=(*size, 4), dtype=np.uint8)
        Image.fromarray(rgba, "RGBA").save(root / "images" / split / name)
        images.append(rgba[..., :3])
        scenes.append({"image_index": i, "image_filename": name, "split": split, "objects": objects,
                       "relationships": _relations(objects), "directions": {}})  # fmt: skip
    info = {"split": split, "version": "1.0"}
    (root / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"info": info, "scenes": scenes}))
    return root, scenes, np.stack(images)


def test_scenes_and_images_read_back_padded(tmp_path):
    _, scenes, images = write_clevr(tmp_path, [OBJECTS, OBJECTS[:1], []])
    out = clevr.load(tmp_path, "val", max_objects=4)
    np.testing.assert_array_equal(out["images"], images)
    np.testing.assert_array_equal(out["n_objects"], [3, 1, 0])
    np.testing.assert_array_equal(out["present"][1], [True, False, False, False])
    assert [clevr.ATTRIBUTES["color"][c] for c in out["color"][0, :3]] == ["red", "cyan", "yellow"]
    np.testing.assert_array_equal(out["shape"][1], [0, -1, -1, -1])
    np.testing.assert_allclose(out["coords"][0, 1], [-1.5, 0.5, 0.35])
    np.testing.assert_allclose(out["pixel_coords"][0, 2], [240, 200, 9.0])
    np.testing.assert_allclose(out["rotation"][0, :3], [30.5, 200.0, 0.0])
    # relations[r, i, j]: j is RELATIONS[r] of i, as the JSON lists them
    for r, name in enumerate(clevr.RELATIONS):
        for i, row in enumerate(scenes[0]["relationships"][name]):
            assert sorted(np.flatnonzero(out["relations"][0, r, i])) == sorted(row)
    assert out["relations"][0, clevr.RELATIONS.index("left"), 0, 1]  # x -1.5 is left of x 1.0
    part = clevr.load(tmp_path / "CLEVR_v1.0", "val", start=1, stop=2, max_objects=3)
    np.testing.assert_array_equal(part["index"], [1])
    # streamed into fixed-shape batches: the same arrays, a short last batch masked
    from tokdyn.datasets import batches

    got = list(batches.batches(lambda: clevr.iterate(tmp_path, "val", max_objects=4), 2, seed=0, drop_remainder=False))
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in got])[:3], images)
    np.testing.assert_array_equal(np.concatenate([b["present"] for b in got])[:3], out["present"])
    np.testing.assert_array_equal(got[1]["valid"], [True, False])


def test_a_missing_directory_names_the_layout_and_where_clevr_is_published(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist: expected .*CLEVR_v1.0/images/SPLIT.*stanford"):
        clevr.load(tmp_path / "nowhere", "val")
    write_clevr(tmp_path, [OBJECTS])
    with pytest.raises(FileNotFoundError, match="CLEVR_train_scenes.json does not exist"):
        clevr.load(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        clevr.load(tmp_path, "test")


def test_broken_scenes_and_images_are_named(tmp_path):
    root, scenes, _ = write_clevr(tmp_path, [OBJECTS, OBJECTS])
    with pytest.raises(ValueError, match="holds 3 objects, more than max_objects=2"):
        clevr.load(tmp_path, "val", max_objects=2)
    (root / "images" / "val" / "CLEVR_val_000001.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="CLEVR_val_000001.png: the image does not decode"):
        clevr.load(tmp_path, "val")
    (root / "images" / "val" / "CLEVR_val_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="CLEVR_val_000001.png does not exist"):
        clevr.load(tmp_path, "val")
    bad = json.loads(json.dumps(scenes))
    bad[1]["objects"][2]["color"] = "orange"
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": bad}))
    with pytest.raises(ValueError, match=r"scene 1, object 2: color must be one of .*got 'orange'"):
        clevr.read_scenes(tmp_path, "val")
    bad[1]["objects"][2]["color"] = "red"
    bad[1]["relationships"]["left"][0] = [7]
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": bad}))
    with pytest.raises(ValueError, match=r"scene 1: relationships\['left'\]"):
        clevr.read_scenes(tmp_path, "val")


@pytest.mark.parametrize("name", ["../../../outside.png", "/ABSOLUTE", "a/../../outside.png", "..", ""])
def test_an_image_filename_that_leaves_the_dataset_folder_is_refused(tmp_path, name):
    root, scenes, _ = write_clevr(tmp_path, [OBJECTS[:1]])
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(outside)  # a readable image there: before, it was read
    bad = json.loads(json.dumps(scenes))
    bad[0]["image_filename"] = str(outside) if name == "/ABSOLUTE" else name
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": bad}))
    with pytest.raises(
        ValueError, match=r"CLEVR_val_scenes.json: scene 0: image_filename must be a relative path inside"
    ):
        clevr.load(tmp_path, "val")
    bad[0]["image_filename"] = "sub/../CLEVR_val_000000.png"  # a path that stays inside is read
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": bad}))
    assert clevr.load(tmp_path, "val")["images"].shape == (1, 32, 48, 3)


def _set(scene, path, value):
    target = scene
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DROP = object()


@pytest.mark.parametrize(
    "path,value,match",
    [
        (
            ("relationships", "left", 0, 0),
            1.5,
            r"scene 0: relationships\['left'\] must hold .*ints in \[0, 3\).*found 1.5",
        ),
        (("relationships", "front", 1), [True], r"relationships\['front'\] .*found True"),
        (("relationships", "right"), "abc", r"relationships\['right'\] .*got 'abc'"),
        (("relationships",), [], "relationships must map"),
        (("objects", 1, "3d_coords"), "abc", r"scene 0, object 1: 3d_coords must hold 3 finite numbers, got 'abc'"),
        (("objects", 1, "3d_coords"), [1, 2], r"object 1: 3d_coords must hold 3 finite numbers, got \[1, 2\]"),
        (("objects", 0, "pixel_coords"), ["1", 2, 3], r"object 0: pixel_coords must hold 3 finite numbers"),
        (
            ("objects", 0, "3d_coords"),
            [1e39, 0, 0],
            r"object 0: 3d_coords must hold 3 finite numbers",
        ),  # inf in float32
        (("objects", 0, "3d_coords"), [float("nan"), 0, 0], r"object 0: 3d_coords must hold 3 finite numbers"),
        (("objects", 0, "3d_coords"), [10**400, 0, 0], r"object 0: 3d_coords must hold 3 finite numbers"),
        (("objects", 2, "rotation"), "north", r"object 2: rotation must be a finite number .*'north'"),
        (("objects", 2, "color"), ["red"], r"object 2: color must be one of .*got \['red'\]"),
        (("objects", 0), "a cube", r"scene 0, object 0 must be a JSON object"),
        (("objects",), {"0": OBJECTS[0]}, "scene 0: objects must be a list"),
        (("image_index",), "7", r"image_index must be an int >= 0, got '7'"),
        (("image_filename",), 7, "image_filename must be a relative path"),
        (("objects",), _DROP, "scene 0 has no 'objects'"),
    ],
)
def test_fields_of_the_wrong_type_are_named(tmp_path, path, value, match):
    root, scenes, _ = write_clevr(tmp_path, [OBJECTS])
    bad = json.loads(json.dumps(scenes))
    _set(bad[0], path, value)
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": bad}))
    with pytest.raises(ValueError, match=match):
        clevr.read_scenes(tmp_path, "val")
    if path[0] != "image_filename" and isinstance(bad[0].get("objects", []), list):
        with pytest.raises(ValueError, match=match.replace("scene 0", "scene 'CLEVR_val_000000.png'")):
            clevr.scene_arrays(bad[0])  # a scene given directly: checked the same way


def test_a_scenes_file_that_is_not_utf8_json_or_holds_no_scenes_is_named(tmp_path):
    root, _, _ = write_clevr(tmp_path, [OBJECTS])
    path = root / "scenes" / "CLEVR_val_scenes.json"
    for content, match in (
        (b'{"scenes": ["caf\xe9"]}', r"CLEVR_val_scenes.json is not UTF-8 text \(byte 16: b'\\xe9'\)"),
        (b'{"scenes": [', r"CLEVR_val_scenes.json is not JSON"),
        (b'{"images": []}', r"is not a CLEVR scenes file .*: it holds no 'scenes'"),
        (b'{"scenes": {"a": 1}}', r"it holds a 'scenes' dict"),
        (b'{"scenes": [7]}', r"scene 0 must be a JSON object \(a CLEVR scene\)"),
    ):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=match):
            clevr.read_scenes(tmp_path, "val")


@pytest.mark.parametrize("kw", [{"start": -1}, {"stop": -1}, {"start": 0.5}])
def test_a_bad_range_of_scenes_is_named_at_the_call(tmp_path, kw):
    write_clevr(tmp_path, [OBJECTS])
    with pytest.raises((TypeError, ValueError), match=f"{next(iter(kw))} must be"):
        clevr.iterate(tmp_path, "val", **kw)  # raised at the call (before: start=-1 read the last scene)


def test_a_sixteen_bit_image_is_refused_naming_its_mode_and_rgba_drops_alpha_as_tensorflow_does(tmp_path):
    from PIL import Image

    path = tmp_path / "wide.png"
    grey = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)  # up to 55,000: not 8 bits
    Image.fromarray(grey).save(path)  # a 16-bit grey PNG (Pillow mode I;16)
    with pytest.raises(ValueError, match=r"wide.png: the image has more than 8 bits a channel \(Pillow mode 'I;16'\)"):
        clevr.read_image(path)
    # an RGBA image, half transparent: the colour channels as written (decode_png(channels=3) keeps them)
    rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(clevr.read_image(tmp_path / "rgba.png"), rgba[..., :3])
