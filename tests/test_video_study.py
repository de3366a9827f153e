"""The video study (tokdyn.studies.video): its configuration's checks, its science on a tiny
configuration against independent references (scikit-learn's ARI, NumPy majority votes), its
findings on fixture tables, and a run through the one runner (the hostile cases every study shares
are in test_study_runner.py, parametrised over the registry)."""

import dataclasses
import os
import re

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from conftest import assert_same_floats, jax_compilations
from tokdyn import io
from tokdyn.experiment import findings
from tokdyn.studies import video as video_study

TINY = video_study.Config(
    size=12,
    frames=5,
    objects=2,
    scale=(0.3, 0.45),
    n_videos=1,
    seeds=2,
    scenarios=("occlusion", "leaving"),
    predictors=("reinit", "carry", "velocity", "inertia"),
    separation=0.3,
    n_steps=6,
    learned=(),
    preset="quick",
)


# ---------------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(learned=("savi",)), "learned must be one of"),
        (dict(learned=("mlp", "mlp")), "learned lists 'mlp' more than once"),
        (dict(learned=("mlp",), learned_seeds=3), "learned_seeds must be at most seeds=2"),
        (dict(learned=("mlp",), learned_frames=6, learned_seeds=2), "learned_frames must be at most frames=5"),
        (
            dict(learned=("mlp",), learned_steps=150, learned_every=100, learned_seeds=2, learned_frames=4),
            "learned_steps must be a multiple of learned_every=100",
        ),
        (dict(predictors=("carry",)), "predictors must include reinit"),
        (dict(scenarios=("occlusion", "occlusion")), "scenarios"),
        (dict(scenarios=("crossing",)), "scenarios must be one of"),
        (dict(margin=0.0), "margin"),
        (dict(speed=(0.1, 0.05)), "speed must be a (low, high) pair"),
        (dict(momentum=1.0), "momentum"),
        (dict(root_seed=-1), "root_seed must be an int in [0, 4294967295]"),
    ],
)
def test_bad_fields_are_refused_naming_them(change, words):
    with pytest.raises((ValueError, TypeError), match=re.escape(words)):
        dataclasses.replace(TINY, **change).validate()


def test_conditions_are_every_predictor_and_the_carried_ones_with_the_push():
    cfg = video_study.Config(predictors=("reinit", "carry", "inertia"), separation=0.2)
    assert cfg.conditions == ("reinit", "carry", "inertia", "carry+sep", "inertia+sep")
    pred, sep = video_study.condition_knobs(cfg)
    assert pred.tolist() == [0, 1, 3, 1, 3] and sep.tolist() == pytest.approx([0, 0, 0, 0.2, 0.2])
    assert dataclasses.replace(cfg, separation=0.0).conditions == ("reinit", "carry", "inertia")
    assert video_study.Config.quick().validate().preset == "quick" and video_study.Config().validate().n_tokens == 4


# ---------------------------------------------------------------------------------------------- science


def _majority(masks, ids, n_obj, min_pixels):
    """NumPy reference of metrics.track_labels: (F, n_obj) the id holding most of each object's
    pixels (lowest on ties), -1 below min_pixels."""
    out = np.full((masks.shape[0], n_obj), -1)
    for f in range(masks.shape[0]):
        for k in range(1, n_obj + 1):
            sel = masks[f] == k
            if sel.sum() >= min_pixels:
                out[f, k - 1] = np.argmax(np.bincount(ids[f][sel]))
    return out


@pytest.fixture(scope="module")
def tiny():
    runs = {sc: video_study.scenario_runs(TINY, sc) for sc in TINY.scenarios}
    return runs, video_study.example(TINY, "occlusion")


