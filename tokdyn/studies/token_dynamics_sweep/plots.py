"""The sweep's figures as jobs of :func:`tokdyn.stats.figures.draw` (:func:`plot_jobs`: the Pareto
front and heatmaps; :func:`heatmap_job`), and ``tokdyn plot heatmap`` (:class:`HeatmapConfig`,
:func:`heatmap`): a metric of a finished sweep over two of its axes."""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from tokdyn import _checks, io
from tokdyn.engine import sweep
from tokdyn.experiment.study import Refused
from tokdyn.stats import figures, summary
from tokdyn.studies.token_dynamics_sweep.config import METRICS, Config
from tokdyn.studies.token_dynamics_sweep.tables import group_dirs, read_table, write_table


def heatmap_job(
    out: str, cond: dict, x: str, y: str, metric: str, where: dict | None = None, stat: str = "mean"
) -> dict:
    """The :func:`tokdyn.stats.figures.draw` job of a heatmap of ``metric`` over axes ``x`` and ``y``,
    pooled over the other axes (or fixed by ``where``).

    Args:
      out: the sweep directory (the figure goes to its ``plots/``).
      cond: the sweep's per-condition table (:func:`tokdyn.stats.summary.condition_stats`:
        ``{column: (C,) array}``, an axis column each, ``<metric>_mean``, ``<metric>_std``, ...).
      x, y: the axes on the horizontal and the vertical (two different columns of ``cond``).
      metric: an output field of the runs (``ari``, ``steps``, ...).
      where: ``{axis: value}`` fixing other axes; the axes neither fixed nor drawn are pooled.
      stat: "mean" or "std" (over the pooled runs).

    Returns:
      The job: ``kind``, ``path``, ``x`` (X,) and ``y`` (Y,) values, ``z`` (Y, X) (NaN where no
      condition), labels and title. ``ValueError`` naming ``x``, ``y`` or ``stat`` when it is not one.
    """
    axes = [a for a in summary.table_axes(cond) if a != "method_name"]
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
    return dict(
        kind="heatmap",
        path=os.path.join(out, "plots", f"heatmap_{metric}_{stat}_{y}_vs_{x}{suffix}.png"),
        x=xs.tolist(),
        y=ys.tolist(),
        z=z.tolist(),
        xlabel=x,
        ylabel=y,
        title=title,
        cbar=metric,
    )


