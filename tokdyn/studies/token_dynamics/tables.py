"""The token-dynamics study's statistics from its run table: the runs that stayed finite
(:func:`finite_runs`), the means per condition and per method (:func:`summarise`) and the paired
tests against the baseline (:func:`stat_tests`)."""

from __future__ import annotations

import numpy as np

from tokdyn import stats
from tokdyn.experiment import findings
from tokdyn.experiment import runner
from tokdyn.studies.token_dynamics.config import METRICS, Config


def finite_runs(runs: dict[str, np.ndarray]) -> np.ndarray:
    """Per run: whether every metric is finite (a run with a NaN or inf in any metric blew up: its
    other metrics, a collapse say, are artefacts of the overflow, not results)."""
    ok = np.ones(len(runs["seed"]), bool)
    for f in METRICS:
        v = np.asarray(runs[f])
        if v.dtype.kind in "fc":
            ok &= np.isfinite(v)
    return ok


def _stats_row(row: dict, runs, sel, finite) -> dict:
    """``row`` with ``n_runs``, ``n_nonfinite`` and every metric's mean and std (ddof=1) over the
    selected runs that stayed finite (NaN when none did)."""
    row.update(n_runs=int(sel.sum()), n_nonfinite=int((sel & ~finite).sum()))
    for f in METRICS:
        v = runs[f][sel & finite].astype(np.float64)
        row[f + "_mean"] = v.mean() if v.size else float("nan")
        row[f + "_std"] = v.std(ddof=1) if v.size > 1 else (0.0 if v.size else float("nan"))
    return row


def summarise(runs: dict[str, np.ndarray], cfg: Config):
    """Per method x K x noise and per method: mean and std (ddof=1) of every metric over the runs
    whose metrics are all finite (:func:`finite_runs`); ``n_nonfinite`` counts the runs left out
    (NaN or inf in any metric), so no rate or mean is ever stated over runs that blew up. A cell
    without runs is an error (:class:`tokdyn.experiment.runner.EmptyCell`, naming it)."""
    rows, overall = [], []
    finite = finite_runs(runs)
    for name in cfg.methods:
        sel_m = runs["method"] == name
        overall.append(_stats_row(dict(method=name), runs, sel_m, finite))
        for k in cfg.n_clusters:
            for nz in cfg.noise:
                sel = runner.select(runs, "summary.csv", method=name, n_clusters=k, noise=float(nz))
                rows.append(_stats_row(dict(method=name, n_clusters=k, noise=nz), runs, sel, finite))
    return rows, overall


def stat_tests(runs: dict[str, np.ndarray], cfg: Config, metric: str = "ari") -> list[dict]:
    """Paired t-test of each method's ``metric`` against the baseline, per condition, pairing by
    seed: the mean difference and its 95% interval over seeds (``diff_low``, ``diff_high``:
    :func:`tokdyn.experiment.findings.seed_interval`, within the range of a difference of two
    ARIs, made for every test at once: :func:`~tokdyn.experiment.findings.seed_intervals`), t, p, Cohen's d_z, Holm and Bonferroni over the whole family, and ``negligible``: the
    difference is below the metric's practical threshold
    (:data:`tokdyn.experiment.findings.NEGLIGIBLE`, 0.01 for ARI), whatever its p. A pair where either run is not
    finite (:func:`finite_runs`: a NaN or inf in any metric) is dropped and counted (``n_dropped``);
    a test left with fewer than 2 pairs has NaN statistics and stays out of the corrections."""
    if "baseline" not in cfg.methods or cfg.seeds < 2:
        return []
    tests = []
    order = np.lexsort((runs["seed"],))  # rows are already seed-fastest; keep pairing explicit
    finite = finite_runs(runs)

    def values(name, k, nz):
        sel = (runs["method"] == name) & (runs["n_clusters"] == k) & np.isclose(runs["noise"], nz)
        idx = order[sel[order]]
        v = runs[metric][idx].astype(np.float64)
        return runs["seed"][idx], np.where(finite[idx], v, np.nan)

    diffs = []  # each test's paired differences, for its interval (all of them at once: findings.seed_intervals)
    for name in cfg.methods:
        if name == "baseline":
            continue
        for k in cfg.n_clusters:
            for nz in cfg.noise:
                s_a, a = values(name, k, nz)
                s_b, b = values("baseline", k, nz)
                assert np.array_equal(s_a, s_b)
                keep = np.isfinite(a) & np.isfinite(b)  # a pair with a non-finite side says nothing
                a, b = a[keep], b[keep]
                if a.size >= 2:
                    res = stats.paired_ttest(a, b)
                    t, p, d = float(res.statistic), float(res.pvalue), float(stats.cohens_d(a, b))
                else:
                    t = p = d = float("nan")
                diffs.append(a - b)
                tests.append(
                    dict(
                        method=name,
                        baseline="baseline",
                        metric=metric,
                        n_clusters=int(k),
                        noise=float(nz),
                        n=int(a.size),
                        n_dropped=int((~keep).sum()),
                        **dict.fromkeys(("mean_diff", "diff_low", "diff_high", "negligible")),  # below
                        t=t,
                        p=p,
                        d=d,
                    )
                )
    bounds = findings.difference_bounds(findings.SCORE) if metric in ("ari", "nmi") else None
    for t, (mean, lo, hi, _) in zip(tests, findings.seed_intervals(diffs, bounds)):
        t.update(mean_diff=mean, diff_low=lo, diff_high=hi, negligible=bool(findings.negligible(metric, mean)))
    p = np.asarray([t["p"] for t in tests])
    for t, ph, pb in zip(tests, stats.holm(p), stats.bonferroni(p)):
        t["p_holm"], t["p_bonferroni"] = float(ph), float(pb)
    return tests
