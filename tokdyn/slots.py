"""A learned Slot Attention (Locatello et al., 2020) and its object-discovery autoencoder, trained
with optax, vmapped over seeds and sharded over the local devices: the learned counterpart of the
fixed token dynamics of :mod:`tokdyn.dynamics`.

The module (:class:`SlotAttention`), as in the paper:

* LayerNorm on the inputs; keys and values by linear maps without bias;
* K slots drawn from a learned Gaussian, ``mu + exp(log_sigma) * z`` with ``z ~ N(0, I)``
  (reparameterised: gradients reach ``mu`` and ``log_sigma``);
* each iteration: LayerNorm on the slots, queries ``q = W_q LN(slots)`` (no bias), logits
  ``k q^T / sqrt(D)``, softmax over the *slots* (slots compete for every input), ``+ 1e-8``, then
  normalised over the inputs: the update of each slot is the weighted mean of the values; a GRU
  takes the previous slot and the update, and a residual MLP (on LayerNorm'd slots) follows.
* ``implicit=True``: "Object Representations as Fixed Points" (Chang et al., 2022): the first
  ``iterations - 1`` iterations run without gradients (``stop_gradient`` on their result), and only
  the last one is differentiated: the gradient of a fixed point to first order, at the memory
  and compute of one iteration. (The slots' initial distribution then receives no gradient.)

The autoencoder (:class:`Autoencoder`): a small CNN encoder (``encoder_channels``, square kernels
of side ``encoder_kernel``, ReLU) with a learned position embedding (a linear map of the 4-channel grid ``(y, x, 1 - y,
1 - x)`` added to the features), LayerNorm and a two-layer MLP, then Slot Attention; a spatial-
broadcast decoder gives every slot an RGB image and an alpha logit per pixel, the alphas are
normalised over slots (softmax) and mix the RGBs into the reconstruction. The loss is the mean
squared error; the predicted segmentation is the argmax of the alphas. Three decoders:
``"mlp"`` (each pixel from the slot and its position embedding through an MLP: no convolution,
cheap on a CPU), ``"conv"`` (the same broadcast at full resolution, then two 3 x 3 convolutions:
the spatial-broadcast decoder of Watters et al., 2019) and ``"cnn"`` (broadcast on an 8 x 8 grid,
transposed convolutions up to the image size, as the paper's decoder).

Training (:func:`train_many`): every seed's model in one compiled function that runs
one optimiser step of every model, called ``steps_per_call`` times per checkpoint from Python (not
scanned: see :func:`step_fn`), the models vmapped and split over the local devices
(:func:`tokdyn.execute.sharded_map`) or, on a CPU, one compiled call per model (see
:func:`strategy_for`); each step draws a batch from a pool of
images with ``fold_in(run key, step)``; optax Adam with a linear warm-up and a
cosine decay, gradients clipped to a global norm. The Python loop only checkpoints (atomically,
after every call: a killed run resumes from its last checkpoint with identical results), logs and
shows progress.

Collapse, in the vocabulary of the fixed dynamics (:func:`collapse`): *duplicate* slots (closer
than the package's merge tolerance, :func:`tokdyn.dynamics.token_groups`) and *unused* slots (no
pixel in the predicted segmentation).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from tokdyn import _checks, dynamics, execute, io, metrics

DECODERS = ("mlp", "conv", "cnn")
EPS = 1e-8  # added to every attention weight before normalising over the inputs (as the paper)
FINAL_FRACTION = 0.05  # the cosine decay ends at this fraction of the peak learning rate
CURVES = ("loss", "grad_norm")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the model and its training (hashable: a static argument).

    Attributes:
      size: image side (images are size x size x 3, values in [0, 1]).
      slots: K, the number of slots.
      iterations: Slot Attention iterations.
      slot_size: D, the width of slots, keys, queries and values.
      mlp_hidden: hidden width of the slots' residual MLP.
      encoder_channels: channels of the CNN encoder's convolutions (the last is the inputs' width).
      encoder_kernel: side of the encoder's square convolution kernels.
      decoder: spatial-broadcast decoder, mlp (per-pixel MLP) | conv (3 x 3 convolutions at full
        resolution) | cnn (8 x 8 broadcast, transposed convolutions).
      decoder_hidden: hidden width (mlp) or channels (cnn) of the decoder.
      implicit: implicit differentiation: only the last iteration is differentiated.
      steps: optimiser steps per model (a multiple of steps_per_call; the schedule decays over it).
      batch_size: images per step, drawn with replacement from the pool.
      warmup: steps of linear learning-rate warm-up before the cosine decay.
      clip_norm: gradients are clipped to this global norm.
      steps_per_call: optimiser steps per compiled call (the checkpoint interval).
      seeds: models trained together (seed s has run key fold_in(key(root_seed), s)).
      root_seed: root PRNG seed of every model's initial parameters, batches and slot noise.
    """

    size: int = 32
    slots: int = 5
    iterations: int = 3
    slot_size: int = 64
    mlp_hidden: int = 128
    encoder_channels: tuple = (32, 32, 32)
    encoder_kernel: int = 5
    decoder: str = "mlp"
    decoder_hidden: int = 64
    implicit: bool = False
    steps: int = 4000
    batch_size: int = 32
    warmup: int = 200
    clip_norm: float = 1.0
    steps_per_call: int = 100
    seeds: int = 4
    root_seed: int = 0

    def validate(self) -> "Config":
        for name in ("size", "slots", "iterations", "slot_size", "mlp_hidden", "encoder_kernel", "decoder_hidden", "steps",
                     "batch_size", "steps_per_call", "seeds"):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("warmup", self.warmup, minimum=0)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        _checks.real("clip_norm", self.clip_norm, low=0.0, low_open=True)
        _checks.choice("decoder", self.decoder, DECODERS)
        if not isinstance(self.implicit, bool):
            raise TypeError(f"implicit must be a bool, got {self.implicit!r}")
        channels = tuple(self.encoder_channels)
        if not channels or any(not isinstance(c, (int, np.integer)) or c < 1 for c in channels):
            raise ValueError(f"encoder_channels must be a non-empty tuple of positive ints, got {self.encoder_channels!r}")
        if self.decoder == "cnn" and (self.size % 8 or self.size < 8):
            raise ValueError(f"decoder='cnn' upsamples an 8 x 8 grid by powers of 2: size must be 8 * 2^j, got {self.size}")
        if self.decoder == "cnn" and (self.size // 8) & (self.size // 8 - 1):
            raise ValueError(f"decoder='cnn' upsamples an 8 x 8 grid by powers of 2: size must be 8 * 2^j, got {self.size}")
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps must be a multiple of steps_per_call={self.steps_per_call}, got {self.steps}")
        return self

    @property
    def warmup_steps(self) -> int:
        return min(self.warmup, self.steps - 1) or 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters (a float each, or one value per model).

    Attributes:
      learning_rate: peak Adam learning rate (after warm-up; decays to 5% of it).
    """

    learning_rate: jax.Array | float = 4e-4

    def validate(self) -> "Hparams":
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        return self

    def broadcast(self, n: int) -> "Hparams":
        """Every leaf as an (n,) float32 array (scalars repeated)."""
        return jax.tree_util.tree_map(lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,)), self)


# ---------------------------------------------------------------------------------------------- the model


def position_grid(height: int, width: int):
    """(H, W, 4) the paper's position channels ``(y, x, 1 - y, 1 - x)``, y and x in [0, 1]."""
    y, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, height), jnp.linspace(0.0, 1.0, width), indexing="ij")
    return jnp.stack([y, x, 1.0 - y, 1.0 - x], axis=-1)


