"""The learned models ``tokdyn sweep`` knows, each a :class:`~tokdyn.studies.learned_sweep.model.LearnedModel`
declared from the model's own public pieces (its ``Config``, ``Hparams``, trainer, data and
evaluation): :data:`MODELS`. A model added here gets its command from a module of three lines
(:mod:`tokdyn.studies.learned_sweep.vtae` is one) and an entry in the registry."""

from __future__ import annotations

from tokdyn.models import vtae
from tokdyn.studies.learned_sweep.model import LearnedModel
from tokdyn.train import optim


def vtae_evaluate(key, params, config, hparams, data) -> dict:
    """:func:`tokdyn.models.vtae.diagnostics.evaluate` of one trained autoencoder on its whole
    vocabulary (``data``: :func:`tokdyn.models.vtae.inputs`' ``(weights, embeddings)``)."""
    weights, embeddings = data
    return vtae.diagnostics.evaluate(key, params, config, weights=weights, embeddings=embeddings, hparams=hparams)


VTAE = LearnedModel(
    name="vtae",
    about="visual-token autoencoders over their traced knobs (learning rate, temperatures, loss weights) x seeds",
    config=vtae.Config(),
    quick=vtae.Config(
        hidden=32,
        batch_size=32,
        train=optim.Config(steps=100, steps_per_call=50, warmup=0, decay="constant", clip_norm=0.0),
    ),
    hparams=vtae.Hparams(),
    trainer=vtae.trainer,
    inputs=vtae.inputs,
    evaluate=vtae_evaluate,
    metrics=("accuracy", "collapsed", "dominant_freq", "loss", "uniqueness", "code_perplexity", "sensitivity_kl"),
    axes=(("learning_rate", "3e-4,3e-3,3e-2"), ("tau_end", "0.1,1")),
    quick_axes=(("learning_rate", "3e-3,3e-2"),),
    rate=50000.0,  # ~52,000 model-steps/s at 64 seeds on two CPU cores (benchmarks)
)

MODELS = {m.name: m for m in (VTAE,)}
