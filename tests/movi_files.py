"""MOVi shards written without TensorFlow or tokdyn.datasets, for the tests: examples in MOVi's
TFDS format (PNG frames and segmentations, the objects' per-frame visibility and image positions,
the sizes in metadata/*) encoded by hand from the protobuf wire format (tfrecord_files)."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image

import tfrecord_files as tf_files

F, H, W = 4, 12, 16


def png(array) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def movi_example(rng, n: int, *, frames=F, shape=(H, W), side=3, drop=None, replace=None, extra=None):
    """A serialized MOVi example with ``n`` moving rectangles, and its arrays. ``drop``: a feature
    left out; ``replace``: ``{name: encoded Feature}`` in place of the right ones; ``extra``:
    ``{name: encoded Feature}`` added (features the reader does not read)."""
    h, w = shape
    seg = np.zeros((frames, h, w), np.uint8)
    for f in range(frames):
        for i in range(n):
            r, c = (2 * i * side + f) % (h - side), (3 * i * side + 2 * f) % (w - side)
            seg[f, r : r + side, c : c + side] = i + 1
    colours = np.concatenate([[[128, 128, 128]], rng.integers(0, 256, size=(n, 3))]).astype(np.uint8)
    video = colours[seg] ^ rng.integers(0, 4, size=(frames, h, w, 3), dtype=np.uint8)  # a little noise
    visibility = np.stack([(seg == i + 1).sum(axis=(1, 2)) for i in range(n)]).reshape(n, frames)
    positions = rng.uniform(size=(n, frames, 2)).astype(np.float32)
    feats = {
        "metadata/num_frames": tf_files.int64_list([frames]),
        "metadata/height": tf_files.int64_list([h]),
        "metadata/width": tf_files.int64_list([w]),
        "metadata/num_instances": tf_files.int64_list([n]),
        "metadata/video_name": tf_files.bytes_list([b"42"]),
        "metadata/depth_range": tf_files.float_list([0.5, 9.0]),
        "video": tf_files.bytes_list([png(v) for v in video]),
        "segmentations": tf_files.bytes_list([png(s) for s in seg]),
        "instances/visibility": tf_files.int64_list(visibility),
        "instances/image_positions": tf_files.float_list(positions),
        "instances/bbox_frames/ragged_flat_values": tf_files.int64_list(np.arange(2 * n)),
        "instances/bbox_frames/ragged_row_lengths_0": tf_files.int64_list([2] * n),
    }
    feats.update(extra or {})
    feats.update(replace or {})
    feats.pop(drop, None)
    arrays = dict(video=video, segmentations=seg, visibility=visibility, image_positions=positions)
    return tf_files.example(feats), arrays


def write_movi(
    folder,
    counts=(2, 3, 1),
    *,
    shards=1,
    variant="movi_a",
    split="train",
    total=None,
    resolution="128x128",
    version="1.0.0",
    **kw,
):
    """``counts`` examples over ``shards`` shards of ``variant``'s ``split`` under ``folder``
    (TFDS's layout: ``variant/resolution/version/``); returns the examples' arrays."""
    rng = np.random.default_rng(0)
    made = [movi_example(rng, n, **kw) for n in counts]
    out = folder / variant / resolution / version
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(made) // shards)
    for s in range(shards):
        name = f"{variant}-{split}.tfrecord-{s:05d}-of-{(total or shards):05d}"
        tf_files.write(out / name, [m[0] for m in made[s * per : (s + 1) * per]])
    return [m[1] for m in made]
