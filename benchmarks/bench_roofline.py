"""A roofline for the token-dynamics workload on this machine: the work of a run counted, the
machine's attainable peak for each kind of that work measured, and tokdyn's paths against both.

The work of a run is counted once, in ``work.py`` (shared with ``suite.py``): per point per
run-step (4 D + 7) T - 1 flops and T exponentials, the final labels, the metrics, the data on the
study path. Useful work counts the valid points only (N = K x 100, K = 4 on average); padded work
the points the program computes on.

Attainable peaks, measured here with JAX on the same backend and the same device setup as the
kernel (1 core: one forced host device in a child pinned with taskset to one CPU; 2 cores: two
forced host devices, the work split over them with shard_map):
  GEMM     float32 1024 x 1024 matrix products at precision "highest": flops/s (2 n^3 per product)
  exp      float32 exp of 2^22 elements, summed: exponentials/s
  normals  2^22 threefry bits turned into inverse-erf normals, summed: normals/s

Rows (steady state, compile excluded): ``dynamics.run`` alone on the pooled data, the given-data
path of bench_throughput (run + labels + ARI/NMI/SSE/collapse) and the study path (``sweep.run``
of the study's function over its grid, the seed slowest: data generated on the device, each
seed's drawn once for its 36 runs, metrics included). The bound of a run is the largest of
flops / FMA-unit peak and exponentials / exp peak (``work.bound``: the units work at once, so the
times do not add; the FMA units' peak is the float32 GEMM's, as in ``work.py``: the fastest
those units were measured to run); "of bound" is that time over the measured time per run. The normals' rate is shown apart.

Usage: ``python benchmarks/bench_roofline.py [--runs 50000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--runs", type=int, default=50_000)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--child", action="store_true", help="(internal) measure on one device and print JSON")
args = parser.parse_args()
N_DEVICES = 1 if args.child else 2
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={N_DEVICES}"

import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import work  # noqa: E402

_argv, sys.argv = sys.argv, sys.argv[:1]  # bench_throughput parses the command line on import: its defaults
import bench_throughput as bt  # noqa: E402

sys.argv = _argv

from tokdyn import dynamics  # noqa: E402
from tokdyn.engine import execute, sweep  # noqa: E402

T, D = bt.CFG.n_tokens, bt.CFG.dim
N_PADDED = bt.TASK.max_clusters * bt.CFG.points_per_cluster


M, PTS = bt.TASK.max_clusters, bt.CFG.points_per_cluster


def work_per_run(steps, n, metrics=True, data=False):
    """The work of a run (``work.per_run``; ``steps`` and ``n`` may be arrays)."""
    return work.per_run(steps, n, T=T, D=D, metrics=metrics, data=data)


def best_median(fn, repeats):
    fn()  # compile / warm
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), float(np.median(ts))


def sharded(f, x):
    """``f`` under shard_map over the local devices, and ``x`` placed split over them (outside
    the timing)."""
    mesh = Mesh(np.asarray(jax.local_devices()), ("d",))
    x = jax.device_put(x, NamedSharding(mesh, P("d")))
    return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P("d"),), out_specs=P("d"), check_vma=False)), x


def gemm_peak(repeats, n=1024, per_device=8):
    nd = len(jax.local_devices())
    a = jax.random.normal(jax.random.key(0), (nd * per_device, n, n), jnp.float32)

    def body(x):  # (per_device, n, n): per_device products on this device
        return jnp.einsum("bij,bjk->bik", x, x, precision="highest")[:, :1, :1]  # float32 FFMA, no TF32

    f, a = sharded(body, a)
    best, med = best_median(lambda: f(a).block_until_ready(), repeats)
    flops = 2.0 * n**3 * nd * per_device
    return flops / best, flops / med


def exp_peak(repeats, n=1 << 22):
    nd = len(jax.local_devices())
    x = jax.random.uniform(jax.random.key(1), (nd * n,), jnp.float32, -10, 0)
    f, x = sharded(lambda v: jnp.sum(jnp.exp(v), keepdims=True), x)
    best, med = best_median(lambda: f(x).block_until_ready(), repeats)
    return nd * n / best, nd * n / med


def normal_peak(repeats, n=1 << 22):
    """Inverse-erf normals from threefry bits, as tokdyn's data generator makes them."""
    nd = len(jax.local_devices())
    keys = jax.random.split(jax.random.key(2), nd)

    def body(k):  # (1,) keys: n normals on this device
        bits = jax.random.bits(k[0], (n,), jnp.uint32)
        u = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) * 2.0 - 3.0
        return jnp.sum(jnp.sqrt(2.0) * jax.scipy.special.erfinv(jnp.maximum(u, -0.9999999)), keepdims=True)

    f, keys = sharded(body, keys)
    best, med = best_median(lambda: f(keys).block_until_ready(), repeats)
    return nd * n / best, nd * n / med


