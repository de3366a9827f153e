"""The analysis of a finished learned sweep (:func:`analysis`): ``conditions.csv`` (per condition,
each metric's mean over seeds with its 95% interval, the findings' rule:
:data:`tokdyn.experiment.findings.INTERVALS`), ``paired.csv`` (each condition against the baseline
condition, metric by metric, paired by seed), the best setting (chosen on one half of the seeds,
estimated on the other) and ``report.md`` (:func:`report_text`); the lines a run prints at its end
(:func:`printed`)."""

from __future__ import annotations

import os

import numpy as np

from tokdyn import io
from tokdyn.experiment import findings as experiment_findings
from tokdyn.experiment import paired, runner
from tokdyn.stats import summary


def condition_label(row: dict, names) -> str:
    """A condition for a person: ``learning_rate=0.003, tau_end=0.3`` (``(one condition)`` without axes)."""
    return ", ".join(f"{n}={float(row[n]):.4g}" for n in names) or "(one condition)"


def baseline_row(table: dict, cfg) -> int:
    """The row of ``table`` (the conditions, in grid order) that holds ``cfg``'s baseline condition."""
    want = cfg.baseline_condition()
    n = len(table["nonfinite"])
    match = np.ones(n, bool)
    for k, v in want.items():
        match &= np.isclose(np.asarray(table[k], np.float64), v, rtol=1e-6, atol=0.0)
    return int(np.flatnonzero(match)[0])


def bounds(cfg) -> dict:
    """``{metric: (low, high)}`` of the sweep's bounded metrics (the model's ``bounds``)."""
    return dict(cfg.MODEL.bounds)


def best_setting(values: dict, table: dict, cfg) -> dict:
    """The best condition by the headline metric (the first of ``cfg.metrics()``, higher is
    better), chosen on one half of the seeds and estimated on the other, every metric
    (:func:`tokdyn.experiment.paired.held_out_best`), among the conditions without a model with a
    non-finite metric (``table["nonfinite"] == 0``; the others are left out and counted).

    Returns:
      :func:`~tokdyn.experiment.paired.held_out_best`'s dict with ``metric`` (the headline) and
      ``excluded`` (the conditions left out).
    """
    metrics = cfg.metrics()
    eligible = np.asarray(table["nonfinite"]) == 0
    choice = paired.held_out_best(
        values, metrics[0], eligible, estimate=metrics, bounds=bounds(cfg), n_resamples=cfg.n_resamples
    )
    return dict(choice, metric=metrics[0], excluded=int((~eligible).sum()))


def analysis(out: str, cfg, *, seconds: float | None = None) -> runner.Result:
    """The analysis of the finished sweep in ``out`` (:func:`tokdyn.stats.summary.setting_table`
    and :func:`~tokdyn.stats.summary.per_seed` over every axis). A model with a non-finite metric
    (NaN or inf: its training blew up) counts in no figure and is counted (``nonfinite``); a
    condition with such a model may not be the best (:func:`best_setting`). Every interval over
    seeds follows the findings' rule (:func:`tokdyn.experiment.findings.seed_interval`: a
    percentile bootstrap from 10 seeds on, Student's t below, on the logit scale of a bounded
    metric's range, the model's ``bounds``).

    Returns:
      A :class:`tokdyn.experiment.runner.Result`: ``tables`` (``conditions.csv``: per condition the
      axes, ``nonfinite``, and per metric ``{m}_mean``, ``{m}_low``, ``{m}_high``, ``{m}_nan``, and
      ``skipped_mean``, the non-finite steps a model skipped, over the models with finite
      metrics, and over every model ``skipped_total``, ``skipped_models`` (models that skipped
      any) and ``skipped_max``; ``paired.csv``: per condition other
      than the baseline and metric, ``n`` seeds paired, ``mean_diff`` (condition minus baseline)
      with ``diff_low`` / ``diff_high``, ``t``, ``p``, ``p_holm`` (over the whole table), ``d``
      (d_z)), ``data`` (``table``, ``tests``, ``baseline``, ``values``: per metric (conditions,
      seeds), ``best``: :func:`best_setting`, ``report``) and ``value`` (the baseline's row, the
      tests, and ``best``: the best condition's row of conditions.csv with its held-out estimates
      ``{m}_heldout_mean`` / ``_low`` / ``_high`` and ``heldout_seeds``, ``{}`` when none may be
      chosen).
    """
    names, metrics = cfg.axis_names(), cfg.metrics()
    table = summary.setting_table(
        out,
        names,
        metrics + ("skipped",),
        n_resamples=cfg.n_resamples,
        require_finite=metrics,
        interval=paired.interval_rule(bounds(cfg), cfg.n_resamples),
    )
    _, values = summary.per_seed(out, names, metrics, require_finite=metrics)
    # the skipped steps of every model, a diverged one's included (its count is finite; the mean
    # over the models with finite metrics is NaN where all of a condition's diverged)
    skipped = summary.per_seed(out, names, ("skipped",))[1]["skipped"]  # (conditions, seeds)
    table["skipped_total"] = np.nansum(skipped, axis=1)
    table["skipped_models"] = np.sum(skipped > 0, axis=1)
    table["skipped_max"] = np.nanmax(np.where(np.isnan(skipped), -np.inf, skipped), axis=1)
    base = baseline_row(table, cfg)
    pairs = [(c, base) for c in range(len(table["nonfinite"])) if c != base]
    tests = paired.paired_tests(values, pairs, metrics, n_resamples=cfg.n_resamples, bounds=bounds(cfg))
    choice = best_setting(values, table, cfg)
    columns = ("metric", "n", "mean_diff", "diff_low", "diff_high", "t", "p", "p_holm", "d")
    paired_table = {k: np.asarray([table[k][t["row"]] for t in tests], np.float64) for k in names}
    paired_table.update({k: np.asarray([t[k] for t in tests]) for k in columns})
    report = report_text(cfg, table, tests, base, seconds, choice)
    best = dict(io.to_rows(table, [choice["row"]])[0], **choice["estimate"]) if choice["row"] is not None else {}
    return runner.Result(
        {"conditions.csv": table, "paired.csv": paired_table},
        data=dict(table=table, tests=tests, baseline=base, values=values, best=choice, report=report),
        value=dict(baseline=io.to_rows(table, [base])[0], tests=tests, best=best),
    )


