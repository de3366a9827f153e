"""tokdyn sweep grid-diffusion (tokdyn.studies.learned_sweep): the grid-diffusion study's models over
their learning rate and hybrid-loss weight x seeds. The traced grammar test is the host one; the
sweep's text scores are the study's (tokdyn.stats.text.text_metrics) on the same sentences; a model
is scored as the study's own functions score it (sample, decode, text metrics, held-out bound);
bad configurations are refused before anything is compiled; the report pairs the conditions by
seed (NumPy and SciPy on the chunks). With the full executions: the command end to end, its models
train_many's on the same seeds and settings."""

import dataclasses
import os
import re

import jax
import numpy as np
import pytest
import scipy.stats
from conftest import jax_compilations

from tokdyn import cli, train
from tokdyn.engine import sweep
from tokdyn.models import sequence, vtae
from tokdyn.models.vtae import corpus
from tokdyn.stats import text as text_stats
from tokdyn.studies import learned_sweep
from tokdyn.studies.learned_sweep import grammar, grid_diffusion, report
from tokdyn.train import optim

COMPILE = "/jax/core/compile/backend_compile_duration"
TINY_MODEL = sequence.Config(
    model="grid_d3pm_uniform", elements="grids", T=4, width=8, depth=1, heads=2, batch_size=8,
    train=optim.Config(steps=4, steps_per_call=2, warmup=0, decay="constant"),
)  # fmt: skip
RATES = (1e-3, 1e-2)
TINY = grid_diffusion.Config(
    seeds=3, learning_rate="1e-3,1e-2", lam="", chunk_size=4, lanes=2, n_resamples=200, model=TINY_MODEL
)
MODEL = grid_diffusion.Config.MODEL


def mutated(n, seed):
    """``n`` grammar sentences of 10 tokens, every other one changed at one position to another
    word (of any category, or an id outside the vocabulary), some cut short of their <eos>."""
    rng = np.random.default_rng(seed)
    s = grammar.sweep_sentences(10)[1][:n].copy()
    for i in range(0, n, 2):
        s[i, rng.integers(10)] = rng.integers(-1, 31)
    s[1::6, 5:] = rng.integers(3, 29, (len(s[1::6]), 5))  # no <eos> left in some
    return s


def test_the_traced_grammar_test_is_is_grammatical():
    s = mutated(256, 0)
    grammatical = jax.jit(corpus.grammatical)
    for x in (s, s[:, :7], s[:, :3], np.concatenate([s, s], 1)):
        got = np.asarray(grammatical(x))
        want = np.array([corpus.is_grammatical(r) for r in x])
        np.testing.assert_array_equal(got, want)
    assert 0.2 < np.mean(grammatical(s)) < 0.8  # both kinds present


def test_the_text_scores_are_the_studys_text_metrics():
    s = np.clip(mutated(128, 1), 0, 28)  # sampled ids lie in the vocabulary
    confidence = np.random.default_rng(2).uniform(0.5, 1.0, s.shape)
    got = jax.jit(grammar.score_text)(s, confidence)
    want = text_stats.text_metrics(
        s, s, 29, eos=corpus.EOS, confidence=confidence, allowed=corpus.grammar_bigrams(),
        grammatical=corpus.is_grammatical, n_resamples=2,
    )  # fmt: skip
    for name in grammar.TEXT_METRICS:
        np.testing.assert_allclose(float(got[name]), want[name], rtol=1e-6, err_msg=name)
    assert 0.2 < want["grammatical_sentences"] < 0.8 and 0.5 < want["grammatical_bigrams"] < 1.0
    assert set(jax.eval_shape(grammar.score_text, s)) == set(grammar.TEXT_METRICS[:2])  # no confidence: no valid


def untrained_autoencoder(config):
    """``(params, codes)`` of an untrained first stage: the scoring's path without its training
    (made on the host, also when asked for inside a traced program, as the trained one is)."""
    acfg = grammar.autoencoder_config(config)
    with jax.ensure_compile_time_eval():
        params = jax.tree_util.tree_map(np.asarray, vtae.init(jax.random.key(3), acfg))
        codes = vtae.encode(None, params, acfg, np.arange(29), deterministic=True).codes
        return params, np.asarray(codes, np.int32)


