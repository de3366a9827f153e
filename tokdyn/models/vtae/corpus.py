"""Token corpora and semantic embeddings for the visual-token autoencoders.

- :func:`zipf_corpus`: i.i.d. tokens with Zipfian frequencies (type ``k`` has probability
  proportional to ``(k + 1) ** -exponent``), drawn in JAX from an explicit key.
- :func:`grammar_corpus`: sentences from a small probabilistic grammar with word categories
  (animals, colours, sizes, actions), so co-occurrence statistics carry semantic structure.
- :func:`text_corpus`: a user's text file, whitespace tokens, with ``<pad>``, ``<unk>``, ``<eos>``.
- :func:`ppmi_embeddings`: positive pointwise mutual information of windowed co-occurrence,
  then a truncated SVD (all in JAX); :func:`load_embeddings` reads a user's ``.npy``.

A :class:`Corpus` holds the token ids, the vocabulary and the per-type counts, so per-type
(every type weighted equally) and per-occurrence (weighted by frequency) quantities are both
at hand (:meth:`Corpus.weights`).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks

SPECIALS = ("<pad>", "<unk>", "<eos>")
PAD, UNK, EOS = 0, 1, 2

# The grammar: sentence = DET [SIZE] [COLOUR] ANIMAL ACTION DET [SIZE] [COLOUR] ANIMAL <eos>
GRAMMAR_CATEGORIES = {
    "determiner": ("the", "a"),
    "size": ("big", "small", "tiny", "huge"),
    "colour": ("red", "blue", "green", "yellow", "black", "white"),
    "animal": ("cat", "dog", "bird", "fish", "horse", "mouse", "cow", "fox"),
    "action": ("chases", "sees", "likes", "follows", "eats", "finds"),
}
GRAMMAR_OPTIONAL_P = 0.5  # probability of each optional SIZE / COLOUR slot


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A tokenised corpus.

    Attributes:
      tokens: (n,) int32 token ids, in corpus order.
      vocab: tuple of V strings; ``vocab[i]`` is the word of id i.
      counts: (V,) int64 occurrences of each type in ``tokens``.
      categories: optional dict word -> category name (grammar corpora), else ``None``.

    Examples:
      >>> import jax
      >>> from tokdyn.models.vtae import corpus
      >>> c = corpus.grammar_corpus(jax.random.key(0), 20)
      >>> c.vocab_size, c.id("fox"), c.id("unicorn")   # an unknown word: <unk>'s id
      (29, 22, 1)
      >>> print(f"{float(c.weights('type').sum()):.3f}")
      1.000
    """

    tokens: np.ndarray
    vocab: tuple
    counts: np.ndarray
    categories: dict | None = None

    @property
    def vocab_size(self) -> int:
        """V, the number of types in the vocabulary."""
        return len(self.vocab)

    def weights(self, kind: str = "occurrence") -> np.ndarray:
        """(V,) weights summing to 1: ``"occurrence"`` (relative frequency) or ``"type"`` (uniform
        over the types that occur at least once)."""
        _checks.choice("kind", kind, ("occurrence", "type"))
        c = self.counts.astype(np.float64)
        w = c if kind == "occurrence" else (c > 0).astype(np.float64)
        return (w / w.sum()).astype(np.float32)

    def id(self, word: str) -> int:
        """The id of ``word``: its index in ``vocab``, else the id of ``<unk>`` if the vocabulary has one,
        else -1."""
        return self.vocab.index(word) if word in self.vocab else (UNK if "<unk>" in self.vocab else -1)


def _counts(tokens: np.ndarray, V: int) -> np.ndarray:
    return np.bincount(tokens, minlength=V).astype(np.int64)


def zipf_probs(vocab_size: int, exponent=1.0) -> np.ndarray:
    """(V,) Zipf probabilities ``(k + 1) ** -exponent / H``.

    Examples:
      >>> from tokdyn.models.vtae import corpus
      >>> print(corpus.zipf_probs(3).round(3))   # 1, 1/2, 1/3 over 11/6
      [0.545 0.273 0.182]
    """
    V = _checks.positive_int("vocab_size", vocab_size, minimum=2)
    _checks.real("exponent", exponent, low=0.0)
    w = np.arange(1, V + 1, dtype=np.float64) ** -float(exponent)
    return w / w.sum()


