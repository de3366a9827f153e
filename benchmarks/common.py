"""Helpers shared by the benchmark scripts."""

import dataclasses
import time

import jax
import numpy as np


def timed(fn, repeats):
    """(best, median) seconds of ``fn()`` over ``repeats`` calls (``fn`` ends on host values)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


@dataclasses.dataclass(frozen=True)
class Batched:
    """The in-memory batched path: ``fn(key, **condition)`` on pre-built per-run condition
    arrays (a dict with ``seed`` and one column per name), the run's key ``fold_in(key, seed)``;
    hand it to ``tokdyn.engine.execute.map_runs(Batched(fn, names), columns, shared=key)``."""

    fn: object
    names: tuple

    def __call__(self, key, run):
        return self.fn(jax.random.fold_in(key, run["seed"]), **{n: run[n] for n in self.names})
