"""A learned Slot Attention (Locatello et al., 2020) and its object-discovery autoencoder: the
learned counterpart of the fixed token dynamics of :mod:`tokdyn.dynamics`.

* :class:`SlotAttention`, the module; :class:`Autoencoder` (a CNN encoder, Slot Attention, a
  spatial-broadcast decoder, :func:`broadcast_decoder`) and its two ends, :class:`Encoder` and
  :class:`Decoder`. :class:`Config` holds the options (``slot_init="farthest"``,
  ``implicit=True``, ``masks="attention"``, the decoders of :data:`DECODERS`, the strides).
* :func:`init`, :func:`apply`, :func:`loss_fn` (mean squared error of the reconstruction) and
  :func:`segment` (the argmax of the masks).
* Training through :mod:`tokdyn.train`: :func:`trainer` for :func:`tokdyn.train.train_many`,
  :func:`models` (keys and hyper-parameters of every seed x setting), :func:`stamp`,
  :func:`default_strategy`.
* :func:`collapse`: duplicate and unused slots, in the vocabulary of the fixed dynamics.

The model in detail, its departures from the paper and what it costs: :ref:`scenes-slot-attention`.
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

from tokdyn import _checks, dynamics, io, metrics, train
from tokdyn.train import optim

DECODERS = ("mlp", "conv", "cnn")
SLOT_INITS = ("random", "farthest")
MASKS = ("decoder", "attention")
EPS = 1e-8  # added to every attention weight before normalising over the inputs (as the paper)


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
      encoder_stride: stride of the encoder's last convolution: Slot Attention attends over
        ``(size / encoder_stride)^2`` inputs (1: every pixel).
      decoder: spatial-broadcast decoder, mlp (per-pixel MLP) | conv (3 x 3 convolutions at full
        resolution) | cnn (8 x 8 broadcast, transposed convolutions).
      decoder_hidden: hidden width (mlp) or channels (cnn) of the decoder.
      decoder_stride: the mlp and conv decoders paint a (size / decoder_stride)^2 grid (1: every
        pixel); the slots' RGB and alpha logits are resized bilinearly to the image size before the
        alphas are normalised, so the loss and the segmentation stay at full resolution.
      implicit: implicit differentiation: only the last iteration is differentiated.
      slot_init: how the slots start: random (drawn from a learned Gaussian) | farthest (a learned
        linear map of K inputs chosen by farthest-point sampling of the keys: :func:`farthest_points`).
      masks: the slots' masks that mix their images: decoder (the decoder's alpha channel, softmaxed
        over slots) | attention (the last iteration's attention over the inputs, resized to the
        image when ``encoder_stride`` > 1: the decoder paints colour only).
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        4000 steps per model in compiled calls of 100 (the checkpoint interval), a linear warm-up of
        200 steps (0: none), then a cosine decay to 5% of the peak, gradients clipped to global
        norm 1.
      batch_size: images per step, drawn with replacement from the pool.
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
    encoder_stride: int = 1
    decoder: str = "mlp"
    decoder_hidden: int = 64
    decoder_stride: int = 1
    implicit: bool = False
    slot_init: str = "random"
    masks: str = "decoder"
    train: optim.Config = optim.Config(
        steps=4000, steps_per_call=100, warmup=200, decay="cosine", final_fraction=0.05, clip_norm=1.0
    )
    batch_size: int = 32
    seeds: int = 4
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (the training's through :meth:`tokdyn.train.optim.Config.validate`); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in (
            "size",
            "slots",
            "iterations",
            "slot_size",
            "mlp_hidden",
            "encoder_kernel",
            "encoder_stride",
            "decoder_hidden",
            "decoder_stride",
            "batch_size",
            "seeds",
        ):
            _checks.positive_int(name, getattr(self, name))
        optim.check("train", self.train)
        if self.size % self.encoder_stride:
            raise ValueError(f"encoder_stride must divide size={self.size}, got {self.encoder_stride}")
        check_decoder(self.size, self.decoder, self.decoder_stride)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        _checks.choice("slot_init", self.slot_init, SLOT_INITS)
        _checks.choice("masks", self.masks, MASKS)
        if not isinstance(self.implicit, bool):
            raise TypeError(f"implicit must be a bool, got {self.implicit!r}")
        channels = tuple(self.encoder_channels)
        if not channels or any(not isinstance(c, (int, np.integer)) or c < 1 for c in channels):
            raise ValueError(
                f"encoder_channels must be a non-empty tuple of positive ints, got {self.encoder_channels!r}"
            )
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters (a float each, or an (H,) array of settings: :func:`models`).

    Attributes:
      learning_rate: peak Adam learning rate (after the warm-up; then the decay, by default to 5% of
        it).
    """

    learning_rate: jax.Array | float = 4e-4

    def validate(self) -> "Hparams":
        """Check the learning rate when it is a host number (positive); raise ``ValueError``. Returns
        ``self``."""
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        return self

    @classmethod
    def checked(cls, hparams=None) -> "Hparams":
        """``hparams`` as a model's :func:`models` takes it: ``cls()`` (its defaults) when None, else
        an instance of ``cls`` (``TypeError`` naming the class otherwise), checked by
        :meth:`validate`. :class:`tokdyn.models.iodine.Hparams` and
        :class:`tokdyn.models.savi.Hparams` derive from this class (their own defaults), so each
        model names its own class. Returns it."""
        hparams = cls() if hparams is None else hparams
        if not isinstance(hparams, cls):
            raise TypeError(f"hparams must be a {cls.__module__}.{cls.__qualname__}, got {type(hparams).__name__}")
        return hparams.validate()


