"""The scenes study on a dataset's files (``--data DIR``): tokdyn.datasets.scenes and the study's
splits on a directory in CLEVR-with-masks' format written by the test, and the study end to end
from the command line (full)."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

pytest.importorskip("google_crc32c")
pytest.importorskip("google.protobuf")
pytest.importorskip("PIL")

import tfrecord_files as tf_files  # noqa: E402

from tokdyn.datasets import multi_object, scenes  # noqa: E402
from tokdyn.studies import object_discovery  # noqa: E402

CLEVR = multi_object.DATASETS["clevr_with_masks_train.tfrecords"]
COUNTS = (2, 7, 3, 1, 2, 3, 2, 3, 1, 2, 3, 2)  # objects in each written scene (7: more than max_objects)


def write_dir(tmp_path, dataset=CLEVR, counts=COUNTS, side=4):
    rng = np.random.default_rng(0)
    made = [tf_files.multi_object_example(dataset, rng, n, side=side) for n in counts]
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    tf_files.write(folder / dataset.file, [m[0] for m in made], compress=True)
    return folder, [m[1] for m in made]


def test_loaded_scenes_are_the_kept_scenes_cropped_in_file_order(tmp_path):
    folder, made = write_dir(tmp_path, counts=COUNTS[:5])
    out = scenes.load(folder, 3, size=192, min_objects=2, max_objects=3)  # 192: the crop, not resized
    np.testing.assert_array_equal(out.index, [0, 2, 4])  # 7 and 1 objects left out
    t, b, left, r = scenes.CROPS["clevr_with_masks"]
    for k, i in enumerate(out.index):
        np.testing.assert_allclose(out.images[k], made[i]["image"][t:b, left:r] / 255.0, atol=1e-6)
        want = made[i]["labels"][t:b, left:r]
        # the objects numbered in entity order, among those visible in the whole image
        np.testing.assert_array_equal(out.masks[k], want)
    np.testing.assert_array_equal(out.n_objects, [2, 3, 2])
    # at 16 pixels most of these small objects vanish: a scene kept still has a foreground to score
    small = scenes.load(folder / CLEVR.file, 1, size=16, min_objects=1, max_objects=3)
    assert small.images.shape == (1, 16, 16, 3) and small.masks.max() <= 3 and (small.masks > 0).any()
    seen = [
        scenes.resize(made[i]["image"], made[i]["labels"], 16, scenes.CROPS["clevr_with_masks"])[1] for i in range(5)
    ]
    assert small.index[0] == next(i for i in range(5) if COUNTS[i] <= 3 and (seen[i] > 0).any())
    with pytest.raises(
        ValueError,
        match=r"holds 1 scenes with 2 to 3 visible objects \(and an object pixel at 16 x 16\) in its 5 records, fewer than the 4",
    ):
        scenes.load(folder, 4, size=16, min_objects=2, max_objects=3)


@pytest.mark.parametrize(
    "file",
    ["multi_dsprites_binarized.tfrecords", "multi_dsprites_colored_on_colored.tfrecords",
     "tetrominoes_train.tfrecords", "objects_room_train.tfrecords"],
)  # fmt: skip
def test_the_other_datasets_load_at_their_own_size(tmp_path, file):
    d = multi_object.DATASETS[file]
    folder, made = write_dir(tmp_path, d, (1, 2, 3))
    out = scenes.load(folder, 3, size=d.image_size[0], min_objects=1)  # square, kept whole: no resize
    for k in range(3):
        image = made[k]["image"] if d.channels == 3 else np.repeat(made[k]["image"], 3, axis=-1)
        np.testing.assert_allclose(out.images[k], image / 255.0, atol=1e-6)
        np.testing.assert_array_equal(out.masks[k], made[k]["labels"])  # Objects Room: 4 background entities


def test_the_study_splits_read_the_directory(tmp_path):
    folder, made = write_dir(tmp_path, counts=COUNTS * 3, side=12)
    cfg = object_discovery.Config.quick()
    cfg = type(cfg)(**{**cfg.__dict__, "data": str(folder), "n_val": 2, "n_test": 3, "n_train": 4,
                       "n_curve": 2, "n_examples": 2, "min_objects": 1})  # fmt: skip
    cfg.validate()
    val, test, train = (object_discovery.split(cfg, s) for s in ("val", "test", "train"))
    crop = scenes.CROPS["clevr_with_masks"]
    shown = [(scenes.resize(m["image"], m["labels"], cfg.size, crop)[1] > 0).any() for m in made]
    kept = [i for i, n in enumerate(COUNTS * 3) if n <= cfg.max_objects and shown[i]]  # a foreground left
    np.testing.assert_array_equal(np.concatenate([val.index, test.index, train.index]), kept[:9])
    assert test.images.shape == (3, cfg.size, cfg.size, 3) and test.masks.dtype == np.int32


def test_a_bad_data_option_is_refused_naming_it(tmp_path):
    base = object_discovery.Config.quick()
    with pytest.raises(
        ValueError, match=r"data: data directory .*nowhere.* does not exist: expected .*clevr_with_masks"
    ):
        type(base)(**{**base.__dict__, "data": str(tmp_path / "nowhere")}).validate()
    folder, _ = write_dir(tmp_path, multi_object.DATASETS["tetrominoes_train.tfrecords"], (1, 2))
    with pytest.raises(ValueError, match=r"max_objects must be at most 3 with data=.*tetrominoes_train.tfrecords"):
        type(base)(**{**base.__dict__, "data": str(folder), "max_objects": 4}).validate()


@pytest.mark.full  # the default tier covers the splits (test_the_study_splits_read_the_directory)
def test_the_scenes_study_runs_on_a_clevr_with_masks_directory_from_the_command_line(tmp_path):
    from tokdyn import cli

    folder, _ = write_dir(tmp_path, counts=COUNTS * 4, side=40)  # objects that stay visible at the quick size
    out = tmp_path / "out"
    args = ["study", "scenes", "--quick", "--data", str(folder), "--out", str(out), "--quiet", "--no-cache",
            "--min-objects", "1", "--n-val", "4", "--n-test", "4", "--n-train", "8", "--n-curve", "4",
            "--n-examples", "2", "--batch-size", "2", "--seeds", "2", "--learned", "slot_attention"]  # fmt: skip
    assert cli.main(args) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows}
    assert "slot_attention" in methods and "baseline" in methods and "kmeans" in methods
    fg = np.array([float(r["fg_ari"]) for r in rows])
    assert np.isfinite(fg).all() and (fg <= 1).all()
    assert os.path.exists(out / "examples.png")
    title = (out / "summary.md").read_text().splitlines()
    assert any("on the scenes of clevr_with_masks_train.tfrecords" in line for line in title[:3]), title[:3]


def _truth(made, size=192, crop=scenes.CROPS["clevr_with_masks"]):
    """Each written scene's visible objects and whether one keeps a pixel in the crop (at 192 x 192
    the crop is not resized), from the written label images with NumPy alone."""
    t, b, left, r = crop
    objects = [len(np.unique(m["labels"])) - (0 in m["labels"]) for m in made]
    shown = [bool((m["labels"][t:b, left:r] > 0).any()) for m in made]
    return objects, shown


def test_too_few_scenes_counts_the_files_scenes_by_their_objects(tmp_path):
    folder, made = write_dir(tmp_path, counts=COUNTS)
    objects, shown = _truth(made)
    with pytest.raises(scenes.TooFewScenes, match=r"in its 12 records, fewer than the 30 asked for") as e:
        scenes.load(folder, 30, size=192, min_objects=2, max_objects=3)
    err = e.value
    want = {}
    for n, s in zip(objects, shown):
        if s or n == 0:
            want[n] = want.get(n, 0) + 1
    assert err.by_objects == want and err.records == 12 and err.most == CLEVR.max_objects
    assert err.found == sum(s for n, s in zip(objects, shown) if 2 <= n <= 3)
    assert err.usable(1, 10) == sum(shown) and err.usable(0, 10) == 12  # from 0 objects, every scene counts
    need = err.found + 1  # one more than the file holds at 2 to 3: a wider range of objects holds it?
    ways = scenes.ways_out(err, {"--a": need - 1, "--b": 1}, trim="--b", min_option="--min", max_option="--max")
    hi = next((m for m in range(4, 11) if err.usable(2, m) >= need), None)
    lo = next((m for m in (1,) if err.usable(m, 3) >= need), None)
    expect = [f"--max {hi} (it holds {err.usable(2, hi)} such scenes)"] if hi else []
    expect += [f"--min {lo} (it holds {err.usable(lo, 3)} such scenes)"] if lo else []
    assert ways[0] == f"--a {err.found - 1}" and ways[1:] == expect  # --b cannot go below 1: --a takes it
    assert scenes.fit_counts({"a": 10, "b": 30}, 20, "b") == {"a": 10, "b": 10}
    assert scenes.fit_counts({"a": 10, "b": 30}, 8, "b") == {"a": 2, "b": 6}  # in proportion
    assert scenes.fit_counts({"a": 10, "b": 30, "c": 1}, 2) is None


def _study(tmp_path, args):
    from tokdyn import cli

    out = tmp_path / "out"
    code = cli.main(["study", *args, "--out", str(out), "--quiet", "--no-cache"])
    return code, out


def test_the_scenes_study_refuses_too_few_scenes_before_its_directory_is_stamped(tmp_path, capsys):
    folder, made = write_dir(tmp_path, counts=COUNTS)
    objects, shown = _truth(made)
    usable = sum(s for n, s in zip(objects, shown) if 1 <= n <= 3)
    args = ["scenes", "--quick", "--data", str(folder), "--size", "192", "--min-objects", "1",
            "--n-val", "2", "--n-test", "2", "--n-curve", "2", "--n-examples", "2", "--n-train", "40"]  # fmt: skip
    code, out = _study(tmp_path, args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists(), err  # before: exit 1, a traceback, study.json written
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("tokdyn study scenes: error: data: ") and f"holds {usable} scenes" in err[-1]
    assert f"the study takes 44 (--n-val 2 + --n-test 2 + --n-train 40): set --n-train {usable - 4}" in err[-1]


def corrupt_first_record(path) -> None:
    """Flip a byte of record 0's data in the GZIP-compressed TFRecord file at ``path``."""
    import gzip

    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[12 + 50] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1, mtime=0))


def test_the_scenes_study_refuses_a_corrupt_record_before_any_work(tmp_path):
    from types import SimpleNamespace

    from tokdyn.experiment.study import Refused

    folder, _ = write_dir(tmp_path, counts=COUNTS[:2])
    corrupt_first_record(folder / CLEVR.file)
    base = object_discovery.Config.quick()
    cfg = type(base)(**{**base.__dict__, "data": str(folder), "n_val": 1, "n_test": 1, "n_curve": 1, "n_examples": 1})
    object_discovery.real_scenes.cache_clear()
    with pytest.raises(
        Refused, match=r"^data: .*clevr_with_masks_train.tfrecords: record 0 \(byte 0\): the CRC32C of its"
    ):
        object_discovery.prepare_data(SimpleNamespace(say=lambda *a: None), cfg)  # the runner's hook: exit 2
    assert object_discovery.SPEC.prepare is object_discovery.prepare_data  # run before the directory is opened
