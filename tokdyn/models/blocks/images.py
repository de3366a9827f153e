"""The Qwen2-VL image processor in NumPy, equal to ``transformers``' ``Qwen2VLImageProcessor`` (its PIL
backend), which Qwen2.5-VL and Qwen3-VL both use with settings of their own: each image taken to RGB, resized
(Pillow's bicubic filter on the 8-bit image) to sides that are multiples of ``patch_size * merge_size`` with
its pixel count within ``[min_pixels, max_pixels]`` (:func:`smart_resize`), scaled to [0, 1], normalised by a
per-channel mean and standard deviation, and cut into rows of ``pixel_values`` (:func:`patchify`: patches in
blocks of ``merge_size`` x ``merge_size``, each row channels x frames x patch x patch, the frame repeated
``temporal_patch_size`` times) with ``image_grid_thw``.

Images are taken to RGB as ``transformers``' image processor takes them (``do_convert_rgb``): an image with
transparency (an alpha channel, or a palette or grey image with a transparent colour) is composited on white,
any other mode is converted by Pillow. A file is read by :func:`load_image`, which applies the EXIF orientation
as ``transformers``' ``load_image`` does. 16-bit grey PNGs (and other modes of more than 8 bits a channel) are
refused, naming the file and the mode: Pillow's conversion, which ``transformers`` uses, clips their values to
8 bits (every value above 255 becomes white), so the reference preprocessing has no faithful result to match.

With ``torchvision`` installed, ``transformers`` picks its torchvision backend for these checkpoints instead,
whose bicubic resize rounds otherwise than Pillow's; this module is the PIL backend's.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tokdyn.models.blocks import fields

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")
"""Pillow modes of more than 8 bits a channel, refused: Pillow's ``convert("RGB")`` clips them to 8 bits."""
BICUBIC = 3
"""Pillow's code of the bicubic filter (``resample`` in ``preprocessor_config.json``), the one taken."""


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The size an image of ``height`` x ``width`` is resized to: both sides multiples of ``factor`` (the side
    nearest to the image's, Python's rounding of halves to even), scaled down (sides floored) when that has
    more than ``max_pixels`` pixels or up (sides ceiled) when it has fewer than ``min_pixels``, the aspect ratio
    kept as closely as that allows. A ValueError when a side is not positive or the aspect ratio exceeds 200."""
    if min(height, width) < 1:
        raise ValueError(f"image size {height}x{width} must be positive")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be at most 200, got {height}x{width}")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / shrink / factor) * factor)
        w = max(factor, math.floor(width / shrink / factor) * factor)
    elif h * w < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * grow / factor) * factor
        w = math.ceil(width * grow / factor) * factor
    return h, w


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 resized to ``height`` x ``width`` by Pillow's bicubic filter, as ``transformers``'
    PIL backend resizes (the fixed-point arithmetic on 8-bit values, and the order of the two passes, are
    Pillow's own, so Pillow does it; Pillow comes with matplotlib, a dependency of tokdyn)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def has_transparency(image) -> bool:
    """Whether the PIL ``image`` has an alpha band or a transparent colour (``transformers``' rule)."""
    return "A" in image.getbands() or image.info.get("transparency") is not None


def as_rgb(image, name: str = "image") -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array, as ``transformers``' image processor converts it to RGB: a PIL
    image with transparency composited on white (``Image.alpha_composite``), another converted by Pillow; a
    uint8 array (H, W) repeated over three channels, (H, W, 3) kept, (H, W, 4) composited on white as
    ``transformers`` composites arrays (alpha / 255 times the colour plus the rest of white, rounded). A PIL
    image of more than 8 bits a channel (:data:`HIGH_BIT_MODES`) is refused: a ValueError naming ``name`` and
    the mode; so is an array of another dtype or shape."""
    if hasattr(image, "convert") and hasattr(image, "getbands"):
        from PIL import Image

        if image.mode in HIGH_BIT_MODES:
            raise ValueError(
                f"{name} has Pillow mode {image.mode!r} (more than 8 bits a channel, e.g. a 16-bit grey PNG): "
                "Pillow's conversion to RGB, which transformers' preprocessing uses, clips it to 8 bits. Save it "
                "as an 8-bit image first (e.g. the 16-bit values divided by 257, rounded)"
            )
        if not has_transparency(image):
            return np.asarray(image.convert("RGB"))
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be a PIL image or a uint8 array (H, W, 3), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        alpha = arr[..., 3:4] / 255
        arr = np.round(alpha * arr[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must be an (H, W, 3) RGB array, got shape {arr.shape}")
    return arr


def load_image(path: str | Path) -> np.ndarray:
    """The image file at ``path`` as an (H, W, 3) uint8 array, as ``transformers`` reads and converts it: the
    EXIF orientation applied (``ImageOps.exif_transpose``, as ``transformers.image_utils.load_image`` does),
    then :func:`as_rgb` (transparency composited on white).

    FileNotFoundError when there is no file; a ValueError naming the file when it is not an image Pillow
    reads, when it has more pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
    which a user who trusts the file may raise), or when it has more than 8 bits a channel."""
    import warnings

    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(
            f"image {str(path)!r} is refused as a possible decompression bomb ({e}); shrink the image, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise ValueError(f"image {str(path)!r} cannot be read as an image ({e})") from None
    return as_rgb(im, f"image {str(path)!r}")


def patchify(image: np.ndarray, patch: int, merge: int, temporal: int) -> tuple[np.ndarray, list[int]]:
    """A normalised (C, H, W) float32 image (H and W multiples of ``patch * merge``) as ``pixel_values`` rows
    (patches in blocks of ``merge`` x ``merge``, row-major inside and between blocks; each row channels x
    ``temporal`` frames x patch x patch, the one frame repeated) and its ``[1, rows, columns]`` grid."""
    c, height, width = image.shape
    gh, gw = height // patch, width // patch
    blocks = image.reshape(c, gh // merge, merge, patch, gw // merge, merge, patch).transpose(1, 4, 2, 5, 0, 3, 6)
    frames = np.broadcast_to(blocks[:, :, :, :, :, None], (*blocks.shape[:5], temporal, patch, patch))
    return frames.reshape(gh * gw, c * temporal * patch * patch), [1, gh, gw]


def check_settings(s, where: str) -> None:
    """The image processor's settings ``s`` (``min_pixels``, ``max_pixels``, ``patch_size``,
    ``temporal_patch_size``, ``merge_size``, ``image_mean``, ``image_std``, ``rescale_factor``): a ValueError
    naming ``where``, the field, its value and what is allowed."""
    for name in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"):
        fields.integer(where + name, getattr(s, name))
    if s.min_pixels > s.max_pixels:
        raise ValueError(f"{where}min_pixels ({s.min_pixels}) exceeds max_pixels ({s.max_pixels})")
    fields.numbers3(where + "image_mean", s.image_mean)
    fields.numbers3(where + "image_std", s.image_std, positive=True)
    fields.positive_number(where + "rescale_factor", s.rescale_factor)


@dataclasses.dataclass(frozen=True)
class ImageProcessor:
    """The settings of ``transformers``' ``Qwen2VLImageProcessor`` (a checkpoint's ``preprocessor_config.json``),
    called on images. The defaults are the class's own (Qwen2-VL's); a family subclasses it with its
    published settings as defaults.

    Attributes:
        min_pixels: the fewest pixels a resized image has (``size["shortest_edge"]``).
        max_pixels: the most pixels a resized image has (``size["longest_edge"]``).
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
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    rescale_factor: float = 1 / 255

    def __post_init__(self):
        check_settings(self, f"{type(self).__name__}.")

    @property
    def size(self) -> dict[str, int]:
        """The pixel bounds as ``transformers`` writes them: ``{"shortest_edge": min_pixels, "longest_edge":
        max_pixels}``."""
        return {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "preprocessor_config.json"):
        """The settings of a parsed ``preprocessor_config.json``, read as ``transformers`` reads them: the pixel
        bounds from ``min_pixels``/``max_pixels`` when given, else from ``size`` (``shortest_edge``/
        ``longest_edge``, or the older ``min_pixels``/``max_pixels``), else the defaults. Turning off
        resizing, rescaling, normalising or the conversion to RGB, or a ``resample`` filter other than
        bicubic, is refused. ``source`` names the file in errors: a ValueError naming the field, its value and
        what is allowed."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        size = raw.get("size") or {}
        if not isinstance(size, dict):
            raise ValueError(f"{source}: size is {size!r}; expected an object (shortest_edge, longest_edge)")
        kw = {
            "min_pixels": raw.get("min_pixels", size.get("shortest_edge", size.get("min_pixels", cls.min_pixels))),
            "max_pixels": raw.get("max_pixels", size.get("longest_edge", size.get("max_pixels", cls.max_pixels))),
        }
        for name in ("patch_size", "temporal_patch_size", "merge_size", "rescale_factor"):
            if name in raw:
                kw[name] = raw[name]
        for name in ("image_mean", "image_std"):
            if name in raw:
                kw[name] = tuple(raw[name]) if isinstance(raw[name], list) else raw[name]
        for name in ("do_resize", "do_normalize", "do_rescale", "do_convert_rgb"):
            if raw.get(name) is False:
                raise ValueError(
                    f"{source}: {name} is false; turning off resizing, rescaling, normalising or the conversion to "
                    "RGB is not supported"
                )
        resample = raw.get("resample", BICUBIC)
        if isinstance(resample, bool) or resample != BICUBIC:
            raise ValueError(f"{source}: resample is {resample!r}; expected {BICUBIC} (Pillow's bicubic filter)")
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        check_settings(SimpleNamespace(**{**defaults, **kw}), f"{source}: ")
        return cls(**kw)

    @classmethod
    def read(cls, directory: str | Path):
        """The settings in ``directory``'s ``preprocessor_config.json`` (the defaults when there is none); a
        ValueError naming the file when it is not JSON or a field is wrong."""
        path = Path(directory) / "preprocessor_config.json"
        if not path.is_file():
            return cls()
        return cls.from_dict(fields.read_json(path, "the image processor's settings (an object)"), str(path))

    def check_model(self, vision, source: str = "preprocessor_config.json", model: str = "config.json") -> None:
        """Refuse settings that cut images otherwise than the vision tower ``vision`` (a family's vision
        configuration) reads them: a ValueError naming ``source``'s field, both values and ``model``'s field
        when ``patch_size``, ``temporal_patch_size`` or ``merge_size`` differs from the model's
        ``patch_size``, ``temporal_patch_size`` or ``spatial_merge_size``."""
        pairs = (
            ("patch_size", "patch_size"),
            ("temporal_patch_size", "temporal_patch_size"),
            ("merge_size", "spatial_merge_size"),
        )
        for mine, theirs in pairs:
            if getattr(self, mine) != getattr(vision, theirs):
                raise ValueError(
                    f"{source}: {mine} is {getattr(self, mine)} but {model}'s vision_config.{theirs} is "
                    f"{getattr(vision, theirs)}: the processor must cut images as the model reads them (make the "
                    "two agree)"
                )

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height`` x ``width`` is resized to (:func:`smart_resize` with the factor
        ``patch_size * merge_size``)."""
        return smart_resize(height, width, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels)

    def patchify(self, image: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """A normalised (C, H, W) float32 image as ``pixel_values`` rows and its ``[1, rows, columns]`` grid
        (:func:`~tokdyn.models.blocks.images.patchify` with this processor's ``patch_size``, ``merge_size``
        and ``temporal_patch_size``)."""
        return patchify(image, self.patch_size, self.merge_size, self.temporal_patch_size)

    def __call__(self, images) -> dict[str, np.ndarray]:
        """``{"pixel_values": (patches, patch_dim) float32, "image_grid_thw": (images, 3) int64}`` of a list of
        images (PIL images or uint8 arrays, :func:`as_rgb`; one image alone is taken as a list of one): each
        resized (:meth:`target_size`), scaled by ``rescale_factor`` in float64 and cast to float32 (as
        ``transformers`` rescales), normalised in float32 and cut into rows (:meth:`patchify`)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("images is empty: expected at least one image")
        mean = np.asarray(self.image_mean, np.float32)[:, None, None]
        std = np.asarray(self.image_std, np.float32)[:, None, None]
        rows, grids = [], []
        for i, image in enumerate(images):
            arr = as_rgb(image, f"images[{i}]")
            arr = resize(arr, *self.target_size(*arr.shape[:2]))
            scaled = (arr.transpose(2, 0, 1).astype(np.float64) * self.rescale_factor).astype(np.float32)
            pixels, grid = self.patchify((scaled - mean) / std)
            rows.append(pixels)
            grids.append(grid)
        return {"pixel_values": np.concatenate(rows, axis=0), "image_grid_thw": np.asarray(grids, np.int64)}
