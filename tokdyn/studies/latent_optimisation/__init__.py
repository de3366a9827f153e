"""The latent-optimisation study: confidence-driven latent optimisation at inference (DMLR) and the
visual grounding of generated tokens, on the trained reasoners of a latent-reasoning study.

``tokdyn study latent-optimisation --out DIR --source SRC`` (:func:`main`, :class:`Config`) reads
the trained variants of a ``tokdyn study latent-reasoning`` directory (checked strictly against
its stamp and files before any work). The **optimiser** part runs every method of
:data:`METHODS` and the controls ``before`` (the model's own latents) and ``random`` (random
latents of each latent's norm) on every latent-feedback variant (:func:`run_optimiser`,
:func:`optimiser_tables`); the **grounding** part scores each generated token's grounding under
image perturbations (:func:`run_grounding`). It writes ``optimiser.csv``,
``optimiser_tests.csv``, ``rewards.csv``, ``grounding.csv``, ``optimiser.png``, ``grounding.png``,
``summary.md`` and ``config.json``; every run is kept in ``DIR/parts/`` as it finishes.

The source is read through the latent-reasoning study's ``SPEC.store``, found by name in the
registry (:mod:`tokdyn.experiment.analysis`): this study never imports it. A package, one concept a
module: ``config`` (:class:`Config`, :data:`METHODS`), ``optimiser``, ``grounding``, ``running``
(:func:`run`), ``plots``, ``report`` (:func:`summary`), ``seed_findings`` (5); this module keeps
:data:`SPEC` and :func:`main` and re-exports every public name of its parts.

The outputs, the source's checks, resuming and the findings: :doc:`/studies/latent-optimisation`.
"""

from __future__ import annotations

from tokdyn.experiment import analysis, runner
from tokdyn.studies.latent_optimisation.config import CONTROLS, METHODS, SELECTION, STUDY, Config  # noqa: F401
from tokdyn.studies.latent_optimisation.seed_findings import (  # noqa: F401
    DMLR,
    GAIN_EXCLUDED,
    findings,
    method_row,
    optimisation_claim,
    optimisation_finding,
)
from tokdyn.studies.latent_optimisation.grounding import grounding_part, run_grounding  # noqa: F401
from tokdyn.studies.latent_optimisation.optimiser import (  # noqa: F401
    method_rows,
    optimiser_tables,
    paired_rows,
    run_optimiser,
)
from tokdyn.studies.latent_optimisation.plots import draw, plot_grounding, plot_optimiser  # noqa: F401
from tokdyn.studies.latent_optimisation.report import summary  # noqa: F401
from tokdyn.studies.latent_optimisation.running import needed, run, trained  # noqa: F401

SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    prepare=analysis.source_prepare(needed),
    figures=draw,
    summary=lambda cfg, r: summary(r.data["table"], r.data["tests"], r.data["ground"]),
    findings=findings,
    outputs=("optimiser.csv", "optimiser_tests.csv", "rewards.csv", "grounding.csv"),
    figure_files=("optimiser.png", "grounding.png"),
    selection=SELECTION,
    **analysis.SOURCE_SPEC,
)


main = runner.entry(SPEC, __name__, returns="True when it finished.", about="Its source is checked first.")
