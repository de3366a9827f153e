"""The object-discovery autoencoder: :class:`Autoencoder` and its two ends (:class:`Encoder`,
:class:`Decoder`), :func:`init`, :func:`apply`, :func:`loss_fn`, :func:`segment` and
:func:`collapse` (duplicate and unused slots)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics, metrics, train
from tokdyn.models.slots.config import Config
from tokdyn.models.slots.layers import (
    SlotAttention,
    broadcast_decoder,
    position_grid,
)


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


def _check_init(key, cfg):
    _checks.prng_key("key", key)
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.slots.Config, got {type(cfg).__name__}")
    cfg.validate()


@_checks.checked_jit(_check_init, static_argnames=("cfg",))
def init(key, cfg: Config) -> dict:
    """Parameters of the autoencoder (``{"params": ...}``, flax's layout): one program per ``cfg``
    (static; called eagerly, flax's initialisers would otherwise compile and run op by op). Checked
    first: a PRNG key and a ``Config`` that validates."""
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
