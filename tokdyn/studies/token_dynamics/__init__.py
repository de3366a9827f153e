"""The token-dynamics study: four update rules on Gaussian clusters, seeds x noise x K.

Reproduces "Formalizing latent visual reasoning: token dynamics" (``tokdyn study token-dynamics``;
:func:`main`, :class:`Config`): a preset of the sweep engine, :class:`tokdyn.engine.runs.ClusterRun`
over the grid method x K x noise x seeds with common random numbers (:func:`simulate`), then ARI,
NMI, SSE, steps and collapse per condition and paired t-tests of every method's ARI against the
baseline. Update rules of one's own (:class:`tokdyn.dynamics.Rule`) join by name through
``main(cfg, out, rules={...})``, and the package's variational-refinement rule as
``"refinement"``.

How it runs, the outputs and the findings: :doc:`/studies/token-dynamics`.

The study's parts, one concept a module (every public name is re-exported here:
``tokdyn.studies.token_dynamics.Config``, ``.simulate``, ...):

- :mod:`~tokdyn.studies.token_dynamics.config`     :class:`Config`: the fields, their checks, the rules, the tasks, the estimate
- :mod:`~tokdyn.studies.token_dynamics.simulation` :func:`simulate`: every run, one engine sweep per task
- :mod:`~tokdyn.studies.token_dynamics.tables`     ``summary.csv``, ``overall.csv``, ``stat_tests.json`` from the runs
- :mod:`~tokdyn.studies.token_dynamics.published`  the published figures and findings 1a/1b
- :mod:`~tokdyn.studies.token_dynamics.report`     the tables printed and ``summary.md`` (every table)
- :mod:`~tokdyn.studies.token_dynamics.plots`      the figures

Here: :func:`run` (the study's computation), :data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

import os

from tokdyn import io
from tokdyn.engine import sweep
from tokdyn.experiment import presets, runner
from tokdyn.experiment.findings import Finding, judge
from tokdyn.stats import figures

# (importing the parts binds each as an attribute: tokdyn.studies.token_dynamics.published, ...)
from tokdyn.studies.token_dynamics.config import METRICS, Config, check_rules  # noqa: F401
from tokdyn.studies.token_dynamics.plots import plot_jobs
from tokdyn.studies.token_dynamics.published import (  # noqa: F401
    BOUNDS,
    PUBLISHED_NOISE03_K4,
    PUBLISHED_OVERALL,
    PUBLISHED_PRECISION,
    published_cell,
    published_findings,
    published_rows,
)
from tokdyn.studies.token_dynamics.report import format_tables, summary_markdown
from tokdyn.studies.token_dynamics.simulation import simulate
from tokdyn.studies.token_dynamics.tables import finite_runs, stat_tests, summarise  # noqa: F401


def _rules_record(rules) -> dict:
    """The update rules of one's own, by their repr and the digest of their code
    (:func:`tokdyn.engine.sweep.code_digest`: a rule whose functions changed is another rule),
    stamped with the configuration."""
    if not rules:
        return {}
    return {
        "rules": {name: r.describe() for name, r in rules.items()},  # every function by name (repr is short)
        "rules_code": {name: sweep.code_digest(r) for name, r in rules.items()},
    }


def findings(out: str) -> list[Finding]:
    """Findings 1a and 1b (:func:`published_findings`) from ``runs.csv`` of the study directory ``out``."""
    return judge(out, "runs.csv", "token-dynamics", published_findings)


# ---------------------------------------------------------------------------------------------- the study


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Every run (:func:`simulate`, with the update rules of one's own ``session.options["rules"]``),
    then the statistics: ``runs.csv``, ``summary.csv``, ``overall.csv``, ``stat_tests.json``."""
    rules = session.options.get("rules")
    with session.timed("simulate"):
        runs = simulate(cfg, rules=rules, progress=not session.quiet)
    with session.timed("statistics"):
        summary, overall = summarise(runs, cfg)
        tests = stat_tests(runs, cfg)
    session.timings["n_runs"] = int(runs["seed"].size)
    tables = {
        "runs.csv": {k: runs[k] for k in ("method", "n_clusters", "noise", "seed", *METRICS)},
        "summary.csv": io.to_columns(summary),
        "overall.csv": io.to_columns(overall),
        "stat_tests.json": tests,
    }
    return runner.Result(
        tables,
        data=dict(summary=summary, overall=overall, tests=tests, out=session.out, timings=session.timings),
        record=_rules_record(rules),
        value=session.timings,
    )


SPEC = runner.Spec(
    name="token-dynamics",
    config=Config,
    run=run,
    figures=lambda session, cfg, r: [figures.draw(job) for job in plot_jobs(session.out, cfg, r.data["summary"])],
    summary=lambda cfg, r: summary_markdown(r.data["overall"], r.data["summary"], r.data["tests"]),
    printed=lambda cfg, r, text: (
        f"{presets.with_preset_line(cfg, format_tables(r.data['overall'], r.data['summary'], r.data['tests']))}\n\n"
        f"{r.data['timings']['n_runs']} runs in "
        f"{r.data['timings']['simulate_s']:.2f} s (compile included); "
        f"outputs in {r.data['out']}; every table in {os.path.join(r.data['out'], 'summary.md')}"
    ),
    findings=findings,
    outputs=("runs.csv", "summary.csv", "overall.csv", "stat_tests.json"),
    figure_files=("plots/ari_mean.png", "plots/steps_mean.png", "plots/collapsed_rate.png"),
    selection=("preset",),  # a label: the same runs with it or without it
    summary_file="summary.md",
    headline="overall.csv",
    check=lambda session, cfg: cfg.validate(session.options.get("rules")),
    stamp_extra=lambda session, cfg: _rules_record(session.options.get("rules")),
)


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True, rules=None, fresh: bool = False) -> dict:
    """Run the study end to end into ``out`` (:func:`~tokdyn.experiment.runner.run_study`).

    Args:
      cfg: the study's :class:`Config`.
      out: the output directory, stamped with the configuration before any work: a directory of
        another configuration is refused (:class:`tokdyn.io.OutputConflict`, naming the fields)
        unless ``fresh``.
      quiet: print nothing (the summary included).
      plots: draw the figures.
      rules: optional update rules of one's own, ``{name: tokdyn.dynamics.Rule}``, that
        ``cfg.methods`` may name; compared with the baseline like the built-in methods.
      fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote) and
        start afresh.

    Returns:
      The timings (a dict).
    """
    return runner.run_study(SPEC, cfg, out, quiet=quiet, plots=plots, fresh=fresh, rules=rules)
