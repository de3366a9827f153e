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
