"""The study directory as an object, :class:`Study`: opened (checked, locked, stamped) by
:meth:`Study.open`, its finished parts kept (:meth:`Study.part`, :meth:`Study.rows`), an earlier
run's outputs removed (:meth:`Study.clear_other_outputs`) and its record written
(:meth:`Study.finish`)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

from tokdyn import io
from tokdyn.experiment.study.clearing import clear_afresh
from tokdyn.experiment.study.locks import hold, release
from tokdyn.experiment.study.ownership import (
    check_in_the_way,
    drawn_by_tokdyn,
    foreign_tables,
    owned_outputs,
    recorded_tables,
    stamped_or_empty,
)
from tokdyn.experiment.study.paths import (
    RECORD,
    STAMP,
    check_output,
    file_id,
    regular_file,
    relative,
    remove_file,
    resolve_inside,
)
from tokdyn.experiment.study.resources import LONG_SECONDS, SAY_SECONDS, Estimate, check_resources
from tokdyn.experiment.study.stamps import (
    config_dict,
    conflict_message,
    conflicts,
    digest,
    make_stamp,
    read_stamp,
    same_value,
    stamp_once,
    write_stamp,
)


class Study:
    """A study's output directory, opened by :meth:`open` (:ref:`study-directory`). ``parts``
    counts this run's parts (:meth:`part`, :meth:`rows`): ``{"kept": read back from an earlier
    run, "computed": computed now}``, so that a rerun says what it reused."""

    def __init__(self, out: str, stamp: dict, *, quiet: bool = False):
        self.out, self.stamp, self.quiet = out, stamp, quiet
        # what every part is keyed by unless it names a key of its own (the declared outputs aside:
        # they name files, not results)
        # and the code of a study of one's own (extra.code): a directory of other code is refused
        # at open, and modules reached while it runs are stamped then (stamp_code)
        # nor tokdyn's code ("code"): a directory of other code is refused at open, and parts of the
        # same configuration and code are found again once the code is restored
        keyed = {k: v for k, v in stamp.items() if k not in ("outputs", "code")}
        if "code" in (stamp.get("extra") or {}):
            keyed["extra"] = _without_code(stamp)
        self.key = digest(keyed)
        self._lock = None
        self._foreign: dict = {}
        self.parts = {"kept": 0, "computed": 0}  # this run's parts: read back from an earlier run, or computed

    @property
    def name(self) -> str:
        """The study's name (``study`` of the stamp)."""
        return self.stamp["study"]

    @classmethod
    def open(
        cls,
        out,
        study: str,
        cfg,
        *,
        fresh: bool = False,
        selection: Sequence[str] = (),
        sources: Optional[Mapping[str, dict]] = None,
        estimate: Optional[Estimate] = None,
        quiet: bool = False,
        extra: Optional[Mapping] = None,
        outputs: Sequence[str] = (),
        shared: bool = False,
    ) -> "Study":
        """Check, lock, then stamp the output directory ``out`` of ``study`` for ``cfg``.

        What a stamp holds and when a directory is refused: :ref:`study-directory`.

        Args:
          out: the study's output directory (created if absent).
          study: the study's name.
          cfg: its configuration (a frozen dataclass), stamped.
          fresh: remove what another configuration wrote in ``out`` (only files tokdyn wrote) and
            start afresh; refused while a study runs there.
          selection: fields of ``cfg`` that only choose which parts run, left out of the stamp (a
            rerun may add parts).
          sources: name -> the stamp of a directory the study reads
            (:func:`~tokdyn.experiment.study.source_stamp`).
          estimate: optional :class:`~tokdyn.experiment.study.Estimate`, checked by
            :func:`~tokdyn.experiment.study.check_resources` first; a long run is said even when
            ``quiet``.
          quiet: say a run's expected time only past :data:`~tokdyn.experiment.study.LONG_SECONDS`.
          extra: anything else the results depend on (JSON-able), stamped with the configuration.
          outputs: the files (paths relative to ``out``) the study will write, stamped, so that
            ``fresh`` removes them even when a run died before :meth:`finish`; a file there that
            tokdyn did not write is refused.
          shared: this process is one of several of one job that fill ``out`` together (a
            sweep's parts): the directory's lock is shared with them. Otherwise it is exclusive,
            and a directory where a study runs in another process is refused, naming that process
            (:func:`~tokdyn.experiment.study.locks.hold`).

        Returns:
          The open :class:`Study`, holding the directory's lock until :meth:`finish` or
          :meth:`release` (or the end of the process).
        """
        out = check_output(out)
        declared = sorted({relative(p, "outputs") for p in outputs})
        if estimate is not None:  # a long run is said even when quiet
            check_resources(
                study,
                estimate,
                note=lambda s: print(s, file=sys.stderr),
                say_from=LONG_SECONDS if quiet else SAY_SECONDS,
            )
        stamp = make_stamp(study, cfg, selection=selection, sources=sources, extra=extra, outputs=declared)
        if os.path.isdir(out):
            stamped_or_empty(out)  # refused before anything is created in a directory not known to be ours
        os.makedirs(out, exist_ok=True)
        held = hold(out, study, shared=shared, fresh=fresh)
        try:
            old = stamped_or_empty(out)  # again, under the lock: a --fresh elsewhere may have changed it
            if old is not None and (fresh or conflicts(old, stamp)):
                if not fresh:
                    raise io.OutputConflict(conflict_message(out, old, stamp))
                clear_afresh(out, declared)
                old = None
            if old is None and not stamp_once(out, stamp):  # another process stamped it first: compare
                old = read_stamp(out)
                if conflicts(old, stamp):
                    raise io.OutputConflict(conflict_message(out, old, stamp))
            if old is not None:
                check_in_the_way(out, declared, owned_outputs(out))
                if not set(declared) <= set(old.get("outputs", ())):  # the stamp lists every output declared
                    union = sorted(set(declared) | set(old.get("outputs", ())))
                    write_stamp(os.path.join(out, STAMP), {**old, "outputs": union})
        except BaseException:
            release(*held)
            raise
        # a directory stamped already keeps its configuration as spelled there (the same values:
        # 0.003 or 3e-3), and so the key its parts were kept under
        self = cls(out, stamp if old is None else {**stamp, "config": old["config"]}, quiet=quiet)
        self._lock = held
        self._foreign = foreign_tables(out, owned_outputs(out))
        return self

    # -------------------------------------------------------------------------- paths and parts

    def path(self, *names: str) -> str:
        """A path inside the study directory (its folders created): ``names`` are joined as
        ``os.path.join`` does; ``ValueError`` naming them, before anything is created, where one is
        absolute or they lead out of the directory (``".."``)."""
        what = f"path({', '.join(map(repr, names))})"
        absolute = [n for n in names if os.path.isabs(os.fspath(n))]
        if absolute:
            raise ValueError(f"{what}: {absolute[0]!r} is absolute, not a path inside the study directory")
        rel = relative(os.path.join(*names) if names else "", what)
        p = os.path.join(self.out, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def part_path(self, name: str, suffix: str = ".npz") -> str:
        """The file of the part ``name`` (``parts/<name><suffix>``). A symbolic link or a file where
        the ``parts/`` folder belongs is set aside (:func:`tokdyn.io.set_aside`: the entry itself is
        moved to ``corrupt/``, never followed; refused where ``corrupt/`` is a link)."""
        folder = os.path.join(self.out, "parts")
        if os.path.islink(folder) or (os.path.lexists(folder) and not os.path.isdir(folder)):
            io.set_aside(folder, io.not_a_file(folder) or "a file where the parts' folder belongs", root=self.out)
        return self.path("parts", name + suffix)

    def stamp_code(self, code: Mapping[str, str]) -> None:
        """Add ``code`` (``{module: digest}``: modules of the user's a study of one's own reached
        while it ran) to the stamp's ``extra.code``, on disk and here, so that a rerun into this
        directory after such a module changed is refused naming it. The parts' key stays as it is."""
        old = read_stamp(self.out) or self.stamp
        extra = dict(old.get("extra") or {})
        merged = {**(extra.get("code") or {}), **code}
        if merged == extra.get("code"):
            return
        extra["code"] = dict(sorted(merged.items()))
        write_stamp(os.path.join(self.out, STAMP), {**old, "extra": extra})
        self.stamp = {**self.stamp, "extra": {**(self.stamp.get("extra") or {}), "code": extra["code"]}}

    def _part_key(self, key) -> str:
        return self.key if key is None else f"{self.key}:{digest(key)}"

    def _counted(self, compute: Callable) -> Callable:
        """``compute``, counting this run's parts: computed (it was called) or read back."""

        def counted():
            self.parts["computed"] += 1
            self.parts["kept"] -= 1
            return compute()

        self.parts["kept"] += 1
        return counted

    def part(self, name: str, compute: Callable[[], Mapping[str, Any]], *, key=None) -> dict:
        """``compute()`` (a dict of arrays and numbers), kept as ``parts/<name>.npz``
        (:func:`tokdyn.io.kept`, keyed by the directory's stamp and ``key``)."""
        return io.kept(self.part_path(name), self._part_key(key), self._counted(compute))

    def rows(self, name: str, compute: Callable[[], Sequence[Mapping[str, Any]]], *, key=None) -> list[dict]:
        """``compute()`` (table rows), kept as ``parts/<name>.json`` (:func:`tokdyn.io.kept_rows`)."""
        return io.kept_rows(self.part_path(name, ".json"), self._part_key(key), self._counted(compute))

    def read_part(self, name: str, *, key=None, rows: bool = False):
        """The part ``name`` as :meth:`part` (``rows``: :meth:`rows`) keeps it for this stamp, read without
        computing anything (another process's part, :func:`tokdyn.io.read_kept`); None where it is not kept
        (yet). Not counted in the study's ``parts`` (the work of this run, or read back from an earlier one)."""
        return io.read_kept(self.part_path(name, ".json" if rows else ".npz"), self._part_key(key), rows=rows)

    def has(self, name: str, *, key=None) -> bool:
        """Whether the rows part ``name`` is already kept (and readable) for this stamp. A directory
        or a symbolic link where the part belongs is set aside (:func:`tokdyn.io.set_aside`)."""
        path = self.part_path(name, ".json")
        if os.path.lexists(path) and io.not_a_file(path):
            io.set_aside(path, io.not_a_file(path), root=self.out)
            return False
        if not os.path.exists(path):
            return False
        try:
            return json.loads(io.read_verified(path)).get("stamp") == self._part_key(key)
        except (io.CorruptFile, ValueError, AttributeError):
            return False

    def clear_other_outputs(
        self, cfg, outputs: Sequence[str], figures: Sequence[str] = (), *, keep_figures: bool = True
    ) -> None:
        """Remove an earlier run's outputs unless it recorded this very configuration.

        The directory never shows another selection's results beside this run's. Only files
        tokdyn wrote go (listed by the record or the stamp, or figures it drew); anything else is
        left.

        Args:
          cfg: this run's configuration; nothing goes when the directory's ``config.json`` records
            it (selection fields included).
          outputs: paths (relative to the directory) of the tables, summary and record.
          figures: paths of the figures.
          keep_figures: False: the figures go in any case (they are redrawn, or not drawn).
        """
        same = False
        record = os.path.join(self.out, RECORD)
        if os.path.exists(record):
            try:
                same = same_value(io.read_json(record).get("config"), config_dict(cfg))
            except (ValueError, OSError, AttributeError):
                same = False
        owned = owned_outputs(self.out)
        for name in (() if same else tuple(outputs)) + (tuple(figures) if not same or not keep_figures else ()):
            self.remove_output(name, owned=owned)

    def remove_output(self, name: str, *, owned: Optional[set] = None) -> bool:
        """Remove the file ``name`` (relative to the study directory) of an earlier run if tokdyn
        wrote it (listed by the record or the stamp, the record itself, or a figure tokdyn drew);
        anything else is left as it is. Nothing is removed through a link: where ``name`` or a
        folder on its way is a symbolic link, :class:`~tokdyn.experiment.study.Refused` names it
        (:func:`~tokdyn.experiment.study.paths.resolve_inside`). Returns whether it was removed."""
        path = resolve_inside(self.out, name)
        rel = relative(name)
        owned = owned_outputs(self.out) if owned is None else owned
        if regular_file(path) and (rel in owned or rel == RECORD or drawn_by_tokdyn(path)):
            return remove_file(self.out, rel)
        return False

    def finish(self, **record) -> str:
        """Write ``config.json``: the stamp (study, configuration, version, sources), the
        environment, ``record`` (timings, headline numbers), ``"outputs"``: the SHA-256 of every
        table the study wrote (each regular ``.csv``, ``.json``, ``.md`` or ``.txt`` under ``out``
        but the stamp, the record, and what lies in ``parts/``, ``corrupt/``, ``checkpoints/``,
        ``chunks/`` (verified file by file) or ``plots/``; never a file that was there, not
        tokdyn's, when the study opened) and ``"checksum"``, the SHA-256 of the other fields'
        canonical JSON. Releases the directory's lock. Read it back with
        :func:`~tokdyn.experiment.study.read_record`."""
        outputs = {}
        for rel in recorded_tables(self.out):
            path = os.path.join(self.out, rel)
            if rel in self._foreign and self._foreign[rel] == file_id(path):
                continue  # a file of someone else's, there before the study, untouched by it
            outputs[rel] = io.file_sha256(path)
        stamp = {k: v for k, v in self.stamp.items() if k != "outputs"}
        try:
            return io.write_checked_json(
                os.path.join(self.out, RECORD), {**stamp, **record, "environment": io.environment(), "outputs": outputs}
            )
        finally:
            self.release()

    def release(self) -> None:
        """Let the directory's lock go (this study's count of it: :func:`~tokdyn.experiment.study.locks.release`),
        as :meth:`finish` does; a study that stops before finishing calls it (the runner does, on
        any error). Calling it again does nothing."""
        if self._lock is not None:
            release(*self._lock)
            self._lock = None


def _without_code(stamp: Mapping) -> dict:
    """A stamp's ``extra`` without ``code``."""
    return {k: v for k, v in (stamp.get("extra") or {}).items() if k != "code"}
