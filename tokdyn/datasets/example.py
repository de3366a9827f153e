"""``tf.train.Example`` without TensorFlow: the messages, built with the ``protobuf`` runtime, and
the checks of a dataset's feature spec.

The messages are TensorFlow's (``tensorflow/core/example/example.proto`` and ``feature.proto``),
declared here field for field in a descriptor of their own (:func:`messages`), so the wire format is
TensorFlow's:

.. code-block:: text

   Example   { Features features = 1; }
   Features  { map<string, Feature> feature = 1; }
   Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
   BytesList { repeated bytes value = 1; }
   FloatList { repeated float value = 1 [packed = true]; }
   Int64List { repeated int64 value = 1 [packed = true]; }

A dataset declares what each example holds as :class:`FeatureSpec`\\ s (a name, a shape and a
dtype, as TensorFlow's ``FixedLenFeature``); :func:`decode` checks an example against them and
returns NumPy arrays, and names the feature, the record and the file when one is missing, of
another kind or of another length. Serialized examples are read from their wire form where the
encoding is the plain one TensorFlow writes (one-byte strings, packed floats: the values read in
place by NumPy, several times faster than building the message), and through the ``protobuf``
message otherwise, which gives the same values and words every error. ``protobuf`` is part of the
``data`` extra.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from tokdyn.datasets.tfrecord import require

DTYPES = ("uint8", "float32", "int64")  # FeatureSpec.dtype: which list holds the values
KINDS = {"uint8": "bytes_list", "float32": "float_list", "int64": "int64_list"}


class SpecError(ValueError):
    """An example that does not hold what its dataset's feature spec declares: the message names
    the feature, the record, the file and what was found instead."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One fixed-length feature of an example (TensorFlow's ``FixedLenFeature``).

    Attributes:
      name: the feature's key in the example.
      shape: the array's shape; the feature holds ``prod(shape)`` values.
      dtype: ``"uint8"``: a ``bytes_list`` of one-byte strings, one a value (TensorFlow's
        ``FixedLenFeature(shape, tf.string)`` decoded by ``decode_raw`` to uint8 with its trailing
        axis of 1 squeezed, as the multi-object datasets store images and masks); ``"float32"``: a
        ``float_list``; ``"int64"``: an ``int64_list``.
    """

    name: str
    shape: tuple
    dtype: str

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name of a FeatureSpec must be a non-empty str (the feature's key), got {self.name!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype of feature {self.name!r} must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.shape, (tuple, list)):
            raise TypeError(f"shape of feature {self.name!r} must be a tuple of ints >= 0, got {self.shape!r}")
        for s in self.shape:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
                raise TypeError(f"shape of feature {self.name!r} must be a tuple of ints >= 0, got {self.shape!r}")
            if s < 0:
                raise ValueError(
                    f"shape of feature {self.name!r} must be a tuple of ints >= 0 (a fixed-length feature's "
                    f"sizes), got {self.shape!r}"
                )
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def size(self) -> int:
        """The number of values, ``prod(shape)``."""
        return math.prod(self.shape)


@functools.cache
def messages() -> dict:
    """The message classes ``{"Example", "Features", "Feature", "BytesList", "FloatList",
    "Int64List"}``, built once from a descriptor declared in code (package ``tensorflow``, in a
    descriptor pool of their own, so they never clash with TensorFlow's if it is imported)."""
    require("google.protobuf", "protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="tokdyn_tf_example.proto", package="tensorflow", syntax="proto3")

    def message(name, fields, nested=()):
        m = fd.message_type.add(name=name)
        for nested_message in nested:
            m.nested_type.add().CopyFrom(nested_message)
        for fname, number, ftype, label, type_name, oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        return m

    repeated, optional = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", [("value", 1, F.TYPE_BYTES, repeated, None, None)])
    message("FloatList", [("value", 1, F.TYPE_FLOAT, repeated, None, None)])
    message("Int64List", [("value", 1, F.TYPE_INT64, repeated, None, None)])
    feature = message(
        "Feature",
        [
            ("bytes_list", 1, F.TYPE_MESSAGE, optional, ".tensorflow.BytesList", 0),
            ("float_list", 2, F.TYPE_MESSAGE, optional, ".tensorflow.FloatList", 0),
            ("int64_list", 3, F.TYPE_MESSAGE, optional, ".tensorflow.Int64List", 0),
        ],
    )
    feature.oneof_decl.add(name="kind")
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=optional, type_name=".tensorflow.Feature")
    entry.options.map_entry = True
    message(
        "Features",
        [("feature", 1, F.TYPE_MESSAGE, repeated, ".tensorflow.Features.FeatureEntry", None)],
        nested=(entry,),
    )
    message("Example", [("features", 1, F.TYPE_MESSAGE, optional, ".tensorflow.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    names = ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{n}")) for n in names}


def parse_example(data: bytes, *, where: str = "record"):
    """Parse serialized ``tf.train.Example`` ``data``; a :class:`SpecError` naming ``where`` (the
    record and file) when it is not one. Returns the message (``.features.feature`` maps names to
    ``Feature`` messages)."""
    from google.protobuf.message import DecodeError

    example = messages()["Example"]()
    try:
        example.ParseFromString(data)
    except DecodeError as e:
        raise SpecError(f"{where}: not a serialized tf.train.Example ({e})") from e
    return example


def _values(feature, spec: FeatureSpec, where: str) -> np.ndarray:
    """The values of one ``Feature`` message as spec's flat array, checked."""
    kind = feature.WhichOneof("kind")
    want = KINDS[spec.dtype]
    if kind != want:
        raise SpecError(
            f"{where}: feature {spec.name!r} is a {kind or 'empty feature'}, but the spec declares a {want} "
            f"(dtype {spec.dtype}, shape {spec.shape})"
        )
    values = getattr(feature, kind).value
    if len(values) != spec.size:
        raise SpecError(
            f"{where}: feature {spec.name!r} holds {len(values)} values, but the spec declares shape {spec.shape} "
            f"({spec.size} values of {spec.dtype})"
        )
    if spec.dtype == "uint8":
        # one-byte strings serialize as (tag 0x0a, length 1, the byte) each: read the bytes from the
        # list's wire form in one pass instead of one Python object a value
        wire = np.frombuffer(feature.bytes_list.SerializeToString(), np.uint8)
        if len(wire) == 3 * spec.size and (wire[0::3] == 0x0A).all() and (wire[1::3] == 1).all():
            return wire[2::3].copy()
        lengths = sorted({len(v) for v in values})
        if lengths in ([], [1]):  # one byte each, but the list holds unknown fields too: value by value
            return np.frombuffer(b"".join(values), np.uint8).copy()
        raise SpecError(
            f"{where}: feature {spec.name!r} must hold one byte a value ({spec.size} one-byte strings for "
            f"shape {spec.shape}), but its strings hold {lengths[0]} to {lengths[-1]} bytes"
        )
    return np.asarray(values, dtype=np.float32 if spec.dtype == "float32" else np.int64)


class _Unusual(Exception):
    """An encoding the wire reader leaves to protobuf (or a mismatch whose message protobuf's path words)."""


def _varint(b: bytes, i: int) -> tuple:
    """The varint at ``b[i:]`` and the index after it."""
    value = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise _Unusual
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        if c < 0x80:
            return value, i
        shift += 7


def _fields(b: bytes, start: int, end: int):
    """The fields of the message at ``b[start:end]``: ``(number, (s, e))`` for each length-delimited
    one. A field of another wire type, or a malformed message, raises :class:`_Unusual`: none of the
    messages the wire reader walks holds one in the plain encoding (an unpacked float is a 32-bit
    field, an unknown field may be anything), so it leaves such an example to protobuf."""
    i = start
    while i < end:
        tag, i = _varint(b, i)
        if tag & 7 != 2 or tag >> 3 == 0:
            raise _Unusual
        n, i = _varint(b, i)
        if i + n > end:
            raise _Unusual
        yield tag >> 3, (i, i + n)
        i += n
    if i != end:
        raise _Unusual


def _wire_decode(b: bytes, specs) -> dict:
    """The features ``specs`` read from the serialized example's wire form directly: the few
    messages around the values walked in Python, the values themselves (a ``bytes_list`` of one-byte
    strings, a packed ``float_list``) read by NumPy in place. Anything else (a feature of another
    kind or size, a repeated or unpacked field, an ``int64_list``) raises :class:`_Unusual`, and
    :func:`decode` hands the example to protobuf."""
    kinds = {1: "bytes_list", 2: "float_list", 3: "int64_list"}
    features = {}
    for number, (s, e) in _fields(b, 0, len(b)):
        if number != 1:
            continue
        for entry_number, (es, ee) in _fields(b, s, e):  # Features: map entries, a later key wins
            if entry_number != 1:
                continue
            key = value = None
            for n, (fs, fe) in _fields(b, es, ee):
                if n == 1:
                    try:
                        key = b[fs:fe].decode("utf-8")
                    except UnicodeDecodeError:
                        raise _Unusual from None
                elif n == 2:
                    if value is not None:
                        raise _Unusual
                    value = (fs, fe)
            if key is None:
                raise _Unusual
            features[key] = value
    out = {}
    for spec in specs:
        if features.get(spec.name) is None:
            raise _Unusual
        fs, fe = features[spec.name]
        inner = [(n, r) for n, r in _fields(b, fs, fe) if n in kinds]
        if len(inner) != 1 or kinds[inner[0][0]] != KINDS[spec.dtype]:
            raise _Unusual
        s, e = inner[0][1]
        if spec.dtype == "uint8":
            wire = np.frombuffer(b, np.uint8, count=e - s, offset=s)
            if len(wire) != 3 * spec.size or not ((wire[0::3] == 0x0A).all() and (wire[1::3] == 1).all()):
                raise _Unusual
            out[spec.name] = wire[2::3].reshape(spec.shape).copy()  # writable; the record's bytes not kept alive
        elif spec.dtype == "float32":
            packed = list(_fields(b, s, e))
            if len(packed) != 1 or packed[0][0] != 1 or packed[0][1][1] - packed[0][1][0] != 4 * spec.size:
                raise _Unusual
            ps, _ = packed[0][1]
            out[spec.name] = np.frombuffer(b, "<f4", count=spec.size, offset=ps).astype(np.float32).reshape(spec.shape)
        else:
            raise _Unusual
    return out


def decode(example, specs, *, where: str = "record") -> dict:
    """The features ``specs`` of ``example`` (a parsed message, or its serialized bytes) as NumPy
    arrays of their shapes (features not in ``specs`` are ignored, as TensorFlow's parser does).

    Serialized bytes are read from their wire form where the encoding is the plain one (one-byte
    strings, packed floats; several times faster than building the message), and through the
    ``protobuf`` message otherwise, which gives the same values and words every error.

    Args:
      example: a ``tf.train.Example`` message (:func:`parse_example`) or its serialized bytes.
      specs: the :class:`FeatureSpec`\\ s to read.
      where: names the example in errors (e.g. ``"FILE: record 3"``).

    Returns:
      ``{name: array}``, each of its spec's shape and dtype.

    Raises:
      SpecError: a feature missing, of another kind, or holding another number of values,
        naming it, ``where``, and the spec.
    """
    if isinstance(example, (bytes, bytearray, memoryview)):
        data = bytes(example)
        try:
            return _wire_decode(data, specs)
        except _Unusual:
            example = parse_example(data, where=where)
    features = example.features.feature
    out = {}
    for spec in specs:
        if spec.name not in features:
            raise SpecError(
                f"{where}: feature {spec.name!r} is missing (the example holds {sorted(features)}; the spec "
                f"declares {[s.name for s in specs]})"
            )
        out[spec.name] = _values(features[spec.name], spec, where).reshape(spec.shape)
    return out
