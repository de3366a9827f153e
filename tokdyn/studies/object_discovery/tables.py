"""The scenes study's tables and text: the rows of ``results.csv`` (:func:`rows_of`) and
``summary.md`` (:func:`summary`)."""

from __future__ import annotations

import jax
import numpy as np

from tokdyn import io
from tokdyn.studies.object_discovery.config import Config


def rows_of(cfg: Config, name: str, res: dict) -> list[dict]:
    """The ``results.csv`` rows (:data:`~tokdyn.studies.object_discovery.COLUMNS`) of method ``name``, one per seed, from its per-seed,
    per-scene scores ``res`` (means over the test scenes; ``failed`` when FG-ARI < ``fail_below``)."""
    rows = []
    for s in range(cfg.seeds):
        fg = float(np.mean(res["fg_ari"][s]))
        rows.append(
            dict(
                method=name,
                seed=s,
                fg_ari=fg,
                miou=float(np.mean(res["miou"][s])),
                collapsed=float(np.mean(res["collapsed"][s])),
                duplicates=float(np.mean(res["duplicates"][s])) if "duplicates" in res else float("nan"),
                unused=float(np.mean(res["unused"][s])) if "unused" in res else float("nan"),
                temperature=float(res.get("temperature", float("nan"))),
                position_scale=float(res.get("position_scale", float("nan"))),
                failed=int(fg < cfg.fail_below),
            )
        )
    return rows


GOAL_MEAN, GOAL_MIN, GOAL_MINUTES = 0.90, 0.80, 30  # the learned model's goal on the default scenes


def goal_met(fg_ari, seconds: float) -> bool:
    """Whether per-seed test FG-ARIs ``fg_ari`` trained in ``seconds`` meet the goal: a mean of at
    least :data:`GOAL_MEAN`, no seed below :data:`GOAL_MIN`, at most :data:`GOAL_MINUTES` minutes."""
    fg = np.asarray(fg_ari, float)
    return bool(fg.size and np.mean(fg) >= GOAL_MEAN and np.min(fg) >= GOAL_MIN and seconds <= 60 * GOAL_MINUTES)


def summary(cfg: Config, rows: list[dict], seconds: dict, curves: dict, knobs: dict | None = None) -> str:
    """The text of ``summary.md``.

    The table of every method (mean ± sd over seeds), the failed seeds, each learned model's
    validation FG-ARI along training and the seconds each part took.

    Args:
      cfg: the study's :class:`Config`.
      rows: ``results.csv``'s rows, one per method and seed.
      seconds: learned model -> its training seconds.
      curves: learned model -> its curve rows (:func:`~tokdyn.studies.object_discovery.train_learned`).
      knobs: with ``refinement`` among the methods, its chosen ``prior_log_scale`` and
        ``prior_strength``, said below the table; else None.

    Returns:
      The Markdown text.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if cfg.data:
        from tokdyn.datasets import multi_object

        source = multi_object.locate(cfg.data)[0].file
        title, scenes_text = (
            f"the scenes of {source}",
            f"{cfg.n_test} test scenes of {cfg.data} (its scenes with {cfg.min_objects}-{cfg.max_objects} visible "
            f"objects in file order, after {cfg.n_val} validation scenes), resized to {cfg.size} x {cfg.size}; ",
        )
    else:
        title, scenes_text = (
            "sprite scenes",
            f"{cfg.n_test} test scenes of {cfg.size} x {cfg.size}, {cfg.min_objects}-{cfg.max_objects} objects "
            f"({', '.join(cfg.shapes)}), {cfg.background} background; ",
        )
    lines = [
        f"# Scenes study: fixed token dynamics, k-means and a learned Slot Attention on {title}",
        "",
        scenes_text + f"K = {cfg.n_slots} tokens / slots; "
        f"{cfg.seeds} seeds per method. FG-ARI and matched mIoU are means over the test scenes, then mean "
        f"+- std over seeds; a seed fails when its FG-ARI is below {cfg.fail_below}.",
        "",
        "| method | temperature | position scale | FG-ARI | mIoU | collapsed scenes | duplicate slots | unused slots "
        "| failed seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        col = lambda k: np.asarray([x[k] for x in r], float)
        ms = lambda k, d=3: f"{np.mean(col(k)):.{d}f} +- {np.std(col(k)):.{d}f}" if np.all(np.isfinite(col(k))) else "-"
        t, ps = r[0]["temperature"], r[0]["position_scale"]
        g = lambda v: "-" if not np.isfinite(v) else f"{v:g}"
        lines.append(
            f"| {m} | {g(t)} | {g(ps)} | {ms('fg_ari')} | {ms('miou')} | "
            f"{ms('collapsed', 2)} | {ms('duplicates', 2)} | {ms('unused', 2)} | "
            f"{int(np.sum(col('failed')))} / {len(r)} |"
        )
    if knobs:
        lines += [
            "",
            f"refinement (no temperature): prior_log_scale s0 = {knobs['prior_log_scale']:g}, prior_strength "
            f"kappa = {knobs['prior_strength']:g} (EM steps), chosen on the validation split with the "
            "position scale.",
        ]
    for m, sec in seconds.items():
        fg = np.asarray([x["fg_ari"] for x in rows if x["method"] == m])
        trained = (
            f"**{m}**: {cfg.train_steps} steps x {cfg.seeds} seeds trained together in {sec / 60:.1f} min "
            f"on {jax.devices()[0].platform} ({io.environment().get('cpu_count', '?')} cores)"
        )
        if cfg.data:  # the goal is the sprite scenes'
            trained += f": mean FG-ARI {np.mean(fg):.3f}, lowest {np.min(fg):.3f}."
        else:
            trained += (
                f"; the goal (mean FG-ARI >= {GOAL_MEAN:.2f}, no seed below {GOAL_MIN:.2f}, within {GOAL_MINUTES} "
                f"min) is {'met' if goal_met(fg, sec) else 'not met'}: mean {np.mean(fg):.3f}, lowest "
                f"{np.min(fg):.3f}, {int(np.sum(fg >= GOAL_MEAN))} of {len(fg)} seeds >= {GOAL_MEAN:.2f}."
            )
        lines += ["", trained]
        c = [r for r in curves[m] if r["seed"] == 0]
        if c:
            pts = ", ".join(
                f"{r['step']}: {np.mean([x['val_fg_ari'] for x in curves[m] if x['step'] == r['step']]):.2f}"
                for r in c[:: max(1, len(c) // 8)]
            )
            lines.append(f"Validation FG-ARI (mean over seeds) by step: {pts}.")
    return "\n".join(lines)
