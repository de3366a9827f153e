"""The visual-token study's figures: the main part's heatmaps (:func:`heatmaps`) and the grids of
one model's tokens (:func:`grids_png`)."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from tokdyn.models import vtae
from tokdyn.stats import figures
from tokdyn.studies.visual_tokens.config import Config, model_config


def heatmaps(out: str, table: dict, cfg: Config) -> list[str]:
    """``heatmap_{accuracy,collapse}_<mode>.png``: the main part at the largest budget, vocabulary
    size x grid, mean over seeds; returns their paths ([] without the main part)."""
    paths = []
    part = np.asarray(table["part"])
    sel_main = part == "main"
    if sel_main.any():
        b = max(cfg.budgets)
        labels = [f"{n}x{n}x{c}" for n, c in cfg.grids]
        for mode in cfg.modes:
            for metric, fname in (("accuracy", "accuracy"), ("collapsed", "collapse")):
                z = np.full((len(cfg.vocab_sizes), len(cfg.grids)), np.nan)
                for i, V in enumerate(cfg.vocab_sizes):
                    for j, (n, c) in enumerate(cfg.grids):
                        s = (
                            sel_main
                            & (np.asarray(table["mode"]) == mode)
                            & (np.asarray(table["steps"], float) == b)
                            & (np.asarray(table["vocab_size"], float) == V)
                            & (np.asarray(table["grid"], float) == n)
                            & (np.asarray(table["colours"], float) == c)
                        )
                        if s.any():
                            z[i, j] = np.mean(np.asarray(table[metric], float)[s])
                paths.append(
                    figures.heatmap(
                        os.path.join(out, f"heatmap_{fname}_{mode}.png"),
                        labels,
                        list(cfg.vocab_sizes),
                        z,
                        xlabel="grid (N x N x C)",
                        ylabel="vocabulary size",
                        cbar=metric,
                        title=f"{metric} ({mode}, {b} steps, mean over seeds)",
                        fmt="{}",
                    )
                )
    return paths


def grid_codes(cfg: Config, key) -> np.ndarray:
    """The grids (16, 5, 5) of the first 16 tokens of a 51-token 5x5x3 model (Gumbel ST) trained
    for the largest budget."""
    model_cfg = model_config(cfg, 51, 5, 3, "gumbel_st", max(cfg.budgets))
    state, _ = vtae.train(key, model_cfg, vtae.Hparams(learning_rate=cfg.learning_rate))
    enc = vtae.encode(None, state.params, model_cfg, jnp.arange(16), deterministic=True)
    return np.asarray(enc.codes).reshape(16, 5, 5)


def grids_png(path: str, cfg: Config, key, codes=None) -> str:
    """Draw the grids of the first tokens of a 51-token 5x5x3 model (Gumbel ST) in colour.

    Args:
      path: the PNG file to write.
      cfg: the study's :class:`Config` (the model's budget and learning rate).
      key: PRNG key of the training, used only when ``codes`` is None.
      codes: optional (16, 5, 5) int grids of the first 16 tokens (:func:`grid_codes`); trained
        here when None.

    Returns:
      ``path``.
    """
    codes = grid_codes(cfg, key) if codes is None else np.asarray(codes)
    palette = np.array([[0.9, 0.2, 0.2], [0.2, 0.6, 0.9], [0.95, 0.85, 0.2], [0.3, 0.8, 0.3], [0.5, 0.3, 0.7]])
    fig = figures.figure((8, 2.4))
    axes = fig.subplots(2, 8)
    for t, ax in enumerate(axes.ravel()):
        ax.imshow(palette[codes[t]], interpolation="nearest")
        ax.set_title(f"w{t}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("grids of tokens w0..w15 (51 tokens, 5x5x3, Gumbel straight-through)", fontsize=9)
    return figures.save(fig, path)
