"""The one training loop: seeds x hyper-parameter settings, vmapped and sharded, in chunks of
steps, checkpointed and resumable.

- :func:`make_train` gives the pure ``train(key, hparams, data) -> (TrainState, curves)`` of one
  model (nested ``lax.scan``: calls of ``steps_per_call`` steps): jit it, vmap it over keys and
  settings, put it in your own program.
- :func:`train_many` trains M models (``keys`` (M,), every ``hparams`` leaf (M,); :func:`grid`
  builds seeds x settings) from a Python loop over calls that only evaluates, checkpoints, logs,
  stops and shows progress; the ``strategy`` of its :class:`~tokdyn.train.options.Execution`
  (``"scan"``, ``"step"``, ``"loop"``) says how a call runs. The curves are (M, calls) columns;
  state, curves and the kept best state are checkpointed together after every call, and a rerun
  resumes bit-identically on the same execution. A non-finite step is skipped for that model only.

Model ``i`` of :func:`train_many` equals ``make_train(trainer)(keys[i], hparams[i], data)`` up to
the rounding of differently vectorised programs. The strategies, the curves and the checkpoints
in detail: :ref:`train-strategies`.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, io
from tokdyn.train import optim, options
from tokdyn.train.checkpoints import (  # noqa: F401
    check_same_best,
    checkpoint_format,
    checkpoint_stamp,
    load_best,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from tokdyn.train.options import BEST_MODES, STRATEGIES, Checkpointing, Evaluation, Execution  # noqa: F401
from tokdyn.train.results import Best, Result, nan_report, skipped_counts, warn_skipped  # noqa: F401
from tokdyn.train.strategies import Runner, make_chunk
from tokdyn.train.trainer import TrainState, init_state, stages_of


# ---------------------------------------------------------------------------------------------- one model


def make_train(trainer) -> Callable:
    """The pure ``train(key, hparams, data) -> (state, curves)`` of one model: every stage of
    ``trainer`` (a :class:`~tokdyn.train.Trainer` or :class:`~tokdyn.train.Curriculum`), each
    a ``lax.scan`` over calls of :func:`make_chunk`. ``curves``: dict name -> (calls,) means over
    each call; a column a stage does not log is NaN over its calls. Traceable: jit it, vmap it
    over keys and hyper-parameters."""
    stages = stages_of(trainer)
    first = stages[0][1]

    def train(key, hparams, data):
        state = init_state(trainer, key, hparams)
        run_key = first.keys(key)[1]
        curves = []
        for n, tr in stages:
            chunk = make_chunk(tr)
            state, logs = jax.lax.scan(
                lambda s, _: chunk(s, data, run_key), state, None, length=n // tr.config.steps_per_call
            )
            curves.append(logs)
        names = sorted({k for logs in curves for k in logs})
        return state, {
            k: jnp.concatenate([c[k] if k in c else jnp.full(len(next(iter(c.values()))), jnp.nan) for c in curves])
            for k in names
        }

    return train


# ---------------------------------------------------------------------------------------------- many models


def settings(hparams) -> int:
    """The number of settings H in ``hparams``: 1 when every leaf is a scalar, else the common
    length of its (H,) leaves (scalars are shared by every setting). ValueError for other shapes."""
    shapes = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(hparams)[0]}
    lengths = {s[0] for s in shapes.values() if s != ()}
    if any(len(s) > 1 for s in shapes.values()) or len(lengths) > 1:
        raise ValueError(
            f"every hparams leaf must be a scalar or an (H,) array of one common length H, got shapes {shapes}"
        )
    return lengths.pop() if lengths else 1


def broadcast(hparams, n: int):
    """Every leaf of ``hparams`` as a float32 (n,) array (scalars repeated)."""
    return jax.tree_util.tree_map(lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,)), hparams)


def grid(seed_keys, hparams):
    """``(keys, hparams)`` of every seed x setting: ``seed_keys`` (S,) and ``hparams`` with scalar or
    (H,) leaves (:func:`settings`) give M = H x S models, model ``h * S + s`` setting h with seed s
    (settings share their seeds' initial parameters and batches)."""
    s, h = len(seed_keys), settings(hparams)
    keys = jnp.tile(seed_keys, h)  # (H*S,)
    return keys, jax.tree_util.tree_map(lambda v: jnp.repeat(v, s), broadcast(hparams, h))


@functools.lru_cache(maxsize=32)
def _init_fn(trainer, vectorised: bool):
    fn = lambda k, hp: (init_state(trainer, k, hp), stages_of(trainer)[0][1].keys(k)[1])
    return jax.jit(jax.vmap(fn) if vectorised else fn)


def init_states(trainer, keys, hparams, *, vectorised: bool = True):
    """``(state, run_keys)`` of every model of :func:`train_many`, stacked.

    Args:
      trainer: the :class:`~tokdyn.train.Trainer` (or staged trainer) of :func:`train_many`.
      keys: (M,) PRNG keys, one per model.
      hparams: the models' hyper-parameters, every leaf of shape (M,).
      vectorised: True: one vmapped initialisation; False: each model by its own call (XLA:CPU
        can take very long to compile a vmapped initialisation of a large convolutional model).

    Returns:
      ``(state, run_keys)``: a :class:`TrainState` with a leading (M,) axis on every leaf, and the
      (M,) keys the models train with.
    """
    if vectorised:
        return _init_fn(trainer, True)(keys, hparams)
    out = [_init_fn(trainer, False)(keys[i], jax.tree_util.tree_map(lambda v: v[i], hparams)) for i in range(len(keys))]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *out)


