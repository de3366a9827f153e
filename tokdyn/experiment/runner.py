"""One runner for every study: a study is a value (:class:`Spec`) that supplies its science, and
:func:`run_study` does the rest, the same way for every study.

A study declares what it is (its name, its ``Config``, the files it writes, the ``selection``
fields left out of its stamp, the ``sources`` it reads) and supplies four functions: ``run(session,
cfg) -> Result`` (the science, keeping each finished part through the :class:`Session`),
``figures``, ``summary`` and ``findings``. :func:`run_study` owns everything else: the checks of
the configuration, the path and the resources, opening, locking and stamping the directory
(:meth:`Study.open <tokdyn.experiment.study.Study.open>`), the timings, writing the tables,
figures and summary, and ``config.json``. A study module's ``main`` is one line::

    def main(cfg, out, *, quiet=False, plots=True, fresh=False):
        return runner.run_study(SPEC, cfg, out, quiet=quiet, plots=plots, fresh=fresh)

The tables' cells and files (:func:`select`, :class:`EmptyCell`, :func:`check_cells`,
:func:`write_table`) are :mod:`tokdyn.experiment.tables`'s, the stamp of a study's own code
(:func:`code_stamp`, :func:`stamp_reached`) is :mod:`tokdyn.experiment.user_code`'s; both are
reached from here too.

A worked example, what the runner does in which order, and every field of a spec:
:doc:`/studies/writing-a-study`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from tokdyn.engine import sweep
from tokdyn.engine.sweep import reads
from tokdyn.experiment import presets
from tokdyn.experiment import study as study_dir

# The tables (tokdyn.experiment.tables) and the stamp of a study's own code
# (tokdyn.experiment.user_code), reached from here as the studies have always imported them.
from tokdyn.experiment.tables import COUNT_COLUMNS, EmptyCell, check_cells, select, write_table  # noqa: F401
from tokdyn.experiment.user_code import code_stamp, stamp_reached  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Result:
    """What a study's ``run`` returns.

    Attributes:
      tables: file name (relative to the study directory) -> content, written in this order: the
        columns of a ``.csv`` (a mapping of equal-length sequences), the value of a ``.json``, the
        text of any other file (written as it is); a function of nothing is called when its turn
        comes (a record of the tables written before it).
      data: what the study's ``figures``, ``summary`` and ``printed`` need beyond the tables.
      record: fields of ``config.json`` beside the configuration and the timings (headline numbers,
        what the run covered).
      value: what the study's ``main`` returns.
    """

    tables: Mapping = dataclasses.field(default_factory=dict)  # name -> columns
    data: Any = None
    record: Mapping = dataclasses.field(default_factory=dict)
    value: Any = True


def _validate(session: "Session", cfg) -> None:
    cfg.validate()


@dataclasses.dataclass(frozen=True)
class Spec:
    """A study, as a value: what it declares and the functions that are its science
    (:doc:`/studies/writing-a-study`).

    Attributes:
      name: the study's name (its stamp's ``study``; its ``tokdyn reproduce`` directory).
      config: its ``Config`` class.
      run: ``run(session, cfg) -> Result``: runs the study (:class:`Session`: the opened directory,
        its parts, the run's options and timings); ``None`` when this process has nothing to write
        (one part of a sweep that several processes share).
      summary: ``summary(cfg, result) -> str | Mapping``: the summary's Markdown text (without its
        final newline) or JSON value; None: none.
      figures: ``figures(session, cfg, result) -> paths``: draws the figures (unless ``--no-plots``),
        returns the paths it drew (``None`` entries are skipped).
      findings: ``findings(out) -> [Finding]``: the seed findings the study measures, judged from
        its directory ``out`` (:mod:`tokdyn.experiment.findings`); None: none.
      outputs: the tables the study writes (relative paths): those of an earlier run of another
        configuration (selection fields included) are removed before this run
        (:meth:`Study.clear_other_outputs <tokdyn.experiment.study.Study.clear_other_outputs>`).
      figure_files: the figures the study draws, as paths or glob patterns relative to its
        directory: those of another configuration (selection fields included) are removed before
        the run, and, when it draws figures, any it did not draw after it (only figures tokdyn
        drew; with ``--no-plots`` the same configuration's figures stay).
      selection: fields of ``Config`` that only choose what runs or label it (left out of the stamp).
      sources: config field -> the study whose directory it names (an analysis's source; ``tokdyn
        reproduce`` points it at that study's directory).
      summary_file: the file the summary is written to (None: printed only).
      headline: the file a reader opens first (``tokdyn reproduce`` links it; default
        ``summary_file``).
      preset: the detail of the quick preset's line the runner puts first in a text summary
        (:func:`tokdyn.experiment.presets.with_preset_line`); None: the summary says it itself.
      check: ``check(session, cfg)``: the configuration's checks, before anything else (default
        ``cfg.validate()``; ``ValueError`` / ``TypeError`` naming the field).
      prepare: ``prepare(session, cfg) -> {name: stamp}``: the study's own checks and the sources
        it reads, after the output path and the resources are checked and before its directory is
        opened; returns the stamps of the sources (they enter the study's stamp). What it finds
        for ``run`` goes into ``session.context``.
      stamp_extra: ``stamp_extra(session, cfg) -> mapping``: anything else the results depend on,
        stamped with the configuration (``Study.open``'s ``extra``).
      printed: ``printed(cfg, result, summary) -> str``: what the run prints at its end (default:
        the summary's text).
      store: what the study keeps for the studies that read its directory
        (``reads`` of :class:`tokdyn.experiment.registry.Entry`), as a value they reach by name
        (:func:`tokdyn.experiment.analysis.source_store`) instead of importing the study: the
        latent-reasoning study's trained organisms (its ``STORE``); None: nothing.
    """

    name: str
    config: type
    run: Callable[["Session", Any], Optional[Result]]
    summary: Optional[Callable[[Any, Result], Union[str, Mapping]]] = None
    figures: Optional[Callable[["Session", Any, Result], Iterable[Optional[str]]]] = None
    findings: Optional[Callable[[str], list]] = None
    outputs: tuple = ()
    figure_files: tuple = ()
    selection: tuple = ()
    sources: Mapping = dataclasses.field(default_factory=dict)  # config field -> study name
    summary_file: Optional[str] = "summary.md"
    headline: Optional[str] = None
    preset: Optional[str] = ""
    check: Callable[["Session", Any], None] = _validate
    prepare: Optional[Callable[["Session", Any], Mapping]] = None  # a mapping of str to dict
    stamp_extra: Optional[Callable[["Session", Any], Mapping]] = None
    printed: Optional[Callable[[Any, Result, Any], str]] = None
    store: Any = None  # what readers of its directory use (Entry.reads)

    @property
    def link(self) -> Optional[str]:
        """The file a reader of the study's directory opens first: ``headline``, else ``summary_file``."""
        return self.headline or self.summary_file


_OPTIONAL_HOOKS = ("summary", "figures", "findings", "prepare", "stamp_extra", "printed")


def check_spec(spec: Spec, what: str = "SPEC") -> Spec:
    """Check a study of one's own when it is loaded, before any work (``tokdyn --study-module``,
    an entry point): ``ValueError`` naming ``what`` and everything missing at once, instead of a
    traceback at run time. Its ``Config`` must be a dataclass with an ``estimate()`` (what the run
    needs: the runner asks before any work), a ``validate()`` (unless the spec has a ``check`` of
    its own) and a documented field for every option (its docstring's ``Attributes:``, the help
    text of the command line); ``run`` and the hooks given must be callable; ``outputs`` and
    ``figure_files`` relative paths; ``selection`` and ``sources`` fields of ``Config``. Returns
    ``spec``."""
    from tokdyn.experiment import attributes

    problems = []
    if not isinstance(spec.name, str) or not spec.name:
        problems.append(f"name must be a non-empty str, got {spec.name!r}")
    cls = spec.config
    fields = ()
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        problems.append(f"config must be a dataclass class (the study's Config), got {cls!r}")
    else:
        fields = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not callable(getattr(cls, "estimate", None)):
            problems.append(
                f"its Config ({where}) has no estimate() method: def estimate(self) -> "
                "tokdyn.experiment.study.Estimate, what a run needs (models, memory, work), which the "
                "runner checks before any work"
            )
        if spec.check is _validate and not callable(getattr(cls, "validate", None)):
            problems.append(
                f"its Config ({where}) has no validate() method: def validate(self), checking every field "
                "(ValueError naming it) and returning self, or give the Spec a check of its own"
            )
        nested = {
            f.name
            for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(f.type)
            or (f.default is not dataclasses.MISSING and dataclasses.is_dataclass(f.default))
        }
        undocumented = [n for n in fields if n not in attributes.documented(cls) and n not in nested]
        if undocumented:
            problems.append(
                f"its Config ({where}) does not document {', '.join(undocumented)} in its docstring's "
                "Attributes: section (each field's help text on the command line)"
            )
        for name in ("selection", "sources"):
            unknown = [k for k in getattr(spec, name) if k not in fields]
            if unknown:
                problems.append(f"{name} names {', '.join(map(repr, unknown))}, which are not fields of its Config")
    if not callable(spec.run):
        problems.append(f"run must be a function run(session, cfg) -> Result, got {spec.run!r}")
    for hook in _OPTIONAL_HOOKS + ("check",):
        value = getattr(spec, hook)
        if value is not None and not callable(value):
            problems.append(f"{hook} must be a function or None, got {type(value).__name__}")
    for name in ("outputs", "figure_files"):
        for path in getattr(spec, name) if isinstance(getattr(spec, name), (tuple, list)) else [getattr(spec, name)]:
            try:
                study_dir.relative(path, name)
            except (TypeError, ValueError) as e:
                problems.append(
                    f"{name}: {e}" if isinstance(e, ValueError) else f"{name} must list paths, got {path!r}"
                )
    if problems:
        raise ValueError(f"{what} is not a complete study: " + "; ".join(problems))
    return spec


PART_WAIT_S = 600.0
"""How long a process of a study shared by several waits without progress for the others' parts
(:func:`wait_for`) before it gives up."""


def share_of(part=None) -> tuple:
    """``part`` as ``(i, n)``: this process's share of a study (or sweep) whose work ``n`` processes deal
    between them, ``0 <= i < n``. Default: ``(jax.process_index(), jax.process_count())``, the process's
    place in a ``jax.distributed`` launch (one process: ``(0, 1)``). ``ValueError`` naming ``part``
    otherwise."""
    if part is None:
        import jax

        return jax.process_index(), jax.process_count()
    if (
        not isinstance(part, (tuple, list))
        or len(part) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in part)
        or not 0 <= part[0] < part[1]
    ):
        raise ValueError(f"part must be a pair (i, n) of ints with 0 <= i < n, got {part!r}")
    return int(part[0]), int(part[1])


def wait_for(what: str, missing: Callable[[], int], *, study: str, quiet: bool = False) -> None:
    """Wait until ``missing()`` (a count of what another process has still to write) is 0, saying once what
    it waits for (on stderr, unless ``quiet``); ``TimeoutError`` naming ``what`` after :data:`PART_WAIT_S`
    seconds without progress (the count not falling)."""
    last, deadline, told = missing(), time.monotonic() + PART_WAIT_S, False
    while last:
        if not quiet and not told:
            print(f"{study}: waiting for {what}", file=sys.stderr)
            told = True
        time.sleep(0.2)
        now = missing()
        if now < last:
            last, deadline = now, time.monotonic() + PART_WAIT_S
        if now and time.monotonic() > deadline:
            raise TimeoutError(
                f"{study}: waited {PART_WAIT_S:.0f} s without progress for {what} ({now} missing); run the same "
                "command again in one process to finish the work and write its results"
            )


class Session:
    """One run of a study, as its hooks see it: the opened directory (``study``, a
    :class:`tokdyn.experiment.study.Study`, whose ``part`` / ``rows`` / ``has`` / ``path`` it
    forwards), the run's settings and the timings it keeps.

    Attributes:
      spec: the study (:class:`Spec`).
      cfg: its configuration.
      out: the output directory.
      quiet: no progress and no summary on the terminal.
      plots: the figures will be drawn.
      fresh: the directory was cleared first.
      options: the study's own keyword arguments of ``main`` (an update rule of one's own, the
        part of a study or sweep that several processes share: :attr:`share`).
      timings: ``<stage>_s`` -> seconds (:meth:`Session.timed`); ``config.json``'s ``timings``.
      context: what ``prepare`` found, for ``run`` (a source's configuration).
      shared: this run is one of several processes of one job that fill ``out`` together (a
        sweep's parts, a study's :attr:`share` of several processes: the runner's ``run`` sets it): they share
        the directory's lock. Otherwise a
        run holds it alone, and a second run into the same directory is refused.
      study: the opened directory (set once it is opened).
    """

    def __init__(
        self,
        spec: Spec,
        cfg,
        out,
        *,
        quiet: bool = False,
        plots: bool = True,
        fresh: bool = False,
        options: Optional[Mapping] = None,
    ):
        self.spec, self.cfg, self.out = spec, cfg, out
        self.quiet, self.plots, self.fresh = quiet, plots, fresh
        self.options = dict(options or {})
        self.timings: dict = {}
        self.context: dict = {}
        self.shared = False
        self.study: Optional[study_dir.Study] = None
        self.reads = None  # what the run imports (a study of one's own: its modules stamped as they are reached)
        self._share = None

    @contextlib.contextmanager
    def timed(self, name: str):
        """Time the block as the stage ``name`` (``timings[name + "_s"]``, added to what it held)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            key = f"{name}_s"
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def say(self, *parts) -> None:
        """Print ``parts`` unless quiet (a line of progress on stdout)."""
        if not self.quiet:
            print(*parts, flush=True)

    def path(self, *names: str) -> str:
        """A path inside the study directory (its folders created):
        :meth:`~tokdyn.experiment.study.Study.path`."""
        return self.study.path(*names)

    def part(self, name: str, compute, *, key=None) -> dict:
        """``compute()`` kept as the part ``name``: :meth:`~tokdyn.experiment.study.Study.part`
        (a study of one's own: the modules of the user's it imported stamped before it is kept)."""
        return self.study.part(name, self._stamping(compute), key=key)

    def rows(self, name: str, compute, *, key=None) -> list:
        """``compute()`` (table rows) kept as the part ``name``:
        :meth:`~tokdyn.experiment.study.Study.rows`."""
        return self.study.rows(name, self._stamping(compute), key=key)

    def _stamping(self, compute):
        def stamped():
            value = compute()
            stamp_reached(self)  # before the part is written: a kept part's modules are always stamped
            return value

        return stamped

    def has(self, name: str, *, key=None) -> bool:
        """Whether the rows part ``name`` is kept already: :meth:`~tokdyn.experiment.study.Study.has`."""
        return self.study.has(name, key=key)

    @property
    def share(self) -> tuple:
        """``(i, n)``: this process's share of a study whose parts ``n`` processes deal between them (the
        ``part`` of ``main``, :func:`share_of`; one process: ``(0, 1)``)."""
        if self._share is None:
            self._share = share_of(self.options.get("part"))
        return self._share

    def deal(self, names: Sequence[str]) -> list:
        """The parts of ``names`` (in order) this process computes: the k-th where ``k % n == i``
        (:attr:`share`); all of them for one process."""
        i, n = self.share
        return [name for k, name in enumerate(names) if k % n == i]

    def gather(self, names: Sequence[str], *, rows: bool = False, what: str = "the other processes' parts") -> list:
        """The parts ``names`` (``rows``: rows parts) that other processes keep, in order, once every one is
        on disk: waits for them (:func:`wait_for`, on their files, which are written whole or not at all)."""
        found: dict = {}

        def missing() -> int:
            for name in names:
                if name not in found:
                    value = self.study.read_part(name, rows=rows)
                    if value is not None:
                        found[name] = value
            return len(names) - len(found)

        wait_for(what, missing, study=self.spec.name, quiet=self.quiet)
        return [found[name] for name in names]


def figure_paths(out: str, patterns: Sequence[str]) -> list[str]:
    """The files under ``out`` that ``patterns`` (paths or glob patterns relative to ``out``) name,
    as relative paths, sorted."""
    found = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            found |= {os.path.relpath(p, out) for p in glob.glob(os.path.join(glob.escape(out), pattern))}
        else:
            found.add(pattern)
    return sorted(found)


def run_study(spec: Spec, cfg, out, *, quiet: bool = False, plots: bool = True, fresh: bool = False, **options):
    """Run a study into its directory (:doc:`/studies/writing-a-study` lists what is done, in which order).

    Args:
      spec: the study's :class:`Spec`.
      cfg: the study's configuration (its ``Config``).
      out: the output directory.
      quiet: print nothing (the summary included).
      plots: draw the figures (and remove the declared figures the drawing did not draw).
      fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote, under
        the directory's exclusive lock) and start afresh.
      **options: the study's own keyword arguments of ``main``, for its hooks
        (``session.options``).

    Returns:
      The study's ``Result.value``, or None when its ``run`` returned None (nothing is written
      after the run then).
    """
    session = Session(spec, cfg, out, quiet=quiet, plots=plots, fresh=fresh, options=options)
    spec.check(session, cfg)
    session.shared = session.shared or session.share[1] > 1  # the processes of one job fill ``out`` together
    if "part" in options and session.share[1] > 1 and fresh:  # the part checked before any work
        raise study_dir.Refused(
            f"fresh=True with part={session.share}: several processes cannot clear one directory safely; start "
            "afresh with one process (or remove the directory), then start the parts"
        )
    estimate = cfg.estimate()
    study_dir.check_output(out)
    study_dir.check_directory(out)  # a directory tokdyn did not stamp: refused before a source is touched
    study_dir.check_resources(spec.name, estimate)
    sources = spec.prepare(session, cfg) if spec.prepare is not None else None
    extra = spec.stamp_extra(session, cfg) if spec.stamp_extra is not None else None
    code = code_stamp(spec, out)
    if code:  # a study of one's own: its code is stamped (tokdyn's is in every stamp: package_code)
        extra = {**(extra or {}), "code": code}
    existed, stamped = os.path.exists(out), study_dir.read_stamp(out) is not None
    study = session.study = study_dir.Study.open(
        out,
        spec.name,
        cfg,
        fresh=fresh,
        selection=spec.selection,
        sources=sources,
        estimate=estimate,
        quiet=quiet,
        extra=extra,
        shared=session.shared,
    )
    try:
        return _run_opened(session, study, estimate, code, existed=existed, stamped=stamped)
    finally:
        study.release()  # finished (released already) or failed: the directory is free again


def _run_opened(session: Session, study, estimate, code, *, existed: bool, stamped: bool):
    """:func:`run_study` once the directory ``study`` is opened: the run, the tables, figures,
    summary and record."""
    spec, cfg, out, quiet, plots = session.spec, session.cfg, session.out, session.quiet, session.plots
    outputs = (*spec.outputs, *((spec.summary_file,) if spec.summary_file else ()), study_dir.RECORD)
    study.clear_other_outputs(cfg, outputs, figure_paths(study.out, spec.figure_files))  # another selection's: gone
    t0 = time.perf_counter()
    with reads.recording() if code else contextlib.nullcontext() as seen:
        session.reads = seen
        try:
            result = spec.run(session, cfg)
        except sweep.ConditionRefused:  # a value the sweep engine refuses, before it traced anything
            if not stamped:  # a directory this run stamped, and nothing kept in it: left as it was
                study.release()  # its lock file goes first
                unstamp_untouched(out, remove_dir=not existed)
            raise
    stamp_reached(session)
    session.reads = None
    if result is None:
        return None
    for name, value in result.tables.items():
        if name.endswith(".csv") and not callable(value):
            check_cells(name, value)  # a cell without runs is an error, not a row of NaN
    for name, value in result.tables.items():
        write_table(study.path(name), value)
    if plots:
        drawn = set()
        if spec.figures is not None:
            with session.timed("plots"):
                drawn = {os.path.abspath(p) for p in spec.figures(session, cfg, result) or () if p}
        for name in figure_paths(study.out, spec.figure_files):  # e.g. of models this selection has not
            if os.path.abspath(os.path.join(study.out, name)) not in drawn:
                study.remove_output(name)
    summary = spec.summary(cfg, result) if spec.summary is not None else None
    if isinstance(summary, str) and spec.preset is not None:
        summary = presets.with_preset_line(cfg, summary, spec.preset)
    if spec.summary_file and summary is not None:
        write_table(study.path(spec.summary_file), summary if not isinstance(summary, str) else summary + "\n")
    session.timings["total_s"] = time.perf_counter() - t0
    expected = study_dir.time_record(estimate)  # the time said up front, beside total_s: how good the estimate was
    record = {
        **({"selection": {k: getattr(cfg, k) for k in spec.selection}} if spec.selection else {}),
        **result.record,
        "config": study_dir.config_dict(cfg),
        "timings": session.timings,
        **({"estimate": expected} if expected is not None else {}),
    }
    study.finish(**record)
    if not quiet:
        text = spec.printed(cfg, result, summary) if spec.printed is not None else summary
        if text:
            print(text)
        kept, computed = study.parts["kept"], study.parts["computed"]
        if kept:  # a rerun says what it reused, never reads like new work
            print(
                f"{kept} of {kept + computed} parts read back from an earlier run of this configuration in "
                f"{study.out}" + (f", {computed} computed" if computed else ": nothing recomputed")
            )
    return result.value


def unstamp_untouched(out: str, *, remove_dir: bool = False) -> bool:
    """Undo the opening of the study directory ``out`` where its run was refused before any work
    (a study of one's own that handed the sweep engine a value out of its range): its stamp and
    tokdyn's empty folders are removed, and with ``remove_dir`` the directory itself once empty,
    so that a rerun with a valid value starts as in a new directory. Where anything else is there
    (a file the run wrote), nothing is removed. Returns whether the stamp was removed."""
    real = os.path.realpath(out)
    others = [e for e in os.listdir(real) if e not in (study_dir.STAMP, study_dir.LOCK_FILE)]
    for name in others:
        path = os.path.join(real, name)
        if name not in study_dir.KNOWN_FOLDERS or os.path.islink(path) or not os.path.isdir(path) or os.listdir(path):
            return False
    for name in others:
        os.rmdir(os.path.join(real, name))
    os.remove(os.path.join(real, study_dir.STAMP))
    if remove_dir and not os.listdir(real) and not os.path.islink(out):
        os.rmdir(real)
    return True


def work_line(count: int, unit: str, seconds: float, kept: int) -> str:
    """The work a run did, for its last lines: ``16 models in 1.0 s``; when it read ``kept`` of them
    back from an earlier run instead of computing them, it says so
    (``16 models, all read back from an earlier run (none computed; 0.4 s)``)."""
    if kept <= 0:
        return f"{count:,} {unit} in {seconds:.1f} s"
    if kept >= count:
        return f"{count:,} {unit}, all read back from an earlier run (none computed; {seconds:.1f} s)"
    return f"{count:,} {unit}: {kept:,} read back from an earlier run, {count - kept:,} computed in {seconds:.1f} s"


_MAIN_DOC = """Run the {name} study into ``out``, resumably (:func:`tokdyn.experiment.runner.run_study` of
the module's ``SPEC``).{about}

Args:
  cfg: the study's ``Config``.
  out: the output directory, stamped with the configuration before any work: a directory of
    another configuration is refused (:class:`tokdyn.io.OutputConflict`, naming the fields)
    unless ``fresh``. Finished work found there is reused.
  quiet: print nothing (the summary included).
  plots: draw the figures.
  fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote) and start
    afresh.{part}

Returns:
  {returns}
"""

_PART_DOC = """
  part: ``(i, n)``, this process's share of a run that ``n`` processes share into the same ``out``
    (default: ``jax.process_index()`` of ``jax.process_count()``, one process ``(0, 1)``): each
    computes every n-th part, from its i-th, and process 0 writes the results once every part is
    there (the others return None). ``fresh`` is refused with several."""


def entry(spec: Spec, module: str, *, returns: str, about: str = "", parts: bool = False) -> Callable:
    """A study's ``main(cfg, out, *, quiet=False, plots=True, fresh=False)``: :func:`run_study` of
    ``spec``, with a docstring of its own, so that a study module declares its entry point in one
    line (``main = runner.entry(SPEC, __name__, returns="...")``).

    Args:
      spec: the study's :class:`Spec`.
      module: the study module's name (``__name__``), where ``main`` is documented.
      returns: what ``main`` returns (the study's ``Result.value``), one sentence.
      about: a sentence more for the docstring (what is checked or kept), or "".
      parts: the study deals its parts between processes (its ``run`` computes
        :meth:`Session.deal`'s share and gathers the others' parts, :meth:`Session.gather`): ``main``
        takes ``part=None`` too (:attr:`Session.share`), and the ``tokdyn`` command gives the study
        the multi-process options (``--distributed``, :mod:`tokdyn.cli.launching`).

    Returns:
      The function ``main``.
    """
    if parts:

        def main(cfg, out: str, *, quiet: bool = False, plots: bool = True, fresh: bool = False, part=None):
            return run_study(spec, cfg, out, quiet=quiet, plots=plots, fresh=fresh, part=part)

    else:

        def main(cfg, out: str, *, quiet: bool = False, plots: bool = True, fresh: bool = False):
            return run_study(spec, cfg, out, quiet=quiet, plots=plots, fresh=fresh)

    main.__module__, main.__qualname__, main.spec = module, "main", spec
    main.__doc__ = _MAIN_DOC.format(
        name=spec.name, about=f" {about}" if about else "", returns=returns, part=_PART_DOC if parts else ""
    )
    return main
