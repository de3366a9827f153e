"""What the benchmark peers (``peers.py``) share: the rule's constants and settings, the problem
they run (:func:`make_problem`), the checks of their inputs and the scores of a contingency table."""

from __future__ import annotations

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


def check_inputs(x, mask, tokens0, labels_true, n_true):
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


def class_count(labels_true, n_true) -> int:
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


def contingency_numpy(labels_true, labels, mask, n_classes, n_tokens):
    """(R, K, T) counts via one bincount over ``(run * K + true) * T + label`` of valid points."""
    n_runs = labels.shape[0]
    run = np.broadcast_to(np.arange(n_runs)[:, None], labels.shape)
    code = ((run * n_classes + labels_true) * n_tokens + labels)[mask]
    return np.bincount(code, minlength=n_runs * n_classes * n_tokens).reshape(n_runs, n_classes, n_tokens)


def empty_results(n_runs):
    return dict(
        ari=np.zeros(n_runs),
        nmi=np.zeros(n_runs),
        sse=np.zeros(n_runs),
        steps=np.zeros(n_runs, np.int64),
        converged=np.zeros(n_runs, bool),
        collapsed=np.zeros(n_runs, bool),
    )
