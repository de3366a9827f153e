"""The analysis of a finished sweep (:func:`analysis`, written by :func:`analyse`): ``summary.csv``,
``settings.csv``, ``pareto.csv`` and ``report.md`` (:func:`report_text`), every rule's tables merged
into one (:func:`merge_tables`); and the lines a run prints at its end (:func:`printed`)."""

from __future__ import annotations

import os

import numpy as np

from tokdyn import io
from tokdyn.experiment import findings as experiment_findings
from tokdyn.experiment import paired, runner
from tokdyn.stats import figures, summary
from tokdyn.studies.token_dynamics_sweep.config import METRICS, SETTING_METRICS, Config, Group
from tokdyn.studies.token_dynamics_sweep.plots import plot_jobs
from tokdyn.studies.token_dynamics_sweep.tables import TABLES, tables_entry


def _label(row: dict, names) -> str:
    """A setting for a person: ``method=NAME, temperature=1`` (an axis its rule does not take, NaN
    in the merged tables, is left out)."""
    parts = []
    for n in names:
        v = row.get(n)
        if n == "method" and row.get("method_name") is not None:
            parts.append(f"method={row['method_name']}")
        elif v is not None and np.isfinite(v):
            parts.append(f"{n}={v:.4g}")
    return ", ".join(parts) or "(one setting)"


def _ci(row: dict, f: str, p: int = 3) -> str:
    return f"{row[f + '_mean']:.{p}f} [{row[f + '_low']:.{p}f}, {row[f + '_high']:.{p}f}]"


def _to_global(table: dict, group: Group) -> dict:
    """A group's table with its ``method`` column as indices into :meth:`Config.method_names`."""
    if "method" in table:
        table = dict(table, method=np.asarray(group.methods, np.int64)[np.asarray(table["method"], np.int64)])
    return table


def merge_tables(parts: list, axes, names) -> dict:
    """The tables of several groups (:meth:`Config.groups`, their ``method`` as global indices) as
    one: the ``axes`` columns first (NaN where a group's rule has no such knob), ``method_name``
    after ``method`` (the names ``names`` of the indices), then the other columns."""
    out = {}
    for k in axes:
        if all(k in p for p in parts):
            out[k] = np.concatenate([np.asarray(p[k]) for p in parts])
        else:
            out[k] = np.concatenate(
                [np.asarray(p[k], np.float64) if k in p else np.full(len(p["nonfinite"]), np.nan) for p in parts]
            )
        if k == "method":
            out["method_name"] = np.asarray(names, dtype=object)[out["method"]].astype(str)
    for k in parts[0]:
        if k not in out:
            out[k] = np.concatenate([np.asarray(p[k]) for p in parts])
    return out


