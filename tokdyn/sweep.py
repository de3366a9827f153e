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

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import pickle
import sys
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


def _plan(devices, batch_size, chunk_size, total):
    """Resolve devices, strategy and the compiled chunk shape (a multiple of the device count)."""
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must hold at least one device")
    n_dev = len(devices)
    if batch_size == "auto":
        batch_size = default_batch_size(devices[0].platform)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, None or 'auto', got {batch_size!r}")
    if chunk_size is None:
        chunk_size = default_chunk_size(n_dev, devices[0].platform)
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


def _stream(fn, shared, starts, total, step, padded, get_args, devices, batch_size, cache_dir):
    """Yield ``(start, stop, outputs)`` for each chunk start, in order, with NumPy outputs.

    ``get_args(start, stop)`` returns the chunk's per-run arguments (NumPy pytree). Chunk i + 1 is
    dispatched before chunk i's results are copied back, so the devices stay busy while the
    caller handles a result (writes it to disk, say)."""
    compiled, sharding = _compiled(fn, devices, batch_size, shared is not None)

    def launch(start):
        stop = min(start + step, total)

        def put(leaf):
            leaf = np.asarray(leaf)
            if stop - start < padded:  # pad by repeating the last run; its outputs are dropped
                leaf = np.concatenate([leaf, np.repeat(leaf[-1:], padded - (stop - start), axis=0)], axis=0)
            return jax.device_put(leaf, sharding)

        return start, stop, executable(shared, jax.tree_util.tree_map(put, get_args(start, stop)))

    starts = list(starts)
    if not starts:
        return
    executable = compiled
    if cache_dir is not None:
        first = get_args(starts[0], min(starts[0] + 1, total))
        example = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((padded, *np.shape(a)[1:]), np.asarray(a).dtype, sharding=sharding), first)
        executable = _executable(compiled, fn, devices, batch_size, shared, example, cache_dir)
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
    total = _leading(args)
    if total == 0:
        raise ValueError("args holds zero runs: nothing to do")
    devices, batch_size, step, padded = _plan(devices, batch_size, chunk_size, total)
    args = jax.tree_util.tree_map(np.asarray, args)
    get = lambda start, stop: jax.tree_util.tree_map(lambda a: a[start:stop], args)  # noqa: E731
    outputs = []
    t0 = time.perf_counter()
    for _, stop, out in _stream(fn, shared, range(0, total, step), total, step, padded, get, devices,
                                batch_size, cache_dir):
        outputs.append(out)
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


# ----------------------------------------------------------------------------------------------
# Sweeps: a per-run function over a Grid, chunked to disk, resumable


