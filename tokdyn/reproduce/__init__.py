"""Run every study, then write one report with a verdict for each seed finding
(``tokdyn reproduce [--quick] [--out DIR] [--studies a,b,...]``): the orchestration; the report's
rendering is :mod:`tokdyn.reproduce.rendering` (its names re-exported here), and each finding's claim,
rule and verdict live with the study that measures it.

:func:`main` runs the studies of ``cfg.studies`` (:mod:`tokdyn.experiment.registry`) one after
the other, each into ``OUT/<study>`` on its default configuration (or its quick preset), reusing
what an earlier run finished there and recording a study that fails while the others still run;
a study whose tables fail their verification (:func:`verify_study`) is rerun from its kept parts.
Then it collects every study's findings (:func:`findings`) and writes ``OUT/report.md`` and
``OUT/report.html``: for each seed finding a claim, its rule, the numbers it rests on and a
verdict (``reproduced``, ``refuted`` or ``open``). Every number is computed from the studies'
verified tables; a table that is missing or fails its verification leaves its findings ``open``.

What it runs, in which order, and what it writes: :doc:`/reproduce`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import time
import traceback
from typing import Mapping, Optional, Sequence

from tokdyn import _checks, io
from tokdyn.studies import main_of as study_main
from tokdyn.studies import spec as study_spec
from tokdyn.experiment import presets, registry
from tokdyn.experiment.findings import BOOTSTRAP_SEEDS, MIN_SEEDS, VERDICTS, Finding  # noqa: F401
from tokdyn.reproduce.rendering import SKIP_DIRS, figures_of, report, reported, to_html  # noqa: F401 -- re-exported
from tokdyn.reproduce.rendering import duration, markdown_table, ran_studies

STUDIES = registry.NAMES  # in the order they run (tokdyn.experiment.registry)
DEFAULT_STUDIES = registry.DEFAULT  # those run when --studies is not given (by_default)
MODULES = {e.name: e.module for e in registry.STUDIES}
RECORD_NAME = "config.json"  # a study's record (tokdyn.experiment.study.RECORD): its tables' SHA-256
STUDY = "reproduce"
REPORT = "report.md"


@dataclasses.dataclass(frozen=True)
class Config:
    """What ``tokdyn reproduce`` runs (the output directory is stamped with ``quick``).

    Attributes:
      quick: run each study's quick preset (minutes in all; most verdicts then stay open) instead of
        its default configuration (hours).
      studies: the studies to run, in this order (a study that reads another's output after it),
        names from tokdyn.reproduce.STUDIES or studies of one's own (an installed package's, or
        given with --study-module); default tokdyn.reproduce.DEFAULT_STUDIES: every study of the
        package's but those that take hours on two CPU cores or need a checkpoint (the learned
        sweeps, latent-reasoning, latent-diagnostics, vlm-diagnostics), which run when named; the
        report covers every study found in the output directory.
    """

    quick: bool = False
    studies: tuple = DEFAULT_STUDIES

    def validate(self) -> "Config":
        """Check every field; ``ValueError`` naming the field, the value and what is allowed."""
        if not isinstance(self.quick, bool):
            raise TypeError(f"quick must be a bool, got {self.quick!r}")
        if isinstance(self.studies, str) or not self.studies:
            raise ValueError(f"studies must name at least one of {', '.join(STUDIES)}, got {self.studies!r}")
        known = registry.names()  # tokdyn's and one's own
        for name in self.studies:
            if name not in known:
                raise ValueError(f"studies: unknown study {name!r}; choose from {', '.join(known)}")
        _checks.distinct("studies", self.studies)  # each study runs once
        if self.quick:
            for name in self.studies:
                presets.check_quick(name, study_spec(name).config)
        return self


def study_config(name: str, quick: bool, out: str):
    """The configuration ``tokdyn reproduce`` runs the study ``name`` with: its default (``quick``:
    its ``Config.quick()`` preset where it has one), each source it reads (its spec's ``sources``)
    pointed at that study's directory under ``out``."""
    spec = study_spec(name)
    cls = spec.config
    cfg = cls.quick() if quick and callable(getattr(cls, "quick", None)) else cls()
    if spec.sources:
        cfg = dataclasses.replace(cfg, **{field: os.path.join(out, source) for field, source in spec.sources.items()})
    return cfg


def _changed(default, quick, prefix: str = "") -> list[str]:
    """``field default → quick`` for each field of two configurations (dataclasses) that differs,
    a nested configuration's fields by their dotted names."""
    show = lambda v: ", ".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)  # noqa: E731
    out = []
    for field in dataclasses.fields(default):
        a, b = getattr(default, field.name), getattr(quick, field.name)
        if a == b or field.name == "preset":
            continue
        if dataclasses.is_dataclass(a) and type(a) is type(b):
            out += _changed(a, b, f"{prefix}{field.name}.")
        else:
            out.append(f"`{prefix}{field.name}` {show(a) or '()'} → {show(b) or '()'}")
    return out


