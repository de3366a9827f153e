"""The video study's learned arm (tokdyn.studies.video with ``learned``): at a tiny size it trains,
stops and resumes from its checkpoint to the tables of an uninterrupted run, and fills the same
tables as the fixed conditions (its scores against scikit-learn's ARI on its own segmentation);
findings V5 and V6 decided on synthetic tables; killed by SIGKILL at random moments it resumes
(slow)."""

import dataclasses
import os

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import killing
from tokdyn import io, train
from tokdyn.experiment import findings
from tokdyn.studies import video as video_study

TINY = video_study.Config(
    size=12,
    frames=5,
    objects=2,
    scale=(0.3, 0.45),
    n_videos=1,
    seeds=3,
    scenarios=("occlusion",),
    predictors=("reinit", "carry"),
    separation=0.0,
    n_steps=6,
    learned=("mlp",),
    learned_seeds=2,
    learned_steps=20,
    learned_every=10,
    learned_frames=3,
    learned_batch=2,
    learned_pool=6,
    preset="quick",
)
TABLES = ("runs.csv", "metrics.csv", "collapse.csv", "tests.csv", "learning_curve.csv")


# ---------------------------------------------------------------------------------------------- a tiny run


@pytest.mark.full
def test_the_learned_arm_stops_resumes_and_fills_the_tables(tmp_path, monkeypatch):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    assert video_study.main(TINY, full, quiet=True)
    whole = train.train_many
    monkeypatch.setattr(train, "train_many", lambda *a, **kw: whole(*a, **{**kw, "max_calls": 1}))
    assert video_study.main(TINY, cut, quiet=True, plots=False) is None  # stopped after one call: no tables yet
    assert not os.path.exists(os.path.join(cut, "runs.csv"))
    calls = []
    counted = lambda *s: calls.append(s[0]) or False  # noqa: E731
    monkeypatch.setattr(
        train,
        "train_many",
        lambda *a, **kw: whole(*a, **{**kw, "evaluation": dataclasses.replace(kw["evaluation"], stop=counted)}),
    )
    assert video_study.main(TINY, cut, quiet=True)
    assert calls == [20]  # resumed from the checkpoint: only the second call ran
    killing.same_files(full, cut, TABLES)
    for name in ("learning_curve.png", "tracks.png", "strip.png"):
        assert os.path.exists(os.path.join(full, name)), name

    runs = io.read_csv(os.path.join(full, "runs.csv"))
    learned = runs["condition"] == "savi-mlp"
    assert sorted(runs["seed"][learned].tolist()) == [0, 1]  # learned_seeds models, paired by seed
    for s in (0, 1):  # the same videos as the fixed conditions of that seed: the same frame classes
        row, carry = learned & (runs["seed"] == s), (runs["condition"] == "carry") & (runs["seed"] == s)
        for c in video_study.CLASSES:
            assert runs[f"frames_{c}"][row][0] == runs[f"frames_{c}"][carry][0]
    # seed 0's video (one per seed) as the model segmented it, scored by scikit-learn's ARI
    part = io.load_npz(os.path.join(full, "parts", "savi_mlp.npz"))
    ids = np.asarray(part["example_ids"])
    masks = np.asarray(video_study.make_videos(TINY, "occlusion", 1).masks[0])
    fg = masks > 0
    row = learned & (runs["seed"] == 0)
    assert adjusted_rand_score(masks[fg], ids[fg]) == pytest.approx(float(runs["video_ari"][row][0]), abs=1e-5)
    frames = [adjusted_rand_score(m[m > 0], i[m > 0]) for m, i in zip(masks, ids) if (m > 0).sum() >= 2]
    assert np.mean(frames) == pytest.approx(float(runs["frame_ari"][row][0]), abs=1e-5)
    xy = np.asarray(part["example_xy"])  # slot 0's centroid in frame 0, from its pixels
    y, x = np.nonzero(ids[0] == 0)
    if y.size:
        np.testing.assert_allclose(
            xy[0, 0], [np.mean((2 * y + 1) / TINY.size - 1), np.mean((2 * x + 1) / TINY.size - 1)], atol=1e-6
        )

    metrics = io.read_csv(os.path.join(full, "metrics.csv"))
    assert list(metrics["condition"]) == list(TINY.all_conditions)
    curve = io.read_csv(os.path.join(full, "learning_curve.csv"))
    assert curve["step"].tolist() == [10, 10, 20, 20] and np.all(np.isfinite(curve["val_video_ari"]))
    tests = io.read_csv(os.path.join(full, "tests.csv"))
    paired = (tests["condition"] == "savi-mlp") & (tests["metric"] == "video_ari")
    assert sorted(tests["baseline"][paired]) == ["carry", "reinit"] and set(tests["n"][paired]) == {2}
    found = {f.key: f for f in video_study.SPEC.findings(full)}
    assert found["V5"].verdict == "open" and "over 2 seeds" in found["V5"].basis  # fewer than MIN_SEEDS
    assert found["V6"].basis.startswith("not run: savi-none")


