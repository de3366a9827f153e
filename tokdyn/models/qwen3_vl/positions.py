"""Host-side index arithmetic from ``image_grid_thw`` and the prompt (NumPy, before anything compiles): the
vision tower's 2D rotary positions, its attention segments (one per frame), the bilinear taps that resample
the learned position embedding to each image's grid, and the decoder's multimodal rotary positions (the rule
of ``transformers``' ``get_rope_index``).

``grid`` is ``image_grid_thw``: (images, 3) integers, each image's frames, rows and columns of patches.
"""

from __future__ import annotations

import numpy as np

from tokdyn.models.qwen3_vl.config import Config


def check_grid(grid, merge: int) -> np.ndarray:
    """``grid`` as an (images, 3) int64 array; a ValueError unless every entry is positive and the rows and
    columns are multiples of ``merge``."""
    arr = np.asarray(grid)
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"image_grid_thw must be an (images, 3) integer array, got shape {arr.shape} {arr.dtype}")
    if (arr <= 0).any() or (arr[:, 1:] % merge).any():
        raise ValueError(
            f"image_grid_thw={arr.tolist()}: entries must be positive, rows and columns multiples of {merge}"
        )
    return arr.astype(np.int64)


def vision_positions(grid: np.ndarray, merge: int) -> np.ndarray:
    """(patches, 2) row and column of each patch, in ``pixel_values``' order (blocks of ``merge`` x ``merge``
    patches, row-major inside and between blocks), repeated over frames."""
    out = []
    for t, h, w in grid:
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        rows = rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        cols = cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([rows, cols], axis=-1), (t, 1)))
    return np.concatenate(out, axis=0)


def frame_lengths(grid: np.ndarray) -> np.ndarray:
    """Patches in each frame of each image: the segments the vision blocks attend within."""
    return np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])


def _taps(index: np.ndarray, size: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The two source rows (of ``side``) that bilinear interpolation with aligned corners reads for target
    ``index`` of ``size``, and their weights, in float32 as ``torch``'s ``interpolate`` takes them."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.maximum(size - 1, 1).astype(np.float32)
    floor = np.floor(src)
    offsets = np.arange(2, dtype=np.float32)
    taps = np.clip(floor.astype(np.int64)[:, None] + np.arange(2), 0, side - 1)
    distance = np.abs(src[:, None] - floor[:, None] - offsets)
    return taps, np.maximum(np.float32(1) - distance, np.float32(0))


def interpolation(grid: np.ndarray, merge: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """How the learned (``side`` x ``side``) position embedding is resampled to each image's grid, for each
    patch in ``pixel_values``' order: the four rows of the table it reads and their weights, ``(patches, 4)``
    int64 and float32, bilinear with aligned corners (the corners of the grid read the corners of the table),
    repeated over frames."""
    pos = vision_positions(grid, merge)
    sizes = np.repeat(grid[:, 1:], grid[:, 0] * grid[:, 1] * grid[:, 2], axis=0)  # (patches, 2): h, w
    h_taps, h_weights = _taps(pos[:, 0], sizes[:, 0], side)
    w_taps, w_weights = _taps(pos[:, 1], sizes[:, 1], side)
    index = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(-1, 4)
    weight = (h_weights[:, :, None] * w_weights[:, None, :]).reshape(-1, 4)
    return index, weight.astype(np.float32)


def rope_index(
    cfg: Config, input_ids: np.ndarray, grid: np.ndarray | None, attention_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's (3, B, T) rotary positions and each row's next position (B,).

    Over each row's unmasked tokens: text tokens count up on all three axes; a run of image tokens takes the
    next image of ``grid`` (images are taken in order across rows): frame, row and column of each merged
    token added to the position where the run starts; the text after it continues from that start plus the
    image's larger merged side. Masked (padding) tokens get position 0 (they are never attended). The next
    position of a row is its largest position plus one: the tokens generated after the prompt take it, then
    count up by one, on all three axes (``transformers``' ``rope_deltas`` added to the text position).
    A ValueError when the runs of image tokens and the grids do not match.
    """
    merge = cfg.vision.spatial_merge_size
    b, t = input_ids.shape
    out = np.zeros((3, b, t), np.int64)
    next_pos = np.zeros((b,), np.int64)
    images = iter(grid if grid is not None else [])
    for row in range(b):
        valid = np.flatnonzero(attention_mask[row])
        is_image = input_ids[row, valid] == cfg.image_token_id
        starts = np.flatnonzero(np.diff(is_image.astype(np.int8), prepend=2))  # where each run begins
        ends = np.append(starts[1:], len(valid))
        parts, cur = [], 0
        for i, j in zip(starts, ends):
            if not is_image[i]:
                parts.append(np.broadcast_to(np.arange(j - i) + cur, (3, j - i)))
                cur += j - i
                continue
            try:
                ft, fh, fw = (int(v) for v in next(images))
            except StopIteration:
                raise ValueError("input_ids hold more runs of image tokens than image_grid_thw lists images") from None
            gt, gh, gw = ft, fh // merge, fw // merge
            if gt * gh * gw != j - i:
                raise ValueError(
                    f"a run of {j - i} image tokens in row {row} does not match its image's grid {[ft, fh, fw]}, "
                    f"which makes {gt * gh * gw} tokens"
                )
            tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
            parts.append(np.stack([tt, hh, ww]).reshape(3, -1) + cur)
            cur += max(gh, gw)
        if parts:
            pos = np.concatenate(parts, axis=1)
            out[:, row, valid] = pos
            next_pos[row] = pos.max() + 1
    if next(images, None) is not None:
        raise ValueError("image_grid_thw lists more images than input_ids hold runs of image tokens")
    return out, next_pos
