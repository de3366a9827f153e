"""Scenes of a multi-object dataset as fixed-size arrays for the scenes study: images in [0, 1]
and one label image each, cropped, resized and filtered by object count.

:func:`load` reads a multi-object dataset's file (:mod:`tokdyn.datasets.multi_object`) in order,
keeps the scenes whose count of visible objects (objects owning at least one pixel) is within
``[min_objects, max_objects]``, crops them (CLEVR with masks: :data:`CROPS`), resizes the image
bilinearly and the label image to its nearest pixels (Pillow), and stacks them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.datasets import multi_object
from tokdyn.datasets.tfrecord import require

# (top, bottom, left, right) crops applied before resizing: CLEVR with masks' 240 x 320 images cut to
# the central 192 x 192 region Slot Attention used for CLEVR6 (Locatello et al. 2020, rows 29-221,
# columns 64-256); the other datasets are square and kept whole
CROPS = {"clevr_with_masks": (29, 221, 64, 256)}


@dataclasses.dataclass(frozen=True)
class LoadedScenes:
    """Scenes read from a dataset's file.

    Attributes:
      images: (n, size, size, 3) float32 RGB in [0, 1] (a grayscale image's channel repeated).
      masks: (n, size, size) int32 labels: 0 on the background entities, ``1 .. n_objects`` on
        the visible objects (:func:`tokdyn.datasets.multi_object.labels`, after the crop and resize).
      n_objects: (n,) int32 visible objects of each scene in the whole image.
      index: (n,) int64 the scenes' record indices in the file.
    """

    images: np.ndarray
    masks: np.ndarray
    n_objects: np.ndarray
    index: np.ndarray

    def __getitem__(self, key) -> "LoadedScenes":
        """The scenes ``key`` (a slice or index array) of every field."""
        return LoadedScenes(self.images[key], self.masks[key], self.n_objects[key], self.index[key])


def resize(image: np.ndarray, labels: np.ndarray, size: int, crop=None) -> tuple:
    """``(image, labels)`` cropped to ``crop`` (``(top, bottom, left, right)``, or None) and resized
    to ``size x size``: the image bilinearly (Pillow's, antialiased when shrinking) to float32 in
    [0, 1] with 3 channels, the labels to their nearest pixels."""
    Image = require("PIL.Image", "pillow")
    if crop is not None:
        t, b, left, r = crop
        image, labels = image[t:b, left:r], labels[t:b, left:r]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    im = Image.fromarray(np.ascontiguousarray(image, np.uint8), "RGB").resize((size, size), Image.BILINEAR)
    lab = Image.fromarray(np.ascontiguousarray(labels, np.int32), "I").resize((size, size), Image.NEAREST)
    return np.asarray(im, np.float32) / 255.0, np.asarray(lab, np.int32)


def load(path, count: int, *, size: int, min_objects: int = 0, max_objects: int | None = None) -> LoadedScenes:
    """The first ``count`` scenes of a multi-object dataset's file with ``min_objects`` to
    ``max_objects`` visible objects, cropped and resized to ``size x size``.

    Args:
      path: the file, or a directory holding one (:func:`tokdyn.datasets.multi_object.locate`).
      count: scenes to keep.
      size: the side of the resized images.
      min_objects: fewest visible objects a kept scene has; from 1, a kept scene also keeps at
        least one object pixel after the crop and resize (a scene without one has no foreground,
        and its FG-ARI is not defined).
      max_objects: most visible objects a kept scene has (default: the dataset's most).

    Raises:
      ValueError: the file holds fewer than ``count`` such scenes (naming how many it has), or
        the errors of :func:`tokdyn.datasets.multi_object.read` (a bad CRC, a wrong feature spec).
    """
    dataset, file = multi_object.locate(path)
    hi = dataset.max_objects if max_objects is None else max_objects
    crop = CROPS.get(dataset.name)
    images, masks, counts, index = [], [], [], []
    seen = 0
    if count > 0:
        for ex in multi_object.read(file, dataset):
            seen += 1
            labels, n = multi_object.labels(ex["mask"], dataset.background)
            if not min_objects <= n <= hi:
                continue
            image, lab = resize(ex["image"], labels, size, crop)
            if min_objects >= 1 and not (lab > 0).any():
                continue  # no object left after the crop and resize: no foreground to score (FG-ARI is NaN)
            images.append(image)
            masks.append(lab)
            counts.append(n)
            index.append(ex["index"])
            if len(images) == count:
                break
    if len(images) < count:
        raise ValueError(
            f"{file} holds {len(images)} scenes with {min_objects} to {hi} visible objects"
            + (f" (and an object pixel at {size} x {size})" if min_objects >= 1 else "")
            + f" in its {seen} records, fewer than the {count} asked for"
        )
    return LoadedScenes(
        images=np.stack(images) if images else np.zeros((0, size, size, 3), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, size, size), np.int32),
        n_objects=np.asarray(counts, np.int32),
        index=np.asarray(index, np.int64),
    )
