"""The analysis of a finished sweep (:func:`analysis`, written by :func:`analyse`): ``summary.csv``,
``settings.csv``, ``pareto.csv`` and ``report.md`` (:func:`report_text`), every rule's tables merged
into one (:func:`merge_tables`); and the lines a run prints at its end (:func:`printed`)."""

from __future__ import annotations

import os

import numpy as np

from tokdyn import io
from tokdyn.experiment import runner
from tokdyn.stats import figures, inference, summary
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
    each, every method by its name (``method_name``; ``method`` its index); its settings share the
    bootstrap resamples over seeds, and report.md compares each method's best setting with the
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
      text) and ``value`` ``{"best": row, "front": rows}``.
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
                ),
                group,
            )
        )
    cond = merge_tables(conds, [k for k, _ in cfg.axes()], names)
    tab = merge_tables(tabs, by, names)
    front = summary.pareto_front(tab["steps_mean"], tab["ari_mean"])
    tab["on_front"] = front
    order = np.flatnonzero(front)[np.argsort(tab["steps_mean"][front], kind="stable")]
    front_rows = io.to_rows(tab, order)
    ranked = np.argsort(-np.nan_to_num(tab["ari_mean"], nan=-np.inf), kind="stable")
    best = io.to_rows(tab, ranked[:top])
    paired = _paired_lines(out, cfg, tab, [len(t["nonfinite"]) for t in tabs])
    tables = {
        "summary.csv": cond,
        TABLES: lambda: tables_entry(out, "summary.csv"),
        "settings.csv": tab,
        "pareto.csv": {k: np.asarray(v)[order] for k, v in tab.items()},
    }
    report = report_text(cfg, tab, ranked, front_rows, cond, seconds, top, paired)
    return runner.Result(
        tables, data=dict(cond=cond, tab=tab, report=report), value=dict(best=best[0], front=front_rows)
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
      ``{"best": row, "front": rows}``: the setting with the best mean ARI and the Pareto front's
      settings (rows of ``settings.csv`` as dicts).
    """
    result = analysis(out, cfg, seconds=seconds, top=top)
    for name, value in result.tables.items():
        runner.write_table(os.path.join(out, name), value)
    if plots:
        for job in plot_jobs(out, cfg, result.data["cond"], result.data["tab"]):
            figures.draw(job)
    runner.write_table(os.path.join(out, "report.md"), result.data["report"] + "\n")
    return result.value


def _paired_lines(out: str, cfg: Config, tab: dict, sizes: list) -> list:
    """report.md's paired comparison: each method's best setting (by mean ARI) against the first
    method's, the difference per seed (each seed's mean over the data axes: common random numbers
    pair them) with a 95% percentile bootstrap over seeds. ``sizes``: the settings of each group,
    in ``tab``'s order. [] unless the sweep has two methods or more and two seeds or more."""
    names = cfg.method_names()
    if len(names) < 2 or cfg.seeds < 2:
        return []
    by = cfg.rule_axes()
    values, starts = [], np.cumsum([0] + sizes)
    for group in cfg.groups():  # (settings of the group, seeds) per metric, in setting_table's row order
        values.append(
            summary.per_seed(
                group.dir(out), [k for k in by if k in group.grid.names], ("ari", "steps"), require_finite=METRICS
            )[1]
        )

    def per_seed(row):
        g = int(np.searchsorted(starts, row, side="right") - 1)
        return {f: values[g][f][row - starts[g]] for f in ("ari", "steps")}

    best = {}
    for m in range(len(names)):
        rows = np.flatnonzero(tab["method"] == m)
        ari = np.nan_to_num(tab["ari_mean"][rows], nan=-np.inf)
        best[m] = int(rows[np.argmax(ari)])
    ref = per_seed(best[0])
    lines = [
        "",
        f"## Paired by seed: each method's best setting against {names[0]}'s",
        "",
        f"Differences per seed (method minus {names[0]}, each seed's mean over the data axes: common random "
        "numbers pair them), mean with a 95% percentile bootstrap over seeds; a seed where either side had no "
        "finite run is dropped.",
        "",
        "| method | best setting | ΔARI [95% CI] | Δsteps [95% CI] | seeds |",
        "|---|---|---|---|---|",
    ]
    ref_row = io.to_rows(tab, [best[0]])[0]
    lines.insert(3, f"{names[0]}'s best setting: {_label(ref_row, by)}.")
    lines.insert(4, "")
    for m in range(1, len(names)):
        mine = per_seed(best[m])
        cells = []
        for f, p in (("ari", 3), ("steps", 2)):
            d = mine[f] - ref[f]
            d = d[np.isfinite(d)]
            if d.size >= 2:
                lo, hi = inference.bootstrap_ci(d, seed=0, n_resamples=cfg.n_resamples)
                cells.append(f"{d.mean():+.{p}f} [{lo:+.{p}f}, {hi:+.{p}f}]")
            else:
                cells.append(f"{d.mean():+.{p}f}" if d.size else "-")
        n = int(np.sum(np.isfinite(mine["ari"] - ref["ari"])))
        lines.append(
            f"| {names[m]} | {_label(io.to_rows(tab, [best[m]])[0], by)} | {cells[0]} | {cells[1]} | "
            f"{n} of {cfg.seeds} |"
        )
    return lines