@dataclasses.dataclass(frozen=True)
class _GridTask:
    """Adapts ``fn(key, **condition)`` to the executor: decodes each run's conditions from its
    global index on the device (so a chunk's only input is its index range) and derives the run's
    key from the root key and that index (or the run's seed, for common random numbers).

    ``shared`` holds the root key, every axis's values (``tables``), each axis's stride in the run
    index and the seed count, all traced: grids with the same axis names and sizes share one
    compilation. Conditions reach ``fn`` as float32 / int32 scalars, like :meth:`Grid.rows` cast
    by :func:`_to_device_dtypes`."""

    fn: Callable
    names: tuple
    by_seed: bool

    def __call__(self, shared, run):
        index = run["index"]  # uint32
        condition = {}
        for name in self.names:
            table = shared["tables"][name]
            condition[name] = table[(index // shared["strides"][name]) % table.shape[0]]
        seed = index % shared["seeds"]
        k = jax.random.fold_in(shared["key"], seed if self.by_seed else index)
        out = self.fn(k, **condition)
        if not isinstance(out, dict):
            raise TypeError(f"the sweep function must return a dict of arrays, got {type(out).__name__}")
        return out


def _grid_shared(grid: "Grid", key) -> dict:
    tables = _to_device_dtypes(dict(grid.axes))
    strides = {name: np.uint32(st) for name, st in zip(grid.names, grid._strides)}
    return dict(key=key, tables=tables, strides=strides, seeds=np.uint32(grid.seeds))


class SweepResult:
    """Columnar results of a sweep: the grid's columns (axes, ``seed``, ``index``) and every
    field ``fn`` returned, as NumPy arrays of one row per run, in run-index order."""

    def __init__(self, columns: dict[str, np.ndarray], fields: tuple, grid: "Grid | None" = None):
        self.columns = columns
        self.fields = fields
        self.grid = grid

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["index"])

    def __repr__(self) -> str:
        return f"SweepResult({len(self)} runs, fields={list(self.fields)})"

    def nan_counts(self) -> dict[str, int]:
        """Runs whose field holds a NaN (recorded as NaN, never dropped)."""
        out = {}
        for f in self.fields:
            v = self.columns[f]
            out[f] = int(np.isnan(v.reshape(len(v), -1)).any(axis=1).sum()) if v.dtype.kind == "f" else 0
        return out

    def to_csv(self, path: str) -> str:
        """One row per run; fields with per-run arrays are flattened into ``name_0, name_1, ...``."""
        from tokdyn import report

        return report.write_csv(path, _flat_columns(self.columns))

    def to_parquet(self, path: str) -> str:
        """Parquet (needs ``pyarrow``)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_parquet needs pyarrow: pip install pyarrow") from e
        pq.write_table(pa.table(_flat_columns(self.columns)), path)
        return path


def _flat_columns(columns):
    flat = {}
    for name, v in columns.items():
        if v.ndim == 1:
            flat[name] = v
        else:
            for j, col in enumerate(v.reshape(len(v), -1).T):
                flat[f"{name}_{j}"] = col
    return flat


def _to_device_dtypes(rows: dict) -> dict:
    """Grid columns as the dtypes JAX computes in (x64 off: float32, int32; the index uint32)."""
    out = {}
    for k, v in rows.items():
        if k == "index":
            out[k] = v.astype(np.uint32)
        elif v.dtype.kind == "f":
            out[k] = v.astype(jnp.zeros((), float).dtype)
        else:
            out[k] = v.astype(jnp.zeros((), int).dtype)
    return out


def _fn_id(fn) -> str:
    text = repr(fn)
    if " at 0x" in text:
        text = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return text


def _check_signature(fn, names) -> None:
    """Every grid axis must be an argument of ``fn`` and every required argument an axis."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some callables have no introspectable signature
        return
    params = list(sig.parameters.values())[1:]  # the first one takes the key
    if any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = None
    else:
        accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in names:
        if accepted is not None and name not in accepted:
            raise ValueError(f"grid axis {name!r} is not an argument of {_fn_id(fn)}; it takes {accepted}")
    for p in params:
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
            raise ValueError(f"{_fn_id(fn)} needs argument {p.name!r}, which is not a grid axis {list(names)}")


class _Progress:
    """A progress bar with runs/s and ETA on a terminal, one line per chunk otherwise."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.total, self.done, self.enabled = total, done, enabled
        self.start_done, self.t0 = done, time.perf_counter()
        self.tty = enabled and sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        rate = (self.done - self.start_done) / dt if dt > 0 else float("nan")
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        frac = self.done / self.total
        if self.tty:
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r[{bar:<30}] {self.done}/{self.total} runs  {rate:,.0f} runs/s  ETA {eta:,.0f} s ")
            if self.done >= self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"sweep: {self.done}/{self.total} runs ({100 * frac:.1f}%), {rate:,.0f} runs/s, "
                             f"ETA {eta:,.0f} s\n")
        sys.stderr.flush()


def _chunk_path(out: str, start: int, stop: int) -> str:
    return os.path.join(out, "chunks", f"{start:012d}-{stop:012d}.npz")


def _read_chunk(path: str, start: int, stop: int, fields) -> dict | None:
    """A finished chunk's outputs, or None if the file is missing, truncated or inconsistent."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}  # reading every member checks the zip CRCs
    except Exception:
        return None
    index = data.pop("index", None)
    if index is None or not np.array_equal(index, np.arange(start, stop)):
        return None
    if fields is not None and set(data) != set(fields):
        return None
    if any(len(v) != stop - start for v in data.values()):
        return None
    return data


def _write_chunk(path: str, start: int, stop: int, outputs: dict) -> None:
    """Atomically: a temporary file, flushed to disk, then renamed over the final name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, index=np.arange(start, stop, dtype=np.int64), **outputs)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _manifest(fn, grid: Grid, key, chunk_size: int, common_random_numbers: bool) -> dict:
    from tokdyn import __version__

    return {
        "format": 1,
        "fn": _fn_id(fn),
        "grid": grid.to_dict(),
        "runs": len(grid),
        "chunk_size": int(chunk_size),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "key_impl": str(jax.random.key_impl(key)),
        "common_random_numbers": bool(common_random_numbers),
        "tokdyn": __version__,
    }


def _check_resume(out: str, manifest: dict, resume: bool) -> None:
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        os.makedirs(out, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
        os.replace(tmp, path)
        return
    if not resume:
        raise ValueError(f"out={out!r} already holds a sweep; pass resume=True to continue it, or choose a new directory")
    with open(path) as f:
        old = json.load(f)
    differ = [k for k in manifest if k != "tokdyn" and old.get(k) != manifest[k]]
    if differ:
        raise ValueError(
            f"out={out!r} holds a sweep started with different arguments ({', '.join(differ)} differ); "
            "resume it with the same arguments or choose a new directory")


def run(fn: Callable, grid: Grid, *, key, chunk_size: int | None = None, out: str | None = None,
        resume: bool = True, progress: bool = True, common_random_numbers: bool = False,
        batch_size: int | None | str = "auto", devices=None, collect: bool = True,
        part: tuple[int, int] | None = None, cache_dir: str | None = None) -> SweepResult | None:
    """Run ``fn(key, **condition)`` for every run of ``grid``; compiled once, chunked, sharded.

    Args:
      fn: jittable, returns a dict of scalars (or small arrays). Its condition arguments are the
        grid's axes (traced: a float32 or int32 scalar per run).
      grid: the runs (:class:`Grid`).
      key: root PRNG key. Run i gets ``fold_in(key, i)`` — or ``fold_in(key, seed)`` with
        ``common_random_numbers=True``, so every condition of a seed shares its randomness (paired
        comparisons across conditions). Results are bit-identical whatever the chunk size, device
        count or number of interruptions.
      chunk_size: runs per chunk (memory, and the unit of work saved to disk). Default: per
        backend and device count, or, when resuming a sweep in ``out``, the chunk size it used.
      out: directory; each finished chunk is written (atomically) before the next one is read
        back, next to a ``manifest.json`` of the arguments. A killed sweep restarted with the same
        arguments redoes only unfinished or damaged chunks; different arguments are refused.
      resume: continue a sweep found in ``out`` (False: refuse to touch an existing one).
      progress: a progress bar (terminal) or a line per chunk on stderr.
      batch_size, devices: execution strategy and devices (see :func:`map_runs`).
      collect: return the results (False with ``out``: keep nothing in memory; read them later
        with :func:`load`).
      part: ``(i, n)``: do only chunks ``i, i + n, i + 2n, ...`` (chunks are dealt round-robin).
        Default: ``(jax.process_index(), jax.process_count())``, so every process of a
        multi-host job runs its own share on its local devices. Several parts need ``out`` (a
        directory all of them can write; chunk files are independent and written atomically);
        a part returns the full results once every chunk is on disk, else ``None``.
      cache_dir: directory for the serialized executable (see :func:`map_runs`), so a later
        process skips tracing and compiling.

    Multi-host: start every process with ``jax.distributed.initialize()``, then make the same
    ``run(..., out=SHARED_DIR)`` call in each; ``fold_in`` by global run index keeps the union
    bit-identical to a single-process sweep. Read it with :func:`load` when all have finished.

    Raises ``ValueError`` (before anything is compiled) when a grid axis is not an argument of
    ``fn`` or ``fn`` has a required argument that is not a grid axis.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a tokdyn.sweep.Grid, got {type(grid).__name__}")
    if len(grid) > 2**32:
        raise ValueError(f"grid has {len(grid)} runs; run indices are folded into keys as uint32 (at most 2^32 runs)")
    if out is None and not collect:
        raise ValueError("collect=False needs out=DIR: the results would be lost")
    _check_signature(fn, grid.names)
    if part is None:
        part = (jax.process_index(), jax.process_count())
    if (not isinstance(part, (tuple, list)) or len(part) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in part)
            or not 0 <= part[0] < part[1]):
        raise ValueError(f"part must be a pair (i, n) of ints with 0 <= i < n, got {part!r}")
    if part[1] > 1 and out is None:
        raise ValueError(f"part={tuple(part)} splits the sweep between processes: it needs out=DIR to gather it")
    total = len(grid)
    if out is not None and chunk_size is None and os.path.exists(os.path.join(out, "manifest.json")):
        chunk_size = read_manifest(out)["chunk_size"]  # resume with the chunks already on disk
    devices, batch_size, step, padded = _plan(devices, batch_size, chunk_size, total)
    task = _GridTask(fn, grid.names, bool(common_random_numbers))
    starts = list(range(0, total, step))
    mine = set(starts[part[0]::part[1]])
    done: dict[int, dict] = {}
    fields = None
    if out is not None:
        _check_resume(out, _manifest(fn, grid, key, step, common_random_numbers), resume or part[1] > 1)
        chunk_dir = os.path.join(out, "chunks")
        for name in os.listdir(chunk_dir) if os.path.isdir(chunk_dir) else []:
            if name.endswith(".tmp") and part[1] == 1:  # a write cut short by a kill: never valid
                os.remove(os.path.join(chunk_dir, name))
        for s0 in starts:
            got = _read_chunk(_chunk_path(out, s0, min(s0 + step, total)), s0, min(s0 + step, total), None)
            if got is not None:
                done[s0] = got if collect else {}
                fields = fields or tuple(got)
    todo = [s0 for s0 in starts if s0 not in done and s0 in mine]
    bar = _Progress(total, sum(min(s0 + step, total) - s0 for s0 in done), progress)
    get = lambda a, b: {"index": np.arange(a, b, dtype=np.uint32)}  # noqa: E731
    shared = _grid_shared(grid, key)
    for s0, s1, outputs in _stream(task, shared, todo, total, step, padded, get, devices, batch_size, cache_dir):
        outputs = {k: np.asarray(v) for k, v in outputs.items()}
        fields = fields or tuple(outputs)
        if out is not None:
            _write_chunk(_chunk_path(out, s0, s1), s0, s1, outputs)
        done[s0] = outputs if collect else {}
        bar.update(s1 - s0)
    if not collect:
        return None
    if part[1] > 1:  # the other parts' chunks, if they have all finished
        for s0 in starts:
            if s0 not in done:
                got = _read_chunk(_chunk_path(out, s0, min(s0 + step, total)), s0, min(s0 + step, total), fields)
                if got is None:
                    return None
                done[s0] = got
    parts = [done[s0] for s0 in starts]
    columns = grid.rows()
    for f in fields:
        columns[f] = np.concatenate([p[f] for p in parts], axis=0)
    return SweepResult(columns, fields, grid)