def zipf_corpus(key: jax.Array, vocab_size: int, n_tokens: int, exponent=1.0) -> Corpus:
    """i.i.d. tokens with Zipfian probabilities (:func:`zipf_probs`; type 0 is the most frequent, like
    "the"). Words are named ``w0 ... w{V-1}``.

    Args:
      key: PRNG key of the draw.
      vocab_size: V >= 2, the number of types.
      n_tokens: n >= 1, the corpus length.
      exponent: the Zipf exponent, >= 0.

    Returns:
      A :class:`Corpus` of n int32 tokens (NumPy, on the host).

    Examples:
      >>> import jax
      >>> from tokdyn.models.vtae import corpus
      >>> c = corpus.zipf_corpus(jax.random.key(0), 5, 100)
      >>> c.tokens.shape, c.vocab, int(c.counts.sum())
      ((100,), ('w0', 'w1', 'w2', 'w3', 'w4'), 100)

    References:
      Zipf, G. K. (1949). *Human Behavior and the Principle of Least Effort*. Addison-Wesley.
    """
    V = _checks.positive_int("vocab_size", vocab_size, minimum=2)
    n = _checks.positive_int("n_tokens", n_tokens)
    p = zipf_probs(V, exponent)
    tokens = np.asarray(jax.random.categorical(key, jnp.log(jnp.asarray(p, jnp.float32)), shape=(n,)))
    return Corpus(tokens=tokens.astype(np.int32), vocab=tuple(f"w{i}" for i in range(V)), counts=_counts(tokens, V))


def grammar_vocab() -> tuple[tuple, dict]:
    """The grammar's vocabulary (specials first, then every category's words) and word -> category.

    Examples:
      >>> from tokdyn.models.vtae import corpus
      >>> vocab, categories = corpus.grammar_vocab()
      >>> vocab[:4], categories["the"]
      (('<pad>', '<unk>', '<eos>', 'the'), 'determiner')
    """
    words, cats = list(SPECIALS), {}
    for cat, ws in GRAMMAR_CATEGORIES.items():
        for w in ws:
            words.append(w)
            cats[w] = cat
    return tuple(words), cats


def grammar_corpus(key: jax.Array, n_sentences: int) -> Corpus:
    """Sentences ``DET [SIZE] [COLOUR] ANIMAL ACTION DET [SIZE] [COLOUR] ANIMAL <eos>`` with every
    word uniform within its category and each optional slot present with probability 1/2.

    Words of one category share contexts (sizes precede colours or animals, actions sit between
    two noun phrases), so co-occurrence embeddings group them: the corpus has semantic structure.
    Drawn in JAX from ``key`` (one ``(n_sentences, 16)`` uniform draw), assembled on the host.

    Examples:
      >>> import jax
      >>> from tokdyn.models.vtae import corpus
      >>> c = corpus.grammar_corpus(jax.random.key(0), 3)
      >>> first = c.tokens[: list(c.tokens).index(corpus.EOS) + 1]
      >>> [c.categories.get(c.vocab[i], c.vocab[i]) for i in first][:4]
      ['determiner', 'colour', 'animal', 'action']
      >>> corpus.is_grammatical(first)
      True
    """
    n = _checks.positive_int("n_sentences", n_sentences)
    vocab, cats = grammar_vocab()
    index = {w: i for i, w in enumerate(vocab)}
    phrase = [("determiner", False), ("size", True), ("colour", True), ("animal", False)]
    slots = phrase + [("action", False)] + phrase  # (category, optional)
    u = np.asarray(jax.random.uniform(key, (n, 2 * len(slots))))  # (n, 2S): word choice, presence
    ids = np.empty((n, len(slots) + 1), np.int32)
    keep = np.ones((n, len(slots) + 1), bool)
    for j, (cat, optional) in enumerate(slots):
        words = GRAMMAR_CATEGORIES[cat]
        first = index[words[0]]
        ids[:, j] = first + np.minimum((u[:, j] * len(words)).astype(np.int32), len(words) - 1)
        if optional:
            keep[:, j] = u[:, len(slots) + j] < GRAMMAR_OPTIONAL_P
    ids[:, -1] = EOS
    tokens = ids[keep]  # row-major: sentences in order
    return Corpus(tokens=tokens.astype(np.int32), vocab=vocab, counts=_counts(tokens, len(vocab)), categories=cats)


