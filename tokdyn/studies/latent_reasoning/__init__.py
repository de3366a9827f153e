"""The latent-reasoning study: every training variant x seeds, trained to convergence, on the task
families; per-family accuracy against chance and the question-only optimum, paired tests.

``tokdyn study latent-reasoning --out DIR`` (:func:`main`, :class:`Config`) trains (or resumes)
every variant until its held-out accuracy has stopped improving (:class:`tokdyn.train.Patience`)
or its budget is spent, and writes ``accuracy.csv``, ``convergence.csv``, ``tests.csv``
(:func:`paired_tests`), ``curves/``, ``checkpoints/``, ``results/``, ``summary.md``,
``learning_curves.png`` and ``config.json``. A rerun resumes; ``max_minutes`` stops a run cleanly.
The study is a package, one concept a module: :mod:`~tokdyn.studies.latent_reasoning.config`
(:class:`Config`, :func:`training`), :mod:`~tokdyn.studies.latent_reasoning.trained` (training and
testing a variant, the directory), :mod:`~tokdyn.studies.latent_reasoning.source` (the directory as
the source of the analyses that read it: :data:`STORE`, this study's ``SPEC.store``), the files of
a variant :mod:`tokdyn.train.store`'s; this module holds the study's tables, figures and
:func:`main`, and re-exports every public name of its parts.

Each file, resuming and the findings: :doc:`/studies/latent-reasoning`.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import numpy as np

from tokdyn import stats
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.studies.latent_reasoning.config import (  # noqa: F401
    FAMILIES,
    FLOPS,
    MAX_ROOT_SEED,
    REFERENCES,
    SELECTION,
    STEP_SECONDS,
    STUDY,
    Config,
    forward_elements,
    training,
)
from tokdyn.studies.latent_reasoning.source import (  # noqa: F401
    STORE,
    Reasoners,
    ensure_trained,
    load_midway,
    load_variant,
    midway,
    open_source,
    source_error,
    variant_result,
    verify_source,
)
from tokdyn.studies.latent_reasoning.trained import (  # noqa: F401
    check_devices,
    convergence,
    curve_logger,
    devices,
    finished,
    open_study,
    record,
    record_fields,
    run_variant,
    splits,
    train_variants,
    write_tested,
)
from tokdyn.train.store import (  # noqa: F401
    TESTED,
    answers_digest,
    paths,
    read_answers,
    read_curve,
    read_result,
    write_result,
)
from tokdyn.models.latent import evaluation, tasks
from tokdyn.stats import figures


# ---------------------------------------------------------------------------------------------- tables


BASELINES = ("chance", "question_only", "question_only_test")


def baselines(cfg: Config, data: tasks.Splits) -> dict:
    """Per baseline of :data:`BASELINES`, its accuracy per family and overall (the mean over the
    families): the majority answer of each family, the exact question-only optimum
    (:func:`tokdyn.models.latent.tasks.question_only_optimum`) and the optimal question-only rule's
    accuracy on the test set (the bar ``no_image`` is measured against, free of sampling noise)."""
    families = cfg.training.task.families
    rule = tasks.question_only_answers(cfg.training.task, data.test) == np.asarray(data.test.answer)
    fam = np.asarray(data.test.family)
    out = {
        "chance": evaluation.majority_baseline(data.train, data.test),
        "question_only": tasks.question_only_optimum(cfg.training.task),
        "question_only_test": {f: float(rule[fam == tasks.FAMILIES.index(f)].mean()) for f in families},
    }
    for d in out.values():
        d["all"] = float(np.mean([d[f] for f in families]))
    return out


def collect(out: str, names: Sequence[str], base: dict) -> tuple[dict, dict]:
    """The columns of ``accuracy.csv`` (variant x family x seed, with the :func:`baselines`) and
    ``convergence.csv`` (variant x seed) of the finished variants ``names`` in the study directory
    ``out``."""
    acc_cols = {k: [] for k in ("variant", "family", "seed", "accuracy") + BASELINES + ("converged",)}
    conv_cols = {
        k: [] for k in ("variant", "seed", "steps", "budget", "best_step", "best_val", "tested_step", "converged")
    }
    for name in names:
        path = paths(out, name)["result"]
        if not os.path.exists(path):
            continue
        res = read_result(path)
        converged = [bool(c) for c in res["converged"]]
        for s, c in enumerate(converged):
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
                    *((b, base[b][fam]) for b in BASELINES),
                    ("converged", converged[s]),
                ):
                    acc_cols[k].append(v)
    return acc_cols, conv_cols


def paired_tests(out: str, names: Sequence[str], test: tasks.Instance, families: Sequence[str]) -> dict:
    """The columns of ``tests.csv``: every finished variant against each reference in :data:`REFERENCES`.

    Per family and overall: a paired t-test over the test instances of the per-instance accuracy
    (the mean over seeds of answering right), Cohen's d_z, Holm-corrected over every test of the
    table. A pair in which a variant did not converge (every seed) is listed with NaN statistics:
    it is not compared as if it had.

    Args:
      out: the study directory holding the variants' results and answers.
      names: the variants to compare (those not finished are left out).
      test: the N test instances the variants answered.
      families: the task families reported one by one (besides ``"all"``).

    Returns:
      Columns ``variant``, ``against``, ``family``, ``n``, ``mean_diff``, ``t``, ``p``,
      ``p_holm``, ``d`` and ``tested``.
    """
    correct, converged = {}, {}
    answer = np.asarray(test.answer)
    for name in names:
        p = paths(out, name)
        if os.path.exists(p["result"]) and os.path.exists(p["answers"]):
            correct[name] = (read_answers(out, name) == answer[None]).mean(0)  # (N,) mean over seeds
            converged[name] = bool(np.all(read_result(p["result"])["converged"]))
    fam = np.asarray(test.family)
    cols = {k: [] for k in ("variant", "against", "family", "n", "mean_diff", "t", "p", "p_holm", "d", "tested")}
    for ref in REFERENCES:
        if ref not in correct:
            continue
        for name in correct:
            if name == ref:
                continue
            tested = converged[name] and converged[ref]
            for f in list(families) + ["all"]:
                sel = np.ones(fam.shape, bool) if f == "all" else fam == tasks.FAMILIES.index(f)
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


def summary_table(acc: dict, conv: dict, families: Sequence[str]) -> str:
    """Mean (min-max over seeds) accuracy per variant and family, with the seeds that converged, as
    Markdown; the baselines below (majority answer, question-only optimum and its rule on this
    test set)."""
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
    for label, key in (
        ("chance (majority answer)", "chance"),
        ("question-only optimum", "question_only"),
        ("question-only rule on this test set", "question_only_test"),
    ):
        ref = np.asarray(acc[key], float)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{ref[f == fam][0]:.3f}" if np.any(f == fam) else "" for fam in fams)
            + " | | |"
        )
    return "\n".join(lines)


def plot_curves(out: str, names: Sequence[str], families: Sequence[str]) -> Optional[str]:
    """``learning_curves.png``: held-out accuracy per family over steps, one colour per variant,
    every seed a thin line and their mean a thick one."""
    curves = {}
    for name in names:
        try:
            curves[name] = read_curve(paths(out, name)["curve"])
        except (ValueError, IndexError):  # an unfinished variant's damaged curve: its rerun sets it aside
            continue
    curves = {k: c for k, c in curves.items() if c and "val_all" in c and "seed" in c and "step" in c}
    if not curves:
        return None
    panels = list(families) + ["all"]
    fig = figures.figure((3.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), sharey=True)
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


# ---------------------------------------------------------------------------------------------- the study


def check(session: runner.Session, cfg: Config) -> None:
    """The configuration's checks, the devices it asks for, and (``--no-train``) that ``out``
    holds a study to report on."""
    cfg.validate()
    check_devices(cfg)
    out = session.out
    if not cfg.train and (session.fresh or not os.path.isdir(out) or study_dir.read_stamp(out) is None):
        raise study_dir.Refused(
            f"out={out!r} holds no latent-reasoning study"
            f"{' (and --fresh would empty it)' if session.fresh else ''}: nothing to report without "
            "training (drop --no-train)"
        )


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Train (or resume) every variant, then the tables of those finished: ``accuracy.csv``,
    ``convergence.csv``, ``tests.csv``; the value is whether every variant is finished."""
    out = session.out
    deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
    data = splits(cfg)
    families = cfg.training.task.families
    base = baselines(cfg, data)
    if cfg.train:
        train_variants(cfg, out, cfg.variants, quiet=session.quiet, deadline=deadline, data=data)
    names = [name for name in cfg.variants if finished(cfg, out, name)]
    done = len(names) == len(cfg.variants)
    acc, conv = collect(out, names, base)
    tables = {"accuracy.csv": acc, "convergence.csv": conv, "tests.csv": paired_tests(out, names, data.test, families)}
    return runner.Result(
        tables,
        data=dict(acc=acc, conv=conv, families=families, out=out, done=done),
        record=dict(record_fields(out, cfg), finished=done),
        value=done,
    )


SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    check=check,
    figures=lambda session, cfg, r: [plot_curves(session.out, cfg.variants, r.data["families"])],
    summary=lambda cfg, r: (
        summary_table(r.data["acc"], r.data["conv"], r.data["families"])
        if r.data["acc"]["variant"]
        else "(no variant has finished yet)"
    ),
    printed=lambda cfg, r, text: (
        text + ("" if r.data["done"] else f"\nnot finished: run the same command again to resume ({r.data['out']})")
    ),
    outputs=("accuracy.csv", "convergence.csv", "tests.csv"),
    figure_files=("learning_curves.png",),
    selection=SELECTION,
    store=STORE,
)


main = runner.entry(SPEC, __name__, returns="True when every variant is finished.")
