"""Sweeps of the learned models over their traced knobs x seeds: ``tokdyn sweep MODEL``.

    tokdyn sweep vtae --learning-rate 1e-3,3e-3,1e-2 --tau-end 0.1,0.3 --seeds 1000 --out DIR

A model is declared once, as a value (:class:`LearnedModel`, :data:`MODELS`): its static
configuration, its traced knobs (its ``Hparams``: every field an axis of the sweep, an option of
the command, documented by the knob's own docstring), its trainer (:class:`tokdyn.train.Trainer`),
its shared data and its evaluation. One run is :class:`TrainRun`: one model trained from its
seed's key with one setting of the knobs (:func:`tokdyn.train.make_train`, the same training as
:func:`tokdyn.train.train_many`'s), then evaluated. The grid (the axes x seeds) runs on the
execution engine (:func:`tokdyn.engine.sweep.run`): the models of a chunk vmapped in one compiled
program per model shape (every knob traced: no setting recompiles), chunk by chunk into ``DIR``,
each chunk written atomically with a checksum beside a manifest of the arguments and of the code
that made it. A rerun reads the finished chunks back and computes only the rest; a damaged chunk
is named, set aside and recomputed; a rerun with other code or another configuration is refused
naming what differs (``--fresh`` starts afresh). Common random numbers: seed s of every condition
starts from the same initial parameters and sees the same batches, so conditions are compared
pairwise by seed.

Chunks: ``--chunk-size`` models (default per backend: on an accelerator as many as fit in a
quarter of the device's free memory, from XLA's memory analysis of the training program,
:func:`~tokdyn.studies.learned_sweep.running.chunk_size`); ``--lanes`` models vmapped at once (64
on CPU, the whole chunk on an accelerator).

Afterwards ``DIR`` holds ``conditions.csv`` (per condition, each metric's mean over seeds with its
95% interval, the models left out for a non-finite metric), ``paired.csv``
(each condition against the ``--baseline`` condition, metric by metric, paired by seed: the mean
difference with its bootstrap interval, t, p, Holm's p, d_z; :mod:`tokdyn.experiment.paired`, the
token-dynamics sweep's paired comparisons), ``report.md`` (the whole grid, each axis with where it
came from; the best condition, chosen on one half of the seeds and estimated on the other; the
tables) and, unless ``--no-plots``, ``plots/loss.png`` (each condition's training loss) and
``plots/by_AXIS.png`` (every metric against each axis, with its intervals). Every interval over
seeds follows the findings' rule (:data:`tokdyn.experiment.findings.INTERVALS`).

The parts, one concept a module (every public name re-exported here):

- :mod:`~tokdyn.studies.learned_sweep.model`     :class:`LearnedModel` (a model's declaration), :class:`TrainRun` (one run)
- :mod:`~tokdyn.studies.learned_sweep.catalogue` the models declared: :data:`MODELS`
- :mod:`~tokdyn.studies.learned_sweep.sprites`   the sprite scenes and videos the object-centric sweeps share, and their scores
- :mod:`~tokdyn.studies.learned_sweep.grammar`   the grammar sentences and grids of the grid-diffusion sweep, and its text scores
- :mod:`~tokdyn.studies.learned_sweep.config`    :class:`SweepConfig`, :func:`make_config` (each model's ``Config``)
- :mod:`~tokdyn.studies.learned_sweep.running`   :func:`run_sweep`, :func:`chunk_size`, the runner's hook, :func:`make_spec`
- :mod:`~tokdyn.studies.learned_sweep.report`    :func:`analysis`: the tables and ``report.md``
- :mod:`~tokdyn.studies.learned_sweep.plots`     the figures: :func:`~tokdyn.studies.learned_sweep.plots.plot_jobs`
- :mod:`~tokdyn.studies.learned_sweep.vtae`      the command ``tokdyn sweep vtae``: its ``Config``, ``SPEC``, ``main``
- :mod:`~tokdyn.studies.learned_sweep.slots`     the command ``tokdyn sweep slots`` (Slot Attention on sprite scenes)
- :mod:`~tokdyn.studies.learned_sweep.iodine`    the command ``tokdyn sweep iodine`` (IODINE on the same scenes)
- :mod:`~tokdyn.studies.learned_sweep.savi`      the command ``tokdyn sweep savi`` (SAVi on sprite videos)
- :mod:`~tokdyn.studies.learned_sweep.grid_diffusion` the command ``tokdyn sweep grid-diffusion`` (the grid-diffusion study's models)
"""

from __future__ import annotations

from tokdyn.studies.learned_sweep.catalogue import (  # noqa: F401
    GRID_DIFFUSION,
    IODINE,
    MODELS,
    SAVI,
    SLOTS,
    VTAE,
    grid_diffusion_evaluate,
    iodine_evaluate,
    savi_evaluate,
    slots_evaluate,
    vtae_evaluate,
)
from tokdyn.studies.learned_sweep.config import CPU_LANES, SweepConfig, make_config  # noqa: F401
from tokdyn.studies.learned_sweep.grammar import score_text, sweep_data, sweep_sentences  # noqa: F401
from tokdyn.studies.learned_sweep.model import EVAL_SALT, LOSS_CURVE, LearnedModel, TrainRun  # noqa: F401
from tokdyn.studies.learned_sweep.report import (  # noqa: F401
    analysis,
    baseline_row,
    best_setting,
    condition_label,
    printed,
    report_text,
)
from tokdyn.studies.learned_sweep.running import chunk_size, make_spec, run, run_sweep  # noqa: F401
from tokdyn.studies.learned_sweep.sprites import (  # noqa: F401
    scene_pool,
    score_scenes,
    score_videos,
    sweep_scenes,
    sweep_videos,
    video_pool,
)
from tokdyn.studies.learned_sweep import grid_diffusion, iodine, savi, slots, vtae  # noqa: F401,E402 (the commands `tokdyn sweep MODEL`)
