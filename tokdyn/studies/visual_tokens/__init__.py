"""The visual-token study: can text tokens be mapped to N x N colour grids and read back, when
the autoencoders are trained adequately? (``tokdyn study visual-tokens --out DIR``)

:func:`main`, :class:`Config`. The parts of :data:`PARTS` (``--parts`` chooses which run; :func:`run_part`): ``main``
(reconstruction over vocabulary size x grid x encoder mode x budget), ``published``, ``poc``,
``curriculum`` and ``semantic``. It writes ``results.csv`` (one row per model, with a per-cell
verdict, :func:`cell_verdict`), the heatmaps, ``grids.png`` (:func:`grids_png`), ``summary.md``
and ``config.json``; each cell and part is kept in ``DIR/parts/`` as it finishes, so a rerun
resumes.

The parts, resuming and the findings: :doc:`/studies/visual-tokens`.

The study's parts, one concept a module (every public name is re-exported here:
``tokdyn.studies.visual_tokens.Config``, ``.run_part``, ...):

- :mod:`~tokdyn.studies.visual_tokens.config`   :class:`Config`: the fields, their checks, the models, the estimate; one model's configuration
- :mod:`~tokdyn.studies.visual_tokens.training` one cell's models trained and evaluated, their rows
- :mod:`~tokdyn.studies.visual_tokens.parts`    the parts, cell by cell, each cell kept
- :mod:`~tokdyn.studies.visual_tokens.summary`  ``summary.md`` and each cell's verdict
- :mod:`~tokdyn.studies.visual_tokens.findings` finding 2a
- :mod:`~tokdyn.studies.visual_tokens.plots`    the figures

Here: :func:`run` (the study's computation, part by part), :func:`draw`, :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

import jax
import numpy as np

from tokdyn import io
from tokdyn.experiment import runner
from tokdyn.experiment.findings import judge

# (importing the parts binds each as an attribute: tokdyn.studies.visual_tokens.parts, ...)
from tokdyn.studies.visual_tokens.config import (  # noqa: F401
    COLUMNS,
    LOG_FIELDS,
    MAX_STEPS,
    PARTS,
    PUBLISHED_VOCAB,
    Config,
    curriculum_vocab,
    model_config,
    training_budget,
)
from tokdyn.studies.visual_tokens.findings import COLLAPSE_RARE, adequate_cells, collapse_finding  # noqa: F401
from tokdyn.studies.visual_tokens.parts import part_cells, run_part  # noqa: F401
from tokdyn.studies.visual_tokens.plots import grid_codes, grids_png, heatmaps
from tokdyn.studies.visual_tokens.summary import AT_CHANCE, STILL_FALLING, cell_verdict, summarise  # noqa: F401
from tokdyn.studies.visual_tokens.training import model_rows, train_and_evaluate  # noqa: F401


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """The selected parts, each kept as it finishes (a part finished earlier is read back;
    :doc:`/studies/visual-tokens`): ``results.csv``, one row per model."""
    study = session.study
    key = jax.random.key(cfg.root_seed)
    selected = [(i, name) for i, name in enumerate(PARTS) if name in cfg.parts]
    rows = []
    with io.Progress(
        len(selected),
        desc="visual-tokens",
        unit="parts",
        done=sum(study.has(name) for _, name in selected),
        quiet=session.quiet,
    ) as progress:
        for i, name in selected:
            if study.has(name):
                rows += study.rows(name, lambda: [])
                progress.note(f"part {name}: done already ({study.part_path(name, '.json')})")
                continue
            progress.note(f"part {name} ...")
            with session.timed(name):
                part = study.rows(
                    name, lambda: run_part(name, cfg, jax.random.fold_in(key, i), progress=progress, study=study)
                )
            rows += part
            progress.note(f"part {name}: {len(part)} models in {session.timings[name + '_s']:.1f} s")
            progress.update()
    table = {c: np.asarray([r[c] for r in rows], object) for c in COLUMNS}
    return runner.Result(
        {"results.csv": table},
        data=dict(table=table, key=key),
        record=dict(parts=[name for _, name in selected], models=len(rows)),
        value=session.timings,
    )


def draw(session: runner.Session, cfg: Config, result: runner.Result) -> list[str]:
    """The heatmaps of the main part (:func:`heatmaps`) and ``grids.png`` (its model kept as the part
    ``grids``); returns their paths."""
    codes = session.part("grids", lambda: {"codes": grid_codes(cfg, jax.random.fold_in(result.data["key"], 99))})
    return heatmaps(session.out, result.data["table"], cfg) + [
        grids_png(session.path("grids.png"), cfg, None, codes["codes"])
    ]


SPEC = runner.Spec(
    name="visual-tokens",
    config=Config,
    run=run,
    figures=draw,
    summary=lambda cfg, r: summarise(r.data["table"]).removesuffix("\n"),
    findings=lambda out: judge(out, "results.csv", "visual-tokens", lambda t: [collapse_finding(t)]),
    outputs=("results.csv",),
    figure_files=("heatmap_*.png", "grids.png"),
    selection=("parts", "preset"),
)  # which parts run, and a label


main = runner.entry(SPEC, __name__, returns="The timings (a dict).", about="``parts`` is left out of the stamp.")
