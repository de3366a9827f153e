"""The latent-optimisation study on tiny trained reasoners: it trains what the source lacks, its
"before" answers are the source study's own test answers, it writes every table and keeps every
finished run; a source of another configuration, an impossible option or a damaged part is named."""

import dataclasses
import os
import shutil
import warnings

import jax
import numpy as np
import pytest

from conftest import quick_source
from test_latent_train import TINY
from tokdyn import cli, io
from tokdyn.models.latent import training
from tokdyn.studies import latent_optimisation
from tokdyn.studies import latent_reasoning

SOURCE = latent_reasoning.Config(reference_steps=0, training=TINY)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(latent_optimisation.Config, "reasoning", lambda self: SOURCE)
    return latent_optimisation.Config(
        variants=("latent",),
        methods=("es_entropy_best",),
        grounding_variants=("latent",),
        perturbations=("blank", "shuffle"),
        n_instances=40,  # the source's test set: its evaluation is the source study's compiled program
        top_k=3,
        n_iters=2,
        n_pairs=2,
        learning_rate=0.5,
        sweep_method="es_entropy_best",
        sweep_learning_rates=(0.25,),
    )


@pytest.mark.full
def test_missing_variants_are_trained_in_the_source_or_named(tmp_path, monkeypatch, tiny_reasoner):
    src = str(tmp_path / "source")
    shutil.copytree(tiny_reasoner[1], src)  # holds the finished variant latent
    calls = []
    monkeypatch.setattr(
        latent_reasoning.source,
        "train_variants",
        lambda cfg, out, names, **kw: calls.append((tuple(names), out)) or True,
    )
    with pytest.raises(ValueError, match=r"lacks the trained variants \['text'\]"):
        latent_reasoning.ensure_trained(SOURCE, src, ["latent", "text"], train=False)
    assert latent_reasoning.ensure_trained(SOURCE, src, ["latent", "text"]) == SOURCE
    assert calls == [(("text",), src)]  # only what is missing; what is there is kept
    assert io.read_json(os.path.join(src, "config.json"))["variants"] == ["latent"]
    monkeypatch.setattr(latent_reasoning.source, "train_variants", lambda cfg, out, names, **kw: False)
    with pytest.raises(RuntimeError, match="did not finish"):
        latent_reasoning.ensure_trained(SOURCE, src, ["text"])
    with pytest.raises(io.OutputConflict, match="training.train.steps: 40 there, 60 now"):
        fewer = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=60))
        latent_reasoning.ensure_trained(dataclasses.replace(SOURCE, training=fewer), src, ["latent"])


