"""The stand-in's image processor: the Qwen2-VL processor's pixel arithmetic
(:class:`tokdyn.models.blocks.images.ImageProcessor`) with one frame a patch and the stand-in's own settings,
checked against the stand-in's tower by its own names."""

from __future__ import annotations

import dataclasses

from tokdyn.models.blocks import images
from tokdyn.models.blocks.images import as_rgb, load_image, resize

__all__ = ["ImageProcessor", "as_rgb", "load_image", "resize"]


@dataclasses.dataclass(frozen=True)
class ImageProcessor(images.ImageProcessor):
    """The stand-in's processor settings (its ``preprocessor_config.json``): patches of 8 pixels, one frame,
    merged 2 x 2 (sides multiples of 16, not of Qwen2.5-VL's 28); each channel normalised by mean 0.5 and
    standard deviation 0.25.

    Attributes:
      min_pixels: the fewest pixels a resized image has.
      max_pixels: the most.
      patch_size: side of a patch.
      temporal_patch_size: frames a patch (1).
      merge_size: side of the square of patches fused into one token.
      image_mean: per-channel mean.
      image_std: per-channel standard deviation.
      rescale_factor: uint8 to [0, 1].
    """

    min_pixels: int = 16 * 16
    max_pixels: int = 16 * 16 * 256
    patch_size: int = 8
    temporal_patch_size: int = 1
    merge_size: int = 2
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.25, 0.25, 0.25)
    rescale_factor: float = 1 / 255

    def check_model(self, vision, source: str = "preprocessor_config.json", model: str = "config.json") -> None:
        """A ValueError unless the settings cut images as the tower ``vision`` reads them."""
        for mine, theirs in (("patch_size", vision.patch), ("merge_size", vision.merge), ("temporal_patch_size", 1)):
            if getattr(self, mine) != theirs:
                raise ValueError(f"{source}: {mine} is {getattr(self, mine)}; {model}'s tower reads {theirs}")
