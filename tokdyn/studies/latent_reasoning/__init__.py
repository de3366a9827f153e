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

from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.experiment import variants
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
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import evaluation


# ---------------------------------------------------------------------------------------------- tables


BASELINES = ("chance", "question_only", "question_only_test")


def baselines(cfg: Config, data: tasks.Splits) -> dict:
    """Per baseline of :data:`BASELINES`, its accuracy per family and overall (the mean over the
    families): the majority answer of each family, the exact question-only optimum
    (:func:`tokdyn.data.grid_tasks.question_only_optimum`) and the optimal question-only rule's
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
    ``out`` (:func:`tokdyn.experiment.variants.collect`)."""
    return variants.collect(out, names, {b: base[b] for b in BASELINES})


def paired_tests(out: str, names: Sequence[str], test: tasks.Instance, families: Sequence[str]) -> dict:
    """The columns of ``tests.csv``: every finished variant against each reference in :data:`REFERENCES`, per
    family and overall, on the N test instances ``test`` (:func:`tokdyn.experiment.variants.paired_tests`: a
    paired t-test of the per-instance accuracy over seeds, Cohen's d_z, Holm's p; NaN statistics where a variant
    did not converge)."""
    return variants.paired_tests(out, names, test.answer, test.family, families, REFERENCES, tasks.FAMILIES)


BASELINE_LABELS = {
    "chance": "chance (majority answer)",
    "question_only": "question-only optimum",
    "question_only_test": "question-only rule on this test set",
}


def summary_table(acc: dict, conv: dict, families: Sequence[str]) -> str:
    """Mean (min-max over seeds) accuracy per variant and family, with the seeds that converged, as
    Markdown; the baselines below (majority answer, question-only optimum and its rule on this
    test set)."""
    return variants.summary_table(acc, conv, families, BASELINE_LABELS)


def plot_curves(out: str, names: Sequence[str], families: Sequence[str]) -> Optional[str]:
    """``learning_curves.png``: held-out accuracy per family over steps, one colour per variant,
    every seed a thin line and their mean a thick one (:func:`tokdyn.experiment.variants.plot_curves`)."""
    return variants.plot_curves(out, names, families)


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
