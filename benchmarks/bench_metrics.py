"""Benchmark ARI + NMI over a batch of labelings: four ways to get the same numbers.

    python benchmarks/bench_metrics.py [--batch 4096] [--sizes 250 1000] [--repeats 5]

Methods (each computes both ARI and NMI of every labeling in the batch):

  contingency   tokdyn.metrics with n_true/n_pred: segment_sum contingency table (bounded labels)
  sort          tokdyn.metrics without bounds: sort-based path (arbitrary integer labels)
  onehot-einsum contingency table as einsum of one-hot encodings, same final formulas
  sklearn       sklearn.metrics per labeling in a Python loop (timed on a subset, scaled up)

Protocol: the JAX methods are ``jax.jit(jax.vmap(f))`` over the whole batch. Compile time is
``lower().compile()`` measured on its own; then one warm-up call, then ``--repeats`` timed calls,
each ending in ``block_until_ready``; the table reports the median. Labels: K=5 true classes,
4 predicted clusters, predicted labels correlated with the true ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import metrics

N_TRUE, N_PRED = 5, 4


def both_contingency(t, p):
    return metrics.ari(t, p, n_true=N_TRUE, n_pred=N_PRED), metrics.nmi(t, p, n_true=N_TRUE, n_pred=N_PRED)


def both_sort(t, p):
    return metrics.ari(t, p), metrics.nmi(t, p)


def both_onehot(t, p):
    onehot_t = jax.nn.one_hot(t, N_TRUE, dtype=jnp.float32)  # (N, K)
    onehot_p = jax.nn.one_hot(p, N_PRED, dtype=jnp.float32)  # (N, K')
    table = jnp.einsum("nk,nj->kj", onehot_t, onehot_p)  # (K, K')
    return metrics._finish(metrics._table_stats(table))


JAX_METHODS = {"contingency": both_contingency, "sort": both_sort, "onehot-einsum": both_onehot}


def make_labelings(batch: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, N_TRUE, (batch, n))
    noise = rng.random((batch, n)) < 0.3
    p = np.where(noise, rng.integers(0, N_PRED, (batch, n)), t % N_PRED)
    return t.astype(np.int32), p.astype(np.int32)


def time_jax(fn, t, p, repeats: int):
    jitted = jax.jit(jax.vmap(fn))
    t_dev, p_dev = jnp.asarray(t), jnp.asarray(p)
    start = time.perf_counter()
    compiled = jitted.lower(t_dev, p_dev).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(t_dev, p_dev))  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(t_dev, p_dev))
        runs.append(time.perf_counter() - start)
    return compile_s, statistics.median(runs), out


def time_sklearn(t, p, calls: int):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    calls = min(calls, t.shape[0])
    out = []
    start = time.perf_counter()
    for i in range(calls):
        out.append((adjusted_rand_score(t[i], p[i]), normalized_mutual_info_score(t[i], p[i])))
    per_call = (time.perf_counter() - start) / calls
    return per_call * t.shape[0], np.array(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sklearn-calls", type=int, default=256, help="labelings timed for sklearn")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs ({platform.platform()})")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, dtype {jnp.zeros(()).dtype}")
    print(f"batch of {args.batch} labelings, K={N_TRUE} true / {N_PRED} pred, ARI + NMI per labeling, "
          f"median of {args.repeats} runs")
    print()
    header = (
        f"{'method':<14} {'n':>5} {'compile s':>10} {'batch ms':>10} {'us/labeling':>12} "
        f"{'labelings/s':>12} {'vs sklearn':>11} {'max |diff|':>11}"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        t, p = make_labelings(args.batch, n)
        sk_total, sk_scores = time_sklearn(t, p, args.sklearn_calls)
        rows = []
        for name, fn in JAX_METHODS.items():
            compile_s, run_s, (ari, nmi) = time_jax(fn, t, p, args.repeats)
            got = np.stack([np.asarray(ari), np.asarray(nmi)], axis=1)[: len(sk_scores)]
            rows.append((name, compile_s, run_s, float(np.abs(got - sk_scores).max())))
        rows.append(("sklearn", float("nan"), sk_total, 0.0))
        for name, compile_s, run_s, diff in rows:
            compile_txt = "-" if np.isnan(compile_s) else f"{compile_s:.2f}"
            print(
                f"{name:<14} {n:>5} {compile_txt:>10} {run_s * 1e3:>10.1f} {run_s / args.batch * 1e6:>12.2f} "
                f"{args.batch / run_s:>12.0f} {sk_total / run_s:>10.0f}x {diff:>11.1e}"
            )
    if args.sklearn_calls < args.batch:
        print(f"\nsklearn timed on {args.sklearn_calls} labelings per size and scaled to the batch.")


if __name__ == "__main__":
    main()
