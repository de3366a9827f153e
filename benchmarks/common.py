"""Helpers shared by the benchmark scripts."""

import time

import numpy as np


def timed(fn, repeats):
    """(best, median) seconds of ``fn()`` over ``repeats`` calls (``fn`` ends on host values)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))
