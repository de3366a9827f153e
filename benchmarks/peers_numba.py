"""The numba peer of ``peers.py``: ``numba_parallel`` (``prange`` over runs, a tight loop per run,
metrics included), in float32 by default, tokdyn's dtype (``dtype=np.float64`` for the float64
form: its points, tokens, scores and forces in float64; the contingency tables' counts and the
metrics are float64 in both)."""

from __future__ import annotations

import math

import numpy as np
from peers_common import (
    MASS_EPS,
    MIN_DISTANCE,
    check_inputs,
    class_count,
)

_NUMBA_KERNELS = {}


def _numba_kernel(dtype=np.float32):
    """Compile (once per dtype) and return the numba kernel over all runs, whose per-run loop holds
    its points, tokens, scores, soft assignments, forces and constants in ``dtype``.

    Longer than 60 lines on purpose: numba is imported on first use (the module imports without
    it), so the kernel's ``@njit`` functions are defined here, in one place, as a numba user would
    write the peer; each of them is a function of its own below."""
    dtype = np.dtype(dtype).type
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"numba_parallel: dtype={dtype!r}; allowed: numpy.float32 or numpy.float64")
    if dtype in _NUMBA_KERNELS:
        return _NUMBA_KERNELS[dtype]
    try:
        import numba
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the numba_parallel peer needs numba: pip install numba") from err
    njit, prange = numba.njit, numba.prange
    fl = dtype  # a compile-time constant of the closures below: the per-run loop's float type
    zero, mass_eps, min_distance = fl(0.0), fl(MASS_EPS), fl(MIN_DISTANCE)
    # exp(z) below this is under the dtype's smallest normal number (z < -708 in float64, -87 in
    # float32): taken as 0
    exp_floor = fl(np.log(np.finfo(dtype).tiny))

    @njit(cache=False, fastmath=False, error_model="numpy")
    def run_one(x, valid, tokens, temperature, momentum, repulsion, n_steps, tol, labels):
        """Run the rule in place on ``tokens`` (T, D) of the dtype; fill ``labels``; return steps, converged.

        The valid points are copied once to the dtype in two layouts: ``columns`` (D, n) makes the
        distance loop run along the points (vectorisable without reassociation), ``rows`` (n, D)
        does the same for the soft-mean accumulation.

        One loop nest on purpose: the peer is the tight per-run loop a numba user writes
        (scores, soft means, forces and the stop test of a step in one pass over the points),
        which is what the benchmark times.
        """
        n_points, dim = x.shape
        n_tokens = tokens.shape[0]
        n = 0
        for i in range(n_points):
            n += 1 if valid[i] else 0
        rows, columns = np.empty((n, dim), fl), np.empty((dim, n), fl)
        k = 0
        for i in range(n_points):
            if valid[i]:
                for d in range(dim):
                    rows[k, d] = columns[d, k] = x[i, d]
                k += 1

        assign = np.empty((n_tokens, n), fl)  # squared distances, then soft assignments
        weights = np.empty(n_tokens, fl)
        sums, mass = np.empty((n_tokens, dim), fl), np.empty(n_tokens, fl)
        velocity, push = np.zeros((n_tokens, dim), fl), np.empty(dim, fl)
        steps, converged = n_steps, False
        for step in range(1, n_steps + 1):
            for j in range(n_tokens):
                row = assign[j]
                row[:] = zero
                for d in range(dim):
                    t_jd, column = tokens[j, d], columns[d]
                    for i in range(n):
                        diff = column[i] - t_jd
                        row[i] += diff * diff

            sums[:] = zero
            mass[:] = zero
            for i in range(n):
                # softmax over tokens of -d2 / tau, shifted so that the nearest token has logit 0;
                # exp(z) below exp_floor is below the dtype's smallest normal number, so it is taken
                # as 0 (it cannot change a sum that contains exp(0) = 1, and it avoids libm's slow path)
                nearest = assign[0, i]
                for j in range(1, n_tokens):
                    nearest = min(nearest, assign[j, i])
                total = zero
                for j in range(n_tokens):
                    z = (nearest - assign[j, i]) / temperature
                    weights[j] = math.exp(z) if z > exp_floor else zero
                    total += weights[j]
                inv_total = fl(1.0) / total
                for j in range(n_tokens):
                    a = weights[j] * inv_total
                    mass[j] += a
                    for d in range(dim):
                        sums[j, d] += a * rows[i, d]

            delta = zero
            for j in range(n_tokens):
                push[:] = zero
                if repulsion != zero:
                    for k in range(n_tokens):
                        if k == j:
                            continue
                        r2 = zero
                        for d in range(dim):
                            diff = tokens[j, d] - tokens[k, d]
                            r2 += diff * diff
                        r = max(math.sqrt(r2), min_distance)
                        r3 = r * r * r
                        for d in range(dim):
                            push[d] += (tokens[j, d] - tokens[k, d]) / r3
                for d in range(dim):
                    force = sums[j, d] / (mass[j] + mass_eps) - tokens[j, d] + repulsion * push[d]
                    velocity[j, d] = momentum * velocity[j, d] + force
                    delta = max(delta, abs(velocity[j, d]))
            # Move the tokens only once every force has been computed from the old positions.
            for j in range(n_tokens):
                for d in range(dim):
                    tokens[j, d] += velocity[j, d]
            if delta < tol:
                steps, converged = step, True
                break

        for i in range(n_points):
            if not valid[i]:
                labels[i] = -1
                continue
            best, best_d2 = 0, np.inf
            for j in range(n_tokens):
                dist = zero
                for d in range(dim):
                    diff = fl(x[i, d]) - tokens[j, d]
                    dist += diff * diff
                if dist < best_d2:
                    best, best_d2 = j, dist
            labels[i] = best
        return steps, converged

    @njit(cache=False, fastmath=False, error_model="numpy")
    def score_one(x, valid, tokens, true, labels, n_classes):
        """SSE, ARI, NMI (sklearn conventions) and the number of used tokens of one run."""
        n_tokens, dim = tokens.shape
        table = np.zeros((n_classes, n_tokens))
        sse = 0.0
        for i in range(x.shape[0]):
            if valid[i]:
                table[true[i], labels[i]] += 1.0
                for d in range(dim):
                    diff = np.float64(x[i, d]) - tokens[labels[i], d]
                    sse += diff * diff
        rows, cols = table.sum(axis=1), table.sum(axis=0)
        n = rows.sum()
        sum_sq = (table * table).sum()
        tp = sum_sq - n
        fp = (cols * cols).sum() - sum_sq
        fn = (rows * rows).sum() - sum_sq
        tn = n * n - fp - fn - sum_sq
        if fn == 0.0 and fp == 0.0:
            ari = 1.0
        else:
            ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))

        n_rows, n_cols = 0, 0
        h_rows, h_cols = 0.0, 0.0
        for k in range(n_classes):
            if rows[k] > 0:
                n_rows += 1
                h_rows -= rows[k] / n * math.log(rows[k] / n)
        for j in range(n_tokens):
            if cols[j] > 0:
                n_cols += 1
                h_cols -= cols[j] / n * math.log(cols[j] / n)
        if n_rows == n_cols and n_rows <= 1:
            nmi = 1.0
        elif n_rows == 1 or n_cols == 1:
            nmi = 0.0
        else:
            mi = 0.0
            for k in range(n_classes):
                for j in range(n_tokens):
                    c = table[k, j]
                    if c > 0:
                        mi += c / n * math.log(c * n / (rows[k] * cols[j]))
            mi = max(mi, 0.0)
            nmi = 0.0 if mi == 0.0 else mi / (0.5 * (h_rows + h_cols))
        return sse, ari, nmi, n_cols

    @njit(parallel=True, cache=False, fastmath=False, error_model="numpy")
    def run_all(x, mask, tokens0, labels_true, n_true, n_classes, temperature, momentum, repulsion, n_steps, tol):
        n_runs, n_points, _ = x.shape
        n_tokens = tokens0.shape[1]
        ari, nmi, sse = np.empty(n_runs), np.empty(n_runs), np.empty(n_runs)
        steps = np.empty(n_runs, np.int64)
        converged, collapsed = np.empty(n_runs, np.bool_), np.empty(n_runs, np.bool_)
        for r in prange(n_runs):
            tokens = tokens0[r].astype(fl)
            labels = np.empty(n_points, np.int64)
            steps[r], converged[r] = run_one(
                x[r], mask[r], tokens, temperature, momentum, repulsion, n_steps, tol, labels
            )
            sse[r], ari[r], nmi[r], n_used = score_one(x[r], mask[r], tokens, labels_true[r], labels, n_classes)
            collapsed[r] = n_used < min(n_true[r], n_tokens)
        return ari, nmi, sse, steps, converged, collapsed

    _NUMBA_KERNELS[dtype] = run_all
    return run_all


def numba_parallel(
    x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion, n_steps=30, tol=1e-3, dtype=np.float32
):
    """numba ``prange`` over runs; each run is a tight loop in ``dtype`` (float32, tokdyn's, by
    default; or float64) that stops when it converges."""
    kernel = _numba_kernel(dtype)
    fl = np.dtype(dtype).type
    x, mask, tokens0, labels_true, n_true = check_inputs(x, mask, tokens0, labels_true, n_true)
    ari, nmi, sse, steps, converged, collapsed = kernel(
        np.ascontiguousarray(x, dtype=np.float32),
        np.ascontiguousarray(mask),
        np.ascontiguousarray(tokens0, dtype=fl),
        np.ascontiguousarray(labels_true),
        np.ascontiguousarray(n_true),
        class_count(labels_true, n_true),
        fl(temperature),
        fl(momentum),
        fl(repulsion),
        int(n_steps),
        fl(tol),
    )
    return dict(ari=ari, nmi=nmi, sse=sse, steps=steps, converged=converged, collapsed=collapsed)
