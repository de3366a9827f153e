"""The metrics rows: ARI + NMI of a batch of labelings, and the object-centric segmentation scores,
each way against its peer (scikit-learn, SciPy, NumPy), the same numbers compared first.

  labelings     ARI and NMI of every labeling of a batch (K = 5 true classes, 4 predicted clusters,
                predictions correlated with the truth), ``jax.jit(jax.vmap(f))`` over the batch: the
                contingency path (``n_true``/``n_pred`` given: a ``segment_sum`` table), the sort path
                (any integer labels), a one-hot einsum table with the package's final formulas; the
                peer, scikit-learn's ``adjusted_rand_score`` and ``normalized_mutual_info_score`` in a
                Python loop (timed on a subset, scaled to the batch)
  segmentation  sprite-like scenes (1-5 rectangles painted in turn, 5 predicted slots from a relabelled
                copy of the truth with 0-100% of the pixels replaced by 4 x 4 blocks): ``fg_ari`` by
                its two paths against scikit-learn on the foreground; ``linear_assignment`` (the
                auction) on the scenes' 5 x 5 IoU matrices against SciPy's ``linear_sum_assignment``;
                ``matched_iou`` end to end against ``matched_iou_host`` (NumPy + SciPy)

Each row: compile time apart (``lower().compile()``), one warm-up call, then the median of the
repeats; ``agreement``: the largest difference from the peer's values (the auction: the optimal
total minus its total).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite, steady
from tokdyn import metrics
from tokdyn.metrics import pairs

N_TRUE, N_PRED = 5, 4


def both_contingency(t, p):
    return metrics.ari(t, p, n_true=N_TRUE, n_pred=N_PRED), metrics.nmi(t, p, n_true=N_TRUE, n_pred=N_PRED)


def both_sort(t, p):
    return metrics.ari(t, p), metrics.nmi(t, p)


def both_onehot(t, p):
    onehot_t = jax.nn.one_hot(t, N_TRUE, dtype=jnp.float32)  # (N, K)
    onehot_p = jax.nn.one_hot(p, N_PRED, dtype=jnp.float32)  # (N, K')
    table = jnp.einsum("nk,nj->kj", onehot_t, onehot_p)  # (K, K')
    return pairs.ari_nmi(pairs.table_stats(table))  # the package's final formulas


JAX_METHODS = {"contingency": both_contingency, "sort": both_sort, "onehot-einsum": both_onehot}


def make_labelings(batch: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, N_TRUE, (batch, n))
    noise = rng.random((batch, n)) < 0.3
    p = np.where(noise, rng.integers(0, N_PRED, (batch, n)), t % N_PRED)
    return t.astype(np.int32), p.astype(np.int32)


def compiled_rate(s: Suite, fn, args, n: int, unit: str, size: str):
    """``(row, outputs)``: ``jax.jit(fn)`` compiled for ``args`` (apart), then timed; ``n`` items a call."""
    args = [jnp.asarray(a) for a in args]
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    comp = time.perf_counter() - t
    out = jax.block_until_ready(compiled(*args))
    best, med, _ = steady(lambda: jax.block_until_ready(compiled(*args)), s.args.repeats)
    row = dict(size=size, unit=unit, best=n / best, median=n / med, compile_s=comp, precision="n/a")
    return row, jax.tree_util.tree_map(np.asarray, out)


def loop_rate(fn, items, calls: int, unit: str, size: str):
    """``(row, results)``: a Python loop of ``fn`` over ``calls`` of ``items``, its rate over them."""
    calls = min(calls, len(items))
    t = time.perf_counter()
    out = [fn(item) for item in items[:calls]]
    sec = (time.perf_counter() - t) / calls
    return dict(size=size + f" (timed on {calls:,})", unit=unit, best=1 / sec, median=1 / sec), out


def labelings(s: Suite):
    """The labelings rows (module docstring)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    batch = 64 if s.args.smoke else 4096
    calls = 16 if s.args.smoke else 256
    for n in (250,) if s.args.smoke else (250, 1000):
        t, p = make_labelings(batch, n)
        size = f"{batch:,} labelings of {n:,} points"
        box = {}

        def peer(t=t, p=p, size=size, box=box):
            row, out = loop_rate(
                lambda i: (adjusted_rand_score(t[i], p[i]), normalized_mutual_info_score(t[i], p[i])),
                range(batch),
                calls,
                "labelings/s",
                size,
            )
            box["scores"] = np.asarray(out)
            return row

        s.row("metrics", f"ARI + NMI, scikit-learn loop (n={n})", peer)
        for name, fn in JAX_METHODS.items():

            def one(fn=fn, t=t, p=p, size=size, box=box):
                row, (ari, nmi) = compiled_rate(s, jax.vmap(fn), (t, p), batch, "labelings/s", size)
                if "scores" in box:
                    ref = box["scores"]
                    got = np.stack([ari, nmi], 1)[: len(ref)]
                    row["agreement"] = f"max |diff| from scikit-learn {np.abs(got - ref).max():.1e}"
                return row

            s.row("metrics", f"ARI + NMI, {name}, jit(vmap) (n={n})", one)


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


