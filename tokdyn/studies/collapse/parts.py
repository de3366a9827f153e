"""The collapse study's parts, each a kept sweep of :class:`tokdyn.engine.runs.CollapseRun` or
rows: the threshold check (:func:`threshold_part`), the Jacobian check (:func:`jacobian_part`), the
convergence-time check (:func:`convergence_part`) and the phase diagrams (:func:`phase_parts`)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import analysis, data, dynamics
from tokdyn.engine import sweep
from tokdyn.experiment.study import Study
from tokdyn.studies.collapse.config import Config, ratio_grid


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
    ratios = ratio_grid(cfg.ratio_min, cfg.ratio_max, cfg.phase_ratios)
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