class SlotAttention(nn.Module):
    """Slot Attention over ``inputs`` (B, N, C) with slot noise ``z`` (B, K, D) ~ N(0, I).
    Returns ``(slots (B, K, D), attention (B, N, K))``: the last iteration's attention, softmaxed
    over slots (each input's weights sum to 1)."""

    n_slots: int
    iterations: int
    slot_size: int
    mlp_hidden: int
    implicit: bool = False

    @nn.compact
    def __call__(self, inputs, z):
        D = self.slot_size
        x = nn.LayerNorm(name="norm_inputs")(inputs)
        k = nn.Dense(D, use_bias=False, name="to_k")(x)  # (B, N, D)
        v = nn.Dense(D, use_bias=False, name="to_v")(x)
        mu = self.param("mu", nn.initializers.xavier_uniform(), (1, D))
        log_sigma = self.param("log_sigma", nn.initializers.xavier_uniform(), (1, D))
        slots = mu + jnp.exp(log_sigma) * z  # (B, K, D)
        norm_slots, to_q = nn.LayerNorm(name="norm_slots"), nn.Dense(D, use_bias=False, name="to_q")
        gru = nn.GRUCell(D, name="gru")
        norm_mlp = nn.LayerNorm(name="norm_mlp")
        mlp = nn.Sequential([nn.Dense(self.mlp_hidden, name="mlp_in"), nn.relu, nn.Dense(D, name="mlp_out")])

        def iterate(slots):
            q = to_q(norm_slots(slots)) * D ** -0.5  # (B, K, D)
            attn = jax.nn.softmax(jnp.einsum("bnd,bkd->bnk", k, q), axis=-1) + EPS  # (B, N, K)
            weights = attn / jnp.sum(attn, axis=1, keepdims=True)  # normalised over the inputs
            updates = jnp.einsum("bnk,bnd->bkd", weights, v)
            slots, _ = gru(slots, updates)
            return slots + mlp(norm_mlp(slots)), attn

        attn = None
        for i in range(self.iterations):
            if self.implicit and i == self.iterations - 1:
                slots = jax.lax.stop_gradient(slots)
            slots, attn = iterate(slots)
        return slots, attn