def _check(trainer, keys, hparams, devices, max_calls, deadline):
    stages = stages_of(trainer)
    cfg = stages[0][1].config
    if not isinstance(cfg, optim.Config):
        raise TypeError(f"trainer.config must be a tokdyn.train.optim.Config, got {type(cfg).__name__}")
    cfg.validate()
    _checks.prng_key("keys", keys)
    if jnp.ndim(keys) != 1 or len(keys) < 1:
        raise ValueError(f"keys must be a (M,) array of PRNG keys with M >= 1, got shape {jnp.shape(keys)}")
    m = len(keys)
    for path, v in jax.tree_util.tree_flatten_with_path(hparams)[0]:
        if np.shape(v) != (m,):
            raise ValueError(
                f"hparams leaf {jax.tree_util.keystr(path)} must have shape ({m},), one value per key, "
                f"got {np.shape(v)} (tokdyn.train.grid builds seeds x settings)"
            )
        if _checks.on_host(v) and not np.all(np.isfinite(np.asarray(v, np.float64))):
            raise ValueError(f"hparams leaf {jax.tree_util.keystr(path)} must be finite, got {np.asarray(v)}")
    if max_calls is not None:
        _checks.positive_int("max_calls", max_calls, minimum=0)
    if deadline is not None:
        _checks.real("deadline", deadline)
    devices = tuple(jax.local_devices() if devices is None else devices)
    return stages, cfg, m, devices[:m]  # no device holds only padding


def _check_data(trainer, data, keys) -> None:
    """Each stage's ``batch`` traced on ``data`` with abstract keys and step (``jax.eval_shape``:
    nothing is compiled or run), so that data a batch function refuses (a pool of the wrong shape)
    is named before any model is initialised or any program compiled."""
    key = jax.ShapeDtypeStruct(jnp.shape(keys)[1:], keys.dtype)
    step = jax.ShapeDtypeStruct((), jnp.int32)
    for _, tr in stages_of(trainer):
        jax.eval_shape(tr.batch, key, data, step)


def _evaluated(evaluate, step, state, m, logs) -> dict:
    """``evaluate(step, state)`` as host float arrays (M,), checked."""
    out = evaluate(step, state)
    if not isinstance(out, Mapping):
        raise TypeError(f"evaluation.fn must return a mapping name -> (M,) array, got {type(out).__name__}")
    vals = {}
    for k, v in out.items():
        if not isinstance(k, str):
            raise TypeError(f"evaluation.fn returned a key {k!r}: the names of curve columns must be str")
        if k in logs:
            raise ValueError(
                f"evaluation.fn returned {k!r}, which is already a training log (the logs are "
                f"{sorted(logs)}): name it otherwise, e.g. 'val_{k}'"
            )
        a = np.asarray(v)
        if a.shape != (m,) or a.dtype.kind not in "biuf":
            raise ValueError(
                f"evaluation.fn returned {k!r} of shape {a.shape} and dtype {a.dtype}: each value must "
                f"be a real (M,) = ({m},) array, one per model"
            )
        vals[k] = a
    return vals


def _read_only(curves: dict) -> dict:
    views = {}
    for k, v in curves.items():
        views[k] = v.view()
        views[k].flags.writeable = False
    return views


