"""The video study's figures (:func:`draw`): the scores with their intervals, one video's token
tracks and segmentation per condition, and the learned predictors' learning curves."""

from __future__ import annotations

import numpy as np

from tokdyn.experiment import runner
from tokdyn.stats import figures
from tokdyn.studies.video.config import Config


def _metrics_figure(path, cfg: Config, rows) -> str:
    names = {
        "video_ari": "video FG-ARI",
        "frame_ari": "per-frame FG-ARI",
        "switch_rate": "switches / chance",
        "persistence": "identity persistence",
        "collapse": "collapsed frames",
    }
    fig = figures.figure((3.2 * len(names), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    conds, width = cfg.all_conditions, 0.8 / len(cfg.scenarios)
    for ax, (key, label) in zip(axes, names.items()):
        for i, sc in enumerate(cfg.scenarios):
            r = [row for row in rows if row["scenario"] == sc]
            m = np.asarray([row[key] for row in r], float)
            lo, hi = (np.asarray([row[f"{key}_{e}"] for row in r], float) for e in ("low", "high"))
            x = np.arange(len(conds)) + (i - (len(cfg.scenarios) - 1) / 2) * width
            err = np.vstack([np.nan_to_num(m - lo), np.nan_to_num(hi - m)])
            ax.bar(x, np.nan_to_num(m), width, color=f"C{i}", label=sc, yerr=err, capsize=2, error_kw=dict(lw=0.8))
        ax.set_xticks(np.arange(len(conds)))
        ax.set_xticklabels(conds, rotation=60, fontsize=7, ha="right")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("means over seeds, 95% intervals", fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.3, top=0.85, wspace=0.3)
    return figures.save(fig, path)


def _tracks_figure(path, cfg: Config, ex) -> str:
    scale = cfg.position_scale if cfg.position_scale > 0 else 1.0
    tracks = [(c, np.asarray(tok)[..., :2] / scale) for c, tok in zip(cfg.conditions, ex["tokens"])]
    tracks += [(c, np.asarray(v["xy"])) for c, v in ex.get("learned", {}).items()]  # slots' centroids
    conds = [c for c, _ in tracks]
    fig = figures.figure((2.4 * len(conds), 2.7))
    axes = np.atleast_1d(fig.subplots(1, len(conds)))
    pos = ex["position"]  # (F, M, 2) canvas (row, col) in [0, 1]; features: 2 p - 1, times position_scale
    for ax, (cond, tok) in zip(axes, tracks):
        for k in range(pos.shape[1]):
            ax.plot(2 * pos[:, k, 1] - 1, 2 * pos[:, k, 0] - 1, color="0.4", ls="--", lw=1)
        for j in range(tok.shape[1]):
            xy = tok[:, j]  # (F, 2) in [-1, 1]
            ax.plot(xy[:, 1], xy[:, 0], color=f"C{j}", marker="o", ms=2.5, lw=1.1)
            ax.plot(xy[-1, 1], xy[-1, 0], color=f"C{j}", marker="s", ms=4)
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(1.3, -1.3)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(cond, fontsize=8)
    learned = " (learned: each slot's centroid)" if ex.get("learned") else ""
    fig.suptitle(
        f"token positions over {cfg.frames} frames (square: last; dashed: true centres){learned}, "
        f"{cfg.scenarios[0]}, seed 0 video 0",
        fontsize=8,
    )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.82, wspace=0.05)
    return figures.save(fig, path)


def _strip_figure(path, cfg: Config, ex) -> str:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    rows = [("frames", ex["images"]), ("truth", ex["masks"])] + list(zip(cfg.conditions, ex["ids"]))
    rows += [(c, np.asarray(v["ids"])) for c, v in ex.get("learned", {}).items()]
    n_frames = ex["images"].shape[0]
    fig = figures.figure((0.9 * n_frames + 1.0, 0.9 * len(rows) + 0.4))
    axes = np.asarray(fig.subplots(len(rows), n_frames, squeeze=False))
    for i, (name, seq) in enumerate(rows):
        for f in range(n_frames):
            ax = axes[i, f]
            if seq.ndim == 4:
                ax.imshow(np.clip(seq[f], 0, 1), interpolation="nearest")
            else:
                ax.imshow(seq[f] % 10, cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if f == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
            if i == 0:
                ax.set_title(f"t={f}", fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.99, bottom=0.01, top=0.95, wspace=0.04, hspace=0.06)
    return figures.save(fig, path)


def _curve_figure(path, curve) -> str:
    steps = sorted({int(t) for t in curve["step"]})
    cond, seed, step = (np.asarray(curve[k]) for k in ("condition", "seed", "step"))
    val = np.asarray(curve["val_video_ari"], float)
    panels = {}
    for c in dict.fromkeys(cond.tolist()):
        panels[c] = {
            f"seed {int(s)}": [float(val[(cond == c) & (seed == s) & (step == t)][0]) for t in steps]
            for s in sorted(set(seed[cond == c].tolist()))
        }
    return figures.line_plot(
        path,
        steps,
        {},
        panels=panels,
        xlabel="step",
        ylabel="validation video FG-ARI",
        title="learned predictors: video FG-ARI on validation clips along training",
    )


def draw(session: runner.Session, cfg: Config, result: runner.Result) -> list:
    """``metrics.png``, ``tracks.png``, ``strip.png`` and, with learned conditions,
    ``learning_curve.png`` (see the module docstring)."""
    ex, curve = result.data["example"], result.data["curve"]
    return [
        _metrics_figure(session.path("metrics.png"), cfg, result.data["metrics"]),
        _tracks_figure(session.path("tracks.png"), cfg, ex),
        _strip_figure(session.path("strip.png"), cfg, ex),
        _curve_figure(session.path("learning_curve.png"), curve) if len(curve["step"]) else None,
    ]
