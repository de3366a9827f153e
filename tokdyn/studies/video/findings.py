"""The video study's findings V1-V6, judged from ``runs.csv`` (:func:`verdicts`; the learned
predictors' V5 and V6: :func:`learned_verdicts`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.experiment.findings import (
    MIN_SEEDS,
    RATE,
    SCORE,
    Finding,
    aggregate,
    difference_bounds,
    interval,
    seed_interval,
    strings,
)
from tokdyn.studies.video.config import LEARNED, STUDY
from tokdyn.studies.video.tables import paired, seed_values

ARI_MARGIN = 0.02  # findings: an identity difference smaller than this is no difference
COLLAPSE_MARGIN = 0.05  # findings: a collapse-rate rise smaller than this is no rise
MIN_EVIDENCE = 10  # findings V1-V4: the fewest seeds that may decide one (the quick preset's 3 never do)
LEARNED_EVIDENCE = 3  # V5, V6: the fewest learned seeds (trained models per predictor) that may decide one
ARI_DIFF = difference_bounds(SCORE)  # the range of a difference of two FG-ARIs
RATE_DIFF = difference_bounds(RATE)  # of two rates


def _diff(table, scenario, a, b, name):
    """Per-seed paired differences: ``name`` of condition ``a`` minus of condition ``b``; or, with
    ``name`` a pair ``(x, y)``, ``x`` minus ``y`` of condition ``a`` (``b`` unused). Seeds where both
    sides are finite."""
    x, y = (
        paired(table, scenario, a, name[0], a, name[1])
        if isinstance(name, tuple)
        else paired(table, scenario, a, name, b, name)
    )
    return (x - y)[np.isfinite(x) & np.isfinite(y)]


def _above(values, margin, bounds=ARI_DIFF) -> tuple:
    """``(verdict, (mean, low, high, n))``: reproduced when the interval (of a difference whose
    range is ``bounds``) lies above ``margin``, refuted when it lies below it, open when it holds it
    or has fewer than MIN_SEEDS seeds."""
    m, lo, hi, n = seed_interval(values, bounds)
    if n < MIN_SEEDS or not (np.isfinite(lo) and np.isfinite(hi)):
        return "open", (m, lo, hi, n)
    return ("reproduced" if lo > margin else "refuted" if hi < margin else "open"), (m, lo, hi, n)


def _fixed_findings() -> tuple:
    """V1-V4 as stated, before any table: their claims, origins and rules."""
    v1 = Finding(
        "V1",
        "Carried tokens keep identity better than re-initialised ones",
        "On videos whose objects pass over each other, tokens carried from frame to frame score a "
        f"higher video FG-ARI than tokens re-initialised every frame and associated by matching, by more "
        f"than {ARI_MARGIN}.",
        "issue 44: token dynamics through time (SAVi-style carried slots)",
        f"Per seed, video FG-ARI of carry minus reinit (paired, occlusion scenario); 95% interval over "
        f"seeds (at least {MIN_EVIDENCE} seeds decide it): reproduced when it lies above {ARI_MARGIN}, refuted when below, "
        "open otherwise.",
        study=STUDY,
        min_seeds=MIN_EVIDENCE,
    )
    v2 = Finding(
        "V2",
        "A physics-inspired constraint keeps identity better than carrying alone",
        "Some constraint (constant velocity, inertia, or the separation push) raises the video FG-ARI "
        f"over plain carried tokens by more than {ARI_MARGIN}.",
        "seed 000's next steps: physics-inspired constraints for temporal token consistency",
        f"Per seed, video FG-ARI of each constrained condition minus carry (occlusion scenario); 95% "
        f"intervals: reproduced when one lies above {ARI_MARGIN}, refuted when every one lies below it, "
        "open otherwise.",
        study=STUDY,
        min_seeds=MIN_EVIDENCE,
        header=("condition", "difference to carry"),
    )
    v3 = Finding(
        "V3",
        "Tokens collapse while objects cross",
        "Frames where objects overlap (cross, or collide) collapse more often than calm frames: the rate "
        f"of collapsed frames (merged tokens or two objects on one token) is higher by more than "
        f"{COLLAPSE_MARGIN}, for carried tokens.",
        "seed 000's open question: when do token dynamics collapse in practice?",
        f"Per seed, carry's collapse rate in overlap frames minus in calm frames, per scenario without "
        f"objects leaving (occlusion, collisions); 95% intervals: reproduced when every scenario's lies "
        f"above {COLLAPSE_MARGIN}, refuted when one lies below it, open otherwise.",
        study=STUDY,
        min_seeds=MIN_EVIDENCE,
        header=("scenario", "overlap - calm"),
    )
    v4 = Finding(
        "V4",
        "Tokens collapse when an object leaves the view",
        "Frames with an object out of view collapse more often than calm frames, by more than "
        f"{COLLAPSE_MARGIN}, for carried tokens (the token of the object that left has nothing to follow).",
        "seed 000's open question: when do token dynamics collapse in practice?",
        f"Per seed, carry's collapse rate in frames with an object out of view minus in calm frames "
        f"(leaving scenario); 95% interval: reproduced when it lies above {COLLAPSE_MARGIN}, refuted "
        "when below, open otherwise.",
        study=STUDY,
        min_seeds=MIN_EVIDENCE,
    )
    return v1, v2, v3, v4


def _judge_constraints(table, v2, scen: set, conds: list):
    """V2 judged: each constrained condition's video FG-ARI against carry's (occlusion scenario)."""
    constrained = [c for c in conds if c not in ("reinit", "carry")]
    if "occlusion" in scen and "carry" in conds and constrained:
        units = [(c, *_above(_diff(table, "occlusion", c, "carry", "video_ari"), ARI_MARGIN)) for c in constrained]
        vs = [u[1] for u in units]
        v = "reproduced" if "reproduced" in vs else "refuted" if all(x == "refuted" for x in vs) else "open"
        best = max(units, key=lambda u: -np.inf if not np.isfinite(u[2][0]) else u[2][0])
        return dataclasses.replace(
            v2,
            verdict=v,
            rows=[[str(c), interval(*s[:3])] for c, _, s in units],
            basis=f"best {best[0]}: {interval(*best[2][:3])}",
        )
    return dataclasses.replace(v2, basis="the occlusion scenario with carry and a constraint did not run")


def _judge_crossing(table, v3, scen: set, conds: list):
    """V3 judged: carry's collapse rate in overlap frames against calm ones, per scenario without
    objects leaving."""
    crossing = [sc for sc in ("occlusion", "collisions") if sc in scen]
    if crossing and "carry" in conds:
        units = [
            (sc, *_above(_diff(table, sc, "carry", "carry", ("rate_overlap", "rate_calm")), COLLAPSE_MARGIN, RATE_DIFF))
            for sc in crossing
        ]
        vs = [u[1] for u in units]
        v = aggregate(vs)
        return dataclasses.replace(
            v3,
            verdict=v,
            rows=[[str(sc), interval(*s[:3])] for sc, _, s in units],
            basis="; ".join(f"{sc} {interval(*s[:3])}" for sc, _, s in units),
        )
    return dataclasses.replace(v3, basis="no scenario without leaving ran with carry")


def verdicts(table) -> list:
    """The findings V1-V6 from ``runs.csv`` (see each one's rule; V5 and V6:
    :func:`learned_verdicts`)."""
    v1, v2, v3, v4 = _fixed_findings()
    if not table:
        return [v1, v2, v3, v4, *learned_verdicts(table)]
    scen = set(strings(table, "scenario"))
    conds = [str(c) for c in dict.fromkeys(strings(table, "condition")) if not str(c).startswith(LEARNED)]
    out = []
    if {"occlusion"} <= scen and {"carry", "reinit"} <= set(conds):
        v, s = _above(_diff(table, "occlusion", "carry", "reinit", "video_ari"), ARI_MARGIN)
        out.append(dataclasses.replace(v1, verdict=v, basis=f"carry - reinit {interval(*s[:3])} over {s[3]} seeds"))
    else:
        out.append(dataclasses.replace(v1, basis="the occlusion scenario with carry and reinit did not run"))
    out.append(_judge_constraints(table, v2, scen, conds))
    out.append(_judge_crossing(table, v3, scen, conds))
    if "leaving" in scen and "carry" in conds:
        d = _diff(table, "leaving", "carry", "carry", ("rate_out", "rate_calm"))
        v, s = _above(d, COLLAPSE_MARGIN, RATE_DIFF)
        out.append(dataclasses.replace(v4, verdict=v, basis=f"out - calm {interval(*s[:3])} over {s[3]} seeds"))
    else:
        out.append(dataclasses.replace(v4, basis="the leaving scenario did not run with carry"))
    return out + learned_verdicts(table)


PREDICTING = ("mlp", "transformer")  # the learned predictors judged by V5 and V6 (none: the learned control)


def _learned_findings(sc: str) -> tuple:
    """V5 and V6 as stated (on scenario ``sc``), before any table."""
    rule = (
        f"95% intervals over seeds (at least {LEARNED_EVIDENCE} learned seeds decide it, the default's; seed s: learned model s and seed s's test videos, the "
        f"same videos for both sides): reproduced when one predictor's lies above {ARI_MARGIN}, refuted when "
        "every one lies below it, open otherwise."
    )
    v5 = Finding(
        "V5",
        "A learned predictor keeps identity better than the best fixed one",
        "Slot Attention for video whose slots start from a learned prediction of the last frame's (a "
        "residual MLP per slot, or a transformer block over the slots, as in SAVi) scores a higher video "
        f"FG-ARI on videos whose objects pass over each other than the best fixed condition, by more than "
        f"{ARI_MARGIN}.",
        "issue 44's third question: how much does a learned predictor add over the fixed physics-inspired one?",
        f"Per seed, video FG-ARI of savi-mlp and of savi-transformer minus that of the best fixed "
        f"condition (the fixed condition with the highest mean video FG-ARI over all its seeds, {sc} "
        f"scenario, chosen on the same table: a choice that favours the fixed side), {sc} scenario; "
        + rule
        + " savi-none is listed as a control, not judged. The per-frame FG-ARI difference is "
        "listed beside it: how much of the gain is segmentation rather than identity.",
        study=STUDY,
        min_seeds=LEARNED_EVIDENCE,
        header=("condition", "video FG-ARI - best fixed", "per-frame FG-ARI - best fixed", "verdict"),
    )
    v6 = Finding(
        "V6",
        "The learned predictor adds to carrying the slots unchanged",
        "The same Slot Attention for video with a learned predictor scores a higher video FG-ARI than "
        f"with its slots carried unchanged to the next frame (predictor none), by more than {ARI_MARGIN}.",
        "issue 44's third question; SAVi's predictor-corrector (Kipf et al., 2022)",
        "Per seed, video FG-ARI of savi-mlp and of savi-transformer minus that of savi-none (models of one "
        "seed share their initial autoencoder, their batches and their test videos), "
        f"{sc} scenario; " + rule,
        study=STUDY,
        min_seeds=LEARNED_EVIDENCE,
        header=("condition", "video FG-ARI - savi-none", "per-frame FG-ARI - savi-none", "verdict"),
    )
    return v5, v6


def _learned_units(table, sc: str, base: str, listed: list) -> tuple:
    """Each of ``listed`` against condition ``base`` on scenario ``sc``: the verdict over the
    predictors, the rows (a control listed, not judged) and the basis."""
    rows, vs = [], []
    for c in listed:
        v, st = _above(_diff(table, sc, c, base, "video_ari"), ARI_MARGIN)
        fr = seed_interval(_diff(table, sc, c, base, "frame_ari"), ARI_DIFF)
        control = not c.endswith(PREDICTING)
        rows.append([c, interval(*st[:3]), interval(*fr[:3]), "control" if control else v])
        if not control:
            vs.append((c, v, st))
    verdict = (
        "reproduced"
        if any(v == "reproduced" for _, v, _ in vs)
        else "refuted"
        if all(v == "refuted" for _, v, _ in vs)
        else "open"
    )
    basis = "; ".join(f"{c} {interval(*st[:3])} over {st[3]} seeds" for c, _, st in vs)
    return verdict, rows, basis


def learned_verdicts(table) -> list:
    """The findings V5 and V6 from ``runs.csv``: a learned predictor against the best fixed
    condition, and against the learned model without a predictor (``savi-none``); each ``open``
    with a basis that says so when its learned conditions did not run."""
    sc = "occlusion"
    v5, v6 = _learned_findings(sc)
    if not table:
        return [v5, v6]
    scen = set(strings(table, "scenario"))
    conds = [str(c) for c in dict.fromkeys(strings(table, "condition"))]
    fixed = [c for c in conds if not c.startswith(LEARNED)]
    judged = [LEARNED + p for p in PREDICTING if LEARNED + p in conds]
    if sc not in scen or not judged:
        why = f"not run: no learned predictor ({', '.join(LEARNED + p for p in PREDICTING)}) ran on the {sc} scenario"
        return [dataclasses.replace(v5, basis=why), dataclasses.replace(v6, basis=why)]
    out = []
    if fixed:
        means = {c: np.nanmean(seed_values(table, sc, c, "video_ari")) for c in fixed}
        best = max(fixed, key=lambda c: -np.inf if not np.isfinite(means[c]) else means[c])
        listed = [c for c in conds if c.startswith(LEARNED)]
        v, rows, basis = _learned_units(table, sc, best, listed)
        out.append(dataclasses.replace(v5, verdict=v, rows=rows, basis=f"best fixed: {best}; " + basis))
    else:
        out.append(dataclasses.replace(v5, basis="not run: no fixed condition ran"))
    if LEARNED + "none" in conds:
        v, rows, basis = _learned_units(table, sc, LEARNED + "none", judged)
        out.append(dataclasses.replace(v6, verdict=v, rows=rows, basis=basis))
    else:
        out.append(dataclasses.replace(v6, basis=f"not run: {LEARNED}none did not run"))
    return out
