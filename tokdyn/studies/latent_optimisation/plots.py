"""The latent-optimisation study's figures: ``optimiser.png`` (:func:`plot_optimiser`) and
``grounding.png`` (:func:`plot_grounding`); :func:`draw` is the study's ``figures``."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from tokdyn.stats import figures


def plot_optimiser(out: str, curves: dict, table: dict) -> Optional[str]:
    """The mean reward over iterations of each method (its own reward, over instances and seeds),
    one panel per variant, from ``curves`` (``rewards.csv``'s columns) into ``optimiser.png``;
    returns its path (None without curves)."""
    if not curves.get("variant"):
        return None
    v, m, it = (np.asarray(curves[k]) for k in ("variant", "method", "iteration"))
    rew = np.asarray(curves["reward"], float)
    names = list(dict.fromkeys(v.tolist()))
    fig = figures.figure((4.2 * len(names), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        for i, method in enumerate(dict.fromkeys(m.tolist())):
            sel = (v == name) & (m == method)
            grid = np.unique(it[sel])
            ax.plot(grid, [rew[sel & (it == t)].mean() for t in grid], color=f"C{i}", label=method)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("reward (the method's own), mean over instances and seeds")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "optimiser.png"), dpi=110)


def plot_grounding(out: str, hists: dict) -> Optional[str]:
    """Histograms of the answer token's grounding score per perturbation, one panel per variant
    (``hists``: variant -> perturbation -> scores), into ``grounding.png``; returns its path (None
    without variants)."""
    if not hists:
        return None
    names = list(hists)
    fig = figures.figure((4.0 * len(names), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        for i, (pert, s) in enumerate(hists[name].items()):
            ax.hist(s, bins=40, histtype="step", color=f"C{i}", label=pert)
        ax.set_title(f"{name}: answer token", fontsize=10)
        ax.set_xlabel("grounding score (nats)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "grounding.png"), dpi=110)


def draw(session, cfg, result) -> list:
    """``optimiser.png`` and ``grounding.png`` of a run's result; returns their paths."""
    return [
        plot_optimiser(session.out, result.data["curves"], result.data["table"]),
        plot_grounding(session.out, result.data["hists"]),
    ]
