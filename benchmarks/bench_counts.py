"""The counts table: each learned model's work per optimiser step from XLA's cost analysis (flops
and bytes accessed of one model's step, ``rows.training.step_cost``: ``jax.jit(train.make_step(
trainer)).lower(...)``, loops inside a step counted once, as XLA counts them) at the sizes of the
suite's training rows (``rows.training.learned_models``; ``--smoke``: their tiny sizes), with its
parameter count, on the machine it runs on (named in the header with JAX's version, the backend
and the dtype). ``--compiled`` analyses the compiled program (what the suite's rows use off
``--smoke``; minutes of compiling on a CPU), else the lowered one (no compile). ``--host-bytes
NAMES`` (comma-separated words of the models' names) also measures the bytes ``train_many`` moves
to the host per model-step at the smoke sizes (``counting.host_bytes``: two models, the difference
of a 2-call and a 6-call run).

    python benchmarks/bench_counts.py --counts [--smoke] [--compiled] [--host-bytes autoencoder]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import counting  # noqa: E402
from rows.base import git_commit  # noqa: E402
from rows.training import learned_models, step_cost  # noqa: E402


def counts(smoke: bool, compiled: bool, host: str) -> list[dict]:
    """One row per learned model (module docstring)."""
    from tokdyn import train

    s = types.SimpleNamespace(args=types.SimpleNamespace(smoke=smoke))
    words = [w.strip().lower() for w in host.split(",") if w.strip()]
    rows = []
    for name, make in learned_models(s, 1).items():
        t = time.perf_counter()
        tr, pool, keys, hp, strategy, k = make()
        cost = step_cost(tr, pool, keys, hp, compiled=compiled)
        shapes = jax.eval_shape(lambda k_, h: train.init_states(tr, k_, h), keys, hp)[0]
        params = sum(int(np.prod(a.shape[1:])) for a in jax.tree_util.tree_leaves(shapes.params))
        row = dict(
            model=name,
            params=params,
            flops_per_step=cost.get("xla_flops", float("nan")),
            bytes_accessed_per_step=cost.get("xla_bytes", float("nan")),
            strategy=strategy,
            seconds=time.perf_counter() - t,
        )
        if any(w in name.lower() for w in words):
            row["host"] = counting.host_bytes(name)
        rows.append(row)
    return rows


def main(argv=None):
    """Print the counts table (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", action="store_true", help="print the counts table (the only table)")
    p.add_argument("--smoke", action="store_true", help="the suite's tiny sizes")
    p.add_argument("--compiled", action="store_true", help="analyse the compiled program (compiles)")
    p.add_argument("--host-bytes", default="", help="models (words of their names) whose host bytes to measure")
    a = p.parse_args(argv)
    dev = jax.devices()[0]
    print(
        f"# counts: commit {git_commit()}, {time.strftime('%Y-%m-%d %H:%M')}, JAX {jax.__version__}, backend "
        f"{jax.default_backend()} ({getattr(dev, 'device_kind', str(dev))}, {jax.device_count()} device(s)), host "
        f"{platform.processor() or platform.machine()} {os.cpu_count()} cores, dtype float32, matmul precision "
        f"{jax.config.jax_default_matmul_precision}, sizes {'smoke' if a.smoke else 'study'}, cost analysis of the "
        f"{'compiled' if a.compiled else 'lowered'} step"
    )
    rows = counts(a.smoke, a.compiled, a.host_bytes)
    print(
        "| model | parameters | XLA flops / step | XLA bytes accessed / step | host bytes / model-step (smoke sizes) |"
    )
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        h = r.get("host")
        hb = (
            f"{h['per_call_bytes'] / (h['models'] * h['steps_per_call']):.0f} ({h['per_call_bytes']:.0f} B per "
            f"call of {h['steps_per_call']} steps x {h['models']} models: {len(h['columns'])} curve columns x 4 B "
            "per model)"
            if h
            else "not measured"
        )
        print(
            f"| {r['model']} | {r['params']:,} | {r['flops_per_step']:,.0f} | {r['bytes_accessed_per_step']:,.0f} "
            f"| {hb} |"
        )
    print(f"# {sum(r['seconds'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