@pytest.mark.full
def test_scores_equal_independent_references_on_the_example_video(tiny):
    runs, ex = tiny
    r = runs["occlusion"]
    masks = ex["masks"]
    fg = masks > 0
    for c, cond in enumerate(TINY.conditions):
        ids = ex["ids"][c]
        row = (r["condition"] == cond) & (r["seed"] == 0)  # one video per seed: seed 0's row is the example
        assert adjusted_rand_score(masks[fg], ids[fg]) == pytest.approx(float(r["video_ari"][row][0]), abs=1e-5)
        frames = [adjusted_rand_score(m[m > 0], i[m > 0]) if (m > 0).sum() >= 2 else np.nan for m, i in zip(masks, ids)]
        assert np.nanmean(frames) == pytest.approx(float(r["frame_ari"][row][0]), abs=1e-5)
        c_ref = _majority(masks, ids, TINY.objects, TINY.min_pixels)
        switched = (c_ref[1:] >= 0) & (c_ref[:-1] >= 0) & (c_ref[1:] != c_ref[:-1])
        assert int(r["switches"][row][0]) == switched.sum()
        assert int(r["chances"][row][0]) == ((c_ref[1:] >= 0) & (c_ref[:-1] >= 0)).sum()
        shared = [len(set(v[v >= 0])) < (v >= 0).sum() for v in c_ref]  # two visible objects on one id
        assert r["shared"][row][0] == pytest.approx(np.mean(shared))
        assert r["collapse"][row][0] >= r["shared"][row][0] and r["collapse"][row][0] >= r["merged"][row][0]
    # carried tokens start frame 0 as reinit does (one key): the first frame's segmentation is the same
    np.testing.assert_array_equal(ex["ids"][0][0], ex["ids"][1][0])
    assert_same_floats(ex["tokens"][1][0], ex["tokens"][0][0])  # float32 rounding at the tokens' magnitude


@pytest.mark.full
def test_physics_predictors_start_each_frame_as_documented_and_why_the_scores_match_carry(tiny):
    """The video study's tracking path applies each predictor as docs/concepts/tracking.md says,
    and the physics ones leave the foreground segmentation of carry unchanged in these features."""
    _, ex = tiny
    c = {name: i for i, name in enumerate(TINY.conditions)}
    tok, start = ex["tokens"], ex["start"]  # (C, F, T, D)
    tol = 4 * np.finfo(np.float32).eps * max(1.0, np.abs(tok).max())  # a sum of two rounded tokens
    for name in ("carry", "inertia"):  # frame f starts from frame f-1's final tokens
        np.testing.assert_allclose(start[c[name]][1:], tok[c[name]][:-1], rtol=0, atol=tol)
    t = tok[c["velocity"]]  # frame f starts from t[f-1] + (t[f-1] - t[f-2]): each token's last displacement
    np.testing.assert_allclose(start[c["velocity"]][2:], t[1:-1] + (t[1:-1] - t[:-2]), rtol=0, atol=2 * tol)
    shift = np.linalg.norm(start[c["velocity"]][2:] - t[1:-1], axis=-1)  # (F - 2, T): the prediction's move
    assert shift.max() > 0.005  # the tokens move with their objects: the prediction is not carry's
    # ... yet it is one frame's motion, 2 * position_scale * speed <= 0.04 feature units for an object,
    # against colour gaps between objects of tenths: at temperature 0.003 every pixel goes to the
    # token nearest in colour, and from either start the rule ends on the same partition of the objects
    fg = ex["masks"] > 0
    for name in ("velocity", "inertia"):
        same = ex["ids"][c[name]][fg] == ex["ids"][c["carry"]][fg]
        assert same.mean() >= 0.99, (name, same.mean())


@pytest.mark.full
def test_frame_classes_follow_the_ground_truth(tiny):
    runs, _ = tiny
    v = video_study.make_videos(TINY, "leaving", TINY.seeds * TINY.n_videos)
    area, visible = np.asarray(v.area), np.asarray(v.visible)
    out = (area == 0).any(axis=2)  # (n, F): an object wholly out of view
    overlap = ((area >= TINY.min_pixels) & (visible < area)).any(axis=2)
    r = runs["leaving"]
    for s in range(TINY.seeds):
        row = (r["condition"] == "carry") & (r["seed"] == s)
        assert int(r["frames_out"][row][0]) == out[s].sum()
        assert int(r["frames_overlap"][row][0]) == overlap[s].sum()
        assert int(r["frames_calm"][row][0]) == (~out[s] & ~overlap[s]).sum()
    assert (runs["occlusion"]["frames_out"] == 0).all()  # margin 0: every object in view throughout


# ---------------------------------------------------------------------------------------------- findings


