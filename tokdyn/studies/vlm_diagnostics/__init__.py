"""The vlm-diagnostics study: the seeds' analyses on a real vision-language model of any checkpoint family
(the family found by the checkpoint's ``config.json``, :mod:`tokdyn.models.families`), over its latent-mode
generation (:mod:`tokdyn.models.vlm`) and, teacher-forced, its family's ``apply`` adapter.

``tokdyn study vlm-diagnostics --model DIR --out OUT`` (:func:`main`, :class:`Config`) reads a local
checkpoint directory and asks it questions with known answers about images: rendered sprite scenes ("how many
objects?", with their object masks) or a user's JSONL files (``--instances``, open or multiple-choice lines,
one benchmark a file). Its latents are a block forced after the prompt and filled by the model's own states
(``--latents block``) or those a latent-reasoning checkpoint writes while it generates (``--latents
generated``): one path through every analysis, the mode only says where the block comes from. It writes ``instances.csv``, one table per analysis (``grounding.csv``, ``perception.csv``,
``accuracy.csv``, ``decomposition.csv``, ``mediation.csv``, ``similarity.csv``, ``optimisation.csv``,
``injection.csv``), ``diagnostics.png``, ``summary.md`` and ``config.json``; every batch of every analysis is
kept in ``OUT/parts/`` as it finishes, so a rerun resumes, and a checkpoint or instances that changed are
refused (the stamp holds their files' SHA-256 and every image's). Without ``--model`` it builds a tiny
Qwen2.5-VL with random weights, so the command runs anywhere; its output then says that its numbers are a
random model's.

A package, one concept a module: ``config`` (:class:`Config`, :data:`ANALYSES`, :data:`PENDING`,
:data:`GPU_PRESETS`, the time estimate), ``checkpoint`` (the model and its stamp), ``instances`` (scenes,
JSONL, prompts padded to their buckets, the instances' stamp), ``analyses`` (the clean pass and the rows of
each analysis, from :mod:`tokdyn.diagnostics.vlm`), ``running`` (:func:`run` and the checks before it), ``report``
(:func:`summary`), ``plots`` (:func:`draw`: ``diagnostics.png``); this module keeps :data:`SPEC` and
:func:`main` and re-exports their public names. What each table holds: :doc:`/studies/vlm-diagnostics`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.studies.vlm_diagnostics import analyses, checkpoint, instances, report  # noqa: F401
from tokdyn.studies.vlm_diagnostics.analyses import (  # noqa: F401
    FUNCTIONS,
    Context,
    accuracy_rows,
    decomposition_rows,
    grounding_rows,
    mediation_rows,
    optimisation_rows,
    injection_rows,
    perception_rows,
    similarity_part,
    similarity_rows,
)
from tokdyn.studies.vlm_diagnostics.checkpoint import (  # noqa: F401
    Loaded,
    Tokens,
    model_stamp,
    open_checkpoint,
    tiny_config,
    tiny_params,
    weights_stamp,
)
from tokdyn.studies.vlm_diagnostics.config import (  # noqa: F401
    ANALYSES,
    DECOMPOSITION_SETTINGS,
    LATENT_KINDS,
    LATENTS,
    GPU_PRESETS,
    PENDING,
    RANDOM_NOTE,
    SELECTION,
    STUDY,
    Config,
)
from tokdyn.studies.vlm_diagnostics.instances import (  # noqa: F401
    Group,
    Instances,
    bucket,
    encode,
    make_instances,
    read_files,
    read_jsonl,
)
from tokdyn.studies.vlm_diagnostics.plots import FIGURE, draw
from tokdyn.studies.vlm_diagnostics.report import summary
from tokdyn.studies.vlm_diagnostics.running import changed_message, check, prepare, run, stamp_extra  # noqa: F401

TABLES = tuple(f"{name}.csv" for name in ANALYSES)

SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    check=check,
    prepare=prepare,
    stamp_extra=stamp_extra,
    summary=lambda cfg, r: summary(cfg, r.data),
    figures=draw,
    outputs=("instances.csv", *TABLES),
    figure_files=(FIGURE,),
    selection=SELECTION,
)

main = runner.entry(
    SPEC,
    __name__,
    returns="True when it finished (None for a process other than 0 of several).",
    about="The checkpoint and the instances are checked first; a checkpoint whose weights changed is refused. "
    "Every batch is split over the local devices; several processes share the batches (``part``).",
    parts=True,
)
