"""CLEVR v1.0 (Johnson et al. 2017): the rendered images (PNG) and the scenes JSON, read with Pillow.

The published archive (``CLEVR_v1.0.zip``, :data:`PUBLISHED`) unpacks to

.. code-block:: text

   CLEVR_v1.0/images/{train,val,test}/CLEVR_{split}_{index:06d}.png
   CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json     (the test split has no scenes)

A scene lists its objects (``color``, ``size``, ``shape``, ``material``, ``3d_coords``, ``rotation``
in degrees, ``pixel_coords``: column, row and depth) and its ``relationships``: for each of
``left``, ``right``, ``front`` and ``behind``, entry ``i`` lists the objects that stand in that
relation to object ``i``. :func:`read_scenes` reads and checks the JSON, :func:`scene_arrays` turns a
scene into fixed-shape arrays (objects padded to ``max_objects`` with a ``present`` mask, the
attributes as indices into :data:`ATTRIBUTES`, the relations as ``(4, M, M)`` booleans) and
:func:`load` reads a range of a split's scenes with their images.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tokdyn.datasets.tfrecord import check_range, require

PUBLISHED = "https://cs.stanford.edu/people/jcjohns/clevr/"
ROOT = "CLEVR_v1.0"
SPLITS = ("train", "val")  # the splits with scenes (test has images only)
ATTRIBUTES = {  # the values of CLEVR's properties, in this order as indices
    "color": ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"),
    "shape": ("cube", "sphere", "cylinder"),
    "material": ("rubber", "metal"),
    "size": ("large", "small"),
}
RELATIONS = ("left", "right", "front", "behind")
MAX_OBJECTS = 10  # CLEVR's scenes hold 3 to 10 objects


def layout() -> str:
    """The expected layout of a CLEVR directory and where CLEVR is published (the text of a missing
    file's error)."""
    return (
        f"a directory holding {ROOT}/ as unpacked from CLEVR_v1.0.zip (or its contents): "
        f"{ROOT}/images/SPLIT/CLEVR_SPLIT_000000.png and {ROOT}/scenes/CLEVR_SPLIT_scenes.json for SPLIT in "
        f"{SPLITS}; published at {PUBLISHED}"
    )


def root(directory) -> str:
    """The CLEVR root under ``directory``: ``directory/CLEVR_v1.0`` or ``directory`` itself, the
    one that holds ``scenes/``; a ``FileNotFoundError`` naming the layout otherwise."""
    directory = os.fspath(directory)
    for path in (os.path.join(directory, ROOT), directory):
        if os.path.isdir(os.path.join(path, "scenes")):
            return path
    missing = "does not exist" if not os.path.isdir(directory) else "holds no CLEVR scenes/"
    raise FileNotFoundError(f"CLEVR directory {directory!r} {missing}: expected {layout()}")


FLOAT32_MAX = float(np.finfo(np.float32).max)  # the readers' arrays are float32: a larger number would be inf


def is_number(value) -> bool:
    """Whether a JSON value is a finite number a float32 holds (an int or a float, not a bool; not
    NaN, not an infinity, not beyond float32's range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= FLOAT32_MAX  # False for NaN and the infinities; exact for ints of any size


def is_index(value) -> bool:
    """Whether a JSON value is an int (not a bool, not a float such as 1.5 or 1.0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def inside(name) -> bool:
    """Whether ``name`` (a file name from a dataset's JSON) is a relative path that stays inside the
    folder it is joined to: not absolute, no drive, and no ``..`` leading out of it."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    if os.path.isabs(name) or os.path.splitdrive(name)[0] or name.startswith(("/", "\\")):
        return False
    norm = os.path.normpath(name)
    return norm != "." and norm.split(os.sep)[0] != ".." and norm.replace("\\", "/").split("/")[0] != ".."


def read_json(path: str, what: str):
    """A JSON file, strictly UTF-8 (RFC 8259); a ``ValueError`` naming ``path`` and the byte when it
    is not UTF-8 text or not JSON (``what`` says what the file should be)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r}): {what}") from None
    del raw  # a split's scenes file is large: not held twice while it is parsed
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e}): {what}") from None


