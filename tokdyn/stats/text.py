"""Host-side metrics of sampled token sequences against a reference corpus (NumPy and SciPy,
float64): sequences cut at their end-of-sentence token, n-gram counts and their KL divergence to
the reference's (smoothed), distinct-n, and :func:`text_metrics`, every metric of
:data:`METRICS` with a percentile bootstrap interval over the samples
(:func:`tokdyn.stats.inference.bootstrap_statistic`).
"""

from __future__ import annotations

import numpy as np

from tokdyn.stats import inference

VALID_CONFIDENCE = 0.9
SMOOTHING = 0.5  # added to every reference count before the KL divergences


def cut(sequences, eos: int) -> list[np.ndarray]:
    """Each sequence up to and including its first ``eos`` (the whole sequence if it has none)."""
    out = []
    for s in np.asarray(sequences):
        hit = np.flatnonzero(s == eos)
        out.append(s[: hit[0] + 1] if hit.size else s)
    return out


def ngram_counts(sentences, n: int, vocab_size: int) -> np.ndarray:
    """(V**n,) counts of the n-grams inside the sentences (flattened index)."""
    if n not in (1, 2):
        raise ValueError(f"n must be 1 or 2, got {n!r}")
    if n == 1:
        flat = np.concatenate([np.asarray(s) for s in sentences]) if sentences else np.zeros(0, int)
    else:
        parts = [np.asarray(s[:-1]) * vocab_size + np.asarray(s[1:]) for s in sentences if len(s) >= 2]
        flat = np.concatenate(parts) if parts else np.zeros(0, int)
    return np.bincount(flat, minlength=vocab_size**n).astype(np.float64)


def kl_to_reference(counts, reference_counts, smoothing: float = SMOOTHING) -> float:
    """KL(p || q) in nats: p the normalised ``counts`` (samples), q the ``reference_counts`` plus
    ``smoothing`` on every entry, normalised (so a sample n-gram the reference never shows costs a
    large but finite amount). NaN for empty counts."""
    c = np.asarray(counts, np.float64)
    if c.sum() == 0:
        return float("nan")
    p = c / c.sum()
    q = np.asarray(reference_counts, np.float64) + smoothing
    q = q / q.sum()
    nz = p > 0
    return float(np.sum(p[nz] * (np.log(p[nz]) - np.log(q[nz]))))


def _ngram_matrix(sentences, n: int, vocab_size: int):
    """Sparse (len(sentences), V**n) matrix of each sentence's n-gram counts."""
    from scipy import sparse

    rows, cols = [], []
    for r, s in enumerate(sentences):
        s = np.asarray(s, np.int64)
        c = s if n == 1 else s[:-1] * vocab_size + s[1:]
        rows.append(np.full(c.size, r))
        cols.append(c)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(sentences), vocab_size**n))


def distinct(sentences, n: int) -> float:
    """distinct-n: distinct n-grams / n-grams over all sentences (NaN when there are none)."""
    grams = [tuple(s[i : i + n]) for s in sentences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


METRICS = (
    "valid",
    "unigram_kl",
    "bigram_kl",
    "distinct_1",
    "distinct_2",
    "grammatical_bigrams",
    "grammatical_sentences",
    "novel",
)


def text_metrics(
    tokens,
    reference,
    vocab_size: int,
    *,
    eos: int,
    confidence=None,
    allowed=None,
    grammatical=None,
    seed: int = 0,
    n_resamples: int = 500,
) -> dict:
    """Metrics of sampled sequences against the training sequences, both cut after their first ``eos``,
    each with a percentile bootstrap interval over the sampled sequences.

    Args:
        tokens: (n, L) sampled token sequences.
        reference: (m, L) the training sequences.
        vocab_size: V, the vocabulary size.
        eos: the end-of-sentence token.
        confidence: optional (n, L) decoding confidences of the sampled grids (for ``valid``).
        allowed: optional (V, V) bool, the bigrams the grammar permits (for ``grammatical_bigrams``).
        grammatical: optional ``sentence -> bool`` (for ``grammatical_sentences``).
        seed: non-negative int seeding the bootstrap.
        n_resamples: bootstrap resamples, >= 1.

    Returns:
        A dict with every metric ``m`` of :data:`METRICS` and its interval ``m_low``, ``m_high``:
        ``valid`` (share of grids decoded with confidence > 0.9), ``unigram_kl`` and ``bigram_kl`` (KL
        of the samples' n-gram distribution to the reference's, :func:`kl_to_reference`),
        ``distinct_1``/``_2``, ``grammatical_bigrams`` (share of the samples' bigrams ``allowed``
        permits), ``grammatical_sentences`` and ``novel`` (share of samples not among the reference
        sequences). A metric whose argument is not given is NaN.
    """
    tokens = np.asarray(tokens)
    sents, refs = cut(tokens, eos), cut(reference, eos)
    ref1, ref2 = ngram_counts(refs, 1, vocab_size), ngram_counts(refs, 2, vocab_size)
    seen = {tuple(s) for s in refs}
    m1, m2 = _ngram_matrix(sents, 1, vocab_size), _ngram_matrix(sents, 2, vocab_size)  # sparse (n, V**k)
    weights = lambda i: np.bincount(i, minlength=len(sents)).astype(np.float64)
    ok_bigrams = None
    if allowed is not None:
        a = np.asarray(allowed, bool).ravel()
        ok_bigrams = np.stack([np.asarray(m2[:, a].sum(1)).ravel(), np.asarray(m2.sum(1)).ravel()], 1)
    stat = {
        "unigram_kl": lambda i: kl_to_reference(weights(i) @ m1, ref1),
        "bigram_kl": lambda i: kl_to_reference(weights(i) @ m2, ref2),
        "distinct_1": lambda i: distinct([sents[j] for j in i], 1),
        "distinct_2": lambda i: distinct([sents[j] for j in i], 2),
        "novel": lambda i: float(np.mean([tuple(sents[j]) not in seen for j in i])),
    }
    if confidence is not None:
        conf = np.asarray(confidence) > VALID_CONFIDENCE
        stat["valid"] = lambda i: float(conf[i].mean())
    if ok_bigrams is not None:
        stat["grammatical_bigrams"] = lambda i: float(ok_bigrams[i, 0].sum() / max(ok_bigrams[i, 1].sum(), 1))
    if grammatical is not None:
        g = np.array([bool(grammatical(s)) for s in sents])
        stat["grammatical_sentences"] = lambda i: float(g[i].mean())
    n, everyone = len(sents), np.arange(len(sents))
    out = {}
    for name in METRICS:
        if name not in stat:
            out[name], out[name + "_low"], out[name + "_high"] = (float("nan"),) * 3
            continue
        out[name] = stat[name](everyone)
        out[name + "_low"], out[name + "_high"] = inference.bootstrap_statistic(
            stat[name], n, seed=seed, n_resamples=n_resamples
        )
    return out
