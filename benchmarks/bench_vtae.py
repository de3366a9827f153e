"""Visual-token autoencoders: many small models trained together by ``tokdyn.train.train_many``
(vmapped, and in lax.map chunks of vmapped models) vs two Python loops over models: one
dispatching the same jitted optimiser step (``train.make_step`` of ``vtae.trainer(cfg)``, the step
``train_many`` scans) step by step, and a stronger one calling the same jitted whole training
(``train.make_train``, its own ``lax.scan``) model by model; vmap vs lax.map for the CNN decoder.

    python benchmarks/bench_vtae.py [--models 1024] [--loop-models 32] [--step-loop-models 16]
                                    [--steps 100] [--chunks 64,256] [--devices 2] [--no-cnn]

``--devices`` forces that many host devices (default: the number of cores) before JAX loads;
``train_many`` is timed on one device and split over all of them with ``shard_map``. The loops
run on one device (each model's steps are serial).

Steady-state figures exclude compilation (reported separately: for ``train_many``, its first
call's time less a steady call's); every timing ends with
block_until_ready (the step loop blocks at the end of each model). The loops are timed on a
subset of models and reported per model.
"""

import argparse
import dataclasses
import os
import platform
import sys
import time

_dev = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), None)
if _dev is None and "--devices" in sys.argv:
    _dev = sys.argv[sys.argv.index("--devices") + 1]
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={_dev or os.cpu_count()}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tokdyn import train  # noqa: E402
from tokdyn.models import vtae  # noqa: E402


def timed(fn, *args):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=1024)
    ap.add_argument("--loop-models", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--cnn-models", type=int, default=256)
    ap.add_argument("--step-loop-models", type=int, default=16)
    ap.add_argument("--chunks", default="64,256", help="comma list of train_many batch_size values")
    ap.add_argument("--no-cnn", action="store_true", help="skip the CNN-decoder comparison")
    ap.add_argument("--devices", type=int, default=os.cpu_count(), help="forced host devices (read before JAX loads)")
    args = ap.parse_args()
    M, L = args.models, args.loop_models
    cfg = vtae.Config(
        vocab_size=5,
        grid=3,
        colours=2,
        mode="gumbel_st",
        hidden=32,
        batch_size=16,
        train=dataclasses.replace(vtae.Config().train, steps=args.steps, steps_per_call=args.steps // 4),
    )
    tr, data = vtae.trainer(cfg), vtae.inputs(cfg)
    hp1 = vtae.Hparams().astype()
    keys = jax.random.split(jax.random.key(0), M)
    hpM = train.broadcast(vtae.Hparams(learning_rate=jnp.linspace(1e-3, 1e-2, M)), M)
    devs = tuple(jax.local_devices())
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"JAX {jax.__version__}, backend {jax.default_backend()}, {len(devs)} device(s), float32"
    )
    print(
        f"model: 5 tokens, 3x3x2 grid, Gumbel straight-through, MLP 18-32-5, batch 16, {args.steps} steps "
        f"({cfg.n_logs} compiled calls of train_many)"
    )
    rows = []
    # vmapped: train_many trains M models per call (and lax.map over chunks of k vmapped models); the
    # first call compiles (its time minus a steady call's is reported as compile)
    settings = [(None, devs[:1])] + ([(None, devs)] if len(devs) > 1 else [])
    settings += [(int(v), devs) for v in args.chunks.split(",") if v.strip()]
    for k, d in settings:
        run = lambda: train.train_many(tr, data, keys, hpM, execution=train.Execution(devices=d, batch_size=k)).state
        first = timed(run)
        t = min(timed(run) for _ in range(3))
        name = "train_many, vmapped" if k is None else f"train_many, lax.map chunks of {k}"
        rows.append((f"{name}, {len(d)} dev", M, first - t, t, M / t))
    # Python loop over models, each dispatching the layer's jitted optimiser step once per step
    S = args.step_loop_models
    hps = [jax.tree_util.tree_map(lambda v: v[i], hpM) for i in range(max(L, S))]
    init = jax.jit(lambda k, h: (train.init_state(tr, k, h), tr.keys(k)[1]))
    step = jax.jit(lambda state, run_key: train.make_step(tr)(state, data, run_key)[0])

    def step_loop():
        for i in range(S):
            state, run_key = init(keys[i], hps[i])
            for _ in range(cfg.train.steps):
                state = step(state, run_key)
            jax.block_until_ready(state)

    t0 = time.perf_counter()
    s0, kr0 = init(keys[0], hps[0])
    jax.block_until_ready(step(s0, kr0))
    cs = time.perf_counter() - t0  # compile (trace + compile + one call) of init and step
    ts_ = min(timed(step_loop) for _ in range(2))
    rows.append(("Python loop, jitted step", S, cs, ts_, S / ts_))
    # Python loop over models with the same jitted single-model training (a stronger peer)
    one = jax.jit(train.make_train(tr))
    c1 = timed(lambda: one.lower(keys[0], hp1, data).compile())
    one_c = one.lower(keys[0], hp1, data).compile()
    jax.block_until_ready(one_c(keys[0], hp1, data))
    t1 = min(timed(lambda: [one_c(keys[i], hps[i], data) for i in range(L)]) for _ in range(2))
    rows.append(("Python loop, jitted training", L, c1, t1, L / t1))
    print(f"\n{'method':<44}{'models':>8}{'compile s':>11}{'run s':>9}{'models/s':>11}")
    for name, m, c_, t_, r in rows:
        print(f"{name:<44}{m:>8}{c_:>11.2f}{t_:>9.3f}{r:>11.1f}")
    best = max(rows[:-2], key=lambda r: r[4])
    print(
        f"best vmapped setting: {best[0]}: {best[4] / rows[-2][4]:.1f}x the jitted-step loop, "
        f"{best[4] / rows[-1][4]:.1f}x the jitted-training loop"
    )
    if args.no_cnn:
        return

    # CNN decoder: vmap vs lax.map over models
    N = args.cnn_models
    ccfg = vtae.Config(
        vocab_size=51,
        grid=5,
        colours=3,
        mode="gumbel_st",
        decoder="cnn",
        channels=8,
        batch_size=32,
        train=dataclasses.replace(vtae.Config().train, steps=args.steps, steps_per_call=args.steps // 4),
    )
    keys = jax.random.split(jax.random.key(1), N)
    hpN = train.broadcast(vtae.Hparams(), N)
    ctr, cdata = vtae.trainer(ccfg), vtae.inputs(ccfg)
    print(f"\nCNN decoder (51 tokens, 5x5x3, two 3x3 convs x 8 channels), {N} models, {args.steps} steps, 1 device")
    print(f"{'method':<28}{'compile s':>11}{'run s':>9}{'models/s':>11}")
    for name, bs in (("vmap", None), ("lax.map batch 16", 16), ("lax.map batch 64", 64)):
        run = lambda: (
            train.train_many(ctr, cdata, keys, hpN, execution=train.Execution(devices=devs[:1], batch_size=bs)).state
        )
        first = timed(run)
        t_ = min(timed(run) for _ in range(2))
        print(f"{name:<28}{first - t_:>11.2f}{t_:>9.3f}{N / t_:>11.1f}")


if __name__ == "__main__":
    main()