def kernel_rows(runs, repeats):
    """Per path: runs, run-steps, best/median seconds, and the work of the mean run (useful and
    padded) as (flops, exponentials, normals)."""
    pool = bt.make_pool(2048)
    pool_dev = {k: jnp.asarray(v) for k, v in pool.items()}
    idx = ((np.arange(runs) // 4) % 2048).astype(np.int32)
    run_args = dict(idx=idx, params=bt.params_for(runs))
    devs = jax.local_devices()
    chunk = 4096 * len(devs)

    def rule_only(shared, run):
        i = run["idx"]
        r = dynamics.run(
            shared["x"][i],
            shared["tokens0"][i],
            run["params"],
            mask=shared["mask"][i],
            n_steps=bt.CFG.n_steps,
            tol=bt.CFG.tol,
        )
        return dict(steps=r.steps, t=jnp.sum(r.tokens))

    def mean_work(steps, valid, metrics, normals, data):
        useful = work_per_run(steps, valid, metrics, data)
        padded = work_per_run(steps, N_PADDED, metrics, data)
        return [[float(np.mean(w.flops)), float(np.mean(w.exps)), normals] for w in (useful, padded)]

    rows = {}
    valid = pool["mask"].sum(1)[idx].astype(np.float64)
    for name, fn, metrics in (
        ("`dynamics.run` (given data)", rule_only, False),
        ("run + labels + metrics (given data)", bt.given_data_task, True),
    ):
        out = {}

        def call():
            out["r"] = execute.map_runs(fn, run_args, shared=pool_dev, devices=devs, chunk_size=chunk)

        best, med = best_median(call, repeats)
        steps = np.asarray(out["r"]["steps"], np.float64)
        rows[name] = dict(
            runs=runs,
            run_steps=float(steps.sum()),
            best_s=best,
            median_s=med,
            work=mean_work(steps, valid, metrics, 0.0, False),
        )
    # the study path: as many seeds as make `runs` runs of the study's grid, the seed slowest
    per_seed = len(bt.CFG.grid()) // bt.CFG.seeds
    grid = dataclasses.replace(bt.CFG, seeds=-(-runs // per_seed)).grid()
    out = {}

    def study():
        out["r"] = sweep.run(
            bt.TASK,
            grid,
            key=jax.random.key(0),
            common_random_numbers=True,
            chunk_size=chunk,
            devices=devs,
            progress=False,
        )

    best, med = best_median(study, repeats)
    steps = np.asarray(out["r"]["steps"], np.float64)
    valid = out["r"]["n_clusters"].astype(np.float64) * PTS
    normals = (M * (PTS + 1) * D + M * PTS) / per_seed  # one draw per seed, shared by its runs
    rows["study path (`sweep.run`: data on the device, drawn once per seed, metrics)"] = dict(
        runs=len(grid),
        run_steps=float(steps.sum()),
        best_s=best,
        median_s=med,
        work=mean_work(steps, valid, True, normals, True),
    )
    return rows


def measure(runs, repeats):
    return dict(
        devices=len(jax.local_devices()),
        gemm=gemm_peak(repeats),
        exp=exp_peak(repeats),
        normal=normal_peak(repeats),
        kernel=kernel_rows(runs, repeats),
    )


def main():
    if args.child:
        print("RESULT " + json.dumps(measure(args.runs, args.repeats)))
        return
    child = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            __file__,
            "--child",
            "--runs",
            str(args.runs),
            "--repeats",
            str(args.repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    one = json.loads(next(ln for ln in child.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    two = measure(args.runs, args.repeats)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
        f"backend {jax.default_backend()}; float32; {time.strftime('%Y-%m-%d')}; {args.runs} runs, "
        f"{args.repeats} repetitions (best / median)"
    )
    print()
    print("| cores | GEMM GFLOP/s | exp G/s | normals G/s |")
    print("|---:|---:|---:|---:|")
    for label, m in (("1", one), ("2", two)):
        print(
            f"| {label} | {m['gemm'][0] / 1e9:.1f} / {m['gemm'][1] / 1e9:.1f} | "
            f"{m['exp'][0] / 1e9:.2f} / {m['exp'][1] / 1e9:.2f} | "
            f"{m['normal'][0] / 1e9:.3f} / {m['normal'][1] / 1e9:.3f} |"
        )
    print()
    w = work.per_run_step(N_PADDED, T, D)
    print(f"work per run-step (work.py): {w.flops:.0f} flops + {w.exps:.0f} exp on {N_PADDED} padded points")
    print()
    print(
        "| cores | path | runs/s | mean steps | achieved GFLOP/s (useful) | achieved G exp/s (useful) "
        "| bound µs per run (useful / padded) | measured µs per run | of bound (useful / padded) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, m in (("1", one), ("2", two)):
        ceil = dict(gemm_highest=m["gemm"][0], exp=m["exp"][0])  # work.py's FFMA ceiling: the GEMM's rate
        for name, r in m["kernel"].items():
            rate = r["runs"] / r["median_s"]
            us = 1e6 / rate
            roof = [1e6 * work.bound(work.Work(f, e), ceil)["seconds"] for f, e, _ in r["work"]]
            useful = r["work"][0]
            print(
                f"| {label} | {name} | {rate:.0f} | {r['run_steps'] / r['runs']:.2f} | "
                f"{rate * useful[0] / 1e9:.1f} | {rate * useful[1] / 1e9:.2f} | "
                f"{roof[0]:.1f} / {roof[1]:.1f} | {us:.1f} | {roof[0] / us:.1%} / {roof[1] / us:.1%} |"
            )


if __name__ == "__main__":
    main()
