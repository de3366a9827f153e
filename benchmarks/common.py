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


def report(text: str, out, record: dict) -> None:
    """Print the table ``text`` and, with a folder ``out``, write it there as ``table.md`` and ``record`` as
    ``rows.json``."""
    import json
    import os

    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "table.md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(out, "rows.json"), "w") as f:
            json.dump(record, f, indent=2)
