"""The latent-diagnostics study on a tiny trained reasoner: its mid-training checkpoint is the state
the full run passed through, its "full" setting reproduces the source's test answers, and it
writes every table."""

import os
import shutil

import jax
import numpy as np
import pytest

from test_latent_train import TINY
from tokdyn import cli, io
from tokdyn.models.latent import evaluation, training
from tokdyn.studies import latent_diagnostics as LD
from tokdyn.experiment import reasoners as LR

pytestmark = pytest.mark.fast_compile

SOURCE = LR.Config(reference_steps=0, training=TINY)


def test_study_writes_its_tables_and_its_midway_model_is_the_runs(tmp_path, monkeypatch, tiny_reasoner):
    monkeypatch.setattr(LD.Config, "reasoning", lambda self: SOURCE)
    shutil.copytree(tiny_reasoner[1], tmp_path / "source")
    cfg = LD.Config(source=str(tmp_path / "source"), variants=("latent",), reference="", n_instances=40,
                    perturbations=("shuffle",), noise_sigmas=(), probe_steps=50, n_resamples=200)
    out = str(tmp_path / "out")
    assert LD.main(cfg, out, quiet=True, plots=True)
    # the mid-training model is the state the full run passed through: its held-out accuracy is
    # the one the run recorded at that step
    model, params, step, stage = LR.load_midway(SOURCE, cfg.source, "latent")
    assert step == 20 and stage == 0
    val = evaluation.evaluate(TINY, "latent", params, training.data(TINY).val)["all"]
    curve = io.read_csv(os.path.join(cfg.source, "curves", "latent.csv"))
    np.testing.assert_allclose(val, curve["val_all"][curve["step"] == step], atol=1e-6)
    dec = io.read_csv(os.path.join(out, "decomposition.csv"))
    assert set(dec["stage"]) == {"mid", "final"} and set(dec["setting"]) == set(LD.D.SETTINGS)
    with np.load(os.path.join(cfg.source, "results", "latent.npz")) as z:
        saved = z["answers"][:, :40]
    test = jax.tree.map(lambda a: np.asarray(a)[:40], training.data(TINY).test)
    full = (dec["stage"] == "final") & (dec["setting"] == "full")
    # the decomposition's program and the study's evaluation are two programs: an answer on a last-bit
    # argmax tie may differ, one of the 40 at most
    np.testing.assert_allclose(dec["accuracy"][full], (saved == test.answer[None]).mean(), rtol=0, atol=1 / 40 + 1e-9)
    med = io.read_csv(os.path.join(out, "mediation.csv"))
    assert set(med["what"]) == {"latent", "patches", "intervention"}
    inter = med["what"] == "intervention"
    assert set(med["perturbation"][inter]) == set(LD.D.INTERVENTIONS) - {"other"}  # no second feedback variant
    assert np.all(med["changed"][inter] == 1.0) and np.all(med["kl"][inter] >= 0)
    col = io.read_csv(os.path.join(out, "collapse.csv"))
    assert len(col["step"]) == TINY.seeds * TINY.n_latents and np.all(col["participation_ratio"] >= 1)
    prb = io.read_csv(os.path.join(out, "probes.csv"))
    assert set(prb["features"]) == {"latents", "patches"} and set(prb["target"]) == set(LD.FACTS)
    assert np.all((prb["accuracy"] >= 0) & (prb["accuracy"] <= 1))
    for f in ("similarity.png", "decomposition.png", "probes.png", "summary.md", "config.json"):
        assert os.path.exists(os.path.join(out, f)), f
    # finished parts are kept with what produced them, for a rerun to reuse
    part = io.read_json(os.path.join(out, "parts", "latent__collapse.json"))
    assert "'variant', 'latent'" in part["stamp"] and len(part["rows"]) == len(col["step"])


def test_command_line_and_bad_input():
    args = ["study", "latent-diagnostics", "--variants", "latent,pause", "--settings", "full,no_block,markers_only",
            "--quick"]
    cfg = cli.config_from_args(LD.Config, cli.build_parser(args).parse_args(args), base=LD.Config.quick())
    assert cfg.variants == ("latent", "pause") and cfg.settings == ("full", "no_block", "markers_only")
    with pytest.raises(ValueError, match="variants must have a latent block"):
        LD.Config(variants=("direct",)).validate()
    with pytest.raises(ValueError, match="settings must include 'full' and 'no_block'"):
        LD.Config(settings=("full", "markers_only")).validate()
    with pytest.raises(ValueError, match="interventions must be one of"):
        LD.Config(interventions=("zeros", "blur")).validate()
    with pytest.raises(ValueError, match="noise_sigmas must be in"):
        LD.Config(noise_sigmas=(0.0,)).validate()
    with pytest.raises(ValueError, match="n_instances must be at most"):
        LD.Config(n_instances=10**6).validate()
