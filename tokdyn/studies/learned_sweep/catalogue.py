"""The learned models ``tokdyn sweep`` knows, each a :class:`~tokdyn.studies.learned_sweep.model.LearnedModel`
declared from the model's own public pieces (its ``Config``, ``Hparams``, trainer, data and
evaluation): :data:`MODELS`. A model added here gets its command from a module of three lines
(:mod:`tokdyn.studies.learned_sweep.vtae` is one) and an entry in the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn import metrics
from tokdyn.data import scenes
from tokdyn.models import slots, vtae
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

SCENES_SEED = 0x5CE7E  # the scenes every Slot Attention of a sweep sees: its pool, then held-out scenes
SLOTS_POOL = 512  # training scenes (batches drawn from them with replacement)
SLOTS_HELD_OUT = 64  # scenes each trained model is scored on, apart from the pool
SLOTS_MAX_OBJECTS = 4  # objects per scene: 2 to 4 (sprite_scenes' defaults)


def slots_scenes(config, which: int, n: int) -> scenes.Scenes:
    """The sweep's sprite scenes (:func:`tokdyn.data.scenes.sprite_scenes` of the model's image
    size): ``which`` 0 is the training pool, 1 the held-out scenes, both drawn from
    :data:`SCENES_SEED` alone, so every model of every condition sees the same scenes."""
    key = jax.random.fold_in(jax.random.key(SCENES_SEED), which)
    return scenes.sprite_scenes(key, n, size=config.size, max_objects=SLOTS_MAX_OBJECTS, dtype=jnp.float32)


def slots_inputs(config):
    """The training pool every Slot Attention of the sweep shares: (:data:`SLOTS_POOL`, size, size, 3)
    images (:func:`slots_scenes`)."""
    return slots_scenes(config, 0, SLOTS_POOL).images


def slots_evaluate(key, params, config, hparams, data) -> dict:
    """One trained Slot Attention autoencoder on :data:`SLOTS_HELD_OUT` held-out scenes
    (:func:`slots_scenes`): the mean FG-ARI (:func:`tokdyn.metrics.fg_ari`, the objects' pixels) and
    matched IoU (:func:`tokdyn.metrics.matched_iou`, background included) of its segmentation (the
    argmax of its masks) against the true masks, and its reconstruction's mean squared error. The
    slots' initial draw of scene i is ``fold_in(key, i)``'s."""
    held = slots_scenes(config, 1, SLOTS_HELD_OUT)
    noise = jax.vmap(lambda i: slots.slot_noise(jax.random.fold_in(key, i), config, 1)[0])(jnp.arange(SLOTS_HELD_OUT))
    out = slots.Autoencoder(config).apply(params, held.images, noise)
    flat = held.masks.reshape(SLOTS_HELD_OUT, -1)
    labels = out.labels.reshape(SLOTS_HELD_OUT, -1)
    n_true, n_pred = SLOTS_MAX_OBJECTS + 1, config.slots
    fg = jax.vmap(lambda m, lab: metrics.fg_ari(m, lab, n_true=n_true, n_pred=n_pred))(flat, labels)
    iou = jax.vmap(lambda m, lab: metrics.matched_iou(m, lab, n_true=n_true, n_pred=n_pred))(flat, labels)
    return {"fg_ari": jnp.mean(fg), "miou": jnp.mean(iou), "mse": jnp.mean((out.recon - held.images) ** 2)}


SLOTS = LearnedModel(
    name="slots",
    about="Slot Attention autoencoders on sprite scenes over their learning rate x seeds (FG-ARI on held-out scenes)",
    config=slots.Config(
        size=32,
        encoder_channels=(32, 32),
        slot_size=32,
        mlp_hidden=64,
        decoder_hidden=32,
        train=optim.Config(steps=1000, steps_per_call=100, warmup=100, decay="cosine", clip_norm=1.0),
    ),
    quick=slots.Config(
        size=16,
        slots=4,
        encoder_channels=(16,),
        encoder_kernel=3,
        slot_size=16,
        mlp_hidden=32,
        decoder_hidden=16,
        batch_size=16,
        train=optim.Config(steps=100, steps_per_call=50, warmup=0, decay="constant", clip_norm=1.0),
    ),
    hparams=slots.Hparams(),
    trainer=slots.trainer,
    inputs=slots_inputs,
    evaluate=slots_evaluate,
    metrics=("fg_ari", "miou", "mse"),
    axes=(("learning_rate", "1e-4,4e-4,1e-3"),),
    quick_axes=(("learning_rate", "4e-4,2e-3"),),
    # one model at a time on two CPU cores: the scenes study's Slot Attention (a larger slot size)
    # trained at 22.9 model-steps/s in the CPU suite of 2026-11-26 (benchmarks/runs/cpu-2026-11-26)
    rate=20.0,
    fixed=("seeds", "root_seed"),
    cpu_lanes=1,  # XLA:CPU did not compile the default shape's vmapped training in 25 min
)

MODELS = {m.name: m for m in (VTAE, SLOTS)}
