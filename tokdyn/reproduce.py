"""Run every study, then write one report with a verdict for each seed finding
(``tokdyn reproduce [--quick] [--out DIR] [--studies a,b,...]``).

:func:`main` runs the studies of ``cfg.studies`` one after the other, each into ``OUT/<study>``
on its default configuration (``cfg.quick``: its ``Config.quick()`` preset, where it has one),
reusing what an earlier run finished there (every study resumes), timing each, and recording a
study that fails (its error) while the others still run. A study whose tables fail their
verification (:func:`verify_study`: changed since the study recorded their SHA-256 in its
``config.json``) is not reused: those tables are set aside to ``corrupt/`` and the study's run
recomputes them from its kept (and verified) parts. ``latent-diagnostics`` and
``latent-optimisation`` read the reasoners that ``latent-reasoning`` trains into
``OUT/latent-reasoning`` (their ``source``, with the matching ``preset``). ``OUT`` itself is
stamped with ``quick`` (:mod:`tokdyn.experiment.study`): a directory made with the other preset
is refused unless ``fresh``, which empties it.

Then it reads the studies' own output files and writes ``OUT/report.md`` and ``OUT/report.html``
(the same text, with each study's figures): for each seed finding a claim, the rule that decides
it, the numbers and intervals it rests on, and a verdict -- ``reproduced``, ``refuted`` or
``open`` (the data cannot decide: too few seeds or models, an interval that straddles a
threshold, a study that did not run) -- and the time each study took. Nothing in the report is
typed in by hand: every number is computed from ``OUT/<study>/*.csv`` by the verdict functions
below, which are public so that they can be checked on synthetic tables (``tests/test_reproduce.py``).
Every table is read verified against its study's record
(:func:`tokdyn.experiment.study.read_table`): a table that is missing, or fails its verification
(a study not run this time whose table was changed since), leaves its findings ``open``, naming
the file -- never ``reproduced`` or ``refuted`` from data the study did not write.

The rules (the constants below; the report states each with its numbers):

* intervals over seeds are 95% intervals of the mean: a percentile bootstrap
  (:func:`tokdyn.stats.bootstrap_ci`) from :data:`BOOTSTRAP_SEEDS` seeds on, Student's t below
  (a bootstrap of 3 values understates the spread); fewer than :data:`MIN_SEEDS` seeds decide
  nothing (``open``);
* a verdict compares an interval with a threshold that has a margin, never a point with a point:
  between "reproduced" and "refuted" lies a band where the verdict is ``open``;
* a claim stated in general (over variants) is ``refuted`` when one unit refutes it, ``reproduced``
  when every unit it applies to reproduces it, ``open`` otherwise; the report names every unit.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import os
import platform
import re
import sys
import time
import traceback
from typing import Mapping, Optional, Sequence

import numpy as np

from tokdyn import _checks, io
from tokdyn.experiment import registry

STUDIES = registry.NAMES  # in the order they run (tokdyn.experiment.registry)
MODULES = {e.name: e.module for e in registry.STUDIES}
SOURCE = "latent-reasoning"  # the study whose directory the two analyses read
ANALYSES = ("latent-diagnostics", "latent-optimisation")
RECORD_NAME = "config.json"  # a study's record (tokdyn.experiment.study.RECORD): its tables' SHA-256
SUMMARIES = {"token-dynamics": "overall.csv", "token-dynamics-sweep": "report.md", "collapse": "summary.json"}
STUDY = "reproduce"
REPORT = "report.md"
VERDICTS = ("reproduced", "refuted", "open")  # a finding's verdict; a unit may also be "n/a" or "control"
SKIP_DIRS = {"parts", "sweeps", "chunks", "checkpoints", "corrupt", "curves", "results"}  # no figures of the report

MIN_SEEDS = 3  # an interval over fewer seeds decides nothing
BOOTSTRAP_SEEDS = 10  # from this many seeds on, a percentile bootstrap; below, Student's t
N_RESAMPLES = 10_000
# half a unit of the last digit printed in the published token-dynamics table
PUBLISHED_PRECISION = {"ari": 0.0005, "nmi": 0.0005, "steps": 0.005, "collapsed": 0.005}
COLLAPSE_RARE = 0.05  # visual tokens: a collapse rate below this (95% upper bound) is rare, above it common
GRID_MARGIN = 0.05  # grid diffusion: "as well as" the token models means within this share of sentences
MARKERS_BAND = (0.78, 1.00)  # the claimed share of the latent block's gain that the markers alone keep
MARKERS_MARGIN = 0.05  # refuted only when the interval misses the band widened by this
MARKERS_MAX_WIDTH = 0.6  # an interval wider than this is consistent with everything: open
SHIFT_DISCONNECTED, SHIFT_CONNECTED = 0.05, 0.20  # input -> latent: cosine distance the latents move
FLIP_DISCONNECTED, FLIP_CONNECTED = 0.10, 0.15  # latent -> answer: share of answers an intervention flips
GAIN_EXCLUDED = 0.01  # latent optimisation: refuted when a gain of this much accuracy is excluded
DMLR = "es_entropy_best"  # the paper's full method (REINFORCE on its reward, best-patch injection)


@dataclasses.dataclass(frozen=True)
class Config:
    """What ``tokdyn reproduce`` runs (the output directory is stamped with ``quick``).

    Attributes:
      quick: run each study's quick preset (minutes in all; most verdicts then stay open) instead of
        its default configuration (hours).
      studies: the studies to run, in this order, names from tokdyn.reproduce.STUDIES; the report
        covers every study found in the output directory.
    """

    quick: bool = False
    studies: tuple = STUDIES

    def validate(self) -> "Config":
        """Check every field; ``ValueError`` naming the field, the value and what is allowed."""
        if not isinstance(self.quick, bool):
            raise TypeError(f"quick must be a bool, got {self.quick!r}")
        if isinstance(self.studies, str) or not self.studies:
            raise ValueError(f"studies must name at least one of {', '.join(STUDIES)}, got {self.studies!r}")
        for name in self.studies:
            if name not in MODULES:
                raise ValueError(f"studies: unknown study {name!r}; choose from {', '.join(STUDIES)}")
        _checks.distinct("studies", self.studies)  # each study runs once
        return self


def study_config(name: str, quick: bool, out: str):
    """The configuration ``tokdyn reproduce`` runs the study ``name`` with: its default (``quick``:
    its ``Config.quick()`` preset where it has one); the analyses read ``out/latent-reasoning``."""
    cls = importlib.import_module(MODULES[name]).Config
    cfg = cls.quick() if quick and callable(getattr(cls, "quick", None)) else cls()
    if name in ANALYSES:
        cfg = dataclasses.replace(cfg, source=os.path.join(out, SOURCE), preset="quick" if quick else "default")
    return cfg


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


def _f(x, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ci(mean, low, high, digits: int = 3) -> str:
    return f"{_f(mean, digits)} [{_f(low, digits)}, {_f(high, digits)}]"


def _col(table: Mapping, name: str) -> np.ndarray:
    """The column ``name`` of a table of columns (all NaN where the table lacks it)."""
    if name not in table:
        return np.full(len(next(iter(table.values()))) if table else 0, np.nan)
    return np.asarray(table[name])


def _num(table: Mapping, name: str) -> np.ndarray:
    a = _col(table, name)
    try:
        return a.astype(np.float64)
    except (TypeError, ValueError):
        return np.asarray([float(v) if str(v).strip() not in ("", "nan") else np.nan for v in a])


def _str(table: Mapping, name: str) -> np.ndarray:
    return np.asarray([str(v) for v in _col(table, name)])


def _per_seed(table: Mapping, sel: np.ndarray, value: str) -> np.ndarray:
    """Each seed's mean of ``value`` over the rows ``sel`` (NaNs left out), seeds in increasing order."""
    seed, col = _num(table, "seed")[sel], _num(table, value)[sel]
    ok = np.isfinite(col)
    _, inverse = np.unique(seed, return_inverse=True)
    n = np.bincount(inverse[ok], minlength=inverse.max() + 1 if inverse.size else 0)
    total = np.bincount(inverse[ok], weights=col[ok], minlength=n.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


@dataclasses.dataclass
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


# ---------------------------------------------------------------------------------------------- 1. token dynamics


def _published():
    return importlib.import_module(MODULES["token-dynamics"]).PUBLISHED_OVERALL


def published_cell(values, published: float, precision: float) -> tuple[str, tuple]:
    """Verdict of one cell of the published table from per-seed ``values`` of our run: the
    published figure, as the interval ``published ± precision`` (its rounding), ``reproduced`` when
    it meets our 95% interval over seeds; ``refuted`` when it misses that interval widened by
    sqrt(2) about our mean (the interval of a difference between two means of as many seeds);
    ``open`` in between, or with fewer than :data:`BOOTSTRAP_SEEDS` seeds. Returns the verdict and
    ``(mean, low, high, n)``."""
    mean, low, high, n = seed_interval(values)
    if n < BOOTSTRAP_SEEDS or not np.isfinite(low):
        return "open", (mean, low, high, n)
    lo_p, hi_p = published - precision, published + precision
    if hi_p >= low and lo_p <= high:
        return "reproduced", (mean, low, high, n)
    wide_low, wide_high = mean - np.sqrt(2) * (mean - low), mean + np.sqrt(2) * (high - mean)
    if hi_p < wide_low or lo_p > wide_high:
        return "refuted", (mean, low, high, n)
    return "open", (mean, low, high, n)


def token_dynamics_findings(runs: Mapping, published: Optional[Mapping] = None) -> list[Finding]:
    """Findings 1a (mean ARI per method) and 1b (NMI, steps and collapse rate) from the study's
    ``runs.csv`` columns: per method and seed, the mean over the conditions; each cell by
    :func:`published_cell`."""
    published = _published() if published is None else published
    rule = (f"Per method, each seed's mean over the study's conditions; our 95% interval of the mean over seeds "
            f"(percentile bootstrap, {N_RESAMPLES:,} resamples; at least {BOOTSTRAP_SEEDS} seeds, else open). "
            "A cell is reproduced when the published figure (± half a unit of its last printed digit) meets our "
            "interval, refuted when it misses our interval widened by √2 about our mean (the interval of a difference "
            "of two means of as many seeds), open in between. The finding is reproduced when every cell is, refuted "
            "when one is.")
    method = _str(runs, "method")
    rows = {"ari": [], "other": []}
    verdicts = {"ari": [], "other": []}
    for name in dict.fromkeys(method.tolist()):
        if name not in published:
            continue
        for metric in ("ari", "nmi", "steps", "collapsed"):
            if metric not in runs or metric not in published[name]:
                continue
            per_seed = _per_seed(runs, method == name, metric)
            v, (mean, low, high, n) = published_cell(per_seed, published[name][metric], PUBLISHED_PRECISION[metric])
            group = "ari" if metric == "ari" else "other"
            digits = 2 if metric in ("steps", "collapsed") else 3
            rows[group].append([name, metric, _ci(mean, low, high, digits), _f(published[name][metric], digits),
                                str(n), v])
            verdicts[group].append(v)
    header = ("method", "metric", "ours: mean [95% interval over seeds]", "published", "seeds", "verdict")
    a = Finding("1a", "Token dynamics: the published ARI table",
                "Each update rule's mean ARI over the nine conditions equals the published figure "
                "(" + ", ".join(f"{k} {v['ari']:.3f}" for k, v in published.items()) + ").",
                "the published study \"Formalizing latent visual reasoning: token dynamics\" (30 seeds)", rule,
                aggregate(verdicts["ari"]) if verdicts["ari"] else "open",
                "; ".join(f"{r[0]} {r[2]} vs {r[3]}" for r in rows["ari"]), header, rows["ari"], "token-dynamics")
    b = Finding("1b", "Token dynamics: the rest of the published table",
                "Each rule's mean NMI, steps and collapse rate equal the published figures.", a.origin, rule,
                aggregate(verdicts["other"]) if verdicts["other"] else "open",
                f"{sum(v == 'reproduced' for v in verdicts['other'])} of {len(verdicts['other'])} cells reproduced, "
                f"{sum(v == 'refuted' for v in verdicts['other'])} refuted", header, rows["other"], "token-dynamics")
    return [a, b]


# ---------------------------------------------------------------------------------------------- 2. visual tokens


def visual_tokens_finding(table: Mapping) -> Finding:
    """Finding 2a from the visual-token study's ``results.csv``: the collapse rate of the main
    grid's models in the cells where training is adequate (the study's own cell verdicts at the
    largest budget: not capacity-limited, not at chance, loss no longer falling), with an exact
    (Clopper-Pearson) 95% interval."""
    from scipy import stats as sps

    vt = importlib.import_module(MODULES["visual-tokens"])
    f = Finding("2a", "Visual tokens: collapse where training is adequate",
                "Visual-token autoencoders collapse (the decoder names one token for most types) even where training "
                "is adequate.",
                "the published \"Visual Token Diffusion Language Model\" investigation (accuracy stuck at the majority "
                "token's frequency)",
                f"Main grid at its largest budget; a cell is adequately trained when the study's verdict for it is "
                f"reconstructs, plateau or collapse (not capacity, at chance or too few steps). Over the models of "
                f"those cells, the share flagged collapsed (dominant prediction > 0.9) with its exact 95% interval: "
                f"reproduced when the interval lies above {COLLAPSE_RARE:g} (collapse is common), refuted when it "
                f"lies below {COLLAPSE_RARE:g} (collapse is rare: with no collapsed model this needs "
                f"{int(np.log(0.025) / np.log(1 - COLLAPSE_RARE)) + 1} models), open otherwise.", study="visual-tokens")
    part = _str(table, "part")
    main = part == "main"
    if not main.any():
        return missing(f, "no model of the main grid in results.csv")
    steps = _num(table, "steps")
    budget = np.nanmax(steps[main])
    keys = ("vocab_size", "grid", "colours")
    cols = {k: _num(table, k) for k in keys}
    mode = _str(table, "mode")
    collapsed = np.asarray([str(v).strip().lower() in ("1", "1.0", "true") for v in _col(table, "collapsed")])
    nanmean = lambda a: float(np.nanmean(a)) if np.any(np.isfinite(a)) else float("nan")  # noqa: E731
    rows, n, k, counts = [], 0, 0, {}
    at = main & (steps == budget)
    cells = dict.fromkeys((cols["vocab_size"][i], cols["grid"][i], cols["colours"][i], mode[i])
                          for i in np.flatnonzero(at))
    for V, g, c, m in cells:
        sel = at & (cols["vocab_size"] == V) & (cols["grid"] == g) & (cols["colours"] == c) & (mode == m)
        verdict = vt.cell_verdict(nanmean(_num(table, "accuracy")[sel]), nanmean(_num(table, "dominant_freq")[sel]),
                                  nanmean(_num(table, "train_loss_drop_tail")[sel]), int(V), int(g), int(c),
                                  nanmean(_num(table, "train_loss_norm_last")[sel]))
        counts[verdict] = counts.get(verdict, 0) + 1
        adequate = verdict in ("reconstructs", "plateau", "collapse")
        if adequate:
            n += int(sel.sum())
            k += int(collapsed[sel].sum())
        rows.append([f"V={int(V)} {int(g)}x{int(g)}x{int(c)} {m}", verdict, "yes" if adequate else "no",
                     f"{int(collapsed[sel].sum())} / {int(sel.sum())}", _f(nanmean(_num(table, "accuracy")[sel]))])
    f.header = ("cell", "study's verdict", "adequate", "collapsed models", "accuracy")
    f.rows = rows
    if n == 0:
        f.verdict, f.basis = "open", f"no adequately trained cell at {int(budget)} steps"
        return f
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = float(ci.low), float(ci.high)
    f.verdict = "reproduced" if low > COLLAPSE_RARE else "refuted" if high < COLLAPSE_RARE else "open"
    all_main = int(collapsed[main].sum())
    f.basis = (f"{k} of {n} adequately trained models collapsed at {int(budget)} steps: rate {_ci(k / n, low, high)} "
               f"(exact 95%); {sum(counts.get(v, 0) for v in ('reconstructs', 'plateau', 'collapse'))} of {len(cells)} "
               f"cells adequate; {all_main} of {int(main.sum())} main-grid models collapsed at any budget")
    return f


def grid_diffusion_finding(table: Mapping) -> Finding:
    """Finding 2b from the grid-diffusion study's ``results.csv``: the share of grammatical
    sentences of the best grid model against the best token model (sequence scope), each with its
    95% interval over seeds."""
    f = Finding("2b", "Grid diffusion: the two-stage route against modelling tokens directly",
                "The two-stage visual-token language model (diffusion over colour grids, decoded by the autoencoder) "
                "generates text as well as a model of the tokens themselves of the same size and budget.",
                "the published visual-token language model's design (its diffusion stage was planned, never shown)",
                f"Share of grammatical sentences among the samples, per model kind a 95% interval over seeds (at least "
                f"{MIN_SEEDS} seeds). The best grid model and the best token model (highest means) are compared with "
                f"a margin of {GRID_MARGIN:g}: reproduced when the grid model's lower bound is within the margin of "
                f"the token model's upper bound or above it, refuted when the grid model's upper bound lies more than "
                f"the margin below the token model's lower bound, open otherwise.", study="grid-diffusion")
    scope, model, value = _str(table, "scope"), _str(table, "model"), _num(table, "grammatical_sentences")
    seq = scope == "sequence"
    stats_of = {}
    for m in dict.fromkeys(model[seq].tolist()):
        stats_of[m] = seed_interval(value[seq & (model == m)])
    f.header = ("model", "grammatical sentences: mean [95% interval over seeds]", "seeds")
    f.rows = [[m, _ci(*s[:3]), str(s[3])] for m, s in stats_of.items()]
    grid = {m: s for m, s in stats_of.items() if m.startswith("grid_")}
    token = {m: s for m, s in stats_of.items() if m.startswith("token_")}
    if not grid or not token:
        f.verdict, f.basis = "open", "the run lacks grid models or token models"
        return f
    g = max(grid, key=lambda m: grid[m][0])
    t = max(token, key=lambda m: token[m][0])
    (gm, gl, gh, gn), (tm, tl, th, tn) = grid[g], token[t]
    f.basis = f"best grid model {g} {_ci(gm, gl, gh)} vs best token model {t} {_ci(tm, tl, th)} ({gn} and {tn} seeds)"
    if min(gn, tn) < MIN_SEEDS or not (np.isfinite(gl) and np.isfinite(tl)):
        f.verdict = "open"
    elif gl >= th - GRID_MARGIN:
        f.verdict = "reproduced"
    elif gh < tl - GRID_MARGIN:
        f.verdict = "refuted"
    else:
        f.verdict = "open"
    return f


# ---------------------------------------------------------------------------------------------- 3.-5. latent reasoning


def markers_unit(gain_low, gain_high, block_gain_low, seeds: int) -> str:
    """Verdict of one variant on the markers claim: ``n/a`` without a gain (the block's gain over
    no block has no 95% interval above 0); ``open`` with fewer than :data:`MIN_SEEDS` seeds;
    ``refuted`` when the interval of the share retained misses :data:`MARKERS_BAND` widened by
    :data:`MARKERS_MARGIN`; ``reproduced`` when it meets the band and is at most
    :data:`MARKERS_MAX_WIDTH` wide; ``open`` otherwise."""
    lo_b, hi_b = MARKERS_BAND
    if not np.isfinite(block_gain_low) or block_gain_low <= 0:
        return "n/a"
    if seeds < MIN_SEEDS or not (np.isfinite(gain_low) and np.isfinite(gain_high)):
        return "open"
    if gain_high < lo_b - MARKERS_MARGIN or gain_low > hi_b + MARKERS_MARGIN:
        return "refuted"
    if gain_low <= hi_b and gain_high >= lo_b and gain_high - gain_low <= MARKERS_MAX_WIDTH:
        return "reproduced"
    return "open"


def markers_finding(decomposition: Mapping, seeds: int) -> Finding:
    """Finding 3 from the latent-diagnostics study's ``decomposition.csv`` (final checkpoints,
    setting ``markers_only``: the share of the latent block's gain the boundary markers alone
    keep, with the study's paired bootstrap interval over instances); ``seeds``: the source's."""
    lo_b, hi_b = MARKERS_BAND
    f = Finding("3", "Boundary markers' share of the latent gain",
                f"The latent block's boundary markers alone (its slots removed) keep {lo_b:.0%}–{hi_b:.0%} of the "
                "block's gain in accuracy over no block.", "arXiv 2606.01287",
                f"Per variant with a latent block, at its final checkpoint: the share of the block's gain that "
                f"markers_only keeps, with the study's 95% paired bootstrap interval over test instances; a variant "
                f"counts only where the block's gain itself has an interval above 0, and only from {MIN_SEEDS} seeds "
                f"on. A variant reproduces the claim when its interval meets [{lo_b:g}, {hi_b:g}] and is at most "
                f"{MARKERS_MAX_WIDTH:g} wide, refutes it when its interval misses [{lo_b - MARKERS_MARGIN:g}, "
                f"{hi_b + MARKERS_MARGIN:g}]; the claim is refuted when one variant refutes it, reproduced when every "
                f"variant that counts reproduces it, open otherwise.", study="latent-diagnostics")
    sel = (_str(decomposition, "stage") == "final") & (_str(decomposition, "setting") == "markers_only")
    if not sel.any():
        return missing(f, "no markers_only row at a final checkpoint in decomposition.csv")
    verdicts, rows = [], []
    for i in np.flatnonzero(sel):
        g = {k: _num(decomposition, k)[i] for k in ("block_gain", "block_gain_low", "block_gain_high",
                                                    "gain_retained", "gain_low", "gain_high", "accuracy")}
        v = markers_unit(g["gain_low"], g["gain_high"], g["block_gain_low"], seeds)
        verdicts.append(v)
        rows.append([_str(decomposition, "variant")[i], _ci(g["block_gain"], g["block_gain_low"], g["block_gain_high"]),
                     _ci(g["gain_retained"], g["gain_low"], g["gain_high"]) if v != "n/a" else "no gain to share", v])
    f.header = ("variant", "block's gain over no block [95%]", "markers keep: share [95%]", "verdict")
    f.rows = rows
    f.verdict = aggregate(verdicts)
    f.basis = "; ".join(f"{r[0]} {r[2]}" for r in rows if r[3] != "n/a") or "no variant's block has a gain"
    if seeds < MIN_SEEDS:
        f.basis += f" (source trained with {seeds} seeds: open)"
    return f




def _strongest(table: Mapping, sel: np.ndarray, by: str, value: str):
    """The ``by`` level with the largest mean over seeds of ``value`` (each seed's mean over its
    rows), and :func:`seed_interval` of it."""
    best = None
    for level in dict.fromkeys(_str(table, by)[sel].tolist()):
        s = seed_interval(_per_seed(table, sel & (_str(table, by) == level), value))
        if best is None or (np.isfinite(s[0]) and s[0] > best[1][0]):
            best = (level, s)
    return best


def _connection(mean_low_high_n, disconnected: float, connected: float) -> str:
    mean, low, high, n = mean_low_high_n
    if n < MIN_SEEDS or not np.isfinite(low):
        return "open"
    return "reproduced" if high < disconnected else "refuted" if low > connected else "open"


def mediation_findings(mediation: Mapping) -> list[Finding]:
    """Findings 4a (input -> latent) and 4b (latent -> answer) from the latent-diagnostics
    study's ``mediation.csv``: per feedback variant, the perturbation that moves its latents most
    (cosine distance, mean over latent steps) and the intervention on its latents that flips most
    answers, each with a 95% interval over seeds."""
    what, variant = _str(mediation, "what"), _str(mediation, "variant")
    origin = "arXiv 2602.22766 (\"Imagination helps, but not yet in latent space\")"
    a = Finding("4a", "Input → latent: do the latents depend on the image?",
                "The latent tokens are disconnected from the input: perturbing the image barely moves them.", origin,
                f"Per feedback variant, the image perturbation that moves its latents most (cosine distance, mean over "
                f"latent steps and instances), a 95% interval over seeds (at least {MIN_SEEDS}): the variant shows the "
                f"disconnect (reproduced) when the interval lies below {SHIFT_DISCONNECTED:g}, not (refuted) when it "
                f"lies above {SHIFT_CONNECTED:g}, open otherwise. The claim is refuted when one variant refutes it, "
                f"reproduced when every variant reproduces it. The text variant's caption states, moved by the same "
                f"perturbation, are shown for scale.", study="latent-diagnostics")
    b = Finding("4b", "Latent → answer: do the answers depend on the latents?",
                "The answers are disconnected from the latent tokens: intervening on the latents barely changes them.",
                origin,
                f"Per feedback variant, the intervention on its latents (zeros, noise, mean, constant, swap, another "
                f"variant's) that flips most answers, a 95% interval over seeds of the flip rate (at least "
                f"{MIN_SEEDS}): disconnected (reproduced) when the interval lies below {FLIP_DISCONNECTED:g}, "
                f"connected (refuted) when it lies above {FLIP_CONNECTED:g}, open otherwise; aggregated over variants "
                f"as in 4a.",
                study="latent-diagnostics")
    names = list(dict.fromkeys(variant[what == "latent"].tolist()))
    if not names:
        return [missing(a, "no latent rows in mediation.csv"), missing(b, "no intervention rows in mediation.csv")]
    caption = what == "caption"
    va, vb, ra, rb = [], [], [], []
    for name in names:
        level, s = _strongest(mediation, (what == "latent") & (variant == name), "perturbation", "cosine_distance")
        ref = _num(mediation, "cosine_distance")[caption & (_str(mediation, "perturbation") == level)]
        v = _connection(s, SHIFT_DISCONNECTED, SHIFT_CONNECTED)
        va.append(v)
        ra.append([name, level, _ci(*s[:3]), str(s[3]), _f(np.mean(ref)) if ref.size else "–", v])
        sel = (what == "intervention") & (variant == name)
        if sel.any():
            level, s = _strongest(mediation, sel, "perturbation", "flip_rate")
            lv = sel & (_str(mediation, "perturbation") == level)
            drop = seed_interval(_per_seed(mediation, lv, "accuracy") - _per_seed(mediation, lv, "accuracy_before"))
            v = _connection(s, FLIP_DISCONNECTED, FLIP_CONNECTED)
            vb.append(v)
            rb.append([name, level, _ci(*s[:3]), _ci(*drop[:3]), str(s[3]), v])
    a.header = ("variant", "strongest perturbation", "latents move (cosine distance) [95%]", "seeds",
                "text's caption states move", "verdict")
    a.rows, a.verdict = ra, aggregate(va)
    a.basis = "; ".join(f"{r[0]} {r[2]} ({r[1]})" for r in ra)
    b.header = ("variant", "strongest intervention", "answers flipped [95%]", "accuracy change [95%]", "seeds",
                "verdict")
    b.rows, b.verdict = rb, aggregate(vb) if vb else "open"
    b.basis = "; ".join(f"{r[0]} {r[2]} ({r[1]})" for r in rb) or "no intervention rows in mediation.csv"
    return [a, b]


def optimisation_finding(table: Mapping, tests: Optional[Mapping] = None) -> Finding:
    """Finding 5 from the latent-optimisation study's ``optimiser.csv`` (and
    ``optimiser_tests.csv`` for the Holm-corrected p-values shown beside): per variant and method,
    the change in accuracy over all families (after − before), a 95% interval over seeds; the
    verdict rests on the paper's full method (:data:`DMLR`)."""
    f = Finding("5", "Confidence-driven latent optimisation (DMLR)",
                "Optimising the latents at inference to make the model more confident (REINFORCE on the top-k-entropy "
                "reward with best-patch injection) improves its accuracy.", "arXiv 2512.12623 (DMLR)",
                f"Per variant, the change in accuracy over all families (after − before), a 95% interval over seeds "
                f"(at least {MIN_SEEDS}): improves (reproduced) when the interval lies above 0, does not (refuted) "
                f"when it lies below +{GAIN_EXCLUDED:g} (a gain of {GAIN_EXCLUDED:g} or more is excluded), open "
                f"otherwise. The verdict is the paper's full method's ({DMLR}), refuted when one variant refutes it, "
                f"reproduced when every variant reproduces it; the other methods are listed with the same rule. The "
                f"paired p-value over instances (Holm) is the study's.", study="latent-optimisation")
    fam, method, variant = _str(table, "family"), _str(table, "method"), _str(table, "variant")
    sel_all = fam == "all"
    if not sel_all.any():
        return missing(f, "no family='all' rows in optimiser.csv")
    p_holm = {}
    if tests:
        tf, tm, tv, tp = _str(tests, "family"), _str(tests, "method"), _str(tests, "variant"), _num(tests, "p_holm")
        p_holm = {(tv[i], tm[i]): tp[i] for i in np.flatnonzero(tf == "all")}
    rows, dmlr = [], []
    for name in dict.fromkeys(variant[sel_all].tolist()):
        for m in dict.fromkeys(method[sel_all & (variant == name)].tolist()):
            if m == "before":
                continue
            sel = sel_all & (variant == name) & (method == m)
            change = _per_seed(table, sel, "accuracy") - _per_seed(table, sel, "accuracy_before")
            mean, low, high, n = seed_interval(change)
            if n < MIN_SEEDS or not np.isfinite(low):
                v = "open"
            else:
                v = "reproduced" if low > 0 else "refuted" if high < GAIN_EXCLUDED else "open"
            if m == "random":
                v = "control"
            elif m == DMLR:
                dmlr.append(v)
            before, after = (np.nanmean(_num(table, k)[sel]) for k in ("accuracy_before", "accuracy"))
            rows.append([name, m, f"{_f(before)} → {_f(after)}", _ci(mean, low, high),
                         _f(p_holm.get((name, m), float("nan")), 3), str(n), v])
    f.header = ("variant", "method", "accuracy before → after", "change [95% over seeds]", "paired p (Holm)", "seeds",
                "verdict")
    f.rows = rows
    f.verdict = aggregate(dmlr) if dmlr else "open"
    f.basis = "; ".join(f"{r[0]} {r[3]}" for r in rows if r[1] == DMLR) or f"no {DMLR} rows in optimiser.csv"
    return f


# ---------------------------------------------------------------------------------------------- reading a directory


def _read(out: str, study: str, name: str) -> tuple[Optional[dict], str]:
    """``(columns, "")`` of the table ``name`` of the study directory ``out/study``, verified against
    the study's record (:func:`tokdyn.experiment.study.read_table`); ``(None, why)`` when it is
    missing or fails its verification (changed after the study wrote it, not listed in the study's
    record, or a record that is missing or fails its own checksum): such a table is never judged."""
    from tokdyn.experiment import study as S

    directory, rel = os.path.join(out, study), f"{study}/{name}"
    if not os.path.exists(os.path.join(directory, name)):
        return None, f"{rel} is missing"
    try:
        return S.read_table(directory, name), ""
    except FileNotFoundError:
        return None, (f"{rel} cannot be verified: {study}/{RECORD_NAME} (the study's record of its outputs) is "
                      "missing; not judged")
    except (io.CorruptFile, ValueError, OSError) as e:
        return None, f"{rel} fails its verification ({e}); not judged"


def _source_seeds(out: str, study: str) -> int:
    """Seeds of the latent-reasoning models an analysis read (its ``config.json``, verified); 0 if
    unknown (then the findings that need them stay open)."""
    from tokdyn.experiment import study as S

    try:
        return int(S.read_record(os.path.join(out, study))["reasoning"]["training"]["seeds"])
    except (OSError, KeyError, TypeError, ValueError):
        return 0


def findings(out: str) -> list[Finding]:
    """Every seed finding with its verdict, from the study directories under ``out``, every table
    verified against its study's record first: a finding whose table is missing or fails its
    verification is ``open``, naming the file (never judged from it)."""
    tests, tests_why = _read(out, "latent-optimisation", "optimiser_tests.csv")
    seeds = _source_seeds(out, "latent-diagnostics")
    judges = [("token-dynamics", "runs.csv", token_dynamics_findings),
              ("visual-tokens", "results.csv", lambda t: [visual_tokens_finding(t)]),
              ("grid-diffusion", "results.csv", lambda t: [grid_diffusion_finding(t)]),
              ("latent-diagnostics", "decomposition.csv", lambda t: [markers_finding(t, seeds)]),
              ("latent-diagnostics", "mediation.csv", mediation_findings),
              ("latent-optimisation", "optimiser.csv", lambda t: [optimisation_finding(t, tests)])]
    result = []
    for study, name, judge in judges:
        table, why = _read(out, study, name)
        if (table is not None and study == "latent-optimisation" and tests is None
                and os.path.exists(os.path.join(out, study, "optimiser_tests.csv"))):
            table, why = None, tests_why  # the p-values beside the verdict would come from an unverified table
        found = judge(table if table is not None else {})
        result += found if table is not None else [missing(f, why) for f in found]
    return result


def verify_study(directory: str) -> Optional[str]:
    """What is wrong with the tables of the study directory ``directory``, as one line naming the
    first file that fails (None when its record verifies and every table it lists matches its
    SHA-256; also None when the study has no record yet: nothing finished to verify)."""
    from tokdyn.experiment import study as S

    if not os.path.exists(os.path.join(directory, RECORD_NAME)):
        return None
    try:
        record = S.read_record(directory)
    except (io.CorruptFile, ValueError, OSError) as e:
        return str(e)
    outputs = record.get("outputs")
    if not isinstance(outputs, dict):
        return f"{os.path.join(directory, RECORD_NAME)} lists no outputs: its tables cannot be verified"
    for rel in sorted(outputs):
        try:
            S.verify_output(directory, rel)
        except FileNotFoundError:
            return f"{os.path.join(directory, rel)} is missing, though the study's record lists it"
        except (io.CorruptFile, ValueError, OSError) as e:
            return str(e)
    return None


def _set_aside_unverified(directory: str) -> list[str]:
    """Set aside (:func:`tokdyn.io.set_aside`, to ``corrupt/`` beside each) the tables of the study
    directory ``directory`` that fail their verification, so that its rerun recomputes them from its
    kept parts instead of recording them as its own; returns their paths. A record that fails its
    own checksum is set aside too (its list of tables cannot be trusted)."""
    from tokdyn.experiment import study as S

    moved = []
    path = os.path.join(directory, RECORD_NAME)
    if not os.path.exists(path):
        return moved
    try:
        outputs = S.read_record(directory).get("outputs")
    except (io.CorruptFile, ValueError, OSError):
        io.set_aside(path, "it fails its checksum", warn=False)
        return [path]
    for rel in sorted(outputs) if isinstance(outputs, dict) else ():
        try:
            S.verify_output(directory, rel)
        except FileNotFoundError:
            continue
        except (io.CorruptFile, ValueError, OSError) as e:
            io.set_aside(os.path.join(directory, rel), getattr(e, "reason", str(e)), warn=False)
            moved.append(os.path.join(directory, rel))
    return moved


def figures_of(out: str, study: str, limit: int = 12) -> list[str]:
    """The figures (PNG) of a study directory, as paths relative to ``out`` (parts, sweeps and
    checkpoints left out; at most ``limit``)."""
    root = os.path.join(out, study)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        found += [os.path.relpath(os.path.join(dirpath, n), out) for n in sorted(filenames) if n.endswith(".png")]
    return found[:limit]


# ---------------------------------------------------------------------------------------------- the report


def _seconds(s) -> str:
    if s is None or not np.isfinite(s):
        return "–"
    s = float(s)
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s"


def _table(header, rows) -> list[str]:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(map(esc, r)) + " |" for r in rows]


