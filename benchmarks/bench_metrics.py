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
from tokdyn.metrics import partition

N_TRUE, N_PRED = 5, 4


def both_contingency(t, p):
    return metrics.ari(t, p, n_true=N_TRUE, n_pred=N_PRED), metrics.nmi(t, p, n_true=N_TRUE, n_pred=N_PRED)


def both_sort(t, p):
    return metrics.ari(t, p), metrics.nmi(t, p)


def both_onehot(t, p):
    onehot_t = jax.nn.one_hot(t, N_TRUE, dtype=jnp.float32)  # (N, K)
    onehot_p = jax.nn.one_hot(p, N_PRED, dtype=jnp.float32)  # (N, K')
    table = jnp.einsum("nk,nj->kj", onehot_t, onehot_p)  # (K, K')
    return partition._finish(partition._table_stats(table))  # the package's final formulas


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
    print(
        f"batch of {args.batch} labelings, K={N_TRUE} true / {N_PRED} pred, ARI + NMI per labeling, "
        f"median of {args.repeats} runs"
    )
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


# ---------------------------------------------------------------------------------------------
# Object-centric segmentation rows: FG-ARI, the auction, matched IoU
# ---------------------------------------------------------------------------------------------
#
# Run after the table above by ``python benchmarks/bench_metrics.py`` (sharing --repeats and
# --sklearn-calls), or alone:
#
#     python -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_metrics as b; b.segmentation_main()"
#
# (``segmentation_main(["--scenes", "1000"])`` to change the sizes). Workload: sprite scenes of
# side x side pixels, 1 to 5 objects (rectangles painted in turn, later ones occluding), 5
# predicted slots from a relabelled copy of the truth with 0-100 % of the pixels replaced by
# random 4 x 4 blocks. Rows, each over every scene (peers on --sklearn-calls scenes, scaled up):
#
#   fg_ari contingency   jit(vmap(metrics.fg_ari)) with n_true/n_pred (the table path)
#   fg_ari sort          jit(vmap(metrics.fg_ari)) without bounds (the sort path)
#   sklearn fg_ari       adjusted_rand_score(m[m > 0], p[m > 0]) in a Python loop
#   auction 5x5          jit(vmap(assignment.linear_assignment)) on the scenes' 5 x 5 IoU matrices
#   scipy lsa 5x5        scipy.optimize.linear_sum_assignment(maximize=True) in a Python loop
#   matched_iou          jit(vmap(metrics.matched_iou)): IoU table + auction, end to end
#   matched_iou_host     metrics.matched_iou_host (NumPy + SciPy) in a Python loop
#
# "max |diff|": against the peer's values (the auction: optimal total minus its total).

SEG_TRUE, SEG_PRED = 6, 5  # ids 0..5 (5 objects + background), 5 slots


