"""Scenes of a multi-object dataset as fixed-size arrays for the scenes study: images in [0, 1]
and one label image each, cropped, resized and filtered by object count.

:func:`load` reads a multi-object dataset's file (:mod:`tokdyn.datasets.multi_object`) in order,
keeps the scenes whose count of visible objects (objects owning at least one pixel) is within
``[min_objects, max_objects]``, crops them (CLEVR with masks: :data:`CROPS`), resizes the image
bilinearly and the label image to its nearest pixels (Pillow), and stacks them. A file holding
fewer such scenes than asked raises :class:`TooFewScenes`, which counts the file's usable scenes
by their number of objects, so a caller can say which range of objects, or which smaller count,
the file does hold (:func:`ways_out`, :func:`shortfall_message`; the parts every dataset shares are
:mod:`tokdyn.datasets.shortfall`'s).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.datasets import multi_object
from tokdyn.datasets.shortfall import Shortfall, fit_counts, line
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


class TooFewScenes(Shortfall):
    """A file holding fewer usable scenes than asked (:func:`load`; a
    :class:`~tokdyn.datasets.shortfall.Shortfall`). Besides the message:

    Attributes:
      file: the file read.
      found: the usable scenes it holds (``min_objects`` to ``max_objects`` visible objects, and
        from ``min_objects`` 1 an object pixel at ``size x size``).
      asked: the scenes asked for.
      records: the records read (all of the file's).
      by_objects: ``{n: scenes}``: the file's scenes with ``n`` visible objects that keep an object
        pixel at ``size x size`` (``n`` 0: the scenes without objects).
      vanished: ``{n: scenes}``: those with ``n >= 1`` visible objects that lose every object pixel
        to the crop and resize (usable only where ``min_objects`` is 0).
      min_objects: the range's low end asked.
      max_objects: the range's high end asked.
      most: the most objects the dataset's scenes hold.
    """

    def usable(self, min_objects: int, max_objects: int) -> int:
        """The usable scenes of the file with ``min_objects`` to ``max_objects`` visible objects."""
        kept = sum(c for n, c in self.by_objects.items() if min_objects <= n <= max_objects)
        if min_objects == 0:
            kept += sum(c for n, c in self.vanished.items() if n <= max_objects)
        return kept


def ways_out(err: TooFewScenes, counts: dict, *, trim=None, min_option=None, max_option=None, lowest_min=1, also=None):
    """The changes of a study's options that would fit the file ``err`` names, as phrases: the
    counts lowered (:func:`~tokdyn.datasets.shortfall.fit_counts`; ``also(fitted)`` gives
    ``{option: value}`` of other options that must follow them, or None), ``max_option`` raised
    (up to the dataset's most objects) and ``min_option`` lowered (down to ``lowest_min``), or
    both, where the file then holds enough.

    Args:
      err: the :class:`TooFewScenes`.
      counts: ``{option: count}``, e.g. ``{"--n-val": 256, "--n-test": 1000, "--n-train": 8000}``.
      trim: the option to lower alone where it can take the whole shortfall.
      min_option, max_option: the options of ``err.min_objects`` and ``err.max_objects`` (None:
        not an option).
      lowest_min: the least ``min_option`` may be.
      also: ``also(fitted) -> {option: value}``: options bounded by the lowered counts.

    Returns:
      ``[phrase, ...]``: e.g. ``"--n-train 40"``, ``"--max-objects 6 (it holds 9,300 such scenes)"``.
    """
    need, lo, hi = sum(counts.values()), err.min_objects, err.max_objects
    out = []
    fitted = fit_counts(counts, err.found, trim)
    if fitted is not None:
        changes = {k: v for k, v in fitted.items() if v != counts[k]}
        changes.update((also(fitted) if also is not None else None) or {})
        out.append(" ".join(f"{k} {v}" for k, v in changes.items()))
    wider = []
    if max_option is not None:
        hi2 = next((m for m in range(hi + 1, err.most + 1) if err.usable(lo, m) >= need), None)
        if hi2 is not None:
            wider.append((f"{max_option} {hi2}", err.usable(lo, hi2)))
    if min_option is not None:
        lo2 = next((m for m in range(lo - 1, lowest_min - 1, -1) if err.usable(m, hi) >= need), None)
        if lo2 is not None:
            wider.append((f"{min_option} {lo2}", err.usable(lo2, hi)))
    if not wider and min_option is not None and max_option is not None and err.usable(lowest_min, err.most) >= need:
        both = next(
            (a, b) for b in range(hi, err.most + 1) for a in range(lo, lowest_min - 1, -1) if err.usable(a, b) >= need
        )
        wider.append((f"{min_option} {both[0]} {max_option} {both[1]}", err.usable(*both)))
    out += [f"{change} (it holds {n:,} such scenes)" for change, n in wider]
    return out


def shortfall_message(err: TooFewScenes, counts: dict, ways: list) -> str:
    """One line for a file with too few usable scenes: ``err``'s message (the file, its count), what
    the caller takes (``counts``, ``{option: count}``) and ``ways`` (:func:`ways_out`), or that no
    setting of those options fits the file (:func:`tokdyn.datasets.shortfall.line`)."""
    total = err.usable(0 if err.min_objects == 0 else 1, err.most)
    held = f"this file (it holds {total:,} usable scenes in all)"
    return line(err, counts, ways, held=held, more="give a file with more")


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
    return np.asarray(im, np.float32) / 255.0, resize_labels(labels, size)


def resize_labels(labels: np.ndarray, size: int, crop=None) -> np.ndarray:
    """A label image cropped and resized to ``size x size`` to its nearest pixels, as :func:`resize`
    does (without the image)."""
    Image = require("PIL.Image", "pillow")
    if crop is not None:
        t, b, left, r = crop
        labels = labels[t:b, left:r]
    lab = Image.fromarray(np.ascontiguousarray(labels, np.int32), "I").resize((size, size), Image.NEAREST)
    return np.asarray(lab, np.int32)


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
      TooFewScenes: the file holds fewer than ``count`` such scenes (naming how many it has; a
        ``ValueError``, with the file's scenes counted by their objects).
      ValueError: the errors of :func:`tokdyn.datasets.multi_object.read` (a bad CRC, a wrong
        feature spec), or an argument out of range.
    """
    for name, value, low in (("count", count, 0), ("size", size, 1), ("min_objects", min_objects, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value}")
    dataset, file = multi_object.locate(path)
    hi = dataset.max_objects if max_objects is None else max_objects
    crop = CROPS.get(dataset.name)
    images, masks, counts, index = [], [], [], []
    by_objects, vanished = {}, {}  # the file's scenes by visible objects (TooFewScenes counts them)
    seen = 0
    if count > 0:
        for ex in multi_object.read(file, dataset):
            seen += 1
            labels, n = multi_object.labels(ex["mask"], dataset.background)
            if min_objects <= n <= hi:
                image, lab = resize(ex["image"], labels, size, crop)
            else:  # counted only: does it keep an object pixel at this size?
                image, lab = None, resize_labels(labels, size, crop) if n else labels
            shown = n == 0 or bool((lab > 0).any())
            (by_objects if shown else vanished)[n] = (by_objects if shown else vanished).get(n, 0) + 1
            if image is None or (min_objects >= 1 and not shown):
                continue  # out of range, or no object left after the crop and resize: no foreground to score
            images.append(image)
            masks.append(lab)
            counts.append(n)
            index.append(ex["index"])
            if len(images) == count:
                break
    if len(images) < count:
        raise TooFewScenes(
            f"{file} holds {len(images)} scenes with {min_objects} to {hi} visible objects"
            + (f" (and an object pixel at {size} x {size})" if min_objects >= 1 else "")
            + f" in its {seen} records, fewer than the {count} asked for",
            file=file,
            found=len(images),
            asked=count,
            records=seen,
            by_objects=by_objects,
            vanished=vanished,
            min_objects=min_objects,
            max_objects=hi,
            most=dataset.max_objects,
        )
    return LoadedScenes(
        images=np.stack(images) if images else np.zeros((0, size, size, 3), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, size, size), np.int32),
        n_objects=np.asarray(counts, np.int32),
        index=np.asarray(index, np.int64),
    )