def plot_jobs(out: str, cfg: Config, cond: dict, tab: dict) -> list[dict]:
    """The figures of :func:`~tokdyn.studies.token_dynamics_sweep.report.analyse`, as jobs of
    :func:`tokdyn.stats.figures.draw`: the Pareto front of the settings (``plots/pareto.png``) and,
    with two axes or more, heatmaps of ARI, collapse and steps over the first two
    (:func:`heatmap_job`; in a sweep of several rules, per rule over the first two axes it takes,
    ``..._<group>.png``).

    Args:
      out: the sweep directory (the figures go to its ``plots/``).
      cfg: the sweep's :class:`~tokdyn.studies.token_dynamics_sweep.config.Config`.
      cond: the per-condition table (``summary.csv``'s columns, (C,) each).
      tab: the per-setting table (``settings.csv``'s columns, (S,) each, ``on_front`` among them).

    Returns:
      A list of jobs, the Pareto front's first.
    """
    jobs = []
    front = np.asarray(tab["on_front"], bool)
    jobs.append(
        dict(
            kind="front",
            path=os.path.join(out, "plots", "pareto.png"),
            cost=tab["steps_mean"].tolist(),
            benefit=tab["ari_mean"].tolist(),
            front=front.tolist(),
            low=tab["ari_low"].tolist(),
            high=tab["ari_high"].tolist(),
            xlabel="mean steps",
            ylabel="mean ARI",
            title=f"{len(front)} settings; Pareto front ({front.sum()}) with 95% bootstrap CI",
        )
    )
    groups = cfg.groups()
    for group in groups:  # per rule: the heatmaps over the first two axes it takes
        axes = [
            k
            for k in cfg.rule_axes() + cfg.data_axes()
            if k in group.grid.names and (len(groups) == 1 or group.grid.axes[k].size > 1)
        ]  # of several rules: no axis of one value
        if len(axes) < 2:
            continue
        part = cond
        if len(groups) > 1:  # its conditions, without the axes of the other rules
            sel = np.isin(cond["method"], group.methods)
            part = {
                k: np.asarray(v)[sel]
                for k, v in cond.items()
                if k in group.grid.names or k not in [a for a, _ in cfg.axes()] + ["method_name"]
            }
        for metric in ("ari", "collapsed", "steps"):
            job = heatmap_job(out, part, axes[0], axes[1], metric)
            if len(groups) > 1:
                tag = os.path.basename(group.folder)
                job["path"] = job["path"][: -len(".png")] + f"_{tag}.png"
                job["title"] = f"{tag}: {job['title']}"
            jobs.append(job)
    return jobs


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
                out_value = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"where expects name=value pairs separated by commas, got {part!r}")
            if name.strip() in out:
                raise ValueError(f"where fixes {name.strip()!r} twice, in {self.where!r}")
            out[name.strip()] = out_value
        return out

    def validate(self) -> "HeatmapConfig":
        """Check the arguments against the sweep in ``dir`` (its axes, their values and its output
        fields, whether it is finished and ``dir`` can be written): every problem is a
        ``ValueError`` naming the option (the command exits 2)."""
        _checks.choice("stat", self.stat, ("mean", "std"))
        if not isinstance(self.dir, str) or not self.dir:
            raise TypeError(f"dir must name a sweep's output directory, got {self.dir!r}")
        if not os.path.isdir(self.dir):
            raise ValueError(f"dir={self.dir!r} is not a directory: name the --out of a `tokdyn sweep token-dynamics`")
        dirs = group_dirs(self.dir)
        if dirs:
            raise ValueError(
                f"dir={self.dir!r} holds a sweep of several rules, one engine sweep each: plot one of "
                f"them, dir={dirs[0]!r}" + "".join(f" or {d!r}" for d in dirs[1:])
            )
        try:
            grid = sweep.Grid.from_dict(sweep.read_manifest(self.dir)["grid"])
        except io.CorruptFile as e:
            raise ValueError(
                f"dir={self.dir!r}: {e}; run the sweep command again with its arguments to write it anew "
                "(its finished chunks are kept)"
            ) from None
        axes = list(grid.names)
        where = self.fixed()
        for arg, name in [("x", self.x), ("y", self.y)] + [("where", k) for k in where]:
            if name not in axes:
                raise ValueError(f"{arg}={name!r} is not an axis of this sweep; axes: {axes}")
        if self.x == self.y:
            raise ValueError(f"x and y must be different axes, got {self.x!r} twice")
        for name, value in where.items():
            if name in (self.x, self.y):
                raise ValueError(f"where fixes {name!r}, which the heatmap spans (x={self.x!r}, y={self.y!r})")
            values = grid.axes[name]
            if not np.isclose(values, value).any():
                raise ValueError(
                    f"where={name}={value:g}: the sweep's {name} takes the values "
                    f"{[float(v) if values.dtype.kind == 'f' else int(v) for v in values]}"
                )
        missing = sweep.missing_chunks(self.dir)
        if missing:
            raise ValueError(
                f"dir={self.dir!r} holds an unfinished sweep ({len(missing)} chunk(s) missing, the first "
                f"for runs [{missing[0][0]}, {missing[0][1]})): run the sweep command again to finish it"
            )
        fields = sweep.output_fields(self.dir)
        if self.metric not in fields:
            raise ValueError(f"metric={self.metric!r} is not an output of this sweep; metrics: {list(fields)}")
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise ValueError(f"dir={self.dir!r} cannot be written: the heatmap is drawn into its plots/ folder")
        return self


def _summary_table(cfg: HeatmapConfig) -> dict:
    """The sweep's ``summary.csv`` when it is the table the sweep wrote (its SHA-256 is the one
    recorded in ``tables.json``, :func:`read_table`) and holds ``cfg.metric``; else computed from
    the verified chunks and written anew (with a warning naming the file when it was there but
    could not be trusted); :class:`Refused` naming the file when a chunk is damaged."""
    path = os.path.join(cfg.dir, "summary.csv")
    grid = sweep.Grid.from_dict(sweep.read_manifest(cfg.dir)["grid"])
    want = [*grid.names, "n", f"{cfg.metric}_{cfg.stat}", f"{cfg.metric}_mean"]
    cond, problem = read_table(cfg.dir, "summary.csv")
    if cond is not None:
        if all(k in cond and len(cond[k]) == grid.n_conditions and cond[k].dtype.kind in "fiu" for k in want):
            return cond
        problem = f"it lacks the columns of {cfg.metric!r}"
    fields = sweep.output_fields(cfg.dir)
    try:  # the fields in the order analyse writes them
        ordered = [f for f in METRICS if f in fields] + [f for f in fields if f not in METRICS]
        cond = summary.condition_stats(cfg.dir, ordered, require_finite=[f for f in METRICS if f in fields])
    except ValueError as e:  # a chunk damaged since the sweep finished (iter_chunks names it)
        raise Refused(
            f"{e}: run the sweep command again with its arguments (it recomputes the chunk), then plot"
        ) from None
    if problem is not None:
        warnings.warn(
            f"{path} is not the table the sweep wrote ({problem}): recomputed from the sweep's verified "
            "chunks and written anew",
            RuntimeWarning,
            stacklevel=3,
        )
    write_table(cfg.dir, "summary.csv", cond)
    return cond


def heatmap(cfg: HeatmapConfig) -> str:
    """Draw the heatmap of ``cfg`` (reading or writing the sweep's ``summary.csv``); returns its path."""
    cfg.validate()
    cond = _summary_table(cfg)
    return figures.draw(heatmap_job(cfg.dir, cond, cfg.x, cfg.y, cfg.metric, where=cfg.fixed(), stat=cfg.stat))
