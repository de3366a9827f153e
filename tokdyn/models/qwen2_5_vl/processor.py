"""Qwen2.5-VL's image processor: ``transformers``' ``Qwen2VLImageProcessor`` (the class a Qwen2.5-VL checkpoint's
``preprocessor_config.json`` names, and its PIL backend's resize), with the settings of the published
Qwen2.5-VL checkpoints as defaults: patches of 14 pixels merged 2 x 2 (sides resized to multiples of 28),
between 3,136 and 1,003,520 pixels, each channel normalised by the CLIP mean and standard deviation after
scaling to [0, 1].

The processing itself (RGB conversion, Pillow's bicubic resize, the patches) is
:mod:`tokdyn.models.blocks.images`, which the families share; :func:`load_image`, :func:`as_rgb`,
:func:`has_transparency`, :func:`resize`, :func:`smart_resize` and :data:`HIGH_BIT_MODES` are its names.
"""

from __future__ import annotations

import dataclasses

from tokdyn.models.blocks import images
from tokdyn.models.blocks.images import HIGH_BIT_MODES, as_rgb, has_transparency, load_image, resize, smart_resize

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "HIGH_BIT_MODES",
    "ImageProcessor",
    "as_rgb",
    "has_transparency",
    "load_image",
    "resize",
    "smart_resize",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""The per-channel mean (R, G, B) Qwen2.5-VL's processor subtracts: CLIP's."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""The per-channel standard deviation (R, G, B) it divides by: CLIP's."""


@dataclasses.dataclass(frozen=True)
class ImageProcessor(images.ImageProcessor):
    """Qwen2.5-VL's image processor settings (a checkpoint's ``preprocessor_config.json``), called on images:
    ``processor(images) -> {"pixel_values", "image_grid_thw"}`` as ``transformers`` gives them
    (:class:`tokdyn.models.blocks.images.ImageProcessor`; ``ImageProcessor.read(directory)`` reads and checks
    the file, ``target_size(height, width)`` is the size an image is resized to). Its fields are the shared
    processor's (their meaning is documented there), with Qwen2.5-VL's published settings as defaults.
    """

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    rescale_factor: float = 1 / 255
