"""The Langevin draws skipped or made: the study's run (``tokdyn.engine.runs.ClusterRun``, the four
published methods, ``langevin`` 0 everywhere) in one process, alternating two grids of the same runs:
without a ``langevin`` condition (``ClusterRun.deterministic``: the rule gets no key and the program
holds no random draw) and with a ``langevin`` axis of the one value 0 (the rule gets its key and
draws the noise of every step, as every run did before the skip). Alternating cancels the drift of a
shared machine (in ABBA order). Two strategies: the backend's default (a sequential map on a CPU, a wide vmap on an
accelerator) and the other one. The table gives the share of runs whose steps and ARI are
the same in the two programs.

    python benchmarks/bench_langevin_skip.py [--runs 20000] [--repeats 9] [--devices 1]
"""

from __future__ import annotations

import argparse
import os

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--runs", type=int, default=20000, help="runs per call")
parser.add_argument("--repeats", type=int, default=9, help="timed calls per grid and strategy (alternated)")
parser.add_argument("--devices", type=int, default=1, help="forced host devices (CPU)")
parser.add_argument("--chunk", type=int, default=0, help="runs per chunk (0: 4096 sequential, 1024 vmapped on CPU)")
args = parser.parse_args()
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

import dataclasses  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tokdyn.engine import sweep  # noqa: E402
from tokdyn.studies import token_dynamics as td  # noqa: E402


def main():
    cfg = td.Config()
    task = cfg.task()
    assert task.deterministic() and not task.deterministic(("langevin",))
    per_seed = len(cfg.grid()) // cfg.seeds
    seeds = -(-args.runs // per_seed)
    skip = dataclasses.replace(cfg, seeds=seeds).grid()
    drawn = sweep.Grid(
        **{k: skip.axes[k] for k in skip.names}, langevin=np.zeros(1, np.float32), seeds=seeds, seed_major=True
    )
    cpu = jax.default_backend() == "cpu"
    strategies = [("sequential map", 1, args.chunk or 4096), ("vmap", None, args.chunk or 1024)]
    if not cpu:
        strategies = [("vmap", None, args.chunk or 65536), ("sequential map", 1, args.chunk or 4096)]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
        f"backend {jax.default_backend()}; devices {jax.local_device_count()}; {len(skip)} runs per call; "
        f"{args.repeats} alternated calls per grid; {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| strategy | draws skipped: median runs/s | draws made: median runs/s | skipped / made | same steps | same ARI (1e-6) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, batch_size, chunk in strategies:

        def call(grid):
            t = time.perf_counter()
            res = sweep.run(
                task,
                grid,
                key=jax.random.key(0),
                common_random_numbers=True,
                chunk_size=chunk,
                progress=False,
                batch_size=batch_size,
            )
            return len(grid) / (time.perf_counter() - t), res

        _, a = call(skip)  # compiles
        _, b = call(drawn)
        same = float(np.mean(np.asarray(a["steps"]) == np.asarray(b["steps"])))
        same_ari = float(np.mean(np.isclose(np.asarray(a["ari"]), np.asarray(b["ari"]), rtol=0, atol=1e-6)))
        rates = {"skip": [], "drawn": []}
        for i in range(args.repeats):  # ABBA: neither grid always runs first
            for label in ("skip", "drawn") if i % 2 == 0 else ("drawn", "skip"):
                rates[label].append(call(skip if label == "skip" else drawn)[0])
        s, d = float(np.median(rates["skip"])), float(np.median(rates["drawn"]))
        print(f"| {name} | {s:,.0f} | {d:,.0f} | {s / d:.3f} | {same:.4f} | {same_ari:.4f} |", flush=True)


if __name__ == "__main__":
    main()
