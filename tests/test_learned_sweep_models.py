"""tokdyn sweep slots | iodine | savi (tokdyn.studies.learned_sweep): the object-centric models over
their learning rate x seeds, Slot Attention and IODINE on sprite scenes, SAVi on sprite videos. Each
model is scored on its held-out data as scikit-learn scores its segmentation (made by the model's
own segment function); the sweep's models are train_many's on the same seeds and settings; bad
learning rates are refused before anything is compiled; the model's own seeds and root seed are
not options of the command (the sweep's key its models)."""

import dataclasses
import re

import jax
import numpy as np
import pytest
import sklearn.metrics
from conftest import jax_compilations

from tokdyn import cli, train
from tokdyn.engine import sweep
from tokdyn.models import iodine as iodine_model
from tokdyn.models import savi as savi_model
from tokdyn.models import slots as slots_model
from tokdyn.studies import learned_sweep
from tokdyn.studies.learned_sweep import iodine, run_sweep, savi, slots, sprites
from tokdyn.train import optim

COMPILE = "/jax/core/compile/backend_compile_duration"
STEPS = optim.Config(steps=2, steps_per_call=2, warmup=0, decay="constant")
TINY_MODELS = {
    "slots": slots_model.Config(
        size=8, slots=3, iterations=2, slot_size=8, mlp_hidden=8, encoder_channels=(4,), encoder_kernel=3,
        decoder_hidden=8, batch_size=4, train=STEPS,
    ),
    "iodine": iodine_model.Config(
        size=8, slots=3, latent_size=4, iterations=1, decoder_hidden=8, refine_channels=(4,), refine_hidden=8,
        batch_size=4, train=STEPS,
    ),
    "savi": savi_model.Config(
        frames=2, size=8, slots=3, slot_size=8, mlp_hidden=8, predictor_hidden=8, predictor_heads=2,
        encoder_channels=(4,), decoder_hidden=8, batch_size=4, train=STEPS,
    ),
}  # fmt: skip
COMMANDS = {"slots": slots, "iodine": iodine, "savi": savi}
MODELS = {"slots": slots_model, "iodine": iodine_model, "savi": savi_model}
RATES = {"slots": (1e-3, 1e-2), "iodine": (1e-3, 1e-2), "savi": (1e-3, 1e-2)}


def tiny(name):
    """The tiny sweep of model ``name``: 2 learning rates x 2 seeds, one chunk."""
    rates = ",".join(str(r) for r in RATES[name])
    return COMMANDS[name].Config(
        seeds=2, learning_rate=rates, chunk_size=4, lanes=4, n_resamples=100, model=TINY_MODELS[name]
    )


@pytest.fixture(scope="module", params=sorted(COMMANDS))
def swept(request, tmp_path_factory):
    """(name, config, directory) of the tiny sweep of each model, run once (one chunk: 2 learning
    rates x 2 seeds)."""
    out = str(tmp_path_factory.mktemp(f"{request.param}-sweep"))
    cfg = tiny(request.param)
    run_sweep(cfg, out, progress=False)
    return request.param, cfg, out


def sklearn_fg_ari(masks, labels) -> float:
    """The mean over scenes (or clips, each taken whole) of scikit-learn's ARI on the objects'
    pixels (FG-ARI)."""
    masks, labels = np.asarray(masks).reshape(len(masks), -1), np.asarray(labels).reshape(len(masks), -1)
    return float(np.mean([sklearn.metrics.adjusted_rand_score(m[m > 0], lab[m > 0]) for m, lab in zip(masks, labels)]))


def sklearn_frame_ari(masks, labels) -> float:
    """The mean over clips of the mean over frames with two or more foreground pixels of
    scikit-learn's ARI on the objects' pixels."""
    per_clip = []
    for clip, pred in zip(np.asarray(masks), np.asarray(labels)):
        scores = [
            sklearn.metrics.adjusted_rand_score(m[m > 0], lab[m > 0])
            for m, lab in zip(clip.reshape(len(clip), -1), pred.reshape(len(pred), -1))
            if np.sum(m > 0) >= 2
        ]
        per_clip.append(np.mean(scores) if scores else 0.0)
    return float(np.mean(per_clip))


