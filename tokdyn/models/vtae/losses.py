"""Losses of the visual-token autoencoders (pure, per-example where it makes sense).

- :func:`cross_entropy`: reconstruction, (B,) per example.
- :func:`sensitivity_kl` / :func:`sensitivity_penalty`: the published sensitivity term, the KL
  between the decoder's predictions on clean and noised grids, ``KL(p_clean || p_noisy)``, and a
  hinge ``max(0, min_kl - mean KL)`` that penalises a decoder insensitive to its input.
- :func:`batch_entropy`: mean per-sample prediction entropy minus the entropy of the batch-mean
  prediction. Minimising it makes predictions confident *and* diverse across the batch (it is
  -I(token; prediction) for the batch's empirical distribution), the opposite of collapse.
- :func:`semantic_alignment`: mean squared difference between the cosine-similarity matrices of
  the grids and of the tokens' semantic embeddings, over distinct pairs in the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits, targets):
    """(B,) ``-log softmax(logits)[target]``; logits (B, V), targets (B,) int.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import losses
      >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
      >>> print(np.asarray(losses.cross_entropy(logits, jnp.array([0, 2]))).round(3))   # -log 0.5, -log 0.8
      [0.693 0.223]
    """
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.take_along_axis(logp, targets[:, None], -1)[:, 0]


def entropy(logits):
    """(B,) entropy (nats) of softmax(logits).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import losses
      >>> print(np.asarray(losses.entropy(jnp.zeros((1, 4)))).round(3))   # uniform over 4: log 4
      [1.386]
    """
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.sum(jnp.exp(logp) * logp, -1)


def kl_logits(logits_p, logits_q):
    """(B,) KL(softmax(p) || softmax(q)) in nats.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import losses
      >>> p, q = jnp.log(jnp.array([[0.5, 0.5]])), jnp.log(jnp.array([[0.9, 0.1]]))
      >>> print(np.asarray(losses.kl_logits(p, q)).round(3))   # 0.5 log(0.5 / 0.9) + 0.5 log(0.5 / 0.1)
      [0.511]
    """
    lp, lq = jax.nn.log_softmax(logits_p, -1), jax.nn.log_softmax(logits_q, -1)
    return jnp.sum(jnp.exp(lp) * (lp - lq), -1)


def sensitivity_kl(key, decode, x, noise_std):
    """The decoder's sensitivity to its input: ``KL(p(x) || p(x + noise))``, Gaussian noise on the
    decoder input.

    Args:
      key: PRNG key of the noise.
      decode: ``x -> (B, V)`` logits.
      x: (B, P, F) decoder inputs.
      noise_std: the noise's standard deviation (may be traced).

    Returns:
      (B,) KL divergences in nats.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import losses
      >>> import jax
      >>> x = jnp.ones((2, 3, 1))
      >>> kl = losses.sensitivity_kl(jax.random.key(0), lambda x: jnp.zeros((2, 5)), x, 0.1)
      >>> print(np.asarray(kl))   # a decoder that ignores its input has no sensitivity
      [0. 0.]
    """
    noisy = x + noise_std * jax.random.normal(key, x.shape, x.dtype)
    return kl_logits(decode(x), decode(noisy))


def sensitivity_penalty(kl, min_kl):
    """Hinge ``max(0, min_kl - mean(kl))``: zero once the decoder is sensitive enough.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import losses
      >>> print(f"{float(losses.sensitivity_penalty(jnp.array([0.1, 0.3]), 0.5)):.2f}")   # 0.5 - 0.2
      0.30
      >>> print(f"{float(losses.sensitivity_penalty(jnp.array([1.0]), 0.5)):.2f}")
      0.00
    """
    return jax.nn.relu(min_kl - jnp.mean(kl))


def batch_entropy(logits, weights=None):
    """Mean per-sample entropy minus entropy of the (weighted) mean prediction; logits (B, V).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import losses
      >>> confident_diverse = 20.0 * jnp.eye(2)   # each sample sure, and of a different token
      >>> print(f"{float(losses.batch_entropy(confident_diverse)):.3f}")   # about -log 2
      -0.693
      >>> print(f"{float(losses.batch_entropy(jnp.zeros((2, 2)))):.3f}")   # unsure: no information
      0.000
    """
    p = jax.nn.softmax(logits, -1)
    w = jnp.full(logits.shape[:1], 1.0 / logits.shape[0]) if weights is None else weights / jnp.sum(weights)
    mean_p = w @ p  # (V,)
    h_mean = -jnp.sum(jnp.where(mean_p > 0, mean_p * jnp.log(jnp.where(mean_p > 0, mean_p, 1.0)), 0.0))
    return w @ entropy(logits) - h_mean


def cosine_similarity_matrix(v, eps=1e-8):
    """(B, B) cosine similarities of rows of ``v`` (B, D).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import losses
      >>> print(np.asarray(losses.cosine_similarity_matrix(jnp.array([[1.0, 0.0], [1.0, 1.0]]))).round(3))
      [[1.    0.707]
       [0.707 1.   ]]
    """
    n = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)
    return n @ n.T


def semantic_alignment(grids, embeddings):
    """Mean squared difference of the off-diagonal cosine similarities of ``grids`` (B, ...)
    (flattened) and of ``embeddings`` (B, E).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import losses
      >>> grids = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])   # (2, 1, 2): orthogonal grids
      >>> print(f"{float(losses.semantic_alignment(grids, jnp.array([[1.0, 0.0], [0.0, 1.0]]))):.3f}")
      0.000
      >>> print(f"{float(losses.semantic_alignment(grids, jnp.array([[1.0, 0.0], [1.0, 0.0]]))):.3f}")
      1.000
    """
    B = grids.shape[0]
    sg = cosine_similarity_matrix(grids.reshape(B, -1))
    se = cosine_similarity_matrix(embeddings)
    off = 1.0 - jnp.eye(B)
    return jnp.sum(off * (sg - se) ** 2) / jnp.maximum(jnp.sum(off), 1.0)
