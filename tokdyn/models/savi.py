"""Slot Attention for video (SAVi-style, after Kipf et al., 2022, "Conditional Object-Centric
Learning from Video"): :mod:`tokdyn.models.slots`' autoencoder on every frame, the slots of each
frame started from the last frame's by a small learned predictor, so that a slot can follow one
object through a clip.

* :func:`start` (frame 0), :func:`step` (frame t from frame t-1: predict, then correct; the body
  of one ``lax.scan`` over frames), :class:`Predictor` (one of :data:`PREDICTORS`).
* :func:`init`, :func:`apply`, :func:`loss_fn` (every frame's reconstruction) and :func:`segment`
  (ids = slot indices carried through time, scored by :func:`tokdyn.metrics.video_fg_ari`).
* Training through :mod:`tokdyn.train` on clips such as :func:`tokdyn.data.videos.sprite_videos`'
  (:func:`trainer`, :func:`models`; windows of ``frames`` frames when the pool's clips are longer).
* :func:`slot_config` and :func:`slot_params`: with one frame and no predictor the model is the
  image model.

The model in detail and its departures from the paper: :ref:`scenes-savi`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics, io, train
from tokdyn.models import slots
from tokdyn.train import optim

PREDICTORS = ("none", "mlp", "transformer")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the video model and its training (hashable: a static argument).

    Attributes:
      frames: F, frames per training clip (the window drawn from each pool clip); :func:`apply`
        and :func:`segment` take clips of any length.
      size: frame side (frames are size x size x 3, values in [0, 1]).
      slots: K, the number of slots.
      iterations: Slot Attention iterations on every frame after the first, from the predicted
        slots (SAVi uses one).
      first_iterations: Slot Attention iterations on frame 0, from the slots' own start.
      slot_size: D, the width of slots, keys, queries and values.
      mlp_hidden: hidden width of Slot Attention's residual MLP.
      predictor: how frame t's slots start from frame t-1's: none (carried unchanged) | mlp (a
        residual MLP per slot) | transformer (one self-attention block over the slots).
      predictor_hidden: hidden width of the predictor's MLP (mlp and transformer).
      predictor_heads: attention heads of the transformer predictor (must divide ``slot_size``).
      encoder_channels: channels of the per-frame CNN encoder's convolutions (this field and the
        next seven as in :class:`tokdyn.models.slots.Config`).
      encoder_kernel: side of the encoder's square convolution kernels.
      encoder_stride: stride of the encoder's last convolution.
      decoder: spatial-broadcast decoder: mlp | conv | cnn.
      decoder_hidden: hidden width (mlp) or channels (cnn) of the decoder.
      decoder_stride: the mlp and conv decoders paint a (size / decoder_stride)^2 grid.
      slot_init: how frame 0's slots start: random | farthest.
      masks: the slots' masks: decoder (the decoder's alpha channel) | attention (the last
        iteration's attention over the inputs).
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        4000 steps per model in compiled calls of 100 (the checkpoint interval), a linear warm-up of
        200 steps (0: none), then a cosine decay to 5% of the peak, gradients clipped to global
        norm 1.
      batch_size: clips per step, drawn with replacement from the pool.
      seeds: models trained together (seed s has run key fold_in(key(root_seed), s)).
      root_seed: root PRNG seed of every model's initial parameters, batches and slot noise.

    References:
      Kipf, T., Elsayed, G. F., Mahendran, A., Stone, A., Sabour, S., Heigold, G., Jonschkowski,
      R., Dosovitskiy, A. and Greff, K. (2022). Conditional object-centric learning from video.
      *ICLR 2022*. arXiv:2111.12594.
    """

    frames: int = 6
    size: int = 32
    slots: int = 5
    iterations: int = 1
    first_iterations: int = 3
    slot_size: int = 64
    mlp_hidden: int = 128
    predictor: str = "transformer"
    predictor_hidden: int = 128
    predictor_heads: int = 4
    encoder_channels: tuple = (32, 32)
    encoder_kernel: int = 1
    encoder_stride: int = 1
    decoder: str = "mlp"
    decoder_hidden: int = 32
    decoder_stride: int = 2
    slot_init: str = "farthest"
    masks: str = "attention"
    train: optim.Config = optim.Config(
        steps=4000, steps_per_call=100, warmup=200, decay="cosine", final_fraction=0.05, clip_norm=1.0
    )
    batch_size: int = 8
    seeds: int = 4
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field; raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in ("frames", "iterations", "first_iterations", "predictor_hidden", "predictor_heads"):
            _checks.positive_int(name, getattr(self, name))
        _checks.choice("predictor", self.predictor, PREDICTORS)
        slot_config(self)  # the per-frame autoencoder's and the training's fields, checked there
        if self.predictor == "transformer" and self.slot_size % self.predictor_heads:
            raise ValueError(
                f"predictor_heads must divide slot_size={self.slot_size} (the transformer predictor "
                f"splits the slots' width over its heads), got {self.predictor_heads}"
            )
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams(slots.Hparams):
    """Traced, sweepable hyper-parameters (a float each, or an (H,) array of settings: :func:`models`):
    those of :class:`tokdyn.models.slots.Hparams` (``learning_rate``, the peak Adam learning rate),
    checked as there, with SAVi's own default.
    """

    learning_rate: jax.Array | float = 2e-3


