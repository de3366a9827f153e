"""The Qwen2-VL image processor in NumPy, equal to ``transformers``' (its PIL backend): each image resized
(bicubic) to sides that are multiples of ``patch_size * merge_size`` with its pixel count within
``[min_pixels, max_pixels]``, scaled to [0, 1], normalised by the CLIP mean and standard deviation, and cut
into rows of ``pixel_values`` (patches in blocks of ``merge_size`` x ``merge_size``, each row channels x
frames x patch x patch, the frame repeated ``temporal_patch_size`` times) with ``image_grid_thw``.

The resize is Pillow's bicubic filter on the 8-bit image, as in ``transformers``; the rest is NumPy.

Images are taken to RGB as ``transformers``' image processor takes them (``do_convert_rgb``): an image with
transparency (an alpha channel, or a palette or grey image with a transparent colour) is composited on white,
any other mode is converted by Pillow. A file is read by :func:`load_image`, which applies the EXIF orientation
as ``transformers``' ``load_image`` does. 16-bit grey PNGs (and other modes of more than 8 bits a channel) are
refused, naming the file and the mode: Pillow's conversion, which ``transformers`` uses, clips their values to
8 bits (every value above 255 becomes white), so the reference preprocessing has no faithful result to match.
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


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")
"""Pillow modes of more than 8 bits a channel, refused: Pillow's ``convert("RGB")`` clips them to 8 bits."""


def has_transparency(image) -> bool:
    """Whether the PIL ``image`` has an alpha band or a transparent colour (``transformers``' rule)."""
    return "A" in image.getbands() or image.info.get("transparency") is not None


def as_rgb(image, name: str = "image") -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array, as ``transformers``' image processor converts it to RGB: a PIL
    image with transparency composited on white (``Image.alpha_composite``), another converted by Pillow; a
    uint8 array (H, W) repeated over three channels, (H, W, 3) kept, (H, W, 4) composited on white as
    ``transformers`` composites arrays. A PIL image of more than 8 bits a channel (:data:`HIGH_BIT_MODES`) is
    refused: a ValueError naming ``name`` and the mode."""
    if hasattr(image, "convert") and hasattr(image, "size"):
        from PIL import Image

        if image.mode in HIGH_BIT_MODES:
            raise ValueError(
                f"{name} has Pillow mode {image.mode!r} (more than 8 bits a channel, e.g. a 16-bit grey PNG): "
                "Pillow's conversion to RGB, which transformers' preprocessing uses, clips it to 8 bits. Save it "
                "as an 8-bit image first (e.g. the 16-bit values divided by 257, rounded)"
            )
        if has_transparency(image):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be a PIL image or a uint8 array (H, W, 3), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim == 3 and arr.shape[-1] == 4:  # transformers' convert_to_rgb of an RGBA array
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


def check_settings(settings: dict, where: str) -> None:
    """The image processor's settings (``min_pixels``, ``max_pixels``, ``patch_size``, ``temporal_patch_size``,
    ``merge_size``, ``image_mean``, ``image_std``, ``rescale_factor``): a ValueError naming ``where``, the field,
    its value and what is allowed."""
    for name in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}{name} is {value!r}; expected an integer >= 1")
    if settings["min_pixels"] > settings["max_pixels"]:
        raise ValueError(f"{where}min_pixels ({settings['min_pixels']}) exceeds max_pixels ({settings['max_pixels']})")
    for name, positive in (("image_mean", False), ("image_std", True)):
        value = settings[name]
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
        if not ok or (positive and min(value) <= 0):
            raise ValueError(
                f"{where}{name} is {value!r}; expected three finite numbers{' > 0' if positive else ''} (R, G, B)"
            )
    value = settings["rescale_factor"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}rescale_factor is {value!r}; expected a finite number > 0 (1/255 for 8-bit images)")


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

    def __post_init__(self):
        check_settings(dataclasses.asdict(self), "ImageProcessor.")

    @classmethod
    def from_dict(cls, raw: dict, source: str = "preprocessor_config.json") -> ImageProcessor:
        """The settings of a parsed ``preprocessor_config.json`` (``size`` as ``shortest_edge``/``longest_edge``
        or ``min_pixels``/``max_pixels``); ``source`` names the file in errors: a ValueError naming the field,
        its value and what is allowed."""
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
        for name in ("do_resize", "do_normalize", "do_rescale"):
            if raw.get(name) is False:
                raise ValueError(
                    f"{source}: {name} is false; turning off resizing, rescaling or normalising is not supported"
                )
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        check_settings({**defaults, **kw}, f"{source}: ")
        return cls(**kw)

    @classmethod
    def read(cls, directory: str | Path) -> ImageProcessor:
        """The settings in ``directory``'s ``preprocessor_config.json`` (the defaults when there is none); a
        ValueError naming the file when it is not JSON or a field is wrong."""
        path = Path(directory) / "preprocessor_config.json"
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a JSON file ({e}); expected the image processor's settings") from None
        return cls.from_dict(raw, str(path))

    def check_model(self, vision, source: str = "preprocessor_config.json", model: str = "config.json") -> None:
        """Refuse settings that cut images otherwise than the vision tower ``vision`` (a
        :class:`~tokdyn.models.qwen2_5_vl.config.VisionConfig`) reads them: a ValueError naming ``source``'s
        field, both values and ``model``'s field when ``patch_size``, ``temporal_patch_size`` or ``merge_size``
        differs from the model's ``patch_size``, ``temporal_patch_size`` or ``spatial_merge_size``."""
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
        for i, image in enumerate(images):
            arr = as_rgb(image, f"images[{i}]")
            arr = resize(arr, *self.target_size(*arr.shape[:2]))
            scaled = (arr.transpose(2, 0, 1).astype(np.float64) * self.rescale_factor).astype(np.float32)
            pixels, grid = self.patchify((scaled - mean) / std)
            rows.append(pixels)
            grids.append(grid)
        return {"pixel_values": np.concatenate(rows, axis=0), "image_grid_thw": np.asarray(grids, np.int64)}