def analysis(out: str, cfg: Config, *, seconds: float | None = None, top: int = 10) -> runner.Result:
    """The analysis of the finished sweep in ``out``: the tables ``summary.csv`` (its SHA-256
    recorded in ``tables.json``, :func:`~tokdyn.studies.token_dynamics_sweep.tables.write_table`, so
    that a later reader such as :func:`~tokdyn.studies.token_dynamics_sweep.plots.heatmap` can tell
    it is the table written here), ``settings.csv`` and ``pareto.csv``, and ``report.md``'s text. A
    sweep of several rules (:meth:`Config.groups`) is summarised per rule and merged into one table
    each, every method by its name (``method_name``; ``method`` its index); the intervals over seeds
    follow the findings' rule (:data:`tokdyn.experiment.findings.INTERVALS`), and report.md compares each method's best setting with the
    first method's, paired by seed. A run with a non-finite metric (NaN or ±inf) is left out of
    every figure and counted (``nonfinite`` per condition and setting, ``{metric}_nan`` per
    metric); report.md marks the conditions that had such runs.

    Args:
      out: the sweep directory, every chunk of every rule's engine sweep there.
      cfg: the sweep's :class:`Config`.
      seconds: the sweep's time, for report.md (None: not said).
      top: how many of the best settings report.md lists.

    Returns:
      A :class:`tokdyn.experiment.runner.Result`: its ``tables`` to write (``summary.csv``: (C,)
      columns per condition; ``settings.csv``: (S,) per setting; ``pareto.csv``: the front's rows,
      fewest steps first; ``tables.json``), ``data`` (``cond``, ``tab``, ``report``: report.md's
      text, ``choice``: :func:`honest_best`) and ``value`` ``{"best": row, "front": rows,
      "excluded": n}``: the best setting (chosen on one half of the seeds, its estimate on the
      other in ``ari_heldout_*``, ``steps_heldout_*``; ``{}`` when no setting may be chosen), the
      Pareto front, and the settings left out of both for a non-finite run (none with
      ``cfg.best_over_nonfinite``).
    """
    # a run whose state blew up (a non-finite metric: its tokens left the floats) counts in no
    # figure: its collapse or ARI would be an artefact of the overflow, not of the dynamics
    groups, names = cfg.groups(), cfg.method_names()
    by = cfg.rule_axes()
    conds, tabs = [], []
    for group in groups:
        d = group.dir(out)
        conds.append(_to_global(summary.condition_stats(d, METRICS, require_finite=METRICS), group))
        tabs.append(
            _to_global(
                summary.setting_table(
                    d,
                    [k for k in by if k in group.grid.names],
                    SETTING_METRICS,
                    n_resamples=cfg.n_resamples,
                    require_finite=METRICS,
                    interval=paired.interval_rule(bounds(cfg), cfg.n_resamples),
                ),
                group,
            )
        )
    cond = merge_tables(conds, [k for k, _ in cfg.axes()], names)
    tab = merge_tables(tabs, by, names)
    seed_values = _seed_values(out, cfg)
    eligible = eligible_settings(tab, cfg)
    tab["eligible"] = eligible
    front = summary.pareto_front(
        np.where(eligible, tab["steps_mean"], np.nan), np.where(eligible, tab["ari_mean"], np.nan)
    )
    tab["on_front"] = front
    order = np.flatnonzero(front)[np.argsort(tab["steps_mean"][front], kind="stable")]
    front_rows = io.to_rows(tab, order)
    score = np.where(eligible, np.nan_to_num(tab["ari_mean"], nan=-np.inf), -np.inf)
    ranked = np.argsort(-score, kind="stable")
    ranked = ranked[eligible[ranked]]  # the settings that may be best, best mean ARI first
    choice = honest_best(seed_values, eligible, cfg, rows=np.arange(len(eligible)))
    paired_lines = _paired_lines(cfg, tab, seed_values, eligible)
    tables = {
        "summary.csv": cond,
        TABLES: lambda: tables_entry(out, "summary.csv"),
        "settings.csv": tab,
        "pareto.csv": {k: np.asarray(v)[order] for k, v in tab.items()},
    }
    report = report_text(cfg, tab, ranked, front_rows, cond, seconds, top, paired_lines, choice)
    best = dict(io.to_rows(tab, [choice["row"]])[0], **choice["estimate"]) if choice["row"] is not None else {}
    return runner.Result(
        tables,
        data=dict(cond=cond, tab=tab, report=report, choice=choice),
        value=dict(best=best, front=front_rows, excluded=int((~eligible).sum())),
    )


def analyse(out: str, cfg: Config, *, plots: bool = True, seconds: float | None = None, top: int = 10) -> dict:
    """Write the :func:`analysis` of the finished sweep in ``out`` there (summary.csv, tables.json,
    settings.csv, pareto.csv, report.md and, with ``plots``, the figures of
    :func:`~tokdyn.studies.token_dynamics_sweep.plots.plot_jobs`): the analysis of a sweep
    directory outside a run of :func:`~tokdyn.studies.token_dynamics_sweep.main`, which writes the
    same.

    Args:
      out: the sweep directory, every chunk of every rule's engine sweep there.
      cfg: the sweep's :class:`Config`.
      plots: draw the figures into ``out/plots``.
      seconds: the sweep's time, for report.md (None: not said).
      top: how many of the best settings report.md lists.

    Returns:
      ``{"best": row, "front": rows, "excluded": n}``, as :func:`analysis`' value: the best setting
      (chosen on one half of the seeds, estimated on the other), the Pareto front's settings (rows
      of ``settings.csv`` as dicts) and the number of settings left out of both.
    """
    result = analysis(out, cfg, seconds=seconds, top=top)
    for name, value in result.tables.items():
        runner.write_table(os.path.join(out, name), value)
    if plots:
        for job in plot_jobs(out, cfg, result.data["cond"], result.data["tab"]):
            figures.draw(job)
    runner.write_table(os.path.join(out, "report.md"), result.data["report"] + "\n")
    return result.value


