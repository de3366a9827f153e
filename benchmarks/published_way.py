"""The token-dynamics study done the published way, as an end-to-end timing peer.

One process, no JAX: per (K, noise, seed) a NumPy dataset in the study's configuration (K
centres uniform in [-box, box]^D, P Gaussian points per cluster, Forgy initial tokens), shared by
the four methods as in the study; per run the float64 NumPy rule on the points
(benchmarks/peers.py ``numpy_one_run``: scikit-learn ARI/NMI, SSE and collapse); SciPy paired
t-tests, statsmodels Holm correction, CSV writing and three matplotlib (pyplot) figures. The
defaults are `tokdyn study token-dynamics`'s (30 seeds x noise {0.3,0.6,0.9} x K {3,4,5} x 4
methods, D = 4, P = 100, 4 tokens, at most 30 steps, tol 1e-3); ``bench_study_path.py`` passes the
study's configuration explicitly (:func:`peer_args`). Usage: ``python benchmarks/published_way.py OUT_DIR [--seeds 30]``.
"""

import argparse
import csv
import os
import sys
import time

T_START = time.perf_counter()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import peers  # noqa: E402

METHODS = peers.METHODS


def peer_args() -> list:
    """The study's default configuration as published_way.py's options: the identical workload."""
    from tokdyn.studies import token_dynamics as td

    c = td.Config()
    if (
        c.centers != "uniform"
        or c.init != "data"
        or tuple(c.methods) != ("baseline", "inertia", "repulsion", "inertia+repulsion")
    ):
        raise SystemExit("published_way.py implements uniform centres, Forgy tokens and the four published methods")
    args = [
        "--seeds",
        c.seeds,
        "--noise",
        *c.noise,
        "--n-clusters",
        *c.n_clusters,
        "--dim",
        c.dim,
        "--points-per-cluster",
        c.points_per_cluster,
        "--center-box",
        c.center_box,
        "--n-tokens",
        c.n_tokens,
        "--n-steps",
        c.n_steps,
        "--tol",
        c.tol,
        "--temperature",
        c.temperature,
    ]
    return [str(a) for a in args]


def blobs(rng, k, noise, ppc, dim, box, n_tokens):
    """K clusters of ``ppc`` points around centres uniform in [-box, box]^dim; Forgy tokens."""
    centres = rng.uniform(-box, box, size=(k, dim))
    x = np.concatenate([c + noise * rng.standard_normal((ppc, dim)) for c in centres])
    labels = np.repeat(np.arange(k), ppc)
    return x, labels, x[rng.choice(len(x), n_tokens, replace=False)]


def one_run(x, labels, tokens0, k, method, n_steps, tol, temperature):
    """The rule, then the study's per-run metrics, on the run's points (float64)."""
    return peers.numpy_one_run(x, labels, tokens0, k, temperature=temperature, n_steps=n_steps, tol=tol, **method)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    ap.add_argument("--n-clusters", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--dim", type=int, default=4)
    ap.add_argument("--points-per-cluster", type=int, default=100)
    ap.add_argument("--center-box", type=float, default=10.0)
    ap.add_argument("--n-tokens", type=int, default=4)
    ap.add_argument("--n-steps", type=int, default=30)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=1.0)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "plots"), exist_ok=True)
    rows = []
    for k in a.n_clusters:
        for noise in a.noise:
            for seed in range(a.seeds):
                rng = np.random.default_rng([seed, k, int(round(noise * 1000))])
                x, labels, t0 = blobs(rng, k, noise, a.points_per_cluster, a.dim, a.center_box, a.n_tokens)
                for name, mp in METHODS.items():  # the seed's data shared by the four methods
                    rows.append(
                        dict(
                            method=name,
                            n_clusters=k,
                            noise=noise,
                            seed=seed,
                            **one_run(x, labels, t0, k, mp, a.n_steps, a.tol, a.temperature),
                        )
                    )
    with open(os.path.join(a.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tests = []
    for name in list(METHODS)[1:]:
        for k in a.n_clusters:
            for noise in a.noise:
                pick = lambda m: np.array(
                    [r["ari"] for r in rows if r["method"] == m and r["n_clusters"] == k and r["noise"] == noise]
                )
                res = stats.ttest_rel(pick(name), pick("baseline"))
                tests.append((name, k, noise, res.statistic, res.pvalue))
    p = np.nan_to_num(np.array([t[4] for t in tests]), nan=1.0)
    holm = multipletests(p, method="holm")[1]
    with open(os.path.join(a.out, "stat_tests.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "n_clusters", "noise", "t", "p", "p_holm"])
        w.writerows([(*t, ph) for t, ph in zip(tests, holm)])
    for metric in ("ari", "steps", "collapsed"):
        fig, axes = plt.subplots(1, len(a.n_clusters), figsize=(11, 3.3), sharey=True)
        for ax, k in zip(np.atleast_1d(axes), a.n_clusters):
            for name in METHODS:
                ys = [
                    np.mean(
                        [r[metric] for r in rows if r["method"] == name and r["n_clusters"] == k and r["noise"] == nz]
                    )
                    for nz in a.noise
                ]
                ax.plot(a.noise, ys, marker="o", label=name)
            ax.set_title(f"K = {k}")
        np.atleast_1d(axes)[-1].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "plots", f"{metric}.png"))
        plt.close(fig)
    print(
        f"published way: {len(rows)} runs, mean ARI {np.mean([r['ari'] for r in rows]):.3f}, mean steps "
        f"{np.mean([r['steps'] for r in rows]):.2f}, {time.perf_counter() - T_START:.2f} s after interpreter start"
    )


if __name__ == "__main__":
    main()
