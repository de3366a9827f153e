"""Sweeps of token dynamics over the update rule's hyperparameters and the data's conditions.

    tokdyn sweep token-dynamics --temperature logspace:0.05:20:25 --repulsion linspace:0:0.2:11 \\
        --momentum 0,0.5 --noise 0.3,0.6,0.9 --n-clusters 3,4,5 --seeds 200 --out DIR

One run is :class:`tokdyn.engine.runs.ClusterRun` (the published study's run, every condition traced);
the grid is the product of the axes x seeds, executed by :func:`tokdyn.engine.sweep.run` with common
random numbers (every setting sees the same data and initial tokens for a given seed, so settings
are compared pairwise), chunk by chunk into ``DIR/chunks``. The same command run again continues
a killed sweep; a directory holding a sweep with other arguments is refused.

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

import jax
import numpy as np

from tokdyn import _checks, dynamics, io
from tokdyn.engine import sweep
from tokdyn.engine.runs import ClusterRun, RunStructure
from tokdyn.stats import figures, summary

RULE_AXES = dynamics.FIELDS + ("method",)
DATA_AXES = ("noise", "n_clusters")
AXES = ("temperature", "repulsion", "momentum", "noise", "n_clusters", "method", "damping", "langevin",
        "sinkhorn_iters", "slot_norm", "anneal_ratio", "anneal_steps")  # grid order
METRICS = ("ari", "steps", "collapsed", "converged", "nmi", "sse")
SETTING_METRICS = ("ari", "steps", "collapsed", "converged")


@dataclasses.dataclass(frozen=True)
class Config(RunStructure):
    """A token-dynamics sweep: the axes (in the order of :data:`AXES`) x ``seeds``, and the static
    structure of a run. Axis values are a comma list (0.3,0.6), linspace:a:b:n or logspace:a:b:n; a
    single value fixes that condition; an empty axis is not an axis. Saved in ``config.json``;
    enough to reproduce the sweep.

    Attributes:
      temperature: temperature axis.
      repulsion: repulsion axis.
      momentum: momentum axis.
      noise: cluster standard deviation axis.
      n_clusters: cluster count axis.
      method: registered method names, comma-separated (an axis of indices into them; explicit
        rule axes override a method's values); empty: not an axis.
      damping: damping axis of the extended rules; empty: not an axis.
      langevin: Langevin temperature axis; empty: not an axis.
      sinkhorn_iters: Sinkhorn iterations axis; empty: not an axis.
      slot_norm: Slot-Attention normalisation axis; empty: not an axis.
      anneal_ratio: annealing start ratio axis; empty: not an axis.
      anneal_steps: annealing steps axis; empty: not an axis.
      seeds: seeds per condition.
      root_seed: root PRNG seed.
      chunk_size: runs per chunk file, the unit of work kept on disk (0: chosen per backend).
      n_resamples: bootstrap resamples of the intervals.
    """

    temperature: str = "logspace:0.05:20:25"
    repulsion: str = "linspace:0:0.2:11"
    momentum: str = "0,0.5"
    noise: str = "0.3,0.6,0.9"
    n_clusters: str = "3,4,5"
    method: str = ""
    damping: str = ""
    langevin: str = ""
    sinkhorn_iters: str = ""
    slot_norm: str = ""
    anneal_ratio: str = ""
    anneal_steps: str = ""
    seeds: int = 20
    root_seed: int = 0
    chunk_size: int = 0
    n_resamples: int = 2000

    def axes(self) -> tuple:
        """``((name, values), ...)`` of the non-empty axes in grid order (method: its names)."""
        out = []
        for name in AXES:
            text = getattr(self, name).strip()
            if not text:
                continue
            if name == "method":
                out.append((name, tuple(v.strip() for v in text.split(",") if v.strip())))
            else:
                out.append((name, tuple(sweep.parse_axis(name, text).tolist())))
        return tuple(out)

    def validate(self) -> "Config":
        _checks.positive_int("seeds", self.seeds)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        _checks.positive_int("chunk_size", self.chunk_size, minimum=0)
        _checks.positive_int("n_resamples", self.n_resamples)
        for name, values in self.axes():
            if len(values) == 0:
                raise ValueError(f"axis {name!r} has no values")
            if name == "method":
                for m in values:
                    _checks.choice("method", m, dynamics.METHODS)
                continue
            v = np.asarray(values, float)
            if name in dynamics.FIELDS:
                dynamics.Hparams(**{name: v}).validate()  # names the field, the value and what is allowed
            elif name == "noise":
                _checks.real(name, v, low=0.0)
            elif name == "n_clusters":
                if not np.all(v == np.round(v)) or v.min() < 1:
                    raise ValueError(f"n_clusters values must be integers >= 1, got {list(values)}")
        self.validate_structure(min(self.cluster_counts()))
        return self

    def cluster_counts(self) -> tuple:
        return tuple(int(k) for k in dict(self.axes()).get("n_clusters", (ClusterRun.n_clusters,)))

    def method_names(self) -> tuple:
        """The names of the ``method`` axis (its grid values are indices into them), or ()."""
        return tuple(dict(self.axes()).get("method", ()))

    def task(self) -> ClusterRun:
        table = tuple(dynamics.METHODS[m].row() for m in self.method_names())
        return ClusterRun(**self.structure(), max_clusters=max(self.cluster_counts()), methods=table)

    def grid(self) -> sweep.Grid:
        def values(k, v):
            if k == "method":
                return np.arange(len(v), dtype=np.int64)
            return np.asarray(v, np.int64) if k == "n_clusters" else np.asarray(v, np.float64)

        # the seed slowest: a chunk holds whole seeds, whose data are drawn once for all their runs
        return sweep.Grid(seeds=self.seeds, seed_major=True, **{k: values(k, v) for k, v in self.axes()})

    def rule_axes(self) -> list:
        return [k for k, _ in self.axes() if k in RULE_AXES]

    def data_axes(self) -> list:
        return [k for k, _ in self.axes() if k in DATA_AXES]


def run_sweep(cfg: Config, out: str, *, progress: bool = True, batch_size="auto", devices=None) -> float:
    """Run (or continue) the sweep into ``out``; returns the seconds it took."""
    cfg.validate()
    t0 = time.perf_counter()
    sweep.run(cfg.task(), cfg.grid(), key=jax.random.key(cfg.root_seed), common_random_numbers=True,
              chunk_size=cfg.chunk_size or None, out=out, resume=True, progress=progress, collect=False,
              batch_size=batch_size, devices=devices)
    return time.perf_counter() - t0


def _label(row: dict, names) -> str:
    return ", ".join(f"{n}={row[n]:.4g}" for n in names) or "(one setting)"


def _ci(row: dict, f: str, p: int = 3) -> str:
    return f"{row[f + '_mean']:.{p}f} [{row[f + '_low']:.{p}f}, {row[f + '_high']:.{p}f}]"


def analyse(out: str, cfg: Config, *, plots: bool = True, seconds: float | None = None, top: int = 10) -> dict:
    """Write summary.csv, settings.csv, pareto.csv, report.md and the figures for the finished
    sweep in ``out``; returns ``{"best": row, "front": rows}``."""
    cond = summary.condition_stats(out, METRICS)
    io.write_csv(os.path.join(out, "summary.csv"), cond)
    by = cfg.rule_axes()
    tab = summary.setting_table(out, by, SETTING_METRICS, n_resamples=cfg.n_resamples)
    front = summary.pareto_front(tab["steps_mean"], tab["ari_mean"])
    tab["on_front"] = front
    io.write_csv(os.path.join(out, "settings.csv"), tab)
    order = np.flatnonzero(front)[np.argsort(tab["steps_mean"][front], kind="stable")]
    front_rows = io.to_rows(tab, order)
    io.write_csv(os.path.join(out, "pareto.csv"), {k: np.asarray(v)[order] for k, v in tab.items()})
    ranked = np.argsort(-np.nan_to_num(tab["ari_mean"], nan=-np.inf), kind="stable")
    best = io.to_rows(tab, ranked[:top])
    if plots:
        for job in plot_jobs(out, cfg, cond, tab):
            figures.draw(job)
    _write_report(out, cfg, tab, ranked, front_rows, cond, seconds, top)
    return dict(best=best[0], front=front_rows)


def heatmap_job(out: str, cond: dict, x: str, y: str, metric: str, where: dict | None = None,
                stat: str = "mean") -> dict:
    """The :func:`tokdyn.stats.figures.draw` job of a heatmap of ``metric`` over axes ``x`` and ``y``,
    pooled over the other axes (or fixed by ``where``), from a :func:`summary.condition_stats`
    table of the sweep in ``out``. ``stat``: "mean" or "std" (over the pooled runs)."""
    axes = summary.table_axes(cond)
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


def plot_jobs(out: str, cfg: Config, cond: dict, tab: dict) -> list[dict]:
    jobs = []
    front = np.asarray(tab["on_front"], bool)
    jobs.append(dict(kind="front", path=os.path.join(out, "plots", "pareto.png"), cost=tab["steps_mean"].tolist(),
                     benefit=tab["ari_mean"].tolist(), front=front.tolist(), low=tab["ari_low"].tolist(),
                     high=tab["ari_high"].tolist(), xlabel="mean steps", ylabel="mean ARI",
                     title=f"{len(front)} settings; Pareto front ({front.sum()}) with 95% bootstrap CI"))
    axes = cfg.rule_axes() + cfg.data_axes()
    if len(axes) >= 2:
        x, y = axes[0], axes[1]
        for metric in ("ari", "collapsed", "steps"):
            jobs.append(heatmap_job(out, cond, x, y, metric))
    return jobs


def _write_report(out, cfg, tab, ranked, front_rows, cond, seconds, top) -> None:
    by = cfg.rule_axes()
    n_runs = len(cfg.grid())
    best = io.to_rows(tab, ranked[:1])[0]
    lines = [
        "# Token-dynamics sweep",
        "",
        f"{n_runs:,} runs: " + " x ".join(f"{k} ({len(v)})" for k, v in cfg.axes()) + f" x {cfg.seeds} seeds"
        + (f", in {seconds:.1f} s" if seconds else "") + ".",
        f"Runs: {cfg.n_tokens} tokens, D={cfg.dim}, {cfg.points_per_cluster} points per cluster, "
        f"centres {cfg.centers} (box {cfg.center_box:g}), init {cfg.init}, at most {cfg.n_steps} steps, "
        f"tol {cfg.tol:g}." + (" Method indices: " + ", ".join(f"{i} = {m}" for i, m in enumerate(cfg.method_names()))
                               + "." if cfg.method_names() else ""),
        "A *setting* is one point of the rule axes (" + (", ".join(by) or "none") + "), pooled over the data axes ("
        + (", ".join(cfg.data_axes()) or "none") + "). Intervals are 95% percentile "
        "bootstraps over seeds (common random numbers: every setting saw the same data per seed).",
        "",
        f"## Best regimes by mean ARI (top {min(top, len(ranked))} of {len(ranked)} settings)",
        "",
        "| setting | ARI [95% CI] | steps [95% CI] | collapse rate | converged |",
        "|---|---|---|---|---|",
    ]
    for r in io.to_rows(tab, ranked[:top]):
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
        r = io.to_rows(tab, [fast])[0]
        lines.append(f"\nFastest setting within {delta:g} ARI of the best: {_label(r, by)}: steps {_ci(r, 'steps', 2)}, "
                     f"ARI {_ci(r, 'ari')}.")
    collapse = np.flatnonzero(tab["collapsed_mean"] > 0.5)
    if collapse.size:
        lines += ["", "## Collapse", "", f"{collapse.size} setting(s) collapse in more than half of their runs; "
                  "e.g. " + "; ".join(_label(r, by) for r in io.to_rows(tab, collapse[:5])) + "."]
    data_axes = cfg.data_axes()
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
    with io.atomic_write(os.path.join(out, "report.md")) as f:
        f.write("\n".join(lines) + "\n")


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True) -> dict:
    """Run (or resume) the sweep into ``out`` and write its analysis; returns the analysis."""
    cfg.validate()
    meta = dict(study="token-dynamics-sweep", config=dataclasses.asdict(cfg), environment=io.environment())
    seconds = run_sweep(cfg, out, progress=not quiet)
    t0 = time.perf_counter()
    result = analyse(out, cfg, plots=plots, seconds=seconds)
    meta["timings"] = dict(sweep_s=seconds, analyse_s=time.perf_counter() - t0, n_runs=len(cfg.grid()))
    io.write_json(os.path.join(out, "config.json"), meta)
    if not quiet:
        by = cfg.rule_axes()
        b = result["best"]
        print(f"{len(cfg.grid()):,} runs in {seconds:.1f} s; analysis in {meta['timings']['analyse_s']:.1f} s")
        print(f"best mean ARI: {_label(b, by)}: ARI {_ci(b, 'ari')}, steps {_ci(b, 'steps', 2)}")
        print(f"Pareto front: {len(result['front'])} settings; see {os.path.join(out, 'report.md')}")
    return result


@dataclasses.dataclass(frozen=True)
class HeatmapConfig:
    """A heatmap of one metric of a finished sweep over two of its axes.

    Attributes:
      dir: the sweep directory.
      x: axis on the horizontal (required).
      y: axis on the vertical (required).
      metric: output field.
      stat: mean | std (over the pooled runs).
      where: fix other axes, name=value,name=value (otherwise they are pooled).
    """

    dir: str
    x: str = ""
    y: str = ""
    metric: str = "ari"
    stat: str = "mean"
    where: str = ""

    def fixed(self) -> dict:
        """``where`` as ``{axis: value}``."""
        out = {}
        for part in (t.strip() for t in self.where.split(",") if t.strip()):
            name, sep, value = part.partition("=")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"where expects name=value pairs separated by commas, got {part!r}")
        return out

    def validate(self) -> "HeatmapConfig":
        """Check the arguments against the sweep in ``dir`` (its axes and output fields)."""
        _checks.choice("stat", self.stat, ("mean", "std"))
        grid = sweep.Grid.from_dict(sweep.read_manifest(self.dir)["grid"])
        axes = list(grid.names)
        for arg, name in [("x", self.x), ("y", self.y)] + [("where", k) for k in self.fixed()]:
            if name not in axes:
                raise ValueError(f"{arg}={name!r} is not an axis of this sweep; axes: {axes}")
        if self.x == self.y:
            raise ValueError(f"x and y must be different axes, got {self.x!r} twice")
        fields = sweep.output_fields(self.dir)
        if self.metric not in fields:
            raise ValueError(f"metric={self.metric!r} is not an output of this sweep; metrics: {list(fields)}")
        return self


def heatmap(cfg: HeatmapConfig) -> str:
    """Draw the heatmap of ``cfg`` (reading or writing the sweep's ``summary.csv``); returns its path."""
    cfg.validate()
    path = os.path.join(cfg.dir, "summary.csv")
    if os.path.exists(path):
        cond = io.read_csv(path)
    else:
        cond = summary.condition_stats(cfg.dir)
        io.write_csv(path, cond)
    return figures.draw(heatmap_job(cfg.dir, cond, cfg.x, cfg.y, cfg.metric, where=cfg.fixed(), stat=cfg.stat))
