"""Speed of the scenes study's two workloads: the fixed token dynamics on per-pixel features of
sprite scenes, and training the learned Slot Attention over seeds.

Workloads (the defaults of ``tokdyn study scenes``): 32 x 32 sprite scenes with 2-4 objects,
features ``(y, x, r, g, b)`` of the 1024 pixels, K = 5 tokens started at random pixels.

  fixed dynamics  the baseline rule (temperature 0.03, at most 50 steps, tol 1e-4) on ``--scenes``
                  scenes:
                  tokdyn       ``jit(vmap(dynamics.run))`` over the scenes, features included
                  NumPy loop   the same rule in float64 NumPy, one scene after another, from the
                               same initial tokens (the labels are checked equal)
  training        optimiser steps of ``--seeds`` Slot Attention models (the study's default
                  model: 2 conv layers, MLP decoder, batch 16), each step on its own batch:
                  (``tokdyn.train.train_many`` of ``slots.trainer``)
                  loop         ``strategy="loop"``: one compiled call per model and step, the
                               models spread over the devices (the CPU default,
                               ``slots.default_strategy``)
                  vmap         ``strategy="step"``: the models vmapped in one call per step
                  lax.map      ``strategy="step", batch_size=1``: the models mapped one by one

Compile time is measured apart (the first call, which compiles and runs) and excluded from the
rates; every timing ends on host values; best and median of ``--repeats`` (for training: calls of
``--steps`` steps each, timed between the logs of consecutive calls). Usage:

    python benchmarks/bench_slots.py [--scenes 1000] [--seeds 4] [--steps 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from common import timed  # noqa: E402

from tokdyn import dynamics, train  # noqa: E402
from tokdyn.data import scenes  # noqa: E402
from tokdyn.models import slots  # noqa: E402
from tokdyn.studies import object_discovery as study  # noqa: E402

TEMPERATURE, N_STEPS, TOL = 0.03, 50, 1e-4


def numpy_rule(x, tokens, temperature, n_steps, tol):
    """The baseline rule in float64 NumPy: soft assignment over tokens, tokens to the weighted
    means, until no coordinate moves more than ``tol``; hard labels at the final tokens."""
    t = tokens.astype(np.float64)
    x = x.astype(np.float64)
    for _ in range(n_steps):
        d = ((x[:, None, :] - t[None, :, :]) ** 2).sum(-1)  # (N, K)
        logits = -d / temperature
        a = np.exp(logits - logits.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        new = (a.T @ x) / (a.sum(0)[:, None] + 1e-8)
        delta = np.abs(new - t).max()
        t = new
        if delta < tol:
            break
    return ((x[:, None, :] - t[None, :, :]) ** 2).sum(-1).argmin(1)


def bench_fixed(n, repeats):
    sc = scenes.sprite_scenes(jax.random.key(0), n)
    x = scenes.pixel_features(sc.images)  # (n, N, 5)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(n))
    tokens0 = jax.vmap(lambda k, xi: dynamics.init_tokens(k, 5, 5, method="data", x=xi))(keys, x)
    hp = dynamics.Hparams(temperature=TEMPERATURE)
    fn = jax.jit(jax.vmap(lambda xi, ti: dynamics.run(xi, ti, hp, n_steps=N_STEPS, tol=TOL).labels))
    t = time.perf_counter()
    labels = jax.block_until_ready(fn(x, tokens0))
    compile_s = time.perf_counter() - t
    best, med = timed(lambda: jax.block_until_ready(fn(x, tokens0)), repeats)
    xn, tn = np.asarray(x), np.asarray(tokens0)
    m = min(n, 200)
    nb, nm = timed(lambda: [numpy_rule(xn[i], tn[i], TEMPERATURE, N_STEPS, TOL) for i in range(m)], repeats)
    ref = np.stack([numpy_rule(xn[i], tn[i], TEMPERATURE, N_STEPS, TOL) for i in range(m)])
    agree = float(np.mean(ref == np.asarray(labels)[:m]))
    return [
        ("fixed dynamics", "tokdyn jit(vmap)", n / best, n / med, compile_s, f"labels equal on {agree:.2%} of pixels"),
        ("fixed dynamics", "NumPy float64 loop", m / nb, m / nm, 0.0, "the reference"),
    ]


STRATEGIES = {"loop": ("loop", None), "vmap": ("step", None), "map": ("step", 1)}  # name -> (strategy, batch_size)


def train_rate(name, seeds, steps, calls):
    """``(best, median, first)``: model-steps/s of strategy ``name`` over ``calls`` calls of ``steps``
    steps after a first call that compiles (each interval between two ``on_log`` callbacks, i.e.
    after a call's logs reached the host, is one timed repetition), and the first call's seconds."""
    cfg = study.Config()
    pool = study.split(dataclasses_replace(cfg, n_train=512), "train").images
    sc = cfg.slot_config("slot_attention")
    many = dataclasses_replace(
        sc, train=dataclasses_replace(sc.train, steps=1000 * steps, steps_per_call=steps), seeds=seeds
    )
    strategy, batch_size = STRATEGIES[name]
    stamps = [time.perf_counter()]
    train.train_many(
        slots.trainer(many),
        pool,
        *slots.models(many),
        max_calls=calls + 1,
        execution=train.Execution(strategy, batch_size=batch_size, vectorised_init=False),
        on_log=lambda step, logs: stamps.append(time.perf_counter()),
    )
    dt = np.diff(stamps[1:])
    return seeds * steps / dt.min(), seeds * steps / np.median(dt), stamps[1] - stamps[0]


def bench_training(seeds, steps, calls, timeout):
    """Each strategy in a child process (the same script, ``--strategy``), killed after
    ``timeout`` seconds, so that a strategy that hangs (as vmapped initialisation did) still gives a table."""
    rows = []
    for name, strategy in (
        ("loop (the CPU default)", "loop"),
        ("vmap (step)", "vmap"),
        ("lax.map (step, batch_size=1)", "map"),
    ):
        cmd = [
            sys.executable,
            __file__,
            "--strategy",
            strategy,
            "--seeds",
            str(seeds),
            "--steps",
            str(steps),
            "--repeats",
            str(calls),
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
            best, med, first = json.loads(out.strip().splitlines()[-1])
            rows.append(("training", name, best, med, first, "-"))
        except subprocess.TimeoutExpired:
            rows.append(("training", name, float("nan"), float("nan"), float("nan"), f"did not finish in {timeout} s"))
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2, help="optimiser steps per timed call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per training strategy")
    ap.add_argument("--strategy", default=None, help=argparse.SUPPRESS)  # the child of bench_training
    args = ap.parse_args(argv)
    if args.strategy is not None:
        print(json.dumps(train_rate(args.strategy, args.seeds, args.steps, args.repeats)))
        return
    rows = bench_fixed(args.scenes, args.repeats) + bench_training(args.seeds, args.steps, args.repeats, args.timeout)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}, backend "
        f"{jax.default_backend()}, {len(jax.devices())} device(s), float32; {time.strftime('%Y-%m-%d')}"
    )
    print("| workload | implementation | per s (best) | per s (median) | compile + first call s | check |")
    print("|---|---|---:|---:|---:|---|")
    for w, impl, best, med, comp, chk in rows:
        unit = "scenes" if w == "fixed dynamics" else "model-steps"
        if not np.isfinite(best):
            print(f"| {w} | {impl} | - | - | - | {chk} |")
            continue
        print(f"| {w} | {impl} | {best:,.1f} {unit} | {med:,.1f} | {comp:.1f} | {chk} |")


if __name__ == "__main__":
    main()
