"""Visual-token autoencoders: many small models trained in one vmapped call (and in lax.map
chunks of vmapped models) vs two Python loops over models: one dispatching the same jitted
optimiser step (``training.train_step``, the step ``train`` scans) step by step, and a stronger
one calling the same jitted whole training (its own ``lax.scan``) model by model; vmap vs lax.map
for the CNN decoder.

    python benchmarks/bench_vtae.py [--models 1024] [--loop-models 32] [--step-loop-models 16]
                                    [--steps 100] [--chunks 64,256] [--devices 2] [--no-cnn]

``--devices`` forces that many host devices (default: the number of cores) before JAX loads;
``train_many`` is timed on one device and split over all of them with ``shard_map``. The loops
run on one device (each model's steps are serial).

Steady-state figures exclude compilation (reported separately); every timing ends with
block_until_ready (the step loop blocks at the end of each model). The loops are timed on a
subset of models and reported per model.
"""

import argparse
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

from tokdyn import vtae  # noqa: E402
from tokdyn.vtae import training  # noqa: E402


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
    cfg = vtae.Config(vocab_size=5, grid=3, colours=2, mode="gumbel_st", hidden=32, batch_size=16,
                      steps=args.steps, log_every=args.steps // 4)
    hp1 = vtae.Hparams().astype()
    w = jnp.full((5,), 0.2)
    keys = jax.random.split(jax.random.key(0), M)
    hpM = vtae.Hparams.broadcast(M, lr=jnp.linspace(1e-3, 1e-2, M)).astype()
    devs = tuple(jax.local_devices())
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"JAX {jax.__version__}, backend {jax.default_backend()}, {len(devs)} device(s), float32")
    print(f"model: 5 tokens, 3x3x2 grid, Gumbel straight-through, MLP 18-32-5, batch 16, {args.steps} steps")
    rows = []
    # vmapped: one call trains M models (and lax.map over chunks of k vmapped models)
    settings = [(None, devs[:1])] + ([(None, devs)] if len(devs) > 1 else [])
    settings += [(int(v), devs) for v in args.chunks.split(",") if v.strip()]
    for k, d in settings:
        fv, sharding = training.many_fn(cfg, k, d)
        placed = jax.device_put((keys, hpM), sharding)
        c = timed(lambda: fv.lower((w, None), placed).compile())
        run = fv.lower((w, None), placed).compile()
        t = min(timed(run, (w, None), placed) for _ in range(3))
        name = "train_many, one vmapped call" if k is None else f"train_many, lax.map chunks of {k}"
        rows.append((f"{name}, {len(d)} dev", M, c, t, M / t))
    # Python loop over models, each dispatching the same jitted optimiser step once per step
    S = args.step_loop_models
    hps = [jax.tree_util.tree_map(lambda v: v[i], hpM) for i in range(max(L, S))]
    init = jax.jit(lambda k, h: training.init_state(k, cfg, h))
    step = jax.jit(lambda h, run_key, carry, t: training.train_step(run_key, cfg, h, w, None, carry, t)[0])
    ts = [jnp.int32(t) for t in range(cfg.steps)]

    def step_loop():
        for i in range(S):
            carry, run_key = init(keys[i], hps[i])
            for t in ts:
                carry = step(hps[i], run_key, carry, t)
            jax.block_until_ready(carry)

    t0 = time.perf_counter()
    c0, kr0 = init(keys[0], hps[0])
    jax.block_until_ready(step(hps[0], kr0, c0, ts[0]))
    cs = time.perf_counter() - t0  # compile (trace + compile + one call) of init and step
    ts_ = min(timed(step_loop) for _ in range(2))
    rows.append(("Python loop, jitted step", S, cs, ts_, S / ts_))
    # Python loop over models with the same jitted single-model training (a stronger peer)
    one = jax.jit(lambda k, h: training.train(k, cfg, h, w, None))
    c1 = timed(lambda: one.lower(keys[0], hp1).compile())
    one_c = one.lower(keys[0], hp1).compile()
    jax.block_until_ready(one_c(keys[0], hp1))
    t1 = min(timed(lambda: [one_c(keys[i], hps[i]) for i in range(L)]) for _ in range(2))
    rows.append(("Python loop, jitted training", L, c1, t1, L / t1))
    print(f"\n{'method':<44}{'models':>8}{'compile s':>11}{'run s':>9}{'models/s':>11}")
    for name, m, c_, t_, r in rows:
        print(f"{name:<44}{m:>8}{c_:>11.2f}{t_:>9.3f}{r:>11.1f}")
    best = max(rows[:-2], key=lambda r: r[4])
    print(f"best vmapped setting: {best[0]}: {best[4] / rows[-2][4]:.1f}x the jitted-step loop, "
          f"{best[4] / rows[-1][4]:.1f}x the jitted-training loop")
    if args.no_cnn:
        return

    # CNN decoder: vmap vs lax.map over models
    N = args.cnn_models
    ccfg = vtae.Config(vocab_size=51, grid=5, colours=3, mode="gumbel_st", decoder="cnn", channels=8, batch_size=32,
                       steps=args.steps, log_every=args.steps // 4)
    keys = jax.random.split(jax.random.key(1), N)
    hpN = vtae.Hparams.broadcast(N)
    wN = jnp.full((51,), 1 / 51)
    print(f"\nCNN decoder (51 tokens, 5x5x3, two 3x3 convs x 8 channels), {N} models, {args.steps} steps, 1 device")
    print(f"{'method':<28}{'compile s':>11}{'run s':>9}{'models/s':>11}")
    for name, bs in (("vmap", None), ("lax.map batch 16", 16), ("lax.map batch 64", 64)):
        f, sharding = training.many_fn(ccfg, bs, devs[:1])
        placed = jax.device_put((keys, hpN.astype()), sharding)
        c_ = timed(lambda: f.lower((wN, None), placed).compile())
        r = f.lower((wN, None), placed).compile()
        t_ = min(timed(r, (wN, None), placed) for _ in range(2))
        print(f"{name:<28}{c_:>11.2f}{t_:>9.3f}{N / t_:>11.1f}")


if __name__ == "__main__":
    main()
