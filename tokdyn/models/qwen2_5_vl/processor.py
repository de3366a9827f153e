"""The Qwen2-VL image processor in NumPy, equal to ``transformers``' (its PIL backend): each image resized
(bicubic) to sides that are multiples of ``patch_size * merge_size`` with its pixel count within
``[min_pixels, max_pixels]``, scaled to [0, 1], normalised by the CLIP mean and standard deviation, and cut
into rows of ``pixel_values`` (patches in blocks of ``merge_size`` x ``merge_size``, each row channels x
frames x patch x patch, the frame repeated ``temporal_patch_size`` times) with ``image_grid_thw``.

The resize is Pillow's bicubic filter on the 8-bit image, as in ``transformers``; the rest is NumPy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The size an image of ``height`` x ``width`` is resized to: both sides multiples of ``factor``, the pixel
    count within ``[min_pixels, max_pixels]``, the aspect ratio kept as closely as that allows."""
    if min(height, width) < 1:
        raise ValueError(f"image size {height}x{width} must be positive")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be at most 200, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 resized to ``height`` x ``width`` by Pillow's bicubic filter, as ``transformers``'
    processor resizes (Pillow's 8-bit fixed-point arithmetic, and its choice of which pass goes first, are
    Pillow's own; Pillow comes with matplotlib, a dependency of tokdyn)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def as_rgb(image) -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array: a PIL image (converted to RGB) or a uint8 array (H, W, 3) or (H, W)."""
    if hasattr(image, "convert") and hasattr(image, "size"):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be PIL images or uint8 arrays (H, W, 3), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"images must be (H, W, 3) RGB arrays, got shape {arr.shape}")
    return arr


@dataclasses.dataclass(frozen=True)
class ImageProcessor:
    """The Qwen2-VL image processor's settings (a checkpoint's ``preprocessor_config.json``).

    Attributes:
        min_pixels: the fewest pixels a resized image has.
        max_pixels: the most pixels a resized image has.
        patch_size: spatial side of a patch.
        temporal_patch_size: frames in a patch (an image's one frame is repeated).
        merge_size: side of the square of patches the model merges into one token.
        image_mean: per-channel mean subtracted after scaling to [0, 1].
        image_std: per-channel standard deviation divided by.
        rescale_factor: the factor that takes uint8 values to [0, 1].
    """

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    rescale_factor: float = 1 / 255

    @classmethod
    def from_dict(cls, raw: dict) -> ImageProcessor:
        """The settings of a parsed ``preprocessor_config.json`` (``size`` as ``shortest_edge``/``longest_edge``
        or ``min_pixels``/``max_pixels``)."""
        size = raw.get("size") or {}
        kw = {
            "min_pixels": raw.get("min_pixels", size.get("shortest_edge", size.get("min_pixels", cls.min_pixels))),
            "max_pixels": raw.get("max_pixels", size.get("longest_edge", size.get("max_pixels", cls.max_pixels))),
        }
        for name in ("patch_size", "temporal_patch_size", "merge_size", "rescale_factor"):
            if name in raw:
                kw[name] = raw[name]
        for name in ("image_mean", "image_std"):
            if name in raw:
                kw[name] = tuple(raw[name])
        if raw.get("do_resize") is False or raw.get("do_normalize") is False or raw.get("do_rescale") is False:
            raise ValueError("preprocessor_config.json turns off resizing, rescaling or normalising: not supported")
        return cls(**kw)

    @classmethod
    def read(cls, directory: str | Path) -> ImageProcessor:
        """The settings in ``directory``'s ``preprocessor_config.json`` (the defaults when there is none)."""
        path = Path(directory) / "preprocessor_config.json"
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else cls()

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height`` x ``width`` is resized to."""
        factor = self.patch_size * self.merge_size
        return smart_resize(height, width, factor, self.min_pixels, self.max_pixels)

    def patchify(self, image: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """A normalised (C, H, W) float32 image as ``pixel_values`` rows and its ``[t, h, w]`` grid."""
        c, height, width = image.shape
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = height // p, width // p
        patches = image.reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        patches = np.broadcast_to(patches[:, :, :, :, :, None], (*patches.shape[:5], tp, p, p))
        return patches.reshape(gh * gw, c * tp * p * p), [1, gh, gw]

    def __call__(self, images) -> dict[str, np.ndarray]:
        """``{"pixel_values": (patches, patch_dim) float32, "image_grid_thw": (images, 3) int64}`` of a list of
        images (PIL images or uint8 (H, W, 3) arrays; one image alone is taken as a list of one)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("images is empty")
        mean = np.asarray(self.image_mean, np.float32)[:, None, None]
        std = np.asarray(self.image_std, np.float32)[:, None, None]
        rows, grids = [], []
        for image in images:
            arr = as_rgb(image)
            arr = resize(arr, *self.target_size(*arr.shape[:2]))
            scaled = (arr.transpose(2, 0, 1).astype(np.float64) * self.rescale_factor).astype(np.float32)
            pixels, grid = self.patchify((scaled - mean) / std)
            rows.append(pixels)
            grids.append(grid)
        return {"pixel_values": np.concatenate(rows, axis=0), "image_grid_thw": np.asarray(grids, np.int64)}
