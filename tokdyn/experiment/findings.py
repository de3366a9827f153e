"""Findings: what a study claims to reproduce, the rule that decides it, and the verdict from the
study's own files.

A study that measures a seed finding returns its verdicts from ``findings(out)`` (its
:class:`~tokdyn.experiment.runner.Spec`'s ``findings``: ``out`` is the study's directory), a list
of :class:`Finding`; ``tokdyn reproduce`` (:mod:`tokdyn.reproduce`) collects them over the
registry and renders the report. Nothing a finding says is typed in by hand: every number comes
from a table the study wrote, read verified against its record (:func:`read`); a table that is
missing or fails its verification leaves its findings ``open``, naming the file (:func:`judge`).

The rules every finding shares (a finding states its own thresholds):

* a finding declares the least evidence that may decide it (:attr:`Finding.min_seeds`,
  :attr:`Finding.min_runs`); a study run below it, and any run of a quick preset (a smoke run),
  leaves it ``open`` whatever its numbers, with the reason (:func:`gate`, applied by :func:`judge`):
  its verdict reads ``open (smoke run: 3 seeds)`` (:attr:`Finding.label`);
* intervals over seeds are 95% intervals of the mean (:func:`seed_interval`; :data:`INTERVALS` says
  how, for a table's caption): a percentile bootstrap from :data:`BOOTSTRAP_SEEDS` seeds on,
  Student's t below (a bootstrap of 3 values understates the spread), made on the logit scale of a
  bounded quantity's range (an ARI, a rate, an accuracy) so that it never leaves it; fewer than
  :data:`MIN_SEEDS` seeds give no interval ("too few seeds for an interval", :data:`TOO_FEW`) and
  decide nothing (``open``); a rate of independent counts gets a Wilson interval
  (:func:`rate_interval`);
* a verdict compares an interval with a threshold that has a margin, never a point with a point:
  between "reproduced" and "refuted" lies a band where the verdict is ``open``;
* a claim stated in general (over variants) is ``refuted`` when one unit refutes it, ``reproduced``
  when every unit it applies to reproduces it, ``open`` otherwise (:func:`aggregate`);
* a paired test is printed difference first (:func:`paired_cell`): the mean difference with its
  interval, then t, p and Holm's p, then d_z; a difference smaller than its metric's practical
  threshold (:data:`NEGLIGIBLE`) is labelled negligible whatever its p.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

VERDICTS = ("reproduced", "refuted", "open")  # a finding's verdict; a unit may also be "n/a" or "control"
MIN_SEEDS = 3  # fewer seeds: no interval ("too few seeds for an interval") and no verdict
BOOTSTRAP_SEEDS = 10  # from this many seeds on, a percentile bootstrap; below, Student's t
N_RESAMPLES = 10_000
TOO_FEW = "too few seeds for an interval"


def intervals_text(n_resamples: int = N_RESAMPLES) -> str:
    """How :func:`seed_interval` makes its intervals, for a table's caption (:data:`INTERVALS` at
    the default ``n_resamples``; a sweep says its own ``--n-resamples``)."""
    return (
        f"95% intervals of the mean over seeds: a percentile bootstrap ({n_resamples:,} resamples) from "
        f"{BOOTSTRAP_SEEDS} seeds on, Student's t below (on the logit scale of a bounded score's range, so "
        f"it stays inside it); fewer than {MIN_SEEDS} seeds: {TOO_FEW}"
    )


INTERVALS = intervals_text()
# the ranges of bounded scores, for seed_interval's ``bounds`` (an ARI can be negative; its
# difference between two conditions lies in twice the range)
SCORE = (-1.0, 1.0)  # ARI, NMI, FG-ARI and their per-frame forms
RATE = (0.0, 1.0)  # rates and shares: collapse, accuracy, persistence, convergence
# the smallest difference that matters, per metric: a paired difference below it is negligible,
# whatever its p (a d_z over near-identical runs is large because their spread is tiny)
NEGLIGIBLE = {
    "ari": 0.01,
    "nmi": 0.01,
    "fg_ari": 0.01,
    "video_ari": 0.01,  # the video study's video FG-ARI
    "frame_ari": 0.01,  # and its per-frame FG-ARI
    "persistence": 0.02,
    "collapsed": 0.02,
    "collapse": 0.02,
    "accuracy": 0.01,
    "steps": 0.5,
    "switch_rate": 0.05,
}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One seed finding: the claim, where it comes from, the rule, the verdict, and what it rests on.

    Attributes:
      key: a short identifier (``"1a"``).
      title: the finding's name.
      claim: the statement the verdict is about.
      origin: where the claim comes from.
      rule: how the verdict is decided, with its thresholds.
      verdict: ``reproduced``, ``refuted`` or ``open``.
      basis: one line: the numbers the verdict rests on.
      header: column names of ``rows``.
      rows: the units (methods, variants, models), one list of cells each.
      study: the study whose files it reads.
      min_seeds: the fewest seeds that may decide it (fewer: ``open``, :func:`gate`).
      min_runs: the fewest rows of its table (runs, models) that may decide it.
      note: why it is ``open`` whatever its numbers (``smoke run: 3 seeds``); empty otherwise.
    """

    key: str
    title: str
    claim: str
    origin: str
    rule: str
    verdict: str = "open"
    basis: str = ""
    header: tuple = ()
    rows: list = dataclasses.field(default_factory=list)
    study: str = ""
    min_seeds: int = MIN_SEEDS
    min_runs: int = 0
    note: str = ""

    @property
    def label(self) -> str:
        """The verdict as the report prints it: ``open (smoke run: 3 seeds)`` with a :attr:`note`."""
        return f"{self.verdict} ({self.note})" if self.note else self.verdict


