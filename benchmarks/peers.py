"""Benchmark peers: the token update rule written the ways other people would write it.

Every peer runs R independent runs of the same rule on the same inputs and returns the same
per-run metrics, so the benchmark can compare wall time at equal results:

    peer(x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion,
         n_steps=30, tol=1e-3) -> dict of NumPy arrays, each of shape (R,):
         ari, nmi, sse (float64), steps (int64), converged (bool), collapsed (bool)

Inputs: ``x`` (R, N, D) float32 points, ``mask`` (R, N) bool (False = padding), ``tokens0``
(R, T, D) initial tokens, ``labels_true`` (R, N) int (-1 on padding), ``n_true`` (R,) number of
true clusters per run.

The rule (tests/reference.py is the float64 oracle): soft assignments
``a_ij = softmax_j(-||x_i - t_j||^2 / tau)``, soft means ``m_j = sum_i a_ij x_i / (sum_i a_ij + 1e-8)``,
force ``f_j = m_j - t_j + gamma * sum_{k != j} (t_j - t_k) / max(||t_j - t_k||, 1e-3)^3``,
``v <- beta v + f``, ``t <- t + v``; a run stops at the first step with ``max |v| < tol``. Hard
labels are the nearest tokens at the end; a run is collapsed when fewer than ``min(K, T)`` tokens
own a valid point. ARI and NMI (arithmetic normalisation) are computed on the valid points and
follow scikit-learn's conventions, including its special cases.

Peers:
  numpy_per_run   the "published way": a Python loop over runs, float64 NumPy, sklearn metrics
  numpy_batched   float32 NumPy over all runs at once; converged runs are frozen with masks
  torch_batched   float32 PyTorch (CPU, all cores) over all runs; converged runs are dropped
                  from the working set as they finish
  numba_parallel  numba ``prange`` over runs, a tight float64 loop per run, metrics included

``torch_batched`` and ``numba_parallel`` import their package on first use and raise
``ImportError`` with a clear message when it is absent; ``available_peers()`` lists the peers that
can run here. Run this file to check that the peers agree and to see rough timings
(``python benchmarks/peers.py --runs 64 --threads 1``).

Notes for reading the numbers:
- The float64 peers agree with each other and with tests/reference.py to rounding. The float32
  peers use the GEMM form ``2 x.t - |t|^2`` (its rounding error scales with ``|x| |t|``, not with
  ``|x - t|^2``); on runs whose tokens sit near a split of a cluster the dynamics amplify it, so a
  few per cent of runs end with different labels (ARI differences up to ~0.1, means unchanged).
- torch and numba use ``os.cpu_count()`` threads (``set_threads`` changes that). On a machine
  shared with other busy processes, torch's many small multi-threaded ops can each wait for a
  descheduled thread and run tens of times slower than with one thread.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time

import numpy as np

MASS_EPS = 1e-8  # added to every token's soft mass
MIN_DISTANCE = 1e-3  # floor on token-token distances in the repulsion term

METHODS = {
    "baseline": dict(momentum=0.0, repulsion=0.0),
    "inertia": dict(momentum=0.5, repulsion=0.0),
    "repulsion": dict(momentum=0.0, repulsion=0.05),
    "inertia+repulsion": dict(momentum=0.5, repulsion=0.05),
}
TEMPERATURE = 1.0


# --------------------------------------------------------------------------- inputs


def make_problem(
    n_runs=64,
    seed=0,
    *,
    cluster_counts=(3, 4, 5),
    points_per_cluster=50,
    n_padded=250,
    dim=16,
    n_tokens=4,
    noise=(0.3, 0.9),
    box=10.0,
):
    """Random Gaussian-cluster runs, padded to ``n_padded`` points, as the peers' keyword inputs.

    Each run draws K from ``cluster_counts``, K centres uniform in ``[-box, box]^dim``, one noise
    level uniform in ``noise``, and ``n_tokens`` distinct valid points as initial tokens.
    """
    rng = np.random.default_rng(seed)
    if max(cluster_counts) * points_per_cluster > n_padded:
        raise ValueError(f"n_padded={n_padded} is smaller than the largest run")
    x = np.zeros((n_runs, n_padded, dim), np.float32)
    mask = np.zeros((n_runs, n_padded), bool)
    labels_true = np.full((n_runs, n_padded), -1, np.int64)
    n_true = np.zeros(n_runs, np.int64)
    tokens0 = np.zeros((n_runs, n_tokens, dim), np.float32)
    for r in range(n_runs):
        k = int(rng.choice(cluster_counts))
        centres = rng.uniform(-box, box, size=(k, dim))
        sigma = rng.uniform(*noise)
        labels = np.repeat(np.arange(k), points_per_cluster)
        points = centres[labels] + sigma * rng.normal(size=(len(labels), dim))
        n = len(labels)
        x[r, :n], mask[r, :n], labels_true[r, :n], n_true[r] = points, True, labels, k
        tokens0[r] = points[rng.choice(n, size=n_tokens, replace=False)]
    return dict(x=x, mask=mask, tokens0=tokens0, labels_true=labels_true, n_true=n_true)


def _check_inputs(x, mask, tokens0, labels_true, n_true):
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (R, N, D), got {x.shape}")
    n_runs, n_points, dim = x.shape
    mask = np.asarray(mask, dtype=bool)
    tokens0 = np.asarray(tokens0)
    labels_true = np.asarray(labels_true, dtype=np.int64)
    n_true = np.asarray(n_true, dtype=np.int64)
    if mask.shape != (n_runs, n_points):
        raise ValueError(f"mask must have shape {(n_runs, n_points)}, got {mask.shape}")
    if tokens0.ndim != 3 or tokens0.shape[0] != n_runs or tokens0.shape[2] != dim:
        raise ValueError(f"tokens0 must have shape ({n_runs}, T, {dim}), got {tokens0.shape}")
    if labels_true.shape != (n_runs, n_points):
        raise ValueError(f"labels_true must have shape {(n_runs, n_points)}, got {labels_true.shape}")
    if n_true.shape != (n_runs,):
        raise ValueError(f"n_true must have shape ({n_runs},), got {n_true.shape}")
    if np.any(labels_true[mask] < 0):
        raise ValueError("labels_true must be >= 0 on valid points")
    return x, mask, tokens0, labels_true, n_true


def _n_classes(labels_true, n_true) -> int:
    return int(max(n_true.max(initial=0), labels_true.max(initial=-1) + 1, 1))


# --------------------------------------------------------------------------- metrics


def scores_from_contingency(counts):
    """ARI, NMI and the number of used tokens from contingency tables ``counts`` (R, K, T).

    ``counts[r, k, j]`` is the number of valid points of run r with true class k and label j.
    Follows sklearn's adjusted_rand_score / normalized_mutual_info_score (arithmetic), including
    their special cases (identical partitions: ARI 1; one class and one cluster: NMI 1).
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=(1, 2))
    rows, cols = c.sum(axis=2), c.sum(axis=1)  # (R, K), (R, T)

    # Pair counts as in sklearn.metrics.cluster.pair_confusion_matrix (ordered pairs).
    sum_sq = (c * c).sum(axis=(1, 2))
    tp = sum_sq - n
    fp = (cols * cols).sum(axis=1) - sum_sq
    fn = (rows * rows).sum(axis=1) - sum_sq
    tn = n * n - fp - fn - sum_sq
    identical = (fn == 0) & (fp == 0)
    denominator = np.where(identical, 1.0, (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    ari = np.where(identical, 1.0, 2.0 * (tp * tn - fn * fp) / denominator)

    n_classes, n_used = (rows > 0).sum(axis=1), (cols > 0).sum(axis=1)
    safe_n = np.maximum(n, 1.0)[:, None]
    outer = rows[:, :, None] * cols[:, None, :]
    ratio = np.where(c > 0, c * safe_n[:, :, None] / np.where(c > 0, outer, 1.0), 1.0)
    mi = np.maximum((c / safe_n[:, :, None] * np.log(ratio)).sum(axis=(1, 2)), 0.0)

    def entropy(marginal):
        p = marginal / safe_n
        return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)

    normaliser = 0.5 * (entropy(rows) + entropy(cols))
    trivial = (n_classes == n_used) & (n_classes <= 1)
    no_information = (n_classes == 1) | (n_used == 1) | (mi == 0)
    nmi = np.where(trivial, 1.0, np.where(no_information, 0.0, mi / np.where(no_information, 1.0, normaliser)))
    return ari, nmi, n_used


def _contingency_numpy(labels_true, labels, mask, n_classes, n_tokens):
    """(R, K, T) counts via one bincount over ``(run * K + true) * T + label`` of valid points."""
    n_runs = labels.shape[0]
    run = np.broadcast_to(np.arange(n_runs)[:, None], labels.shape)
    code = ((run * n_classes + labels_true) * n_tokens + labels)[mask]
    return np.bincount(code, minlength=n_runs * n_classes * n_tokens).reshape(n_runs, n_classes, n_tokens)


# --------------------------------------------------------------------------- (1) NumPy, per run


def numpy_single_run(points, tokens, temperature, momentum, repulsion, n_steps, tol):
    """One run on its valid ``points`` (n, D), float64. Returns tokens, steps, converged."""
    velocity = np.zeros_like(tokens)
    for step in range(1, n_steps + 1):
        d2 = ((points[:, None, :] - tokens[None, :, :]) ** 2).sum(axis=-1)  # (n, T)
        logits = -d2 / temperature
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        a = weights / weights.sum(axis=1, keepdims=True)
        means = (a.T @ points) / (a.sum(axis=0)[:, None] + MASS_EPS)
        force = means - tokens
        if repulsion != 0.0:
            diff = tokens[:, None, :] - tokens[None, :, :]  # (T, T, D)
            r = np.maximum(np.sqrt((diff**2).sum(axis=-1)), MIN_DISTANCE)
            force += repulsion * (diff / r[..., None] ** 3).sum(axis=1)
        velocity = momentum * velocity + force
        tokens = tokens + velocity
        if np.abs(velocity).max() < tol:
            return tokens, step, True
    return tokens, n_steps, False


def numpy_one_run(points, labels_true, tokens0, n_true, *, temperature, momentum, repulsion, n_steps=30, tol=1e-3):
    """One run on its valid ``points`` (float64): the rule, then sklearn ARI/NMI, SSE, steps,
    converged and collapsed, as a dict of scalars."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    tokens, steps, converged = numpy_single_run(points, tokens0, temperature, momentum, repulsion, n_steps, tol)
    d2 = ((points[:, None, :] - tokens[None, :, :]) ** 2).sum(axis=-1)
    labels = d2.argmin(axis=1)
    return dict(
        ari=adjusted_rand_score(labels_true, labels),
        nmi=normalized_mutual_info_score(labels_true, labels),
        sse=d2[np.arange(len(points)), labels].sum(),
        steps=steps,
        converged=converged,
        collapsed=len(np.unique(labels)) < min(int(n_true), len(tokens0)),
    )


def numpy_per_run(x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion, n_steps=30, tol=1e-3):
    """A Python loop over runs; float64 NumPy within a run; sklearn metrics on the valid points."""
    x, mask, tokens0, labels_true, n_true = _check_inputs(x, mask, tokens0, labels_true, n_true)
    out = _empty_results(x.shape[0])
    for r in range(x.shape[0]):
        res = numpy_one_run(
            x[r][mask[r]].astype(np.float64),
            labels_true[r][mask[r]],
            tokens0[r].astype(np.float64),
            n_true[r],
            temperature=temperature,
            momentum=momentum,
            repulsion=repulsion,
            n_steps=n_steps,
            tol=tol,
        )
        for k, v in res.items():
            out[k][r] = v
    return out


def _empty_results(n_runs):
    return dict(
        ari=np.zeros(n_runs),
        nmi=np.zeros(n_runs),
        sse=np.zeros(n_runs),
        steps=np.zeros(n_runs, np.int64),
        converged=np.zeros(n_runs, bool),
        collapsed=np.zeros(n_runs, bool),
    )


# --------------------------------------------------------------------------- (2) NumPy, batched


def numpy_batched(x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion, n_steps=30, tol=1e-3):
    """All runs at once in float32 NumPy; converged runs are frozen with masks until all are done.

    Distances use the GEMM form ``|x|^2 - 2 x.t + |t|^2`` (without the per-point ``|x|^2``).
    """
    x, mask, tokens0, labels_true, n_true = _check_inputs(x, mask, tokens0, labels_true, n_true)
    n_runs, n_tokens = x.shape[0], tokens0.shape[1]
    f32 = np.float32
    x = np.where(mask[..., None], x, 0).astype(f32)  # (R, N, D), padding zeroed
    x_cols = np.ascontiguousarray(x.transpose(0, 2, 1))  # (R, D, N): points on the minor axis
    weight = mask.astype(f32)  # (R, N)
    tokens = tokens0.astype(f32).copy()  # (R, T, D)
    velocity = np.zeros_like(tokens)
    tau, beta, gamma = f32(temperature), f32(momentum), f32(repulsion)

    def logits_of(tokens):
        """-||x - t||^2 up to a per-point constant (which the softmax and argmax ignore): (R, T, N)."""
        return 2 * np.matmul(tokens, x_cols) - (tokens * tokens).sum(-1)[:, :, None]

    active = np.ones(n_runs, bool)
    steps = np.full(n_runs, n_steps, np.int64)
    converged = np.zeros(n_runs, bool)
    for step in range(1, n_steps + 1):
        # The (R, N, T) assignments are stored as (R, T, N): reductions over the few tokens
        # become elementwise operations along the long points axis.
        logits = logits_of(tokens) / tau
        logits -= logits.max(axis=1, keepdims=True)
        a = np.exp(logits)
        a *= (weight / a.sum(axis=1))[:, None, :]  # softmax over tokens, 0 for padding
        means = np.matmul(a, x) / (a.sum(axis=2)[..., None] + f32(MASS_EPS))  # (R, T, D)
        force = means - tokens
        if gamma != 0:
            diff = tokens[:, :, None, :] - tokens[:, None, :, :]  # (R, T, T, D)
            r = np.maximum(np.sqrt((diff * diff).sum(-1)), f32(MIN_DISTANCE))
            force += gamma * (diff / (r * r * r)[..., None]).sum(axis=2)
        new_velocity = beta * velocity + force
        live = active[:, None, None]
        velocity = np.where(live, new_velocity, velocity)
        tokens = np.where(live, tokens + new_velocity, tokens)
        done = active & (np.abs(new_velocity).max(axis=(1, 2)) < tol)
        steps[done], converged[done] = step, True
        active &= ~done
        if not active.any():
            break

    labels = logits_of(tokens).argmax(axis=1)  # (R, N): the nearest token, first on ties
    nearest = np.take_along_axis(tokens, labels[..., None], axis=1)  # (R, N, D)
    sse = (((x - nearest) ** 2).sum(-1).astype(np.float64) * mask).sum(axis=1)
    counts = _contingency_numpy(labels_true, labels, mask, _n_classes(labels_true, n_true), n_tokens)
    ari, nmi, n_used = scores_from_contingency(counts)
    return dict(
        ari=ari, nmi=nmi, sse=sse, steps=steps, converged=converged, collapsed=n_used < np.minimum(n_true, n_tokens)
    )


# --------------------------------------------------------------------------- (3) PyTorch, batched

_TORCH_THREADS = None  # None: os.cpu_count(); see set_threads()


def _import_torch():
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the torch_batched peer needs PyTorch: pip install torch") from err
    wanted = _TORCH_THREADS or os.cpu_count() or 1
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch


def torch_batched(x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion, n_steps=30, tol=1e-3):
    """All runs at once in float32 PyTorch on the CPU.

    Converged runs record their tokens and leave the working set: it is re-gathered whenever it
    has shrunk by a quarter, so late steps only pay for the runs still moving.
    """
    torch = _import_torch()
    x, mask, tokens0, labels_true, n_true = _check_inputs(x, mask, tokens0, labels_true, n_true)
    n_runs, n_tokens = x.shape[0], tokens0.shape[1]
    with torch.inference_mode():
        mask_t = torch.from_numpy(mask)
        x_all = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).masked_fill(~mask_t[..., None], 0.0)
        cols_all = x_all.transpose(1, 2).contiguous()  # (R, D, N): points on the minor axis
        weight_all = mask_t.to(torch.float32)  # (R, N)
        final = torch.from_numpy(np.array(tokens0, dtype=np.float32))  # (R, T, D), filled as runs stop
        steps = torch.full((n_runs,), n_steps, dtype=torch.int64)
        converged = torch.zeros(n_runs, dtype=torch.bool)

        def logits_of(tokens, cols):
            """-||x - t||^2 up to a per-point constant: 2 t.x - |t|^2, shape (W, T, N)."""
            tt = tokens.square().sum(-1)[:, :, None]
            return torch.baddbmm(tt, tokens, cols, beta=-1.0, alpha=2.0)

        # Working set: the runs in it, their data and their state. The (W, N, T) assignments are
        # stored as (W, T, N), so the softmax over tokens runs along the long points axis.
        index = torch.arange(n_runs)
        cols, weight, tokens = cols_all, weight_all, final.clone()
        velocity = torch.zeros_like(tokens)
        active = torch.ones(n_runs, dtype=torch.bool)
        for step in range(1, n_steps + 1):
            a = torch.softmax(logits_of(tokens, cols).div_(temperature), dim=1).mul_(weight[:, None, :])
            mass = a.sum(dim=2)  # (W, T)
            force = torch.bmm(a, cols.transpose(1, 2)).div_(mass[..., None] + MASS_EPS).sub_(tokens)
            if repulsion != 0.0:
                diff = tokens[:, :, None, :] - tokens[:, None, :, :]  # (W, T, T, D)
                r = diff.square().sum(-1).sqrt_().clamp_(min=MIN_DISTANCE)
                force.add_((diff / (r * r * r)[..., None]).sum(dim=2), alpha=repulsion)
            velocity = velocity.mul_(momentum).add_(force) if momentum != 0.0 else force
            tokens = tokens + velocity
            done = active & (velocity.abs().amax(dim=(1, 2)) < tol)
            if bool(done.any()):
                finished = index[done]
                final[finished], steps[finished], converged[finished] = tokens[done], step, True
                active &= ~done
                n_active = int(active.sum())
                if n_active == 0:
                    break
                if n_active <= 0.75 * len(index):  # shrink the working set
                    index, cols, weight = index[active], cols[active], weight[active]
                    tokens, velocity = tokens[active], velocity[active]
                    active = torch.ones(n_active, dtype=torch.bool)
        if bool(active.any()):  # runs that used all n_steps
            final[index[active]] = tokens[active]

        labels = logits_of(final, cols_all).max(dim=1).indices  # (R, N): nearest token, first on ties
        nearest = torch.gather(final, 1, labels[..., None].expand(-1, -1, final.shape[2]))  # (R, N, D)
        sse = ((x_all - nearest).square().sum(-1).to(torch.float64) * mask_t).sum(dim=1)

        n_classes = _n_classes(labels_true, n_true)
        run = torch.arange(n_runs)[:, None]
        code = ((run * n_classes + torch.from_numpy(labels_true)) * n_tokens + labels)[mask_t]
        counts = torch.bincount(code, minlength=n_runs * n_classes * n_tokens).reshape(n_runs, n_classes, n_tokens)
    ari, nmi, n_used = scores_from_contingency(counts.numpy())
    return dict(
        ari=ari,
        nmi=nmi,
        sse=sse.numpy(),
        steps=steps.numpy(),
        converged=converged.numpy(),
        collapsed=n_used < np.minimum(n_true, n_tokens),
    )


# --------------------------------------------------------------------------- (4) numba, parallel

_NUMBA_KERNEL = None


def _numba_kernel():
    """Compile (once) and return the numba kernel over all runs."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is not None:
        return _NUMBA_KERNEL
    try:
        import numba
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the numba_parallel peer needs numba: pip install numba") from err
    njit, prange = numba.njit, numba.prange

    @njit(cache=False, fastmath=False, error_model="numpy")
    def run_one(x, valid, tokens, temperature, momentum, repulsion, n_steps, tol, labels):
        """Run the rule in place on ``tokens`` (T, D) float64; fill ``labels``; return steps, converged.

        The valid points are copied once to float64 in two layouts: ``columns`` (D, n) makes the
        distance loop run along the points (vectorisable without reassociation), ``rows`` (n, D)
        does the same for the soft-mean accumulation.
        """
        n_points, dim = x.shape
        n_tokens = tokens.shape[0]
        n = 0
        for i in range(n_points):
            n += 1 if valid[i] else 0
        rows, columns = np.empty((n, dim)), np.empty((dim, n))
        k = 0
        for i in range(n_points):
            if valid[i]:
                for d in range(dim):
                    rows[k, d] = columns[d, k] = x[i, d]
                k += 1

        assign = np.empty((n_tokens, n))  # squared distances, then soft assignments
        weights = np.empty(n_tokens)
        sums, mass = np.empty((n_tokens, dim)), np.empty(n_tokens)
        velocity, push = np.zeros((n_tokens, dim)), np.empty(dim)
        steps, converged = n_steps, False
        for step in range(1, n_steps + 1):
            for j in range(n_tokens):
                row = assign[j]
                row[:] = 0.0
                for d in range(dim):
                    t_jd, column = tokens[j, d], columns[d]
                    for i in range(n):
                        diff = column[i] - t_jd
                        row[i] += diff * diff

            sums[:] = 0.0
            mass[:] = 0.0
            for i in range(n):
                # softmax over tokens of -d2 / tau, shifted so that the nearest token has logit 0;
                # exp(z) for z <= -708 is below the smallest normal double, so it is taken as 0
                # (it cannot change a sum that contains exp(0) = 1, and it avoids libm's slow path)
                nearest = assign[0, i]
                for j in range(1, n_tokens):
                    nearest = min(nearest, assign[j, i])
                total = 0.0
                for j in range(n_tokens):
                    z = (nearest - assign[j, i]) / temperature
                    weights[j] = math.exp(z) if z > -708.0 else 0.0
                    total += weights[j]
                inv_total = 1.0 / total
                for j in range(n_tokens):
                    a = weights[j] * inv_total
                    mass[j] += a
                    for d in range(dim):
                        sums[j, d] += a * rows[i, d]

            delta = 0.0
            for j in range(n_tokens):
                push[:] = 0.0
                if repulsion != 0.0:
                    for k in range(n_tokens):
                        if k == j:
                            continue
                        r2 = 0.0
                        for d in range(dim):
                            diff = tokens[j, d] - tokens[k, d]
                            r2 += diff * diff
                        r = max(math.sqrt(r2), MIN_DISTANCE)
                        r3 = r * r * r
                        for d in range(dim):
                            push[d] += (tokens[j, d] - tokens[k, d]) / r3
                for d in range(dim):
                    force = sums[j, d] / (mass[j] + MASS_EPS) - tokens[j, d] + repulsion * push[d]
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
                dist = 0.0
                for d in range(dim):
                    diff = np.float64(x[i, d]) - tokens[j, d]
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
            tokens = tokens0[r].astype(np.float64)
            labels = np.empty(n_points, np.int64)
            steps[r], converged[r] = run_one(
                x[r], mask[r], tokens, temperature, momentum, repulsion, n_steps, tol, labels
            )
            sse[r], ari[r], nmi[r], n_used = score_one(x[r], mask[r], tokens, labels_true[r], labels, n_classes)
            collapsed[r] = n_used < min(n_true[r], n_tokens)
        return ari, nmi, sse, steps, converged, collapsed

    _NUMBA_KERNEL = run_all
    return run_all


def numba_parallel(x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion, n_steps=30, tol=1e-3):
    """numba ``prange`` over runs; each run is a tight float64 loop that stops when it converges."""
    kernel = _numba_kernel()
    x, mask, tokens0, labels_true, n_true = _check_inputs(x, mask, tokens0, labels_true, n_true)
    ari, nmi, sse, steps, converged, collapsed = kernel(
        np.ascontiguousarray(x, dtype=np.float32),
        np.ascontiguousarray(mask),
        np.ascontiguousarray(tokens0, dtype=np.float64),
        np.ascontiguousarray(labels_true),
        np.ascontiguousarray(n_true),
        _n_classes(labels_true, n_true),
        float(temperature),
        float(momentum),
        float(repulsion),
        int(n_steps),
        float(tol),
    )
    return dict(ari=ari, nmi=nmi, sse=sse, steps=steps, converged=converged, collapsed=collapsed)


# --------------------------------------------------------------------------- registry

PEERS = {
    "numpy_per_run": numpy_per_run,
    "numpy_batched": numpy_batched,
    "torch_batched": torch_batched,
    "numba_parallel": numba_parallel,
}
_NEEDS = {"numpy_per_run": "sklearn", "torch_batched": "torch", "numba_parallel": "numba"}


def available_peers():
    """Names of the peers whose packages are installed here, in ``PEERS`` order."""
    return [name for name in PEERS if name not in _NEEDS or importlib.util.find_spec(_NEEDS[name]) is not None]


def set_threads(n_threads):
    """Use ``n_threads`` threads in the torch and numba peers (default: ``os.cpu_count()``)."""
    global _TORCH_THREADS
    _TORCH_THREADS = int(n_threads)
    if importlib.util.find_spec("torch") is not None:
        _import_torch()
    if importlib.util.find_spec("numba") is not None:
        import numba

        numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))


