"""Paired comparisons of a sweep's settings by seed, shared by the sweeps' reports
(:mod:`tokdyn.studies.token_dynamics_sweep.report`, :mod:`tokdyn.studies.learned_sweep.report`):
with common random numbers, seed s of every setting saw the same data (or initial parameters and
batches), so the difference of two settings is measured seed by seed.

- :func:`paired_test`: one difference per seed -> its mean with a 95% percentile bootstrap over
  seeds, the paired t-test's t and p, and d_z (float64, :mod:`tokdyn.stats.inference`).
- :func:`paired_tests`: every (setting, reference) pair x metric, Holm's p over all of them.
- :func:`seed_range`, :func:`flag`: their words in a report.
"""

from __future__ import annotations

import numpy as np

from tokdyn.stats import inference


def paired_test(d, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """The paired comparison of one difference per seed ``d`` (non-finite entries dropped: a seed
    where either side had no finite run).

    Returns:
      ``{"n", "mean_diff", "diff_low", "diff_high", "t", "p", "d"}``: the seeds kept, the mean
      difference and its 95% percentile bootstrap over seeds (``n_resamples``, ``seed``), the
      paired t-test's t and p and Cohen's d_z; NaN where too few seeds (fewer than 2) make them;
      with every difference equal, the interval is that value and t, p, d_z are NaN.
    """
    d = np.asarray(d, np.float64)
    d = d[np.isfinite(d)]
    out = dict(n=int(d.size), mean_diff=float(d.mean()) if d.size else float("nan"))
    out.update(diff_low=float("nan"), diff_high=float("nan"), t=float("nan"), p=float("nan"), d=float("nan"))
    if d.size >= 2 and not np.all(d == d[0]):
        lo, hi = inference.bootstrap_ci(d, seed=seed, n_resamples=n_resamples)
        res = inference.paired_ttest(d, np.zeros_like(d))
        out.update(diff_low=float(lo), diff_high=float(hi), t=float(res.statistic), p=float(res.pvalue))
        out["d"] = float(inference.cohens_d(d, np.zeros_like(d)))
    elif d.size >= 2:
        out["diff_low"] = out["diff_high"] = float(d[0])
    return out


def paired_tests(values: dict, pairs, metrics, *, seeds=None, n_resamples: int = 2000) -> list:
    """Every pair of settings x metric, compared by seed (:func:`paired_test`), with Holm's p over
    every test of the list (``p_holm``; NaN where p is).

    Args:
      values: metric -> (settings, seeds) array of each setting's value per seed.
      pairs: ``(row, ref)`` pairs of setting indices: the difference is ``row - ref``.
      metrics: the metrics compared, in order.
      seeds: the seed indices compared (default: every seed).
      n_resamples: bootstrap resamples of each interval.

    Returns:
      ``[{"row", "ref", "metric", "n", "mean_diff", "diff_low", "diff_high", "t", "p", "d", "p_holm"}, ...]``,
      pair by pair, each pair's metrics in order.
    """
    tests = []
    for row, ref in pairs:
        for f in metrics:
            v = np.asarray(values[f], np.float64)
            a, b = (v[row], v[ref]) if seeds is None else (v[row][seeds], v[ref][seeds])
            tests.append(dict(row=int(row), ref=int(ref), metric=f, **paired_test(a - b, n_resamples=n_resamples)))
    p = np.asarray([t["p"] for t in tests], np.float64)
    holm = np.full(p.shape, np.nan)
    if np.isfinite(p).any():
        holm[np.isfinite(p)] = inference.holm(p[np.isfinite(p)])
    for t, h in zip(tests, holm):
        t["p_holm"] = float(h)
    return tests


def seed_range(idx) -> str:
    """Seed indices for a person: ``seed 3`` or ``seeds 0–9`` (the first and the last)."""
    idx = np.asarray(idx)
    return f"seed {idx[0]}" if idx.size == 1 else f"seeds {idx[0]}–{idx[-1]}"


def flag(n) -> str:
    """A count of non-finite runs for a report's tables: ``0``, or the count marked ``⚠``."""
    return f"⚠ {int(n)}" if n else "0"