def text_corpus(
    path: str, *, max_vocab: int | None = None, min_count: int = 1, lowercase: bool = False, encoding: str = "utf-8"
) -> Corpus:
    """Whitespace tokens of a text file, with ``<eos>`` after every non-empty line.

    The vocabulary is ``<pad>, <unk>, <eos>`` then words by decreasing count (ties by first
    occurrence), keeping at most ``max_vocab`` entries in all and words seen ``>= min_count`` times;
    other words map to ``<unk>``.

    Args:
      path: the text file.
      max_vocab: optional size of the whole vocabulary, specials included (at least 4).
      min_count: the fewest occurrences a word needs to enter the vocabulary, >= 1.
      lowercase: lowercase every line first.
      encoding: the file's text encoding.

    Returns:
      A :class:`Corpus`.

    Raises:
      ValueError: the file cannot be read as text, or holds no token.

    Examples:
      >>> import os
      >>> import tempfile
      >>> from tokdyn.models.vtae import corpus
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = os.path.join(d, "text.txt")
      ...     with open(path, "w") as f:
      ...         print("the cat sat", file=f)
      ...         print("the dog sat", file=f)
      ...     c = corpus.text_corpus(path)
      >>> [c.vocab[i] for i in c.tokens]
      ['the', 'cat', 'sat', '<eos>', 'the', 'dog', 'sat', '<eos>']
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {path!r}")
    if max_vocab is not None:
        _checks.positive_int("max_vocab", max_vocab, minimum=len(SPECIALS) + 1)
    _checks.positive_int("min_count", min_count)
    try:
        with open(path, encoding=encoding) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"path {str(path)!r} could not be read as {encoding} text: {e}") from None
    sentences = [(ln.lower() if lowercase else ln).split() for ln in lines]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError(f"path {str(path)!r} holds no tokens (empty corpus)")
    first, counts = {}, {}
    for s in sentences:
        for w in s:
            counts[w] = counts.get(w, 0) + 1
            first.setdefault(w, len(first))
    words = sorted(
        (w for w in counts if counts[w] >= min_count and w not in SPECIALS), key=lambda w: (-counts[w], first[w])
    )
    if max_vocab is not None:
        words = words[: max_vocab - len(SPECIALS)]
    vocab = SPECIALS + tuple(words)
    index = {w: i for i, w in enumerate(vocab)}
    tokens = []
    for s in sentences:
        tokens.extend(index.get(w, UNK) for w in s)
        tokens.append(EOS)
    tokens = np.asarray(tokens, np.int32)
    return Corpus(tokens=tokens, vocab=vocab, counts=_counts(tokens, len(vocab)))


# --------------------------------------------------------------------------------------------
# Embeddings


def _check_cooccurrence(tokens, vocab_size, window):
    V = _checks.positive_int("vocab_size", vocab_size, minimum=2)
    w = _checks.positive_int("window", window)
    if np.ndim(tokens) != 1 or np.shape(tokens)[0] < 2:
        raise ValueError(f"tokens must be a 1-D array of at least 2 token ids, got shape {np.shape(tokens)}")
    if _checks.on_host(tokens):
        lo, hi = int(np.min(tokens)), int(np.max(tokens))
        if lo < 0 or hi >= V:
            raise ValueError(f"tokens must lie in [0, vocab_size={V}), got range [{lo}, {hi}]")
    return dict(vocab_size=V, window=w, **_checks.host_arrays(tokens=tokens))


@_checks.checked_jit(_check_cooccurrence, static_argnames=("vocab_size", "window"))
def cooccurrence(tokens, vocab_size: int, window: int = 2) -> jax.Array:
    """(V, V) symmetric counts of ordered pairs ``(tokens[i], tokens[i + d])`` and their reverse,
    ``1 <= d <= window`` (a token is not its own context unless it recurs); ``tokens`` (n,).

    Examples:
      >>> import numpy as np
      >>> from tokdyn.models.vtae import corpus
      >>> tokens = np.array([0, 1, 2, 1, 0])
      >>> print(np.asarray(corpus.cooccurrence(tokens, 3, window=1)))
      [[0. 2. 0.]
       [2. 0. 2.]
       [0. 2. 0.]]
    """
    V = vocab_size
    t = jnp.asarray(tokens, jnp.int32)
    n = t.shape[0]
    c = jnp.zeros((V * V,), jnp.float32)
    for d in range(1, window + 1):
        if d >= n:
            break
        a, b = t[:-d], t[d:]
        c = c.at[a * V + b].add(1.0).at[b * V + a].add(1.0)
    return c.reshape(V, V)


def _check_ppmi(counts, alpha):
    _checks.finite_array("counts", counts, ndim=2)
    if np.shape(counts)[0] != np.shape(counts)[1]:
        raise ValueError(f"counts must be a square (V, V) matrix, got shape {np.shape(counts)}")
    _checks.real("alpha", alpha, low=0.0, low_open=True)
    return _checks.host_arrays(counts=counts)


@_checks.checked_jit(_check_ppmi)
def ppmi(counts, *, alpha=0.75) -> jax.Array:
    """Positive PMI of a (V, V) co-occurrence matrix: ``max(0, log p(i, j) / (p(i) p_a(j)))`` with
    context distribution smoothing ``p_a(j) ∝ count(j) ** alpha``. Zero rows/columns give 0.

    Examples:
      >>> import numpy as np
      >>> from tokdyn.models.vtae import corpus
      >>> tokens = np.array([0, 1, 2, 1, 0])
      >>> print(np.asarray(corpus.ppmi(corpus.cooccurrence(tokens, 3, window=1))).round(3))
      [[0.    0.784 0.   ]
       [0.61  0.    0.61 ]
       [0.    0.784 0.   ]]

    References:
      Church, K. W. and Hanks, P. (1990). Word association norms, mutual information, and
      lexicography. *Computational Linguistics* 16(1), 22-29.

      Levy, O., Goldberg, Y. and Dagan, I. (2015). Improving distributional similarity with lessons
      learned from word embeddings. *Transactions of the Association for Computational Linguistics*
      3, 211-225 (context distribution smoothing).
    """
    c = jnp.asarray(counts, jnp.float32)
    alpha = jnp.asarray(alpha, jnp.float32)
    total = c.sum()
    row = c.sum(1)  # (V,)
    col = c.sum(0) ** alpha
    col = col / jnp.maximum(col.sum(), 1e-30)
    pij = c / jnp.maximum(total, 1e-30)
    pi = row / jnp.maximum(total, 1e-30)
    denom = pi[:, None] * col[None, :]
    ok = (c > 0) & (denom > 0)
    pmi = jnp.log(jnp.where(ok, pij, 1.0)) - jnp.log(jnp.where(ok, denom, 1.0))
    return jnp.where(ok, jnp.maximum(pmi, 0.0), 0.0)


def _check_embeddings(tokens, vocab_size, dim, window, alpha, power, normalize):
    args = _check_cooccurrence(tokens, vocab_size, window)
    k = _checks.positive_int("dim", dim)
    if k > args["vocab_size"]:
        raise ValueError(f"dim must be <= vocab_size={args['vocab_size']}, got {k}")
    _checks.real("alpha", alpha, low=0.0, low_open=True)
    _checks.real("power", power)
    return dict(args, dim=k, normalize=bool(normalize))


@_checks.checked_jit(_check_embeddings, static_argnames=("vocab_size", "dim", "window", "normalize"))
def ppmi_embeddings(
    tokens, vocab_size: int, dim: int, *, window: int = 2, alpha=0.75, power=0.5, normalize: bool = True
) -> jax.Array:
    """Semantic embeddings: PPMI of windowed co-occurrence (:func:`cooccurrence`, :func:`ppmi`), then the
    truncated SVD ``U_k S_k**power``. Signs are fixed so that the largest-magnitude entry of each
    singular vector is positive (deterministic output); types that never occur get zero rows.

    Args:
      tokens: (n,) int token ids in [0, V), n >= 2.
      vocab_size: V (static).
      dim: k <= V, the embeddings' width (static).
      window: the co-occurrence window, >= 1 (static).
      alpha: the context distribution's smoothing exponent, > 0.
      power: the singular values' exponent (0.5: the symmetric split).
      normalize: L2-normalise the rows (static).

    Returns:
      (V, dim) float32 embeddings.

    Examples:
      >>> import numpy as np
      >>> from tokdyn.models.vtae import corpus
      >>> corpus.ppmi_embeddings(np.array([0, 1, 2, 1, 0, 2, 1]), 3, 2).shape
      (3, 2)

    References:
      Levy, O., Goldberg, Y. and Dagan, I. (2015). Improving distributional similarity with lessons
      learned from word embeddings. *Transactions of the Association for Computational Linguistics*
      3, 211-225.
    """
    m = ppmi(cooccurrence(tokens, vocab_size, window), alpha=alpha)  # (V, V)
    u, s, _ = jnp.linalg.svd(m, full_matrices=False)
    u, s = u[:, :dim], s[:dim]
    sign = jnp.sign(u[jnp.argmax(jnp.abs(u), axis=0), jnp.arange(dim)])
    e = u * jnp.where(sign == 0, 1.0, sign) * s ** jnp.asarray(power, jnp.float32)
    if normalize:
        e = e / jnp.maximum(jnp.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e


def load_embeddings(path: str, vocab_size: int | None = None) -> jax.Array:
    """(V, E) float32 embeddings from a ``.npy`` file, checked for rank 2, finiteness and (when
    given) ``vocab_size`` rows.

    Examples:
      >>> import os
      >>> import tempfile
      >>> import numpy as np
      >>> from tokdyn.models.vtae import corpus
      >>> with tempfile.TemporaryDirectory() as d:
      ...     np.save(os.path.join(d, "e.npy"), np.ones((4, 3)))
      ...     e = corpus.load_embeddings(os.path.join(d, "e.npy"), vocab_size=4)
      >>> e.shape, e.dtype
      ((4, 3), dtype('float32'))
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"path {str(path)!r} could not be read as a .npy array: {e}") from None
    _checks.finite_array("embeddings", arr, ndim=2)
    if vocab_size is not None and arr.shape[0] != vocab_size:
        raise ValueError(f"embeddings in {str(path)!r} have {arr.shape[0]} rows, expected vocab_size={vocab_size}")
    return jnp.asarray(arr, jnp.float32)


