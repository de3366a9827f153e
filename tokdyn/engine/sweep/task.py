"""A per-run function as the execution engine's task: :class:`GridTask` decodes each run's
condition from its index on the device and derives its key; :func:`grid_task` and
:func:`grid_shared` build it and its shared inputs for a grid; :func:`output_spec` traces one run
for its output fields; :func:`check_signature` matches the function's arguments to the grid's axes."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.engine.sweep import reads
from tokdyn.engine.sweep.grid import Grid, device_columns


@dataclasses.dataclass(frozen=True)
class GridTask:
    """Adapts ``fn(key, **condition)`` to the executor: decodes each run's conditions from its
    global index on the device (so a chunk's only input is its index range) and derives the run's
    key from the root key and that index (or the run's seed, for common random numbers).

    ``shared`` holds the root key, every axis's values (``tables``), each axis's and the seed's
    stride in the run index and the seed count, all traced: grids with the same axis names and
    sizes share one compilation. Conditions reach ``fn`` as float32 / int32 scalars, like
    :meth:`~tokdyn.engine.sweep.Grid.rows` cast by :func:`~tokdyn.engine.sweep.device_columns`.

    Shared draws (``n_draws > 0``: common random numbers and an ``fn`` with a ``draw(key)``
    method): :meth:`prepare` calls ``fn.draw`` once for every seed among a device's runs of a
    chunk, and each run receives its seed's draw as ``draw=``. A device's runs are
    consecutive indices, so their seeds are consecutive too (modulo ``seeds``); ``n_draws`` bounds
    how many there are (:func:`max_seeds`). ``vmap_draws``: the seeds' draws are made by one
    vmapped call (where the runs are vmapped too: the accelerators' default) rather than one seed
    after another (a CPU's ``lax.map``; on a GPU that loop is one launch of a few tiny kernels per
    seed, which held the study path at half the chip's time idle). Every run takes its draw from there, even when nothing
    is shared (as many draws as runs), so that each run is computed by the same program whatever
    the chunking: results are bit-identical across chunk sizes, device counts and both grid orders.
    Against ``fn(key, **condition)`` drawing for itself they agree up to floating-point rounding
    (XLA may fuse the arithmetic on the draw differently in the two programs)."""

    fn: Callable
    names: tuple
    by_seed: bool
    n_draws: int = 0
    vmap_draws: bool = False

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
        draw = lambda j: self.fn.draw(jax.random.fold_in(shared["key"], seed_of(j)))  # noqa: E731
        js = jnp.arange(self.n_draws, dtype=jnp.uint32)
        # on a CPU one seed after another: a vmapped draw compiles several times slower on XLA:CPU
        # (the random-bit kernel grows with the batch), for little gain once the draws are shared
        draws = jax.vmap(draw)(js) if self.vmap_draws else jax.lax.map(draw, js)
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


def max_seeds(grid: "Grid", n_runs: int) -> int:
    """The most distinct seeds among ``n_runs`` consecutive runs of ``grid``: ``min(seeds, n)``
    with the seed fastest, ``(n - 2) // C + 2`` with the seed slowest over C conditions."""
    if grid.seed_major and n_runs > 1:
        return min(grid.seeds, (n_runs - 2) // grid.n_conditions + 2)
    return min(grid.seeds, n_runs)


def grid_task(
    fn, grid: "Grid", common_random_numbers: bool, runs_per_device: int, batch_size: int | None = 1
) -> GridTask:
    """The task for ``grid``; ``runs_per_device``: the runs each device gets per chunk;
    ``batch_size``: the executor's resolved batch size (``None``: every run of a device vmapped,
    and then the seeds' draws too). Only the number of draws to share enters the compiled
    function, so grids that differ in their seed count alone still share one compilation."""
    share = bool(common_random_numbers) and callable(getattr(fn, "draw", None))
    return GridTask(
        fn,
        grid.names,
        bool(common_random_numbers),
        n_draws=max_seeds(grid, runs_per_device) if share else 0,
        vmap_draws=share and batch_size is None,
    )


def grid_shared(grid: "Grid", key) -> dict:
    """The inputs every run of ``grid`` shares, all traced: the root ``key``, each axis's values
    (``tables``, in the dtypes of :func:`~tokdyn.engine.sweep.device_columns`), each axis's and the
    seed's stride in the run index, and the seed count."""
    tables = device_columns(dict(grid.axes))
    strides = {name: np.uint32(st) for name, st in zip(grid.names, grid.strides)}
    return dict(
        key=key, tables=tables, strides=strides, seeds=np.uint32(grid.seeds), seed_stride=np.uint32(grid.strides[-1])
    )


def fn_id(fn) -> str:
    """A readable name of ``fn`` for messages and the manifest: its ``repr``, or
    ``module.qualname`` where the repr holds a memory address."""
    text = repr(fn)
    if " at 0x" in text:
        text = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return text


def check_signature(fn, names) -> None:
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
            raise ValueError(f"grid axis {name!r} is not an argument of {fn_id(fn)}; it takes {accepted}")
    for p in params:
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
            raise ValueError(f"{fn_id(fn)} needs argument {p.name!r}, which is not a grid axis {list(names)}")


def output_spec(task, shared) -> dict:
    """``{field: "dtype[shape]"}`` of one run of ``task`` (the grid task the sweep builds) on ``shared``,
    found by tracing it once (``jax.eval_shape``: nothing is compiled or run)."""
    return traced_outputs(task, shared)[0]


def traced_outputs(task, shared) -> tuple:
    """``(fields, modules, files)`` of one trace of a run of ``task`` on ``shared`` (``jax.eval_shape``:
    nothing is compiled or run), its Python code run anew whatever JAX traced before
    (:func:`tokdyn.engine.sweep.reads.recording`): ``fields`` as :func:`output_spec`, ``modules``
    the names of the modules it imported, ``files`` ``((path, SHA-256), ...)`` of the data files it
    read, as they were when it read them. Kept for an equal task in this process (whose program
    JAX keeps too: its Python code does not run again)."""
    leaves, treedef = jax.tree_util.tree_flatten(shared)
    abstract = tuple(jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves)
    try:
        hash(task)
    except TypeError:  # a function that cannot be a cache key: traced every time
        return _traced(task, treedef, abstract)
    return _cached_traced(task, treedef, abstract)


def _traced(task, treedef, abstract) -> tuple:
    with reads.recording(retrace=True) as seen:
        fields = dict(_output_spec(task, treedef, abstract))
    files = tuple((path, reads.file_digest(path)) for path in seen.data_files())
    return fields, tuple(sorted(seen.modules)), files


def _output_spec(task, treedef, abstract) -> tuple:
    def one(shared):
        runs = {"index": jnp.zeros((1,), jnp.uint32)}
        return task(task.prepare(shared, runs), {"index": runs["index"][0]})

    out = jax.eval_shape(one, jax.tree_util.tree_unflatten(treedef, list(abstract)))
    return tuple((k, f"{np.dtype(v.dtype).name}{list(v.shape)}") for k, v in out.items() if v is not None)


_cached_traced = functools.lru_cache(maxsize=64)(_traced)  # equal tasks trace alike


def check_field_names(fn, outputs: dict, grid: Grid) -> None:
    """``ValueError`` naming both when an output field of ``fn`` (``outputs``: :func:`output_spec`)
    has the name of a column the sweep writes beside it: an axis of ``grid``, ``seed``, ``index``,
    or a column an array field is flattened into (``name_0, name_1, ...``: :meth:`~tokdyn.engine.sweep.SweepResult.to_csv`)."""
    columns = {name: f"the grid's axis {name!r}" for name in grid.names}
    columns.update(seed="the column 'seed' (each run's seed)", index="the column 'index' (each run's index)")
    for field, spec in outputs.items():
        shape = spec[spec.index("[") :]
        if shape != "[]":  # a per-run array: flattened into field_0, field_1, ... in a table
            size = int(np.prod(json.loads(shape), dtype=np.int64))
            for j in range(size):
                columns.setdefault(f"{field}_{j}", f"column {field}_{j!s} (element {j} of the output {field!r})")
    for field in outputs:
        if field in columns:
            raise ValueError(
                f"{fn_id(fn)} returns an output named {field!r}, which is the name of {columns[field]} the "
                "sweep writes beside it: rename the output"
            )
