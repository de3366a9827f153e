"""Sweeps of token dynamics over the update rule's hyperparameters and the data's conditions.

    tokdyn sweep token-dynamics --temperature logspace:0.05:20:25 --repulsion linspace:0:0.2:11 \\
        --momentum 0,0.5 --noise 0.3,0.6,0.9 --n-clusters 3,4,5 --seeds 200 --out DIR

One run is :class:`tokdyn.studies.token_dynamics.ClusterRun` (the published study's run, every
condition traced); the grid is the product of the axes x seeds, executed by
:func:`tokdyn.sweep.run` with common random numbers (every setting sees the same data and initial
tokens for a given seed, so settings are compared pairwise), chunk by chunk into ``DIR/chunks``.
A killed sweep continues with ``--resume``.

Afterwards (:func:`analyse`) the directory gets:

- ``summary.csv``: per condition (every axis), mean / std / NaN count of each metric over seeds;
- ``settings.csv``: per hyperparameter setting (the rule axes: temperature, momentum, repulsion,
  and any of the extended rules' knobs or ``method``, an index into ``config.json``'s method names),
  pooled over the data axes (noise, n_clusters), mean ARI, steps, collapse and convergence rates
  with 95% percentile-bootstrap intervals over seeds, and whether it is on the Pareto front;
- ``pareto.csv`` + ``plots/pareto.png``: the settings no other setting beats on both mean steps
  (fewer) and mean ARI (higher): the speed/quality trade-off the published study asked about;
- ``plots/heatmap_*.png``: ARI and collapse rate over the first two rule axes;
- ``report.md``: the best regimes found, with their intervals; ``config.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from tokdyn import _checks, dynamics, report, summary, sweep
from tokdyn.studies.token_dynamics import ClusterRun, RunStructure

RULE_AXES = dynamics.FIELDS + ("method",)
# optional axes of the CLI (absent unless given): the registered methods by name and the knobs of
# the extended rules (see tokdyn.dynamics.Params)
EXTRA_AXES = ("method", "damping", "langevin", "sinkhorn_iters", "slot_norm", "anneal_ratio", "anneal_steps")
DATA_AXES = ("noise", "n_clusters")
DEFAULT_AXES = (
    ("temperature", "logspace:0.05:20:25"),
    ("repulsion", "linspace:0:0.2:11"),
    ("momentum", "0,0.5"),
    ("noise", "0.3,0.6,0.9"),
    ("n_clusters", "3,4,5"),
)
METRICS = ("ari", "steps", "collapsed", "converged", "nmi", "sse")
SETTING_METRICS = ("ari", "steps", "collapsed", "converged")


@dataclasses.dataclass(frozen=True)
class SweepConfig(RunStructure):
    """A token-dynamics sweep: ``axes`` (pairs ``(name, values)`` in grid order; names from
    :data:`RULE_AXES` + :data:`DATA_AXES`) x ``seeds``, and the static structure of a run.
    Saved in ``config.json``; enough to reproduce the sweep."""

    axes: tuple = tuple((k, tuple(sweep.parse_axis(k, v).tolist())) for k, v in DEFAULT_AXES)
    seeds: int = 20
    root_seed: int = 0

    def validate(self) -> "SweepConfig":
        _checks.positive_int("seeds", self.seeds)
        names = [k for k, _ in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axes must have distinct names, got {names}")
        for name, values in self.axes:
            _checks.choice("axis", name, RULE_AXES + DATA_AXES)
            if len(values) == 0:
                raise ValueError(f"axis {name!r} has no values")
            if name == "method":
                for m in values:
                    _checks.choice("method", m, dynamics.METHODS)
                continue
            v = np.asarray(values, float)
            if name in dynamics.FIELDS:
                dynamics.Params(**{name: v}).validate()  # names the field, the value and what is allowed
            elif name == "noise":
                _checks.real(name, v, low=0.0)
            elif name == "n_clusters":
                if not np.all(v == np.round(v)) or v.min() < 1:
                    raise ValueError(f"n_clusters values must be integers >= 1, got {list(values)}")
        self._validate_structure(min(self._n_clusters()))
        return self

    def _n_clusters(self) -> tuple:
        d = dict(self.axes)
        return tuple(int(k) for k in d.get("n_clusters", (ClusterRun.n_clusters,)))

    def method_names(self) -> tuple:
        """The names of the ``method`` axis (its grid values are indices into them), or ()."""
        return tuple(dict(self.axes).get("method", ()))

    def task(self) -> ClusterRun:
        table = tuple(dynamics.as_row(dynamics.METHODS[m]) for m in self.method_names())
        return ClusterRun(**self._structure(), max_clusters=max(self._n_clusters()), methods=table)

    def grid(self) -> sweep.Grid:
        def values(k, v):
            if k == "method":
                return np.arange(len(v), dtype=np.int64)
            return np.asarray(v, np.int64) if k == "n_clusters" else np.asarray(v, np.float64)

        return sweep.Grid(seeds=self.seeds, **{k: values(k, v) for k, v in self.axes})

    def rule_axes(self) -> list:
        return [k for k, _ in self.axes if k in RULE_AXES]


def run_sweep(cfg: SweepConfig, out: str, *, resume: bool = False, chunk_size=None, progress: bool = True,
              cache_dir=None, batch_size="auto", devices=None) -> float:
    """Run (or continue, with ``resume``) the sweep into ``out``; returns the seconds it took."""
    cfg.validate()
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    sweep.run(cfg.task(), cfg.grid(), key=_key(cfg), common_random_numbers=True, chunk_size=chunk_size, out=out,
              resume=resume, progress=progress, collect=False, cache_dir=cache_dir, batch_size=batch_size,
              devices=devices)
    return time.perf_counter() - t0


def _key(cfg: SweepConfig):
    import jax

    return jax.random.key(cfg.root_seed)


def _label(row: dict, names) -> str:
    return ", ".join(f"{n}={row[n]:.4g}" for n in names) or "(one setting)"


def _ci(row: dict, f: str, p: int = 3) -> str:
    return f"{row[f + '_mean']:.{p}f} [{row[f + '_low']:.{p}f}, {row[f + '_high']:.{p}f}]"


def analyse(out: str, cfg: SweepConfig, *, n_resamples: int = 2000, plots: bool = True, seconds: float | None = None,
            top: int = 10) -> dict:
    """Write summary.csv, settings.csv, pareto.csv, report.md and the figures for the finished
    sweep in ``out``; returns ``{"best": row, "front": rows}``."""
    cond = summary.condition_stats(out, METRICS)
    report.write_csv(os.path.join(out, "summary.csv"), cond)
    by = cfg.rule_axes()
    tab = summary.setting_table(out, by, SETTING_METRICS, n_resamples=n_resamples)
    front = summary.pareto_front(tab["steps_mean"], tab["ari_mean"])
    tab["on_front"] = front
    report.write_csv(os.path.join(out, "settings.csv"), tab)
    order = np.flatnonzero(front)[np.argsort(tab["steps_mean"][front], kind="stable")]
    front_rows = summary.rows(tab, order)
    report.write_csv(os.path.join(out, "pareto.csv"), {k: np.asarray(v)[order] for k, v in tab.items()})
    ranked = np.argsort(-np.nan_to_num(tab["ari_mean"], nan=-np.inf), kind="stable")
    best = summary.rows(tab, ranked[:top])
    if plots:
        for job in plot_jobs(out, cfg, cond, tab):
            report.draw(job)
    _write_report(out, cfg, tab, ranked, front_rows, cond, seconds, top)
    return dict(best=best[0], front=front_rows)


def heatmap_job(out: str, cond: dict, x: str, y: str, metric: str, where: dict | None = None,
                stat: str = "mean") -> dict:
    """The :func:`tokdyn.report.draw` job of a heatmap of ``metric`` over axes ``x`` and ``y``,
    pooled over the other axes (or fixed by ``where``), from a :func:`summary.condition_stats`
    table of the sweep in ``out``. ``stat``: "mean" or "std" (over the pooled runs)."""
    axes = summary._table_axes(cond)
    for arg, name in (("x", x), ("y", y)):
        if name not in axes:
            raise ValueError(f"{arg}={name!r} is not an axis of this sweep; axes: {axes}")
    if x == y:
        raise ValueError(f"x and y must be different axes, got {x!r} twice")
    if stat not in ("mean", "std"):
        raise ValueError(f"stat must be 'mean' or 'std', got {stat!r}")
    m = summary.marginal(cond, [y, x], [metric], where=where)
    xs, ys = np.unique(m[x]), np.unique(m[y])
    z = np.full((ys.size, xs.size), np.nan)
    z[np.searchsorted(ys, m[y]), np.searchsorted(xs, m[x])] = m[f"{metric}_{stat}"]
    suffix = "".join(f"_{k}{v:g}" for k, v in (where or {}).items())
    pooled = [a for a in axes if a not in (x, y) and a not in (where or {})]
    title = f"{metric} ({stat}) over seeds" + (f" and {', '.join(pooled)}" if pooled else "")
    if where:
        title += "; " + ", ".join(f"{k}={v:g}" for k, v in where.items())
    return dict(kind="heatmap", path=os.path.join(out, "plots", f"heatmap_{metric}_{stat}_{y}_vs_{x}{suffix}.png"),
                x=xs.tolist(), y=ys.tolist(), z=z.tolist(), xlabel=x, ylabel=y, title=title, cbar=metric)


def plot_jobs(out: str, cfg: SweepConfig, cond: dict, tab: dict) -> list[dict]:
    jobs = []
    front = np.asarray(tab["on_front"], bool)
    jobs.append(dict(kind="front", path=os.path.join(out, "plots", "pareto.png"), cost=tab["steps_mean"].tolist(),
                     benefit=tab["ari_mean"].tolist(), front=front.tolist(), low=tab["ari_low"].tolist(),
                     high=tab["ari_high"].tolist(), xlabel="mean steps", ylabel="mean ARI",
                     title=f"{len(front)} settings; Pareto front ({front.sum()}) with 95% bootstrap CI"))
    axes = cfg.rule_axes() + [k for k, _ in cfg.axes if k in DATA_AXES]
    if len(axes) >= 2:
        x, y = axes[0], axes[1]
        for metric in ("ari", "collapsed", "steps"):
            jobs.append(heatmap_job(out, cond, x, y, metric))
    return jobs


def _write_report(out, cfg, tab, ranked, front_rows, cond, seconds, top) -> None:
    by = cfg.rule_axes()
    n_runs = len(cfg.grid())
    best = summary.rows(tab, ranked[:1])[0]
    lines = [
        "# Token-dynamics sweep",
        "",
        f"{n_runs:,} runs: " + " x ".join(f"{k} ({len(v)})" for k, v in cfg.axes) + f" x {cfg.seeds} seeds"
        + (f", in {seconds:.1f} s" if seconds else "") + ".",
        f"Runs: {cfg.n_tokens} tokens, D={cfg.dim}, {cfg.points_per_cluster} points per cluster, "
        f"centres {cfg.centers} (box {cfg.center_box:g}), init {cfg.init}, at most {cfg.n_steps} steps, "
        f"tol {cfg.tol:g}." + (" Method indices: " + ", ".join(f"{i} = {m}" for i, m in enumerate(cfg.method_names()))
                               + "." if cfg.method_names() else ""),
        "A *setting* is one point of the rule axes (" + (", ".join(by) or "none") + "), pooled over the data axes ("
        + (", ".join(k for k, _ in cfg.axes if k in DATA_AXES) or "none") + "). Intervals are 95% percentile "
        "bootstraps over seeds (common random numbers: every setting saw the same data per seed).",
        "",
        f"## Best regimes by mean ARI (top {min(top, len(ranked))} of {len(ranked)} settings)",
        "",
        "| setting | ARI [95% CI] | steps [95% CI] | collapse rate | converged |",
        "|---|---|---|---|---|",
    ]
    for r in summary.rows(tab, ranked[:top]):
        lines.append(f"| {_label(r, by)} | {_ci(r, 'ari')} | {_ci(r, 'steps', 2)} | {r['collapsed_mean']:.3f} | "
                     f"{r['converged_mean']:.3f} |")
    overlap = int(np.sum(tab["ari_high"] >= best["ari_low"]))
    lines += ["", f"{overlap} setting(s) have an ARI interval reaching the best setting's lower bound "
                  f"({best['ari_low']:.3f}): the top is {'not ' if overlap > 1 else ''}clearly separated."]
    lines += ["", "## Speed vs quality: the Pareto front (fewer steps, higher ARI)", "",
              "| setting | steps [95% CI] | ARI [95% CI] | collapse rate |", "|---|---|---|---|"]
    for r in front_rows:
        lines.append(f"| {_label(r, by)} | {_ci(r, 'steps', 2)} | {_ci(r, 'ari')} | {r['collapsed_mean']:.3f} |")
    for delta in (0.01, 0.02, 0.05):
        ok = np.flatnonzero(tab["ari_mean"] >= best["ari_mean"] - delta)
        fast = ok[np.argmin(tab["steps_mean"][ok])]
        r = summary.rows(tab, [fast])[0]
        lines.append(f"\nFastest setting within {delta:g} ARI of the best: {_label(r, by)}: steps {_ci(r, 'steps', 2)}, "
                     f"ARI {_ci(r, 'ari')}.")
    collapse = np.flatnonzero(tab["collapsed_mean"] > 0.5)
    if collapse.size:
        lines += ["", "## Collapse", "", f"{collapse.size} setting(s) collapse in more than half of their runs; "
                  "e.g. " + "; ".join(_label(r, by) for r in summary.rows(tab, collapse[:5])) + "."]
    data_axes = [k for k, _ in cfg.axes if k in DATA_AXES]
    if data_axes and by:
        lines += ["", "## Best setting per data condition (mean ARI ± s.e. over seeds)", "",
                  "| " + " | ".join(data_axes) + " | best setting | ARI | steps |", "|" + "---|" * (len(data_axes) + 3)]
        keys = np.stack([cond[a] for a in data_axes], 1)
        for key in np.unique(keys, axis=0):
            sel = np.flatnonzero(np.all(keys == key, 1))
            i = sel[np.nanargmax(cond["ari_mean"][sel])]
            se = cond["ari_std"][i] / np.sqrt(max(cond["n"][i] - cond["ari_nan"][i], 1))
            lines.append("| " + " | ".join(f"{v:g}" for v in key) + f" | {_label({a: cond[a][i] for a in by}, by)} | "
                         f"{cond['ari_mean'][i]:.3f} ± {se:.3f} | {cond['steps_mean'][i]:.2f} |")
    nan_runs = {f: int(cond[f + "_nan"].sum()) for f in METRICS}
    lines += ["", "## NaN", "", ("No run produced a NaN." if not any(nan_runs.values()) else
                                 "Runs with NaN (excluded from means): " + ", ".join(f"{k}: {v}" for k, v in
                                                                                        nan_runs.items() if v))]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(cfg: SweepConfig, out: str, *, resume: bool = False, chunk_size=None, quiet: bool = False,
         plots: bool = True, cache_dir=None, n_resamples: int = 2000) -> dict:
    """Run (or resume) the sweep into ``out`` and write its analysis; returns the analysis."""
    cfg.validate()
    meta = dict(study="token-dynamics-sweep", config=dataclasses.asdict(cfg), environment=report.environment())
    seconds = run_sweep(cfg, out, resume=resume, chunk_size=chunk_size, progress=not quiet, cache_dir=cache_dir)
    t0 = time.perf_counter()
    result = analyse(out, cfg, n_resamples=n_resamples, plots=plots, seconds=seconds)
    meta["timings"] = dict(sweep_s=seconds, analyse_s=time.perf_counter() - t0, n_runs=len(cfg.grid()))
    report.write_json(os.path.join(out, "config.json"), meta)
    if not quiet:
        by = cfg.rule_axes()
        b = result["best"]
        print(f"{len(cfg.grid()):,} runs in {seconds:.1f} s; analysis in {meta['timings']['analyse_s']:.1f} s")
        print(f"best mean ARI: {_label(b, by)}: ARI {_ci(b, 'ari')}, steps {_ci(b, 'steps', 2)}")
        print(f"Pareto front: {len(result['front'])} settings; see {os.path.join(out, 'report.md')}")
    return result