# --------------------------------------------------------------------------------------------
# Sentences and the grammar's language


def sentences(tokens, length: int, *, eos: int = EOS, pad: int = PAD) -> np.ndarray:
    """The corpus split after every ``eos`` (a trailing unterminated sentence is dropped), each sentence
    cut to ``length`` tokens or padded with ``pad``.

    Args:
      tokens: (n,) token ids (host data).
      length: L >= 1, the length of a row.
      eos: the end-of-sentence id.
      pad: the padding id.

    Returns:
      (n_sentences, L) int32 NumPy array.

    Raises:
      ValueError: ``tokens`` is not 1-D or holds no ``eos``.

    Examples:
      >>> import numpy as np
      >>> from tokdyn.models.vtae import corpus
      >>> print(corpus.sentences(np.array([5, 6, corpus.EOS, 7, corpus.EOS, 8]), 3))   # 8 is unterminated
      [[5 6 2]
       [7 2 0]]
    """
    length = _checks.positive_int("length", length)
    t = np.asarray(tokens)
    if t.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array of token ids, got shape {t.shape}")
    ends = np.flatnonzero(t == eos)
    if ends.size == 0:
        raise ValueError(f"tokens hold no end-of-sentence token (eos={eos}): no sentence to cut")
    starts = np.concatenate([[0], ends[:-1] + 1])
    out = np.full((ends.size, length), pad, np.int32)
    for i, (a, b) in enumerate(zip(starts, ends + 1)):
        s = t[a:b][:length]
        out[i, : s.size] = s
    return out


