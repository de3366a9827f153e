"""The dataset readers (tokdyn.datasets) on files the tests write in the published formats
(tests/tfrecord_files.py: the TFRecord framing with its CRC32Cs, GZIP, tf.train.Example encoded by
hand from the protobuf wire format), including corrupt, truncated and wrongly specified files."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

pytest.importorskip("google_crc32c")
pytest.importorskip("google.protobuf")

import tfrecord_files as tf_files  # noqa: E402

from tokdyn.datasets import example, multi_object, tfrecord  # noqa: E402

# RFC 3720, B.4: CRC32C of 32 bytes of zeros, of ones, ascending and descending; and "123456789"
RFC3720 = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
]


@pytest.mark.parametrize("data,crc", RFC3720)
def test_crc32c_matches_rfc3720_and_the_bitwise_definition(data, crc):
    assert tfrecord.crc32c(data) == crc
    assert tf_files.crc32c_bitwise(data) == crc


def test_masked_crc_is_the_rotation_plus_the_delta():
    c = 0x8A9136AA
    assert tfrecord.masked_crc(bytes(32)) == (((c >> 15) | (c << 17)) + 0xA282EAD8) % 2**32


RECORDS = [b"", b"a", os.urandom(300), b"tokdyn" * 1000]


@pytest.mark.parametrize("compress", [False, True])
def test_records_round_trip(tmp_path, compress):
    path = tmp_path / "r.tfrecords"
    tf_files.write(path, RECORDS, compress)
    got = list(tfrecord.read_records(path, "GZIP" if compress else None))
    assert got == RECORDS


def _corrupt(tmp_path, raw: bytes, compress: bool = False):
    path = tmp_path / "bad.tfrecords"
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_a_bad_data_crc_names_the_file_and_the_record(tmp_path, compress):
    raw = bytearray(tf_files.write(tmp_path / "ok.tfrecords", RECORDS))
    second = 12 + 0 + 4  # record 1 starts after record 0's header, empty data and CRC
    raw[second + 12] ^= 0x01  # record 1's one data byte
    path = _corrupt(tmp_path, bytes(raw), compress)
    records = tfrecord.read_records(path, "GZIP" if compress else None)
    assert next(records) == b""
    with pytest.raises(
        tfrecord.RecordError, match=rf"bad.tfrecords: record 1 \(byte {second}\).*CRC32C of its 1 bytes"
    ):
        next(records)


def test_a_bad_length_crc_is_named(tmp_path):
    raw = bytearray(tf_files.write(tmp_path / "ok.tfrecords", RECORDS))
    raw[16 + 17] ^= 0x80  # the first byte of record 2's length
    with pytest.raises(tfrecord.RecordError, match=r"record 2 \(byte 33\).*CRC32C of its length"):
        list(tfrecord.read_records(_corrupt(tmp_path, bytes(raw))))


@pytest.mark.parametrize("cut,what", [(5, "12-byte header"), (33 + 12 + 100, "data"), (33 + 12 + 300 + 2, "data CRC")])
def test_truncation_is_named(tmp_path, cut, what):
    raw = tf_files.write(tmp_path / "ok.tfrecords", RECORDS)
    record = 0 if cut < 16 else 2
    with pytest.raises(tfrecord.RecordError, match=rf"record {record} .*is truncated: its {what}"):
        list(tfrecord.read_records(_corrupt(tmp_path, raw[: len(raw) - len(raw) + cut])))


def test_a_length_beyond_the_file_is_named_without_allocating_it(tmp_path):
    import struct

    length = struct.pack("<Q", 2**40)  # a terabyte, with a valid CRC: the file holds 3 bytes
    path = tmp_path / "huge.tfrecords"
    path.write_bytes(length + struct.pack("<I", tf_files.masked(length)) + b"abc")
    with pytest.raises(tfrecord.RecordError, match=r"record 0 .*truncated: its data \(1099511627776 bytes\).*after 3"):
        list(tfrecord.read_records(path))


def test_a_truncated_gzip_stream_and_a_plain_file_read_as_gzip_are_named(tmp_path):
    raw = tf_files.write(tmp_path / "ok.tfrecords", RECORDS)
    path = tmp_path / "cut.tfrecords"
    path.write_bytes(gzip.compress(raw, mtime=0)[:-20])
    with pytest.raises(tfrecord.RecordError, match=r"cut.tfrecords: record \d+ .*(GZIP stream|truncated)"):
        list(tfrecord.read_records(path, "GZIP"))
    with pytest.raises(tfrecord.RecordError, match="ok.tfrecords: not a GZIP file"):
        list(tfrecord.read_records(tmp_path / "ok.tfrecords", "GZIP"))
    with pytest.raises(ValueError, match="compression must be None, '' or 'GZIP', got 'ZLIB'"):
        list(tfrecord.read_records(tmp_path / "ok.tfrecords", "ZLIB"))


def test_examples_encoded_by_hand_decode_to_their_values():
    img = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    data = tf_files.example(
        {
            "image": tf_files.bytes_list(img),
            "x": tf_files.float_list([0.5, -2.25, 1e30]),
            "n": tf_files.int64_list([0, -1, 2**40]),
            "extra": tf_files.bytes_list([b"ignored"]),
        }
    )
    specs = [
        example.FeatureSpec("image", (2, 4, 3), "uint8"),
        example.FeatureSpec("x", (3,), "float32"),
        example.FeatureSpec("n", (3,), "int64"),
    ]
    out = example.decode(data, specs)
    np.testing.assert_array_equal(out["image"], img)
    np.testing.assert_array_equal(out["x"], np.array([0.5, -2.25, 1e30], np.float32))
    np.testing.assert_array_equal(out["n"], [0, -1, 2**40])
    assert all(v.flags.writeable for v in out.values())  # arrays of their own, not views of the record
    # the package's messages write what the hand encoding reads back the same way
    msg = example.messages()["Example"]()
    msg.ParseFromString(data)
    again = example.decode(msg.SerializeToString(), specs)
    for k in out:
        np.testing.assert_array_equal(again[k], out[k])


def _unpacked_floats(values) -> bytes:
    """A Feature holding a FloatList written unpacked (one tag a float), legal protobuf."""
    import struct

    return tf_files.field(2, b"".join(b"\x0d" + struct.pack("<f", v) for v in values))


SPECS = [example.FeatureSpec("b", (4,), "uint8"), example.FeatureSpec("x", (2,), "float32")]
PLAIN = {"b": tf_files.bytes_list(np.array([1, 2, 250, 0], np.uint8)), "x": tf_files.float_list([0.5, -3.0])}
UNUSUAL = {
    "unpacked floats": tf_files.example({"b": PLAIN["b"], "x": _unpacked_floats([0.5, -3.0])}),
    "a key twice, the later wins": tf_files.example({"b": PLAIN["b"], "x": tf_files.float_list([9.0, 9.0])})
    + tf_files.example({"x": PLAIN["x"]}),  # two Features messages: protobuf merges them
    "a list split in two": tf_files.example(
        {"b": tf_files.bytes_list([b"\x01", b"\x02"]) + tf_files.bytes_list([b"\xfa", b"\x00"]), "x": PLAIN["x"]}
    ),
}


def test_the_wire_reader_equals_protobuf_and_unusual_encodings_fall_back_to_it():
    plain = tf_files.example(PLAIN)
    via_protobuf = example.decode(example.parse_example(plain), SPECS)  # a message: protobuf's path
    fast = example._wire_decode(plain, SPECS)  # the plain encoding: read in place
    for k in via_protobuf:
        np.testing.assert_array_equal(fast[k], via_protobuf[k])
        assert fast[k].dtype == via_protobuf[k].dtype
    for name, data in UNUSUAL.items():
        if name == "a key twice, the later wins":  # the wire reader merges as protobuf does
            np.testing.assert_array_equal(example._wire_decode(data, SPECS)["x"], np.float32([0.5, -3.0]))
        else:
            with pytest.raises(example._Unusual):
                example._wire_decode(data, SPECS)
        via_protobuf = example.decode(example.parse_example(data), SPECS)
        np.testing.assert_array_equal(via_protobuf["x"], np.float32([0.5, -3.0]), err_msg=name)
        got = example.decode(data, SPECS)  # bytes: the wire reader declines, protobuf reads it
        np.testing.assert_array_equal(got["b"], [1, 2, 250, 0], err_msg=name)
        np.testing.assert_array_equal(got["x"], np.float32([0.5, -3.0]), err_msg=name)


@pytest.mark.parametrize(
    "feature,spec,match",
    [
        ({}, ("x", (2,), "float32"), r"FILE: record 7: feature 'x' is missing"),
        (
            {"x": tf_files.int64_list([1, 2])},
            ("x", (2,), "float32"),
            "'x' is a int64_list, but the spec declares a float_list",
        ),
        (
            {"x": tf_files.float_list([1, 2, 3])},
            ("x", (2,), "float32"),
            r"'x' holds 3 values, but the spec declares shape \(2,\)",
        ),
        ({"x": tf_files.bytes_list([b"ab", b""])}, ("x", (2,), "uint8"), "one byte a value .* hold 0 to 2 bytes"),
    ],
)
def test_a_wrong_feature_spec_is_named(feature, spec, match):
    data = tf_files.example(feature)
    with pytest.raises(example.SpecError, match=match):
        example.decode(data, [example.FeatureSpec(*spec)], where="FILE: record 7")


def test_bytes_that_are_no_example_are_named():
    with pytest.raises(example.SpecError, match="FILE: record 0: not a serialized tf.train.Example"):
        example.decode(b"\xff\xff\xff", [], where="FILE: record 0")


@pytest.mark.parametrize("file", sorted(multi_object.DATASETS))
def test_multi_object_files_read_back(tmp_path, file):
    d = multi_object.DATASETS[file]
    rng = np.random.default_rng(0)
    made = [tf_files.multi_object_example(d, rng, n) for n in (min(1, d.max_objects), min(3, d.max_objects))]
    folder = tmp_path / d.name
    folder.mkdir()
    tf_files.write(folder / d.file, [m[0] for m in made], compress=True)
    got = list(multi_object.read(tmp_path))  # found in the bucket's subfolder by its published name
    assert [g["index"] for g in got] == [0, 1]
    for g, (_, want) in zip(got, made):
        assert g["image"].shape == (*d.image_size, d.channels) and g["mask"].shape == (d.entities, *d.image_size)
        for spec in d.features:
            np.testing.assert_array_equal(g[spec.name], want[spec.name])
        labels, n = multi_object.labels(g["mask"], d.background)
        np.testing.assert_array_equal(labels, want["labels"])
        assert n == len(np.unique(want["labels"])) - (0 in want["labels"])


def test_a_multi_object_file_with_a_wrong_spec_names_the_feature_and_the_record(tmp_path):
    d = multi_object.DATASETS["tetrominoes_train.tfrecords"]
    rng = np.random.default_rng(1)
    records = [tf_files.multi_object_example(d, rng, 2)[0], tf_files.multi_object_example(d, rng, 2, wrong="color")[0]]
    tf_files.write(tmp_path / d.file, records, compress=True)
    with pytest.raises(example.SpecError, match=r"tetrominoes_train.tfrecords: record 1 .*'color' holds 13 values"):
        list(multi_object.read(tmp_path / d.file))
    records[1] = tf_files.multi_object_example(d, rng, 2, drop="mask")[0]
    tf_files.write(tmp_path / d.file, records, compress=True)
    with pytest.raises(example.SpecError, match="record 1 .*feature 'mask' is missing"):
        list(multi_object.read(tmp_path))


def test_a_missing_or_empty_directory_names_the_layout_and_where_it_is_published(tmp_path):
    for path in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(FileNotFoundError, match=r"clevr_with_masks_train.tfrecords(.|\n)*multi-object-datasets"):
            multi_object.find(path)


def test_locate_chooses_one_file_or_names_the_choice(tmp_path):
    for d in ("tetrominoes_train.tfrecords", "objects_room_train.tfrecords"):
        tf_files.write(tmp_path / d, [], compress=True)
    with pytest.raises(ValueError, match="several datasets' files"):
        multi_object.locate(tmp_path)
    d, path = multi_object.locate(tmp_path, "objects_room_train.tfrecords")
    assert d.name == "objects_room" and d.background == 4 and path.endswith("objects_room_train.tfrecords")
    (tmp_path / "mine.tfrecords").write_bytes(b"")
    with pytest.raises(ValueError, match="not one of the multi-object datasets' published file names"):
        multi_object.locate(tmp_path / "mine.tfrecords")


# --- bounded records, the wire reader against protobuf, the arguments' checks --------------------


def _claim(length: int) -> bytes:
    """A record header claiming ``length`` bytes of data, with a valid length CRC."""
    import struct

    head = struct.pack("<Q", length)
    return head + struct.pack("<I", tf_files.masked(head))


def test_a_gzip_record_claiming_2_62_bytes_is_refused_without_inflating_the_stream(tmp_path):
    import tracemalloc
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # a GZIP stream: 16 MB of zeros after the header
    body = compressor.compress(_claim(2**62)) + compressor.compress(bytes(16 << 20)) + compressor.flush()
    path = tmp_path / "bomb.tfrecords"
    path.write_bytes(body)
    assert len(body) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(
            tfrecord.RecordError,
            match=r"bomb.tfrecords: record 0 \(byte 0\) claims 4611686018427387904 bytes of data, more than "
            r"max_record_bytes=1073741824.*MAX_RECORD_BYTES",
        ):
            list(tfrecord.read_records(path, "GZIP"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak  # the 16 MB behind the header were never inflated (before: all of it held)


def test_the_record_limit_is_named_and_can_be_raised(tmp_path, monkeypatch):
    records = [b"x" * 100, b"y" * 2000]
    for compress in (False, True):
        path = tmp_path / f"r{compress}.tfrecords"
        tf_files.write(path, records, compress)
        kind = "GZIP" if compress else None
        with pytest.raises(
            tfrecord.RecordError, match=r"record 1 \(byte 116\) claims 2000 bytes.*max_record_bytes=1000"
        ):
            list(tfrecord.read_records(path, kind, max_record_bytes=1000))
        assert list(tfrecord.read_records(path, kind, max_record_bytes=2000)) == records
        monkeypatch.setattr(tfrecord, "MAX_RECORD_BYTES", 1999)  # the default, read at the call
        with pytest.raises(tfrecord.RecordError, match="max_record_bytes=1999"):
            list(tfrecord.read_records(path, kind))
        monkeypatch.undo()
    for bad, kind in ((0, ValueError), (-5, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(kind, match="max_record_bytes must be"):
            list(tfrecord.read_records(path, max_record_bytes=bad))


def test_a_plain_file_record_longer_than_the_file_is_named_before_reading(tmp_path):
    path = tmp_path / "short.tfrecords"
    path.write_bytes(tf_files.frame(b"ok") + _claim(500) + b"z" * 10)
    records = tfrecord.read_records(path, max_record_bytes=100)  # the truncation is said first: it is exact
    assert next(records) == b"ok"
    with pytest.raises(
        tfrecord.RecordError, match=r"record 1 \(byte 18\) is truncated: its data \(500 bytes\).*after 10"
    ):
        next(records)


def _packed_floats(values) -> bytes:
    return tf_files.field(1, np.asarray(values, "<f4").tobytes())


def _unpacked_float(v) -> bytes:
    import struct

    return b"\x0d" + struct.pack("<f", v)


def test_an_unpacked_value_after_a_packed_run_is_kept_as_protobuf_keeps_it():
    wire = _packed_floats([1.0, 2.0, 3.0]) + _unpacked_float(4.0)
    data = tf_files.example({"x": tf_files.field(2, wire)})
    assert list(example.parse_example(data).features.feature["x"].float_list.value) == [1, 2, 3, 4]
    np.testing.assert_array_equal(example.decode(data, [example.FeatureSpec("x", (4,), "float32")])["x"], [1, 2, 3, 4])
    with pytest.raises(example.SpecError, match=r"'x' holds 4 values, but the spec declares shape \(3,\)"):
        example.decode(data, [example.FeatureSpec("x", (3,), "float32")])  # before: [1, 2, 3], the 4 dropped


def _list_wire(kind: str, runs) -> bytes:
    """A FloatList / Int64List / BytesList message from ``runs``: ("packed", values), ("one",
    value) (an unpacked value) or ("unknown", n) (an unknown field protobuf skips)."""
    out = b""
    for how, v in runs:
        if how == "unknown":
            out += tf_files.field(5 + v, b"?") if v % 2 else tf_files.varint((6 + v) << 3) + tf_files.varint(v)
        elif kind == "bytes":
            out += b"".join(tf_files.field(1, bytes([b])) for b in ([v] if how == "one" else v))
        elif kind == "float":
            out += _unpacked_float(v) if how == "one" else _packed_floats(v)
        else:
            packed = b"".join(tf_files.varint(int(x)) for x in v) if how == "packed" else None
            out += b"\x08" + tf_files.varint(int(v)) if how == "one" else tf_files.field(1, packed)
    return out


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # the test extra holds hypothesis; without it the property test is skipped
    given = None

if given is not None:
    _floats = st.floats(width=32, allow_nan=False)
    _ints = st.integers(-(2**63), 2**63 - 1)
    _bytes = st.integers(0, 255)

    def _runs(value):
        return st.lists(
            st.one_of(
                st.tuples(st.just("packed"), st.lists(value, max_size=4)),
                st.tuples(st.just("one"), value),
                st.tuples(st.just("unknown"), st.integers(0, 3)),
            ),
            max_size=5,
        )

    @settings(max_examples=60, deadline=None)
    @given(
        kind=st.sampled_from(["float", "int", "bytes"]),
        data=st.data(),
        split_feature=st.booleans(),
        split_features=st.booleans(),
    )
    def test_the_wire_reader_equals_protobufs_parse_on_any_encoding(kind, data, split_feature, split_features):
        value = {"float": _floats, "int": _ints, "bytes": _bytes}[kind]
        number = {"bytes": 1, "float": 2, "int": 3}[kind]
        first = _list_wire(kind, data.draw(_runs(value), label="runs"))
        second = _list_wire(kind, data.draw(_runs(value), label="more runs")) if split_feature else b""
        feature = tf_files.field(number, first) + (tf_files.field(number, second) if split_feature else b"")
        other = {"o": tf_files.float_list([7.0])}
        encoded = tf_files.example({"x": feature, **other})
        if split_features:  # the features message twice: protobuf merges them
            encoded = tf_files.example(other) + encoded
        message = example.parse_example(encoded).features.feature["x"]
        want = list(getattr(message, {"bytes": "bytes_list", "float": "float_list", "int": "int64_list"}[kind]).value)
        if kind == "bytes":
            want = [w[0] for w in want]  # one-byte strings, by construction
        dtype = {"bytes": "uint8", "float": "float32", "int": "int64"}[kind]
        got = example.decode(encoded, [example.FeatureSpec("x", (len(want),), dtype)])["x"]
        np.testing.assert_array_equal(got, np.asarray(want, dtype))
        with pytest.raises(example.SpecError, match="holds"):
            example.decode(encoded, [example.FeatureSpec("x", (len(want) + 1,), dtype)])


@pytest.mark.parametrize(
    "args,kind,match",
    [
        (("x", (-2, 3), "float32"), ValueError, r"shape of feature 'x' must be a tuple of ints >= 0.*\(-2, 3\)"),
        (("x", (2.5,), "float32"), TypeError, r"shape of feature 'x' must be a tuple of ints >= 0.*2.5"),
        (("x", (True,), "float32"), TypeError, "shape of feature 'x'"),
        (("x", 3, "float32"), TypeError, "shape of feature 'x' must be a tuple"),
        ((7, (3,), "float32"), TypeError, "name of a FeatureSpec must be a non-empty str"),
        (("x", (3,), "float64"), ValueError, "dtype of feature 'x' must be one of"),
    ],
)
def test_a_bad_feature_spec_is_named(args, kind, match):
    with pytest.raises(kind, match=match):
        example.FeatureSpec(*args)


@pytest.mark.parametrize(
    "kw,kind,match",
    [
        ({"start": -1}, ValueError, r"start must be >= 0 .*got -1"),
        ({"start": 2.5}, TypeError, r"start must be an int >= 0 .*got 2.5"),
        ({"stop": -2}, ValueError, r"stop must be >= 0 .*got -2"),
        ({"stop": "3"}, TypeError, r"stop must be an int >= 0 or None .*got '3'"),
    ],
)
def test_a_bad_range_of_records_is_named_at_the_call(tmp_path, kw, kind, match):
    d = multi_object.DATASETS["tetrominoes_train.tfrecords"]
    tf_files.write(tmp_path / d.file, [tf_files.multi_object_example(d, np.random.default_rng(0), 1)[0]], True)
    with pytest.raises(kind, match=match):
        multi_object.read(tmp_path / d.file, **kw)  # raised at the call, before the first record
