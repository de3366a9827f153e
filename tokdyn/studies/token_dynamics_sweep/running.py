"""Running the sweep: every rule's engine sweep into the output directory (:func:`run_sweep`,
resumable, shared by several processes as parts), the disk it needs (:func:`check_disk`), and the
runner's hooks (:func:`check`, :func:`prepare`, :func:`run`)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

import jax

from tokdyn.engine import sweep
from tokdyn.experiment import runner, study
from tokdyn.experiment.study import Refused
from tokdyn.studies.token_dynamics_sweep.config import STUDY, Config
from tokdyn.studies.token_dynamics_sweep.report import analysis

PART_WAIT_S = runner.PART_WAIT_S  # how long a part waits without progress for another (part 0's stamp, the chunks)


def run_sweep(cfg: Config, out: str, *, progress: bool = True, batch_size="auto", devices=None, part=None) -> float:
    """Run (or continue) the sweep into ``out``: one engine sweep (:func:`tokdyn.engine.sweep.run`)
    per rule (:meth:`Config.groups`), each into its own folder with its own manifest (the code
    digest of its rule, the rule module's SHA-256, its output fields), all with the same root key
    and common random numbers.

    Args:
      cfg: the sweep's :class:`Config` (validated here).
      out: the sweep directory.
      progress: a progress bar (or a line per chunk) on stderr.
      batch_size, devices: the execution strategy and devices (as :func:`tokdyn.engine.sweep.run`
        takes them).
      part: ``(i, n)``, this process's share of the chunks (see :func:`tokdyn.engine.sweep.run`);
        default: ``(jax.process_index(), jax.process_count())``. A part other than 0 waits for
        part 0 to start each rule's sweep.

    Returns:
      The seconds it took.
    """
    cfg.validate()
    i, n = runner.share_of(part)
    groups = cfg.groups()
    t0 = time.perf_counter()
    for g, group in enumerate(groups):
        manifest = os.path.join(group.dir(out), "manifest.json")
        if n > 1 and i != 0 and g > 0 and not os.path.exists(manifest):  # part 0 starts it once done with the last
            runner.wait_for(
                f"part 0 to start the sweep of {group.folder}",
                lambda: (
                    int(not os.path.exists(manifest)) + sum(len(sweep.missing_chunks(e.dir(out))) for e in groups[:g])
                ),
                study=STUDY,
                quiet=not progress,
            )
        sweep.run(
            group.task,
            group.grid,
            key=jax.random.key(cfg.root_seed),
            common_random_numbers=True,
            chunk_size=cfg.chunk(),
            out=group.dir(out),
            resume=True,
            progress=progress,
            collect=False,
            batch_size=batch_size,
            devices=devices,
            part=(i, n),
            code=code_record(cfg),
        )
    return time.perf_counter() - t0


def missing_chunks(cfg: Config, out: str) -> list:
    """The chunks of every rule's engine sweep (:meth:`Config.groups`) in ``out`` that have no file
    yet (:func:`tokdyn.engine.sweep.missing_chunks`; a group without its manifest yet: one entry)."""
    missing = []
    for group in cfg.groups():
        d = group.dir(out)
        missing += sweep.missing_chunks(d) if os.path.exists(os.path.join(d, "manifest.json")) else [(0, 0)]
    return missing


def code_record(cfg: Config) -> dict:
    """What the sweep's results depend on beyond its tasks' code, which the engine records group by
    group (:func:`tokdyn.engine.sweep.code_digest` of the task and
    :func:`tokdyn.engine.sweep.digest.module_digests`: the rule module and every module of the
    user's the rule imports, by their syntax trees): nothing more, ``{}``. A group whose rule does
    not come from ``rule_module`` (the baseline) is not keyed by it, so an edit of the module leaves
    that group's results standing."""
    del cfg
    return {}


def check_disk(cfg: Config, out: str, *, fresh: bool = False) -> None:
    """:class:`Refused` naming ``seeds`` when the sweep's chunk files (:meth:`Config.disk`, less the
    chunks already in ``out`` unless ``fresh``) would not fit on the disk that holds ``out``."""
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    have = 0
    for group in () if fresh else cfg.groups():
        chunk_dir = os.path.join(group.dir(out), "chunks")
        have += (
            0
            if not os.path.isdir(chunk_dir)
            else sum(e.stat().st_size for e in os.scandir(chunk_dir) if e.is_file(follow_symlinks=False))
        )
    need = cfg.disk() - have
    if need > 0.95 * free:
        raise Refused(
            f"{STUDY}: its {cfg.runs():,} runs will take about {_size(need)} of chunk files, and only "
            f"{_size(free)} is free on the disk of {probe!r} (the sweep keeps 5% of it spare): make seeds "
            "(or the axes) smaller, or choose an --out on a larger disk"
        )


def _size(n: float) -> str:
    """Bytes for a person: ``512 bytes``, ``3.4 KiB``, ``12.5 MiB``, ``2.25 GiB`` (three
    significant digits at least, so two different sizes never print alike as 0.0)."""
    n = float(n)
    if abs(n) < 1024:
        return f"{int(round(n)):,} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.3g} {unit}" if abs(n) < 100 else f"{n:,.0f} {unit}"
    return f"{n} PiB"


def check(session: runner.Session, cfg: Config) -> None:
    """The configuration's checks, and the part of a shared sweep (``session.options["part"]``;
    the parts of one share the directory's lock: ``session.shared``)."""
    cfg.validate()
    session.context["part"] = session.share  # its parts share the directory's lock (the runner: session.shared)


def prepare(session: runner.Session, cfg: Config) -> None:
    """Before the directory is opened: the disk the chunks need; of a sweep shared by several
    processes, no ``fresh``, and part 0's stamp awaited by the others."""
    i, n = session.context["part"]
    out = session.out
    check_disk(cfg, out, fresh=session.fresh)
    if n > 1 and i != 0:  # (fresh with several parts: refused by the runner)
        stamp = os.path.join(out, study.STAMP)
        runner.wait_for(
            f"part 0 to stamp {stamp}", lambda: int(not os.path.exists(stamp)), study=STUDY, quiet=session.quiet
        )


def run(session: runner.Session, cfg: Config) -> runner.Result | None:
    """Run (or resume) this process's share of the sweep; part 0 then waits for the others' chunks
    and analyses the whole (:func:`analysis`); the other parts return None."""
    i, n = session.context["part"]
    out = session.out
    since = time.time()
    seconds = session.timings["sweep_s"] = run_sweep(cfg, out, progress=not session.quiet, part=(i, n))
    if n > 1:
        if i != 0:
            session.say(f"part {i} of {n}: done; part 0 writes the analysis once every part's chunks are in {out}")
            return None
        runner.wait_for(
            "the other parts' chunks", lambda: len(missing_chunks(cfg, out)), study=STUDY, quiet=session.quiet
        )
    with session.timed("analyse"):
        result = analysis(out, cfg, seconds=seconds)
    session.timings["n_runs"] = cfg.runs()
    kept = sum(sweep.runs_kept_before(group.dir(out), since) for group in cfg.groups())  # read back, not run
    return dataclasses.replace(result, data=dict(result.data, timings=session.timings, out=out, kept_runs=kept))