def check_scene(scene, where: str = "scene") -> None:
    """One CLEVR scene's fields checked (see :func:`read_scenes`); a ``ValueError`` naming ``where``
    (the file and scene), the object, the field and the value otherwise."""
    if not isinstance(scene, dict):
        raise ValueError(f"{where} must be a JSON object (a CLEVR scene), got {type(scene).__name__} {scene!r:.80}")
    for key in ("image_filename", "objects", "relationships"):
        if key not in scene:
            raise ValueError(f"{where} has no {key!r} (a CLEVR scene holds image_filename, objects, relationships)")
    name = scene["image_filename"]
    if not inside(name):
        raise ValueError(
            f"{where}: image_filename must be a relative path inside the split's images/ folder (as CLEVR's "
            f"CLEVR_SPLIT_000000.png), got {name!r}: a path that leaves the dataset's folder is not read"
        )
    if "image_index" in scene and not (is_index(scene["image_index"]) and scene["image_index"] >= 0):
        raise ValueError(f"{where}: image_index must be an int >= 0, got {scene['image_index']!r}")
    objects = scene["objects"]
    if not isinstance(objects, list):
        raise ValueError(f"{where}: objects must be a list of objects, got {objects!r:.80}")
    for j, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise ValueError(f"{where}, object {j} must be a JSON object, got {obj!r:.80}")
        for name, values in ATTRIBUTES.items():
            if not isinstance(obj.get(name), str) or obj.get(name) not in values:
                raise ValueError(f"{where}, object {j}: {name} must be one of {values}, got {obj.get(name)!r}")
        for name, n in (("3d_coords", 3), ("pixel_coords", 3)):
            value = obj.get(name)
            if not isinstance(value, list) or len(value) != n or not all(is_number(v) for v in value):
                raise ValueError(f"{where}, object {j}: {name} must hold {n} finite numbers, got {value!r:.80}")
        if "rotation" in obj and not is_number(obj["rotation"]):
            raise ValueError(
                f"{where}, object {j}: rotation must be a finite number (degrees), got {obj['rotation']!r}"
            )
    relationships = scene["relationships"]
    if not isinstance(relationships, dict):
        raise ValueError(f"{where}: relationships must map {RELATIONS} to lists, got {relationships!r:.80}")
    n = len(objects)
    for rel in RELATIONS:
        lists = relationships.get(rel)
        ok = isinstance(lists, list) and len(lists) == n and all(isinstance(row, list) for row in lists)
        bad = None if not ok else next((k for row in lists for k in row if not (is_index(k) and 0 <= k < n)), None)
        if not ok or bad is not None:
            got = f"found {bad!r}" if ok else f"got {lists!r:.80}"
            raise ValueError(
                f"{where}: relationships[{rel!r}] must hold a list of object indices (ints in [0, {n})) per "
                f"object, {got}"
            )


def read_scenes(directory, split: str) -> list:
    """The scenes of ``split`` (``train`` or ``val``), as dicts, each checked: its keys, the
    attributes' values, the coordinates (three finite numbers each), the relations' indices (ints
    among the scene's objects) and ``image_filename`` (a relative path inside the split's
    ``images/`` folder: an absolute one, or one whose ``..`` leaves it, is refused, never read).

    Raises:
      FileNotFoundError: no CLEVR directory or no scenes file, naming the layout.
      ValueError: an unknown split, a file that is not UTF-8 JSON, or a scene that does not hold
        what CLEVR's do, naming the file, the scene, the field and the value.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (the splits with scenes), got {split!r}")
    path = os.path.join(root(directory), "scenes", f"CLEVR_{split}_scenes.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: expected {layout()}")
    what = "a CLEVR scenes file is JSON with a 'scenes' list"
    loaded = read_json(path, what)
    scenes = loaded.get("scenes") if isinstance(loaded, dict) else None
    if not isinstance(scenes, list):
        found = "no 'scenes'" if scenes is None else f"a 'scenes' {type(scenes).__name__}"
        raise ValueError(f"{path} is not a CLEVR scenes file ({what}): it holds {found}")
    for i, scene in enumerate(scenes):
        check_scene(scene, f"{path}: scene {i}")
    return scenes


def scene_arrays(scene: dict, max_objects: int = MAX_OBJECTS) -> dict:
    """One scene as fixed-shape arrays, its objects padded to ``max_objects`` (M).

    Returns:
      ``n_objects`` (int), ``present`` ``(M,)`` bool, ``color`` / ``shape`` / ``material`` /
      ``size`` ``(M,)`` int32 indices into :data:`ATTRIBUTES` (-1 where absent), ``coords``
      ``(M, 3)`` float32 (``3d_coords``), ``pixel_coords`` ``(M, 3)`` float32 (column, row, depth),
      ``rotation`` ``(M,)`` float32 degrees (0 where absent), ``relations`` ``(4, M, M)`` bool:
      ``relations[r, i, j]`` when object ``j`` is ``RELATIONS[r]`` of object ``i``.

    Raises:
      ValueError: the scene holds more than ``max_objects`` objects, or a field that is not what
        CLEVR's are (:func:`check_scene`).
    """
    check_scene(scene, f"scene {scene.get('image_filename')!r}" if isinstance(scene, dict) else "scene")
    objects = scene["objects"]
    n, M = len(objects), max_objects
    if n > M:
        raise ValueError(f"scene {scene.get('image_filename')!r} holds {n} objects, more than max_objects={M}")
    out = {"n_objects": n, "present": np.arange(M) < n}
    for name, values in ATTRIBUTES.items():
        out[name] = np.full(M, -1, np.int32)
        out[name][:n] = [values.index(o[name]) for o in objects]
    for key, name in (("coords", "3d_coords"), ("pixel_coords", "pixel_coords")):
        out[key] = np.zeros((M, 3), np.float32)
        if n:
            out[key][:n] = [o[name] for o in objects]
    out["rotation"] = np.zeros(M, np.float32)
    out["rotation"][:n] = [o.get("rotation", 0.0) for o in objects]
    rel = np.zeros((len(RELATIONS), M, M), bool)
    for r, name in enumerate(RELATIONS):
        for i, row in enumerate(scene["relationships"][name]):
            rel[r, i, list(row)] = True
    out["relations"] = rel
    return out


WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""Pillow's modes of images with more than 8 bits a channel (a 16-bit grey PNG opens as ``"I;16"``), which
:func:`read_image` refuses: Pillow's conversion to RGB clips them to 255 rather than scaling them."""


