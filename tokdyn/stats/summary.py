r"""Summaries of sweep results: statistics per condition, marginal tables, per-seed values of
hyperparameter settings, Pareto fronts and bootstrap confidence intervals.

Everything here reads a sweep either from memory (:class:`tokdyn.engine.sweep.SweepResult`) or from its
directory, one chunk at a time (:func:`tokdyn.engine.sweep.iter_chunks`), so a 10^8-run sweep is
summarised in memory proportional to its number of *conditions*, not runs. NumPy, float64.

Conventions: a *condition* is one point of the grid's axes (all seeds of it); a *setting* is one
point of a chosen subset of the axes (say the update rule's temperature, momentum and repulsion),
pooling the other axes (say the data's noise and cluster count). NaN outputs are excluded from
means and counted (``{field}_nan``); they never propagate into a summary silently.
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


def condition_stats(src, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per condition (one row per point of the grid's axes, in grid order): the axis values,
    ``n`` (seeds), and for every scalar output field its mean and sample standard deviation over
    the non-NaN seeds (``{f}_mean``, ``{f}_std`` with ddof=1, NaN if fewer than 2) and the number of
    NaN seeds (``{f}_nan``). Streams the chunks of a sweep directory, accumulating float64 sums
    and sums of squares per condition."""
    grid, chunks, all_fields = _source(src)
    n_cond = len(grid) // grid.seeds
    sums = counts = sumsq = None
    for s0, s1, cols in chunks:
        if sums is None:
            fields = _check_fields(fields, _scalar_fields(all_fields, cols))
            sums = {f: np.zeros(n_cond) for f in fields}
            sumsq = {f: np.zeros(n_cond) for f in fields}
            counts = {f: np.zeros(n_cond) for f in fields}
        cond = grid.condition(cols["index"])
        if grid.seed_major:  # a chunk's conditions wrap around: count over all of them
            c0, width = 0, n_cond
        else:  # a chunk's conditions are one contiguous range
            c0, width = int(cond[0]), int(cond[-1]) + 1 - int(cond[0])
        local = cond - c0
        sl = slice(c0, c0 + width)
        for f in fields:
            v = np.asarray(cols[f], np.float64)
            ok = ~np.isnan(v)
            v0 = np.where(ok, v, 0.0)
            sums[f][sl] += np.bincount(local, weights=v0, minlength=width)
            sumsq[f][sl] += np.bincount(local, weights=v0 * v0, minlength=width)
            counts[f][sl] += np.bincount(local, weights=ok.astype(np.float64), minlength=width)
    out = _axis_columns(grid)
    out["n"] = np.full(n_cond, grid.seeds, np.int64)
    for f in fields:
        n = counts[f]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, sums[f] / np.maximum(n, 1), np.nan)
            var = np.where(n > 1, (sumsq[f] - n * mean**2) / np.maximum(n - 1, 1), np.nan)
        out[f + "_mean"] = mean
        out[f + "_std"] = np.sqrt(np.maximum(var, 0.0))
        out[f + "_nan"] = (grid.seeds - n).astype(np.int64)
    return out


def _axis_columns(grid: sweep.Grid) -> dict[str, np.ndarray]:
    """Axis values of every condition without building the run table."""
    shape = grid.shape[:-1]
    idx = np.indices(shape).reshape(len(shape), -1)
    return {name: values[i] for (name, values), i in zip(grid.axes.items(), idx)}


def marginal(stats_table: dict, by: Sequence[str], fields: Sequence[str], where: dict | None = None):
    """Pool a :func:`condition_stats` table over every axis not in ``by`` (after keeping only
    the conditions matching ``where``, ``{axis: value}``, compared with ``np.isclose``).

    Returns a dict with the ``by`` columns (one row per distinct combination, sorted) and, per
    field, the pooled ``{f}_mean``, ``{f}_std`` (ddof=1, over all pooled runs) and ``{f}_n``
    (non-NaN runs). Pooling is exact: sums and sums of squares are rebuilt from mean, std, n."""
    for name in list(by) + list(where or {}):
        if name not in stats_table or name == "n" or name.endswith(("_mean", "_std", "_nan")):
            raise ValueError(f"unknown axis {name!r}; axes: {table_axes(stats_table)}")
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
        n = (cols["n"] - cols[f + "_nan"]).astype(np.float64)
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


def table_axes(t: dict) -> list:
    """The axis columns of a :func:`condition_stats` table."""
    return [k for k in t if k != "n" and not k.endswith(("_mean", "_std", "_nan"))]