# ---------------------------------------------------------------------------------------------- the model


def farthest_points(points, k: int):
    """(B, k) int32 indices of ``k`` of the B x N ``points`` (B, N, D), chosen greedily: each the
    point farthest (squared Euclidean) from the mean of the points and every point chosen before
    (the mean stands for the bulk of the inputs, and is not itself chosen). Ties go to the lowest
    index. No gradient flows through the choice."""
    points = jax.lax.stop_gradient(points)
    dist = jnp.sum((points - jnp.mean(points, axis=1, keepdims=True)) ** 2, axis=-1)  # (B, N)
    chosen = []
    for _ in range(k):
        i = jnp.argmax(dist, axis=1)
        chosen.append(i)
        point = jnp.take_along_axis(points, i[:, None, None], axis=1)  # (B, 1, D)
        dist = jnp.minimum(dist, jnp.sum((points - point) ** 2, axis=-1))
    return jnp.stack(chosen, axis=1).astype(jnp.int32)


def position_grid(height: int, width: int):
    """(H, W, 4) the paper's position channels ``(y, x, 1 - y, 1 - x)``, y and x in [0, 1]."""
    y, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, height), jnp.linspace(0.0, 1.0, width), indexing="ij")
    return jnp.stack([y, x, 1.0 - y, 1.0 - x], axis=-1)