def _seed_values(out: str, cfg: Config) -> dict:
    """Per setting (``settings.csv``'s rows, every group's in order) and seed: each seed's mean ARI
    and steps over the data axes, ``{"ari": (S, seeds), "steps": (S, seeds)}`` (NaN where no run of
    the cell stayed finite)."""
    by, parts = cfg.rule_axes(), []
    for group in cfg.groups():  # (settings of the group, seeds) per metric, in setting_table's row order
        parts.append(
            summary.per_seed(
                group.dir(out), [k for k in by if k in group.grid.names], ("ari", "steps"), require_finite=METRICS
            )[1]
        )
    return {f: np.concatenate([np.asarray(p[f], np.float64) for p in parts]) for f in ("ari", "steps")}


def eligible_settings(tab: dict, cfg: Config) -> np.ndarray:
    """(S,) bool: the settings that may be the best setting and lie on the Pareto front: those
    without a non-finite run (``tab["nonfinite"] == 0``), or every setting with
    ``cfg.best_over_nonfinite``."""
    nonfinite = np.asarray(tab["nonfinite"])
    return np.ones(nonfinite.shape, bool) if cfg.best_over_nonfinite else nonfinite == 0


seed_halves = paired.seed_halves

# the ranges of the bounded metrics, for their intervals over seeds (the findings' rule)
BOUNDS = {
    "ari": experiment_findings.SCORE,
    "collapsed": experiment_findings.RATE,
    "converged": experiment_findings.RATE,
}


def bounds(cfg: Config) -> dict:
    """``{metric: (low, high)}``: :data:`BOUNDS` and ``steps``, in ``[0, cfg.n_steps]``."""
    return dict(BOUNDS, steps=(0.0, float(cfg.n_steps)))


def honest_best(values: dict, eligible: np.ndarray, cfg: Config, rows) -> dict:
    """The best of the settings ``rows`` by mean ARI, chosen on one half of the seeds and estimated
    on the other (:func:`tokdyn.experiment.paired.seed_halves`), among the ``eligible`` ones; so
    that its estimate is not inflated by the choice among many settings
    (:func:`tokdyn.experiment.paired.held_out_best`).

    Args:
      values: the per-seed ARI and steps, (S, seeds) each.
      eligible: (S,) bool, the settings that may be chosen (:func:`eligible_settings`).
      cfg: the sweep's :class:`Config` (``n_resamples``).
      rows: the candidate settings (indices into S).

    Returns:
      ``{"row": the chosen setting (None when no eligible setting has a finite mean on the choosing
      seeds), "choose": seed indices, "held": seed indices, "estimate": {"ari_heldout_mean",
      "ari_heldout_low", "ari_heldout_high", "steps_heldout_mean", ..., "heldout_seeds"}, "split":
      whether the halves differ}``: the estimate is the mean over the estimating seeds with its 95%
      interval (:func:`tokdyn.experiment.findings.seed_interval`).
    """
    return paired.held_out_best(
        values, "ari", eligible, rows, estimate=("ari", "steps"), bounds=bounds(cfg), n_resamples=cfg.n_resamples
    )


