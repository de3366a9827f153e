"""Steady-state throughput of the token-dynamics workload: tokdyn vs its peers, in one process.

Workload (the default study's): Gaussian clusters, K in {3,4,5}, noise in {0.3,0.6,0.9}, 100
points per cluster padded to 500, D=4, 4 tokens, temperature 1, at most 30 steps, tol 1e-3; the four methods
in equal shares. Every peer gets the same data and initial tokens (generated once by tokdyn into a
pool of distinct problems) and returns the same per-run metrics: ARI, NMI, SSE, steps,
converged, collapsed.

Rows:
  tokdyn study path   what ``tokdyn study token-dynamics`` runs: ``sweep.run`` of the study's run
                      function over its grid (method x K x noise x seeds, the seed slowest, common
                      random numbers), data generated on the device, each seed's data drawn once
                      for its 36 runs; as many seeds as make ``--runs`` runs
  tokdyn data per run the same runs through ``map_runs`` with every run drawing its own data (the
                      study path before a seed's draw was shared)
  tokdyn given-data   run + metrics on the pooled host data (the peers' exact workload)
  published_way       the published way with nothing else timed: per run, the float64 NumPy rule
                      on the run's valid points (prepared before the timing), scikit-learn
                      ARI/NMI, SSE, collapse (benchmarks/published_way.py ``one_run``)
  peers               benchmarks/peers.py: NumPy batched, PyTorch batched, Numba parallel (those
                      installed), on fewer runs

Every peer runs problems 0..R/4-1 of the pool under each of the four methods, and the table
says for what share of those runs its ARI equals tokdyn given-data's on the same run (the float32
peers differ on a few per cent of runs, see peers.py).

Compile time is excluded from steady-state figures (a warm-up call on the same chunk shape) and
reported separately; results are pulled to the host (block_until_ready inside map_runs'
np.asarray). Each row is timed ``--repeats`` times (best and median); ratios use the medians of
this one run. Usage:

    python benchmarks/bench_throughput.py [--runs 100000] [--devices 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--runs", type=int, default=100_000, help="runs for the tokdyn rows")
parser.add_argument("--peer-runs", type=int, default=8192, help="runs for the batched peers")
parser.add_argument("--per-run-runs", type=int, default=800, help="runs for the published-way (per-run) peer")
parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per row (best and median reported)")
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
import published_way  # noqa: E402
from common import Batched  # noqa: E402

from tokdyn import data, dynamics, metrics  # noqa: E402
from tokdyn.engine import execute, sweep  # noqa: E402
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
        c = data.gaussian_clusters(
            key,
            k,
            points_per_cluster=CFG.points_per_cluster,
            dim=CFG.dim,
            noise=nz,
            center_box=CFG.center_box,
            centers=CFG.centers,
            max_clusters=TASK.max_clusters,
        )
        return c, dynamics.forgy(c.x, c.init_noise, c.mask, CFG.n_tokens)

    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(7), s))(seeds)
    c, t0 = jax.jit(jax.vmap(one))(keys, ks, noise)
    return dict(
        x=np.asarray(c.x), mask=np.asarray(c.mask), labels=np.asarray(c.labels), tokens0=np.asarray(t0), n_true=ks
    )


def given_data_task(pool, run):
    """Run + metrics on a pooled problem (the peers' workload)."""
    i = run["idx"]
    x, mask, labels = pool["x"][i], pool["mask"][i], pool["labels"][i]
    r = dynamics.run(x, pool["tokens0"][i], run["params"], mask=mask, n_steps=CFG.n_steps, tol=CFG.tol)
    yt, yp = jnp.where(mask, labels, 0), jnp.where(mask, r.labels, 0)
    kw = dict(n_true=TASK.max_clusters, n_pred=CFG.n_tokens)
    return dict(
        ari=metrics.ari(yt, yp, mask, **kw),
        nmi=metrics.nmi(yt, yp, mask, **kw),
        sse=metrics.sse(x, yp, r.tokens, mask),
        steps=r.steps,
        converged=r.converged,
        collapsed=metrics.collapsed(yp, CFG.n_tokens, pool["n_true"][i], mask),
    )


def params_for(n):
    m = np.arange(n) % 4
    p = [dynamics.METHODS[name] for name in METHOD_NAMES]
    return dynamics.Hparams(**{f: np.asarray([getattr(q, f) for q in p], np.float32)[m] for f in dynamics.FIELDS})


def time_map(fn, run_args, shared, devices, chunk, repeats):
    """(rates of ``repeats`` steady-state calls, compile seconds, output). A first call on one
    chunk compiles; its time minus one chunk's steady-state time is the compile figure."""
    warm = jax.tree_util.tree_map(lambda a: a[:chunk], run_args)
    t = time.perf_counter()
    execute.map_runs(fn, warm, shared=shared, devices=devices, chunk_size=chunk)
    first = time.perf_counter() - t
    n = len(run_args["idx"] if "idx" in run_args else run_args["seed"])
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = execute.map_runs(fn, run_args, shared=shared, devices=devices, chunk_size=chunk)
        rates.append(n / (time.perf_counter() - t))
    return rates, max(first - chunk / max(rates), 0.0), out


def time_study_path(n, devices, chunk, repeats):
    """(rates, compile seconds, results): ``sweep.run`` of the study's function over the study's
    grid with ceil(n / 36) seeds (the seed slowest), in memory, no progress. The first call, on a
    one-chunk grid of the same chunk shape, compiles; its time minus one chunk's steady-state time
    is the compile figure."""
    per_seed = len(CFG.grid()) // CFG.seeds
    grid = dataclasses.replace(CFG, seeds=-(-n // per_seed)).grid()
    warm = dataclasses.replace(CFG, seeds=-(-chunk // per_seed)).grid()

    def call(g):
        return sweep.run(
            TASK,
            g,
            key=jax.random.key(CFG.root_seed),
            common_random_numbers=True,
            chunk_size=chunk,
            devices=devices,
            progress=False,
        )

    t = time.perf_counter()
    call(warm)
    first = time.perf_counter() - t
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = call(grid)
        rates.append(len(grid) / (time.perf_counter() - t))
    return rates, max(first - len(warm) / max(rates), 0.0), out


def lean_per_run(problems, method):
    """The published way with nothing else timed: per run, the float64 NumPy rule on the run's
    valid points, scikit-learn ARI/NMI, SSE, collapse (``published_way.one_run``)."""
    return [
        published_way.one_run(x, y, t0, k, method, CFG.n_steps, CFG.tol, CFG.temperature) for x, y, t0, k in problems
    ]


def peer_inputs(pool, sel):
    return dict(
        x=pool["x"][sel],
        mask=pool["mask"][sel],
        tokens0=pool["tokens0"][sel],
        labels_true=pool["labels"][sel],
        n_true=pool["n_true"][sel],
    )


def time_peer(peer, pool, per_method, repeats):
    """(rates, first-call seconds, {metric: (4 * per_method,) per (method, problem)}, problems):
    the peer on problems 0..per_method-1 of the pool under each of the four methods."""
    sel = np.arange(per_method) % args.pool
    if peer == "published_way":  # the valid points of each run, as float64, prepared outside the timing
        problems = [
            (
                pool["x"][i][pool["mask"][i]].astype(np.float64),
                pool["labels"][i][pool["mask"][i]],
                pool["tokens0"][i].astype(np.float64),
                int(pool["n_true"][i]),
            )
            for i in sel
        ]
    else:
        inp = peer_inputs(pool, sel)
    first = 0.0
    if peer in ("numba_parallel", "torch_batched"):  # JIT / warm-up excluded (reported)
        t = time.perf_counter()
        peers.PEERS[peer](
            **peer_inputs(pool, sel[:8]), temperature=1.0, n_steps=CFG.n_steps, tol=CFG.tol, **peers.METHODS["baseline"]
        )
        first = time.perf_counter() - t
    rates = []
    for _ in range(repeats):
        total, outs = 0.0, []
        for name in METHOD_NAMES:
            kw = dict(momentum=dynamics.METHODS[name].momentum, repulsion=dynamics.METHODS[name].repulsion)
            t = time.perf_counter()
            if peer == "published_way":
                res = lean_per_run(problems, kw)
            else:
                res = peers.PEERS[peer](**inp, temperature=1.0, n_steps=CFG.n_steps, tol=CFG.tol, **kw)
            total += time.perf_counter() - t
            outs.append({f: np.asarray([r[f] for r in res]) for f in res[0]} if peer == "published_way" else res)
        rates.append(4 * per_method / total)
    return rates, first, {f: np.concatenate([o[f] for o in outs]) for f in ("ari", "steps")}, sel


def agreement(out, sel, given) -> str:
    """Shares of the peer's (problem, method) runs whose ARI is within 1e-6 and within 1e-3 of
    tokdyn given-data's on the same run."""
    run = (4 * sel[None, :] + np.arange(4)[:, None]).ravel()  # method-major, as the peers ran them
    diff = np.abs(out["ari"] - given["ari"][run])
    return f"{np.mean(diff < 1e-6):.3f} / {np.mean(diff < 1e-3):.3f}"


def main():
    pool = make_pool(args.pool)
    rows = []
    n = args.runs
    idx = (np.arange(n) // 4) % args.pool  # each problem under all four methods: run 4 i + j
    devs = jax.local_devices()
    pool_dev = {k: jnp.asarray(v) for k, v in pool.items()}
    # the study's runs: method fastest-varying here, each seed's data shared by its four methods
    fused_args = dict(
        method=(np.arange(n) % 4).astype(np.int32),
        seed=(np.arange(n) // 4).astype(np.int32),
        n_clusters=np.asarray(CFG.n_clusters, np.int32)[(np.arange(n) // 4) % 3],
        noise=np.asarray(CFG.noise, np.float32)[(np.arange(n) // 12) % 3],
        index=np.arange(n, dtype=np.uint32),
    )
    fused = Batched(TASK, ("method", "n_clusters", "noise"))  # fn(key, **condition) per run
    given = None
    strategy = "sequential map" if execute.default_batch_size() == 1 else "vmap"
    for nd in sorted({1, len(devs)}):
        chunk = 4096 * nd
        rates, compile_s, out = time_study_path(n, devs[:nd], chunk, args.repeats)
        rows.append(
            (
                f"tokdyn study path, {nd} device(s), {strategy}",
                len(out),
                rates,
                compile_s,
                out["ari"].mean(),
                out["steps"].mean(),
                "-",
            )
        )
        rates, compile_s, out = time_map(fused, fused_args, jax.random.key(0), devs[:nd], chunk, args.repeats)
        rows.append(
            (
                f"tokdyn data drawn per run, {nd} device(s)",
                n,
                rates,
                compile_s,
                out["ari"].mean(),
                out["steps"].mean(),
                "-",
            )
        )
        rates, compile_s, given = time_map(
            given_data_task,
            dict(idx=idx.astype(np.int32), params=params_for(n)),
            pool_dev,
            devs[:nd],
            chunk,
            args.repeats,
        )
        rows.append(
            (f"tokdyn given-data, {nd} device(s)", n, rates, compile_s, given["ari"].mean(), given["steps"].mean(), "-")
        )
        print(rows[-3][:3], rows[-2][:3], rows[-1][:3], flush=True)

    for peer in ["published_way"] + [p for p in peers.available_peers() if p != "numpy_per_run"]:
        per_method = (args.per_run_runs if peer == "published_way" else args.peer_runs) // 4
        rates, first, out, sel = time_peer(peer, pool, per_method, args.repeats)
        rows.append(
            (
                f"peer: {peer}",
                per_method * 4,
                rates,
                first,
                out["ari"].mean(),
                out["steps"].mean(),
                agreement(out, sel, given),
            )
        )
        print(rows[-1][:3], flush=True)

    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
        f"backend {jax.default_backend()}; devices {len(devs)}; dtype float32 (published_way, numba: float64); "
        f"{time.strftime('%Y-%m-%d')}; {args.repeats} repetitions per row (best, median)"
    )
    base = np.median(next(r[2] for r in rows if r[0] == "peer: published_way"))
    head = (
        f"| {'implementation':<42} | {'runs':>7} | {'best runs/s':>11} | {'median runs/s':>13} | "
        f"{'x published way':>15} | {'compile/JIT s':>13} | {'mean ARI':>8} | {'mean steps':>10} | "
        f"{'same ARI as given-data (1e-6 / 1e-3)':>36} |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for name, runs, rates, comp, ari, steps, agree in rows:
        med = float(np.median(rates))
        print(
            f"| {name:<42} | {runs:>7} | {max(rates):>11.0f} | {med:>13.0f} | {med / base:>14.1f}x | "
            f"{comp:>13.2f} | {ari:>8.3f} | {steps:>10.2f} | {agree:>36} |"
        )


if __name__ == "__main__":
    main()
