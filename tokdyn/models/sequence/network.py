"""The second-stage network (:class:`Network`: a transformer over cells, grids or tokens, or an MLP,
with a sinusoidal time embedding), its :func:`init` and :func:`apply`, and the training loss of a
batch (:func:`loss_fn`)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn import diffusion
from tokdyn.models.sequence.config import Config, Hparams


def time_embedding(t, width: int):
    """(..., width) sinusoidal embedding of (integer) diffusion times.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models import sequence
      >>> print(np.asarray(sequence.time_embedding(jnp.array([0, 1]), 4)).round(3))   # sines, then cosines
      [[0.    0.    1.    1.   ]
       [0.841 0.    0.54  1.   ]]

    References:
      Vaswani, A., Shazeer, N., Parmar, N., Uszkoreit, J., Jones, L., Gomez, A. N., Kaiser, L. and
      Polosukhin, I. (2017). Attention is all you need. *NeurIPS 2017*. arXiv:1706.03762.
    """
    half = width // 2
    freq = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / max(half - 1, 1))
    a = jnp.asarray(t, jnp.float32)[..., None] * freq
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)], -1)


class Block(nn.Module):
    """One pre-LN transformer block over ``x`` (B, n, D): self-attention (causal when ``causal``) and
    an MLP, each with a residual connection."""

    width: int
    heads: int
    causal: bool

    @nn.compact
    def __call__(self, x):  # (B, n, D)
        b, n, d = x.shape
        h, dh = self.heads, self.width // self.heads
        y = nn.LayerNorm(name="ln1")(x)
        qkv = nn.Dense(3 * d, name="qkv")(y).reshape(b, n, 3, h, dh)
        s = jnp.einsum("bqhd,bkhd->bhqk", qkv[:, :, 0], qkv[:, :, 1]) / np.sqrt(dh)
        if self.causal:
            s = jnp.where(jnp.tril(jnp.ones((n, n), bool)), s, jnp.finfo(s.dtype).min)
        o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), qkv[:, :, 2]).reshape(b, n, d)
        x = x + nn.Dense(d, name="out")(o)
        y = nn.LayerNorm(name="ln2")(x)
        return x + nn.Dense(d, name="fc2")(nn.gelu(nn.Dense(4 * d, name="fc1")(y)))


class Network(nn.Module):
    """``(x, t) -> output``: x is ``(B, *sample_shape)`` integer states, or (B, L, P, C) floats for
    ``grid_ddpm``; t (B,). Output ``(B, *sample_shape, C)`` (x_0 logits, or epsilon for DDPM)."""

    cfg: Config

    @nn.compact
    def __call__(self, x, t):
        c = self.cfg
        d, init = c.width, nn.initializers.normal(0.02)
        b = x.shape[0]
        out_dim = c.classes
        states = (
            c.classes
            if c.continuous
            else (c.classes + 1 if c.kernel == "absorbing" or c.model == "token_ar" else c.classes)
        )  # AR: + BOS
        if c.architecture == "mlp":
            h = x.reshape(b, -1) if c.continuous else jax.nn.one_hot(x, states).reshape(b, -1)
            h = nn.Dense(d * 4)(h) + nn.Dense(d * 4)(time_embedding(t, d))
            for _ in range(c.depth):
                h = nn.Dense(d * 4)(nn.gelu(h))
            y = nn.Dense(math.prod(c.sample_shape) * out_dim)(nn.gelu(h))
            return y.reshape((b, *c.sample_shape, out_dim))
        per_grid = c.on_grids and c.elements == "grids"
        if per_grid:  # one element per grid: its cells flattened, then a linear map
            cells = x if c.continuous else jax.nn.one_hot(x, states)
            e = nn.Dense(d, name="grid_in")(cells.reshape(b, c.length, -1))  # (B, L, D)
        elif c.continuous:
            e = nn.Dense(d, name="cell_in")(x)  # (B, L, P, D)
        else:
            e = nn.Embed(states, d, embedding_init=init, name="state")(x)
        rank = 1 if per_grid else len(c.sample_shape)
        e = e + nn.Embed(c.length, d, embedding_init=init, name="position")(jnp.arange(c.length)).reshape(
            (c.length,) + (1,) * (rank - 1) + (d,)
        )
        if c.on_grids and not per_grid:
            e = e + nn.Embed(c.cells, d, embedding_init=init, name="cell")(jnp.arange(c.cells))
        h = e.reshape(b, -1, d)
        if c.model != "token_ar":
            te = nn.Dense(d, name="t2")(nn.gelu(nn.Dense(d, name="t1")(time_embedding(t, d))))
            h = h + te[:, None, :]
        for i in range(c.depth):
            h = Block(d, c.heads, c.model == "token_ar", name=f"block{i}")(h)
        y = nn.Dense(out_dim * (c.cells if per_grid else 1), name="head")(nn.LayerNorm(name="ln_f")(h))
        return y.reshape((b, *c.sample_shape, out_dim))


def init(key, cfg: Config) -> dict:
    """The network's parameters."""
    x = jnp.zeros(
        (1, *cfg.sample_shape, cfg.colours) if cfg.continuous else (1, *cfg.sample_shape),
        jnp.float32 if cfg.continuous else jnp.int32,
    )
    return Network(cfg).init(key, x, jnp.zeros((1,), jnp.int32))


