"""Steady-state throughput of the token-dynamics workload: tokdyn vs its peers, in one process.

Workload (the default study's): Gaussian clusters, K in {3,4,5}, noise in {0.3,0.6,0.9}, 100
points per cluster padded to 500, D=4, 4 tokens, temperature 1, at most 30 steps, tol 1e-3; the four methods
in equal shares. Every peer gets the same data and initial tokens (generated once by tokdyn into a
pool of distinct problems) and returns the same per-run metrics: ARI, NMI, SSE, steps,
converged, collapsed.

Rows:
  tokdyn fused        the study's per-run function: data generated inside, then run + metrics
  tokdyn given-data   run + metrics on the pooled host data (the peers' exact workload)
  peers               benchmarks/peers.py (NumPy per run + scikit-learn = the published way;
                      NumPy batched; PyTorch batched; Numba parallel), on fewer runs

Compile time is excluded from steady-state figures (a warm-up call on the same chunk shape) and
reported separately; results are pulled to the host (block_until_ready inside map_runs'
np.asarray). Usage:

    python benchmarks/bench_throughput.py [--runs 100000] [--devices 2]
"""

from __future__ import annotations

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--runs", type=int, default=100_000, help="runs for the tokdyn rows")
parser.add_argument("--peer-runs", type=int, default=8192, help="runs for the batched peers")
parser.add_argument("--per-run-runs", type=int, default=400, help="runs for the NumPy-per-run peer")
parser.add_argument("--devices", type=int, default=os.cpu_count(), help="forced host devices")
parser.add_argument("--pool", type=int, default=2048, help="distinct problems in the data pool")
args = parser.parse_args()
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import peers  # noqa: E402
from common import Batched  # noqa: E402

from tokdyn import data, dynamics, execute, metrics  # noqa: E402
from tokdyn.studies import token_dynamics as td  # noqa: E402

METHOD_NAMES = ["baseline", "inertia", "repulsion", "inertia+repulsion"]  # the published study's
CFG = td.Config()
TASK = CFG.task()


def make_pool(n: int):
    """n distinct problems: (seed, K, noise) -> clusters + Forgy tokens, as host arrays."""
    seeds = np.arange(n, dtype=np.int32)
    ks = np.asarray(CFG.n_clusters, np.int32)[seeds % 3]
    noise = np.asarray(CFG.noise, np.float32)[(seeds // 3) % 3]

    def one(key, k, nz):
        c = data.gaussian_clusters(key, k, points_per_cluster=CFG.points_per_cluster, dim=CFG.dim, noise=nz,
                                   center_box=CFG.center_box, centers=CFG.centers, max_clusters=TASK.max_clusters)
        return c, dynamics.forgy(c.x, c.init_noise, c.mask, CFG.n_tokens)

    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(7), s))(seeds)
    c, t0 = jax.jit(jax.vmap(one))(keys, ks, noise)
    return dict(x=np.asarray(c.x), mask=np.asarray(c.mask), labels=np.asarray(c.labels),
                tokens0=np.asarray(t0), n_true=ks)


def given_data_task(pool, run):
    """Run + metrics on a pooled problem (the peers' workload)."""
    i = run["idx"]
    x, mask, labels = pool["x"][i], pool["mask"][i], pool["labels"][i]
    r = dynamics.run(x, pool["tokens0"][i], run["params"], mask=mask, n_steps=CFG.n_steps, tol=CFG.tol)
    yt, yp = jnp.where(mask, labels, 0), jnp.where(mask, r.labels, 0)
    kw = dict(n_true=TASK.max_clusters, n_pred=CFG.n_tokens)
    return dict(ari=metrics.ari(yt, yp, mask, **kw), nmi=metrics.nmi(yt, yp, mask, **kw),
                sse=metrics.sse(x, yp, r.tokens, mask), steps=r.steps, converged=r.converged,
                collapsed=metrics.collapsed(yp, CFG.n_tokens, pool["n_true"][i], mask))


def params_for(n):
    m = np.arange(n) % 4
    p = [dynamics.METHODS[name] for name in METHOD_NAMES]
    return dynamics.Hparams(**{f: np.asarray([getattr(q, f) for q in p], np.float32)[m] for f in dynamics.FIELDS})


