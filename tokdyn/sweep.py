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
import hashlib
import math
import os
import pickle
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


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    """Hash of tokdyn's own source, so cached executables never outlive a code change."""
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    h.update(name.encode() + f.read())
    return h.hexdigest()


def _signature(tree) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return str(treedef) + str([(tuple(np.shape(a)), str(getattr(a, "dtype", type(a).__name__))) for a in leaves])


def _executable(compiled, fn, devices, batch_size, shared, example, cache_dir):
    """The compiled executable for this chunk signature, loaded from ``cache_dir`` when present.

    JAX's persistent compilation cache still traces and lowers the function to find its entry
    (~0.5 s for a study's task); here the serialized executable is keyed by everything that
    determines it (the function's repr, which must not contain a memory address; the chunk's
    shapes and dtypes; devices; strategy; JAX and tokdyn versions and tokdyn's source), so a warm
    start skips tracing too. Any failure falls back to a normal compilation.
    """
    key_text = repr(fn)
    if cache_dir is None or " at 0x" in key_text:
        return compiled
    import jaxlib

    from tokdyn import __version__

    parts = (__version__, _source_hash(), jax.__version__, jaxlib.__version__, key_text, batch_size,
             [(d.platform, d.device_kind) for d in devices], _signature(shared), _signature(example))
    path = os.path.join(cache_dir, "tokdyn-executables", hashlib.sha256(repr(parts).encode()).hexdigest() + ".pkl")
    from jax.experimental.serialize_executable import deserialize_and_load, serialize

    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                return deserialize_and_load(*pickle.load(f))
        except Exception:  # stale or corrupt entry: recompile and overwrite
            pass
    exe = compiled.lower(shared, example).compile()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(serialize(exe), f)
        os.replace(tmp, path)
    except Exception:
        pass
    return exe


def map_runs(
    fn: Callable,
    args: Any,
    *,
    shared: Any = None,
    chunk_size: int | None = None,
    batch_size: int | None | str = "auto",
    devices=None,
    on_chunk: Callable[[int, int, float], None] | None = None,
    cache_dir: str | None = None,
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
      cache_dir: optional directory for serialized executables, so that a later process skips
        tracing and compiling (``fn`` must have a stable repr, e.g. a frozen dataclass).

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

        return start, stop, executable(shared, jax.tree_util.tree_map(take, args))

    outputs = []
    executable = compiled
    if cache_dir is not None:
        example = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((chunk, *a.shape[1:]), a.dtype, sharding=sharding), args)
        executable = _executable(compiled, fn, devices, batch_size, shared, example, cache_dir)
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


# ----------------------------------------------------------------------------------------------
# Grids of conditions x seeds


def parse_axis(name: str, text: str) -> np.ndarray:
    """Axis values from their text form: ``"0.3,0.6,0.9"`` (a comma list), ``"linspace:a:b:n"``
    (n evenly spaced values from a to b) or ``"logspace:a:b:n"`` (n values from a to b, evenly
    spaced in log, so a and b must be > 0). ``name`` is used in error messages only."""
    text = text.strip()
    if text.startswith(("linspace:", "logspace:")):
        kind, *parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"axis {name!r}: {kind} takes exactly a:b:n, got {text!r}")
        try:
            a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"axis {name!r}: {kind} needs numbers a:b and an integer n, got {text!r}") from None
        if n < 1:
            raise ValueError(f"axis {name!r}: {kind} needs n >= 1 values, got n={n} in {text!r}")
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"axis {name!r}: {kind} endpoints must be finite, got {text!r}")
        if kind == "linspace":
            return np.linspace(a, b, n)
        if a <= 0 or b <= 0:
            raise ValueError(f"axis {name!r}: logspace endpoints must be > 0, got {text!r}")
        return np.geomspace(a, b, n)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"axis {name!r}: expected a comma list, linspace:a:b:n or logspace:a:b:n, got {text!r}") from None
    if not values:
        raise ValueError(f"axis {name!r} has no values: got {text!r}")
    return np.asarray(values)


