"""Encoders token -> grid: a table (or a linear map of a semantic embedding) gives per-cell
pre-activations ``z`` of shape (B, P, K), P = N*N cells (or a 1-D pattern of length P), and a
quantiser turns them into the decoder's input ``x`` (B, P, F) and the discrete colour of each cell
``codes`` (B, P).

Modes (registry :data:`MODES`):

- ``categorical``: sample each cell's colour from softmax(z); ``x`` is the one-hot sample, with no
  path for the gradient: the encoder learns by the score-function (REINFORCE) estimator, through
  ``logp`` (B,), the log-probability of the sampled grid.
- ``gumbel_soft``: ``x = softmax((z + g) / tau)``, g ~ Gumbel (relaxed, differentiable).
- ``gumbel_st``: forward the hard one-hot ``argmax(z + g)``, backward the soft gradient (straight-through).
- ``sigmoid``: continuous ``x = sigmoid(z)`` per cell and colour channel.
- ``vq``: ``z`` (B, P, D) snapped to the nearest of C codebook vectors, straight-through; the
  commitment loss ``|z - sg(e)|^2`` and codebook loss ``|sg(z) - e|^2`` are returned (with EMA
  codebook updates, see :func:`vq_ema_update`, the codebook loss is not used).
- ``fsq``: finite scalar quantisation: ``u = (C - 1) (1 + tanh z) / 2`` rounded to one of C levels,
  straight-through; ``x`` is the level rescaled to [-1, 1] (F = 1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MODES = ("categorical", "gumbel_soft", "gumbel_st", "sigmoid", "vq", "fsq")
DISCRETE_ONEHOT = ("categorical", "gumbel_soft", "gumbel_st")


def preact_dim(mode: str, colours: int, code_dim: int) -> int:
    """K, the per-cell width of the encoder's pre-activations.

    Examples:
      >>> from tokdyn.models.vtae import encoders
      >>> encoders.preact_dim("vq", 8, 4), encoders.preact_dim("fsq", 8, 4), encoders.preact_dim("gumbel_st", 8, 4)
      (4, 1, 8)
    """
    return {"vq": code_dim, "fsq": 1}.get(mode, colours)


def input_dim(mode: str, colours: int, code_dim: int) -> int:
    """F, the per-cell width of the decoder's input.

    Examples:
      >>> from tokdyn.models.vtae import encoders
      >>> encoders.input_dim("categorical", 8, 4), encoders.input_dim("fsq", 8, 4)
      (8, 1)
    """
    return {"vq": code_dim, "fsq": 1}.get(mode, colours)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Encoded:
    """What an encoder hands on.

    Attributes:
      x: (B, P, F) decoder input.
      codes: (B, P) int32 colour of each cell.
      logp: (B,) log-probability of the sampled grid (``categorical``; zeros otherwise).
      commit: () commitment loss (``vq``; 0 otherwise).
      codebook: () codebook loss (``vq``; 0 otherwise).
      z: (B, P, K) pre-activations.
    """

    x: jax.Array
    codes: jax.Array
    logp: jax.Array
    commit: jax.Array
    codebook: jax.Array
    z: jax.Array


def init_encoder(key, *, vocab_size, cells, mode, colours, code_dim=4, embed_dim=None, scale=1.0) -> dict:
    """The encoder's parameters.

    Args:
      key: PRNG key.
      vocab_size: V, the number of tokens.
      cells: P, the cells of a grid (N*N).
      mode: a name in :data:`MODES`.
      colours: C, the colours (the number of codebook vectors for ``vq``).
      code_dim: D, the width of a ``vq`` code.
      embed_dim: E, the width of a token's semantic embedding; None for a table.
      scale: the initial weights' standard deviation (the linear map's divided by sqrt(E)).

    Returns:
      ``{"table": (V, P, K)}`` when ``embed_dim`` is None, else a linear map of a token's embedding,
      ``{"w": (E, P*K), "b": (P*K,)}``; plus ``"codebook"`` (C, D) for ``vq``. K is :func:`preact_dim`.

    Examples:
      >>> import jax
      >>> from tokdyn.models.vtae import encoders
      >>> params = encoders.init_encoder(jax.random.key(0), vocab_size=5, cells=4, mode="vq", colours=3, code_dim=2)
      >>> params["table"].shape, params["codebook"].shape   # (V, P, D) and (C, D)
      ((5, 4, 2), (3, 2))
    """
    K = preact_dim(mode, colours, code_dim)
    k1, k2 = jax.random.split(key)
    if embed_dim is None:
        params = {"table": scale * jax.random.normal(k1, (vocab_size, cells, K))}
    else:
        params = {
            "w": scale * jax.random.normal(k1, (embed_dim, cells * K)) / jnp.sqrt(embed_dim),
            "b": jnp.zeros((cells * K,)),
        }
    if mode == "vq":
        params["codebook"] = jax.random.normal(k2, (colours, code_dim))
    return params


def preactivations(params, tokens, embeddings=None, *, width: int) -> jax.Array:
    """The pre-activations of ``tokens``.

    Args:
      params: the encoder's parameters (:func:`init_encoder`).
      tokens: (B,) int token ids.
      embeddings: (V, E) the tokens' semantic embeddings, used when ``params`` is a linear map.
      width: K, the per-cell width (static).

    Returns:
      (B, P, K) pre-activations.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import encoders
      >>> params = encoders.init_encoder(jax.random.key(0), vocab_size=5, cells=4, mode="vq", colours=3, code_dim=2)
      >>> encoders.preactivations(params, jnp.array([0, 3]), width=2).shape
      (2, 4, 2)
    """
    if "table" in params:
        return params["table"][tokens]
    e = embeddings[tokens]  # (B, E)
    return (e @ params["w"] + params["b"]).reshape(tokens.shape[0], -1, width)


def gumbel_softmax(key, z, tau, *, hard: bool):
    """Gumbel-softmax of logits ``z`` at temperature ``tau``.

    Args:
      key: PRNG key of the Gumbel noise.
      z: (..., C) logits.
      tau: the temperature, > 0 (may be traced).
      hard: static bool: the forward value is the one-hot argmax and the gradient that of the soft
        sample (straight-through).

    Returns:
      ``(y, idx)``: (..., C) the soft sample (with ``hard``, the one-hot carrying the soft gradient)
      and (...,) its argmax.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import encoders
      >>> y, idx = encoders.gumbel_softmax(jax.random.key(0), jnp.array([[0.0, 0.0, 5.0]]), 0.5, hard=True)
      >>> print(np.asarray(y), idx.tolist())
      [[0. 0. 1.]] [2]

    References:
      Jang, E., Gu, S. and Poole, B. (2017). Categorical reparameterization with Gumbel-softmax.
      *ICLR 2017*. arXiv:1611.01144.

      Maddison, C. J., Mnih, A. and Teh, Y. W. (2017). The concrete distribution: a continuous
      relaxation of discrete random variables. *ICLR 2017*. arXiv:1611.00712.
    """
    g = jax.random.gumbel(key, z.shape, z.dtype)
    y = jax.nn.softmax((z + g) / tau, axis=-1)
    if not hard:
        return y, jnp.argmax(y, -1)
    idx = jnp.argmax(y, -1)
    y_hard = jax.nn.one_hot(idx, z.shape[-1], dtype=z.dtype)
    return y_hard + (y - jax.lax.stop_gradient(y)), idx  # exactly y_hard forward


def fsq_quantize(z, levels: int):
    """Finite scalar quantisation of ``z`` to ``levels`` levels: returns (x in [-1, 1] with
    straight-through rounding, integer level in [0, levels)).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import encoders
      >>> x, level = encoders.fsq_quantize(jnp.array([-3.0, 0.0, 3.0]), 5)
      >>> print(np.asarray(x), level.tolist())
      [-1.  0.  1.] [0, 2, 4]

    References:
      Mentzer, F., Minnen, D., Agustsson, E. and Tschannen, M. (2024). Finite scalar quantization:
      VQ-VAE made simple. *ICLR 2024*. arXiv:2309.15505.
    """
    u = 0.5 * (levels - 1) * (1.0 + jnp.tanh(z))  # (..) in (0, levels - 1)
    r = jnp.round(u)
    q = u + jax.lax.stop_gradient(r - u)
    return 2.0 * q / (levels - 1) - 1.0, r.astype(jnp.int32)


def vq_quantize(z, codebook):
    """Nearest codebook vector per cell: z (..., D), codebook (C, D) -> (straight-through x,
    codes, commitment loss, codebook loss).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import encoders
      >>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0]])
      >>> x, codes, commit, cb = encoders.vq_quantize(jnp.array([[0.2, 0.1], [0.9, 1.2]]), codebook)
      >>> print(np.asarray(x), codes.tolist(), f"{float(commit):.3f}")   # mean of 0.05 and 0.05
      [[0. 0.]
       [1. 1.]] [0, 1] 0.050

    References:
      van den Oord, A., Vinyals, O. and Kavukcuoglu, K. (2017). Neural discrete representation
      learning. *NeurIPS 2017*. arXiv:1711.00937.
    """
    d = jnp.sum(z * z, -1, keepdims=True) - 2.0 * z @ codebook.T + jnp.sum(codebook * codebook, -1)  # (.., C)
    codes = jnp.argmin(d, -1)
    q = codebook[codes]  # (.., D)
    commit = jnp.mean(jnp.sum((z - jax.lax.stop_gradient(q)) ** 2, -1))
    cb = jnp.mean(jnp.sum((jax.lax.stop_gradient(z) - q) ** 2, -1))
    return z + jax.lax.stop_gradient(q - z), codes.astype(jnp.int32), commit, cb


def quantize(key, z, mode: str, tau, *, codebook=None, deterministic: bool = False) -> Encoded:
    """Turn pre-activations into the decoder's input and each cell's colour, by ``mode`` (the modes are
    in the module docstring).

    Args:
      key: PRNG key of the sampling modes; may be None with ``deterministic`` and for the other modes.
      z: (B, P, K) pre-activations.
      mode: a name in :data:`MODES` (static).
      tau: the Gumbel-softmax temperature (``gumbel_soft``, ``gumbel_st``; may be traced).
      codebook: (C, D) the ``vq`` codebook; for ``fsq``, the static number of levels.
      deterministic: static bool (evaluation): the sampling modes take the one-hot argmax instead of a
        sample.

    Returns:
      An :class:`Encoded`.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import encoders
      >>> z = jnp.array([[[0.0, 3.0], [2.0, -1.0]]])   # (B, P, K) = (1, 2, 2)
      >>> enc = encoders.quantize(None, z, "gumbel_st", 1.0, deterministic=True)   # the argmax
      >>> enc.codes.tolist(), enc.x.shape
      ([[1, 0]], (1, 2, 2))
    """
    if key is None and mode in DISCRETE_ONEHOT and not deterministic:
        raise ValueError(f"key must be a PRNG key for mode {mode!r} unless deterministic=True, got None")
    B = z.shape[0]
    zero = jnp.zeros((), z.dtype)
    logp = jnp.zeros((B,), z.dtype)
    commit = cb = zero
    if mode in DISCRETE_ONEHOT and deterministic:
        codes = jnp.argmax(z, -1)
        x = jax.nn.one_hot(codes, z.shape[-1], dtype=z.dtype)
    elif mode == "categorical":
        codes = jax.random.categorical(key, z, axis=-1)  # (B, P)
        x = jax.nn.one_hot(codes, z.shape[-1], dtype=z.dtype)
        logp = jnp.take_along_axis(jax.nn.log_softmax(z, -1), codes[..., None], -1)[..., 0].sum(-1)  # (B,)
    elif mode in ("gumbel_soft", "gumbel_st"):
        x, codes = gumbel_softmax(key, z, tau, hard=mode == "gumbel_st")
    elif mode == "sigmoid":
        x, codes = jax.nn.sigmoid(z), jnp.argmax(z, -1)
    elif mode == "vq":
        x, codes, commit, cb = vq_quantize(z, codebook)
    elif mode == "fsq":
        levels = codebook  # for fsq the "codebook" argument is the static number of levels
        x, codes = fsq_quantize(z[..., 0], levels)
        x = x[..., None]
    else:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    return Encoded(x=x, codes=codes.astype(jnp.int32), logp=logp, commit=commit, codebook=cb, z=z)


def temperature(step, n_steps, tau_start, tau_end):
    """Exponential temperature schedule: ``tau_start * (tau_end / tau_start) ** (step / (n_steps - 1))``.

    Args:
      step: the step (may be traced).
      n_steps: the number of steps.
      tau_start: the temperature at step 0.
      tau_end: the temperature at step ``n_steps - 1``.

    Returns:
      The temperature at ``step``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import encoders
      >>> print(np.asarray(encoders.temperature(jnp.array([0, 5, 10]), 11, 1.0, 0.01)).round(3))
      [1.   0.1  0.01]
    """
    frac = step / jnp.maximum(n_steps - 1, 1)
    return tau_start * (tau_end / tau_start) ** frac


def vq_ema_update(codebook, ema_count, ema_sum, z, codes, decay, *, key=None, dead_threshold=0.0):
    """EMA codebook update (van den Oord et al. 2017, appendix): per code, decayed counts and sums of the
    encoder outputs assigned to it; codebook = sum / count (Laplace-smoothed counts).

    Args:
      codebook: (C, D) the codebook.
      ema_count: (C,) the decayed counts.
      ema_sum: (C, D) the decayed sums.
      z: (M, D) this batch's encoder outputs.
      codes: (M,) int, each output's code.
      decay: the EMA decay, in [0, 1) (may be traced).
      key: optional PRNG key: codes whose EMA count falls below ``dead_threshold`` are then reset to
        random encoder outputs of this batch (their count to the threshold, at least 1e-3).
      dead_threshold: the count below which a code is dead (with ``key``).

    Returns:
      ``(codebook, ema_count, ema_sum)``, updated.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models.vtae import encoders
      >>> codebook = jnp.zeros((2, 1))
      >>> z, codes = jnp.array([[1.0], [3.0], [10.0]]), jnp.array([0, 0, 1])
      >>> new, count, total = encoders.vq_ema_update(codebook, jnp.zeros(2), jnp.zeros((2, 1)), z, codes, 0.0)
      >>> print(np.asarray(new).ravel().round(3), np.asarray(count))   # decay 0: each code's mean
      [ 2. 10.] [2. 1.]

    References:
      van den Oord, A., Vinyals, O. and Kavukcuoglu, K. (2017). Neural discrete representation
      learning. *NeurIPS 2017*. arXiv:1711.00937. (appendix: the EMA update).
    """
    C = codebook.shape[0]
    onehot = jax.nn.one_hot(codes, C, dtype=z.dtype)  # (M, C)
    n = onehot.sum(0)  # (C,)
    s = onehot.T @ z  # (C, D)
    ema_count = decay * ema_count + (1.0 - decay) * n
    ema_sum = decay * ema_sum + (1.0 - decay) * s
    total = ema_count.sum()
    smoothed = (ema_count + 1e-5) / (total + C * 1e-5) * total
    new = ema_sum / smoothed[:, None]
    if key is not None:
        dead = ema_count < dead_threshold  # (C,)
        pick = jax.random.randint(key, (C,), 0, z.shape[0])
        new = jnp.where(dead[:, None], z[pick], new)
        ema_sum = jnp.where(dead[:, None], z[pick] * jnp.maximum(dead_threshold, 1e-3), ema_sum)
        ema_count = jnp.where(dead, jnp.maximum(dead_threshold, 1e-3), ema_count)
    return new, ema_count, ema_sum
