"""DeepMind's multi-object datasets (Kabra et al. 2019), read without TensorFlow: CLEVR with masks,
Multi-dSprites, Tetrominoes and Objects Room.

Each dataset is published as one GZIP-compressed TFRecord file of ``tf.train.Example``\\ s (a
file a variant) in the ``multi-object-datasets`` Google Cloud Storage bucket
(:data:`PUBLISHED`), with the feature specs of the repository's readers
(github.com/google-deepmind/multi_object_datasets), declared here as :data:`DATASETS`:

- ``clevr_with_masks_train``: 240 x 320 RGB, 11 entities; per object ``x``, ``y``, ``z``,
  ``rotation``, ``visibility`` and ``pixel_coords`` (11, 3) (float), ``size``, ``material``,
  ``shape``, ``color`` (uint8 codes);
- ``multi_dsprites_binarized`` / ``_colored_on_grayscale`` / ``_colored_on_colored``: 64 x 64
  (gray, RGB, RGB), 4 / 6 / 5 entities; per object ``x``, ``y``, ``shape``, ``orientation``,
  ``scale``, ``visibility`` and ``color`` (entities, channels) (float);
- ``tetrominoes_train``: 35 x 35 RGB, 4 entities; per object ``x``, ``y``, ``shape``,
  ``visibility`` and ``color`` (4, 3) (float);
- ``objects_room_train`` / ``_test_six_objects`` / ``_test_empty_room`` / ``_test_identical_color``:
  64 x 64 RGB, 7 / 10 / 4 / 10 entities; image and masks only.

Images and masks are stored one byte a value (:class:`~tokdyn.datasets.example.FeatureSpec`'s
``"uint8"``); masks are ``(entities, H, W, 1)`` except Multi-dSprites', stored ``(H, W,
entities, 1)``, which :func:`read` transposes to the others' order. Entity 0 is the background
(in Objects Room, entities 0-3: the sky, the floor and two halves of the wall).

:func:`find` finds the files in a directory by their published names (directly in it, or in
subfolders named as the bucket's; a file found in both is refused), :func:`read` yields checked
examples as NumPy arrays, and :func:`labels` turns an example's masks into one label image.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np

from tokdyn.datasets.example import FeatureSpec, decode
from tokdyn.datasets.tfrecord import check_range, read_records

PUBLISHED = "https://console.cloud.google.com/storage/browser/multi-object-datasets"
BUCKET_FILES = "https://storage.googleapis.com/multi-object-datasets"  # + /FOLDER/FILE
REPOSITORY = "https://github.com/google-deepmind/multi_object_datasets"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One published file of the multi-object datasets and what its examples hold.

    Attributes:
      name: the dataset (``clevr_with_masks``, ``multi_dsprites``, ``tetrominoes``, ``objects_room``).
      variant: the file's variant (``train``, ``colored_on_grayscale``, ``six_objects``, ...).
      file: the published file name (``clevr_with_masks_train.tfrecords``).
      image_size: ``(H, W)``.
      channels: the image's channels (1 for binarized Multi-dSprites, else 3).
      entities: masks a scene (background and objects, padded: the ``MAX_NUM_ENTITIES`` of the readers).
      background: the leading entities that are background (4 in Objects Room, else 1).
      features: the :class:`~tokdyn.datasets.example.FeatureSpec`\\ s of an example.
      compression: the file's compression (``"GZIP"``).
      masks_last: True when the masks are stored ``(H, W, entities, 1)`` (Multi-dSprites).
    """

    name: str
    variant: str
    file: str
    image_size: tuple
    channels: int
    entities: int
    background: int
    features: tuple
    compression: str = "GZIP"
    masks_last: bool = False

    @property
    def url(self) -> str:
        """Where the file is published."""
        return f"{BUCKET_FILES}/{self.name}/{self.file}"

    @property
    def max_objects(self) -> int:
        """The most foreground objects a scene can hold: ``entities - background``."""
        return self.entities - self.background


def _image_and_masks(size, channels, k, masks_last=False):
    mask = (*size, k, 1) if masks_last else (k, *size, 1)
    return (FeatureSpec("image", (*size, channels), "uint8"), FeatureSpec("mask", mask, "uint8"))


