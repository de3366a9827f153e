"""The second stage of a visual-token language model: generative models over sequences of colour
grids, and the token-level baselines they are compared with, trained by the seed in one call.

Models (:data:`MODELS`): ``grid_ddpm`` (continuous DDPM over one-hot grids),
``grid_d3pm_uniform`` / ``grid_d3pm_absorbing`` (D3PM over the cells' colours),
``token_d3pm_uniform`` / ``token_d3pm_absorbing`` (D3PM over token ids) and ``token_ar`` (a causal
transformer), each over sequences of ``length`` positions, with a transformer (or, for single
grids, MLP) denoiser; the kernels live in :mod:`tokdyn.diffusion`. :func:`trainer` is the model's
:class:`tokdyn.train.Trainer` (``train.train_many(trainer(cfg), inputs(cfg, data), keys, hp)``
trains seeds x settings), :func:`train` one model; :func:`sample` draws sequences and
:func:`nll_bound` scores held-out ones.

Each model, the denoiser and the training in detail: :ref:`sequence-models`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn import _checks, diffusion
from tokdyn import train as train_layer
from tokdyn.models.vtae import corpus
from tokdyn.models.vtae import model as ae_model
from tokdyn.train import optim

MODELS = (
    "grid_ddpm",
    "grid_d3pm_uniform",
    "grid_d3pm_absorbing",
    "token_d3pm_uniform",
    "token_d3pm_absorbing",
    "token_ar",
)
ARCHITECTURES = ("transformer", "mlp")
ELEMENTS = ("cells", "grids")
SAMPLERS = ("ancestral", "ddim")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of one generative model and its training.

    Attributes:
      model: one of :data:`MODELS`.
      length: L, positions per sequence (1: single grids or tokens).
      cells: P, cells per grid (grid models).
      colours: C, colours per cell (grid models).
      vocab_size: V, token types (token models).
      T: diffusion steps.
      schedule: beta schedule (:data:`tokdyn.diffusion.SCHEDULES`); None picks the usual one:
        ``cosine`` for DDPM and the uniform kernel, ``absorbing`` for the absorbing kernel.
      architecture: ``transformer`` or ``mlp`` (:data:`ARCHITECTURES`).
      elements: what the transformer attends over in grid models: ``cells`` (every cell of every
        grid is an element: L * P elements, attention over positions and cells) or ``grids``
        (each grid is one element, its cells read and written by linear maps: L elements, the
        cost of a token model).
      width: model width D.
      depth: transformer blocks (hidden layers of the MLP).
      heads: attention heads.
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        2000 steps in compiled calls of 100 (the logging interval: a multiple of it), a linear
        warm-up of 100 steps (0: none), then a cosine decay to 10% of the peak, gradients clipped
        to global norm 1.
      batch_size: sequences per step.

    References:
      Ho, J., Jain, A. and Abbeel, P. (2020). Denoising diffusion probabilistic models. *NeurIPS
      2020*. arXiv:2006.11239 (``grid_ddpm``).

      Austin, J., Johnson, D. D., Ho, J., Tarlow, D. and van den Berg, R. (2021). Structured
      denoising diffusion models in discrete state-spaces. *NeurIPS 2021*. arXiv:2107.03006 (the
      D3PM models).
    """

    model: str = "grid_d3pm_absorbing"
    length: int = 10
    cells: int = 9
    colours: int = 3
    vocab_size: int = 29
    T: int = 200
    schedule: str | None = None
    architecture: str = "transformer"
    elements: str = "cells"
    width: int = 64
    depth: int = 2
    heads: int = 4
    train: optim.Config = optim.Config(
        steps=2000, steps_per_call=100, warmup=100, decay="cosine", final_fraction=0.1, clip_norm=1.0
    )
    batch_size: int = 64

    @property
    def on_grids(self) -> bool:
        """True for the models over colour grids (``grid_*``), False for the token-level ones."""
        return self.model.startswith("grid_")

    @property
    def continuous(self) -> bool:
        """True for the continuous (Gaussian) model, ``grid_ddpm``."""
        return self.model == "grid_ddpm"

    @property
    def kernel(self) -> str | None:
        """The D3PM kernel, ``'uniform'`` or ``'absorbing'``, or None for the continuous and autoregressive
        models."""
        return {"uniform": "uniform", "absorbing": "absorbing"}.get(self.model.rsplit("_", 1)[-1])

    @property
    def classes(self) -> int:
        """C for grid models, V for token models."""
        return self.colours if self.on_grids else self.vocab_size

    @property
    def sample_shape(self) -> tuple:
        """The shape of one sequence's integer data: (L, P) grids or (L,) tokens."""
        return (self.length, self.cells) if self.on_grids else (self.length,)

    @property
    def n_logs(self) -> int:
        """The number of logged points of a training curve (``train.calls``: one per compiled call)."""
        return self.train.calls

    def beta_schedule(self) -> str:
        """The noise schedule: ``schedule`` if given, else ``'absorbing'`` for the absorbing kernel and
        ``'cosine'`` otherwise."""
        if self.schedule is not None:
            return self.schedule
        return "absorbing" if self.kernel == "absorbing" else "cosine"

    def process(self):
        """The :class:`tokdyn.diffusion.Gaussian` or :class:`~tokdyn.diffusion.Discrete` process
        (None for ``token_ar``)."""
        if self.model == "token_ar":
            return None
        if self.continuous:
            return diffusion.gaussian(self.beta_schedule(), self.T)
        return diffusion.discrete(self.kernel, self.classes, self.beta_schedule(), self.T)

    def validate(self) -> "Config":
        """Check every field (the training's through :meth:`tokdyn.train.optim.Config.validate`); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        _checks.choice("model", self.model, MODELS)
        _checks.choice("architecture", self.architecture, ARCHITECTURES)
        _checks.choice("elements", self.elements, ELEMENTS)
        _checks.positive_int("length", self.length)
        _checks.positive_int("cells", self.cells)
        _checks.positive_int("colours", self.colours, minimum=2)
        _checks.positive_int("vocab_size", self.vocab_size, minimum=2)
        _checks.positive_int("T", self.T, minimum=2 if not self.continuous else 1)
        if self.schedule is not None:
            _checks.choice("schedule", self.schedule, diffusion.SCHEDULES)
            if self.continuous and self.schedule == "absorbing":
                raise ValueError("schedule must be 'linear' or 'cosine' for grid_ddpm, got 'absorbing'")
        for name in ("width", "depth", "heads", "batch_size"):
            _checks.positive_int(name, getattr(self, name))
        optim.check("train", self.train)
        if self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads={self.heads}, got {self.width}")
        if self.model == "token_ar" and self.architecture != "transformer":
            raise ValueError(f"architecture must be 'transformer' for token_ar, got {self.architecture!r}")
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters.

    Attributes:
      learning_rate: peak Adam learning rate.
      lam: weight of the auxiliary x_0 cross-entropy in the D3PM hybrid loss.
    """

    learning_rate: jax.Array = 2e-3
    lam: jax.Array = 0.01

    def validate(self) -> "Hparams":
        """Check the knobs when they are host numbers (a positive learning rate, ``lam`` >= 0); raise
        ``ValueError`` naming the knob. Returns ``self``."""
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("lam", self.lam, low=0.0)
        return self


