"""Running a per-run function over many runs: chunking, execution strategy, devices.

:func:`map_runs` is the execution engine under every study and sweep. It takes a pure per-run
function and a pytree of per-run arguments (leading axis = runs) and returns NumPy results. It
compiles once per (function, chunk shape, strategy), runs fixed-size chunks so memory stays flat in
the number of runs, splits each chunk over the local devices on a ``jax.sharding.Mesh`` with
``jax.shard_map``, and overlaps the next chunk's compute with the host copy of the last.

The execution strategy is a parameter, not part of the math (see DESIGN.md): on XLA:CPU a
*sequential* ``lax.map`` over runs (``batch_size=1``), each run using GEMM-shaped kernels, beats
a wide ``vmap`` of tiny per-run matmuls; on GPUs and TPUs the opposite holds. :func:`default_batch_size`
picks per backend; pass ``batch_size`` to override, and measure (``benchmarks/``).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

RUN_AXIS = "runs"


def default_batch_size(backend: str | None = None) -> int | None:
    """Runs vmapped together inside the sequential map: 1 on CPU, ``None`` (the whole per-device
    chunk at once) on accelerators."""
    backend = backend or jax.default_backend()
    return 1 if backend == "cpu" else None


def default_chunk_size(n_devices: int, backend: str | None = None) -> int:
    backend = backend or jax.default_backend()
    per_device = 2048 if backend == "cpu" else 65536
    return per_device * n_devices


def _leading(tree) -> int:
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(tree)}
    if not sizes or None in sizes or len(sizes) != 1:
        raise ValueError(f"args must be a pytree of arrays sharing one leading (runs) axis, got leading sizes {sizes}")
    return sizes.pop()


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable, devices: tuple, batch_size: int | None, with_shared: bool):
    mesh = Mesh(np.array(devices), (RUN_AXIS,))

    def per_device(shared, args):
        f = (lambda a: fn(shared, a)) if with_shared else fn
        if batch_size is None:
            return jax.vmap(f)(args)
        if batch_size == 1:
            return jax.lax.map(f, args)
        return jax.lax.map(f, args, batch_size=batch_size)

    sharded = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(RUN_AXIS)),
        out_specs=PartitionSpec(RUN_AXIS),
        check_vma=False,
    )
    return jax.jit(sharded), NamedSharding(mesh, PartitionSpec(RUN_AXIS))


def map_runs(
    fn: Callable,
    args: Any,
    *,
    shared: Any = None,
    chunk_size: int | None = None,
    batch_size: int | None | str = "auto",
    devices=None,
    on_chunk: Callable[[int, int, float], None] | None = None,
) -> Any:
    """Apply ``fn`` to every run and return its outputs as NumPy arrays with a leading runs axis.

    Args:
      fn: pure per-run function, ``fn(run_args)`` or ``fn(shared, run_args)`` when ``shared`` is
        given; must be jittable. Pass the same function object each time to reuse its compilation.
      args: pytree of arrays with a leading axis of R runs.
      shared: optional pytree passed unbatched to every run (a root key, static-shaped tables).
      chunk_size: runs per compiled call (rounded up to a multiple of the number of devices);
        memory is O(chunk_size), not O(R). The last chunk is padded, so one compilation serves all.
      batch_size: runs vmapped together inside each device's sequential map; ``1`` is a pure
        sequential map, ``None`` a full vmap of the chunk; ``"auto"``: per backend.
      devices: devices to shard the run axis over (default: all local devices).
      on_chunk: optional callback ``(runs_done, runs_total, seconds_for_chunk)`` after each chunk.

    Returns:
      The pytree ``fn`` returns, each leaf a NumPy array of shape (R, ...).
    """
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must hold at least one device")
    n_dev = len(devices)
    if batch_size == "auto":
        batch_size = default_batch_size(devices[0].platform)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, None or 'auto', got {batch_size!r}")
    total = _leading(args)
    if chunk_size is None:
        chunk_size = default_chunk_size(n_dev, devices[0].platform)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chunk = min(chunk_size, total) if total else 1
    chunk = math.ceil(chunk / n_dev) * n_dev
    if batch_size not in (None, 1):
        per_dev = chunk // n_dev
        batch_size = min(batch_size, per_dev)
        if per_dev % batch_size:
            chunk = math.ceil(per_dev / batch_size) * batch_size * n_dev
    compiled, sharding = _compiled(fn, devices, batch_size, shared is not None)
    args = jax.tree_util.tree_map(np.asarray, args)
    if total == 0:
        raise ValueError("args holds zero runs: nothing to do")

    def launch(start):
        stop = min(start + chunk, total)

        def take(leaf):
            piece = leaf[start:stop]
            if stop - start < chunk:  # pad by repeating the last run; its outputs are dropped
                pad = np.repeat(piece[-1:], chunk - (stop - start), axis=0)
                piece = np.concatenate([piece, pad], axis=0)
            return jax.device_put(piece, sharding)

        return start, stop, compiled(shared, jax.tree_util.tree_map(take, args))

    outputs = []
    pending = launch(0)
    t0 = time.perf_counter()
    while pending is not None:
        start, stop, out = pending
        pending = launch(stop) if stop < total else None  # keep the devices busy
        outputs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[: stop - start], out))
        if on_chunk is not None:
            now = time.perf_counter()
            on_chunk(stop, total, now - t0)
            t0 = now
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts, axis=0), *outputs)