def report(out: str, found: Sequence[Finding], record: Mapping) -> str:
    """The report (Markdown) on the findings ``found`` and the studies' ``record`` (study ->
    status, seconds, error, as :func:`main` keeps it in ``config.json``)."""
    studies = record.get("studies", {})
    preset = ("**quick** (each study's quick preset: a smoke run of minutes; most verdicts stay open)"
              if record.get("quick") else "**default** (each study's default configuration)")
    lines = ["# tokdyn reproduce: report", "",
             f"Preset: {preset}. tokdyn {record.get('tokdyn', '?')}, {record.get('machine', '')}. "
             f"Written {record.get('written', '')}.", "", "## Verdicts", ""]
    lines += _table(("finding", "verdict", "claim", "rests on"),
                    [[f"{f.key}. {f.title}", f"**{f.verdict}**", f.claim, f.basis] for f in found])
    lines += ["", "How a verdict is decided: intervals, never points. Intervals over seeds are 95% intervals of the "
              f"mean (a percentile bootstrap from {BOOTSTRAP_SEEDS} seeds on, Student's t below); fewer than "
              f"{MIN_SEEDS} seeds decide nothing. Every threshold has a margin between reproduced and refuted where "
              "the verdict is open. A claim stated in general is refuted when one unit (method, variant) refutes it, "
              "reproduced when every unit it applies to reproduces it, and open otherwise. Each finding below states "
              "its rule and lists its units; every number is computed from the studies' files in this directory.", ""]
    for f in found:
        lines += [f"## {f.key}. {f.title}: {f.verdict}", "", f"**Claim** ({f.origin}): {f.claim}", "",
                  f"**Rule**: {f.rule}", "", f"**Rests on**: {f.basis or '–'}", ""]
        if f.rows:
            lines += _table(f.header, f.rows) + [""]
        lines += [f"From `{f.study}/` ({_status_line(studies.get(f.study))}).", ""]
    lines += ["## Studies: status and time", "",
              "Time: the wall time of the latest run of the study (a study finished earlier is reused and takes "
              "seconds), and its time when it was computed (the run that finished it in this directory).", ""]
    rows, ran = [], set(record.get("ran", ()))
    for name in STUDIES:
        r = studies.get(name)
        summary = SUMMARIES.get(name, "summary.md")
        have = os.path.exists(os.path.join(out, name, summary))
        status = "not run" if not r else r.get("status", "–") + ("" if name in ran else " (an earlier run)")
        rows.append([name, status, _seconds(r.get("seconds")) if r else "–",
                     _seconds(r.get("computed_seconds")) if r else "–",
                     f"[{name}/{summary}]({name}/{summary})" if have else "–"])
    lines += _table(("study", "status", "time (latest run)", "time (when computed)", "summary"), rows)
    total = sum(studies[n].get("seconds") or 0.0 for n in ran if isinstance(studies.get(n), Mapping))
    lines += ["", f"This run: {_seconds(total)} for {len(ran)} studies; load average (1, 5, 15 min) "
              f"{record.get('load_start', '–')} at its start, {record.get('load', '–')} at its end.", ""]
    errors = [(n, r["error"]) for n, r in studies.items() if r.get("error")]
    if errors:
        lines += ["Errors:", ""] + [f"- {n}: `{e}`" for n, e in errors] + [""]
    lines += ["## Figures", ""]
    for name in STUDIES:
        figs = figures_of(out, name)
        if figs:
            lines += [f"### {name}", ""] + [f"![{os.path.basename(p)}]({p})" for p in figs] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _status_line(r) -> str:
    if not r:
        return "not run by reproduce"
    return f"{r.get('status')}, {_seconds(r.get('seconds'))} this run"


