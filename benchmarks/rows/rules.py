"""The built-in rule's choices, each timed against its alternative on the same runs, alternately in
one process (ABBA order, so a shared machine's drift falls on both alike), runs/s:

  centred coordinates   ``dynamics.run`` of the study's workload (Gaussian clusters, K in {3, 4, 5},
                        100 points per cluster padded to 500, D = 4, 4 tokens, the four published
                        methods, at most 30 steps, tol 1e-3) under ``lax.map``, with
                        ``dynamics.BUILTIN`` (centred on the run's masked data mean) and the same rule
                        with ``centred=False``; the share of points whose labels agree
  Langevin draws        the study's runs (``ClusterRun``, ``langevin`` 0 everywhere) with the draws
                        skipped (``ClusterRun.deterministic``: no ``langevin`` condition) and made (a
                        ``langevin`` axis of the one value 0), by the sequential map and by vmap; the
                        shares of runs with equal steps and ARI (1e-6)

Each pair is two rows, the second with the ratio (``ratio``: this form over the first) and the
agreement; each row's rate is the median of the alternated calls.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite

METHODS = ("baseline", "inertia", "repulsion", "inertia+repulsion")


def alternated(calls: dict, repeats: int) -> dict:
    """``{name: [seconds of each call]}``: the callables of ``calls`` (each blocking) run ``repeats``
    times each, ABBA (the order flips every round), after one call each that compiles."""
    for fn in calls.values():
        fn()
    names, out = list(calls), {n: [] for n in calls}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            calls[name]()
            out[name].append(time.perf_counter() - t)
    return out


def pair_rows(s: Suite, names: dict, size: str, n: int, measure, *, smoke=True):
    """Two rows of the section ``rules`` from one measurement: ``names`` maps each of the two keys of
    ``measure() -> (seconds, note)`` (the alternated calls' times by key) to its row's name; the second
    row gets the ratio of the first's median time to its own (``ratio``) and the note."""
    box = {}
    (first, _), (second, _) = names.items()

    def row(key):
        if "seconds" not in box:
            box["seconds"], box["note"] = measure()
        sec = box["seconds"]
        med, best = float(np.median(sec[key])), float(np.min(sec[key]))
        out = dict(size=size, unit="runs/s", best=n / best, median=n / med, precision="default")
        if key == second:
            out["ratio"] = float(np.median(sec[first])) / med
            out["agreement"] = f"{names[second]} / {names[first]}, median runs/s: {out['ratio']:.3f}; {box['note']}"
        return out

    for key, name in names.items():
        s.row("rules", name, lambda key=key: row(key), smoke=smoke)


def centring(s: Suite):
    """The rows of the centred coordinates (module docstring)."""
    from tokdyn import data, dynamics

    n = 64 if s.args.smoke else 4096
    repeats = 1 if s.args.smoke else max(s.args.repeats, 5)

    def measure():
        keys = jax.vmap(lambda q: jax.random.fold_in(jax.random.key(7), q))(jnp.arange(n))
        ks = jnp.asarray([3, 4, 5], jnp.int32)[jnp.arange(n) % 3]

        def one(key, k):
            c = data.gaussian_clusters(key, k, points_per_cluster=100, dim=4, noise=0.6, center_box=5.0, max_clusters=5)
            return c.x, dynamics.forgy(c.x, c.init_noise, c.mask, 4), c.mask

        x, t0, mask = jax.jit(jax.vmap(one))(keys, ks)
        hp = dynamics.Hparams.stack([dynamics.METHODS[METHODS[i % 4]] for i in range(n)])

        def runner(rule):
            def one_run(a):
                r = dynamics.run(a[0], a[1], a[3], rule=rule, mask=a[2], n_steps=30, tol=1e-3)
                return r.labels, r.steps

            f = jax.jit(lambda *a: jax.lax.map(one_run, a))
            return lambda: jax.block_until_ready(f(x, t0, mask, hp))

        fns = {
            "centred": runner(dynamics.BUILTIN),
            "uncentred": runner(dataclasses.replace(dynamics.BUILTIN, centred=False)),
        }
        labels = {k: np.asarray(fn()[0]) for k, fn in fns.items()}
        valid = np.asarray(mask)
        same = float(np.mean((labels["centred"] == labels["uncentred"])[valid]))
        return alternated(fns, repeats), f"labels equal on {same:.4%} of valid points"

    pair_rows(
        s,
        {"centred": "centred coordinates (dynamics.BUILTIN)", "uncentred": "the same rule, centred=False"},
        f"{n:,} runs, lax.map, {repeats} alternated calls each",
        n,
        measure,
    )


def langevin(s: Suite):
    """The rows of the Langevin draws skipped or made (module docstring)."""
    from tokdyn.engine import sweep
    from tokdyn.studies import token_dynamics as td

    cfg = td.Config()
    task = cfg.task()
    per_seed = len(cfg.grid()) // cfg.seeds
    runs = 144 if s.args.smoke else (200_000 if s.accelerator else 20_000)
    seeds = -(-runs // per_seed)
    skip = dataclasses.replace(cfg, seeds=seeds).grid()
    drawn = sweep.Grid(
        **{k: skip.axes[k] for k in skip.names}, langevin=np.zeros(1, np.float32), seeds=seeds, seed_major=True
    )
    repeats = 1 if s.args.smoke else max(s.args.repeats, 5)
    small = 144 if s.args.smoke else None
    strategies = [("sequential map", 1, small or 4096), ("vmap", None, small or 1024)]
    if s.accelerator:
        strategies = [("vmap", None, 65536), ("sequential map", 1, 4096)]
    for i, (name, batch_size, chunk) in enumerate(strategies):

        def measure(batch_size=batch_size, chunk=chunk):
            box = {}

            def call(grid, label):
                box[label] = sweep.run(
                    task,
                    grid,
                    key=jax.random.key(0),
                    common_random_numbers=True,
                    chunk_size=chunk,
                    progress=False,
                    batch_size=batch_size,
                )

            sec = alternated({"skipped": lambda: call(skip, "skipped"), "made": lambda: call(drawn, "made")}, repeats)
            a, b = box["skipped"], box["made"]
            steps = float(np.mean(np.asarray(a["steps"]) == np.asarray(b["steps"])))
            ari = float(np.mean(np.isclose(np.asarray(a["ari"]), np.asarray(b["ari"]), rtol=0, atol=1e-6)))
            return sec, f"same steps on {steps:.2%} of runs, same ARI (1e-6) on {ari:.2%}"

        pair_rows(
            s,
            {"made": f"Langevin draws made, {name}", "skipped": f"Langevin draws skipped, {name}"},
            f"{len(skip):,} runs, chunk {chunk:,}, {repeats} alternated calls each",
            len(skip),
            measure,
            smoke=i == 0,  # the other strategy runs the same code at another batch size
        )


def run(s: Suite):
    """Every row of the rule's choices (module docstring)."""
    centring(s)
    langevin(s)
