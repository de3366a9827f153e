"""Speed of the grid-diffusion models (tokdyn.models.sequence) on the grid-diffusion study's
default workload: the grammar corpus' sentences as sequences of 3x3 grids of 3 colours.

Training (``--models``, default the D3PM absorbing and DDPM grid models), per model kind:
  tokdyn, vmapped, D devices   ``tokdyn.train.train_many``: S models, ``--steps`` steps each (one
                               compiled call per logging interval), sharded over the D host devices
                               (as the ``tokdyn`` command runs it; ``--devices``, default one per core)
  tokdyn, vmapped, 1 device    the same on one device
  Python loop, S seeds         ``jax.jit(train.make_step(trainer))`` called step by step from Python
                               for each seed in turn (the same step, keys and data: the same models)

Sampling (``grid_ddpm`` and ``grid_d3pm_absorbing`` at T = ``--T``, ``--n`` sequences of L grids):
T ancestral steps vs DDIM with ``--ddim`` steps; grids/s counts every grid of every sequence.

Compile time is measured apart (``lower().compile()``; for ``train_many``, its first call's time
less the best steady call's) and excluded from the rates; every
timing ends with ``block_until_ready``; best and median of ``--repeats``. Usage:

    python benchmarks/bench_diffusion.py [--steps 200] [--seeds 4] [--T 1000] [--n 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time

_dev = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), None)
if _dev is None and "--devices" in sys.argv:
    _dev = sys.argv[sys.argv.index("--devices") + 1]
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={_dev or os.cpu_count()}")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

from common import timed  # noqa: E402

from tokdyn import train  # noqa: E402
from tokdyn.models import sequence  # noqa: E402
from tokdyn.studies import grid_diffusion  # noqa: E402


def study_data(study: grid_diffusion.Config):
    """The study's grid sequences (N, L, P), from the trained autoencoder."""
    _, sentences, _ = grid_diffusion.load_corpus(study)
    with tempfile.TemporaryDirectory() as parts:
        _, codes, _ = grid_diffusion.autoencoder(study, parts)
    return codes[sentences], sentences


def training_rows(cfg: sequence.Config, data, seeds: int, repeats: int):
    keys, hp = train.grid(jax.random.split(jax.random.key(0), seeds), sequence.Hparams(learning_rate=2e-3, lam=0.01))
    tr, data = sequence.trainer(cfg), sequence.inputs(cfg, data)
    rows = []
    for devices in (tuple(jax.local_devices()), tuple(jax.local_devices()[:1])):
        if len(devices) == 1 and rows and len(jax.local_devices()) == 1:
            break
        execution = train.Execution(devices=devices)
        run = lambda: jax.block_until_ready(train.train_many(tr, data, keys, hp, execution=execution).state)
        t = time.perf_counter()
        res = run()
        first = time.perf_counter() - t
        best, med = timed(run, repeats)
        steps = cfg.train.steps
        rows.append(
            (f"tokdyn, vmapped, {len(devices)} device(s)", steps * seeds / best, steps * seeds / med, first - best)
        )

    step = jax.jit(train.make_step(tr))
    per_seed = [
        (train.init_state(tr, keys[s], jax.tree_util.tree_map(lambda a: a[s], hp)), tr.keys(keys[s])[1])
        for s in range(seeds)
    ]
    t = time.perf_counter()
    compiled_step = step.lower(per_seed[0][0], data, per_seed[0][1]).compile()
    comp_loop = time.perf_counter() - t

    def loop():
        last = []
        for s in range(seeds):
            state, run_key = per_seed[s]
            for _ in range(cfg.train.steps):
                state, logs = compiled_step(state, data, run_key)
            last.append(state)
        return jax.block_until_ready(last)

    final = loop()
    for s in range(seeds):  # the same models
        np.testing.assert_allclose(
            jax.tree_util.tree_leaves(final[s].params)[0],
            jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a: a[s], res.params))[0],
            rtol=1e-3,
            atol=1e-5,
        )
    best, med = timed(loop, repeats)
    rows.append(
        (
            "Python loop of the layer's jitted step",
            cfg.train.steps * seeds / best,
            cfg.train.steps * seeds / med,
            comp_loop,
        )
    )
    return rows


def sampling_rows(cfg: sequence.Config, n: int, ddim: int, repeats: int):
    params = sequence.init(jax.random.key(1), cfg)
    rows = []
    for sampler, steps in (("ancestral", cfg.T), ("ddim", ddim)):
        if sampler == "ddim" and not cfg.continuous:
            continue
        fn = sequence.sample.jitted
        t = time.perf_counter()
        compiled = fn.lower(jax.random.key(2), params, cfg, n, sampler, ddim).compile()
        comp = time.perf_counter() - t
        call = lambda: jax.block_until_ready(compiled(jax.random.key(2), params))
        call()
        best, med = timed(call, repeats)
        grids = n * cfg.length
        rows.append((cfg.model, f"{sampler}, {steps} steps", grids / best, grids / med, comp))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="optimiser steps per model per timed run")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--models", default="grid_d3pm_absorbing,grid_ddpm")
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--n", type=int, default=256, help="sequences per sampling call")
    ap.add_argument("--ddim", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", type=int, default=os.cpu_count(), help="host devices (read before JAX starts)")
    args = ap.parse_args()
    study = grid_diffusion.Config()
    data, _ = study_data(study)
    trained = []
    for name in args.models.split(","):
        cfg = study.model(name, "sequence")
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, steps=args.steps, steps_per_call=args.steps)
        )
        trained += [(name, *r) for r in training_rows(cfg, data, args.seeds, args.repeats)]
    samp = []
    for name in ("grid_ddpm", "grid_d3pm_absorbing"):
        cfg = dataclasses.replace(study.model(name, "sequence"), T=args.T)
        samp += sampling_rows(cfg, args.n, args.ddim, args.repeats)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{len(jax.local_devices())} JAX device(s); JAX {jax.__version__}, backend {jax.default_backend()}; float32"
    )
    m = study.model("grid_d3pm_absorbing", "sequence")
    print(
        f"workload: the grid-diffusion study's sequence models (L={m.length} grids of {m.cells} cells, "
        f"{m.colours} colours, elements={m.elements}, width {m.width}, depth {m.depth}), batch {m.batch_size}; "
        f"training: {args.seeds} seeds x {args.steps} steps; best and median of {args.repeats}"
    )
    print("\n| model | training | model-steps/s (best) | (median) | compile s |")
    print("|---|---|---:|---:|---:|")
    for name, impl, best, med, comp in trained:
        print(f"| {name} | {impl} | {best:,.1f} | {med:,.1f} | {comp:.1f} |")
    print(f"\n| model | sampler (T = {args.T}, {args.n} sequences) | grids/s (best) | (median) | compile s |")
    print("|---|---|---:|---:|---:|")
    for name, impl, best, med, comp in samp:
        print(f"| {name} | {impl} | {best:,.0f} | {med:,.0f} | {comp:.1f} |")


if __name__ == "__main__":
    main()
