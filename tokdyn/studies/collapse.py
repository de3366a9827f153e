"""The collapse study: where token collapse and instability really happen, against the theory.

The theory is :mod:`tokdyn.analysis`'s: the collapsed state is locally stable iff tau > tau_c = 2
lambda_max(Cov X). ``tokdyn study collapse --out DIR`` (:func:`main`, :class:`Config`) runs the parts ``threshold``,
``jacobian``, ``phase``, ``momentum``, ``repulsion`` and ``convergence`` (:func:`threshold_part`,
:func:`jacobian_part`, :func:`phase_parts`, :func:`convergence_part`), each run a
:class:`tokdyn.engine.runs.CollapseRun`, and writes ``threshold_check.csv``,
``jacobian_check.csv``, ``convergence.csv``, ``phase.csv``, the phase diagrams
(:func:`write_figures`), ``summary.json`` (:func:`summarise`) and ``config.json``. The directory
is stamped before any work; finished sweeps and parts are reused by a rerun.

The parts, the outputs, resuming and the findings: :doc:`/studies/collapse`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, analysis, data, dynamics, io
from tokdyn.engine import sweep
from tokdyn.engine.runs import CollapseRun
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.presets import PRESETS, preset_line, with_preset_line
from tokdyn.experiment.study import Estimate, Study
from tokdyn.stats import figures

MAX_STEPS = 2**31 - 1  # a run's step counter is a 32-bit integer
EXTRA_RATIOS = (0.9, 0.95, 1.05, 1.1)  # added to the threshold check's ratios
RUN_FIELDS = 7  # outputs of one run (CollapseRun)


def _ratios(lo, hi, n, extra=()):
    return np.unique(np.round(np.concatenate([np.geomspace(lo, hi, n), extra]), 6)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      shapes: data shapes, names from tokdyn.data.SHAPES.
      n_tokens: token counts T of the threshold check.
      ratio_min: smallest tau / tau_c.
      ratio_max: largest tau / tau_c.
      n_ratios: tau / tau_c values, log-spaced (plus 0.9, 0.95, 1.05, 1.1).
      seeds: seeds per threshold condition.
      n_points: points per data set (a multiple of 12).
      n_steps: the most steps a run takes.
      merge_rel: merge tolerance / RMS data radius.
      tol_rel: convergence tolerance / RMS data radius.
      phase_noise: cluster standard deviations of the phase diagrams.
      phase_tokens: token counts of the phase diagrams (on three clusters).
      momentum: momentum values of the momentum diagram.
      repulsion_rel: repulsion / (tr Cov X)^(3/2) values of the repulsion diagram.
      phase_seeds: seeds per phase-diagram cell.
      phase_ratios: tau / tau_c values of the phase diagrams.
      convergence_runs: runs of the convergence-time check.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; the printed summary's first line
        and summary.json say so).
    """

    shapes: tuple = ("blobs2", "aniso2", "overlap4", "blobs8")
    n_tokens: tuple = (2, 4, 8)
    ratio_min: float = 0.25
    ratio_max: float = 4.0
    n_ratios: int = 17
    seeds: int = 16
    n_points: int = 120
    n_steps: int = 2000
    merge_rel: float = analysis.MERGE_REL
    tol_rel: float = 1e-5
    phase_noise: tuple = (0.25, 0.5, 1.0, 1.5, 2.5)
    phase_tokens: tuple = (2, 3, 6, 12)  # T/K = 2/3, 1, 2, 4 on three clusters
    momentum: tuple = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
    repulsion_rel: tuple = (0.0, 1e-7, 1e-5, 1e-3, 1e-1)
    phase_seeds: int = 8
    phase_ratios: int = 13
    convergence_runs: int = 64
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field (``n_points`` a multiple of 12, token counts at most ``n_points``); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in ("shapes", "n_tokens", "phase_noise", "phase_tokens", "momentum", "repulsion_rel"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must list at least one value (a comma list), got {value!r}")
            _checks.distinct(name, value)  # each value is one condition: a repeat would count its runs twice
        for s in self.shapes:
            _checks.choice("shapes", s, data.SHAPES)
        for name in ("n_tokens", "phase_tokens"):
            for t in getattr(self, name):
                _checks.positive_int(name, t, minimum=2)
        for name in ("n_ratios", "seeds", "n_points", "n_steps", "phase_seeds", "phase_ratios", "convergence_runs"):
            _checks.positive_int(name, getattr(self, name), minimum=2 if "ratio" in name else 1)
        if self.n_steps > MAX_STEPS:
            raise ValueError(f"n_steps must be at most {MAX_STEPS:,} (a 32-bit step counter), got {self.n_steps!r}")
        _checks.seed("root_seed", self.root_seed)
        _checks.real("ratio_min", self.ratio_min, low=0.0, low_open=True)
        _checks.real("ratio_max", self.ratio_max, low=self.ratio_min, low_open=True)
        _checks.real("merge_rel", self.merge_rel, low=0.0, low_open=True)
        _checks.real("tol_rel", self.tol_rel, low=0.0, low_open=True)
        _checks.real("phase_noise", np.asarray(self.phase_noise, float), low=0.0, low_open=True)
        _checks.real("momentum", np.asarray(self.momentum, float), low=0.0, high=1.0, high_open=True)
        _checks.real("repulsion_rel", np.asarray(self.repulsion_rel, float), low=0.0)
        if self.n_points % 12:
            raise ValueError(f"n_points must be a multiple of 12 (3 or 4 equal clusters), got {self.n_points}")
        for name in ("n_tokens", "phase_tokens"):
            if max(getattr(self, name)) > self.n_points:
                raise ValueError(f"{name} must not exceed n_points={self.n_points}, got {getattr(self, name)}")
        _checks.choice("preset", self.preset, PRESETS)
        return self

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``, well under a minute on 2 cores): 2 shapes x 2 token counts,
        7 ratios x 4 seeds in the threshold check, 2 noise levels x 2 token counts, 2 momenta and 2
        repulsions x 5 ratios x 2 seeds in the diagrams, 500 steps. A smoke run: its numbers are
        not the study's findings (its summary says so)."""
        return cls(
            shapes=("blobs2", "overlap4"),
            n_tokens=(2, 4),
            n_ratios=7,
            seeds=4,
            n_points=48,
            n_steps=500,
            phase_noise=(0.5, 1.5),
            phase_tokens=(3, 6),
            momentum=(0.0, 0.9),
            repulsion_rel=(0.0, 1e-3),
            phase_seeds=2,
            phase_ratios=5,
            convergence_runs=8,
            preset="quick",
        )

    def sweeps(self) -> list[tuple[str, dict]]:
        """``(part, {option: size})`` of every sweep: its runs are the product of the sizes (the
        threshold check's ratios counted at most: ``n_ratios`` plus the 4 near 1)."""
        out = [
            (f"threshold_{s}_T{t}", dict(n_ratios=self.n_ratios + len(EXTRA_RATIOS), seeds=self.seeds))
            for s in self.shapes
            for t in self.n_tokens
        ]
        out += [
            (
                f"phase_T{t}",
                dict(phase_noise=len(self.phase_noise), phase_ratios=self.phase_ratios, phase_seeds=self.phase_seeds),
            )
            for t in self.phase_tokens
        ]
        out += [
            (
                "momentum",
                dict(momentum=len(self.momentum), phase_ratios=self.phase_ratios, phase_seeds=self.phase_seeds),
            ),
            (
                "repulsion",
                dict(
                    repulsion_rel=len(self.repulsion_rel), phase_ratios=self.phase_ratios, phase_seeds=self.phase_seeds
                ),
            ),
        ]
        return out

    def estimate(self) -> Estimate:
        """The largest sweep's run table held in memory (its conditions and outputs, float64, a few
        copies) or one run's data and token distances (on each device at once), and the time at
        a rough cost per step on the reference CPU (the runs scaled by this machine's ``dynamics``
        rate; the Jacobians' eigenvalues and a compile per sweep on the host); refuses
        (:class:`~tokdyn.experiment.study.Refused`, naming the option) a table or run larger than
        XLA can index, before :meth:`ratios` is computed."""
        defaults = Config()
        dim = max(data.SHAPES[s][0] for s in self.shapes)
        tokens = max(self.n_tokens + self.phase_tokens)
        study_dir.elements_fit("n_points", self.n_points, max(dim, tokens))  # the data, the distances
        need = {"n_points": len(jax.local_devices()) * 8.0 * self.n_points * (dim + tokens) * 4}
        jac = 2 * dim * max(sorted(set(self.n_tokens))[:2])  # the Jacobian check's state (with a velocity)
        study_dir.elements_fit("n_tokens", jac, jac)
        need["n_tokens"] = jac * jac * 8.0 * 4
        need["convergence_runs"] = self.convergence_runs * 2000.0  # a row (a dict) per run, held until written
        runs, seconds = 0, 0.0
        step = self.n_points * tokens * dim * 2e-9 + 1e-6
        for name, sizes in self.sweeps():
            n = int(np.prod([float(v) for v in sizes.values()]))
            option = max(sizes, key=lambda k: sizes[k] / max(1, _default_size(defaults, k)))
            if n > study_dir.MAX_ELEMENTS:
                study_dir.elements_fit(option, *sizes.values())
            need[option] = max(need.get(option, 0.0), n * (RUN_FIELDS + 4) * 8.0 * 3)
            runs += n
            # most runs converge within a few hundred steps; some of momentum and repulsion never do
            slow = 0.25 if name in ("momentum", "repulsion") else 0.0
            seconds += n * step * ((1 - slow) * min(self.n_steps, 300) + slow * self.n_steps)
        seconds += self.convergence_runs * (0.05 + 2000 * 3 * 2 * self.n_points * 2e-9)
        host = 12 * len(self.shapes) * jac**3 * 1e-9 + 10.0 * len(self.sweeps())  # eigenvalues, compiles
        option = max(need, key=need.get)
        return Estimate(
            memory=need[option],
            option=option,
            models=runs + self.convergence_runs,
            work={"dynamics": seconds, "host": host},
        )

    def ratios(self) -> np.ndarray:
        """The tau / tau_c values of the threshold check, (n,) float32 ascending: ``n_ratios``
        log-spaced from ``ratio_min`` to ``ratio_max`` plus 0.9, 0.95, 1.05 and 1.1, rounded to 6
        decimals, without repeats."""
        return _ratios(self.ratio_min, self.ratio_max, self.n_ratios, EXTRA_RATIOS)

    def run_fn(self, shape: str, n_tokens: int) -> CollapseRun:
        """The per-run function of a sweep on the point cloud ``shape`` with ``n_tokens`` tokens:
        :class:`~tokdyn.engine.runs.CollapseRun` with this configuration's ``n_points``, ``n_steps``,
        ``merge_rel`` and ``tol_rel``."""
        return CollapseRun(shape, n_tokens, self.n_points, self.n_steps, float(self.merge_rel), float(self.tol_rel))


