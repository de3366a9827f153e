"""Running a sweep: :func:`run`, a per-run function over every run of a :class:`~tokdyn.engine.sweep.Grid` on the
execution engine (:func:`tokdyn.engine.execute.stream`), chunk by chunk to disk, resumable."""

from __future__ import annotations

import os
import sys
from typing import Callable

import jax
import numpy as np

from tokdyn import io
from tokdyn.engine import execute
from tokdyn.engine.sweep import reads, store
from tokdyn.engine.sweep.digest import code_digest, imported_modules, module_digest, module_digests
from tokdyn.engine.sweep.grid import MAX_RUNS, Grid
from tokdyn.engine.sweep.result import SweepResult
from tokdyn.engine.sweep.task import check_field_names, check_signature, grid_shared, grid_task, traced_outputs


class ConditionRefused(ValueError):
    """A value of the grid that the run function refuses (its ``check_conditions``: a knob out of
    its range), before anything is traced: a usage error (the command exits 2 with its message)."""


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
      grid: the runs (:class:`~tokdyn.engine.sweep.Grid`).
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
        backend and device count, balanced so that the last chunk is nearly full
        (:func:`tokdyn.engine.execute.balanced_chunk`), or, when resuming a sweep in ``out``, the
        chunk size it used; of a sweep shared by several parts, small enough that every part has a
        chunk (:func:`shared_chunk_size`). A part left without a chunk (a ``chunk_size`` given
        that makes fewer chunks than parts, or fewer runs than parts) says so on stderr
        (:func:`idle_part`) when ``progress``.
      out: directory; each finished chunk is written (atomically, with a checksum and the stamp
        of the arguments) before the next one is read back, next to a ``manifest.json`` of the
        arguments. A killed sweep restarted with the same arguments redoes only unfinished or
        damaged chunks (a damaged one is named in a warning and set aside to ``chunks/corrupt/``;
        a damaged manifest is set aside and written anew); different arguments are refused.
      resume: continue a sweep found in ``out`` (False: refuse to touch an existing one).
      progress: a progress bar (terminal) or a line per chunk on stderr (:class:`tokdyn.io.Progress`).
      batch_size, devices: execution strategy and devices (see :func:`tokdyn.engine.execute.map_runs`).
      collect: return the results (False with ``out``: keep nothing in memory; read them later
        with :func:`~tokdyn.engine.sweep.load`).
      part: ``(i, n)``: do only chunks ``i, i + n, i + 2n, ...`` (chunks are dealt round-robin).
        Default: ``(jax.process_index(), jax.process_count())``, so every process of a
        multi-host job runs its own share on its local devices. Several parts need ``out`` (a
        directory all of them can write; chunk files are independent and written atomically);
        a part returns the full results once every chunk is on disk, else ``None``. Part 0 writes
        the manifest; the others wait for it and check it. A part sets aside only its own damaged
        chunks (another part's are that part's to redo).
      code: what else the results depend on besides ``fn``'s code, ``{name: digest}``, recorded in
        the manifest beside ``fn``'s :func:`~tokdyn.engine.sweep.code_digest` (``code["fn"]``) and
        the digests of the modules of the user's it reaches (``code["module NAME"]``).

    Results are keyed by all the code that made them: the manifest records ``fn``'s
    :func:`~tokdyn.engine.sweep.code_digest`, the digest of every module of the user's that ``fn``
    reaches (:func:`~tokdyn.engine.sweep.digest.module_digests`: the module it is defined in and
    every module of the user's imported from there, by their syntax trees, as the process runs
    them: a file edited while the sweep runs never stamps its chunks), every module of the user's and
    every data file that ``fn`` imports or opens while it is traced (an ``import helper`` inside a
    rule's step, an ``np.load("data.npy")``: :func:`tokdyn.engine.sweep.reads.recording`, the
    file by its bytes), ``code``, and the output fields with their dtype and shape
    (traced once with ``jax.eval_shape``: nothing is compiled for it), so resuming into ``out``
    with a changed function body, another function or other output fields is refused with
    :class:`tokdyn.io.OutputConflict` naming what changed, as is a sweep written before manifests
    recorded the code. Every chunk must carry its checksum and stamp: one that does not (written
    by anything but this function), or that is a directory or a symbolic link, is set aside and
    recomputed.

    Multi-host: start every process with ``jax.distributed.initialize()``, then make the same
    ``run(..., out=SHARED_DIR)`` call in each; ``fold_in`` by global run index keeps the union
    bit-identical to a single-process sweep. Read it with :func:`~tokdyn.engine.sweep.load` when all have finished.

    An ``fn`` with a method ``check_conditions(axes)`` (:meth:`tokdyn.engine.runs.ClusterRun.check_conditions`,
    :meth:`tokdyn.engine.runs.TrackRun.check_conditions`) has the grid's axes (``{name: values}``)
    checked by it first: a value out of its range is refused there.

    Raises, before anything is compiled: ``TypeError`` when ``key`` is not one PRNG key;
    ``ValueError`` when ``fn`` imports a compiled module of the user's while traced (an extension
    module outside the installed packages: no digest of source keys it) that ``code`` does not name;
    :class:`ConditionRefused` (a ``ValueError``) when ``fn.check_conditions`` refuses a value of an axis;
    ``ValueError`` when a grid axis is not an argument of ``fn`` or ``fn`` has a required argument
    that is not a grid axis, or an output field of ``fn`` has the name of a column the sweep writes
    (an axis, ``seed``, ``index``, a flattened ``name_0``); :class:`tokdyn.io.OutputConflict` when
    ``out`` is a file, or a directory that holds anything a sweep did not write (naming the files;
    nothing of the user's is moved: :func:`~tokdyn.engine.sweep.store.check_owned`).
    """
    part = _check_arguments(fn, grid, key, out, collect, part)
    total = len(grid)
    given = chunk_size is not None
    if out is not None and chunk_size is None:
        chunk_size = store.resumed_chunk_size(out)  # resume with the chunks already on disk
        if chunk_size is None and part[1] > 1:
            chunk_size = shared_chunk_size(devices, batch_size, total, part[1])
    devices, batch_size, step, padded = execute.plan(devices, batch_size, chunk_size, total)
    task = grid_task(fn, grid, common_random_numbers, padded // len(devices), batch_size)
    starts = list(range(0, total, step))
    mine = set(starts[part[0] :: part[1]])
    if not mine and progress:
        print(idle_part(part, total, step, len(starts), given), file=sys.stderr)
    shared = grid_shared(grid, key)
    # what fn imports and reads while traced keys its results too
    outputs_spec, imported, files = traced_outputs(task, shared)
    fields = tuple(outputs_spec)
    check_field_names(fn, outputs_spec, grid)
    digests = _code_digests(fn, code, imported, files)
    manifest = store.make_manifest(fn, grid, key, step, common_random_numbers, digests, outputs_spec)
    sid = store.sweep_id(manifest)
    done: dict[int, dict] = {}
    if out is not None:
        store.check_resume(out, manifest, resume or part[1] > 1, tuple(part))
        if part[1] == 1:  # a part never removes another's write in flight
            _remove_cut_writes(out)
        done = _chunks_on_disk(out, starts, step, total, fields, sid, mine, collect)
    todo = [s0 for s0 in starts if s0 not in done and s0 in mine]
    get = lambda a, b: {"index": np.arange(a, b, dtype=np.uint32)}  # noqa: E731
    with io.Progress(
        total, desc="sweep", unit="runs", done=sum(min(s0 + step, total) - s0 for s0 in done), quiet=not progress
    ) as bar:
        for s0, s1, outputs in execute.stream(task, shared, todo, total, step, padded, get, devices, batch_size):
            outputs = {k: np.asarray(v) for k, v in outputs.items()}
            if out is not None:
                store.write_chunk(store.chunk_path(out, s0, s1), s0, s1, outputs, sid)
            done[s0] = outputs if collect else {}
            bar.update(s1 - s0)
    if not collect:
        return None
    return _gather(grid, done, starts, step, fields, out, sid)


def shared_chunk_size(devices, batch_size, total: int, parts: int) -> int | None:
    """The runs per chunk of a sweep of ``total`` runs shared by ``parts`` processes when no
    chunk size is given: the engine's default (:func:`tokdyn.engine.execute.plan`), or, when that
    makes fewer chunks than parts, ``ceil(total / parts)``, so that every part has a share (a
    grid of fewer runs than parts leaves the last parts without one). ``None``: the default.
    The same on every process (it depends on the grid and the devices a process has)."""
    step = execute.plan(devices, batch_size, None, total)[2]
    if -(-total // step) >= parts:
        return None
    return max(1, -(-total // parts))


def idle_part(part, total: int, step: int, chunks: int, given: bool) -> str:
    """The line a part without a chunk of a sweep says: that the other parts do the work, and why."""
    doers = "part 0" if chunks == 1 else f"parts 0 to {chunks - 1}"
    why = f"chunk_size={step} given" if given else f"fewer runs ({total}) than parts"
    return (
        f"sweep: part {part[0]} of {part[1]} has no chunk of its own: the grid's {total:,} run"
        f"{'s' if total != 1 else ''} make{'s' if total == 1 else ''} {chunks} chunk{'s' if chunks != 1 else ''} "
        f"({why}), which {doers} run{'s' if chunks == 1 else ''}"
        + (" (a smaller chunk_size gives every part a share)" if given else "")
    )


def _check_arguments(fn, grid, key, out, collect: bool, part) -> tuple:
    """The checks of :func:`run`'s arguments, before anything is traced (the directory ``out``:
    :func:`~tokdyn.engine.sweep.store.check_owned`); returns ``part`` (its default filled in)."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a tokdyn.engine.sweep.Grid, got {type(grid).__name__}")
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()):
        raise TypeError(
            f"key must be one PRNG key, jax.random.key(seed), got {_describe(key)}: the root key every run's key "
            "is folded from"
        )
    if out is not None:
        store.check_owned(out)
    if len(grid) > MAX_RUNS:
        raise ValueError(
            f"grid has {len(grid):,} runs ({' x '.join(map(str, grid.shape))}: axes x seeds); run indices "
            f"and seeds are folded into keys as uint32, so at most {MAX_RUNS:,}: fewer seeds or values"
        )
    if out is None and not collect:
        raise ValueError("collect=False needs out=DIR: the results would be lost")
    check_signature(fn, grid.names)
    check = getattr(fn, "check_conditions", None)
    if callable(check):  # the run's own ranges (ClusterRun, TrackRun): no NaN rows from a host value
        try:
            check(grid.axes)
        except ConditionRefused:
            raise
        except ValueError as e:
            raise ConditionRefused(str(e)) from None
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
    return part