def _paired_lines(cfg: Config, tab: dict, values: dict, eligible: np.ndarray) -> list:
    """report.md's paired comparison: each method's best setting (by mean ARI on the choosing half
    of the seeds, among its eligible settings: :func:`honest_best`) against the first method's, on
    the other half, the difference per seed (each seed's mean over the data axes: common random
    numbers pair them): the mean difference with its 95% interval over seeds (the findings' rule),
    then the paired t-test's t and p, Holm's p over the comparisons of the table (ARI and steps)
    that have a p, d_z, and
    a difference below the metric's practical threshold
    (:data:`tokdyn.experiment.findings.NEGLIGIBLE`) marked negligible
    (:func:`tokdyn.experiment.paired.paired_tests`). [] unless the sweep has two methods or more
    and two seeds or more."""
    names = cfg.method_names()
    if len(names) < 2 or cfg.seeds < 2:
        return []
    by = cfg.rule_axes()
    best = {m: honest_best(values, eligible, cfg, np.flatnonzero(tab["method"] == m)) for m in range(len(names))}
    title = ["", f"## Paired by seed: each method's best setting against {names[0]}'s", ""]
    if best[0]["row"] is None:
        return title + [f"{names[0]} has no eligible setting with a finite run: no comparison."]
    held, ref = best[0]["held"], best[0]["row"]
    pairs = [(best[m]["row"], ref) for m in range(1, len(names)) if best[m]["row"] is not None]
    tests = paired.paired_tests(
        values, pairs, ("ari", "steps"), seeds=held, n_resamples=cfg.n_resamples, bounds=bounds(cfg)
    )
    seeds_text = (
        f"the other half of the seeds ({_seed_range(held)}; each best setting chosen on {_seed_range(best[0]['choose'])})"
        if best[0]["split"]
        else "all seeds (too few to split: each best setting was chosen on the same seeds)"
    )
    lines = title + [
        f"{names[0]}'s best setting: {_label(io.to_rows(tab, [ref])[0], by)}.",
        "",
        f"Differences per seed (method minus {names[0]}, each seed's mean over the data axes: common random "
        f"numbers pair them) on {seeds_text}; a seed where either side had no finite run is dropped. Each cell: "
        f"the mean difference Δ with its 95% interval over seeds ({experiment_findings.intervals_text(cfg.n_resamples)}), then the "
        f"paired t-test's t and p, Holm's p over {paired.holm_words(tests)}, and d_z; a difference below the "
        "practical threshold "
        f"(ARI {experiment_findings.NEGLIGIBLE['ari']:g}, steps {experiment_findings.NEGLIGIBLE['steps']:g}) is negligible whatever its p.",
        "",
        "| method | best setting | ARI | steps | seeds |",
        "|---|---|---|---|---|",
    ]
    for m in range(1, len(names)):
        row = best[m]["row"]
        if row is None:
            lines.append(f"| {names[m]} | (no eligible setting) | - | - | 0 |")
            continue
        cells = {t["metric"]: t for t in tests if t["row"] == row}
        ari, steps = (
            experiment_findings.paired_cell(cells["ari"], 3),
            experiment_findings.paired_cell(cells["steps"], 2),
        )
        lines.append(
            f"| {names[m]} | {_label(io.to_rows(tab, [row])[0], by)} | {ari} | {steps} | {cells['ari']['n']} of {len(held)} |"
        )
    return lines


_seed_range = paired.seed_range
_flag = paired.flag


def report_text(
    cfg: Config, tab: dict, ranked, front_rows: list, cond: dict, seconds, top: int, paired=(), choice=None
) -> str:
    """``report.md`` (without its final newline): the sweep, its best setting (chosen on one half
    of the seeds, estimated on the other; the settings with a non-finite run excluded unless
    ``cfg.best_over_nonfinite``, and counted), its best settings by mean ARI, the Pareto front of
    steps against ARI, collapse, the best setting per data condition, the paired comparison of the
    methods and the non-finite runs.

    Args:
      cfg: the sweep's :class:`Config`.
      tab: the per-setting table (``settings.csv``'s columns, (S,) each).
      ranked: (S,) indices of ``tab``'s rows, best mean ARI first.
      front_rows: the Pareto front's settings, rows of ``tab`` as dicts, fewest steps first.
      cond: the per-condition table (``summary.csv``'s columns, (C,) each).
      seconds: the sweep's time (None: not said).
      top: how many of the best settings to list.
      paired: the lines of the paired comparison of the methods (empty: none).
      choice: :func:`honest_best` of every setting (None: no headline of the best setting).
    """
    eligible = np.asarray(tab.get("eligible", np.ones(len(tab["nonfinite"]), bool)))
    n_out = int((~eligible).sum())
    best = io.to_rows(tab, ranked[:1])[0] if len(ranked) else {k: float("nan") for k in tab}
    lines = _intro_lines(cfg, seconds) + _headline(cfg, tab, choice, n_out)
    lines += _ranked_lines(cfg, tab, ranked, top, eligible, best)
    lines += _front_lines(cfg, tab, front_rows, eligible, best)
    lines += _collapse_lines(cfg, tab) + _per_condition_lines(cfg, cond)
    lines += list(paired)
    lines += ["", "## Non-finite runs (NaN or inf)", ""] + _nonfinite_lines(cfg, cond)
    return "\n".join(lines)


