"""The video study on a dataset's videos (``--data DIR``): tokdyn.datasets.clips on MOVi shards
written by the test, the study's options on data, the clips counted before any work (too few, or a
corrupt record: exit 2 naming the options to change), and the study end to end from the command
line (full)."""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("google_crc32c")
pytest.importorskip("google.protobuf")
pytest.importorskip("PIL")

import tfrecord_files as tf_files  # noqa: E402
from movi_files import movi_example, write_movi  # noqa: E402

from tokdyn.datasets import clips, shortfall  # noqa: E402
from tokdyn.datasets.example import SpecError  # noqa: E402
from tokdyn.experiment.study import Refused  # noqa: E402
from tokdyn.studies import video  # noqa: E402

COUNTS = (3, 2, 3, 3, 4, 3, 3, 3)  # objects in each written video


def write_dir(tmp_path, counts=COUNTS):
    folder = tmp_path / "data"
    made = write_movi(folder, counts=counts, frames=10, shape=(32, 32), side=8)
    return folder, made


def test_clips_are_the_videos_with_the_objects_asked_for_cut_and_counted(tmp_path):
    folder, made = write_dir(tmp_path, COUNTS[:5])
    got = clips.load(folder, 3, size=32, frames=8, objects=3)  # 32: the videos' own size, not resized
    np.testing.assert_array_equal(got.index, [0, 2, 3])  # 2 and 4 objects left out
    for k, i in enumerate(got.index):
        m = made[i]
        np.testing.assert_allclose(got.images[k], m["video"][:8] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(got.masks[k], m["segmentations"][:8])
        np.testing.assert_array_equal(got.visible[k], m["visibility"][:, :8].T)  # the counts the file holds
        np.testing.assert_array_equal(got.area[k], got.visible[k])
        for f in (0, 7):
            for j in range(3):
                r, c = np.nonzero(m["segmentations"][f] == j + 1)
                np.testing.assert_allclose(got.position[k, f, j], [(r.mean() + 0.5) / 32, (c.mean() + 0.5) / 32])
    small = clips.load(folder, 1, size=16, frames=4, objects=3)
    assert small.images.shape == (1, 4, 16, 16, 3) and small.masks.max() <= 3
    np.testing.assert_array_equal(small.visible[0], [[(mf == j + 1).sum() for j in range(3)] for mf in small.masks[0]])
    with pytest.raises(
        clips.TooFewClips, match="holds 3 train videos with 3 objects and at least 4 frames in its 5 examples, fewer"
    ):
        clips.load(folder, 4, size=16, frames=4, objects=3)
    with pytest.raises(clips.TooFewClips, match="holds 0 train videos with 3 objects and at least 11 frames"):
        clips.load(folder, 1, size=16, frames=11, objects=3)  # before: a ValueError midway


def test_the_study_on_data_has_one_scenario_no_learned_arm_and_refuses_clevrer(tmp_path):
    folder, _ = write_dir(tmp_path, COUNTS[:3])
    cfg = video.Config(data=str(folder), objects=3).validate()
    assert cfg.scenarios == (video.DATA,) and cfg.learned == ()
    with pytest.raises(ValueError, match=r"scenarios must be .*data"):
        video.Config(data=str(folder), scenarios=("occlusion",)).validate()
    with pytest.raises(ValueError, match="learned must be empty with data="):
        video.Config(data=str(folder), learned=("mlp",)).validate()
    with pytest.raises(ValueError, match="scenarios must be"):
        video.Config(scenarios=(video.DATA,), learned=()).validate()  # the data scenario needs data
    with pytest.raises(ValueError, match="data: MOVi directory .*nowhere.* does not exist"):
        video.Config(data=str(tmp_path / "nowhere")).validate()
    clevrer = tmp_path / "clevrer" / "video_00000-01000"
    clevrer.mkdir(parents=True)
    (clevrer / "video_00000.mp4").write_bytes(b"")
    with pytest.raises(
        ValueError, match="holds CLEVRER's videos, which the video study cannot score: CLEVRER publishes"
    ):
        video.Config(data=str(tmp_path / "clevrer")).validate()
    # seed s's videos are the n_videos from s * n_videos on, in file order
    cfg = video.Config.quick()
    cfg = type(cfg)(**{**cfg.__dict__, "data": str(folder), "seeds": 2, "n_videos": 1, "scenarios": (video.DATA,)})
    seed1 = video.make_videos(cfg.validate(), video.DATA, 1, start=1)
    np.testing.assert_array_equal(seed1.index, [2])


@pytest.mark.full  # the default tier covers the clips and the options (the tests above)
def test_the_video_study_runs_on_a_movi_directory_from_the_command_line(tmp_path):
    from tokdyn import cli

    folder, _ = write_dir(tmp_path)
    out = tmp_path / "out"
    args = ["study", "video", "--quick", "--data", str(folder), "--out", str(out), "--quiet", "--no-cache",
            "--seeds", "2", "--n-videos", "3"]  # fmt: skip
    assert cli.main(args) == 0
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["scenario"] for r in rows} == {video.DATA}
    assert {r["condition"] for r in rows} == set(video.Config.quick().conditions)
    ari = np.array([float(r["video_ari"]) for r in rows])
    assert np.isfinite(ari).all() and (ari <= 1).all()
    assert all(int(r["frames_overlap"]) == 0 for r in rows)  # MOVi has no unoccluded masks
    assert "On the videos of" in (out / "summary.md").read_text()