def check_decoder(size: int, decoder: str, stride: int) -> None:
    """Check a :func:`broadcast_decoder`'s ``decoder`` (one of :data:`DECODERS`) and ``stride`` (a
    positive int dividing ``size``; 1 with ``"cnn"``, which needs ``size = 8 * 2^j``) for images of
    side ``size``; raise ``ValueError`` naming the field."""
    _checks.choice("decoder", decoder, DECODERS)
    _checks.positive_int("decoder_stride", stride)
    if size % stride:
        raise ValueError(f"decoder_stride must divide size={size}, got {stride}")
    if decoder == "cnn" and stride != 1:
        raise ValueError(
            f"decoder_stride applies to the mlp and conv decoders (the cnn decoder upsamples itself): "
            f"it must be 1 with decoder='cnn', got {stride}"
        )
    if decoder == "cnn" and (size % 8 or size < 8 or (size // 8) & (size // 8 - 1)):
        raise ValueError(f"decoder='cnn' upsamples an 8 x 8 grid by powers of 2: size must be 8 * 2^j, got {size}")


def broadcast_decoder(latents, *, size: int, channels: int, decoder: str, hidden: int, stride: int = 1):
    """A spatial-broadcast decoder (Watters et al., 2019): each of the (B, K, D) ``latents`` painted
    on a ``size`` x ``size`` grid, (B, K, size, size, ``channels``) outputs (no nonlinearity on
    them).

    ``decoder``: ``"mlp"`` (each pixel from ``Dense(latent) + Dense(position)`` through a ReLU MLP
    of two hidden layers of width ``hidden``: no convolution), ``"conv"`` (the same broadcast, then
    two 3 x 3 convolutions of ``hidden`` channels) or ``"cnn"`` (the latent plus a position
    embedding broadcast on an 8 x 8 grid, 5 x 5 transposed convolutions of stride 2 up to ``size``,
    a 5 x 5 and a 3 x 3 convolution). ``stride`` > 1 (mlp and conv): painted on a (size / stride)^2
    grid, resized bilinearly to ``size``. Positions are :func:`position_grid`.

    Call it inside a flax module's ``nn.compact`` method: its layers (``dec_slot``, ``dec_pos``,
    ``dec_hidden0`` ...) are that module's own, by those names. Arguments are checked by
    :func:`check_decoder`, which a ``Config.validate`` runs.

    Args:
      latents: (B, K, D) the latents to paint (traced).
      size: the output's side H = W (static).
      channels: C, the output channels per pixel (static).
      decoder: ``"mlp"``, ``"conv"`` or ``"cnn"`` (static).
      hidden: the width of the hidden layers or channels (static).
      stride: the painting grid's stride for mlp and conv (static; 1: full resolution).

    Returns:
      (B, K, size, size, channels).
    """
    B, K, D = latents.shape
    H = W = size
    F, c = hidden, channels
    g = H // stride
    pos = position_grid(g, g)
    if decoder == "mlp":
        d = nn.Dense(F, name="dec_slot")(latents)[:, :, None, None, :] + nn.Dense(F, name="dec_pos")(pos)
        d = nn.relu(d)  # (B, K, g, g, F)
        d = nn.relu(nn.Dense(F, name="dec_hidden0")(d))
        d = nn.relu(nn.Dense(F, name="dec_hidden1")(d))
        out = nn.Dense(c, name="dec_out")(d)  # (B, K, g, g, c)
    elif decoder == "conv":
        d = nn.Dense(F, name="dec_slot")(latents)[:, :, None, None, :] + nn.Dense(F, name="dec_pos")(pos)
        d = nn.relu(d).reshape(B * K, g, g, F)
        d = nn.relu(nn.Conv(F, (3, 3), padding="SAME", name="dec_conv0")(d))
        d = nn.relu(nn.Conv(F, (3, 3), padding="SAME", name="dec_conv1")(d))
        out = nn.Conv(c, (3, 3), padding="SAME", name="dec_out")(d).reshape(B, K, g, g, c)
    else:
        g = 8
        d = jnp.broadcast_to(latents[:, :, None, None, :], (B, K, g, g, D)).reshape(B * K, g, g, D)
        d = d + nn.Dense(D, name="dec_pos")(position_grid(g, g))
        while g < H:
            d = nn.relu(nn.ConvTranspose(F, (5, 5), strides=(2, 2), padding="SAME", name=f"dec_up{g}")(d))
            g *= 2
        d = nn.relu(nn.Conv(F, (5, 5), padding="SAME", name="dec_conv")(d))
        out = nn.Conv(c, (3, 3), padding="SAME", name="dec_out")(d).reshape(B, K, H, W, c)
    if out.shape[2:4] != (H, W):  # painted at size / stride: bilinear to the image size
        out = jax.image.resize(out, (B, K, H, W, c), method="bilinear")
    return out


class SlotAttention(nn.Module):
    """Slot Attention over ``inputs`` (B, N, C) with slot noise ``z`` (B, K, D) ~ N(0, I).
    Returns ``(slots (B, K, D), attention (B, N, K))``: the last iteration's attention, softmaxed
    over slots (each input's weights sum to 1).

    ``slots`` (B, K, D), optional: the slots to start from instead of the module's own start (the
    Gaussian draw or the farthest inputs; ``z`` is then not used): the slots of the last frame,
    carried by a predictor, in :mod:`tokdyn.models.savi`. The parameters are those of a call
    without it (``init`` without ``slots`` creates them all). The slots the iterations start from
    are sown as ``intermediates["start"]`` (returned by ``apply(..., mutable=["intermediates"])``)."""

    n_slots: int
    iterations: int
    slot_size: int
    mlp_hidden: int
    implicit: bool = False
    slot_init: str = "random"

    @nn.compact
    def __call__(self, inputs, z, slots=None):
        D = self.slot_size
        x = nn.LayerNorm(name="norm_inputs")(inputs)
        k = nn.Dense(D, use_bias=False, name="to_k")(x)  # (B, N, D)
        v = nn.Dense(D, use_bias=False, name="to_v")(x)
        if slots is None and self.slot_init == "farthest":  # z is not used
            chosen = jnp.take_along_axis(x, farthest_points(k, self.n_slots)[:, :, None], axis=1)  # (B, K, C)
            slots = nn.Dense(D, name="init")(chosen)
        elif slots is None:
            mu = self.param("mu", nn.initializers.xavier_uniform(), (1, D))
            log_sigma = self.param("log_sigma", nn.initializers.xavier_uniform(), (1, D))
            slots = mu + jnp.exp(log_sigma) * z  # (B, K, D)
        self.sow("intermediates", "start", slots)  # where the iterations start (kept only when asked for)
        norm_slots, to_q = nn.LayerNorm(name="norm_slots"), nn.Dense(D, use_bias=False, name="to_q")
        gru = nn.GRUCell(D, name="gru")
        norm_mlp = nn.LayerNorm(name="norm_mlp")
        mlp = nn.Sequential([nn.Dense(self.mlp_hidden, name="mlp_in"), nn.relu, nn.Dense(D, name="mlp_out")])

        def iterate(slots):
            q = to_q(norm_slots(slots)) * D**-0.5  # (B, K, D)
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
      alpha: (B, K, H, W) each slot's mask (summing to 1 over slots: the decoder's alpha logits
        softmaxed, or the attention with ``masks="attention"``).
      slots: (B, K, D) the final slots.
      attention: (B, N, K) the last iteration's attention (softmax over slots) over the N =
        (size / encoder_stride)^2 encoder positions.
      labels: (B, H, W) int32 predicted segmentation: the argmax of ``alpha`` over slots.
    """

    recon: jax.Array
    rgb: jax.Array
    alpha: jax.Array
    slots: jax.Array
    attention: jax.Array
    labels: jax.Array


def _encode(cfg: Config, images):
    """The CNN encoder, position embedding, LayerNorm and MLP, as layers of the module whose
    ``nn.compact`` method calls it: ``(features (B, N, C), (h, w))`` for ``images`` (B, H, W, 3),
    ``N = h * w`` positions on the encoder's (h, w) grid."""
    B = images.shape[0]
    h = images
    last = len(cfg.encoder_channels) - 1
    for i, c in enumerate(cfg.encoder_channels):
        stride = (cfg.encoder_stride,) * 2 if i == last else (1, 1)
        h = nn.relu(nn.Conv(c, (cfg.encoder_kernel,) * 2, strides=stride, padding="SAME", name=f"conv{i}")(h))
    C, (h_in, w_in) = cfg.encoder_channels[-1], h.shape[1:3]
    h = h + nn.Dense(C, name="enc_pos")(position_grid(h_in, w_in))
    h = nn.LayerNorm(name="enc_norm")(h.reshape(B, h_in * w_in, C))
    h = nn.Dense(C, name="enc_mlp1")(nn.relu(nn.Dense(C, name="enc_mlp0")(h)))
    return h, (h_in, w_in)


def _decode(cfg: Config, slots, attn, grid):
    """The spatial-broadcast decoder, as layers of the module whose ``nn.compact`` method calls it:
    ``(rgb (B, K, H, W, 3), alpha (B, K, H, W))`` of ``slots`` (B, K, D), with ``attn`` (B, N, K)
    the attention over the encoder's ``grid`` = (h, w) (the masks when ``cfg.masks`` is
    ``"attention"``)."""
    B, K, H = slots.shape[0], cfg.slots, cfg.size
    W = H
    h_in, w_in = grid
    c = 4 if cfg.masks == "decoder" else 3  # RGB, and the alpha logit when the decoder draws the masks
    out = broadcast_decoder(
        slots, size=H, channels=c, decoder=cfg.decoder, hidden=cfg.decoder_hidden, stride=cfg.decoder_stride
    )  # (B, K, H, W, c)
    rgb = out[..., :3]
    if cfg.masks == "decoder":
        alpha = jax.nn.softmax(out[..., 3], axis=1)
    else:  # the attention (each input's weights sum to 1 over the slots), at the image's size
        alpha = jnp.moveaxis(attn.reshape(B, h_in, w_in, K), -1, 1)
        if (h_in, w_in) != (H, W):
            alpha = jax.image.resize(alpha, (B, K, H, W), method="bilinear")
        alpha = alpha / jnp.sum(alpha, axis=1, keepdims=True)
    return rgb, alpha


class Encoder(nn.Module):
    """The autoencoder's encoder alone: ``images`` (B, size, size, 3) -> ``features`` (B, N, C),
    the N = (size / encoder_stride)^2 inputs of Slot Attention. Its parameters are named as the
    :class:`Autoencoder`'s (``conv0``, ..., ``enc_pos``, ``enc_norm``, ``enc_mlp0``,
    ``enc_mlp1``), so ``Encoder(cfg).apply(autoencoder_params, images)`` is the autoencoder's
    encoder (flax ignores the other entries)."""

    cfg: Config

    @nn.compact
    def __call__(self, images):
        return _encode(self.cfg, images)[0]


class Decoder(nn.Module):
    """The autoencoder's spatial-broadcast decoder alone: ``(slots (B, K, D), attention (B, N,
    K))`` -> ``(recon (B, H, W, 3), rgb (B, K, H, W, 3), alpha (B, K, H, W))`` (``attention``
    gives the masks when ``cfg.masks == "attention"``, and is not used otherwise). Its
    parameters are named as the :class:`Autoencoder`'s (``dec_*``), so
    ``Decoder(cfg).apply(autoencoder_params, slots, attention)`` is the autoencoder's decoder."""

    cfg: Config

    @nn.compact
    def __call__(self, slots, attention):
        g = self.cfg.size // self.cfg.encoder_stride
        rgb, alpha = _decode(self.cfg, slots, attention, (g, g))
        return jnp.sum(alpha[..., None] * rgb, axis=1), rgb, alpha


class Autoencoder(nn.Module):
    """Encoder -> Slot Attention -> spatial-broadcast decoder (:ref:`scenes-slot-attention`; the
    encoder and the decoder alone: :class:`Encoder`, :class:`Decoder`)."""

    cfg: Config

    @nn.compact
    def __call__(self, images, z) -> Outputs:
        cfg = self.cfg
        h, grid = _encode(cfg, images)
        slots, attn = SlotAttention(
            cfg.slots, cfg.iterations, cfg.slot_size, cfg.mlp_hidden, cfg.implicit, cfg.slot_init, name="slot_attention"
        )(h, z)
        rgb, alpha = _decode(cfg, slots, attn, grid)
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


def check_images(name: str, images, size: int) -> None:
    """Check that ``images`` (named ``name`` in the error) are a (B, size, size, 3) batch, B >= 1,
    of floats in [0, 1] (the range only when they are host data); raise ``ValueError`` /
    ``TypeError``."""
    if np.ndim(images) != 4 or np.shape(images)[0] < 1 or np.shape(images)[1:] != (size, size, 3):
        raise ValueError(
            f"{name} must have shape (B, {size}, {size}, 3) with B >= 1 (RGB images of the config's size), "
            f"got {np.shape(images)}"
        )
    if _checks.dtype_of(images).kind != "f":
        raise TypeError(f"{name} must hold floats in [0, 1], got dtype {_checks.dtype_of(images)}")
    if _checks.on_host(images):
        lo, hi = float(np.min(images)), float(np.max(images))
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"{name} values must lie in [0, 1], got range [{lo}, {hi}]")


