"""Files and progress: the one place where tokdyn writes to disk or to the terminal.

- :func:`atomic_write`: every file is written to a temporary name unique to its writer, flushed
  to disk and renamed over the final name, so a reader (or a resumed run) sees the old file or
  the new one, never half of one -- also when several processes write the same file at once.
- :func:`write_csv` / :func:`read_csv` (one row per record), :func:`write_json` /
  :func:`read_json` (metadata, test results), :func:`to_columns` / :func:`to_rows`.
- :func:`save_pytree` / :func:`load_pytree`: checkpoints of any pytree of arrays (``.npz``);
  :func:`save_orbax` / :func:`load_orbax` the same in orbax's format (a directory; the extra ``orbax``).
- :func:`write_verified` / :func:`read_verified`: a file that carries the SHA-256 of its own
  content, checked on every read; checkpoints and the parts of studies are written this way, so a
  truncated or altered file is recognised (:class:`CorruptFile`, naming the file) instead of being
  read as a result. :func:`set_aside` moves such a file out of the way, to be recomputed.
- :func:`write_checked_json` / :func:`read_checked_json`: plain JSON that carries ``"checksum"``,
  the SHA-256 of its other fields (a study's ``config.json``).
- :class:`DiskFull`: a write that found no space left names the file, the bytes it needed and the
  bytes free (the temporary is removed: nothing half-written is kept).
- :func:`environment`: versions and machine facts recorded next to every output.
- :class:`Progress`: a bar with rate and ETA on a terminal, one line per update otherwise,
  nothing when quiet; used by sweeps, studies and training loops.

Figures live in :mod:`tokdyn.stats.figures`.

One concept a module, every public name re-exported here (``tokdyn.io.atomic_write``):

- :mod:`~tokdyn.io.errors` :class:`OutputConflict`, :class:`CorruptFile`, :class:`DiskFull`
- :mod:`~tokdyn.io.files` atomic writes, CSV, JSON (checked or not), row <-> column tables
- :mod:`~tokdyn.io.verified` verified files, ``.npz`` archives, :func:`set_aside`
- :mod:`~tokdyn.io.pytrees` checkpoints of pytrees
- :mod:`~tokdyn.io.orbax_trees` checkpoints of pytrees in orbax's format, verified
- :mod:`~tokdyn.io.interrupt` the Ctrl-C handler (:func:`on_interrupt`)
- :mod:`~tokdyn.io.keeping` a finished unit of work kept and read back (:func:`kept`, :func:`kept_rows`,
  :func:`read_kept`)
- :mod:`~tokdyn.io.metadata` :func:`environment`
- :mod:`~tokdyn.io.progress` :class:`Progress`
"""

from tokdyn.io.errors import DISK_FULL, CorruptFile, DiskFull, OutputConflict, disk_full, free_bytes
from tokdyn.io.files import (
    atomic_write,
    file_sha256,
    is_temporary,
    json_checksum,
    jsonable,
    parse_csv,
    read_checked_json,
    read_csv,
    read_json,
    to_columns,
    to_rows,
    write_checked_json,
    write_csv,
    write_json,
)
from tokdyn.io.interrupt import check_interrupt, interrupted, on_interrupt, reset_interrupt, unraisable_hook
from tokdyn.io.keeping import kept, kept_rows, read_kept
from tokdyn.io.metadata import environment
from tokdyn.io.progress import Progress
from tokdyn.io.pytrees import LEAF_PREFIX, leaf_names, load_pytree, save_pytree
from tokdyn.io.orbax_trees import is_orbax, load_orbax, match_tree, read_orbax, save_orbax
from tokdyn.io.verified import (
    MAGIC,
    is_verified,
    link_between,
    load_npz,
    not_a_file,
    read_verified,
    recomputing,
    save_npz,
    set_aside,
    write_verified,
)

__all__ = [
    "DISK_FULL",
    "LEAF_PREFIX",
    "MAGIC",
    "atomic_write",
    "check_interrupt",
    "CorruptFile",
    "disk_full",
    "DiskFull",
    "environment",
    "file_sha256",
    "free_bytes",
    "interrupted",
    "is_temporary",
    "is_orbax",
    "is_verified",
    "json_checksum",
    "jsonable",
    "kept",
    "kept_rows",
    "leaf_names",
    "link_between",
    "match_tree",
    "load_npz",
    "load_orbax",
    "load_pytree",
    "not_a_file",
    "on_interrupt",
    "OutputConflict",
    "parse_csv",
    "Progress",
    "read_checked_json",
    "read_orbax",
    "read_csv",
    "read_json",
    "read_kept",
    "read_verified",
    "recomputing",
    "reset_interrupt",
    "save_npz",
    "save_orbax",
    "save_pytree",
    "set_aside",
    "to_columns",
    "to_rows",
    "unraisable_hook",
    "write_checked_json",
    "write_csv",
    "write_json",
    "write_verified",
]
