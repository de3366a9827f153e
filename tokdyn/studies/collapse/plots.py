"""The collapse study's figures: the phase diagrams (:func:`write_figures`)."""

from __future__ import annotations

import os

import numpy as np

from tokdyn.stats import figures
from tokdyn.studies.collapse.tables import phase_table


def _panels(path, ratios, panels, ylabel, title, boundaries=(1.0,), cbar="rate"):
    """Side-by-side heatmaps over log ratio (x) and a row axis (y), theory boundaries as lines."""
    fig = figures.figure((3.4 * len(panels) + 0.8, 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    lx = np.log2(ratios)
    edges = np.concatenate([[lx[0] - (lx[1] - lx[0]) / 2], (lx[1:] + lx[:-1]) / 2, [lx[-1] + (lx[-1] - lx[-2]) / 2]])
    for ax, (name, (yvals, z, vmax)) in zip(axes, panels.items()):
        ye = np.arange(len(yvals) + 1) - 0.5
        im = ax.pcolormesh(edges, ye, z, vmin=0, vmax=vmax, cmap="viridis", shading="flat")
        for b in boundaries:
            ax.axvline(np.log2(b), color="red", lw=1.5, ls="-" if b == 1 else "--")
        ax.set_yticks(np.arange(len(yvals)), [f"{v:g}" for v in yvals], fontsize=8)
        ticks = [-2, -1, 0, 1, 2]
        ax.set_xticks(ticks, [f"{2.0**t:g}" for t in ticks], fontsize=8)
        ax.set_xlabel("tau / tau_c")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel(ylabel)
    fig.colorbar(im, ax=list(axes), label=cbar, fraction=0.03)
    fig.suptitle(title, fontsize=10)
    return figures.save(fig, path, dpi=90)


def write_figures(out, cfg, ratios, phase, mom, rep):
    """Draw the phase diagrams of :func:`~tokdyn.studies.collapse.phase_parts`'s sweeps into ``out``.

    The figures: ``phase_collapse.png``, ``phase_groups.png`` (noise x tau/tau_c per T/K),
    ``phase_momentum.png`` and ``phase_repulsion.png``.

    Args:
      out: the directory the figures go into.
      cfg: the study's :class:`~tokdyn.studies.collapse.Config`.
      ratios: (R,) the values of tau / tau_c swept.
      phase: T -> the noise x ratio sweep with T tokens (a dict of equal-length columns:
        ``noise``, ``ratio``, ``seed`` and the run's outputs ``collapsed``, ``merged``, ``groups``,
        ``converged``, ``steps``, ``min_sep_rel``).
      mom: the momentum x ratio sweep (T = 4), the same columns with ``momentum`` for ``noise``.
      rep: the repulsion x ratio sweep (T = 4), with ``repulsion_rel`` (gamma over
        (tr Cov X)^(3/2)).

    Returns:
      The figures' paths.
    """
    k = 3
    noise = np.asarray(cfg.phase_noise)
    paths = [
        _panels(
            os.path.join(out, "phase_collapse.png"),
            ratios,
            {f"T/K = {t}/{k}": (noise, phase_table(phase[t], "noise", noise, ratios, "collapsed"), 1) for t in phase},
            "cluster std (centres in [-3, 3]^2)",
            "all tokens merged (rate); red: theory tau = tau_c",
        ),
        _panels(
            os.path.join(out, "phase_groups.png"),
            ratios,
            {f"T/K = {t}/{k}": (noise, phase_table(phase[t], "noise", noise, ratios, "groups") / t, 1) for t in phase},
            "cluster std",
            "distinct token groups / T (mean); red: tau = tau_c",
            cbar="groups / T",
        ),
        _panels(
            os.path.join(out, "phase_momentum.png"),
            ratios,
            {
                "collapsed": (cfg.momentum, phase_table(mom, "momentum", cfg.momentum, ratios, "collapsed"), 1),
                "not converged": (cfg.momentum, 1 - phase_table(mom, "momentum", cfg.momentum, ratios, "converged"), 1),
                "steps / n_steps": (
                    cfg.momentum,
                    phase_table(mom, "momentum", cfg.momentum, ratios, "steps") / cfg.n_steps,
                    1,
                ),
            },
            "momentum beta",
            "heavy-ball momentum (T = 4, K = 3); theory: boundary at tau_c for every beta < 1",
        ),
        _panels(
            os.path.join(out, "phase_repulsion.png"),
            ratios,
            {
                "tokens merged (any pair)": (
                    cfg.repulsion_rel,
                    phase_table(rep, "repulsion_rel", cfg.repulsion_rel, ratios, "merged"),
                    1,
                ),
                "not converged": (
                    cfg.repulsion_rel,
                    1 - phase_table(rep, "repulsion_rel", cfg.repulsion_rel, ratios, "converged"),
                    1,
                ),
            },
            "gamma / (tr Cov X)^(3/2)",
            "repulsion (T = 4, K = 3); red dashed: pair instability tau = 3 tau_c",
            boundaries=(1.0, 3.0),
        ),
    ]
    return paths