def _check_apply(key, params, cfg, images):
    _checks.prng_key("key", key)
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.slots.Config, got {type(cfg).__name__}")
    cfg.validate()
    if not hasattr(images, "shape"):  # nested lists: as an array, checked like one
        images = np.asarray(images)
    check_images("images", images, cfg.size)
    return dict(images=images)


@_checks.checked_jit(_check_apply, static_argnames=("cfg",))
def apply(key, params, cfg: Config, images) -> Outputs:
    """Run the autoencoder on a batch of images. Jitted; vmappable over keys, params and images.

    Args:
      key: PRNG key of the slots' initial noise (:func:`slot_noise`).
      params: the model's parameters (:func:`init`; traced).
      cfg: the model's :class:`Config` (static).
      images: (B, size, size, 3) in [0, 1].

    Returns:
      :class:`Outputs`.
    """
    return Autoencoder(cfg).apply(params, images, slot_noise(key, cfg, images.shape[0]))


def loss_fn(key, params, cfg: Config, images):
    """The training loss of a batch: not jitted, no checks (it runs inside the training step).

    Args:
      key: PRNG key of the slots' initial noise.
      params: the model's parameters (traced; differentiated).
      cfg: the model's :class:`Config` (static).
      images: (B, size, size, 3) in [0, 1].

    Returns:
      ``(loss, outputs)``: the scalar mean squared reconstruction error and the :class:`Outputs`.
    """
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


