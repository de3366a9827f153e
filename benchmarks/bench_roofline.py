"""A roofline for the token-dynamics kernel on this machine: the work of one run-step counted, the
machine's attainable peak for that kind of work measured, and tokdyn's kernel against both.

Work per run-step of the default workload (T tokens, N points padded, D dims; the kernel computes
on every padded point, masked):
  scores  2 t.x - |t|^2               2 T N D + 2 T N flops
  softmax over T (max, sub, exp, sum,
          scale by 1/tau and weight)  6 T N flops + T N exponentials
  means   a @ x, mass, divide          2 T N D + T N + T D flops
  force, momentum, repulsion, |v|max  about 8 T^2 D + 6 T D flops
Useful work counts the valid points only (N = K x 100, K = 4 on average).

Attainable peaks, measured here with JAX on the same backend and the same device setup as the
kernel (1 core: one forced host device in a child pinned with taskset to one CPU; 2 cores: two
forced host devices, the work split over them with shard_map):
  GEMM   float32 1024 x 1024 matrix products: flops/s (2 n^3 per product)
  exp    float32 exp of 2^22 elements, summed: exponentials/s

Kernel rows (steady state, compile excluded): ``dynamics.run`` alone on the pooled data (run-steps
from the results), and the given-data path of bench_throughput (run + ARI/NMI/SSE/collapse). The
roofline time of a run-step is flops / GEMM peak + exponentials / exp peak (the two share the
vector units); "of roofline" is that time over the measured time per run-step.

Usage: ``python benchmarks/bench_roofline.py [--runs 50000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
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
_argv, sys.argv = sys.argv, sys.argv[:1]  # bench_throughput parses the command line on import: its defaults
import bench_throughput as bt  # noqa: E402
sys.argv = _argv

from tokdyn import dynamics, execute  # noqa: E402

T, D = bt.CFG.n_tokens, bt.CFG.dim
N_PADDED = bt.TASK.max_clusters * bt.CFG.points_per_cluster


def work_per_step(n):
    """(flops, exponentials) of one run-step on n points (n may be an array)."""
    flops = 2 * T * n * D + 2 * T * n + 6 * T * n + 2 * T * n * D + T * n + T * D + 8 * T * T * D + 6 * T * D
    return flops, T * n


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
        return jnp.einsum("bij,bjk->bik", x, x)[:, :1, :1]

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


def kernel_rows(runs, repeats):
    pool = bt.make_pool(2048)
    pool_dev = {k: jnp.asarray(v) for k, v in pool.items()}
    idx = ((np.arange(runs) // 4) % 2048).astype(np.int32)
    run_args = dict(idx=idx, params=bt.params_for(runs))
    devs = jax.local_devices()
    chunk = 4096 * len(devs)

    def rule_only(shared, run):
        i = run["idx"]
        r = dynamics.run(shared["x"][i], shared["tokens0"][i], run["params"], mask=shared["mask"][i],
                         n_steps=bt.CFG.n_steps, tol=bt.CFG.tol)
        return dict(steps=r.steps, t=jnp.sum(r.tokens))

    rows = {}
    valid = pool["mask"].sum(1)[idx]
    for name, fn in (("dynamics.run", rule_only), ("run + metrics (given-data)", bt.given_data_task)):
        out = {}

        def call():
            out["r"] = execute.map_runs(fn, run_args, shared=pool_dev, devices=devs, chunk_size=chunk)

        best, med = best_median(call, repeats)
        steps = np.asarray(out["r"]["steps"], np.float64)
        useful = work_per_step(valid.astype(np.float64))  # per run
        rows[name] = dict(run_steps=float(steps.sum()), best_s=best, median_s=med,
                          padded=[float(w) for w in work_per_step(N_PADDED)],
                          useful=[float(np.sum(steps * w) / steps.sum()) for w in useful])
    return rows


def measure(runs, repeats):
    return dict(devices=len(jax.local_devices()), gemm=gemm_peak(repeats), exp=exp_peak(repeats),
                kernel=kernel_rows(runs, repeats))


def main():
    if args.child:
        print("RESULT " + json.dumps(measure(args.runs, args.repeats)))
        return
    child = subprocess.run(["taskset", "-c", "0", sys.executable, __file__, "--child", "--runs", str(args.runs),
                            "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
    one = json.loads(next(ln for ln in child.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    two = measure(args.runs, args.repeats)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
          f"backend {jax.default_backend()}; float32; {time.strftime('%Y-%m-%d')}; {args.runs} runs, "
          f"{args.repeats} repetitions (best / median)")
    print()
    print("| cores | GEMM GFLOP/s | exp G/s |")
    print("|---:|---:|---:|")
    for label, m in (("1", one), ("2", two)):
        print(f"| {label} | {m['gemm'][0] / 1e9:.1f} / {m['gemm'][1] / 1e9:.1f} | "
              f"{m['exp'][0] / 1e9:.2f} / {m['exp'][1] / 1e9:.2f} |")
    print()
    print(f"work per run-step: {work_per_step(N_PADDED)[0]:.0f} flops + {work_per_step(N_PADDED)[1]:.0f} exp "
          f"on {N_PADDED} padded points")
    print()
    print("| cores | kernel | run-steps/s | achieved GFLOP/s (useful / padded) | achieved G exp/s (useful) "
          "| roofline ns per run-step (useful / padded) | measured ns | of roofline (useful / padded) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for label, m in (("1", one), ("2", two)):
        peak_f, peak_e = m["gemm"][0], m["exp"][0]  # the best of the peaks: the strictest roofline
        for name, r in m["kernel"].items():
            rate = r["run_steps"] / r["median_s"]
            ns = 1e9 / rate
            roof = [1e9 * (f / peak_f + e / peak_e) for f, e in (r["useful"], r["padded"])]
            print(f"| {label} | {name} | {rate / 1e6:.2f} M | {rate * r['useful'][0] / 1e9:.1f} / "
                  f"{rate * r['padded'][0] / 1e9:.1f} | {rate * r['useful'][1] / 1e9:.2f} | "
                  f"{roof[0]:.0f} / {roof[1]:.0f} | {ns:.0f} | {roof[0] / ns:.1%} / {roof[1] / ns:.1%} |")


if __name__ == "__main__":
    main()
