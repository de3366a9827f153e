"""End-to-end wall time of the default study, each in a fresh process, side by side:

  published way     benchmarks/published_way.py (NumPy per run + scikit-learn + SciPy + pyplot)
  tokdyn cold       `tokdyn study token-dynamics` with an empty persistent compilation cache
  tokdyn warm       the same command again, the cache now filled
  tokdyn no-plots   warm, --no-plots (how much of the wall time is matplotlib)

Each is repeated (--repeats, default 3) and the median reported, with the compile/simulate split
that tokdyn records in config.json. Usage: ``python benchmarks/bench_study.py [--repeats 3]``.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def wall(cmd, env=None):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tokdyn_bench_")
    tokdyn = [sys.executable, "-m", "tokdyn.cli", "study", "token-dynamics", "--quiet"]
    results = {"published way": [], "tokdyn cold": [], "tokdyn warm": [], "tokdyn warm, --no-plots": []}
    sim = {"tokdyn cold": [], "tokdyn warm": []}
    for i in range(a.repeats):
        results["published way"].append(wall([sys.executable, os.path.join(HERE, "published_way.py"), f"{tmp}/pub"]))
        cache = f"{tmp}/cache{i}"
        env = dict(os.environ, TOKDYN_CACHE_DIR=cache)
        for label in ("tokdyn cold", "tokdyn warm"):
            results[label].append(wall(tokdyn + ["--out", f"{tmp}/td"], env=env))
            sim[label].append(json.load(open(f"{tmp}/td/config.json"))["timings"]["simulate_s"])
        results["tokdyn warm, --no-plots"].append(wall(tokdyn + ["--out", f"{tmp}/td2", "--no-plots"], env=env))
    shutil.rmtree(tmp, ignore_errors=True)
    import jax

    pub = statistics.median(results["published way"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
          f"backend cpu; dtype float32; {a.repeats} repeats, median wall time of a fresh process")
    print(f"| {'command':<26} | {'wall s':>7} | {'vs published':>12} | {'simulate s (compile incl.)':>27} |")
    print(f"|{'-' * 28}|{'-' * 9}|{'-' * 14}|{'-' * 29}|")
    for label, ts in results.items():
        m = statistics.median(ts)
        s = f"{statistics.median(sim[label]):.2f}" if label in sim else "-"
        print(f"| {label:<26} | {m:>7.2f} | {pub / m:>11.1f}x | {s:>27} |")


if __name__ == "__main__":
    main()