@pytest.mark.full
def test_study_writes_its_tables(tmp_path, tiny, tiny_reasoner):
    shutil.copytree(tiny_reasoner[1], tmp_path / "source")
    cfg = dataclasses.replace(tiny, source=str(tmp_path / "source"))
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="lacks the trained variants"):
        latent_optimisation.main(
            dataclasses.replace(cfg, train=False, grounding_variants=("text",)), out, quiet=True, plots=False
        )
    assert latent_optimisation.main(cfg, out, quiet=True, plots=True)
    table = io.read_csv(os.path.join(out, "optimiser.csv"))
    assert set(table["method"]) == {"before", "random", "es_entropy_best", "es_entropy_best@lr=0.25"}
    assert set(table["family"]) == set(TINY.task.families) | {"all"}
    # "before" is the trained model's own answer: the source study's test accuracy on these instances
    n = cfg.n_instances
    saved = latent_reasoning.read_answers(cfg.source, "latent")[:, :n]
    test = jax.tree.map(lambda a: np.asarray(a)[:n], training.data(TINY).test)
    want = (saved == test.answer[None]).mean(1)
    sel = (table["method"] == "before") & (table["family"] == "all")
    # recomputed by another program than the source study's evaluation: an answer on a last-bit argmax
    # tie may differ, one of the n at most
    np.testing.assert_allclose(table["accuracy"][sel], want, rtol=0, atol=1 / n + 1e-9)
    every = table["family"] == "all"
    np.testing.assert_allclose(
        table["accuracy_before"][every], want[table["seed"][every].astype(int)], rtol=0, atol=1 / n + 1e-9
    )  # every method's row
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
    assert np.all(np.isnan(ground["caption_grounding"])) and np.all(ground["n"] == n)  # no caption: the answer only
    assert np.all(np.isfinite(ground["answer_grounding"]))
    for f in ("optimiser.png", "grounding.png", "summary.md", "config.json"):
        assert os.path.exists(os.path.join(out, f)), f
    conf = io.read_json(os.path.join(out, "config.json"))
    assert conf["study"] == "latent-optimisation"
    assert conf["reasoning"]["training"]["train"]["steps"] == TINY.train.steps
    assert set(conf["sources"]) == {"reasoning"} and conf["selection"]["methods"] == ["es_entropy_best"]
    # each finished run is kept; a rerun reuses it (a run whose part is missing, or damaged, is
    # computed again; a damaged one named in a warning and set aside)
    parts = sorted(os.listdir(os.path.join(out, "parts")))
    assert parts == [
        "latent__controls.npz",
        "latent__es_entropy_best.npz",
        "latent__es_entropy_best@lr=0.25.npz",
        "latent__grounding.json",
        "latent__grounding_scores.npz",
    ]
    os.remove(os.path.join(out, "parts", parts[0]))
    damaged = os.path.join(out, "parts", parts[1])
    with open(damaged, "r+b") as f:
        f.truncate(os.path.getsize(damaged) // 2)
    stamp = {p: os.path.getmtime(os.path.join(out, "parts", p)) for p in parts[2:]}
    with pytest.warns(RuntimeWarning, match=f"{damaged} could not be read back"):
        assert latent_optimisation.main(dataclasses.replace(cfg, grounding_variants=()), out, quiet=True, plots=False)
    assert all(os.path.getmtime(os.path.join(out, "parts", p)) == t for p, t in stamp.items())
    assert os.listdir(os.path.join(out, "parts", "corrupt"))
    again = io.read_csv(os.path.join(out, "optimiser.csv"))
    for k in ("accuracy", "reward_after", "answers_changed"):
        np.testing.assert_array_equal(again[k], table[k])
    # another configuration is refused naming the fields; --fresh starts afresh and leaves no stale figure
    with pytest.raises(io.OutputConflict, match="threshold: 0.1 there, 0.2 now"):
        latent_optimisation.main(dataclasses.replace(cfg, threshold=0.2), out, quiet=True, plots=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert latent_optimisation.main(
            dataclasses.replace(cfg, threshold=0.2, grounding_variants=()), out, quiet=True, plots=False, fresh=True
        )
    assert not os.path.exists(os.path.join(out, "optimiser.png")) and not os.path.exists(
        os.path.join(out, "parts", "latent__grounding.json")
    )
    np.testing.assert_array_equal(io.read_csv(os.path.join(out, "optimiser.csv"))["accuracy"], table["accuracy"])


def test_command_line_and_bad_input():
    args = [
        "study",
        "latent-optimisation",
        "--variants",
        "latent,latent_lvr",
        "--methods",
        "es_logprob",
        "--n-iters",
        "5",
        "--sigma",
        "0.2",
        "--quick",
    ]
    cfg = cli.config_from_args(
        latent_optimisation.Config, cli.build_parser(args).parse_args(args), base=latent_optimisation.Config.quick()
    )
    assert cfg.variants == ("latent", "latent_lvr") and cfg.methods == ("es_logprob",) and cfg.n_iters == 5
    assert cfg.sigma == 0.2 and cfg.preset == "quick"
    with pytest.raises(ValueError, match="latent-feedback variants"):
        latent_optimisation.Config(variants=("direct",)).validate()
    with pytest.raises(ValueError, match="methods must be one of"):
        latent_optimisation.Config(methods=("es_entropy", "adam")).validate()
    with pytest.raises(ValueError, match="top_k must be at most the vocabulary size"):
        latent_optimisation.Config(top_k=1000).validate()
    with pytest.raises(ValueError, match="sigma must be in"):
        latent_optimisation.Config(sigma=0.0).validate()
    with pytest.raises(ValueError, match="sweep_method must be one of"):
        latent_optimisation.Config(sweep_method="adam").validate()
    with pytest.raises(ValueError, match="sweep_learning_rates must be in"):
        latent_optimisation.Config(sweep_learning_rates=(0.1, -1.0)).validate()
    with pytest.raises(ValueError, match="n_instances must be at most"):
        latent_optimisation.Config(n_instances=10**6).validate()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--no-train", "--source", "{other}"], "training.train.steps: 100 there, 600 now"),  # the case
        (["--source", "{other}"], "training.train.steps: 100 there, 600 now"),  # nor is a variant trained into it
        (["--source", "{lr}"], "hparams.learning_rate: 0.01 there, 0.003 now"),
        (["--no-train", "--source", "{quick}"], "lacks the trained variants ['latent', 'direct', 'text']"),
        (["--no-train", "--source", "{empty}"], "holds no latent-reasoning study"),
        (["--source", "{out}"], "must be separate directories"),
        (["--variants", ""], "variants must name at least one latent-feedback variant"),
        (["--n-instances", "3"], "n_instances must be at least 6"),
        (["--n-pairs", str(10**9)], "n_pairs"),
        (["--top-m", "99"], "top_m must be at most the 16 image patches"),
        (["--root-seed", str(2**32)], "root_seed must be an int in [0, 4294967295]"),
    ],
)
def test_the_command_line_refuses_before_any_work(tmp_path, capsys, argv, words):
    paths = {
        "other": quick_source(tmp_path / "other", steps=100),
        "lr": tmp_path / "lr",
        "quick": quick_source(tmp_path / "quick"),
        "empty": tmp_path / "empty",
        "out": tmp_path / "out",
    }
    lr = latent_reasoning.Config.quick()
    latent_reasoning.open_study(
        dataclasses.replace(lr, hparams=dataclasses.replace(lr.hparams, learning_rate=0.01)),
        str(paths["lr"]),
        quiet=True,
    ).release()
    argv = [a.format(**paths) for a in argv]
    before = sorted(os.listdir(tmp_path))
    assert cli.main(["study", "latent-optimisation", "--quick", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing created