def table_fields(t: dict) -> list:
    """The output fields summarised in a :func:`condition_stats` table."""
    return [k[:-5] for k in t if k.endswith("_mean")]


def per_seed(src, by: Sequence[str], fields: Sequence[str]):
    """Per setting (point of the ``by`` axes) and seed: each field's mean over the other axes
    (NaN runs excluded; NaN if all of them are NaN). With common random numbers these are paired
    across settings, and a bootstrap over seeds gives the uncertainty of a setting's mean.

    Returns ``(settings, values)``: ``settings`` the ``by`` columns (one row per setting, in grid
    order), ``values[f]`` of shape (n_settings, seeds)."""
    grid, chunks, all_fields = _source(src)
    for b in by:
        if b not in grid.names:
            raise ValueError(f"unknown axis {b!r}; axes: {list(grid.names)}")
    sizes = [grid.axes[b].size for b in by]
    n_set = int(np.prod(sizes, dtype=np.int64))
    pos = {name: i for i, name in enumerate(grid.names)}
    sums = counts = None
    for s0, s1, cols in chunks:
        if sums is None:
            fields = _check_fields(fields, _scalar_fields(all_fields, cols))
            sums = {f: np.zeros(n_set * grid.seeds) for f in fields}
            counts = {f: np.zeros(n_set * grid.seeds) for f in fields}
        index = cols["index"]
        setting = np.zeros(len(index), np.int64)
        for b, size in zip(by, sizes):
            i = pos[b]
            setting = setting * size + (index // grid.strides[i]) % grid.shape[i]
        cell = setting * grid.seeds + cols["seed"]
        for f in fields:
            v = np.asarray(cols[f], np.float64)
            ok = ~np.isnan(v)
            sums[f] += np.bincount(cell, weights=np.where(ok, v, 0.0), minlength=n_set * grid.seeds)
            counts[f] += np.bincount(cell, weights=ok.astype(np.float64), minlength=n_set * grid.seeds)
    idx = np.indices(sizes).reshape(len(sizes), -1) if by else np.zeros((0, 1), np.int64)
    settings = {b: grid.axes[b][i] for b, i in zip(by, idx)}
    values = {}
    for f in fields:
        with np.errstate(invalid="ignore", divide="ignore"):
            values[f] = np.where(counts[f] > 0, sums[f] / np.maximum(counts[f], 1), np.nan).reshape(n_set, grid.seeds)
    return settings, values


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
        while j + 1 < order.size and cost[order[j + 1]] == cost[order[i]] and benefit[order[j + 1]] == benefit[order[i]]:
            j += 1
        b = benefit[order[i]]
        if b > best:
            front[order[i:j + 1]] = True
            best = b
        i = j + 1
    return front


def setting_table(src, by: Sequence[str], fields: Sequence[str], *, n_resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> dict[str, np.ndarray]:
    """One row per setting of the ``by`` axes: per field, the mean over seeds (of per-seed means
    over the other axes) and a percentile bootstrap interval over seeds
    (:func:`tokdyn.stats.inference.bootstrap_ci`, the same resamples for every setting and field, so
    intervals of paired settings are comparable). Seeds whose value is NaN are dropped per
    setting (``{f}_nan`` counts them); a setting with fewer than 2 valid seeds gets NaN bounds."""
    settings, values = per_seed(src, by, fields)
    out = dict(settings)
    for f, v in values.items():  # v: (n_settings, seeds)
        bad = np.isnan(v)
        n_ok = (~bad).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f + "_mean"] = np.where(n_ok > 0, np.where(bad, 0.0, v).sum(1) / np.maximum(n_ok, 1), np.nan)
        lo, hi = np.full(len(v), np.nan), np.full(len(v), np.nan)
        if v.shape[1] >= 2:
            clean = np.flatnonzero(n_ok == v.shape[1])
            for b in range(0, clean.size, _BOOTSTRAP_BLOCK):  # bounded (block, n_resamples) buffer
                rows_ = clean[b:b + _BOOTSTRAP_BLOCK]
                ci = inference.bootstrap_ci(v[rows_], seed=seed, n_resamples=n_resamples, confidence=confidence, axis=1)
                lo[rows_], hi[rows_] = ci
            for r in np.flatnonzero((n_ok < v.shape[1]) & (n_ok >= 2)):  # rare: the valid seeds alone
                lo[r], hi[r] = inference.bootstrap_ci(v[r][~bad[r]], seed=seed, n_resamples=n_resamples,
                                                  confidence=confidence)
        out[f + "_low"], out[f + "_high"] = lo, hi
        out[f + "_nan"] = bad.sum(1).astype(np.int64)
    return out
