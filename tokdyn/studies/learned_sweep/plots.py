"""The figures of a learned sweep (skipped with ``--no-plots``): ``plots/loss.png``, the training
loss of each condition (its mean over the seeds whose models stayed finite, per call of
``steps_per_call`` steps), and ``plots/by_AXIS.png`` for each axis, every metric against that
axis (a panel each, its own y scale), one line per setting of the other axes, each point the
condition's mean over seeds with its 95% interval (conditions.csv's, the findings' rule)."""

from __future__ import annotations

import itertools

import numpy as np

from tokdyn.engine import sweep
from tokdyn.stats import figures
from tokdyn.train.trainer import stages_of
from tokdyn.studies.learned_sweep.model import LOSS_CURVE
from tokdyn.studies.learned_sweep.report import condition_label

FIGURE_FILES = ("plots/loss.png", "plots/by_*.png")  # the runner removes those a rerun did not draw


def loss_curves(out: str, cfg) -> dict | None:
    """``{condition: (calls,) mean training loss}`` over the models of each condition whose metrics
    and loss are all finite (NaN where none is), conditions in conditions.csv's order; None for a
    sweep whose runs kept no loss curve."""
    m = sweep.read_manifest(out)
    grid = sweep.Grid.from_dict(m["grid"])
    names, metrics = cfg.axis_names(), cfg.metrics()
    pos = {n: i for i, n in enumerate(grid.names)}
    n_cond = int(np.prod([grid.shape[pos[n]] for n in names], dtype=np.int64))
    sums = counts = None
    for _, _, cols in sweep.iter_chunks(out):
        if LOSS_CURVE not in cols:
            return None
        curve = np.asarray(cols[LOSS_CURVE], np.float64)  # (runs, calls)
        ok = np.isfinite(curve).all(axis=1)
        for f in metrics:
            ok &= np.isfinite(np.asarray(cols[f], np.float64))
        cond = np.zeros(len(cols["index"]), np.int64)
        for n in names:  # the condition's row in conditions.csv: its axes' indices, mixed radix
            i = pos[n]
            cond = cond * grid.shape[i] + (np.asarray(cols["index"]) // grid.strides[i]) % grid.shape[i]
        if sums is None:
            sums, counts = np.zeros((n_cond, curve.shape[1])), np.zeros(n_cond)
        np.add.at(sums, cond[ok], curve[ok])
        np.add.at(counts, cond[ok], 1.0)
    if sums is None:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.nan)
    return {c: means[c] for c in range(n_cond)}


def call_steps(cfg) -> list:
    """The training step at the end of each call of the sweep's models (every stage of a
    curriculum in turn): the x values of the loss curves."""
    x, done = [], 0
    for n, stage in stages_of(cfg.MODEL.trainer(cfg.model)):
        per_call = stage.config.steps_per_call
        for _ in range(n // per_call):
            done += per_call
            x.append(done)
    return x


def plot_jobs(out: str, cfg, table: dict) -> list:
    """The figures' jobs (:func:`tokdyn.stats.figures.draw`) of the finished sweep in ``out``:
    ``plots/loss.png`` (when its runs kept their loss) and ``plots/by_AXIS.png`` per axis."""
    names, metrics = cfg.axis_names(), cfg.metrics()
    rows = [dict(zip(table, values)) for values in zip(*table.values())]
    jobs = []
    curves = loss_curves(out, cfg)
    if curves is not None and curves:
        calls = len(next(iter(curves.values())))
        steps = call_steps(cfg)
        jobs.append(
            dict(
                kind="line",
                path=f"{out}/plots/loss.png",
                x=steps if len(steps) == calls else list(range(1, calls + 1)),
                series={condition_label(rows[c], names): curves[c].tolist() for c in curves},
                xlabel="training step" if len(steps) == calls else "training call",
                ylabel="training loss",
                title=f"{cfg.MODEL.name}: training loss (each point: the mean of its call's steps, then over seeds)",
            )
        )
    for axis, values in cfg.axes():
        others = [n for n in names if n != axis]
        settings = list(itertools.product(*(dict(cfg.axes())[n] for n in others)))
        panels, bands = {}, {}
        for metric in metrics:
            series, band = {}, {}
            for setting in settings:
                pick = [
                    r
                    for r in rows
                    if all(np.isclose(float(r[n]), v, rtol=1e-6, atol=0.0) for n, v in zip(others, setting))
                ]
                pick.sort(key=lambda r: float(r[axis]))
                label = ", ".join(f"{n}={v:.4g}" for n, v in zip(others, setting)) or metric
                series[label] = [float(r[f"{metric}_mean"]) for r in pick]
                band[label] = ([float(r[f"{metric}_low"]) for r in pick], [float(r[f"{metric}_high"]) for r in pick])
            panels[metric], bands[metric] = series, band
        jobs.append(
            dict(
                kind="line",
                path=f"{out}/plots/by_{axis}.png",
                x=list(values),
                series={},
                panels=panels,
                intervals=bands,
                sharey=False,
                columns=4,
                xscale="log" if min(values) > 0 and max(values) >= 10 * min(values) else "linear",
                xlabel=axis,
                title=f"{cfg.MODEL.name}: each metric against {axis} (mean over seeds, 95% interval)",
            )
        )
    return jobs


def draw(session, cfg, result) -> list:
    """The runner's ``figures`` hook: every figure of :func:`plot_jobs`, drawn into ``plots/``."""
    session.path("plots", "loss.png")  # the folder
    return [figures.draw(job) for job in plot_jobs(session.out, cfg, result.data["table"])]
