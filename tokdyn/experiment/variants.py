"""Trained variants compared, as the studies that train a model every way report them: whether each seed has
converged, judged from its learning curve (:func:`converged`, :func:`curve_logger`), the tables per variant x
family x seed with their baselines (:func:`collect`), every variant against each reference per family
(:func:`paired_tests`), the summary's table (:func:`summary_table`) and the learning curves
(:func:`plot_curves`); a finished training's test committed to the store (:func:`tested`, :func:`write_tested`). Over a store of trained models (:mod:`tokdyn.train.store`): the variants' names are its
models' names. Host functions over NumPy."""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from tokdyn import io, stats, train
from tokdyn.stats import figures
from tokdyn.train import store


def converged(rule: train.Patience, budget: int, seeds: int, curve: dict, *, after: int = 0) -> dict:
    """Per seed, from the recorded ``curve`` (columns ``step``, ``seed``, ``val_all``, ``loss``): the step and
    value of the best held-out overall accuracy (``best_step``, ``best``) and whether the stop ``rule`` says it
    has converged (its patience window seen at two evaluations at least, and lying after step ``after``: a
    curriculum's last stage), with ``steps`` the last step recorded.

    Args:
      rule: the stop rule (:class:`tokdyn.train.Patience`).
      budget: the step budget.
      seeds: the seeds (rows of the curve with ``seed`` 0..seeds-1).
      curve: the curve's columns.
      after: the step the patience window may start at the earliest.

    Returns:
      ``{"best_step": (seeds,), "best": (seeds,), "converged": (seeds,) bool, "steps": int}``.
    """
    wait, _ = rule.windows(budget)
    ids = np.asarray(curve.get("seed", []), int)
    out = {
        "best_step": np.full(seeds, -1),
        "best": np.full(seeds, np.nan),
        "converged": np.zeros(seeds, bool),
        "steps": 0,
    }
    for s in range(seeds):
        sel = ids == s
        steps, val = np.asarray(curve["step"], np.int64)[sel], np.asarray(curve["val_all"], np.float64)[sel]
        if steps.size == 0:
            continue
        loss = np.asarray(curve["loss"], np.float64)[sel] if "loss" in curve else None
        d = rule.decide(steps, val, budget, loss)
        now = int(steps[-1])
        out["steps"] = now
        out["best_step"][s], out["best"][s] = int(d.best_step), float(d.best)
        since = int(np.sum(steps > int(d.improved_step)))  # evaluations since the last improvement
        out["converged"][s] = bool(d.stop and since >= 2 and now - wait >= after)
    return out


