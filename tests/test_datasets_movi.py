"""The MOVi reader (tokdyn.datasets.movi) on shards the test writes in MOVi's TFDS format: PNG
frames and segmentations, the objects' per-frame visibility and image positions, encoded by hand
from the protobuf wire format (tfrecord_files), and broken ones."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("google_crc32c")
pytest.importorskip("google.protobuf")
pytest.importorskip("PIL.Image")

import tfrecord_files as tf_files  # noqa: E402
from movi_files import F, H, W, movi_example, png, write_movi  # noqa: E402

from tokdyn.datasets import movi  # noqa: E402
from tokdyn.datasets.example import SpecError  # noqa: E402
from tokdyn.datasets.tfrecord import RecordError  # noqa: E402


def test_movi_read_gives_the_written_frames_segmentations_and_objects(tmp_path):
    made = write_movi(tmp_path, counts=(2, 3, 1, 2), shards=2)
    got = list(movi.read(tmp_path))
    assert [g["index"] for g in got] == [0, 1, 2, 3]
    assert [g["num_instances"] for g in got] == [2, 3, 1, 2]
    for g, m in zip(got, made):
        np.testing.assert_array_equal(g["video"], m["video"])  # PNG is lossless
        np.testing.assert_array_equal(g["segmentations"], m["segmentations"])
        np.testing.assert_array_equal(g["visibility"], m["visibility"])
        np.testing.assert_array_equal(g["image_positions"], m["image_positions"])
        assert g["video_name"] == "42"
    assert got[2]["file"].endswith("movi_a-train.tfrecord-00001-of-00002")
    # a range over the shards, and one shard file by itself
    assert [g["index"] for g in movi.read(tmp_path, start=1, stop=3)] == [1, 2]
    assert len(list(movi.read(got[0]["file"]))) == 2
    numbered = movi_example(np.random.default_rng(2), 1, replace={"metadata/video_name": tf_files.int64_list([7])})
    assert movi.decode(numbered[0])["video_name"] == "7"  # the name only labels the video
    assert movi.decode(movi_example(np.random.default_rng(2), 1, drop="metadata/video_name")[0])["video_name"] == ""
    padded = movi.instance_arrays(got[0], 4)
    np.testing.assert_array_equal(padded["present"], [True, True, False, False])
    np.testing.assert_array_equal(padded["visibility"][:2], made[0]["visibility"])
    assert not padded["visibility"][2:].any()
    with pytest.raises(ValueError, match="max_instances must be at least the example's 3"):
        movi.instance_arrays(got[1], 2)


def test_movi_layout_errors_name_the_layout_and_the_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="kubric-public"):
        movi.find(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no train shard"):
        movi.find(tmp_path)
    write_movi(tmp_path, counts=(1, 1, 1), shards=3, total=3)
    (tmp_path / "movi_a/128x128/1.0.0/movi_a-train.tfrecord-00001-of-00003").unlink()
    with pytest.raises(ValueError, match="skip shard 00001 of 3"):
        movi.find(tmp_path)
    (tmp_path / "movi_a/128x128/1.0.0/movi_a-train.tfrecord-00002-of-00003").unlink()
    assert len(movi.find(tmp_path)) == 1  # a prefix of the shards is a subset
    write_movi(tmp_path, counts=(1,), variant="movi_b")
    with pytest.raises(ValueError, match="name the variant"):
        movi.find(tmp_path)
    assert movi.find(tmp_path, variant="movi_b")[0].endswith("movi_b-train.tfrecord-00000-of-00001")
    for bad, match in ((dict(split="dev"), "split must be one of"), (dict(variant="movi_z"), "variant must be")):
        with pytest.raises(ValueError, match=match):
            movi.find(tmp_path, **bad)
    other = tmp_path / "renamed.tfrecord"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="not a MOVi shard's published name"):
        list(movi.read(other))


def _one(tmp_path, **kw):
    data, _ = movi_example(np.random.default_rng(1), 2, **kw)
    folder = tmp_path / "one"
    folder.mkdir()
    path = folder / "movi_a-validation.tfrecord-00000-of-00001"
    tf_files.write(path, [data])
    return folder


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(drop="segmentations"), "feature 'segmentations' is missing"),
        (dict(replace={"video": tf_files.float_list([1.0])}), "feature 'video' is a float_list, but MOVi stores"),
        (dict(replace={"instances/visibility": tf_files.int64_list(np.zeros(7))}), "holds 7 values, but the ex"),
        (dict(replace={"metadata/height": tf_files.int64_list([0])}), "'metadata/height' is 0, outside"),
        (dict(replace={"metadata/height": tf_files.int64_list([H + 1])}), r"frame 0: the image is \(12, 16, 3\)"),
        (dict(replace={"metadata/num_instances": tf_files.int64_list([1])}), "frame 0: id 2 names no instance"),
        (
            dict(replace={"segmentations": tf_files.bytes_list([png(np.zeros((H, W)))] * 2 + [b"\x89PNG..."] * 2)}),
            "feature 'segmentations', frame 2: the image does not decode",
        ),
        (
            dict(replace={"segmentations": tf_files.bytes_list([png(np.zeros((H, W, 3)))] * F)}),
            r"frame 0: the image is \(12, 16, 3\) uint8, but the example's sizes need \(12, 16\)",
        ),
    ],
)
def test_movi_wrong_specs_are_named_with_the_record_and_the_file(tmp_path, kw, match):
    folder = _one(tmp_path, **kw)
    with pytest.raises(SpecError, match=match) as e:
        list(movi.read(folder, "validation"))
    assert "movi_a-validation.tfrecord-00000-of-00001: record 0" in str(e.value)


def test_movi_corrupt_and_truncated_shards_are_named(tmp_path):
    write_movi(tmp_path, counts=(1, 2))
    path = tmp_path / "movi_a/128x128/1.0.0/movi_a-train.tfrecord-00000-of-00001"
    raw = bytearray(path.read_bytes())
    first = int.from_bytes(raw[:8], "little") + 16
    raw[first + 12 + 40] ^= 0xFF  # a byte of the second record's data
    path.write_bytes(bytes(raw))
    got = movi.read(tmp_path)
    assert next(got)["index"] == 0
    with pytest.raises(RecordError, match="record 1 .* CRC32C of its .* bytes of data does not match"):
        next(got)
    path.write_bytes(bytes(raw[: first + 100]))
    with pytest.raises(RecordError, match="record 1 .* is truncated"):
        list(movi.read(tmp_path))


def test_several_resolutions_or_versions_are_refused_unless_one_is_chosen(tmp_path):
    small = write_movi(tmp_path, counts=(2, 1))
    large = write_movi(tmp_path, counts=(3,), resolution="256x256", shape=(2 * H, 2 * W))
    with pytest.raises(
        ValueError,
        match=r"holds movi_a's train shards of 2 builds: 128x128/1.0.0 \(1 shard in .*128x128/1.0.0\); "
        r"256x256/1.0.0 .*: choose one with resolution='128x128' or '256x256', or give the folder",
    ):
        movi.find(tmp_path)  # before: the shards of both, frames of two sizes
    got = list(movi.read(tmp_path, resolution="256x256"))
    assert [g["video"].shape for g in got] == [(F, 2 * H, 2 * W, 3)]
    np.testing.assert_array_equal(got[0]["video"], large[0]["video"])
    got = list(movi.read(tmp_path, resolution="128x128"))
    assert len(got) == 2 and all(g["video"].shape == (F, H, W, 3) for g in got)
    np.testing.assert_array_equal(got[1]["segmentations"], small[1]["segmentations"])
    assert len(movi.find(tmp_path / "movi_a" / "256x256")) == 1  # a build's own folder
    write_movi(tmp_path, counts=(1,), version="2.0.0")
    with pytest.raises(
        ValueError,
        match=r"of 3 builds.*choose one with resolution='128x128' or '256x256' and version='1.0.0' or '2.0.0'",
    ):
        movi.find(tmp_path)
    with pytest.raises(ValueError, match=r"of 2 builds: 128x128/1.0.0 .*128x128/2.0.0 .*version='1.0.0' or '2.0.0'"):
        movi.find(tmp_path, resolution="128x128")
    assert movi.find(tmp_path, resolution="128x128", version="2.0.0")[0].endswith(
        "128x128/2.0.0/movi_a-train.tfrecord-00000-of-00001"
    )
    with pytest.raises(FileNotFoundError, match="holds no train shard under resolution='64x64'"):
        movi.find(tmp_path, resolution="64x64")
    for bad in ({"resolution": "128"}, {"version": 1.0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be None or a folder name such as"):
            movi.find(tmp_path, **bad)


def test_a_shard_number_found_twice_is_refused_naming_both_files(tmp_path):
    write_movi(tmp_path, counts=(2, 1), shards=2)
    build = tmp_path / "movi_a" / "128x128" / "1.0.0"
    (build / "copy").mkdir()
    shard = "movi_a-train.tfrecord-00001-of-00002"
    (build / "copy" / shard).write_bytes((build / shard).read_bytes())  # in one build: before, one overwrote the other
    with pytest.raises(
        ValueError, match=rf"holds movi_a's train shard 00001 twice: .*1.0.0/{shard} and .*copy/{shard}"
    ):
        movi.find(tmp_path)
    with pytest.raises(ValueError, match="shard 00001 twice"):
        movi.read(tmp_path)


@pytest.mark.parametrize("kw", [{"start": -1}, {"stop": -1}, {"start": 2.5}])
def test_a_bad_range_of_videos_is_named_at_the_call(tmp_path, kw):
    write_movi(tmp_path, counts=(1,))
    with pytest.raises((TypeError, ValueError), match=f"{next(iter(kw))} must be"):
        movi.read(tmp_path, **kw)


def test_a_multi_object_file_in_the_directory_and_its_subfolder_is_refused_naming_both(tmp_path):
    # as a MOVi shard found twice: the multi-object datasets' find (DIR/FILE or DIR/NAME/FILE) never picks one
    from tokdyn.datasets import multi_object

    name = "tetrominoes_train.tfrecords"
    (tmp_path / "tetrominoes").mkdir()
    tf_files.write(tmp_path / "tetrominoes" / name, [b"a"], compress=True)
    ((d, path),) = multi_object.find(tmp_path)  # the bucket's layout alone
    assert d.file == name and path == str(tmp_path / "tetrominoes" / name)
    tf_files.write(tmp_path / name, [b"b"], compress=True)  # before: this copy read, the other ignored
    both = rf"holds {name} twice: {tmp_path / name} and {tmp_path / 'tetrominoes' / name}; keep one copy"
    for call in (multi_object.find, multi_object.locate, lambda p: next(multi_object.read(p))):
        with pytest.raises(ValueError, match=both):
            call(tmp_path)
    assert multi_object.locate(tmp_path / name)[1] == str(tmp_path / name)  # the file itself: no choice to make
    (tmp_path / name).unlink()
    (tmp_path / name).symlink_to(tmp_path / "tetrominoes" / name)  # one file under two paths
    assert multi_object.find(tmp_path) == [(d, str(tmp_path / name))]
