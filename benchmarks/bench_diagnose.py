"""Speed of the latent -> answer mediation analysis (``tokdyn.diagnostics.mediation``): every
intervention x every instance in one compiled call, against a per-instance Python loop over the
same jitted model (the way such analyses are usually scripted).

Workload: the latent-reasoning study's default model of the ``latent`` variant (grid 4x4, 4 colours,
width 64, depth 2, 4 heads, L = 2 latents, layernorm projection; weights from a fixed init: the cost
does not depend on them), ``--instances`` instances, the six interventions of
``diagnose.INTERVENTIONS`` (zeros, matched noise, dataset mean, constant, swap, another set of
latents); per instance and intervention the answer flip, correctness and the KL divergence of the
answer distribution from the unintervened one:

  tokdyn, one call        ``jit(diagnose.latent_effects)``: the model's own latents, the six
                          replacements built from them, the seven latent-fed passes vmapped
  JAX loop per instance   for each instance (a batch of one): one jitted call for its latents, then
                          one jitted latent-fed call per intervention (and one with its own latents,
                          the reference), the flip and KL computed on the host; the batch-level
                          replacements (mean, constant, swap) are computed once, before the clock

The loop is timed on ``--loop-instances`` instances and reported per instance. Compile time is
excluded from the rates and reported; every timing ends on host values. Usage:

    python benchmarks/bench_diagnose.py [--instances 1000] [--loop-instances 100] [--repeats 3]
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

sys.path.insert(0, os.path.dirname(__file__))

from common import timed  # noqa: E402
from tokdyn.diagnostics import mediation  # noqa: E402
from tokdyn.studies import latent_reasoning  # noqa: E402
from tokdyn.models.latent import model as latent_model  # noqa: E402
from tokdyn.models.latent import tasks, variants  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--loop-instances", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tc = latent_reasoning.Config().training
    model = latent_model.Model(variants.model_config(tc, "latent"))
    params = model.init(jax.random.key(0))
    batch = tasks.generate(jax.random.key(1), args.instances, tc.task)
    ans = model.layout.answer
    other = jax.random.normal(jax.random.key(2), (args.instances, model.cfg.n_latents, model.cfg.width))
    key = jax.random.key(3)
    rows = []

    f = jax.jit(
        lambda k, p, b, a, o: mediation.latent_effects(
            k, model.apply, p, b, answer_position=ans, answers=a, kinds=mediation.INTERVENTIONS, other=o
        )
    )
    t = time.perf_counter()
    compiled = f.lower(key, params, batch, batch.answer, other).compile()
    compile_s = time.perf_counter() - t
    run = lambda: np.asarray(compiled(key, params, batch, batch.answer, other).kl)
    flips = np.asarray(compiled(key, params, batch, batch.answer, other).flipped)[:, : args.loop_instances].mean(1)
    best, med = timed(run, args.repeats)
    rows.append(
        (
            "tokdyn, all interventions x instances in one call",
            args.instances,
            args.instances / best,
            args.instances / med,
            compile_s,
        )
    )

    # the loop: the batch-level replacements are computed once, outside the clock
    own = jax.jit(model.apply)(params, batch).latents
    repl = np.asarray(mediation.interventions(key, own, mediation.INTERVENTIONS, other=other))  # (K, B, L, D)
    lat_fn = jax.jit(lambda p, inst: model.apply(p, inst).latents)
    logp_fn = jax.jit(lambda p, inst, z: jax.nn.log_softmax(model.apply(p, inst, latents=z).logits[0, ans]))
    n = args.loop_instances

    def loop():
        out = []
        for i in range(n):
            inst = jax.tree.map(lambda a: a[i : i + 1], batch)
            z0 = lat_fn(params, inst)
            lp0 = np.asarray(logp_fn(params, inst, z0))
            for k in range(repl.shape[0]):
                lp = np.asarray(logp_fn(params, inst, jnp.asarray(repl[k, i : i + 1])))
                out.append((lp.argmax() != lp0.argmax(), float(np.sum(np.exp(lp0) * (lp0 - lp)))))
        return out

    inst0 = jax.tree.map(lambda a: a[:1], batch)
    t = time.perf_counter()
    z0 = lat_fn(params, inst0)
    np.asarray(logp_fn(params, inst0, z0))
    loop_compile = time.perf_counter() - t
    got = loop()
    loop_flips = np.asarray([g[0] for g in got], float).reshape(n, -1).mean(0)
    best, med = timed(loop, args.repeats)
    rows.append(("JAX loop per instance (jitted model)", n, n / best, n / med, loop_compile))

    ref = rows[0][3]
    print(
        f"\nmachine: {platform.machine()} {os.cpu_count()} cores; JAX {jax.__version__}, backend "
        f"{jax.default_backend()}, float32; interventions {', '.join(mediation.INTERVENTIONS)}"
    )
    print(
        "\n| implementation | instances | best instances/s | median instances/s | tokdyn / this (median) | compile s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, count, b, m, c in rows:
        print(f"| {name} | {count} | {b:.0f} | {m:.0f} | {ref / m:.1f}x | {c:.2f} |")
    print(
        f"\nflip rate per intervention on the first {n} instances (the same work): one call "
        f"{np.round(flips, 3).tolist()}, loop {np.round(loop_flips, 3).tolist()}"
    )


if __name__ == "__main__":
    main()
