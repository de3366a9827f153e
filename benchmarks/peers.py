"""Benchmark peers: the token update rule written the ways other people would write it.

Every peer runs R independent runs of the same rule on the same inputs and returns the same
per-run metrics, so the benchmark can compare wall time at equal results:

    peer(x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion,
         n_steps=30, tol=1e-3) -> dict of NumPy arrays, each of shape (R,):
         ari, nmi, sse (float64), steps (int64), converged (bool), collapsed (bool)

Inputs: ``x`` (R, N, D) float32 points, ``mask`` (R, N) bool (False = padding), ``tokens0``
(R, T, D) initial tokens, ``labels_true`` (R, N) int (-1 on padding), ``n_true`` (R,) number of
true clusters per run.

The rule (tests/reference.py is the float64 oracle): soft assignments
``a_ij = softmax_j(-||x_i - t_j||^2 / tau)``, soft means ``m_j = sum_i a_ij x_i / (sum_i a_ij + 1e-8)``,
force ``f_j = m_j - t_j + gamma * sum_{k != j} (t_j - t_k) / max(||t_j - t_k||, 1e-3)^3``,
``v <- beta v + f``, ``t <- t + v``; a run stops at the first step with ``max |v| < tol``. Hard
labels are the nearest tokens at the end; a run is collapsed when fewer than ``min(K, T)`` tokens
own a valid point. ARI and NMI (arithmetic normalisation) are computed on the valid points and
follow scikit-learn's conventions, including its special cases.

Peers:
  numpy_per_run   the "published way": a Python loop over runs, float64 NumPy, sklearn metrics
  numpy_batched   float32 NumPy over all runs at once; converged runs are frozen with masks
  torch_batched   float32 PyTorch (CPU, all cores) over all runs; converged runs are dropped
                  from the working set as they finish
  numba_parallel  numba ``prange`` over runs, a tight float32 loop per run (tokdyn's dtype;
                  ``dtype=np.float64`` for the float64 form), metrics included

``torch_batched`` and ``numba_parallel`` import their package on first use and raise
``ImportError`` with a clear message when it is absent; ``available_peers()`` lists the peers that
can run here. Run this file to check that the peers agree and to see rough timings
(``python benchmarks/peers.py --runs 64 --threads 1``).

Notes for reading the numbers:
- The float64 peers agree with each other and with tests/reference.py to rounding. The batched
  float32 peers use the GEMM form ``2 x.t - |t|^2`` (its rounding error scales with ``|x| |t|``, not with
  ``|x - t|^2``); on runs whose tokens sit near a split of a cluster the dynamics amplify it, so a
  few per cent of runs end with different labels (ARI differences up to ~0.1, means unchanged).
- torch and numba use ``os.cpu_count()`` threads (``set_threads`` changes that). On a machine
  shared with other busy processes, torch's many small multi-threaded ops can each wait for a
  descheduled thread and run tens of times slower than with one thread.

The peers live in ``peers_numpy.py``, ``peers_torch.py`` and ``peers_numba.py``, what they share in
``peers_common.py``; this file is their registry (``PEERS``) and the self-check.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the peers' modules, beside this file

import peers_torch  # noqa: E402
from peers_common import METHODS, TEMPERATURE, make_problem, scores_from_contingency  # noqa: E402, F401
from peers_numba import numba_parallel  # noqa: E402
from peers_numpy import numpy_batched, numpy_one_run, numpy_per_run, numpy_single_run  # noqa: E402, F401
from peers_torch import torch_batched  # noqa: E402

# --------------------------------------------------------------------------- registry

PEERS = {
    "numpy_per_run": numpy_per_run,
    "numpy_batched": numpy_batched,
    "torch_batched": torch_batched,
    "numba_parallel": numba_parallel,
}
_NEEDS = {"numpy_per_run": "sklearn", "torch_batched": "torch", "numba_parallel": "numba"}


def available_peers():
    """Names of the peers whose packages are installed here, in ``PEERS`` order."""
    return [name for name in PEERS if name not in _NEEDS or importlib.util.find_spec(_NEEDS[name]) is not None]


def set_threads(n_threads):
    """Use ``n_threads`` threads in the torch and numba peers (default: ``os.cpu_count()``)."""
    peers_torch.set_torch_threads(n_threads)
    if importlib.util.find_spec("numba") is not None:
        import numba

        numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))


# --------------------------------------------------------------------------- self-check


def _self_check(n_runs=64, seed=0):
    """Run every available peer on one random problem for each method; print agreement and time."""
    problem = make_problem(n_runs=n_runs, seed=seed)
    names = available_peers()
    missing = [name for name in PEERS if name not in names]
    _, n_points, dim = problem["x"].shape
    n_tokens = problem["tokens0"].shape[1]
    print(f"R={n_runs} runs, N={n_points} (padded), D={dim}, T={n_tokens}, K in {{3,4,5}}, seed={seed}")
    print(f"peers: {', '.join(names)}" + (f"   (not available: {', '.join(missing)})" if missing else ""))

    warm = make_problem(n_runs=4, seed=seed + 1)  # compile / warm up outside the timings
    for name in names:
        t0 = time.perf_counter()
        PEERS[name](**warm, temperature=TEMPERATURE, **METHODS["inertia+repulsion"])
        print(f"  first call of {name}: {time.perf_counter() - t0:.2f} s")

    base = names[0]
    print(f"agreement with {base}: fraction of runs with equal steps / converged / collapsed flags,")
    print("fraction with |dARI| < 1e-6, and the largest and mean |dARI|, largest |dNMI|, median relative dSSE")
    header = (
        f"{'method':18s} {'peer':15s} {'us/run':>8s} {'steps=':>7s} {'conv=':>6s} {'coll=':>6s} {'ARI=':>6s}"
        f" {'dARI max':>9s} {'dARI mean':>9s} {'dNMI max':>9s} {'dSSE med':>9s} {'ARI':>7s} {'steps':>6s}"
    )
    print(header)
    print("-" * len(header))
    for method, params in METHODS.items():
        results = {}
        for name in names:
            t0 = time.perf_counter()
            res = results[name] = PEERS[name](**problem, temperature=TEMPERATURE, **params)
            elapsed = time.perf_counter() - t0
            ref = results[base]
            d_ari = np.abs(res["ari"] - ref["ari"])
            d_nmi = np.abs(res["nmi"] - ref["nmi"])
            d_sse = np.abs(res["sse"] - ref["sse"]) / ref["sse"]
            print(
                f"{method:18s} {name:15s} {1e6 * elapsed / n_runs:8.1f}"
                f" {np.mean(res['steps'] == ref['steps']):7.3f} {np.mean(res['converged'] == ref['converged']):6.3f}"
                f" {np.mean(res['collapsed'] == ref['collapsed']):6.3f} {np.mean(d_ari < 1e-6):6.3f}"
                f" {d_ari.max():9.2e} {d_ari.mean():9.2e} {d_nmi.max():9.2e} {np.median(d_sse):9.1e}"
                f" {res['ari'].mean():7.4f} {res['steps'].mean():6.2f}"
            )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and numba (default: all cores)")
    args = parser.parse_args()
    if args.threads is not None:
        set_threads(args.threads)
    _self_check(n_runs=args.runs, seed=args.seed)
