"""The sweep engine's rows (section ``engine``): what chunk files, the manifest and progress cost,
device scaling, and peak memory against the number of runs, on the sweep command's example sweep
(``tokdyn sweep token-dynamics``'s default axes: temperature x repulsion x momentum x noise x K,
4,950 conditions, x seeds; 4 tokens, D = 16, 100 points per cluster padded to 500, at most 30 steps;
per run ARI, NMI, SSE, steps, convergence, collapse; data drawn inside, ``ClusterRun``).

  sweep.run, results in memory          the base: each seed's data drawn once per chunk, shared by its runs
  sweep.run, chunks to disk + progress  every chunk written (fsync + rename) and read back; checked
                                        bit-identical to the row above
  map_runs, each run draws its data     ``execute.map_runs`` over the grid's condition columns, no
                                        engine, no sharing: what the shared draws save (the share of runs
                                        with the same ARI given: XLA fuses the data's arithmetic
                                        differently in the two programs)
  sweep.run, N device(s)                in memory on a tenth of the seeds, 1 and all local devices
  peak memory, R runs                   a fresh process's peak resident memory running R runs to disk
                                        (``collect=False``), its wall time and the chunk files' size

The first three run in interleaved rounds (``--repeats``), each keeping its median, so that a drift
of a shared machine hits every path alike; compile time apart (a warm-up of one chunk's shape).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from rows.base import Suite

CHILD = r"""
import os, resource, sys, tempfile, time
import jax
from tokdyn.engine import sweep
from tokdyn.studies import token_dynamics_sweep as tds
seeds, dim, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = tds.Config(seeds=seeds, dim=dim)
with tempfile.TemporaryDirectory() as out:
    t = time.perf_counter()
    sweep.run(cfg.task(), cfg.grid(), key=jax.random.key(0), common_random_numbers=True, out=out, collect=False,
              progress=False, chunk_size=chunk)
    dt = time.perf_counter() - t
    size = sum(os.path.getsize(os.path.join(out, "chunks", f)) for f in os.listdir(os.path.join(out, "chunks")))
print(len(cfg.grid()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, dt, size / 2**20)
"""


@dataclasses.dataclass(frozen=True)
class PerRun:
    """``fn(key, **condition)`` of one run from its condition columns, its key ``fold_in(key, seed)``:
    each run draws its own data (no engine, no sharing)."""

    fn: object
    names: tuple

    def __call__(self, key, run):
        return self.fn(jax.random.fold_in(key, run["seed"]), **{n: run[n] for n in self.names})


def run(s: Suite):
    """Every row of the sweep engine (module docstring)."""
    from tokdyn.engine import execute, sweep
    from tokdyn.studies import token_dynamics_sweep as tds

    dim = 16
    seeds = 1 if s.args.smoke else 200
    cfg = tds.Config(seeds=seeds, dim=dim)
    task, grid, key = cfg.task(), cfg.grid(), jax.random.key(0)
    n = len(grid)
    _, _, step, _ = execute.plan(None, "auto", None, n)
    label = f"{n:,} runs ({n // seeds:,} conditions x {seeds} seeds), D = {dim}, chunk {step:,}"
    rounds = 1 if s.args.smoke else s.args.repeats
    box = {}

    def run_sweep(g, **kw):
        return sweep.run(task, g, key=key, common_random_numbers=True, chunk_size=step, **kw)

    def to_disk():
        with tempfile.TemporaryDirectory() as out:
            stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # progress lines: produced, not shown
            try:
                run_sweep(grid, out=out, collect=False, progress=True)
            finally:
                sys.stderr.close()
                sys.stderr = stderr
            return sweep.load(out)

    def measure():
        warm = tds.Config(seeds=-(-step // (n // seeds)), dim=dim).grid()  # one chunk's shape: compiles
        t = time.perf_counter()
        run_sweep(warm, progress=False)
        first = time.perf_counter() - t
        flat = sweep.device_columns(grid.rows())
        per_run = PerRun(task, grid.names)
        t = time.perf_counter()
        execute.map_runs(per_run, {k: v[:step] for k, v in flat.items()}, shared=key, chunk_size=step)
        first_per_run = time.perf_counter() - t
        paths = {
            "memory": lambda: run_sweep(grid, progress=False),
            "disk": to_disk,
            "per run": lambda: execute.map_runs(per_run, flat, shared=key, chunk_size=step),
        }
        seconds, results = {k: [] for k in paths}, {}
        for _ in range(rounds):
            for name, fn in paths.items():
                t = time.perf_counter()
                res = fn()
                seconds[name].append(time.perf_counter() - t)
                results.setdefault(name, res)
        box.update(seconds=seconds, results=results, first=first, first_per_run=first_per_run, warm=len(warm))

    def row(name):
        if "seconds" not in box:
            measure()
        sec = box["seconds"][name]
        med = float(np.median(sec))
        out = dict(size=label, unit="runs/s", best=n / min(sec), median=n / med, precision="default")
        ref, res = box["results"]["memory"], box["results"][name]
        out["mean_ari"] = float(np.mean(res["ari"]))
        if name == "memory":
            out["compile_s"] = max(box["first"] - box["warm"] * med / n, 0.0)
        elif name == "disk":
            same = all(np.array_equal(np.asarray(res[f]), np.asarray(ref[f])) for f in ("ari", "steps", "sse"))
            out["agreement"] = (
                "bit-identical to the in-memory results" if same else "DIFFERS from the in-memory results"
            )
        else:
            out["compile_s"] = max(box["first_per_run"] - step * med / n, 0.0)
            same = float(np.mean(np.asarray(res["ari"]) == np.asarray(ref["ari"])))
            out["agreement"] = f"ARI equal to the shared draws' on {same:.1%} of runs"
        return out

    s.row("engine", "sweep.run, results in memory", lambda: row("memory"))
    s.row("engine", "sweep.run, chunks to disk + progress", lambda: row("disk"))
    s.row("engine", "map_runs, each run draws its data", lambda: row("per run"))

    devs = jax.local_devices()
    small = tds.Config(seeds=max(1, seeds // 10), dim=dim).grid()
    for nd in sorted({1, len(devs)}):

        def scaling(nd=nd):
            call = lambda: run_sweep(small, progress=False, devices=devs[:nd])  # noqa: E731
            call()  # compiles for this device count
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            m = len(small)
            return dict(
                size=f"{m:,} runs, chunk {step:,}",
                unit="runs/s",
                best=m / min(times),
                median=m / float(np.median(times)),
            )

        s.row("engine", f"sweep.run, {nd} device(s)", scaling, smoke=nd == 1)

    for mem_seeds in (1,) if s.args.smoke else (20, 200):

        def memory(mem_seeds=mem_seeds):
            env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # the parent holds the device's pool
            res = subprocess.run(
                [sys.executable, "-c", CHILD, str(mem_seeds), str(dim), str(step)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            runs, rss, dt, mib = res.stdout.split()[-4:]
            runs, dt = int(runs), float(dt)
            return dict(
                size=f"{runs:,} runs to disk in a fresh process",
                unit="runs/s",
                best=runs / dt,
                median=runs / dt,
                peak_rss_mib=float(rss),
                agreement=f"peak RSS {float(rss):,.0f} MiB; wall {dt:.1f} s (compile included); chunk files {float(mib):.1f} MiB",
            )

        s.row("engine", f"peak memory, {mem_seeds} seed(s) per condition", memory)
