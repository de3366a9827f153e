"""The token-dynamics study: four update rules on Gaussian clusters, seeds x noise x K.

Reproduces "Formalizing latent visual reasoning: token dynamics" (``tokdyn study token-dynamics``;
:func:`main`, :class:`Config`): a preset of the sweep engine, :class:`tokdyn.engine.runs.ClusterRun`
over the grid method x K x noise x seeds with common random numbers (:func:`simulate`), then ARI,
NMI, SSE, steps and collapse per condition and paired t-tests of every method's ARI against the
baseline. Update rules of one's own (:class:`tokdyn.dynamics.Rule`) join by name through
``main(cfg, out, rules={...})``, and the package's variational-refinement rule as
``"refinement"``.

How it runs, the outputs and the findings: :doc:`/studies/token-dynamics`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from tokdyn import _checks, dynamics, io, stats
from tokdyn.engine import sweep
from tokdyn.engine.runs import PACKAGE_RULES, ClusterRun, RunStructure
from tokdyn.experiment import findings as F
from tokdyn.experiment import runner
from tokdyn.experiment.findings import Finding
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate
from tokdyn.stats import figures

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
METRICS = ("ari", "nmi", "sse", "steps", "converged", "collapsed")


@dataclasses.dataclass(frozen=True)
class Config(RunStructure):
    """Everything that defines the study; saved as ``config.json`` and enough to reproduce it.

    Attributes:
      seeds: seeds per condition (0..N-1).
      noise: cluster standard deviations (a condition axis).
      n_clusters: cluster counts K (a condition axis).
      methods: update rules, names from tokdyn.dynamics.METHODS, from PACKAGE_RULES ("refinement")
        or of the rules passed to main.
      temperature: softmax temperature of every method.
      root_seed: root PRNG seed.
      mass_anchor: where the built-in methods' mass epsilon anchors the weighted mean
        (``tokdyn.dynamics.MASS_ANCHORS``): ``"token"`` (translation-invariant, the default) or
        ``"origin"`` (the published form, whose figures the study page compares with).
      preset: '' or 'quick' (set by --quick: a smoke-sized run; the printed summary's first line
        says so).
    """

    seeds: int = 30
    noise: tuple = (0.3, 0.6, 0.9)
    n_clusters: tuple = (3, 4, 5)
    methods: tuple = ("baseline", "inertia", "repulsion", "inertia+repulsion")
    temperature: float = 1.0
    root_seed: int = 0
    mass_anchor: str = "token"
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``, seconds): every method on 6 seeds x noise {0.3, 0.9} x K
        {3, 4}. A smoke run: its numbers are not the study's findings (its summary says so)."""
        return cls(seeds=6, noise=(0.3, 0.9), n_clusters=(3, 4), preset="quick")

    def validate(self, rules=None) -> "Config":
        """Check every field; ``rules``: the update rules of one's own that ``methods`` may name
        (see :func:`check_rules`)."""
        rules = check_rules(rules)
        _checks.positive_int("seeds", self.seeds)
        _checks.seed("root_seed", self.root_seed)
        _checks.choice("mass_anchor", self.mass_anchor, dynamics.MASS_ANCHORS)
        _checks.real("temperature", self.temperature, low=0.0, low_open=True)
        _checks.real("noise", np.asarray(self.noise, float), low=0.0)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for m in self.methods:
            _checks.choice("methods", m, {**dynamics.METHODS, **rules})
        if not self.noise or not self.n_clusters:
            raise ValueError("noise and n_clusters must each hold at least one value")
        for k in self.n_clusters:
            _checks.positive_int("n_clusters", k)
        # every list of conditions is a set: a repeat would count its runs as extra seeds
        _checks.distinct("methods", self.methods)
        _checks.distinct("n_clusters", self.n_clusters)
        _checks.distinct("noise", [float(v) for v in self.noise])
        _checks.distinct("noise", np.asarray(self.noise, np.float32))  # what the grid holds
        self.validate_structure(min(self.n_clusters), max(self.n_clusters))
        _checks.choice("preset", self.preset, PRESETS)
        return self

    def runs(self) -> int:
        """Runs of the study: methods x K x noise x seeds."""
        return len(self.methods) * len(self.n_clusters) * len(self.noise) * self.seeds

    def estimate(self) -> Estimate:
        """The run table held in host memory (metrics and condition columns, float64, twice while it
        is sorted; on the device only a chunk of runs at a time) and the time: runs at 4,000 a
        second on the reference CPU, scaled by this machine's ``dynamics`` rate."""
        return Estimate(
            host_memory=self.runs() * (len(METRICS) + 4) * 8 * 2,
            host_option="seeds",
            models=self.runs(),
            work={"dynamics": self.runs() / 4000.0},
        )

    def task(self) -> ClusterRun:
        """The per-run function of the built-in methods: :class:`ClusterRun` with this study's
        structure and the method table of the names of ``methods`` in ``tokdyn.dynamics.METHODS``."""
        table = tuple(
            (float(self.temperature),) + dynamics.METHODS[m].row()[1:] for m in self.methods if m in dynamics.METHODS
        )
        rule = dynamics.MASS_ANCHORS[self.mass_anchor]  # BUILTIN, or BUILTIN_ORIGIN
        return ClusterRun(
            **self.structure(),
            max_clusters=max(self.n_clusters),
            methods=table,
            rule=rule,
            hparams=dynamics.Hparams(temperature=float(self.temperature)),
        )

    def tasks(self, rules=None) -> list:
        """``[(ClusterRun, indices into methods), ...]``: the built-in methods' :meth:`task`, then one
        :class:`ClusterRun` per rule of ``rules`` that ``methods`` names, whose method table holds
        the knobs (``hparams``) of each of its settings (rules equal but for their hparams share one)."""
        rules = check_rules(rules)
        builtin = tuple(i for i, m in enumerate(self.methods) if m not in rules)
        out = [(self.task(), builtin)] if builtin else []
        groups = {}
        for i, m in enumerate(self.methods):
            if m in rules:
                r = rules[m]
                key = (dataclasses.replace(r, hparams=()), jax.tree_util.tree_structure(r.hparams))
                groups.setdefault(key, (r, []))[1].append(i)
        for r, idx in groups.values():
            table = tuple(
                tuple(float(v) for v in jax.tree_util.tree_leaves(rules[self.methods[i]].hparams)) for i in idx
            )
            out.append(
                (ClusterRun(**self.structure(), max_clusters=max(self.n_clusters), methods=table, rule=r), tuple(idx))
            )
        return out

    def grid(self, n_methods: int | None = None) -> sweep.Grid:
        """method (index into ``methods``, or into the first ``n_methods`` of a :meth:`tasks` table)
        x K x noise x seeds, the seed slowest: each chunk holds whole seeds, whose data the engine
        draws once for all 36 of their runs."""
        n = len(self.methods) if n_methods is None else n_methods
        return sweep.Grid(
            method=np.arange(n),
            n_clusters=np.asarray(self.n_clusters),
            noise=np.asarray(self.noise, np.float32),
            seeds=self.seeds,
            seed_major=True,
        )


