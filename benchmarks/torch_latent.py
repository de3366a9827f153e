"""The latent reasoner written in PyTorch, as a benchmark peer of ``tokdyn.models.latent`` (never a
dependency of the package): the same decoder-only transformer (pre-LayerNorm blocks, GELU with the
tanh approximation, LayerNorm epsilon 1e-6, causal attention), the same sequence layout, the same
latent feedback with a key/value cache, and the same training step (answer cross-entropy, gradients
clipped to global norm 1, AdamW with a linear warm-up and a cosine decay to 5% of the peak).

``TorchReasoner.from_flax(cfg, params)`` copies a tokdyn model's weights, so both compute the same
logits (checked by the suite's ``peers`` rows, ``benchmarks/rows/peers.py``, and ``tests/test_latent_torch_peer.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional
from torch import nn

EPS = 1e-6  # flax.linen.LayerNorm's default


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads, self.dh = heads, width // heads
        self.ln1 = nn.LayerNorm(width, eps=EPS)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width, eps=EPS)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x, cache=None):
        """x (B, t, D) after the ``cache``d positions ((k, v), each (B, H, t_past, dh)); returns the
        output and the keys/values of every position so far."""
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)  # (3, B, H, t, dh)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        past = k.shape[2] - t
        mask = (
            torch.arange(past + t, device=x.device)[None, :] <= past + torch.arange(t, device=x.device)[:, None]
        )  # (t, t_past + t)
        o = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, d)
        x = x + self.out(o)
        x = x + self.fc2(functional.gelu(self.fc1(self.ln2(x)), approximate="tanh"))
        return x, (k, v)


class TorchReasoner(nn.Module):
    """The model of a ``tokdyn.models.latent.model.Config`` with latent mode "none" or "feedback" (the
    "layernorm" or "none" projection)."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.latent_mode not in ("none", "feedback") or cfg.projection not in ("none", "layernorm"):
            raise ValueError("the peer implements latent_mode none/feedback with projection none/layernorm")
        self.cfg, task, d = cfg, cfg.task, cfg.width
        lay = cfg.layout
        self.lay = lay
        self.tok = nn.Embedding(task.vocab.size, d)
        self.colour = nn.Embedding(task.n_colours + 1, d)
        self.row = nn.Embedding(task.grid_size, d)
        self.col = nn.Embedding(task.grid_size, d)
        self.pos = nn.Embedding(cfg.text_positions or lay.length - task.n_patches, d)
        self.blocks = nn.ModuleList([Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.ln_f = nn.LayerNorm(d, eps=EPS)
        self.head = nn.Linear(d, task.vocab.size)
        self.proj = nn.LayerNorm(d, eps=EPS) if cfg.projection == "layernorm" else nn.Identity()

    @classmethod
    def from_flax(cls, cfg, params) -> "TorchReasoner":
        """A peer holding the weights of a tokdyn model's ``params``."""
        m = cls(cfg)
        p = params["params"]
        t = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())  # noqa: E731
        with torch.no_grad():
            for name in ("tok", "colour", "row", "col", "pos"):
                getattr(m, name).weight.copy_(t(p[name]["embedding"]))
            for lin, src in [(m.head, p["head"])] + [
                (getattr(blk, n), p[f"block{i}"][n])
                for i, blk in enumerate(m.blocks)
                for n in ("qkv", "out", "fc1", "fc2")
            ]:
                lin.weight.copy_(t(src["kernel"]).T)
                lin.bias.copy_(t(src["bias"]))
            for ln, src in (
                [(m.ln_f, p["ln_f"])]
                + ([(m.proj, p["proj"])] if cfg.projection == "layernorm" else [])
                + [(getattr(blk, n), p[f"block{i}"][n]) for i, blk in enumerate(m.blocks) for n in ("ln1", "ln2")]
            ):
                ln.weight.copy_(t(src["scale"]))
                ln.bias.copy_(t(src["bias"]))
        return m

    def text_tokens(self, question, caption=None):
        cfg, v, b = self.cfg, self.cfg.task.vocab, question.shape[0]
        parts, on = [question], dict(dtype=question.dtype, device=question.device)
        if cfg.latent_mode != "none":
            parts += [
                torch.full((b, 1), v.latent_start, **on),
                torch.full((b, cfg.n_latents), v.pad, **on),
                torch.full((b, 1), v.latent_end, **on),
            ]
        if cfg.caption_len:
            parts.append(caption)
        parts.append(torch.full((b, 1), v.answer, **on))
        return torch.cat(parts, 1)

    def embed(self, image, question, caption=None):
        g = self.cfg.task.grid_size
        patches = self.colour(image) + self.row.weight[:, None] + self.col.weight[None]  # (B, G, G, D)
        tokens = self.text_tokens(question, caption)
        text = self.tok(tokens) + self.pos.weight[: tokens.shape[1]][None]
        x = torch.cat([patches.reshape(image.shape[0], g * g, -1), text], 1)
        if self.cfg.latent_mode == "feedback":
            x = x.clone()
            x[:, self.lay.latents] = 0.0
        return x

    def backbone(self, x, cache=None):
        new = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, None if cache is None else cache[i])
            new.append(kv)
        return self.ln_f(x), new

    def forward(self, image, question, caption=None, latents=None):
        """(B, T, V) logits; with latent feedback the prefix, each latent and the rest are separate
        passes over a key/value cache, as in tokdyn. ``latents`` (B, L, D) replace the fed-back
        states (one full pass, as tokdyn's ``apply(..., latents=)``)."""
        return self.run(image, question, caption, latents)[0]

    def run(self, image, question, caption=None, latents=None):
        """(logits (B, T, V), the fed-back latents (B, L, D) or None)."""
        x = self.embed(image, question, caption)
        if self.cfg.latent_mode == "none":
            return self.head(self.backbone(x)[0]), None
        if latents is not None:
            x[:, self.lay.latents] = self.proj(latents)
            return self.head(self.backbone(x)[0]), latents
        s, n = self.lay.latents.start, self.cfg.n_latents
        outs, fed, cache = [], [], None
        segments = [(0, s)] + [(s + i, s + i + 1) for i in range(n)] + [(s + n, x.shape[1])]
        for i, (a, e) in enumerate(segments):
            piece = x[:, a:e]
            if 0 < i <= n:
                fed.append(outs[-1][:, -1])
                piece = self.proj(outs[-1][:, -1:])  # latent i-1 reads the previous position's final state
            out, cache = self.backbone(piece, cache)
            outs.append(out)
        return self.head(torch.cat(outs, 1)), torch.stack(fed, 1)


def optimizer(
    model: TorchReasoner,
    *,
    learning_rate: float,
    weight_decay: float,
    warmup: int,
    steps: int,
    final_fraction: float = 0.05,
):
    """AdamW with tokdyn's schedule: linear warm-up from 0, then cosine decay to ``final_fraction``."""
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, eps=1e-8)

    def factor(step):
        if step < warmup:
            return step / warmup
        frac = min(step - warmup, steps - warmup) / (steps - warmup)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * frac))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(model: TorchReasoner, opt, sched, image, question, answer, caption=None) -> float:
    """One optimiser step on the answer cross-entropy; returns the loss."""
    logits = model(image, question, caption)[:, model.lay.answer]
    loss = functional.cross_entropy(logits, answer)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss
