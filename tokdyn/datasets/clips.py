"""Clips of a MOVi split as fixed-size arrays for the video study: frames in [0, 1] and one track-id
mask a frame, cut to the first frames, resized, and kept by object count.

:func:`load` reads a MOVi split (:mod:`tokdyn.datasets.movi`) in order, keeps the videos with
exactly ``objects`` objects (the study gives every video as many tokens), takes their first
``frames`` frames, resizes each frame bilinearly and its segmentation to its nearest pixels
(Pillow), and counts each object's pixels in every resized frame.

MOVi publishes each frame's visible segmentation only, not the objects' unoccluded masks, so an
object's pixels in view occluded or not (the synthetic videos' ``area``) are not known: ``area``
here is the visible count, which makes an object wholly hidden behind another look as if it had
left the view, and no frame shows an object partly hidden (the video study's ``overlap`` class is
empty on MOVi).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.datasets import movi
from tokdyn.datasets.scenes import resize


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
    """The first ``count`` clips of a MOVi split with exactly ``objects`` objects, their first
    ``frames`` frames resized to ``size x size``.

    Args:
      path: a directory holding the split's shards, or one shard (:func:`tokdyn.datasets.movi.read`).
      count: clips to keep.
      size: the side of the resized frames.
      frames: frames a clip (at most the videos' own, 24 in MOVi).
      objects: the objects a kept video holds.
      split: the split read from a directory.

    Raises:
      ValueError: ``frames`` beyond a video's own, or fewer than ``count`` such videos (naming how
        many the split has), and the errors of :func:`tokdyn.datasets.movi.read`.
    """
    images, masks, visible, position, index = [], [], [], [], []
    seen = 0
    if count > 0:
        for ex in movi.read(path, split):
            seen += 1
            if ex["num_instances"] != objects:
                continue
            if ex["video"].shape[0] < frames:
                raise ValueError(
                    f"frames must be at most the videos' {ex['video'].shape[0]} frames ({ex['file']}), got {frames}"
                )
            pairs = [resize(ex["video"][f], ex["segmentations"][f].astype(np.int32), size) for f in range(frames)]
            clip_masks = np.stack([p[1] for p in pairs])
            v, pos = counts_and_centroids(clip_masks, objects)
            images.append(np.stack([p[0] for p in pairs]))
            masks.append(clip_masks)
            visible.append(v)
            position.append(pos)
            index.append(ex["index"])
            if len(images) == count:
                break
    if len(images) < count:
        raise ValueError(
            f"{path} holds {len(images)} {split} videos with {objects} objects in its {seen} examples, fewer than "
            f"the {count} asked for"
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
