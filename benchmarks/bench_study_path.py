"""The default token-dynamics study from its kernel to the command line, side by side in one run:

  kernel alone        ``dynamics.run`` on ready data (a pool of the study's datasets and Forgy tokens),
                      tokens and steps only, through ``execute.map_runs`` at the command's chunk
                      (2,048 runs per device) on every core as a host device, as the command runs
  kernel + metrics    the same with the study's labels and metrics (ARI, NMI, SSE, collapse)
  study path          ``tokdyn.studies.token_dynamics.simulate``: ``sweep.run`` of ``ClusterRun``
                      (the data drawn in the program, the run, labels and metrics per chunk), at a
                      whole number of the command's chunks (before the chunks were balanced,
                      ``execute.balanced_chunk``, a last, short chunk was padded to the chunk's
                      shape and computed whole: 456 seeds, 16,416 runs, cost 5 chunks of 4,096)
  CLI, S seeds        ``tokdyn study token-dynamics --seeds S`` in a fresh process, its persistent
                      compilation cache filled; the marginal rate is the runs between the smallest
                      and the largest S over the time between them; config.json's timings
                      (simulate, statistics, plots) with each
  CLI cold / warm     the default study (30 seeds) with an empty cache, then again with it filled
  floor               a fresh process importing JAX and the study's module, running one jitted add
  published way       ``published_way.py`` (NumPy per run + scikit-learn + SciPy + pyplot) at the
                      study's configuration, at the smallest and largest of ``--published-seeds``:
                      its wall time and marginal rate (it runs no tokdyn: once a repeat, shared by the trees)

The first three rows run in a child process with ``--xla_force_host_platform_device_count`` set
to the core count (as ``tokdyn`` sets it), compile excluded (one call first), the median of
``--repeats`` calls. ``--trees`` compares package trees in one run, interleaved row by row (each
row for every tree before the next row, the order of the trees reversed every other repeat):
``before=/path/to/tree,after=`` (an empty path: the installed package); a tree is put first on
``PYTHONPATH`` and every process runs from a scratch directory. The machine's load average is
recorded before and after each repeat. Usage::

    python benchmarks/bench_study_path.py [--repeats 3] [--trees before=DIR,after=] [--out DIR]
"""

from __future__ import annotations

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
PER_SEED = 36  # runs per seed of the default study: 4 methods x 3 K x 3 noise levels


# ---------------------------------------------------------------------------------------------- in one process


