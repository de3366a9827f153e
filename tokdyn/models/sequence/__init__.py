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

One concept a module, every public name re-exported here (``tokdyn.models.sequence.Config``):
:mod:`~tokdyn.models.sequence.config` (:class:`Config`, :class:`Hparams`),
:mod:`~tokdyn.models.sequence.network` (the network and the loss of a batch),
:mod:`~tokdyn.models.sequence.training` (the trainer, one model's training),
:mod:`~tokdyn.models.sequence.sampling` (:func:`sample`, :func:`nll_bound`) and
:mod:`~tokdyn.models.sequence.first_stage` (the grid autoencoder's configuration, decoding).

Each model, the denoiser and the training in detail: :ref:`sequence-models`.
"""

from tokdyn.models.sequence.config import ARCHITECTURES, ELEMENTS, MODELS, SAMPLERS, Config, Hparams
from tokdyn.models.sequence.first_stage import AE_LEARNING_RATE, decode_grids, grid_autoencoder
from tokdyn.models.sequence.network import (
    Block,
    Network,
    apply,
    count_params,
    grid_signal,
    init,
    loss_fn,
    time_embedding,
)
from tokdyn.models.sequence.sampling import nll_bound, sample
from tokdyn.models.sequence.training import CURVES, inputs, train, trainer

__all__ = [
    "MODELS",
    "ARCHITECTURES",
    "ELEMENTS",
    "SAMPLERS",
    "Config",
    "Hparams",
    "time_embedding",
    "Block",
    "Network",
    "init",
    "apply",
    "count_params",
    "grid_signal",
    "loss_fn",
    "CURVES",
    "trainer",
    "inputs",
    "train",
    "sample",
    "nll_bound",
    "AE_LEARNING_RATE",
    "grid_autoencoder",
    "decode_grids",
]