@pytest.mark.full  # (its training compiles for seconds; the default run checks the scores' parts)
@pytest.mark.parametrize("first_stage", ["untrained", "trained"])
def test_a_model_is_scored_as_the_studys_functions_score_it(first_stage, monkeypatch):
    cfg = TINY_MODEL
    if first_stage == "untrained":
        monkeypatch.setattr(grammar, "autoencoder", untrained_autoencoder)
    key = jax.random.key(5)
    held = grammar.sweep_data(cfg, 1)

    @jax.jit
    def evaluate(k):  # the sweep's evaluation, and the draws of the study's functions, in one program
        params = sequence.init(k, cfg)
        samples = sequence.sample(jax.random.fold_in(key, 0), params, cfg, grammar.SAMPLES)
        nll = sequence.nll_bound(jax.random.fold_in(key, 1), params, cfg, held)
        return MODEL.evaluate(key, params, cfg, MODEL.hparams, None), samples, nll

    got, samples, nll = evaluate(jax.random.key(1))
    assert set(got) == set(TINY.metrics()) == {"grammatical_sentences", "grammatical_bigrams", "valid", "nll"}
    # the study's way on the host: decode, text metrics, the mean held-out bound
    ae_params, codes = grammar.autoencoder(cfg)
    if first_stage == "trained":
        assert len({tuple(c) for c in codes}) == 29  # every token its own grid
    acfg = grammar.autoencoder_config(cfg)
    tokens, confidence = (np.asarray(a) for a in sequence.decode_grids(ae_params, acfg, np.asarray(samples)))
    want = text_stats.text_metrics(
        tokens, grammar.sweep_sentences(cfg.length)[0], 29, eos=corpus.EOS, confidence=confidence,
        allowed=corpus.grammar_bigrams(), grammatical=corpus.is_grammatical, n_resamples=2,
    )  # fmt: skip
    for name in grammar.TEXT_METRICS:  # float32 in the program, float64 on the host
        np.testing.assert_allclose(float(got[name]), want[name], rtol=1e-5, err_msg=name)
    assert 0 < want["grammatical_bigrams"] < 1  # an untrained model: neither extreme
    np.testing.assert_array_equal(held, codes[grammar.sweep_sentences(cfg.length)[1]])  # the tokens' grids
    np.testing.assert_allclose(float(got["nll"]), np.mean(np.asarray(nll, np.float64)), rtol=1e-5)


def test_the_metrics_follow_the_model_kind():
    """A token model decodes nothing (no valid grids); DDPM has a density, not a likelihood (no nll)."""
    of = lambda name: dataclasses.replace(TINY, model=dataclasses.replace(TINY_MODEL, model=name)).metrics()  # noqa: E731
    assert of("grid_d3pm_absorbing") == ("grammatical_sentences", "grammatical_bigrams", "valid", "nll")
    assert of("grid_ddpm") == ("grammatical_sentences", "grammatical_bigrams", "valid")
    assert of("token_ar") == of("token_d3pm_uniform") == ("grammatical_sentences", "grammatical_bigrams", "nll")


class Scored:
    """A stand-in run of the sweep's grid (no training): each metric a known function of the
    seed, the learning rate and the index, as the engine writes a sweep's chunks."""

    def __call__(self, key, learning_rate):
        u = jax.random.uniform(key, (3,))  # the seed's draw (common random numbers: shared by conditions)
        return {
            "grammatical_sentences": u[0] + 10 * learning_rate,
            "grammatical_bigrams": u[1],
            "valid": u[2] * learning_rate,
            "nll": 100 * u[0] - learning_rate,
            "skipped": 0.0 * u[0],
        }


def test_the_report_pairs_the_conditions_by_seed(tmp_path):
    cfg = dataclasses.replace(TINY, seeds=8, baseline="learning_rate=0.01")
    out = str(tmp_path)
    sweep.run(Scored(), cfg.grid(), key=jax.random.key(0), common_random_numbers=True, out=out, progress=False)
    result = report.analysis(out, cfg)
    cols = sweep.load(out).columns
    lr = np.asarray(cols["learning_rate"], np.float64)
    table, paired = result.tables["conditions.csv"], result.tables["paired.csv"]
    assert result.data["baseline"] == 1 and list(paired["metric"]) == list(cfg.metrics())
    for j, m in enumerate(cfg.metrics()):
        a, b = (np.asarray(cols[m][np.isclose(lr, v)], np.float64) for v in RATES)  # seed order in both
        np.testing.assert_allclose(table[f"{m}_mean"], [a.mean(), b.mean()], rtol=1e-6)
        np.testing.assert_allclose(paired["mean_diff"][j], np.mean(a - b), rtol=1e-6, atol=1e-9)
        ref = scipy.stats.ttest_rel(a, b)
        np.testing.assert_allclose([paired["t"][j], paired["p"][j]], [ref.statistic, ref.pvalue], rtol=1e-6)
    assert "learning_rate=0.01 (baseline)" in result.data["report"]


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(learning_rate="-1,1"), "learning_rate must be in (0, inf]"),
        (dict(lam="-1"), "lam must be in [0, inf]"),
        (dict(model=dataclasses.replace(TINY_MODEL, cells=8)), "cells must be a square"),
        (dict(model=dataclasses.replace(TINY_MODEL, cells=4, colours=2)), "fewer than the 29 tokens"),
        (dict(model=dataclasses.replace(TINY_MODEL, vocab_size=30)), "vocab_size must be 29"),
        (dict(model=dataclasses.replace(TINY_MODEL, model="grid_gan")), "model must be one of"),
        (dict(seeds=0), "seeds must be an int >= 1"),
    ],
)
def test_bad_configurations_are_refused_before_anything_is_compiled(changes, words, tmp_path):
    with jax_compilations() as events, pytest.raises(ValueError, match=re.escape(words)):
        grid_diffusion.main(dataclasses.replace(TINY, **changes), str(tmp_path / "out"), quiet=True)
    assert COMPILE not in events and not (tmp_path / "out").exists()