def train_many(
    trainer,
    data,
    keys,
    hparams,
    *,
    checkpointing: Optional[Checkpointing] = None,
    evaluation: Optional[Evaluation] = None,
    execution: Optional[Execution] = None,
    deadline: Optional[float] = None,
    max_calls: Optional[int] = None,
    on_log: Optional[Callable] = None,
    progress: Optional[io.Progress] = None,
    quiet: bool = True,
    **deprecated,
) -> Result:
    """Train M models of ``trainer`` (a :class:`~tokdyn.train.Trainer` or
    :class:`~tokdyn.train.Curriculum`) on the shared ``data``: model i from ``keys[i]`` with the
    hyper-parameters ``hparams[i]`` (every leaf (M,)). After every call: the logs go into the
    curves, then evaluation, ``on_log``, the best state, the stop rule, the checkpoint and
    ``progress`` (in this order; see :doc:`/concepts/runs-and-sweeps`).

    Args:
      checkpointing: a :class:`~tokdyn.train.options.Checkpointing` ``(path, stamp)``: save after
        every call, resume from an existing file of the same stamp. None: nothing saved.
      evaluation: an :class:`~tokdyn.train.options.Evaluation` ``(fn, every, keep_best,
        best_mode, stop)``: scores recorded as curve columns, the best state kept per model, the
        stop rule. None: the training logs only, the whole budget.
      execution: an :class:`~tokdyn.train.options.Execution` ``(strategy, devices, batch_size,
        vectorised_init, memory_limit)``: how the models are laid on the devices and how many a
        device vmaps at once (by default sized from its memory). None: ``Execution()``.
      deadline, max_calls: return early, unfinished, once ``time.time() > deadline`` or after
        ``max_calls`` calls (call again to resume).
      on_log: ``on_log(step, logs)`` after every call, with its logs and evaluations (each (M,)).
      progress: a :class:`tokdyn.io.Progress` counting steps; None: a bar of its own unless ``quiet``.
      **deprecated: the deprecated flat keywords (``checkpoint``, ``stamp``, ``evaluate``, ...),
        each mapped onto the option value above that replaces it, with a ``DeprecationWarning``.

    Returns the :class:`Result`. A ``RuntimeWarning`` (:func:`warn_skipped`) names the models that
    skipped non-finite steps. Every value is checked before any compile, the data too: each stage's
    ``batch`` is traced on it first (``jax.eval_shape``), so that data a batch function refuses is
    named before any model is initialised."""
    ckpt, ev, ex = _options(deprecated, checkpointing, evaluation, execution, on_log)
    checkpoint, stamp = (ckpt.path, ckpt.stamp) if ckpt is not None else (None, "")
    stages, cfg, m, devices = _check(trainer, keys, hparams, ex.devices, max_calls, deadline)
    _check_data(trainer, data, keys)
    first = stages[0][1]
    hp = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams)
    state, run_keys = init_states(trainer, keys, hp, vectorised=ex.vectorised_init and ex.strategy != "loop")
    steps = (np.arange(cfg.calls) + 1) * cfg.steps_per_call
    curves, stopped, done, group, memory = (
        {},
        False,
        0,
        None,
        None,
    )  # curves: allocated at the first call (or read from the checkpoint)
    best = _initial_best(ev, state, m)
    if checkpoint is not None and _held(ckpt):
        state, curves, stopped, best, done = _resume(ckpt, ev, state, best, m, cfg)

    def result(st, finished):  # curves, done and best as they are when it is called
        return _result(st, finished, curves, steps, done, best, hparams, first.name, group, memory)

    if stopped or done >= cfg.steps:
        return result(state, True)
    own = progress is None and not quiet
    if own:
        progress = io.Progress(cfg.steps, desc=first.name, unit="steps", done=done)
    reported = {i for i, *_ in nan_report(state)}
    calls, stage_end = 0, 0
    try:
        for n, tr in stages:
            stage_end += n
            if done >= stage_end:
                continue
            runner = Runner(tr, ex.strategy, state, run_keys, data, m, devices, ex.batch_size, ex.memory_limit)
            group, memory = runner.group, runner.memory
            while done < stage_end:
                if (deadline is not None and time.time() > deadline) or (max_calls is not None and calls >= max_calls):
                    return result(runner.state(), False)
                logs = runner.advance()
                calls += 1
                done += cfg.steps_per_call
                state = runner.state()
                logs, best, stopping = _record_call(done, state, logs, curves, best, ev, on_log, ckpt, m, cfg)
                if progress is not None:
                    _show_call(progress, state, logs, reported, first.name, cfg.steps_per_call)
                if stopping:
                    if progress is not None:
                        progress.update(cfg.steps - done)  # the budget not needed
                    return result(state, True)
    finally:
        if own:
            progress.close()
    return result(state, True)


def _result(st, finished, curves, steps, done, best, hparams, name, group=None, memory=None) -> Result:
    """The :class:`Result` of :func:`train_many`, after a warning naming the models that skipped
    non-finite steps (:func:`warn_skipped`)."""
    skipped = skipped_counts(st)
    warn_skipped(skipped, done, hparams, name=f"train_many ({name})", stacklevel=4)
    if best is None:
        return Result(st, curves, steps, finished, done, skipped=skipped, group=group, memory=memory)
    best_state = jax.tree_util.tree_map(jnp.asarray, best.state)
    return Result(st, curves, steps, finished, done, best_state, best.step.copy(), skipped, group, memory)


