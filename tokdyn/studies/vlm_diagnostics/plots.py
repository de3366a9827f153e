"""The vlm-diagnostics study's figure, ``diagnostics.png``: the distribution of the grounding score S per
perturbation, the perception analysis's ARI per method and feature level, and the latents' similarity
matrices (the cosine of two instances' latents averaged over the steps, and of two steps averaged over the
instances: the collapse matrices); a panel per analysis run, titled as a random model's numbers when it is
one. A mean over no finite value is drawn as a missing bar (never a NumPy warning)."""

from __future__ import annotations

import numpy as np

from tokdyn.stats import figures

FIGURE = "diagnostics.png"


def finite_mean(values) -> float:
    """The mean of the finite ``values``; NaN when there is none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _grounding(ax, rows):
    for kind, level in sorted({(r["noise"], r["level"]) for r in rows}):
        s = [r["score"] for r in rows if r["noise"] == kind and r["level"] == level]
        ax.hist(s, bins=20, histtype="step", label=kind if kind == "blank" else f"{kind} {level:g}")
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.set_xlabel("grounding score S of an answer token")
    ax.set_ylabel("tokens")
    ax.legend(fontsize=7)


def _perception(ax, rows):
    levels = list(dict.fromkeys(r["level"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / len(levels)
    for j, level in enumerate(levels):
        means = [finite_mean([r["ari"] for r in rows if r["level"] == level and r["method"] == m]) for m in methods]
        ax.bar(np.arange(len(methods)) + j * width, means, width, label=level)
    ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("mean ARI against the masks")
    if not np.isfinite([r["ari"] for r in rows]).any():
        ax.text(0.5, 0.5, "no object masks:\nARI undefined", ha="center", va="center", transform=ax.transAxes)
    ax.legend(fontsize=7)


def _matrix(fig, ax, m, label):
    im = ax.imshow(m, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
    ax.set_title(label, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)


def draw(session, cfg, result) -> list:
    """Draw :data:`FIGURE` from ``result``'s rows and similarity matrices (``None`` when no analysis with a
    panel ran)."""
    rows, matrices = result.data["rows"], result.data.get("matrices") or {}
    panels = [name for name in ("grounding", "perception") if rows.get(name)]
    panels += [f"similarity:{k}" for k in ("instances", "steps") if k in matrices]
    if not panels:
        return [None]
    fig = figures.figure((4.6 * len(panels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, name in zip(axes, panels):
        if name == "grounding":
            _grounding(ax, rows[name])
        elif name == "perception":
            _perception(ax, rows[name])
        elif name == "similarity:instances":
            _matrix(fig, ax, matrices["instances"], "latents' cosine, instance x instance\n(averaged over steps)")
            ax.set_xlabel("instance")
        else:
            _matrix(fig, ax, matrices["steps"], "latents' cosine, step x step\n(averaged over instances)")
            ax.set_xlabel("latent step")
    title = "vlm-diagnostics: " + (cfg.model or "RANDOM MODEL (no --model): no finding")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return [figures.save(fig, session.path(FIGURE))]


__all__ = ["FIGURE", "draw", "finite_mean"]