def _condition_lines(cfg, table: dict, base: int) -> list:
    """report.md's table of the conditions: each metric's mean [95% interval] over seeds."""
    names, metrics = cfg.axis_names(), cfg.metrics()
    lines = [
        "| condition | " + " | ".join(metrics) + " | non-finite models | skipped steps |",
        "|" + "---|" * (len(metrics) + 3),
    ]
    for i, r in enumerate(io.to_rows(table)):
        cells = [experiment_findings.interval(r[f"{m}_mean"], r[f"{m}_low"], r[f"{m}_high"]) for m in metrics]
        mark = " (baseline)" if i == base else ""
        lines.append(
            f"| {condition_label(r, names)}{mark} | "
            + " | ".join(cells)
            + f" | {paired.flag(r['nonfinite'])} | {skipped_cell(r, cfg.seeds)} |"
        )
    return lines


def skipped_cell(row, seeds: int) -> str:
    """report.md's cell of a condition's skipped steps (non-finite updates a model skipped), over
    every model, a diverged one's included: ``0``, or the total, how many models skipped any and
    the most one skipped."""
    if not row["skipped_total"]:
        return "0"
    return (
        f"{int(row['skipped_total']):,} in {int(row['skipped_models'])} of {seeds} models "
        f"(at most {int(row['skipped_max']):,})"
    )


def _table_cell(text: str) -> str:
    """``text`` as a Markdown table's cell: its ``|`` escaped (a paired cell's ``|Δ|``)."""
    return text.replace("|", "\\|")


def _paired_lines(cfg, table: dict, tests: list, base: int) -> list:
    """report.md's paired comparisons: every condition against the baseline, metric by metric."""
    names = cfg.axis_names()
    head = [
        "",
        f"## Paired by seed: each condition against the baseline ({condition_label(io.to_rows(table, [base])[0], names)})",
        "",
    ]
    if not tests:
        return head + ["One condition only: nothing to compare."]
    return head + [
        "Differences per seed (condition minus baseline; common random numbers: a seed's models start from "
        "the same parameters and see the same batches), a seed where either side had a non-finite metric "
        "dropped. Each cell: the mean difference Δ with its 95% interval over seeds (as the conditions' "
        f"intervals), the paired t-test's t and p, Holm's p over {paired.holm_words(tests)}, and d_z.",
        "",
        "| condition | metric | difference | seeds |",
        "|---|---|---|---|",
        *(
            f"| {condition_label(io.to_rows(table, [t['row']])[0], names)} | {t['metric']} | "
            f"{_table_cell(experiment_findings.paired_cell(t))} | {t['n']} of {cfg.seeds} |"
            for t in tests
        ),
    ]


