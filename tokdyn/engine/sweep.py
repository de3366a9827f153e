"""Sweeps: grids of conditions x seeds, run chunk by chunk, to disk, resumable, with progress.

:class:`Grid` is the product of named axes x seeds with stable run indices (nothing
materialised); :func:`run` applies a per-run ``fn(key, **condition)`` to every run of a grid on
the execution engine (:mod:`tokdyn.engine.execute`: compiled once, chunked, sharded over the local
devices), writes each finished chunk to disk next to a manifest, resumes after any
interruption, and returns columnar results (:class:`SweepResult`); :func:`load` and
:func:`iter_chunks` read a finished sweep back. Summaries live in :mod:`tokdyn.stats.summary`.

Files of a sweep directory: ``manifest.json`` (the arguments, the :func:`code_digest` of the run
function and its output fields, plain JSON with a ``checksum`` of its own fields) and
``chunks/START-STOP.npz`` (each written atomically with a SHA-256 (:func:`tokdyn.io.save_npz`) and
stamped with the digest of the manifest's arguments). Nothing damaged is ever read as a result: a
chunk that is truncated, altered, unverified or unstamped, of another sweep, or not a plain file
(a directory, a symbolic link) is named in a warning, set aside to ``chunks/corrupt/`` and
recomputed; a damaged manifest (one without its checksum included; it is fully determined by the
arguments) is set aside and rewritten, and the chunks' stamps keep the chunks of any other sweep
out. A sweep resumed with other code (another function body, other output fields) is refused.

Run indices and seeds travel as ``uint32`` on the device (``fold_in`` takes 32 bits): a grid holds
at most :data:`MAX_RUNS` runs.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import re
import stat
import textwrap
import time
import types
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, io
from tokdyn.engine import execute


# ----------------------------------------------------------------------------------------------
# Grids of conditions x seeds


def parse_axis(name: str, text: str) -> np.ndarray:
    """Axis values from their text form: ``"0.3,0.6,0.9"`` (a comma list), ``"linspace:a:b:n"``
    (n evenly spaced values from a to b) or ``"logspace:a:b:n"`` (n values from a to b, evenly
    spaced in log, so a and b must be > 0). ``name`` is used in error messages only. An axis is a
    set of conditions: a value given twice (``"0.3,0.3"``, ``"linspace:1:1:3"``) is refused
    (``ValueError`` naming ``name`` and the value), since its runs would count as extra seeds."""
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
        if kind == "logspace" and (a <= 0 or b <= 0):
            raise ValueError(f"axis {name!r}: logspace endpoints must be > 0, got {text!r}")
        values = np.linspace(a, b, n) if kind == "linspace" else np.geomspace(a, b, n)
        try:
            _checks.distinct(name, values)
        except ValueError as e:
            raise ValueError(
                f"axis {name!r}: {text!r} gives one value several times ({e}); give endpoints that differ, or n=1"
            ) from None
        return values
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"axis {name!r}: expected a comma list, linspace:a:b:n or logspace:a:b:n, got {text!r}"
        ) from None
    if not values:
        raise ValueError(f"axis {name!r} has no values: got {text!r}")
    _checks.distinct(name, values)  # a repeated value would count its runs twice
    return np.asarray(values)


def _distinct_on_device(name: str, arr: np.ndarray) -> None:
    """``ValueError`` naming the axis when two of its values become one in the dtype the runs
    compute in (:func:`device_columns`: float32 or int32 with x64 off)."""
    # the dtypes of device_columns, without initialising a backend (a Grid may be built before
    # jax.distributed.initialize)
    dev = arr.astype(jax.dtypes.canonicalize_dtype(np.float64 if arr.dtype.kind == "f" else np.int64))
    if np.unique(dev).size < arr.size:
        _, first, counts = np.unique(dev, return_index=True, return_counts=True)
        i = first[np.argmax(counts > 1)]
        same = arr[dev == dev[i]].tolist()
        raise ValueError(
            f"axis {name!r} lists {same}, which are one value ({dev[i].item()!r}) in {dev.dtype}, the "
            "dtype the runs compute in: list every condition once"
        )


class Grid:
    """The product of named axes x ``seeds`` seeds, with stable run indices.

    Run ``i`` is the condition at mixed-radix position ``i`` over ``(*axes, seed)``: axes in the
    order given, the seed fastest, exactly like ``itertools.product(*axes.values(), range(seeds))``.
    Nothing is materialised: :meth:`rows` builds the columns of any index range on demand, so a
    10^8-run grid costs only its axis values.

    Args:
      seeds: the number of seeds, an int >= 1.
      seed_major: put the seed slowest instead (``product(range(seeds), *axes)``): all conditions
        of seed 0, then of seed 1, ... With common random numbers that keeps a seed's runs
        together, so a function that draws its data once per seed (see :func:`run`) shares each
        draw across a whole chunk however many seeds there are.
      **axes: name -> 1-D numbers (a scalar is one value). Each axis is a set of conditions: a
        value given twice (or two values that are one in the dtype the runs compute in, float32
        or int32) is refused with a ``ValueError`` naming the axis and the value (its runs would
        count as extra seeds). The names ``seed`` and ``index`` are reserved.

    Attributes:
      shape: ``(*axis sizes, seeds)``, whatever ``seed_major``.
      strides: the step of each entry of ``shape`` in the run index.

    >>> g = Grid(temperature=[0.5, 1.0], momentum=[0.0, 0.5], seeds=3)
    >>> len(g), g.shape
    (12, (2, 2, 3))
    >>> g[4]
    {'temperature': 0.5, 'momentum': 0.5, 'seed': 1, 'index': 4}
    >>> Grid(temperature=[0.5, 1.0], momentum=[0.0, 0.5], seeds=3, seed_major=True)[4]
    {'temperature': 0.5, 'momentum': 0.0, 'seed': 1, 'index': 4}
    """

    RESERVED = ("seed", "index")

    def __init__(self, seeds: int = 1, *, seed_major: bool = False, **axes):
        if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
            raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
        if not isinstance(seed_major, (bool, np.bool_)):
            raise TypeError(f"seed_major must be a bool, got {seed_major!r}")
        self.seeds = int(seeds)
        self.seed_major = bool(seed_major)
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
            _checks.distinct(f"axis {name!r}", arr)  # a repeated value would count its runs as extra seeds
            _distinct_on_device(name, arr)
            self.axes[name] = arr
        self.shape = tuple(a.size for a in self.axes.values()) + (self.seeds,)
        self.n_conditions = int(np.prod(self.shape[:-1], dtype=np.int64))
        # stride of each axis (and of the seed, last) in the flat run index
        inner = 1 if self.seed_major else self.seeds
        axis_strides = tuple(
            int(np.prod(self.shape[i + 1 : -1], dtype=np.int64)) * inner for i in range(len(self.shape) - 1)
        )
        self.strides = axis_strides + (self.n_conditions if self.seed_major else 1,)

    def condition(self, index):
        """The condition number (0 .. n_conditions - 1, the axes' mixed-radix position) of run
        ``index`` (int or array), in either order."""
        index = np.asarray(index, np.int64)
        return index % self.n_conditions if self.seed_major else index // self.seeds

    def __len__(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def names(self) -> tuple:
        """The axis names, in grid order (``seed`` and ``index`` are not axes)."""
        return tuple(self.axes)

    def __repr__(self) -> str:
        axes = ", ".join(f"{k}={v.tolist() if v.size <= 6 else f'<{v.size} values>'}" for k, v in self.axes.items())
        major = ", seed_major=True" if self.seed_major else ""
        return f"Grid({axes}{', ' if axes else ''}seeds={self.seeds}{major})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Grid)
            and self.seeds == other.seeds
            and self.names == other.names
            and self.seed_major == other.seed_major
            and all(np.array_equal(a, b) for a, b in zip(self.axes.values(), other.axes.values()))
        )

    def rows(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Columns for runs ``start..stop-1``: every axis's value, ``seed`` and ``index`` (int64)."""
        n = len(self)
        stop = n if stop is None else stop
        if not (0 <= start <= stop <= n):
            raise IndexError(f"run range [{start}, {stop}) is outside the grid's {n} runs")
        index = np.arange(start, stop, dtype=np.int64)
        out = {}
        for (name, values), stride, size in zip(self.axes.items(), self.strides, self.shape):
            out[name] = values[(index // stride) % size]
        out["seed"] = (index // self.strides[-1]) % self.seeds
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
        out = {"axes": {k: v.tolist() for k, v in self.axes.items()}, "seeds": self.seeds}
        if self.seed_major:  # absent: the seed fastest (every manifest written before the option)
            out["seed_major"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        """The grid a :meth:`to_dict` description holds (a description without ``seed_major``: the
        seed fastest)."""
        return cls(
            seeds=d["seeds"],
            seed_major=bool(d.get("seed_major", False)),
            **{k: np.asarray(v) for k, v in d["axes"].items()},
        )


# ----------------------------------------------------------------------------------------------
# Sweeps: a per-run function over a Grid, chunked to disk, resumable


@dataclasses.dataclass(frozen=True)
class _GridTask:
    """Adapts ``fn(key, **condition)`` to the executor: decodes each run's conditions from its
    global index on the device (so a chunk's only input is its index range) and derives the run's
    key from the root key and that index (or the run's seed, for common random numbers).

    ``shared`` holds the root key, every axis's values (``tables``), each axis's and the seed's
    stride in the run index and the seed count, all traced: grids with the same axis names and
    sizes share one compilation. Conditions reach ``fn`` as float32 / int32 scalars, like
    :meth:`Grid.rows` cast by :func:`device_columns`.

    Shared draws (``n_draws > 0``: common random numbers and an ``fn`` with a ``draw(key)``
    method): :meth:`prepare` calls ``fn.draw`` once for every seed among a device's runs of a
    chunk, and each run receives its seed's draw as ``draw=``. A device's runs are
    consecutive indices, so their seeds are consecutive too (modulo ``seeds``); ``n_draws`` bounds
    how many there are (:func:`_n_draws`). Every run takes its draw from there, even when nothing
    is shared (as many draws as runs), so that each run is computed by the same program whatever
    the chunking: results are bit-identical across chunk sizes, device counts and both grid orders.
    Against ``fn(key, **condition)`` drawing for itself they agree up to floating-point rounding
    (XLA may fuse the arithmetic on the draw differently in the two programs)."""

    fn: Callable
    names: tuple
    by_seed: bool
    n_draws: int = 0

    def prepare(self, shared, runs):
        """Once per device and chunk (see :func:`tokdyn.engine.execute.sharded_map`): the draws of the
        seeds of ``runs`` (consecutive indices), when that shares any."""
        if not self.n_draws:
            return shared
        seeds = shared["seeds"]
        first = (runs["index"][0] // shared["seed_stride"]) % seeds
        # the seed first + j modulo seeds, without forming first + j (uint32: it may pass 2^32
        # when seeds is close to it; j < n_draws <= seeds, so one subtraction wraps it)
        seed_of = lambda j: jnp.where(j < seeds - first, first + j, j - (seeds - first))  # noqa: E731
        # one seed after another: a vmapped draw compiles several times slower on XLA:CPU (the
        # random-bit kernel grows with the batch), for little gain once the draws are shared
        draws = jax.lax.map(
            lambda j: self.fn.draw(jax.random.fold_in(shared["key"], seed_of(j))),
            jnp.arange(self.n_draws, dtype=jnp.uint32),
        )
        return dict(shared, draws=draws, first_seed=first)

    def __call__(self, shared, run):
        index = run["index"]  # uint32
        condition = {}
        for name in self.names:
            table = shared["tables"][name]
            condition[name] = table[(index // shared["strides"][name]) % table.shape[0]]
        seed = (index // shared["seed_stride"]) % shared["seeds"]
        k = jax.random.fold_in(shared["key"], seed if self.by_seed else index)
        if "draws" in shared:  # this run's seed's draw, made once by prepare
            first = shared["first_seed"]  # (seed - first) modulo seeds, never past 2^32 in uint32
            slot = jnp.where(seed >= first, seed - first, seed + (shared["seeds"] - first))
            condition["draw"] = jax.tree_util.tree_map(lambda d: d[slot], shared["draws"])
        out = self.fn(k, **condition)
        if not isinstance(out, dict):
            raise TypeError(f"the sweep function must return a dict of arrays, got {type(out).__name__}")
        return out


def _n_draws(grid: "Grid", n_runs: int) -> int:
    """The most distinct seeds among ``n_runs`` consecutive runs of ``grid``: ``min(seeds, n)``
    with the seed fastest, ``(n - 2) // C + 2`` with the seed slowest over C conditions."""
    if grid.seed_major and n_runs > 1:
        return min(grid.seeds, (n_runs - 2) // grid.n_conditions + 2)
    return min(grid.seeds, n_runs)


def _grid_task(fn, grid: "Grid", common_random_numbers: bool, runs_per_device: int) -> _GridTask:
    """The task for ``grid``; ``runs_per_device``: the runs each device gets per chunk. Only the
    number of draws to share enters the compiled function, so grids that differ in their seed
    count alone still share one compilation."""
    share = bool(common_random_numbers) and callable(getattr(fn, "draw", None))
    return _GridTask(
        fn, grid.names, bool(common_random_numbers), n_draws=_n_draws(grid, runs_per_device) if share else 0
    )


def _grid_shared(grid: "Grid", key) -> dict:
    tables = device_columns(dict(grid.axes))
    strides = {name: np.uint32(st) for name, st in zip(grid.names, grid.strides)}
    return dict(
        key=key, tables=tables, strides=strides, seeds=np.uint32(grid.seeds), seed_stride=np.uint32(grid.strides[-1])
    )


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
        return io.write_csv(path, _flat_columns(self.columns))

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


def device_columns(rows: dict) -> dict:
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


_ADDRESS = re.compile(r"\s+at\s+0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")  # memory addresses in a repr


def code_digest(obj) -> str:
    """A SHA-256 (hex) of the code ``obj`` runs, so that results can be keyed by the code that made
    them (:func:`run` records it in a sweep's manifest and refuses to resume with other code).

    A function is hashed by its source when :func:`inspect.getsource` finds it, as its syntax tree
    written back without comments, layout or docstrings (:func:`ast.unparse`: reformatting the code
    or rewording a docstring keeps a sweep resumable; the source text itself where it does not parse
    alone; a lambda also by its constants and names, since its source line may hold several), else
    by its bytecode (``co_code``, ``co_consts`` with nested code objects, and
    ``co_names``); then its defaults, keyword defaults and closure cells, and the globals its code
    names (functions of its own module by their code, other modules' by their name, data by value).
    Values are hashed recursively: functions by their code digest; NumPy and JAX arrays by dtype,
    shape and bytes; dataclasses and NamedTuples by their fields; ``functools.partial`` by its
    function and arguments; a bound method by its function and instance; a callable instance by its
    class's code (its source, or ``__call__``) and its fields; anything else by its ``repr``
    without memory addresses. Cycles are cut (a value met again inside itself is hashed by its
    type). Not for use inside ``jit``."""
    return hashlib.sha256(_Digester().token(obj).encode()).hexdigest()


def _source_key(source: str) -> str:
    """The code of ``source`` (a function's or class's, from :func:`inspect.getsource`) as
    :func:`code_digest` hashes it: the syntax tree without docstrings, written back by
    :func:`ast.unparse` (comments and layout gone), or the text itself when it does not parse alone."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return "src:" + source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return "ast:" + ast.unparse(tree)


class _Digester:
    """The text :func:`code_digest` hashes, built recursively with a guard against cycles."""

    MAX_DEPTH = 200

    def __init__(self):
        self.active: set = set()
        self.depth = 0

    def token(self, obj) -> str:
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return f"{type(obj).__name__}:{obj!r}"
        key = id(obj)
        if key in self.active or self.depth > self.MAX_DEPTH:
            return f"<cycle {type(obj).__module__}.{type(obj).__qualname__}>"
        self.active.add(key)
        self.depth += 1
        try:
            return self._token(obj)
        finally:
            self.depth -= 1
            self.active.discard(key)

    def _many(self, items) -> str:
        return "[" + ",".join(self.token(v) for v in items) + "]"

    def _token(self, obj) -> str:
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}"
        if isinstance(obj, np.generic):
            return f"np:{obj.dtype.str}:{obj!r}"
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind == "O":
                return f"ndarray:O:{obj.shape}:" + self._many(obj.ravel().tolist())
            data = np.ascontiguousarray(obj)
            return f"ndarray:{data.dtype.str}:{data.shape}:{hashlib.sha256(data.tobytes()).hexdigest()}"
        if isinstance(obj, jax.Array) and not isinstance(obj, jax.core.Tracer):
            if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
                return f"key:{jax.random.key_impl(obj)}:" + self.token(np.asarray(jax.random.key_data(obj)))
            return "jax." + self.token(np.asarray(obj))
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        if isinstance(obj, types.MethodType):
            return f"method:{self.token(obj.__func__)}:{self.token(obj.__self__)}"
        if isinstance(obj, functools.partial):
            return f"partial:{self.token(obj.func)}:{self._many(obj.args)}:{self.token(dict(obj.keywords))}"
        if isinstance(obj, types.CodeType):
            return self._code(obj)
        if isinstance(obj, types.ModuleType):
            return f"module:{obj.__name__}"
        if isinstance(obj, type):
            return f"class:{obj.__module__}.{obj.__qualname__}"
        if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            return f"builtin:{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', obj.__name__)}"
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
            return f"namedtuple:{name}:" + self._many(f"{f}={self.token(v)}" for f, v in zip(obj._fields, obj))
        if isinstance(obj, (list, tuple)):
            return f"{t.__name__}:" + self._many(obj)
        if isinstance(obj, dict):
            return f"dict:{name}:[" + ",".join(f"{self.token(k)}={self.token(v)}" for k, v in obj.items()) + "]"
        if isinstance(obj, (set, frozenset)):
            return f"{t.__name__}:[" + ",".join(sorted(self.token(v) for v in obj)) + "]"
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and callable(wrapped) and not isinstance(obj, type):  # jax.jit, functools.wraps
            return f"wrapped:{name}:{self.token(wrapped)}"
        fields = self._fields(obj)
        if callable(obj):  # a callable instance: its class's code and its fields
            return f"instance:{name}:{self._class_code(t)}:{fields}"
        if fields is not None:
            return f"object:{name}:{fields}"
        return f"repr:{name}:{_ADDRESS.sub('', repr(obj))}"

    def _fields(self, obj) -> str | None:
        if dataclasses.is_dataclass(obj):
            return self._many(f"{f.name}={self.token(getattr(obj, f.name, None))}" for f in dataclasses.fields(obj))
        if type(obj).__repr__ is object.__repr__ and hasattr(obj, "__dict__"):  # its repr says nothing
            return self._many(f"{k}={self.token(v)}" for k, v in sorted(vars(obj).items()))
        return None

    def _class_code(self, cls) -> str:
        try:
            return _source_key(inspect.getsource(cls))
        except (OSError, TypeError):
            call = getattr(cls, "__call__", None)  # noqa: B004 (the method itself, to name its source)
            return self.token(call) if isinstance(call, types.FunctionType) else f"class:{cls.__qualname__}"

    def _code(self, code: types.CodeType) -> str:
        consts = ",".join(self._code(c) if isinstance(c, types.CodeType) else self.token(c) for c in code.co_consts)
        return f"code:{code.co_name}:{code.co_code.hex()}:[{consts}]:{list(code.co_names)}"

    @staticmethod
    def _names(code: types.CodeType) -> set:
        names = set(code.co_names)
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                names |= _Digester._names(c)
        return names

    def _function(self, fn: types.FunctionType) -> str:
        code = fn.__code__
        try:
            body = _source_key(inspect.getsource(fn))
            if code.co_name == "<lambda>":  # its source line may hold several lambdas
                body += ":" + self._many(c for c in code.co_consts if not isinstance(c, types.CodeType))
                body += f":{sorted(self._names(code))}"
        except (OSError, TypeError):
            body = self._code(code)
        parts = [
            f"function:{fn.__module__}.{fn.__qualname__}",
            body,
            self.token(fn.__defaults__),
            self.token(fn.__kwdefaults__),
        ]
        cells = []
        for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                cells.append(f"{var}={self.token(cell.cell_contents)}")
            except ValueError:  # an empty cell
                cells.append(f"{var}=<empty>")
        parts.append("closure:[" + ",".join(cells) + "]")
        refs = []
        for ref in sorted(self._names(code)):
            if ref not in fn.__globals__:
                continue
            v = fn.__globals__[ref]
            if isinstance(v, types.FunctionType) and v.__module__ != fn.__module__:
                refs.append(f"{ref}=function:{v.__module__}.{v.__qualname__}")  # another module's: by its name
            elif isinstance(v, (types.ModuleType, type)) or (
                callable(v)
                and not isinstance(v, types.FunctionType)
                and getattr(v, "__module__", None) != fn.__module__
            ):
                refs.append(f"{ref}=name:{getattr(v, '__module__', None)}.{getattr(v, '__qualname__', ref)}")
            else:
                refs.append(f"{ref}={self.token(v)}")
        parts.append("globals:[" + ",".join(refs) + "]")
        return "|".join(parts)


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


MAX_RUNS = 2**32 - 1  # run indices, seeds and strides are uint32 on the device (fold_in takes 32 bits)
CHUNK_STAMP = "__sweep__"  # the member of a chunk file holding the digest of its sweep's arguments
_CHUNK_NAME = re.compile(r"^(\d{12})-(\d{12})\.npz$")


def _chunk_path(out: str, start: int, stop: int) -> str:
    return os.path.join(out, "chunks", f"{start:012d}-{stop:012d}.npz")


def _read_chunk(
    path: str, start: int, stop: int, fields, expected: str | None = None
) -> tuple[dict | None, str | None]:
    """``(outputs, None)`` of a finished chunk; ``(None, None)`` when its file is absent; ``(None,
    reason)`` when it cannot be used: not a plain file (a directory or a symbolic link, never
    followed), without the verification header of :func:`tokdyn.io.save_npz` (written by something
    else), truncated or altered (its checksum, :func:`tokdyn.io.load_npz`), of other runs or fields,
    without a stamp or stamped by a sweep of other arguments than ``expected`` (a :func:`sweep_id`)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None, None
    if stat.S_ISLNK(mode):
        return None, "it is a symbolic link, not a chunk file (never followed)"
    if not stat.S_ISREG(mode):
        return None, f"it is {'a directory' if stat.S_ISDIR(mode) else 'not a regular file'}, not a chunk file"
    try:
        if not io.is_verified(path):
            return None, "it has no verification header (every chunk is written with one): not a chunk this sweep wrote"
        data = io.load_npz(path)
    except FileNotFoundError:
        return None, None
    except io.CorruptFile as e:
        return None, e.reason
    except OSError as e:
        return None, f"it cannot be read: {type(e).__name__}: {e}"
    index = data.pop("index", None)
    stamp = data.pop(CHUNK_STAMP, None)
    if index is None or not np.array_equal(index, np.arange(start, stop)):
        return None, f"it does not hold the runs [{start}, {stop}) its name says"
    if stamp is None:
        return None, "it carries no stamp of the sweep that wrote it"
    if expected is not None and str(stamp) != expected:
        return None, "it is stamped by a sweep of other arguments"
    if fields is not None and set(data) != set(fields):
        return None, f"it holds the fields {sorted(data)}, not {sorted(fields)}"
    if any(len(v) != stop - start for v in data.values()):
        return None, f"its fields do not hold {stop - start} runs each"
    return data, None


def _write_chunk(path: str, start: int, stop: int, outputs: dict, stamp: str = "") -> None:
    """A finished chunk, atomically, with a checksum (:func:`tokdyn.io.save_npz`) and ``stamp``."""
    io.save_npz(path, index=np.arange(start, stop, dtype=np.int64), **{CHUNK_STAMP: np.asarray(stamp)}, **outputs)


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sweep_id(manifest: dict) -> str:
    """The digest of a manifest's arguments (its tokdyn version and its own checksum aside): the
    stamp of every chunk of that sweep."""
    return _digest({k: v for k, v in manifest.items() if k not in ("tokdyn", "checksum")})


def _manifest(fn, grid: Grid, key, chunk_size: int, common_random_numbers: bool, code: dict, outputs: dict) -> dict:
    from tokdyn import __version__

    m = {
        "format": 2,
        "fn": _fn_id(fn),
        "code": dict(code),
        "outputs": dict(outputs),
        "grid": grid.to_dict(),
        "runs": len(grid),
        "chunk_size": int(chunk_size),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "key_impl": str(jax.random.key_impl(key)),
        "common_random_numbers": bool(common_random_numbers),
        "tokdyn": __version__,
    }
    m = json.loads(json.dumps(m))  # exactly what a reader of the file gets back
    m["checksum"] = _digest(m)
    return m


MANIFEST_WAIT_S = 600.0  # how long a part waits for the part that owns the manifest to write it


def _write_manifest(path: str, manifest: dict) -> None:
    with io.atomic_write(path) as f:  # plain json (not io.jsonable): read back to the dict its checksum covers
        json.dump(manifest, f, indent=2)
        f.write("\n")


def _check_resume(out: str, manifest: dict, resume: bool, part: tuple) -> bool:
    """Write the manifest (part 0 owns it) or check the one already there against ``manifest``;
    returns whether an intact manifest was there already.

    Several processes may start the same sweep at once: part 0 writes the manifest when it is
    absent, or sets a damaged one aside (with a warning) and writes it anew from the arguments;
    every other part waits for a readable one (it may not see part 0's directory yet) and then
    checks that it describes the same sweep."""
    path = os.path.join(out, "manifest.json")
    old, damage = None, None
    if os.path.exists(path):
        try:
            old = read_manifest(out)
        except io.CorruptFile as e:
            damage = e
    if old is None:
        if damage is not None and not resume:
            raise io.OutputConflict(
                f"out={out!r} already holds a sweep (its {path} is damaged: {damage.reason}); pass "
                "resume=True to continue it, or choose a new directory"
            )
        if part[0] == 0:
            if damage is not None:
                target = io.set_aside(path, damage.reason, warn=False)
                warnings.warn(
                    f"{path} could not be read ({damage.reason}): set aside as {target} and written anew "
                    "from the arguments (it is fully determined by them; every chunk is checked against "
                    "it by its stamp)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _write_manifest(path, manifest)
            return False
        os.makedirs(out, exist_ok=True)
        deadline = time.monotonic() + MANIFEST_WAIT_S
        while old is None:
            if time.monotonic() > deadline:
                why = f"it is damaged ({damage.reason})" if damage is not None else "it is absent"
                raise TimeoutError(
                    f"part {part[0]} of {part[1]} waited {MANIFEST_WAIT_S:.0f} s for part 0 to write "
                    f"{path} ({why}): start every part with the same out, on a filesystem all of "
                    "them see"
                )
            time.sleep(0.05)
            try:
                old = read_manifest(out) if os.path.exists(path) else None
            except io.CorruptFile as e:
                damage = e
        resume = True
    elif not resume:
        raise io.OutputConflict(
            f"out={out!r} already holds a sweep; pass resume=True to continue it, or choose a new directory"
        )
    differ = [k for k in manifest if k not in ("tokdyn", "checksum") and old.get(k) != manifest[k]]
    if differ:
        raise io.OutputConflict(_resume_conflict(out, old, manifest, differ))
    return damage is None


def _resume_conflict(out: str, old: dict, new: dict, differ: list) -> str:
    """Why the sweep in ``out`` (manifest ``old``) cannot be resumed by ``new``."""
    if "code" not in old or "outputs" not in old:
        return (
            f"out={out!r} holds a sweep written before sweeps recorded the code that made their results (its "
            "manifest has no 'code'): they cannot be matched to the code run now; rerun with --fresh (or remove "
            "the directory), or run into another directory"
        )
    if set(differ) <= {"code", "outputs", "fn", "format"}:
        what = []
        for k in sorted(set(old["code"]) | set(new["code"])):
            if old["code"].get(k) != new["code"].get(k):
                what.append("fn code" if k == "fn" else f"{k} code")
        if "outputs" in differ:
            what.append(
                f"output fields ({', '.join(old['outputs']) or 'none'} there, "
                f"{', '.join(new['outputs']) or 'none'} now)"
            )
        if "fn" in differ:
            what.append(f"fn ({old.get('fn')} there, {new['fn']} now)")
        return (
            f"out={out!r}: the rule's code changed since these results ({'; '.join(what)} differ): rerun with "
            "--fresh (or remove the directory), or into another directory"
        )
    return (
        f"out={out!r} holds a sweep started with different arguments ({', '.join(differ)} differ); resume it with "
        "the same arguments or choose a new directory"
    )


def _resumed_chunk_size(out: str) -> int | None:
    """The chunk size of the sweep already in ``out`` (None: none there): its manifest's or, when
    the manifest cannot be read, the size its chunk files were written with."""
    if not os.path.exists(os.path.join(out, "manifest.json")):
        return None
    try:
        return read_manifest(out)["chunk_size"]
    except io.CorruptFile:
        chunk_dir = os.path.join(out, "chunks")
        sizes = [
            int(m[2]) - int(m[1])
            for m in map(_CHUNK_NAME.match, os.listdir(chunk_dir) if os.path.isdir(chunk_dir) else [])
            if m
        ]
        return max(sizes) if sizes else None


def run(
    fn: Callable,
    grid: Grid,
    *,
    key,
    chunk_size: int | None = None,
    out: str | None = None,
    resume: bool = True,
    progress: bool = True,
    common_random_numbers: bool = False,
    batch_size: int | None | str = "auto",
    devices=None,
    collect: bool = True,
    part: tuple[int, int] | None = None,
    code: dict | None = None,
) -> SweepResult | None:
    """Run ``fn(key, **condition)`` for every run of ``grid``; compiled once, chunked, sharded.

    Args:
      fn: jittable, returns a dict of scalars (or small arrays). Its condition arguments are the
        grid's axes (traced: a float32 or int32 scalar per run).
      grid: the runs (:class:`Grid`).
      key: root PRNG key. Run i gets ``fold_in(key, i)`` — or ``fold_in(key, seed)`` with
        ``common_random_numbers=True``, so every condition of a seed shares its randomness (paired
        comparisons across conditions). Results are bit-identical whatever the chunk size, device
        count or number of interruptions. With common random numbers, an ``fn`` that has a method
        ``draw(key)`` (the part of a run that depends on the key alone, such as
        :meth:`tokdyn.engine.runs.ClusterRun.draw`) and accepts ``draw=`` gets it computed once per seed
        in each device's share of a chunk and passed to all that seed's runs: a grid with
        ``seed_major=True`` keeps a seed's runs together, so every chunk shares its draws. Results
        are still bit-identical across chunk sizes, device counts and the two grid orders; against
        calls of ``fn(key, **condition)`` that draw for themselves they agree up to floating-point
        rounding (a few runs in a hundred of a chaotic rule may then end elsewhere).
      chunk_size: runs per chunk (memory, and the unit of work saved to disk). Default: per
        backend and device count, or, when resuming a sweep in ``out``, the chunk size it used.
      out: directory; each finished chunk is written (atomically, with a checksum and the stamp
        of the arguments) before the next one is read back, next to a ``manifest.json`` of the
        arguments. A killed sweep restarted with the same arguments redoes only unfinished or
        damaged chunks (a damaged one is named in a warning and set aside to ``chunks/corrupt/``;
        a damaged manifest is set aside and written anew); different arguments are refused.
      resume: continue a sweep found in ``out`` (False: refuse to touch an existing one).
      progress: a progress bar (terminal) or a line per chunk on stderr (:class:`tokdyn.io.Progress`).
      batch_size, devices: execution strategy and devices (see :func:`tokdyn.engine.execute.map_runs`).
      collect: return the results (False with ``out``: keep nothing in memory; read them later
        with :func:`load`).
      part: ``(i, n)``: do only chunks ``i, i + n, i + 2n, ...`` (chunks are dealt round-robin).
        Default: ``(jax.process_index(), jax.process_count())``, so every process of a
        multi-host job runs its own share on its local devices. Several parts need ``out`` (a
        directory all of them can write; chunk files are independent and written atomically);
        a part returns the full results once every chunk is on disk, else ``None``. Part 0 writes
        the manifest; the others wait for it and check it. A part sets aside only its own damaged
        chunks (another part's are that part's to redo).
      code: what else the results depend on besides ``fn`` itself, ``{name: digest}`` (say the
        SHA-256 of the file ``fn``'s rule was loaded from), recorded in the manifest beside
        ``fn``'s :func:`code_digest` (``code["fn"]``).

    Results are keyed by the code that made them: the manifest records ``fn``'s
    :func:`code_digest` (and ``code``) and the output fields with their dtype and shape
    (traced once with ``jax.eval_shape``: nothing is compiled for it), so resuming into ``out``
    with a changed function body, another function or other output fields is refused with
    :class:`tokdyn.io.OutputConflict` naming what changed, as is a sweep written before manifests
    recorded the code. Every chunk must carry its checksum and stamp: one that does not (written
    by anything but this function), or that is a directory or a symbolic link, is set aside and
    recomputed.

    Multi-host: start every process with ``jax.distributed.initialize()``, then make the same
    ``run(..., out=SHARED_DIR)`` call in each; ``fold_in`` by global run index keeps the union
    bit-identical to a single-process sweep. Read it with :func:`load` when all have finished.

    Raises ``ValueError`` (before anything is compiled) when a grid axis is not an argument of
    ``fn`` or ``fn`` has a required argument that is not a grid axis, or when the grid has more
    than :data:`MAX_RUNS` runs.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a tokdyn.engine.sweep.Grid, got {type(grid).__name__}")
    if len(grid) > MAX_RUNS:
        raise ValueError(
            f"grid has {len(grid):,} runs ({' x '.join(map(str, grid.shape))}: axes x seeds); run indices "
            f"and seeds are folded into keys as uint32, so at most {MAX_RUNS:,}: fewer seeds or values"
        )
    if out is None and not collect:
        raise ValueError("collect=False needs out=DIR: the results would be lost")
    _check_signature(fn, grid.names)
    if part is None:
        part = (jax.process_index(), jax.process_count())
    if (
        not isinstance(part, (tuple, list))
        or len(part) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in part)
        or not 0 <= part[0] < part[1]
    ):
        raise ValueError(f"part must be a pair (i, n) of ints with 0 <= i < n, got {part!r}")
    if part[1] > 1 and out is None:
        raise ValueError(f"part={tuple(part)} splits the sweep between processes: it needs out=DIR to gather it")
    total = len(grid)
    if out is not None and chunk_size is None:
        chunk_size = _resumed_chunk_size(out)  # resume with the chunks already on disk
    devices, batch_size, step, padded = execute.plan(devices, batch_size, chunk_size, total)
    task = _grid_task(fn, grid, common_random_numbers, padded // len(devices))
    starts = list(range(0, total, step))
    mine = set(starts[part[0] :: part[1]])
    done: dict[int, dict] = {}
    shared = _grid_shared(grid, key)
    outputs_spec = output_spec(task, shared)
    fields = tuple(outputs_spec)
    digests = {"fn": code_digest(fn)}
    for name, value in (code or {}).items():
        if not isinstance(name, str) or not isinstance(value, str) or name == "fn":
            raise ValueError(f"code must map names (not 'fn') to digests (str), got {name!r}: {value!r}")
        digests[name] = value
    manifest = _manifest(fn, grid, key, step, common_random_numbers, digests, outputs_spec)
    sid = sweep_id(manifest)
    if out is not None:
        _check_resume(out, manifest, resume or part[1] > 1, tuple(part))
        chunk_dir = os.path.join(out, "chunks")
        if part[1] == 1:  # writes cut short by a kill (a part never removes another's write in flight)
            for folder, prefix in ((chunk_dir, ""), (out, "manifest.json.")):
                for name in os.listdir(folder) if os.path.isdir(folder) else []:
                    if io.is_temporary(name) and name.startswith(prefix):
                        os.remove(os.path.join(folder, name))
        for s0 in starts:
            s1 = min(s0 + step, total)
            path = _chunk_path(out, s0, s1)
            got, problem = _read_chunk(path, s0, s1, fields, sid)
            if got is not None:
                done[s0] = got if collect else {}
            elif problem is not None and s0 in mine:  # damaged: named, set aside, redone
                _set_aside_chunk(path, problem)
    todo = [s0 for s0 in starts if s0 not in done and s0 in mine]
    get = lambda a, b: {"index": np.arange(a, b, dtype=np.uint32)}  # noqa: E731
    with io.Progress(
        total, desc="sweep", unit="runs", done=sum(min(s0 + step, total) - s0 for s0 in done), quiet=not progress
    ) as bar:
        for s0, s1, outputs in execute.stream(task, shared, todo, total, step, padded, get, devices, batch_size):
            outputs = {k: np.asarray(v) for k, v in outputs.items()}
            if out is not None:
                _write_chunk(_chunk_path(out, s0, s1), s0, s1, outputs, sid)
            done[s0] = outputs if collect else {}
            bar.update(s1 - s0)
    if not collect:
        return None
    if part[1] > 1:  # the other parts' chunks, if they have all finished
        for s0 in starts:
            if s0 not in done:
                got, _ = _read_chunk(
                    _chunk_path(out, s0, min(s0 + step, total)), s0, min(s0 + step, total), fields, sid
                )
                if got is None:
                    return None
                done[s0] = got
    parts = [done[s0] for s0 in starts]
    columns = grid.rows()
    for f in fields:
        columns[f] = np.concatenate([p[f] for p in parts], axis=0)
    return SweepResult(columns, fields, grid)


def output_spec(task, shared) -> dict:
    """``{field: "dtype[shape]"}`` of one run of ``task`` (the grid task the sweep builds) on ``shared``,
    found by tracing it once (``jax.eval_shape``: nothing is compiled or run)."""
    leaves, treedef = jax.tree_util.tree_flatten(shared)
    abstract = tuple(jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves)
    try:
        hash(task)
    except TypeError:  # a function that cannot be a cache key: traced every time
        return dict(_output_spec(task, treedef, abstract))
    return dict(_cached_output_spec(task, treedef, abstract))


def _output_spec(task, treedef, abstract) -> tuple:
    def one(shared):
        runs = {"index": jnp.zeros((1,), jnp.uint32)}
        return task(task.prepare(shared, runs), {"index": runs["index"][0]})

    out = jax.eval_shape(one, jax.tree_util.tree_unflatten(treedef, list(abstract)))
    return tuple((k, f"{np.dtype(v.dtype).name}{list(v.shape)}") for k, v in out.items() if v is not None)


_cached_output_spec = functools.lru_cache(maxsize=64)(_output_spec)  # equal tasks trace alike


def _set_aside_chunk(path: str, problem: str) -> None:
    try:
        io.set_aside(path, problem)
    except FileNotFoundError:  # gone meanwhile (removed by hand, or set aside by a rerun of its part)
        pass


MANIFEST_KEYS = ("grid", "runs", "chunk_size", "key")


def read_manifest(out: str) -> dict:
    """The ``manifest.json`` of the sweep in ``out``: ``ValueError`` if there is none, and
    :class:`tokdyn.io.CorruptFile` (a ``ValueError`` naming the file) when it is truncated, altered
    or without its ``checksum``, or not a sweep's manifest."""
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        raise ValueError(f"no sweep found in {out!r} (it has no manifest.json)")
    try:
        m = io.read_json(path)
    except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, unreadable
        raise io.CorruptFile(path, f"not readable JSON: {e}") from None
    if not isinstance(m, dict) or any(k not in m for k in MANIFEST_KEYS):
        raise io.CorruptFile(
            path,
            f"not a sweep's manifest: it lacks {[k for k in MANIFEST_KEYS if k not in m]}"
            if isinstance(m, dict)
            else "not a sweep's manifest",
        )
    if "checksum" not in m:
        raise io.CorruptFile(path, "it carries no checksum (every manifest is written with one)")
    if m["checksum"] != _digest({k: v for k, v in m.items() if k != "checksum"}):
        raise io.CorruptFile(path, "its fields differ from the checksum recorded when it was written")
    try:
        grid = Grid.from_dict(m["grid"])
        ok = len(grid) == m["runs"] and isinstance(m["chunk_size"], int) and m["chunk_size"] >= 1
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise io.CorruptFile(path, f"its grid cannot be read: {type(e).__name__}: {e}") from None
    if not ok:
        raise io.CorruptFile(path, f"its runs ({m['runs']!r}) or chunk_size ({m['chunk_size']!r}) do not fit its grid")
    return m


def missing_chunks(out: str) -> list[tuple[int, int]]:
    """``(start, stop)`` of every chunk of the sweep in ``out`` that has no file yet (nothing is
    read: a file that is there may still be damaged; :func:`iter_chunks` checks each)."""
    m = read_manifest(out)
    step, total = m["chunk_size"], m["runs"]
    chunk_dir = os.path.join(out, "chunks")
    have = set(os.listdir(chunk_dir)) if os.path.isdir(chunk_dir) else set()
    return [
        (s0, min(s0 + step, total))
        for s0 in range(0, total, step)
        if os.path.basename(_chunk_path(out, s0, min(s0 + step, total))) not in have
    ]


def output_fields(out: str) -> tuple:
    """The output fields of the sweep in ``out`` (recorded in its manifest; for a sweep written
    before manifests recorded them, from its first chunk on disk)."""
    m = read_manifest(out)
    if isinstance(m.get("outputs"), dict):
        return tuple(m["outputs"])
    stop = min(m["chunk_size"], m["runs"])
    path = _chunk_path(out, 0, stop)
    first, problem = _read_chunk(path, 0, stop, None, sweep_id(m))
    if first is None:
        raise ValueError(f"sweep in {out!r} has no finished first chunk ({path}: {problem or 'absent'}): run it first")
    return tuple(first)


def iter_chunks(out: str):
    """Yield ``(start, stop, columns)`` for every chunk of the finished sweep in ``out``, in order,
    where ``columns`` holds the grid's columns and every output field for runs ``start..stop-1``.
    Reads one chunk at a time, so summaries of 10^8-run sweeps stay in constant memory.
    ``ValueError`` naming the first missing or damaged chunk's file."""
    m = read_manifest(out)
    grid = Grid.from_dict(m["grid"])
    step, total = m["chunk_size"], m["runs"]
    sid = sweep_id(m)
    fields = tuple(m["outputs"]) if isinstance(m.get("outputs"), dict) else None
    for s0 in range(0, total, step):
        s1 = min(s0 + step, total)
        path = _chunk_path(out, s0, s1)
        got, problem = _read_chunk(path, s0, s1, fields, sid)
        if got is None:
            raise ValueError(
                f"sweep in {out!r} is incomplete or damaged at runs [{s0}, {s1}): {path} "
                f"{'is damaged (' + problem + ')' if problem else 'is missing'}; resume it first (the "
                "same sweep.run call redoes it)"
            )
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