def _intro_lines(cfg: Config, seconds) -> list:
    """report.md's opening: the quick preset's warning, the runs and their structure, what a setting is."""
    groups, names = cfg.groups(), cfg.method_names()
    if len(groups) == 1:
        runs = " x ".join(f"{k} ({len(v)})" for k, v in cfg.axes()) + f" x {cfg.seeds} seeds"
    else:  # one engine sweep per rule, each over the axes its rule takes
        runs = (
            "; ".join(
                f"{'+'.join(names[i] for i in g.methods)} ({g.folder}): "
                + " x ".join(f"{k} ({n})" for k, n in zip(g.grid.names, g.grid.shape))
                + f" x {cfg.seeds} seeds"
                for g in groups
            )
            + " (one engine sweep per rule, the same root key and seeds)"
        )
    quick = [
        f"Quick preset: a small grid and {cfg.seeds} seeds (tokdyn sweep token-dynamics --quick), to try the "
        "command and its outputs; run without --quick for a sweep whose figures mean something.",
        "",
    ]
    methods = " Method indices: " + ", ".join(f"{i} = {m}" for i, m in enumerate(names)) + "." if names else ""
    return (quick if cfg.preset == "quick" else []) + [
        "# Token-dynamics sweep",
        "",
        f"{cfg.runs():,} runs: " + runs + (f", in {seconds:.1f} s" if seconds else "") + ".",
        f"Runs: {cfg.n_tokens} tokens, D={cfg.dim}, {cfg.points_per_cluster} points per cluster, "
        f"centres {cfg.centers} (box {cfg.center_box:g}), init {cfg.init}, at most {cfg.n_steps} steps, "
        f"tol {cfg.tol:g}." + methods,
        "A *setting* is one point of the rule axes ("
        + (", ".join(cfg.rule_axes()) or "none")
        + "), pooled over the data axes ("
        + (", ".join(cfg.data_axes()) or "none")
        + f"). Intervals: {experiment_findings.intervals_text(cfg.n_resamples)} (common random numbers: every setting saw the same "
        "data per seed).",
        "",
        *paired.grid_lines(cfg, cfg.axes(), given={k: "given (--knob)" for k, _ in cfg.knob_axes()}),
        "A knob of the built-in rule that is no axis runs at each method's value (tokdyn.dynamics.METHODS), "
        "else its default.",
        "",
    ]