def _grammar_category_sequences() -> list[tuple[str, ...]]:
    """Every category sequence the grammar produces (each optional slot present or not), <eos> last."""
    phrase = [("determiner", False), ("size", True), ("colour", True), ("animal", False)]
    slots = phrase + [("action", False)] + phrase
    optional = [j for j, (_, o) in enumerate(slots) if o]
    out = []
    for bits in range(2 ** len(optional)):
        drop = {j for i, j in enumerate(optional) if not bits >> i & 1}
        out.append(tuple(c for j, (c, _) in enumerate(slots) if j not in drop) + ("<eos>",))
    return out


def grammar_bigrams() -> np.ndarray:
    """(V, V) bool over :func:`grammar_vocab`: ``[a, b]`` is True when word b may follow word a
    inside a grammatical sentence (``<eos>`` included as the last word).

    Examples:
      >>> from tokdyn.models.vtae import corpus
      >>> vocab, _ = corpus.grammar_vocab()
      >>> ok = corpus.grammar_bigrams()
      >>> ok.shape, bool(ok[vocab.index("the"), vocab.index("big")]), bool(ok[vocab.index("the"), vocab.index("the")])
      ((29, 29), True, False)
    """
    vocab, cats = grammar_vocab()
    cat = np.array([cats.get(w, w) for w in vocab])
    allowed = np.zeros((len(vocab), len(vocab)), bool)
    for seq in _grammar_category_sequences():
        for a, b in zip(seq[:-1], seq[1:]):
            allowed |= (cat[:, None] == a) & (cat[None, :] == b)
    return allowed


