"""The Slot Attention autoencoder of ``tokdyn.models.slots`` written in PyTorch, as a benchmark peer
(never a dependency of the package): the same encoder (convolutions with XLA's "SAME" padding, the
last one strided by ``encoder_stride``, ReLU; the learned position embedding of the grid
``(y, x, 1 - y, 1 - x)``; LayerNorm and a two-layer MLP), the same Slot Attention (LayerNorm
epsilon 1e-6 as flax's, keys/values/queries without bias, slots ``mu + exp(log_sigma) * z``,
softmax over the slots ``+ 1e-8`` then normalised over the inputs, flax's GRUCell, a residual MLP
on LayerNorm'd slots), the same "mlp" spatial-broadcast decoder painting a ``size / decoder_stride`` grid
resized bilinearly (half-pixel centres, as ``jax.image.resize``) to the image size, the alphas
softmaxed over slots, and the same training step (mean squared error, gradients clipped to the
global norm ``clip_norm``, Adam with a linear warm-up from 0 and a cosine decay to 5% of the peak,
as ``tokdyn.train.optim``).

Images are NCHW here (the PyTorch convention; tokdyn's are NHWC). ``TorchSlots.from_flax(cfg,
params)`` copies a tokdyn model's weights and :meth:`TorchSlots.flax_tree` reads weights or
gradients back in flax's layout, so both compute the same loss (checked first by the suite's
``peers`` rows, ``benchmarks/rows/peers.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional
from torch import nn

LN_EPS = 1e-6  # flax.linen.LayerNorm's default
ATTN_EPS = 1e-8  # tokdyn.models.slots.EPS


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding of one spatial axis, ``(low, high)``: the output has ``ceil(size /
    stride)`` positions and the extra padding goes to the high side (3 x 3 kernel, stride 2, even
    size: ``(0, 1)``)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def position_grid(height: int, width: int) -> torch.Tensor:
    """(H, W, 4) ``(y, x, 1 - y, 1 - x)`` with y and x in [0, 1] (``tokdyn.models.slots.position_grid``)."""
    y, x = torch.meshgrid(torch.linspace(0.0, 1.0, height), torch.linspace(0.0, 1.0, width), indexing="ij")
    return torch.stack([y, x, 1.0 - y, 1.0 - x], dim=-1)


class SlotAttention(nn.Module):
    """Slot Attention over inputs (B, N, C) with slot noise z (B, K, D)."""

    def __init__(self, inputs: int, slot_size: int, mlp_hidden: int, iterations: int, implicit: bool = False):
        super().__init__()
        D = slot_size
        self.iterations, self.implicit, self.D = iterations, implicit, D
        self.norm_inputs = nn.LayerNorm(inputs, eps=LN_EPS)
        self.to_k = nn.Linear(inputs, D, bias=False)
        self.to_v = nn.Linear(inputs, D, bias=False)
        self.to_q = nn.Linear(D, D, bias=False)
        self.mu = nn.Parameter(torch.zeros(1, D))
        self.log_sigma = nn.Parameter(torch.zeros(1, D))
        self.norm_slots = nn.LayerNorm(D, eps=LN_EPS)
        # flax's GRUCell: the input maps (ir, iz, in) have biases, of the hidden maps (hr, hz, hn)
        # only hn has one (it sits inside the reset gate's product); fused here into one matmul each
        self.gru_i = nn.Linear(D, 3 * D)
        self.gru_h = nn.Linear(D, 3 * D, bias=False)
        self.gru_hn_bias = nn.Parameter(torch.zeros(D))
        self.norm_mlp = nn.LayerNorm(D, eps=LN_EPS)
        self.mlp_in = nn.Linear(D, mlp_hidden)
        self.mlp_out = nn.Linear(mlp_hidden, D)

    def gru(self, h, x):
        """flax.linen.GRUCell: r, z = sigmoid(W_i x + b_i + W_h h), n = tanh(W_in x + b_in + r * (W_hn h
        + b_hn)), h' = (1 - z) n + z h."""
        i_r, i_z, i_n = self.gru_i(x).chunk(3, dim=-1)
        h_r, h_z, h_n = self.gru_h(h).chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * (h_n + self.gru_hn_bias))
        return (1.0 - z) * n + z * h

    def forward(self, inputs, z):
        """``(slots (B, K, D), attention (B, N, K))``, the last iteration's attention (softmax over slots)."""
        x = self.norm_inputs(inputs)
        k, v = self.to_k(x), self.to_v(x)  # (B, N, D)
        slots = self.mu + torch.exp(self.log_sigma) * z
        scale = self.D**-0.5
        attn = None
        for i in range(self.iterations):
            if self.implicit and i == self.iterations - 1:
                slots = slots.detach()
            q = self.to_q(self.norm_slots(slots)) * scale  # (B, K, D)
            attn = torch.softmax(torch.bmm(k, q.transpose(1, 2)), dim=-1) + ATTN_EPS  # (B, N, K)
            weights = attn / attn.sum(dim=1, keepdim=True)
            updates = torch.bmm(weights.transpose(1, 2), v)  # (B, K, D)
            slots = self.gru(slots, updates)
            slots = slots + self.mlp_out(functional.relu(self.mlp_in(self.norm_mlp(slots))))
        return slots, attn


