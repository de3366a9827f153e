"""The collapse study: where token collapse and instability really happen, against the theory.

The theory is :mod:`tokdyn.analysis`'s: the collapsed state is locally stable iff tau > tau_c = 2
lambda_max(Cov X). ``tokdyn study collapse --out DIR`` (:func:`main`, :class:`Config`) runs the parts ``threshold``,
``jacobian``, ``phase``, ``momentum``, ``repulsion`` and ``convergence`` (:func:`threshold_part`,
:func:`jacobian_part`, :func:`phase_parts`, :func:`convergence_part`), each run a
:class:`tokdyn.engine.runs.CollapseRun`, and writes ``threshold_check.csv``,
``jacobian_check.csv``, ``convergence.csv``, ``phase.csv``, the phase diagrams
(:func:`write_figures`), ``summary.json`` (:func:`summarise`) and ``config.json``. The directory
is stamped before any work; finished sweeps and parts are reused by a rerun.


The study's parts, one concept a module (every public name is re-exported here:
``tokdyn.studies.collapse.Config``, ``.summarise``, ...):

- :mod:`~tokdyn.studies.collapse.config`  :class:`Config`: the fields, their checks, the sweeps, the estimate
- :mod:`~tokdyn.studies.collapse.parts`   the parts: threshold, Jacobian, convergence and phase sweeps
- :mod:`~tokdyn.studies.collapse.tables`  the phase diagrams' cells, ``phase.csv``
- :mod:`~tokdyn.studies.collapse.plots`   the phase diagrams' figures
- :mod:`~tokdyn.studies.collapse.summary` ``summary.json`` and its printed form
- :mod:`~tokdyn.studies.collapse.real`    with ``--data``: a trained Slot Attention's encoder features of real
  scenes (``real_threshold.csv``, ``real_slots.csv``, ``summary.json``'s ``real``)

Here: :func:`run` (the study's computation, part by part), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

import numpy as np

from tokdyn import data, io
from tokdyn.experiment import runner
from tokdyn.experiment.presets import preset_line, with_preset_line

# (importing the parts binds each as an attribute: tokdyn.studies.collapse.parts, ...)
from tokdyn.studies.collapse.config import EXTRA_RATIOS, MAX_STEPS, RUN_FIELDS, Config, ratio_grid  # noqa: F401
from tokdyn.studies.collapse.parts import (  # noqa: F401
    convergence_part,
    crossing,
    jacobian_part,
    phase_parts,
    threshold_part,
)
from tokdyn.studies.collapse import real
from tokdyn.studies.collapse.plots import write_figures
from tokdyn.studies.collapse.summary import format_summary, summarise
from tokdyn.studies.collapse.tables import phase_rows, phase_table  # noqa: F401


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Every part (finished sweeps and parts found in the directory reused;
    :doc:`/studies/collapse`) and the headline numbers (:func:`summarise`; the quick preset's label first)."""
    study, progress = session.study, not session.quiet
    with session.timed("threshold"):
        thr = threshold_part(cfg, study, progress=progress)
    session.say(f"threshold: {len(thr)} rows, max |rel error| {np.nanmax(np.abs([r['rel_error'] for r in thr])):.3f}")
    with session.timed("jacobian_convergence"):
        jac = study.rows("jacobian", lambda: jacobian_part(cfg))
        conv = study.rows("convergence", lambda: convergence_part(cfg))
    with session.timed("phase"):
        ratios, phase, mom, rep = phase_parts(cfg, study, progress=progress)
    summary = summarise(thr, jac, conv, mom, rep, ratios)
    real_tables = {}
    if cfg.data:
        with session.timed("real"):
            session.say(f"real: a Slot Attention's encoder features of {cfg.data_scenes} scenes of {cfg.data}")
            real_thr, real_sl = real.real_parts(cfg, study, progress=progress)
        summary["real"] = real.real_summary(cfg, real_thr, real_sl)
        real_tables = {"real_threshold.csv": io.to_columns(real_thr), "real_slots.csv": io.to_columns(real_sl)}
    if cfg.preset:  # first in summary.json: which preset, and that its numbers are no findings
        summary = {"preset": cfg.preset, "note": preset_line(cfg), **summary}
    tables = {
        "threshold_check.csv": io.to_columns(thr),
        "jacobian_check.csv": io.to_columns(jac),
        "convergence.csv": io.to_columns(conv),
        "phase.csv": io.to_columns(phase_rows(ratios, phase, mom, rep, cfg)),
        **real_tables,
    }
    return runner.Result(
        tables,
        data=dict(summary=summary, sweeps=(ratios, phase, mom, rep)),
        record={"shapes": {s: data.SHAPES[s][1] for s in cfg.shapes}},
        value=summary,
    )


SPEC = runner.Spec(
    name="collapse",
    config=Config,
    run=run,
    figures=lambda session, cfg, r: write_figures(session.out, cfg, *r.data["sweeps"]),
    summary=lambda cfg, r: r.data["summary"],
    summary_file="summary.json",
    printed=lambda cfg, r, summary: with_preset_line(cfg, format_summary(summary)),
    outputs=(
        "threshold_check.csv",
        "jacobian_check.csv",
        "convergence.csv",
        "phase.csv",
        "real_threshold.csv",
        "real_slots.csv",
    ),
    figure_files=("phase_collapse.png", "phase_groups.png", "phase_momentum.png", "phase_repulsion.png"),
    selection=("preset",),  # a label: the same runs with it or without it
    prepare=real.prepare_data,  # with --data: the scenes counted and read before the directory is stamped
)


main = runner.entry(
    SPEC, __name__, returns="The summary (a dict, also ``summary.json``).", about="Finished sweeps and parts are kept."
)
