"""A slow float64 NumPy reference for the extended update rules (annealing, Sinkhorn, Slot-Attention
normalisation, damping, Langevin), written independently of tokdyn for reading, not speed.

Each step ``s = 0, 1, ...`` (velocity ``v`` starts at 0):

1. temperature ``tau_s = tau * r ** max(0, 1 - s / S)`` (geometric annealing from ``r * tau``);
2. soft assignment ``a`` (N, T): softmax over tokens of ``-||x_i - t_j||^2 / tau_s``; with
   ``sinkhorn_iters > 0`` that many Sinkhorn rounds follow, each scaling every token's column to
   hold ``n / T`` points and then every point's row back to 1 (masked points: zero rows, not counted);
3. means: ``m_j = sum_i a_ij x_i / (sum_i a_ij + 1e-8)`` (slot_norm 0), or Slot Attention's
   ``a' = a + 1e-8`` on valid points, ``m_j = sum_i a'_ij x_i / sum_i a'_ij`` (slot_norm 1);
4. ``f = m - t + gamma * coulomb(t)``; ``v <- beta v + alpha f + sqrt(2 alpha T) xi_s``; ``t <- t + v``;
5. stop after the first step with ``max |v| < tol`` taken at ``s >= S``.

The Langevin noise ``xi_s`` (T, D) is supplied by the caller (the same draws as the JAX run).
"""

from __future__ import annotations

import numpy as np

from reference import reference_labels, reference_repulsion

EPS = 1e-8


def schedule(temperature, anneal_ratio, anneal_steps, n_steps):
    out = []
    for s in range(n_steps):
        frac = max(0.0, 1.0 - s / anneal_steps) if anneal_steps > 0 else 0.0
        out.append(temperature * anneal_ratio**frac)
    return np.array(out)


def softmax_rows(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sinkhorn_plan(logits, n_iters, valid):
    """(N, T) plan: softmax rows, then ``n_iters`` rounds of column scaling to n/T, row scaling to 1."""
    p = softmax_rows(np.asarray(logits, np.float64))
    p[~valid] = 0.0
    n, t = valid.sum(), p.shape[1]
    for _ in range(n_iters):
        col = p.sum(axis=0)
        p = p * np.where(col > 0, (n / t) / np.where(col > 0, col, 1.0), 1.0)[None, :]
        row = p.sum(axis=1, keepdims=True)
        p = np.where(row > 0, p / np.where(row > 0, row, 1.0), 0.0)
    return p


def means(x, a, valid, slot_norm, anchor=None):
    """(T, D) weighted means: epsilon on the mass (slot_norm 0), on every valid point's attention
    before normalising (slot_norm 1), or the linear blend of numerators and denominators. The mass
    epsilon's weight (1 - slot_norm) sits on ``anchor`` ((T, D): the tokens themselves, the
    package's default) or, None, on the origin (the published form)."""
    out = np.zeros((a.shape[1], x.shape[1]))
    for j in range(a.shape[1]):
        at = 0.0 if anchor is None else np.asarray(anchor, np.float64)[j]
        if slot_norm == 0.0:
            out[j] = ((a[:, j, None] * x).sum(0) + EPS * at) / (a[:, j].sum() + EPS)
        elif slot_norm == 1.0:
            att = np.where(valid, a[:, j] + EPS, 0.0)
            out[j] = (att[:, None] * x).sum(0) / att.sum()
        else:
            num = (a[:, j, None] * x).sum(0) + (1 - slot_norm) * EPS * at + slot_norm * EPS * x[valid].sum(0)
            out[j] = num / (a[:, j].sum() + (1 - slot_norm) * EPS + slot_norm * EPS * valid.sum())
    return out


def reference_run_rules(
    x,
    tokens,
    temperature=1.0,
    momentum=0.0,
    repulsion=0.0,
    damping=1.0,
    langevin=0.0,
    sinkhorn_iters=0,
    slot_norm=0.0,
    anneal_ratio=1.0,
    anneal_steps=0,
    mask=None,
    n_steps=30,
    tol=1e-3,
    noise=None,
) -> dict:
    """One run; ``noise`` (n_steps, T, D) standard normal draws for the Langevin kick (needed when
    ``langevin > 0``). Returns tokens, labels, steps, converged, trajectory, temperatures."""
    x = np.asarray(x, np.float64)
    t = np.array(tokens, np.float64)
    valid = np.ones(len(x), bool) if mask is None else np.asarray(mask, bool)
    v = np.zeros_like(t)
    taus = schedule(temperature, anneal_ratio, anneal_steps, n_steps)
    traj = np.empty((n_steps + 1,) + t.shape)
    traj[0] = t
    steps, converged = n_steps, False
    for s in range(n_steps):
        logits = -((x[:, None, :] - t[None, :, :]) ** 2).sum(-1) / taus[s]  # (N, T)
        if sinkhorn_iters > 0:
            a = sinkhorn_plan(logits, int(sinkhorn_iters), valid)
        else:
            a = softmax_rows(logits)
            a[~valid] = 0.0
        force = means(x, a, valid, slot_norm) - t + reference_repulsion(t, repulsion)
        v = momentum * v + damping * force
        if langevin > 0:
            v = v + np.sqrt(2 * damping * langevin) * np.asarray(noise[s], np.float64)
        t = t + v
        traj[s + 1] = t
        if np.abs(v).max() < tol and s >= anneal_steps:
            steps, converged = s + 1, True
            traj[s + 2 :] = t
            break
    return dict(
        tokens=t,
        labels=reference_labels(x, t, valid),
        steps=steps,
        converged=converged,
        trajectory=traj,
        temperatures=taus,
    )


def groups(tokens, merge_tol):
    """Single-linkage groups of tokens closer than merge_tol: number of connected components (BFS)."""
    t = np.asarray(tokens, np.float64)
    seen, count = set(), 0
    for i in range(len(t)):
        if i in seen:
            continue
        count += 1
        stack = [i]
        while stack:
            j = stack.pop()
            if j in seen:
                continue
            seen.add(j)
            stack += [k for k in range(len(t)) if k not in seen and np.linalg.norm(t[j] - t[k]) < merge_tol]
    return count
