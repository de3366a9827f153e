"""The scenes study's figures: example segmentations (:func:`plot_examples`) and the learning
curves (:func:`plot_curves`)."""

from __future__ import annotations

import numpy as np

from tokdyn.stats import figures
from tokdyn.studies.object_discovery.config import IODINE, Config


def plot_examples(path: str, cfg: Config, test, labels: dict) -> str:
    """Draw ``n_examples`` test scenes, their true masks and every method's segments to ``path``.

    Args:
      path: the PNG file to write.
      cfg: the study's :class:`Config` (``n_examples``).
      test: the test :class:`~tokdyn.data.scenes.Scenes`.
      labels: method -> (n, size, size) int segment labels of seed 0.

    Returns:
      ``path``.
    """
    n = min(cfg.n_examples, test.images.shape[0])
    columns = {"image": np.asarray(test.images[:n]), "true": np.asarray(test.masks[:n])}
    columns.update({m: v[:n] for m, v in labels.items()})
    return figures.segmentation_grid(path, columns, title="test scenes: true masks and each method's segments (seed 0)")


def plot_curves(path: str, curves: dict) -> str:
    """Draw each learned model's validation FG-ARI against the step, a line per seed (``curves``:
    method -> curve rows of :data:`~tokdyn.studies.object_discovery.CURVE_COLUMNS`) to ``path``; returns ``path``."""
    panels = {}
    steps = None
    for m, rows in curves.items():
        steps = sorted({r["step"] for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        panels[m] = {
            f"seed {s}": [next(r["val_fg_ari"] for r in rows if r["step"] == t and r["seed"] == s) for t in steps]
            for s in seeds
        }
    title = "learned models" if IODINE in curves else "learned Slot Attention"
    return figures.line_plot(path, steps, {}, panels=panels, xlabel="step", ylabel="validation FG-ARI", title=title)
