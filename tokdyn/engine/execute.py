"""The execution engine: a per-run function over many runs, chunked, sharded, streamed.

:func:`map_runs` is the execution engine under every study and sweep. It takes a pure per-run
function and a pytree of per-run arguments (leading axis = runs) and returns NumPy results. It
compiles once per (function, chunk shape, strategy), runs fixed-size chunks so memory stays flat in
the number of runs, splits each chunk over the local devices on a ``jax.sharding.Mesh`` with
``jax.shard_map``, and overlaps the next chunk's compute with the host copy of the last.

The execution strategy is a parameter, not part of the math: on XLA:CPU a
*sequential* ``lax.map`` over runs (``batch_size=1``), each run using GEMM-shaped kernels, beats
a wide ``vmap`` of tiny per-run matmuls; on GPUs and TPUs the opposite holds. :func:`default_batch_size`
picks per backend; pass ``batch_size`` to override, and measure (``benchmarks/``).

The chunk size is per backend too (:func:`default_chunk_size`): 2,048 runs per device on CPU; on an
accelerator as many as fit in a quarter of the device's free memory (:func:`device_memory`) at
the per-run working set XLA reports for the function (:func:`run_bytes`), never fewer than
65,536 nor more than 2**22 per device.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

RUN_AXIS = "runs"


def default_batch_size(backend: str | None = None) -> int | None:
    """Runs vmapped together inside the sequential map: 1 on CPU, ``None`` (the whole per-device
    chunk at once) on accelerators."""
    backend = backend or jax.default_backend()
    return 1 if backend == "cpu" else None


CPU_CHUNK = 2048  # runs per device and chunk on CPU
ACCELERATOR_CHUNK = (65536, 2**22)  # the fewest and the most runs per device and chunk on an accelerator
ACCELERATOR_QUANTUM = 1024  # a balanced chunk on an accelerator is a multiple of this many runs per device
MEMORY_SHARE = 4  # an accelerator's chunk holds at most 1 / MEMORY_SHARE of the device's free memory


def memory_limit_and_use(device) -> tuple[int, int | None] | None:
    """``(bytes_limit, bytes_in_use)`` of ``device``'s ``memory_stats()`` (the second None where it
    does not say what is in use); ``None`` on the CPU backend (its memory is the host's) and where
    the device reports no limit."""
    if getattr(device, "platform", "cpu") == "cpu":
        return None
    try:
        stats = device.memory_stats()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if not stats or not stats.get("bytes_limit"):
        return None
    used = stats.get("bytes_in_use")
    return int(stats["bytes_limit"]), None if used is None else int(used)


def device_memory(device=None) -> int | None:
    """Bytes of ``device``'s memory (default: the first local device) available to new allocations:
    ``bytes_limit - bytes_in_use`` of its ``memory_stats()`` (``bytes_limit`` where it does not
    say what is in use); ``None`` on the CPU backend (its memory is the host's) and where the
    device reports no memory statistics (:func:`memory_limit_and_use`)."""
    stats = memory_limit_and_use(jax.local_devices()[0] if device is None else device)
    if stats is None:
        return None
    limit, used = stats
    return max(0, limit - used) if used is not None else limit


def default_chunk_size(
    n_devices: int, backend: str | None = None, *, bytes_per_run: float | None = None, memory: int | None = None
) -> int:
    """Runs per chunk when none is given. A host function.

    Args:
      n_devices: the number of devices the chunk is split over.
      backend: the backend's name (``"cpu"``, ``"gpu"``, ...); default JAX's default backend.
      bytes_per_run: optional working set of one run (:func:`run_bytes`), for an accelerator.
      memory: optional bytes free on one device; default :func:`device_memory` of the first local
        device.

    Returns:
      On CPU, 2,048 per device (:data:`CPU_CHUNK`). On an accelerator, the largest power of two of
      runs per device whose working set fits in a quarter of ``memory``, clamped to [65,536, 2**22]
      (:data:`ACCELERATOR_CHUNK`); 65,536 per device where either is unknown. Times ``n_devices``.
    """
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return CPU_CHUNK * n_devices
    low, high = ACCELERATOR_CHUNK
    if bytes_per_run is not None and bytes_per_run > 0:
        memory = device_memory() if memory is None else memory
        if memory is not None:
            fit = int(memory // MEMORY_SHARE // math.ceil(bytes_per_run))
            per_device = 1 << (fit.bit_length() - 1) if fit >= 1 else 1  # the largest power of two <= fit
            return min(max(per_device, low), high) * n_devices
    return low * n_devices


def run_bytes(fn: Callable, args: Any, *, shared: Any = None, device=None, lanes: int = 8) -> int | None:
    """Bytes one run of ``fn`` holds on a device when runs are vmapped together: XLA's memory
    analysis (arguments, outputs and temporaries) of the per-device function :func:`map_runs`
    compiles (:func:`sharded_map`, a full ``vmap``), divided by the number of runs compiled for.
    Generous: what every run shares (``shared``, the work of a ``prepare``) is counted once per
    run. Costs one compilation of a small shape: :func:`map_runs` calls it only on an accelerator,
    and only when no ``chunk_size`` is given. A host function.

    Args:
      fn: the per-run function, as for :func:`map_runs`.
      args: pytree of arrays with a leading axis of R runs; the first ``lanes`` are compiled for.
      shared: optional pytree passed unbatched to every run.
      device: the device (default: the first local device).
      lanes: the most runs to compile for (at least 1, at most R).

    Returns:
      Bytes per run (>= 1), or ``None`` where the backend gives no analysis.
    """
    device = jax.local_devices()[0] if device is None else device
    n = max(1, min(int(lanes), _leading(args)))
    sample = jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], args)
    jitted, _ = sharded_map(fn, (device,), None, shared is not None)
    try:
        stats = jitted.lower(shared, sample).compile().memory_analysis()
    except (NotImplementedError, AttributeError):
        return None
    if stats is None:
        return None
    held = (
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    )
    return max(1, math.ceil(held / n))


def _leading(tree) -> int:
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(tree)}
    if not sizes or None in sizes or len(sizes) != 1:
        raise ValueError(f"args must be a pytree of arrays sharing one leading (runs) axis, got leading sizes {sizes}")
    return sizes.pop()


@functools.lru_cache(maxsize=64)
def sharded_map(fn: Callable, devices: tuple, batch_size: int | None, with_shared: bool):
    """The compiled per-chunk function :func:`map_runs` streams chunks through. Cached on its
    arguments, so pass the same ``fn`` object to reuse a compilation.

    Work common to many runs: when ``fn`` has a method ``prepare(shared, args)``, each device
    calls it once per chunk on its own runs and passes what it returns, as ``shared``, to every
    one of them (the sweep engine draws each seed's data there once, see
    :func:`tokdyn.engine.sweep.run`).

    Args:
      fn: the per-run function, ``fn(run_args)`` or, with ``with_shared``, ``fn(shared, run_args)``.
      devices: a tuple of devices the runs are split over (a one-axis mesh, :data:`RUN_AXIS`).
      batch_size: on each device, ``None`` vmaps every run, ``1`` maps them one by one, k maps
        them in vmapped chunks of k.
      with_shared: whether ``fn`` takes ``shared``.

    Returns:
      ``(jitted, sharding)``: ``jitted(shared, args)`` applies ``fn`` to every run of ``args``
      (leading axis divisible by ``len(devices)``, placed with ``sharding``; ``shared`` is
      replicated, and ignored without ``with_shared``).
    """
    mesh = Mesh(np.array(devices), (RUN_AXIS,))

    def per_device(shared, args):
        if with_shared and callable(getattr(fn, "prepare", None)):
            shared = fn.prepare(shared, args)  # once per device and chunk, on this device's runs
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


def balanced_chunk(total: int, largest: int, quantum: int = 1) -> int:
    """Runs per chunk that split ``total`` runs into as few chunks of at most ``largest`` runs as
    possible, of nearly equal size, so the padded last chunk wastes fewer than ``quantum`` runs
    instead of up to ``largest - 1``. A host function.

    Args:
      total: R >= 1, the number of runs.
      largest: the most runs in one chunk (a multiple of ``quantum``).
      quantum: the step is a multiple of it (the device count; on an accelerator also a lane
        multiple, :data:`ACCELERATOR_QUANTUM`), or ``total`` when that is smaller.

    Returns:
      ``ceil(total / n)`` rounded up to a multiple of ``quantum``, where ``n = ceil(total / largest)``;
      never more than ``largest``.

    For example 3,000 runs with a 2,048-run chunk make two chunks of 1,500 (3,000 runs computed),
    not 2,048 + 952 padded to 2,048 (4,096 runs computed).
    """
    n = -(-total // largest)
    step = -(-total // n)
    step = -(-step // quantum) * quantum
    return int(min(step, largest) if largest >= quantum else largest)


def plan(devices, batch_size, chunk_size, total, *, bytes_per_run: float | None = None):
    """Resolve how :func:`map_runs` executes, checking its arguments. A host function.

    Args:
      devices: the devices, or None for every local device.
      batch_size: an int >= 1, None, or ``"auto"`` (per backend, :func:`default_batch_size`).
      chunk_size: an int >= 1, or None for :func:`default_chunk_size` on the devices' backend,
        balanced over the chunks (:func:`balanced_chunk`).
      total: R, the number of runs.
      bytes_per_run: optional working set of one run, which sizes the chunk on an accelerator
        (with the first device's free memory).

    Returns:
      ``(devices, batch_size, step, padded)``: the devices as a tuple, the resolved batch size
      (lowered to the runs per device when larger), the runs per chunk ``step`` (at most R) and the
      compiled chunk shape ``padded`` (a multiple of the device count, and of the batch size).

    Raises:
      ValueError: no devices, or a batch or chunk size that is not allowed.
    """
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must hold at least one device")
    n_dev = len(devices)
    if batch_size == "auto":
        batch_size = default_batch_size(devices[0].platform)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, None or 'auto', got {batch_size!r}")
    if chunk_size is None:
        platform = devices[0].platform
        memory = device_memory(devices[0]) if bytes_per_run is not None and platform != "cpu" else None
        largest = default_chunk_size(n_dev, platform, bytes_per_run=bytes_per_run, memory=memory)
        quantum = n_dev * (1 if platform == "cpu" else ACCELERATOR_QUANTUM)
        chunk_size = balanced_chunk(total, largest, quantum) if total > 0 else largest
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    step = int(min(chunk_size, total))  # runs per chunk
    padded = math.ceil(step / n_dev) * n_dev  # compiled shape
    if batch_size not in (None, 1):
        per_dev = padded // n_dev
        batch_size = min(batch_size, per_dev)
        if per_dev % batch_size:
            padded = math.ceil(per_dev / batch_size) * batch_size * n_dev
    return devices, batch_size, step, padded


def stream(fn, shared, starts, total, step, padded, get_args, devices, batch_size):
    """Yield ``(start, stop, outputs)`` for each chunk start, in order, with NumPy outputs.

    Chunk i + 1 is dispatched before chunk i's results are copied back, so the devices stay busy
    while the caller handles a result (writes it to disk, say). A chunk shorter than ``padded`` is
    padded by repeating its last run, whose outputs are dropped.

    Args:
      fn: the per-run function (:func:`sharded_map`).
      shared: optional pytree passed unbatched to every run, or None.
      starts: the chunks' first run indices.
      total: R, the number of runs (the last chunk stops there).
      step: runs per chunk (:func:`plan`).
      padded: the compiled chunk shape (:func:`plan`).
      get_args: ``get_args(start, stop)`` returns the chunk's per-run arguments (a NumPy pytree
        with a leading axis of ``stop - start``).
      devices: the devices (:func:`plan`).
      batch_size: the resolved batch size (:func:`plan`).

    Yields:
      ``(start, stop, outputs)``: the outputs' leaves NumPy arrays of leading size ``stop - start``.
    """
    compiled, sharding = sharded_map(fn, devices, batch_size, shared is not None)

    def launch(start):
        stop = min(start + step, total)

        def put(leaf):
            leaf = np.asarray(leaf)
            if stop - start < padded:  # pad by repeating the last run; its outputs are dropped
                leaf = np.concatenate([leaf, np.repeat(leaf[-1:], padded - (stop - start), axis=0)], axis=0)
            return jax.device_put(leaf, sharding)

        return start, stop, compiled(shared, jax.tree_util.tree_map(put, get_args(start, stop)))

    starts = list(starts)
    if not starts:
        return
    pending = launch(starts[0])
    for nxt in starts[1:] + [None]:
        start, stop, out = pending
        pending = launch(nxt) if nxt is not None else None  # keep the devices busy
        yield start, stop, jax.tree_util.tree_map(lambda a: np.asarray(a)[: stop - start], out)


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
        Default: at most :func:`default_chunk_size` (on an accelerator sized from the device's free
        memory and ``fn``'s per-run working set, :func:`run_bytes`; on CPU 2,048 per device, with no
        extra compilation), balanced over the chunks (:func:`balanced_chunk`) so that the padded last
        chunk wastes almost nothing.
      batch_size: runs vmapped together inside each device's sequential map; ``1`` is a pure
        sequential map, ``None`` a full vmap of the chunk; ``"auto"``: per backend.
      devices: devices to shard the run axis over (default: all local devices).
      on_chunk: optional callback ``(runs_done, runs_total, seconds_for_chunk)`` after each chunk.

    Returns:
      The pytree ``fn`` returns, each leaf a NumPy array of shape (R, ...).
    """
    total = _leading(args)
    if total == 0:
        raise ValueError("args holds zero runs: nothing to do")
    args = jax.tree_util.tree_map(np.asarray, args)
    resolved, strategy, step, padded = plan(devices, batch_size, chunk_size, total)  # every argument checked first
    if chunk_size is None and resolved[0].platform != "cpu":  # on an accelerator (never on CPU: no extra compile)
        per_run = run_bytes(fn, args, shared=shared, device=resolved[0])  # the chunk from the working set
        if per_run is not None:
            resolved, strategy, step, padded = plan(resolved, batch_size, None, total, bytes_per_run=per_run)
    devices, batch_size = resolved, strategy
    get = lambda start, stop: jax.tree_util.tree_map(lambda a: a[start:stop], args)  # noqa: E731
    outputs = []
    t0 = time.perf_counter()
    for _, stop, out in stream(fn, shared, range(0, total, step), total, step, padded, get, devices, batch_size):
        outputs.append(out)
        if on_chunk is not None:
            now = time.perf_counter()
            on_chunk(stop, total, now - t0)
            t0 = now
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts, axis=0), *outputs)