def slot_config(cfg: Config) -> slots.Config:
    """The per-frame image model: the :class:`tokdyn.models.slots.Config` with ``cfg``'s
    autoencoder and training fields and ``first_iterations`` iterations (frame 0's), validated
    (its errors name the field).

    Examples:
      >>> from tokdyn.models import savi
      >>> per_frame = savi.slot_config(savi.Config(slots=4, first_iterations=3))
      >>> per_frame.slots, per_frame.iterations
      (4, 3)
    """
    return slots.Config(
        size=cfg.size,
        slots=cfg.slots,
        iterations=cfg.first_iterations,
        slot_size=cfg.slot_size,
        mlp_hidden=cfg.mlp_hidden,
        encoder_channels=cfg.encoder_channels,
        encoder_kernel=cfg.encoder_kernel,
        encoder_stride=cfg.encoder_stride,
        decoder=cfg.decoder,
        decoder_hidden=cfg.decoder_hidden,
        decoder_stride=cfg.decoder_stride,
        implicit=False,
        slot_init=cfg.slot_init,
        masks=cfg.masks,
        train=cfg.train,
        batch_size=cfg.batch_size,
        seeds=cfg.seeds,
        root_seed=cfg.root_seed,
    ).validate()


# ---------------------------------------------------------------------------------------------- the model


class Predictor(nn.Module):
    """Frame t's starting slots from frame t-1's: ``slots`` (B, K, D) -> (B, K, D) (see the module
    docstring; ``kind="none"`` returns ``slots`` and has no parameters). The last layer of each
    residual branch (the MLP's output, the attention's output projection) starts at zero, so an
    untrained predictor returns ``slots``: training moves it away from carrying only where that
    lowers the loss."""

    kind: str
    slot_size: int
    hidden: int
    heads: int = 4

    @nn.compact
    def __call__(self, slots):
        if self.kind == "none":
            return slots
        D = self.slot_size
        zeros = nn.initializers.zeros  # the residual branches' last layers: an untrained predictor carries the slots
        mlp = nn.Sequential(
            [nn.Dense(self.hidden, name="mlp_in"), nn.relu, nn.Dense(D, kernel_init=zeros, name="mlp_out")]
        )
        if self.kind == "transformer":  # the slots attend to each other, then each goes through the MLP
            h = nn.LayerNorm(name="norm_attn")(slots)
            slots = slots + nn.MultiHeadDotProductAttention(
                num_heads=self.heads, qkv_features=D, out_features=D, out_kernel_init=zeros, name="attn"
            )(h)
        return slots + mlp(nn.LayerNorm(name="norm_mlp")(slots))


class Outputs(NamedTuple):
    """What :func:`apply` returns for a batch of B clips of F frames (K slots, H x W pixels).

    Attributes:
      recon: (B, F, H, W, 3) every frame's reconstruction.
      rgb: (B, F, K, H, W, 3) each slot's image in each frame.
      alpha: (B, F, K, H, W) each slot's mask in each frame (summing to 1 over slots).
      slots: (B, F, K, D) each frame's final slots.
      predicted: (B, F, K, D) where each frame's iterations started: frame 0 the slots' own start
        (the Gaussian draw or the farthest inputs' map), frame t >= 1 the predictor's output from
        frame t-1's slots.
      attention: (B, F, N, K) each frame's last attention (softmax over slots) over the N =
        (size / encoder_stride)^2 encoder positions.
      labels: (B, F, H, W) int32 predicted segmentation: the argmax of ``alpha`` over slots, a slot
        index, the same slot (track) in every frame.
    """

    recon: jax.Array
    rgb: jax.Array
    alpha: jax.Array
    slots: jax.Array
    predicted: jax.Array
    attention: jax.Array
    labels: jax.Array


