"""Scoring many labelings of different lengths, one call each: what a researcher's first loop costs.

    python benchmarks/bench_buckets.py [--count 1000] [--low 10] [--high 10000] [--unpadded 20]
                                       [--runs 12]

Workload: ``--count`` labelings of uniformly random lengths in [``--low``, ``--high``] (5 true
classes, 4 predicted clusters, 30 % of the predictions replaced at random), each scored with ARI
and NMI. Every way gets the same labelings, in one process:

  sklearn            adjusted_rand_score + normalized_mutual_info_score per labeling (Python loop)
  numpy              the same numbers from a contingency table in float64 NumPy written here
                     (Python loop): an independent host form
  tokdyn eager       metrics.ari + metrics.nmi per labeling on NumPy arrays (Python loop): what a
                     user's call gets, the package's NumPy form (``fn.host``)
  bucketed kernel    the kernels on the same calls padded to buckets (powers of two from 32) as
                     ``fn.buckets`` pads them, then ``fn.jitted``: the first pass pays one compile
                     per bucket and kernel, the second pass is the same loop with every bucket
                     compiled; without bounds (the sort path), then with n_true / n_pred (the table)
  tokdyn unpadded    the kernels without the padding (``fn.jitted``: one program per length), timed
                     on the first ``--unpadded`` labelings and scaled to ``--count``
  tokdyn batched     jit(vmap(ari, nmi)) over all labelings padded to one length with masks: one
                     compile (reported apart), then one call; without bounds, then with them

A second table (``--runs``, 0 to skip): ``dynamics.run`` on point sets of random sizes 100-1,000
(3 Gaussian clusters, 3 tokens), one call each, bucketed against unpadded (``run.jitted``).
Compile time is part of the eager loops' wall time (what a user waits for) and counted apart:
``programs`` is the number of XLA compiles the loop triggered. Each table row ends in the largest
difference from scikit-learn (or, for ``dynamics.run``, from the unpadded call).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import dynamics, metrics

N_TRUE, N_PRED = 5, 4


def labelings(count: int, low: int, high: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for n in rng.integers(low, high + 1, count):
        t = rng.integers(0, N_TRUE, n)
        p = np.where(rng.random(n) < 0.3, rng.integers(0, N_PRED, n), t % N_PRED)
        out.append((t.astype(np.int32), p.astype(np.int32)))
    return out


def numpy_scores(t, p):
    """(ARI, NMI) in float64 NumPy from the contingency table, scikit-learn's special cases."""
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    table = np.bincount(ti * clusters.size + pi, minlength=classes.size * clusters.size)
    table = table.reshape(classes.size, clusters.size).astype(np.float64)
    n = float(t.size)
    a, b = table.sum(1), table.sum(0)
    sum_sq = (table**2).sum()
    tp, fp, fn = sum_sq - n, (b**2).sum() - sum_sq, (a**2).sum() - sum_sq
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        ari = 1.0
    else:
        ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    if classes.size == clusters.size == 1 or n == 0:
        return ari, 1.0
    nz = table > 0
    mi = np.sum(table[nz] / n * np.log(n * table[nz] / np.outer(a, b)[nz]))
    h_a, h_b = -np.sum(a / n * np.log(a / n)), -np.sum(b / n * np.log(b / n))
    if mi <= 0 or classes.size == 1 or clusters.size == 1:
        return ari, 0.0
    return ari, min(mi / (0.5 * (h_a + h_b)), 1.0)


