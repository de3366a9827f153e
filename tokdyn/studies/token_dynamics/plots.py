"""The token-dynamics study's figures: :func:`plot_jobs`."""

from __future__ import annotations

import os

import numpy as np

from tokdyn.studies.token_dynamics.config import Config


def plot_jobs(out: str, cfg: Config, summary: list[dict]) -> list[dict]:
    """The figures ``plots/{ari_mean,steps_mean,collapsed_rate}.png`` (metric vs noise, one panel
    per K), as keyword arguments of :func:`tokdyn.stats.figures.line_plot`."""
    noise = list(cfg.noise)
    jobs = []
    for metric, fname, label in (
        ("ari", "ari_mean", "ARI"),
        ("steps", "steps_mean", "steps"),
        ("collapsed", "collapsed_rate", "collapse rate"),
    ):
        panels, errors = {}, {}
        for k in cfg.n_clusters:
            title = f"K = {k}"
            panels[title], errors[title] = {}, {}
            for name in cfg.methods:
                rows = {r["noise"]: r for r in summary if r["method"] == name and r["n_clusters"] == k}
                panels[title][name] = [rows[nz][metric + "_mean"] for nz in noise]
                # standard error of the mean over seeds
                errors[title][name] = [
                    rows[nz][metric + "_std"] / np.sqrt(max(rows[nz]["n_runs"] - rows[nz].get("n_nonfinite", 0), 1))
                    for nz in noise
                ]
        jobs.append(
            dict(
                path=os.path.join(out, "plots", fname + ".png"),
                x=noise,
                series={},
                panels=panels,
                errors=errors,
                xlabel="noise std",
                ylabel=label,
                title=f"{label} vs noise (mean ± s.e. over {cfg.seeds} seeds)",
            )
        )
    return jobs