def curve_logger(path: str, rows: dict, seeds: int, steps_per_call: int, judge: Callable[[dict], dict]):
    """The ``stop(step, state, curves)`` of :class:`tokdyn.train.Evaluation` that appends each call's logs and
    held-out scores to the curve ``rows`` (dropping rows a resume redoes), writes them to ``path`` and stops
    once every seed has converged (``judge(rows)["converged"]``, e.g. :func:`converged`). A column a later
    call brings (a curriculum stage that logs more) is NaN on the rows before it, one a call lacks is NaN
    on that call's rows: every column has a value on every row."""

    def stop(step, state, curves) -> bool:
        logs = {k: v[:, step // steps_per_call - 1] for k, v in curves.items()}  # this call's logs and scores
        keep = [i for i, s in enumerate(rows.get("step", [])) if s < step]  # drop rows a resume redoes
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        before = len(rows.get("step", []))
        for s in range(seeds):
            cols = [("step", step), ("seed", s)]
            cols += [(k, float(v[s])) for k, v in sorted(logs.items()) if not k.startswith("val_")]
            cols += [(k, float(v[s])) for k, v in logs.items() if k.startswith("val_")]
            for k, v in cols:
                rows.setdefault(k, [np.nan] * before).append(v)
        for k in rows:  # a column this call did not log
            rows[k] += [np.nan] * (before + seeds - len(rows[k]))
        io.write_csv(path, rows)
        return bool(np.all(judge(rows)["converged"]))

    return stop


def collect(out: str, names: Sequence[str], base: Mapping[str, Mapping[str, float]]) -> tuple[dict, dict]:
    """The columns of ``accuracy.csv`` (variant x family x seed, a column per baseline of ``base``: ``{baseline:
    {family: accuracy}}``) and ``convergence.csv`` (variant x seed) of the finished variants ``names`` of the
    store ``out`` (their results' ``accuracy`` per family, ``caption_exact`` left out)."""
    acc_cols = {k: [] for k in ("variant", "family", "seed", "accuracy", *base, "converged")}
    conv_cols = {
        k: [] for k in ("variant", "seed", "steps", "budget", "best_step", "best_val", "tested_step", "converged")
    }
    for name in names:
        path = store.paths(out, name)["result"]
        if not os.path.exists(path):
            continue
        res = store.read_result(path)
        flags = [bool(c) for c in res["converged"]]
        for s, c in enumerate(flags):
            for k, v in (
                ("variant", name),
                ("seed", s),
                ("steps", res["steps"]),
                ("budget", res["budget"]),
                ("best_step", int(res["best_step"][s])),
                ("best_val", float(res["best_val"][s])),
                ("tested_step", int(res["tested_step"][s])),
                ("converged", c),
            ):
                conv_cols[k].append(v)
        for fam in [f for f in res["accuracy"] if f != "caption_exact"]:
            for s, a in enumerate(res["accuracy"][fam]):
                for k, v in (
                    ("variant", name),
                    ("family", fam),
                    ("seed", s),
                    ("accuracy", float(a)),
                    *((b, base[b][fam]) for b in base),
                    ("converged", flags[s]),
                ):
                    acc_cols[k].append(v)
    return acc_cols, conv_cols


def paired_tests(
    out: str,
    names: Sequence[str],
    truth,
    family,
    families: Sequence[str],
    references: Sequence[str],
    family_names: Sequence[str],
) -> dict:
    """The columns of ``tests.csv``: every finished variant of the store ``out`` against each of
    ``references``.

    Per family and overall: a paired t-test over the test instances of the per-instance accuracy (the mean over
    seeds of answering right), Cohen's d_z, Holm-corrected over every test of the table. A pair in which a
    variant did not converge (every seed) is listed with NaN statistics: it is not compared as if it had.

    Args:
      out: the store holding the variants' results and answers ((seeds, N) each).
      names: the variants to compare (those not finished are left out).
      truth: (N,) the right answers of the test instances.
      family: (N,) each instance's family index in ``family_names``.
      families: the families reported one by one (besides ``"all"``).
      references: the variants every other is compared with.
      family_names: the names of the family indices.

    Returns:
      Columns ``variant``, ``against``, ``family``, ``n``, ``mean_diff``, ``t``, ``p``, ``p_holm``, ``d`` and
      ``tested``.
    """
    correct, done = {}, {}
    truth = np.asarray(truth)
    for name in names:
        p = store.paths(out, name)
        if os.path.exists(p["result"]) and os.path.exists(p["answers"]):
            correct[name] = (store.read_answers(out, name) == truth[None]).mean(0)  # (N,) mean over seeds
            done[name] = bool(np.all(store.read_result(p["result"])["converged"]))
    fam = np.asarray(family)
    cols = {k: [] for k in ("variant", "against", "family", "n", "mean_diff", "t", "p", "p_holm", "d", "tested")}
    for ref in references:
        if ref not in correct:
            continue
        for name in correct:
            if name == ref:
                continue
            tested = done[name] and done[ref]
            for f in list(families) + ["all"]:
                sel = np.ones(fam.shape, bool) if f == "all" else fam == list(family_names).index(f)
                a, b = correct[name][sel], correct[ref][sel]
                t = stats.paired_ttest(a, b) if tested else None
                for k, v in (
                    ("variant", name),
                    ("against", ref),
                    ("family", f),
                    ("n", int(sel.sum())),
                    ("mean_diff", float(np.mean(a - b))),
                    ("t", float(t.statistic) if t else np.nan),
                    ("p", float(t.pvalue) if t else np.nan),
                    ("d", float(stats.cohens_d(a, b)) if t else np.nan),
                    ("tested", tested),
                ):
                    cols[k].append(v)
    cols["p_holm"] = list(stats.holm(np.asarray(cols["p"], float))) if cols["p"] else []
    return cols


def summary_table(acc: dict, conv: dict, families: Sequence[str], baselines: Mapping[str, str]) -> str:
    """Mean (min-max over seeds) accuracy per variant and family, with the seeds that converged, as Markdown;
    below, a row per baseline of ``baselines`` (column of ``acc`` -> its label)."""
    fams = list(families) + ["all"]
    v, f = np.asarray(acc["variant"]), np.asarray(acc["family"])
    a = np.asarray(acc["accuracy"], float)
    lines = ["| variant | " + " | ".join(fams) + " | converged seeds | steps |", "|---" * (len(fams) + 3) + "|"]
    for name in dict.fromkeys(v.tolist()):
        cells = []
        for fam in fams:
            x = a[(v == name) & (f == fam)]
            cells.append(f"{x.mean():.3f} ({x.min():.2f}-{x.max():.2f})" if len(x) else "")
        c = np.asarray(conv["converged"])[np.asarray(conv["variant"]) == name]
        steps = np.asarray(conv["steps"])[np.asarray(conv["variant"]) == name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {int(c.sum())}/{len(c)} | {int(steps[0])} |")
    for key, label in baselines.items():
        ref = np.asarray(acc[key], float)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{ref[f == fam][0]:.3f}" if np.any(f == fam) else "" for fam in fams)
            + " | | |"
        )
    return "\n".join(lines)


def plot_curves(out: str, names: Sequence[str], families: Sequence[str]) -> Optional[str]:
    """``learning_curves.png`` in ``out``: held-out accuracy per family over steps, one colour per variant,
    every seed a thin line and their mean a thick one; None when no variant has a curve yet."""
    curves = {}
    for name in names:
        try:
            curves[name] = store.read_curve(store.paths(out, name)["curve"])
        except (ValueError, IndexError):  # an unfinished variant's damaged curve: its rerun sets it aside
            continue
    curves = {k: c for k, c in curves.items() if c and "val_all" in c and "seed" in c and "step" in c}
    if not curves:
        return None
    panels = list(families) + ["all"]
    fig = figures.figure((3.2 * len(panels), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))  # one panel: one Axes, not a list
    for i, (name, c) in enumerate(curves.items()):
        seeds, steps = np.asarray(c["seed"], int), np.asarray(c["step"])
        for ax, fam in zip(axes, panels):
            y = np.asarray(c[f"val_{fam}"])
            for s in np.unique(seeds):
                ax.plot(steps[seeds == s], y[seeds == s], color=f"C{i % 10}", lw=0.6, alpha=0.5)
            grid = np.unique(steps)
            ax.plot(
                grid,
                [y[steps == t].mean() for t in grid],
                color=f"C{i % 10}",
                lw=1.8,
                label=name if fam == panels[0] else None,
            )
    for ax, fam in zip(axes, panels):
        ax.set_title(fam, fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy")
    fig.legend(loc="lower center", ncol=min(len(curves), 9), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.25, top=0.9, wspace=0.08)
    return figures.save(fig, os.path.join(out, "learning_curves.png"), dpi=110)


def tested(res: train.Result, which: str, seeds: int):
    """``(state, step)`` of a finished training ``res`` that answers the test questions: its best state and the
    step of each seed's best (``which="best"``) or its last state and step (``"final"``); ``ValueError`` naming
    ``which`` for another value."""
    if which not in ("best", "final"):
        raise ValueError(f"which must be 'best' or 'final', got {which!r}")
    if which == "best":
        return res.best_state, res.best_step
    return res.state, np.full(seeds, int(np.asarray(res.state.step)[0]))


def write_tested(
    out: str,
    name: str,
    res: train.Result,
    rows: dict,
    conv: dict,
    answers,
    accuracy: dict,
    *,
    which: str,
    budget: int,
    extra: Optional[dict] = None,
) -> None:
    """Commit variant ``name``'s test to the store ``out``: its curve ``rows``, its ``answers`` (with a copy of
    the curve and the steps trained, ``conv["steps"]``) and its result (:func:`converged`'s ``conv``, the
    ``accuracy`` per family, the tested state's steps, the non-finite steps, the digests, and ``extra``'s
    entries: what the caller commits with them), the result last: it commits the others
    (:mod:`tokdyn.train.store`)."""
    p = store.paths(out, name)
    _, tested_step = tested(res, which, len(conv["converged"]))
    io.write_csv(p["curve"], rows)  # the rows of exactly the steps trained (a resume may have dropped some)
    with open(p["curve"], "rb") as f:
        curve = np.frombuffer(f.read(), np.uint8)
    io.save_npz(p["answers"], answers=answers, curve_csv=curve, steps=conv["steps"])
    store.write_result(
        p["result"],
        {
            "variant": name,
            "steps": conv["steps"],
            "budget": budget,
            "accuracy": accuracy,
            "best_step": conv["best_step"],
            "best_val": conv["best"],
            "tested": which,
            "tested_step": tested_step,
            "converged": conv["converged"],
            "nan_step": np.asarray(res.state.nan_step),
            "skipped_steps": np.asarray(res.state.skipped),
            "answers_sha256": store.answers_digest(answers),
            **store.checkpoint_record(p["checkpoint"]),
            **(extra or {}),
        },
    )


__all__ = [
    "collect",
    "converged",
    "curve_logger",
    "paired_tests",
    "plot_curves",
    "summary_table",
    "tested",
    "write_tested",
]
