"""A visual-token autoencoder: static :class:`Config`, traced :class:`Hparams`, and the pure
functions ``init(key, cfg) -> params``, ``encode(key, params, ...)`` and ``decode(params, ...)`` built from
:mod:`~tokdyn.models.vtae.encoders` and :mod:`~tokdyn.models.vtae.decoders`.

Cells: ``layout="grid"`` gives an N x N grid (P = N*N cells); ``layout="pattern"`` a 1-D
pattern of length ``grid`` (P = grid). Each cell holds one of C colours.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp

from tokdyn import _checks
from tokdyn.models.vtae import decoders, encoders
from tokdyn.train import optim

LAYOUTS = ("grid", "pattern")
ENCODER_INPUTS = ("table", "embedding")
SAMPLING = ("type", "occurrence")
EXTRA_LOSSES = ("sensitivity", "batch_entropy", "semantic")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of a model and its training (changes shapes or control flow).

    Attributes:
      vocab_size: V, the number of token types.
      grid: N: the grid has N*N cells (N cells with ``layout="pattern"``).
      colours: C, the colours a cell can take.
      mode: the quantiser, one of :data:`~tokdyn.models.vtae.encoders.MODES`.
      decoder: ``mlp`` or ``cnn`` (:data:`~tokdyn.models.vtae.decoders.DECODERS`).
      layout: ``grid`` (N x N) or ``pattern`` (1-D, length N).
      hidden: width of the MLP decoder's hidden layers.
      depth: number of hidden layers of the MLP decoder.
      channels: filters of each convolution of the CNN decoder.
      code_dim: D, the width of a ``vq`` code vector.
      encoder_input: ``table`` (free per-token parameters) or ``embedding`` (a linear map of a
        semantic embedding of width ``embed_dim``: semantic grounding).
      embed_dim: width of the embeddings (with ``encoder_input="embedding"`` or the ``semantic`` loss).
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        500 steps in compiled calls of 50 (the logging interval: a multiple of it) at a constant
        learning rate (``decay="constant"``), no warm-up (``warmup=0``), no clipping
        (``clip_norm=0``).
      batch_size: tokens per step.
      sampling: ``type`` (uniform over types) or ``occurrence`` (by the token weights).
      curriculum: start with ``curriculum_start`` types (the ones of lowest id) and grow linearly
        to V over the first ``curriculum_fraction`` of the steps.
      curriculum_start: types in play at step 0 with ``curriculum``.
      curriculum_fraction: share of the steps over which the curriculum reaches V.
      losses: extra loss terms, names from :data:`EXTRA_LOSSES`.
      vq_ema: ``vq`` codebook updated by exponential moving averages instead of its loss.
      dead_code_reset: with ``vq_ema``, move codes whose EMA count is low onto encoder outputs.
      init_scale: scale of the encoder's initial parameters.
    """

    vocab_size: int = 5
    grid: int = 3
    colours: int = 2
    mode: str = "gumbel_st"
    decoder: str = "mlp"
    layout: str = "grid"
    hidden: int = 64
    depth: int = 1
    channels: int = 16
    code_dim: int = 4
    encoder_input: str = "table"
    embed_dim: int | None = None
    train: optim.Config = optim.Config(steps=500, steps_per_call=50, warmup=0, decay="constant", clip_norm=0.0)
    batch_size: int = 64
    sampling: str = "type"
    curriculum: bool = False
    curriculum_start: int = 2
    curriculum_fraction: float = 0.5
    losses: tuple = ()
    vq_ema: bool = False
    dead_code_reset: bool = False
    init_scale: float = 1.0

    @property
    def cells(self) -> int:
        """P, the number of cells: N * N for ``layout='grid'``, N for ``layout='pattern'``."""
        return self.grid * self.grid if self.layout == "grid" else self.grid

    @property
    def width(self) -> int:
        """K, the per-cell width of the encoder's pre-activations."""
        return encoders.preact_dim(self.mode, self.colours, self.code_dim)

    @property
    def features(self) -> int:
        """F, the per-cell width of the decoder's input."""
        return encoders.input_dim(self.mode, self.colours, self.code_dim)

    @property
    def n_logs(self) -> int:
        """The number of logged points of a training curve (``train.calls``: one per compiled call)."""
        return self.train.calls

    def capacity_log10(self) -> float:
        """log10 of C^P, the number of distinct grids."""
        return self.cells * math.log10(self.colours)

    def validate(self) -> "Config":
        """Check every field (the training's through :meth:`tokdyn.train.optim.Config.validate`); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        _checks.positive_int("vocab_size", self.vocab_size, minimum=2)
        _checks.positive_int("grid", self.grid)
        _checks.positive_int("colours", self.colours, minimum=2)
        _checks.choice("mode", self.mode, encoders.MODES)
        _checks.choice("decoder", self.decoder, decoders.DECODERS)
        _checks.choice("layout", self.layout, LAYOUTS)
        _checks.choice("encoder_input", self.encoder_input, ENCODER_INPUTS)
        _checks.choice("sampling", self.sampling, SAMPLING)
        for name in ("hidden", "depth", "channels", "code_dim", "batch_size"):
            _checks.positive_int(name, getattr(self, name))
        optim.check("train", self.train)
        if self.decoder == "cnn" and self.layout != "grid":
            raise ValueError("decoder 'cnn' needs layout='grid', got layout='pattern'")
        if not isinstance(self.losses, tuple):
            raise TypeError(f"losses must be a tuple of names from {list(EXTRA_LOSSES)}, got {self.losses!r}")
        for name in self.losses:
            _checks.choice("losses", name, EXTRA_LOSSES)
        if (self.encoder_input == "embedding" or "semantic" in self.losses) and self.embed_dim is None:
            raise ValueError("embed_dim must be given with encoder_input='embedding' or the 'semantic' loss")
        if self.embed_dim is not None:
            _checks.positive_int("embed_dim", self.embed_dim)
        if self.curriculum:
            _checks.positive_int("curriculum_start", self.curriculum_start, minimum=1)
            _checks.real("curriculum_fraction", self.curriculum_fraction, low=0.0, high=1.0, low_open=True)
        if (self.vq_ema or self.dead_code_reset) and self.mode != "vq":
            raise ValueError(f"vq_ema and dead_code_reset need mode='vq', got mode={self.mode!r}")
        _checks.real("init_scale", self.init_scale, low=0.0, low_open=True)
        if self.capacity_log10() < math.log10(self.vocab_size) - 1e-12:
            warnings.warn(
                f"colours={self.colours} and grid={self.grid} ({self.layout}, {self.cells} cells) give "
                f"colours^cells = {self.colours**self.cells} distinct patterns < vocab_size={self.vocab_size}: "
                "some tokens must share a pattern, so perfect reconstruction is impossible",
                stacklevel=2,
            )
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters (vmap over any of them).

    Attributes:
      learning_rate: the (constant) Adam learning rate.
      tau_start: Gumbel temperature at the first step (exponential schedule).
      tau_end: Gumbel temperature at the last step.
      w_sensitivity: weight of the sensitivity hinge.
      sens_min: hinge level of the sensitivity KL.
      sens_noise: std of the input noise of the sensitivity KL.
      w_batch_entropy: weight of the batch-entropy term.
      w_semantic: weight of the semantic-alignment term.
      w_commit: weight of the VQ commitment loss.
      w_codebook: weight of the VQ codebook loss (without EMA).
      ema_decay: decay of the VQ EMA codebook updates.
      dead_threshold: a code is dead when its EMA count is below this fraction of the mean count.
    """

    learning_rate: jax.Array = 3e-3
    tau_start: jax.Array = 1.0
    tau_end: jax.Array = 0.3
    w_sensitivity: jax.Array = 1.0
    sens_min: jax.Array = 0.01
    sens_noise: jax.Array = 0.1
    w_batch_entropy: jax.Array = 0.1
    w_semantic: jax.Array = 1.0
    w_commit: jax.Array = 0.25
    w_codebook: jax.Array = 1.0
    ema_decay: jax.Array = 0.99
    dead_threshold: jax.Array = 0.05

    def validate(self) -> "Hparams":
        """Check the knobs when they are host numbers (positive learning rate and temperatures, non-negative
        weights, ``ema_decay`` in [0, 1)); raise ``ValueError`` naming the knob. Returns ``self``."""
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("tau_start", self.tau_start, low=0.0, low_open=True)
        _checks.real("tau_end", self.tau_end, low=0.0, low_open=True)
        for name in (
            "w_sensitivity",
            "sens_min",
            "sens_noise",
            "w_batch_entropy",
            "w_semantic",
            "w_commit",
            "w_codebook",
            "dead_threshold",
        ):
            _checks.real(name, getattr(self, name), low=0.0)
        _checks.real("ema_decay", self.ema_decay, low=0.0, high=1.0, high_open=True)
        return self

    def astype(self, dtype=jnp.float32) -> "Hparams":
        """These hyper-parameters with every leaf a JAX array of ``dtype``."""
        return jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), self)

    @staticmethod
    def stack(items) -> "Hparams":
        """Stack a sequence of Hparams along a new leading (model) axis."""
        return jax.tree_util.tree_map(lambda *v: jnp.stack([jnp.asarray(x, jnp.float32) for x in v]), *items)