def _ranked_lines(cfg: Config, tab: dict, ranked, top: int, eligible, best: dict) -> list:
    """report.md's best regimes by mean ARI (all-seed means, marked optimistic) and how separated the top is."""
    by, n_out = cfg.rule_axes(), int((~eligible).sum())
    lines = [
        f"## Best regimes by mean ARI (top {min(top, len(ranked))} of {len(ranked)} settings"
        + (f"; {n_out} with a non-finite run left out" if n_out else "")
        + ")",
        "",
        "Means over all seeds: the top of this list is chosen and estimated on the same seeds, so its figures "
        "are optimistic; the best setting's honest estimate is the one above.",
        "",
        "| setting | ARI [95% CI] | steps [95% CI] | collapse rate | converged | non-finite runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in io.to_rows(tab, ranked[:top]):
        lines.append(
            f"| {_label(r, by)} | {_ci(r, 'ari')} | {_ci(r, 'steps', 2)} | {r['collapsed_mean']:.3f} | "
            f"{r['converged_mean']:.3f} | {_flag(r['nonfinite'])} |"
        )
    overlap = int(np.sum(eligible & (tab["ari_high"] >= best["ari_low"])))
    return lines + [
        "",
        f"{overlap} setting(s) have an ARI interval reaching the best setting's lower bound "
        f"({best['ari_low']:.3f}): the top is {'not ' if overlap > 1 else ''}clearly separated.",
    ]


def _front_lines(cfg: Config, tab: dict, front_rows: list, eligible, best: dict) -> list:
    """report.md's Pareto front of steps against ARI, and the fastest settings near the best ARI."""
    by, n_out = cfg.rule_axes(), int((~eligible).sum())
    lines = ["", "## Speed vs quality: the Pareto front (fewer steps, higher ARI)", ""]
    if n_out:
        lines += [f"Over the {int(eligible.sum())} settings without a non-finite run ({n_out} left out).", ""]
    lines += ["| setting | steps [95% CI] | ARI [95% CI] | collapse rate |", "|---|---|---|---|"]
    for r in front_rows:
        lines.append(f"| {_label(r, by)} | {_ci(r, 'steps', 2)} | {_ci(r, 'ari')} | {r['collapsed_mean']:.3f} |")
    for delta in (0.01, 0.02, 0.05) if np.isfinite(best["ari_mean"]) else ():
        ok = np.flatnonzero(eligible & (tab["ari_mean"] >= best["ari_mean"] - delta))
        r = io.to_rows(tab, [ok[np.argmin(tab["steps_mean"][ok])]])[0]
        lines.append(
            f"\nFastest setting within {delta:g} ARI of the best: {_label(r, by)}: steps {_ci(r, 'steps', 2)}, "
            f"ARI {_ci(r, 'ari')}."
        )
    return lines


def _collapse_lines(cfg: Config, tab: dict) -> list:
    """report.md's settings that collapse in more than half of their (finite) runs."""
    collapse = np.flatnonzero(tab["collapsed_mean"] > 0.5)
    if not collapse.size:
        return []
    return [
        "",
        "## Collapse",
        "",
        f"{collapse.size} setting(s) collapse in more than half of their runs"
        + (" that stayed finite" if tab["nonfinite"].sum() else "")
        + "; e.g. "
        + "; ".join(_label(r, cfg.rule_axes()) for r in io.to_rows(tab, collapse[:5]))
        + ".",
    ]


def _per_condition_lines(cfg: Config, cond: dict) -> list:
    """report.md's best setting per data condition (mean ARI ± s.e. over seeds)."""
    by, data_axes = cfg.rule_axes(), cfg.data_axes()
    if not (data_axes and by):
        return []
    lines = [
        "",
        "## Best setting per data condition (mean ARI ± s.e. over seeds)",
        "",
        "| " + " | ".join(data_axes) + " | best setting | ARI | steps | non-finite runs |",
        "|" + "---|" * (len(data_axes) + 4),
    ]
    keys = np.stack([cond[a] for a in data_axes], 1)
    for key in np.unique(keys, axis=0):
        sel = np.flatnonzero(np.all(keys == key, 1))
        if not cfg.best_over_nonfinite:  # a condition with a run that blew up is not a best one
            sel = sel[cond["nonfinite"][sel] == 0] if (cond["nonfinite"][sel] == 0).any() else sel
        head = "| " + " | ".join(f"{v:g}" for v in key)
        if not np.isfinite(cond["ari_mean"][sel]).any():
            lines.append(f"{head} | (no setting has a finite run) | - | - | {_flag(cond['nonfinite'][sel].sum())} |")
            continue
        i = sel[np.nanargmax(cond["ari_mean"][sel])]
        se = cond["ari_std"][i] / np.sqrt(max(cond["ari_n"][i], 1))
        lines.append(
            f"{head} | {_label({a: cond[a][i] for a in by + ['method_name'] if a in cond}, by)} | "
            f"{cond['ari_mean'][i]:.3f} ± {se:.3f} | {cond['steps_mean'][i]:.2f} | "
            f"{_flag(cond['nonfinite'][i])} |"
        )
    return lines


def _headline(cfg: Config, tab: dict, choice, n_out: int) -> list:
    """report.md's first statement of the best setting: chosen on one half of the seeds, estimated on
    the other, and how many settings were left out of the choice and why."""
    if choice is None:
        return []
    by = cfg.rule_axes()
    why = (
        f"Left out of the best setting and the Pareto front: {n_out} of {len(tab['nonfinite'])} settings, "
        "each with a non-finite run (NaN or inf: a run that blew up; `--best-over-nonfinite` lets them compete). "
        if n_out
        else (
            "Every setting competed (`--best-over-nonfinite`), those with non-finite runs included. "
            if cfg.best_over_nonfinite and int(np.sum(tab["nonfinite"]))
            else ""
        )
    )
    if choice["row"] is None:
        return ["## Best setting", "", why + "No setting may be chosen: none has a finite run.", ""]
    r, e = io.to_rows(tab, [choice["row"]])[0], choice["estimate"]
    how = (
        f"chosen by its mean ARI on {_seed_range(choice['choose'])} and estimated on {_seed_range(choice['held'])} "
        f"({e['heldout_seeds']} seeds), so that the choice among {int(np.sum(tab.get('eligible', 1)))} settings "
        "does not inflate its estimate"
        if choice["split"]
        else f"chosen and estimated on the same {cfg.seeds} seeds (too few to split them; its estimate is optimistic)"
    )
    return [
        "## Best setting",
        "",
        f"**{_label(r, by)}**: ARI {_held(e, 'ari')}, steps {_held(e, 'steps', 2)}; {how}. " + why,
        "",
    ]


def _held(e: dict, f: str, p: int = 3) -> str:
    return experiment_findings.interval(e[f + "_heldout_mean"], e[f + "_heldout_low"], e[f + "_heldout_high"], p)


def _nonfinite_lines(cfg: Config, cond: dict, shown: int = 20) -> list:
    """report.md's account of the runs with a non-finite metric: how many conditions and runs,
    which metrics, that every figure excludes them, and the conditions marked (the first ``shown``)."""
    bad = np.flatnonzero(cond["nonfinite"] > 0)
    if bad.size == 0:
        return ["No run produced a non-finite metric (NaN or inf)."]
    runs = int(cond["nonfinite"].sum())
    per_metric = ", ".join(f"{f}: {int(cond[f + '_nan'].sum())}" for f in METRICS if cond[f + "_nan"].sum())
    axes = [k for k, _ in cfg.axes()]
    lines = [
        f"⚠ {bad.size} of {len(cond['n'])} condition(s) had non-finite runs: {runs} of {int(cond['n'].sum())} "
        f"runs in all (runs with a NaN or inf per metric: {per_metric or 'none'}). Those runs blew up; every "
        "figure "
        "of this report and of summary.csv / settings.csv / pareto.csv (means, rates such as the collapse rate, "
        "intervals) excludes them and is over the runs that stayed finite; the `nonfinite` column counts them.",
        "",
        "| " + " | ".join(axes) + " | non-finite runs | of |",
        "|" + "---|" * (len(axes) + 2),
    ]
    for i in bad[:shown]:
        lines.append(
            "| "
            + " | ".join(
                str(cond["method_name"][i]) if a == "method" and "method_name" in cond else f"{cond[a][i]:g}"
                for a in axes
            )
            + f" | ⚠ {int(cond['nonfinite'][i])} | "
            f"{int(cond['n'][i])} |"
        )
    if bad.size > shown:
        lines.append(f"\n... and {bad.size - shown} more (summary.csv's `nonfinite` column lists them all).")
    return lines


def printed(cfg: Config, result: runner.Result, report: str) -> str:
    """The lines a run prints at its end: the time taken, the best setting, the Pareto front."""
    t, b = result.data["timings"], result.value["best"]
    choice, n_out = result.data.get("choice") or {}, result.value.get("excluded", 0)
    excluded = (
        f" ({n_out} setting(s) with a non-finite run left out of the best setting and the Pareto front)"
        if n_out
        else ""
    )
    if b:
        where = (
            f"chosen on {_seed_range(choice['choose'])}, estimated on {_seed_range(choice['held'])}"
            if choice.get("split")
            else "chosen and estimated on the same seeds"
        )
        best = f"best mean ARI: {_label(b, cfg.rule_axes())}: ARI {_held(b, 'ari')}, steps {_held(b, 'steps', 2)} ({where})"
    else:
        best = "best mean ARI: none (no setting without a non-finite run)"
    return (
        f"{runner.work_line(cfg.runs(), 'runs', t['sweep_s'], result.data.get('kept_runs', 0))}; "
        f"analysis in {t['analyse_s']:.1f} s\n"
        f"{best}{excluded}\n"
        f"Pareto front: {len(result.value['front'])} settings; see {os.path.join(result.data['out'], 'report.md')}"
    )
