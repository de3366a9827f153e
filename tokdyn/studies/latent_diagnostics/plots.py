"""The latent-diagnostics study's figures: ``similarity.png`` (:func:`plot_similarity`),
``decomposition.png`` (:func:`plot_decomposition`), ``probes.png`` (:func:`plot_probes`);
:func:`draw` is the study's ``figures``."""

from __future__ import annotations

import os
from typing import Optional

import jax.numpy as jnp
import numpy as np

from tokdyn import geometry
from tokdyn.experiment import runner
from tokdyn.stats import figures
from tokdyn.studies.latent_diagnostics.config import FACTS, Config
from tokdyn.studies.latent_diagnostics.report import significant


def draw(session, cfg: Config, result: runner.Result) -> list:
    """``similarity.png``, ``decomposition.png``, ``probes.png``; returns their paths."""
    d, out = result.data, session.out
    return [plot_similarity(out, d["latents"]), plot_decomposition(out, d["dec"]), plot_probes(out, d["prb"])]


def plot_similarity(out: str, latents_of: dict, n: int = 40) -> Optional[str]:
    """Cosine similarity of the first seed's latents, first ``n`` instances x steps (ordered by step)."""
    if not latents_of:
        return None
    names = list(latents_of)
    fig = figures.figure((3.6 * len(names), 3.3))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        z = latents_of[name][0, :n]  # (n, L, D)
        flat = np.transpose(z, (1, 0, 2)).reshape(-1, z.shape[-1])  # step-major
        im = ax.imshow(np.asarray(geometry.cosine_matrix(jnp.asarray(flat))), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"{name}: {z.shape[1]} steps x {z.shape[0]} instances", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return figures.save(fig, os.path.join(out, "similarity.png"), dpi=110)


def plot_decomposition(out: str, rows: list) -> Optional[str]:
    """Left: accuracy per setting (min-max over seeds); right: the share of the block's gain each
    setting retains, with intervals, where that gain is significant."""
    if not rows:
        return None
    keys = list(dict.fromkeys((r["variant"], r["stage"]) for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig = figures.figure((2.0 + 1.8 * len(keys), 6.4))
    ax_acc, ax_share = fig.subplots(2, 1)
    width = 0.8 / len(settings)
    for j, se in enumerate(settings):
        for ax, kind in ((ax_acc, "accuracy"), (ax_share, "share")):
            xs, ys, lo, hi = [], [], [], []
            for i, k in enumerate(keys):
                r = [r for r in rows if (r["variant"], r["stage"]) == k and r["setting"] == se]
                if not r:
                    continue
                r = r[0]
                if kind == "accuracy":
                    y, a, b = r["accuracy"], r["accuracy_min_seed"], r["accuracy_max_seed"]
                elif significant(r) and r.get("no_op") not in (True, "True") and se not in ("full", "no_block"):
                    y, a, b = r["gain_retained"], r["gain_low"], r["gain_high"]
                else:
                    continue
                xs.append(i + (j - len(settings) / 2 + 0.5) * width)
                ys.append(y)
                lo.append(max(y - a, 0.0))
                hi.append(max(b - y, 0.0))
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], color=f"C{j}", label=se, capsize=1.5)
    for ax in (ax_acc, ax_share):
        ax.set_xticks(range(len(keys)), [f"{v}\n{s}" for v, s in keys], fontsize=7)
    ax_acc.set_ylabel("accuracy (min-max over seeds)")
    ax_acc.legend(fontsize=6, ncol=4)
    ax_share.axhline(1.0, color="k", lw=0.6)
    ax_share.axhline(0.0, color="k", lw=0.6)
    ax_share.set_ylabel("share of the block's gain retained")
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "decomposition.png"), dpi=110)


def plot_probes(out: str, rows: list) -> Optional[str]:
    """Held-out accuracy of the probe of every target per variant and features (mean over seeds),
    with the majority-class rate, into ``probes.png``; returns its path (None without rows)."""
    if not rows:
        return None
    keys = list(dict.fromkeys((r["variant"], r["features"]) for r in rows))
    fig = figures.figure((1.5 + 1.2 * len(keys), 3.4))
    ax = fig.subplots()
    width = 0.8 / len(FACTS)
    for j, t in enumerate(FACTS):
        acc = [
            np.mean([r["accuracy"] for r in rows if (r["variant"], r["features"]) == k and r["target"] == t])
            for k in keys
        ]
        ch = [next(r["chance"] for r in rows if (r["variant"], r["features"]) == k and r["target"] == t) for k in keys]
        x = np.arange(len(keys)) + (j - len(FACTS) / 2 + 0.5) * width
        ax.bar(x, acc, width, color=f"C{j}", label=t)
        ax.scatter(x, ch, color="k", marker="_", s=60, zorder=3)
    ax.set_xticks(range(len(keys)), [f"{v}\n{f}" for v, f in keys], fontsize=7)
    ax.set_ylabel("held-out probe accuracy (bars); chance (dashes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "probes.png"), dpi=110)
