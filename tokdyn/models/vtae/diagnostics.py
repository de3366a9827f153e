"""Diagnostics of a token -> grid -> token autoencoder (pure, jittable, vmappable over models).

Each function takes plain arrays, so it works for any encoder/decoder pair: predictions or
logits (V, V) of every token's own grid, codes (V, P), decoder inputs (V, P, F).
:func:`evaluate` runs them all on a :mod:`tokdyn.models.vtae` model.

Conventions: "per type" averages over the V types equally; "per occurrence" weights each type by
its corpus frequency ``weights`` (V,). The dominant-prediction frequency is the share of types
(or occurrences) predicted as the single most predicted token; ``collapsed`` is it > 0.9.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from tokdyn.models.vtae import losses, model, training

COLLAPSE_THRESHOLD = 0.9


def accuracy(pred, targets, weights=None):
    """Share of ``pred == targets`` (per type; per occurrence with ``weights``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import diagnostics
      >>> pred, targets = jnp.array([0, 1, 2, 2]), jnp.array([0, 1, 2, 3])
      >>> print(f"{float(diagnostics.accuracy(pred, targets)):.2f}")
      0.75
      >>> print(f"{float(diagnostics.accuracy(pred, targets, weights=jnp.array([1.0, 1.0, 1.0, 5.0]))):.2f}")
      0.38
    """
    correct = (pred == targets).astype(jnp.float32)
    return jnp.mean(correct) if weights is None else jnp.sum(weights * correct) / jnp.sum(weights)


def dominant_frequency(pred, n_classes: int, weights=None):
    """Largest share of (weighted) predictions that name one token; pred (V,) int.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import diagnostics
      >>> print(f"{float(diagnostics.dominant_frequency(jnp.array([0, 2, 2, 2]), 4)):.2f}")   # token 2
      0.75
    """
    w = jnp.ones(pred.shape, jnp.float32) if weights is None else weights
    share = jax.ops.segment_sum(w, pred, num_segments=n_classes) / jnp.sum(w)
    return jnp.max(share)


def pairwise_hamming(codes, n_colours: int):
    """(V, V) numbers of differing cells between the grids ``codes`` (V, P) (one-hot matmul).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import diagnostics
      >>> codes = jnp.array([[0, 1, 1], [0, 1, 0], [0, 1, 1]])   # 3 tokens' grids of 3 cells; 0 and 2 equal
      >>> diagnostics.pairwise_hamming(codes, 2).tolist()
      [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    """
    oh = jax.nn.one_hot(codes, n_colours, dtype=jnp.float32).reshape(codes.shape[0], -1)  # (V, P*C)
    return codes.shape[1] - jnp.round(oh @ oh.T).astype(jnp.int32)


def grid_uniqueness(codes, n_colours: int):
    """(share of distinct grids, minimum Hamming distance between two different tokens' grids).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import diagnostics
      >>> codes = jnp.array([[0, 1, 1], [0, 1, 0], [0, 1, 1]])   # 3 tokens' grids of 3 cells; 0 and 2 equal
      >>> share, closest = diagnostics.grid_uniqueness(codes, 2)
      >>> print(f"{float(share):.3f}", int(closest))
      0.667 0
    """
    h = pairwise_hamming(codes, n_colours)
    V = codes.shape[0]
    earlier = jnp.tril(jnp.ones((V, V), bool), -1)
    dup = jnp.any(earlier & (h == 0), axis=1)  # grid equals an earlier token's
    off = jnp.where(jnp.eye(V, dtype=bool), jnp.iinfo(jnp.int32).max, h)
    return 1.0 - jnp.mean(dup), jnp.min(off)


def pattern_std(x):
    """Std over tokens of each decoder-input entry, averaged over entries; x (V, P, F).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import diagnostics
      >>> print(f"{float(diagnostics.pattern_std(jnp.array([[[0.0]], [[2.0]]]))):.2f}")   # (V, P, F) = (2, 1, 1)
      1.00
    """
    return jnp.mean(jnp.std(x.reshape(x.shape[0], -1), axis=0))


def codebook_usage(codes, n_colours: int, weights=None):
    """(perplexity exp(H(colour usage)), share of the C colours ever used) over all cells;
    codes (V, P); ``weights`` (V,) weight tokens by frequency.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import diagnostics
      >>> codes = jnp.array([[0, 1, 1], [0, 1, 0], [0, 1, 1]])   # 3 tokens' grids of 3 cells; 0 and 2 equal
      >>> perplexity, used = diagnostics.codebook_usage(codes, 4)   # colours 0 and 1 of 4
      >>> print(f"{float(perplexity):.3f} {float(used):.2f}")
      1.988 0.50
    """
    w = jnp.ones(codes.shape[:1], jnp.float32) if weights is None else weights
    counts = jax.ops.segment_sum(jnp.repeat(w, codes.shape[1]), codes.reshape(-1), num_segments=n_colours)
    p = counts / jnp.sum(counts)
    h = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(h), jnp.mean(counts > 0)


def _sq_dists(x):
    n2 = jnp.sum(x * x, -1)
    return jnp.maximum(n2[:, None] + n2[None, :] - 2.0 * x @ x.T, 0.0)


def _neighbour_ranks(d):
    """Order of the others by distance (self excluded, ties broken by index)."""
    n = d.shape[0]
    d = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d)
    return jnp.argsort(d, axis=1, stable=True)[:, : n - 1]  # (n, n-1)


def knn_preservation(dist_high, dist_low, k: int):
    """Mean share of each point's k nearest neighbours under ``dist_high`` (n, n) that are also
    among its k nearest under ``dist_low`` (n, n) (1: neighbourhoods kept; k/(n-1): chance).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import diagnostics
      >>> x = np.array([[0, 0], [1, 0], [2, 0], [0, 3], [1, 3], [2, 3]], np.float32)   # two rows of 3
      >>> low = x[:, :1] + 0.1 * x[:, 1:]   # squashed onto a line: the rows interleave
      >>> d_high = diagnostics.euclidean_distances(jnp.asarray(x))
      >>> d_low = diagnostics.euclidean_distances(jnp.asarray(low))
      >>> print(f"{float(diagnostics.knn_preservation(d_high, d_low, 2)):.3f}")
      0.167
    """
    a = _neighbour_ranks(dist_high)[:, :k]
    b = _neighbour_ranks(dist_low)[:, :k]
    inter = jnp.sum(jnp.any(a[:, :, None] == b[:, None, :], axis=2), axis=1)
    return jnp.mean(inter / k)


def trustworthiness(dist_high, dist_low, k: int):
    """Trustworthiness (Venna & Kaski) of the low-dimensional neighbourhoods: 1 minus a penalty on
    each point's k low-space neighbours by how far they rank in the high space beyond k; as
    :func:`sklearn.manifold.trustworthiness`. Needs k < n / 2.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import diagnostics
      >>> x = np.array([[0, 0], [1, 0], [2, 0], [0, 3], [1, 3], [2, 3]], np.float32)   # two rows of 3
      >>> low = x[:, :1] + 0.1 * x[:, 1:]   # squashed onto a line: the rows interleave
      >>> d_high = diagnostics.euclidean_distances(jnp.asarray(x))
      >>> d_low = diagnostics.euclidean_distances(jnp.asarray(low))
      >>> print(f"{float(diagnostics.trustworthiness(d_high, d_low, 2)):.3f}")   # sklearn's: 0.5
      0.500

    References:
      Venna, J. and Kaski, S. (2001). Neighborhood preservation in nonlinear projection methods: an
      experimental study. *Artificial Neural Networks (ICANN 2001)*, LNCS 2130, 485-491.
    """
    n = dist_high.shape[0]
    order = _neighbour_ranks(dist_high)  # (n, n-1)
    rank = jnp.zeros((n, n), jnp.int32).at[jnp.arange(n)[:, None], order].set(jnp.arange(1, n)[None, :])
    nn_low = _neighbour_ranks(dist_low)[:, :k]
    r = jnp.take_along_axis(rank, nn_low, axis=1)
    t = jnp.sum(jnp.maximum(r - k, 0))
    return 1.0 - t * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))


def euclidean_distances(x):
    """(n, n) Euclidean distances between the rows of ``x`` (n, d).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import diagnostics
      >>> print(np.asarray(diagnostics.euclidean_distances(jnp.array([[0.0, 0.0], [3.0, 4.0]]))).round(3))
      [[0. 5.]
       [5. 0.]]
    """
    return jnp.sqrt(_sq_dists(x.reshape(x.shape[0], -1)))


def gradient_norms(key, params, cfg: model.Config, hp: model.Hparams, tokens, embeddings=None, tau=None):
    """Global norms of the gradient of the training loss (:func:`tokdyn.models.vtae.training.loss_fn`) on
    a batch, for the encoder's and the decoder's parameters.

    Args:
      key: PRNG key of the loss's draws.
      params: the model's parameters (``{"encoder", "decoder"}``).
      cfg: the model's :class:`~tokdyn.models.vtae.model.Config` (static).
      hp: its :class:`~tokdyn.models.vtae.model.Hparams` (traced).
      tokens: (B,) int token ids.
      embeddings: (V, E) semantic embeddings, when the model uses them.
      tau: the Gumbel temperature; default ``hp.tau_end``.

    Returns:
      ``(encoder_norm, decoder_norm)``, two scalars.
    """
    tau = hp.tau_end if tau is None else tau
    g = jax.grad(lambda p: training.loss_fn(key, p, cfg, hp, tokens, tau, embeddings)[0])(params)
    return optax.tree.norm(g["encoder"]), optax.tree.norm(g["decoder"])


@functools.partial(jax.jit, static_argnames=("cfg",))
def evaluate(key, params, cfg: model.Config, *, weights=None, embeddings=None, hparams=None, noise_std=0.1):
    """Every diagnostic of a model on its whole vocabulary, with deterministic encoding (the argmax for
    the sampling modes). One compiled program per configuration (``cfg`` is static; the other
    arguments, ``noise_std`` included, are traced).

    Args:
      key: PRNG key of the sensitivity noise and of the gradient's loss.
      params: the model's parameters.
      cfg: the model's :class:`~tokdyn.models.vtae.model.Config` (static).
      weights: optional (V,) corpus frequencies, for the per-occurrence numbers (default uniform).
      embeddings: (V, E) semantic embeddings, when the model uses them.
      hparams: the model's :class:`~tokdyn.models.vtae.model.Hparams` (default ``Hparams()``).
      noise_std: the standard deviation of the sensitivity noise.

    Returns:
      A dict of scalars: accuracy (per type), accuracy_occurrence, dominant_freq,
      dominant_freq_occurrence, collapsed (dominant_freq > 0.9), entropy (mean prediction entropy,
      nats), entropy_norm (/ ln V), loss (mean CE per type), loss_norm (/ ln V), uniqueness,
      min_hamming, pattern_std, sensitivity_kl (mean ``KL(p(x) || p(x + N(0, noise_std^2)))``),
      code_perplexity, code_usage, grad_norm_encoder and grad_norm_decoder (of the training loss on
      the whole vocabulary, at ``tau_end``).
    """
    V = cfg.vocab_size
    ids = jnp.arange(V)
    w = jnp.full((V,), 1.0 / V) if weights is None else jnp.asarray(weights, jnp.float32)
    hp = model.Hparams().astype() if hparams is None else hparams
    enc = model.encode(None, params, cfg, ids, embeddings=embeddings, deterministic=True)
    decode = functools.partial(model.decode, params, cfg)
    logits = decode(enc.x)  # (V, V)
    pred = jnp.argmax(logits, -1)
    ce = losses.cross_entropy(logits, ids)
    ent = losses.entropy(logits)
    k_sens, k_grad = jax.random.split(key)
    uniq, min_h = grid_uniqueness(enc.codes, cfg.colours)
    perp, usage = codebook_usage(enc.codes, cfg.colours, w)
    g_enc, g_dec = gradient_norms(k_grad, params, cfg, hp, ids, embeddings)
    dom = dominant_frequency(pred, V)
    lnv = jnp.log(float(V))
    return dict(
        accuracy=accuracy(pred, ids),
        accuracy_occurrence=accuracy(pred, ids, w),
        dominant_freq=dom,
        dominant_freq_occurrence=dominant_frequency(pred, V, w),
        collapsed=dom > COLLAPSE_THRESHOLD,
        entropy=jnp.mean(ent),
        entropy_norm=jnp.mean(ent) / lnv,
        loss=jnp.mean(ce),
        loss_norm=jnp.mean(ce) / lnv,
        uniqueness=uniq,
        min_hamming=min_h,
        pattern_std=pattern_std(enc.x),
        sensitivity_kl=jnp.mean(losses.sensitivity_kl(k_sens, decode, enc.x, noise_std)),
        code_perplexity=perp,
        code_usage=usage,
        grad_norm_encoder=g_enc,
        grad_norm_decoder=g_dec,
    )