def _slot_attention(cfg: Config, iterations: int) -> slots.SlotAttention:
    return slots.SlotAttention(cfg.slots, iterations, cfg.slot_size, cfg.mlp_hidden, False, cfg.slot_init)


def _predictor(cfg: Config) -> Predictor:
    return Predictor(cfg.predictor, cfg.slot_size, cfg.predictor_hidden, cfg.predictor_heads)


def encode(params, cfg: Config, videos):
    """(B, F, N, C) every frame's features (:class:`tokdyn.models.slots.Encoder`) of ``videos``
    (B, F, size, size, 3). Traced: no checks."""
    B, F = videos.shape[:2]
    feats = slots.Encoder(slot_config(cfg)).apply(params, videos.reshape(B * F, *videos.shape[2:]))
    return feats.reshape(B, F, *feats.shape[1:])


def start(params, cfg: Config, features, z):
    """Frame 0: Slot Attention for ``first_iterations`` iterations from the slots' own start.
    Traceable, not jitted: no checks.

    Args:
      params: the model's parameters (:func:`init`; traced).
      cfg: the model's :class:`Config` (static).
      features: (B, N, C) frame 0's encoder features (:func:`encode`).
      z: (B, K, D) the noise of the Gaussian draw (:func:`frame_noise`).

    Returns:
      ``(slots, attention, start)``: (B, K, D) the final slots, (B, N, K) the last iteration's
      attention, and (B, K, D) the slots' start (the Gaussian draw or the farthest inputs' map).
    """
    model = _slot_attention(cfg, cfg.first_iterations)
    (s, attn), inter = model.apply(
        {"params": params["params"]["slot_attention"]}, features, z, mutable=["intermediates"]
    )
    return s, attn, inter["intermediates"]["start"][0]


def predict(params, cfg: Config, prev):
    """Frame t's starting slots (B, K, D) from frame t-1's ``prev`` (B, K, D): the predictor.
    Traced: no checks."""
    if cfg.predictor == "none":
        return prev
    return _predictor(cfg).apply({"params": params["params"]["predictor"]}, prev)


def step(params, cfg: Config, prev, features):
    """One frame t >= 1, the body of the scan over frames: ``predicted = predict(prev)``, then
    ``iterations`` Slot Attention iterations on frame t's features from it. Traceable, not jitted:
    no checks.

    Args:
      params: the model's parameters (traced).
      cfg: the model's :class:`Config` (static).
      prev: (B, K, D) frame t-1's final slots.
      features: (B, N, C) frame t's encoder features.

    Returns:
      ``(slots, attention, predicted)``: (B, K, D), (B, N, K) and (B, K, D).
    """
    predicted = predict(params, cfg, prev)
    s, attn = _slot_attention(cfg, cfg.iterations).apply(
        {"params": params["params"]["slot_attention"]}, features, None, predicted
    )
    return s, attn, predicted


def decode(params, cfg: Config, slot_sets, attention):
    """Decode one frame's slots (:class:`tokdyn.models.slots.Decoder`; vmap, or flatten frames
    into B, for more). Traceable, not jitted: no checks.

    Args:
      params: the model's parameters (traced).
      cfg: the model's :class:`Config` (static).
      slot_sets: (B, K, D) the slots.
      attention: (B, N, K) their last attention (the masks with ``masks="attention"``).

    Returns:
      ``(recon, rgb, alpha)``: (B, H, W, 3), (B, K, H, W, 3) and (B, K, H, W).
    """
    return slots.Decoder(slot_config(cfg)).apply(params, slot_sets, attention)


def frame_noise(key, cfg: Config, batch: int):
    """(batch, K, D) standard-normal noise of frame 0's slot draw (as
    :func:`tokdyn.models.slots.slot_noise`).

    Examples:
      >>> import jax
      >>> from tokdyn.models import savi
      >>> savi.frame_noise(jax.random.key(0), savi.Config(slots=4, slot_size=8), 2).shape
      (2, 4, 8)
    """
    return jax.random.normal(key, (batch, cfg.slots, cfg.slot_size))