# ---------------------------------------------------------------------------------------------- Markdown -> HTML


def _inline(text: str) -> str:
    out, parts = [], re.split(r"(`[^`]*`)", text)
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False).replace("\\|", "|")
        s = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", lambda m: f'<img src="{m.group(2)}" '
                   f'alt="{m.group(1)}" loading="lazy">', s.replace('"', "&quot;"))
        s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        out.append(s)
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def to_html(markdown: str, title: str = "tokdyn reproduce") -> str:
    """The report's Markdown as a standalone HTML page: the subset :func:`report` writes (headings,
    paragraphs, bullet lists, pipe tables, images, links, inline code, bold)."""
    body, para, lines, i = [], [], markdown.splitlines(), 0

    def flush():
        if para:
            body.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            flush()
            body.append(f"<h{len(m.group(1))}>{_inline(m.group(2))}</h{len(m.group(1))}>")
        elif line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, rows = _cells(block[0]), [_cells(r) for r in block[2:]]
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</tbody></table>")
            continue
        elif line.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        else:
            para.append(line.strip())
        i += 1
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;"
             "line-height:1.45}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}"
             "td,th{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}th{background:#f3f3f3}"
             "img{max-width:100%;margin:.5rem 0;display:block}code{background:#f3f3f3;padding:0 .2rem}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(out: str, record: Mapping) -> list[Finding]:
    """Compute every finding from the study directories under ``out`` and write ``report.md`` and
    ``report.html`` there; returns the findings."""
    found = findings(out)
    text = report(out, found, record)
    with io.atomic_write(os.path.join(out, REPORT)) as f:
        f.write(text)
    with io.atomic_write(os.path.join(out, "report.html")) as f:
        f.write(to_html(text))
    return found


