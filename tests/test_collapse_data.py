"""The collapse study on real scenes (``--data DIR``): its options, the scenes it measures and
trains on, the rule's runs on a point cloud and the encoder's features (tokdyn.studies.collapse.real),
on a directory in CLEVR-with-masks' format written by the test; the study end to end (full)."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

pytest.importorskip("google_crc32c")
pytest.importorskip("google.protobuf")
pytest.importorskip("PIL")

from test_scenes_data import COUNTS, write_dir  # noqa: E402

from tokdyn.datasets import multi_object, scenes  # noqa: E402
from tokdyn.models import slots  # noqa: E402
from tokdyn.studies import collapse  # noqa: E402
from tokdyn.studies.collapse import real  # noqa: E402


def data_config(folder, **kw):
    base = collapse.Config.quick()
    return type(base)(**{**base.__dict__, "data": str(folder), **kw}).validate()


def test_a_bad_data_option_is_refused_naming_it(tmp_path):
    base = collapse.Config.quick()
    with pytest.raises(
        ValueError, match=r"data: data directory .*nowhere.* does not exist: expected .*clevr_with_mask"
    ):
        type(base)(**{**base.__dict__, "data": str(tmp_path / "nowhere")}).validate()
    folder, _ = write_dir(tmp_path, multi_object.DATASETS["tetrominoes_train.tfrecords"], (1, 2))
    with pytest.raises(ValueError, match=r"data_max_objects must be at most 3 with data=.*tetrominoes"):
        data_config(folder, data_max_objects=4)
    for field, value, match in (
        ("data_steps", 150, "data_steps must be a multiple of 100"),
        ("data_scenes", 0, "data_scenes"),
        ("data_points", 1, "data_points"),
        ("data_learning_rate", 0.0, "data_learning_rate"),
    ):
        with pytest.raises(ValueError, match=match):
            data_config(folder, **{field: value})


def test_the_measured_and_training_scenes_are_the_files_in_order(tmp_path):
    folder, made = write_dir(tmp_path, counts=COUNTS * 2, side=12)
    cfg = data_config(folder, data_scenes=3, data_pool=4, data_size=16, data_max_objects=3)
    measured, pool = real.split(cfg)
    crop = scenes.CROPS["clevr_with_masks"]
    shown = [(scenes.resize(m["image"], m["labels"], 16, crop)[1] > 0).any() for m in made]
    kept = [i for i, n in enumerate(COUNTS * 2) if 1 <= n <= 3 and shown[i]]
    np.testing.assert_array_equal(np.concatenate([measured.index, pool.index]), kept[:7])
    scfg = real.slot_config(cfg)
    assert (scfg.size, scfg.slots, scfg.seeds, scfg.train.steps) == (16, 4, 1, cfg.data_steps)


def test_feature_runs_measure_tau_c_as_numpy_and_collapse_above_it():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.3, (20, 3)), rng.normal(2, 0.3, (20, 3))]).astype(np.float32)
    want = 2 * np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()  # tau_c = 2 lambda_max(Cov X)
    ratios = np.array([0.5, 0.5, 2.0, 2.0], np.float32)
    keys = jax.random.split(jax.random.key(0), 4)
    r = jax.device_get(real.feature_runs(x, keys, ratios, np.float32(0.05), np.float32(1e-6), n_tokens=2, n_steps=500))
    np.testing.assert_allclose(r["tau_c"], want, rtol=1e-4)
    np.testing.assert_array_equal(r["collapsed"], [0, 0, 1, 1])  # two clusters kept apart below, one group above
    np.testing.assert_array_equal(r["groups"], [2, 2, 1, 1])


def test_the_features_are_rows_of_the_encoders_output(tmp_path):
    folder, _ = write_dir(tmp_path, counts=(2, 3), side=12)
    cfg = data_config(folder, data_size=8, data_points=10, data_scenes=2, data_pool=1)
    scfg = real.slot_config(cfg)
    images = np.random.default_rng(1).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    # the encoder's parameters alone (cheaper), initialised by one program rather than operation by operation
    params = jax.jit(slots.Encoder(scfg).init)(jax.random.key(0), images)
    got = real.features(cfg, params, images)
    full = np.asarray(real._encode(params, images, scfg=scfg))  # (2, 64, C): the encoder's output, every input
    assert got.shape == (2, 10, full.shape[-1])
    for s in range(2):
        d = np.abs(got[s][:, None] - full[s][None]).max(axis=-1)  # (10, 64)
        rows = d.argmin(axis=1)
        assert np.all(d.min(axis=1) <= 1e-5 * np.abs(full).max()) and len(set(rows.tolist())) == 10  # distinct rows
    np.testing.assert_array_equal(real.features(data_config(folder, data_size=8, data_points=64), params, images), full)


@pytest.mark.full  # the default tier covers the options, the scenes, the runs and the features (above)
def test_the_collapse_study_runs_on_a_clevr_with_masks_directory_from_the_command_line(tmp_path):
    from tokdyn import cli

    folder, _ = write_dir(tmp_path, counts=COUNTS * 2, side=40)  # objects that stay visible at the quick size
    out = tmp_path / "out"
    assert cli.main(["study", "collapse", "--quick", "--data", str(folder), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())["real"]
    assert summary["scenes"] == 2 and summary["data"] == str(folder)
    with open(out / "real_threshold.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(collapse.Config.quick().n_tokens)
    assert all(float(r["tau_c"]) > 0 and int(r["n_points"]) == 64 for r in rows)
    with open(out / "real_slots.csv") as f:
        slot_rows = list(csv.DictReader(f))
    assert [int(r["slots"]) for r in slot_rows] == [7, 7]
    assert all(0 <= int(r["duplicates"]) < 7 and np.isfinite(float(r["fg_ari"])) for r in slot_rows)
    # a rerun reuses the kept parts: nothing is trained or run again
    assert cli.main(["study", "collapse", "--quick", "--data", str(folder), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["real"] == summary


def test_the_collapse_study_refuses_too_few_scenes_before_its_directory_is_stamped(tmp_path, capsys):
    from tokdyn import cli

    d = multi_object.DATASETS["tetrominoes_train.tfrecords"]
    counts = (1, 2, 3, 2, 1, 3)
    folder, made = write_dir(tmp_path, d, counts, side=6)
    out = tmp_path / "out"
    args = ["study", "collapse", "--quick", "--data", str(folder), "--data-max-objects", "2", "--data-scenes", "2",
            "--data-pool", "16", "--out", str(out), "--quiet", "--no-cache"]  # fmt: skip
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists(), err  # before: exit 1 after the synthetic parts, a traceback, study.json
    assert "Traceback" not in "\n".join(err)
    usable = sum(1 <= n <= 2 for n in counts)  # 35 x 35, kept whole: every written object shows
    assert len(made) == len(counts) and f"holds {usable} scenes with 1 to 2 visible objects" in err[-1]
    assert err[-1].startswith("tokdyn study collapse: error: data: ")
    # the file's 6 scenes are too few even with up to 3 objects: only the pool can shrink
    assert err[-1].endswith(f"the study takes 18 (--data-scenes 2 + --data-pool 16): set --data-pool {usable - 2}")


def test_the_collapse_study_refuses_a_corrupt_record_before_any_work(tmp_path):
    from types import SimpleNamespace

    from test_scenes_data import corrupt_first_record

    from tokdyn.experiment.study import Refused

    folder, _ = write_dir(tmp_path, counts=COUNTS[:2])
    corrupt_first_record(folder / "clevr_with_masks_train.tfrecords")
    real.real_scenes.cache_clear()
    with pytest.raises(Refused, match=r"^data: .*clevr_with_masks_train.tfrecords: record 0 \(byte 0\): the CRC32C"):
        real.prepare_data(SimpleNamespace(say=lambda *a: None), data_config(folder))
    assert collapse.SPEC.prepare is real.prepare_data
