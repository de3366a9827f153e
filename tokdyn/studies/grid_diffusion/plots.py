"""The grid-diffusion study's figures: the noise kernels (:func:`plot_kernels`), a grid model's
reverse process (:func:`plot_denoising`) and the learning curves (:func:`plot_curves`)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import diffusion
from tokdyn.models import sequence
from tokdyn.models.vtae import corpus
from tokdyn.stats import figures
from tokdyn.studies.grid_diffusion.config import SCOPES, Config


PALETTE = np.array(
    [
        [0.85, 0.2, 0.15],
        [0.15, 0.55, 0.25],
        [0.2, 0.35, 0.85],
        [0.95, 0.8, 0.1],
        [0.55, 0.25, 0.65],
        [0.1, 0.75, 0.8],
        [0.95, 0.5, 0.1],
        [0.5, 0.3, 0.1],
    ]
)
MASK_COLOUR = np.array([0.6, 0.6, 0.6])


def _palette(c: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    extra = rng.uniform(0.1, 0.9, size=(max(0, c - len(PALETTE)), 3))
    return np.concatenate([PALETTE, extra])[:c]


def plot_kernels(out: str, cfg: Config) -> str:
    """P(x_t = x_0) over t: uniform (cosine), absorbing, and the published kernel (stay = abar_t,
    the rest on the other colours); dots: the share over 10^5 Gumbel-max draws."""
    C, T = cfg.colours, cfg.T
    fig = figures.figure((6.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ts = np.arange(T + 1)
    key = jax.random.key(cfg.root_seed)
    for kernel, colour in (("uniform", "C0"), ("absorbing", "C1")):
        proc = diffusion.discrete(kernel, C, T=T)
        keep = np.asarray(proc.alpha_bar) + (1 - np.asarray(proc.alpha_bar)) * (1.0 / C if kernel == "uniform" else 0)
        ax.plot(ts, keep, color=colour, label=f"{kernel} (D3PM): P(x_t = x_0)")
        if kernel == "absorbing":
            ax.plot(ts, 1 - np.asarray(proc.alpha_bar), color=colour, ls=":", label="absorbing: P(x_t = mask)")
        marks = np.linspace(1, T, 8).astype(int)
        x0 = jnp.zeros((100_000,), jnp.int32)
        mc = [float(jnp.mean(diffusion.q_sample_discrete(jax.random.fold_in(key, t), proc, x0, t) == 0)) for t in marks]
        ax.plot(marks, mc, "o", color=colour, ms=4)
    abar = np.asarray(diffusion.discrete("uniform", C, T=T).alpha_bar)
    ax.plot(ts, abar, color="C3", ls="--", label="published kernel (stay = abar_t, rest on other colours)")
    ax.axhline(1.0 / C, color="0.5", lw=0.8)
    ax.text(T, 1.0 / C, " 1/C", va="center", fontsize=8)
    ax.set_xlabel("t")
    ax.set_ylabel("probability")
    ax.set_title(f"Marginal of the original colour, C = {C}, T = {T}")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "kernels.png"), dpi=110)


def _reverse_trajectory(key, mcfg: sequence.Config, params, times) -> dict:
    """One sample's states at ``times`` along the reverse process (grid models)."""
    proc = mcfg.process()
    fn = jax.jit(lambda x, t: sequence.apply(params, mcfg, x, jnp.full((1,), t, jnp.int32)))
    keep = {}
    if mcfg.continuous:
        x = jax.random.normal(jax.random.fold_in(key, 0), (1, *mcfg.sample_shape, mcfg.colours))
        step = jax.jit(lambda k, x, t: diffusion.ddpm_step(k, proc, x, t, fn(x, t), 1.0))
    else:
        pi = diffusion.stationary(proc)
        x = jax.random.categorical(
            jax.random.fold_in(key, 0), jnp.log(jnp.maximum(pi, 1e-30)), shape=(1, *mcfg.sample_shape)
        ).astype(jnp.int32)

        def step_d(k, x, t):
            if t == 1:
                return jax.random.categorical(k, fn(x, t)).astype(jnp.int32)
            logits = diffusion.posterior_logits(proc, jax.nn.softmax(fn(x, t), -1), x, t)
            return jax.random.categorical(k, logits).astype(jnp.int32)

        step = step_d
    for t in range(mcfg.T, 0, -1):
        if t in times:
            keep[t] = np.asarray(x[0])
        x = step(jax.random.fold_in(key, t), x, t)
    keep[0] = np.asarray(x[0])
    return keep


