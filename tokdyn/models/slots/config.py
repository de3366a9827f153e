"""The options of the Slot Attention autoencoder (:class:`Config`: static) and its traced
hyper-parameters (:class:`Hparams`), with the names they choose from (:data:`DECODERS`,
:data:`SLOT_INITS`, :data:`MASKS`)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tokdyn import _checks
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
        linear map of K inputs chosen by farthest-point sampling of the keys: :func:`~tokdyn.models.slots.farthest_points`).
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
    """Traced, sweepable hyper-parameters (a float each, or an (H,) array of settings: :func:`~tokdyn.models.slots.models`).

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
        """``hparams`` as a model's :func:`~tokdyn.models.slots.models` takes it: ``cls()`` (its defaults) when None, else
        an instance of ``cls`` (``TypeError`` naming the class otherwise), checked by
        :meth:`validate`. :class:`tokdyn.models.iodine.Hparams` and
        :class:`tokdyn.models.savi.Hparams` derive from this class (their own defaults), so each
        model names its own class. Returns it."""
        hparams = cls() if hparams is None else hparams
        if not isinstance(hparams, cls):
            raise TypeError(f"hparams must be a {cls.__module__}.{cls.__qualname__}, got {type(hparams).__name__}")
        return hparams.validate()


def check_decoder(size: int, decoder: str, stride: int) -> None:
    """Check a :func:`~tokdyn.models.slots.broadcast_decoder`'s ``decoder`` (one of :data:`DECODERS`) and ``stride`` (a
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
