"""Files in TensorFlow's formats written without TensorFlow or tokdyn.datasets, for the readers'
tests: a TFRecord writer (CRC32C from google-crc32c, checked in the tests against RFC 3720's
vectors and a bitwise reference), GZIP, and tf.train.Example messages encoded by hand from the
protobuf wire format (example.proto / feature.proto), and examples of the multi-object datasets."""

from __future__ import annotations

import gzip
import struct

import numpy as np


def crc32c_bitwise(data: bytes) -> int:
    """CRC32C by the definition, one bit at a time (reflected polynomial 0x82f63b78): slow, tiny inputs only."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    import google_crc32c

    c = google_crc32c.value(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) % 2**32


def frame(record: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", masked(length)) + record + struct.pack("<I", masked(record))


def write(path, records, compress: bool = False) -> bytes:
    """Write ``records`` to ``path`` (GZIP-compressed with ``compress``); returns the uncompressed bytes."""
    raw = b"".join(frame(r) for r in records)
    with open(path, "wb") as f:
        f.write(gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw)
    return raw


def varint(n: int) -> bytes:
    n &= 2**64 - 1  # negative int64s: two's complement, ten bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bytes_list(values) -> bytes:
    """A Feature holding a BytesList; a uint8 array is encoded as one-byte strings, fast."""
    if isinstance(values, np.ndarray):
        flat = values.astype(np.uint8).ravel()
        wire = np.empty((flat.size, 3), np.uint8)
        wire[:, 0], wire[:, 1], wire[:, 2] = 0x0A, 1, flat
        return field(1, wire.tobytes())
    return field(1, b"".join(field(1, v) for v in values))


def float_list(values) -> bytes:
    """A Feature holding a packed FloatList."""
    return field(2, field(1, np.asarray(values, "<f4").ravel().tobytes()))


def int64_list(values) -> bytes:
    """A Feature holding a packed Int64List."""
    return field(3, field(1, b"".join(varint(int(v)) for v in np.ravel(values))))


def example(features: dict) -> bytes:
    """A serialized tf.train.Example from ``{name: encoded Feature}``."""
    entries = b"".join(field(1, field(1, k.encode()) + field(2, v)) for k, v in features.items())
    return field(1, entries)


def multi_object_example(dataset, rng, n_objects: int, *, drop=None, wrong=None, side=4) -> tuple[bytes, dict]:
    """A random example of ``dataset`` (a tokdyn.datasets.multi_object.Dataset, read for its sizes
    only) with ``n_objects`` rectangles as objects (object j ``side + j`` pixels wide); ``drop``: a
    feature left out; ``wrong``: a feature given one value too many. Returns the serialized example
    and the arrays (masks in (entities, H, W) order, labels (H, W))."""
    (H, W), C, K, bg = dataset.image_size, dataset.channels, dataset.entities, dataset.background
    labels = np.zeros((H, W), np.int64)
    owner = rng.integers(0, bg, size=(H, W))  # the background entities share the background
    for j in range(n_objects):
        r, c = rng.integers(0, H - side), rng.integers(0, W - side)
        owner[r : r + side + j, c : c + side + j] = bg + j
    labels = np.where(owner >= bg, owner - bg + 1, 0)
    mask = (np.arange(K)[:, None, None] == owner[None]).astype(np.uint8) * 255  # (K, H, W)
    image = rng.integers(0, 256, size=(H, W, C), dtype=np.uint8)
    arrays = {"image": image, "mask": mask, "labels": labels}
    feats = {}
    for spec in dataset.features:
        if spec.name == "image":
            value = image
        elif spec.name == "mask":
            value = np.moveaxis(mask, 0, -1) if dataset.masks_last else mask
        elif spec.dtype == "uint8":
            value = rng.integers(0, 8, size=spec.shape, dtype=np.uint8)
        else:
            value = rng.normal(size=spec.shape).astype(np.float32)
            if spec.name == "visibility":
                value = (np.arange(K) < bg + n_objects).astype(np.float32)
        arrays.setdefault(spec.name, np.asarray(value).reshape(spec.shape) if spec.name != "mask" else mask)
        if spec.name == drop:
            continue
        flat = np.asarray(value).ravel()
        if spec.name == wrong:
            flat = np.concatenate([flat, flat[:1]])
        feats[spec.name] = bytes_list(flat) if spec.dtype == "uint8" else float_list(flat)
    return example(feats), arrays