def init(key, cfg: Config) -> dict:
    """Model parameters ``{"encoder": ..., "decoder": ...}``.

    Examples:
      >>> import jax
      >>> from tokdyn.models.vtae import model
      >>> cfg = model.Config(vocab_size=5, grid=2, colours=3, mode="gumbel_st", hidden=8)   # 2 x 2 grids
      >>> params = model.init(jax.random.key(0), cfg)
      >>> params["encoder"]["table"].shape   # (V, P, C)
      (5, 4, 3)
    """
    k1, k2 = jax.random.split(key)
    enc = encoders.init_encoder(
        k1,
        vocab_size=cfg.vocab_size,
        cells=cfg.cells,
        mode=cfg.mode,
        colours=cfg.colours,
        code_dim=cfg.code_dim,
        embed_dim=cfg.embed_dim if cfg.encoder_input == "embedding" else None,
        scale=cfg.init_scale,
    )
    dec = decoders.init_decoder(
        k2,
        cfg.decoder,
        cells=cfg.cells,
        features=cfg.features,
        vocab_size=cfg.vocab_size,
        hidden=cfg.hidden,
        depth=cfg.depth,
        channels=cfg.channels,
    )
    return {"encoder": enc, "decoder": dec}


def encode(key, params, cfg: Config, tokens, *, tau=1.0, embeddings=None, deterministic=False):
    """Encode tokens as cells: the encoder's pre-activations, quantised by ``cfg.mode``.
    Traceable, not jitted.

    Args:
      key: PRNG key of the sampling modes' noise; may be None only with ``deterministic``.
      params: the model's parameters (``init``; traced).
      cfg: the model's :class:`Config` (static).
      tokens: (B,) int token ids in ``[0, V)``.
      tau: the Gumbel-softmax temperature (``gumbel_soft``, ``gumbel_st``; may be traced).
      embeddings: (V, E) the tokens' semantic embeddings, with ``encoder_input="embedding"``.
      deterministic: static bool (evaluation): the sampling modes take the argmax, no draw.

    Returns:
      :class:`~tokdyn.models.vtae.encoders.Encoded`.

    Raises:
      ValueError: ``key`` is None without ``deterministic``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import model
      >>> cfg = model.Config(vocab_size=5, grid=2, colours=3, mode="gumbel_st", hidden=8)   # 2 x 2 grids
      >>> params = model.init(jax.random.key(0), cfg)
      >>> enc = model.encode(None, params, cfg, jnp.arange(5), deterministic=True)
      >>> enc.x.shape, enc.codes.shape   # one-hot cells, and their colours
      ((5, 4, 3), (5, 4))
    """
    if key is None and not deterministic:
        raise ValueError("key must be a PRNG key (jax.random.key(seed)) unless deterministic=True, got None")
    z = encoders.preactivations(params["encoder"], tokens, embeddings, width=cfg.width)  # (B, P, K)
    extra = params["encoder"].get("codebook") if cfg.mode == "vq" else cfg.colours
    return encoders.quantize(key, z, cfg.mode, tau, codebook=extra, deterministic=deterministic)


def decode(params, cfg: Config, x):
    """(B, V) logits of decoder input ``x`` (B, P, F).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models.vtae import model
      >>> cfg = model.Config(vocab_size=5, grid=2, colours=3, mode="gumbel_st", hidden=8)   # 2 x 2 grids
      >>> params = model.init(jax.random.key(0), cfg)
      >>> enc = model.encode(None, params, cfg, jnp.arange(5), deterministic=True)
      >>> model.decode(params, cfg, enc.x).shape   # (B, V) logits
      (5, 5)
    """
    return decoders.apply_decoder(cfg.decoder, params["decoder"], x)
