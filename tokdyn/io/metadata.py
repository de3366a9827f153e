"""Versions and machine facts recorded next to every output (:func:`environment`)."""

from __future__ import annotations

import os
import platform
import sys

import numpy as np


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the platform has one (a ``taskset``, a
    cluster job's cgroup), else every core of the machine (``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def environment() -> dict:
    """Versions and machine facts recorded next to every output."""
    import jax

    return {
        "tokdyn": __import__("tokdyn").__version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.local_devices()],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
    }