class TorchSlots(nn.Module):
    """The autoencoder of a ``tokdyn.models.slots.Config`` with the "mlp" decoder."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.decoder != "mlp":
            raise ValueError(f"the PyTorch peer implements the 'mlp' decoder only, got decoder={cfg.decoder!r}")
        self.cfg = cfg
        chans = (3,) + tuple(int(c) for c in cfg.encoder_channels)
        k, last = cfg.encoder_kernel, len(chans) - 2
        self.convs = nn.ModuleList()
        self.pads = []  # per conv: the functional.pad amounts when XLA's SAME padding is asymmetric, else None
        size = cfg.size
        for i, (a, b) in enumerate(zip(chans, chans[1:])):
            stride = cfg.encoder_stride if i == last else 1
            lo, hi = same_padding(size, k, stride)
            sym = lo == hi
            self.convs.append(nn.Conv2d(a, b, k, stride=stride, padding=lo if sym else 0))
            self.pads.append(None if sym else (lo, hi, lo, hi))  # (left, right, top, bottom)
            size = -(-size // stride)
        C = chans[-1]
        self.register_buffer("enc_grid", position_grid(size, size), persistent=False)
        self.enc_pos = nn.Linear(4, C)
        self.enc_norm = nn.LayerNorm(C, eps=LN_EPS)
        self.enc_mlp0 = nn.Linear(C, C)
        self.enc_mlp1 = nn.Linear(C, C)
        self.slot_attention = SlotAttention(C, cfg.slot_size, cfg.mlp_hidden, cfg.iterations, cfg.implicit)
        Fh, g = cfg.decoder_hidden, cfg.size // cfg.decoder_stride
        self.register_buffer("dec_grid", position_grid(g, g), persistent=False)
        self.dec_slot = nn.Linear(cfg.slot_size, Fh)
        self.dec_pos = nn.Linear(4, Fh)
        self.dec_hidden0 = nn.Linear(Fh, Fh)
        self.dec_hidden1 = nn.Linear(Fh, Fh)
        self.dec_out = nn.Linear(Fh, 4)

    # ------------------------------------------------------------------------------------------ weights

    def _entries(self):
        """``(flax path, torch parameter, rows of it or None, kind)``: kind ``dense`` (flax (in, out)
        kernel, torch (out, in) weight), ``conv`` (flax (kh, kw, in, out), torch (out, in, kh, kw)) or
        ``same``."""
        out = []
        for i, conv in enumerate(self.convs):
            out += [
                ((f"conv{i}", "kernel"), conv.weight, None, "conv"),
                ((f"conv{i}", "bias"), conv.bias, None, "same"),
            ]
        for name in ("enc_pos", "enc_mlp0", "enc_mlp1", "dec_slot", "dec_pos", "dec_hidden0", "dec_hidden1", "dec_out"):
            lin = getattr(self, name)
            out += [((name, "kernel"), lin.weight, None, "dense"), ((name, "bias"), lin.bias, None, "same")]
        out += [
            (("enc_norm", "scale"), self.enc_norm.weight, None, "same"),
            (("enc_norm", "bias"), self.enc_norm.bias, None, "same"),
        ]
        sa, D = self.slot_attention, self.cfg.slot_size
        p = "slot_attention"
        for name in ("norm_inputs", "norm_slots", "norm_mlp"):
            ln = getattr(sa, name)
            out += [((p, name, "scale"), ln.weight, None, "same"), ((p, name, "bias"), ln.bias, None, "same")]
        for name in ("to_k", "to_v", "to_q"):
            out.append(((p, name, "kernel"), getattr(sa, name).weight, None, "dense"))
        for name in ("mlp_in", "mlp_out"):
            lin = getattr(sa, name)
            out += [((p, name, "kernel"), lin.weight, None, "dense"), ((p, name, "bias"), lin.bias, None, "same")]
        out += [((p, "mu"), sa.mu, None, "same"), ((p, "log_sigma"), sa.log_sigma, None, "same")]
        for j, gate in enumerate("rzn"):
            rows = slice(j * D, (j + 1) * D)
            out += [
                ((p, "gru", f"i{gate}", "kernel"), sa.gru_i.weight, rows, "dense"),
                ((p, "gru", f"i{gate}", "bias"), sa.gru_i.bias, rows, "same"),
                ((p, "gru", f"h{gate}", "kernel"), sa.gru_h.weight, rows, "dense"),
            ]
        out.append(((p, "gru", "hn", "bias"), sa.gru_hn_bias, None, "same"))
        return out

    @classmethod
    def from_flax(cls, cfg, params) -> "TorchSlots":
        """A peer holding the weights of a tokdyn model's ``params`` (``{"params": ...}`` or the inner dict)."""
        m = cls(cfg)
        tree = params.get("params", params)
        with torch.no_grad():
            for path, param, rows, kind in m._entries():
                a = tree
                for key in path:
                    a = a[key]
                a = np.asarray(a)
                a = a.T if kind == "dense" else a.transpose(3, 2, 0, 1) if kind == "conv" else a
                (param if rows is None else param[rows]).copy_(torch.from_numpy(np.array(a, np.float32)))
        return m

    def flax_tree(self, grads: bool = False) -> dict:
        """The weights (or, with ``grads``, their gradients) as NumPy arrays in flax's layout
        (``{"params": ...}``, the tree of ``tokdyn.models.slots.init``)."""
        tree: dict = {}
        for path, param, rows, kind in self._entries():
            t = param.grad if grads else param
            t = t if rows is None else t[rows]
            a = t.detach().numpy()
            a = a.T if kind == "dense" else a.transpose(2, 3, 1, 0) if kind == "conv" else a
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = np.ascontiguousarray(a)
        return {"params": tree}

    # ------------------------------------------------------------------------------------------ the model

    def forward(self, images, z):
        """``(recon (B, 3, H, W), alpha (B, K, H, W), slots (B, K, D), attention (B, N, K))`` of
        ``images`` (B, 3, H, W) in [0, 1] and slot noise ``z`` (B, K, D)."""
        B, _, H, W = images.shape
        h = images
        for conv, pad in zip(self.convs, self.pads):
            h = functional.relu(conv(h if pad is None else functional.pad(h, pad)))
        C = h.shape[1]
        h = h.permute(0, 2, 3, 1) + self.enc_pos(self.enc_grid)  # (B, h, w, C)
        h = self.enc_norm(h.reshape(B, -1, C))
        h = self.enc_mlp1(functional.relu(self.enc_mlp0(h)))
        slots, attn = self.slot_attention(h, z)
        K = slots.shape[1]
        d = functional.relu(self.dec_slot(slots)[:, :, None, None, :] + self.dec_pos(self.dec_grid))  # (B, K, g, g, F)
        d = functional.relu(self.dec_hidden0(d))
        d = functional.relu(self.dec_hidden1(d))
        out = self.dec_out(d)  # (B, K, g, g, 4)
        g = out.shape[2]
        out = out.permute(0, 1, 4, 2, 3).reshape(B * K, 4, g, g)
        if (g, g) != (H, W):  # jax.image.resize "bilinear" upsampling: half-pixel centres, edges clamped
            out = functional.interpolate(out, size=(H, W), mode="bilinear", align_corners=False, antialias=False)
        out = out.reshape(B, K, 4, H, W)
        rgb, alpha = out[:, :, :3], torch.softmax(out[:, :, 3], dim=1)
        recon = (alpha[:, :, None] * rgb).sum(dim=1)
        return recon, alpha, slots, attn

    def loss(self, images, z):
        """``(mean squared error, recon)`` of a batch (``tokdyn.models.slots.loss_fn``)."""
        recon = self(images, z)[0]
        return functional.mse_loss(recon, images), recon


def optimizer(model: nn.Module, *, learning_rate: float, warmup: int, steps: int, final_fraction: float = 0.05):
    """Adam with tokdyn's schedule (``tokdyn.train.optim.schedule``): linear from 0 to
    ``learning_rate`` over ``warmup`` steps, then a cosine decay to ``final_fraction`` of it at ``steps``."""
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)

    def factor(step):
        if step < warmup:
            return step / warmup
        frac = min(step - warmup, steps - warmup) / max(steps - warmup, 1)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * frac))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(model: TorchSlots, opt, sched, images, z, clip_norm: float = 1.0):
    """One optimiser step on the reconstruction error (forward, backward, clipping to the global
    norm ``clip_norm``, Adam, the schedule); returns the loss (a detached tensor)."""
    loss, _ = model.loss(images, z)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    sched.step()
    return loss.detach()
