"""The ``vlm-diagnostics`` study with its batches split over host devices (``tokdyn.models.vlm.devices``: each
generation call and each teacher-forced analysis runs a batch's rows as equal shares on the devices, the
weights on each) against one device, on this machine's CPU.

The study runs in a fresh process per device count (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is
read once, when JAX starts), alternated ``--rounds`` times so that a shared machine's load falls on both alike.
Each process runs the study by its ``main`` into a new directory once (cold: every program compiled, then run)
and then ``--repeats`` times more, each into a new directory (warm: the programs compiled in memory, so the
time is the work alone; every part is computed again, none read back); the compile time is the cold run's
less the warm median. Every call of the study ends with its results on the host (its tables are written from
host arrays), so the clock stops after the devices finish. The tables of the two device counts are compared
first (identical texts, floats within float32 rounding scaled by their magnitude).

The model: the study's random Qwen2.5-VL without ``--model``, at ``--width`` (decoder layers of that width, 8
heads, 2 key/value heads; a vision tower of half the width) and ``--layers``, float32, random weights; the
study: ``--analyses`` (default the accuracy and the mediation: the clean pass, the 8 latent interventions, the
perturbed images and their direct and indirect effects, in three generation calls) over ``--instances``
rendered scenes in batches of ``--batch-size``. Prints the machine, JAX's version and backend, the dtype and
the load average, then one row per device count. Usage:

    python benchmarks/bench_vlm_devices.py [--devices 1 2] [--rounds 2] [--repeats 2] [--instances 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--devices", nargs="+", type=int, default=[1, 2])
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--repeats", type=int, default=2)
parser.add_argument("--instances", type=int, default=8)
parser.add_argument("--batch-size", type=int, default=4)
parser.add_argument("--width", type=int, default=256)
parser.add_argument("--layers", type=int, default=4)
parser.add_argument("--new-tokens", type=int, default=16)
parser.add_argument("--analyses", default="accuracy,mediation")
parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)  # the device count of a child run
parser.add_argument("--out", default="", help=argparse.SUPPRESS)
args = parser.parse_args()


def child() -> None:
    """One process: the study cold, then warm ``--repeats`` times; one JSON line of seconds on stdout."""
    import dataclasses

    import jax

    from tokdyn.studies import vlm_diagnostics as vd
    from tokdyn.studies.vlm_diagnostics import checkpoint

    assert len(jax.local_devices()) == args.child, jax.local_devices()
    tiny = checkpoint.tiny_config

    def wider():  # the study's random model at the benchmark's sizes
        cfg = tiny()
        w, v = args.width, args.width // 2
        vision = dataclasses.replace(
            cfg.vision, depth=4, hidden_size=v, intermediate_size=2 * v + v // 2, num_heads=4, out_hidden_size=w
        )
        half = w // 8 // 2  # 8 heads: M-RoPE's sections of half a head
        text = dataclasses.replace(
            cfg.text,
            hidden_size=w,
            intermediate_size=2 * w + w // 2,
            num_hidden_layers=args.layers,
            num_attention_heads=8,
            num_key_value_heads=2,
            mrope_section=(half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8),
        )
        return dataclasses.replace(cfg, vision=vision, text=text)

    checkpoint.tiny_config = wider
    cfg = dataclasses.replace(
        vd.Config.quick(),
        analyses=tuple(args.analyses.split(",")),
        n_instances=args.instances,
        batch_size=args.batch_size,
        new_tokens=args.new_tokens,
    )
    times = []
    for k in range(1 + args.repeats):
        out = os.path.join(args.out, f"run{k}")
        t = time.perf_counter()
        vd.main(cfg, out, quiet=True, plots=False)
        times.append(time.perf_counter() - t)
    print(json.dumps({"devices": args.child, "seconds": times, "out": os.path.join(args.out, "run0")}))


def compare(got: str, want: str) -> str:
    """The largest difference of the float columns of the study's tables of ``got`` and ``want`` (texts and
    integers asserted equal), relative to each column's largest magnitude."""
    import numpy as np

    from tokdyn import io

    worst = 0.0
    for table in [f"{a}.csv" for a in args.analyses.split(",")] + ["instances.csv"]:
        a, b = io.read_csv(os.path.join(got, table)), io.read_csv(os.path.join(want, table))
        assert list(a) == list(b), table
        for column in b:
            x, y = np.asarray(a[column]), np.asarray(b[column])
            if y.dtype.kind != "f":
                assert np.array_equal(x, y), (table, column)
                continue
            assert np.array_equal(np.isnan(x), np.isnan(y)), (table, column)
            if np.isfinite(y).any():
                scale = max(1.0, float(np.nanmax(np.abs(y))))
                worst = max(worst, float(np.nanmax(np.abs(x - y))) / scale)
    assert worst <= 1e-5, worst
    return f"{worst:.1e}"


def main() -> None:
    import jax

    load = os.getloadavg()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs; jax {jax.__version__} ({jax.default_backend()}); float32"
    )
    print(f"load average (1, 5, 15 min) at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"study: --analyses {args.analyses}, {args.instances} instances in batches of {args.batch_size}, "
        f"{args.new_tokens} new tokens; model: {args.layers} decoder layers of width {args.width} (random, float32)"
    )
    print(f"{args.rounds} rounds of fresh processes, alternated; per process 1 cold run and {args.repeats} warm ones")
    runs: dict = {n: [] for n in args.devices}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in args.devices:
                env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
                out = os.path.join(tmp, f"d{n}-r{r}")
                cmd = [sys.executable, __file__, *sys.argv[1:], "--child", str(n), "--out", out]
                said = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                got = json.loads(said.stdout.strip().splitlines()[-1])
                runs[n].append(got)
                print(f"round {r} devices {n}: " + " ".join(f"{s:.2f}" for s in got["seconds"]) + " s", flush=True)
        base = args.devices[0]
        diffs = {n: compare(runs[n][0]["out"], runs[base][0]["out"]) for n in args.devices}
    import numpy as np

    warm = {n: float(np.median([s for g in runs[n] for s in g["seconds"][1:]])) for n in args.devices}
    cold = {n: float(np.median([g["seconds"][0] for g in runs[n]])) for n in args.devices}
    print(
        f"{'devices':>7s} {'warm s (median)':>16s} {'warm range s':>14s} {'compile s':>10s} "
        f"{'instances/s':>12s} {'speed-up':>9s} {'tables vs ' + str(base):>16s}"
    )
    for n in args.devices:
        every = [s for g in runs[n] for s in g["seconds"][1:]]
        print(
            f"{n:7d} {warm[n]:16.2f} {min(every):6.2f}-{max(every):<7.2f} {cold[n] - warm[n]:10.2f} "
            f"{args.instances / warm[n]:12.2f} {warm[base] / warm[n]:8.2f}x {diffs[n]:>16s}"
        )
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min) at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    child() if args.child else main()