def check_rules(rules) -> dict:
    """The rules beyond the built-in methods that a study's ``methods`` may name: the package's own
    (:data:`tokdyn.engine.runs.PACKAGE_RULES`) merged with ``rules``, the update rules of one's own: ``None`` or a
    mapping of new names (not those of ``tokdyn.dynamics.METHODS``, nor those of
    :data:`~tokdyn.engine.runs.PACKAGE_RULES` for another rule) to :class:`tokdyn.dynamics.Rule` values, each run at its ``hparams``. ``TypeError`` /
    ``ValueError`` naming the entry."""
    if rules is None:
        return dict(PACKAGE_RULES)
    if not isinstance(rules, dict):
        raise TypeError(f"rules must be a dict of names to tokdyn.dynamics.Rule, got {type(rules).__name__}")
    for name, r in rules.items():
        if not isinstance(name, str):
            raise TypeError(f"rules: names must be str, got {name!r}")
        if name in dynamics.METHODS:
            raise ValueError(
                f"rules: {name!r} is the name of a built-in method (tokdyn.dynamics.METHODS): choose another"
            )
        if name in PACKAGE_RULES and r is not PACKAGE_RULES[name]:  # itself (an already merged table) is fine
            raise ValueError(
                f"rules: {name!r} is the name of one of the package's rules (tokdyn.engine.runs."
                f"PACKAGE_RULES: {PACKAGE_RULES[name].name}): choose another"
            )
        if not isinstance(r, dynamics.Rule):
            raise TypeError(
                f"rules[{name!r}] must be a tokdyn.dynamics.Rule, got {type(r).__name__}"
                + (" (wrap your functions as dynamics.Rule(init=..., step=...))" if callable(r) else "")
            )
    return {**PACKAGE_RULES, **rules}


def simulate(
    cfg: Config, *, rules=None, chunk_size=None, batch_size="auto", devices=None, progress=False
) -> dict[str, np.ndarray]:
    """Run every run of the study: a :func:`tokdyn.engine.sweep.run` of each of :meth:`Config.tasks`.

    One task for the built-in methods (:meth:`Config.task`) and one per rule of ``rules``, each over
    :meth:`Config.grid` with common random numbers (the data and initial tokens of a seed are
    shared by every method and condition, and drawn once per seed and task). The execution
    options do not change any result.

    Args:
      cfg: the study's :class:`Config`.
      rules: optional ``{name: tokdyn.dynamics.Rule}`` that ``cfg.methods`` may name.
      chunk_size: runs per chunk, as in :func:`tokdyn.engine.sweep.run` (None: its default).
      batch_size: runs vmapped together on a device (``None``: all, ``1``: one by one,
        ``"auto"``: the backend's default; :func:`tokdyn.engine.execute.map_runs`).
      devices: the devices the runs are split over (None: the local devices).
      progress: a progress bar (:class:`tokdyn.io.Progress`).

    Returns:
      The run table: ``method``, ``n_clusters``, ``noise``, ``seed``, then one column per metric,
      ordered by method, K, noise, then seed.
    """
    cfg.validate(rules)
    parts, fields = [], None
    for task, idx in cfg.tasks(rules):
        res = sweep.run(
            task,
            cfg.grid(len(idx)),
            key=jax.random.key(cfg.root_seed),
            common_random_numbers=True,
            chunk_size=chunk_size,
            batch_size=batch_size,
            devices=devices,
            progress=progress,
            part=(0, 1),
        )
        fields = fields or res.fields
        part = {k: res[k] for k in ("n_clusters", "noise", "seed", *fields)}
        part["method"] = np.asarray(idx)[res["method"]]
        parts.append(part)
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((res["seed"], res["noise"], res["n_clusters"], res["method"]))
    table = dict(
        method=np.asarray(cfg.methods)[res["method"][order]],
        n_clusters=res["n_clusters"][order].astype(np.int32),
        noise=res["noise"][order].astype(np.float32),
        seed=res["seed"][order].astype(np.int32),
    )
    table.update({f: res[f][order] for f in fields})
    return table


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
    ARIs), t, p, Cohen's d_z, Holm and Bonferroni over the whole family, and ``negligible``: the
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
                bounds = F.difference_bounds(F.SCORE) if metric in ("ari", "nmi") else None
                mean, lo, hi, _ = F.seed_interval(a - b, bounds)
                tests.append(
                    dict(
                        method=name,
                        baseline="baseline",
                        metric=metric,
                        n_clusters=int(k),
                        noise=float(nz),
                        n=int(a.size),
                        n_dropped=int((~keep).sum()),
                        mean_diff=mean,
                        diff_low=lo,
                        diff_high=hi,
                        negligible=bool(F.negligible(metric, mean)),
                        t=t,
                        p=p,
                        d=d,
                    )
                )
    p = np.asarray([t["p"] for t in tests])
    for t, ph, pb in zip(tests, stats.holm(p), stats.bonferroni(p)):
        t["p_holm"], t["p_bonferroni"] = float(ph), float(pb)
    return tests


def _rules_record(rules) -> dict:
    """The update rules of one's own, by their repr and the digest of their code
    (:func:`tokdyn.engine.sweep.code_digest`: a rule whose functions changed is another rule),
    stamped with the configuration."""
    if not rules:
        return {}
    return {
        "rules": {name: r.describe() for name, r in rules.items()},  # every function by name (repr is short)
        "rules_code": {name: sweep.code_digest(r) for name, r in rules.items()},
    }