def quick_presets() -> list[tuple[str, str]]:
    """``[(study, what its quick preset runs)]`` in the registry's order: each field of the study's
    ``Config.quick()`` that differs from its default, as ``field default → quick`` (a nested
    configuration's fields by their dotted names; ``docs/reproduce.md`` quotes this table and
    ``tests/test_honest_statistics.py`` holds it to it)."""
    out = []
    for name in STUDIES:
        cls = study_spec(name).config
        if not callable(getattr(cls, "quick", None)):
            out.append((name, "none: the default configuration"))
            continue
        out.append((name, "; ".join(_changed(cls(), cls.quick())) or "the default configuration"))
    return out


def quick_table() -> str:
    """:func:`quick_presets` as a Markdown table (``docs/reproduce.md``'s)."""
    return "\n".join(markdown_table(("study", "`--quick` runs (default → quick)"), quick_presets()))


# ---------------------------------------------------------------------------------------------- the findings


def findings(out: str, ran: Sequence[str] = ()) -> list[Finding]:
    """Every seed finding with its verdict, from the study directories under ``out``: each study's
    own ``findings`` (its ``SPEC.findings``, :class:`tokdyn.experiment.runner.Spec`, judged from ``out/<study>``,
    every table verified against the study's record first: a finding whose table is missing or
    fails its verification is ``open``, naming the file), in the registry's order (:func:`reported`,
    of the studies there or in ``ran``)."""
    found = []
    for name in reported(out, ran):
        spec = study_spec(name)
        if spec.findings is not None:
            found += spec.findings(os.path.join(out, name))
    return found


def verify_study(directory: str) -> Optional[str]:
    """What is wrong with the tables of the study directory ``directory``, as one line naming the
    first file that fails (None when its record verifies and every table it lists matches its
    SHA-256; also None when the study has no record yet: nothing finished to verify)."""
    from tokdyn.experiment import study as study_dir

    if not os.path.exists(os.path.join(directory, RECORD_NAME)):
        return None
    try:
        record = study_dir.read_record(directory)
    except (io.CorruptFile, ValueError, OSError) as e:
        return str(e)
    outputs = record.get("outputs")
    if not isinstance(outputs, dict):
        return f"{os.path.join(directory, RECORD_NAME)} lists no outputs: its tables cannot be verified"
    for rel in sorted(outputs):
        try:
            study_dir.verify_output(directory, rel)
        except FileNotFoundError:
            return f"{os.path.join(directory, rel)} is missing, though the study's record lists it"
        except (io.CorruptFile, ValueError, OSError) as e:
            return str(e)
    return None


