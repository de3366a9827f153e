"""Generative models over grids and tokens (tokdyn.models.sequence), the grammar's language, the
text metrics (against SciPy and hand counts); the grid-diffusion study itself is tested in
tests/test_grid_diffusion_runner.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from tokdyn import diffusion, train
from tokdyn.models import sequence
from tokdyn.models.vtae import corpus
from tokdyn.stats import text as text_stats
from tokdyn.studies import grid_diffusion


def test_grammar_language_is_what_the_corpus_produces():
    c = corpus.grammar_corpus(jax.random.key(0), 4000)
    sents = corpus.sentences(c.tokens, 12)
    assert all(corpus.is_grammatical(s) for s in sents)
    allowed = corpus.grammar_bigrams()
    seen = np.zeros_like(allowed)
    for s in text_stats.cut(sents, corpus.EOS):
        seen[s[:-1], s[1:]] = True
    np.testing.assert_array_equal(seen, allowed)  # every allowed bigram occurs, no other does
    vocab = c.vocab
    ids = [vocab.index(w) for w in "the big cat sees a dog <eos>".split()]
    assert corpus.is_grammatical(ids + [0, 0])
    assert not corpus.is_grammatical([vocab.index(w) for w in "the cat big sees a dog <eos>".split()])
    assert not corpus.is_grammatical(ids[:-1])  # no <eos>
    cut = corpus.sentences(np.array([4, 5, 2, 6, 2, 7]), 2)
    np.testing.assert_array_equal(cut, [[4, 5], [6, 2]])  # cut to 2; the unterminated tail dropped


def test_text_metrics_against_hand_counts_and_scipy():
    V, eos = 4, 3
    ref = np.array([[0, 1, 3, 2], [0, 2, 3, 3], [1, 1, 3, 0]])  # cut: [0 1 3], [0 2 3], [1 1 3]
    samples = np.array([[0, 1, 3, 0], [2, 2, 2, 2]])  # cut: [0 1 3], [2 2 2 2] (no eos)
    allowed = np.zeros((V, V), bool)
    allowed[0, 1] = allowed[1, 3] = allowed[0, 2] = allowed[2, 3] = allowed[1, 1] = True
    conf = np.array([[0.95, 0.99, 0.5, 0.91], [0.2, 0.95, 0.95, 0.95]])
    m = text_stats.text_metrics(
        samples, ref, V, eos=eos, confidence=conf, allowed=allowed, grammatical=lambda s: s[-1] == eos, n_resamples=20
    )
    p1 = np.bincount([0, 1, 3, 2, 2, 2, 2], minlength=V)
    q1 = np.bincount([0, 1, 3, 0, 2, 3, 1, 1, 3], minlength=V) + text_stats.SMOOTHING
    assert m["unigram_kl"] == pytest.approx(sps.entropy(p1, q1))
    big = lambda pairs: np.bincount([a * V + b for a, b in pairs], minlength=V * V)
    p2 = big([(0, 1), (1, 3), (2, 2), (2, 2), (2, 2)])
    q2 = big([(0, 1), (1, 3), (0, 2), (2, 3), (1, 1), (1, 3)]) + text_stats.SMOOTHING
    assert m["bigram_kl"] == pytest.approx(sps.entropy(p2, q2))
    assert m["valid"] == pytest.approx(6 / 8)
    assert m["grammatical_bigrams"] == pytest.approx(2 / 5)
    assert m["grammatical_sentences"] == pytest.approx(0.5)
    assert m["distinct_1"] == pytest.approx(4 / 7) and m["distinct_2"] == pytest.approx(3 / 5)
    assert m["novel"] == pytest.approx(0.5)
    assert m["valid_low"] <= m["valid"] <= m["valid_high"]


def _grid_data(n=256, length=2, cells=4, colours=3, seed=0):
    # a structured distribution: every grid is one of 4 fixed grids (``seed`` draws the sequences)
    protos = np.random.default_rng(0).integers(0, colours, (4, cells))
    return protos[np.random.default_rng(seed + 1).integers(0, 4, (n, length))].astype(np.int32)


@pytest.mark.full
def test_trained_denoisers_beat_predicting_zero_and_a_nan_model_is_reported():
    data = _grid_data()
    cfg = sequence.Config(
        model="grid_ddpm",
        length=2,
        cells=4,
        colours=3,
        T=50,
        architecture="mlp",
        width=16,
        depth=1,
        train=train.Config(steps=150, steps_per_call=50, warmup=10, final_fraction=0.1),
        batch_size=32,
    )
    hp = sequence.Hparams(learning_rate=jnp.array([3e-3, 1e38]), lam=jnp.array([0.01, 0.01]))
    keys = jax.random.split(jax.random.key(0), 2)
    res = train.train_many(sequence.trainer(cfg), sequence.inputs(cfg, data), keys, hp)
    assert [i for i, *_ in train.nan_report(res.state)] == [1]  # the huge learning rate blows up model 1 only
    assert sequence.trainer(cfg) is sequence.trainer(cfg)
    # model 0 beside a healthy model 1 (the same compiled program: the settings are traced values)
    healthy = sequence.Hparams(learning_rate=jnp.array([3e-3, 3e-3]), lam=jnp.array([0.01, 0.01]))
    curves = train.train_many(sequence.trainer(cfg), sequence.inputs(cfg, data), keys, healthy).curves
    assert np.all(np.isfinite(curves["loss"]))
    np.testing.assert_allclose(res.curves["loss"][0], curves["loss"][0], rtol=2e-4)  # untouched by model 1
    params = jax.tree_util.tree_map(lambda a: a[0], res.state.params)
    held = jnp.asarray(_grid_data(n=512, seed=1))
    mse = lambda p: float(sequence.loss_fn(jax.random.key(5), p, cfg, sequence.Hparams(), held)[0])
    assert (
        mse(params) < 0.8 < 0.95 < mse(sequence.init(jax.random.key(9), cfg))
    )  # predicting eps = 0 costs E[eps^2] = 1
    # D3PM: the trained model's bound term is below that of zero logits (a uniform x_0 guess)
    dcfg = sequence.Config(
        model="grid_d3pm_absorbing",
        length=2,
        cells=4,
        colours=3,
        T=20,
        architecture="mlp",
        width=16,
        depth=1,
        train=train.Config(steps=150, steps_per_call=50, warmup=10, final_fraction=0.1),
        batch_size=32,
    )
    dp = sequence.train(jax.random.key(2), dcfg, sequence.Hparams(learning_rate=3e-3), data)[0].params
    proc = dcfg.process()
    k_t, k_x = jax.random.split(jax.random.key(6))
    t = jax.random.randint(k_t, (512,), 1, dcfg.T + 1)
    xt = jax.vmap(lambda k, x, s: diffusion.q_sample_discrete(k, proc, x, s))(jax.random.split(k_x, 512), held, t)
    vb = lambda logits: float(
        jnp.mean(jax.vmap(lambda x, y, s, lg: diffusion.hybrid_loss(proc, x, y, s, lg, 0.0)[1])(held, xt, t, logits))
    )
    assert vb(sequence.apply(dp, dcfg, xt, t)) < 0.5 * vb(jnp.zeros(held.shape + (3,)))


def test_bad_input_is_refused_before_compiling():
    cfg = sequence.Config(
        model="grid_d3pm_uniform", length=2, cells=4, colours=3, T=5, train=train.Config(steps=10, steps_per_call=5)
    )
    good = _grid_data(n=8)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2, 4\)"):
        sequence.train(jax.random.key(0), cfg, None, good[:, :, :3])
    with pytest.raises(ValueError, match=r"data values must lie in \[0, colours=3\)"):
        sequence.train(jax.random.key(0), cfg, None, good + 1)
    with pytest.raises(TypeError, match="data must hold integer colours"):
        sequence.train(jax.random.key(0), cfg, None, good.astype(np.float32))
    with pytest.raises(ValueError, match="length must be an int >= 1"):
        sequence.Config(length=0).validate()
    with pytest.raises(ValueError, match="model must be one of"):
        sequence.Config(model="grid_gan").validate()
    with pytest.raises(ValueError, match="T must be an int >= 2"):
        sequence.Config(T=1).validate()
    with pytest.raises(ValueError, match="sampler 'ddim' needs model='grid_ddpm'"):
        sequence.sample(jax.random.key(0), {}, cfg, 4, "ddim")
    with pytest.raises(ValueError, match=r"colours must have shape \(n, L, P=9\)"):
        sequence.decode_grids({}, grid_diffusion.Config().autoencoder(), np.zeros((2, 3, 4), np.int32))
    with pytest.raises(ValueError, match=r"colours must lie in \[0, 3\) to match the autoencoder"):
        sequence.decode_grids({}, grid_diffusion.Config().autoencoder(), np.full((2, 3, 9), 3, np.int32))
    with pytest.raises(ValueError, match="fewer than the 29 tokens"):
        grid_diffusion.Config(grid=2, colours=2).validate()


def test_grammar_entropy_equals_the_mean_log_probability_of_its_sentences():
    vocab, cats = corpus.grammar_vocab()
    sents = text_stats.cut(corpus.sentences(corpus.grammar_corpus(jax.random.key(3), 20_000).tokens, 12), corpus.EOS)
    n_words = {c: len(w) for c, w in corpus.GRAMMAR_CATEGORIES.items()}
    # -log p(s): each word uniform in its category, each of the 4 optional slots present or not w.p. 1/2
    nlp = np.array([sum(np.log(n_words[cats[vocab[i]]]) for i in s[:-1]) + 4 * np.log(2) for s in sents])
    assert abs(nlp.mean() - corpus.grammar_entropy()) < 4 * nlp.std() / np.sqrt(nlp.size)


def test_nll_of_the_autoregressive_model_is_its_summed_cross_entropy():
    cfg = sequence.Config(
        model="token_ar", length=5, vocab_size=7, width=16, depth=1, train=train.Config(steps=10, steps_per_call=5)
    )
    params = jax.jit(sequence.init, static_argnums=1)(jax.random.key(0), cfg)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 7, (3, 5)), jnp.int32)
    apply = jax.jit(sequence.apply, static_argnums=1)  # one program, not op by op
    logits = apply(params, cfg, jnp.concatenate([jnp.full((3, 1), 7), x[:, :-1]], 1), jnp.zeros(3, jnp.int32))
    want = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(x)[..., None], -1)[..., 0].sum(1)
    np.testing.assert_allclose(sequence.nll_bound(jax.random.key(1), params, cfg, x), want, rtol=1e-5)
    with pytest.raises(ValueError, match="has a density"):
        sequence.nll_bound(jax.random.key(1), params, sequence.Config(model="grid_ddpm"), x)