def read_manifest(out: str) -> dict:
    """The ``manifest.json`` of the sweep in ``out`` (``ValueError`` if there is none)."""
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        raise ValueError(f"no sweep found in {out!r} (it has no manifest.json)")
    with open(path) as f:
        return json.load(f)


def iter_chunks(out: str):
    """Yield ``(start, stop, columns)`` for every chunk of the finished sweep in ``out``, in order,
    where ``columns`` holds the grid's columns and every output field for runs ``start..stop-1``.
    Reads one chunk at a time, so summaries of 10^8-run sweeps stay in constant memory.
    ``ValueError`` on the first missing or damaged chunk."""
    m = read_manifest(out)
    grid = Grid.from_dict(m["grid"])
    step, total = m["chunk_size"], m["runs"]
    fields = None
    for s0 in range(0, total, step):
        s1 = min(s0 + step, total)
        got = _read_chunk(_chunk_path(out, s0, s1), s0, s1, fields)
        if got is None:
            raise ValueError(f"sweep in {out!r} is incomplete or damaged at runs [{s0}, {s1}): resume it first")
        fields = fields or tuple(got)
        cols = grid.rows(s0, s1)
        cols.update(got)
        yield s0, s1, cols


def load(out: str) -> SweepResult:
    """Read a finished sweep back from its directory (every chunk must be present and intact)."""
    grid = Grid.from_dict(read_manifest(out)["grid"])
    parts = [cols for _, _, cols in iter_chunks(out)]
    fields = tuple(k for k in parts[0] if k not in grid.names and k not in Grid.RESERVED)
    columns = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
    return SweepResult(columns, fields, grid)
