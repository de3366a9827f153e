"""The token-dynamics study: four update rules on Gaussian clusters, seeds x noise x K.

Reproduces "Formalizing latent visual reasoning: token dynamics" (a NumPy/SciPy/scikit-learn
study): 30 seeds x noise {0.3, 0.6, 0.9} x K {3, 4, 5}, 4 tokens, at most 30 steps, temperature 1,
methods baseline / inertia (beta 0.5) / repulsion (gamma 0.05) / inertia+repulsion; ARI, NMI, SSE,
steps and collapse; paired t-tests of every method's ARI against the baseline per condition, with
Cohen's d_z and Holm (and Bonferroni) correction.

The study is a preset of the sweep engine: :class:`ClusterRun` (one run, ``fn(key, **condition)``)
over the grid method x K x noise x seeds, run by :func:`tokdyn.sweep.run` with common random
numbers: the data key is ``fold_in(root_key, seed)``, shared by every method, noise level and K of
that seed, so within a seed and condition all methods see the same data and the same initial
tokens; cluster k depends only on (seed, k) (see :func:`tokdyn.data.gaussian_clusters`), so
conditions are paired too. Data are padded to ``max(n_clusters)`` clusters, so the whole study is
one compiled function. ``tokdyn sweep token-dynamics`` runs the same function over any grid.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, data, dynamics, metrics, report, stats, sweep

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
class RunStructure:
    """The static structure of one run (shapes, initialisation, stopping rule), shared by
    :class:`ClusterRun`, the study's :class:`Config` and the sweep's ``SweepConfig``."""

    n_tokens: int = 4
    dim: int = 4
    points_per_cluster: int = 100
    centers: str = "uniform"
    center_box: float = 10.0
    init: str = "data"
    init_scale: float = 1.0
    n_steps: int = 30
    tol: float = 1e-3

    def _validate_structure(self, min_clusters: int) -> None:
        _checks.positive_int("n_tokens", self.n_tokens)
        _checks.positive_int("dim", self.dim)
        _checks.positive_int("points_per_cluster", self.points_per_cluster)
        _checks.positive_int("n_steps", self.n_steps)
        _checks.real("tol", self.tol, low=0.0)
        _checks.real("center_box", self.center_box, low=0.0)
        _checks.choice("centers", self.centers, data.CENTER_LAYOUTS)
        _checks.choice("init", self.init, dynamics.INIT_METHODS)
        if self.init == "data" and self.n_tokens > min_clusters * self.points_per_cluster:
            raise ValueError(f"n_tokens={self.n_tokens} exceeds the smallest dataset "
                             f"({min_clusters} x {self.points_per_cluster} points) for init 'data'")

    def _structure(self) -> dict:
        """The structure fields, floats as Python floats (a stable repr: the compilation key)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(RunStructure)}
        return {k: float(v) if k in ("center_box", "init_scale", "tol") else v for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class ClusterRun(RunStructure):
    """One run of token dynamics on Gaussian clusters, as a sweepable ``fn(key, **condition)``.

    The fields are static structure (hashable: equal instances share one compilation) and the
    defaults of every condition that is not a sweep axis. Calling it,
    ``run(key, temperature=..., momentum=..., ..., noise=..., n_clusters=..., method=...)``,
    draws the data from ``key`` (cluster k depends only on (key, k), see
    :func:`tokdyn.data.gaussian_clusters`), starts the tokens by ``init``, runs the dynamics and
    returns a dict of scalars: ari, nmi, sse, steps, converged, collapsed. Every condition is traced,
    so a :func:`tokdyn.sweep.run` over any of them compiles once. The rule's conditions are the
    fields of :class:`tokdyn.dynamics.Params` (temperature, momentum, repulsion, damping, langevin,
    sinkhorn_iters, slot_norm, anneal_ratio, anneal_steps). ``method`` indexes ``methods`` (rows of
    those fields in that order, see :func:`tokdyn.dynamics.as_row`; shorter rows take the defaults
    for the rest); an explicit condition overrides the method's value. The Langevin noise comes
    from ``fold_in(key, LANGEVIN_STREAM)``.
    """

    max_clusters: int = 5
    temperature: float = 1.0
    momentum: float = 0.0
    repulsion: float = 0.0
    damping: float = 1.0
    langevin: float = 0.0
    sinkhorn_iters: float = 0.0
    slot_norm: float = 0.0
    anneal_ratio: float = 1.0
    anneal_steps: float = 0.0
    noise: float = 0.6
    n_clusters: int = 4
    methods: tuple = ()

    RULE = dynamics.FIELDS  # the rule's knobs, in the column order of a ``methods`` row
    AXES = dynamics.FIELDS + ("noise", "n_clusters", "method")
    LANGEVIN_STREAM = 0x7FFFFFFE  # the Langevin key is fold_in(key, LANGEVIN_STREAM)

    def __call__(self, key, *, temperature=None, momentum=None, repulsion=None, damping=None, langevin=None,
                 sinkhorn_iters=None, slot_norm=None, anneal_ratio=None, anneal_steps=None, noise=None,
                 n_clusters=None, method=None):
        rule = dict(temperature=temperature, momentum=momentum, repulsion=repulsion, damping=damping,
                    langevin=langevin, sinkhorn_iters=sinkhorn_iters, slot_norm=slot_norm, anneal_ratio=anneal_ratio,
                    anneal_steps=anneal_steps)
        f32 = jnp.float32
        base = tuple(getattr(self, f) for f in self.RULE)
        if method is not None:
            table = [tuple(row) + base[len(row):] for row in self.methods]  # short rows: defaults after
            base = tuple(jnp.asarray(table, f32)[method])  # a row of the method table
        params = dynamics.Params(**{f: f32(b) if rule.get(f) is None else f32(rule[f]) for f, b in zip(self.RULE, base)})
        noise = f32(self.noise if noise is None else noise)
        n_clusters = jnp.int32(self.n_clusters if n_clusters is None else n_clusters)
        c, init_noise = data._generate(key, n_clusters, noise, f32(self.center_box), self.max_clusters,
                                       self.points_per_cluster, self.dim, self.centers)
        if self.init == "data":  # reuse the data's random bits: one threefry call per run
            t0 = dynamics.forgy(c.x, init_noise, c.mask, self.n_tokens)
        else:
            t0 = dynamics._init_tokens(jax.random.fold_in(key, 0x7FFFFFFF), c.x, c.mask, self.init_scale,
                                       n_tokens=self.n_tokens, dim=self.dim, method=self.init)
        r = dynamics._run(c.x, t0, params, c.mask, jnp.int32(self.n_steps), f32(self.tol),
                          jax.random.fold_in(key, self.LANGEVIN_STREAM))
        labels_true = jnp.where(c.mask, c.labels, 0)
        labels_pred = jnp.where(c.mask, r.labels, 0)
        kw = dict(n_true=self.max_clusters, n_pred=self.n_tokens)
        return dict(
            ari=metrics.ari(labels_true, labels_pred, c.mask, **kw),
            nmi=metrics.nmi(labels_true, labels_pred, c.mask, **kw),
            sse=metrics.sse(c.x, labels_pred, r.tokens, c.mask),
            steps=r.steps,
            converged=r.converged,
            collapsed=metrics.collapsed(labels_pred, self.n_tokens, n_clusters, c.mask),
        )


@dataclasses.dataclass(frozen=True)
class Config(RunStructure):
    """Everything that defines the study; saved as ``config.json`` and enough to reproduce it."""

    seeds: int = 30
    noise: tuple = (0.3, 0.6, 0.9)
    n_clusters: tuple = (3, 4, 5)
    methods: tuple = ("baseline", "inertia", "repulsion", "inertia+repulsion")
    temperature: float = 1.0
    root_seed: int = 0

    def validate(self) -> "Config":
        _checks.positive_int("seeds", self.seeds)
        _checks.real("temperature", self.temperature, low=0.0, low_open=True)
        _checks.real("noise", np.asarray(self.noise, float), low=0.0)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for m in self.methods:
            _checks.choice("methods", m, dynamics.METHODS)
        if not self.noise or not self.n_clusters:
            raise ValueError("noise and n_clusters must each hold at least one value")
        for k in self.n_clusters:
            _checks.positive_int("n_clusters", k)
        self._validate_structure(min(self.n_clusters))
        return self

    def task(self) -> ClusterRun:
        """The per-run function: :class:`ClusterRun` with this study's structure and method table."""
        table = tuple((float(self.temperature),) + dynamics.as_row(dynamics.METHODS[m])[1:] for m in self.methods)
        return ClusterRun(**self._structure(), max_clusters=max(self.n_clusters), temperature=float(self.temperature),
                          methods=table)

    def grid(self) -> sweep.Grid:
        """method (index into ``methods``) x K x noise x seeds, seeds fastest."""
        return sweep.Grid(method=np.arange(len(self.methods)), n_clusters=np.asarray(self.n_clusters),
                          noise=np.asarray(self.noise, np.float32), seeds=self.seeds)


def simulate(cfg: Config, *, chunk_size=None, batch_size="auto", devices=None, progress=False,
             cache_dir=None) -> dict[str, np.ndarray]:
    """Run every run of the study: a :func:`tokdyn.sweep.run` of :meth:`Config.task` over
    :meth:`Config.grid` with common random numbers (the data and initial tokens of a seed are
    shared by every method and condition). Returns the run table (method, n_clusters, noise,
    seed, then one column per metric). ``cache_dir``: where to keep the compiled executable."""
    cfg.validate()
    res = sweep.run(cfg.task(), cfg.grid(), key=jax.random.key(cfg.root_seed), common_random_numbers=True,
                    chunk_size=chunk_size, batch_size=batch_size, devices=devices, progress=progress,
                    cache_dir=cache_dir, part=(0, 1))
    table = dict(method=np.asarray(cfg.methods)[res["method"]], n_clusters=res["n_clusters"].astype(np.int32),
                 noise=res["noise"].astype(np.float32), seed=res["seed"].astype(np.int32))
    table.update({f: res[f] for f in res.fields})
    return table


def summarise(runs: dict[str, np.ndarray], cfg: Config):
    """Per method x K x noise and per method: mean and std (ddof=1) of every metric."""
    rows, overall = [], []
    for name in cfg.methods:
        sel_m = runs["method"] == name
        row = dict(method=name, n_runs=int(sel_m.sum()))
        for f in METRICS:
            v = runs[f][sel_m].astype(np.float64)
            row[f + "_mean"], row[f + "_std"] = v.mean(), v.std(ddof=1) if v.size > 1 else 0.0
        overall.append(row)
        for k in cfg.n_clusters:
            for nz in cfg.noise:
                sel = sel_m & (runs["n_clusters"] == k) & np.isclose(runs["noise"], nz)
                row = dict(method=name, n_clusters=k, noise=nz, n_runs=int(sel.sum()))
                for f in METRICS:
                    v = runs[f][sel].astype(np.float64)
                    row[f + "_mean"], row[f + "_std"] = v.mean(), v.std(ddof=1) if v.size > 1 else 0.0
                rows.append(row)
    return rows, overall


def stat_tests(runs: dict[str, np.ndarray], cfg: Config, metric: str = "ari") -> list[dict]:
    """Paired t-test of each method's ``metric`` against the baseline, per condition, pairing by
    seed; Cohen's d_z; Holm and Bonferroni over the whole family."""
    if "baseline" not in cfg.methods or cfg.seeds < 2:
        return []
    tests = []
    order = np.lexsort((runs["seed"],))  # rows are already seed-fastest; keep pairing explicit

    def values(name, k, nz):
        sel = (runs["method"] == name) & (runs["n_clusters"] == k) & np.isclose(runs["noise"], nz)
        idx = order[sel[order]]
        return runs["seed"][idx], runs[metric][idx].astype(np.float64)

    for name in cfg.methods:
        if name == "baseline":
            continue
        for k in cfg.n_clusters:
            for nz in cfg.noise:
                s_a, a = values(name, k, nz)
                s_b, b = values("baseline", k, nz)
                assert np.array_equal(s_a, s_b)
                res = stats.paired_ttest(a, b)
                tests.append(dict(method=name, baseline="baseline", metric=metric, n_clusters=int(k), noise=float(nz),
                                  n=int(a.size), mean_diff=float(np.mean(a - b)), t=float(res.statistic),
                                  p=float(res.pvalue), d=float(stats.cohens_d(a, b))))
    p = np.asarray([t["p"] for t in tests])
    for t, ph, pb in zip(tests, stats.holm(p), stats.bonferroni(p)):
        t["p_holm"], t["p_bonferroni"] = float(ph), float(pb)
    return tests


def _columns(rows: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def write_outputs(out: str, cfg: Config, runs, summary, overall, tests, *, timings=None, plots=True,
                  plot_worker: report.PlotWorker | None = None) -> None:
    """Write every output file; figures go through ``plot_worker`` when given (see main)."""
    os.makedirs(out, exist_ok=True)
    report.write_csv(os.path.join(out, "runs.csv"),
                     {k: runs[k] for k in ("method", "n_clusters", "noise", "seed", *METRICS)})
    report.write_csv(os.path.join(out, "summary.csv"), _columns(summary))
    report.write_csv(os.path.join(out, "overall.csv"), _columns(overall))
    report.write_json(os.path.join(out, "stat_tests.json"), tests)
    report.write_json(os.path.join(out, "config.json"), dict(
        study="token-dynamics", config=dataclasses.asdict(cfg), environment=report.environment(),
        timings=timings or {}))
    if plots:
        jobs = plot_jobs(out, cfg, summary)
        if plot_worker is not None:
            plot_worker.draw(jobs)
        else:
            for job in jobs:
                report.draw(job)


def plot_jobs(out: str, cfg: Config, summary: list[dict]) -> list[dict]:
    """The figures ``plots/{ari_mean,steps_mean,collapsed_rate}.png`` (metric vs noise, one panel
    per K), as keyword arguments of :func:`tokdyn.report.line_plot`."""
    noise = list(cfg.noise)
    jobs = []
    for metric, fname, label in (("ari", "ari_mean", "ARI"), ("steps", "steps_mean", "steps"),
                                 ("collapsed", "collapsed_rate", "collapse rate")):
        panels, errors = {}, {}
        for k in cfg.n_clusters:
            title = f"K = {k}"
            panels[title], errors[title] = {}, {}
            for name in cfg.methods:
                rows = {r["noise"]: r for r in summary if r["method"] == name and r["n_clusters"] == k}
                panels[title][name] = [rows[nz][metric + "_mean"] for nz in noise]
                # standard error of the mean over seeds
                errors[title][name] = [rows[nz][metric + "_std"] / np.sqrt(max(rows[nz]["n_runs"], 1)) for nz in noise]
        jobs.append(dict(path=os.path.join(out, "plots", fname + ".png"), x=noise, series={}, panels=panels,
                         errors=errors, xlabel="noise std", ylabel=label,
                         title=f"{label} vs noise (mean ± s.e. over {cfg.seeds} seeds)"))
    return jobs


def format_tables(overall: list[dict], summary: list[dict], tests: list[dict]) -> str:
    lines = ["Overall (mean over all conditions)  —  ours | published",
             f"{'method':<19}{'ARI':>15}{'NMI':>15}{'steps':>15}{'collapse':>13}"]
    for r in overall:
        pub = PUBLISHED_OVERALL.get(r["method"])
        f = (lambda a, b, p=3: f"{a:.{p}f} | {b:.{p}f}" if b is not None else f"{a:.{p}f} |   -  ")
        g = (lambda key, p=3: pub[key] if pub else None)
        lines.append(f"{r['method']:<19}{f(r['ari_mean'], g('ari')):>15}{f(r['nmi_mean'], g('nmi')):>15}"
                     f"{f(r['steps_mean'], g('steps'), 2):>15}{f(r['collapsed_mean'], g('collapsed'), 2):>13}")
    rows = [r for r in summary if r["n_clusters"] == 4 and np.isclose(r["noise"], 0.3)]
    if rows:
        lines += ["", "Noise 0.3, K = 4  —  ours | published",
                  f"{'method':<19}{'ARI (mean±std)':>29}{'steps':>16}"]
        for r in rows:
            pub = PUBLISHED_NOISE03_K4.get(r["method"])
            ours = f"{r['ari_mean']:.3f}±{r['ari_std']:.3f}"
            theirs = f"{pub['ari']:.3f}±{pub['ari_std']:.3f}" if pub else "-"
            steps = f"{r['steps_mean']:.2f} | " + (f"{pub['steps']:.2f}" if pub else "-")
            lines.append(f"{r['method']:<19}{ours + ' | ' + theirs:>29}{steps:>16}")
    if tests:
        sig = [t for t in tests if t["p"] < 0.05]
        lines += ["", f"Paired t-tests of ARI vs baseline: {len(tests)} tests, {len(sig)} with p < 0.05 before "
                      f"correction, {sum(t['p_holm'] < 0.05 for t in tests)} after Holm."]
        for t in sorted(sig, key=lambda t: t["p"])[:6]:
            lines.append(f"  {t['method']:<19} noise {t['noise']:.1f} K={t['n_clusters']}: "
                         f"t={t['t']:.2f} p={t['p']:.3g} p_holm={t['p_holm']:.3g} d={t['d']:.2f}")
        lines.append("  (published: one significant before correction, inertia+repulsion at noise 0.3, K=4: "
                     "p=0.017, d=0.46)")
    return "\n".join(lines)


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True, chunk_size=None, batch_size="auto",
         plot_worker: report.PlotWorker | None = None, cache_dir: str | None = None) -> dict:
    """Run the study end to end and write every output into ``out``; returns the timings.

    The figures are drawn by a :class:`~tokdyn.report.PlotWorker` process (pass one started
    earlier to overlap its matplotlib import with everything else)."""
    cfg.validate()
    worker = (plot_worker or report.PlotWorker()) if plots else None
    try:
        t0 = time.perf_counter()
        runs = simulate(cfg, chunk_size=chunk_size, batch_size=batch_size, cache_dir=cache_dir, progress=not quiet)
        t1 = time.perf_counter()
        summary, overall = summarise(runs, cfg)
        tests = stat_tests(runs, cfg)
        t2 = time.perf_counter()
        timings = dict(simulate_s=t1 - t0, statistics_s=t2 - t1, n_runs=int(runs["seed"].size))
        write_outputs(out, cfg, runs, summary, overall, tests, timings=timings, plots=plots, plot_worker=worker)
        if worker is not None:
            worker.wait()
        timings["write_s"] = time.perf_counter() - t2
    finally:
        if worker is not None:
            worker.close()
    if not quiet:
        print(format_tables(overall, summary, tests))
        print(f"\n{timings['n_runs']} runs in {timings['simulate_s']:.2f} s (compile included); "
              f"outputs in {out}")
    return timings
