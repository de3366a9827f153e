"""The study runner: one output directory per study configuration, stamped before any work, whose
parts cannot be mixed up with another configuration's, lost or read back corrupt.

Every study's ``main`` does the same four things through this module::

    study = Study.open(out, "visual-tokens", cfg, fresh=fresh, selection=("parts",),
                       estimate=cfg.estimate())      # checks, then stamps the directory
    rows = study.rows("poc", lambda: run_part("poc", ...))   # a part: computed once, kept
    ...                                              # tables, figures into study.path(...)
    study.finish(timings=timings)                    # config.json: config, environment, timings

:meth:`Study.open`, before anything is computed:

1. checks the output path (:func:`check_output`: a file, a directory that cannot be written or
   created are refused with a ``ValueError`` naming ``out``);
2. checks the resources the configuration asks for (:class:`Estimate`, :func:`check_resources`):
   what cannot fit in this machine's memory is refused, naming the option to change; what will
   take long is said up front;
3. compares the configuration with the stamp of the directory (``study.json``): a directory of
   another study, or of the same study with another configuration or another tokdyn version, is
   refused with :class:`tokdyn.io.OutputConflict` naming every field that differs (the command
   exits 2), unless ``fresh``, which removes what the old configuration wrote and starts afresh.
   A non-empty directory that no study stamped is never written into;
4. writes the stamp: the study, the whole configuration (``selection`` fields, which only choose
   which parts to run, aside), the tokdyn version and the stamps of the sources it analyses.

Parts (:meth:`Study.part` for arrays, :meth:`Study.rows` for table rows) live in ``parts/``,
each keyed by the directory's stamp (or a key of its own), written atomically with a checksum and
verified when read back: a part that cannot be read whole is set aside with a warning and
recomputed (:func:`tokdyn.io.set_aside`).

An analysis study names its source with :func:`source_stamp`, which reads the source's own stamp
and checks it against the configuration the analysis expects; the source's stamp then enters the
analysis's, so a source retrained with other settings is not silently reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

from tokdyn import io

STAMP = "study.json"  # the stamp of a study directory
RECORD = "config.json"  # what the finished study records: configuration, environment, timings


class Refused(ValueError):
    """A study refused before any work: an output path it cannot write, or a configuration this
    machine cannot hold (a usage error: the command exits 2)."""


# ---------------------------------------------------------------------------------------------- the output path


def check_output(out) -> str:
    """``out`` as a path a study can write into; :class:`Refused` (a ``ValueError``) naming ``out``
    when it is a file, cannot be created or cannot be written. Creates nothing."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise TypeError(f"out must be a directory path, got {out!r}")
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise Refused(f"out={out!r} is a file, not a directory: choose a directory for the study's outputs")
    probe = out
    while not os.path.exists(probe):  # the nearest existing ancestor must let us create the rest
        parent = os.path.dirname(os.path.abspath(probe))
        if parent == os.path.abspath(probe):
            break
        probe = parent
    if not os.path.isdir(probe):
        raise Refused(f"out={out!r} cannot be created: {probe!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot be written" if probe == out else f"cannot be created ({probe!r} is not writable)"
        raise Refused(f"out={out!r} {what}: choose a directory you can write to")
    if os.path.abspath(probe).startswith(("/proc", "/sys")):
        raise Refused(f"out={out!r} lies in a virtual file system ({probe!r}): choose a directory on a disk")
    return out


# ---------------------------------------------------------------------------------------------- resources


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a study's configuration will ask of the machine, before it runs.

    Attributes:
      memory: bytes of the largest allocation the run will hold at once (an estimate from the
        configuration's sizes; XLA's buffers come on top).
      option: the option that sets ``memory`` (named in the refusal: the one to change).
      models: models trained, or runs simulated, in all.
      seconds: a rough time on a 2-core CPU (None: not estimated); said up front when long.
    """

    memory: float = 0.0
    option: str = ""
    models: int = 0
    seconds: Optional[float] = None


LONG_SECONDS = 3600.0  # a run estimated to take longer than this says so before it starts
MAX_ELEMENTS = 2 ** 31 - 1  # XLA indexes an array's elements with 32-bit integers on many paths


def available_memory() -> int:
    """Bytes of memory available to a new allocation on this machine (``MemAvailable`` of
    ``/proc/meminfo``; the physical memory where that cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2 ** 62


def check_resources(study: str, estimate: Estimate, *, memory: Optional[int] = None, note=None) -> None:
    """Refuse (:class:`Refused` naming the option and the limit) an ``estimate`` that cannot fit in
    the memory available (``memory``: this machine's, :func:`available_memory`, by default); say
    through ``note`` (a callable taking a line) when it will take long."""
    limit = available_memory() if memory is None else int(memory)
    if estimate.memory > 0.8 * limit:
        raise Refused(f"{study}: this configuration needs about {_bytes(estimate.memory)} at once, more than the "
                         f"{_bytes(0.8 * limit)} this machine can spare (80% of the {_bytes(limit)} available): make "
                         f"{estimate.option or 'the sizes'} smaller")
    if note is not None and estimate.seconds is not None and estimate.seconds > LONG_SECONDS:
        note(f"{study}: this configuration will take about {estimate.seconds / 3600:.1f} hours on a 2-core CPU "
             f"({estimate.models:,} models or runs); finished work is kept, and the same command resumes it")


def elements_fit(name: str, *sizes: int) -> None:
    """:class:`Refused` naming ``name`` when an array of ``prod(sizes)`` elements would overflow
    XLA's 32-bit element indexing (a crash of the process, not an error, once compiled)."""
    n = 1
    for s in sizes:
        n *= int(s)
    if n > MAX_ELEMENTS:
        raise Refused(f"{name} makes an array of {n:,} elements, more than the {MAX_ELEMENTS:,} one array may hold: "
                         f"make {name} smaller")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------------------------------- stamps


def version() -> str:
    """The installed tokdyn's version (part of every stamp)."""
    return __import__("tokdyn").__version__


def config_dict(cfg) -> dict:
    """A configuration (a dataclass, or a mapping) as plain JSON values."""
    value = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return json.loads(json.dumps(io.jsonable(value)))


def digest(obj) -> str:
    """A short, stable hash of a JSON-able value (its canonical JSON)."""
    text = json.dumps(io.jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: Mapping, new: Mapping, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` of every field that differs, nested fields as dotted
    names (``training.steps``); a field one side lacks shows as ``<absent>``."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def describe(diffs: Sequence[tuple[str, Any, Any]], limit: int = 8) -> str:
    """:func:`differences` as one line of text (the first ``limit`` of them)."""
    shown = [f"{k}: {_short(a)} there, {_short(b)} now" for k, a, b in diffs[:limit]]
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def _short(v, width: int = 60) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= width else text[: width - 3] + "..."


def read_stamp(out: str) -> Optional[dict]:
    """The stamp of the study directory ``out`` (None when it has none); ``OutputConflict`` when the
    stamp cannot be read (then the directory's results cannot be trusted either)."""
    path = os.path.join(out, STAMP)
    if not os.path.exists(path):
        return None
    try:
        stamp = json.loads(io.read_verified(path))
    except (io.CorruptFile, ValueError) as e:
        raise io.OutputConflict(f"{path} cannot be read ({e}): nothing in {out!r} can be trusted; rerun with --fresh "
                                "to start afresh there, or choose another --out") from None
    if not isinstance(stamp, dict) or "study" not in stamp or "config" not in stamp:
        raise io.OutputConflict(f"{path} is not a study's stamp; rerun with --fresh, or choose another --out")
    return stamp


def source_stamp(source: str, study: str, expected=None, *, selection: Sequence[str] = (), option: str = "source"):
    """The stamp of the directory ``source`` of the study ``study`` that an analysis reads;
    ``OutputConflict`` when it holds no such study or (``expected``: the configuration the analysis
    expects its source to have) one of another configuration, naming the fields that differ."""
    stamp = read_stamp(source)
    if stamp is None:
        raise io.OutputConflict(f"{option}={source!r} holds no {study} study (no {STAMP})")
    if stamp["study"] != study:
        raise io.OutputConflict(f"{option}={source!r} holds the study {stamp['study']!r}, not {study!r}")
    if expected is not None:
        want = {k: v for k, v in config_dict(expected).items() if k not in selection}
        diffs = differences(stamp["config"], want)
        if stamp.get("tokdyn") != version():
            diffs.append(("tokdyn version", stamp.get("tokdyn"), version()))
        if diffs:
            raise io.OutputConflict(f"{option}={source!r} was made with another configuration than this study expects "
                                    f"({describe(diffs)}): choose the source made with these settings, or another "
                                    f"{option} for this study to fill")
    return stamp


# ---------------------------------------------------------------------------------------------- the study directory


class Study:
    """A study's output directory, opened by :meth:`open` (see the module docstring)."""

    def __init__(self, out: str, stamp: dict, *, quiet: bool = False):
        self.out, self.stamp, self.quiet = out, stamp, quiet
        self.key = digest(stamp)  # what every part is keyed by unless it names a key of its own

    @property
    def name(self) -> str:
        """The study's name (``study`` of the stamp)."""
        return self.stamp["study"]

    @classmethod
    def open(cls, out, study: str, cfg, *, fresh: bool = False, selection: Sequence[str] = (),
             sources: Optional[Mapping[str, dict]] = None, estimate: Optional[Estimate] = None,
             quiet: bool = False, extra: Optional[Mapping] = None) -> "Study":
        """Check, then stamp, the output directory ``out`` of ``study`` for the configuration
        ``cfg`` (see the module docstring). ``selection``: fields of ``cfg`` that only choose which
        parts run (left out of the stamp: a rerun may add parts). ``sources``: name -> the stamp of
        a directory the study reads (:func:`source_stamp`). ``extra``: anything else the results
        depend on (JSON-able), stamped with the configuration. ``fresh``: remove what another
        configuration wrote in ``out`` and start afresh."""
        out = check_output(out)
        if estimate is not None:
            check_resources(study, estimate, note=lambda s: print(s, file=sys.stderr))  # said even when quiet
        config = {k: v for k, v in config_dict(cfg).items() if k not in selection}
        stamp = {"study": study, "tokdyn": version(), "config": config,
                 "sources": {k: digest(v) for k, v in (sources or {}).items()}}
        if extra:
            stamp["extra"] = json.loads(json.dumps(io.jsonable(dict(extra))))
        old = None
        if os.path.isdir(out):
            try:
                old = read_stamp(out)
            except io.OutputConflict:
                if not fresh:
                    raise
                old = {"study": study}
            if old is None and _has_files(out):
                loose = sorted(os.listdir(out))
                if not (fresh and _written_by_tokdyn(out)):
                    raise io.OutputConflict(
                        f"out={out!r} holds files that no tokdyn study stamped ({', '.join(loose[:5])}"
                        f"{', ...' if len(loose) > 5 else ''}): choose an empty or new directory"
                        + (" (--fresh clears only directories tokdyn wrote)" if fresh else ""))
                old = {"study": study}
        if old is not None and (fresh or _conflicts(old, stamp)):
            if not fresh:
                raise io.OutputConflict(_conflict_message(out, old, stamp))
            clear(out)
            old = None
        os.makedirs(out, exist_ok=True)
        if old is None and not _stamp_once(out, stamp):  # another process stamped it first: compare
            old = read_stamp(out)
            if _conflicts(old, stamp):
                raise io.OutputConflict(_conflict_message(out, old, stamp))
        return cls(out, stamp, quiet=quiet)

    # -------------------------------------------------------------------------- paths and parts

    def path(self, *names: str) -> str:
        """A path inside the study directory (its folders created)."""
        p = os.path.join(self.out, *names)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def part_path(self, name: str, suffix: str = ".npz") -> str:
        """The file of the part ``name`` (``parts/<name><suffix>``)."""
        return self.path("parts", name + suffix)

    def _part_key(self, key) -> str:
        return self.key if key is None else f"{self.key}:{digest(key)}"

    def part(self, name: str, compute: Callable[[], Mapping[str, Any]], *, key=None) -> dict:
        """``compute()`` (a dict of arrays and numbers), kept as ``parts/<name>.npz``
        (:func:`tokdyn.io.kept`, keyed by the directory's stamp and ``key``)."""
        return io.kept(self.part_path(name), self._part_key(key), compute)

    def rows(self, name: str, compute: Callable[[], Sequence[Mapping[str, Any]]], *, key=None) -> list[dict]:
        """``compute()`` (table rows), kept as ``parts/<name>.json`` (:func:`tokdyn.io.kept_rows`)."""
        return io.kept_rows(self.part_path(name, ".json"), self._part_key(key), compute)

    def has(self, name: str, *, key=None) -> bool:
        """Whether the rows part ``name`` is already kept (and readable) for this stamp."""
        path = self.part_path(name, ".json")
        if not os.path.exists(path):
            return False
        try:
            return json.loads(io.read_verified(path)).get("stamp") == self._part_key(key)
        except (io.CorruptFile, ValueError, AttributeError):
            return False

    def clear_other_outputs(self, cfg, outputs: Sequence[str], figures: Sequence[str] = (), *,
                            keep_figures: bool = True) -> None:
        """Remove ``outputs`` (tables, summary, record) and ``figures`` of an earlier run in the
        directory unless its ``config.json`` records this very configuration ``cfg`` (selection
        fields included), so that the directory never shows another selection's results beside
        this run's; with ``keep_figures`` False the figures go in any case (they are redrawn, or
        not drawn)."""
        same = False
        record = os.path.join(self.out, RECORD)
        if os.path.exists(record):
            try:
                same = io.read_json(record).get("config") == config_dict(cfg)
            except (ValueError, OSError, AttributeError):
                same = False
        for name in (() if same else tuple(outputs)) + (tuple(figures) if not same or not keep_figures else ()):
            path = os.path.join(self.out, name)
            if os.path.exists(path):
                os.remove(path)

    def finish(self, **record) -> str:
        """Write ``config.json``: the stamp (study, configuration, version, sources), the
        environment and ``record`` (timings, headline numbers)."""
        return io.write_json(os.path.join(self.out, RECORD), {**self.stamp, **record, "environment": io.environment()})


def _stamp_once(out: str, stamp: dict) -> bool:
    """Write ``out``'s stamp unless it has one: a complete file under a temporary name, then a
    hard link to the final name, which fails if another process linked its stamp first (several
    processes of one sweep may open a new directory at once). True when this process wrote it."""
    path = os.path.join(out, STAMP)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    io.write_verified(tmp, json.dumps(stamp, indent=2, sort_keys=True).encode())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def _has_files(out: str) -> bool:
    """Whether ``out`` holds anything but the temporaries of writes cut short (or under way)."""
    return any(not io.is_temporary(e.name) for e in os.scandir(out))


def _written_by_tokdyn(out: str) -> bool:
    """A directory an earlier tokdyn (before stamps) wrote: it holds a config.json or a sweep's manifest."""
    for name in (RECORD, "manifest.json"):
        path = os.path.join(out, name)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    return isinstance(json.load(f), (dict, list))
            except (OSError, ValueError):
                return False
    return False


def _conflicts(old: dict, new: dict) -> bool:
    return any(old.get(k) != new.get(k) for k in ("study", "tokdyn", "config", "sources", "extra"))


def _conflict_message(out: str, old: dict, new: dict) -> str:
    if old.get("study") != new["study"]:
        return (f"out={out!r} holds the {old.get('study')!r} study, not {new['study']!r}: choose another directory "
                f"(--fresh would remove the {old.get('study')} results)")
    diffs = differences(old.get("config", {}), new["config"])
    if old.get("tokdyn") != new["tokdyn"]:
        diffs.append(("tokdyn version", old.get("tokdyn"), new["tokdyn"]))
    for k, a in sorted(old.get("sources", {}).items()):
        b = new["sources"].get(k)
        if a != b:
            diffs.append((f"source {k}", f"stamp {a}", f"stamp {b}" if b else "<absent>"))
    for k in sorted(set(new["sources"]) - set(old.get("sources", {}))):
        diffs.append((f"source {k}", "<absent>", f"stamp {new['sources'][k]}"))
    diffs += differences(old.get("extra", {}), new.get("extra", {}), "extra.")
    return (f"out={out!r} holds a {new['study']} study of another configuration ({describe(diffs)}): rerun with "
            "those settings to resume it, choose another --out, or pass --fresh to remove its results and start "
            "afresh")


def clear(out: str) -> None:
    """Remove everything in the study directory ``out`` (the stamp last, so a cut-off clear
    leaves a directory that is still recognised as the old study's). One process only: a clear
    under a concurrent writer is unsafe."""
    for entry in sorted(os.scandir(out), key=lambda e: e.name == STAMP):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)
