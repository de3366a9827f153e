"""Peak memory of the study's per-run workload against the number of runs (chunked execution).

Each size runs in a fresh process (2 forced host devices) through tokdyn.sweep.map_runs with the
study's fused per-run function; the child reports its peak resident set size (ru_maxrss).
Usage: ``python benchmarks/bench_memory.py [--runs 100000,1000000]``.
"""

import argparse
import os
import platform
import subprocess
import sys

CHILD = r"""
import os, resource, sys, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import numpy as np, jax, jax.numpy as jnp
from tokdyn import dynamics, sweep
from tokdyn.studies import token_dynamics as td
n = int(sys.argv[1]); cfg = td.Config()
i = np.arange(n)
m = i % 4
p = [dynamics.METHODS[k] for k in cfg.methods]
params = dynamics.Params(*(np.asarray([getattr(q, f) for q in p], np.float32)[m] for f in ("temperature", "momentum", "repulsion")))
args = dict(seed=(i // 4).astype(np.int32), n_clusters=np.asarray(cfg.n_clusters, np.int32)[(i // 4) % 3],
            noise=np.asarray(cfg.noise, np.float32)[(i // 12) % 3], params=params)
shared = dict(key=jax.random.key(0), n_steps=jnp.int32(30), tol=jnp.float32(1e-3))
t = time.perf_counter()
out = sweep.map_runs(cfg.task(), args, shared=shared, chunk_size=8192)
dt = time.perf_counter() - t
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, dt, out["ari"].mean())
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="100000,1000000")
    a = ap.parse_args()
    import jax

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
          "backend cpu; 2 host devices; dtype float32; chunk 8192 runs")
    print(f"| {'runs':>9} | {'peak RSS MiB':>12} | {'wall s':>8} | {'runs/s':>8} | {'mean ARI':>8} |")
    print(f"|{'-' * 11}|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for n in [int(v) for v in a.runs.split(",")]:
        res = subprocess.run([sys.executable, "-c", CHILD, str(n)], check=True, capture_output=True, text=True)
        runs, rss, dt, ari = res.stdout.split()[-4:]
        print(f"| {int(runs):>9} | {float(rss):>12.0f} | {float(dt):>8.1f} | {int(runs) / float(dt):>8.0f} | {float(ari):>8.3f} |")


if __name__ == "__main__":
    main()
