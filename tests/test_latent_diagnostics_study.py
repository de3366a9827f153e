"""The latent-diagnostics study on a tiny trained reasoner: its mid-training checkpoint is the state
the full run passed through, its "full" setting reproduces the source's test answers, it writes
every table; damaged parts and checkpoints are named and recomputed, a source of another
configuration is refused naming the fields."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import quick_source
from test_latent_train import TINY
from tokdyn import cli, io
from tokdyn.models.latent import evaluation, training
from tokdyn.studies import latent_diagnostics
from tokdyn.studies import latent_reasoning

SOURCE = latent_reasoning.Config(reference_steps=0, training=TINY)


@pytest.mark.full
def test_study_writes_its_tables_and_its_midway_model_is_the_runs(tmp_path, monkeypatch, tiny_reasoner):
    monkeypatch.setattr(latent_diagnostics.Config, "reasoning", lambda self: SOURCE)
    shutil.copytree(tiny_reasoner[1], tmp_path / "source")
    cfg = latent_diagnostics.Config(
        source=str(tmp_path / "source"),
        variants=("latent",),
        reference="",
        n_instances=40,
        perturbations=("shuffle",),
        noise_sigmas=(),
        probe_steps=50,
        n_resamples=200,
    )
    out = str(tmp_path / "out")
    assert latent_diagnostics.main(cfg, out, quiet=True, plots=True)
    # the mid-training model is the state the full run passed through: its held-out accuracy is
    # the one the run recorded at that step
    model, params, step, stage = latent_reasoning.load_midway(SOURCE, cfg.source, "latent")
    assert step == 20 and stage == 0
    val = evaluation.evaluate(TINY, "latent", params, training.data(TINY).val)["all"]
    curve = io.read_csv(os.path.join(cfg.source, "curves", "latent.csv"))
    np.testing.assert_allclose(val, curve["val_all"][curve["step"] == step], atol=1e-6)
    dec = io.read_csv(os.path.join(out, "decomposition.csv"))
    assert set(dec["stage"]) == {"mid", "final"} and set(dec["setting"]) == set(latent_diagnostics.mediation.SETTINGS)
    saved = latent_reasoning.read_answers(cfg.source, "latent")[:, :40]
    test = jax.tree.map(lambda a: np.asarray(a)[:40], training.data(TINY).test)
    full = (dec["stage"] == "final") & (dec["setting"] == "full")
    # the decomposition's program and the study's evaluation are two programs: an answer on a last-bit
    # argmax tie may differ, one of the 40 at most
    np.testing.assert_allclose(dec["accuracy"][full], (saved == test.answer[None]).mean(), rtol=0, atol=1 / 40 + 1e-9)
    med = io.read_csv(os.path.join(out, "mediation.csv"))
    assert set(med["what"]) == {"latent", "patches", "intervention"}
    inter = med["what"] == "intervention"
    assert set(med["perturbation"][inter]) == set(latent_diagnostics.mediation.INTERVENTIONS) - {
        "other"
    }  # no second feedback variant
    assert np.all(med["changed"][inter] == 1.0) and np.all(med["kl"][inter] >= 0)
    col = io.read_csv(os.path.join(out, "collapse.csv"))
    assert len(col["step"]) == TINY.seeds * TINY.n_latents and np.all(col["participation_ratio"] >= 1)
    prb = io.read_csv(os.path.join(out, "probes.csv"))
    assert set(prb["features"]) == {"latents", "patches"} and set(prb["target"]) == set(latent_diagnostics.FACTS)
    assert np.all((prb["accuracy"] >= 0) & (prb["accuracy"] <= 1))
    for f in ("similarity.png", "decomposition.png", "probes.png", "summary.md", "config.json"):
        assert os.path.exists(os.path.join(out, f)), f
    # finished parts are kept, for a rerun to reuse; a damaged part, and a damaged mid-training
    # checkpoint of the source, are named in a warning, set aside and recomputed to the same table
    parts = sorted(os.listdir(os.path.join(out, "parts")))
    assert parts == [
        "latent__collapse.json",
        "latent__decomposition_final.json",
        "latent__decomposition_mid.json",
        "latent__mediation.json",
        "latent__probes_latents.json",
        "latent__probes_patches.json",
    ]
    before = {f: open(os.path.join(out, f), "rb").read() for f in ("decomposition.csv", "collapse.csv")}
    damaged = [
        os.path.join(out, "parts", "latent__decomposition_mid.json"),
        os.path.join(out, "parts", "latent__collapse.json"),
        os.path.join(cfg.source, "checkpoints", "latent@20.npz"),
    ]
    for path in damaged:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    with pytest.warns(RuntimeWarning) as caught:
        assert latent_diagnostics.main(cfg, out, quiet=True, plots=False)
    said = " ".join(str(w.message) for w in caught)
    assert all(f"{path} could not be read back" in said for path in damaged), said
    for f, b in before.items():
        assert open(os.path.join(out, f), "rb").read() == b, f
    # another configuration is refused before any work, naming the fields
    with pytest.raises(io.OutputConflict, match="probe_steps: 50 there, 60 now"):
        latent_diagnostics.main(dataclasses.replace(cfg, probe_steps=60), out, quiet=True, plots=False)


def test_command_line_and_bad_input():
    args = [
        "study",
        "latent-diagnostics",
        "--variants",
        "latent,pause",
        "--settings",
        "full,no_block,markers_only",
        "--quick",
    ]
    cfg = cli.config_from_args(
        latent_diagnostics.Config, cli.build_parser(args).parse_args(args), base=latent_diagnostics.Config.quick()
    )
    assert cfg.variants == ("latent", "pause") and cfg.settings == ("full", "no_block", "markers_only")
    with pytest.raises(ValueError, match="variants must have a latent block"):
        latent_diagnostics.Config(variants=("direct",)).validate()
    with pytest.raises(ValueError, match="settings must include 'full' and 'no_block'"):
        latent_diagnostics.Config(settings=("full", "markers_only")).validate()
    with pytest.raises(ValueError, match="interventions must be one of"):
        latent_diagnostics.Config(interventions=("zeros", "blur")).validate()
    with pytest.raises(ValueError, match="noise_sigmas must be in"):
        latent_diagnostics.Config(noise_sigmas=(0.0,)).validate()
    with pytest.raises(ValueError, match="n_instances must be at most"):
        latent_diagnostics.Config(n_instances=10**6).validate()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--no-train", "--source", "{other}"], "training.train.steps: 100 there, 600 now"),  # the case
        (["--source", "{other}"], "training.train.steps: 100 there, 600 now"),
        (["--no-train", "--source", "{quick}"], "lacks the trained variants ['latent', 'pause', 'text']"),
        (["--source", "{out}"], "must be separate directories"),
        (["--variants", ""], "variants must name at least one"),
        (["--n-resamples", str(10**9)], "n_resamples"),
    ],
)
def test_the_command_line_refuses_before_any_work(tmp_path, capsys, argv, words):
    paths = {
        "other": quick_source(tmp_path / "other", steps=100),
        "quick": quick_source(tmp_path / "quick"),
        "out": tmp_path / "out",
    }
    argv = [a.format(**paths) for a in argv]
    before = sorted(os.listdir(tmp_path))
    assert cli.main(["study", "latent-diagnostics", "--quick", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before
