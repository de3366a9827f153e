"""Sweeps: grids of conditions x seeds, run chunk by chunk, to disk, resumable, with progress.

:class:`Grid` is the product of named axes x seeds with stable run indices (nothing
materialised); :func:`run` applies a per-run ``fn(key, **condition)`` to every run of a grid on
the execution engine (:mod:`tokdyn.engine.execute`: compiled once, chunked, sharded over the local
devices), writes each finished chunk to disk next to a manifest, resumes after any
interruption, and returns columnar results (:class:`SweepResult`); :func:`load` and
:func:`iter_chunks` read a finished sweep back. Summaries live in :mod:`tokdyn.stats.summary`.

Files of a sweep directory: ``manifest.json`` (the arguments, the :func:`code_digest` of the run
function, the digests of the modules of the user's it reaches
(:func:`~tokdyn.engine.sweep.digest.module_digests`) and its output fields, plain JSON with a ``checksum`` of its own fields) and
``chunks/START-STOP.npz`` (each written atomically with a SHA-256 (:func:`tokdyn.io.save_npz`) and
stamped with the digest of the manifest's arguments). Nothing damaged is ever read as a result: a
chunk that is truncated, altered, unverified or unstamped, of another sweep, or not a plain file
(a directory, a symbolic link) is named in a warning, set aside to ``chunks/corrupt/`` and
recomputed; a damaged manifest (one without its checksum included; it is fully determined by the
arguments) is set aside and rewritten, and the chunks' stamps keep the chunks of any other sweep
out. A sweep resumed with other code (another function body, a changed module of the user's that
it reaches, other output fields) is refused, naming what changed. A sweep writes only into a new
or empty directory or one it wrote (:func:`~tokdyn.engine.sweep.store.check_owned`: anything else
is refused before any work, and nothing of the user's is moved).

Run indices and seeds travel as ``uint32`` on the device (``fold_in`` takes 32 bits): a grid holds
at most :data:`MAX_RUNS` runs.

One concept a module, every public name re-exported here:

- :mod:`~tokdyn.engine.sweep.grid` grids of conditions x seeds (:class:`Grid`, :func:`parse_axis`,
  :func:`device_columns`)
- :mod:`~tokdyn.engine.sweep.task` a per-run function as the execution engine's task, and its
  output fields (:func:`output_spec`, :func:`traced_outputs`)
- :mod:`~tokdyn.engine.sweep.reads` what the user's code imports and opens while traced
  (:func:`recording`, :class:`Reads`, :func:`file_digest`), by which results are keyed too
- :mod:`~tokdyn.engine.sweep.digest` the code digest (:func:`code_digest`)
- :mod:`~tokdyn.engine.sweep.store` the directory: chunk files, the manifest, reading a sweep back
  (:func:`read_manifest`, :func:`iter_chunks`, :func:`load`, ...)
- :mod:`~tokdyn.engine.sweep.result` the results in memory (:class:`SweepResult`)
- :mod:`~tokdyn.engine.sweep.running` :func:`run`, over :func:`tokdyn.engine.execute.stream`
  (:class:`ConditionRefused`: a value of an axis the run refuses, before anything is traced;
  :func:`shared_chunk_size`: chunks small enough that every process of a shared sweep has a share)
"""

from tokdyn.engine.sweep.digest import code_digest
from tokdyn.engine.sweep.grid import MAX_AXIS_VALUES, MAX_RUNS, Grid, device_columns, parse_axis
from tokdyn.engine.sweep.reads import Reads, file_digest, recording
from tokdyn.engine.sweep.result import SweepResult
from tokdyn.engine.sweep.running import ConditionRefused, idle_part, run, shared_chunk_size
from tokdyn.engine.sweep.store import (
    CHUNK_STAMP,
    MANIFEST_KEYS,
    MANIFEST_WAIT_S,
    iter_chunks,
    load,
    missing_chunks,
    output_fields,
    read_manifest,
    runs_kept_before,
    sweep_id,
)
from tokdyn.engine.sweep.task import output_spec, traced_outputs

__all__ = [
    "CHUNK_STAMP",
    "ConditionRefused",
    "MANIFEST_KEYS",
    "MANIFEST_WAIT_S",
    "MAX_AXIS_VALUES",
    "MAX_RUNS",
    "Grid",
    "Reads",
    "SweepResult",
    "code_digest",
    "device_columns",
    "file_digest",
    "idle_part",
    "iter_chunks",
    "load",
    "missing_chunks",
    "output_fields",
    "output_spec",
    "parse_axis",
    "read_manifest",
    "recording",
    "run",
    "runs_kept_before",
    "shared_chunk_size",
    "sweep_id",
    "traced_outputs",
]
