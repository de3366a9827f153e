"""Qwen3-VL's image processor: ``transformers``' ``Qwen2VLImageProcessor`` (the class a Qwen3-VL checkpoint's
``preprocessor_config.json`` names, and its PIL backend's resize), with the settings of the published
Qwen3-VL checkpoints as defaults: patches of 16 pixels merged 2 x 2 (sides resized to multiples of 32),
between 65,536 and 16,777,216 pixels (``size``'s ``shortest_edge`` and ``longest_edge``), each channel
normalised by mean 0.5 and standard deviation 0.5 after scaling to [0, 1].

The processing itself (RGB conversion, Pillow's bicubic resize, the patches) is
:mod:`tokdyn.models.blocks.images`, which the families share; :func:`load_image`, :func:`as_rgb`,
:func:`resize` and :func:`smart_resize` are its functions.
"""

from __future__ import annotations

import dataclasses

from tokdyn.models.blocks import images
from tokdyn.models.blocks.images import as_rgb, load_image, resize, smart_resize

__all__ = ["ImageProcessor", "as_rgb", "load_image", "resize", "smart_resize"]


@dataclasses.dataclass(frozen=True)
class ImageProcessor(images.ImageProcessor):
    """Qwen3-VL's image processor settings (a checkpoint's ``preprocessor_config.json``), called on images:
    ``processor(images) -> {"pixel_values", "image_grid_thw"}`` as ``transformers`` gives them
    (:class:`tokdyn.models.blocks.images.ImageProcessor`; ``ImageProcessor.read(directory)`` reads and checks
    the file, ``target_size(height, width)`` is the size an image is resized to). Its fields are the shared
    processor's (their meaning is documented there), with Qwen3-VL's published settings as defaults.
    """

    min_pixels: int = 65536
    max_pixels: int = 16777216
    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
