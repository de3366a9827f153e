"""The vlm-diagnostics study's figure, ``diagnostics.png``: the distribution of the grounding score S per
perturbation, and the perception analysis's ARI per method and feature level (a panel per analysis run;
titled as a random model's numbers when it is one)."""

from __future__ import annotations

import numpy as np

from tokdyn.stats import figures

FIGURE = "diagnostics.png"


def draw(session, cfg, result) -> list:
    """Draw :data:`FIGURE` from ``result``'s rows (``None`` when neither the grounding nor the perception
    analysis ran)."""
    rows = result.data["rows"]
    panels = [name for name in ("grounding", "perception") if rows.get(name)]
    if not panels:
        return [None]
    fig = figures.figure((5.0 * len(panels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, name in zip(axes, panels):
        if name == "grounding":
            cells = sorted({(r["noise"], r["level"]) for r in rows[name]})
            for kind, level in cells:
                s = [r["score"] for r in rows[name] if r["noise"] == kind and r["level"] == level]
                label = kind if kind == "blank" else f"{kind} {level:g}"
                ax.hist(s, bins=20, histtype="step", label=label)
            ax.axvline(0.0, color="0.5", lw=0.8)
            ax.set_xlabel("grounding score S of an answer token")
            ax.set_ylabel("tokens")
            ax.legend(fontsize=7)
        else:
            levels = list(dict.fromkeys(r["level"] for r in rows[name]))
            methods = list(dict.fromkeys(r["method"] for r in rows[name]))
            width = 0.8 / len(levels)
            for j, level in enumerate(levels):
                means = [
                    np.nanmean([r["ari"] for r in rows[name] if r["level"] == level and r["method"] == m] or [np.nan])
                    for m in methods
                ]
                ax.bar(np.arange(len(methods)) + j * width, means, width, label=level)
            ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, rotation=45, ha="right", fontsize=7)
            ax.set_ylabel("mean ARI against the masks")
            ax.legend(fontsize=7)
    title = "vlm-diagnostics: " + (cfg.model or "RANDOM MODEL (no --model): no finding")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return [figures.save(fig, session.path(FIGURE))]


__all__ = ["FIGURE", "draw"]