def report_text(cfg: Config, tab: dict, ranked, front_rows: list, cond: dict, seconds, top: int, paired=()) -> str:
    """``report.md`` (without its final newline): the sweep, its best settings by mean ARI, the
    Pareto front of steps against ARI, collapse, the best setting per data condition, the paired
    comparison of the methods and the non-finite runs.

    Args:
      cfg: the sweep's :class:`Config`.
      tab: the per-setting table (``settings.csv``'s columns, (S,) each).
      ranked: (S,) indices of ``tab``'s rows, best mean ARI first.
      front_rows: the Pareto front's settings, rows of ``tab`` as dicts, fewest steps first.
      cond: the per-condition table (``summary.csv``'s columns, (C,) each).
      seconds: the sweep's time (None: not said).
      top: how many of the best settings to list.
      paired: the lines of the paired comparison of the methods (empty: none).
    """
    by = cfg.rule_axes()
    n_runs = cfg.runs()
    best = io.to_rows(tab, ranked[:1])[0]
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
    quick = (
        [
            f"Quick preset: a small grid and {cfg.seeds} seeds (tokdyn sweep token-dynamics --quick), to try the "
            "command and its outputs; run without --quick for a sweep whose figures mean something.",
            "",
        ]
        if cfg.preset == "quick"
        else []
    )
    lines = quick + [
        "# Token-dynamics sweep",
        "",
        f"{n_runs:,} runs: " + runs + (f", in {seconds:.1f} s" if seconds else "") + ".",
        f"Runs: {cfg.n_tokens} tokens, D={cfg.dim}, {cfg.points_per_cluster} points per cluster, "
        f"centres {cfg.centers} (box {cfg.center_box:g}), init {cfg.init}, at most {cfg.n_steps} steps, "
        f"tol {cfg.tol:g}."
        + (
            " Method indices: " + ", ".join(f"{i} = {m}" for i, m in enumerate(cfg.method_names())) + "."
            if cfg.method_names()
            else ""
        ),
        "A *setting* is one point of the rule axes ("
        + (", ".join(by) or "none")
        + "), pooled over the data axes ("
        + (", ".join(cfg.data_axes()) or "none")
        + "). Intervals are 95% percentile "
        "bootstraps over seeds (common random numbers: every setting saw the same data per seed).",
        "",
        f"## Best regimes by mean ARI (top {min(top, len(ranked))} of {len(ranked)} settings)",
        "",
        "| setting | ARI [95% CI] | steps [95% CI] | collapse rate | converged | non-finite runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in io.to_rows(tab, ranked[:top]):
        lines.append(
            f"| {_label(r, by)} | {_ci(r, 'ari')} | {_ci(r, 'steps', 2)} | {r['collapsed_mean']:.3f} | "
            f"{r['converged_mean']:.3f} | {_flag(r['nonfinite'])} |"
        )
    overlap = int(np.sum(tab["ari_high"] >= best["ari_low"]))
    lines += [
        "",
        f"{overlap} setting(s) have an ARI interval reaching the best setting's lower bound "
        f"({best['ari_low']:.3f}): the top is {'not ' if overlap > 1 else ''}clearly separated.",
    ]
    lines += [
        "",
        "## Speed vs quality: the Pareto front (fewer steps, higher ARI)",
        "",
        "| setting | steps [95% CI] | ARI [95% CI] | collapse rate |",
        "|---|---|---|---|",
    ]
    for r in front_rows:
        lines.append(f"| {_label(r, by)} | {_ci(r, 'steps', 2)} | {_ci(r, 'ari')} | {r['collapsed_mean']:.3f} |")
    for delta in (0.01, 0.02, 0.05) if np.isfinite(best["ari_mean"]) else ():
        ok = np.flatnonzero(tab["ari_mean"] >= best["ari_mean"] - delta)
        fast = ok[np.argmin(tab["steps_mean"][ok])]
        r = io.to_rows(tab, [fast])[0]
        lines.append(
            f"\nFastest setting within {delta:g} ARI of the best: {_label(r, by)}: steps {_ci(r, 'steps', 2)}, "
            f"ARI {_ci(r, 'ari')}."
        )
    collapse = np.flatnonzero(tab["collapsed_mean"] > 0.5)
    if collapse.size:
        lines += [
            "",
            "## Collapse",
            "",
            f"{collapse.size} setting(s) collapse in more than half of their runs"
            + (" that stayed finite" if tab["nonfinite"].sum() else "")
            + "; "
            "e.g. " + "; ".join(_label(r, by) for r in io.to_rows(tab, collapse[:5])) + ".",
        ]
    data_axes = cfg.data_axes()
    if data_axes and by:
        lines += [
            "",
            "## Best setting per data condition (mean ARI ± s.e. over seeds)",
            "",
            "| " + " | ".join(data_axes) + " | best setting | ARI | steps | non-finite runs |",
            "|" + "---|" * (len(data_axes) + 4),
        ]
        keys = np.stack([cond[a] for a in data_axes], 1)
        for key in np.unique(keys, axis=0):
            sel = np.flatnonzero(np.all(keys == key, 1))
            head = "| " + " | ".join(f"{v:g}" for v in key)
            if not np.isfinite(cond["ari_mean"][sel]).any():
                flag = _flag(cond["nonfinite"][sel].sum())
                lines.append(f"{head} | (no setting has a finite run) | - | - | {flag} |")
                continue
            i = sel[np.nanargmax(cond["ari_mean"][sel])]
            se = cond["ari_std"][i] / np.sqrt(max(cond["ari_n"][i], 1))
            lines.append(
                f"{head} | {_label({a: cond[a][i] for a in by + ['method_name'] if a in cond}, by)} | "
                f"{cond['ari_mean'][i]:.3f} ± {se:.3f} | {cond['steps_mean'][i]:.2f} | "
                f"{_flag(cond['nonfinite'][i])} |"
            )
    lines += list(paired)
    lines += ["", "## Non-finite runs (NaN or inf)", ""] + _nonfinite_lines(cfg, cond)
    return "\n".join(lines)


def _flag(n) -> str:
    """A count of non-finite runs for report.md's tables: ``0``, or the count marked ``⚠``."""
    return f"⚠ {int(n)}" if n else "0"


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
    return (
        f"{cfg.runs():,} runs in {t['sweep_s']:.1f} s; analysis in {t['analyse_s']:.1f} s\n"
        f"best mean ARI: {_label(b, cfg.rule_axes())}: ARI {_ci(b, 'ari')}, steps {_ci(b, 'steps', 2)}\n"
        f"Pareto front: {len(result.value['front'])} settings; see {os.path.join(result.data['out'], 'report.md')}"
    )