class Outputs(NamedTuple):
    """What :func:`apply` returns for a batch of B images (K slots, H x W pixels).

    Attributes:
      recon: (B, H, W, 3) the reconstruction.
      rgb: (B, K, H, W, 3) each slot's image.
      alpha: (B, K, H, W) each slot's mask, softmaxed over slots.
      slots: (B, K, D) the final slots.
      attention: (B, H * W, K) the last iteration's attention (softmax over slots).
      labels: (B, H, W) int32 predicted segmentation: the argmax of ``alpha`` over slots.
    """

    recon: jax.Array
    rgb: jax.Array
    alpha: jax.Array
    slots: jax.Array
    attention: jax.Array
    labels: jax.Array


class Autoencoder(nn.Module):
    """Encoder -> Slot Attention -> spatial-broadcast decoder (see the module docstring)."""

    cfg: Config

    @nn.compact
    def __call__(self, images, z) -> Outputs:
        cfg = self.cfg
        B, H, W, _ = images.shape
        pos = position_grid(H, W)
        h = images
        for i, c in enumerate(cfg.encoder_channels):
            h = nn.relu(nn.Conv(c, (cfg.encoder_kernel,) * 2, padding="SAME", name=f"conv{i}")(h))
        C = cfg.encoder_channels[-1]
        h = h + nn.Dense(C, name="enc_pos")(pos)
        h = nn.LayerNorm(name="enc_norm")(h.reshape(B, H * W, C))
        h = nn.Dense(C, name="enc_mlp1")(nn.relu(nn.Dense(C, name="enc_mlp0")(h)))
        slots, attn = SlotAttention(cfg.slots, cfg.iterations, cfg.slot_size, cfg.mlp_hidden, cfg.implicit,
                                    name="slot_attention")(h, z)
        K, F = cfg.slots, cfg.decoder_hidden
        if cfg.decoder == "mlp":
            d = nn.Dense(F, name="dec_slot")(slots)[:, :, None, None, :] + nn.Dense(F, name="dec_pos")(pos)
            d = nn.relu(d)  # (B, K, H, W, F)
            d = nn.relu(nn.Dense(F, name="dec_hidden0")(d))
            d = nn.relu(nn.Dense(F, name="dec_hidden1")(d))
            out = nn.Dense(4, name="dec_out")(d)  # (B, K, H, W, 4)
        elif cfg.decoder == "conv":
            d = nn.Dense(F, name="dec_slot")(slots)[:, :, None, None, :] + nn.Dense(F, name="dec_pos")(pos)
            d = nn.relu(d).reshape(B * K, H, W, F)
            d = nn.relu(nn.Conv(F, (3, 3), padding="SAME", name="dec_conv0")(d))
            d = nn.relu(nn.Conv(F, (3, 3), padding="SAME", name="dec_conv1")(d))
            out = nn.Conv(4, (3, 3), padding="SAME", name="dec_out")(d).reshape(B, K, H, W, 4)
        else:
            g = 8
            d = jnp.broadcast_to(slots[:, :, None, None, :], (B, K, g, g, cfg.slot_size)).reshape(B * K, g, g, -1)
            d = d + nn.Dense(cfg.slot_size, name="dec_pos")(position_grid(g, g))
            while g < H:
                d = nn.relu(nn.ConvTranspose(F, (5, 5), strides=(2, 2), padding="SAME", name=f"dec_up{g}")(d))
                g *= 2
            d = nn.relu(nn.Conv(F, (5, 5), padding="SAME", name="dec_conv")(d))
            out = nn.Conv(4, (3, 3), padding="SAME", name="dec_out")(d).reshape(B, K, H, W, 4)
        rgb, alpha = out[..., :3], jax.nn.softmax(out[..., 3], axis=1)
        recon = jnp.sum(alpha[..., None] * rgb, axis=1)
        labels = jnp.argmax(alpha, axis=1).astype(jnp.int32)
        return Outputs(recon, rgb, alpha, slots, attn, labels)


