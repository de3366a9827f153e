"""Findings: what a study claims to reproduce, the rule that decides it, and the verdict from the
study's own files.

A study that measures a seed finding returns its verdicts from ``findings(out)`` (its
:class:`~tokdyn.experiment.runner.Spec`'s ``findings``: ``out`` is the study's directory), a list
of :class:`Finding`; ``tokdyn reproduce`` (:mod:`tokdyn.reproduce`) collects them over the
registry and renders the report. Nothing a finding says is typed in by hand: every number comes
from a table the study wrote, read verified against its record (:func:`read`); a table that is
missing or fails its verification leaves its findings ``open``, naming the file (:func:`judge`).

The rules every finding shares (a finding states its own thresholds):

* intervals over seeds are 95% intervals of the mean (:func:`seed_interval`): a percentile
  bootstrap from :data:`BOOTSTRAP_SEEDS` seeds on, Student's t below (a bootstrap of 3 values
  understates the spread); fewer than :data:`MIN_SEEDS` seeds decide nothing (``open``);
* a verdict compares an interval with a threshold that has a margin, never a point with a point:
  between "reproduced" and "refuted" lies a band where the verdict is ``open``;
* a claim stated in general (over variants) is ``refuted`` when one unit refutes it, ``reproduced``
  when every unit it applies to reproduces it, ``open`` otherwise (:func:`aggregate`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

VERDICTS = ("reproduced", "refuted", "open")  # a finding's verdict; a unit may also be "n/a" or "control"
MIN_SEEDS = 3  # an interval over fewer seeds decides nothing
BOOTSTRAP_SEEDS = 10  # from this many seeds on, a percentile bootstrap; below, Student's t
N_RESAMPLES = 10_000


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


def missing(finding: Finding, why: str) -> Finding:
    """``finding`` left ``open`` because its study's files are not there (``why``)."""
    return dataclasses.replace(finding, verdict="open", basis=why, rows=[], header=())


# ---------------------------------------------------------------------------------------------- intervals


def seed_interval(values) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the 95% interval of the mean of per-seed ``values`` (NaNs
    dropped): a percentile bootstrap from :data:`BOOTSTRAP_SEEDS` values on, Student's t below;
    NaN bounds for fewer than 2 values."""
    from scipy import stats as sps

    from tokdyn import stats

    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    if np.all(v == v[0]):
        return mean, mean, mean, n
    if n >= BOOTSTRAP_SEEDS:
        low, high = stats.bootstrap_ci(v, seed=0, n_resamples=N_RESAMPLES)
        return mean, float(low), float(high), n
    half = float(sps.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


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
    """``mean [low, high]`` as a report's cell, each number by :func:`number`.

    Args:
      mean: the point estimate (None or non-finite: ``–``).
      low: the interval's lower bound.
      high: its upper bound.
      digits: decimals of each number.

    Returns:
      The cell, a string.
    """
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
    return found if table is not None else [missing(f, why) for f in found]