def summary_lines(found: Sequence[Finding]) -> list[str]:
    """A study summary's closing section: a ``## Findings`` heading, then a line a finding with its key, title,
    verdict (with its note) and what it rests on."""
    return ["", "## Findings", ""] + [f"- **{f.key}. {f.title}: {f.label}**. {f.basis or '-'}" for f in found]


def missing(finding: Finding, why: str) -> Finding:
    """``finding`` left ``open`` because its study's files are not there (``why``)."""
    return dataclasses.replace(finding, verdict="open", basis=why, rows=[], header=())


# ---------------------------------------------------------------------------------------------- intervals


def seed_interval(
    values, bounds: Optional[tuple] = None, *, n_resamples: int = N_RESAMPLES
) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the 95% interval of the mean of per-seed ``values`` (NaNs
    dropped): a percentile bootstrap from :data:`BOOTSTRAP_SEEDS` values on (it stays inside the
    values' own range), Student's t below; with ``bounds`` ``(low, high)``, the range of a bounded
    quantity (:data:`SCORE`, :data:`RATE`), the t interval is made on the logit scale of that range
    (:func:`tokdyn.stats.bounded_mean_interval`), so it never leaves it. NaN bounds for fewer than
    :data:`MIN_SEEDS` values (:data:`TOO_FEW`: :func:`interval` prints that). ``n_resamples``: the
    bootstrap's resamples (a sweep's ``--n-resamples``)."""
    from scipy import stats as sps

    from tokdyn import stats

    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < MIN_SEEDS:
        return mean, float("nan"), float("nan"), n
    if np.all(v == v[0]):
        return mean, mean, mean, n
    if n >= BOOTSTRAP_SEEDS:
        low, high = stats.bootstrap_ci(v, seed=0, n_resamples=n_resamples)
        return mean, float(low), float(high), n
    if bounds is not None:
        lo, hi = float(bounds[0]), float(bounds[1])
        if v.min() < lo or v.max() > hi:
            raise ValueError(f"bounds: values in [{v.min()}, {v.max()}] leave the range [{lo}, {hi}]")
        low, high = stats.bounded_mean_interval(v, lo, hi)
        return mean, low, high, n
    half = float(sps.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


def seed_intervals(
    samples: Sequence, bounds: Optional[tuple] = None, *, n_resamples: int = N_RESAMPLES
) -> list[tuple[float, float, float, int]]:
    """:func:`seed_interval` of each array of per-seed values in ``samples`` (``bounds`` and
    ``n_resamples`` as there), the same intervals
    (to float rounding): the samples that take the bootstrap and hold as many finite values are
    resampled together, by one :func:`tokdyn.stats.bootstrap_ci` call on their stack (the same
    draws for each row, as one call of its own would make), so a table of many conditions pays
    for one set of resamples, not one set a condition."""
    from tokdyn import stats

    finite = [np.asarray(v, np.float64).ravel() for v in samples]
    finite = [v[np.isfinite(v)] for v in finite]
    out: list = [None] * len(finite)
    by_size: dict[int, list[int]] = {}
    for i, v in enumerate(finite):
        if v.size >= max(BOOTSTRAP_SEEDS, MIN_SEEDS) and not np.all(v == v[0]):
            by_size.setdefault(int(v.size), []).append(i)
        else:
            out[i] = seed_interval(v, bounds, n_resamples=n_resamples)
    for n, rows in by_size.items():
        stack = np.stack([finite[i] for i in rows])  # (S, n)
        low, high = stats.bootstrap_ci(stack, seed=0, n_resamples=n_resamples)
        low, high = np.atleast_1d(low), np.atleast_1d(high)
        for j, i in enumerate(rows):
            out[i] = (float(stack[j].mean()), float(low[j]), float(high[j]), n)
    return out


def difference_bounds(bounds: tuple) -> tuple:
    """The range of a difference of two values of the range ``bounds``."""
    return (float(bounds[0]) - float(bounds[1]), float(bounds[1]) - float(bounds[0]))


def rate_interval(k: int, n: int) -> tuple[float, float, float]:
    """``(rate, low, high)``: the rate ``k / n`` of independent counts with its 95% Wilson interval
    (:func:`tokdyn.stats.wilson_interval`); NaN for ``n = 0``."""
    from tokdyn import stats

    if n <= 0:
        return float("nan"), float("nan"), float("nan")
    low, high = stats.wilson_interval(int(k), int(n))
    return k / n, low, high


def negligible(metric: str, diff) -> bool:
    """Whether the mean difference ``diff`` of ``metric`` is below its practical threshold
    (:data:`NEGLIGIBLE`; a metric not listed there has none: False)."""
    threshold = NEGLIGIBLE.get(metric)
    return threshold is not None and diff is not None and np.isfinite(diff) and abs(float(diff)) < threshold


def paired_cell(test: Mapping, digits: int = 3) -> str:
    """One paired test, difference first: ``Δ=+0.0001 [−0.0002, +0.0004], t=2.31, p=0.029,
    p_holm=0.52, d_z=-0.42``, then ``negligible (|Δ| < 0.01)`` when the difference is below its
    metric's threshold (:func:`negligible`). ``test``: a dict with ``mean_diff``, ``diff_low``,
    ``diff_high`` (the interval of the mean difference; absent or NaN: :data:`TOO_FEW`), ``t``,
    ``p``, ``p_holm`` (optional), ``d`` (d_z) and ``metric``."""

    def num(x, fmt):
        return "–" if x is None or not np.isfinite(x) else format(x, fmt)

    d = f"{digits}f"
    lo, hi = test.get("diff_low"), test.get("diff_high")
    ci = (
        f"[{num(lo, '+.' + d)}, {num(hi, '+.' + d)}]"
        if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi)
        else f"({TOO_FEW})"
    )
    cell = (
        f"Δ={num(test.get('mean_diff'), '+.' + d)} {ci}, t={num(test.get('t'), '.2f')}, p={num(test.get('p'), '.3g')}"
    )
    if "p_holm" in test:
        cell += f", p_holm={num(test.get('p_holm'), '.3g')}"
    cell += f", d_z={num(test.get('d'), '.2f')}"
    if negligible(test.get("metric", ""), test.get("mean_diff")):
        cell += f"; negligible (|Δ| < {NEGLIGIBLE[test['metric']]:g})"
    return cell


def aggregate(verdicts: Sequence[str]) -> str:
    """The verdict of a claim stated in general from those of its units (``n/a`` units left out):
    ``refuted`` when one unit refutes it, ``reproduced`` when every unit reproduces it, else ``open``."""
    units = [v for v in verdicts if v != "n/a"]
    if any(v == "refuted" for v in units):
        return "refuted"
    if units and all(v == "reproduced" for v in units):
        return "reproduced"
    return "open"


# ---------------------------------------------------------------------------------------------- cells and columns


def number(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, ``–`` for None or a non-finite value (a report's cell)."""
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def interval(mean, low, high, digits: int = 3) -> str:
    """``mean [low, high]`` as a report's cell, each number by :func:`number`; ``mean (too few
    seeds for an interval)`` when ``mean`` is finite and a bound is not (:func:`seed_interval`).

    Args:
      mean: the point estimate (None or non-finite: ``–``).
      low: the interval's lower bound.
      high: its upper bound.
      digits: decimals of each number.

    Returns:
      The cell, a string.
    """
    finite = lambda x: x is not None and np.isfinite(x)  # noqa: E731
    if finite(mean) and not (finite(low) and finite(high)):
        return f"{number(mean, digits)} ({TOO_FEW})"
    return f"{number(mean, digits)} [{number(low, digits)}, {number(high, digits)}]"