def _best_lines(cfg, table: dict, choice) -> list:
    """report.md's best setting: the condition with the highest mean headline metric on one half of
    the seeds, every metric estimated on the other half, and the conditions left out."""
    if choice is None:
        return []
    names, metrics = cfg.axis_names(), cfg.metrics()
    n = len(table["nonfinite"])
    out = (
        f" Left out of the choice: {choice['excluded']} of {n} conditions, each with a model whose metrics are "
        "not finite (NaN or inf: a training that blew up)."
        if choice["excluded"]
        else ""
    )
    head = ["## Best setting", ""]
    if choice["row"] is None:
        return head + ["No condition may be chosen: none has its models' metrics finite." + out, ""]
    if n == 1:
        return head + ["One condition only: nothing to choose." + out, ""]
    e = choice["estimate"]
    how = (
        f"chosen by its mean {choice['metric']} on {paired.seed_range(choice['choose'])} and estimated on "
        f"{paired.seed_range(choice['held'])} ({e['heldout_seeds']} seeds with finite metrics), so that the choice "
        f"among {n - choice['excluded']} conditions does not inflate its estimate"
        if choice["split"]
        else f"chosen and estimated on the same {cfg.seeds} seeds (too few to split them; its estimate is optimistic)"
    )
    cells = [
        f"{m} {experiment_findings.interval(e[m + '_heldout_mean'], e[m + '_heldout_low'], e[m + '_heldout_high'])}"
        for m in metrics
    ]
    return head + [
        f"**{condition_label(io.to_rows(table, [choice['row']])[0], names)}**: {how}.{out}",
        "",
        "Held-out estimates: " + "; ".join(cells) + ".",
        "",
    ]


def report_text(cfg, table: dict, tests: list, base: int, seconds=None, choice=None) -> str:
    """``report.md`` (without its final newline): the sweep and its whole grid (each axis with where
    it came from), the best condition (``choice``, :func:`best_setting`; None: not said), each
    condition's metrics with their intervals over seeds, and the paired comparisons against the
    baseline condition."""
    m = cfg.MODEL
    axes = " x ".join(f"{k} ({len(v)})" for k, v in cfg.axes()) or "one condition"
    quick = (
        [
            f"Quick preset: {cfg.seeds} seeds and a short training (tokdyn sweep {m.name} --quick), to try the "
            "command and its outputs.",
            "",
        ]
        if cfg.preset == "quick"
        else []
    )
    swept = set(cfg.axis_names())
    fixed = [(k, float(getattr(m.hparams, k))) for k in m.knobs if k not in swept]
    bad = int(np.sum(table["nonfinite"]))
    return "\n".join(
        quick
        + [
            f"# Sweep of the {m.name} model",
            "",
            f"{cfg.runs():,} models: {axes} x {cfg.seeds} seeds, {cfg.model.train.steps} steps each"
            + (f", in {seconds:.1f} s" if seconds else "")
            + ". Every model of a condition is trained and evaluated by one compiled program; a seed's "
            "models share their initial parameters and batches across conditions.",
            "",
            *paired.grid_lines(cfg, cfg.axes(), fixed=fixed),
            *_best_lines(cfg, table, choice),
            f"## Conditions (mean over seeds [95% interval]: {experiment_findings.intervals_text(cfg.n_resamples).split(': ', 1)[1]})",
            "",
            *_condition_lines(cfg, table, base),
            "",
            f"Models with a non-finite metric (NaN or inf): {bad}" + ("; every figure excludes them." if bad else "."),
            *_paired_lines(cfg, table, tests, base),
        ]
    )


def printed(cfg, result: runner.Result, report: str) -> str:
    """The lines a run prints at its end: the time taken and where the report is."""
    t = result.data["timings"]
    return (
        f"{runner.work_line(cfg.runs(), 'models', t['sweep_s'], result.data.get('kept_runs', 0))}; "
        f"analysis in {t['analyse_s']:.1f} s\n"
        f"{best_line(cfg, result)}\n"
        f"see {os.path.join(result.data['out'], 'report.md')}"
    )


def best_line(cfg, result: runner.Result) -> str:
    """The printed line of the best condition: its headline metric's held-out estimate and how it
    was chosen, or why there is none."""
    choice, b = result.data.get("best") or {}, result.value.get("best") or {}
    excluded = choice.get("excluded", 0)
    left = f" ({excluded} condition(s) with a non-finite model left out)" if excluded else ""
    if not b:
        return "best setting: none (no condition has its models' metrics finite)" + left
    if len(result.data["table"]["nonfinite"]) == 1:
        return "best setting: one condition only, nothing to choose" + left
    m = choice["metric"]
    where = (
        f"chosen on {paired.seed_range(choice['choose'])}, estimated on {paired.seed_range(choice['held'])}"
        if choice.get("split")
        else "chosen and estimated on the same seeds"
    )
    value = experiment_findings.interval(b[m + "_heldout_mean"], b[m + "_heldout_low"], b[m + "_heldout_high"])
    return f"best setting by {m}: {condition_label(b, cfg.axis_names())}: {m} {value} ({where}){left}"
