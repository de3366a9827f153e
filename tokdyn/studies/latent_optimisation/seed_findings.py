"""The latent-optimisation study's finding 5 (confidence-driven latent optimisation,
:func:`optimisation_finding`), judged from its tables (:func:`findings`)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tokdyn.experiment import findings as experiment_findings
from tokdyn.experiment.findings import Finding
from tokdyn.studies.latent_optimisation.config import STUDY

GAIN_EXCLUDED = 0.01  # refuted when a gain of this much accuracy is excluded
DMLR = "es_entropy_best"  # the paper's full method (REINFORCE on its reward, best-patch injection)


def optimisation_claim() -> Finding:
    """Finding 5 as a claim, before any table is read: its statement, origin and rule."""
    f = Finding(
        "5",
        "Confidence-driven latent optimisation (DMLR)",
        "Optimising the latents at inference to make the model more confident (REINFORCE on the top-k-entropy "
        "reward with best-patch injection) improves its accuracy.",
        "arXiv 2512.12623 (DMLR)",
        f"Per variant, the change in accuracy over all families (after − before), a 95% interval over seeds "
        f"(at least {experiment_findings.MIN_SEEDS}): improves (reproduced) when the interval lies above 0, does not (refuted) "
        f"when it lies below +{GAIN_EXCLUDED:g} (a gain of {GAIN_EXCLUDED:g} or more is excluded), open "
        f"otherwise. The verdict is the paper's full method's ({DMLR}), refuted when one variant refutes it, "
        f"reproduced when every variant reproduces it; the other methods are listed with the same rule. The "
        f"paired p-value over instances (Holm) is the study's.",
        study=STUDY,
    )
    return f


def optimisation_finding(table, tests=None) -> Finding:
    """Finding 5 from the study's ``optimiser.csv`` (and ``optimiser_tests.csv`` for the
    Holm-corrected p-values shown beside): per variant and method, the change in accuracy over all
    families (after − before), a 95% interval over seeds (:func:`method_row`); the verdict rests on
    the paper's full method (:data:`DMLR`)."""
    f = optimisation_claim()
    fam, method, variant = (
        experiment_findings.strings(table, "family"),
        experiment_findings.strings(table, "method"),
        experiment_findings.strings(table, "variant"),
    )
    sel_all = fam == "all"
    if not sel_all.any():
        return experiment_findings.missing(f, "no family='all' rows in optimiser.csv")
    p_holm = {}
    if tests:
        tf, tm = experiment_findings.strings(tests, "family"), experiment_findings.strings(tests, "method")
        tv, tp = experiment_findings.strings(tests, "variant"), experiment_findings.numbers(tests, "p_holm")
        p_holm = {(tv[i], tm[i]): tp[i] for i in np.flatnonzero(tf == "all")}
    rows = []
    for name in dict.fromkeys(variant[sel_all].tolist()):
        for m in dict.fromkeys(method[sel_all & (variant == name)].tolist()):
            if m != "before":
                rows.append(method_row(table, sel_all & (variant == name) & (method == m), name, m, p_holm))
    full = [r[-1] for r in rows if r[1] == DMLR]
    return dataclasses.replace(
        f,
        header=(
            "variant",
            "method",
            "accuracy before → after",
            "change [95% over seeds]",
            "paired p (Holm)",
            "seeds",
            "verdict",
        ),
        rows=rows,
        verdict=experiment_findings.aggregate(full) if full else "open",
        basis="; ".join(f"{r[0]} {r[3]}" for r in rows if r[1] == DMLR) or f"no {DMLR} rows in optimiser.csv",
    )


def method_row(table, sel, name: str, m: str, p_holm: dict) -> list:
    """Finding 5's row of variant ``name`` and method ``m`` (``sel``: its rows of family
    ``"all"``): the accuracy before and after, the change with its 95% interval over seeds, the
    Holm-corrected paired p (``p_holm``: (variant, method) -> p), the seeds and the verdict (last;
    ``"control"`` for ``random``)."""
    change = experiment_findings.per_seed(table, sel, "accuracy") - experiment_findings.per_seed(
        table, sel, "accuracy_before"
    )
    mean, low, high, n = experiment_findings.seed_interval(
        change, experiment_findings.difference_bounds(experiment_findings.RATE)
    )
    if n < experiment_findings.MIN_SEEDS or not np.isfinite(low):
        v = "open"
    else:
        v = "reproduced" if low > 0 else "refuted" if high < GAIN_EXCLUDED else "open"
    if m == "random":
        v = "control"
    before, after = (np.nanmean(experiment_findings.numbers(table, k)[sel]) for k in ("accuracy_before", "accuracy"))
    return [
        name,
        m,
        f"{experiment_findings.number(before)} → {experiment_findings.number(after)}",
        experiment_findings.interval(mean, low, high),
        experiment_findings.number(p_holm.get((name, m), float("nan")), 3),
        str(n),
        v,
    ]


def findings(out: str) -> list[Finding]:
    """Finding 5 (:func:`optimisation_finding`) from ``optimiser.csv`` and ``optimiser_tests.csv`` of
    the study directory ``out``; open when the tests' table is there but fails its verification
    (the p-values beside the verdict would come from an unverified table)."""
    tests, tests_why = experiment_findings.read(out, "optimiser_tests.csv", STUDY)
    table, why = experiment_findings.read(out, "optimiser.csv", STUDY)
    if table is not None and tests is None and os.path.exists(os.path.join(out, "optimiser_tests.csv")):
        table, why = None, tests_why
    if table is None:
        return [experiment_findings.missing(optimisation_finding({}), why)]
    return experiment_findings.gate([optimisation_finding(table, tests)], out, table)
