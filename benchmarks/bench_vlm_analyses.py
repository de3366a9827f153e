"""The latent-reasoning analyses on Qwen2.5-VL (``tokdyn.diagnostics.vlm``, the one implementation of each,
which the ``vlm-diagnostics`` study, ``examples/vlm_analyses.py`` and the tests call): every instance (and
perturbation and seed) in one compiled program against a Python loop over the instances, one call each on a
batch of one (how the published analysis code runs, one example at a time), in one process.

Two random configurations: ``tiny`` (the test fixture's sizes, 2 decoder layers of width 64, its weights) and
``small`` (4 decoder layers of width 256, 8 heads, a 4-block vision tower of width 128; random weights), a
prompt with an image of 6 (tiny) or 16 (small) image tokens and a block of 4 latent slots, ``--instances``
random images, float32, on the CPU. The teacher-forced analyses: ``grounding`` (2 noises x 2 seeds, every
position scored), ``dmlr`` (ES,
5 iterations of 4 antithetic pairs, 2 seeds; ``dmlr-chunk1`` the same with ``chunk=1``: one program whose
instances run one after another). Each form is compiled first (the first call, reported apart: the
loop compiles one program for a batch of one), then the two are timed alternately ``--repeats`` times so that a
shared machine's load falls on both alike; every call ends with its results on the host. Prints the machine,
JAX's version and backend, the dtype and the load average, then one row per configuration and analysis. (The
analyses over generation, the decomposition and the mediation among them, are the one generation loop's calls:
``benchmarks/bench_latent_generation.py`` times it against the per-instance transformers loop.) Usage:

    python benchmarks/bench_vlm_analyses.py [--configs tiny small] [--instances 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from tokdyn.diagnostics import dmlr
from tokdyn.models import qwen2_5_vl
from tokdyn.diagnostics import vlm as an
from tokdyn.models.qwen2_5_vl import adapter as qa

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
parser.add_argument("--analyses", nargs="+", default=["decomposition", "mediation", "grounding", "dmlr", "dmlr-chunk1"])
parser.add_argument("--instances", type=int, default=8)
parser.add_argument("--repeats", type=int, default=3)
args = parser.parse_args()

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen2_5_vl_tiny"
START, END, FILL = 100, 101, 102


def model_of(name: str):
    """(config, params, grid) of a named configuration."""
    tiny = qwen2_5_vl.load(FIXTURE, dtype="float32")
    if name == "tiny":
        return tiny.config, tiny.params, np.array([[1, 4, 6]])
    if name == "small":
        cfg = tiny.config
        vision = dataclasses.replace(
            cfg.vision, depth=4, hidden_size=128, intermediate_size=344, num_heads=4, out_hidden_size=256
        )
        text = dataclasses.replace(
            cfg.text,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=8,
            mrope_section=(4, 6, 6),
        )
        cfg = dataclasses.replace(cfg, vision=vision, text=text)
        return cfg, qwen2_5_vl.params.init(jax.random.key(1), cfg, scale=0.05), np.array([[1, 8, 8]])
    raise SystemExit(f"unknown config {name!r}")


def host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def seconds(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def analyses(name: str):
    """{analysis: (batched, loop)} for configuration ``name``; each returns host arrays."""
    cfg, params, grid = model_of(name)
    n_image = int(grid[0].prod()) // 4
    rng = np.random.default_rng(0)
    row = qa.prompt([1, 5, 118, *[120] * n_image, 119, 40, 41], [42, 43, 9], 4, START, END, FILL)
    b = args.instances
    ids = np.stack([row] * b)
    pixels = rng.normal(size=(b, int(grid[0].prod()), cfg.vision.patch_dim)).astype(np.float32)
    lay = qa.layout(cfg, ids, START, END)
    batch = qa.make_batch(cfg, ids, pixels, grid)
    sub = an.subject(cfg, grid, lay)
    proc = qwen2_5_vl.ImageProcessor()
    key = jax.random.key(0)
    an.perturb_pixels(key, batch["pixel_values"], proc, noises=(("gaussian", 0.5), ("blank", 0.0)))
    noises = (("gaussian", 0.3), ("gaussian", 0.6))
    positions, tokens = list(range(lay.length - 1)), ids[:, 1:]
    dcfg = dmlr.Config(n_iters=5, n_pairs=4)

    def one(i):
        return {k: v[i : i + 1] for k, v in batch.items()}

    singles = [one(i) for i in range(b)]
    forms = {
        "grounding": (
            lambda: host(
                an.grounding(
                    key, sub, params, batch, proc, positions=positions, tokens=tokens, noises=noises, n_seeds=2
                )
            ),
            lambda: [
                host(
                    an.grounding(
                        jax.random.fold_in(key, i),
                        sub,
                        params,
                        singles[i],
                        proc,
                        positions=positions,
                        tokens=tokens[i : i + 1],
                        noises=noises,
                        n_seeds=2,
                    )
                )
                for i in range(b)
            ],
        ),
        "dmlr": (
            lambda: host(an.optimise(key, sub, params, batch, dcfg, seeds=(0, 1))),
            lambda: [
                host(an.optimise(jax.random.fold_in(key, i), sub, params, singles[i], dcfg, seeds=(0, 1)))
                for i in range(b)
            ],
        ),
        "dmlr-chunk1": (  # one program still, its instances one after another within it (lax.map)
            lambda: host(an.optimise(key, sub, params, batch, dcfg, seeds=(0, 1), chunk=1)),
            lambda: [
                host(an.optimise(jax.random.fold_in(key, i), sub, params, singles[i], dcfg, seeds=(0, 1)))
                for i in range(b)
            ],
        ),
    }
    return {k: forms[k] for k in args.analyses}


load = os.getloadavg()
print(f"machine: {platform.machine()} {os.cpu_count()} CPUs; jax {jax.__version__} ({jax.default_backend()}); float32")
print(f"load average (1, 5, 15 min) at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
print(f"{args.instances} instances; median of {args.repeats} alternating calls; first call (compile) apart")
print(
    f"{'config':8s} {'analysis':14s} {'first batched s':>16s} {'first loop s':>13s} "
    f"{'batched s':>10s} {'loop s':>8s} {'inst/s batched':>15s} {'inst/s loop':>12s} {'speed-up':>9s}"
)
for name in args.configs:
    for analysis, (batched, loop) in analyses(name).items():
        first = {"batched": seconds(batched), "loop": seconds(loop)}
        times = {"batched": [], "loop": []}
        for _ in range(args.repeats):
            for form, fn in (("batched", batched), ("loop", loop)):
                times[form].append(seconds(fn))
        med = {k: float(np.median(v)) for k, v in times.items()}
        n = args.instances
        print(
            f"{name:8s} {analysis:14s} {first['batched']:16.2f} {first['loop']:13.2f} {med['batched']:10.3f} "
            f"{med['loop']:8.3f} {n / med['batched']:15.1f} {n / med['loop']:12.1f} {med['loop'] / med['batched']:8.2f}x",
            flush=True,
        )
load = os.getloadavg()
print(f"load average (1, 5, 15 min) at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
