"""The data and the scores of the grid-diffusion sweep: the grammar sentences every model of the
sweep trains on and is scored on (:func:`sweep_sentences`), the grids the first stage gives their
tokens (:func:`autoencoder`: a visual-token autoencoder trained once per grid shape, as the
grid-diffusion study trains its own), the training data of a model (:func:`sweep_data`), and the
scores of sampled sentences (:func:`score_text`: the grid-diffusion study's share of grammatical
sentences and bigrams and of valid grids, computed inside the compiled program). Each is drawn from
a fixed key alone, so every model of every condition sees the same data.

The data are made on the host once per process and shape (cached), also when first asked for
inside a traced program (``jax.ensure_compile_time_eval``): the corpus is assembled with NumPy, and
the autoencoder is its own compiled training. Inside the sweep's program they are constants.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.models import sequence, vtae
from tokdyn.models.vtae import corpus
from tokdyn.stats import text as text_stats

GRAMMAR_SEED = 0x6A77  # the data every model of a grid-diffusion sweep sees: sentences, held-out sentences, grids
SENTENCES = 5000  # training sentences (the grid-diffusion study's default corpus)
HELD_OUT = 256  # held-out sentences each trained model's likelihood is measured on
SAMPLES = 256  # sentences each trained model samples for its text scores
AE_STEPS = 1000  # the autoencoder's training steps (the grid-diffusion study's default)
TEXT_METRICS = ("grammatical_sentences", "grammatical_bigrams", "valid")  # score_text's, as the study names them


@functools.lru_cache(maxsize=None)
def sweep_sentences(length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(training (SENTENCES, length), held_out (HELD_OUT, length))`` int32 grammar sentences
    (:func:`tokdyn.models.vtae.corpus.grammar_corpus`, cut or padded to ``length`` tokens by
    :func:`~tokdyn.models.vtae.corpus.sentences`), the held-out ones from another stream of
    :data:`GRAMMAR_SEED`'s key."""
    with jax.ensure_compile_time_eval():
        root = jax.random.key(GRAMMAR_SEED)
        train_c = corpus.grammar_corpus(jax.random.fold_in(root, 0), SENTENCES)
        held_c = corpus.grammar_corpus(jax.random.fold_in(root, 1), HELD_OUT)
    return corpus.sentences(train_c.tokens, length), corpus.sentences(held_c.tokens, length)


def grid_side(config: sequence.Config) -> int:
    """N of a grid model's N x N grids: the square root of ``config.cells``."""
    return math.isqrt(config.cells)


def autoencoder_config(config: sequence.Config) -> vtae.Config:
    """The first stage of the sweep's grid models: :func:`tokdyn.models.sequence.grid_autoencoder`
    of their grids (``cells`` = N x N cells of ``colours`` colours), trained for :data:`AE_STEPS`."""
    return sequence.grid_autoencoder(grid_side(config), config.colours, AE_STEPS)


