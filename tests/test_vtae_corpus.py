"""Corpora and PPMI/SVD embeddings against NumPy/SciPy references, and bad input."""

import jax
import numpy as np
import pytest
import scipy.sparse.linalg
import scipy.stats

from tokdyn.models.vtae import corpus


def np_cooc(tokens, V, window):
    c = np.zeros((V, V))
    for i in range(len(tokens)):
        for d in range(1, window + 1):
            if i + d < len(tokens):
                a, b = tokens[i], tokens[i + d]
                c[a, b] += 1
                c[b, a] += 1
    return c


def np_ppmi(c, alpha):
    total = c.sum()
    pi = c.sum(1) / total
    col = c.sum(0) ** alpha
    pj = col / col.sum()
    out = np.zeros_like(c)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            if c[i, j] > 0 and pi[i] > 0 and pj[j] > 0:
                out[i, j] = max(0.0, np.log(c[i, j] / total / (pi[i] * pj[j])))
    return out


@pytest.mark.parametrize("window", [1, 3])
def test_cooccurrence_and_ppmi_match_numpy(window):
    rng = np.random.default_rng(window)
    tokens = rng.integers(0, 7, size=120)
    tokens[tokens == 6] = 5  # type 6 never occurs: zero row
    c = np.asarray(corpus.cooccurrence(tokens, 7, window))
    ref = np_cooc(tokens, 7, window)
    np.testing.assert_array_equal(c, ref)
    np.testing.assert_allclose(np.asarray(corpus.ppmi(c, alpha=0.75)), np_ppmi(ref, 0.75), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(corpus.ppmi(c, alpha=1.0)), np_ppmi(ref, 1.0), rtol=1e-5, atol=1e-6)
    # the kernels inside a user's jit, with traced tokens and alpha
    inside = jax.jit(lambda t, a: corpus.ppmi(corpus.cooccurrence(t, 7, window), alpha=a))(tokens, 0.75)
    np.testing.assert_allclose(np.asarray(inside), np_ppmi(ref, 0.75), rtol=1e-5, atol=1e-6)


def test_ppmi_embeddings_match_scipy_svd():
    corp = corpus.grammar_corpus(jax.random.key(3), 500)
    V, k = corp.vocab_size, 5
    e = np.asarray(corpus.ppmi_embeddings(corp.tokens, V, k, window=2, power=1.0, normalize=False))
    m = np_ppmi(np_cooc(corp.tokens, V, 2), 0.75)
    u, s, _ = scipy.sparse.linalg.svds(m, k=k)
    order = np.argsort(-s)
    ref = u[:, order] * s[order]
    # Singular vectors are defined up to sign: compare column by column.
    for j in range(k):
        sgn = np.sign(ref[:, j] @ e[:, j])
        np.testing.assert_allclose(e[:, j], sgn * ref[:, j], atol=2e-4 * s.max())
    en = np.asarray(corpus.ppmi_embeddings(corp.tokens, V, k))
    occurring = corp.counts > 0
    np.testing.assert_allclose(np.linalg.norm(en[occurring], axis=1), 1.0, rtol=1e-5)


def test_grammar_embeddings_group_categories():
    corp = corpus.grammar_corpus(jax.random.key(0), 3000)
    e = np.asarray(corpus.ppmi_embeddings(corp.tokens, corp.vocab_size, 8))
    sim = e @ e.T
    for cat in ("animal", "colour", "action"):
        ids = [corp.vocab.index(w) for w in corpus.GRAMMAR_CATEGORIES[cat]]
        others = [i for i, w in enumerate(corp.vocab) if corp.categories.get(w) not in (cat, None)]
        within = sim[np.ix_(ids, ids)][~np.eye(len(ids), dtype=bool)].mean()
        between = sim[np.ix_(ids, others)].mean()
        assert within > between + 0.3, (cat, within, between)