def held_out(name, cfg):
    """Model ``name``'s held-out scenes or clips."""
    if name == "savi":
        return sprites.sweep_videos(cfg, 1, sprites.VIDEOS_HELD_OUT)
    return sprites.sweep_scenes(cfg, 1, sprites.SCENES_HELD_OUT)


def reference(name, key, params, cfg, held):
    """``(labels, recon)`` of the held-out data by the model's own public functions: its
    ``segment`` (item i's noise from ``fold_in(key, i)``) and its ``apply`` one item at a time."""
    model = MODELS[name]
    labels = np.asarray(model.segment(key, params, cfg, held.images)[0])
    keys = [jax.random.fold_in(key, i) for i in range(len(held.images))]
    recon = np.stack([model.apply(k, params, cfg, x[None]).recon[0] for k, x in zip(keys, held.images)])
    return labels, recon


def check_scores(name, got, held, labels, recon, msg=""):
    """``got`` (the sweep's scores of one model) against scikit-learn's on ``labels`` and NumPy's
    reconstruction error of ``recon``."""
    masks = np.asarray(held.masks)
    # two programs: a pixel on a last-bit tie between two slots may go either way
    if name == "savi":
        np.testing.assert_allclose(got["video_ari"], sklearn_fg_ari(masks, labels), atol=0.02, err_msg=msg)
        np.testing.assert_allclose(got["frame_ari"], sklearn_frame_ari(masks, labels), atol=0.02, err_msg=msg)
    else:
        np.testing.assert_allclose(got["fg_ari"], sklearn_fg_ari(masks, labels), atol=0.02, err_msg=msg)
        assert 0 <= float(got["miou"]) <= 1, msg
    want = np.mean((recon - np.asarray(held.images, np.float64)) ** 2)
    np.testing.assert_allclose(got["mse"], want, rtol=1e-4, err_msg=msg)


@pytest.mark.parametrize(
    "name",
    # Slot Attention's in the default run; IODINE's and SAVi's (their scores: the same score_scenes,
    # and score_videos) with the full executions (-m full)
    [n if n == "slots" else pytest.param(n, marks=pytest.mark.full) for n in sorted(COMMANDS)],
)
def test_a_model_is_scored_as_scikit_learn_scores_its_segmentation(name):
    cfg, model = TINY_MODELS[name], COMMANDS[name].Config.MODEL
    key = jax.random.key(5)
    params = jax.jit(lambda k: MODELS[name].init(k, cfg))(jax.random.key(1))
    data = jax.eval_shape(lambda: model.inputs(cfg))  # not read by the evaluation
    draw = sprites.sweep_videos if name == "savi" else sprites.sweep_scenes

    @jax.jit
    def evaluate(p):  # with the held-out data and the pool's first items: one program
        return model.evaluate(key, p, cfg, model.hparams, data), held_out(name, cfg), draw(cfg, 0, 4)

    got, held, first = evaluate(params)
    assert set(got) == set(model.metrics)
    pool = sprites.VIDEO_POOL if name == "savi" else sprites.SCENE_POOL
    assert data.shape == (pool, *held.images.shape[1:])
    assert not np.array_equal(np.asarray(held.images[:4]), np.asarray(first.images))  # held out
    check_scores(name, got, held, *reference(name, key, params, cfg, held))