def seed_keys(cfg: Config):
    """(seeds,) keys ``fold_in(key(root_seed), s)``, one per seed."""
    root = jax.random.key(cfg.root_seed)
    return jnp.stack([jax.random.fold_in(root, s) for s in range(cfg.seeds)])


def models(cfg: Config, hparams: Optional[Hparams] = None):
    """``(keys, hparams)`` of every seed x setting for :func:`tokdyn.train.train_many`: ``hparams``
    (default :class:`Hparams`) with scalar or (H,) fields gives M = H x ``cfg.seeds`` models, model
    ``h * seeds + s`` setting h with seed s (:func:`tokdyn.train.grid`: the settings share their
    seeds' initial parameters, batches and slot noise)."""
    hparams = Hparams.checked(hparams)  # before any key is made: bad input compiles nothing
    return train.grid(seed_keys(cfg), hparams)


def stamp(cfg: Config) -> str:
    """What a checkpoint of ``cfg``'s models is keyed on (the ``stamp`` of
    :func:`tokdyn.train.train_many`): the configuration as JSON."""
    return json.dumps(io.jsonable(dataclasses.asdict(cfg)), sort_keys=True)


def run_keys(key):
    """``(key of the initial parameters, run key)`` of a seed's key: ``(fold_in(key, 2**31 - 1), key)``."""
    return jax.random.fold_in(key, 2**31 - 1), key


