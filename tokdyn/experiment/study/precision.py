"""The precision of float32 matrix products a study runs under (``--matmul-precision``): the values
allowed, the context that sets it (:func:`matmul_precision`) and the one in force
(:func:`precision_in_force`), which a study's stamp records when it is not the default."""

from __future__ import annotations

import contextlib


MATMUL_PRECISIONS = ("highest", "high", "default")  # the values of --matmul-precision
DEFAULT_MATMUL_PRECISION = "highest"  # every study's, unless asked otherwise; never written into a stamp
_PRECISION_NAMES = {"float32": "highest", "tensorfloat32": "high", "bfloat16": "default"}  # JAX's aliases


def check_matmul_precision(value) -> str:
    """``value`` as a precision of float32 matrix products a study may run under (one of
    :data:`MATMUL_PRECISIONS`); ``ValueError`` naming ``matmul_precision``, the value and what is
    allowed."""
    if not isinstance(value, str) or value not in MATMUL_PRECISIONS:
        raise ValueError(
            f"matmul_precision (--matmul-precision) must be one of {', '.join(MATMUL_PRECISIONS)}, got {value!r}"
        )
    return value


@contextlib.contextmanager
def matmul_precision(value: str = DEFAULT_MATMUL_PRECISION):
    """Run the block under ``jax.default_matmul_precision(value)``, checked first
    (:func:`check_matmul_precision`): how float32 matrix products without a ``precision`` of their
    own are computed. ``"highest"`` is full float32 everywhere; ``"high"`` and ``"default"`` let an
    NVIDIA GPU use TF32 (or a TPU bfloat16 passes). The CPU backend computes float32 products in
    full float32 whatever the setting. The ``tokdyn`` command runs every study under the one its
    ``--matmul-precision`` names (default ``"highest"``); a study records the precision in force
    (:func:`precision_in_force`) in its stamp and ``config.json`` when it is not the default."""
    value = check_matmul_precision(value)
    import jax

    with jax.default_matmul_precision(value):
        yield value


def precision_in_force() -> str:
    """The precision of float32 matrix products in force, as one of :data:`MATMUL_PRECISIONS`
    (JAX's aliases ``float32``, ``tensorfloat32``, ``bfloat16`` named so; another setting as JAX
    spells it). Where none is set, JAX's default, which is ``"highest"`` on the CPU backend (XLA:CPU
    computes float32 products in full float32) and ``"default"`` on an accelerator."""
    import jax

    value = jax.config.jax_default_matmul_precision
    if value is None:
        return DEFAULT_MATMUL_PRECISION if jax.default_backend() == "cpu" else "default"
    value = str(getattr(value, "name", value)).lower()
    return _PRECISION_NAMES.get(value, value)
