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

One concept a module, every public name re-exported here (``tokdyn.models.slots.Config``):
:mod:`~tokdyn.models.slots.config` (the options), :mod:`~tokdyn.models.slots.layers` (Slot
Attention and the decoder), :mod:`~tokdyn.models.slots.model` (the autoencoder, its use),
:mod:`~tokdyn.models.slots.training`.
"""

from tokdyn.models.slots.config import DECODERS, EPS, MASKS, SLOT_INITS, Config, Hparams, check_decoder
from tokdyn.models.slots.layers import SlotAttention, broadcast_decoder, farthest_points, position_grid
from tokdyn.models.slots.model import (
    Autoencoder,
    Decoder,
    Encoder,
    Outputs,
    apply,
    check_images,
    collapse,
    init,
    loss_fn,
    params_of,
    segment,
    slot_noise,
)
from tokdyn.models.slots.training import default_strategy, draw_batch, models, run_keys, seed_keys, stamp, trainer

__all__ = [
    "Autoencoder",
    "Config",
    "DECODERS",
    "Decoder",
    "EPS",
    "Encoder",
    "Hparams",
    "MASKS",
    "Outputs",
    "SLOT_INITS",
    "SlotAttention",
    "apply",
    "broadcast_decoder",
    "check_decoder",
    "check_images",
    "collapse",
    "default_strategy",
    "draw_batch",
    "farthest_points",
    "init",
    "loss_fn",
    "models",
    "params_of",
    "position_grid",
    "run_keys",
    "seed_keys",
    "segment",
    "slot_noise",
    "stamp",
    "trainer",
]
