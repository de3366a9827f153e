"""Host-side index arithmetic from ``image_grid_thw`` and the prompt (NumPy, before anything compiles):
the vision tower's 2D rotary positions, its window order and attention segments, and the decoder's
multimodal rotary positions (the rule of ``transformers``' ``get_rope_index``).

``grid`` is ``image_grid_thw``: (images, 3) integers, each image's frames, rows and columns of patches.
"""

from __future__ import annotations

import numpy as np

from tokdyn.models.qwen2_5_vl.config import Config


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


def window_order(grid: np.ndarray, merge: int, window: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """The merged tokens' order for windowed attention and each window's length in patches.

    Windows are ``window // merge // patch`` merged tokens on a side, tiled from the top-left of each frame
    (the last row and column of windows clipped). Returns ``(index, lengths)``: ``index`` lists merged tokens
    window by window, ``lengths`` the patches in each non-empty window.
    """
    side = window // merge // patch
    if side < 1:
        raise ValueError(f"window_size {window} is smaller than one merged token ({merge * patch} pixels)")
    index, lengths, offset = [], [], 0
    for t, h, w in grid:
        gh, gw = h // merge, w // merge
        ids = np.arange(t * gh * gw).reshape(t, gh, gw)
        nh, nw = -(-gh // side), -(-gw // side)
        for f in range(t):
            for i in range(nh):
                for j in range(nw):
                    block = ids[f, i * side : (i + 1) * side, j * side : (j + 1) * side].reshape(-1)
                    index.append(block + offset)
                    lengths.append(block.size * merge * merge)
        offset += t * gh * gw
    return np.concatenate(index), np.asarray(lengths)


def frame_lengths(grid: np.ndarray) -> np.ndarray:
    """Patches in each frame of each image: the segments full attention is taken over."""
    return np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])


def rope_index(
    cfg: Config, input_ids: np.ndarray, grid: np.ndarray | None, attention_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's (3, B, T) rotary positions and each row's next position (B,).

    Over each row's unmasked tokens: text tokens count up on all three axes; a run of image tokens takes the
    next image of ``grid``: frame, row and column of each merged token added to the position where the run
    starts; the text after it continues from that start plus the image's larger merged side. Masked
    (padding) tokens get position 0 (they are never attended). Images are taken in order across rows.
    """
    merge = cfg.vision.spatial_merge_size
    b, t = input_ids.shape
    out = np.zeros((3, b, t), np.int64)
    next_pos = np.zeros((b,), np.int64)
    images = iter(grid if grid is not None else [])
    for row in range(b):
        valid = np.flatnonzero(attention_mask[row])
        ids = input_ids[row, valid]
        is_image = ids == cfg.image_token_id
        pos_rows, cur, i = [], 0, 0
        while i < len(ids):
            j = i
            while j < len(ids) and is_image[j] == is_image[i]:
                j += 1
            if not is_image[i]:
                n = j - i
                pos_rows.append(np.broadcast_to(np.arange(n) + cur, (3, n)))
                cur += n
            else:
                try:
                    ft, fh, fw = next(images)
                except StopIteration:
                    raise ValueError(
                        "input_ids hold more runs of image tokens than image_grid_thw lists images"
                    ) from None
                gt, gh, gw = int(ft), int(fh) // merge, int(fw) // merge
                if gt * gh * gw != j - i:
                    raise ValueError(
                        f"a run of {j - i} image tokens in row {row} does not match its image's grid "
                        f"{[int(ft), int(fh), int(fw)]}, which makes {gt * gh * gw} tokens"
                    )
                tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
                pos_rows.append(np.stack([tt, hh, ww]).reshape(3, -1) + cur)
                cur += max(gh, gw)
            i = j
        if pos_rows:
            pos = np.concatenate(pos_rows, axis=1)
            out[:, row, valid] = pos
            next_pos[row] = pos.max() + 1
    if next(images, None) is not None:
        raise ValueError("image_grid_thw lists more images than input_ids hold runs of image tokens")
    return out, next_pos