def _set_aside_unverified(directory: str) -> list[str]:
    """Set aside (:func:`tokdyn.io.set_aside`, to ``corrupt/`` beside each) the tables of the study
    directory ``directory`` that fail their verification, so that its rerun recomputes them from its
    kept parts instead of recording them as its own; returns their paths. A record that fails its
    own checksum is set aside too (its list of tables cannot be trusted)."""
    from tokdyn.experiment import study as study_dir

    moved = []
    path = os.path.join(directory, RECORD_NAME)
    if not os.path.exists(path):
        return moved
    try:
        outputs = study_dir.read_record(directory).get("outputs")
    except (io.CorruptFile, ValueError, OSError):
        io.set_aside(path, "it fails its checksum", warn=False, root=directory)
        return [path]
    for rel in sorted(outputs) if isinstance(outputs, dict) else ():
        try:
            study_dir.verify_output(directory, rel)
        except FileNotFoundError:
            continue
        except (io.CorruptFile, ValueError, OSError) as e:
            io.set_aside(os.path.join(directory, rel), getattr(e, "reason", str(e)), warn=False, root=directory)
            moved.append(os.path.join(directory, rel))
    return moved


# ---------------------------------------------------------------------------------------------- the report


def write_report(out: str, record: Mapping) -> list[Finding]:
    """Compute every finding from the study directories under ``out`` and write ``report.md`` and
    ``report.html`` there; returns the findings."""
    found = findings(out, ran_studies(record))
    text = report(out, found, record)
    with io.atomic_write(os.path.join(out, REPORT)) as f:
        f.write(text)
    with io.atomic_write(os.path.join(out, "report.html")) as f:
        f.write(to_html(text))
    return found


# ---------------------------------------------------------------------------------------------- main


def _machine() -> str:
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "–"


class StudiesFailed(RuntimeError):
    """Raised by :func:`main` after the report when some studies failed; each failure was already
    said in one line (the study, its error, its log), so the command ends with this one line too."""


def failure_log(out: str, name: str) -> str:
    """Where :func:`main` writes the traceback of the study ``name`` when it fails:
    ``out/<name>-failure.log`` (removed when the study later finishes)."""
    return os.path.join(out, f"{name}-failure.log")


def _say_failure(out: str, name: str, error: str, trace: str, verbose: bool) -> None:
    """One line on stderr for the failed study ``name`` (its error, where its traceback is kept),
    the traceback itself too with ``verbose``."""
    log = failure_log(out, name)
    try:
        with io.atomic_write(log) as f:
            f.write(trace)
        where = f"traceback in {log}"
    except OSError as e:
        where = f"its traceback could not be written to {log}: {e.strerror or e}"
    if verbose:
        print(trace, end="", file=sys.stderr)
    first = error.splitlines()[0] if error else error
    print(f"tokdyn reproduce: {name} failed: {first} ({where}); going on with the others", file=sys.stderr)


def _run_study(name: str, c, out: str, prev: Mapping, quiet: bool, plots: bool, verbose: bool) -> dict:
    """Run the study ``name`` with the configuration ``c`` into ``out/<name>`` (its tables recomputed
    from its kept parts when they do not verify); a failure is said and recorded, never raised.
    Returns its record (``prev``: the record of its earlier run)."""
    from tokdyn.experiment import study as study_dir

    t0 = time.perf_counter()
    status, error = "done", None
    problem = verify_study(os.path.join(out, name))  # a study is reused only when its tables verify
    if problem is not None:
        moved = _set_aside_unverified(os.path.join(out, name))
        print(
            f"tokdyn reproduce: {name}: {problem}; its tables are recomputed from its kept parts"
            + (f" (set aside: {', '.join(moved)})" if moved else ""),
            file=sys.stderr,
        )
    try:
        result = study_main(name)(c, os.path.join(out, name), quiet=quiet, plots=plots)
        if result is False:
            status = "unfinished"
    except Exception as e:  # noqa: BLE001 -- recorded, the other studies still run
        status, error = "failed", f"{type(e).__name__}: {e}"
        _say_failure(out, name, error, traceback.format_exc(), verbose)
    else:
        with contextlib.suppress(OSError):  # an earlier run's failure of this study is history
            os.remove(failure_log(out, name))
    seconds = time.perf_counter() - t0
    config = study_dir.config_dict(c)
    computed = None
    if status == "done":  # the time of the run that computed it: an earlier one's, if it finished it
        same = prev.get("status") == "done" and prev.get("config") == config and problem is None
        computed = prev.get("computed_seconds") if same and prev.get("computed_seconds") else seconds
    return {"status": status, "seconds": seconds, "error": error, "computed_seconds": computed, "config": config}