def slot_noise(key, cfg: Config, batch: int):
    """(batch, K, D) standard-normal noise of the slots' initial draw."""
    return jax.random.normal(key, (batch, cfg.slots, cfg.slot_size))


def init(key, cfg: Config) -> dict:
    """Parameters of the autoencoder (``{"params": ...}``, flax's layout)."""
    images = jnp.zeros((1, cfg.size, cfg.size, 3))
    return Autoencoder(cfg).init(key, images, slot_noise(key, cfg, 1))


def _check_images(name, images, size):
    if np.ndim(images) != 4 or np.shape(images)[0] < 1 or np.shape(images)[1:] != (size, size, 3):
        raise ValueError(f"{name} must have shape (B, {size}, {size}, 3) with B >= 1 (RGB images of the config's size), "
                         f"got {np.shape(images)}")
    if _checks.dtype_of(images).kind != "f":
        raise TypeError(f"{name} must hold floats in [0, 1], got dtype {_checks.dtype_of(images)}")
    if _checks.on_host(images):
        lo, hi = float(np.min(images)), float(np.max(images))
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"{name} values must lie in [0, 1], got range [{lo}, {hi}]")


def _check_apply(params, cfg, images, key):
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.slots.Config, got {type(cfg).__name__}")
    cfg.validate()
    if not hasattr(images, "shape"):  # nested lists: as an array, checked like one
        images = np.asarray(images)
    _check_images("images", images, cfg.size)
    _checks.prng_key("key", key)
    return dict(images=images)


@_checks.checked_jit(_check_apply, static_argnames=("cfg",))
def apply(params, cfg: Config, images, key) -> Outputs:
    """Run the autoencoder on ``images`` (B, size, size, 3) in [0, 1]; ``key`` draws the slots'
    initial noise (:func:`slot_noise`)."""
    return Autoencoder(cfg).apply(params, images, slot_noise(key, cfg, images.shape[0]))


def loss_fn(params, cfg: Config, images, key):
    """Mean squared reconstruction error of a batch, and the outputs."""
    out = Autoencoder(cfg).apply(params, images, slot_noise(key, cfg, images.shape[0]))
    return jnp.mean((out.recon - images) ** 2), out


def collapse(slots, labels, merge_tol=dynamics.DEFAULT_MERGE_TOL):
    """``(duplicates, unused)`` of one image's slots (K, D) and segmentation labels (any shape,
    values in [0, K)): slots merged into another by :func:`tokdyn.dynamics.token_groups` at
    ``merge_tol`` (K - number of groups), and slots that own no pixel. vmap over images."""
    K = slots.shape[0]
    _, groups = dynamics.token_groups(slots, merge_tol)
    return K - groups, K - metrics.n_used(jnp.ravel(labels), K)


# ---------------------------------------------------------------------------------------------- training


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """One model's training state.

    Attributes:
      params: the autoencoder's parameters.
      opt_state: the optimiser's state.
      hparams: the model's :class:`Hparams` (float32 leaves).
      step: () int32 optimiser steps taken.
      nan_step: () int32 first step whose loss or gradient was not finite (-1: none).
    """

    params: dict
    opt_state: optax.OptState
    hparams: Hparams
    step: jax.Array
    nan_step: jax.Array


