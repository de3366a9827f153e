"""What a training step costs per recipe: the latent-reasoning study's default organisms
(:func:`tokdyn.studies.latent_reasoning.default_training`: a decoder of 4 layers x 64, batches of 96, 3 seeds run
in turn inside one program as the study runs them on a CPU) trained ``--steps`` steps in one call by each recipe
of :data:`tokdyn.models.organism.training.VARIANTS`, in one process. Every recipe runs once first (its compile,
reported apart), then each is timed ``--repeats`` times, the recipes alternating; medians, and each recipe's time
over ``direct``'s: the study's time estimate reads its per-recipe factors from this table. Prints the machine,
JAX's version and backend, the dtype and the load average, and writes the table to ``--out``. Usage::

    python benchmarks/bench_organism_recipes.py [--steps 10] [--repeats 3] [--variants direct,latent] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import numpy as np

from common import report

from tokdyn import train
from tokdyn.models.organism import training as organism
from tokdyn.studies import latent_reasoning
from tokdyn.train import optim

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--variants", default=",".join(organism.VARIANTS))
parser.add_argument("--out", default=None)
args = parser.parse_args()


def config() -> organism.Config:
    tc = latent_reasoning.default_training()
    return dataclasses.replace(
        tc,
        train=optim.Config(steps=args.steps, steps_per_call=args.steps, warmup=0, decay="constant", clip_norm=1.0),
        n_train=2048,
        n_val=8,
        n_test=8,
    )


def timed(recipe: str) -> float:
    t = time.perf_counter()
    out = organism.train_models(config(), recipe, execution=train.Execution(batch_size=1))
    jax.block_until_ready(out.state.params)
    return time.perf_counter() - t


def main():
    names = args.variants.split(",")
    organism.data(config())  # the pool, made once outside the timings
    first = {n: timed(n) for n in names}
    times = {n: [] for n in names}
    for _ in range(args.repeats):
        for n in names:
            times[n].append(timed(n))
    med = {k: float(np.median(v)) for k, v in times.items()}
    tc = config()
    header = (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__} "
        f"({jax.default_backend()}); float32; load average {os.getloadavg()[0]:.2f}; {tc.layers} x {tc.hidden_size} "
        f"decoder, {tc.seeds} seeds in turn, batches of {tc.batch_size}, {args.steps} steps a call"
    )
    lines = [
        header,
        "",
        "| recipe | median s | s a step (3 seeds) | / direct | first call s |",
        "|---|---:|---:|---:|---:|",
    ]
    base = med.get("direct")
    for n in names:
        ratio = f"{med[n] / base:.2f}" if base else ""
        lines.append(f"| {n} | {med[n]:.2f} | {med[n] / args.steps:.3f} | {ratio} | {first[n]:.1f} |")
    report("\n".join(lines), args.out, dict(args=vars(args), times=times, first=first, median=med))


if __name__ == "__main__":
    main()
