r"""Summaries of sweep results: statistics per condition, marginal tables, per-seed values of
hyperparameter settings, Pareto fronts and bootstrap confidence intervals.

Everything here reads a sweep either from memory (:class:`tokdyn.engine.sweep.SweepResult`) or from its
directory, one chunk at a time (:func:`tokdyn.engine.sweep.iter_chunks`), so a 10^8-run sweep is
summarised in memory proportional to its number of *conditions*, not runs. NumPy, float64.

Conventions: a *condition* is one point of the grid's axes (all seeds of it); a *setting* is one
point of a chosen subset of the axes (say the update rule's temperature, momentum and repulsion),
pooling the other axes (say the data's noise and cluster count). Non-finite outputs (NaN and
±inf) are excluded from means and counted (``{field}_nan``); they never propagate into a summary
silently. With ``require_finite`` a run with a non-finite value in any of those fields (a run
that blew up) is left out of every field's statistics, and counted (``nonfinite``): a rate such as
a collapse rate is then stated over the runs that stayed finite only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tokdyn.engine import sweep
from tokdyn.stats import inference

_BOOTSTRAP_BLOCK = 256


def _source(src):
    """(grid, iterator of (start, stop, columns), output fields) for a result or a directory."""
    if isinstance(src, sweep.SweepResult):
        if src.grid is None:
            raise ValueError("this SweepResult carries no grid; summarise the result of sweep.run or sweep.load")
        return src.grid, iter([(0, len(src), src.columns)]), tuple(src.fields)
    if isinstance(src, str) or hasattr(src, "__fspath__"):
        src = str(src)
        m = sweep.read_manifest(src)
        grid = sweep.Grid.from_dict(m["grid"])
        chunks = sweep.iter_chunks(src)
        first = next(chunks)
        fields = tuple(k for k in first[2] if k not in grid.names and k not in sweep.Grid.RESERVED)

        def all_chunks():
            yield first
            yield from chunks

        return grid, all_chunks(), fields
    raise TypeError(f"expected a SweepResult or a sweep directory, got {type(src).__name__}")


def _scalar_fields(fields, sample: dict) -> tuple:
    return tuple(f for f in fields if np.ndim(sample[f]) == 1 and np.asarray(sample[f]).dtype.kind in "biuf")


def _check_fields(fields: Sequence[str] | None, available: tuple) -> tuple:
    if fields is None:
        return available
    for f in fields:
        if f not in available:
            raise ValueError(f"field {f!r} is not a scalar output of this sweep; available: {list(available)}")
    return tuple(fields)


def _finite_runs(cols: dict, require_finite: Sequence[str]) -> np.ndarray | None:
    """Runs whose every field of ``require_finite`` is finite (None: no such requirement)."""
    if not require_finite:
        return None
    ok = np.ones(len(cols["index"]), bool)
    for f in require_finite:
        if f not in cols:
            raise ValueError(f"require_finite names {f!r}, which is not an output of this sweep")
        v = np.asarray(cols[f])
        if v.dtype.kind in "fc":
            ok &= np.isfinite(v.reshape(len(v), -1)).all(axis=1)
    return ok


def condition_stats(
    src, fields: Sequence[str] | None = None, *, require_finite: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Per condition (one row per point of the grid's axes, in grid order): the axis values,
    ``n`` (seeds), ``nonfinite`` (seeds with a non-finite value, NaN or ±inf, in any of the fields
    summarised, or of ``require_finite``), and for every scalar output field its mean and sample
    standard deviation over the seeds where it is finite (``{f}_mean``, ``{f}_std`` with ddof=1, NaN if
    fewer than 2), the number of seeds where it is not (``{f}_nan``: NaN or ±inf) and the number the
    mean is over (``{f}_n``). ``require_finite``: fields that must all be finite for a run to count
    in any field (say every metric of a run whose state can blow up): a run with a non-finite
    value there is left out of every mean and counted in ``nonfinite``. Streams the chunks of a
    sweep directory, accumulating float64 sums and sums of squares per condition."""
    grid, chunks, all_fields = _source(src)
    n_cond = len(grid) // grid.seeds
    sums = counts = sumsq = bad = None
    for _s0, _s1, cols in chunks:
        if sums is None:
            fields = _check_fields(fields, _scalar_fields(all_fields, cols))
            sums = {f: np.zeros(n_cond) for f in fields}
            sumsq = {f: np.zeros(n_cond) for f in fields}
            counts = {f: np.zeros(n_cond) for f in fields}
            nonfinite = {f: np.zeros(n_cond) for f in fields}
            bad = np.zeros(n_cond)
        cond = grid.condition(cols["index"])
        if grid.seed_major:  # a chunk's conditions wrap around: count over all of them
            c0, width = 0, n_cond
        else:  # a chunk's conditions are one contiguous range
            c0, width = int(cond[0]), int(cond[-1]) + 1 - int(cond[0])
        local = cond - c0
        sl = slice(c0, c0 + width)
        run_ok = _finite_runs(cols, require_finite)
        any_bad = np.zeros(len(local), bool) if run_ok is None else ~run_ok
        for f in fields:
            v = np.asarray(cols[f], np.float64)
            finite = np.isfinite(v)
            any_bad |= ~finite
            ok = finite if run_ok is None else finite & run_ok
            v0 = np.where(ok, v, 0.0)
            sums[f][sl] += np.bincount(local, weights=v0, minlength=width)
            sumsq[f][sl] += np.bincount(local, weights=v0 * v0, minlength=width)
            counts[f][sl] += np.bincount(local, weights=ok.astype(np.float64), minlength=width)
            nonfinite[f][sl] += np.bincount(local, weights=(~finite).astype(np.float64), minlength=width)
        bad[sl] += np.bincount(local, weights=any_bad.astype(np.float64), minlength=width)
    out = _axis_columns(grid)
    out["n"] = np.full(n_cond, grid.seeds, np.int64)
    out["nonfinite"] = bad.astype(np.int64)
    for f in fields:
        n = counts[f]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, sums[f] / np.maximum(n, 1), np.nan)
            var = np.where(n > 1, (sumsq[f] - n * mean**2) / np.maximum(n - 1, 1), np.nan)
        out[f + "_mean"] = mean
        out[f + "_std"] = np.sqrt(np.maximum(var, 0.0))
        out[f + "_nan"] = nonfinite[f].astype(np.int64)
        out[f + "_n"] = n.astype(np.int64)
    return out


