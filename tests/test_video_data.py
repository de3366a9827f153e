"""The video study on a dataset's videos (``--data DIR``): tokdyn.datasets.clips on MOVi shards
written by the test, the study's options on data, and the study end to end from the command line
(full)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("google_crc32c")
pytest.importorskip("google.protobuf")
pytest.importorskip("PIL")

from movi_files import write_movi  # noqa: E402

from tokdyn.datasets import clips  # noqa: E402
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
    with pytest.raises(ValueError, match="holds 3 train videos with 3 objects in its 5 examples, fewer than the 4"):
        clips.load(folder, 4, size=16, frames=4, objects=3)
    with pytest.raises(ValueError, match="frames must be at most the videos' 10 frames"):
        clips.load(folder, 1, size=16, frames=11, objects=3)


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