def read_image(path) -> np.ndarray:
    """A PNG as ``(H, W, 3)`` uint8 RGB, as TensorFlow's ``decode_png(channels=3)`` gives CLEVR's images
    (they are RGBA, opaque: the alpha channel is dropped, as TensorFlow Datasets' CLEVR does); a
    ``ValueError`` naming the file when it does not decode, and naming the file and its mode when it has
    more than 8 bits a channel (:data:`WIDE_MODES`: converting it would clip, not scale)."""
    Image = require("PIL.Image", "pillow")
    try:
        with Image.open(path) as im:
            mode = im.mode
            rgb = None if mode in WIDE_MODES else np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: the image does not decode ({e})") from e
    if rgb is None:
        raise ValueError(
            f"{path}: the image has more than 8 bits a channel (Pillow mode {mode!r}), which converting to 8-bit "
            "RGB would clip; CLEVR's images are 8-bit RGBA: convert it to 8 bits first"
        )
    return rgb


def iterate(directory, split: str, *, start: int = 0, stop: int | None = None, max_objects: int = MAX_OBJECTS):
    """Scenes ``start:stop`` of ``split`` (ints >= 0; ``stop`` None: to the end) one at a time, each ``{"image": (H, W, 3) uint8, "index":
    image_index, **scene_arrays(scene, max_objects)}``: fixed shapes, for
    :func:`tokdyn.datasets.batches.batches` (``lambda: clevr.iterate(DIR, "train")``) without holding
    the split in memory.

    Raises:
      FileNotFoundError: as :func:`read_scenes`, or a missing image (naming it).
      ValueError: an image that does not decode (naming it), a scene with more than
        ``max_objects`` objects, or a ``start`` / ``stop`` that is not an int >= 0.
    """
    check_range(start, stop)  # at the call, not at the first next()
    return _iterate(directory, split, start, stop, max_objects)


def _iterate(directory, split: str, start: int, stop, max_objects: int):
    base = root(directory)
    for i, scene in enumerate(read_scenes(directory, split)[start:stop]):
        path = os.path.join(base, "images", split, os.path.normpath(scene["image_filename"]))  # inside: checked
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist (scene {scene.get('image_index')}): expected {layout()}")
        yield {
            "image": read_image(path),
            "index": scene.get("image_index", start + i),
            **scene_arrays(scene, max_objects),
        }


def load(directory, split: str, *, start: int = 0, stop: int | None = None, max_objects: int = MAX_OBJECTS) -> dict:
    """Scenes ``start:stop`` of ``split`` with their images, stacked (a whole split's images are
    tens of gigabytes: take a range, or stream with :func:`iterate`).

    Returns:
      ``images`` ``(n, H, W, 3)`` uint8, ``index`` ``(n,)`` (the scenes' ``image_index``) and every
      array of :func:`scene_arrays` with a leading axis of n.

    Raises:
      FileNotFoundError: as :func:`read_scenes`, or a missing image (naming it).
      ValueError: an image that does not decode, or one of another size than the first, naming it.
    """
    rows = list(iterate(directory, split, start=start, stop=stop, max_objects=max_objects))
    for r in rows[1:]:
        if r["image"].shape != rows[0]["image"].shape:
            raise ValueError(
                f"scene {r['index']}'s image is {r['image'].shape[:2]} pixels, the first's {rows[0]['image'].shape[:2]}"
            )
    if not rows:
        return {"images": np.zeros((0, 0, 0, 3), np.uint8), "index": np.zeros(0, np.int64)}
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k not in ("image", "index")}
    out["images"] = np.stack([r["image"] for r in rows])
    out["index"] = np.asarray([r["index"] for r in rows], np.int64)
    return out