def _axis_columns(grid: sweep.Grid) -> dict[str, np.ndarray]:
    """Axis values of every condition without building the run table."""
    shape = grid.shape[:-1]
    idx = np.indices(shape).reshape(len(shape), -1)
    return {name: values[i] for (name, values), i in zip(grid.axes.items(), idx)}


def marginal(stats_table: dict, by: Sequence[str], fields: Sequence[str], where: dict | None = None):
    """Pool a :func:`condition_stats` table over every axis not in ``by``. Exact: the sums and sums of
    squares are rebuilt from each condition's mean, std and n.

    Args:
        stats_table: a :func:`condition_stats` table.
        by: the axes kept: one output row per distinct combination of their values, sorted.
        fields: the output fields pooled.
        where: optional ``{axis: value}``: only the conditions matching it (``np.isclose``) are pooled.

    Returns:
        A dict of columns: the ``by`` axes and, per field, the pooled ``{f}_mean``, ``{f}_std``
        (ddof=1, over all pooled runs) and ``{f}_n`` (the finite runs pooled).

    Raises:
        ValueError: an unknown axis or field, or a ``where`` that matches no condition.
    """
    axes = table_axes(stats_table)
    for name in list(by) + list(where or {}):
        if name not in axes:
            raise ValueError(f"unknown axis {name!r}; axes: {axes}")
    keep = np.ones(len(stats_table["n"]), bool)
    for name, value in (where or {}).items():
        keep &= np.isclose(stats_table[name], float(value))
        if not keep.any():
            raise ValueError(f"no condition has {name}={value}; values: {np.unique(stats_table[name]).tolist()}")
    cols = {k: np.asarray(v)[keep] for k, v in stats_table.items()}
    keys = [cols[b] for b in by]
    if by:
        uniq, inv = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
        inv = inv.ravel()
    else:
        uniq, inv = np.zeros((1, 0)), np.zeros(len(cols["n"]), np.int64)
    out = {b: uniq[:, i].astype(cols[b].dtype) for i, b in enumerate(by)}
    g = len(uniq)
    for f in fields:
        if f + "_mean" not in cols:
            raise ValueError(f"unknown field {f!r}; fields: {table_fields(stats_table)}")
        # the runs each condition's mean is over (tables before {f}_n: all but the non-finite ones)
        n = (cols[f + "_n"] if f + "_n" in cols else cols["n"] - cols[f + "_nan"]).astype(np.float64)
        mean = np.nan_to_num(cols[f + "_mean"])
        std = np.nan_to_num(cols[f + "_std"])
        s1 = np.bincount(inv, weights=n * mean, minlength=g)
        s2 = np.bincount(inv, weights=np.maximum(n - 1, 0) * std**2 + n * mean**2, minlength=g)
        nn = np.bincount(inv, weights=n, minlength=g)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(nn > 0, s1 / np.maximum(nn, 1), np.nan)
            var = np.where(nn > 1, (s2 - nn * m**2) / np.maximum(nn - 1, 1), np.nan)
        out[f + "_mean"], out[f + "_std"], out[f + "_n"] = m, np.sqrt(np.maximum(var, 0.0)), nn.astype(np.int64)
    return out