def schedule(cfg: Config, peak) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak`` (may be traced) over ``cfg.warmup_steps``, then a cosine
    decay to ``FINAL_FRACTION * peak`` at ``cfg.steps``."""
    warm = cfg.warmup_steps
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm),
                                 optax.cosine_decay_schedule(peak, cfg.steps - warm, alpha=FINAL_FRACTION)], [warm])


def optimizer(cfg: Config, hparams: Hparams) -> optax.GradientTransformation:
    """Gradients clipped to ``cfg.clip_norm``, then Adam with :func:`schedule`."""
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(schedule(cfg, hparams.learning_rate)))


def init_state(key, cfg: Config, hparams: Hparams) -> TrainState:
    """A model before its first step: parameters from ``fold_in(key, -1)`` (``key``: the seed's run
    key, :func:`seed_keys`). Traceable; vmap it over keys and settings."""
    hp = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams)
    params = init(jax.random.fold_in(key, 2 ** 31 - 1), cfg)
    return TrainState(params, optimizer(cfg, hp).init(params), hp, jnp.int32(0), jnp.int32(-1))


def train_step(cfg: Config, state: TrainState, images, key):
    """One optax update on ``images`` (B, H, W, 3); ``key`` draws the slot noise. Returns the new
    state and the logs (:data:`CURVES`)."""
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, cfg, images, key)
    updates, opt_state = optimizer(cfg, state.hparams).update(grads, state.opt_state, state.params)
    gn = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(gn)
    nan_step = jnp.where((state.nan_step < 0) & ~finite, state.step, state.nan_step)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.hparams, state.step + 1, nan_step), dict(loss=loss, grad_norm=gn)


def draw_step(cfg: Config, key, step, pool):
    """Step ``step``'s batch (``cfg.batch_size`` images drawn with replacement from ``pool``) and
    slot-noise key, both from ``fold_in(key, step)``."""
    k_batch, k_noise = jax.random.split(jax.random.fold_in(key, step))
    idx = jax.random.randint(k_batch, (cfg.batch_size,), 0, pool.shape[0])
    return pool[idx], k_noise


@functools.lru_cache(maxsize=32)
def step_fn(cfg: Config) -> Callable:
    """The per-model ``fn(pool, (state, key)) -> (state, logs)`` of one optimiser step (its batch from
    :func:`draw_step`), for :func:`tokdyn.execute.sharded_map` (one object per config, so its
    compilation is reused).

    :func:`train_many` calls it ``steps_per_call`` times from Python rather than scanning it:
    XLA:CPU runs the weight gradient of a convolution inside a ``while`` loop (``lax.scan``,
    ``lax.map``, ``fori_loop``) tens of times slower than outside one (jax-ml/jax#12868; measured
    here: a 5 x 5, 32-channel conv's weight gradient on a 32 x 32 x 32 batch takes 0.12 s alone and
    3.2 s per iteration in a ``scan``), which costs far more than one dispatch per step."""
    def fn(pool, args):
        state, key = args
        images, k_noise = draw_step(cfg, key, state.step, pool)
        return train_step(cfg, state, images, k_noise)
    return fn


def seed_keys(cfg: Config):
    """(seeds,) run keys ``fold_in(key(root_seed), s)``."""
    root = jax.random.key(cfg.root_seed)
    return jnp.stack([jax.random.fold_in(root, s) for s in range(cfg.seeds)])


@functools.lru_cache(maxsize=16)
def _init_fn(cfg: Config):
    return jax.jit(lambda k, hp: init_state(k, cfg, hp))


def init_states(cfg: Config, hparams: Hparams) -> TrainState:
    """The initial states of every model of :func:`train_many`, stacked (model s: seed s). Each
    model is initialised by its own call, not vmapped: on XLA:CPU (jaxlib 0.10.2) ``jit(vmap)`` of
    the scenes study's model initialisation never finished (the process waited with no CPU use;
    tiny models do finish), and one call per model costs a few seconds once."""
    hp = hparams.broadcast(cfg.seeds)
    keys = seed_keys(cfg)
    states = [_init_fn(cfg)(keys[i], jax.tree_util.tree_map(lambda v: v[i], hp)) for i in range(cfg.seeds)]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states)


def _check_train(cfg, pool, hparams, strategy):
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.slots.Config, got {type(cfg).__name__}")
    cfg.validate()
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.slots.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    for v in jax.tree_util.tree_leaves(hparams):
        if np.ndim(v) not in (0,) and np.shape(v) != (cfg.seeds,):
            raise ValueError(f"every hparams leaf must be a scalar or have shape (seeds,) = ({cfg.seeds},), "
                             f"got {np.shape(v)}")
    _check_images("pool", pool, cfg.size)
    _checks.choice("strategy", strategy, STRATEGIES)


def _config_text(cfg: Config) -> str:
    return json.dumps(io.jsonable(dataclasses.asdict(cfg)), sort_keys=True)


def load_checkpoint(path: str, like: TrainState, cfg: Optional[Config] = None) -> TrainState:
    """The state :func:`train_many` saved at ``path``; ``ValueError`` for a checkpoint of other
    models (other shapes, or, when ``cfg`` is given, another configuration) or other
    hyper-parameters (``like``: a state of the same models, :func:`init_states`)."""
    state, meta = io.load_pytree(path, like)
    if cfg is not None and "config" in meta and str(meta["config"]) != _config_text(cfg):
        raise ValueError(f"{path} holds models of another configuration than asked for: use another checkpoint")
    if not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(state.hparams), jax.tree_util.tree_leaves(like.hparams))):
        raise ValueError(f"{path} holds models with other hyper-parameters than asked for: use another checkpoint")
    return jax.tree_util.tree_map(jnp.asarray, state)


STRATEGIES = ("auto", "loop", "vmap", "map")


def strategy_for(backend: str) -> str:
    """The ``"auto"`` strategy of :func:`train_many` on ``backend``: ``"vmap"`` on accelerators,
    ``"loop"`` on a CPU, the fastest there (``benchmarks/bench_slots.py``, 4 models of the scenes
    study on our 2-core CPU: loop 6.1 model-steps/s, vmap 5.0, ``lax.map`` 1.9; under ``lax.map``,
    a ``while`` loop, a convolution's weight gradient runs far slower than outside one, see
    :func:`step_fn`)."""
    return "loop" if backend == "cpu" else "vmap"


@functools.lru_cache(maxsize=32)
def _single_step(cfg: Config):
    step = step_fn(cfg)
    return jax.jit(lambda pool, state, key: step(pool, (state, key)))


def train_many(cfg: Config, pool, hparams: Optional[Hparams] = None, *, checkpoint: Optional[str] = None,
               deadline: Optional[float] = None, max_calls: Optional[int] = None,
               on_log: Optional[Callable] = None, progress: Optional[io.Progress] = None, quiet: bool = True,
               devices=None, strategy: str = "auto") -> tuple[TrainState, bool]:
    """Train ``cfg.seeds`` models on ``pool`` (N, size, size, 3) images in [0, 1]; returns the
    stacked final :class:`TrainState` (leaves (seeds, ...)) and whether training finished.

    Each optimiser step (:func:`step_fn`) of every model runs by ``strategy``: ``"vmap"`` (one
    compiled call for all models, split over ``devices`` by ``shard_map`` and vmapped on each; an
    uneven split is padded with copies of the last model, dropped again), ``"map"`` (the same, the
    models mapped one by one with ``lax.map``), ``"loop"`` (one compiled call per model, model i on
    ``devices[i % len(devices)]``: the devices work in parallel through asynchronous dispatch) or
    ``"auto"`` (:func:`strategy_for` the backend). ``devices``: default the local devices, at most
    ``seeds`` of them. After every ``steps_per_call`` steps (a call) the loop saves ``checkpoint``
    (atomically, with the configuration; training resumes from it when it exists, and a resumed run
    ends bit-identical to an uninterrupted one with the same devices and strategy), calls
    ``on_log(step, logs)`` (each log (seeds,), the mean over the call) and updates ``progress``.
    It returns early (``False``) once ``time.time() > deadline`` or after ``max_calls`` calls."""
    hparams = Hparams() if hparams is None else hparams
    _check_train(cfg, pool, hparams, strategy)
    if max_calls is not None:
        _checks.positive_int("max_calls", max_calls, minimum=0)
    devices = tuple(jax.local_devices() if devices is None else devices)[:cfg.seeds]
    if not devices:
        raise ValueError("devices must name at least one device, got an empty sequence")
    if strategy == "auto":
        strategy = strategy_for(devices[0].platform)
    state = init_states(cfg, hparams)
    if checkpoint is not None and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint, state, cfg)
    done = int(np.asarray(state.step)[0])
    own = progress is None and not quiet
    if own:
        progress = io.Progress(cfg.steps, desc="slot attention", unit="steps", done=done)
    m = cfg.seeds
    pool = jnp.asarray(pool, jnp.float32)
    if strategy == "loop":
        one = _single_step(cfg)
        place = [devices[i % len(devices)] for i in range(m)]
        pools = {d: jax.device_put(pool, d) for d in devices}
        models = [jax.device_put(jax.tree_util.tree_map(lambda a: a[i], (state, seed_keys(cfg))), place[i])
                  for i in range(m)]

        def advance(models):
            out = [one(pools[place[i]], *models[i]) for i in range(m)]
            return [(st, models[i][1]) for i, (st, _) in enumerate(out)], [lg for _, lg in out]

        stack = lambda trees: jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)
        current = lambda: stack([st for st, _ in models])
    else:
        pad = (-m) % len(devices)
        grow = lambda t: jax.tree_util.tree_map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]), t)
        keys = seed_keys(cfg)
        state, keys = (grow(state), grow(keys)) if pad else (state, keys)
        fn, sharding = execute.sharded_map(step_fn(cfg), devices, 1 if strategy == "map" else None, True)
        shared = jax.device_put(pool, NamedSharding(sharding.mesh, PartitionSpec()))
        models = jax.device_put((state, keys), sharding)

        def advance(models):
            st, logs = fn(shared, models)
            return (st, models[1]), [jax.tree_util.tree_map(lambda a: a[i], logs) for i in range(m)]

        current = lambda: jax.tree_util.tree_map(lambda a: np.asarray(a)[:m], models[0])
    calls = 0
    try:
        while done < cfg.steps:
            if (deadline is not None and time.time() > deadline) or (max_calls is not None and calls >= max_calls):
                return jax.tree_util.tree_map(jnp.asarray, current()), False
            sums = None
            for _ in range(cfg.steps_per_call):
                models, logs = advance(models)
                sums = logs if sums is None else [jax.tree_util.tree_map(jnp.add, a, b) for a, b in zip(sums, logs)]
            calls += 1
            done += cfg.steps_per_call
            logs = {k: np.asarray([float(x[k]) for x in sums]) / cfg.steps_per_call for k in CURVES}
            if on_log is not None:
                on_log(done, logs)
            if checkpoint is not None:
                io.save_pytree(checkpoint, current(), step=done, config=_config_text(cfg))
            if progress is not None:
                finite = np.isfinite(logs["loss"])
                progress.update(cfg.steps_per_call,
                                loss=float(np.mean(logs["loss"][finite])) if finite.any() else float("nan"))
    finally:
        if own:
            progress.close()
    return jax.tree_util.tree_map(jnp.asarray, current()), True


def nan_report(state: TrainState) -> list[tuple[int, int]]:
    """``[(model index, first non-finite step), ...]`` for every model that went non-finite."""
    steps = np.atleast_1d(np.asarray(state.nan_step))
    return [(int(i), int(steps[i])) for i in np.flatnonzero(steps >= 0)]


def params_of(state: TrainState, i: int) -> dict:
    """Model ``i``'s parameters from a stacked state."""
    return jax.tree_util.tree_map(lambda a: a[i], state.params)


def segment(params, cfg: Config, images, key, *, chunk: int = 256):
    """Predicted segmentation (n, H, W) int32 and final slots (n, K, D) of ``images`` by one
    model, in chunks of ``chunk`` images (``lax.map``) to bound memory; image i's slot noise
    depends only on ``key`` and i."""
    images = _check_apply(params, cfg, images, key)["images"]
    chunk = _checks.positive_int("chunk", chunk)
    n = images.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return _segment(params, cfg, jnp.asarray(images, jnp.float32), keys, min(chunk, n))


@functools.partial(jax.jit, static_argnames=("cfg", "chunk"))
def _segment(params, cfg, images, keys, chunk):
    model = Autoencoder(cfg)

    def one(args):
        image, k = args
        out = model.apply(params, image[None], slot_noise(k, cfg, 1))
        return out.labels[0], out.slots[0]

    return jax.lax.map(one, (images, keys), batch_size=chunk)
