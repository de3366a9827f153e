"""TFRecord files without TensorFlow: the framing, its CRC32C checks and GZIP compression.

A TFRecord file is a sequence of records, each framed as

========  =====================================================
bytes     what
========  =====================================================
8         the data's length ``n``, a little-endian uint64
4         the masked CRC32C of those 8 bytes (little-endian)
n         the data (for datasets, a serialized ``tf.train.Example``)
4         the masked CRC32C of the data
========  =====================================================

where the masked CRC of ``c`` is ``((c >> 15) | (c << 17)) + 0xa282ead8`` modulo 2**32 (the
format of TensorFlow's ``tf.io.TFRecordWriter``; CRC32C is the Castagnoli CRC of RFC 3720).
A file may be GZIP-compressed as a whole. :func:`read_records` checks both CRCs of every record
and raises :class:`RecordError`, naming the file, the record's index and its byte offset, on a
bad checksum, a truncated record or a corrupt GZIP stream: nothing is half-read silently.

A record's length is bounded: one that claims more than ``max_record_bytes`` (default
:data:`MAX_RECORD_BYTES`, 1 GiB) is refused before any of its data is read, naming the limit, and
a plain file's record that claims more bytes than the file has left is refused as truncated
without reading them. The GZIP stream is decompressed as it is read, so a reader holds one
record's bytes at a time, never the file's.

The CRC32C comes from the ``google-crc32c`` package (the ``data`` extra:
``pip install 'tokdyn[data]'``).
"""

from __future__ import annotations

import gzip
import importlib
import os
import struct
import zlib
from collections.abc import Iterator

COMPRESSIONS = ("", "GZIP")  # "" (or None): plain records
MASK_DELTA = 0xA282EAD8
HEADER = 12  # the length (8 bytes) and its masked CRC (4)
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 26  # bytes read at once
MAX_RECORD_BYTES = 1 << 30  # read_records' default bound on a record's length (1 GiB); a user may raise it


class RecordError(ValueError):
    """A TFRecord file that does not read: the message names the file, the record (its index, from
    0, and its byte offset in the uncompressed stream) and what is wrong."""


def require(module: str, package: str):
    """Import optional dependency ``module`` (installed by ``package``, part of the ``data``
    extra), or raise an ``ImportError`` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"reading datasets needs {package} (the 'data' extra): pip install 'tokdyn[data]'") from e


def crc32c(data: bytes) -> int:
    """The CRC32C (Castagnoli) of ``data``, an int in [0, 2**32) (``google_crc32c.value``)."""
    return require("google_crc32c", "google-crc32c").value(bytes(data))


def masked_crc(data: bytes) -> int:
    """The masked CRC32C of ``data`` that TFRecord stores: the CRC rotated right by 15 bits plus
    :data:`MASK_DELTA`, modulo 2**32."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF


def check_compression(compression) -> str:
    """``compression`` as one of :data:`COMPRESSIONS` (None is ``""``); a ``ValueError`` naming it otherwise."""
    value = "" if compression is None else compression
    if value not in COMPRESSIONS:
        raise ValueError(f"compression must be None, '' or 'GZIP', got {compression!r}")
    return value


def check_max_record_bytes(value) -> int:
    """``max_record_bytes`` as a positive int (None: :data:`MAX_RECORD_BYTES`, read at the call, so
    setting the module's value raises the default); a ``ValueError`` / ``TypeError`` naming it."""
    value = MAX_RECORD_BYTES if value is None else value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_record_bytes must be an int (bytes), got {value!r}")
    if value < 1:
        raise ValueError(f"max_record_bytes must be at least 1, got {value}")
    return value


def check_range(start, stop) -> tuple:
    """A reader's ``start`` (an int >= 0) and ``stop`` (None or an int >= 0): ``(start, stop)``,
    or a ``TypeError`` / ``ValueError`` naming the argument, its value and what is allowed."""
    for name, value in (("start", start), ("stop", stop)):
        if value is None and name == "stop":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            allowed = "an int >= 0" + (" or None" if name == "stop" else "")
            raise TypeError(f"{name} must be {allowed} (a record's index from 0), got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (a record's index from 0; no counting from the end), got {value}")
    return start, stop