_STAT_SUFFIXES = ("_mean", "_std", "_nan", "_n")


def table_axes(t: dict) -> list:
    """The axis columns of a :func:`condition_stats` table."""
    stats = {f + s for f in table_fields(t) for s in _STAT_SUFFIXES}
    return [k for k in t if k not in ("n", "nonfinite") and k not in stats]


def table_fields(t: dict) -> list:
    """The output fields summarised in a :func:`condition_stats` table."""
    return [k[:-5] for k in t if k.endswith("_mean")]


def per_seed(src, by: Sequence[str], fields: Sequence[str], *, require_finite: Sequence[str] = ()):
    """Per setting (point of the ``by`` axes) and seed: each field's mean over the other axes, non-finite
    runs excluded. With common random numbers these are paired across settings, and a bootstrap over
    seeds gives the uncertainty of a setting's mean.

    Args:
        src: a :class:`tokdyn.engine.sweep.SweepResult`, or a sweep's directory (read chunk by chunk).
        by: the setting's axes.
        fields: the scalar output fields.
        require_finite: fields that must all be finite for a run to count (as in :func:`condition_stats`).

    Returns:
        ``(settings, values)``: ``settings`` the ``by`` columns (one row per setting, in grid order),
        ``values[f]`` of shape (n_settings, seeds), NaN where no run of a cell is finite.
    """
    settings, values, _ = _per_seed(src, by, fields, require_finite)
    return settings, values