def test_grammar_corpus_structure():
    corp = corpus.grammar_corpus(jax.random.key(1), 400)
    words = [corp.vocab[t] for t in corp.tokens]
    sentences = " ".join(words).split("<eos>")[:-1]
    assert len(sentences) == 400
    for s in sentences[:50]:
        w = s.split()
        assert w[0] in ("the", "a") and 5 <= len(w) <= 9
        cats = [corp.categories[x] for x in w]
        assert cats.count("animal") == 2 and cats.count("action") == 1
    np.testing.assert_array_equal(corp.counts, np.bincount(corp.tokens, minlength=corp.vocab_size))
    # optional slots present about half the time: 400 sentences x 2 phrases, binomial(800, 1/2)
    n_size = sum(corp.counts[corp.vocab.index(w)] for w in corpus.GRAMMAR_CATEGORIES["size"])
    assert scipy.stats.binomtest(int(n_size), 800, 0.5).pvalue > 1e-4


def test_zipf_corpus_frequencies():
    c = corpus.zipf_corpus(jax.random.key(0), 20, 200_000, exponent=1.1)
    p = corpus.zipf_probs(20, 1.1)
    res = scipy.stats.chisquare(c.counts, p * c.counts.sum())
    assert res.pvalue > 1e-4
    np.testing.assert_allclose(c.weights("occurrence"), c.counts / c.counts.sum(), rtol=1e-6)
    np.testing.assert_allclose(c.weights("type"), np.full(20, 1 / 20), rtol=1e-6)


def test_text_corpus(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("the cat sat\n\nthe dog sat on the mat\nzebra\n")
    c = corpus.text_corpus(str(f))
    assert c.vocab[:3] == ("<pad>", "<unk>", "<eos>")
    assert c.vocab[3:6] == ("the", "sat", "cat")
    words = [c.vocab[t] for t in c.tokens]
    assert words == "the cat sat <eos> the dog sat on the mat <eos> zebra <eos>".split()
    c2 = corpus.text_corpus(str(f), max_vocab=5)
    assert c2.vocab == ("<pad>", "<unk>", "<eos>", "the", "sat")
    assert [c2.vocab[t] for t in c2.tokens][:3] == ["the", "<unk>", "sat"]
    c3 = corpus.text_corpus(str(f), min_count=2)
    assert set(c3.vocab[3:]) == {"the", "sat"}


def test_load_embeddings(tmp_path):
    arr = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.save(tmp_path / "e.npy", arr)
    np.testing.assert_array_equal(np.asarray(corpus.load_embeddings(str(tmp_path / "e.npy"), 6)), arr)
    with pytest.raises(ValueError, match="vocab_size=5"):
        corpus.load_embeddings(str(tmp_path / "e.npy"), 5)
    bad = arr.copy()
    bad[0, 0] = np.nan
    np.save(tmp_path / "b.npy", bad)
    with pytest.raises(ValueError, match="embeddings must be finite"):
        corpus.load_embeddings(str(tmp_path / "b.npy"))
    with pytest.raises(ValueError, match="could not be read"):
        corpus.load_embeddings(str(tmp_path / "missing.npy"))


def test_bad_input(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    with pytest.raises(ValueError, match="empty corpus"):
        corpus.text_corpus(str(empty))
    with pytest.raises(ValueError, match="could not be read"):
        corpus.text_corpus(str(tmp_path / "nope.txt"))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\xc3")
    with pytest.raises(ValueError, match="could not be read"):
        corpus.text_corpus(str(binary))
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2, got 1"):
        corpus.zipf_corpus(jax.random.key(0), 1, 10)
    with pytest.raises(ValueError, match="n_tokens"):
        corpus.zipf_corpus(jax.random.key(0), 5, 0)
    with pytest.raises(ValueError, match="n_sentences"):
        corpus.grammar_corpus(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="tokens must be a 1-D array"):
        corpus.cooccurrence(np.zeros(1, int), 3)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, vocab_size=3\)"):
        corpus.cooccurrence(np.array([0, 1, 5]), 3)
    with pytest.raises(ValueError, match="dim must be <= vocab_size"):
        corpus.ppmi_embeddings(np.array([0, 1, 2, 1]), 3, 4)