def draw_batch(key, pool, batch_size: int):
    """A step's images: ``batch_size`` drawn with replacement from ``pool`` (N, H, W, 3) with the
    first key of ``split(key)`` (the second draws the step's slot noise, :func:`trainer`)."""
    k_batch, _ = jax.random.split(key)
    return pool[jax.random.randint(k_batch, (batch_size,), 0, pool.shape[0])]


def default_strategy(backend: str) -> str:
    """The :func:`tokdyn.train.train_many` strategy for these models on ``backend``: ``"loop"``
    (one compiled call per model and step) on a CPU, ``"step"`` (one compiled call per step, the
    models vmapped) elsewhere.

    Never ``"scan"`` on a CPU: XLA:CPU runs the weight gradient of a convolution inside a ``while``
    loop (``lax.scan``, ``lax.map``, ``fori_loop``) tens of times slower than outside one
    (jax-ml/jax#12868; measured here: a 5 x 5, 32-channel conv's weight gradient on a 32 x 32 x 32
    batch takes 0.12 s alone and 3.2 s per iteration in a ``scan``), which costs far more than one
    dispatch per step. And the loop over models is the fastest there (``benchmarks/bench_slots.py``,
    4 models of the scenes study on our 2-core CPU: loop 6.1 model-steps/s, vmapped 5.0, mapped
    one by one with ``lax.map`` 1.9; the vmapped convolutions are grouped convolutions with
    per-model kernels)."""
    return "loop" if backend == "cpu" else "step"


