"""The NumPy peers of ``peers.py``: ``numpy_per_run`` (the published way: a Python loop over runs,
float64, scikit-learn's metrics) and ``numpy_batched`` (float32 over all runs at once)."""

from __future__ import annotations

import numpy as np
from peers_common import (
    MASS_EPS,
    MIN_DISTANCE,
    check_inputs,
    class_count,
    contingency_numpy,
    empty_results,
    scores_from_contingency,
)


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
    x, mask, tokens0, labels_true, n_true = check_inputs(x, mask, tokens0, labels_true, n_true)
    out = empty_results(x.shape[0])
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


def numpy_batched(x, mask, tokens0, labels_true, n_true, *, temperature, momentum, repulsion, n_steps=30, tol=1e-3):
    """All runs at once in float32 NumPy; converged runs are frozen with masks until all are done.

    Distances use the GEMM form ``|x|^2 - 2 x.t + |t|^2`` (without the per-point ``|x|^2``).
    """
    x, mask, tokens0, labels_true, n_true = check_inputs(x, mask, tokens0, labels_true, n_true)
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
    counts = contingency_numpy(labels_true, labels, mask, class_count(labels_true, n_true), n_tokens)
    ari, nmi, n_used = scores_from_contingency(counts)
    return dict(
        ari=ari, nmi=nmi, sse=sse, steps=steps, converged=converged, collapsed=n_used < np.minimum(n_true, n_tokens)
    )
