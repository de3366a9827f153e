"""Clips of a MOVi split as fixed-size arrays for the video study: frames in [0, 1] and one track-id
mask a frame, cut to the first frames, resized, and kept by object count.

:func:`load` reads a MOVi split (:mod:`tokdyn.datasets.movi`) in order, keeps the videos with
exactly ``objects`` objects (the study gives every video as many tokens), takes their first
``frames`` frames, resizes each frame bilinearly and its segmentation to its nearest pixels
(Pillow), and counts each object's pixels in every resized frame. Only the videos it keeps are
decoded: of the others it reads the sizes (``metadata/num_instances``, ``num_frames``), so that a
split holding fewer usable videos than asked is counted whole in about the time of reading its
files, and raises :class:`TooFewClips`, which counts the split's videos by their objects and
frames, so a caller can say which smaller count, which other ``objects`` or which fewer ``frames``
the split does hold (:func:`ways_out`, :func:`shortfall_message`).

MOVi publishes each frame's visible segmentation only, not the objects' unoccluded masks, so an
object's pixels in view occluded or not (the synthetic videos' ``area``) are not known: ``area``
here is the visible count, which makes an object wholly hidden behind another look as if it had
left the view, and no frame shows an object partly hidden (the video study's ``overlap`` class is
empty on MOVi).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from tokdyn.datasets import movi
from tokdyn.datasets.example import parse_example
from tokdyn.datasets.scenes import resize
from tokdyn.datasets.shortfall import Shortfall, fit_product, line
from tokdyn.datasets.tfrecord import read_records


@dataclasses.dataclass(frozen=True)
class LoadedClips:
    """Clips read from a MOVi split, in the fields of :class:`tokdyn.data.videos.Videos` that the
    video study reads.

    Attributes:
      images: (n, F, size, size, 3) float32 RGB in [0, 1].
      masks: (n, F, size, size) int32 track ids: 0 the background, ``j + 1`` MOVi's instance ``j``
        (the same id in every frame).
      visible: (n, F, M) int32 pixels of track ``j + 1`` in each resized frame (M = ``objects``).
      area: (n, F, M) int32, equal to ``visible`` (MOVi has no unoccluded masks: the module's note).
      position: (n, F, M, 2) float32 centroid (row, col) of each object's visible pixels in canvas
        units ([0, 1]); 0 where it has none.
      index: (n,) int64 the clips' indices in the split.
    """

    images: np.ndarray
    masks: np.ndarray
    visible: np.ndarray
    area: np.ndarray
    position: np.ndarray
    index: np.ndarray

    def __getitem__(self, key) -> "LoadedClips":
        """The clips ``key`` (a slice or index array) of every field."""
        return LoadedClips(*(getattr(self, f.name)[key] for f in dataclasses.fields(self)))


class TooFewClips(Shortfall):
    """A MOVi split holding fewer usable videos than asked (:func:`load`; a
    :class:`~tokdyn.datasets.shortfall.Shortfall`). Besides the message:

    Attributes:
      file: the directory (or shard) read.
      split: the split read.
      found: the usable videos it holds (exactly ``objects`` objects and at least ``frames`` frames).
      asked: the videos asked for.
      records: the examples read (all of the split's).
      by_objects: ``{n: {f: videos}}``: the split's videos with ``n`` objects and ``f`` frames.
      objects: the objects asked.
      frames: the frames asked.
    """

    def usable(self, objects: int, frames: int) -> int:
        """The videos of the split with exactly ``objects`` objects and at least ``frames`` frames."""
        return sum(c for f, c in self.by_objects.get(objects, {}).items() if f >= frames)


def ways_out(err: TooFewClips, counts: dict, *, trim=None, objects_option=None, frames_option=None, objects=None):
    """The changes of a study's options that would fit the split ``err`` names, as phrases: the
    counts (whose product is the videos taken) lowered (:func:`~tokdyn.datasets.shortfall.fit_product`,
    ``trim`` first); ``objects_option`` set to the nearest other count of objects the split holds
    enough videos of; ``frames_option`` lowered to the most frames that leaves enough; or both.
    Where none of these fits, the nearest setting of objects and frames that holds any video, with
    the counts lowered to it.

    Args:
      err: the :class:`TooFewClips`.
      counts: ``{option: count}`` multiplied, e.g. ``{"--seeds": 12, "--n-videos": 32}``.
      trim: the option lowered first (the others kept where it can take the whole shortfall).
      objects_option, frames_option: the options of ``err.objects`` and ``err.frames`` (None: not an
        option).
      objects: ``(low, high)``: the counts of objects ``objects_option`` may take (default: from 1).

    Returns:
      ``[phrase, ...]``: e.g. ``"--n-videos 3"``, ``"--objects 4 (it holds 40 such clips)"``.
    """
    need = math.prod(counts.values())
    low, high = objects if objects is not None else (1, None)
    others = [] if objects_option is None else [n for n in err.by_objects if n != err.objects]
    others = sorted(
        (n for n in others if n >= low and (high is None or n <= high)), key=lambda n: (abs(n - err.objects), n)
    )  # the nearest count of objects first
    fewer = range(err.frames - 1, 0, -1) if frames_option is not None else ()
    settings = [(n, f) for n in [err.objects, *others] for f in [err.frames, *fewer]][1:]  # the asked one left out

    def change(n, f, fitted=None):
        parts = ([f"{objects_option} {n}"] if n != err.objects else []) + (
            [f"{frames_option} {f}"] if f != err.frames else []
        )
        parts += [f"{k} {v}" for k, v in (fitted or {}).items() if v != counts[k]]
        return " ".join(parts)

    out = []
    fitted = fit_product(counts, err.found, trim)
    if fitted is not None:
        out.append(change(err.objects, err.frames, fitted))
    enough = [(n, f) for n, f in settings if err.usable(n, f) >= need]
    wider = [s for s in enough if s[1] == err.frames][:1] + [s for s in enough if s[0] == err.objects][:1]
    wider = wider or enough[:1]  # objects and frames both changed, where neither alone will do
    if not out and not wider:  # the setting holding the most videos (the nearest of equals), the counts lowered to it
        some = max(settings, key=lambda s: err.usable(*s), default=None)
        if some is not None and err.usable(*some) >= 1:
            out.append(f"{change(*some, fit_product(counts, err.usable(*some), trim))} ({_holds(err.usable(*some))})")
    out += [f"{change(n, f)} ({_holds(err.usable(n, f))})" for n, f in wider]
    return out


def _holds(n: int) -> str:
    return f"it holds {n:,} such clip{'' if n == 1 else 's'}"


def shortfall_message(err: TooFewClips, counts: dict, ways: list) -> str:
    """One line for a split with too few usable videos: ``err``'s message (the directory, its
    count), what the caller takes (``counts``, ``{option: count}``, multiplied) and ``ways``
    (:func:`ways_out`), or that no setting of those options fits the split
    (:func:`tokdyn.datasets.shortfall.line`)."""
    held = f"these shards (not one of their {err.records:,} videos can be taken)"
    return line(err, counts, ways, held=held, more=f"fetch more of the split's shards ({movi.BUCKET})", product=True)


def counts_and_centroids(masks: np.ndarray, objects: int) -> tuple:
    """The pixels and centroids of each track of track-id masks ``(F, H, W)``: ``(visible,
    position)``, the pixels of ids 1 to ``objects`` ``(F, objects)`` int32 and their centroid
    ``(F, objects, 2)`` float32 (row, col) in canvas units (pixel centres at ``(i + 0.5) / side``),
    0 without pixels."""
    F, H, W = masks.shape
    onehot = masks[:, None] == np.arange(1, objects + 1)[None, :, None, None]  # (F, M, H, W)
    visible = onehot.sum(axis=(2, 3)).astype(np.int32)
    rows = (np.arange(H) + 0.5) / H
    cols = (np.arange(W) + 0.5) / W
    n = np.maximum(visible, 1)
    position = np.stack([(onehot.sum(axis=3) * rows).sum(axis=2) / n, (onehot.sum(axis=2) * cols).sum(axis=2) / n], -1)
    return visible, position.astype(np.float32)


def load(path, count: int, *, size: int, frames: int, objects: int, split: str = "train") -> LoadedClips:
    """The first ``count`` clips of a MOVi split with exactly ``objects`` objects and at least
    ``frames`` frames, their first ``frames`` frames resized to ``size x size``.

    Args:
      path: a directory holding the split's shards, or one shard (:func:`tokdyn.datasets.movi.read`).
      count: clips to keep.
      size: the side of the resized frames.
      frames: frames a clip (a video with fewer is not kept; MOVi's have 24).
      objects: the objects a kept video holds.
      split: the split read from a directory.

    Raises:
      TooFewClips: the split holds fewer than ``count`` such videos (naming how many it has; a
        ``ValueError``, with the split's videos counted by their objects and frames).
      ValueError: an argument out of range, and the errors of :func:`tokdyn.datasets.movi.read`
        (a bad CRC, a truncated record, a feature of another kind or count, naming the record and
        the shard; of the videos not kept only the sizes are read and checked).
    """
    for name, value, low in (("count", count, 0), ("size", size, 1), ("frames", frames, 1), ("objects", objects, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value}")
    images, masks, visible, position, index = [], [], [], [], []
    by_objects = {}  # n -> frames -> videos: the split's videos (TooFewClips counts them)
    seen = 0
    for i, (record, where) in enumerate(_records(path, split) if count > 0 else ()):
        seen += 1
        n, F = _sizes(record, where)
        by_objects.setdefault(n, {})[F] = by_objects.setdefault(n, {}).get(F, 0) + 1
        if n != objects or F < frames:
            continue
        ex = movi.decode(record, where=where)
        pairs = [resize(ex["video"][f], ex["segmentations"][f].astype(np.int32), size) for f in range(frames)]
        clip_masks = np.stack([p[1] for p in pairs])
        v, pos = counts_and_centroids(clip_masks, objects)
        images.append(np.stack([p[0] for p in pairs]))
        masks.append(clip_masks)
        visible.append(v)
        position.append(pos)
        index.append(i)
        if len(images) == count:
            break
    if len(images) < count:
        raise TooFewClips(
            f"{path} holds {len(images)} {split} video{'' if len(images) == 1 else 's'} with {objects} objects and at "
            f"least {frames} frames in its {seen} examples, fewer than the {count} asked for",
            file=os.fspath(path),
            split=split,
            found=len(images),
            asked=count,
            records=seen,
            by_objects=by_objects,
            objects=objects,
            frames=frames,
        )
    visible_array = np.stack(visible) if visible else np.zeros((0, frames, objects), np.int32)
    return LoadedClips(
        images=np.stack(images) if images else np.zeros((0, frames, size, size, 3), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, frames, size, size), np.int32),
        visible=visible_array,
        area=visible_array.copy(),
        position=np.stack(position) if position else np.zeros((0, frames, objects, 2), np.float32),
        index=np.asarray(index, np.int64),
    )


def _records(path, split: str):
    """``(record, where)`` of every example of the split, in shard order (the shards of
    :func:`tokdyn.datasets.movi.read`: a directory's, or the one shard ``path`` names)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        movi.read(path, split)  # checks the shard's name (a ValueError naming it); reads nothing
        files = [path]
    else:
        files = movi.find(path, split)
    for file in files:
        for r, record in enumerate(read_records(file)):
            yield record, f"{file}: record {r} (a MOVi example)"


def _sizes(record: bytes, where: str) -> tuple:
    """``(objects, frames)`` of a serialized MOVi example, read from its ``metadata/num_instances``
    and ``metadata/num_frames`` without decoding its frames; anything unexpected there is decoded
    whole by :func:`tokdyn.datasets.movi.decode`, which names what is wrong."""
    features = parse_example(record, where=where).features.feature
    out = []
    for name, low in (("metadata/num_instances", 0), ("metadata/num_frames", 1)):
        feature = features[name] if name in features else None
        values = feature.int64_list.value if feature is not None and feature.WhichOneof("kind") == "int64_list" else ()
        if len(values) != 1 or not low <= values[0] <= 1 << 16:  # movi.decode's bounds
            ex = movi.decode(record, where=where)  # raises, naming the feature
            return ex["num_instances"], ex["video"].shape[0]
        out.append(int(values[0]))
    return tuple(out)