def forward(params, cfg: Config, videos, z) -> Outputs:
    """The traced body of :func:`apply`, no checks: :func:`encode`, :func:`start`, a
    ``lax.scan`` of :func:`step` over frames 1..F-1, :func:`decode` of every frame.

    Args:
      params: the model's parameters (traced).
      cfg: the model's :class:`Config` (static).
      videos: (B, F, size, size, 3) clips in [0, 1], F >= 1.
      z: (B, K, D) frame 0's slot noise (:func:`frame_noise`).

    Returns:
      :class:`Outputs`.
    """
    B, F, H, W, _ = videos.shape
    K = cfg.slots
    feats = encode(params, cfg, videos)  # (B, F, N, C)
    s0, a0, p0 = start(params, cfg, feats[:, 0], z)

    def body(prev, x):
        s, a, p = step(params, cfg, prev, x)
        return s, (s, a, p)

    _, rest = jax.lax.scan(body, s0, jnp.moveaxis(feats[:, 1:], 1, 0))  # each (F - 1, B, ...)
    s, a, p = (
        jnp.concatenate([first[:, None], jnp.moveaxis(later, 0, 1)], axis=1) for first, later in zip((s0, a0, p0), rest)
    )  # (B, F, K, D), (B, F, N, K), (B, F, K, D)
    recon, rgb, alpha = decode(params, cfg, s.reshape(B * F, K, -1), a.reshape(B * F, *a.shape[2:]))
    labels = jnp.argmax(alpha, axis=1).astype(jnp.int32)  # (B * F, H, W)
    per = lambda x: x.reshape(B, F, *x.shape[1:])  # noqa: E731
    return Outputs(per(recon), per(rgb), per(alpha), s, p, a, per(labels))


def init(key, cfg: Config) -> dict:
    """Parameters (``{"params": ...}``, flax's layout): those of
    :func:`tokdyn.models.slots.init` ``(key, slot_config(cfg))`` (the same values), and the
    predictor's under ``"predictor"`` (from ``fold_in(key, 1)``; none for ``predictor="none"``)."""
    params = slots.init(key, slot_config(cfg))
    if cfg.predictor == "none":
        return params
    pred = _predictor(cfg).init(jax.random.fold_in(key, 1), jnp.zeros((1, cfg.slots, cfg.slot_size)))
    return {"params": {**params["params"], "predictor": pred["params"]}}


def slot_params(params) -> dict:
    """The image model's parameters (:func:`tokdyn.models.slots.apply` with :func:`slot_config`)
    in a video model's: every entry but the predictor's."""
    return {"params": {k: v for k, v in params["params"].items() if k != "predictor"}}


def _check_videos(name, videos, size):
    if np.ndim(videos) != 5 or min(np.shape(videos)[:2]) < 1 or np.shape(videos)[2:] != (size, size, 3):
        raise ValueError(
            f"{name} must have shape (B, F, {size}, {size}, 3) with B >= 1 and F >= 1 (clips of RGB "
            f"frames of the config's size), got {np.shape(videos)}"
        )
    if _checks.dtype_of(videos).kind != "f":
        raise TypeError(f"{name} must hold floats in [0, 1], got dtype {_checks.dtype_of(videos)}")
    if _checks.on_host(videos):
        lo, hi = float(np.min(videos)), float(np.max(videos))
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"{name} values must lie in [0, 1], got range [{lo}, {hi}]")


def _check_cfg(cfg):
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.savi.Config, got {type(cfg).__name__}")
    cfg.validate()


def _check_apply(key, params, cfg, videos):
    _checks.prng_key("key", key)
    _check_cfg(cfg)
    if not hasattr(videos, "shape"):  # nested lists: as an array, checked like one
        videos = np.asarray(videos)
    _check_videos("videos", videos, cfg.size)
    return dict(videos=videos)


@_checks.checked_jit(_check_apply, static_argnames=("cfg",))
def apply(key, params, cfg: Config, videos) -> Outputs:
    """Run the model on a batch of clips. Jitted, vmappable and differentiable in ``params`` and
    ``videos``.

    Args:
      key: PRNG key of frame 0's slot noise (:func:`frame_noise`).
      params: the model's parameters (:func:`init`; traced).
      cfg: the model's :class:`Config` (static).
      videos: (B, F, size, size, 3) clips in [0, 1], any F >= 1.

    Returns:
      :class:`Outputs`.

    References:
      Kipf, T., Elsayed, G. F., Mahendran, A., Stone, A., Sabour, S., Heigold, G., Jonschkowski,
      R., Dosovitskiy, A. and Greff, K. (2022). Conditional object-centric learning from video.
      *ICLR 2022*. arXiv:2111.12594.
    """
    return forward(params, cfg, videos, frame_noise(key, cfg, videos.shape[0]))