# ---------------------------------------------------------------------------------------------- main


def _machine() -> str:
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "–"


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True, fresh: bool = False,
         configs: Optional[Mapping] = None, matmul_precision: Optional[str] = None) -> dict:
    """Run the studies of ``cfg`` into ``out/<study>`` (reusing what is finished there), then write
    ``out/report.md`` and ``out/report.html``; returns ``{finding key: verdict}``. ``configs``:
    a study's configuration to use instead of :func:`study_config`'s (name -> config). ``out`` is
    stamped with ``cfg.quick`` first (another preset's directory is refused unless ``fresh``,
    which empties it). A study that fails is recorded with its error (and its traceback printed)
    and the others still run; after the report, ``RuntimeError`` names the failed studies.
    ``matmul_precision``: run every study under it
    (:func:`tokdyn.experiment.study.matmul_precision`; checked before anything runs); ``None``: the
    precision in force (the command's ``--matmul-precision``)."""
    from tokdyn.experiment import study as S

    if matmul_precision is not None:
        with S.matmul_precision(matmul_precision):  # checked first; every study below records it
            return main(cfg, out, quiet=quiet, plots=plots, fresh=fresh, configs=configs)
    cfg.validate()
    configs = dict(configs or {})
    for name in configs:
        if name not in MODULES:
            raise ValueError(f"configs: unknown study {name!r}; choose from {', '.join(STUDIES)}")
    plan = [(name, configs.get(name) or study_config(name, cfg.quick, out)) for name in cfg.studies]
    for name, c in plan:  # every configuration checked before any study runs
        c.validate()
    top = S.Study.open(out, STUDY, cfg, fresh=fresh, selection=("studies",), quiet=quiet)
    old = {}
    try:
        old = S.read_record(out).get("studies", {})
    except (OSError, ValueError, AttributeError):  # none yet, or one that fails its checksum: nothing reused
        pass
    record = {"quick": cfg.quick, "tokdyn": S.version(), "machine": _machine(), "studies": dict(old),
              "load_start": _load()}
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    for i, (name, c) in enumerate(plan):
        say(f"\n=== reproduce: {name} ({i + 1}/{len(plan)}) -> {os.path.join(out, name)}")
        t0 = time.perf_counter()
        status, error = "done", None
        problem = verify_study(os.path.join(out, name))  # a study is reused only when its tables verify
        if problem is not None:
            moved = _set_aside_unverified(os.path.join(out, name))
            print(f"tokdyn reproduce: {name}: {problem}; its tables are recomputed from its kept parts"
                  + (f" (set aside: {', '.join(moved)})" if moved else ""), file=sys.stderr)
        try:
            result = importlib.import_module(MODULES[name]).main(c, os.path.join(out, name), quiet=quiet, plots=plots)
            if result is False:
                status = "unfinished"
        except Exception as e:  # noqa: BLE001 -- recorded, the other studies still run
            status, error = "failed", f"{type(e).__name__}: {e}"
            traceback.print_exc()
            print(f"tokdyn reproduce: {name} failed ({error}); going on with the others", file=sys.stderr)
        seconds = time.perf_counter() - t0
        prev, config = old.get(name, {}), S.config_dict(c)
        computed = None
        if status == "done":  # the time of the run that computed it: an earlier one's, if it finished it
            same = prev.get("status") == "done" and prev.get("config") == config and problem is None
            computed = prev.get("computed_seconds") if same and prev.get("computed_seconds") else seconds
        record["studies"][name] = {"status": status, "seconds": seconds, "error": error, "computed_seconds": computed,
                                   "config": config}
        say(f"=== {name}: {status} in {_seconds(seconds)}")
    record["ran"] = [name for name, _ in plan]
    record["load"] = _load()
    record["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    found = write_report(out, record)
    top.finish(**record, verdicts={f.key: f.verdict for f in found})
    if not quiet:
        width = max(len(f.title) for f in found)
        print(f"\nreport: {os.path.join(out, REPORT)} (and report.html)")
        for f in found:
            print(f"  {f.key:<3} {f.title:<{width}}  {f.verdict}")
    failed = [n for n, _ in plan if record["studies"][n]["status"] == "failed"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(plan)} studies failed ({', '.join(failed)}); the report on the "
                           f"others is in {os.path.join(out, REPORT)}")
    return {f.key: f.verdict for f in found}