# --- the clips counted before any work ----------------------------------------------------------------

MIXED = ((3, 10), (2, 10), (3, 6), (3, 10), (4, 10), (4, 10), (3, 10), (4, 6))  # (objects, frames) a video


def write_mixed(tmp_path, spec=MIXED, replace=None):
    """One shard of videos of ``spec``'s objects and frames (8 x 8); ``replace``: ``{i: {name:
    Feature}}`` written in place of video i's features."""
    rng = np.random.default_rng(0)
    made = [
        movi_example(rng, n, frames=f, shape=(8, 8), side=2, replace=(replace or {}).get(i))[0]
        for i, (n, f) in enumerate(spec)
    ]
    folder = tmp_path / "mixed"
    build = folder / "movi_a" / "128x128" / "1.0.0"
    build.mkdir(parents=True)
    tf_files.write(build / "movi_a-train.tfrecord-00000-of-00001", made)
    return folder


def test_too_few_clips_counts_the_splits_videos_by_objects_and_frames(tmp_path):
    folder = write_mixed(tmp_path)
    with pytest.raises(clips.TooFewClips, match="holds 3 train videos with 3 objects and at least 8 frames") as e:
        clips.load(folder, 5, size=8, frames=8, objects=3)
    err = e.value
    want = {}
    for (n, f), c in Counter(MIXED).items():
        want.setdefault(n, {})[f] = c
    assert err.by_objects == want and err.records == len(MIXED) and (err.found, err.asked) == (3, 5)
    for n, f in itertools.product(range(6), range(1, 12)):
        assert err.usable(n, f) == sum(1 for m, g in MIXED if m == n and g >= f)
    ways = lambda counts, **kw: clips.ways_out(  # noqa: E731
        err, counts, trim="--n-videos", objects_option="--objects", frames_option="--frames", **kw
    )
    # 3 usable of 4 taken: one video a seed, or 6 frames (the fourth 3-object video has 6)
    assert ways({"--seeds": 2, "--n-videos": 2}) == ["--n-videos 1", "--frames 6 (it holds 4 such clips)"]
    assert ways({"--seeds": 3, "--n-videos": 2}) == ["--n-videos 1"]  # no other setting holds 6
    assert clips.ways_out(err, {"--seeds": 2, "--n-videos": 2}, trim="--n-videos") == ["--n-videos 1"]
    line = clips.shortfall_message(err, {"--seeds": 2, "--n-videos": 2}, ways({"--seeds": 2, "--n-videos": 2}))
    assert line.endswith(
        "fewer than the 5 asked for; the study takes 4 (--seeds 2 x --n-videos 2): set --n-videos 1; or --frames 6 "
        "(it holds 4 such clips)"
    )
    with pytest.raises(clips.TooFewClips) as e:
        clips.load(folder, 1, size=8, frames=8, objects=5)
    err = e.value
    # none with 5 objects: the nearest count that holds enough (4 and 3 are nearer than 2; 3 needs 6 frames)
    assert ways({"--seeds": 2, "--n-videos": 2}) == ["--objects 3 --frames 6 (it holds 4 such clips)"]
    assert ways({"--seeds": 2, "--n-videos": 2}, objects=(1, 2)) == [
        "--objects 2 --seeds 1 --n-videos 1 (it holds 1 such clip)"  # 2 objects: 1 video, the counts lowered to it
    ]
    assert ways({"--seeds": 2, "--n-videos": 2}, objects=(6, 9)) == []  # no video with 6 to 9 objects
    # nothing holds 6: the setting holding the most (4), the counts lowered to it
    assert ways({"--seeds": 3, "--n-videos": 2}) == ["--objects 3 --frames 6 --n-videos 1 (it holds 4 such clips)"]
    assert clips.shortfall_message(err, {"--seeds": 3, "--n-videos": 2}, []).endswith(
        "the study takes 6 (--seeds 3 x --n-videos 2), and no setting of these options fits these shards (not one "
        f"of their 8 videos can be taken): fetch more of the split's shards ({clips.movi.BUCKET})"
    )