def loss_fn(key, params, cfg: Config, videos):
    """The training loss of a batch of clips: not jitted, no checks (it runs inside the training
    step).

    Args:
      key: PRNG key of frame 0's slot noise.
      params: the model's parameters (traced; differentiated).
      cfg: the model's :class:`Config` (static).
      videos: (B, F, size, size, 3) clips in [0, 1].

    Returns:
      ``(loss, outputs)``: the scalar mean squared reconstruction error over every pixel of every
      frame, and the :class:`Outputs`.
    """
    out = forward(params, cfg, videos, frame_noise(key, cfg, videos.shape[0]))
    return jnp.mean((out.recon - videos) ** 2), out


def collapse(slot_sets, labels, merge_tol=dynamics.DEFAULT_MERGE_TOL):
    """``(duplicates (F,), unused (F,))`` of one clip's slots (F, K, D) and labels (F, ...), frame
    by frame: :func:`tokdyn.models.slots.collapse` of each frame (duplicate slots closer than
    ``merge_tol``, and slots that own no pixel). vmap over clips.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models import savi
      >>> slot_sets = jnp.array([[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]])   # (F, K, D)
      >>> duplicates, unused = savi.collapse(slot_sets, jnp.array([[0, 0], [0, 1]]))
      >>> duplicates.tolist(), unused.tolist()   # frame 0: slots merged and slot 1 idle
      ([1, 0], [1, 0])
    """
    return jax.vmap(lambda s, lab: slots.collapse(s, lab, merge_tol))(slot_sets, labels)


# ---------------------------------------------------------------------------------------------- training


def models(cfg: Config, hparams: Optional[Hparams] = None):
    """``(keys, hparams)`` of every seed x setting for :func:`tokdyn.train.train_many`: ``hparams``
    (default :class:`Hparams`) with scalar or (H,) fields gives M = H x ``cfg.seeds`` models, model
    ``h * seeds + s`` setting h with seed s (:func:`tokdyn.train.grid`: the settings share their
    seeds' initial parameters, batches and slot noise)."""
    _check_cfg(cfg)
    hparams = Hparams.checked(hparams)  # before any key is made: bad input compiles nothing
    return train.grid(slots.seed_keys(cfg), hparams)


def stamp(cfg: Config) -> str:
    """What a checkpoint of ``cfg``'s models is keyed on (the ``stamp`` of
    :func:`tokdyn.train.train_many`): the model's name and the configuration, as JSON."""
    return json.dumps({"model": "savi", **io.jsonable(dataclasses.asdict(cfg))}, sort_keys=True)


def default_strategy(backend: str) -> str:
    """The :func:`tokdyn.train.train_many` strategy for these models on ``backend``: ``"loop"``
    (one compiled call per model and step) on a CPU, ``"scan"`` (the models vmapped, a call's steps
    in one program) elsewhere, for the reasons of :func:`tokdyn.models.slots.default_strategy` (the
    same convolutions; its GPU rate under ``"scan"`` is a row of the GPU ledger still to measure).

    Examples:
      >>> from tokdyn.models import savi
      >>> savi.default_strategy("cpu"), savi.default_strategy("gpu")
      ('loop', 'scan')
    """
    return slots.default_strategy(backend)


def draw_batch(key, pool, batch_size: int, frames: int):
    """A training step's clips: pool clips drawn with replacement, and in each a window of
    consecutive frames at a uniform start. Traceable, not jitted.

    Args:
      key: the step's key; the first key of ``split(key)`` draws the clips and the starts (the
        second draws frame 0's slot noise, :func:`trainer`).
      pool: (N, F_pool, H, W, 3) clips, F_pool >= ``frames``.
      batch_size: the number of clips B (static).
      frames: the window's length (static); the start is 0 when F_pool equals it.

    Returns:
      (batch_size, frames, H, W, 3).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from tokdyn.models import savi
      >>> pool = jnp.zeros((3, 6, 4, 4, 3))   # 3 clips of 6 frames
      >>> savi.draw_batch(jax.random.key(0), pool, 2, 4).shape
      (2, 4, 4, 4, 3)
    """
    k_clips, k_starts = jax.random.split(jax.random.split(key)[0])
    clips = pool[jax.random.randint(k_clips, (batch_size,), 0, pool.shape[0])]  # (B, F_pool, H, W, 3)
    spare = pool.shape[1] - frames
    if spare == 0:
        return clips
    starts = jax.random.randint(k_starts, (batch_size,), 0, spare + 1)
    return jax.vmap(lambda c, t: jax.lax.dynamic_slice_in_dim(c, t, frames, axis=0))(clips, starts)