def _default_size(cfg: Config, name: str) -> int:
    value = getattr(cfg, name)
    return len(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------------------------- parts


def _sweep(cfg, out, name, fn, grid, progress):
    """The runs of one sweep (columns), resumed from ``out/sweeps/<name>``; ``out`` a directory
    or the :class:`~tokdyn.experiment.study.Study`, which then keeps them as the part
    ``sweep_<name>`` (keyed by its stamp)."""
    study = out if isinstance(out, Study) else None
    folder = os.path.join(study.out if study is not None else out, "sweeps", name)

    def compute():  # the sweep engine sets aside (naming it) a damaged chunk or manifest and redoes it
        key = jax.random.fold_in(jax.random.key(cfg.root_seed), sum(map(ord, name)))
        res = sweep.run(
            fn, grid, key=key, out=folder, progress=progress, common_random_numbers=True, part=(0, 1)
        )  # resumes a finished or cut-off part
        return {f: np.asarray(res[f]) for f in (*grid.names, "seed", *res.fields)}

    return compute() if study is None else study.part(f"sweep_{name}", compute)


def crossing(ratios, rate, level=0.5):
    """The ratio where ``rate`` first crosses ``level`` (linear interpolation in log ratio); NaN if never."""
    ratios, rate = np.asarray(ratios, float), np.asarray(rate, float)
    above = np.flatnonzero(rate >= level)
    if above.size == 0:
        return float("nan")
    i = above[0]
    if i == 0:
        return float(ratios[0])
    lo, hi = np.log(ratios[i - 1]), np.log(ratios[i])
    w = (level - rate[i - 1]) / (rate[i] - rate[i - 1])
    return float(np.exp(lo + w * (hi - lo)))


def threshold_part(cfg: Config, out, progress=False):
    """Collapse rate over tau/tau_c per data shape x T; one row per shape x T. ``out``: a
    directory, or the :class:`~tokdyn.experiment.study.Study` that keeps each sweep's runs."""
    ratios, rows = cfg.ratios(), []
    for shape in cfg.shapes:
        for t in cfg.n_tokens:
            r = _sweep(
                cfg,
                out,
                f"threshold_{shape}_T{t}",
                cfg.run_fn(shape, t),
                sweep.Grid(ratio=ratios, seeds=cfg.seeds),
                progress,
            )
            rate = np.array([r["collapsed"][r["ratio"] == q].mean() for q in ratios])
            conv = np.array([r["converged"][r["ratio"] == q].mean() for q in ratios])
            tc = r["tau_c"][r["ratio"] == ratios[0]]
            r50 = crossing(ratios, rate)
            rows.append(
                dict(
                    shape=shape,
                    dim=data.SHAPES[shape][0],
                    n_points=cfg.n_points,
                    n_tokens=t,
                    tau_c_pred=float(tc.mean()),
                    tau_c_std=float(tc.std()),
                    ratio_50=r50,
                    tau_50=r50 * float(tc.mean()),
                    rel_error=r50 - 1.0,
                    rate_below=float(rate[ratios <= 0.9 + 1e-6].max()),
                    rate_above=float(rate[ratios >= 1.1 - 1e-6].min()),
                    converged_rate=float(conv.mean()),
                    n_runs=len(r["ratio"]),
                    rates=" ".join(f"{v:.3g}" for v in rate),
                )
            )
    return rows


def jacobian_part(cfg: Config):
    """Predicted vs numerical eigenvalues at the collapsed state: one row per eigenvalue."""
    rows = []
    for shape in cfg.shapes:
        x = data.point_cloud(jax.random.key(cfg.root_seed), shape, cfg.n_points, 1.0)
        tc = float(analysis.collapse_threshold(x))
        for t in sorted(set(cfg.n_tokens))[:2]:
            t0 = analysis.collapsed_state(x, t)
            for ratio in (0.5, 2.0):
                for beta in (0.0, 0.5, 0.9):
                    p = dynamics.Hparams(ratio * tc, beta)
                    jac = analysis.jacobian(x, t0, p, velocity=None if beta == 0 else jnp.zeros_like(t0))
                    num = analysis.eigenvalues(jac)
                    pred = analysis.collapse_eigenvalues(x, t, ratio * tc, momentum=beta)
                    num, pred = _match(num, pred)
                    for i, (a, b) in enumerate(zip(pred, num)):
                        rows.append(
                            dict(
                                shape=shape,
                                n_tokens=t,
                                ratio=ratio,
                                momentum=beta,
                                index=i,
                                pred_re=a.real,
                                pred_im=a.imag,
                                num_re=b.real,
                                num_im=b.imag,
                                abs_error=abs(a - b),
                                rho_pred=np.abs(pred).max(),
                                rho_num=np.abs(num).max(),
                            )
                        )
    return rows


def _match(num, pred):
    """Pair numerical with predicted eigenvalues greedily by distance (multisets, same length)."""
    num, left, out = np.asarray(num), list(range(len(num))), []
    for p in pred:
        j = min(left, key=lambda k: abs(num[k] - p))
        left.remove(j)
        out.append(num[j])
    return np.asarray(out), np.asarray(pred)


def convergence_part(cfg: Config):
    """Spectral radius at the fixed point -> predicted steps, vs observed (tol = 1e-3, 3 tokens)."""
    rows, tol = [], 1e-3
    rng = np.random.default_rng(cfg.root_seed)
    for i in range(cfg.convergence_runs):
        key = jax.random.fold_in(jax.random.key(cfg.root_seed), 1000 + i)
        x = data.point_cloud(key, "blobs2", cfg.n_points, 0.8)
        ratio = float(np.exp(rng.uniform(np.log(0.05), np.log(0.9))))
        p = dynamics.Hparams(ratio * float(analysis.collapse_threshold(x)))
        t0 = dynamics.init_tokens(jax.random.fold_in(key, 1), 3, 2, x=x)
        r = dynamics.run(x, t0, p, n_steps=1000, tol=tol)
        fp = analysis.fixed_point(x, t0, p)
        rho = analysis.spectral_radius(analysis.jacobian(x, fp.tokens, p))
        d0 = float(dynamics.trajectory(x, t0, p, n_steps=1, tol=tol).delta[0])
        rows.append(
            dict(
                run=i,
                ratio=ratio,
                rho=float(rho),
                delta0=d0,
                predicted=float(analysis.predicted_steps(rho, d0, tol)),
                observed=int(r.steps),
                converged=bool(r.converged),
            )
        )
    return rows


def phase_parts(cfg: Config, out, progress=False):
    """noise x T/K x ratio (three clusters), and momentum / repulsion x ratio (T = 4, noise 1);
    ``out`` as in :func:`threshold_part`."""
    ratios = _ratios(cfg.ratio_min, cfg.ratio_max, cfg.phase_ratios)
    phase = {
        t: _sweep(
            cfg,
            out,
            f"phase_T{t}",
            cfg.run_fn("blobs2", t),
            sweep.Grid(noise=np.asarray(cfg.phase_noise, np.float32), ratio=ratios, seeds=cfg.phase_seeds),
            progress,
        )
        for t in cfg.phase_tokens
    }
    mom = _sweep(
        cfg,
        out,
        "momentum",
        cfg.run_fn("blobs2", 4),
        sweep.Grid(momentum=np.asarray(cfg.momentum, np.float32), ratio=ratios, seeds=cfg.phase_seeds),
        progress,
    )
    rep = _sweep(
        cfg,
        out,
        "repulsion",
        cfg.run_fn("blobs2", 4),
        sweep.Grid(repulsion_rel=np.asarray(cfg.repulsion_rel, np.float32), ratio=ratios, seeds=cfg.phase_seeds),
        progress,
    )
    return ratios, phase, mom, rep


def _table(r, row_axis, rows, ratios, field):
    return np.array(
        [
            [r[field][(r[row_axis] == np.float32(a)) & (r["ratio"] == q)].astype(float).mean() for q in ratios]
            for a in rows
        ]
    )  # (rows, ratios)


def phase_rows(ratios, phase, mom, rep, cfg):
    """Flat per-cell table of every phase diagram (:func:`phase_parts`'s sweeps).

    Args:
      ratios: (R,) the values of tau / tau_c swept.
      phase: T -> the noise x ratio sweep with T tokens (a dict of equal-length columns:
        ``noise``, ``ratio``, ``seed`` and the run's outputs ``collapsed``, ``merged``, ``groups``,
        ``converged``, ``steps``, ``min_sep_rel``).
      mom: the momentum x ratio sweep (T = 4), the same columns with ``momentum`` for ``noise``.
      rep: the repulsion x ratio sweep (T = 4), with ``repulsion_rel`` (gamma over
        (tr Cov X)^(3/2)).
      cfg: the study's :class:`Config` (the axis values swept).

    Returns:
      One dict per diagram, axis value and ratio: ``diagram``, ``axis``, ``value``, ``t_over_k``,
      ``ratio``, the mean rates ``collapsed``, ``merged``, ``converged``, the mean ``groups`` and
      ``steps``, and the median ``min_sep_rel``.
    """
    out = []
    for name, r, axis, values, tk in [(f"noise_T{t}", phase[t], "noise", cfg.phase_noise, t / 3) for t in phase] + [
        ("momentum", mom, "momentum", cfg.momentum, 4 / 3),
        ("repulsion", rep, "repulsion_rel", cfg.repulsion_rel, 4 / 3),
    ]:
        for a in values:
            for q in ratios:
                sel = (r[axis] == np.float32(a)) & (r["ratio"] == q)
                out.append(
                    dict(
                        diagram=name,
                        axis=axis,
                        value=float(a),
                        t_over_k=tk,
                        ratio=float(q),
                        collapsed=r["collapsed"][sel].mean(),
                        merged=r["merged"][sel].mean(),
                        groups=r["groups"][sel].mean(),
                        converged=r["converged"][sel].mean(),
                        steps=r["steps"][sel].mean(),
                        min_sep_rel=np.median(r["min_sep_rel"][sel]),
                    )
                )
    return out


# ---------------------------------------------------------------------------------------------- figures


def _panels(path, ratios, panels, ylabel, title, boundaries=(1.0,), cbar="rate"):
    """Side-by-side heatmaps over log ratio (x) and a row axis (y), theory boundaries as lines."""
    fig = figures.figure((3.4 * len(panels) + 0.8, 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    lx = np.log2(ratios)
    edges = np.concatenate([[lx[0] - (lx[1] - lx[0]) / 2], (lx[1:] + lx[:-1]) / 2, [lx[-1] + (lx[-1] - lx[-2]) / 2]])
    for ax, (name, (yvals, z, vmax)) in zip(axes, panels.items()):
        ye = np.arange(len(yvals) + 1) - 0.5
        im = ax.pcolormesh(edges, ye, z, vmin=0, vmax=vmax, cmap="viridis", shading="flat")
        for b in boundaries:
            ax.axvline(np.log2(b), color="red", lw=1.5, ls="-" if b == 1 else "--")
        ax.set_yticks(np.arange(len(yvals)), [f"{v:g}" for v in yvals], fontsize=8)
        ticks = [-2, -1, 0, 1, 2]
        ax.set_xticks(ticks, [f"{2.0**t:g}" for t in ticks], fontsize=8)
        ax.set_xlabel("tau / tau_c")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel(ylabel)
    fig.colorbar(im, ax=list(axes), label=cbar, fraction=0.03)
    fig.suptitle(title, fontsize=10)
    return figures.save(fig, path, dpi=90)


def write_figures(out, cfg, ratios, phase, mom, rep):
    """Draw the phase diagrams of :func:`phase_parts`'s sweeps into ``out``.

    The figures: ``phase_collapse.png``, ``phase_groups.png`` (noise x tau/tau_c per T/K),
    ``phase_momentum.png`` and ``phase_repulsion.png``.

    Args:
      out: the directory the figures go into.
      cfg: the study's :class:`Config`.
      ratios: (R,) the values of tau / tau_c swept.
      phase: T -> the noise x ratio sweep with T tokens (a dict of equal-length columns:
        ``noise``, ``ratio``, ``seed`` and the run's outputs ``collapsed``, ``merged``, ``groups``,
        ``converged``, ``steps``, ``min_sep_rel``).
      mom: the momentum x ratio sweep (T = 4), the same columns with ``momentum`` for ``noise``.
      rep: the repulsion x ratio sweep (T = 4), with ``repulsion_rel`` (gamma over
        (tr Cov X)^(3/2)).

    Returns:
      The figures' paths.
    """
    k = 3
    noise = np.asarray(cfg.phase_noise)
    paths = [
        _panels(
            os.path.join(out, "phase_collapse.png"),
            ratios,
            {f"T/K = {t}/{k}": (noise, _table(phase[t], "noise", noise, ratios, "collapsed"), 1) for t in phase},
            "cluster std (centres in [-3, 3]^2)",
            "all tokens merged (rate); red: theory tau = tau_c",
        ),
        _panels(
            os.path.join(out, "phase_groups.png"),
            ratios,
            {f"T/K = {t}/{k}": (noise, _table(phase[t], "noise", noise, ratios, "groups") / t, 1) for t in phase},
            "cluster std",
            "distinct token groups / T (mean); red: tau = tau_c",
            cbar="groups / T",
        ),
        _panels(
            os.path.join(out, "phase_momentum.png"),
            ratios,
            {
                "collapsed": (cfg.momentum, _table(mom, "momentum", cfg.momentum, ratios, "collapsed"), 1),
                "not converged": (cfg.momentum, 1 - _table(mom, "momentum", cfg.momentum, ratios, "converged"), 1),
                "steps / n_steps": (
                    cfg.momentum,
                    _table(mom, "momentum", cfg.momentum, ratios, "steps") / cfg.n_steps,
                    1,
                ),
            },
            "momentum beta",
            "heavy-ball momentum (T = 4, K = 3); theory: boundary at tau_c for every beta < 1",
        ),
        _panels(
            os.path.join(out, "phase_repulsion.png"),
            ratios,
            {
                "tokens merged (any pair)": (
                    cfg.repulsion_rel,
                    _table(rep, "repulsion_rel", cfg.repulsion_rel, ratios, "merged"),
                    1,
                ),
                "not converged": (
                    cfg.repulsion_rel,
                    1 - _table(rep, "repulsion_rel", cfg.repulsion_rel, ratios, "converged"),
                    1,
                ),
            },
            "gamma / (tr Cov X)^(3/2)",
            "repulsion (T = 4, K = 3); red dashed: pair instability tau = 3 tau_c",
            boundaries=(1.0, 3.0),
        ),
    ]
    return paths


def summarise(thr, jac, conv, mom, rep, ratios) -> dict:
    """The headline numbers (``summary.json``) of the parts' rows and runs.

    Args:
      thr: :func:`threshold_part`'s rows (one per data shape x T).
      jac: :func:`jacobian_part`'s rows (one per eigenvalue).
      conv: :func:`convergence_part`'s rows (one per run).
      mom: the momentum x ratio sweep of :func:`phase_parts`.
      rep: the repulsion x ratio sweep of :func:`phase_parts`.
      ratios: (R,) the values of tau / tau_c swept (the rates are read from the sweeps' own
        ``ratio`` column).

    Returns:
      A dict: the threshold check's largest relative error, the Jacobian check's largest
      eigenvalue error, the Spearman correlation and median ratio of observed to predicted
      convergence steps (converged runs of 3 steps or more), and per momentum or repulsion value
      the collapse, merge and non-convergence rates above tau_c (1.15 tau_c; 3.1 tau_c for
      non-convergence).
    """
    from scipy.stats import spearmanr

    obs = np.array([r["observed"] for r in conv], float)
    pred = np.array([r["predicted"] for r in conv], float)
    ok = np.array([r["converged"] for r in conv]) & np.isfinite(pred) & (obs >= 3)
    rel = np.array([r["rel_error"] for r in thr], float)
    rep_hi = (rep["repulsion_rel"] > 0) & (rep["ratio"] > 1.0)
    return dict(
        threshold_max_abs_rel_error=float(np.nanmax(np.abs(rel))),
        threshold_all_within_10pct=bool(np.all(np.abs(rel) <= 0.1)),
        jacobian_max_abs_error=float(max(r["abs_error"] for r in jac)),
        convergence_runs=int(ok.sum()),
        convergence_spearman=float(spearmanr(pred[ok], obs[ok]).statistic) if ok.sum() > 2 else float("nan"),
        convergence_median_observed_over_predicted=float(np.median(obs[ok] / pred[ok])) if ok.any() else float("nan"),
        momentum_collapse_rate_above_tc={
            f"{b:g}": float(mom["collapsed"][(mom["momentum"] == np.float32(b)) & (mom["ratio"] > 1.15)].mean())
            for b in np.unique(mom["momentum"])
        },
        repulsion_merged_rate_above_tc={
            f"{g:g}": float(rep["merged"][(rep["repulsion_rel"] == np.float32(g)) & (rep["ratio"] > 1.15)].mean())
            for g in np.unique(rep["repulsion_rel"])
        },
        repulsion_nonconverged_rate_above_3tc={
            f"{g:g}": float(1 - rep["converged"][(rep["repulsion_rel"] == np.float32(g)) & (rep["ratio"] > 3.1)].mean())
            for g in np.unique(rep["repulsion_rel"])
        },
        repulsion_runs_above_tc=int(rep_hi.sum()),
    )


def format_summary(s: dict) -> str:
    """The numbers of :func:`summarise` as the lines a run prints at its end."""
    lines = [
        f"threshold: max |tau_50 / tau_c - 1| = {s['threshold_max_abs_rel_error']:.3f} "
        f"(all within 10%: {s['threshold_all_within_10pct']})",
        f"jacobian: max |predicted - numerical eigenvalue| = {s['jacobian_max_abs_error']:.2e}",
        f"convergence time: {s['convergence_runs']} runs, Spearman {s['convergence_spearman']:.2f}, "
        f"median observed/predicted {s['convergence_median_observed_over_predicted']:.2f}",
        "momentum: collapse rate above 1.15 tau_c "
        + ", ".join(f"beta={k}: {v:.2f}" for k, v in s["momentum_collapse_rate_above_tc"].items()),
        "repulsion: merged rate above 1.15 tau_c "
        + ", ".join(f"{k}: {v:.2f}" for k, v in s["repulsion_merged_rate_above_tc"].items()),
        "repulsion: non-converged above 3.1 tau_c "
        + ", ".join(f"{k}: {v:.2f}" for k, v in s["repulsion_nonconverged_rate_above_3tc"].items()),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the study


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Every part (finished sweeps and parts found in the directory reused;
    :doc:`/studies/collapse`) and the headline numbers (:func:`summarise`; the quick preset's label first)."""
    study, progress = session.study, not session.quiet
    with session.timed("threshold"):
        thr = threshold_part(cfg, study, progress=progress)
    session.say(f"threshold: {len(thr)} rows, max |rel error| {np.nanmax(np.abs([r['rel_error'] for r in thr])):.3f}")
    with session.timed("jacobian_convergence"):
        jac = study.rows("jacobian", lambda: jacobian_part(cfg))
        conv = study.rows("convergence", lambda: convergence_part(cfg))
    with session.timed("phase"):
        ratios, phase, mom, rep = phase_parts(cfg, study, progress=progress)
    summary = summarise(thr, jac, conv, mom, rep, ratios)
    if cfg.preset:  # first in summary.json: which preset, and that its numbers are no findings
        summary = {"preset": cfg.preset, "note": preset_line(cfg), **summary}
    tables = {
        "threshold_check.csv": io.to_columns(thr),
        "jacobian_check.csv": io.to_columns(jac),
        "convergence.csv": io.to_columns(conv),
        "phase.csv": io.to_columns(phase_rows(ratios, phase, mom, rep, cfg)),
    }
    return runner.Result(
        tables,
        data=dict(summary=summary, sweeps=(ratios, phase, mom, rep)),
        record={"shapes": {s: data.SHAPES[s][1] for s in cfg.shapes}},
        value=summary,
    )


SPEC = runner.Spec(
    name="collapse",
    config=Config,
    run=run,
    figures=lambda session, cfg, r: write_figures(session.out, cfg, *r.data["sweeps"]),
    summary=lambda cfg, r: r.data["summary"],
    summary_file="summary.json",
    printed=lambda cfg, r, summary: with_preset_line(cfg, format_summary(summary)),
    outputs=("threshold_check.csv", "jacobian_check.csv", "convergence.csv", "phase.csv"),
    figure_files=("phase_collapse.png", "phase_groups.png", "phase_momentum.png", "phase_repulsion.png"),
    selection=("preset",),
)  # a label: the same runs with it or without it


main = runner.entry(
    SPEC, __name__, returns="The summary (a dict, also ``summary.json``).", about="Finished sweeps and parts are kept."
)
