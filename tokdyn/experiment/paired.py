"""Paired comparisons of a sweep's settings by seed, shared by the sweeps' reports
(:mod:`tokdyn.studies.token_dynamics_sweep.report`, :mod:`tokdyn.studies.learned_sweep.report`):
with common random numbers, seed s of every setting saw the same data (or initial parameters and
batches), so the difference of two settings is measured seed by seed.

- :func:`paired_test`: one difference per seed -> its mean with its 95% interval over seeds (the
  findings' rule, :func:`tokdyn.experiment.findings.seed_interval`), the paired t-test's t and p,
  and d_z (float64, :mod:`tokdyn.stats.inference`).
- :func:`paired_tests`: every (setting, reference) pair x metric, Holm's p over those with a p
  (:func:`holm_words` says over how many).
- :func:`interval_rule`: the same rule for a sweep's tables of settings (:func:`fitting_bounds`:
  a bounded metric whose values leave its range gets the unbounded interval).
- :func:`seed_halves`, :func:`held_out_best`: a sweep's best setting, chosen on one half of the
  seeds and estimated on the other, the settings with a non-finite run left out.
- :func:`grid_lines`: a report's header: the whole grid, each axis with where it came from.
- :func:`seed_range`, :func:`flag`: their words in a report.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn.experiment import findings, study
from tokdyn.stats import inference


def fitting_bounds(values, bounds):
    """``bounds`` (a range ``(low, high)``) where every finite value of ``values`` lies inside it,
    else None: a metric declared bounded whose values leave its range (a stand-in, or a score
    past its end by rounding) gets the unbounded interval rather than none."""
    if bounds is None:
        return None
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return bounds if v.size == 0 or (v.min() >= bounds[0] and v.max() <= bounds[1]) else None


def paired_test(d, *, n_resamples: int = 2000, bounds=None) -> dict:
    """The paired comparison of one difference per seed ``d`` (non-finite entries dropped: a seed
    where either side had no finite run).

    Args:
      d: the differences, one per seed.
      n_resamples: the bootstrap's resamples (from :data:`~tokdyn.experiment.findings.BOOTSTRAP_SEEDS` seeds on).
      bounds: optional ``(low, high)``: the range of the metric compared (a score, a rate); the
        interval of the difference then stays inside twice that range
        (:func:`tokdyn.experiment.findings.difference_bounds`).

    Returns:
      ``{"n", "mean_diff", "diff_low", "diff_high", "t", "p", "d"}``: the seeds kept, the mean
      difference and its 95% interval over seeds (:func:`tokdyn.experiment.findings.seed_interval`,
      the findings' rule: a percentile bootstrap from 10 seeds on, Student's t below, on the logit
      scale of a bounded difference; NaN below :data:`~tokdyn.experiment.findings.MIN_SEEDS`), the
      paired t-test's t and p and Cohen's d_z (NaN with fewer than 2 seeds); with every difference
      equal, the interval is that value and t, p, d_z are NaN.
    """
    d = np.asarray(d, np.float64)
    d = d[np.isfinite(d)]
    out = dict(n=int(d.size), mean_diff=float(d.mean()) if d.size else float("nan"))
    out.update(diff_low=float("nan"), diff_high=float("nan"), t=float("nan"), p=float("nan"), d=float("nan"))
    if d.size:
        span = None if bounds is None else findings.difference_bounds(bounds)
        _, lo, hi, _ = findings.seed_interval(d, span, n_resamples=n_resamples)
        out.update(diff_low=lo, diff_high=hi)
    if d.size >= 2 and not np.all(d == d[0]):
        res = inference.paired_ttest(d, np.zeros_like(d))
        out.update(t=float(res.statistic), p=float(res.pvalue))
        out["d"] = float(inference.cohens_d(d, np.zeros_like(d)))
    return out


def paired_tests(values: dict, pairs, metrics, *, seeds=None, n_resamples: int = 2000, bounds=None) -> list:
    """Every pair of settings x metric, compared by seed (:func:`paired_test`), with Holm's p over
    the tests of the list that have a p (``p_holm``; NaN where p is: equal differences or too few
    seeds; :func:`holm_words` says so in a report).

    Args:
      values: metric -> (settings, seeds) array of each setting's value per seed.
      pairs: ``(row, ref)`` pairs of setting indices: the difference is ``row - ref``.
      metrics: the metrics compared, in order.
      seeds: the seed indices compared (default: every seed).
      n_resamples: bootstrap resamples of each interval.
      bounds: optional ``{metric: (low, high)}``: the ranges of bounded metrics (:func:`paired_test`).

    Returns:
      ``[{"row", "ref", "metric", "n", "mean_diff", "diff_low", "diff_high", "t", "p", "d", "p_holm"}, ...]``,
      pair by pair, each pair's metrics in order.
    """
    tests = []
    for row, ref in pairs:
        for f in metrics:
            v = np.asarray(values[f], np.float64)
            a, b = (v[row], v[ref]) if seeds is None else (v[row][seeds], v[ref][seeds])
            span = fitting_bounds(np.concatenate([a, b]), (bounds or {}).get(f))
            tests.append(
                dict(row=int(row), ref=int(ref), metric=f, **paired_test(a - b, n_resamples=n_resamples, bounds=span))
            )
    p = np.asarray([t["p"] for t in tests], np.float64)
    holm = np.full(p.shape, np.nan)
    if np.isfinite(p).any():
        holm[np.isfinite(p)] = inference.holm(p[np.isfinite(p)])
    for t, h in zip(tests, holm):
        t["p_holm"] = float(h)
    return tests


def interval_rule(bounds=None, n_resamples: int = 2000):
    """The intervals of a sweep's tables by the findings' rule, as
    :func:`tokdyn.stats.summary.setting_table` takes them (its ``interval``): ``interval(field,
    values (settings, seeds)) -> (low, high)``, each row's :func:`tokdyn.experiment.findings.seed_intervals`
    (a percentile bootstrap from 10 seeds on, Student's t below, on the logit scale of a bounded
    field's range ``bounds[field]``; NaN below 3 seeds)."""

    def interval(field, values):
        values = np.asarray(values, np.float64)
        span = fitting_bounds(values, (bounds or {}).get(field))  # the whole table's values: one rule per field
        rows = findings.seed_intervals(list(values), span, n_resamples=n_resamples)
        return np.asarray([r[1] for r in rows], np.float64), np.asarray([r[2] for r in rows], np.float64)

    return interval


def holm_words(tests: list) -> str:
    """Over which tests Holm's p of :func:`paired_tests` is made, for a report: ``the 7 tests of
    this table`` when each has a p, else ``the 3 of the 7 tests of this table that have a p (the
    others: equal differences or too few seeds)``."""
    with_p = sum(1 for t in tests if np.isfinite(t["p"]))
    if with_p == len(tests):
        return f"the {len(tests)} tests of this table"
    return (
        f"the {with_p} of the {len(tests)} tests of this table that have a p (the others have none: "
        "every difference equal, or fewer than 2 seeds)"
    )


def seed_halves(seeds: int) -> tuple:
    """``(choose, estimate)``: the seed indices on which a best setting is chosen (the first half)
    and those on which it is estimated (the rest); with fewer than 4 seeds both are all seeds (no
    half holds 2 seeds: the best setting is chosen and estimated on the same seeds)."""
    every = np.arange(seeds)
    if seeds < 4:
        return every, every
    return every[: seeds // 2], every[seeds // 2 :]


def held_out_best(
    values: dict, metric: str, eligible, rows=None, *, estimate=None, bounds=None, n_resamples: int = 2000
) -> dict:
    """The setting with the highest mean ``metric``, chosen on one half of the seeds and estimated
    on the other (:func:`seed_halves`), among the ``eligible`` ones; so that its estimate is not
    inflated by the choice among many settings.

    Args:
      values: metric -> (S, seeds) per-seed values of each setting (NaN where a seed had no finite run).
      metric: the metric maximised.
      eligible: (S,) bool, the settings that may be chosen (e.g. those without a non-finite run).
      rows: the candidate settings (indices into S; default every one).
      estimate: the metrics estimated on the other half (default: ``metric`` alone).
      bounds: optional ``{metric: (low, high)}``: the ranges of bounded metrics, for the intervals.
      n_resamples: the bootstrap's resamples.

    Returns:
      ``{"row": the chosen setting (None when no eligible setting has a finite mean on the choosing
      seeds), "choose": seed indices, "held": seed indices, "split": whether the halves differ,
      "estimate": {"{m}_heldout_mean", "{m}_heldout_low", "{m}_heldout_high" for each estimated
      metric, "heldout_seeds"}}``: each estimate the mean over the estimating seeds with its 95%
      interval (:func:`tokdyn.experiment.findings.seed_interval`).
    """
    first = np.asarray(values[metric], np.float64)
    seeds = first.shape[1]
    eligible = np.asarray(eligible, bool)
    choose, held = seed_halves(seeds)
    rows = np.arange(first.shape[0]) if rows is None else np.asarray(rows, np.int64)
    rows = rows[eligible[rows]]
    score = first[rows][:, choose]
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(score)
        means = np.where(finite.any(1), np.nanmean(np.where(finite, score, np.nan), 1), -np.inf)
    out = dict(row=None, choose=choose, held=held, split=len(choose) < seeds, estimate={})
    if rows.size == 0 or not np.isfinite(means).any():
        return out
    row = int(rows[np.argmax(means)])
    est = {}
    for m in estimate or (metric,):
        v = np.asarray(values[m], np.float64)[row][held]
        mean, lo, hi, _ = findings.seed_interval(v, fitting_bounds(v, (bounds or {}).get(m)), n_resamples=n_resamples)
        est.update({f"{m}_heldout_mean": mean, f"{m}_heldout_low": lo, f"{m}_heldout_high": hi})
    est["heldout_seeds"] = int(np.isfinite(first[row][held]).sum())
    out.update(row=row, estimate=est)
    return out


def axis_origin(cfg, name: str) -> str:
    """Where the field ``name`` of a sweep's configuration ``cfg`` (a dataclass) came from:
    ``"the quick preset's"`` under ``--quick`` when it holds the preset's value, ``"the default"``
    when it holds the field's default (the command's default for that option; values compared, not
    spellings: :func:`tokdyn.experiment.study.same_value`), else ``"given"``
    (on the command line, or in the configuration handed to ``main``)."""
    value = getattr(cfg, name)
    if getattr(cfg, "preset", "") == "quick" and hasattr(type(cfg), "quick"):
        return "the quick preset's" if study.same_value(getattr(type(cfg).quick(), name), value) else "given"
    default = {f.name: f.default for f in dataclasses.fields(cfg)}.get(name, dataclasses.MISSING)
    return "the default" if default is not dataclasses.MISSING and study.same_value(default, value) else "given"


def _values(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, (int, float, np.floating, np.integer)) else str(v) for v in values)


def grid_lines(cfg, axes, *, fixed=(), given=None) -> list:
    """A sweep report's header: every axis of the grid with its values and where it came from
    (:func:`axis_origin`; an axis that holds its default is named with the option that leaves it out),
    the seeds, and the knobs held fixed.

    Args:
      cfg: the sweep's configuration (a dataclass; an axis ``name`` is its field and the option
        ``--name`` with dashes).
      axes: ``((name, values), ...)``: the grid's axes.
      fixed: ``((name, value), ...)``: knobs that are not axes, at the value every run takes.
      given: optional ``{axis: origin}`` for axes that are no field of ``cfg`` (a rule's own knobs).
    """
    lines = ["## Grid", ""]
    for name, values in axes:
        origin = (given or {}).get(name) or axis_origin(cfg, name)
        if origin in ("the default", "the quick preset's"):
            origin += f"; `--{name.replace('_', '-')} ''` leaves it out"
        lines.append(f"- {name}: {_values(values)} ({len(values)} value{'s' * (len(values) != 1)}; {origin})")
    if not axes:
        lines.append("- no axis: one setting")
    lines.append(f"- seeds: {cfg.seeds} ({axis_origin(cfg, 'seeds')})")
    if fixed:
        lines.append("- not swept, every run at: " + ", ".join(f"{k}={_values([v])}" for k, v in fixed))
    return lines + [""]


def seed_range(idx) -> str:
    """Seed indices for a person: ``seed 3`` or ``seeds 0–9`` (the first and the last)."""
    idx = np.asarray(idx)
    return f"seed {idx[0]}" if idx.size == 1 else f"seeds {idx[0]}–{idx[-1]}"


def flag(n) -> str:
    """A count of non-finite runs for a report's tables: ``0``, or the count marked ``⚠``."""
    return f"⚠ {int(n)}" if n else "0"
