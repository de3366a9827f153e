"""Hooks for :func:`~tokdyn.train.train_many`'s ``on_log``: the logs of every model to TensorBoard
(:class:`TensorBoardLogger`) or to Weights & Biases (:class:`WandbLogger`), each model under its own
name (:func:`model_names`).

``on_log(step, logs)`` receives after every call the call's logs and evaluations, each an (M,)
array, one value per model. A logger writes value ``i`` under model ``i``'s name:

- TensorBoard: one run per model (``logdir/<name>/``), each metric a tag, so that TensorBoard draws
  every model of a metric in one chart. Written with ``tensorboardX`` (no TensorFlow): the extra
  ``tensorboard``.
- W&B: one W&B run for the whole training, each model's metric a key ``<metric>/<name>`` (W&B
  groups the panels by metric). The extra ``wandb``; ``mode="offline"`` or ``"disabled"`` needs no
  network.

::

    keys, hp = train.grid(seed_keys, hparams)
    with train.TensorBoardLogger("runs/tb", train.model_names(hp, seeds=len(seed_keys))) as tb:
        train.train_many(trainer, data, keys, hp, on_log=tb)

A value is written as it is: a model that skipped non-finite steps can log NaN, and shows it.

The TensorBoard logger writes its event files itself, synchronously (no writer thread): what it is
given is on disk at the latest ``flush_secs`` later, at :meth:`TensorBoardLogger.flush` and
:meth:`~TensorBoardLogger.close`, and whenever a checkpoint of ``train_many`` is written
(:func:`~tokdyn.train.save_checkpoint` calls :func:`flush_open` first): after a kill, the curves on
disk reach at least as far as the last checkpoint, so a resumed run's curves go on where its
checkpoint does.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Mapping, Optional, Sequence

import numpy as np

from tokdyn import extras


_OPEN: "weakref.WeakSet" = weakref.WeakSet()  # the loggers of this process with unwritten data possible
_FILES = [0]  # event files opened by this process


def flush_open() -> None:
    """Write what every open :class:`TensorBoardLogger` of this process holds to its event files
    (:func:`~tokdyn.train.save_checkpoint` calls it before writing a checkpoint, so that the curves
    on disk always reach the checkpoint's step)."""
    for logger in list(_OPEN):
        logger.flush()


def _key(entry) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def model_names(hparams, seeds: int = 1) -> list[str]:
    """A name for each of the M models of :func:`~tokdyn.train.grid` (``hparams`` with (M,) leaves,
    model ``h * seeds + s`` setting h with seed s): the hyper-parameters that differ between models
    (with 6 significant digits, or 9 or 17 where fewer do not keep two settings apart) and the
    seed, e.g. ``learning_rate=0.05,seed=2``; ``model_0`` ... when nothing differs; a setting
    given twice is numbered apart (``learning_rate=0.1,model_1``).

    Args:
      hparams: the models' hyper-parameters, every leaf of shape (M,) (as ``train_many`` takes them).
      seeds: the number of seeds S per setting (M a multiple of it).
    """
    import jax

    flat = [(".".join(_key(k) for k in p), np.asarray(v)) for p, v in jax.tree_util.tree_flatten_with_path(hparams)[0]]
    if not flat or any(v.ndim != 1 for _, v in flat) or len({len(v) for _, v in flat}) != 1:
        raise ValueError(
            f"hparams must have (M,) leaves of one length M, got shapes {[np.shape(v) for _, v in flat]} "
            "(tokdyn.train.grid builds them)"
        )
    m = len(flat[0][1])
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1 or m % seeds:
        raise ValueError(f"seeds must be an int >= 1 that divides the number of models M={m}, got {seeds!r}")
    varying = [(n, v) for n, v in flat if np.unique(v).size > 1]
    distinct = len({(tuple(float(v[i]) for _, v in varying), i % seeds) for i in range(m)})
    for digits in (6, 9, 17):  # the fewest significant digits that keep distinct settings apart
        names = []
        for i in range(m):
            parts = [f"{n}={float(v[i]):.{digits}g}" for n, v in varying]
            parts += [f"seed={i % seeds}"] if seeds > 1 else []
            names.append(",".join(parts) if parts else f"model_{i}")
        if len(set(names)) == distinct:
            break
    if distinct < m:  # the same setting twice with the same seed: numbered apart
        names = [n if n == f"model_{i}" else f"{n},model_{i}" for i, n in enumerate(names)]
    return names


def _check_names(names, who: str) -> Optional[list[str]]:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"{who}: names must be a sequence of str, one per model, got {names!r}")
    names = list(names)
    bad = [n for n in names if not isinstance(n, str) or not n or n.startswith(("/", "\\")) or ".." in n]
    if bad:
        raise ValueError(f"{who}: every name must be a non-empty relative str without '..', got {bad[0]!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{who}: the names must differ, got {names}")
    return names