def time_map(fn, run_args, shared, devices, chunk):
    warm = jax.tree_util.tree_map(lambda a: a[:chunk], run_args)
    t = time.perf_counter()
    execute.map_runs(fn, warm, shared=shared, devices=devices, chunk_size=chunk)
    first = time.perf_counter() - t
    t = time.perf_counter()
    out = execute.map_runs(fn, run_args, shared=shared, devices=devices, chunk_size=chunk)
    steady = time.perf_counter() - t
    n = len(run_args["idx"] if "idx" in run_args else run_args["seed"])
    return n / steady, max(first - chunk / (n / steady), 0.0), out


def main():
    pool = make_pool(args.pool)
    rows = []
    n = args.runs
    idx = (np.arange(n) // 4) % args.pool  # each problem under all four methods
    devs = jax.local_devices()
    pool_dev = {k: jnp.asarray(v) for k, v in pool.items()}
    # the study's runs: method fastest-varying here, each seed's data shared by its four methods
    fused_args = dict(method=(np.arange(n) % 4).astype(np.int32), seed=(np.arange(n) // 4).astype(np.int32),
                      n_clusters=np.asarray(CFG.n_clusters, np.int32)[(np.arange(n) // 4) % 3],
                      noise=np.asarray(CFG.noise, np.float32)[(np.arange(n) // 12) % 3],
                      index=np.arange(n, dtype=np.uint32))
    fused = Batched(TASK, ("method", "n_clusters", "noise"))  # fn(key, **condition) per run
    for nd in sorted({1, len(devs)}):
        chunk = 4096 * nd
        rate, compile_s, out = time_map(fused, fused_args, jax.random.key(0), devs[:nd], chunk)
        strategy = "sequential map" if execute.default_batch_size() == 1 else "vmap"
        rows.append((f"tokdyn fused, {nd} device(s), {strategy}", n, rate, compile_s, out["ari"].mean(),
                     out["steps"].mean()))
        rate, compile_s, out = time_map(given_data_task, dict(idx=idx.astype(np.int32), params=params_for(n)),
                                        pool_dev, devs[:nd], chunk)
        rows.append((f"tokdyn given-data, {nd} device(s)", n, rate, compile_s, out["ari"].mean(),
                     out["steps"].mean()))
        print(rows[-2], rows[-1], flush=True)

    for peer in peers.available_peers():
        m = args.per_run_runs if peer == "numpy_per_run" else args.peer_runs
        per_method = max(m // 4, 1)
        total_t, outs, first = 0.0, [], 0.0
        for j, name in enumerate(METHOD_NAMES):
            sel = (np.arange(per_method) + j * 7) % args.pool
            inp = dict(x=pool["x"][sel], mask=pool["mask"][sel], tokens0=pool["tokens0"][sel],
                       labels_true=pool["labels"][sel], n_true=pool["n_true"][sel])
            kw = dict(temperature=1.0, momentum=dynamics.METHODS[name].momentum,
                      repulsion=dynamics.METHODS[name].repulsion, n_steps=CFG.n_steps, tol=CFG.tol)
            if j == 0 and peer in ("numba_parallel", "torch_batched"):  # JIT / warm-up excluded
                t = time.perf_counter()
                peers.PEERS[peer](**{k: v[:8] for k, v in inp.items()}, **kw)
                first = time.perf_counter() - t
            t = time.perf_counter()
            outs.append(peers.PEERS[peer](**inp, **kw))
            total_t += time.perf_counter() - t
        ari = np.concatenate([o["ari"] for o in outs]).mean()
        steps = np.concatenate([o["steps"] for o in outs]).mean()
        rows.append((f"peer: {peer}", per_method * 4, per_method * 4 / total_t, first, ari, steps))
        print(rows[-1], flush=True)

    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
          f"backend {jax.default_backend()}; devices {len(devs)}; dtype float32 (numpy_per_run: float64)")
    base = next(r[2] for r in rows if r[0] == "peer: numpy_per_run") if "numpy_per_run" in peers.available_peers() else None
    print(f"| {'implementation':<46} | {'runs':>7} | {'runs/s':>9} | {'x per-run NumPy':>15} | {'compile/JIT s':>13} | {'mean ARI':>8} | {'mean steps':>10} |")
    print(f"|{'-' * 48}|{'-' * 9}|{'-' * 11}|{'-' * 17}|{'-' * 15}|{'-' * 10}|{'-' * 12}|")
    for name, runs, rate, comp, ari, steps in rows:
        ratio = f"{rate / base:.0f}x" if base else "-"
        print(f"| {name:<46} | {runs:>7} | {rate:>9.0f} | {ratio:>15} | {comp:>13.2f} | {ari:>8.3f} | {steps:>10.2f} |")


if __name__ == "__main__":
    main()
