"""The sweep engine at scale: what chunk files, the manifest and progress cost, device scaling,
and peak memory against the number of runs.

Workload: the issue's example sweep of token dynamics, temperature logspace:0.05:20:25 x repulsion
linspace:0:0.2:11 x momentum {0, 0.5} x noise {0.3, 0.6, 0.9} x K {3, 4, 5} (4,950 conditions) x
seeds, 4 tokens, D=16, 100 points per cluster (padded to 500), at most 30 steps; per run ARI,
NMI, SSE, steps, convergence, collapse (``tokdyn.engine.runs.ClusterRun``, data generated inside).

Rows (one process, compile excluded by a warm-up of one chunk of the same shape):

  sweep.run, memory   ``sweep.run(...)`` returning the results (the base: each seed's data drawn
                      once per chunk and shared by all its runs)
  sweep.run, disk     ``sweep.run(..., out=DIR, collect=False)`` with progress lines: every chunk
                      written (fsync + rename) before the next is read back; checked bit-identical
                      to the row above
  map_runs, per run   ``execute.map_runs`` over pre-built condition arrays, each run drawing its own
                      data (no engine, no sharing): what the engine's shared draws save. Equal to
                      the rows above up to rounding (XLA fuses the data's multiply-add differently
                      in the two programs); the share of runs with the same ARI is printed

With ``--repeat R`` the three paths run in R interleaved rounds and each keeps its best rate (the
machine's drifts then hit every path alike). Then 1 device vs all devices (``sweep.run`` in
memory, on a tenth of the seeds), and peak resident memory of a fresh process per size (``--memory``, seeds per condition; ``sweep.run`` to disk with
``collect=False``). Usage:

    python benchmarks/bench_sweep.py [--seeds 200] [--repeat 3] [--memory 20,200,2020] [--devices N]
"""

from __future__ import annotations

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--seeds", type=int, default=200, help="seeds per condition for the throughput rows")
parser.add_argument("--memory", default="20,200", help="seeds per condition of the memory rows (comma list)")
parser.add_argument("--devices", type=int, default=os.cpu_count(), help="forced host devices (CPU)")
parser.add_argument("--dim", type=int, default=16)
parser.add_argument("--chunk-size", type=int, default=None)
parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds of the throughput rows (best kept)")
parser.add_argument("--skip-throughput", action="store_true")
args = parser.parse_args()
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from common import Batched  # noqa: E402

from tokdyn.engine import execute, sweep  # noqa: E402
from tokdyn.studies import token_dynamics_sweep as tds  # noqa: E402


def config(seeds: int, dim: int) -> tds.Config:
    """The example sweep (the sweep command's default axes) at ``seeds`` seeds and dimension ``dim``."""
    return tds.Config(seeds=seeds, dim=dim)


CHILD = r"""
import os, resource, sys, tempfile, time
import jax
from tokdyn.engine import sweep
from tokdyn.studies import token_dynamics_sweep as tds
seeds, dim, chunk = int(sys.argv[2]), int(sys.argv[3]), eval(sys.argv[4])
cfg = tds.Config(seeds=seeds, dim=dim)
with tempfile.TemporaryDirectory() as out:
    t = time.perf_counter()
    sweep.run(cfg.task(), cfg.grid(), key=jax.random.key(0), common_random_numbers=True, out=out, collect=False,
              progress=False, chunk_size=chunk)
    dt = time.perf_counter() - t
    size = sum(os.path.getsize(os.path.join(out, "chunks", f)) for f in os.listdir(os.path.join(out, "chunks")))
print(len(cfg.grid()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, dt, size / 2**20)
"""


def timed(label, fn, n):
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    print(f"  {label}: {n} runs in {dt:.1f} s ({n / dt:,.0f} runs/s)", file=sys.stderr, flush=True)
    return n / dt, out


