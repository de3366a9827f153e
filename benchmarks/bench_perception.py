"""Token dynamics of perception tokens (``tokdyn.diagnostics.perception.perception_dynamics``): a batch of
images in one compiled program against a loop over the images, one call each (how per-instance code runs), in
one process.

The tiny random Qwen2.5-VL checkpoint of the tests (``tests/fixtures/qwen2_5_vl_tiny``), ``--images`` sprite
scenes resized to ``--size`` pixels (both feature levels, every built-in rule and k-means, 5 tokens), float32.
Each form is compiled first (the compile time, the first call's, is reported apart), then the two are timed
alternately ``--repeats`` times so that a shared machine's load falls on both alike; each call's results are
on the host when its time stops (the function returns NumPy arrays). Prints the median seconds and images/s of
each, the machine, JAX's version and backend, and the load average. Usage:

    python benchmarks/bench_perception.py [--images 16] [--size 112] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from tokdyn.data import scenes
from tokdyn.diagnostics import perception
from tokdyn.models import qwen2_5_vl

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--images", type=int, default=16)
parser.add_argument("--size", type=int, default=112)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen2_5_vl_tiny"
model = qwen2_5_vl.load(FIXTURE, dtype="float32")
size = (args.size, args.size)
processor = qwen2_5_vl.ImageProcessor(min_pixels=min(3136, args.size**2), max_pixels=max(6272, args.size**2))
s = scenes.sprite_scenes(jax.random.key(0), args.images, size=64, scale=(0.25, 0.45))
images, masks = np.asarray(s.images), np.asarray(s.masks)
cfg = perception.Config()
key = jax.random.key(1)


def batched():
    return perception.perception_dynamics(model, key, images, masks, cfg=cfg, processor=processor, size=size)


def loop():
    return [
        perception.perception_dynamics(
            model,
            jax.random.fold_in(key, i),
            images[i : i + 1],
            masks[i : i + 1],
            cfg=cfg,
            processor=processor,
            size=size,
        )
        for i in range(args.images)
    ]


def first(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


compile_s = {"batched": first(batched), "loop": first(loop)}
times = {"batched": [], "loop": []}
for _ in range(args.repeats):
    for name, fn in (("batched", batched), ("loop", loop)):
        t = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t)

load = os.getloadavg()
print(f"machine: {platform.machine()} {os.cpu_count()} CPUs; jax {jax.__version__} ({jax.default_backend()}); float32")
print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
print(f"{args.images} sprite scenes at {size}; {len(cfg.names)} methods x {len(perception.LEVELS)} levels; tiny model")
print(f"{'form':10} {'first call s':>14} {'median s':>10} {'images/s':>10}")
for name in ("batched", "loop"):
    med = float(np.median(times[name]))
    print(f"{name:10} {compile_s[name]:14.2f} {med:10.3f} {args.images / med:10.1f}")
print(f"speed-up of the batched form: {np.median(times['loop']) / np.median(times['batched']):.2f}x")