def _describe(value) -> str:
    """A short description of a value for an error message: its type, with dtype and shape where it
    has them."""
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    text = f"{value!r}" if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    return f"{text} (dtype {dtype}, shape {shape})" if dtype is not None else text


def _code_digests(fn, code, imported=(), files=()) -> dict:
    """What the results are keyed by: ``{"fn": code_digest(fn), "module NAME": digest of every module
    of the user's fn reaches (module_digests) or imports while traced (``imported``, and the modules
    of the user's those import), "file PATH": SHA-256 of every data file it read while traced
    (``files``), **code}``, ``code`` checked."""
    digests = {"fn": code_digest(fn)}
    digests.update({f"module {name}": d for name, d in module_digests(fn).items()})
    seen = reads.Reads(modules=set(imported))
    undeclared = [name for name in seen.compiled_modules() if name not in (code or {})]
    if undeclared:
        raise ValueError(
            f"fn imports compiled modules of yours while traced ({', '.join(undeclared)}: "
            f"{', '.join(str(getattr(sys.modules.get(n), '__file__', '')) for n in undeclared)}), whose code no "
            "digest of source can key: declare each, code={NAME: a digest of its build (e.g. its version, or the "
            "SHA-256 of its file)}, or install it as a package"
        )
    for ns in imported_modules(seen.user_modules()):
        digests.setdefault(f"module {ns['__name__']}", module_digest(ns))
    digests.update({f"file {path}": d for path, d in files})
    for name, value in (code or {}).items():
        if (
            not isinstance(name, str)
            or not isinstance(value, str)
            or name == "fn"
            or name.startswith(("module ", "file "))
        ):
            raise ValueError(
                f"code must map names (not 'fn', 'module ...' nor 'file ...') to digests (str), got {name!r}: {value!r}"
            )
        digests[name] = value
    return digests


