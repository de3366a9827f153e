"""MOVi (Kubric's Multi-Object Video datasets, Greff et al. 2022), read without TensorFlow or
TensorFlow Datasets: the frames, the instance segmentations and the objects' per-frame visibility
and image positions.

MOVi-A to MOVi-F are published as TensorFlow Datasets builds in the ``kubric-public`` Google Cloud
Storage bucket (:data:`PUBLISHED`): ``tfds/<variant>/<resolution>/<version>/`` holds
``dataset_info.json``, ``features.json`` and the shards ``<variant>-<split>.tfrecord-NNNNN-of-MMMMM``
(plain TFRecord files, not compressed) of serialized ``tf.train.Example``\\ s. TFDS writes a
nested feature dictionary flat, its keys joined by ``/``; a fixed-size tensor is one list of its
values in row-major order (integers of any width in an ``int64_list``, floats in a
``float_list``), a sequence of images one ``bytes_list`` of encoded images, one a frame. The
features read here (the builders' ``movi_*.py`` in github.com/google-research/kubric,
``challenges/movi``) are:

- ``metadata/num_frames``, ``metadata/height``, ``metadata/width``, ``metadata/num_instances``:
  an ``int64_list`` of one value each (F, H, W and n, the objects);
- ``metadata/video_name``: a ``bytes_list`` of one string (read as text where present, a number too);
- ``video``: a ``bytes_list`` of F PNG images, read as ``(F, H, W, 3)`` uint8;
- ``segmentations``: a ``bytes_list`` of F 8-bit one-channel PNG images, read as ``(F, H, W)``
  uint8: 0 the background, ``i + 1`` instance i;
- ``instances/visibility``: an ``int64_list`` of n * F values, read as ``(n, F)``, each object's
  visible pixels in each frame;
- ``instances/image_positions``: a ``float_list`` of n * F * 2 values, read as ``(n, F, 2)``, each
  object's centre of mass in the image (row, column), in [0, 1].

Everything the study needs is in the example itself (its sizes in ``metadata/*``), so no TFDS
metadata is read. The other features (depth, optical flow, normals, object coordinates, camera,
collision events, the variants' labels, the ragged ``instances/bboxes``) are left unread:
TensorFlow's parser ignores features it is not asked for, and so does :func:`read`. Every record is
checked: the TFRecord framing's CRC32Cs, each feature's kind and count against the example's own
sizes, every PNG decoding to its frame's shape, and every segmentation id naming an instance; an
error names the feature, the frame where it applies, the record and the file.

:func:`find` finds a split's shards under a directory by their published names, :func:`read`
yields checked examples, and :func:`instance_arrays` pads an example's objects to a fixed count
for batches.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator

import numpy as np

from tokdyn.datasets.example import SpecError, parse_example
from tokdyn.datasets.tfrecord import check_range, read_records, require

PUBLISHED = "https://console.cloud.google.com/storage/browser/kubric-public/tfds"
BUCKET = "gs://kubric-public/tfds"  # + /<variant>/<resolution>/<version>/
REPOSITORY = "https://github.com/google-research/kubric/tree/main/challenges/movi"
VARIANTS = ("movi_a", "movi_b", "movi_c", "movi_d", "movi_e", "movi_f")
SPLITS = ("train", "validation", "test")
SHARD = re.compile(r"^(movi_[a-f])-(train|validation|test)\.tfrecord-(\d{5})-of-(\d{5})$")
SIZES = ("num_frames", "height", "width", "num_instances")  # metadata/<name>, one int each
RESOLUTION = re.compile(r"^\d+x\d+$")  # a build's folder: <variant>/<resolution>/<version>/
VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def layout() -> str:
    """The expected layout of a MOVi directory and where MOVi is published (the text of a missing
    file's error)."""
    return (
        "a directory holding a MOVi variant's TFDS shards under their published names, in any subfolder (as "
        f"copied from {BUCKET}/<variant>/<resolution>/<version>/, e.g. DIR/movi_a/128x128/1.0.0/"
        "movi_a-train.tfrecord-00000-of-01024); variants " + ", ".join(VARIANTS) + f"; published at {PUBLISHED} "
        f"(described at {REPOSITORY})"
    )


def build_of(directory: str, path: str) -> tuple:
    """``(resolution, version)`` of the shard at ``path``: the folders of its path below
    ``directory`` named as TFDS's (``128x128``, ``1.0.0``; the last of each), None where there is none."""
    folders = os.path.relpath(os.path.dirname(path), directory).split(os.sep)
    resolution = next((f for f in reversed(folders) if RESOLUTION.match(f)), None)
    version = next((f for f in reversed(folders) if VERSION.match(f)), None)
    return resolution, version


def _build_line(build: tuple, shards: dict) -> str:
    """One build in an error: its resolution and version folders, its shards and a folder of them."""
    resolution, version = build
    n = sum(len(p) for p in shards.values())
    folder = os.path.dirname(next(iter(shards.values()))[0])
    return (
        f"{resolution or '(no resolution folder)'}/{version or '(no version folder)'} ({n} shard"
        f"{'s' if n != 1 else ''} in {folder})"
    )


def _choice(builds) -> str:
    """How to choose one of several builds: the arguments that tell them apart, and the folder."""
    parts = []
    for i, arg in enumerate(("resolution", "version")):
        values = sorted({b[i] for b in builds if b[i]})
        if len(values) > 1:
            parts.append(f"{arg}=" + " or ".join(repr(v) for v in values))
    options = f"choose one with {' and '.join(parts)}, or " if parts else ""
    return f"{options}give the folder of one build as the directory"


def find(
    directory,
    split: str = "train",
    variant: str | None = None,
    *,
    resolution: str | None = None,
    version: str | None = None,
) -> list:
    """The shards of ``split`` under ``directory``: ``[path, ...]`` in shard order, found by their
    published names (``<variant>-<split>.tfrecord-NNNNN-of-MMMMM``) in any subfolder.

    The shards of one build (a variant at one resolution and version, as the bucket's
    ``<variant>/<resolution>/<version>/`` folders hold them) are never mixed with another's: a
    directory holding several builds of the split needs ``resolution`` and / or ``version`` to
    choose one (the error names those found), and a shard number found twice in one build is
    refused, naming both files.

    Args:
      directory: the directory.
      split: ``train``, ``validation`` or ``test``.
      variant: ``movi_a`` ... ``movi_f``; needed only when the directory holds several variants.
      resolution: a folder name such as ``"128x128"``: only shards under a folder so named; needed
        only when the directory holds several resolutions.
      version: a folder name such as ``"1.0.0"``: only shards under a folder so named; needed only
        when the directory holds several versions.

    Raises:
      FileNotFoundError: ``directory`` does not exist or holds no shard of ``split`` (of the
        chosen resolution and version), naming the expected layout and where MOVi is published.
      ValueError: an unknown ``split`` or ``variant``, a ``resolution`` or ``version`` not named
        as TFDS names them, shards of several variants and no ``variant``, of several builds and
        no choice among them, a shard number found twice, or an incomplete set of shards (naming
        the missing ones).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    for name, value, pattern, example in (
        ("resolution", resolution, RESOLUTION, "128x128"),
        ("version", version, VERSION, "1.0.0"),
    ):
        if value is not None and not (isinstance(value, str) and pattern.match(value)):
            raise ValueError(f"{name} must be None or a folder name such as {example!r}, got {value!r}")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MOVi directory {directory!r} does not exist: expected {layout()}")
    found = {}  # variant -> build -> shard -> [paths]
    counts = {}
    for base, _, files in os.walk(directory):
        for name in sorted(files):
            m = SHARD.match(name)
            if not (m and m.group(2) == split and (variant is None or m.group(1) == variant)):
                continue
            path = os.path.join(base, name)
            build = build_of(directory, path)
            if (resolution is not None and build[0] != resolution) or (version is not None and build[1] != version):
                continue
            found.setdefault(m.group(1), {}).setdefault(build, {}).setdefault(int(m.group(3)), []).append(path)
            counts.setdefault((m.group(1), build), set()).add(int(m.group(4)))
    chosen = "".join(f" {k}={v!r}" for k, v in (("resolution", resolution), ("version", version)) if v is not None)
    if not found:
        which = f"{variant}'s " if variant else ""
        raise FileNotFoundError(
            f"MOVi directory {directory!r} holds no {which}{split} shard{' under' + chosen if chosen else ''}: "
            f"expected {layout()}"
        )
    if len(found) > 1:
        raise ValueError(f"MOVi directory {directory!r} holds {split} shards of {sorted(found)}: name the variant")
    ((name, builds),) = found.items()
    if len(builds) > 1:
        raise ValueError(
            f"MOVi directory {directory!r} holds {name}'s {split} shards of {len(builds)} builds: "
            + "; ".join(_build_line(b, shards) for b, shards in sorted(builds.items(), key=str))
            + f": their videos differ in size or version, so they are not read together: {_choice(builds)}"
        )
    ((build, shards),) = builds.items()
    twice = next((n for n in sorted(shards) if len(shards[n]) > 1), None)
    if twice is not None:
        a, b = shards[twice][:2]
        raise ValueError(
            f"MOVi directory {directory!r} holds {name}'s {split} shard {twice:05d} twice: {a} and {b}; keep one "
            "copy (or give the folder of one)"
        )
    (total, *more) = sorted(counts[(name, build)])
    if more:
        raise ValueError(
            f"{directory}: {name}'s {split} shards declare different totals {sorted(counts[(name, build)])}"
        )
    missing = sorted(set(range(total)) - set(shards))
    if missing and missing[0] < max(shards):  # a prefix of the shards is a subset; a hole in it a mistake
        raise ValueError(
            f"{directory}: {name}'s {split} shards skip shard {missing[0]:05d} of {total} (they hold "
            f"{len(shards)}, up to {max(shards):05d}): fetch the shards from 00000 on without gaps"
        )
    return [shards[i][0] for i in sorted(shards)]


def _ints(features, name: str, count: int | None, where: str) -> np.ndarray:
    """Feature ``name`` as an ``int64_list`` of ``count`` values (any count when None)."""
    return np.asarray(_list(features, name, "int64_list", count, where), np.int64)


def _list(features, name: str, kind: str, count: int | None, where: str):
    if name not in features:
        raise SpecError(f"{where}: feature {name!r} is missing (a MOVi example holds it: {layout()})")
    feature = features[name]
    found = feature.WhichOneof("kind")
    if found != kind:
        raise SpecError(f"{where}: feature {name!r} is a {found or 'empty feature'}, but MOVi stores it as a {kind}")
    values = getattr(feature, kind).value
    if count is not None and len(values) != count:
        raise SpecError(f"{where}: feature {name!r} holds {len(values)} values, but the example's sizes need {count}")
    return values


def _png(data: bytes, shape: tuple, name: str, frame: int, where: str) -> np.ndarray:
    """One encoded frame of feature ``name`` decoded (Pillow) and checked against ``shape``."""
    Image = require("PIL.Image", "pillow")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            array = np.asarray(im)
    except Exception as e:  # Pillow raises several kinds for a file that is not an image
        raise SpecError(f"{where}: feature {name!r}, frame {frame}: the image does not decode ({e})") from e
    if array.ndim == 3 and len(shape) == 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != shape or array.dtype != np.uint8:
        raise SpecError(
            f"{where}: feature {name!r}, frame {frame}: the image is {array.shape} {array.dtype}, but the example's "
            f"sizes need {shape} uint8"
        )
    return array


def _video_name(features) -> str:
    """``metadata/video_name`` as text: a string (TFDS's ``Text``) or a number; ``""`` when absent
    (it names the video only, nothing is read from it)."""
    if "metadata/video_name" not in features:
        return ""
    feature = features["metadata/video_name"]
    values = getattr(feature, feature.WhichOneof("kind") or "bytes_list").value
    if len(values) != 1:
        return ""
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def decode(data: bytes, *, where: str = "record") -> dict:
    """One serialized MOVi example's frames, segmentations and objects, checked (see the module).

    Returns:
      ``video`` ``(F, H, W, 3)`` uint8, ``segmentations`` ``(F, H, W)`` uint8, ``visibility``
      ``(n, F)`` int64, ``image_positions`` ``(n, F, 2)`` float32, ``num_instances`` (int) and
      ``video_name`` (str).

    Raises:
      tokdyn.datasets.example.SpecError: a feature missing, of another kind or count, a frame
        that does not decode or has another shape, a size out of range, or a segmentation id
        beyond the instances, naming the feature (and the frame), and ``where``.
    """
    features = parse_example(data, where=where).features.feature
    sizes = {}
    for name in SIZES:
        (value,) = _ints(features, f"metadata/{name}", 1, where)
        low = 0 if name == "num_instances" else 1
        if not low <= value <= 1 << 16:
            raise SpecError(f"{where}: feature 'metadata/{name}' is {value}, outside [{low}, 65536]")
        sizes[name] = int(value)
    F, H, W, n = (sizes[k] for k in SIZES)
    name = _video_name(features)
    video = np.stack(
        [_png(v, (H, W, 3), "video", f, where) for f, v in enumerate(_list(features, "video", "bytes_list", F, where))]
    )
    seg = np.stack(
        [
            _png(v, (H, W), "segmentations", f, where)
            for f, v in enumerate(_list(features, "segmentations", "bytes_list", F, where))
        ]
    )
    if seg.max() > n:
        f = int(np.argmax(seg.reshape(F, -1).max(axis=1) > n))
        raise SpecError(
            f"{where}: feature 'segmentations', frame {f}: id {int(seg[f].max())} names no instance (the example "
            f"holds {n}: ids 0, the background, to {n})"
        )
    visibility = _ints(features, "instances/visibility", n * F, where).reshape(n, F)
    positions = np.asarray(
        _list(features, "instances/image_positions", "float_list", n * F * 2, where), np.float32
    ).reshape(n, F, 2)
    return dict(
        video=video,
        segmentations=seg,
        visibility=visibility,
        image_positions=positions,
        num_instances=n,
        video_name=name,
    )


def read(
    path,
    split: str = "train",
    *,
    variant: str | None = None,
    resolution: str | None = None,
    version: str | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[dict]:
    """The examples of a MOVi split, checked, in shard order.

    Args:
      path: a directory holding the split's shards (:func:`find`), or one shard file.
      split: the split (for a directory).
      variant: the variant (for a directory holding several).
      resolution: the resolution folder (for a directory holding several; :func:`find`).
      version: the version folder (for a directory holding several).
      start: the first example to yield, an int >= 0 (counted over the shards in order; earlier
        ones are still read and their CRCs checked).
      stop: the example to stop before, an int >= 0 (default None: the end).

    Yields:
      :func:`decode`'s dict per example, with ``index`` (the example's index in the split) and
      ``file`` (its shard).

    Raises:
      tokdyn.datasets.tfrecord.RecordError: a bad CRC or a truncated record, naming the shard.
      tokdyn.datasets.example.SpecError: as :func:`decode`, naming the record and the shard.
      FileNotFoundError, ValueError: as :func:`find`; a ``start`` or ``stop`` that is not an int >= 0.
    """
    check_range(start, stop)
    path = os.fspath(path)
    if os.path.isfile(path):
        if not SHARD.match(os.path.basename(path)):
            raise ValueError(
                f"{path!r} is not a MOVi shard's published name (<variant>-<split>.tfrecord-NNNNN-of-MMMMM): "
                f"expected {layout()}"
            )
        files = [path]
    else:
        files = find(path, split, variant, resolution=resolution, version=version)
    return _examples(files, start, stop)


def _examples(files: list, start: int, stop) -> Iterator[dict]:
    i = 0
    for file in files:
        for r, record in enumerate(read_records(file)):
            if stop is not None and i >= stop:
                return
            if i >= start:
                out = decode(record, where=f"{file}: record {r} (a MOVi example)")
                out["index"], out["file"] = i, file
                yield out
            i += 1


def instance_arrays(example: dict, max_instances: int) -> dict:
    """An example's objects padded to ``max_instances`` slots (instance i in slot i), for batches:
    ``present`` ``(M,)`` bool, ``visibility`` ``(M, F)`` int64 and ``image_positions`` ``(M, F, 2)``
    float32 (zeros where absent).

    Raises:
      ValueError: the example holds more than ``max_instances`` objects.
    """
    n = example["num_instances"]
    if n > max_instances:
        raise ValueError(f"max_instances must be at least the example's {n} instances, got {max_instances}")
    F = example["video"].shape[0]
    out = dict(
        present=np.arange(max_instances) < n,
        visibility=np.zeros((max_instances, F), np.int64),
        image_positions=np.zeros((max_instances, F, 2), np.float32),
    )
    out["visibility"][:n] = example["visibility"]
    out["image_positions"][:n] = example["image_positions"]
    return out
