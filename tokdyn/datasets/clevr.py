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

from tokdyn.datasets.tfrecord import require

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


def _check_scene(scene, path: str, i: int) -> None:
    where = f"{path}: scene {i}"
    for key in ("image_filename", "objects", "relationships"):
        if key not in scene:
            raise ValueError(f"{where} has no {key!r} (a CLEVR scene holds image_filename, objects, relationships)")
    for j, obj in enumerate(scene["objects"]):
        for name, values in ATTRIBUTES.items():
            if obj.get(name) not in values:
                raise ValueError(f"{where}, object {j}: {name} must be one of {values}, got {obj.get(name)!r}")
        for name, n in (("3d_coords", 3), ("pixel_coords", 3)):
            if len(obj.get(name, ())) != n:
                raise ValueError(f"{where}, object {j}: {name} must hold {n} numbers, got {obj.get(name)!r}")
    for rel in RELATIONS:
        lists = scene["relationships"].get(rel)
        n = len(scene["objects"])
        if lists is None or len(lists) != n or any(not 0 <= k < n for row in lists for k in row):
            raise ValueError(
                f"{where}: relationships[{rel!r}] must hold a list of object indices in [0, {n}) per object"
            )


def read_scenes(directory, split: str) -> list:
    """The scenes of ``split`` (``train`` or ``val``), as dicts, each checked (its keys, the
    attributes' values, the coordinates' lengths, the relations' indices).

    Raises:
      FileNotFoundError: no CLEVR directory or no scenes file, naming the layout.
      ValueError: an unknown split, or a scene that does not hold what CLEVR's do, naming it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (the splits with scenes), got {split!r}")
    path = os.path.join(root(directory), "scenes", f"CLEVR_{split}_scenes.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: expected {layout()}")
    with open(path) as f:
        try:
            scenes = json.load(f)["scenes"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a CLEVR scenes file (JSON with a 'scenes' list): {e}") from e
    for i, scene in enumerate(scenes):
        _check_scene(scene, path, i)
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
      ValueError: the scene holds more than ``max_objects`` objects.
    """
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


def read_image(path) -> np.ndarray:
    """A PNG as ``(H, W, 3)`` uint8 RGB (CLEVR's are RGBA: the alpha channel is dropped); a
    ``ValueError`` naming the file when it does not decode."""
    Image = require("PIL.Image", "pillow")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: the image does not decode ({e})") from e


def iterate(directory, split: str, *, start: int = 0, stop: int | None = None, max_objects: int = MAX_OBJECTS):
    """Scenes ``start:stop`` of ``split`` one at a time, each ``{"image": (H, W, 3) uint8, "index":
    image_index, **scene_arrays(scene, max_objects)}``: fixed shapes, for
    :func:`tokdyn.datasets.batches.batches` (``lambda: clevr.iterate(DIR, "train")``) without holding
    the split in memory.

    Raises:
      FileNotFoundError: as :func:`read_scenes`, or a missing image (naming it).
      ValueError: an image that does not decode (naming it), or a scene with more than
        ``max_objects`` objects.
    """
    base = root(directory)
    for i, scene in enumerate(read_scenes(directory, split)[start:stop]):
        path = os.path.join(base, "images", split, scene["image_filename"])
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
