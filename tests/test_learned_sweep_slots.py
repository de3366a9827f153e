"""tokdyn sweep slots (tokdyn.studies.learned_sweep.slots): Slot Attention autoencoders on sprite
scenes over their learning rate x seeds. The results are train_many's models on the same seeds and
settings, scored on the held-out scenes as scikit-learn scores their segmentations; the model's own
seeds and root seed are not options of the command (the sweep's key its models)."""

import dataclasses
import re

import jax
import numpy as np
import pytest
import sklearn.metrics

from tokdyn import cli, train
from tokdyn.engine import sweep
from tokdyn.models import slots as slots_model
from tokdyn.studies import learned_sweep
from tokdyn.studies.learned_sweep import run_sweep, slots
from tokdyn.train import optim

TINY_MODEL = slots_model.Config(
    size=8, slots=3, iterations=2, slot_size=8, mlp_hidden=8, encoder_channels=(4,), encoder_kernel=3,
    decoder_hidden=8, batch_size=4, train=optim.Config(steps=2, steps_per_call=2, warmup=0, decay="constant"),
)  # fmt: skip
TINY = slots.Config(
    seeds=2, learning_rate="1e-3,1e-2", chunk_size=4, lanes=4, n_resamples=100, model=TINY_MODEL
)  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(config, directory) of the tiny sweep, run once (one chunk: 2 learning rates x 2 seeds)."""
    out = str(tmp_path_factory.mktemp("slots-sweep"))
    run_sweep(TINY, out, progress=False)
    return TINY, out


def sklearn_fg_ari(masks, labels) -> float:
    """The mean over scenes of scikit-learn's ARI on the objects' pixels (FG-ARI)."""
    masks, labels = np.asarray(masks).reshape(len(masks), -1), np.asarray(labels).reshape(len(masks), -1)
    return float(np.mean([sklearn.metrics.adjusted_rand_score(m[m > 0], lab[m > 0]) for m, lab in zip(masks, labels)]))


def test_a_model_is_scored_as_scikit_learn_scores_its_segmentation():
    cfg = TINY_MODEL
    key = jax.random.key(5)
    params = slots_model.init(jax.random.key(1), cfg)
    data = learned_sweep.slots_inputs(cfg)
    got = jax.jit(lambda p: learned_sweep.slots_evaluate(key, p, cfg, slots_model.Hparams(), data))(params)
    held = learned_sweep.slots_scenes(cfg, 1, learned_sweep.catalogue.SLOTS_HELD_OUT)
    assert data.shape == (learned_sweep.catalogue.SLOTS_POOL, 8, 8, 3)
    assert not np.array_equal(np.asarray(held.images), np.asarray(data[: len(held.images)]))  # held out
    labels, _ = slots_model.segment(key, params, cfg, held.images)  # the same slot noise per scene
    keys = [jax.random.fold_in(key, i) for i in range(len(held.images))]
    recon = np.stack([slots_model.apply(k, params, cfg, x[None]).recon[0] for k, x in zip(keys, held.images)])
    # two programs: a pixel on a last-bit tie between two slots may go either way
    np.testing.assert_allclose(got["fg_ari"], sklearn_fg_ari(held.masks, labels), atol=0.02)
    np.testing.assert_allclose(got["mse"], np.mean((recon - np.asarray(held.images)) ** 2), rtol=1e-4)
    assert 0 <= float(got["miou"]) <= 1


@pytest.mark.slow
def test_the_results_are_train_many_scored_as_scikit_learn_scores_them(swept):
    cfg, out = swept
    got = sweep.load(out).columns
    root = jax.random.key(cfg.root_seed)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(np.arange(cfg.seeds, dtype=np.uint32))
    keys, hps = train.grid(seed_keys, slots_model.Hparams(learning_rate=np.array([1e-3, 1e-2])))
    res = train.train_many(slots_model.trainer(cfg.model), learned_sweep.slots_inputs(cfg.model), keys, hps)
    held = learned_sweep.slots_scenes(cfg.model, 1, learned_sweep.catalogue.SLOTS_HELD_OUT)
    masks = np.asarray(held.masks).reshape(len(held.masks), -1)
    for i in range(4):  # model h * S + s: the grid's order, the seed fastest
        assert int(got["seed"][i]) == i % 2 and np.isclose(got["learning_rate"][i], (1e-3, 1e-2)[i // 2])
        k_eval = jax.random.fold_in(keys[i], learned_sweep.EVAL_SALT)
        params = slots_model.params_of(res.state, i)
        labels, _ = slots_model.segment(k_eval, params, cfg.model, held.images)
        # two programs: a pixel on a last-bit tie between two slots may go either way
        np.testing.assert_allclose(got["fg_ari"][i], sklearn_fg_ari(masks, labels), atol=0.02, err_msg=f"model {i}")
        assert got["skipped"][i] == 0 and np.isfinite(got["mse"][i]) and 0 <= got["miou"][i] <= 1


# the sweep itself (its training compiled for the tiny model): slow-only; the sweep machinery and
# its paired report are the learned sweep's, which tests/test_learned_sweep.py runs by default
@pytest.mark.slow
def test_the_report_pairs_the_learning_rates_by_seed(swept):
    cfg, out = swept
    result = learned_sweep.analysis(out, cfg)
    paired = result.tables["paired.csv"]
    assert list(paired["metric"]) == ["fg_ari", "miou", "mse"]
    cols = sweep.load(out).columns
    a, b = (np.asarray(cols["mse"][np.isclose(cols["learning_rate"], v)], np.float64) for v in (1e-2, 1e-3))
    np.testing.assert_allclose(paired["mean_diff"][2], np.mean(a - b), rtol=1e-6, atol=1e-9)


def test_the_models_own_seeds_are_not_options_the_sweeps_are():
    parser = cli.build_parser(["sweep", "slots"])
    args = parser.parse_args(["sweep", "slots", "--seeds", "7", "--root-seed", "3", "--size", "16", "--out", "x"])
    cfg = cli.config_from_args(slots.Config, args)
    assert (cfg.seeds, cfg.root_seed) == (7, 3)  # the sweep's
    assert (cfg.model.seeds, cfg.model.root_seed) == (slots.Config().model.seeds, 0)  # the model's: untouched
    assert cfg.model.size == 16


def test_bad_learning_rates_are_refused_before_anything_is_compiled(tmp_path):
    with pytest.raises(ValueError, match=re.escape("learning_rate must be in (0, inf]")):
        slots.main(dataclasses.replace(TINY, learning_rate="-1,1"), str(tmp_path / "out"), quiet=True)
    assert not (tmp_path / "out").exists()


def test_on_a_cpu_the_models_train_one_after_another_unless_told():
    """Slot Attention's cpu_lanes: XLA:CPU compiles its vmapped training too slowly, so a CPU takes
    one model at a time (the autoencoder keeps CPU_LANES); --lanes still decides."""
    from tokdyn.studies.learned_sweep import vtae

    if jax.default_backend() != "cpu":
        pytest.skip("the per-backend default of a CPU")
    assert slots.Config().batch() == 1 and dataclasses.replace(slots.Config(), lanes=8).batch() == 8
    assert vtae.Config().batch() == learned_sweep.CPU_LANES
