"""Plain-file outputs: CSV (one row per record), JSON (metadata, test results), PNG figures.

matplotlib is imported only when a figure is drawn, so studies that skip plots do not pay for it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from typing import Mapping, Sequence

import numpy as np


def _cell(v):
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, np.floating):  # the shortest text that reads back to the same value
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return v


def write_csv(path: str, columns: Mapping[str, Sequence]) -> str:
    """Write columns (name -> equal-length sequence) as a CSV with a header row."""
    names = list(columns)
    cols = [np.asarray(columns[n]) for n in names]
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise ValueError(f"columns must have equal lengths, got { {n: len(c) for n, c in zip(names, cols)} }")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*cols):
            w.writerow([_cell(v) for v in row])
    return path


def read_csv(path: str) -> dict[str, np.ndarray]:
    """Read a CSV written by :func:`write_csv` back into columns (numeric where possible)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    out = {}
    for j, name in enumerate(header):
        col = [r[j] for r in body]
        try:
            out[name] = np.asarray(col, dtype=np.float64)
        except ValueError:
            out[name] = np.asarray(col)
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if np.isfinite(v) else str(v)  # JSON has no inf/nan
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str, obj) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")
    return path


def environment() -> dict:
    """Versions and machine facts recorded next to every output."""
    import jax

    return {
        "tokdyn": __import__("tokdyn").__version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.local_devices()],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


class PlotWorker:
    """Draw figures in a helper process that starts importing matplotlib at once.

    Start it early (``PlotWorker()``): its matplotlib import then runs on another core while the
    caller imports JAX and simulates. ``draw(jobs)`` sends the figures (a list of job dicts
    for :func:`draw`, JSON-serialisable) and ``wait()`` blocks until they are written,
    raising ``RuntimeError`` with the worker's message if it failed.
    """

    def __init__(self):
        import subprocess

        self._proc = subprocess.Popen([sys.executable, "-m", "tokdyn.report"], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def draw(self, jobs: list[dict]) -> None:
        self._proc.stdin.write(json.dumps(_jsonable(jobs)))
        self._proc.stdin.close()

    def wait(self) -> None:
        err = self._proc.stderr.read()
        if self._proc.wait() != 0:
            raise RuntimeError(f"plot worker failed:\n{err}")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def line_plot(path: str, x, series: Mapping[str, Sequence], *, panels: Mapping[str, Mapping[str, Sequence]] | None = None,
              xlabel: str = "", ylabel: str = "", title: str = "", errors: Mapping | None = None) -> str:
    """One PNG of lines. ``series``: name -> y values over ``x``; or ``panels``: title -> series,
    drawn as side-by-side subplots sharing the y axis. ``errors`` mirrors the structure of what is
    drawn (name -> half-widths, or panel -> name -> half-widths) and is drawn as vertical bars.

    Uses matplotlib's object API (no pyplot, no global state), so it is thread-safe and cheap.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    multi = panels is not None  # panel titles shown, figure title as a suptitle
    panels = panels if multi else {title: series}
    fig = Figure(figsize=(3.4 * len(panels) + 1.0, 3.3))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, (ptitle, ser) in zip(axes, panels.items()):
        for i, (name, y) in enumerate(ser.items()):
            color = f"C{i}"
            ax.plot(x, y, marker="o", ms=4, color=color, label=name)
            err = None if errors is None else (errors.get(ptitle, {}).get(name) if multi else errors.get(name))
            if err is not None:
                y, err = np.asarray(y, float), np.asarray(err, float)
                ax.vlines(x, y - err, y + err, color=color, lw=1, alpha=0.7)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=8, frameon=False)
    if multi and title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.15, top=0.82 if multi and title else 0.9, wspace=0.08)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def heatmap(path: str, x, y, z, *, xlabel: str = "", ylabel: str = "", title: str = "", cbar: str = "",
            fmt: str = "{:.3g}") -> str:
    """One PNG of a (len(y), len(x)) table ``z`` as coloured cells, one cell per axis value (so
    linearly and logarithmically spaced axes both read naturally); NaN cells are left blank.
    Tick labels are the axis values (thinned to at most 12 per axis)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    z = np.asarray(z, float)
    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(z), origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    for setter, values in ((ax.set_xticks, x), (ax.set_yticks, y)):
        every = max(1, int(np.ceil(len(values) / 12)))
        ticks = np.arange(0, len(values), every)
        setter(ticks, [fmt.format(values[i]) for i in ticks])
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.2, top=0.9)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def front_plot(path: str, cost, benefit, front, *, low=None, high=None, xlabel: str = "", ylabel: str = "",
               title: str = "") -> str:
    """One PNG: every point (``cost``, ``benefit``) in grey, the Pareto ``front`` (a boolean mask)
    highlighted and joined as a staircase, with vertical bars from ``low`` to ``high`` (the
    benefit's confidence interval) on the front points when given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cost, benefit, front = np.asarray(cost, float), np.asarray(benefit, float), np.asarray(front, bool)
    fig = Figure(figsize=(6.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(cost[~front], benefit[~front], s=8, color="0.6", alpha=0.6, label="settings")
    order = np.flatnonzero(front)[np.argsort(cost[front], kind="stable")]
    ax.step(cost[order], benefit[order], where="post", color="C3", lw=1.2)
    ax.scatter(cost[order], benefit[order], s=22, color="C3", zorder=3, label="Pareto front")
    if low is not None and high is not None:
        ax.vlines(cost[order], np.asarray(low, float)[order], np.asarray(high, float)[order], color="C3", lw=1,
                  alpha=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.9)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


PLOTS = {"line": line_plot, "heatmap": heatmap, "front": front_plot}


def draw(job: dict) -> str:
    """Draw one figure from a job dict: ``kind`` (a key of :data:`PLOTS`, default ``"line"``) plus
    that function's keyword arguments."""
    job = dict(job)
    return PLOTS[job.pop("kind", "line")](**job)


if __name__ == "__main__":  # the PlotWorker process: import matplotlib, then draw what arrives
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401

    for job in json.loads(sys.stdin.read() or "[]"):
        draw(job)