def test_fit_product_lowers_the_first_name_first_as_a_brute_force_search_does():
    assert shortfall.fit_product({"s": 12, "v": 32}, 100, "v") == {"s": 12, "v": 8}
    assert shortfall.fit_product({"s": 12, "v": 32}, 5, "v") == {"s": 5, "v": 1}
    assert shortfall.fit_product({"s": 12, "v": 32}, 300) == {"s": 9, "v": 32}  # in order without trim
    assert shortfall.fit_product({"s": 2}, 0) is None
    rng = np.random.default_rng(0)
    for _ in range(60):
        counts = dict(zip("abc", rng.integers(1, 6, size=3).tolist()))
        available, trim = int(rng.integers(1, 130)), str(rng.choice(list("abc")))
        order = [trim] + [k for k in counts if k != trim]
        # the reference: every setting within the counts whose product fits, the one that keeps the last
        # name of the order highest, then the one before it, ...
        fits = [
            dict(zip(counts, v))
            for v in itertools.product(*(range(1, c + 1) for c in counts.values()))
            if np.prod(v) <= available
        ]
        best = max(fits, key=lambda d: [d[k] for k in reversed(order)])
        assert shortfall.fit_product(counts, available, trim) == best, (counts, available, trim)


def test_only_the_kept_videos_are_decoded_and_bad_sizes_are_named(tmp_path):
    bad_png = {"video": tf_files.bytes_list([b"not a png"] * 10)}
    folder = write_mixed(tmp_path, replace={1: bad_png})  # the one 2-object video
    got = clips.load(folder, 4, size=8, frames=6, objects=3)  # its frames are never decoded
    np.testing.assert_array_equal(got.index, [0, 2, 3, 6])
    with pytest.raises(SpecError, match=r"record 1 \(a MOVi example\): feature 'video', frame 0: the image does not"):
        clips.load(folder, 1, size=8, frames=6, objects=2)
    folder = write_mixed(tmp_path / "b", replace={2: {"metadata/num_instances": tf_files.float_list([3.0])}})
    with pytest.raises(SpecError, match=r"record 2 .*'metadata/num_instances' is a float_list, but MOVi stores it"):
        clips.load(folder, 4, size=8, frames=6, objects=3)


def data_config(folder, **kw):
    base = video.Config.quick()
    return type(base)(**{**base.__dict__, "data": str(folder), "scenarios": (video.DATA,), **kw}).validate()


def test_the_video_study_refuses_too_few_clips_before_its_directory_is_stamped(tmp_path, capsys):
    from tokdyn import cli

    folder = write_mixed(tmp_path)
    out = tmp_path / "out"
    args = ["study", "video", "--quick", "--data", str(folder), "--size", "8", "--frames", "8", "--seeds", "2",
            "--n-videos", "2", "--out", str(out), "--quiet", "--no-cache"]  # fmt: skip
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists(), err  # before: exit 1 with a traceback, study.json written
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"tokdyn study video: error: data: {folder} holds 3 train videos with 3 objects")
    assert err[-1].endswith(
        "the study takes 4 (--seeds 2 x --n-videos 2): set --n-videos 1; or --frames 6 (it holds 4 such clips)"
    )


def test_the_clips_are_read_once_before_any_work_and_a_corrupt_record_is_refused(tmp_path, monkeypatch):
    folder = write_mixed(tmp_path)
    cfg = data_config(folder, size=8, frames=6, seeds=2, n_videos=2)
    calls = []
    load = clips.load
    monkeypatch.setattr(clips, "load", lambda *a, **kw: calls.append(a) or load(*a, **kw))
    video.real_clips.cache_clear()
    assert video.SPEC.prepare is video.prepare_data
    video.prepare_data(SimpleNamespace(say=lambda *a: None), cfg)
    seed1 = video.make_videos(cfg, video.DATA, 2, start=2)
    np.testing.assert_array_equal(seed1.index, [3, 6])  # the 3-object videos of at least 6 frames: 0, 2, 3, 6
    assert len(calls) == 1  # the run takes the clips prepare read
    path = folder / "movi_a" / "128x128" / "1.0.0" / "movi_a-train.tfrecord-00000-of-00001"
    raw = bytearray(path.read_bytes())
    raw[12 + 40] ^= 0xFF  # a byte of the first record's data
    path.write_bytes(bytes(raw))
    video.real_clips.cache_clear()
    with pytest.raises(
        Refused, match=r"^data: .*movi_a-train.tfrecord-00000-of-00001: record 0 \(byte 0\): the CRC32C"
    ):
        video.prepare_data(SimpleNamespace(say=lambda *a: None), cfg)
    video.real_clips.cache_clear()
