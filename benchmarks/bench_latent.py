"""Latent feedback: the key/value-cached forward pass of ``tokdyn.models.latent.model`` vs the plain way
of L + 1 full causal passes over the growing sequence (the peer, written out below), for one
forward pass and for one training step (value and gradient of the answer cross-entropy), and what
share of a training step the feedback loop is: the same model in ``pause`` mode (L learned
positions, one causal pass, no feedback) has the same sequence length, so
``1 - pause / cached`` is the share of the step spent on feeding latents back.

    python benchmarks/bench_latent.py [--batch 64] [--latents 4,8,16] [--repeats 5]

The cached and the plain forms compute the same function (checked here before timing).
Steady-state figures exclude compilation (reported separately); every timing ends with
block_until_ready. The model is the latent-reasoning study's default (grid, colours, width, depth).
"""

import argparse
import dataclasses
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tokdyn.studies import latent_reasoning
from tokdyn.models.latent import model as latent_model
from tokdyn.models.latent import tasks


def passes(model: latent_model.Model, params, batch):
    """The peer: latent i is read from a full causal pass over the prefix, then one final pass."""
    net, lay = model.net, model.layout
    x = model.embed(params, batch)
    s = lay.latents.start
    for i in range(model.cfg.n_latents):
        out = net.apply(params, x[:, : s + i], method=latent_model.Network.backbone)[0]
        x = x.at[:, s + i].set(net.apply(params, out[:, s + i - 1], method=latent_model.Network.project))
    out = net.apply(params, x, method=latent_model.Network.backbone)[0]
    return net.apply(params, out, method=latent_model.Network.unembed)


def cached(model: latent_model.Model, params, batch):
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
    ap.add_argument("--latents", default="4,8,16")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tc = latent_reasoning.Config().training
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"JAX {jax.__version__}, backend {jax.default_backend()}, float32"
    )
    print(
        f"model: width {tc.width}, depth {tc.depth}, {tc.heads} heads, {tc.task.grid_size}x{tc.task.grid_size} grid, "
        f"{tc.task.n_colours} colours; batch {args.batch}"
    )
    batch = jax.tree.map(jnp.asarray, tasks.generate(jax.random.key(1), args.batch, tc.task))
    rows = []
    for L in [int(v) for v in args.latents.split(",")]:
        mc = latent_model.Config(
            task=tc.task,
            width=tc.width,
            depth=tc.depth,
            heads=tc.heads,
            latent_mode="feedback",
            n_latents=L,
            projection=tc.projection,
        )
        model = latent_model.Model(mc)
        params = model.init(jax.random.key(0))
        lay = model.layout
        paused = latent_model.Model(dataclasses.replace(mc, latent_mode="pause"))
        pparams = paused.init(jax.random.key(0))
        for fname, f, m, prm in (
            ("cached", cached, model, params),
            ("L+1 passes", passes, model, params),
            ("pause", cached, paused, pparams),
        ):
            fwd = jax.jit(lambda p, b, f=f, m=m: f(m, p, b))

            def loss(p, b, f=f, m=m):
                logits = f(m, p, b)[:, lay.answer]
                return optax.softmax_cross_entropy_with_integer_labels(logits, b.answer).mean()

            grad = jax.jit(jax.value_and_grad(loss))
            t0 = time.perf_counter()
            fwd_c = fwd.lower(prm, batch).compile()
            grad_c = grad.lower(prm, batch).compile()
            comp = time.perf_counter() - t0
            rows.append(
                (
                    L,
                    fname,
                    comp,
                    timed(fwd_c, prm, batch, repeats=args.repeats),
                    timed(grad_c, prm, batch, repeats=args.repeats),
                )
            )
        a = np.asarray(jax.jit(lambda p, b: cached(model, p, b))(params, batch))
        b = np.asarray(jax.jit(lambda p, b: passes(model, p, b))(params, batch))
        print(f"L={L}: max |cached - passes| over the logits = {np.abs(a - b).max():.2e}")
    print(f"\n{'L':>3}  {'method':<12}{'compile s':>11}{'forward ms':>12}{'train step ms':>15}")
    for L, name, c, f, g in rows:
        print(f"{L:>3}  {name:<12}{c:>11.2f}{1e3 * f:>12.2f}{1e3 * g:>15.2f}")
    print("\n  L  feedback share of a train step (1 - pause/cached)  cache saves (1 - cached/passes)")
    for L in dict.fromkeys(r[0] for r in rows):
        g = {name: step for l, name, _, _, step in rows if l == L}
        print(f"{L:>3}  {1 - g['pause'] / g['cached']:>50.0%}  {1 - g['cached'] / g['L+1 passes']:>30.0%}")


if __name__ == "__main__":
    main()