def apply(params, cfg: Config, x, t):
    """The denoiser (or the autoregressive transformer) on a batch. Traceable, not jitted: no
    checks.

    Args:
      params: the network's parameters (:func:`init`; traced).
      cfg: the model's :class:`Config` (static).
      x: ``(B, *sample_shape)`` integer states, or for ``grid_ddpm`` ``(B, *sample_shape, C)``
        floats (the noisy one-hot grids).
      t: (B,) int32 diffusion times (ignored by ``token_ar``).

    Returns:
      ``(B, *sample_shape, C)`` with C = ``cfg.classes``: the predicted noise for ``grid_ddpm``,
      logits otherwise.
    """
    return Network(cfg).apply(params, x, t)


def count_params(params) -> int:
    """The number of scalar parameters in the pytree ``params``.

    Examples:
      >>> import numpy as np
      >>> from tokdyn.models import sequence
      >>> sequence.count_params({"w": np.zeros((3, 4)), "b": np.zeros(4)})
      16
    """
    return int(sum(np.size(v) for v in jax.tree_util.tree_leaves(params)))


# --- losses -------------------------------------------------------------------------------------------


def grid_signal(colours, n_colours: int):
    """(..., C) the one-hot grid scaled to [-1, 1]: the data of ``grid_ddpm``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tokdyn.models import sequence
      >>> print(np.asarray(sequence.grid_signal(jnp.array([0, 2]), 3)))   # two cells of 3 colours
      [[ 1. -1. -1.]
       [-1. -1.  1.]]
    """
    return 2.0 * jax.nn.one_hot(colours, n_colours, dtype=jnp.float32) - 1.0


def loss_fn(key, params, cfg: Config, hp: Hparams, x0):
    """The training loss of a batch: not jitted, no checks (it runs inside the training step).

    Args:
      key: PRNG key of the diffusion times and the forward noise (unused by ``token_ar``).
      params: the network's parameters (traced; differentiated).
      cfg: the model's :class:`Config` (static).
      hp: :class:`Hparams` (traced; ``lam`` weighs the D3PM hybrid loss's cross-entropy).
      x0: ``(B, *sample_shape)`` integer data.

    Returns:
      ``(loss, logs)``: the scalar loss (the epsilon MSE for ``grid_ddpm``, the hybrid loss for
      D3PM models, the cross-entropy for ``token_ar``) and a dict of scalars ``vb`` and ``ce``.
    """
    b = x0.shape[0]
    proc = cfg.process()
    if cfg.model == "token_ar":
        bos = jnp.full((b, 1), cfg.vocab_size, jnp.int32)
        logits = apply(params, cfg, jnp.concatenate([bos, x0[:, :-1]], 1), jnp.zeros((b,), jnp.int32))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, x0)
        return jnp.mean(ce), dict(vb=jnp.mean(ce), ce=jnp.mean(ce))
    k_t, k_x = jax.random.split(key)
    t = jax.random.randint(k_t, (b,), 1, cfg.T + 1)
    keys = jax.random.split(k_x, b)
    if cfg.continuous:
        x_t, eps = jax.vmap(lambda k, x, tt: diffusion.q_sample(k, proc, x, tt))(keys, grid_signal(x0, cfg.colours), t)
        mse = jnp.mean((apply(params, cfg, x_t, t) - eps) ** 2)
        return mse, dict(vb=mse, ce=mse)
    x_t = jax.vmap(lambda k, x, tt: diffusion.q_sample_discrete(k, proc, x, tt))(keys, x0, t)
    logits = apply(params, cfg, x_t, t)
    loss, vb, ce = jax.vmap(lambda x, xt, tt, lg: diffusion.hybrid_loss(proc, x, xt, tt, lg, hp.lam))(
        x0, x_t, t, logits
    )
    return jnp.mean(loss), dict(vb=jnp.mean(vb), ce=jnp.mean(ce))