@pytest.mark.slow
def test_the_results_are_train_many_scored_as_scikit_learn_scores_them(swept):
    name, cfg, out = swept
    got = sweep.load(out).columns
    root = jax.random.key(cfg.root_seed)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(np.arange(cfg.seeds, dtype=np.uint32))
    keys, hps = train.grid(seed_keys, dataclasses.replace(cfg.MODEL.hparams, learning_rate=np.array(RATES[name])))
    res = train.train_many(cfg.MODEL.trainer(cfg.model), cfg.MODEL.inputs(cfg.model), keys, hps)
    held = held_out(name, cfg.model)
    for i in range(4):  # model h * S + s: the grid's order, the seed fastest
        assert int(got["seed"][i]) == i % 2 and np.isclose(got["learning_rate"][i], RATES[name][i // 2])
        k_eval = jax.random.fold_in(keys[i], learned_sweep.EVAL_SALT)
        params = slots_model.params_of(res.state, i)
        one = {k: got[k][i] for k in cfg.MODEL.metrics}
        check_scores(name, one, held, *reference(name, k_eval, params, cfg.model, held), msg=f"model {i}")
        assert got["skipped"][i] == 0


@pytest.mark.slow
def test_the_report_pairs_the_learning_rates_by_seed(swept):
    name, cfg, out = swept
    result = learned_sweep.analysis(out, cfg)
    paired = result.tables["paired.csv"]
    assert list(paired["metric"]) == list(cfg.MODEL.metrics)
    cols = sweep.load(out).columns
    a, b = (np.asarray(cols["mse"][np.isclose(cols["learning_rate"], v)], np.float64) for v in RATES[name][::-1])
    mse = list(paired["metric"]).index("mse")
    np.testing.assert_allclose(paired["mean_diff"][mse], np.mean(a - b), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_models_own_seeds_are_not_options_the_sweeps_are(name):
    command = COMMANDS[name]
    parser = cli.build_parser(["sweep", name])
    args = parser.parse_args(["sweep", name, "--seeds", "7", "--root-seed", "3", "--size", "16", "--out", "x"])
    cfg = cli.config_from_args(command.Config, args)
    assert (cfg.seeds, cfg.root_seed) == (7, 3)  # the sweep's
    assert (cfg.model.seeds, cfg.model.root_seed) == (command.Config().model.seeds, 0)  # the model's: untouched
    assert cfg.model.size == 16


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_bad_learning_rates_are_refused_before_anything_is_compiled(name, tmp_path):
    cfg = dataclasses.replace(tiny(name), learning_rate="-1,1")
    with jax_compilations() as events, pytest.raises(ValueError, match=re.escape("learning_rate must be in (0, inf]")):
        COMMANDS[name].main(cfg, str(tmp_path / "out"), quiet=True)
    assert COMPILE not in events and not (tmp_path / "out").exists()


def test_on_a_cpu_the_models_train_one_after_another_unless_told():
    """Slot Attention's, IODINE's and SAVi's cpu_lanes: XLA:CPU compiles their vmapped training
    too slowly, so a CPU takes one model at a time (the autoencoder keeps CPU_LANES); --lanes still
    decides."""
    from tokdyn.studies.learned_sweep import vtae

    if jax.default_backend() != "cpu":
        pytest.skip("the per-backend default of a CPU")
    for command in COMMANDS.values():
        assert command.Config().batch() == 1 and dataclasses.replace(command.Config(), lanes=8).batch() == 8
    assert vtae.Config().batch() == learned_sweep.CPU_LANES


@pytest.mark.parametrize("name", ["slots", "iodine", "savi"])
def test_the_time_estimate_takes_the_quick_shapes_rate_for_the_quick_preset(name):
    """Measured on two CPU cores, Slot Attention trains ~4x, IODINE ~30x and SAVi ~40x faster at
    the quick shape than at the default one: the quick preset's estimate uses the model's
    quick_rate, any other shape its rate."""
    quick, default = COMMANDS[name].Config.quick(), COMMANDS[name].Config()
    m = quick.MODEL
    assert quick.estimate().work["training"] == pytest.approx(quick.runs() * 100 / m.quick_rate)
    assert default.estimate().work["training"] == pytest.approx(default.runs() * 1000 / m.rate)
    bigger = dataclasses.replace(quick, model=dataclasses.replace(quick.model, size=32))
    assert bigger.estimate().work["training"] == pytest.approx(bigger.runs() * 100 / m.rate)