def plot_jobs(out: str, cfg: Config, summary: list[dict]) -> list[dict]:
    """The figures ``plots/{ari_mean,steps_mean,collapsed_rate}.png`` (metric vs noise, one panel
    per K), as keyword arguments of :func:`tokdyn.stats.figures.line_plot`."""
    noise = list(cfg.noise)
    jobs = []
    for metric, fname, label in (
        ("ari", "ari_mean", "ARI"),
        ("steps", "steps_mean", "steps"),
        ("collapsed", "collapsed_rate", "collapse rate"),
    ):
        panels, errors = {}, {}
        for k in cfg.n_clusters:
            title = f"K = {k}"
            panels[title], errors[title] = {}, {}
            for name in cfg.methods:
                rows = {r["noise"]: r for r in summary if r["method"] == name and r["n_clusters"] == k}
                panels[title][name] = [rows[nz][metric + "_mean"] for nz in noise]
                # standard error of the mean over seeds
                errors[title][name] = [
                    rows[nz][metric + "_std"] / np.sqrt(max(rows[nz]["n_runs"] - rows[nz].get("n_nonfinite", 0), 1))
                    for nz in noise
                ]
        jobs.append(
            dict(
                path=os.path.join(out, "plots", fname + ".png"),
                x=noise,
                series={},
                panels=panels,
                errors=errors,
                xlabel="noise std",
                ylabel=label,
                title=f"{label} vs noise (mean ± s.e. over {cfg.seeds} seeds)",
            )
        )
    return jobs


