"""End-to-end wall time of the default study, each in a fresh process, side by side:

  published way     benchmarks/published_way.py (NumPy per run + scikit-learn + SciPy + pyplot),
                    given the study's default configuration (td.Config()) on its command line
  tokdyn cold       `tokdyn study token-dynamics` with an empty persistent compilation cache
  tokdyn warm       the same command again, the cache now filled
  tokdyn no-plots   warm, --no-plots (how much of the wall time is matplotlib)
  floor             a fresh process that imports tokdyn's study module and JAX and runs one
                    trivial jitted function: what no study can go below on this machine

Each is repeated (--repeats, default 3) and the best and median reported, with the simulate time
(compile included) that tokdyn records in config.json; ratios use the medians of this run. Usage: ``python benchmarks/bench_study.py [--repeats 3]``.
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


def peer_args() -> list:
    """The study's default configuration as published_way.py's options: the identical workload."""
    from tokdyn.studies import token_dynamics as td

    c = td.Config()
    if (
        c.centers != "uniform"
        or c.init != "data"
        or tuple(c.methods) != ("baseline", "inertia", "repulsion", "inertia+repulsion")
    ):
        raise SystemExit("published_way.py implements uniform centres, Forgy tokens and the four published methods")
    args = [
        "--seeds",
        c.seeds,
        "--noise",
        *c.noise,
        "--n-clusters",
        *c.n_clusters,
        "--dim",
        c.dim,
        "--points-per-cluster",
        c.points_per_cluster,
        "--center-box",
        c.center_box,
        "--n-tokens",
        c.n_tokens,
        "--n-steps",
        c.n_steps,
        "--tol",
        c.tol,
        "--temperature",
        c.temperature,
    ]
    return [str(a) for a in args]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tokdyn_bench_")
    peer = [sys.executable, os.path.join(HERE, "published_way.py"), f"{tmp}/pub"] + peer_args()
    tokdyn = [sys.executable, "-m", "tokdyn.cli", "study", "token-dynamics", "--quiet"]
    results = {"published way": [], "tokdyn cold": [], "tokdyn warm": [], "tokdyn warm, --no-plots": [], "floor": []}
    floor = [
        sys.executable,
        "-c",
        "import jax, tokdyn.studies.token_dynamics; jax.jit(lambda x: x + 1)(1.0).block_until_ready()",
    ]
    sim = {"tokdyn cold": [], "tokdyn warm": []}
    for i in range(a.repeats):
        results["published way"].append(wall(peer))
        cache = f"{tmp}/cache{i}"
        env = dict(os.environ, TOKDYN_CACHE_DIR=cache)
        for label in ("tokdyn cold", "tokdyn warm"):
            results[label].append(wall(tokdyn + ["--out", f"{tmp}/td"], env=env))
            sim[label].append(json.load(open(f"{tmp}/td/config.json"))["timings"]["simulate_s"])
        results["tokdyn warm, --no-plots"].append(wall(tokdyn + ["--out", f"{tmp}/td2", "--no-plots"], env=env))
        results["floor"].append(wall(floor))
    shutil.rmtree(tmp, ignore_errors=True)
    import jax

    pub = statistics.median(results["published way"])
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__}; "
        f"backend cpu; dtype float32; {time.strftime('%Y-%m-%d')}; {a.repeats} repeats of a fresh process"
    )
    print(
        f"| {'command':<26} | {'best s':>7} | {'median s':>8} | {'median / published':>18} | "
        f"{'simulate s (compile incl.)':>27} |"
    )
    print(f"|{'-' * 28}|{'-' * 9}|{'-' * 10}|{'-' * 20}|{'-' * 29}|")
    for label, ts in results.items():
        m = statistics.median(ts)
        s = f"{statistics.median(sim[label]):.2f}" if label in sim else "-"
        print(f"| {label:<26} | {min(ts):>7.2f} | {m:>8.2f} | {m / pub:>18.2f} | {s:>27} |")


if __name__ == "__main__":
    main()
