"""A slow, obviously-correct float64 NumPy reference for the token update rule.

Written for reading, not for speed: one run at a time, explicit loops over points and tokens,
every quantity named as in the rule. The fast implementations (the JAX core and the benchmark
peers) are checked against it.

The rule, for points ``x_i`` (only the valid ones when a mask is given) and tokens ``t_j``, with
temperature ``tau``, momentum ``beta`` and repulsion ``gamma``; the velocity ``v`` starts at 0.
Each step:

1. ``a_ij = softmax_j(-||x_i - t_j||^2 / tau)`` (max-subtracted); masked points get ``a_ij = 0``.
2. ``m_j = sum_i a_ij x_i / (sum_i a_ij + 1e-8)``.
3. ``f_j = m_j - t_j + gamma * sum_{k != j} (t_j - t_k) / r_jk^3`` with
   ``r_jk = max(||t_j - t_k||, 1e-3)``, so exactly coincident tokens exert zero force.
4. ``v_j <- beta v_j + f_j``; ``t_j <- t_j + v_j``.
5. ``Delta = max |v|`` over all tokens and coordinates. The run converges at the first step ``s``
   (1-based) with ``Delta < tol``: that step is applied, the run stops, ``steps = s``. Otherwise
   ``steps = n_steps`` and ``converged = False``.
6. Hard labels ``argmin_j ||x_i - t_j||^2`` at the final tokens (first index on ties); masked
   points get label -1.
"""

from __future__ import annotations

import numpy as np

MASS_EPS = 1e-8  # added to the soft mass of a token in step 2
MIN_DISTANCE = 1e-3  # floor on token-token distances in the repulsion term


def _valid_mask(mask, n_points: int) -> np.ndarray:
    if mask is None:
        return np.ones(n_points, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (n_points,):
        raise ValueError(f"mask must have shape ({n_points},), got {mask.shape}")
    return mask


def squared_distance(p: np.ndarray, q: np.ndarray) -> float:
    diff = p - q
    return float(np.dot(diff, diff))


def reference_assignments(x, tokens, temperature, mask=None) -> np.ndarray:
    """Soft assignments ``a`` of shape (N, T); rows of masked points are zero."""
    x = np.asarray(x, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    n_points, n_tokens = len(x), len(tokens)
    valid = _valid_mask(mask, n_points)
    a = np.zeros((n_points, n_tokens))
    for i in range(n_points):
        if not valid[i]:
            continue
        logits = np.array([-squared_distance(x[i], tokens[j]) / temperature for j in range(n_tokens)])
        weights = np.exp(logits - logits.max())
        a[i] = weights / weights.sum()
    return a


def reference_repulsion(tokens, repulsion) -> np.ndarray:
    """``gamma * sum_{k != j} (t_j - t_k) / max(||t_j - t_k||, 1e-3)^3`` for every token j."""
    tokens = np.asarray(tokens, dtype=np.float64)
    force = np.zeros_like(tokens)
    for j in range(len(tokens)):
        for k in range(len(tokens)):
            if k == j:
                continue
            diff = tokens[j] - tokens[k]
            r = max(float(np.sqrt(np.dot(diff, diff))), MIN_DISTANCE)
            force[j] += diff / r**3
    return repulsion * force


def reference_force(x, tokens, temperature, repulsion, mask=None) -> np.ndarray:
    """The force ``f`` (T, D) of step 3: pull towards the soft means plus repulsion."""
    x = np.asarray(x, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    a = reference_assignments(x, tokens, temperature, mask)
    force = np.zeros_like(tokens)
    for j in range(len(tokens)):
        mass = a[:, j].sum()
        soft_mean = (a[:, j, None] * x).sum(axis=0) / (mass + MASS_EPS)
        force[j] = soft_mean - tokens[j]
    return force + reference_repulsion(tokens, repulsion)


def reference_labels(x, tokens, mask=None) -> np.ndarray:
    """Nearest token of every valid point (first index on ties); -1 for masked points."""
    x = np.asarray(x, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    valid = _valid_mask(mask, len(x))
    labels = np.full(len(x), -1, dtype=np.int64)
    for i in range(len(x)):
        if valid[i]:
            labels[i] = int(np.argmin([squared_distance(x[i], t) for t in tokens]))
    return labels


def reference_run(x, tokens, temperature, momentum, repulsion, mask=None, n_steps=30, tol=1e-3) -> dict:
    """One run of the rule from initial ``tokens`` (T, D) on points ``x`` (N, D).

    Returns a dict with the final ``tokens`` (T, D) and ``velocity`` (T, D), the hard ``labels``
    (N,), ``steps`` (int), ``converged`` (bool) and the ``trajectory`` (n_steps + 1, T, D): the
    initial tokens followed by the tokens after every step, the final tokens repeated after
    convergence.
    """
    x = np.asarray(x, dtype=np.float64)
    tokens = np.array(tokens, dtype=np.float64)  # a copy: we update it in place
    velocity = np.zeros_like(tokens)
    trajectory = np.empty((n_steps + 1,) + tokens.shape)
    trajectory[0] = tokens

    steps, converged = n_steps, False
    for step in range(1, n_steps + 1):
        force = reference_force(x, tokens, temperature, repulsion, mask)
        velocity = momentum * velocity + force
        tokens = tokens + velocity
        trajectory[step] = tokens
        delta = np.abs(velocity).max()
        if delta < tol:
            steps, converged = step, True
            trajectory[step + 1 :] = tokens
            break

    return dict(
        tokens=tokens,
        velocity=velocity,
        labels=reference_labels(x, tokens, mask),
        steps=steps,
        converged=converged,
        trajectory=trajectory,
    )


def reference_collapsed(labels, n_tokens, n_true, mask=None) -> bool:
    """True when fewer than ``min(n_true, n_tokens)`` tokens own at least one valid point."""
    labels = np.asarray(labels)
    valid = _valid_mask(mask, len(labels)) & (labels >= 0)
    used = set(int(label) for label in labels[valid])
    return len(used) < min(int(n_true), int(n_tokens))


def reference_sse(x, labels, tokens, mask=None) -> float:
    """Sum over valid points of the squared distance to the token they are labelled with."""
    x = np.asarray(x, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    labels = np.asarray(labels)
    valid = _valid_mask(mask, len(x))
    total = 0.0
    for i in range(len(x)):
        if valid[i]:
            total += squared_distance(x[i], tokens[labels[i]])
    return total