def format_tables(overall: list[dict], summary: list[dict], tests: list[dict]) -> str:
    """The tables a run prints (from :func:`summarise` and :func:`stat_tests`): every method's
    means over all conditions and those at noise 0.3, K = 4, each beside the published figures, and
    the paired t-tests significant before correction (the 6 smallest p), each difference first
    (:func:`tokdyn.experiment.findings.paired_cell`), a difference below the metric's practical
    threshold labelled negligible."""
    lines = [
        "Overall (mean over all conditions)  —  ours | published",
        f"{'method':<19}{'ARI':>15}{'NMI':>15}{'steps':>15}{'collapse':>13}",
    ]
    for r in overall:
        pub = PUBLISHED_OVERALL.get(r["method"])
        f = lambda a, b, p=3: f"{a:.{p}f} | {b:.{p}f}" if b is not None else f"{a:.{p}f} |   -  "
        g = lambda key, p=3: pub[key] if pub else None
        lines.append(
            f"{r['method']:<19}{f(r['ari_mean'], g('ari')):>15}{f(r['nmi_mean'], g('nmi')):>15}"
            f"{f(r['steps_mean'], g('steps'), 2):>15}{f(r['collapsed_mean'], g('collapsed'), 2):>13}"
        )
    rows = [r for r in summary if r["n_clusters"] == 4 and np.isclose(r["noise"], 0.3)]
    if rows:
        lines += ["", "Noise 0.3, K = 4  —  ours | published", f"{'method':<19}{'ARI (mean±std)':>29}{'steps':>16}"]
        for r in rows:
            pub = PUBLISHED_NOISE03_K4.get(r["method"])
            ours = f"{r['ari_mean']:.3f}±{r['ari_std']:.3f}"
            theirs = f"{pub['ari']:.3f}±{pub['ari_std']:.3f}" if pub else "-"
            steps = f"{r['steps_mean']:.2f} | " + (f"{pub['steps']:.2f}" if pub else "-")
            lines.append(f"{r['method']:<19}{ours + ' | ' + theirs:>29}{steps:>16}")
    if tests:
        sig = [t for t in tests if t["p"] < 0.05]
        dropped = sum(t.get("n_dropped", 0) for t in tests)
        if dropped:
            lines += [
                "",
                f"Paired t-tests: {dropped} pair(s) with a non-finite run on either side dropped (the tests "
                "are over the remaining pairs).",
            ]
        metric = tests[0]["metric"]
        lines += [
            "",
            f"Paired t-tests of {metric.upper()} vs baseline: {len(tests)} tests, {len(sig)} with p < 0.05 before "
            f"correction, {sum(t['p_holm'] < 0.05 for t in tests)} after Holm, "
            f"{sum(t['p_holm'] < 0.05 and not t.get('negligible') for t in tests)} of them with a difference of "
            f"at least {F.NEGLIGIBLE.get(metric, 0):g} (the practical threshold; smaller is negligible). "
            "Δ: the mean difference (method − baseline) with its 95% interval over seeds.",
        ]
        for t in sorted(sig, key=lambda t: t["p"])[:6]:
            lines.append(f"  {t['method']:<19} noise {t['noise']:.1f} K={t['n_clusters']}: {F.paired_cell(t, 4)}")
        lines.append(
            "  (published: one significant before correction, inertia+repulsion at noise 0.3, K=4: p=0.017, d=0.46)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- findings


PUBLISHED_PRECISION = {"ari": 0.0005, "nmi": 0.0005, "steps": 0.005, "collapsed": 0.005}  # half a unit of the
# last digit printed in the published table


BOUNDS = {"ari": F.SCORE, "nmi": F.SCORE, "collapsed": F.RATE, "steps": None}  # each metric's range


def published_cell(values, published: float, precision: float, bounds=None) -> tuple[str, tuple]:
    """Verdict of one cell of the published table from per-seed ``values`` of our run: the
    published figure, as the interval ``published ± precision`` (its rounding), ``reproduced`` when
    it meets our 95% interval over seeds; ``refuted`` when it misses that interval widened by
    sqrt(2) about our mean (the interval of a difference between two means of as many seeds);
    ``open`` in between, or with fewer than :data:`~tokdyn.experiment.findings.BOOTSTRAP_SEEDS`
    seeds. ``bounds``: the metric's range (:data:`BOUNDS`). Returns the verdict and ``(mean, low,
    high, n)``."""
    mean, low, high, n = F.seed_interval(values, bounds)
    if n < F.BOOTSTRAP_SEEDS or not np.isfinite(low):
        return "open", (mean, low, high, n)
    lo_p, hi_p = published - precision, published + precision
    if hi_p >= low and lo_p <= high:
        return "reproduced", (mean, low, high, n)
    wide_low, wide_high = mean - np.sqrt(2) * (mean - low), mean + np.sqrt(2) * (high - mean)
    if hi_p < wide_low or lo_p > wide_high:
        return "refuted", (mean, low, high, n)
    return "open", (mean, low, high, n)


def published_findings(runs, published=None) -> list[Finding]:
    """Findings 1a (mean ARI per method) and 1b (NMI, steps and collapse rate) from the study's
    ``runs.csv`` columns: per method and seed, the mean over the conditions; each cell by
    :func:`published_cell` against ``published`` (default :data:`PUBLISHED_OVERALL`)."""
    published = PUBLISHED_OVERALL if published is None else published
    rule = (
        f"Per method, each seed's mean over the study's conditions; our 95% interval of the mean over seeds "
        f"(percentile bootstrap, {F.N_RESAMPLES:,} resamples; at least {F.BOOTSTRAP_SEEDS} seeds, else open). "
        "A cell is reproduced when the published figure (± half a unit of its last printed digit) meets our "
        "interval, refuted when it misses our interval widened by √2 about our mean (the interval of a difference "
        "of two means of as many seeds), open in between. The finding is reproduced when every cell is, refuted "
        "when one is."
    )
    method = F.strings(runs, "method")
    rows = {"ari": [], "other": []}
    verdicts = {"ari": [], "other": []}
    for name in dict.fromkeys(method.tolist()):
        if name not in published:
            continue
        for metric in ("ari", "nmi", "steps", "collapsed"):
            if metric not in runs or metric not in published[name]:
                continue
            per_seed = F.per_seed(runs, method == name, metric)
            v, (mean, low, high, n) = published_cell(
                per_seed, published[name][metric], PUBLISHED_PRECISION[metric], BOUNDS[metric]
            )
            group = "ari" if metric == "ari" else "other"
            digits = 2 if metric in ("steps", "collapsed") else 3
            rows[group].append(
                [
                    name,
                    metric,
                    F.interval(mean, low, high, digits),
                    F.number(published[name][metric], digits),
                    str(n),
                    v,
                ]
            )
            verdicts[group].append(v)
    header = ("method", "metric", "ours: mean [95% interval over seeds]", "published", "seeds", "verdict")
    a = Finding(
        "1a",
        "Token dynamics: the published ARI table",
        "Each update rule's mean ARI over the nine conditions equals the published figure "
        "(" + ", ".join(f"{k} {v['ari']:.3f}" for k, v in published.items()) + ").",
        'the published study "Formalizing latent visual reasoning: token dynamics" (30 seeds)',
        rule,
        F.aggregate(verdicts["ari"]) if verdicts["ari"] else "open",
        "; ".join(f"{r[0]} {r[2]} vs {r[3]}" for r in rows["ari"]),
        header,
        rows["ari"],
        "token-dynamics",
        min_seeds=F.BOOTSTRAP_SEEDS,
    )
    b = Finding(
        "1b",
        "Token dynamics: the rest of the published table",
        "Each rule's mean NMI, steps and collapse rate equal the published figures.",
        a.origin,
        rule,
        F.aggregate(verdicts["other"]) if verdicts["other"] else "open",
        f"{sum(v == 'reproduced' for v in verdicts['other'])} of {len(verdicts['other'])} cells reproduced, "
        f"{sum(v == 'refuted' for v in verdicts['other'])} refuted",
        header,
        rows["other"],
        "token-dynamics",
        min_seeds=F.BOOTSTRAP_SEEDS,
    )
    return [a, b]


def findings(out: str) -> list[Finding]:
    """Findings 1a and 1b (:func:`published_findings`) from ``runs.csv`` of the study directory ``out``."""
    return F.judge(out, "runs.csv", "token-dynamics", published_findings)


# ---------------------------------------------------------------------------------------------- the study


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Every run (:func:`simulate`, with the update rules of one's own ``session.options["rules"]``),
    then the statistics: ``runs.csv``, ``summary.csv``, ``overall.csv``, ``stat_tests.json``."""
    rules = session.options.get("rules")
    with session.timed("simulate"):
        runs = simulate(cfg, rules=rules, progress=not session.quiet)
    with session.timed("statistics"):
        summary, overall = summarise(runs, cfg)
        tests = stat_tests(runs, cfg)
    session.timings["n_runs"] = int(runs["seed"].size)
    tables = {
        "runs.csv": {k: runs[k] for k in ("method", "n_clusters", "noise", "seed", *METRICS)},
        "summary.csv": io.to_columns(summary),
        "overall.csv": io.to_columns(overall),
        "stat_tests.json": tests,
    }
    return runner.Result(
        tables,
        data=dict(summary=summary, overall=overall, tests=tests, out=session.out, timings=session.timings),
        record=_rules_record(rules),
        value=session.timings,
    )


SPEC = runner.Spec(
    name="token-dynamics",
    config=Config,
    run=run,
    figures=lambda session, cfg, r: [figures.draw(job) for job in plot_jobs(session.out, cfg, r.data["summary"])],
    summary=lambda cfg, r: format_tables(r.data["overall"], r.data["summary"], r.data["tests"]),
    printed=lambda cfg, r, text: (
        f"{text}\n\n{r.data['timings']['n_runs']} runs in "
        f"{r.data['timings']['simulate_s']:.2f} s (compile included); "
        f"outputs in {r.data['out']}"
    ),
    findings=findings,
    outputs=("runs.csv", "summary.csv", "overall.csv", "stat_tests.json"),
    figure_files=("plots/ari_mean.png", "plots/steps_mean.png", "plots/collapsed_rate.png"),
    selection=("preset",),  # a label: the same runs with it or without it
    summary_file=None,
    headline="overall.csv",
    check=lambda session, cfg: cfg.validate(session.options.get("rules")),
    stamp_extra=lambda session, cfg: _rules_record(session.options.get("rules")),
)


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True, rules=None, fresh: bool = False) -> dict:
    """Run the study end to end into ``out`` (:func:`~tokdyn.experiment.runner.run_study`).

    Args:
      cfg: the study's :class:`Config`.
      out: the output directory, stamped with the configuration before any work: a directory of
        another configuration is refused (:class:`tokdyn.io.OutputConflict`, naming the fields)
        unless ``fresh``.
      quiet: print nothing (the summary included).
      plots: draw the figures.
      rules: optional update rules of one's own, ``{name: tokdyn.dynamics.Rule}``, that
        ``cfg.methods`` may name; compared with the baseline like the built-in methods.
      fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote) and
        start afresh.

    Returns:
      The timings (a dict).
    """
    return runner.run_study(SPEC, cfg, out, quiet=quiet, plots=plots, fresh=fresh, rules=rules)
