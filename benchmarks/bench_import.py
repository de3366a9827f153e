"""What ``import tokdyn`` and the README's first example's modules cost over ``import jax``.

Each repetition is a fresh interpreter that times, with ``time.perf_counter``, ``import jax`` and
then ``import tokdyn`` plus ``from tokdyn import data, dynamics, metrics`` (what the README's first
example imports) and the engine's three modules (``tokdyn.engine`` itself loads them on first
use; ``execute``, ``sweep`` and ``runs`` are what every sweep and study runs on), and lists the heavy
third-party packages those imports loaded (matplotlib, scipy, rich, flax, optax, chex, ...).
The figure is the median of the second interval over the repetitions, with its spread; the
machine's load average is printed beside it (``os.getloadavg``). ``--importtime`` adds the
slowest lines of ``python -X importtime`` for the same imports, by cumulative time.

``--cold`` repeats it with an empty bytecode cache in each interpreter (a fresh clone's first import).

    python benchmarks/bench_import.py --repeats 15 --importtime 30 [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

CORE = ("data", "dynamics", "metrics")
ENGINE = ("tokdyn.engine.execute", "tokdyn.engine.sweep", "tokdyn.engine.runs")
HEAVY = (
    "matplotlib",
    "scipy",
    "rich",
    "flax",
    "optax",
    "chex",
    "pandas",
    "sklearn",
    "numba",
    "tensorboardX",
    "orbax",
    "PIL",
)

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import jax
t1 = time.perf_counter()
import tokdyn
from tokdyn import {modules}
import {engine}
t2 = time.perf_counter()
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"jax_s": t1 - t0, "tokdyn_s": t2 - t1, "heavy": heavy, "modules": len(sys.modules)}}))
"""


def child_code(modules=CORE) -> str:
    """The program each fresh interpreter runs: the two intervals and the heavy packages loaded."""
    return CHILD.format(modules=", ".join(modules), engine=", ".join(ENGINE), heavy=HEAVY)


def measure(repeats: int, env: dict, cold: bool = False) -> list[dict]:
    """``repeats`` fresh interpreters' results (one JSON object each); ``cold``: each with an empty
    bytecode cache (``PYTHONPYCACHEPREFIX`` a new empty folder), so every module is compiled from
    source, as on a fresh clone's first import (JAX's own modules too: only the second interval is
    read)."""
    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as empty:
            child_env = dict(env, PYTHONPYCACHEPREFIX=empty) if cold else env
            done = subprocess.run(
                [sys.executable, "-c", child_code()], env=child_env, capture_output=True, text=True, check=True
            )
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def importtime(top: int, env: dict) -> list[tuple[int, int, str]]:
    """The ``top`` slowest lines of ``-X importtime`` by cumulative microseconds, below ``import jax``."""
    code = "import jax\nimport tokdyn\nfrom tokdyn import " + ", ".join(CORE) + "\nimport " + ", ".join(ENGINE)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    rows = []
    seen_jax = False
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = (s.strip() for s in line[len("import time:") :].split("|"))
        if name.strip() == "jax":  # the first top-level import; everything after it is tokdyn's
            seen_jax = True
            continue
        if seen_jax:
            rows.append((int(cum_us), int(self_us), name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main(argv=None) -> None:
    """Print the table (and the ``-X importtime`` lines) to stdout."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="fresh interpreters (default 15)")
    p.add_argument("--importtime", type=int, default=0, help="print this many -X importtime lines (default none)")
    p.add_argument("--cold", action="store_true", help="also time each import with an empty bytecode cache")
    args = p.parse_args(argv)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    import jax

    print(f"python {platform.python_version()}, JAX {jax.__version__}, {platform.machine()}, {os.cpu_count()} cores")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = measure(args.repeats, env)
    cold = measure(args.repeats, env, cold=True) if args.cold else []
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n{args.repeats} fresh interpreters; seconds, median [min, max] (interquartile range)")
    for label, found in (("", rows), ("with an empty bytecode cache: ", cold)):
        if not found:
            continue
        jax_s = np.array([r["jax_s"] for r in found])
        tok_s = np.array([r["tokdyn_s"] for r in found])
        for name, v in (("import jax", jax_s), (f"import tokdyn + {', '.join(CORE)} + the engine over it", tok_s)):
            q1, q3 = np.percentile(v, [25, 75])
            print(f"  {label}{name}: {np.median(v):.3f} [{v.min():.3f}, {v.max():.3f}] ({q1:.3f}-{q3:.3f})")
    print(
        f"  heavy packages loaded: {', '.join(rows[-1]['heavy']) or 'none'}; modules in sys.modules: {rows[-1]['modules']}"
    )
    if args.importtime:
        print(f"\n-X importtime, after import jax, the {args.importtime} slowest by cumulative time (us):")
        print(f"{'cumulative':>11} {'self':>9}  module")
        for cum, self_us, name in importtime(args.importtime, env):
            print(f"{cum:>11} {self_us:>9}  {name}")


if __name__ == "__main__":
    main()
