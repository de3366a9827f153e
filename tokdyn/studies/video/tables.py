"""The video study's tables beside ``runs.csv``: per scenario x condition the scores' means and
intervals over seeds (``metrics.csv``, :func:`metric_rows`), the collapse rate per frame class
(``collapse.csv``, :func:`collapse_rows`) and the paired tests (``tests.csv``, :func:`test_rows`);
and the per-seed values of ``runs.csv`` they and the findings read (:func:`per_seed`,
:func:`seed_values`, :func:`paired`)."""

from __future__ import annotations

import numpy as np

from tokdyn import stats
from tokdyn.experiment import findings as experiment_findings
from tokdyn.studies.video.config import Config
from tokdyn.studies.video.scoring import CLASSES

SCORES = ("video_ari", "frame_ari", "switch_rate", "persistence", "collapse")  # the per-seed scores compared
# each score's range, so that its interval over seeds stays inside it; switch_rate is switches over
# chances, a switch being a chance taken (a track visible in both frames: metrics.track_switches),
# so a rate in [0, 1]
BOUNDS = {
    "video_ari": experiment_findings.SCORE,
    "frame_ari": experiment_findings.SCORE,
    "switch_rate": experiment_findings.RATE,
    "persistence": experiment_findings.RATE,
    "collapse": experiment_findings.RATE,
}


def _rate(table, cls):
    n, k = experiment_findings.numbers(table, f"frames_{cls}"), experiment_findings.numbers(table, f"collapsed_{cls}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / np.maximum(n, 1), np.nan)


def per_seed(table, scenario, condition, name):
    """One condition's values of a column per seed.

    Args:
      table: ``runs.csv`` as columns (``{column: (R,) array}``, one row per scenario x condition x seed).
      scenario, condition: the rows to read.
      name: a column, or ``rate_<class>`` (the collapse rate of a frame class: collapsed frames /
        frames, NaN without frames of that class).

    Returns:
      ``(seeds, values)``: two (S,) arrays ordered by seed (S: the condition's seeds).
    """
    sel = (experiment_findings.strings(table, "scenario") == scenario) & (
        experiment_findings.strings(table, "condition") == condition
    )
    col = _rate(table, name[5:]) if name.startswith("rate_") else experiment_findings.numbers(table, name)
    seeds = experiment_findings.numbers(table, "seed")[sel]
    order = np.argsort(seeds, kind="stable")
    return seeds[order], col[sel][order]


def seed_values(table, scenario, condition, name):
    """The (S,) values of :func:`per_seed` alone, ordered by seed.

    Args:
      table: ``runs.csv`` as columns.
      scenario, condition: the rows to read.
      name: a column, or ``rate_<class>``.
    """
    return per_seed(table, scenario, condition, name)[1]


def paired(table, scenario, a, name_a, b, name_b):
    """Two conditions' values paired by seed, on the seeds both have (a learned condition has
    ``learned_seeds`` of them).

    Args:
      table: ``runs.csv`` as columns.
      scenario: the scenario of both sides.
      a, name_a: the first side's condition and column (or ``rate_<class>``).
      b, name_b: the second side's.

    Returns:
      ``(x, y)``: two (P,) arrays, P the seeds both conditions have, in seed order.
    """
    sa, x = per_seed(table, scenario, a, name_a)
    sb, y = per_seed(table, scenario, b, name_b)
    _, ia, ib = np.intersect1d(sa, sb, return_indices=True)
    return x[ia], y[ib]


def metric_rows(cfg: Config, runs: dict) -> list:
    """Per scenario x condition: each score's mean and 95% interval over seeds
    (:func:`tokdyn.experiment.findings.seed_interval` within the score's range, :data:`BOUNDS`; NaN
    bounds with fewer than ``MIN_SEEDS`` seeds)."""
    rows = []
    for sc in cfg.scenarios:
        for cond in cfg.all_conditions:
            row = dict(scenario=sc, condition=cond)
            for name in SCORES:
                m, lo, hi, n = experiment_findings.seed_interval(seed_values(runs, sc, cond, name), BOUNDS[name])
                row.update({name: m, f"{name}_low": lo, f"{name}_high": hi})
            row["seeds"] = n
            rows.append(row)
    return rows


def collapse_rows(cfg: Config, runs: dict) -> list:
    """Per scenario x condition: the collapse rate in each frame class (mean and interval over
    seeds; a seed without frames of a class is left out of that class) and the frames of each."""
    rows = []
    for sc in cfg.scenarios:
        for cond in cfg.all_conditions:
            row = dict(scenario=sc, condition=cond)
            for cls in CLASSES:
                m, lo, hi, n = experiment_findings.seed_interval(
                    seed_values(runs, sc, cond, f"rate_{cls}"), experiment_findings.RATE
                )
                row.update(
                    {
                        cls: m,
                        f"{cls}_low": lo,
                        f"{cls}_high": hi,
                        f"{cls}_seeds": n,
                        f"{cls}_frames": int(np.sum(seed_values(runs, sc, cond, f"frames_{cls}"))),
                    }
                )
            rows.append(row)
    return rows


def test_rows(cfg: Config, runs: dict) -> list:
    """Paired t-tests (pairs: seeds) of every condition (learned ones included, over their seeds)
    against ``reinit`` and of every constrained or learned condition against ``carry``, per scenario
    and score: the mean difference with its 95% interval over seeds (``diff_low``, ``diff_high``),
    t, p, Holm over the whole family, d_z, and ``negligible`` (the difference below the score's
    practical threshold, :data:`tokdyn.experiment.findings.NEGLIGIBLE`)."""
    tests = []
    for sc in cfg.scenarios:
        for name in SCORES:
            for base in ("reinit", "carry"):
                if base not in cfg.conditions:
                    continue
                for cond in cfg.all_conditions:
                    if cond == base or (base == "carry" and cond == "reinit"):
                        continue
                    a, b = paired(runs, sc, cond, name, base, name)
                    keep = np.isfinite(a) & np.isfinite(b)
                    a, b = a[keep], b[keep]
                    if a.size >= 2:
                        res = stats.paired_ttest(a, b)
                        t, p, d = float(res.statistic), float(res.pvalue), float(stats.cohens_d(a, b))
                    else:
                        t = p = d = float("nan")
                    bounds = BOUNDS[name] and experiment_findings.difference_bounds(BOUNDS[name])
                    mean, lo, hi, _ = experiment_findings.seed_interval(a - b, bounds)
                    tests.append(
                        dict(
                            scenario=sc,
                            metric=name,
                            condition=cond,
                            baseline=base,
                            n=int(a.size),
                            mean_diff=mean,
                            diff_low=lo,
                            diff_high=hi,
                            negligible=bool(experiment_findings.negligible(name, mean)),
                            t=t,
                            p=p,
                            d=d,
                        )
                    )
    p = np.asarray([t["p"] for t in tests], float)
    holm = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        holm[ok] = stats.holm(p[ok])
    for t, h in zip(tests, holm):
        t["p_holm"] = float(h)
    return tests
