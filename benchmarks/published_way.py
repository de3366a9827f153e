"""The token-dynamics study done the published way, as an end-to-end timing peer.

One process: NumPy data per run (make_blobs-style uniform centres, Gaussian points), the float64
NumPy per-run rule (benchmarks/peers.py ``numpy_per_run``), scikit-learn ARI/NMI, SciPy paired
t-tests, statsmodels Holm correction, pandas-free CSV writing, and three matplotlib (pyplot)
figures. Same grid as ``tokdyn study token-dynamics``: 30 seeds x noise {0.3,0.6,0.9} x K {3,4,5}
x 4 methods. Usage: ``python benchmarks/published_way.py OUT_DIR [--seeds 30]``.
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


def blobs(seed, k, noise, ppc=50, dim=16, box=10.0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-box, box, size=(k, dim))
    x = np.concatenate([c + noise * rng.standard_normal((ppc, dim)) for c in centres])
    labels = np.repeat(np.arange(k), ppc)
    tokens0 = x[rng.choice(len(x), 4, replace=False)]
    return x, labels, tokens0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seeds", type=int, default=30)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "plots"), exist_ok=True)
    rows = []
    for name, mp in METHODS.items():
        for k in (3, 4, 5):
            for noise in (0.3, 0.6, 0.9):
                for seed in range(a.seeds):
                    x, labels, t0 = blobs(seed, k, noise)
                    r = peers.numpy_per_run(x[None].astype(np.float32), np.ones((1, len(x)), bool), t0[None],
                                            labels[None], np.array([k]), temperature=1.0, n_steps=30, tol=1e-3, **mp)
                    rows.append(dict(method=name, n_clusters=k, noise=noise, seed=seed,
                                     **{f: float(r[f][0]) for f in ("ari", "nmi", "sse", "steps", "converged", "collapsed")}))
    with open(os.path.join(a.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tests = []
    for name in list(METHODS)[1:]:
        for k in (3, 4, 5):
            for noise in (0.3, 0.6, 0.9):
                pick = lambda m: np.array([r["ari"] for r in rows if r["method"] == m and r["n_clusters"] == k and r["noise"] == noise])
                res = stats.ttest_rel(pick(name), pick("baseline"))
                tests.append((name, k, noise, res.statistic, res.pvalue))
    p = np.nan_to_num(np.array([t[4] for t in tests]), nan=1.0)
    multipletests(p, method="holm")
    for metric in ("ari", "steps", "collapsed"):
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.3), sharey=True)
        for ax, k in zip(axes, (3, 4, 5)):
            for name in METHODS:
                ys = [np.mean([r[metric] for r in rows if r["method"] == name and r["n_clusters"] == k and r["noise"] == nz])
                      for nz in (0.3, 0.6, 0.9)]
                ax.plot((0.3, 0.6, 0.9), ys, marker="o", label=name)
            ax.set_title(f"K = {k}")
        axes[-1].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "plots", f"{metric}.png"))
        plt.close(fig)
    print(f"published way: {len(rows)} runs, {time.perf_counter() - T_START:.2f} s after interpreter start")


if __name__ == "__main__":
    main()
