"""Speed of the confidence-driven latent optimiser (``tokdyn.diagnostics.dmlr``): every instance in one
compiled call against a per-instance Python loop, the way the public DMLR code runs, over the same
jitted JAX model, and the same loop in PyTorch (``benchmarks/torch_latent.py``, the same weights).

Workload: the latent-reasoning study's default model of the ``latent`` variant (grid 4x4, 4 colours,
width 64, depth 2, 4 heads, L = 2 latents, layernorm projection; weights from a fixed init: the
cost does not depend on them), ``--instances`` instances, the paper's reward (top-k entropy, k = 10)
at the latent positions, T = 15 iterations of REINFORCE with 8 antithetic pairs (16 reward
evaluations), sigma 0.1 decaying by 0.95, SGD ascent 1e-3, keeping the most confident latents:

  tokdyn, all instances      ``dmlr.make``: every instance in one compiled call (chunks of 4
                             instances vmapped, one chunk after another), the T iterations a lax.scan
  JAX loop per instance      Python loops over instances and iterations; each iteration one jitted
                             call (the population's rewards, the estimate, the step, the new reward)
                             whose reward is read on the host to keep the best latents
  PyTorch loop per instance  the same loop in PyTorch (no_grad; the population as one batch)

The loops are timed on ``--loop-instances`` instances and reported per instance. Compile time (JAX)
is excluded from the rates and reported; every JAX timing ends on host values. Usage:

    python benchmarks/bench_dmlr.py [--instances 1000] [--loop-instances 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))

from common import timed  # noqa: E402
from tokdyn import es  # noqa: E402
from tokdyn.diagnostics import dmlr  # noqa: E402
from tokdyn.studies import latent_reasoning  # noqa: E402
from tokdyn.models.latent import tasks, variants  # noqa: E402
from tokdyn.models.latent import model as latent_model  # noqa: E402


def jax_loop(model, params, batch, opt, hp, positions):
    """The per-instance loop over the jitted model: returns a function running it on n instances."""
    lay = model.layout
    score = lambda logits: dmlr.confidence(
        logits, reward=opt.reward, top_k=opt.top_k, latent_positions=positions, answer_position=lay.answer
    )

    @jax.jit
    def start(params, inst):
        out = model.apply(params, inst)
        return out.latents, score(out.logits[0])

    def reward(u, params, inst, s):
        return score(model.apply(params, inst, latents=u * s).logits[0])

    maxi = es.maximiser(
        reward, optax.sgd(hp.learning_rate), sigma=lambda t: hp.sigma * hp.sigma_decay**t, n_pairs=opt.n_pairs
    )

    @jax.jit
    def step(key, state, params, inst, s):
        state, _ = maxi.step(key, state, params, inst, s)
        return state, reward(state.x, params, inst, s)

    def run(n):
        kept = []  # each instance's best latents, as a user keeps them
        for i in range(n):
            inst = jax.tree.map(lambda a: a[i : i + 1], batch)
            lat, r0 = start(params, inst)
            s = jnp.sqrt(jnp.mean(lat**2))
            state, best = maxi.init(lat / s), float(r0)
            kept.append(state.x)
            keys = jax.random.split(jax.random.fold_in(jax.random.key(0), i), opt.n_iters)
            for t in range(opt.n_iters):
                state, r = step(keys[t], state, params, inst, s)
                r = float(r)  # the host decides whether the latents improved
                if r > best:
                    best, kept[-1] = r, state.x
        return kept

    return run


def torch_loop(torch, net, batch, opt, hp):
    image, question = (torch.from_numpy(np.asarray(a)).long() for a in (batch.image, batch.question))
    lat_pos = list(range(net.lay.latents.start, net.lay.latents.stop))

    def score(logits):  # (P, T, V) -> (P,)
        lp = torch.log_softmax(logits[:, lat_pos], -1)
        top = torch.topk(lp, opt.top_k, -1).values
        q = torch.log_softmax(top, -1)
        return 1.0 - (-(q.exp() * q).sum(-1)).mean(-1)

    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def run(n):
        p = 2 * opt.n_pairs
        kept = []  # each instance's best latents, as a user keeps them
        for i in range(n):
            img, q = image[i : i + 1], question[i : i + 1]
            logits, lat = net.run(img, q)
            best = float(score(logits)[0])
            s = lat.pow(2).mean().sqrt()
            u = lat / s
            kept.append(u)
            imgs, qs = img.expand(p, -1, -1), q.expand(p, -1)
            for t in range(opt.n_iters):
                sigma = hp.sigma * hp.sigma_decay**t
                z = torch.randn((opt.n_pairs,) + tuple(u.shape[1:]), generator=gen)
                z = torch.cat([z, -z])  # (P, L, D)
                r = score(net(imgs, qs, latents=(u + sigma * z) * s))  # (P,)
                grad = (r[:, None, None] * z).sum(0, keepdim=True) / (p * sigma)
                u = u + hp.learning_rate * grad
                r = float(score(net(img, q, latents=u * s))[0])
                if r > best:
                    best, kept[-1] = r, u
        return kept

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--loop-instances", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tc = latent_reasoning.Config().training
    cfg = variants.model_config(tc, "latent")
    model = latent_model.Model(cfg)
    params = model.init(jax.random.key(0))
    batch = tasks.generate(jax.random.key(1), args.instances, tc.task)
    opt, hp = dmlr.Config(), dmlr.Hparams()
    lay = model.layout
    positions = tuple(range(lay.latents.start, lay.latents.stop))
    rows = []

    f = dmlr.make(model.apply, opt, latent_positions=positions, answer_position=lay.answer)
    index = jnp.arange(args.instances)
    t = time.perf_counter()
    compiled = f.lower(jax.random.key(0), params, batch, hp, index).compile()
    comp = time.perf_counter() - t
    call = lambda: np.asarray(compiled(jax.random.key(0), params, batch, hp, index).reward_best)  # noqa: E731
    call()
    best, med = timed(call, args.repeats)
    rows.append(
        ("tokdyn, all instances in one call", args.instances, args.instances / best, args.instances / med, comp)
    )

    loop = jax_loop(model, params, batch, opt, hp, positions)
    t = time.perf_counter()
    loop(1)  # compiles start and step
    comp = time.perf_counter() - t
    n = args.loop_instances
    best, med = timed(lambda: loop(n), args.repeats)
    rows.append(("JAX loop per instance (jitted model)", n, n / best, n / med, comp))

    diff = "-"
    try:
        import torch

        import torch_latent as peer
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
        net = peer.TorchReasoner.from_flax(cfg, params)
        with torch.no_grad():
            theirs = net(*(torch.from_numpy(np.asarray(a)).long() for a in (batch.image[:64], batch.question[:64])))
        ours = np.asarray(jax.jit(lambda p, b: model.apply(p, b).logits)(params, jax.tree.map(lambda a: a[:64], batch)))
        diff = f"{float(np.abs(ours - theirs.numpy()).max()):.1e}"
        tloop = torch_loop(torch, net, batch, opt, hp)
        tloop(1)
        best, med = timed(lambda: tloop(n), args.repeats)
        rows.append((f"PyTorch {torch.__version__} loop per instance", n, n / best, n / med, None))

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}, "
        f"backend {jax.default_backend()}; float32; max |logit diff| JAX vs PyTorch on 64 instances: {diff}"
    )
    print(
        f"workload: the study's latent model (L={cfg.n_latents}, width {cfg.width}, depth {cfg.depth}), "
        f"T={opt.n_iters} iterations x {2 * opt.n_pairs} reward evaluations + 1 per instance, best and median of "
        f"{args.repeats}"
    )
    ref = rows[0][3]
    print(
        "| implementation | instances | best instances/s | median instances/s | tokdyn (median) / this (median) | compile s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, b, m, c in rows:
        print(f"| {name} | {n} | {b:,.1f} | {m:,.1f} | {ref / m:,.1f}x | {'-' if c is None else f'{c:.1f}'} |")


if __name__ == "__main__":
    main()
