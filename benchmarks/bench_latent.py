"""Latent feedback: the key/value-cached forward pass of ``tokdyn.latent.model`` vs the plain way
of L + 1 full causal passes over the growing sequence (the peer, written out below), for one
forward pass and for one training step (value and gradient of the answer cross-entropy).

    python benchmarks/bench_latent.py [--batch 64] [--latents 1,4,8] [--repeats 5]

Both compute the same function (checked here before timing). Steady-state figures exclude
compilation (reported separately); every timing ends with block_until_ready.
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn.latent import model as M
from tokdyn.latent import tasks


def passes(model: M.Model, params, batch):
    """The peer: latent i is read from a full causal pass over the prefix, then one final pass."""
    net, lay = model.net, model.layout
    x = model.embed(params, batch)
    s = lay.latents.start
    for i in range(model.cfg.n_latents):
        out = net.apply(params, x[:, : s + i], method=M.Network.backbone)[0]
        x = x.at[:, s + i].set(net.apply(params, out[:, s + i - 1], method=M.Network.project))
    out = net.apply(params, x, method=M.Network.backbone)[0]
    return net.apply(params, out, method=M.Network.unembed)


def cached(model: M.Model, params, batch):
    return model.apply(params, batch).logits


def timed(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--latents", default="1,4,8")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"JAX {jax.__version__}, backend {jax.default_backend()}, float32")
    print(f"model: width {args.width}, depth {args.depth}, 4 heads, 6x6 grid; batch {args.batch}")
    batch = jax.tree.map(jnp.asarray, tasks.generate(jax.random.key(1), args.batch))
    rows = []
    for L in [int(v) for v in args.latents.split(",")]:
        model = M.Model(M.Config(width=args.width, depth=args.depth, latent_mode="feedback", n_latents=L))
        params = model.init(jax.random.key(0))
        lay = model.layout
        for fname, f in (("cached", cached), ("L+1 passes", passes)):
            fwd = jax.jit(lambda p, b, f=f: f(model, p, b))

            def loss(p, b, f=f):
                logits = f(model, p, b)[:, lay.answer]
                return optax.softmax_cross_entropy_with_integer_labels(logits, b.answer).mean()

            grad = jax.jit(jax.value_and_grad(loss))
            t0 = time.perf_counter()
            fwd_c = fwd.lower(params, batch).compile()
            grad_c = grad.lower(params, batch).compile()
            comp = time.perf_counter() - t0
            rows.append((L, fname, comp, timed(fwd_c, params, batch, repeats=args.repeats),
                         timed(grad_c, params, batch, repeats=args.repeats)))
        a = np.asarray(jax.jit(lambda p, b: cached(model, p, b))(params, batch))
        b = np.asarray(jax.jit(lambda p, b: passes(model, p, b))(params, batch))
        print(f"L={L}: max |cached - passes| over the logits = {np.abs(a - b).max():.2e}")
    print(f"\n{'L':>3}  {'method':<12}{'compile s':>11}{'forward ms':>12}{'train step ms':>15}")
    for L, name, c, f, g in rows:
        print(f"{L:>3}  {name:<12}{c:>11.2f}{1e3 * f:>12.2f}{1e3 * g:>15.2f}")


if __name__ == "__main__":
    main()