def segmentation(s: Suite):
    """The segmentation rows (module docstring)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    from tokdyn import assignment

    scenes, side = (64, 16) if s.args.smoke else (10_000, 32)
    calls = 16 if s.args.smoke else 1000
    masks, preds = sprite_scenes(scenes, side)
    ious = iou_matrices(masks, preds)
    size = f"{scenes:,} scenes of {side} x {side}"
    ref = {}

    def sk_fg():
        row, out = loop_rate(
            lambda i: adjusted_rand_score(masks[i][masks[i] > 0], preds[i][masks[i] > 0]),
            range(scenes),
            calls,
            "scenes/s",
            size,
        )
        ref["fg_ari"] = np.asarray(out)
        return row

    s.row("metrics", "fg_ari, scikit-learn on the foreground, a loop", sk_fg)
    bounded = jax.vmap(functools.partial(metrics.fg_ari, n_true=SEG_TRUE, n_pred=SEG_PRED))
    for name, fn in (("contingency", bounded), ("sort", jax.vmap(metrics.fg_ari))):

        def one(fn=fn):
            row, out = compiled_rate(s, fn, (masks, preds), scenes, "scenes/s", size)
            if "fg_ari" in ref:
                row["agreement"] = (
                    f"max |diff| from scikit-learn {np.abs(out[: len(ref['fg_ari'])] - ref['fg_ari']).max():.1e}"
                )
            return row

        s.row("metrics", f"fg_ari, {name} path, jit(vmap)", one)

    def lsa():
        row, out = loop_rate(lambda b: linear_sum_assignment(b, maximize=True)[1], ious, scenes, "matrices/s", size)
        ref["lsa"] = np.array([b[np.arange(len(c)), c].sum() for b, c in zip(ious.astype(np.float64), out)])
        return row

    s.row("metrics", "SciPy linear_sum_assignment, 5 x 5 IoU matrices, a loop", lsa)

    def auction():
        row, cols = compiled_rate(s, jax.vmap(assignment.linear_assignment), (ious,), scenes, "matrices/s", size)
        if "lsa" in ref:
            got = np.take_along_axis(ious.astype(np.float64), cols[:, :, None].astype(np.int64), 2)[:, :, 0].sum(1)
            row["agreement"] = f"optimal total minus the auction's, max {np.abs(ref['lsa'] - got).max():.1e}"
        return row

    s.row("metrics", "linear_assignment (auction), 5 x 5 IoU matrices, jit(vmap)", auction)

    def host():
        row, out = loop_rate(
            lambda i: metrics.matched_iou_host(masks[i], preds[i], n_true=SEG_TRUE, n_pred=SEG_PRED),
            range(scenes),
            calls,
            "scenes/s",
            size,
        )
        ref["miou"] = np.asarray(out)
        return row

    s.row("metrics", "matched_iou_host (NumPy + SciPy), a loop", host)

    def miou():
        fn = jax.vmap(functools.partial(metrics.matched_iou, n_true=SEG_TRUE, n_pred=SEG_PRED))
        row, out = compiled_rate(s, fn, (masks, preds), scenes, "scenes/s", size)
        if "miou" in ref:
            row["agreement"] = (
                f"max |diff| from matched_iou_host {np.abs(out[: len(ref['miou'])] - ref['miou']).max():.1e}"
            )
        return row

    s.row("metrics", "matched_iou, end to end, jit(vmap)", miou)


def run(s: Suite):
    """Every metrics row (module docstring)."""
    labelings(s)
    segmentation(s)