def trainer(cfg: Config) -> train.Trainer:
    """``cfg``'s training, a :class:`tokdyn.train.Trainer` (the same object for equal
    configurations, so its compilation is reused). Train with :func:`tokdyn.train.train_many`::

        pool = data.sprite_videos(jax.random.key(0), 1000, frames=cfg.frames, size=cfg.size).images
        keys, hp = savi.models(cfg, savi.Hparams(learning_rate=2e-3))
        execution = train.Execution(savi.default_strategy(jax.default_backend()), vectorised_init=False)
        result = train.train_many(savi.trainer(cfg), pool, keys, hp, execution=execution,
                                  checkpointing=train.Checkpointing("savi.npz", savi.stamp(cfg)))

    ``pool``: (N, F_pool, size, size, 3) clips in [0, 1], F_pool >= ``frames``. A seed's key gives
    the initial parameters' key and the run key (:func:`tokdyn.models.slots.run_keys`); step t's
    key ``fold_in(run key, t)`` is split into the key of its clips (:func:`draw_batch`) and that of
    frame 0's slot noise; the loss is :func:`loss_fn`. The optimiser is ``cfg.train``'s, as
    :func:`tokdyn.models.slots.trainer`'s (clipping, then Adam with a linear warm-up and, by
    default, a cosine decay to 5%). Logs: ``loss`` and ``grad_norm``. Pass
    ``vectorised_init=False`` (as for the image model)."""
    _check_cfg(cfg)
    return _trainer(dataclasses.replace(cfg, encoder_channels=tuple(int(c) for c in cfg.encoder_channels)))


@functools.lru_cache(maxsize=32)
def _trainer(cfg: Config) -> train.Trainer:
    def batch(key, pool, step):
        if np.ndim(pool) != 5 or np.shape(pool)[1] < cfg.frames:  # while tracing: shapes and dtype
            raise ValueError(
                f"the training pool must have shape (N, F_pool, {cfg.size}, {cfg.size}, 3) with F_pool "
                f">= frames={cfg.frames}, got {np.shape(pool)}"
            )
        _check_videos("the training pool", pool, cfg.size)
        return draw_batch(key, pool, cfg.batch_size, cfg.frames)

    def loss(params, videos, key, hparams):
        value, _ = loss_fn(jax.random.split(key)[1], params, cfg, videos)
        return value, {}

    return train.Trainer(
        cfg.train,
        init=lambda key, hparams: init(key, cfg),
        loss=loss,
        batch=batch,
        keys=slots.run_keys,
        name=f"savi ({cfg.predictor})",
    )


def segment(key, params, cfg: Config, videos, *, chunk: int = 64):
    """Segment clips with one model, in chunks (``lax.map``) to bound memory. Checks its
    arguments, then runs a jitted map: call it on the host, not inside a user's ``jit``. Score
    the ids with :func:`tokdyn.metrics.video_fg_ari` (``n_pred=cfg.slots``).

    Args:
      key: PRNG key; clip i's slot noise is drawn with ``fold_in(key, i)``, so it depends only on
        ``key`` and i.
      params: one model's parameters.
      cfg: the model's :class:`Config`.
      videos: (n, F, size, size, 3) clips in [0, 1].
      chunk: clips per vmapped chunk, an int >= 1.

    Returns:
      ``(labels, slots)``: (n, F, H, W) int32 predicted segmentation (slot indices: the same id is
      the same slot, so the same track, in every frame) and (n, F, K, D) every frame's slots.
    """
    videos = _check_apply(key, params, cfg, videos)["videos"]
    chunk = _checks.positive_int("chunk", chunk)
    n = videos.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return _segment(params, cfg, jnp.asarray(videos, jnp.float32), keys, min(chunk, n))


@functools.partial(jax.jit, static_argnames=("cfg", "chunk"))
def _segment(params, cfg, videos, keys, chunk):
    def one(args):
        clip, k = args
        out = forward(params, cfg, clip[None], frame_noise(k, cfg, 1))
        return out.labels[0], out.slots[0]

    return jax.lax.map(one, (videos, keys), batch_size=chunk)
