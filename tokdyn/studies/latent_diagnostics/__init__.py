"""The latent-diagnostics study: causal mediation, decomposition of the latent block, collapse and
linear probes of the trained reasoners of a latent-reasoning study.

``tokdyn study latent-diagnostics --out DIR --source SRC`` (:func:`main`, :class:`Config`) reads
the trained variants of a ``tokdyn study latent-reasoning`` directory (checked strictly against
its stamp and files before any work) and writes ``mediation.csv`` (:func:`mediation_rows`,
:func:`caption_rows`), ``decomposition.csv`` (:func:`decomposition`), ``collapse.csv``
(:func:`collapse_rows`), ``probes.csv`` (:func:`probe_rows`), ``similarity.png``,
``decomposition.png``, ``probes.png``, ``summary.md`` (:func:`summary`) and ``config.json``. Each
(variant, part) result is kept in ``DIR/parts/`` as it finishes, so a rerun resumes.

The source is read through the latent-reasoning study's ``SPEC.store``, found by name in the
registry (:mod:`tokdyn.experiment.analysis`): this study never imports it. A package, one concept a
module: ``config`` (:class:`Config`, :func:`facts`), ``measures`` (the rows of each table),
``running`` (:func:`run`), ``plots``, ``report`` (:func:`summary`), ``seed_findings`` (3, 4a, 4b); this
module keeps :data:`SPEC` and :func:`main` and re-exports every public name of its parts.

What each output holds, the source's checks, resuming and the findings:
:doc:`/studies/latent-diagnostics`.
"""

from __future__ import annotations

from tokdyn.diagnostics import mediation  # noqa: F401 (its SETTINGS and INTERVENTIONS name the options)
from tokdyn.experiment import analysis, runner
from tokdyn.studies.latent_diagnostics.config import (  # noqa: F401
    FACTS,
    MAX_PROBE_STEPS,
    SELECTION,
    STAGES,
    STUDY,
    Config,
    facts,
)
from tokdyn.studies.latent_diagnostics.seed_findings import (  # noqa: F401
    FLIP_CONNECTED,
    FLIP_DISCONNECTED,
    MARKERS_BAND,
    MARKERS_MARGIN,
    MARKERS_MAX_WIDTH,
    SHIFT_CONNECTED,
    SHIFT_DISCONNECTED,
    findings,
    flip_row,
    markers_finding,
    markers_unit,
    mediation_claims,
    mediation_findings,
    shift_row,
    source_seeds,
)
from tokdyn.studies.latent_diagnostics.measures import (  # noqa: F401
    caption_rows,
    collapse_rows,
    decomposition,
    intervention_rows,
    latent_block,
    mediation_rows,
    probe_rows,
    shift_rows,
)
from tokdyn.studies.latent_diagnostics.plots import draw, plot_decomposition, plot_probes, plot_similarity  # noqa: F401
from tokdyn.studies.latent_diagnostics.report import (  # noqa: F401
    collapse_lines,
    decomposition_lines,
    intervention_lines,
    probe_lines,
    shift_lines,
    significant,
    summary,
)
from tokdyn.studies.latent_diagnostics.running import Diagnosis, needed, run  # noqa: F401

SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    prepare=analysis.source_prepare(needed),
    figures=draw,
    summary=lambda cfg, r: summary(r.data["med"], r.data["dec"], r.data["col"], r.data["prb"]),
    findings=findings,
    outputs=("mediation.csv", "decomposition.csv", "collapse.csv", "probes.csv"),
    figure_files=("similarity.png", "decomposition.png", "probes.png"),
    selection=SELECTION,
    **analysis.SOURCE_SPEC,
)

main = runner.entry(SPEC, __name__, returns="True when it finished.", about="Its source is checked first.")