def _remove_cut_writes(out: str) -> None:
    """Remove the temporary files of writes cut short by a kill (chunks, the manifest)."""
    for folder, prefix in ((os.path.join(out, "chunks"), ""), (out, "manifest.json.")):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if io.is_temporary(name) and name.startswith(prefix):
                os.remove(os.path.join(folder, name))


def _chunks_on_disk(out: str, starts, step: int, total: int, fields, sid: str, mine, collect: bool) -> dict:
    """``{start: outputs}`` of the finished chunks in ``out`` (``{}`` each when not ``collect``); a
    damaged chunk of this part's (``mine``) is named, set aside and left to redo."""
    done = {}
    for s0 in starts:
        s1 = min(s0 + step, total)
        path = store.chunk_path(out, s0, s1)
        got, problem = store.read_chunk(path, s0, s1, fields, sid)
        if got is not None:
            done[s0] = got if collect else {}
        elif problem is not None and s0 in mine:  # damaged: named, set aside, redone
            store.set_aside_chunk(path, problem, out)
    return done


def _gather(grid: Grid, done: dict, starts, step: int, fields, out, sid: str) -> SweepResult | None:
    """The results of every chunk: ``done``'s, and the other parts' from disk (None when one has
    not finished)."""
    total = len(grid)
    for s0 in starts:
        if s0 not in done:
            s1 = min(s0 + step, total)
            got, _ = store.read_chunk(store.chunk_path(out, s0, s1), s0, s1, fields, sid)
            if got is None:
                return None
            done[s0] = got
    parts = [done[s0] for s0 in starts]
    columns = grid.rows()
    for f in fields:
        columns[f] = np.concatenate([p[f] for p in parts], axis=0)
    return SweepResult(columns, fields, grid)
