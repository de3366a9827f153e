"""The PyTorch peer of ``peers.py``: ``torch_batched`` (float32 on the CPU over all runs, converged
runs dropped from the working set as they finish)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from peers_common import (
    MASS_EPS,
    MIN_DISTANCE,
    check_inputs,
    class_count,
    scores_from_contingency,
)

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
    x, mask, tokens0, labels_true, n_true = check_inputs(x, mask, tokens0, labels_true, n_true)
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

        n_classes = class_count(labels_true, n_true)
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


def set_torch_threads(n_threads) -> None:
    """Use ``n_threads`` threads in the torch peer (default: ``os.cpu_count()``)."""
    global _TORCH_THREADS
    _TORCH_THREADS = int(n_threads)
    if importlib.util.find_spec("torch") is not None:
        _import_torch()