def test_the_vocabulary_is_the_grammars_not_an_option():
    parser = cli.build_parser(["sweep", "grid-diffusion"])
    args = parser.parse_args(["sweep", "grid-diffusion", "--cells", "16", "--lam", "0.1", "--out", "x"])
    cfg = cli.config_from_args(grid_diffusion.Config, args)
    assert cfg.model.cells == 16 and cfg.axes() == (("learning_rate", (1e-3, 2e-3, 4e-3)), ("lam", (0.1,)))
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", "grid-diffusion", "--vocab-size", "30", "--out", "x"])


def test_on_a_cpu_one_model_at_a_time_and_the_quick_shapes_rate():
    quick, default = grid_diffusion.Config.quick(), grid_diffusion.Config()
    if jax.default_backend() == "cpu":
        assert default.batch() == 1 and dataclasses.replace(default, lanes=8).batch() == 8
    assert quick.estimate().work["training"] == pytest.approx(quick.runs() * 100 / MODEL.quick_rate)
    assert default.estimate().work["training"] == pytest.approx(default.runs() * 3000 / MODEL.rate)


@pytest.mark.full
def test_the_command_runs_and_its_models_are_train_many_s(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "grid-diffusion", "--seeds", "2", "--learning-rate", "1e-3,1e-2", "--lam", "", "--T", "4",
            "--width", "8", "--depth", "1", "--heads", "2", "--batch-size", "8", "--steps", "4",
            "--steps-per-call", "2", "--warmup", "0", "--decay", "constant", "--lanes", "2", "--n-resamples", "50",
            "--out", out, "--quiet", "--no-cache"]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert {"conditions.csv", "paired.csv", "report.md", "manifest.json"} <= set(os.listdir(out))
    cfg = dataclasses.replace(TINY, seeds=2, n_resamples=50)
    got = sweep.load(str(out)).columns
    root = jax.random.key(cfg.root_seed)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(np.arange(cfg.seeds, dtype=np.uint32))
    keys, hps = train.grid(seed_keys, dataclasses.replace(MODEL.hparams, learning_rate=np.array(RATES)))
    res = train.train_many(MODEL.trainer(cfg.model), MODEL.inputs(cfg.model), keys, hps)
    want = jax.vmap(cfg.task().outputs)(keys, res.state.hparams, res.state)
    np.testing.assert_array_equal(got["seed"], np.tile(np.arange(cfg.seeds), 2))
    for name in cfg.metrics() + ("skipped",):  # two programs: a sample on a last-bit tie may differ
        a, b = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
        np.testing.assert_allclose(a, b, rtol=1e-3 if name == "nll" else 0, atol=0 if name == "nll" else 0.02)
    # the trained models scored the study's way on the host: sample, decode, text metrics, held-out bound
    ae_params, codes = grammar.autoencoder(cfg.model)
    held = codes[grammar.sweep_sentences(cfg.model.length)[1]]
    for i in range(len(keys)):
        params = jax.tree_util.tree_map(lambda a, i=i: a[i], res.state.params)
        k_eval = jax.random.fold_in(keys[i], learned_sweep.EVAL_SALT)
        samples = np.asarray(sequence.sample(jax.random.fold_in(k_eval, 0), params, cfg.model, grammar.SAMPLES))
        decoded = sequence.decode_grids(ae_params, grammar.autoencoder_config(cfg.model), samples)
        ref = text_stats.text_metrics(
            np.asarray(decoded[0]), grammar.sweep_sentences(cfg.model.length)[0], 29, eos=corpus.EOS,
            confidence=np.asarray(decoded[1]), allowed=corpus.grammar_bigrams(), grammatical=corpus.is_grammatical,
            n_resamples=2,
        )  # fmt: skip
        for name in grammar.TEXT_METRICS:
            np.testing.assert_allclose(got[name][i], ref[name], atol=0.02, err_msg=f"{name} of model {i}")
        nll = np.mean(np.asarray(sequence.nll_bound(jax.random.fold_in(k_eval, 1), params, cfg.model, held)))
        np.testing.assert_allclose(got["nll"][i], nll, rtol=1e-3, err_msg=f"nll of model {i}")
    assert learned_sweep.MODELS["grid-diffusion"] is MODEL