# --- the network ----------------------------------------------------------------------------------------


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


# --- training -------------------------------------------------------------------------------------------

CURVES = ("loss", "grad_norm", "vb", "ce")


@functools.lru_cache(maxsize=64)
def trainer(cfg: Config) -> train_layer.Trainer:
    """The model's :class:`tokdyn.train.Trainer` (data: the ``(N, *sample_shape)`` integers;
    hyper-parameters: :class:`Hparams`): step t's key ``fold_in(run key, t)`` splits into the
    minibatch's (``batch_size`` rows of the data drawn with replacement) and the loss's. The same
    object for the same ``cfg``."""

    def batch(key, data, step):
        k_batch = jax.random.split(key)[0]
        return data[jax.random.randint(k_batch, (cfg.batch_size,), 0, data.shape[0])]

    def loss(params, x0, key, hp):
        return loss_fn(jax.random.split(key)[1], params, cfg, hp, x0)

    return train_layer.Trainer(cfg.train, init=lambda key, hp: init(key, cfg), loss=loss, batch=batch, name=cfg.model)


def _check_data(cfg: Config, data):
    want = cfg.sample_shape
    if tuple(np.shape(data)[1:]) != want or np.ndim(data) != len(want) + 1 or np.shape(data)[0] < 1:
        raise ValueError(
            f"data must have shape (N, {', '.join(map(str, want))}) for model {cfg.model!r} "
            f"(length={cfg.length}" + (f", cells={cfg.cells}" if cfg.on_grids else "") + f"), got {np.shape(data)}"
        )
    if _checks.dtype_of(data).kind not in "iu":
        raise TypeError(
            f"data must hold integer {'colours' if cfg.on_grids else 'token ids'}, got dtype {_checks.dtype_of(data)}"
        )
    if _checks.on_host(data):
        lo, hi = int(np.min(data)), int(np.max(data))
        if lo < 0 or hi >= cfg.classes:
            what = f"colours={cfg.colours}" if cfg.on_grids else f"vocab_size={cfg.vocab_size}"
            raise ValueError(f"data values must lie in [0, {what}), got range [{lo}, {hi}]")