# ---------------------------------------------------------------------------------------------- findings


def _table(video: dict, frame=None, seeds=5, learned_seeds=3, spread=0.005):
    """A runs.csv of columns (occlusion): condition -> per-seed video FG-ARI = 0.5 + the given
    offset (+ a wobble); learned conditions (savi-*) have only ``learned_seeds`` seeds."""
    rng = np.random.default_rng(1)
    cols = {k: [] for k in ("scenario", "condition", "seed", "video_ari", "frame_ari")}
    for cond, d in video.items():
        for s in range(learned_seeds if cond.startswith(video_study.LEARNED) else seeds):
            for k, v in (
                ("scenario", "occlusion"),
                ("condition", cond),
                ("seed", s),
                ("video_ari", 0.5 + d + spread * rng.standard_normal()),
                ("frame_ari", 0.6 + (frame or {}).get(cond, 0.0)),
            ):
                cols[k].append(v)
    return {k: np.asarray(v) for k, v in cols.items()}


def _found(table):
    return {f.key: f for f in video_study.verdicts(table)}


def test_learned_findings_decide_from_paired_intervals_with_a_margin():
    fixed = {"reinit": 0.0, "carry": 0.1, "velocity": 0.12}
    f = _found(
        _table({**fixed, "savi-none": 0.2, "savi-mlp": 0.2, "savi-transformer": 0.3}, frame={"savi-transformer": 0.25})
    )
    assert f["V5"].verdict == "reproduced" and f["V5"].basis.startswith("best fixed: velocity")
    rows = {r[0]: r for r in f["V5"].rows}
    assert set(rows) == {"savi-none", "savi-mlp", "savi-transformer"} and rows["savi-none"][3] == "control"
    assert float(rows["savi-transformer"][1].split()[0]) == pytest.approx(0.18, abs=0.015)
    assert rows["savi-transformer"][2] == "0.250 [0.250, 0.250]"  # the per-frame difference beside it
    assert f["V6"].verdict == "reproduced" and [r[0] for r in f["V6"].rows] == ["savi-mlp", "savi-transformer"]
    assert [r[3] for r in f["V6"].rows] == ["refuted", "reproduced"]
    # savi-none beating the fixed conditions does not make V5: only a learned predictor counts
    f = _found(_table({**fixed, "savi-none": 0.3, "savi-mlp": 0.12, "savi-transformer": 0.11}))
    assert f["V5"].verdict == "refuted"
    assert f["V6"].verdict == "refuted"  # both predictors clearly below savi-none
    noisy = _found(_table({**fixed, "savi-none": 0.12, "savi-mlp": 0.15}, spread=0.1))
    assert noisy["V5"].verdict == "open" and noisy["V6"].verdict == "open"
    few = _found(_table({**fixed, "savi-none": 0.1, "savi-mlp": 0.4}, learned_seeds=2))
    assert few["V5"].verdict == "open" and few["V6"].verdict == "open"  # fewer than MIN_SEEDS seeds