def sprite_scenes(count: int, side: int, seed: int = 0):
    """(masks, preds), int32 (count, side, side) each: see the section's comment."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    masks = np.zeros((count, side, side), np.int32)
    n_obj = rng.integers(1, SEG_TRUE, count)
    for k in range(1, SEG_TRUE):
        cy, cx = rng.integers(0, side, (2, count, 1, 1))
        ry, rx = rng.integers(1, side // 3, (2, count, 1, 1))
        inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx) & (k <= n_obj)[:, None, None]
        masks = np.where(inside, k, masks)
    perm = np.argsort(rng.random((count, SEG_TRUE)), axis=1) % SEG_PRED  # (count, 6) id -> slot
    blocks = rng.integers(0, SEG_PRED, (count, side // 4, side // 4)).repeat(4, 1).repeat(4, 2)
    noisy = rng.random((count, side, side)) < rng.choice([0.0, 0.1, 0.4, 1.0], (count, 1, 1))
    preds = np.where(noisy, blocks, np.take_along_axis(perm, masks.reshape(count, -1), 1).reshape(masks.shape))
    return masks, preds.astype(np.int32)


def iou_matrices(masks, preds):
    """(count, 5, 5) float32 IoU of objects 1..5 with slots 0..4 (over all pixels)."""
    count = masks.shape[0]
    cell = masks.reshape(count, -1) * SEG_PRED + preds.reshape(count, -1)
    table = np.stack([np.bincount(c, minlength=SEG_TRUE * SEG_PRED) for c in cell]).reshape(count, SEG_TRUE, SEG_PRED)
    area_t, area_p = table.sum(2), table.sum(1)
    union = area_t[:, 1:, None] + area_p[:, None, :] - table[:, 1:]
    return np.where(union > 0, table[:, 1:] / np.maximum(union, 1), 0.0).astype(np.float32)


def time_compiled(fn, args, repeats: int):
    """(compile s, median run s, output) of jit(fn) on device copies of ``args``."""
    args = [jnp.asarray(a) for a in args]
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(*args))  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - start)
    return compile_s, statistics.median(runs), np.asarray(out)


def time_loop(fn, items, calls: int):
    """(seconds for all items, scaled from ``calls`` of them, results of those calls)."""
    calls = min(calls, len(items))
    start = time.perf_counter()
    out = [fn(item) for item in items[:calls]]
    return (time.perf_counter() - start) / calls * len(items), out


def segmentation_main(argv=None):
    import functools

    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    from tokdyn import assignment

    parser = argparse.ArgumentParser(description="object-centric segmentation rows of bench_metrics")
    parser.add_argument("--scenes", type=int, default=10_000)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sklearn-calls", type=int, default=1000, help="scenes timed for each loop peer")
    args, _ = parser.parse_known_args(argv)

    masks, preds = sprite_scenes(args.scenes, args.side)
    ious = iou_matrices(masks, preds)
    print(
        f"\n{args.scenes} sprite scenes of {args.side}x{args.side}, {SEG_TRUE - 1} objects max, {SEG_PRED} slots; "
        f"median of {args.repeats} runs (loop peers on {min(args.sklearn_calls, args.scenes)} scenes, scaled)\n"
    )
    header = (
        f"{'method':<18} {'compile s':>10} {'batch ms':>10} {'us/scene':>10} {'scenes/s':>10} "
        f"{'vs peer':>8} {'max |diff|':>11}"
    )
    print(header)
    print("-" * len(header))

    def row(name, compile_s, run_s, peer_s, diff):
        compile_txt = "-" if compile_s is None else f"{compile_s:.2f}"
        print(
            f"{name:<18} {compile_txt:>10} {run_s * 1e3:>10.1f} {run_s / args.scenes * 1e6:>10.2f} "
            f"{args.scenes / run_s:>10.0f} {peer_s / run_s:>7.1f}x {diff:>11.1e}"
        )

    # FG-ARI
    sk_s, sk = time_loop(
        lambda i: adjusted_rand_score(masks[i][masks[i] > 0], preds[i][masks[i] > 0]),
        range(args.scenes),
        args.sklearn_calls,
    )
    sk = np.array(sk)
    bounded = jax.vmap(functools.partial(metrics.fg_ari, n_true=SEG_TRUE, n_pred=SEG_PRED))
    for name, fn in (("fg_ari contingency", bounded), ("fg_ari sort", jax.vmap(metrics.fg_ari))):
        compile_s, run_s, out = time_compiled(fn, (masks, preds), args.repeats)
        row(name, compile_s, run_s, sk_s, float(np.abs(out[: len(sk)] - sk).max()))
    row("sklearn fg_ari", None, sk_s, sk_s, 0.0)

    # The auction on the scenes' 5 x 5 IoU matrices
    lsa_s, lsa = time_loop(lambda b: linear_sum_assignment(b, maximize=True)[1], ious, args.scenes)
    best = np.array([b[np.arange(len(c)), c].sum() for b, c in zip(ious.astype(np.float64), lsa)])
    compile_s, run_s, cols = time_compiled(jax.vmap(assignment.linear_assignment), (ious,), args.repeats)
    got = np.take_along_axis(ious.astype(np.float64), cols[:, :, None].astype(np.int64), 2)[:, :, 0].sum(1)
    row("auction 5x5", compile_s, run_s, lsa_s, float(np.abs(best - got).max()))
    row("scipy lsa 5x5", None, lsa_s, lsa_s, 0.0)

    # Matched IoU end to end
    host_s, host = time_loop(
        lambda i: metrics.matched_iou_host(masks[i], preds[i], n_true=SEG_TRUE, n_pred=SEG_PRED),
        range(args.scenes),
        args.sklearn_calls,
    )
    fn = jax.vmap(functools.partial(metrics.matched_iou, n_true=SEG_TRUE, n_pred=SEG_PRED))
    compile_s, run_s, out = time_compiled(fn, (masks, preds), args.repeats)
    row("matched_iou", compile_s, run_s, host_s, float(np.abs(out[: len(host)] - np.array(host)).max()))
    row("matched_iou_host", None, host_s, host_s, 0.0)


if __name__ == "__main__":
    segmentation_main()