def trainer(cfg: Config) -> train.Trainer:
    """``cfg``'s training, a :class:`tokdyn.train.Trainer` (the same object for equal
    configurations, so its compilation is reused). Train with :func:`tokdyn.train.train_many`::

        keys, hp = slots.models(cfg, slots.Hparams(learning_rate=4e-4))
        execution = train.Execution(slots.default_strategy(jax.default_backend()), vectorised_init=False)
        result = train.train_many(slots.trainer(cfg), pool, keys, hp, execution=execution,
                                  checkpointing=train.Checkpointing("slots.npz", slots.stamp(cfg)))

    ``pool``: (N, size, size, 3) images in [0, 1]. A seed's key gives the initial parameters'
    key and the run key (:func:`run_keys`); step t's key ``fold_in(run key, t)`` is split into the
    key of its batch (:func:`draw_batch`) and that of its slot noise; the loss is :func:`loss_fn`.
    The optimiser (:mod:`tokdyn.train.optim`) of ``cfg.train``: gradients clipped to ``clip_norm``,
    then Adam with a linear warm-up over ``warmup`` steps and (by default) a cosine decay to 5% of
    the peak at ``steps``.
    Logs: ``loss`` and ``grad_norm``. Pass ``vectorised_init=False``: on XLA:CPU (jaxlib 0.10.2)
    ``jit(vmap)`` of the scenes study's model initialisation never finished (the process waited
    with no CPU use; tiny models do finish), and one call per model costs a few seconds once."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.slots.Config, got {type(cfg).__name__}")
    cfg.validate()
    return _trainer(dataclasses.replace(cfg, encoder_channels=tuple(int(c) for c in cfg.encoder_channels)))


@functools.lru_cache(maxsize=32)
def _trainer(cfg: Config) -> train.Trainer:
    def batch(key, pool, step):
        check_images("the training pool", pool, cfg.size)  # shapes and dtype, while tracing
        return draw_batch(key, pool, cfg.batch_size)

    def loss(params, images, key, hparams):
        value, _ = loss_fn(jax.random.split(key)[1], params, cfg, images)
        return value, {}

    return train.Trainer(
        cfg.train,
        init=lambda key, hparams: init(key, cfg),
        loss=loss,
        batch=batch,
        keys=run_keys,
        name="slot attention (implicit)" if cfg.implicit else "slot attention",
    )


def params_of(state: train.TrainState, i: int) -> dict:
    """Model ``i``'s parameters from a stacked state (the ``state`` of a :class:`tokdyn.train.Result`)."""
    return jax.tree_util.tree_map(lambda a: a[i], state.params)


def segment(key, params, cfg: Config, images, *, chunk: int = 256):
    """Segment images with one model, in chunks (``lax.map``) to bound memory. Checks its
    arguments, then runs a jitted map: call it on the host, not inside a user's ``jit``.

    Args:
      key: PRNG key; image i's slot noise is drawn with ``fold_in(key, i)``, so it depends only on
        ``key`` and i (not on ``chunk``).
      params: one model's parameters (:func:`params_of`).
      cfg: the model's :class:`Config`.
      images: (n, size, size, 3) in [0, 1].
      chunk: images per vmapped chunk, an int >= 1.

    Returns:
      ``(labels, slots)``: (n, H, W) int32 predicted segmentation and (n, K, D) final slots.
    """
    images = _check_apply(key, params, cfg, images)["images"]
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