def _options(deprecated: dict, checkpointing, evaluation, execution, on_log):
    """:func:`train_many`'s option values, checked (the deprecated flat keywords mapped onto them,
    each with a ``DeprecationWarning``): ``(checkpointing or None, evaluation, execution)``."""
    opts, messages = options.from_legacy(
        deprecated, {"checkpointing": checkpointing, "evaluation": evaluation, "execution": execution}
    )
    for message in messages:
        warnings.warn(message, DeprecationWarning, stacklevel=3)
    ckpt = options.check("checkpointing", opts["checkpointing"], Checkpointing)
    ev = options.check("evaluation", opts["evaluation"], Evaluation)
    ex = options.check("execution", opts["execution"], Execution)
    if on_log is not None and not callable(on_log):
        raise TypeError(f"on_log must be a callable on_log(step, logs) or None, got {on_log!r}")
    return ckpt, ev, ex


def _initial_best(ev: Evaluation, state: TrainState, m: int) -> Optional[Best]:
    """The :class:`Best` of a training that keeps one (``ev.keep_best``) before any call, else None."""
    if ev.keep_best is None:
        return None
    return Best(
        ev.keep_best,
        ev.best_mode,
        jax.tree_util.tree_map(np.asarray, state),
        np.full(m, -1, np.int64),
        np.full(m, np.nan, np.float32),
    )


def _held(ckpt: Checkpointing) -> bool:
    """Whether ``ckpt.path`` holds something to resume from. A directory for an orbax checkpoint
    that holds no record yet (a first save cut short) is not; one that holds what no tokdyn
    checkpoint writes is refused here, before any work (:class:`~tokdyn.io.OutputConflict`)."""
    if ckpt.format == "orbax" and os.path.isdir(ckpt.path) and not io.is_orbax(ckpt.path):
        io.orbax_trees.check_target(ckpt.path)
        return False
    return os.path.exists(ckpt.path)


def _resume(ckpt: Checkpointing, ev: Evaluation, state: TrainState, best, m: int, cfg):
    """``(state, curves, stopped, best, done)`` read back from an existing checkpoint, checked."""
    checkpoint = ckpt.path
    held = checkpoint_format(checkpoint)
    if held != ckpt.format:
        raise ValueError(
            f"{checkpoint} holds a checkpoint in the {held} format, checkpointing.format={ckpt.format!r} asked: "
            f"pass format={held!r} to resume it, or use another path (load_checkpoint reads either format)"
        )
    state, curves, stopped, saved = read_checkpoint(checkpoint, state, ckpt.stamp)
    check_same_best(checkpoint, saved, ev.keep_best, ev.best_mode)
    best = saved if saved is not None else best
    done = int(np.asarray(state.step)[0])
    if done and any(v.shape != (m, cfg.calls) for v in curves.values()):
        raise ValueError(
            f"{checkpoint} holds curves of another training (shapes "
            f"{sorted({v.shape for v in curves.values()})}, expected ({m}, {cfg.calls})): use another "
            "checkpoint"
        )
    return state, curves, stopped, best, done


def _record_call(done, state, logs, curves, best, ev, on_log, ckpt, m, cfg):
    """After a call that ended at step ``done``: the evaluation, the curves (filled in place),
    ``on_log``, the best state, the stop rule and the checkpoint, in this order. Returns ``(logs
    with the evaluations, best, whether the stop rule ended training)``."""
    col = done // cfg.steps_per_call - 1
    if ev.fn is not None and (col == 0 or (col + 1) % ev.every == 0 or done == cfg.steps):
        logs = {**logs, **_evaluated(ev.fn, done, state, m, logs)}
    for k, v in logs.items():
        column = curves.setdefault(k, np.full((m, cfg.calls), np.nan, np.float32))
        column[:, col] = v
    if on_log is not None:
        on_log(done, logs)
    if best is not None:
        if best.column not in curves:
            raise ValueError(
                f"evaluation.keep_best={best.column!r} is not a curve column; the columns are "
                f"{sorted(curves)} (the training logs and what evaluation.fn returns)"
            )
        best = best.update(state, curves[best.column][:, col], done)
    stopping = bool(ev.stop(done, state, _read_only(curves))) if ev.stop is not None else False
    if ckpt is not None:
        save_checkpoint(ckpt.path, state, curves, ckpt.stamp, stopped=stopping, best=best, format=ckpt.format)
    return logs, best, stopping


def _show_call(progress: io.Progress, state: TrainState, logs: dict, reported: set, name: str, spc: int) -> None:
    """A call's steps and mean finite loss on ``progress``, with a note for each model that skipped
    a non-finite step for the first time (``reported``: those noted before, updated in place)."""
    for i, t, _ in nan_report(state):
        if i not in reported:
            reported.add(i)
            progress.note(f"{name}: model {i} skipped a non-finite step first at step {t}")
    finite = np.isfinite(logs["loss"])
    progress.update(spc, loss=float(np.mean(logs["loss"][finite])) if finite.any() else float("nan"))