def main(
    cfg: Config,
    out: str,
    *,
    quiet: bool = False,
    plots: bool = True,
    fresh: bool = False,
    configs: Optional[Mapping] = None,
    matmul_precision: Optional[str] = None,
    verbose: bool = False,
) -> dict:
    """Run the studies of ``cfg`` into ``out/<study>`` (reusing what is finished there), then write
    ``out/report.md`` and ``out/report.html``. ``out`` is stamped with ``cfg.quick`` first. A
    study that fails is recorded with its error, said in one line on stderr (the study, the error
    and where its traceback is: :func:`failure_log`; the traceback printed too with ``verbose``),
    and the others still run. Every configuration is checked before any study runs.

    Args:
      cfg: the reproduction's :class:`Config` (its ``studies`` and ``quick``).
      out: the output directory.
      quiet: print nothing but the failures.
      plots: draw every study's figures.
      fresh: empty a directory made with the other preset instead of refusing it.
      configs: optional study name -> configuration to use instead of :func:`study_config`'s.
      matmul_precision: run every study under it (:func:`tokdyn.experiment.study.matmul_precision`;
        checked before anything runs); ``None``: the precision in force (the command's
        ``--matmul-precision``).
      verbose: print a failed study's traceback, not only its line.

    Returns:
      ``{finding key: verdict}``.

    Raises:
      ValueError: an unknown study in ``configs``, or a configuration that fails its checks.
      StudiesFailed: (a ``RuntimeError``) after the report, naming the studies that failed.
    """
    from tokdyn.experiment import study as study_dir

    if matmul_precision is not None:
        with study_dir.matmul_precision(matmul_precision):  # checked first; every study below records it
            return main(cfg, out, quiet=quiet, plots=plots, fresh=fresh, configs=configs, verbose=verbose)
    cfg.validate()
    configs = dict(configs or {})
    for name in configs:
        if name not in registry.names():
            raise ValueError(f"configs: unknown study {name!r}; choose from {', '.join(registry.names())}")
    order = registry.in_order(cfg.studies)  # a study after the studies whose output it reads
    plan = [(name, configs.get(name) or study_config(name, cfg.quick, out)) for name in order]
    for _name, c in plan:  # every configuration checked before any study runs
        c.validate()
    top = study_dir.Study.open(out, STUDY, cfg, fresh=fresh, selection=("studies",), quiet=quiet)
    old = {}
    try:
        old = study_dir.read_record(out).get("studies", {})
    except (OSError, ValueError, AttributeError):  # none yet, or one that fails its checksum: nothing reused
        pass
    record = {
        "quick": cfg.quick,
        "tokdyn": study_dir.version(),
        "machine": _machine(),
        "studies": dict(old),
        "load_start": _load(),
    }
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    for i, (name, c) in enumerate(plan):
        say(f"\n=== reproduce: {name} ({i + 1}/{len(plan)}) -> {os.path.join(out, name)}")
        entry = record["studies"][name] = _run_study(name, c, out, old.get(name, {}), quiet, plots, verbose)
        say(f"=== {name}: {entry['status']} in {duration(entry['seconds'])}")
    record["ran"] = [name for name, _ in plan]
    record["load"] = _load()
    record["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    found = write_report(out, record)
    top.finish(**record, verdicts={f.key: f.verdict for f in found}, labels={f.key: f.label for f in found})
    if not quiet:
        width = max(len(f.title) for f in found)
        print(f"\nreport: {os.path.join(out, REPORT)} (and report.html)")
        for f in found:
            print(f"  {f.key:<3} {f.title:<{width}}  {f.label}")
    failed = [n for n, _ in plan if record["studies"][n]["status"] == "failed"]
    if failed:
        raise StudiesFailed(
            f"{len(failed)} of {len(plan)} studies failed ({', '.join(failed)}); the report on the "
            f"others is in {os.path.join(out, REPORT)}"
        )
    return {f.key: f.verdict for f in found}
