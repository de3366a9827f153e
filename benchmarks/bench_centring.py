"""The cost of running the built-in rule in centred coordinates (``Rule.centred``), in one process.

The same runs of the study's workload (Gaussian clusters, K in {3, 4, 5}, 100 points per cluster
padded to 500, D = 4, 4 tokens, the four published methods, at most 30 steps, tol 1e-3) through
``dynamics.run`` under ``lax.map`` (the CPU's strategy), with ``dynamics.BUILTIN`` (centred) and
the same rule with ``centred=False`` (the user's coordinates, as before), timed alternately
``--repeats`` times each after a warm-up, so that a shared machine's load falls on both alike.
Prints the median runs/s of each and their ratio. Usage:

    python benchmarks/bench_centring.py [--runs 4096] [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import data, dynamics

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--runs", type=int, default=4096)
parser.add_argument("--repeats", type=int, default=7)
args = parser.parse_args()

METHODS = ["baseline", "inertia", "repulsion", "inertia+repulsion"]
UNCENTRED = dataclasses.replace(dynamics.BUILTIN, centred=False)


def problems(n):
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(7), s))(jnp.arange(n))
    ks = jnp.asarray([3, 4, 5], jnp.int32)[jnp.arange(n) % 3]

    def one(key, k):
        c = data.gaussian_clusters(key, k, points_per_cluster=100, dim=4, noise=0.6, center_box=5.0, max_clusters=5)
        return c.x, dynamics.forgy(c.x, c.init_noise, c.mask, 4), c.mask

    x, t0, mask = jax.jit(jax.vmap(one))(keys, ks)
    hp = dynamics.Hparams.stack([dynamics.METHODS[METHODS[i % 4]] for i in range(n)])
    return x, t0, mask, hp


def runner(rule):
    def one(args):
        x, t0, mask, hp = args
        r = dynamics.run(x, t0, hp, rule=rule, mask=mask, n_steps=30, tol=1e-3)
        return r.labels, r.steps

    return jax.jit(lambda *a: jax.lax.map(one, a))


def main():
    pool = problems(args.runs)
    fns = {"centred": runner(dynamics.BUILTIN), "uncentred": runner(UNCENTRED)}
    out = {}
    for name, fn in fns.items():
        out[name] = jax.block_until_ready(fn(*pool))  # compile + warm up
    same = float(np.mean(np.asarray(out["centred"][0]) == np.asarray(out["uncentred"][0])))
    times = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*pool))
            times[name].append(time.perf_counter() - t)
    rates = {name: args.runs / np.median(v) for name, v in times.items()}
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {args.runs} runs, {args.repeats} repeats each")
    for name in fns:
        rs = sorted(args.runs / np.asarray(times[name]))
        print(f"{name:10s} median {rates[name]:10,.0f} runs/s   (min {rs[0]:,.0f}, max {rs[-1]:,.0f})")
    print(f"centred / uncentred: {rates['centred'] / rates['uncentred']:.3f}")
    print(f"labels equal on {same:.4%} of points (the uncentred rule rounds differently)")


if __name__ == "__main__":
    main()
