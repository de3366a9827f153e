"""Running a learned sweep: the engine sweep of the model's :class:`~tokdyn.studies.learned_sweep.model.TrainRun`
into the output directory (:func:`run_sweep`, resumable: chunks of trained and evaluated models
kept on disk, verified, read back by a rerun), its chunk size (:func:`chunk_size`: from the
device's memory on an accelerator), and the runner's ``run`` hook (:func:`run`)."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from tokdyn.engine import execute, sweep
from tokdyn.experiment import runner
from tokdyn.studies.learned_sweep import plots
from tokdyn.studies.learned_sweep.report import analysis, printed


def chunk_size(cfg, out: str | None = None):
    """The models per chunk: ``cfg.chunk_size``; else, resuming a sweep in ``out``, None (the chunk
    size it was started with, read from its manifest); on CPU None (the engine's default); on an
    accelerator the largest power of two of models whose working set (XLA's memory analysis of a
    few vmapped models, :func:`tokdyn.engine.execute.run_bytes`) fits in a quarter of the device's
    free memory (:func:`tokdyn.engine.execute.device_memory`), at most the engine's default."""
    if cfg.chunk_size:
        return cfg.chunk_size
    if out is not None and os.path.exists(os.path.join(out, "manifest.json")):
        return None
    if jax.default_backend() == "cpu":
        return None
    task = cfg.task()
    names = cfg.axis_names()
    values = {k: np.full(8, v[0], np.float32) for k, v in cfg.axes()}

    def one(args):
        return task(jax.random.key(0), **{k: args[k] for k in names})

    per_model = execute.run_bytes(one, values if names else {"_": np.zeros(8, np.float32)})
    memory = execute.device_memory()
    n_dev = jax.local_device_count()
    default = execute.default_chunk_size(n_dev)
    if per_model is None or memory is None:
        return None
    fit = int(memory // execute.MEMORY_SHARE // per_model)
    per_device = 1 << (fit.bit_length() - 1) if fit >= 1 else 1
    return int(min(per_device * n_dev, default))


def run_sweep(cfg, out: str, *, progress: bool = True, devices=None, part=None) -> float:
    """Train and evaluate every model of the sweep into ``out`` (:func:`tokdyn.engine.sweep.run` of
    ``cfg.task()`` over ``cfg.grid()``, common random numbers: a seed's models share their key),
    or continue it: the chunks on disk are read back, not recomputed; a sweep of other code or
    configuration is refused (:class:`tokdyn.io.OutputConflict`). Returns the seconds it took."""
    cfg.validate()
    t0 = time.perf_counter()
    sweep.run(
        cfg.task(),
        cfg.grid(),
        key=jax.random.key(cfg.root_seed),
        common_random_numbers=True,
        chunk_size=chunk_size(cfg, out),
        out=out,
        resume=True,
        progress=progress,
        collect=False,
        batch_size=cfg.batch(),
        devices=devices,
        part=part,
    )
    return time.perf_counter() - t0


def run(session: runner.Session, cfg) -> runner.Result:
    """The runner's hook: run (or resume) the sweep, then its :func:`~tokdyn.studies.learned_sweep.report.analysis`."""
    since = time.time()
    seconds = session.timings["sweep_s"] = run_sweep(cfg, session.out, progress=not session.quiet, part=(0, 1))
    with session.timed("analyse"):
        result = analysis(session.out, cfg, seconds=seconds)
    session.timings["n_models"] = cfg.runs()
    kept = sweep.runs_kept_before(session.out, since)  # models read back from an earlier run, not trained
    return dataclasses.replace(result, data=dict(result.data, timings=session.timings, out=session.out, kept_runs=kept))


def make_spec(model, config: type) -> runner.Spec:
    """The study of the sweep of ``model`` (its ``Config``: ``config``, :func:`~tokdyn.studies.learned_sweep.config.make_config`)
    as a value: named ``NAME-sweep``, its tables ``conditions.csv`` and ``paired.csv``, its
    summary ``report.md``, its figures in ``plots/`` (:mod:`~tokdyn.studies.learned_sweep.plots`)."""
    return runner.Spec(
        name=f"{model.name}-sweep",
        config=config,
        run=run,
        summary=lambda cfg, r: r.data["report"],
        summary_file="report.md",
        preset=None,  # report.md says it
        printed=printed,
        outputs=("conditions.csv", "paired.csv"),
        figures=plots.draw,
        figure_files=plots.FIGURE_FILES,
    )