def column(table: Mapping, name: str) -> np.ndarray:
    """The column ``name`` of a table of columns (all NaN where the table lacks it)."""
    if name not in table:
        return np.full(len(next(iter(table.values()))) if table else 0, np.nan)
    return np.asarray(table[name])


def numbers(table: Mapping, name: str) -> np.ndarray:
    """:func:`column` as float64 (an empty or ``nan`` cell NaN)."""
    a = column(table, name)
    try:
        return a.astype(np.float64)
    except (TypeError, ValueError):
        return np.asarray([float(v) if str(v).strip() not in ("", "nan") else np.nan for v in a])


def strings(table: Mapping, name: str) -> np.ndarray:
    """:func:`column` as strings."""
    return np.asarray([str(v) for v in column(table, name)])


def per_seed(table: Mapping, sel: np.ndarray, value: str) -> np.ndarray:
    """Each seed's mean of ``value`` over the rows ``sel`` (NaNs left out), seeds in increasing order."""
    seed, col = numbers(table, "seed")[sel], numbers(table, value)[sel]
    ok = np.isfinite(col)
    _, inverse = np.unique(seed, return_inverse=True)
    n = np.bincount(inverse[ok], minlength=inverse.max() + 1 if inverse.size else 0)
    total = np.bincount(inverse[ok], weights=col[ok], minlength=n.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


# ---------------------------------------------------------------------------------------------- a study's tables


def read(out: str, name: str, study: str) -> tuple[Optional[dict], str]:
    """``(columns, "")`` of the table ``name`` of the directory ``out`` of the study ``study``,
    verified against the study's record (:func:`tokdyn.experiment.study.read_table`);
    ``(None, why)`` when it is missing or fails its verification (changed after the study wrote
    it, not listed in the study's record, or a record that is missing or fails its own checksum):
    such a table is never judged. ``why`` names the file as ``<study>/<name>``."""
    from tokdyn import io
    from tokdyn.experiment import study as study_dir

    rel = f"{study}/{name}"
    if not os.path.exists(os.path.join(out, name)):
        return None, f"{rel} is missing"
    try:
        return study_dir.read_table(out, name), ""
    except FileNotFoundError:
        return None, (
            f"{rel} cannot be verified: {study}/{study_dir.RECORD} (the study's record of its outputs) is "
            "missing; not judged"
        )
    except (io.CorruptFile, ValueError, OSError) as e:
        return None, f"{rel} fails its verification ({e}); not judged"


def judge(out: str, name: str, study: str, verdicts: Callable[[Mapping], list]) -> list[Finding]:
    """The findings of one table of a study: ``verdicts(table)`` of the table ``name`` of the study
    directory ``out``, read verified (:func:`read`).

    Args:
      out: the study's directory.
      name: the table's file name inside it.
      study: the study's name (errors name the file as ``<study>/<name>``).
      verdicts: ``table -> list of Finding``: the findings and their verdicts from the table's columns;
        called with ``{}`` when the table cannot be read, to learn which findings it states.

    Returns:
      A list of :class:`Finding`; when the table is missing or fails its verification, each finding
      ``verdicts({})`` states, left ``open`` naming the file (:func:`missing`).
    """
    table, why = read(out, name, study)
    found = verdicts(table if table is not None else {})
    return gate(found, out, table) if table is not None else [missing(f, why) for f in found]


def evidence(out: str, table: Optional[Mapping] = None) -> tuple[str, Optional[int], int]:
    """``(preset, seeds, rows)`` of the study directory ``out``: its configuration's ``preset``
    (from its record; ``""`` when it has none), the seeds ``table`` holds (the distinct values of
    its ``seed`` column; else the configuration's ``seeds``; None when neither says) and the rows
    of ``table`` (0 without one)."""
    from tokdyn.experiment import study as study_dir

    try:
        config = study_dir.read_record(out).get("config", {}) or {}
    except (OSError, ValueError, AttributeError):
        config = {}
    preset = str(config.get("preset", "") or "")
    rows = len(next(iter(table.values()))) if table else 0
    seeds = None
    if table and "seed" in table:
        s = numbers(table, "seed")
        seeds = int(np.unique(s[np.isfinite(s)]).size)
    elif isinstance(config.get("seeds"), int):
        seeds = int(config["seeds"])
    return preset, seeds, rows


def gate(
    found: Sequence[Finding], out: str, table: Optional[Mapping] = None, *, preset: Optional[str] = None
) -> list[Finding]:
    """``found`` with every finding left ``open`` that the study's run cannot decide: a run of a
    quick preset (a smoke run: ``note`` ``smoke run: N seeds``), or one below the finding's
    declared evidence (fewer seeds than its ``min_seeds``, fewer rows of ``table`` than its
    ``min_runs``); the units' decisive verdicts in its rows (a ``verdict`` column) are opened too.
    The evidence: :func:`evidence` of ``out`` and ``table``; ``preset``, where given, is the run's own (a
    study judging its findings before its record is written) in place of the record's."""
    recorded, seeds, rows = evidence(out, table)
    preset = recorded if preset is None else preset
    seen = f"{seeds} seeds" if seeds is not None else f"{rows} rows"
    out_found = []
    for f in found:
        note = ""
        if preset == "quick":
            note = f"smoke run: {seen}"
        elif seeds is not None and seeds < f.min_seeds:
            note = f"too little evidence: {seeds} seeds, it needs {f.min_seeds}"
        elif table is not None and rows < f.min_runs:
            note = f"too little evidence: {rows} runs, it needs {f.min_runs}"
        if note:
            col = [i for i, h in enumerate(f.header) if str(h).startswith("verdict")]
            opened = [
                [("open" if i in col and c in ("reproduced", "refuted") else c) for i, c in enumerate(r)]
                for r in f.rows
            ]
            f = dataclasses.replace(f, verdict="open", note=note, rows=opened)
        out_found.append(f)
    return out_found
