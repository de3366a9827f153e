"""The study directory: one output directory per study configuration, stamped before any work,
whose parts cannot be mixed up with another configuration's, lost or read back corrupt.

* :meth:`Study.open` checks the path (:func:`check_output`) and the resources
  (:class:`Estimate`, :func:`check_resources`), compares the configuration with the directory's
  stamp (``study.json``; another configuration is refused with
  :class:`tokdyn.io.OutputConflict` unless ``fresh``), takes the directory's :func:`lock` and
  writes the stamp.
* :meth:`Study.part` and :meth:`Study.rows` keep each finished part in ``parts/``, keyed by the
  stamp and checksummed; :meth:`Study.finish` writes ``config.json``.
* :func:`read_record`, :func:`verify_output`, :func:`read_table` and :func:`read_output_json` read
  a study's files back, refusing one changed after the study wrote it; :func:`source_stamp`
  checks the directory an analysis reads.

One concept a module, every name below available here (``study.Study``, ``study.clear``):

- :mod:`~tokdyn.experiment.study.paths`: the output path (:func:`check_output`), the names of the
  files and folders in a study directory, paths inside it (:func:`relative`), :class:`Refused`.
- :mod:`~tokdyn.experiment.study.resources`: memory, array sizes and time (:class:`Estimate`,
  :func:`check_resources`, :func:`elements_fit`, :func:`time_here`).
- :mod:`~tokdyn.experiment.study.precision`: the precision of float32 matrix products
  (:func:`matmul_precision`, :func:`precision_in_force`).
- :mod:`~tokdyn.experiment.study.stamps`: the stamp (:func:`read_stamp`, :func:`source_stamp`,
  :func:`config_dict`, :func:`digest`, :func:`differences`, :func:`same_value`).
- :mod:`~tokdyn.experiment.study.locks`: the directory's lock (:func:`lock`, :func:`unlock`).
- :mod:`~tokdyn.experiment.study.records`: the record and the verified outputs
  (:func:`read_record`, :func:`verify_output`, :func:`read_table`, :func:`read_output_json`).
- :mod:`~tokdyn.experiment.study.ownership`: what in a directory is tokdyn's
  (:func:`owned_outputs`, :func:`check_directory`).
- :mod:`~tokdyn.experiment.study.clearing`: what ``fresh`` removes (:func:`clear`).
- :mod:`~tokdyn.experiment.study.directory`: :class:`Study`.

Every study uses it through :func:`tokdyn.experiment.runner.run_study`. What each step checks
and refuses: :ref:`study-directory`.
"""

from tokdyn.experiment.study.clearing import clear
from tokdyn.experiment.study.directory import Study
from tokdyn.experiment.study.locks import lock, unlock
from tokdyn.experiment.study.ownership import check_directory, owned_outputs
from tokdyn.experiment.study.paths import (
    DEEPEST,
    FIGURE_FOLDER,
    KNOWN_FOLDERS,
    LOCK_FILE,
    RECORD,
    STAMP,
    TABLE_SUFFIXES,
    VERIFIED_FOLDERS,
    Refused,
    check_output,
    relative,
)
from tokdyn.experiment.study.precision import (
    DEFAULT_MATMUL_PRECISION,
    MATMUL_PRECISIONS,
    check_matmul_precision,
    matmul_precision,
    precision_in_force,
)
from tokdyn.experiment.study.records import read_output_json, read_record, read_table, verify_output
from tokdyn.experiment.study.resources import (
    LONG_SECONDS,
    MAX_ELEMENTS,
    MEMORY_KINDS,
    SAY_SECONDS,
    Estimate,
    available_memory,
    check_resources,
    duration,
    elements_fit,
    largest_option,
    memory_owner,
    time_here,
    time_record,
)
from tokdyn.experiment.study.stamps import (
    config_dict,
    describe,
    differences,
    digest,
    read_stamp,
    read_stamp_file,
    same_value,
    source_stamp,
    version,
    write_stamp,
)

__all__ = [
    # the output path and the directory's layout
    "STAMP",
    "RECORD",
    "LOCK_FILE",
    "TABLE_SUFFIXES",
    "VERIFIED_FOLDERS",
    "FIGURE_FOLDER",
    "KNOWN_FOLDERS",
    "DEEPEST",
    "Refused",
    "check_output",
    "relative",
    # resources
    "Estimate",
    "LONG_SECONDS",
    "SAY_SECONDS",
    "MAX_ELEMENTS",
    "MEMORY_KINDS",
    "available_memory",
    "memory_owner",
    "check_resources",
    "time_here",
    "time_record",
    "duration",
    "largest_option",
    "elements_fit",
    # the precision of matrix products
    "MATMUL_PRECISIONS",
    "DEFAULT_MATMUL_PRECISION",
    "check_matmul_precision",
    "matmul_precision",
    "precision_in_force",
    # stamps
    "version",
    "config_dict",
    "digest",
    "differences",
    "same_value",
    "describe",
    "read_stamp",
    "read_stamp_file",
    "write_stamp",
    "source_stamp",
    # the lock
    "lock",
    "unlock",
    # the directory
    "Study",
    # the record and the verified outputs
    "read_record",
    "verify_output",
    "read_table",
    "read_output_json",
    # what is tokdyn's, and clearing it
    "owned_outputs",
    "check_directory",
    "clear",
]
