"""The latent-diagnostics study (tokdyn.studies.latent_diagnostics): one organism's vlm-diagnostics tables
reduced as a plain loop over their rows reduces them, the findings O3, O4a, O4b and O5 decided on tables written
here (values far from every threshold), and a source that is missing, of another study or without the recipe
asked for refused with exit 2 before any work. The full tier diagnoses the organisms of a micro
latent-reasoning run end to end."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from tokdyn import cli, io
from tokdyn.experiment import findings as experiment_findings
from tokdyn.experiment import study as study_dir
from tokdyn.experiment import runner
from tokdyn.studies import latent_diagnostics as od
from tokdyn.studies.latent_diagnostics import findings as odf

FAMILY = {0: "read", 1: "read", 2: "read", 3: "gravity", 4: "gravity", 5: "gravity"}


def columns(rows: list) -> dict:
    keys = list(rows[0])
    return {k: np.asarray([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else None) for k in keys}


def synthetic_tables(rng):
    instances = [{"instance": i, "benchmark": f} for i, f in FAMILY.items()]
    accuracy = [
        {"instance": i, "setting": "none", "correct": float(rng.integers(2)), "cut": int(i == 4)} for i in FAMILY
    ]
    accuracy += [{"instance": i, "setting": "zeros", "correct": 1.0, "cut": 0} for i in FAMILY]
    decomposition = [
        {"instance": i, "measure": "correct", "setting": s, "correct": float(rng.integers(2))}
        for i in FAMILY
        for s in ("full", "no_block", "markers_only", "slots_only")
    ]
    decomposition += [{"instance": 0, "measure": "attention", "setting": "", "correct": math.nan}]
    mediation = []
    for i in FAMILY:
        for k in ("zeros", "swap"):
            mediation.append(
                dict(
                    instance=i,
                    kind=k,
                    level=math.nan,
                    path="latent_answer",
                    cosine_distance=math.nan,
                    flipped=float(rng.integers(2)),
                )
            )
        for k, lv in (("gaussian", 0.25), ("gaussian", 0.5), ("blank", 0.0)):
            for _step in (1, 2):
                mediation.append(
                    dict(
                        instance=i,
                        kind=k,
                        level=lv,
                        path="input_latent",
                        cosine_distance=float(rng.random()),
                        flipped=math.nan,
                    )
                )
            mediation.append(
                dict(instance=i, kind=k, level=lv, path="input_answer", cosine_distance=math.nan, flipped=1.0)
            )
    optimisation = [
        dict(instance=i, correct_before=float(rng.integers(2)), correct_best=float(rng.integers(2))) for i in FAMILY
    ]
    optimisation[1]["correct_best"] = math.nan  # an instance the optimisation left without an answer
    injection = [dict(instance=i, correct_before=0.0, correct_best=float(i % 2)) for i in FAMILY]
    return instances, accuracy, decomposition, mediation, optimisation, injection


def test_one_organisms_tables_reduce_to_their_means_per_family():
    rng = np.random.default_rng(0)
    inst, acc, dec, med, opt, inj = synthetic_tables(rng)
    rows = od.organism_rows("latent", 2, *(columns(t) for t in (inst, acc, dec, med, opt, inj)))
    got = {(r[2], r[3], r[4], r[5]): (r[6], r[7]) for r in rows}
    assert all(r[0] == "latent" and r[1] == 2 for r in rows)
    for family in ("read", "gravity", "all"):
        mine = [i for i in FAMILY if family in ("all", FAMILY[i])]
        clean = [r["correct"] for r in acc if r["instance"] in mine and r["setting"] == "none" and not r["cut"]]
        assert got[(family, "accuracy", "", "")] == pytest.approx((np.mean(clean), len(clean)))
        by = {
            s: np.mean([r["correct"] for r in dec if r["instance"] in mine and r["setting"] == s])
            for s in ("full", "no_block", "markers_only")
        }
        gain = by["full"] - by["no_block"]
        assert got[(family, "block_gain", "", "")][0] == pytest.approx(gain)
        share = got[(family, "markers_share", "markers_only", "")][0]
        if gain > 0:
            assert share == pytest.approx((by["markers_only"] - by["no_block"]) / gain)
        else:
            assert math.isnan(share)
        for k in ("zeros", "swap"):
            f = [r["flipped"] for r in med if r["instance"] in mine and r["kind"] == k and r["path"] == "latent_answer"]
            assert got[(family, "flip", k, "")] == pytest.approx((np.mean(f), len(f)))
        for k, lv in (("gaussian", 0.25), ("gaussian", 0.5), ("blank", 0.0)):
            d = [
                r["cosine_distance"]
                for r in med
                if r["instance"] in mine and r["kind"] == k and r["level"] == lv and r["path"] == "input_latent"
            ]
            assert got[(family, "shift", k, f"{lv:g}")] == pytest.approx((np.mean(d), len(mine)))
        for k, table in (("optimisation", opt), ("injection", inj)):
            change = [
                r["correct_best"] - r["correct_before"]
                for r in table
                if r["instance"] in mine and not math.isnan(r["correct_best"])
            ]
            assert got[(family, "dmlr", k, "")] == pytest.approx((np.mean(change), len(change)))
    assert not any(m == "flip" and k in ("gaussian", "blank") for _, m, k, _ in got)  # input_answer rows: not flips
    without = od.organism_rows("latent", 2, *(columns(t) for t in (inst, acc, dec, med)))
    kept = [r for r in rows if r[3] != "dmlr"]  # no DMLR tables: no DMLR rows, the rest the same
    assert [r[:6] for r in without] == [r[:6] for r in kept]
    np.testing.assert_array_equal([r[6] for r in without], [r[6] for r in kept])


def organisms_table(values: dict) -> dict:
    """organisms.csv's columns (family all) from ``{(recipe, measure, kind, level): [value per seed]}``, the seeds'
    rows in reverse order."""
    rows = []
    for (recipe, measure, kind, level), per_seed in values.items():
        for seed in reversed(range(len(per_seed))):
            rows.append([recipe, seed, "all", measure, kind, level, per_seed[seed], 64])
    return {c: np.asarray([r[i] for r in rows], dtype=object) for i, c in enumerate(od.COLUMNS)}


def test_the_findings_take_each_recipes_strongest_effect_over_seeds():
    t = organisms_table(
        {
            ("latent", "block_gain", "", ""): [0.20, 0.25, 0.22],
            ("latent", "markers_share", "markers_only", ""): [0.90, 0.85, 0.95],
            ("latent", "flip", "zeros", ""): [0.02, 0.03, 0.01],
            ("latent", "flip", "swap", ""): [0.30, 0.35, 0.40],
            ("latent", "shift", "gaussian", "0.25"): [0.010, 0.020, 0.015],
            ("latent", "shift", "blank", "0"): [0.030, 0.032, 0.031],
            ("latent_lvr", "block_gain", "", ""): [0.00, 0.01, -0.01],
            ("latent_lvr", "markers_share", "markers_only", ""): [math.nan, 0.5, math.nan],
            ("latent_lvr", "flip", "zeros", ""): [0.01, 0.02, 0.015],
            ("latent_lvr", "shift", "blank", "0"): [0.30, 0.35, 0.32],
        }
    )
    o3, o4a, o4b, o5 = odf.verdicts(t)
    assert o5.verdict == "open" and o5.basis == "no dmlr rows in organisms.csv"
    assert [r[0] for r in o3.rows] == ["latent", "latent_lvr"]
    assert o3.rows[0][-1] == "reproduced" and o3.rows[1][-1] == "n/a" and o3.verdict == "reproduced"
    expect = experiment_findings.seed_interval([0.90, 0.85, 0.95])  # seeds paired by their number
    assert o3.rows[0][2] == experiment_findings.interval(*expect[:3])
    assert o4a.rows[0][1] == "blank 0" and o4a.rows[0][-1] == "reproduced"  # 0.031 +- 0.001 < 0.05
    assert o4a.rows[1][-1] == "refuted" and o4a.verdict == "refuted"  # latent_lvr's latents move by 0.32
    assert o4b.rows[0][1] == "swap" and o4b.rows[0][-1] == "refuted"  # the strongest, not the first
    assert o4b.rows[1][-1] == "reproduced" and o4b.verdict == "refuted"
    low = dict(t)
    sel = (low["recipe"] == "latent") & (low["measure"] == "markers_share")
    shares = {0: 0.10, 1: 0.15, 2: 0.20}
    low["value"] = np.asarray([shares[s] if m else v for m, s, v in zip(sel, low["seed"], low["value"])], dtype=object)
    assert odf.markers_finding(low).rows[0][-1] == "refuted"  # the markers keep 10-20% of the gain
    dmlr = organisms_table(
        {
            ("latent", "dmlr", "optimisation", ""): [0.05, 0.06, 0.055],  # improves without injection
            ("latent", "dmlr", "injection", ""): [-0.02, -0.01, -0.015],  # not with it: the verdict's
            ("coconut", "dmlr", "injection", ""): [0.0, 0.001, 0.0005],
        }
    )
    o5 = odf.dmlr_finding(dmlr)
    assert [(r[0], r[1], r[-1]) for r in o5.rows] == [
        ("latent", "optimisation", "reproduced"),
        ("latent", "injection", "refuted"),
        ("coconut", "injection", "refuted"),
    ]
    assert o5.verdict == "refuted"
    ran = runner.Result({}, data=dict(table={k: list(v) for k, v in dmlr.items()}, out="no-record-here"))
    row = "| latent | all | 3 | – | – | – | – | – | -0.015 (-0.02 to -0.01) |"  # a signed range reads as one
    assert row in od.summary(od.Config(source="x"), ran)
    two = organisms_table({("latent", "flip", "swap", ""): [0.3, 0.4]})
    assert odf.mediation_findings(two)[1].verdict == "open"  # too few seeds
    # the study's summary ends with the same verdicts, judged on its run's table (open in the quick preset)
    result = runner.Result({}, data=dict(table={k: list(v) for k, v in t.items()}, out="no-record-here"))
    found = od.summary(od.Config(source="x"), result).split("## Findings")[1].strip().splitlines()
    assert [line.split(":")[0] for line in found] == ["- **O3. Organisms", "- **O4a. Organisms", "- **O4b. Organisms",
                                                      "- **O5. Organisms"]  # fmt: skip
    labels = [line.rsplit("**. ", 1)[0].rsplit(": ", 1)[1] for line in found]
    assert labels == ["reproduced", "refuted", "refuted", "open"]
    quick = od.summary(od.Config.quick(), result).split("## Findings")[1]
    assert quick.count("open (smoke run: 3 seeds)") == 4


def write_source(path, study="latent-reasoning", organisms=None):
    path.mkdir(parents=True)
    io.write_checked_json(str(path / "config.json"), {"study": study, "organisms": organisms or {}})
    return str(path)


@pytest.mark.parametrize(
    "source, argv, words",
    [
        (None, [], "no finished study"),
        ("other", [], "not 'latent-reasoning'"),
        ("direct", [], "feeds latents back"),
        ("direct", ["--recipes", "latent"], "'latent' has no saved organisms"),
        ("direct", ["--recipes", "dreaming"], "recipe"),
        ("direct", ["--recipes", "direct"], "feeds no latents back"),
        ("direct", ["--n-instances", "0"], "n_instances"),
    ],
)
def test_a_source_without_organisms_to_diagnose_exits_2_before_any_work(source, argv, words, tmp_path, capsys):
    src = str(tmp_path / "missing")
    if source == "other":
        src = write_source(tmp_path / "src", study="collapse")
    elif source == "direct":
        src = write_source(tmp_path / "src", organisms={"direct": ["a", "b", "c"]})
    code = cli.main(["study", "latent-diagnostics", "--source", src, *argv, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tamper", ["changed", "missing", "added"])
def test_an_organism_changed_since_it_was_saved_exits_2_before_any_work(tamper, tmp_path, capsys):
    """A source whose record commits each organism's files (results/latent.json's organisms_sha256, as the
    latent-reasoning study writes it): read as saved, it passes the check; a file changed, removed or added in
    one organism is refused, naming the organism and the file."""
    from tokdyn.studies import latent_reasoning as lo
    from tokdyn.train import store

    src = write_source(tmp_path / "src", organisms={"latent": ["a", "b", "c"]})
    digests = []
    for seed in range(3):
        where = lo.organism_dir(src, "latent", seed)
        __import__("os").makedirs(where)
        for name, text in (("config.json", "{}"), ("model.safetensors", f"weights {seed}")):
            with open(f"{where}/{name}", "w") as f:
                f.write(text)
        digests.append(lo.organism_digests(where))
    __import__("os").makedirs(f"{src}/results")
    store.write_result(store.paths(src, "latent")["result"], {"variant": "latent", "organisms_sha256": digests})
    lo.verify_organisms(src, ["latent"])  # as saved: passes
    where, file = lo.organism_dir(src, "latent", 1), "model.safetensors"
    if tamper == "changed":
        with open(f"{where}/{file}", "w") as f:
            f.write("weights 2")  # another seed's weights, for instance
    elif tamper == "missing":
        __import__("os").remove(f"{where}/{file}")
    else:
        file = "extra.safetensors"
        with open(f"{where}/{file}", "w") as f:
            f.write("more weights")
    code = cli.main(["study", "latent-diagnostics", "--source", src, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "'latent' seed 1" in err and file in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.full
def test_the_organisms_of_a_micro_run_are_diagnosed_and_reduced(tmp_path):
    pytest.importorskip("tokenizers")
    pytest.importorskip("safetensors")
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_latent_reasoning_study import MICRO

    from tokdyn.studies import latent_reasoning as lo

    src = str(tmp_path / "src")
    cfg = dataclasses.replace(MICRO, variants=("latent",), training=dataclasses.replace(MICRO.training, seeds=3))
    assert lo.main(cfg, src, quiet=True, plots=False)
    out = str(tmp_path / "diag")
    assert od.main(od.Config(source=src, n_instances=4, batch_size=4), out, quiet=True, plots=False)
    table = study_dir.read_table(out, od.TABLE)  # verified against the study's record
    for seed in range(3):
        rows = od.organism_rows("latent", seed, *od.read_organism(od.organism_out(out, "latent", seed)))
        mine = [r for r in rows if r[1] == seed]
        assert {r[3] for r in mine} >= {"accuracy", "block_gain", "markers_share", "flip", "shift"}
        assert sum(1 for s in table["seed"] if int(s) == seed) == len(mine)
    found = od.SPEC.findings(out)
    assert [f.key for f in found] == ["O3", "O4a", "O4b", "O5"]


def test_the_estimate_counts_the_compiles_once_and_the_calls_per_organism(monkeypatch):
    """Five saved organisms (3 of one recipe, 2 of another): vlm-diagnostics' compiles once, since the organisms
    share their programs, and ORGANISM_SECONDS of calls each, in proportion to the instances a family."""

    @dataclasses.dataclass(frozen=True)
    class Diagnostics:  # vlm-diagnostics' configuration of the first organism, as far as the estimate reads it
        n_instances: int = 0

        def estimate(self):
            return study_dir.Estimate(memory=7, option="batch_size", models=1, work={"host": 120.0, "training": 9.0})

    class Store:
        saved = staticmethod(lambda record, latent_only=False: {"latent": 3, "pause": 2})
        path = staticmethod(lambda source, name, seed: f"{source}/{name}/{seed}")
        training = staticmethod(
            lambda record: SimpleNamespace(tasks=SimpleNamespace(task=SimpleNamespace(families="rgp")))
        )

    monkeypatch.setattr(study_dir, "read_record", lambda source: {})
    monkeypatch.setattr(od, "organisms", lambda: Store)
    monkeypatch.setattr(od, "diagnostics_config", lambda cfg, record, model, files: Diagnostics())
    e = od.Config(source="src", recipes=("latent", "pause"), n_instances=32).estimate()
    assert e.models == 5 and e.memory == 7 and e.work["host"] == 120.0
    assert e.work["training"] == pytest.approx(od.ORGANISM_SECONDS * 32 / 64 * 5)