def plot_denoising(out: str, cfg: Config, results: dict, codes) -> str | None:
    """Draw ``denoising.png``: forward noising and reverse trajectories of the grid models.

    Top rows: one token's grid noised to several t by each grid kernel; bottom rows: the first
    grid of a sequence along each grid model's reverse trajectory (seed 0).

    Args:
      out: the directory of the figure.
      cfg: the study's :class:`Config`.
      results: (scope, model) -> :func:`~tokdyn.studies.grid_diffusion.train_and_sample`'s dict.
      codes: (V, P) int, each token's grid of P colour cells.

    Returns:
      The figure's path, or None without a grid model in ``results``.
    """
    grid_models = [m for m in ("grid_ddpm", "grid_d3pm_uniform", "grid_d3pm_absorbing") if ("sequence", m) in results]
    if not grid_models:
        return None
    N, C, T = cfg.grid, cfg.colours, cfg.T
    pal = np.concatenate([_palette(C), MASK_COLOUR[None]])
    times = sorted({0, max(1, T // 10), T // 4, T // 2, (3 * T) // 4, T})
    x0 = jnp.asarray(codes[corpus.grammar_vocab()[0].index("cat")])
    key = jax.random.key(cfg.root_seed + 11)
    rows = []
    for m in grid_models:
        mcfg = cfg.model(m, "sequence")
        proc = mcfg.process()
        noised = []
        for t in times:
            k = jax.random.fold_in(key, t)
            if mcfg.continuous:
                xt = np.asarray(diffusion.q_sample(k, proc, sequence.grid_signal(x0, C), t)[0])
                img = np.clip((xt + 1) / 2, 0, 1) @ _palette(C)  # channel weights -> colour
                noised.append(np.clip(img, 0, 1).reshape(N, N, 3))
            else:
                noised.append(pal[np.asarray(diffusion.q_sample_discrete(k, proc, x0, t))].reshape(N, N, 3))
        rows.append((f"{m}: q(x_t | x_0)", noised))
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), results[("sequence", m)]["params"])
        traj = _reverse_trajectory(key, mcfg, params, set(times))
        imgs = []
        for t in times:
            g = traj[t][0]  # the first grid of the sequence
            if mcfg.continuous:
                imgs.append(np.clip(np.clip((g + 1) / 2, 0, 1) @ _palette(C), 0, 1).reshape(N, N, 3))
            else:
                imgs.append(pal[g].reshape(N, N, 3))
        rows.append((f"{m}: reverse", imgs))
    fig = figures.figure((1.3 * len(times) + 1.5, 1.35 * len(rows)))
    for i, (label, imgs) in enumerate(rows):
        for j, img in enumerate(imgs):
            ax = fig.add_subplot(len(rows), len(times), i * len(times) + j + 1)
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t = {times[j]}", fontsize=8)
            if j == 0:
                ax.set_ylabel(label.replace(": ", "\n"), fontsize=6, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.22, right=0.99, top=0.93, bottom=0.02, hspace=0.25, wspace=0.1)
    return figures.save(fig, os.path.join(out, "denoising.png"), dpi=110)


def plot_curves(out: str, cfg: Config, results: dict) -> str:
    """Training loss over steps of every model and seed, relative to its first logged interval, one
    panel per scope, into ``learning_curves.png``; returns its path."""
    fig = figures.figure((9, 3.4))
    for i, scope in enumerate(SCOPES):
        ax = fig.add_subplot(1, 2, i + 1)
        for (sc, name), r in results.items():
            if sc != scope:
                continue
            curves = np.asarray(r["curves"]["loss"])  # (S, n_logs)
            x = (np.arange(curves.shape[1]) + 1) * cfg.model(name, scope).train.steps_per_call
            base = curves[:, :1]
            lines = ax.plot(x, (curves / base).T, lw=0.8, alpha=0.6)
            for ln in lines[1:]:
                ln.set_label(None)
            lines[0].set_label(name)
            for ln in lines:
                ln.set_color(lines[0].get_color())
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss / first interval's")
        ax.set_title(f"{scope} models")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "learning_curves.png"), dpi=110)
