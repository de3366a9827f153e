"""How many models :func:`~tokdyn.train.train_many` vmaps at once on a device under
``Execution(batch_size="auto")``: the group of models is sized from the device's memory and from
XLA's own account of what a call needs, never guessed.

A call of the ``"scan"`` or ``"step"`` strategy holds, on each device, its M models' state as the
program's argument and again as its output (the trained state), the shared data, the compiled
code, and the temporaries (activations, gradients) of the models vmapped at once: a group of G,
the groups run one after another (``lax.map``). Only the temporaries grow with G. The runner
(:class:`tokdyn.train.strategies.Runner`):

1. compiles the program with every model of a device at once and reads its
   ``compiled.memory_analysis()`` (:func:`held`, plus the copy of the models' state the loop holds
   between calls); where it fits all but :data:`MARGIN` of the device's memory (:func:`budget`
   of :func:`available`: the device's limit less what other arrays hold there; or of
   ``Execution.memory_limit``), that program runs: nothing else compiled;
2. else :func:`measure` compiles the per-device program for two small numbers of models
   (:data:`PROBE` and half of it), vmapped: what grows between the two grows with the group; the
   rest (the shared data, the code, fixed workspaces) does not; the state's bytes per model are
   known exactly from its shapes (:class:`Need`). :func:`fit` gives the largest group whose call
   fits, split by :func:`equal_groups` into groups of one size (the last padded by repeating a
   model, whose results are dropped), so one program serves every group;
3. the real program is compiled at that group size and checked by its own memory analysis, the
   group shrunk where it does not fit (:func:`shrink`); the program that fits is the one that
   runs.

On the CPU the device reports no limit: every model of a device is vmapped at once, nothing is
measured and nothing extra is compiled.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import jax
import numpy as np

from tokdyn.engine import execute

MARGIN = 0.1  # the share of the limit left free: the allocator's fragmentation and runtime workspaces
PROBE = 4  # the models the probe compiles for (fewer where a device has fewer)


def device_limit(device) -> Optional[int]:
    """Bytes of ``device``'s memory that JAX may allocate (``memory_stats()["bytes_limit"]``); None
    on the CPU backend (its memory is the host's) and where the device reports no limit
    (:func:`tokdyn.engine.execute.memory_limit_and_use`)."""
    stats = execute.memory_limit_and_use(device)
    return None if stats is None else stats[0]


def available(device, own: int = 0) -> Optional[int]:
    """Bytes of ``device``'s memory a call may use: its :func:`device_limit` less what other
    arrays hold there now (``bytes_in_use`` less ``own``, the bytes of the caller's own arrays the
    call takes as arguments, which its memory analysis counts); None where the device reports no
    limit."""
    stats = execute.memory_limit_and_use(device)
    if stats is None:
        return None
    limit, used = stats
    return max(1, limit - max(0, (used or 0) - int(own)))


def held(stats) -> int:
    """Bytes a compiled program holds on a device while it runs, from its
    ``memory_analysis()``: arguments, outputs, temporaries and generated code (less what outputs
    alias of the arguments)."""
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
        - stats.alias_size_in_bytes
    )


def tree_bytes(tree) -> int:
    """Bytes of every array leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``; a PRNG key
    counted by its data; leaves without a dtype, such as Python numbers, count nothing)."""
    leaves = [a for a in jax.tree_util.tree_leaves(tree) if getattr(a, "dtype", None) is not None]
    return int(sum(math.prod(a.shape) * a.dtype.itemsize for a in leaves))


@dataclasses.dataclass(frozen=True)
class Need:
    """Bytes a device needs for a call of M models vmapped in groups of G:
    ``fixed + M * per_model + G * per_member`` (:meth:`bytes`).

    Attributes:
      fixed: what does not grow with the models: the shared data and the compiled code.
      per_model: what each model of the device holds for the whole call: its state in, its state
        and logs out, and the copy of its state the loop holds between calls.
      per_member: the temporaries of each model vmapped at once.
      probe: the models the measured program was compiled for.
    """

    fixed: int
    per_model: int
    per_member: int
    probe: int

    def bytes(self, models: int, group: int) -> int:
        """Bytes of a call of ``models`` models per device, ``group`` of them vmapped at once."""
        return self.fixed + models * self.per_model + group * self.per_member


@functools.lru_cache(maxsize=64)
def _measured(fn, data_def, data_avals, model_def, model_avals, device):
    data = jax.tree_util.tree_unflatten(data_def, data_avals)
    models = jax.tree_util.tree_unflatten(model_def, model_avals)
    jitted, _ = execute.sharded_map(fn, (device,), None, True)
    return jitted.lower(data, models).compile().memory_analysis()


def measure(fn, data, models, device, *, probe: int = PROBE) -> Need:
    """The :class:`Need` of the per-model function ``fn(data, model)`` (as the runner maps it) from
    XLA's memory analysis of its per-device program compiled for ``probe // 2`` and ``probe``
    models vmapped: what grows between the two is per model, the rest is fixed. Two compilations of
    small shapes (cached on the function, the shapes and the device).

    Args:
      fn: the per-model function of the strategy.
      data: the shared data (arrays).
      models: every model's arguments (state, run key), leading axis the models (at least 2).
      device: the device compiled for.
      probe: the larger number of models compiled for (at least 2, at most the models given).

    Raises:
      ValueError: the backend gives no memory analysis.
    """
    n2 = max(2, min(int(probe), jax.tree_util.tree_leaves(models)[0].shape[0]))
    n1 = n2 // 2
    aval = lambda shape, a: jax.ShapeDtypeStruct(shape, a.dtype)
    d_leaves, d_def = jax.tree_util.tree_flatten(jax.tree_util.tree_map(lambda a: aval(np.shape(a), a), data))
    stats = {}
    for n in (n1, n2):
        m_leaves, m_def = jax.tree_util.tree_flatten(
            jax.tree_util.tree_map(lambda a: aval((n, *a.shape[1:]), a), models)
        )
        stats[n] = _measured(fn, d_def, tuple(d_leaves), m_def, tuple(m_leaves), device)
        if stats[n] is None:
            raise ValueError(
                "execution.batch_size='auto' with a memory limit needs XLA's memory analysis, which this "
                "backend does not give: pass an int execution.batch_size"
            )
    a, b = stats[n1], stats[n2]
    state = math.ceil(tree_bytes(m_leaves) / n2)  # one model's state and run key, exactly
    shared = max(0, b.argument_size_in_bytes - n2 * state)
    out = math.ceil(max(b.output_size_in_bytes - a.output_size_in_bytes, 0) / (n2 - n1))
    per_member = math.ceil(max(b.temp_size_in_bytes - a.temp_size_in_bytes, 0) / (n2 - n1))
    fixed_temp = max(0, b.temp_size_in_bytes - n2 * per_member)
    fixed = shared + fixed_temp + max(0, b.output_size_in_bytes - n2 * out) + b.generated_code_size_in_bytes
    return Need(int(fixed), int(2 * state + out), int(per_member), n2)


def budget(limit: int) -> int:
    """The bytes of a device's ``limit`` a call may need: all but :data:`MARGIN` of it."""
    return int(limit * (1.0 - MARGIN))


