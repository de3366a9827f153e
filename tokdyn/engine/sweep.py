"""Sweeps: grids of conditions x seeds, run chunk by chunk, to disk, resumable, with progress.

:class:`Grid` is the product of named axes x seeds with stable run indices (nothing
materialised); :func:`run` applies a per-run ``fn(key, **condition)`` to every run of a grid on
the execution engine (:mod:`tokdyn.engine.execute`: compiled once, chunked, sharded over the local
devices), writes each finished chunk to disk next to a manifest, resumes after any
interruption, and returns columnar results (:class:`SweepResult`); :func:`load` and
:func:`iter_chunks` read a finished sweep back. Summaries live in :mod:`tokdyn.stats.summary`.

Files of a sweep directory: ``manifest.json`` (the arguments, plain JSON with a ``checksum`` of
its own fields) and ``chunks/START-STOP.npz`` (each written atomically with a SHA-256
(:func:`tokdyn.io.save_npz`) and stamped with the digest of the manifest's arguments). Nothing damaged
is ever read as a result: a chunk that is truncated, altered or of another sweep is named in a
warning, set aside to ``chunks/corrupt/`` and recomputed; a damaged manifest (fully determined by
the arguments) is set aside and rewritten, and the chunks' stamps keep the chunks of any other
sweep out.

Run indices and seeds travel as ``uint32`` on the device (``fold_in`` takes 32 bits): a grid holds
at most :data:`MAX_RUNS` runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import io
from tokdyn.engine import execute


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
    With ``seed_major=True`` the seed is the slowest instead (``product(range(seeds), *axes)``):
    all conditions of seed 0, then of seed 1, ... With common random numbers that keeps a seed's
    runs together, so a function that draws its data once per seed (see :func:`run`) shares each
    draw across a whole chunk however many seeds there are. Nothing is materialised: :meth:`rows`
    builds the columns of any index range on demand, so a 10^8-run grid costs only its axis values.

    ``shape`` is ``(*axis sizes, seeds)`` in either order; ``strides`` holds the step of each of
    those in the run index.

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
            self.axes[name] = arr
        self.shape = tuple(a.size for a in self.axes.values()) + (self.seeds,)
        self.n_conditions = int(np.prod(self.shape[:-1], dtype=np.int64))
        # stride of each axis (and of the seed, last) in the flat run index
        inner = 1 if self.seed_major else self.seeds
        axis_strides = tuple(int(np.prod(self.shape[i + 1:-1], dtype=np.int64)) * inner
                             for i in range(len(self.shape) - 1))
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
        return (isinstance(other, Grid) and self.seeds == other.seeds and self.names == other.names
                and self.seed_major == other.seed_major
                and all(np.array_equal(a, b) for a, b in zip(self.axes.values(), other.axes.values())))

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
        return cls(seeds=d["seeds"], seed_major=bool(d.get("seed_major", False)),
                   **{k: np.asarray(v) for k, v in d["axes"].items()})


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
        draws = jax.lax.map(lambda j: self.fn.draw(jax.random.fold_in(shared["key"], seed_of(j))),
                            jnp.arange(self.n_draws, dtype=jnp.uint32))
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
    return _GridTask(fn, grid.names, bool(common_random_numbers),
                     n_draws=_n_draws(grid, runs_per_device) if share else 0)


def _grid_shared(grid: "Grid", key) -> dict:
    tables = device_columns(dict(grid.axes))
    strides = {name: np.uint32(st) for name, st in zip(grid.names, grid.strides)}
    return dict(key=key, tables=tables, strides=strides, seeds=np.uint32(grid.seeds),
                seed_stride=np.uint32(grid.strides[-1]))


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


def _read_chunk(path: str, start: int, stop: int, fields, expected: str | None = None, *,
                unstamped: bool = True) -> tuple[dict | None, str | None]:
    """``(outputs, None)`` of a finished chunk; ``(None, None)`` when its file is absent; ``(None,
    reason)`` when it cannot be used: truncated or altered (its checksum, :func:`tokdyn.io.load_npz`),
    of other runs or fields, or stamped by a sweep of other arguments than ``expected`` (a
    :func:`sweep_id`).
    ``unstamped``: accept a chunk without a stamp (written before chunks were stamped; only while
    the manifest it was checked against is intact)."""
    try:
        data = io.load_npz(path)
    except FileNotFoundError:
        return None, None
    except io.CorruptFile as e:
        return None, e.reason
    index = data.pop("index", None)
    stamp = data.pop(CHUNK_STAMP, None)
    if index is None or not np.array_equal(index, np.arange(start, stop)):
        return None, f"it does not hold the runs [{start}, {stop}) its name says"
    if expected is not None and (str(stamp) != expected if stamp is not None else not unstamped):
        return None, ("it is stamped by a sweep of other arguments" if stamp is not None else
                      "it carries no stamp, and the manifest that vouched for it was lost")
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


def _manifest(fn, grid: Grid, key, chunk_size: int, common_random_numbers: bool) -> dict:
    from tokdyn import __version__

    m = {
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
    returns whether an intact manifest was there already (the chunks it vouched for may then be
    unstamped ones of an earlier version).

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
            raise io.OutputConflict(f"out={out!r} already holds a sweep (its {path} is damaged: {damage.reason}); pass "
                                    "resume=True to continue it, or choose a new directory")
        if part[0] == 0:
            if damage is not None:
                target = io.set_aside(path, damage.reason, warn=False)
                warnings.warn(f"{path} could not be read ({damage.reason}): set aside as {target} and written anew "
                              "from the arguments (it is fully determined by them; every chunk is checked against "
                              "it by its stamp)", RuntimeWarning, stacklevel=3)
            _write_manifest(path, manifest)
            return False
        os.makedirs(out, exist_ok=True)
        deadline = time.monotonic() + MANIFEST_WAIT_S
        while old is None:
            if time.monotonic() > deadline:
                why = f"it is damaged ({damage.reason})" if damage is not None else "it is absent"
                raise TimeoutError(f"part {part[0]} of {part[1]} waited {MANIFEST_WAIT_S:.0f} s for part 0 to write "
                                   f"{path} ({why}): start every part with the same out, on a filesystem all of "
                                   "them see")
            time.sleep(0.05)
            try:
                old = read_manifest(out) if os.path.exists(path) else None
            except io.CorruptFile as e:
                damage = e
        resume = True
    elif not resume:
        raise io.OutputConflict(f"out={out!r} already holds a sweep; pass resume=True to continue it, or choose a new "
                                "directory")
    differ = [k for k in manifest if k not in ("tokdyn", "checksum") and old.get(k) != manifest[k]]
    if differ:
        raise io.OutputConflict(
            f"out={out!r} holds a sweep started with different arguments ({', '.join(differ)} differ); "
            "resume it with the same arguments or choose a new directory")
    return damage is None


def _resumed_chunk_size(out: str) -> int | None:
    """The chunk size of the sweep already in ``out`` (None: none there): its manifest's or, when
    the manifest cannot be read, the size its chunk files were written with."""
    if not os.path.exists(os.path.join(out, "manifest.json")):
        return None
    try:
        return read_manifest(out)["chunk_size"]
    except io.CorruptFile:
        chunk_dir = os.path.join(out, "chunks")
        sizes = [int(m[2]) - int(m[1]) for m in map(_CHUNK_NAME.match, os.listdir(chunk_dir)
                                                     if os.path.isdir(chunk_dir) else []) if m]
        return max(sizes) if sizes else None


def run(fn: Callable, grid: Grid, *, key, chunk_size: int | None = None, out: str | None = None,
        resume: bool = True, progress: bool = True, common_random_numbers: bool = False,
        batch_size: int | None | str = "auto", devices=None, collect: bool = True,
        part: tuple[int, int] | None = None) -> SweepResult | None:
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
        raise ValueError(f"grid has {len(grid):,} runs ({' x '.join(map(str, grid.shape))}: axes x seeds); run indices "
                         f"and seeds are folded into keys as uint32, so at most {MAX_RUNS:,}: fewer seeds or values")
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
    if out is not None and chunk_size is None:
        chunk_size = _resumed_chunk_size(out)  # resume with the chunks already on disk
    devices, batch_size, step, padded = execute.plan(devices, batch_size, chunk_size, total)
    task = _grid_task(fn, grid, common_random_numbers, padded // len(devices))
    starts = list(range(0, total, step))
    mine = set(starts[part[0]::part[1]])
    done: dict[int, dict] = {}
    fields = None
    manifest = _manifest(fn, grid, key, step, common_random_numbers)
    sid = sweep_id(manifest)
    if out is not None:
        intact = _check_resume(out, manifest, resume or part[1] > 1, tuple(part))
        chunk_dir = os.path.join(out, "chunks")
        if part[1] == 1:  # writes cut short by a kill (a part never removes another's write in flight)
            for folder, prefix in ((chunk_dir, ""), (out, "manifest.json.")):
                for name in os.listdir(folder) if os.path.isdir(folder) else []:
                    if io.is_temporary(name) and name.startswith(prefix):
                        os.remove(os.path.join(folder, name))
        for s0 in starts:
            s1 = min(s0 + step, total)
            path = _chunk_path(out, s0, s1)
            got, problem = _read_chunk(path, s0, s1, fields, sid, unstamped=intact)
            if got is not None:
                done[s0] = got if collect else {}
                fields = fields or tuple(got)
            elif problem is not None and s0 in mine:  # damaged: named, set aside, redone
                _set_aside_chunk(path, problem)
    todo = [s0 for s0 in starts if s0 not in done and s0 in mine]
    get = lambda a, b: {"index": np.arange(a, b, dtype=np.uint32)}  # noqa: E731
    shared = _grid_shared(grid, key)
    with io.Progress(total, desc="sweep", unit="runs", done=sum(min(s0 + step, total) - s0 for s0 in done),
                     quiet=not progress) as bar:
        for s0, s1, outputs in execute.stream(task, shared, todo, total, step, padded, get, devices, batch_size):
            outputs = {k: np.asarray(v) for k, v in outputs.items()}
            fields = fields or tuple(outputs)
            if out is not None:
                _write_chunk(_chunk_path(out, s0, s1), s0, s1, outputs, sid)
            done[s0] = outputs if collect else {}
            bar.update(s1 - s0)
    if not collect:
        return None
    if part[1] > 1:  # the other parts' chunks, if they have all finished
        for s0 in starts:
            if s0 not in done:
                got, _ = _read_chunk(_chunk_path(out, s0, min(s0 + step, total)), s0, min(s0 + step, total), fields,
                                     sid, unstamped=intact)
                if got is None:
                    return None
                done[s0] = got
    parts = [done[s0] for s0 in starts]
    columns = grid.rows()
    for f in fields:
        columns[f] = np.concatenate([p[f] for p in parts], axis=0)
    return SweepResult(columns, fields, grid)


def _set_aside_chunk(path: str, problem: str) -> None:
    try:
        io.set_aside(path, problem)
    except FileNotFoundError:  # gone meanwhile (removed by hand, or set aside by a rerun of its part)
        pass


MANIFEST_KEYS = ("grid", "runs", "chunk_size", "key")


def read_manifest(out: str) -> dict:
    """The ``manifest.json`` of the sweep in ``out``: ``ValueError`` if there is none, and
    :class:`tokdyn.io.CorruptFile` (a ``ValueError`` naming the file) when it is truncated, altered
    (its ``checksum``) or not a sweep's manifest."""
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        raise ValueError(f"no sweep found in {out!r} (it has no manifest.json)")
    try:
        m = io.read_json(path)
    except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, unreadable
        raise io.CorruptFile(path, f"not readable JSON: {e}") from None
    if not isinstance(m, dict) or any(k not in m for k in MANIFEST_KEYS):
        raise io.CorruptFile(path, f"not a sweep's manifest: it lacks {[k for k in MANIFEST_KEYS if k not in m]}"
                             if isinstance(m, dict) else "not a sweep's manifest")
    if "checksum" in m and m["checksum"] != _digest({k: v for k, v in m.items() if k != "checksum"}):
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
    return [(s0, min(s0 + step, total)) for s0 in range(0, total, step)
            if os.path.basename(_chunk_path(out, s0, min(s0 + step, total))) not in have]


def output_fields(out: str) -> tuple:
    """The output fields of the sweep in ``out`` (from its first chunk on disk)."""
    m = read_manifest(out)
    stop = min(m["chunk_size"], m["runs"])
    path = _chunk_path(out, 0, stop)
    first, problem = _read_chunk(path, 0, stop, None, sweep_id(m))
    if first is None:
        raise ValueError(f"sweep in {out!r} has no finished first chunk ({path}: "
                         f"{problem or 'absent'}): run it first")
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
    fields = None
    for s0 in range(0, total, step):
        s1 = min(s0 + step, total)
        path = _chunk_path(out, s0, s1)
        got, problem = _read_chunk(path, s0, s1, fields, sid)
        if got is None:
            raise ValueError(f"sweep in {out!r} is incomplete or damaged at runs [{s0}, {s1}): {path} "
                             f"{'is damaged (' + problem + ')' if problem else 'is missing'}; resume it first (the "
                             "same sweep.run call redoes it)")
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
