"""The cost of each of ``dynamics.run``'s adjoints on the study's workload, in one process.

The same runs (Gaussian clusters, K in {3, 4, 5}, 100 points per cluster padded to 500, D = 4,
4 tokens, the inertia+repulsion rule, at most 30 steps, tol 1e-3) through:

- ``run`` as the study runs it (the default adjoint: the early-exit ``while_loop``, no derivative),
  under ``lax.map`` (the CPU's strategy) and under ``vmap``;
- the same forward run through the bounded scan (``run_fixed``, and ``run(adjoint=CheckpointAdjoint())``
  where the package has it);
- a reverse-mode gradient of a loss of the final tokens in the knobs: through the scan without
  rematerialisation (``run_fixed``), with it (``CheckpointAdjoint()``), and by implicit
  differentiation (``implicit=True`` / ``ImplicitAdjoint()``), each under ``vmap``.

Each row is compiled first (compile time and XLA's temporary buffer size, the memory a program needs
beyond its inputs and outputs, reported apart), then timed ``--repeats`` times with its
results pulled to the host; rows are timed alternately so that a shared machine's load falls on all
alike. Prints a table with the machine, JAX version, backend, dtype and commit. The forms a checkout
lacks are listed as absent, so the same script runs before and after a change. Usage:

    python benchmarks/bench_adjoint.py [--runs 256] [--repeats 7] [--only REGEX]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import data, dynamics

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--runs", type=int, default=256)
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--only", default="", help="a regular expression: only the forms whose name it matches")
args = parser.parse_args()

HP = dynamics.method("inertia+repulsion")


def problems(n):
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(7), s))(jnp.arange(n))
    ks = jnp.asarray([3, 4, 5], jnp.int32)[jnp.arange(n) % 3]

    def one(key, k):
        c = data.gaussian_clusters(key, k, points_per_cluster=100, dim=4, noise=0.6, center_box=5.0, max_clusters=5)
        return c.x, dynamics.forgy(c.x, c.init_noise, c.mask, 4), c.mask

    return jax.jit(jax.vmap(one))(keys, ks)


def loss(tokens):
    return jnp.sum(tokens**2)


def rows():
    out = {}

    def early(x, t, m):
        return dynamics.run(x, t, HP, mask=m, n_steps=30).tokens

    out["run, default (early exit), lax.map"] = lambda x, t, m: jax.lax.map(lambda a: early(*a), (x, t, m))
    out["run, default (early exit), vmap"] = jax.vmap(early)
    out["run_fixed (scan of 30), vmap"] = jax.vmap(
        lambda x, t, m: dynamics.run_fixed(x, t, HP, mask=m, n_steps=30).tokens
    )
    out["grad, run_fixed, vmap"] = jax.vmap(
        jax.grad(lambda hp, x, t, m: loss(dynamics.run_fixed(x, t, hp, mask=m, n_steps=30).tokens)),
        in_axes=(None, 0, 0, 0),
    )
    out["grad, run(implicit=True), vmap"] = jax.vmap(
        jax.grad(lambda hp, x, t, m: loss(dynamics.run(x, t, hp, mask=m, n_steps=30, implicit=True).tokens)),
        in_axes=(None, 0, 0, 0),
    )
    if hasattr(dynamics, "CheckpointAdjoint"):
        ck = dynamics.CheckpointAdjoint()
        out["run(adjoint=CheckpointAdjoint()), vmap"] = jax.vmap(
            lambda x, t, m: dynamics.run(x, t, HP, mask=m, n_steps=30, adjoint=ck).tokens
        )
        out["grad, run(adjoint=CheckpointAdjoint()), vmap"] = jax.vmap(
            jax.grad(lambda hp, x, t, m: loss(dynamics.run(x, t, hp, mask=m, n_steps=30, adjoint=ck).tokens)),
            in_axes=(None, 0, 0, 0),
        )
    else:
        out["run(adjoint=CheckpointAdjoint()), vmap"] = None
        out["grad, run(adjoint=CheckpointAdjoint()), vmap"] = None
    return out


def commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main():
    x, t0, m = problems(args.runs)
    fns, compiled, compile_s, times, temp_mb = rows(), {}, {}, {}, {}
    fns = {k: v for k, v in fns.items() if re.search(args.only, k)}
    for name, fn in fns.items():
        if fn is None:
            continue
        a = (HP, x, t0, m) if name.startswith("grad") else (x, t0, m)
        start = time.perf_counter()
        exe = jax.jit(fn).lower(*a).compile()
        compile_s[name] = time.perf_counter() - start
        try:
            temp_mb[name] = exe.memory_analysis().temp_size_in_bytes / 2**20
        except Exception:  # a backend without the analysis
            temp_mb[name] = float("nan")
        compiled[name] = (lambda e, a: lambda: jax.device_get(e(*a)))(exe, a)
        compiled[name]()  # warm
        times[name] = []
    for _ in range(args.repeats):
        for name, f in compiled.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    dev = jax.devices()[0]
    print(
        f"device: {getattr(dev, 'device_kind', dev)} ({jax.default_backend()}); host {platform.machine()}, "
        f"{os.cpu_count()} cores; JAX {jax.__version__}; dtype float32; commit {commit()}; "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC"
    )
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{args.runs} runs (N=500 padded, D=4, T=4, inertia+repulsion, n_steps=30), {args.repeats} repeats\n")
    print("| form | runs/s (median) | best | compile s | XLA temp MiB |")
    print("|---|---:|---:|---:|---:|")
    for name in fns:
        if name not in times:
            print(f"| {name} | absent in this checkout | | | |")
            continue
        med, best = float(np.median(times[name])), min(times[name])
        print(
            f"| {name} | {args.runs / med:,.0f} | {args.runs / best:,.0f} | {compile_s[name]:.1f} | "
            f"{temp_mb[name]:,.1f} |"
        )


if __name__ == "__main__":
    main()
