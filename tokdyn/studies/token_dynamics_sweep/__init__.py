"""Sweeps of token dynamics over the update rule's hyperparameters and the data's conditions.

    tokdyn sweep token-dynamics --temperature logspace:0.05:20:25 --repulsion linspace:0:0.2:11 \\
        --momentum 0,0.5 --noise 0.3,0.6,0.9 --n-clusters 3,4,5 --seeds 200 --out DIR

One run is :class:`tokdyn.engine.runs.ClusterRun` (the published study's run, every condition traced);
the grid is the product of the axes x seeds, executed by :func:`tokdyn.engine.sweep.run` with common
random numbers (every setting sees the same data and initial tokens for a given seed, so settings
are compared pairwise), chunk by chunk into ``DIR/chunks``.

Before any run, ``DIR`` is checked and stamped (``study.json``, :mod:`tokdyn.experiment.study`):
an output path that cannot be written, a sweep whose analysis cannot fit in memory, whose chunks
cannot fit on the disk, or whose runs overflow the engine's ``uint32`` run index
(:meth:`Config.estimate`: ``--seeds 4000000000`` is refused naming ``seeds``) exits 2 naming the
option; one that will take more than an hour says so up front. A directory of another study (a
token-dynamics study's, say) or of this sweep with other arguments is refused naming the fields
that differ; ``--fresh`` removes what it holds and starts afresh.

Resuming: the same command run again continues a killed sweep, computing only the chunks that
are not on disk. Every chunk is written atomically with a checksum and the stamp of the sweep's
arguments (:func:`tokdyn.engine.sweep.run`): a truncated or altered chunk is named in a warning,
set aside to ``DIR/chunks/corrupt/`` and recomputed; a damaged ``manifest.json`` (fully determined
by the arguments) is set aside and written anew, the chunks' stamps keeping any other sweep's
chunks out. Several processes may run one sweep into one ``DIR`` (:func:`main`'s ``part``, or
one process per host under ``jax.distributed``): part 0 stamps the directory and writes the
analysis once every part's chunks are there.

Afterwards (:func:`analyse`) the directory gets:

- ``summary.csv``: per condition (every axis), mean / std of each metric over the seeds whose
  run stayed finite, the count of non-finite values per metric (``*_nan``: NaN or inf) and of runs
  left out (``nonfinite``: a run with a non-finite metric blew up and counts in no figure); its
  SHA-256 is recorded in ``tables.json`` (which carries a checksum of its own), and a reader
  (``tokdyn plot heatmap``) recomputes it from the verified chunks, with a warning, when it does
  not match;
- ``settings.csv``: per hyperparameter setting (the rule axes: temperature, momentum, repulsion,
  and any of the extended rules' knobs, ``--knob`` axes, or ``method``, an index into ``config.json``'s
  method names, with ``method_name`` beside it in every table),
  pooled over the data axes (noise, n_clusters), mean ARI, steps, collapse and convergence rates
  with 95% percentile-bootstrap intervals over seeds, and whether it is on the Pareto front;
- ``pareto.csv`` + ``plots/pareto.png``: the settings no other setting beats on both mean steps
  (fewer) and mean ARI (higher): the speed/quality trade-off the published study asked about;
- ``plots/heatmap_*.png``: ARI and collapse rate over the first two rule axes;
- ``report.md``: the best setting (chosen on one half of the seeds, estimated on the other;
  settings with a non-finite run left out of it and of the Pareto front, and counted, unless
  ``--best-over-nonfinite``), the best regimes found, with their intervals, and the conditions
  that had non-finite runs marked (⚠) and counted; ``config.json`` (the stamp: the whole configuration and
  the tokdyn version, with the environment and the timings).

Every list of conditions is a set: an axis that lists a value twice (``--noise 0.3,0.3``,
``--temperature linspace:1:1:3``, ``--method baseline,baseline``) exits 2 naming it. Results are
keyed by the code that made them: the manifest records the run function's
:func:`tokdyn.engine.sweep.code_digest`, its output fields and, with ``--rule-module``, the
digests of the rule's module and of every module of the user's it imports
(:func:`tokdyn.engine.sweep.digest.module_digests`, by their syntax trees), group by group, so a
rerun after the rule or a helper module changed exits 2 naming the module ("the rule's code
changed since these results: rerun with --fresh, or into another directory"); a group whose rule
does not use the module (the baseline) keeps its results.

Several rules, paired by seed: ``--method`` takes built-in methods, the package's rules beyond
them (``refinement``, :data:`tokdyn.engine.runs.PACKAGE_RULES`) and ``--rule-module``'s rules in any
mix (``--method baseline,refinement,lloyd``), and ``--knob NAME=VALUES`` makes a field of a rule's
``hparams`` an axis (:class:`Config`: ``--knob step_size=0.5,1`` for ``refinement``). Each rule is one engine sweep (:meth:`Config.groups`), in
``DIR/groups/<i>-<name>`` with its own manifest and chunks (resumed and stamped like a sweep of one
rule), all with the same root key and common random numbers; the analysis merges them into one
summary / settings / pareto / report, and report.md compares each method's best setting with the
first method's, paired by seed on the held-out half of the seeds (the difference with its interval,
t, p, Holm's p, d_z). ``--quick``: a small preset whose report.md says so in its first
line.

``tokdyn plot heatmap DIR --x A --y B [--metric M] [--where axis=value]`` draws one metric of a
finished sweep over two of its axes into ``DIR/plots``; every bad argument (an axis or a value the
sweep does not have, an unfinished sweep, a damaged manifest) exits 2 naming it.

The sweep's parts, one concept a module (every public name is re-exported here:
``tokdyn.studies.token_dynamics_sweep.Config``, ``.axis_fields``, ...):

- :mod:`~tokdyn.studies.token_dynamics_sweep.axes`        the axes, derived from :class:`tokdyn.dynamics.Hparams`
- :mod:`~tokdyn.studies.token_dynamics_sweep.rule_module` rules of one's own (``--rule-module``), loaded and keyed
- :mod:`~tokdyn.studies.token_dynamics_sweep.config`      :class:`Config`: axes, rules, engine sweeps, estimates
- :mod:`~tokdyn.studies.token_dynamics_sweep.running`     the engine sweeps, the parts, the disk; the runner's hooks
- :mod:`~tokdyn.studies.token_dynamics_sweep.report`      the analysis: the tables and ``report.md``
- :mod:`~tokdyn.studies.token_dynamics_sweep.tables`      the tables as written (``tables.json``), read back verified
- :mod:`~tokdyn.studies.token_dynamics_sweep.plots`       the figures, and ``tokdyn plot heatmap``

Here: :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

from tokdyn.experiment import runner
from tokdyn.stats import figures

# (importing the parts binds each as an attribute: tokdyn.studies.token_dynamics_sweep.axes, ...)
from tokdyn.studies.token_dynamics_sweep.axes import (  # noqa: F401
    AXES,
    DATA_AXES,
    DEFAULT_AXES,
    FIRST_KNOBS,
    KNOB_AXES,
    RULE_AXES,
    axis_fields,
    axis_help,
    axis_names,
)
from tokdyn.studies.token_dynamics_sweep.config import (  # noqa: F401
    GROUPS,
    METRICS,
    SETTING_METRICS,
    STRUCTURE_OPTIONS,
    STUDY,
    Config,
    Group,
)
from tokdyn.studies.token_dynamics_sweep.plots import HeatmapConfig, heatmap, heatmap_job, plot_jobs  # noqa: F401
from tokdyn.studies.token_dynamics_sweep.report import (  # noqa: F401
    analyse,
    analysis,
    merge_tables,
    printed,
    report_text,
)
from tokdyn.studies.token_dynamics_sweep.rule_module import (  # noqa: F401
    load_rules,
    rule_module_digest,
    rule_module_file,
)
from tokdyn.studies.token_dynamics_sweep.running import (  # noqa: F401
    PART_WAIT_S,
    check,
    check_disk,
    code_record,
    missing_chunks,
    prepare,
    run,
    run_sweep,
)
from tokdyn.studies.token_dynamics_sweep.tables import (  # noqa: F401
    TABLES,
    group_dirs,
    read_table,
    sweep_key,
    tables_entry,
    write_table,
)


SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    check=check,
    prepare=prepare,
    figures=lambda session, cfg, r: [
        figures.draw(job) for job in plot_jobs(session.out, cfg, r.data["cond"], r.data["tab"])
    ],
    summary=lambda cfg, r: r.data["report"],
    summary_file="report.md",
    preset=None,  # report.md says it
    printed=printed,
    outputs=("summary.csv", TABLES, "settings.csv", "pareto.csv"),
)
# (no figure_files: `tokdyn plot heatmap` draws into the same plots/ folder)


def main(
    cfg: Config, out: str, *, quiet: bool = False, plots: bool = True, fresh: bool = False, part=None
) -> dict | None:
    """Run (or resume) the sweep into ``out`` and write its analysis
    (:func:`tokdyn.experiment.runner.run_study` of :data:`SPEC`).

    Before any run, ``out`` is checked and stamped (:class:`~tokdyn.experiment.study.Study`):
    a path that cannot be written, a sweep that cannot fit in memory or on the disk, or that
    overflows the engine's run index, is refused naming the option; a directory of another study
    or of another sweep configuration is refused naming the fields that differ, unless ``fresh``.

    Args:
      cfg: the sweep's :class:`Config`.
      out: the sweep directory (resumable: a rerun computes only the chunks not on disk).
      quiet: no progress and no summary on the terminal.
      plots: draw the figures into ``out/plots``.
      fresh: remove what the directory holds (only files tokdyn wrote) and start afresh.
      part: ``(i, n)``, this process's share of a sweep that several processes run into the same
        ``out`` at once (default: ``jax.process_index()`` of ``jax.process_count()``); part 0
        stamps the directory (the others wait for its stamp) and writes the analysis once every
        part's chunks are there.

    Returns:
      The analysis, ``{"best": row, "front": rows}``
      (:func:`~tokdyn.studies.token_dynamics_sweep.report.analysis`); None for a part other than 0.
    """
    return runner.run_study(SPEC, cfg, out, quiet=quiet, plots=plots, fresh=fresh, part=part)
