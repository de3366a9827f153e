"""The argument checks tokdyn's own functions and studies use, for a study or a kernel of one's own
(a ``Config.validate()``, the ``check`` in front of a jitted function). Each raises a
``ValueError`` / ``TypeError`` that names the argument, the value and what is allowed, in plain
Python before anything is traced; values are checked only when they are host data (Python
numbers, NumPy arrays), never copied from a device.

    >>> from tokdyn import checks
    >>> checks.positive_int("seeds", 3)
    3
    >>> checks.positive_int("seeds", 0)
    Traceback (most recent call last):
    ...
    ValueError: seeds must be an int >= 1, got 0
"""

from tokdyn._checks import (
    Buckets,
    bucket_size,
    checked_jit,
    choice,
    distinct,
    finite_array,
    interval_pair,
    is_traced,
    on_host,
    positive_int,
    prng_key,
    real,
    seed,
    whole,
)

__all__ = [
    "positive_int",
    "seed",
    "real",
    "whole",
    "choice",
    "distinct",
    "finite_array",
    "interval_pair",
    "prng_key",
    "checked_jit",
    "Buckets",
    "bucket_size",
    "is_traced",
    "on_host",
]
