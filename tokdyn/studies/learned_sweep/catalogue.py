"""The learned models ``tokdyn sweep`` knows, each a :class:`~tokdyn.studies.learned_sweep.model.LearnedModel`
declared from the model's own public pieces (its ``Config``, ``Hparams``, trainer, data and
evaluation): :data:`MODELS`. A model added here gets its command from a module of three lines
(:mod:`tokdyn.studies.learned_sweep.vtae` is one) and an entry in the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn.experiment.findings import RATE, SCORE
from tokdyn.models import iodine, savi, sequence, slots, vtae
from tokdyn.studies.learned_sweep import grammar, sprites
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
    bounds=(("accuracy", RATE), ("collapsed", RATE), ("dominant_freq", RATE), ("uniqueness", RATE)),
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
    bounds=(("fg_ari", SCORE), ("miou", RATE)),
    axes=(("learning_rate", "1e-4,4e-4,1e-3"),),
    quick_axes=(("learning_rate", "4e-4,2e-3"),),
    # one model at a time on two CPU cores: the scenes study's Slot Attention (a larger slot size)
    # trained at 22.9 model-steps/s in the CPU suite of 2026-11-26 (benchmarks/runs/cpu-2026-11-26)
    rate=20.0,
    # the quick shape, one model at a time on our two CPU cores (2026-11-27, load average 3.5-4, TrainRun
    # jitted): 100 steps and the evaluation in 1.3 s, 77 model-steps/s (0.77 s, 130, at load average 2)
    quick_rate=75.0,
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
    bounds=(("fg_ari", SCORE), ("miou", RATE)),
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
    bounds=(("video_ari", SCORE), ("frame_ari", SCORE)),
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


def grid_diffusion_evaluate(key, params, config, hparams, data) -> dict:
    """One trained grid-diffusion model (:mod:`tokdyn.models.sequence`) scored as the grid-diffusion
    study scores its models, inside the compiled program: :data:`~tokdyn.studies.learned_sweep.grammar.SAMPLES`
    sentences sampled (:func:`tokdyn.models.sequence.sample`, ancestral, from ``fold_in(key, 0)``),
    a grid model's grids decoded by the first stage's decoder
    (:func:`tokdyn.models.sequence.decode_grids` of :func:`~tokdyn.studies.learned_sweep.grammar.autoencoder`),
    then :func:`~tokdyn.studies.learned_sweep.grammar.score_text` (the shares of grammatical
    sentences and bigrams, of valid grids); and ``nll``, the mean negative log-likelihood bound in
    nats per sentence of the :data:`~tokdyn.studies.learned_sweep.grammar.HELD_OUT` held-out
    sentences (:func:`tokdyn.models.sequence.nll_bound` from ``fold_in(key, 1)``; not for
    ``grid_ddpm``, a density)."""
    samples = sequence.sample(jax.random.fold_in(key, 0), params, config, grammar.SAMPLES)
    if config.on_grids:
        ae_params, _ = grammar.autoencoder(config)
        tokens, confidence = sequence.decode_grids(ae_params, grammar.autoencoder_config(config), samples)
    else:
        tokens, confidence = samples, None
    scores = grammar.score_text(tokens, confidence)
    if not config.continuous:
        held = grammar.sweep_data(config, 1)
        scores["nll"] = jnp.mean(sequence.nll_bound(jax.random.fold_in(key, 1), params, config, held))
    return scores


GRID_DIFFUSION = LearnedModel(
    name="grid-diffusion",
    about="diffusion over visual-token grids (the grid-diffusion study's models) over their learning rate and "
    "hybrid-loss weight x seeds (grammatical sentences of their samples, held-out likelihood)",
    config=sequence.Config(
        model="grid_d3pm_uniform",
        elements="grids",
        train=optim.Config(
            steps=3000, steps_per_call=100, warmup=100, decay="cosine", final_fraction=0.1, clip_norm=1.0
        ),
    ),
    quick=sequence.Config(
        model="grid_d3pm_uniform",
        elements="grids",
        T=20,
        width=32,
        depth=1,
        batch_size=32,
        train=optim.Config(steps=100, steps_per_call=50, warmup=0, decay="constant", final_fraction=0.1, clip_norm=1.0),
    ),
    hparams=sequence.Hparams(),
    trainer=sequence.trainer,
    inputs=grammar.sweep_data,
    evaluate=grid_diffusion_evaluate,
    metrics=("grammatical_sentences", "grammatical_bigrams", "valid", "nll"),
    metrics_of=grammar.metrics_of,
    bounds=tuple((m, RATE) for m in grammar.TEXT_METRICS),
    check=grammar.check,
    axes=(("learning_rate", "1e-3,2e-3,4e-3"), ("lam", "0.01,0.1")),
    quick_axes=(("learning_rate", "2e-3,4e-3"),),
    # one model at a time at the default shape on our two CPU cores (2026-11-27, load average 3):
    # 52 model-steps/s of training (200 and 1,000 steps, TrainRun jitted) and 7.3 s of evaluation
    # (256 samples of T = 200 steps, the held-out bound): 3,000 steps in 65 s, 46 model-steps/s
    rate=45.0,
    # the quick shape, one model at a time, the same day: 100 steps and the evaluation in 0.97 s
    # (103 model-steps/s; 142 at load average 1)
    quick_rate=100.0,
    fixed=("vocab_size",),
    # on two CPU cores (2026-11-27, load average 3): at the default shape 4 models vmapped trained at
    # 42 model-steps/s against 52 one at a time (their evaluation 4.1 s a model against 7.3 s) and
    # compiled in 103 s against 73 s; at the quick shape the quick preset's 12 models took 52 s with
    # 4 lanes against 43 s one at a time, most of it compiling: one model at a time on a CPU
    cpu_lanes=1,
)


MODELS = {m.name: m for m in (VTAE, SLOTS, IODINE, SAVI, GRID_DIFFUSION)}
