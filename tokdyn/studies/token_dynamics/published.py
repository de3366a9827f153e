"""Findings 1a and 1b: the study's run table against the published figures
(:data:`PUBLISHED_OVERALL`), cell by cell (:func:`published_cell`, :func:`published_findings`)."""

from __future__ import annotations

import numpy as np

from tokdyn.experiment import findings
from tokdyn.experiment.findings import Finding


# The published figures (averaged over all 9 conditions; and at noise 0.3, K = 4).
PUBLISHED_OVERALL = {
    "baseline": dict(ari=0.791, nmi=0.882, steps=11.91, collapsed=0.00),
    "inertia": dict(ari=0.799, nmi=0.887, steps=24.78, collapsed=0.00),
    "repulsion": dict(ari=0.791, nmi=0.882, steps=17.15, collapsed=0.00),
    "inertia+repulsion": dict(ari=0.810, nmi=0.893, steps=25.93, collapsed=0.00),
}
PUBLISHED_NOISE03_K4 = {
    "baseline": dict(ari=0.800, ari_std=0.215, steps=4.47),
    "inertia": dict(ari=0.813, ari_std=0.216, steps=24.10),
    "repulsion": dict(ari=0.800, ari_std=0.215, steps=17.00),
    "inertia+repulsion": dict(ari=0.866, ari_std=0.179, steps=26.50),
}


PUBLISHED_PRECISION = {"ari": 0.0005, "nmi": 0.0005, "steps": 0.005, "collapsed": 0.005}  # half a unit of the
# last digit printed in the published table


BOUNDS = {
    "ari": findings.SCORE,
    "nmi": findings.SCORE,
    "collapsed": findings.RATE,
    "steps": None,
}  # each metric's range


def published_cell(values, published: float, precision: float, bounds=None) -> tuple[str, tuple]:
    """Verdict of one cell of the published table from per-seed ``values`` of our run: the
    published figure, as the interval ``published ± precision`` (its rounding), ``reproduced`` when
    it meets our 95% interval over seeds; ``refuted`` when it misses that interval widened by
    sqrt(2) about our mean (the interval of a difference between two means of as many seeds);
    ``open`` in between, or with fewer than :data:`~tokdyn.experiment.findings.BOOTSTRAP_SEEDS`
    seeds. ``bounds``: the metric's range (:data:`BOUNDS`). Returns the verdict and ``(mean, low,
    high, n)``."""
    mean, low, high, n = findings.seed_interval(values, bounds)
    if n < findings.BOOTSTRAP_SEEDS or not np.isfinite(low):
        return "open", (mean, low, high, n)
    lo_p, hi_p = published - precision, published + precision
    if hi_p >= low and lo_p <= high:
        return "reproduced", (mean, low, high, n)
    wide_low, wide_high = mean - np.sqrt(2) * (mean - low), mean + np.sqrt(2) * (high - mean)
    if hi_p < wide_low or lo_p > wide_high:
        return "refuted", (mean, low, high, n)
    return "open", (mean, low, high, n)


def published_rows(runs, published) -> tuple[dict, dict]:
    """The cells of findings 1a and 1b: per method of ``runs`` that ``published`` lists and per
    metric both hold, :func:`published_cell` of its per-seed means. Returns ``(rows, verdicts)``,
    each ``{"ari": [...], "other": [...]}``: a row ``[method, metric, our interval, published,
    seeds, verdict]`` and its verdict."""
    method = findings.strings(runs, "method")
    rows = {"ari": [], "other": []}
    verdicts = {"ari": [], "other": []}
    for name in dict.fromkeys(method.tolist()):
        if name not in published:
            continue
        for metric in ("ari", "nmi", "steps", "collapsed"):
            if metric not in runs or metric not in published[name]:
                continue
            per_seed = findings.per_seed(runs, method == name, metric)
            v, (mean, low, high, n) = published_cell(
                per_seed, published[name][metric], PUBLISHED_PRECISION[metric], BOUNDS[metric]
            )
            group = "ari" if metric == "ari" else "other"
            digits = 2 if metric in ("steps", "collapsed") else 3
            rows[group].append(
                [
                    name,
                    metric,
                    findings.interval(mean, low, high, digits),
                    findings.number(published[name][metric], digits),
                    str(n),
                    v,
                ]
            )
            verdicts[group].append(v)
    return rows, verdicts


def published_findings(runs, published=None) -> list[Finding]:
    """Findings 1a (mean ARI per method) and 1b (NMI, steps and collapse rate) from the study's
    ``runs.csv`` columns: per method and seed, the mean over the conditions; each cell by
    :func:`published_cell` against ``published`` (default :data:`PUBLISHED_OVERALL`)."""
    published = PUBLISHED_OVERALL if published is None else published
    rule = (
        f"Per method, each seed's mean over the study's conditions; our 95% interval of the mean over seeds "
        f"(percentile bootstrap, {findings.N_RESAMPLES:,} resamples; at least {findings.BOOTSTRAP_SEEDS} seeds, else open). "
        "A cell is reproduced when the published figure (± half a unit of its last printed digit) meets our "
        "interval, refuted when it misses our interval widened by √2 about our mean (the interval of a difference "
        "of two means of as many seeds), open in between. The finding is reproduced when every cell is, refuted "
        "when one is."
    )
    rows, verdicts = published_rows(runs, published)
    header = ("method", "metric", "ours: mean [95% interval over seeds]", "published", "seeds", "verdict")
    a = Finding(
        "1a",
        "Token dynamics: the published ARI table",
        "Each update rule's mean ARI over the nine conditions equals the published figure "
        "(" + ", ".join(f"{k} {v['ari']:.3f}" for k, v in published.items()) + ").",
        'the published study "Formalizing latent visual reasoning: token dynamics" (30 seeds)',
        rule,
        findings.aggregate(verdicts["ari"]) if verdicts["ari"] else "open",
        "; ".join(f"{r[0]} {r[2]} vs {r[3]}" for r in rows["ari"]),
        header,
        rows["ari"],
        "token-dynamics",
        min_seeds=findings.BOOTSTRAP_SEEDS,
    )
    b = Finding(
        "1b",
        "Token dynamics: the rest of the published table",
        "Each rule's mean NMI, steps and collapse rate equal the published figures.",
        a.origin,
        rule,
        findings.aggregate(verdicts["other"]) if verdicts["other"] else "open",
        f"{sum(v == 'reproduced' for v in verdicts['other'])} of {len(verdicts['other'])} cells reproduced, "
        f"{sum(v == 'refuted' for v in verdicts['other'])} refuted",
        header,
        rows["other"],
        "token-dynamics",
        min_seeds=findings.BOOTSTRAP_SEEDS,
    )
    return [a, b]
