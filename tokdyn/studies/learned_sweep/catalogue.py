"""The learned models ``tokdyn sweep`` knows, each a :class:`~tokdyn.studies.learned_sweep.model.LearnedModel`
declared from the model's own public pieces (its ``Config``, ``Hparams``, trainer, data and
evaluation): :data:`MODELS`. A model added here gets its command from a module of three lines
(:mod:`tokdyn.studies.learned_sweep.vtae` is one) and an entry in the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn.models import iodine, savi, slots, vtae
from tokdyn.studies.learned_sweep import sprites
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


def slots_evaluate(key, params, config, hparams, data) -> dict:
    """One trained Slot Attention autoencoder on :data:`~tokdyn.studies.learned_sweep.sprites.SCENES_HELD_OUT`
    held-out scenes (:func:`~tokdyn.studies.learned_sweep.sprites.sweep_scenes`), scored by
    :func:`~tokdyn.studies.learned_sweep.sprites.score_scenes` (FG-ARI, matched IoU and
    reconstruction error of its segmentation, the argmax of its masks). The slots' initial draw of
    scene i is ``fold_in(key, i)``'s."""
    held = sprites.sweep_scenes(config, 1, sprites.SCENES_HELD_OUT)
    n = sprites.SCENES_HELD_OUT
    noise = jax.vmap(lambda i: slots.slot_noise(jax.random.fold_in(key, i), config, 1)[0])(jnp.arange(n))
    out = slots.Autoencoder(config).apply(params, held.images, noise)
    return sprites.score_scenes(held, out.labels, out.recon, config.slots)


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
    inputs=sprites.scene_pool,
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


def iodine_evaluate(key, params, config, hparams, data) -> dict:
    """One trained IODINE on :data:`~tokdyn.studies.learned_sweep.sprites.SCENES_HELD_OUT`
    held-out scenes (:func:`~tokdyn.studies.learned_sweep.sprites.sweep_scenes`, those of the Slot
    Attention sweep), scored as Slot Attention is (:func:`~tokdyn.studies.learned_sweep.sprites.score_scenes`:
    its segmentation is the argmax of its masks after the last refinement). The posterior's draws
    of scene i are ``fold_in(key, i)``'s, as in :func:`tokdyn.models.iodine.segment`."""
    held = sprites.sweep_scenes(config, 1, sprites.SCENES_HELD_OUT)
    n = sprites.SCENES_HELD_OUT
    noise = jax.vmap(lambda i: iodine.posterior_noise(jax.random.fold_in(key, i), config, 1)[0])(jnp.arange(n))
    out, _ = iodine.infer(params, config, held.images, noise)
    return sprites.score_scenes(held, out.labels, out.recon, config.slots)


IODINE = LearnedModel(
    name="iodine",
    about="IODINE on sprite scenes over its learning rate x seeds (FG-ARI on held-out scenes)",
    config=iodine.Config(
        train=optim.Config(steps=1000, steps_per_call=100, warmup=100, decay="cosine", clip_norm=1.0),
    ),
    quick=iodine.Config(
        size=16,
        slots=4,
        latent_size=8,
        iterations=2,
        decoder_hidden=16,
        refine_channels=(16,),
        refine_hidden=32,
        batch_size=16,
        train=optim.Config(steps=100, steps_per_call=50, warmup=0, decay="constant", clip_norm=1.0),
    ),
    hparams=iodine.Hparams(),
    trainer=iodine.trainer,
    inputs=sprites.scene_pool,
    evaluate=iodine_evaluate,
    metrics=("fg_ari", "miou", "mse"),
    axes=(("learning_rate", "1e-4,3e-4,1e-3"),),
    quick_axes=(("learning_rate", "3e-4,1e-3"),),
    # one model at a time at the default shape on our two CPU cores (2026-11-27, load average 3-4):
    # 10 steps in 43 s, less 1.2 s of evaluation: 0.24 model-steps/s (TrainRun jitted, lanes 1)
    rate=0.24,
    quick_rate=8.0,  # the quick shape, one model at a time, the same day: 8.2 model-steps/s (evaluation included)
    fixed=("seeds", "root_seed"),
    # at the quick shape on two CPU cores, 4 models vmapped compiled in 106 s against 63 s for one
    # and trained no faster (7.0 against 8.2 model-steps/s): one model at a time on a CPU
    cpu_lanes=1,
)


def savi_evaluate(key, params, config, hparams, data) -> dict:
    """One trained SAVi on :data:`~tokdyn.studies.learned_sweep.sprites.VIDEOS_HELD_OUT` held-out
    clips (:func:`~tokdyn.studies.learned_sweep.sprites.sweep_videos`), scored by
    :func:`~tokdyn.studies.learned_sweep.sprites.score_videos` (video FG-ARI, its slots the track
    ids; per-frame FG-ARI; reconstruction error). Frame 0's slot noise of clip i is
    ``fold_in(key, i)``'s, as in :func:`tokdyn.models.savi.segment`."""
    held = sprites.sweep_videos(config, 1, sprites.VIDEOS_HELD_OUT)
    n = sprites.VIDEOS_HELD_OUT
    z = jax.vmap(lambda i: savi.frame_noise(jax.random.fold_in(key, i), config, 1)[0])(jnp.arange(n))
    out = savi.forward(params, config, held.images, z)
    return sprites.score_videos(held, out.labels, out.recon, config.slots)


SAVI = LearnedModel(
    name="savi",
    about="SAVi (Slot Attention for video) on sprite videos over its learning rate x seeds (video FG-ARI on held-out clips)",
    config=savi.Config(
        train=optim.Config(steps=1000, steps_per_call=100, warmup=100, decay="cosine", clip_norm=1.0),
    ),
    quick=savi.Config(
        frames=3,
        size=16,
        slots=4,
        slot_size=16,
        mlp_hidden=32,
        predictor_hidden=32,
        predictor_heads=2,
        encoder_channels=(16,),
        decoder_hidden=16,
        batch_size=8,
        train=optim.Config(steps=100, steps_per_call=50, warmup=0, decay="constant", clip_norm=1.0),
    ),
    hparams=savi.Hparams(),
    trainer=savi.trainer,
    inputs=sprites.video_pool,
    evaluate=savi_evaluate,
    metrics=("video_ari", "frame_ari", "mse"),
    axes=(("learning_rate", "1e-3,2e-3,4e-3"),),
    quick_axes=(("learning_rate", "2e-3,4e-3"),),
    # one model at a time at the default shape on our two CPU cores (2026-11-27, load average 3-4):
    # 20 steps in 14.8 s, less 0.7 s of evaluation: 1.4 model-steps/s (TrainRun jitted, lanes 1)
    rate=1.4,
    quick_rate=60.0,  # the quick shape, one model at a time, the same day: 63 model-steps/s (evaluation included)
    fixed=("seeds", "root_seed"),
    # at the quick shape on two CPU cores, 4 models vmapped compiled in 74 s against 64 s for one and
    # trained 8% faster (68 against 63 model-steps/s): too little for the compile time vmapping costs
    # Slot Attention's convolutions at the default shape; one model at a time on a CPU
    cpu_lanes=1,
)

MODELS = {m.name: m for m in (VTAE, SLOTS, IODINE, SAVI)}