def _open(path: str, compression: str):
    """The file's uncompressed byte stream; a GZIP file must start with the GZIP magic bytes."""
    f = open(path, "rb")
    if compression == "GZIP":
        head = f.read(2)
        f.seek(0)
        if head != GZIP_MAGIC:
            f.close()
            raise RecordError(
                f"{path}: not a GZIP file (it starts with {head!r}, not {GZIP_MAGIC!r}); it was read with "
                "compression='GZIP'"
            )
        return gzip.GzipFile(fileobj=f, mode="rb")
    return f


def _read(stream, n: int, path: str, index: int, offset: int, what: str) -> bytes:
    """Exactly ``n`` bytes of the stream, or a :class:`RecordError` naming the record."""
    try:
        if n <= CHUNK:
            data = stream.read(n)
        else:  # in pieces: a length that the file cannot hold never allocates its size
            parts, left = [], n
            while left:
                part = stream.read(min(left, CHUNK))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            data = b"".join(parts)
    except (EOFError, OSError, zlib.error) as e:  # gzip: a cut or corrupt compressed stream
        raise RecordError(
            f"{path}: record {index} (byte {offset}): the GZIP stream is corrupt or truncated while reading "
            f"its {what}: {e}"
        ) from e
    if len(data) != n:
        raise RecordError(
            f"{path}: record {index} (byte {offset}) is truncated: its {what} needs {n} bytes, the file "
            f"ends after {len(data)}"
        )
    return data


def read_records(path, compression=None, *, max_record_bytes: int | None = None) -> Iterator[bytes]:
    """The records of TFRecord file ``path``, in order, each checked against both of its CRCs.

    Args:
      path: the file.
      compression: None (or ``""``) for plain records, ``"GZIP"`` for a GZIP-compressed file.
      max_record_bytes: the longest record's data accepted, in bytes (default
        :data:`MAX_RECORD_BYTES`, 1 GiB): a record claiming more is refused before its data is read.

    Yields:
      Each record's data (``bytes``).

    Raises:
      RecordError: a bad length or data CRC, a truncated record, a record longer than
        ``max_record_bytes`` or a corrupt GZIP stream, naming the file, the record's index and its
        byte offset.
      FileNotFoundError: ``path`` does not exist.
    """
    compression = check_compression(compression)
    limit = check_max_record_bytes(max_record_bytes)
    path = os.fspath(path)
    size = os.path.getsize(path) if compression == "" else None  # a plain file: its records lie within it
    with _open(path, compression) as stream:
        index, offset = 0, 0
        while True:
            try:
                first = stream.read(1)
            except (EOFError, OSError, zlib.error) as e:
                raise RecordError(
                    f"{path}: record {index} (byte {offset}): the GZIP stream is corrupt or truncated: {e}"
                ) from e
            if not first:
                return
            header = first + _read(stream, HEADER - 1, path, index, offset, "12-byte header")
            length_bytes = header[:8]
            (length,) = struct.unpack("<Q", length_bytes)
            (length_crc,) = struct.unpack("<I", header[8:])
            if masked_crc(length_bytes) != length_crc:
                raise RecordError(
                    f"{path}: record {index} (byte {offset}): the CRC32C of its length does not match "
                    f"(stored {length_crc:#010x}, computed {masked_crc(length_bytes):#010x}): the file is corrupt"
                )
            if size is not None and length > size - offset - HEADER:  # not read: the file cannot hold it
                raise RecordError(
                    f"{path}: record {index} (byte {offset}) is truncated: its data ({length} bytes) needs "
                    f"{length} bytes, the file ends after {size - offset - HEADER}"
                )
            if length > limit:
                raise RecordError(
                    f"{path}: record {index} (byte {offset}) claims {length} bytes of data, more than "
                    f"max_record_bytes={limit}: a corrupt length (its CRC matches, so it was written so), or a "
                    "record this long: raise the limit with read_records(..., max_record_bytes=N) or "
                    "tokdyn.datasets.tfrecord.MAX_RECORD_BYTES = N"
                )
            data = _read(stream, length, path, index, offset, f"data ({length} bytes)")
            (data_crc,) = struct.unpack("<I", _read(stream, 4, path, index, offset, "data CRC"))
            if masked_crc(data) != data_crc:
                raise RecordError(
                    f"{path}: record {index} (byte {offset}): the CRC32C of its {length} bytes of data does not "
                    f"match (stored {data_crc:#010x}, computed {masked_crc(data):#010x}): the file is corrupt"
                )
            yield data
            index += 1
            offset += HEADER + length + 4