def child(repeats: int, runs: int, seeds: int) -> dict:
    """The in-process rows (kernel alone, kernel + metrics, study path), interleaved repeat by
    repeat; runs in a process whose XLA_FLAGS give one host device per core."""
    sys.path.insert(0, HERE)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rows import dynamics as rd
    from tokdyn import dynamics
    from tokdyn.engine import execute
    from tokdyn.studies import token_dynamics as td

    n_dev = len(jax.local_devices())
    chunk = execute.default_chunk_size(n_dev)  # the command's chunk
    n_pool = 2048
    pool = rd.make_pool(n_pool)
    idx = ((np.arange(runs) // 4) % n_pool).astype(np.int32)
    args = dict(idx=idx, params=rd.params_for(runs))
    cfg = td.Config()

    def kernel(p, run):
        i = run["idx"]
        r = dynamics.run(p["x"][i], p["tokens0"][i], run["params"], mask=p["mask"][i], n_steps=cfg.n_steps, tol=cfg.tol)
        return dict(steps=r.steps, tokens=jnp.sum(r.tokens))

    study = td.Config(seeds=seeds)
    rows = {
        "kernel alone": (lambda: execute.map_runs(kernel, args, shared=pool, chunk_size=chunk), runs),
        "kernel + metrics": (
            lambda: execute.map_runs(rd.GIVEN["while"], args, shared=pool, chunk_size=chunk),
            runs,
        ),
        "study path (simulate)": (lambda: td.simulate(study), study.runs()),
    }
    first = {}
    for name, (f, _) in rows.items():
        t = time.perf_counter()
        f()
        first[name] = time.perf_counter() - t
    times = {name: [] for name in rows}
    for _ in range(repeats):
        for name, (f, _) in rows.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return dict(
        devices=n_dev,
        chunk=chunk,
        jax=jax.__version__,
        tokdyn=os.path.dirname(td.__file__),
        rows={
            name: dict(runs=n, seconds=times[name], first_s=first[name], median_rate=n / statistics.median(times[name]))
            for name, (_, n) in rows.items()
        },
    )


# ---------------------------------------------------------------------------------------------- fresh processes


def env_for(tree: str, **extra) -> dict:
    env = dict(os.environ, **extra)
    if tree:
        env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def wall(cmd, env, cwd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def steps(a, scratch: str, i: int) -> list:
    """The fresh-process rows of repeat ``i``, in order, each ``(label, measure)``: ``measure(name,
    tree)`` runs it for one tree (its own compilation cache and output directories) and returns
    the row's dict. Each row is measured for every tree before the next row starts, so that the
    trees meet the same load."""
    host = dict(XLA_FLAGS=f"--xla_force_host_platform_device_count={os.cpu_count()}")
    cli = [sys.executable, "-m", "tokdyn.cli", "study", "token-dynamics", "--quiet"]
    counter = iter(range(10**6))

    def env(name, tree):
        return env_for(tree, TOKDYN_CACHE_DIR=os.path.join(scratch, f"cache-{name}-{i}"))

    def study(name, tree, *extra):
        d = os.path.join(scratch, f"td-{name}-{i}-{next(counter)}")  # a new directory a call
        t = wall(cli + list(extra) + ["--out", d], env(name, tree), scratch)
        return dict(wall_s=t, timings=json.load(open(os.path.join(d, "config.json")))["timings"])

    def in_process(name, tree):
        r = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "--repeats", str(a.child_repeats)]
            + ["--runs", str(a.runs), "--child-seeds", str(a.child_seeds)],
            check=True,
            env=env_for(tree, **host),
            cwd=scratch,
            capture_output=True,
            text=True,
        )
        return json.loads(r.stdout.strip().splitlines()[-1])

    chunk = 2048 * (os.cpu_count() or 1)  # the command's chunk on a CPU (engine.execute.CPU_CHUNK a device)

    def seeds(s):
        def measure(name, tree):  # the cache filled with the chunk shapes of s seeds (fewer where that does)
            study(name, tree, "--seeds", str(min(s, -(-chunk // PER_SEED) + 6)))
            return dict(study(name, tree, "--seeds", str(s)), runs=s * PER_SEED)

        return measure

    floor = "import jax, tokdyn.studies.token_dynamics; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
    return [
        ("in_process", in_process),
        # the default study (30 seeds): cold, then warm (the cache filled by the cold call)
        ("cli cold", lambda name, tree: study(name, tree)),
        ("cli warm", lambda name, tree: study(name, tree)),
        ("cli warm, --no-plots", lambda name, tree: study(name, tree, "--no-plots")),
        *[(f"cli {s} seeds", seeds(s)) for s in a.seeds],
        ("floor", lambda name, tree: dict(wall_s=wall([sys.executable, "-c", floor], env(name, tree), scratch))),
        (
            "import jax",
            lambda name, tree: dict(wall_s=wall([sys.executable, "-c", "import jax"], env_for(tree), scratch)),
        ),
    ]


def published(a, scratch: str) -> dict:
    """The published way at each of ``--published-seeds`` (it runs no tokdyn: once a repeat)."""
    out = {}
    if a.published_seeds:
        sys.path.insert(0, HERE)
        from published_way import peer_args

        base = peer_args()
        at = base.index("--seeds")
        for s in a.published_seeds:
            args = base[:at] + ["--seeds", str(s)] + base[at + 2 :]
            cmd = [sys.executable, os.path.join(HERE, "published_way.py"), os.path.join(scratch, f"pub{s}")] + args
            out[f"published {s} seeds"] = dict(wall_s=wall(cmd, dict(os.environ), scratch), runs=s * PER_SEED)
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(results: dict, a, meta: dict) -> str:
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores; JAX {meta['jax']}; backend cpu; dtype float32; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {a.repeats} repeats, the trees interleaved row by row; "
        f"in-process rows: {meta['devices']} host devices, chunk {meta['chunk']:,}, median of "
        f"{a.child_repeats} calls a repeat, medians over repeats",
        "",
    ]
    for tree, reps in results.items():
        lines.append(f"## {tree}: {reps[0]['in_process']['tokdyn']}")
        lines.append("load averages (1, 5, 15 min) before / after each repeat: " + "; ".join(r["load"] for r in reps))
        lines.append("")
        lines.append(f"| {'row':<34} | {'median':>12} | {'best':>12} | note |")
        lines.append(f"|{'-' * 36}|{'-' * 14}|{'-' * 14}|------|")
        ip = {name: [r["in_process"]["rows"][name] for r in reps] for name in reps[0]["in_process"]["rows"]}
        kernel = med([x["median_rate"] for x in ip["kernel alone"]])
        for name, xs in ip.items():
            rates = [x["median_rate"] for x in xs]
            note = f"{xs[0]['runs']:,} runs; first call {med([x['first_s'] for x in xs]):.2f} s (compile incl.)"
            if name != "kernel alone":
                note += f"; {med(rates) / kernel:.0%} of the kernel alone"
            lines.append(f"| {name:<34} | {med(rates):>7,.0f} r/s | {max(rates):>7,.0f} r/s | {note} |")
        walls = {k: [r[k]["wall_s"] for r in reps] for k in reps[0] if k not in ("in_process", "load")}
        lo, hi = min(a.seeds), max(a.seeds)
        d_runs = (hi - lo) * PER_SEED
        marginal = d_runs / (med(walls[f"cli {hi} seeds"]) - med(walls[f"cli {lo} seeds"]))
        pub = None
        if a.published_seeds and len(a.published_seeds) > 1:
            plo, phi = min(a.published_seeds), max(a.published_seeds)
            pub = (phi - plo) * PER_SEED / (med(walls[f"published {phi} seeds"]) - med(walls[f"published {plo} seeds"]))
        lines.append(
            f"| {'CLI marginal rate':<34} | {marginal:>7,.0f} r/s | {'':>12} | {d_runs:,} runs between {lo} and {hi} "
            f"seeds; {kernel and marginal / kernel:.0%} of the kernel alone"
            + (f"; {marginal / pub:.1f}x the published way's marginal rate" if pub else "")
            + " |"
        )
        if pub:
            lines.append(
                f"| {'published way marginal rate':<34} | {pub:>7,.0f} r/s | {'':>12} | between "
                f"{min(a.published_seeds)} and {max(a.published_seeds)} seeds |"
            )
        lines.append("")
        lines.append(f"| {'fresh process':<34} | {'median s':>8} | {'best s':>8} | note |")
        lines.append(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|------|")
        floor = med(walls["floor"])
        pub30 = med(walls[f"published {min(a.published_seeds)} seeds"]) if a.published_seeds else None
        for k, ws in walls.items():
            note = []
            if k.startswith("cli") or k.startswith("published"):
                note.append(f"{med(ws) - floor:+.2f} s over the floor")
            if pub30 and k in ("cli cold", "cli warm"):
                note.append(f"{med(ws) / pub30:.2f}x the published way at {min(a.published_seeds)} seeds")
            t = [r[k].get("timings") for r in reps]
            if t[0]:
                parts = [f"{p.split('_')[0]} {med([x[p] for x in t]):.2f} s" for p in t[0] if p.endswith("_s")]
                note.append("config.json: " + ", ".join(parts))
            lines.append(f"| {k:<34} | {med(ws):>8.2f} | {min(ws):>8.2f} | {'; '.join(note)} |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trees", default="", help="name=PATH,... package trees to compare (empty PATH: installed)")
    ap.add_argument("--seeds", default="30,3000", help="the CLI's seed counts for its marginal rate")
    ap.add_argument("--published-seeds", default="30,60", help="the published way's seed counts ('' to skip)")
    ap.add_argument("--runs", type=int, default=16384, help="runs of the in-process kernel rows")
    ap.add_argument(
        "--child-seeds",
        type=int,
        default=1024,
        help="seeds of the in-process study path row (1,024: 36,864 runs, 9 whole chunks of 4,096; a last chunk "
        "of a few runs is padded to the chunk's shape and computed whole)",
    )
    ap.add_argument("--child-repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="a directory for results.json and results.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child_repeats, a.runs, a.child_seeds)))
        return
    a.seeds = [int(s) for s in a.seeds.split(",")]
    a.published_seeds = [int(s) for s in a.published_seeds.split(",") if s]
    trees = dict(t.split("=", 1) for t in a.trees.split(",")) if a.trees else {"installed": ""}
    trees = {k: os.path.abspath(v) if v else "" for k, v in trees.items()}
    results = {name: [] for name in trees}
    scratch = tempfile.mkdtemp(prefix="tokdyn_study_path_")
    try:
        for i in range(a.repeats):
            start = load()
            for r in results.values():
                r.append({})
            order = list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))
            for label, measure in steps(a, scratch, i):
                for name, tree in order:
                    results[name][-1][label] = measure(name, tree)
                print(f"repeat {i + 1}, {label}: done, load {load()}", file=sys.stderr, flush=True)
            for r in results.values():
                r[-1]["load"] = f"{start} / {load()}"
            before = load()
            pub = published(a, scratch)
            for reps in results.values():
                reps[-1].update(pub)
            print(f"repeat {i + 1}, published way: done, load {before} / {load()}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta = next(iter(results.values()))[0]["in_process"]
    git = ["git", "-C", HERE]
    commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # the whole checkout's tracked files (not the untracked output folder this run writes), each named
    changed = subprocess.run(
        git + ["status", "--porcelain", "--untracked-files=no", "--", ":/"], capture_output=True, text=True
    ).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    dirty = f"+dirty: uncommitted changes to {', '.join(changed)}" if changed else "no uncommitted changes"
    text = f"commit {commit} ({dirty}); trees {trees}\n" + report(results, a, meta)
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(dict(args=vars(a), results=results), f, indent=1)
        with open(os.path.join(a.out, "results.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