def _clevr() -> Dataset:
    k, size = 11, (240, 320)
    floats = [FeatureSpec(n, (k,), "float32") for n in ("x", "y", "z", "rotation", "visibility")]
    codes = [FeatureSpec(n, (k,), "uint8") for n in ("size", "material", "shape", "color")]
    features = (*_image_and_masks(size, 3, k), *floats, FeatureSpec("pixel_coords", (k, 3), "float32"), *codes)
    return Dataset("clevr_with_masks", "train", "clevr_with_masks_train.tfrecords", size, 3, k, 1, features)


def _dsprites(variant: str, k: int) -> Dataset:
    c = 1 if variant == "binarized" else 3
    floats = [FeatureSpec(n, (k,), "float32") for n in ("x", "y", "shape", "visibility", "orientation", "scale")]
    features = (*_image_and_masks((64, 64), c, k, masks_last=True), *floats, FeatureSpec("color", (k, c), "float32"))
    return Dataset(
        "multi_dsprites", variant, f"multi_dsprites_{variant}.tfrecords", (64, 64), c, k, 1, features, masks_last=True
    )


def _tetrominoes() -> Dataset:
    k = 4
    floats = [FeatureSpec(n, (k,), "float32") for n in ("x", "y", "shape", "visibility")]
    features = (*_image_and_masks((35, 35), 3, k), *floats, FeatureSpec("color", (k, 3), "float32"))
    return Dataset("tetrominoes", "train", "tetrominoes_train.tfrecords", (35, 35), 3, k, 1, features)


def _objects_room(variant: str, k: int) -> Dataset:
    file = "objects_room_train.tfrecords" if variant == "train" else f"objects_room_test_{variant}.tfrecords"
    return Dataset("objects_room", variant, file, (64, 64), 3, k, 4, _image_and_masks((64, 64), 3, k))


DATASETS = {
    d.file: d
    for d in (
        _clevr(),
        _dsprites("binarized", 4),
        _dsprites("colored_on_grayscale", 6),
        _dsprites("colored_on_colored", 5),
        _tetrominoes(),
        _objects_room("train", 7),
        _objects_room("six_objects", 10),
        _objects_room("empty_room", 4),
        _objects_room("identical_color", 10),
    )
}  # published file name -> Dataset


def layout() -> str:
    """The expected layout of a data directory and where the files are published (the text of a
    missing file's error)."""
    names = "\n".join(f"  {d.file}    ({d.url})" for d in DATASETS.values())
    return (
        "a directory holding one or more of the multi-object datasets' files under their published names, "
        "directly or in a subfolder named as the dataset (e.g. DIR/clevr_with_masks/clevr_with_masks_train.tfrecords):\n"
        f"{names}\npublished at {PUBLISHED} (described at {REPOSITORY})"
    )