def _per_seed(src, by, fields, require_finite):
    """:func:`per_seed` and, per setting, the runs with a non-finite value (in ``fields`` or
    ``require_finite``)."""
    grid, chunks, all_fields = _source(src)
    for b in by:
        if b not in grid.names:
            raise ValueError(f"unknown axis {b!r}; axes: {list(grid.names)}")
    sizes = [grid.axes[b].size for b in by]
    n_set = int(np.prod(sizes, dtype=np.int64))
    pos = {name: i for i, name in enumerate(grid.names)}
    sums = counts = None
    for _s0, _s1, cols in chunks:
        if sums is None:
            fields = _check_fields(fields, _scalar_fields(all_fields, cols))
            sums = {f: np.zeros(n_set * grid.seeds) for f in fields}
            counts = {f: np.zeros(n_set * grid.seeds) for f in fields}
            bad = np.zeros(n_set)
        index = cols["index"]
        setting = np.zeros(len(index), np.int64)
        for b, size in zip(by, sizes):
            i = pos[b]
            setting = setting * size + (index // grid.strides[i]) % grid.shape[i]
        cell = setting * grid.seeds + cols["seed"]
        run_ok = _finite_runs(cols, require_finite)
        any_bad = np.zeros(len(index), bool) if run_ok is None else ~run_ok
        for f in fields:
            v = np.asarray(cols[f], np.float64)
            finite = np.isfinite(v)
            any_bad |= ~finite
            ok = finite if run_ok is None else finite & run_ok
            sums[f] += np.bincount(cell, weights=np.where(ok, v, 0.0), minlength=n_set * grid.seeds)
            counts[f] += np.bincount(cell, weights=ok.astype(np.float64), minlength=n_set * grid.seeds)
        bad += np.bincount(setting, weights=any_bad.astype(np.float64), minlength=n_set)
    idx = np.indices(sizes).reshape(len(sizes), -1) if by else np.zeros((0, 1), np.int64)
    settings = {b: grid.axes[b][i] for b, i in zip(by, idx)}
    values = {}
    for f in fields:
        with np.errstate(invalid="ignore", divide="ignore"):
            values[f] = np.where(counts[f] > 0, sums[f] / np.maximum(counts[f], 1), np.nan).reshape(n_set, grid.seeds)
    return settings, values, bad.astype(np.int64)


def pareto_front(cost, benefit) -> np.ndarray:
    """Boolean mask of the points that no other point dominates, minimising ``cost`` and
    maximising ``benefit``. Point j dominates i when ``cost_j <= cost_i`` and
    ``benefit_j >= benefit_i`` with at least one strict; equal points do not dominate each other
    (all of them stay on the front). Points with a NaN are never on the front. O(n log n)."""
    cost, benefit = np.asarray(cost, np.float64), np.asarray(benefit, np.float64)
    if cost.shape != benefit.shape or cost.ndim != 1:
        raise ValueError(f"cost and benefit must be 1-D of equal length, got {cost.shape} and {benefit.shape}")
    ok = ~(np.isnan(cost) | np.isnan(benefit))
    front = np.zeros(cost.shape, bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return front
    # by cost ascending, then benefit descending: a point is dominated iff an earlier point (with
    # lower cost, or equal cost and higher benefit) has benefit >= its own, unless that point is
    # an exact tie of it
    order = idx[np.lexsort((-benefit[idx], cost[idx]))]
    best = -np.inf
    i = 0
    while i < order.size:
        j = i  # the group of exact ties (same cost and benefit)
        while (
            j + 1 < order.size and cost[order[j + 1]] == cost[order[i]] and benefit[order[j + 1]] == benefit[order[i]]
        ):
            j += 1
        b = benefit[order[i]]
        if b > best:
            front[order[i : j + 1]] = True
            best = b
        i = j + 1
    return front


def setting_table(
    src,
    by: Sequence[str],
    fields: Sequence[str],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    require_finite: Sequence[str] = (),
    interval=None,
) -> dict[str, np.ndarray]:
    """One row per setting of the ``by`` axes: per field, the mean over seeds of the per-seed means
    (:func:`per_seed`) and a percentile bootstrap interval over seeds
    (:func:`tokdyn.stats.inference.bootstrap_ci`, the same resamples for every setting and field, so
    intervals of paired settings are comparable), or the intervals of ``interval``.

    Args:
        src: a :class:`tokdyn.engine.sweep.SweepResult`, or a sweep's directory (read chunk by chunk).
        by: the setting's axes.
        fields: the scalar output fields.
        n_resamples: bootstrap resamples, >= 1.
        confidence: the intervals' confidence level, in (0, 1).
        seed: non-negative int seeding the bootstrap.
        require_finite: fields that must all be finite for a run to count (as in :func:`condition_stats`).
        interval: optional ``interval(field, values) -> (low, high)``: the intervals of a field
            from its (n_settings, seeds) per-seed values (NaN where a seed had no finite run), two
            (n_settings,) arrays, in place of the bootstrap (a study's own rule of intervals, e.g.
            :func:`tokdyn.experiment.findings.seed_intervals`).

    Returns:
        A dict of columns: the ``by`` axes, ``nonfinite`` (the setting's runs left out) and per field
        ``{f}_mean``, ``{f}_low``, ``{f}_high`` and ``{f}_nan`` (seeds with no finite run, dropped); a
        setting with fewer than 2 valid seeds gets NaN bounds.
    """
    settings, values, bad = _per_seed(src, by, fields, require_finite)
    out = dict(settings)
    out["nonfinite"] = bad
    for f, v in values.items():  # v: (n_settings, seeds)
        bad = np.isnan(v)
        n_ok = (~bad).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f + "_mean"] = np.where(n_ok > 0, np.where(bad, 0.0, v).sum(1) / np.maximum(n_ok, 1), np.nan)
        lo, hi = np.full(len(v), np.nan), np.full(len(v), np.nan)
        if interval is not None:
            lo, hi = (np.asarray(a, np.float64) for a in interval(f, v))
        elif v.shape[1] >= 2:
            clean = np.flatnonzero(n_ok == v.shape[1])
            for b in range(0, clean.size, _BOOTSTRAP_BLOCK):  # bounded (block, n_resamples) buffer
                rows_ = clean[b : b + _BOOTSTRAP_BLOCK]
                ci = inference.bootstrap_ci(v[rows_], seed=seed, n_resamples=n_resamples, confidence=confidence, axis=1)
                lo[rows_], hi[rows_] = ci
            for r in np.flatnonzero((n_ok < v.shape[1]) & (n_ok >= 2)):  # rare: the valid seeds alone
                lo[r], hi[r] = inference.bootstrap_ci(
                    v[r][~bad[r]], seed=seed, n_resamples=n_resamples, confidence=confidence
                )
        out[f + "_low"], out[f + "_high"] = lo, hi
        out[f + "_nan"] = bad.sum(1).astype(np.int64)
    return out