def inputs(cfg: Config, data):
    """The training data, checked against ``cfg`` (shape, integer dtype, range), as int32."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.sequence.Config, got {type(cfg).__name__}")
    cfg.validate()
    _check_data(cfg, data)
    return jnp.asarray(data, jnp.int32)


def _check_train(key, cfg, hparams, data):
    _checks.prng_key("key", key)
    data = inputs(cfg, data)
    hparams = Hparams() if hparams is None else hparams
    hparams.validate()
    return dict(hparams=jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams), data=data)


@_checks.checked_jit(_check_train, static_argnames=("cfg",))
def train(key, cfg: Config, hparams: Hparams | None, data):
    """Train one model: :func:`tokdyn.train.make_train` of :func:`trainer`, jitted with ``cfg``
    static.

    Args:
      key: PRNG key of the run.
      cfg: the model's :class:`Config` (static).
      hparams: :class:`Hparams` (traced), or ``None`` for the defaults.
      data: ``(N, *sample_shape)`` integers in ``[0, cfg.classes)`` (:func:`inputs`).

    Returns:
      ``(state, curves)`` of :func:`tokdyn.train.make_train`.
    """
    return train_layer.make_train(trainer(cfg))(key, hparams, data)


# --- sampling -------------------------------------------------------------------------------------------


def _check_sample(key, params, cfg, n, sampler, ddim_steps):
    _checks.prng_key("key", key)
    cfg.validate()
    _checks.positive_int("n", n)
    _checks.choice("sampler", sampler, SAMPLERS)
    if sampler == "ddim":
        if not cfg.continuous:
            raise ValueError(f"sampler 'ddim' needs model='grid_ddpm', got model={cfg.model!r}")
        _checks.positive_int("ddim_steps", ddim_steps)
        if ddim_steps > cfg.T:
            raise ValueError(f"ddim_steps must be <= T={cfg.T}, got {ddim_steps}")


@_checks.checked_jit(_check_sample, static_argnames=("cfg", "n", "sampler", "ddim_steps"))
def sample(key, params, cfg: Config, n: int, sampler: str = "ancestral", ddim_steps: int = 50):
    """Draw sequences from a model. Jitted.

    ``grid_ddpm`` samples with T ancestral steps or ``ddim_steps`` DDIM steps, x_0 clipped to
    [-1, 1], then each cell takes its largest channel; D3PM models sample ancestrally, ``token_ar``
    token by token.

    Args:
      key: PRNG key.
      params: the network's parameters (traced).
      cfg: the model's :class:`Config` (static).
      n: the number of sequences, an int >= 1 (static).
      sampler: ``"ancestral"`` or ``"ddim"`` (static; ``"ddim"`` for ``grid_ddpm`` only).
      ddim_steps: DDIM steps, 1 <= ddim_steps <= T (static; used by ``"ddim"`` only).

    Returns:
      ``(n, *sample_shape)`` int32: colours for grid models, token ids otherwise.

    References:
      Ho, J., Jain, A. and Abbeel, P. (2020). Denoising diffusion probabilistic models. *NeurIPS
      2020*. arXiv:2006.11239 (``grid_ddpm``).

      Song, J., Meng, C. and Ermon, S. (2021). Denoising diffusion implicit models. *ICLR 2021*.
      arXiv:2010.02502 (``sampler="ddim"``).

      Austin, J., Johnson, D. D., Ho, J., Tarlow, D. and van den Berg, R. (2021). Structured
      denoising diffusion models in discrete state-spaces. *NeurIPS 2021*. arXiv:2107.03006 (the
      D3PM models).
    """
    proc = cfg.process()
    if cfg.model == "token_ar":

        def step(seq, args):
            i, k = args
            logits = apply(params, cfg, seq[:, :-1], jnp.zeros((n,), jnp.int32))[:, i]
            return seq.at[:, i + 1].set(jax.random.categorical(k, logits).astype(jnp.int32)), None

        seq = jnp.full((n, cfg.length + 1), cfg.vocab_size, jnp.int32)
        seq, _ = jax.lax.scan(step, seq, (jnp.arange(cfg.length), jax.random.split(key, cfg.length)))
        return seq[:, 1:]
    batched = lambda x, t: apply(params, cfg, x, jnp.full((n,), t, jnp.int32))
    if cfg.continuous:
        shape = (n, *cfg.sample_shape, cfg.colours)
        if sampler == "ddim":
            x = diffusion.ddim_sample(key, proc, batched, shape, ddim_steps, clip=1.0)
        else:
            x = diffusion.sample(key, proc, batched, shape, clip=1.0)
        return jnp.argmax(x, -1).astype(jnp.int32)
    return diffusion.sample_discrete(key, proc, batched, (n, *cfg.sample_shape))


def _check_nll(key, params, cfg, x0):
    _checks.prng_key("key", key)
    cfg.validate()
    if cfg.continuous:
        raise ValueError(
            "model 'grid_ddpm' has a density, not a probability: no likelihood comparable with the "
            "discrete models; use a D3PM or token model"
        )
    if tuple(np.shape(x0)[1:]) != cfg.sample_shape:
        raise ValueError(f"x0 must have shape (B, {', '.join(map(str, cfg.sample_shape))}), got {np.shape(x0)}")


@_checks.checked_jit(_check_nll, static_argnames=("cfg",))
def nll_bound(key, params, cfg: Config, x0):
    """Negative log-likelihood, or its bound, of sequences. Jitted. For grid models it bounds
    ``-log p`` of the grid sequence, hence of the token sequence the grids decode to; ``grid_ddpm``
    (a density) is refused with a ``ValueError``.

    Args:
      key: PRNG key of the bound's draws (unused by ``token_ar``).
      params: the network's parameters (traced).
      cfg: the model's :class:`Config` (static).
      x0: ``(B, *sample_shape)`` integer data.

    Returns:
      (B,) nats per sequence: the exact negative log-likelihood for ``token_ar``, the variational
      bound (:func:`tokdyn.diffusion.nll_bound`, one draw of x_t per t) for D3PM models.

    References:
      Austin, J., Johnson, D. D., Ho, J., Tarlow, D. and van den Berg, R. (2021). Structured
      denoising diffusion models in discrete state-spaces. *NeurIPS 2021*. arXiv:2107.03006 (the
      D3PM models).
    """
    b = x0.shape[0]
    if cfg.model == "token_ar":
        bos = jnp.full((b, 1), cfg.vocab_size, jnp.int32)
        logits = apply(params, cfg, jnp.concatenate([bos, x0[:, :-1]], 1), jnp.zeros((b,), jnp.int32))
        return optax.softmax_cross_entropy_with_integer_labels(logits, x0).sum(-1)
    proc = cfg.process()
    one = lambda k, x: diffusion.nll_bound(
        k, proc, lambda xt, t: apply(params, cfg, xt[None], jnp.reshape(t, (1,)))[0], x
    )
    return jax.vmap(one)(jax.random.split(key, b), x0)  # vmap batches the network calls of each t


# --- the first stage and decoding ---------------------------------------------------------------------

AE_LEARNING_RATE = 1e-2  # the grid autoencoder's peak learning rate (grid_autoencoder)


def grid_autoencoder(grid: int, colours: int, steps: int) -> ae_model.Config:
    """The first stage of the two-stage model: the configuration of a visual-token autoencoder from
    the grammar's vocabulary (:func:`tokdyn.models.vtae.corpus.grammar_vocab`) to ``grid`` x
    ``grid`` grids of ``colours`` colours (Gumbel straight-through encoder, MLP decoder, width 64,
    batch 64), trained for ``steps`` steps at a constant learning rate (:data:`AE_LEARNING_RATE`).
    Its grids (the encoder's codes of every token) are the data of the grid models; its decoder
    reads their samples back (:func:`decode_grids`)."""
    return ae_model.Config(
        vocab_size=len(corpus.grammar_vocab()[0]),
        grid=grid,
        colours=colours,
        mode="gumbel_st",
        decoder="mlp",
        hidden=64,
        batch_size=64,
        train=optim.Config(
            steps=steps,
            steps_per_call=steps // 10 if steps % 10 == 0 else steps,
            warmup=0,
            decay="constant",
            clip_norm=0.0,
        ),
    )


def decode_grids(ae_params, ae_cfg, colours):
    """``(tokens, confidence)``, each (n, L): every grid of ``colours`` (n, L, P) read by a trained
    autoencoder's decoder (``ae_cfg``: a :class:`tokdyn.models.vtae.Config` with a one-hot encoder
    mode): the decoder's most likely token (int32) and its probability. Traceable (under ``jit``,
    ``vmap``); the checks: the shape always, the colours' range when they are host data."""
    shape = np.shape(colours)
    if len(shape) != 3 or shape[2] != ae_cfg.cells:
        raise ValueError(f"colours must have shape (n, L, P={ae_cfg.cells}) to match the autoencoder, got {shape}")
    if _checks.on_host(colours) and np.size(colours):
        lo, hi = int(np.min(colours)), int(np.max(colours))
        if lo < 0 or hi >= ae_cfg.colours:
            raise ValueError(
                f"colours must lie in [0, {ae_cfg.colours}) to match the autoencoder's colours, got range [{lo}, {hi}]"
            )
    x = jax.nn.one_hot(jnp.asarray(colours).reshape(-1, ae_cfg.cells), ae_cfg.colours)
    probs = jax.nn.softmax(ae_model.decode(ae_params, ae_cfg, x), -1)
    tokens = jnp.argmax(probs, -1).astype(jnp.int32)
    return tokens.reshape(shape[:2]), jnp.max(probs, -1).reshape(shape[:2])
