"""IODINE's configuration: ``Config`` (static) and ``Hparams`` (traced knobs, derived from Slot Attention's)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tokdyn import _checks
from tokdyn.models import slots
from tokdyn.train import optim


DECODERS = slots.DECODERS
LOG_2PI = float(np.log(2.0 * np.pi))


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of the model and its training (hashable: a static argument).

    Attributes:
      size: image side (images are size x size x 3, values in [0, 1]).
      slots: K, the number of slots.
      latent_size: D, the width of each slot's latent z.
      iterations: R, refinements of the posterior (the ELBO is evaluated R + 1 times).
      pixel_scale: sigma, the fixed standard deviation of every pixel channel in the likelihood.
      decoder: spatial-broadcast decoder, mlp | conv | cnn (:func:`tokdyn.models.slots.broadcast_decoder`).
      decoder_hidden: hidden width (mlp) or channels (conv, cnn) of the decoder.
      decoder_stride: the mlp and conv decoders paint a (size / decoder_stride)^2 grid, resized
        bilinearly to the image (1: every pixel).
      refine_channels: channels of the refinement network's convolutions (each 3 x 3 of stride 2).
      refine_hidden: width of the refinement network's dense layer and of its LSTM.
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        4000 steps per model in compiled calls of 100 (the checkpoint interval), a linear warm-up of
        200 steps (0: none), then a cosine decay to 5% of the peak, gradients clipped to global
        norm 1.
      batch_size: images per step, drawn with replacement from the pool.
      seeds: models trained together (seed s has run key fold_in(key(root_seed), s)).
      root_seed: root PRNG seed of every model's initial parameters, batches and posterior draws.

    References:
      Greff, K., Kaufman, R. L., Kabra, R., Watters, N., Burgess, C., Zoran, D., Matthey, L.,
      Botvinick, M. and Lerchner, A. (2019). Multi-object representation learning with iterative
      variational inference. *ICML 2019*. arXiv:1903.00450.
    """

    size: int = 32
    slots: int = 5
    latent_size: int = 16
    iterations: int = 4
    pixel_scale: float = 0.1
    decoder: str = "mlp"
    decoder_hidden: int = 32
    decoder_stride: int = 1
    refine_channels: tuple = (32, 32)
    refine_hidden: int = 64
    train: optim.Config = optim.Config(
        steps=4000, steps_per_call=100, warmup=200, decay="cosine", final_fraction=0.05, clip_norm=1.0
    )
    batch_size: int = 16
    seeds: int = 4
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (the training's through :meth:`tokdyn.train.optim.Config.validate`); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in (
            "size",
            "slots",
            "latent_size",
            "iterations",
            "decoder_hidden",
            "decoder_stride",
            "refine_hidden",
            "batch_size",
            "seeds",
        ):
            _checks.positive_int(name, getattr(self, name))
        optim.check("train", self.train)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        slots.check_decoder(self.size, self.decoder, self.decoder_stride)
        _checks.real("pixel_scale", self.pixel_scale, low=0.0, low_open=True)
        if not isinstance(self.refine_channels, (tuple, list)):
            raise TypeError(f"refine_channels must be a tuple of positive ints, got {self.refine_channels!r}")
        channels = tuple(self.refine_channels)
        if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in channels):
            raise ValueError(f"refine_channels must be a tuple of positive ints, got {self.refine_channels!r}")
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams(slots.Hparams):
    """Traced, sweepable hyper-parameters (a float each, or an (H,) array of settings: :func:`~tokdyn.models.iodine.training.models`):
    those of :class:`tokdyn.models.slots.Hparams` (``learning_rate``, the peak Adam learning rate),
    checked as there, with IODINE's own default.
    """

    learning_rate: jax.Array | float = 3e-4


# ---------------------------------------------------------------------------------------------- the model