@functools.lru_cache(maxsize=None)
def _trained_autoencoder(grid: int, colours: int):
    acfg = sequence.grid_autoencoder(grid, colours, AE_STEPS)
    with jax.ensure_compile_time_eval(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = jax.random.fold_in(jax.random.key(GRAMMAR_SEED), 2)
        params = vtae.train(key, acfg, vtae.Hparams(learning_rate=sequence.AE_LEARNING_RATE))[0].params
        codes = vtae.encode(None, params, acfg, jnp.arange(acfg.vocab_size), deterministic=True).codes
        params = jax.tree_util.tree_map(np.asarray, params)
        codes = np.asarray(codes, np.int32)
    return params, codes


def autoencoder(config: sequence.Config) -> tuple:
    """``(params, codes (V, P))``: the autoencoder of :func:`autoencoder_config`, trained from
    :data:`GRAMMAR_SEED`'s key at :data:`tokdyn.models.sequence.AE_LEARNING_RATE` (as the
    grid-diffusion study trains its first stage), and the grid of every token (its encoder's
    deterministic codes). Trained once per process and grid shape."""
    return _trained_autoencoder(grid_side(config), config.colours)


def sweep_data(config: sequence.Config, which: int = 0):
    """The sequences a model of ``config`` sees: ``which`` 0 the training pool
    (:data:`SENTENCES`), 1 the held-out sentences (:data:`HELD_OUT`), as ``(n, length, P)`` grids
    (every token's grid, :func:`autoencoder`) for a grid model or ``(n, length)`` token ids,
    int32."""
    sentences = sweep_sentences(config.length)[which]
    if config.on_grids:
        return jnp.asarray(autoencoder(config)[1][sentences])
    return jnp.asarray(sentences)


def check(config: sequence.Config) -> None:
    """What the sweep's data ask of a model's configuration beyond its own checks: the grammar's
    vocabulary (``vocab_size``), and for a grid model square grids (``cells`` = N x N) with at
    least as many grids as tokens (``colours ** cells``); ``ValueError`` naming the field."""
    vocab = len(corpus.grammar_vocab()[0])
    if config.vocab_size != vocab:
        raise ValueError(f"vocab_size must be {vocab} (the grammar's vocabulary), got {config.vocab_size}")
    if not config.on_grids:
        return
    n = grid_side(config)
    if n * n != config.cells:
        raise ValueError(f"cells must be a square, N x N (the autoencoder's grids), got {config.cells}")
    if config.cells < 64 and config.colours**config.cells < vocab:
        raise ValueError(
            f"cells={config.cells} and colours={config.colours} give {config.colours**config.cells} grids, "
            f"fewer than the {vocab} tokens of the grammar: every token needs its own grid"
        )


def score_text(tokens, confidence=None) -> dict:
    """The text scores of sampled sentences (traceable), as the grid-diffusion study's
    :func:`tokdyn.stats.text.text_metrics` computes them on the host (without its intervals).

    Args:
      tokens: (n, L) sampled token ids, each sentence up to and including its first ``<eos>`` (the
        whole row when it has none).
      confidence: optional (n, L) the autoencoder's decoding confidence of each sampled grid.

    Returns:
      ``{"grammatical_sentences", "grammatical_bigrams"}`` and, with ``confidence``, ``"valid"``:
      the share of sentences of the grammar (:func:`tokdyn.models.vtae.corpus.grammatical`), the
      share of the sentences' bigrams the grammar permits (pooled over sentences:
      :func:`tokdyn.models.vtae.corpus.grammar_bigrams`), the share of grids decoded with a
      confidence above :data:`tokdyn.stats.text.VALID_CONFIDENCE`.
    """
    tokens = jnp.asarray(tokens)
    is_eos = tokens == corpus.EOS
    last = jnp.where(jnp.any(is_eos, 1), jnp.argmax(is_eos, 1), tokens.shape[1] - 1)  # (n,) the sentence's end
    inside = jnp.arange(1, tokens.shape[1])[None] <= last[:, None]  # (n, L - 1) bigram (j - 1, j) in the sentence
    allowed = jnp.asarray(corpus.grammar_bigrams())[tokens[:, :-1], tokens[:, 1:]]  # (n, L - 1)
    out = {
        "grammatical_sentences": jnp.mean(corpus.grammatical(tokens)),
        "grammatical_bigrams": jnp.sum(allowed & inside) / jnp.maximum(jnp.sum(inside), 1),
    }
    if confidence is not None:
        out["valid"] = jnp.mean(confidence > text_stats.VALID_CONFIDENCE)
    return out


def metrics_of(config: sequence.Config) -> tuple:
    """The metrics of a model of ``config``: the grammatical shares, ``valid`` for a grid model
    (whose samples are decoded), ``nll`` for a model with a likelihood (all but ``grid_ddpm``)."""
    text = TEXT_METRICS if config.on_grids else TEXT_METRICS[:2]
    return text + (() if config.continuous else ("nll",))
