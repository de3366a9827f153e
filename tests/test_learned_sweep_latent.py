"""tokdyn sweep latent-reasoning (tokdyn.studies.learned_sweep): the latent reasoner of one training
variant over its traced knobs x seeds, a curriculum (coconut) trained as any trainer is. A model's
traced scores are the study's host evaluation (tokdyn.models.latent.evaluation.evaluate); the pool
drawn inside the program is the study's training pool; bad configurations are refused before
anything is compiled; the sweep's seeds and root seed key its models. With the full executions:
the command end to end on a curriculum, its models train_many's on the same seeds and settings,
the report pairing them by seed."""

import dataclasses
import os
import re

import jax
import numpy as np
import pytest
from conftest import jax_compilations

from tokdyn import cli, train
from tokdyn.engine import sweep
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import evaluation
from tokdyn.models.latent import training as latent_training
from tokdyn.studies import learned_sweep
from tokdyn.studies.learned_sweep import latent_reasoning, report
from tokdyn.train import optim

COMPILE = "/jax/core/compile/backend_compile_duration"
TINY_TRAINING = latent_training.Config(
    task=tasks.Config(grid_size=4, n_colours=4, families=("read", "gravity", "path")), width=8, depth=1, heads=2,
    n_latents=2, batch_size=8, train=optim.Config(steps=4, steps_per_call=2, warmup=0, decay="constant"),
    n_train=200, n_test=60, n_val=0,
)  # fmt: skip
RATES = (1e-3, 1e-2)


def tiny(variant="latent", **changes):
    """The tiny sweep of ``variant``: 2 learning rates x 2 seeds, one chunk."""
    fields = dict(seeds=2, learning_rate="1e-3,1e-2", weight_decay="", chunk_size=4, lanes=2, n_resamples=100)
    fields["model"] = latent_training.VariantConfig(variant, TINY_TRAINING)
    return latent_reasoning.Config(**{**fields, **changes})


MODEL = latent_reasoning.Config.MODEL


@pytest.mark.full  # (the default run checks the sweep's training pool and its curriculum trainer)
@pytest.mark.parametrize("variant", ["text", "coconut"])
def test_a_model_is_scored_as_the_studys_evaluation_scores_it(variant):
    vc = latent_training.VariantConfig(variant, TINY_TRAINING)
    trainer = MODEL.trainer(vc)
    params = jax.jit(lambda k: train.init_state(trainer, k, MODEL.hparams).params)(jax.random.key(1))
    got = jax.jit(lambda p: MODEL.evaluate(jax.random.key(0), p, vc, MODEL.hparams, None))(params)
    assert set(got) == set(tiny(variant).metrics())
    test = latent_training.data(TINY_TRAINING).test
    stacked = jax.tree_util.tree_map(lambda a: a[None], params)
    want = evaluation.evaluate(TINY_TRAINING, variant, stacked, test, chunk=25)  # the host's, in chunks
    assert set(want) == set(got)
    n = {f: int(np.sum(np.asarray(test.family) == tasks.FAMILIES.index(f))) for f in TINY_TRAINING.task.families}
    for name, value in want.items():  # two programs: an answer on a last-bit tie may differ
        count = n.get(name, len(test.answer))
        np.testing.assert_allclose(float(got[name]), float(value[0]), atol=1.01 / count, err_msg=name)


def test_the_pool_drawn_in_the_program_is_the_studys_training_pool():
    vc = latent_training.VariantConfig("latent", TINY_TRAINING)
    got = jax.jit(lambda: MODEL.inputs(vc))()
    want = latent_training.data(TINY_TRAINING).train
    for name in ("image", "question", "answer", "helper", "caption", "family"):
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)), err_msg=name)