def _rows(who: str, names: Optional[list[str]], step, logs) -> tuple[int, list[str], dict]:
    """``(step, names, {metric: (M,) float64})`` of one ``on_log`` call, checked."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"{who}: step must be an int, got {step!r}")
    if not isinstance(logs, Mapping):
        raise TypeError(f"{who}: logs must be a mapping metric -> (M,) array, got {type(logs).__name__}")
    values = {}
    for k, v in logs.items():
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != 1 or (names is not None and len(a) != len(names)):
            want = f"({len(names)},), one per model" if names is not None else "(M,), one per model"
            raise ValueError(f"{who}: logs[{k!r}] must have shape {want}, got {a.shape}")
        values[str(k)] = a
    m = {len(a) for a in values.values()}
    if len(m) > 1:
        raise ValueError(f"{who}: the logs differ in length: { {k: len(a) for k, a in values.items()} }")
    if names is None:
        n = m.pop() if m else 0
        names = [f"model_{i:0{len(str(max(n - 1, 0)))}d}" for i in range(n)]
    return int(step), names, values


def _open_files_limit() -> Optional[int]:
    """This process's soft limit of open files (None where it cannot be read, or is unlimited)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


class TensorBoardLogger:
    """``on_log`` hook: every model's logs to TensorBoard event files, one run per model
    (``logdir/<name>/``), each metric a scalar tag at the training step.

    Args:
      logdir: the folder of the runs (created).
      names: one name per model (:func:`model_names`); None: ``model_0`` ... (zero-padded).
      runs: True: one run per model (TensorBoard overlays the models of a metric in one chart;
        each run keeps an event file open). False: one run in ``logdir``, model i's metric under
        the tag ``<metric>/<name>`` (one file, for more models than files may be open: a
        ValueError says so at the first call where ``runs=True`` would open more than half the
        process's limit of open files).
      flush_secs: the most seconds a value waits before it is written to disk (it is written at
        the first call after that; on :meth:`flush`, :meth:`close` and when a checkpoint is
        written too, :func:`flush_open`).

    Needs ``tensorboardX`` (the ``tensorboard`` extra, ``pip install -e ".[tensorboard]"``; no TensorFlow). Use it as a
    context manager, or call :meth:`close` when training ends.
    """

    def __init__(self, logdir: str, names: Optional[Sequence[str]] = None, *, runs: bool = True, flush_secs: int = 30):
        self._tbx = extras.load("tensorboardX", "TensorBoardLogger")
        if not isinstance(logdir, (str, os.PathLike)) or not os.fspath(logdir):
            raise TypeError(f"TensorBoardLogger: logdir must be a folder path, got {logdir!r}")
        if not isinstance(runs, bool):
            raise TypeError(f"TensorBoardLogger: runs must be True or False, got {runs!r}")
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs >= 0:
            raise ValueError(f"TensorBoardLogger: flush_secs must be a number of seconds >= 0, got {flush_secs!r}")
        self.logdir = os.fspath(logdir)
        self.names = _check_names(names, "TensorBoardLogger")
        self.runs = runs
        self.flush_secs = flush_secs
        self._writers: dict[str, object] = {}
        self._next_flush = time.monotonic() + flush_secs
        _OPEN.add(self)

    def _writer(self, name: str):
        writer = self._writers.get(name)
        if writer is None:
            from tensorboardX.event_file_writer import EventsWriter

            path = os.path.join(self.logdir, name) if name else self.logdir
            os.makedirs(path, exist_ok=True)
            # a name of its own (the process and a count): a run resumed within the second of the
            # last one's start must not open (and truncate) the same file
            _FILES[0] += 1
            writer = EventsWriter(os.path.join(path, "events"), filename_suffix=f".{os.getpid()}.{_FILES[0]}")
            self._writers[name] = writer
        return writer

    def _add(self, name: str, tag: str, value: float, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        self._writer(name).write_event(Event(wall_time=time.time(), step=step, summary=scalar(tag, value)))

    def __call__(self, step, logs) -> None:
        """Write ``logs`` (metric -> (M,) values) at ``step``, value i under model i's run (or tags)."""
        step, names, values = _rows("TensorBoardLogger", self.names, step, logs)
        if not values:  # nothing logged: the names (and their number) wait for a call with values
            return
        self.names = names
        if not self.runs:
            for metric, a in values.items():
                for i, name in enumerate(names):
                    self._add("", f"{metric}/{name}", float(a[i]), step)
        else:
            if not self._writers:
                limit = _open_files_limit()
                if limit is not None and len(names) > limit // 2:
                    raise ValueError(
                        f"TensorBoardLogger: {len(names)} models would keep {len(names)} event files open, more "
                        f"than half this process's limit of {limit} open files: pass runs=False (one run, a tag "
                        "per model), or raise the limit (ulimit -n)"
                    )
            for i, name in enumerate(names):
                for metric, a in values.items():
                    self._add(name, metric, float(a[i]), step)
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered to the event files."""
        for w in self._writers.values():
            w.flush()
        self._next_flush = time.monotonic() + self.flush_secs

    def close(self) -> None:
        """Flush and close every writer."""
        for w in self._writers.values():
            w.close()
        self._writers = {}
        _OPEN.discard(self)

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WandbLogger:
    """``on_log`` hook: every model's logs to one Weights & Biases run, model i's metric under the
    key ``<metric>/<name>`` at the training step.

    Args:
      names: one name per model (:func:`model_names`); None: ``model_0`` ... (zero-padded).
      run: a run of ``wandb.init`` to log to (left open by :meth:`close`); None: a run is started
        with ``wandb.init(**init)`` and finished by :meth:`close`.
      **init: ``wandb.init``'s arguments (``project``, ``name``, ``config``, ``dir``, ``mode``:
        ``"offline"`` writes a local run to sync later, ``"disabled"`` nothing).

    Needs ``wandb`` (the ``wandb`` extra, ``pip install -e ".[wandb]"``). Use it as a context manager, or call
    :meth:`close` when training ends.
    """

    def __init__(self, names: Optional[Sequence[str]] = None, *, run=None, **init):
        self.names = _check_names(names, "WandbLogger")
        if run is not None and init:
            raise TypeError(f"WandbLogger: give run or wandb.init's arguments, not both (got {sorted(init)})")
        if run is None:
            wandb = extras.load("wandb", "WandbLogger")
            run, self._own = wandb.init(**init), True
        else:
            self._own = False
        if not callable(getattr(run, "log", None)):
            raise TypeError(f"WandbLogger: run must be a wandb run (with .log), got {run!r}")
        self.run = run

    def __call__(self, step, logs) -> None:
        """Log ``logs`` (metric -> (M,) values) at ``step``, value i under ``<metric>/<name i>``."""
        step, names, values = _rows("WandbLogger", self.names, step, logs)
        if not values:
            return
        self.names = names
        row = {f"{metric}/{name}": float(a[i]) for metric, a in values.items() for i, name in enumerate(names)}
        self.run.log(row, step=step)

    def close(self) -> None:
        """Finish the run when this logger started it."""
        if self._own and self.run is not None:
            self.run.finish()
            self.run = None

    def __enter__(self) -> "WandbLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