def throughput(rows):
    cfg = config(args.seeds, args.dim)
    task, grid, key = cfg.task(), cfg.grid(), jax.random.key(0)
    devs = jax.local_devices()
    n = len(grid)
    _, _, step, _ = execute.plan(None, "auto", args.chunk_size, n)
    n_cond = n // args.seeds
    warm = config(-(-step // n_cond), args.dim).grid()  # >= one chunk: the same compiled shape
    t = time.perf_counter()
    sweep.run(task, warm, key=key, common_random_numbers=True, chunk_size=step, progress=False)
    first = time.perf_counter() - t
    flat = sweep.device_columns(grid.rows())  # pre-built condition columns, one row per run
    batched = Batched(task, grid.names)
    t = time.perf_counter()
    execute.map_runs(batched, {k: v[:step] for k, v in flat.items()}, shared=key, chunk_size=step)  # compile
    first_batched = time.perf_counter() - t
    run = lambda **kw: sweep.run(task, grid, key=key, common_random_numbers=True, chunk_size=step, **kw)  # noqa: E731

    def to_disk():
        with tempfile.TemporaryDirectory() as out:
            stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # progress lines: produced, not shown
            try:
                run(out=out, collect=False, progress=True)
            finally:
                sys.stderr.close()
                sys.stderr = stderr
            return sweep.load(out)

    memory, disk, per_run = (
        "sweep.run, results in memory",
        "sweep.run, chunks to disk + progress",
        "map_runs, each run draws its data",
    )
    paths = {
        memory: lambda: run(progress=False),
        disk: to_disk,
        per_run: lambda: execute.map_runs(batched, flat, shared=key, chunk_size=step),
    }
    best, results = {}, {}
    for r in range(args.repeat):  # interleaved rounds: slow drifts of the machine hit every path alike
        for name, fn in paths.items():
            rate, res = timed(f"round {r + 1}: {name}", fn, n)
            results.setdefault(name, res)
            assert all(np.array_equal(res[f], results[name][f]) for f in ("ari", "steps", "sse"))  # repeatable
            best[name] = max(best.get(name, 0.0), rate)
    ref = results[memory]
    assert all(np.array_equal(results[disk][f], ref[f]) for f in ("ari", "steps", "sse"))  # bit-identical
    same = float(np.mean(results[per_run]["ari"] == ref["ari"]))
    print(f"  runs with the same ARI, per-run draws vs shared draws: {same:.1%}", file=sys.stderr, flush=True)
    assert same >= 0.8, same  # the same runs, up to rounding
    compiles = {
        memory: max(first - len(warm) / best[memory], 0.0),
        per_run: max(first_batched - step / best[per_run], 0.0),
    }
    for name in paths:
        rows.append((name, n, best[name], compiles.get(name, 0.0), float(results[name]["ari"].mean())))
    g = config(max(1, args.seeds // 10), args.dim).grid()
    for nd in sorted({1, len(devs)}):
        sweep.run(
            task, warm, key=key, common_random_numbers=True, chunk_size=step, progress=False, devices=devs[:nd]
        )  # compile for this device count
        rate, res = timed(
            f"{nd} device(s)",
            lambda: sweep.run(
                task, g, key=key, common_random_numbers=True, chunk_size=step, progress=False, devices=devs[:nd]
            ),
            len(g),
        )
        rows.append((f"sweep.run, {nd} device(s)", len(g), rate, 0.0, float(res["ari"].mean())))
    return step


def memory(chunk):
    out = []
    for seeds in [int(v) for v in args.memory.split(",") if v.strip()]:
        # the parent holds the accelerator's memory pool: children allocate on demand
        env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        res = subprocess.run(
            [sys.executable, "-c", CHILD, "default-axes", str(seeds), str(args.dim), repr(chunk)],
            capture_output=True,
            text=True,
            env=env,
        )
        if res.returncode:
            raise RuntimeError(f"memory run with {seeds} seeds failed:\n{res.stderr[-3000:]}")
        runs, rss, dt, mib = res.stdout.split()[-4:]
        out.append((int(runs), float(rss), float(dt), float(mib)))
        print(f"  memory: {out[-1]}", file=sys.stderr, flush=True)
    return out


def main():
    rows = []
    chunk = args.chunk_size
    if not args.skip_throughput:
        chunk = throughput(rows)
    mem = memory(chunk)
    devs = jax.local_devices()
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
        f"backend {jax.default_backend()} ({devs[0].device_kind}); devices {len(devs)}; dtype float32; "
        f"chunk {chunk or 'default'} runs; D={args.dim}"
    )
    if rows:
        base = rows[0][2]
        print(
            f"| {'path':<40} | {'runs':>9} | {'runs/s':>9} | {'vs memory':>12} | {'compile s':>9} | {'mean ARI':>8} |"
        )
        print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|{'-' * 14}|{'-' * 11}|{'-' * 10}|")
        for name, n, rate, comp, ari in rows:
            print(f"| {name:<40} | {n:>9} | {rate:>9.0f} | {rate / base:>11.2f}x | {comp:>9.2f} | {ari:>8.4f} |")
    if mem:
        print()
        print(f"| {'runs':>10} | {'peak RSS MiB':>12} | {'wall s':>8} | {'runs/s':>8} | {'chunk files MiB':>15} |")
        print(f"|{'-' * 12}|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 17}|")
        for runs, rss, dt, mib in mem:
            print(f"| {runs:>10} | {rss:>12.0f} | {dt:>8.1f} | {runs / dt:>8.0f} | {mib:>15.1f} |")


if __name__ == "__main__":
    main()