class Grid:
    """The product of named axes x ``seeds`` seeds, with stable run indices.

    Run ``i`` is the condition at mixed-radix position ``i`` over ``(*axes, seed)``: axes in the
    order given, the seed fastest, exactly like ``itertools.product(*axes.values(), range(seeds))``.
    Nothing is materialised: :meth:`rows` builds the columns of any index range on demand, so a
    10^8-run grid costs only its axis values.

    >>> g = Grid(temperature=[0.5, 1.0], momentum=[0.0, 0.5], seeds=3)
    >>> len(g), g.shape
    (12, (2, 2, 3))
    >>> g[4]
    {'temperature': 0.5, 'momentum': 0.5, 'seed': 1, 'index': 4}
    """

    RESERVED = ("seed", "index")

    def __init__(self, seeds: int = 1, **axes):
        if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
            raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
        self.seeds = int(seeds)
        self.axes: dict[str, np.ndarray] = {}
        for name, values in axes.items():
            if name in self.RESERVED:
                raise ValueError(f"axis name {name!r} is reserved (reserved: {list(self.RESERVED)})")
            arr = np.asarray(values)
            if arr.ndim == 0:
                arr = arr[None]
            if arr.ndim != 1:
                raise ValueError(f"axis {name!r} must be a 1-D list of values, got shape {arr.shape}")
            if arr.size == 0:
                raise ValueError(f"axis {name!r} has no values")
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"axis {name!r} must hold numbers, got dtype {arr.dtype}")
            self.axes[name] = arr
        self.shape = tuple(a.size for a in self.axes.values()) + (self.seeds,)
        # stride of each axis (and of the seed) in the flat run index
        self._strides = tuple(int(np.prod(self.shape[i + 1:], dtype=np.int64)) for i in range(len(self.shape)))

    def __len__(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def names(self) -> tuple:
        return tuple(self.axes)

    def __repr__(self) -> str:
        axes = ", ".join(f"{k}={v.tolist() if v.size <= 6 else f'<{v.size} values>'}" for k, v in self.axes.items())
        return f"Grid({axes}{', ' if axes else ''}seeds={self.seeds})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Grid) and self.seeds == other.seeds and self.names == other.names
                and all(np.array_equal(a, b) for a, b in zip(self.axes.values(), other.axes.values())))

    def rows(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Columns for runs ``start..stop-1``: every axis's value, ``seed`` and ``index`` (int64)."""
        n = len(self)
        stop = n if stop is None else stop
        if not (0 <= start <= stop <= n):
            raise IndexError(f"run range [{start}, {stop}) is outside the grid's {n} runs")
        index = np.arange(start, stop, dtype=np.int64)
        out = {}
        for (name, values), stride, size in zip(self.axes.items(), self._strides, self.shape):
            out[name] = values[(index // stride) % size]
        out["seed"] = index % self.seeds
        out["index"] = index
        return out

    def __getitem__(self, item):
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                raise ValueError(f"Grid slices must have step 1, got {step}")
            return self.rows(start, max(start, stop))
        i = int(item)
        if i < 0:
            i += len(self)
        row = self.rows(i, i + 1)
        return {k: v[0].item() for k, v in row.items()}

    def chunks(self, size: int, start: int = 0):
        """Yield ``(start, stop, rows)`` for consecutive chunks of at most ``size`` runs."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"chunk size must be an int >= 1, got {size!r}")
        n = len(self)
        for lo in range(start, n, int(size)):
            hi = min(lo + int(size), n)
            yield lo, hi, self.rows(lo, hi)

    def to_dict(self) -> dict:
        """JSON-ready description (axis values as lists); ``Grid.from_dict`` inverts it."""
        return {"axes": {k: v.tolist() for k, v in self.axes.items()}, "seeds": self.seeds}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(seeds=d["seeds"], **{k: np.asarray(v) for k, v in d["axes"].items()})