def is_grammatical(sentence) -> bool:
    """Whether a sequence of grammar token ids, up to and including its first ``<eos>``, is a
    sentence of the grammar (anything after the ``<eos>`` is ignored; no ``<eos>``: False).

    Examples:
      >>> from tokdyn.models.vtae import corpus
      >>> vocab, _ = corpus.grammar_vocab()
      >>> words = "the fox follows a mouse <eos>".split()
      >>> corpus.is_grammatical([vocab.index(w) for w in words]), corpus.is_grammatical([vocab.index(w) for w in words[::-1]])
      (True, False)
    """
    vocab, cats = grammar_vocab()
    s = [int(i) for i in np.asarray(sentence).ravel()]
    if EOS not in s:
        return False
    words = s[: s.index(EOS) + 1]
    if any(i < 0 or i >= len(vocab) for i in words):
        return False
    seq = tuple(cats.get(vocab[i], vocab[i]) for i in words)
    return seq in set(_grammar_category_sequences())


def grammatical(tokens):
    """Whether each sequence of grammar token ids is a sentence of the grammar, as
    :func:`is_grammatical` decides it, but traceable: a pure JAX function of a ``(..., L)`` integer
    array (under ``jit``, ``vmap``), so that a compiled program can score its own samples.

    The sentence is the sequence up to and including its first ``<eos>`` (anything after it is
    ignored; no ``<eos>``: False); it is grammatical when its words' categories are one of the
    grammar's category sequences (each optional slot present or not). An id outside the
    vocabulary before the ``<eos>`` makes it ungrammatical.

    Args:
      tokens: ``(..., L)`` integer token ids (:func:`grammar_vocab`'s).

    Returns:
      ``(...)`` bool.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import corpus
      >>> vocab, _ = corpus.grammar_vocab()
      >>> ids = lambda text: [vocab.index(w) for w in text.split()]
      >>> good, bad = ids("the fox follows a mouse <eos> <pad>"), ids("the fox a follows mouse <eos> <pad>")
      >>> corpus.grammatical(jnp.array([good, bad])).tolist()
      [True, False]
    """
    vocab, cats = grammar_vocab()
    names = tuple(GRAMMAR_CATEGORIES) + ("<eos>",)
    invalid = len(names)  # the category of <pad>, <unk> and ids outside the vocabulary
    cat_of = np.array([names.index(cats.get(w, w)) if cats.get(w, w) in names else invalid for w in vocab])
    seqs = _grammar_category_sequences()
    width = max(len(s) for s in seqs)
    table = np.full((len(seqs), width), -1, np.int32)  # (K, W) each sequence's categories, -1 past its end
    for k, s in enumerate(seqs):
        table[k, : len(s)] = [names.index(c) for c in s]
    lengths = np.array([len(s) for s in seqs])  # (K,)
    t = jnp.asarray(tokens)
    inside = (t >= 0) & (t < len(vocab))
    c = jnp.where(inside, jnp.asarray(cat_of)[jnp.clip(t, 0, len(vocab) - 1)], invalid)  # (..., L)
    is_eos = t == EOS
    end = jnp.argmax(is_eos, axis=-1)  # (...) the first <eos>'s position (0 when there is none)
    m = min(t.shape[-1], width)  # a sentence of the grammar holds at most `width` words
    after = jnp.arange(m) > end[..., None, None]  # (..., 1, m) positions past the sentence
    same = jnp.all((c[..., None, :m] == table[:, :m]) | after, axis=-1)  # (..., K)
    return jnp.any(is_eos, axis=-1) & jnp.any(same & (lengths == end[..., None] + 1), axis=-1)


def grammar_entropy() -> float:
    """The entropy of :func:`grammar_corpus`'s sentences in nats per sentence (closed form: each
    word uniform within its category, each optional slot present with probability 1/2 independently):
    a floor for any model's negative log-likelihood per sentence.

    Examples:
      >>> from tokdyn.models.vtae import corpus
      >>> print(f"{corpus.grammar_entropy():.3f}")
      13.288
    """
    p = GRAMMAR_OPTIONAL_P
    h_presence = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    phrase = [("determiner", False), ("size", True), ("colour", True), ("animal", False)]
    total = 0.0
    for cat, optional in phrase + [("action", False)] + phrase:
        h = np.log(len(GRAMMAR_CATEGORIES[cat]))
        total += h_presence + p * h if optional else h
    return float(total)