def _table(diffs: dict, seeds=5, spread=0.0, base=0.5, rates=None):
    """A runs.csv of columns: condition -> video_ari = base + diff (+ a per-seed wobble); the
    collapse classes from ``rates`` (scenario -> class -> per-seed rate)."""
    rng = np.random.default_rng(0)
    cols = {
        k: []
        for k in (
            "scenario",
            "condition",
            "seed",
            "video_ari",
            *(f"{w}_{c}" for c in video_study.CLASSES for w in ("frames", "collapsed")),
        )
    }
    for sc in ("occlusion", "collisions", "leaving"):
        for cond, d in diffs.items():
            for s in range(seeds):
                cols["scenario"].append(sc)
                cols["condition"].append(cond)
                cols["seed"].append(s)
                cols["video_ari"].append(base + d + spread * rng.standard_normal())
                for cls in video_study.CLASSES:
                    rate = (rates or {}).get(sc, {}).get(cls, 0.5)
                    cols[f"frames_{cls}"].append(100)
                    cols[f"collapsed_{cls}"].append(round(100 * (rate if np.isscalar(rate) else rate[s])))
    return {k: np.asarray(v) for k, v in cols.items()}


def _verdicts(table):
    return {f.key: f.verdict for f in video_study.verdicts(table)}


def test_identity_findings_decide_from_intervals_with_a_margin():
    clear = _table({"reinit": 0.0, "carry": 0.2, "velocity": 0.25, "carry+sep": 0.2}, spread=0.005)
    v = _verdicts(clear)
    assert v["V1"] == "reproduced" and v["V2"] == "reproduced"
    same = _table({"reinit": 0.0, "carry": 0.0, "velocity": 0.0}, spread=0.002)
    v = _verdicts(same)
    assert v["V1"] == "refuted" and v["V2"] == "refuted"  # differences within the margin, tightly
    noisy = _table({"reinit": 0.0, "carry": 0.03, "velocity": 0.03}, spread=0.2)
    v = _verdicts(noisy)
    assert v["V1"] == "open" and v["V2"] == "open"
    few = _table({"reinit": 0.0, "carry": 0.3, "velocity": 0.3}, seeds=2, spread=0.01)
    assert _verdicts(few)["V1"] == "open"  # fewer than MIN_SEEDS seeds decide nothing
    one_helps = _table({"reinit": 0.0, "carry": 0.1, "velocity": 0.1, "inertia": 0.2}, spread=0.005)
    (f2,) = [f for f in video_study.verdicts(one_helps) if f.key == "V2"]
    assert f2.verdict == "reproduced" and f2.basis.startswith("best inertia") and len(f2.rows) == 2


def test_collapse_findings_compare_event_frames_with_calm_ones():
    up = {"overlap": 0.8, "out": 0.9, "calm": 0.2}
    wobble = lambda r: {k: np.clip(v + 0.01 * np.arange(5) - 0.02, 0, 1) for k, v in r.items()}  # noqa: E731
    table = _table(
        {"reinit": 0.0, "carry": 0.1}, rates={sc: wobble(up) for sc in ("occlusion", "collisions", "leaving")}
    )
    v = _verdicts(table)
    assert v["V3"] == "reproduced" and v["V4"] == "reproduced"
    flat = {"overlap": 0.3, "out": 0.3, "calm": 0.3}
    mixed = {"occlusion": wobble(up), "collisions": wobble(flat), "leaving": wobble(flat)}
    v = _verdicts(_table({"reinit": 0.0, "carry": 0.1}, rates=mixed))
    assert v["V3"] == "refuted" and v["V4"] == "refuted"  # one crossing scenario without a rise refutes it
    assert {f.verdict for f in video_study.verdicts({})} == {"open"} and len(video_study.verdicts({})) == 6


# ---------------------------------------------------------------------------------------------- the runner


