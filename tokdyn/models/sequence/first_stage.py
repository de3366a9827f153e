"""The first stage of the two-stage model, as the second stage reads it: the grid autoencoder's
configuration (:func:`grid_autoencoder`, :data:`AE_LEARNING_RATE`) and the decoding of sampled grids
back to tokens (:func:`decode_grids`, traceable)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.models.vtae import corpus
from tokdyn.models.vtae import model as ae_model
from tokdyn.train import optim

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
