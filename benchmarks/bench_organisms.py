"""Training many organisms at once: N Qwen2.5-VL organisms (seeds) trained in one compiled program (vmapped,
:func:`tokdyn.models.organism.training.train_models`) against a Python loop over the same N models, each
trained alone by the same program at one model, with the same steps, in one process; and (``--sequential``)
the same one program with its models run one after another inside it (``train.Execution(batch_size=1)``: a
map over the models instead of a vmap).

The model is the organism's CPU size (:class:`tokdyn.models.organism.training.Config`'s defaults: a decoder of
2 layers of width 64, ``--layers`` to change it, a vision tower of 2 blocks of width 32, 16 image tokens a
112 x 112 grid image), recipe ``--variant`` (default ``latent``: 4 fed-back latents), ``--steps`` steps per model
in calls of ``--steps`` (one call), batch 32, float32, on the CPU. Every form runs once first (their compiles,
reported apart), then each is timed ``--repeats`` times, alternately; medians. Prints the machine, JAX's version
and backend, the dtype and the load average, and writes the table to ``--out``. Usage::

    python benchmarks/bench_organisms.py [--models 64] [--steps 10] [--variant latent] [--layers 2] [--sequential]
        [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from common import report

from tokdyn import train
from tokdyn.models.organism import training as organism
from tokdyn.train import optim

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--models", type=int, default=64)
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--variant", default="latent")
parser.add_argument("--layers", type=int, default=organism.Config().layers)
parser.add_argument("--sequential", action="store_true", help="time the one program with its models in turn too")
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--out", default=None)
args = parser.parse_args()


def config(models: int) -> organism.Config:
    return organism.Config(
        train=optim.Config(steps=args.steps, steps_per_call=args.steps, warmup=0, decay="constant", clip_norm=1.0),
        layers=args.layers,
        n_train=1024,
        n_test=8,
        seeds=models,
    )


def timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.state.params)
    return time.perf_counter() - t, out


def together():
    return organism.train_models(config(args.models), args.variant)


def in_turn():
    return organism.train_models(config(args.models), args.variant, execution=train.Execution(batch_size=1))


def loop():
    cfg = config(1)
    keys, hp = organism.models(config(args.models))  # the same N models' keys
    tr = organism.trainer(cfg, args.variant)
    pool = organism.data(cfg)[0]
    out = None
    for i in range(args.models):
        one = jax.tree_util.tree_map(lambda a, i=i: a[i : i + 1], (keys, hp))
        out = train.train_many(tr, pool, *one)
        jax.block_until_ready(out.state.params)
    return out


def main():
    forms = [("one program", together), ("loop", loop)]
    if args.sequential:
        forms.insert(1, ("one program, models in turn", in_turn))
    first = {}
    for name, fn in forms:
        first[name], _ = timed(fn)
    times = {name: [] for name, _ in forms}
    for _ in range(args.repeats):
        for name, fn in forms:
            times[name].append(timed(fn)[0])
    med = {k: float(np.median(v)) for k, v in times.items()}
    work = args.models * args.steps
    rows = [
        dict(
            form=k,
            models=args.models,
            steps=args.steps,
            median_s=med[k],
            model_steps_per_s=work / med[k],
            first_s=first[k],
        )
        for k in med
    ]
    header = (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__} "
        f"({jax.default_backend()}); float32; load average {os.getloadavg()[0]:.2f}; recipe {args.variant}; "
        f"{args.layers} decoder layers"
    )
    lines = [
        header,
        "",
        "| form | models x steps | median s | model-steps/s | first call s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['form']} | {r['models']} x {r['steps']} | {r['median_s']:.2f} | {r['model_steps_per_s']:.1f} | "
            f"{r['first_s']:.1f} |"
        )
    lines.append("")
    for name in med:
        if name != "loop":
            lines.append(f"{name} / loop: {med['loop'] / med[name]:.2f}x")
    report("\n".join(lines), args.out, dict(args=vars(args), times=times, first=first, rows=rows))


if __name__ == "__main__":
    main()