def test_a_micro_run_tables_every_seed_and_its_paired_tests_are_scipy_s(tmp_path):
    """The study end to end in the default run at a micro size (occlusion videos, reinit and carry,
    2 seeds of one 6-frame video of 3 objects on 20 x 20 pixels: its scoring program, the tables and
    the paired tests): one row per condition and seed, each condition's mean the mean of its seeds,
    and carry's paired test against reinit SciPy's ``ttest_rel`` of the seeds' differences (both
    conditions' scores differ between the seeds here, so the pairing matters). The full tier runs every predictor and
    scenario (test_the_study_runs_resumes_and_judges_its_findings and the reference tests)."""
    from scipy import stats as sps

    cfg = dataclasses.replace(
        TINY,
        size=20,
        objects=3,
        frames=6,
        scale=(0.25, 0.35),
        seeds=2,
        scenarios=("occlusion",),
        predictors=("reinit", "carry"),
        separation=0.0,
        n_steps=10,
    )
    out = str(tmp_path / "micro")
    video_study.main(cfg, out, quiet=True, plots=False)
    runs = io.read_csv(os.path.join(out, "runs.csv"))
    assert runs["condition"].tolist() == ["reinit", "reinit", "carry", "carry"] and runs["seed"].tolist() == [
        0,
        1,
        0,
        1,
    ]
    assert np.all((runs["collapse"] >= 0) & (runs["collapse"] <= 1)) and np.all(np.abs(runs["video_ari"]) <= 1)
    metrics = io.read_csv(os.path.join(out, "metrics.csv"))
    for cond in ("reinit", "carry"):
        row = metrics["condition"] == cond
        assert float(metrics["frame_ari"][row][0]) == pytest.approx(
            np.mean(runs["frame_ari"][runs["condition"] == cond])
        )
    tests = io.read_csv(os.path.join(out, "tests.csv"))
    tested = 0
    for metric in ("video_ari", "frame_ari", "collapse"):
        diff = runs[metric][runs["condition"] == "carry"] - runs[metric][runs["condition"] == "reinit"]
        row = (tests["metric"] == metric) & (tests["condition"] == "carry") & (tests["baseline"] == "reinit")
        assert float(tests["mean_diff"][row][0]) == pytest.approx(np.mean(diff), abs=1e-7)
        if np.std(diff) > 0:
            want = sps.ttest_rel(
                runs[metric][runs["condition"] == "carry"], runs[metric][runs["condition"] == "reinit"]
            )
            assert float(tests["p"][row][0]) == pytest.approx(want.pvalue, rel=1e-6)
            tested += 1
    assert tested >= 1  # the seeds differ: a test was run and compared


@pytest.mark.full
def test_the_study_runs_resumes_and_judges_its_findings(tmp_path):
    out = str(tmp_path / "out")
    cfg = dataclasses.replace(TINY, seeds=3, scenarios=("occlusion",))
    video_study.main(cfg, out, quiet=True)
    for name in (
        video_study.SPEC.outputs + video_study.SPEC.figure_files[:3] + ("summary.md",)
    ):  # learning_curve.png: learned only
        assert os.path.exists(os.path.join(out, name)), name
    runs = io.read_csv(os.path.join(out, "runs.csv"))
    assert len(runs["seed"]) == len(cfg.conditions) * cfg.seeds
    metrics = io.read_csv(os.path.join(out, "metrics.csv"))
    carry = (metrics["condition"] == "carry") & (metrics["scenario"] == "occlusion")
    assert float(metrics["video_ari"][carry][0]) == pytest.approx(
        np.mean(runs["video_ari"][runs["condition"] == "carry"]), abs=1e-6
    )
    tests = io.read_csv(os.path.join(out, "tests.csv"))
    assert set(tests["baseline"]) == {"reinit", "carry"} and np.all(
        tests["p_holm"][np.isfinite(tests["p"])] >= tests["p"][np.isfinite(tests["p"])] - 1e-12
    )
    assert open(os.path.join(out, "summary.md")).read().startswith("Quick preset")
    found = video_study.SPEC.findings(out)
    assert [f.key for f in found] == ["V1", "V2", "V3", "V4", "V5", "V6"] and all(
        f.verdict in findings.VERDICTS for f in found
    )
    assert found[3].verdict == "open" and "leaving scenario did not run" in found[3].basis
    assert all(f.verdict == "open" and f.basis.startswith("not run") for f in found[4:])
    with jax_compilations() as events:
        video_study.main(cfg, out, quiet=True, plots=False)  # every part kept: nothing traced or compiled again
    assert events == []
    with open(os.path.join(out, "runs.csv"), "a") as fh:
        fh.write("occlusion,carry,9" + ",0" * (len(runs) - 3) + "\n")
    assert all(
        f.verdict == "open" and "video/runs.csv fails its verification" in f.basis
        for f in video_study.SPEC.findings(out)
    )
