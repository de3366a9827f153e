"""Training speed of the latent reasoner: tokdyn (JAX) against the same model and training step in
PyTorch (``benchmarks/torch_latent.py``), side by side in one process, on the study's default
workload, for ``direct`` and a latent-feedback variant (``latent``: the answer loss only).

Rows per variant:
  tokdyn, 1 model        the training layer's chunk (``tokdyn.train.make_chunk``) of one model:
                         ``--steps`` steps in one compiled ``lax.scan`` (batches drawn on the
                         device from the pool)
  tokdyn, S seeds        the study's way: S seeds vmapped in one compiled call
  PyTorch, 1 model       a Python loop of ``torch_latent.train_step`` (batch indexing, forward,
                         backward, clipping, AdamW), as a PyTorch user would write it
  PyTorch, S seeds       S models one after another (the same loop)

Both frameworks start from the same weights and are checked to give the same logits first.
Compile time (JAX) and the first iterations (PyTorch) are excluded from the rates and the JAX
compile time is reported; every JAX timing ends with block_until_ready. Both use every core of
the machine (XLA:CPU's thread pool; ``torch.set_num_threads``). Usage:

    python benchmarks/bench_latent_train.py [--steps 100] [--repeats 3] [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from tokdyn import train  # noqa: E402
from tokdyn.studies import latent_reasoning  # noqa: E402
from tokdyn.models.latent import model as latent_model  # noqa: E402
from tokdyn.models.latent import training  # noqa: E402
from tokdyn.models.latent import variants  # noqa: E402


def jax_rate(tc, name, pool, hp, steps, repeats):
    """(steps/s, compile s, params of model 0 at the start) for ``tc.seeds`` vmapped models."""
    tc = dataclasses.replace(
        tc, train=dataclasses.replace(tc.train, steps_per_call=steps, steps=steps * max(tc.train.steps // steps, 1))
    )
    state = training.init_states(tc, name, hp)
    keys = training.seed_keys(tc)
    chunk = train.make_chunk(training.trainer(tc, name).first)
    fn = jax.jit(jax.vmap(chunk, in_axes=(0, None, 0)))
    t = time.perf_counter()
    compiled = fn.lower(state, pool, keys).compile()
    comp = time.perf_counter() - t
    jax.block_until_ready(compiled(state, pool, keys))  # warm
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(state, pool, keys))
        best = min(best, time.perf_counter() - t)
    return steps / best, comp, jax.tree.map(lambda a: a[0], state.params)


def torch_rate(torch, peer, cfg, params, pool, tc, steps, repeats, models):
    """steps/s of ``models`` PyTorch models trained one after another, ``steps`` steps each."""
    image, question, answer = (torch.from_numpy(np.asarray(a)).long() for a in (pool.image, pool.question, pool.answer))
    rng = np.random.default_rng(0)
    nets = [peer.TorchReasoner.from_flax(cfg, params) for _ in range(models)]
    opts = [
        peer.optimizer(n, learning_rate=2e-3, weight_decay=0.01, warmup=tc.train.warmup_steps, steps=tc.train.steps)
        for n in nets
    ]

    def run(n):
        for net, (opt, sched) in zip(nets, opts):
            for _ in range(n):
                idx = torch.from_numpy(rng.integers(0, len(answer), tc.batch_size))
                peer.train_step(net, opt, sched, image[idx], question[idx], answer[idx])

    run(3)  # warm-up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        run(steps)
        best = min(best, time.perf_counter() - t)
    return steps / best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="optimiser steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", default="direct,latent")
    args = ap.parse_args()
    import torch

    import torch_latent as peer

    torch.set_num_threads(os.cpu_count())
    study = latent_reasoning.Config()
    tc1 = dataclasses.replace(study.training, seeds=1, n_train=20_000, n_val=10, n_test=10)
    pool = training.data(tc1).train
    hp = study.hparams
    rows = []
    for name in args.variants.split(","):
        cfg = variants.model_config(tc1, name, -1)
        model = latent_model.Model(cfg)
        params = model.init(jax.random.key(0))
        batch = jax.tree.map(lambda a: a[:64], pool)
        ours = np.asarray(jax.jit(lambda p, b: model.apply(p, b).logits)(params, batch))
        net = peer.TorchReasoner.from_flax(cfg, params)
        with torch.no_grad():
            theirs = net(*(torch.from_numpy(np.asarray(a)).long() for a in (batch.image, batch.question))).numpy()
        diff = float(np.abs(ours - theirs).max())
        b = tc1.batch_size
        for seeds in (1, args.seeds):
            tc = dataclasses.replace(tc1, seeds=seeds)
            rate, comp, p0 = jax_rate(tc, name, pool, hp, args.steps, args.repeats)
            rows.append((name, f"tokdyn, {seeds} model(s) vmapped", rate, rate * b * seeds, comp, diff))
            trate = torch_rate(torch, peer, cfg, p0, pool, tc, args.steps, args.repeats, seeds)
            rows.append((name, f"PyTorch, {seeds} model(s) one after another", trate, trate * b * seeds, None, diff))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}, "
        f"backend {jax.default_backend()}; PyTorch {torch.__version__} ({torch.get_num_threads()} threads); float32"
    )
    t = study.training
    print(
        f"workload: the study's default model (grid {t.task.grid_size}x{t.task.grid_size}, {t.task.n_colours} colours, "
        f"width {t.width}, depth {t.depth}, {t.heads} heads, L={t.n_latents}), batch {b} per model, "
        f"{args.steps} steps per timed run, best of {args.repeats}"
    )
    print("| variant | implementation | steps/s (per model) | examples/s | compile s | max |logit diff| |")
    print("|---|---|---:|---:|---:|---:|")
    for name, impl, rate, ex, comp, diff in rows:
        print(f"| {name} | {impl} | {rate:,.1f} | {ex:,.0f} | {'-' if comp is None else f'{comp:.1f}'} | {diff:.1e} |")


if __name__ == "__main__":
    main()