def find(directory) -> list:
    """The multi-object datasets' files in ``directory``: ``[(Dataset, path), ...]`` in
    :data:`DATASETS`' order, each found by its published name, in ``directory`` itself or in its
    subfolder named as the dataset (the bucket's layout). A file found in both places is refused
    (two copies may differ, and neither is the obvious one), unless both paths are the same file
    (a link to the other).

    Raises:
      FileNotFoundError: ``directory`` does not exist or holds none of them, naming the expected
        layout and where the datasets are published.
      ValueError: a file found both in ``directory`` and in its subfolder, naming both paths.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"data directory {directory!r} does not exist: expected {layout()}")
    found = []
    for d in DATASETS.values():
        paths = [
            p for p in (os.path.join(directory, d.file), os.path.join(directory, d.name, d.file)) if os.path.isfile(p)
        ]
        if len(paths) == 2 and not os.path.samefile(*paths):
            raise ValueError(
                f"data directory {directory!r} holds {d.file} twice: {paths[0]} and {paths[1]}; keep one copy (or give "
                "the file itself)"
            )
        if paths:
            found.append((d, paths[0]))
    if not found:
        raise FileNotFoundError(f"data directory {directory!r} holds none of the datasets' files: expected {layout()}")
    return found


def check_option(data: str, max_objects: int, name: str = "max_objects") -> None:
    """A study's ``--data`` option: ``''`` (none) or a multi-object dataset's file, or a directory
    holding one, whose scenes can hold ``max_objects`` objects (the option ``name``). Only the name is
    looked at: the file itself is read when the study runs.

    Raises:
      TypeError: ``data`` not a str.
      ValueError: no such dataset file (:func:`locate`'s message), or ``max_objects`` above the
        dataset's.
    """
    if not isinstance(data, str):
        raise TypeError(f"data must be a path (a str), got {data!r}")
    if not data:
        return
    try:
        dataset, _ = locate(data)
    except FileNotFoundError as e:
        raise ValueError(f"data: {e}") from None
    if max_objects > dataset.max_objects:
        raise ValueError(
            f"{name} must be at most {dataset.max_objects} with data={data!r} ({dataset.file}'s scenes hold at "
            f"most {dataset.max_objects} objects), got {max_objects}"
        )


def locate(path, dataset: str | None = None) -> tuple:
    """``(Dataset, file)`` for ``path``: a file under its published name, or a directory holding
    exactly one of the files (:func:`find`) or the one named ``dataset`` (a published file name,
    e.g. ``"tetrominoes_train.tfrecords"``).

    Raises:
      FileNotFoundError: as :func:`find`.
      ValueError: a file not under a published name, an unknown ``dataset``, a directory holding
        several files and no ``dataset`` to choose, or one file twice (:func:`find`).
    """
    path = os.fspath(path)
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"dataset must be a published file name, one of {sorted(DATASETS)}, got {dataset!r}")
    if os.path.isfile(path):
        name = os.path.basename(path)
        if name not in DATASETS:
            raise ValueError(
                f"{path!r} is not one of the multi-object datasets' published file names {sorted(DATASETS)}: "
                "the name says which feature spec it holds"
            )
        return DATASETS[name], path
    found = find(path)
    if dataset is not None:
        for d, p in found:
            if d.file == dataset:
                return d, p
        raise FileNotFoundError(f"data directory {path!r} holds no {dataset}: expected {layout()}")
    if len(found) > 1:
        raise ValueError(
            f"data directory {path!r} holds several datasets' files ({[d.file for d, _ in found]}): name the file "
            "itself"
        )
    return found[0]


def read(path, dataset: Dataset | None = None, *, start: int = 0, stop: int | None = None) -> Iterator[dict]:
    """The examples of a multi-object dataset's file, checked against its feature spec.

    Args:
      path: the TFRecord file, or a directory (:func:`locate`).
      dataset: its :class:`Dataset` (default: found from the file's published name).
      start: the first record to yield, an int >= 0 (earlier records are still read and their CRCs
        checked).
      stop: the record to stop before, an int >= 0 (default None: the end of the file).

    Yields:
      ``{feature: array}`` per example: ``image`` ``(H, W, C)`` uint8, ``mask`` ``(entities, H, W)``
      uint8 (the trailing axis of 1 dropped; Multi-dSprites' transposed to this order), the
      per-object features in their spec's shapes, and ``index``, the record's index in the file.

    Raises:
      tokdyn.datasets.tfrecord.RecordError: a bad CRC, a truncated record or a corrupt GZIP stream.
      tokdyn.datasets.example.SpecError: an example that does not hold its dataset's feature spec,
        naming the feature, the record and the file.
      TypeError, ValueError: a ``start`` or ``stop`` that is not an int >= 0 (raised at the call).
    """
    check_range(start, stop)  # at the call, not at the first next()
    return _read(path, dataset, start, stop)


def _read(path, dataset, start: int, stop) -> Iterator[dict]:
    if dataset is None:
        dataset, path = locate(path)
    elif os.path.isdir(path):
        dataset, path = locate(path, dataset.file)
    for i, record in enumerate(read_records(path, dataset.compression)):
        if stop is not None and i >= stop:
            return
        if i < start:
            continue
        where = f"{path}: record {i} ({dataset.file}'s feature spec)"
        out = decode(record, dataset.features, where=where)
        mask = out["mask"][..., 0]
        out["mask"] = np.moveaxis(mask, -1, 0) if dataset.masks_last else mask  # (entities, H, W)
        out["index"] = i
        yield out


def labels(mask, background: int = 1) -> tuple:
    """One label image from an example's masks.

    Args:
      mask: ``(entities, H, W)`` masks (any values; a pixel belongs to the entity of its largest).
      background: the leading entities that are background.

    Returns:
      ``(labels, n_objects)``: ``(H, W)`` int32, 0 on the background entities and ``1 .. n_objects``
      on the objects that own at least one pixel, numbered in the order of their entities; and
      their count.
    """
    owner = np.argmax(np.asarray(mask), axis=0)  # (H, W)
    objects = owner - background + 1
    objects[owner < background] = 0
    present = np.unique(objects[objects > 0])
    lookup = np.zeros(int(mask.shape[0]) + 1, np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lookup[objects], len(present)