# --------------------------------------------------------------------------- self-check


def _self_check(n_runs=64, seed=0):
    """Run every available peer on one random problem for each method; print agreement and time."""
    problem = make_problem(n_runs=n_runs, seed=seed)
    names = available_peers()
    missing = [name for name in PEERS if name not in names]
    _, n_points, dim = problem["x"].shape
    n_tokens = problem["tokens0"].shape[1]
    print(f"R={n_runs} runs, N={n_points} (padded), D={dim}, T={n_tokens}, K in {{3,4,5}}, seed={seed}")
    print(f"peers: {', '.join(names)}" + (f"   (not available: {', '.join(missing)})" if missing else ""))

    warm = make_problem(n_runs=4, seed=seed + 1)  # compile / warm up outside the timings
    for name in names:
        t0 = time.perf_counter()
        PEERS[name](**warm, temperature=TEMPERATURE, **METHODS["inertia+repulsion"])
        print(f"  first call of {name}: {time.perf_counter() - t0:.2f} s")

    base = names[0]
    print(f"agreement with {base}: fraction of runs with equal steps / converged / collapsed flags,")
    print("fraction with |dARI| < 1e-6, and the largest and mean |dARI|, largest |dNMI|, median relative dSSE")
    header = (
        f"{'method':18s} {'peer':15s} {'us/run':>8s} {'steps=':>7s} {'conv=':>6s} {'coll=':>6s} {'ARI=':>6s}"
        f" {'dARI max':>9s} {'dARI mean':>9s} {'dNMI max':>9s} {'dSSE med':>9s} {'ARI':>7s} {'steps':>6s}"
    )
    print(header)
    print("-" * len(header))
    for method, params in METHODS.items():
        results = {}
        for name in names:
            t0 = time.perf_counter()
            res = results[name] = PEERS[name](**problem, temperature=TEMPERATURE, **params)
            elapsed = time.perf_counter() - t0
            ref = results[base]
            d_ari = np.abs(res["ari"] - ref["ari"])
            d_nmi = np.abs(res["nmi"] - ref["nmi"])
            d_sse = np.abs(res["sse"] - ref["sse"]) / ref["sse"]
            print(
                f"{method:18s} {name:15s} {1e6 * elapsed / n_runs:8.1f}"
                f" {np.mean(res['steps'] == ref['steps']):7.3f} {np.mean(res['converged'] == ref['converged']):6.3f}"
                f" {np.mean(res['collapsed'] == ref['collapsed']):6.3f} {np.mean(d_ari < 1e-6):6.3f}"
                f" {d_ari.max():9.2e} {d_ari.mean():9.2e} {d_nmi.max():9.2e} {np.median(d_sse):9.1e}"
                f" {res['ari'].mean():7.4f} {res['steps'].mean():6.2f}"
            )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and numba (default: all cores)")
    args = parser.parse_args()
    if args.threads is not None:
        set_threads(args.threads)
    _self_check(n_runs=args.runs, seed=args.seed)
