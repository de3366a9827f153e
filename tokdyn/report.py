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
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
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


def line_plot(path: str, x, series: Mapping[str, Sequence], *, panels: Mapping[str, Mapping[str, Sequence]] | None = None,
              xlabel: str = "", ylabel: str = "", title: str = "", errors: Mapping | None = None) -> str:
    """One figure of lines. ``series`` name -> y values over ``x``; or ``panels`` title -> series
    for side-by-side subplots sharing the y axis. ``errors`` mirrors the structure with error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels if panels is not None else {title: series}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.2, 3.4), sharey=True, squeeze=False)
    for ax, (ptitle, ser) in zip(axes[0], panels.items()):
        for name, y in ser.items():
            err = None
            if errors is not None:
                err = errors.get(ptitle, {}).get(name) if len(panels) > 1 else errors.get(name)
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=name)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8, frameon=False)
    if len(panels) > 1 and title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