def fit(need: Need, models: int, limit: int) -> int:
    """The most models (>= 1, <= ``models``) to vmap at once so that a call of ``models`` models
    per device, split by :func:`equal_groups` (padding included), needs at most :func:`budget`
    ``(limit)`` by ``need`` (1 where none fits: the real program decides)."""
    room = budget(limit) - need.fixed - models * need.per_model
    most = models if need.per_member <= 0 else int(min(models, max(1, room // need.per_member)))
    while most > 1 and need.bytes(equal_groups(models, most)[1], equal_groups(models, most)[0]) > budget(limit):
        most -= 1
    return most


def shrink(need: Need, group: int, temp: int, over: int) -> int:
    """A smaller group after the real program of ``group`` models vmapped at once needed ``temp``
    temporary bytes and ``over`` bytes more than it may: the group less as many models as free
    ``over`` bytes at the smaller of the probe's and the real program's temporaries per model (at
    most ``group - 1``, at least 1)."""
    per = max(1.0, min(need.per_member or temp / group, temp / group))
    return int(max(1, min(group - 1, group - math.ceil(over / per))))


def equal_groups(models: int, most: int) -> tuple[int, int]:
    """``(group, padded)``: ``models`` split into the fewest groups of at most ``most``, all of one
    size ``group``; ``padded`` = groups x group >= models (less than one model per group added)."""
    if models < 1 or most < 1:
        raise ValueError(f"models and most must be >= 1, got {models} and {most}")
    groups = math.ceil(models / min(most, models))
    group = math.ceil(models / groups)
    return group, groups * group