def test_learned_findings_pair_by_seed_and_say_when_they_did_not_run():
    # the learned condition's seeds 0-2 against the fixed ones' 0-2 only: a fixed seed 3 or 4 that
    # differs wildly changes nothing but the choice of the best fixed condition
    t = _table({"reinit": 0.0, "carry": 0.1, "savi-none": 0.1, "savi-mlp": 0.2}, spread=0.0)
    far = (t["condition"] == "carry") & (t["seed"] >= 3)
    t["video_ari"] = np.where(far, 0.95, t["video_ari"])  # carry's mean 0.74: the best fixed condition
    v5 = _found(t)["V5"]
    assert v5.verdict == "reproduced" and v5.basis == "best fixed: carry; savi-mlp 0.100 [0.100, 0.100] over 3 seeds"
    for absent in ({"reinit": 0.0, "carry": 0.1}, {"reinit": 0.0, "carry": 0.1, "savi-none": 0.3}):
        f = _found(_table(absent))
        assert all(f[k].verdict == "open" and f[k].basis.startswith("not run") for k in ("V5", "V6"))
    f = _found(_table({"reinit": 0.0, "carry": 0.1, "savi-transformer": 0.4}))
    assert f["V5"].verdict == "reproduced" and f["V6"].basis == "not run: savi-none did not run"
    assert [f.key for f in video_study.verdicts({})] == ["V1", "V2", "V3", "V4", "V5", "V6"]
    assert all(f.verdict in findings.VERDICTS for f in video_study.verdicts(t))
    # learned conditions are never V2's constraints
    (v2,) = [f for f in video_study.verdicts(_table({"reinit": 0.0, "carry": 0.1, "savi-mlp": 0.4})) if f.key == "V2"]
    assert "did not run" in v2.basis


def test_the_learned_arm_adds_its_training_to_the_estimate():
    base = video_study.Config(learned=())
    more = dataclasses.replace(base, learned=("none", "mlp"))
    steps = 2 * base.learned_seeds * base.learned_steps
    assert more.estimate().seconds - base.estimate().seconds == pytest.approx(
        steps * (base.learned_frames * base.learned_batch / 64) / video_study.SAVI_RATE + 2 * video_study.SAVI_FIXED_S
    )
    assert more.estimate().models == base.estimate().models + 2 * base.learned_seeds
    assert video_study.savi_config(base, "transformer").validate().slots == base.n_tokens


# ---------------------------------------------------------------------------------------------- killed


@pytest.mark.slow
def test_killed_at_random_moments_it_resumes_to_the_tables_of_an_uninterrupted_run(tmp_path):
    args = [
        "study",
        "video",
        "--size",
        "12",
        "--frames",
        "5",
        "--objects",
        "2",
        "--scale",
        "0.3,0.45",
        "--n-videos",
        "1",
        "--seeds",
        "3",
        "--scenarios",
        "occlusion",
        "--predictors",
        "reinit,carry",
        "--separation",
        "0",
        "--n-steps",
        "6",
        "--learned",
        "none,mlp",
        "--learned-seeds",
        "2",
        "--learned-steps",
        "80",
        "--learned-every",
        "10",
        "--learned-frames",
        "3",
        "--learned-batch",
        "2",
        "--learned-pool",
        "6",
        "--no-plots",
        "--quiet",
    ]
    cache = tmp_path / "cache"
    code, _, err = killing.run_cli(args + ["--out", tmp_path / "a"], cache)  # compiles
    assert code == 0, err[-2000:]
    code, seconds, err = killing.run_cli(args + ["--out", tmp_path / "b"], cache)
    assert code == 0, err[-2000:]
    killing.same_files(tmp_path / "a", tmp_path / "b", TABLES)
    killing.resumes_after_kills(
        args + ["--out", tmp_path / "c"], cache, seconds, tmp_path / "b", TABLES, seed=3, low=0.2
    )