class Compiles:
    """Counts XLA backend compiles inside the block."""

    def __enter__(self):
        self.count = 0

        def listener(name, duration, **kwargs):
            if name == "/jax/core/compile/backend_compile_duration":
                self.count += 1
                self.seconds += duration

        self.seconds = 0.0
        self._listener = listener
        jax.monitoring.register_event_duration_secs_listener(listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


def loop(score, data):
    """(wall s, compiles, compile s, (count, 2) scores) of ``score`` over ``data`` in a loop."""
    with Compiles() as c:
        start = time.perf_counter()
        out = np.array([[float(v) for v in score(t, p)] for t, p in data])
        wall = time.perf_counter() - start
    return wall, c.count, c.seconds, out


def bucketed(fn, **bounds):
    """``fn``'s kernel on host labels padded as its buckets pad them (no NumPy form)."""

    def call(t, p):
        arguments = {"labels_true": t, "labels_pred": p, "mask": None, **bounds}
        fn.buckets.pad(arguments)
        return fn.jitted(**arguments)

    return call


def batched(data, **bounds):
    """(compile s, run s, scores) of jit(vmap(ari, nmi)) over ``data`` padded to its longest."""
    length = max(t.size for t, _ in data)
    t_pad = np.zeros((len(data), length), np.int32)
    p_pad = np.zeros((len(data), length), np.int32)
    mask = np.zeros((len(data), length), bool)
    for i, (t, p) in enumerate(data):
        t_pad[i, : t.size], p_pad[i, : p.size], mask[i, : t.size] = t, p, True
    fn = jax.jit(jax.vmap(lambda t, p, m: (metrics.ari(t, p, m, **bounds), metrics.nmi(t, p, m, **bounds))))
    args = [jnp.asarray(a) for a in (t_pad, p_pad, mask)]
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up
    start = time.perf_counter()
    ari, nmi = jax.block_until_ready(compiled(*args))
    return compile_s, time.perf_counter() - start, np.stack([np.asarray(ari), np.asarray(nmi)], 1)


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header():
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs ({platform.platform()})")
    print(f"load average (1, 5, 15 min) at start: {os.getloadavg()}")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, dtype {jnp.zeros(()).dtype}, commit {commit()}")


def metrics_table(args):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    data = labelings(args.count, args.low, args.high)
    lengths = np.array([t.size for t, _ in data])
    print(
        f"\n{args.count} labelings, lengths {lengths.min()}-{lengths.max()} (uniform in [{args.low}, {args.high}], "
        f"{len(set(lengths.tolist()))} distinct), ARI + NMI per labeling"
    )
    sk = loop(lambda t, p: (adjusted_rand_score(t, p), normalized_mutual_info_score(t, p)), data)
    ref = sk[3]
    rows = [("sklearn", sk), ("numpy", loop(numpy_scores, data))]
    rows.append(("tokdyn eager", loop(lambda t, p: (metrics.ari(t, p), metrics.nmi(t, p)), data)))
    bounds = dict(n_true=N_TRUE, n_pred=N_PRED)
    for name, kw in (("bucketed kernel, sort", {}), ("bucketed kernel, table", bounds)):
        ari, nmi = bucketed(metrics.ari, **kw), bucketed(metrics.nmi, **kw)
        rows.append((name, loop(lambda t, p: (ari(t, p), nmi(t, p)), data)))
        rows.append(("  again (warm)", loop(lambda t, p: (ari(t, p), nmi(t, p)), data)))
    few = data[: args.unpadded]
    unpadded = loop(lambda t, p: (metrics.ari.jitted(t, p), metrics.nmi.jitted(t, p)), few)
    scale = len(data) / len(few)
    together = [("tokdyn batched, sort", batched(data)), ("tokdyn batched, table", batched(data, **bounds))]

    print(
        f"\n{'way':<24} {'wall s':>9} {'programs':>9} {'compile s':>10} {'ms/labeling':>12} {'vs sklearn':>11} "
        f"{'max |diff|':>11}"
    )
    print("-" * 92)

    def line(name, wall, programs, comp, diff, note=""):
        print(
            f"{name:<24} {wall:>9.2f} {programs:>9} {comp:>10.2f} {wall / len(data) * 1e3:>12.3f} "
            f"{wall / sk[0]:>10.1f}x {diff:>11.1e}{note}"
        )

    for name, (wall, count, comp, got) in rows:
        line(name, wall, count, comp, float(np.abs(got - ref).max()))
    wall, count, comp, got = unpadded
    line(
        "tokdyn unpadded",
        wall * scale,
        f"~{count * scale:.0f}",
        comp * scale,
        float(np.abs(got - ref[: len(few)]).max()),
        f"   (timed on {len(few)} labelings, scaled x{scale:.0f})",
    )
    for name, (compile_s, run_s, out) in together:
        line(name, run_s, 1, compile_s, float(np.abs(out - ref).max()), "   (wall s: the call; + compile s)")


def dynamics_table(args):
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], np.float32)
    sets = []
    for n in rng.integers(100, 1001, args.runs):
        x = (centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 2))).astype(np.float32)
        sets.append(x)
    hp = dynamics.Hparams()
    print(f"\ndynamics.run on {args.runs} point sets of random sizes 100-1,000 (D=2, T=3), one call each")
    results = {}
    for name, fn in (("bucketed", dynamics.run), ("unpadded", dynamics.run.jitted)):
        with Compiles() as c:
            start = time.perf_counter()
            res = [fn(x, x[:3], hp) for x in sets]
            labels = [np.asarray(r.labels) for r in res]
            wall = time.perf_counter() - start
        results[name] = (wall, c.count, c.seconds, res, labels)
    print(f"\n{'way':<12} {'wall s':>9} {'programs':>9} {'compile s':>10} {'s/run':>8}")
    for name, (wall, count, comp, _, _) in results.items():
        print(f"{name:<12} {wall:>9.2f} {count:>9} {comp:>10.2f} {wall / args.runs:>8.3f}")
    a, b = results["bucketed"][3], results["unpadded"][3]
    token_diff = max(float(np.abs(np.asarray(x.tokens) - np.asarray(y.tokens)).max()) for x, y in zip(a, b))
    same_labels = sum(np.array_equal(x, y) for x, y in zip(results["bucketed"][4], results["unpadded"][4]))
    same_steps = sum(int(x.steps) == int(y.steps) for x, y in zip(a, b))
    print(
        f"bucketed vs unpadded: max |token diff| {token_diff:.1e}, labels equal in {same_labels}/{args.runs}, "
        f"steps equal in {same_steps}/{args.runs}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--low", type=int, default=10)
    parser.add_argument("--high", type=int, default=10_000)
    parser.add_argument("--unpadded", type=int, default=20, help="labelings timed without padding (then scaled)")
    parser.add_argument("--runs", type=int, default=12, help="point sets for the dynamics.run table (0: skip)")
    args = parser.parse_args(argv)
    header()
    metrics_table(args)
    if args.runs:
        dynamics_table(args)
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
