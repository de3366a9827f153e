"""The latent-optimisation study on tiny trained reasoners: it trains what the source lacks, its
"before" answers are the source study's own test answers, and it writes every table and keeps
every finished run."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

from test_latent_train import TINY
from tokdyn import cli, io
from tokdyn.models.latent import training
from tokdyn.studies import latent_optimisation as LO
from tokdyn.experiment import reasoners as LR

pytestmark = pytest.mark.fast_compile

SOURCE = LR.Config(reference_steps=0, training=TINY)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(LO.Config, "reasoning", lambda self: SOURCE)
    return LO.Config(variants=("latent",), methods=("es_entropy_best",), grounding_variants=("latent",),
                     perturbations=("blank", "shuffle"), n_instances=20, top_k=3, n_iters=2, n_pairs=2,
                     learning_rate=0.5, sweep_method="es_entropy_best", sweep_learning_rates=(0.25,))


def test_missing_variants_are_trained_in_the_source_or_named(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(LR, "train_variants", lambda cfg, out, names, **kw: calls.append((tuple(names), out)) or True)
    src = tmp_path / "source"
    (src / "results").mkdir(parents=True)
    (src / "results" / "latent.json").write_text("{}")
    io.write_json(str(src / "config.json"), {"variants": ["latent", "pause"]})
    with pytest.raises(ValueError, match=r"lacks the trained variants \['text'\]"):
        LR.ensure_trained(SOURCE, str(src), ["latent", "text"], train=False)
    LR.ensure_trained(SOURCE, str(src), ["latent", "text"])
    assert calls == [(("latent", "pause", "text"), str(src))]  # what is there is kept
    monkeypatch.setattr(LR, "train_variants", lambda cfg, out, names, **kw: False)
    with pytest.raises(RuntimeError, match="did not finish"):
        LR.ensure_trained(SOURCE, str(src), ["text"])


def test_study_writes_its_tables(tmp_path, tiny, tiny_reasoner):
    shutil.copytree(tiny_reasoner[1], tmp_path / "source")
    cfg = dataclasses.replace(tiny, source=str(tmp_path / "source"))
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="lacks the trained variants"):
        LO.main(dataclasses.replace(cfg, train=False, grounding_variants=("text",)), out, quiet=True, plots=False)
    assert LO.main(cfg, out, quiet=True, plots=True)
    table = io.read_csv(os.path.join(out, "optimiser.csv"))
    assert set(table["method"]) == {"before", "random", "es_entropy_best", "es_entropy_best@lr=0.25"}
    assert set(table["family"]) == set(TINY.task.families) | {"all"}
    # "before" is the trained model's own answer: the source study's test accuracy on these instances
    with np.load(os.path.join(cfg.source, "results", "latent.npz")) as z:
        saved = z["answers"][:, :20]
    test = jax.tree.map(lambda a: np.asarray(a)[:20], training.data(TINY).test)
    want = (saved == test.answer[None]).mean(1)
    sel = (table["method"] == "before") & (table["family"] == "all")
    # recomputed by another program than the source study's evaluation: an answer on a last-bit argmax
    # tie may differ, one of the 20 at most
    np.testing.assert_allclose(table["accuracy"][sel], want, rtol=0, atol=1 / 20 + 1e-9)
    every = table["family"] == "all"
    np.testing.assert_allclose(table["accuracy_before"][every], want[table["seed"][every].astype(int)],
                               rtol=0, atol=1 / 20 + 1e-9)  # every method's row
    es = (table["method"] == "es_entropy_best") & (table["family"] == "all")
    assert np.all(table["reward_after"][es] >= table["reward_before"][es])  # the best latents include the start
    assert np.all(table["patches_injected"][np.isin(table["method"], ["before", "random"])] == 0)
    assert np.all(table["patches_injected"][es] <= 2 * 2 * (cfg.n_iters - 1))  # top_m x L per improving step
    tests = io.read_csv(os.path.join(out, "optimiser_tests.csv"))
    assert set(tests["method"]) == {"random", "es_entropy_best", "es_entropy_best@lr=0.25"} and "p_holm" in tests
    curves = io.read_csv(os.path.join(out, "rewards.csv"))
    assert sorted(set(curves["iteration"].tolist())) == [1, 2]
    ground = io.read_csv(os.path.join(out, "grounding.csv"))
    assert len(ground["variant"]) == TINY.seeds * 2  # variants x seeds x perturbations
    assert np.all(np.isnan(ground["caption_grounding"])) and np.all(ground["n"] == 20)  # no caption: the answer only
    assert np.all(np.isfinite(ground["answer_grounding"]))
    for f in ("optimiser.png", "grounding.png", "summary.md", "config.json"):
        assert os.path.exists(os.path.join(out, f)), f
    # each finished run is kept; a rerun reuses it (a run whose part is missing is computed again)
    parts = sorted(os.listdir(os.path.join(out, "parts")))
    assert parts == ["latent__controls.npz", "latent__es_entropy_best.npz", "latent__es_entropy_best@lr=0.25.npz"]
    os.remove(os.path.join(out, "parts", parts[0]))
    stamp = {p: os.path.getmtime(os.path.join(out, "parts", p)) for p in parts[1:]}
    assert LO.main(dataclasses.replace(cfg, grounding_variants=()), out, quiet=True, plots=False)
    assert all(os.path.getmtime(os.path.join(out, "parts", p)) == t for p, t in stamp.items())
    again = io.read_csv(os.path.join(out, "optimiser.csv"))
    np.testing.assert_allclose(again["accuracy"], table["accuracy"])


def test_command_line_and_bad_input():
    args = ["study", "latent-optimisation", "--variants", "latent,latent_lvr", "--methods", "es_logprob",
            "--n-iters", "5", "--sigma", "0.2", "--quick"]
    cfg = cli.config_from_args(LO.Config, cli.build_parser(args).parse_args(args), base=LO.Config.quick())
    assert cfg.variants == ("latent", "latent_lvr") and cfg.methods == ("es_logprob",) and cfg.n_iters == 5
    assert cfg.sigma == 0.2 and cfg.preset == "quick"
    with pytest.raises(ValueError, match="latent-feedback variants"):
        LO.Config(variants=("direct",)).validate()
    with pytest.raises(ValueError, match="methods must be one of"):
        LO.Config(methods=("es_entropy", "adam")).validate()
    with pytest.raises(ValueError, match="top_k must be at most the vocabulary size"):
        LO.Config(top_k=1000).validate()
    with pytest.raises(ValueError, match="sigma must be in"):
        LO.Config(sigma=0.0).validate()
    with pytest.raises(ValueError, match="sweep_method must be one of"):
        LO.Config(sweep_method="adam").validate()
    with pytest.raises(ValueError, match="sweep_learning_rates must be in"):
        LO.Config(sweep_learning_rates=(0.1, -1.0)).validate()
    with pytest.raises(ValueError, match="n_instances must be at most"):
        LO.Config(n_instances=10**6).validate()