def test_a_curriculum_is_a_trainer_of_the_sweep():
    """coconut trains in curriculum stages (a tokdyn.train.Curriculum): the sweep counts its
    parameters, estimates it and runs it as any trainer (nothing compiled here)."""
    cfg = tiny("coconut")
    trainer = MODEL.trainer(cfg.model)
    assert isinstance(trainer, train.Curriculum) and len(trainer.stages) == 3
    first = trainer.first.init(jax.random.key(0), MODEL.hparams)  # the stage-0 model starts it
    want = sum(int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(first))
    with jax_compilations() as events:
        assert cfg.params() == want and cfg.estimate().models == 4
    assert COMPILE not in events
    assert cfg.metrics() == ("all", "read", "gravity", "path")
    assert tiny("text").metrics() == ("all", "read", "gravity", "path", "caption_exact")


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(learning_rate="-1,1"), "learning_rate must be in (0, inf]"),
        (dict(weight_decay="-1"), "weight_decay must be in [0, inf]"),
        (dict(model=latent_training.VariantConfig("nope", TINY_TRAINING)), "variant must be one of"),
        (
            dict(model=latent_training.VariantConfig("latent", dataclasses.replace(TINY_TRAINING, width=9))),
            "width must be a multiple of heads",
        ),
        (dict(baseline="align_weight=1"), "baseline: 'align_weight' is a knob of the model that is not swept"),
        (dict(seeds=0), "seeds must be an int >= 1"),
    ],
)
def test_bad_configurations_are_refused_before_anything_is_compiled(changes, words, tmp_path):
    with jax_compilations() as events, pytest.raises(ValueError, match=re.escape(words)):
        latent_reasoning.main(tiny(**changes), str(tmp_path / "out"), quiet=True)
    assert COMPILE not in events and not (tmp_path / "out").exists()


def test_the_variant_is_an_option_and_the_sweeps_seeds_key_the_models():
    parser = cli.build_parser(["sweep", "latent-reasoning"])
    argv = ["sweep", "latent-reasoning", "--variant", "coconut", "--seeds", "7", "--root-seed", "3", "--width", "32"]
    cfg = cli.config_from_args(latent_reasoning.Config, parser.parse_args(argv + ["--out", "x"]))
    assert cfg.model.variant == "coconut" and cfg.model.training.width == 32
    assert (cfg.seeds, cfg.root_seed) == (7, 3)  # the sweep's
    default = latent_reasoning.Config().model.training
    assert (cfg.model.training.seeds, cfg.model.training.root_seed) == (default.seeds, default.root_seed)
    assert latent_reasoning.Config().model.variant == "latent"


def test_on_a_cpu_one_model_at_a_time_and_the_quick_shapes_rate():
    quick, default = latent_reasoning.Config.quick(), latent_reasoning.Config()
    if jax.default_backend() == "cpu":
        assert default.batch() == 1 and dataclasses.replace(default, lanes=8).batch() == 8
    assert quick.estimate().work["training"] == pytest.approx(quick.runs() * 100 / MODEL.quick_rate)
    assert default.estimate().work["training"] == pytest.approx(default.runs() * 3000 / MODEL.rate)


@pytest.mark.full
def test_the_command_trains_a_curriculum_as_train_many_does(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "latent-reasoning", "--variant", "coconut", "--seeds", "2", "--learning-rate", "1e-3,1e-2",
            "--weight-decay", "", "--width", "8", "--depth", "1", "--heads", "2", "--batch-size", "8", "--steps", "4",
            "--steps-per-call", "2", "--warmup", "0", "--decay", "constant", "--n-train", "200", "--n-test", "60",
            "--n-val", "0", "--lanes", "2", "--n-resamples", "50", "--out", out, "--quiet", "--no-cache"]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert {"conditions.csv", "paired.csv", "report.md", "manifest.json"} <= set(os.listdir(out))
    cfg = tiny("coconut", n_resamples=50)
    got = sweep.load(str(out)).columns
    root = jax.random.key(cfg.root_seed)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(np.arange(cfg.seeds, dtype=np.uint32))
    keys, hps = train.grid(seed_keys, dataclasses.replace(MODEL.hparams, learning_rate=np.array(RATES)))
    res = train.train_many(MODEL.trainer(cfg.model), MODEL.inputs(cfg.model), keys, hps)
    want = jax.vmap(cfg.task().outputs)(keys, res.state.hparams, res.state)
    np.testing.assert_array_equal(got["seed"], np.tile(np.arange(cfg.seeds), 2))
    for name in cfg.metrics() + ("skipped",):  # two programs: an answer on a last-bit tie may differ
        np.testing.assert_allclose(got[name], want[name], atol=0.05, err_msg=name)
    # the trained models scored by the study's host evaluation
    host = evaluation.evaluate(TINY_TRAINING, "coconut", res.state.params, latent_training.data(TINY_TRAINING).test)
    for name in cfg.metrics():
        np.testing.assert_allclose(got[name], host[name], atol=0.05, err_msg=name)
    result = report.analysis(str(out), cfg)
    paired = result.tables["paired.csv"]
    j = list(paired["metric"]).index("all")
    a, b = (np.asarray(got["all"][np.isclose(got["learning_rate"], v)], np.float64) for v in RATES[::-1])
    np.testing.assert_allclose(paired["mean_diff"][j], np.mean(a - b), rtol=1e-6, atol=1e-9)
    assert learned_sweep.MODELS["latent-reasoning"] is MODEL
