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

import dataclasses
import functools
import os
import time
import warnings
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from tokdyn import _checks, io
from tokdyn.engine import execute
from tokdyn.train import optim, options
from tokdyn.train.options import BEST_MODES, STRATEGIES, Checkpointing, Evaluation, Execution  # noqa: F401
from tokdyn.train.trainer import TrainState, init_state, make_step, stages_of


# ---------------------------------------------------------------------------------------------- one model


def make_chunk(trainer) -> Callable:
    """``chunk(state, data, run_key) -> (state, logs)``: ``steps_per_call`` steps of ``trainer``
    under ``lax.scan``, each log the mean over them (non-finite steps left out)."""
    step = make_step(trainer)

    def chunk(state, data, run_key):
        state, logs = jax.lax.scan(
            lambda s, _: step(s, data, run_key), state, None, length=trainer.config.steps_per_call
        )
        return state, jax.tree_util.tree_map(jnp.nanmean, logs)

    return chunk


def make_train(trainer) -> Callable:
    """The pure ``train(key, hparams, data) -> (state, curves)`` of one model: every stage of
    ``trainer`` (a :class:`~tokdyn.train.Trainer` or :class:`~tokdyn.train.Curriculum`), each
    a ``lax.scan`` over calls of :func:`make_chunk`. ``curves``: dict name -> (calls,) means over
    each call. Traceable: jit it, vmap it over keys and hyper-parameters."""
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
        return state, jax.tree_util.tree_map(lambda *c: jnp.concatenate(c), *curves)

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


@dataclasses.dataclass(frozen=True)
class Result:
    """What :func:`train_many` returns.

    Attributes:
      state: the stacked :class:`~tokdyn.train.TrainState` (leaves (M, ...)).
      curves: dict name -> (M, calls) float host arrays, each the mean over a call of
        ``steps_per_call`` steps (NaN for calls not made).
      steps: (calls,) int: steps done at the end of each call.
      finished: the budget was spent or ``stop`` ended training (False: a deadline or
        ``max_calls`` returned early; call again to resume).
      stopped_at: steps done when training ended (the budget, or where ``stop`` ended it).
      best_state: with ``keep_best``: the stacked state of each model at its best recorded value
        of the ``keep_best`` column (its initial state while it has none); else None.
      best_step: with ``keep_best``: (M,) int, the step of each model's best value (-1: none yet);
        else None.
      skipped: (M,) int: the steps each model skipped as non-finite (its loss or gradient NaN or
        infinite), over its whole training (a resumed run's earlier calls included); a model whose
        count equals ``stopped_at`` never trained. :func:`train_many` warns when any is above 0.
    """

    state: TrainState
    curves: dict
    steps: np.ndarray
    finished: bool
    stopped_at: int
    best_state: Optional[TrainState] = None
    best_step: Optional[np.ndarray] = None
    skipped: Optional[np.ndarray] = None

    def nan_report(self) -> list[tuple[int, int, int]]:
        """:func:`nan_report` of the state."""
        return nan_report(self.state)


def nan_report(state: TrainState) -> list[tuple[int, int, int]]:
    """``[(model, first non-finite step, steps skipped), ...]`` for every model of a stacked state
    that skipped a step."""
    first = np.atleast_1d(np.asarray(state.nan_step))
    count = np.atleast_1d(np.asarray(state.skipped))
    return [(int(i), int(first[i]), int(count[i])) for i in np.flatnonzero(first >= 0)]


@functools.lru_cache(maxsize=64)
def _per_model(trainer, strategy: str):
    """The per-model function of :func:`tokdyn.engine.execute.sharded_map` (one object per trainer
    and strategy, so its compilation is reused)."""
    one = make_chunk(trainer) if strategy == "scan" else make_step(trainer)

    def fn(data, args):
        state, run_key = args
        return one(state, data, run_key)

    return fn


@functools.lru_cache(maxsize=64)
def _single(trainer):
    step = make_step(trainer)
    return jax.jit(step)


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


def _stacked(trees):
    """Per-model trees (which may live on different devices) stacked on the host."""
    return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


class _Runner:
    """How one stage's calls run under a strategy: ``advance()`` makes one call and returns the logs
    (M,) on the host; ``state()`` the stacked state of the M models (device arrays)."""

    def __init__(self, trainer, strategy, state, run_keys, data, m, devices, batch_size):
        self.m, self.strategy, self.spc = m, strategy, trainer.config.steps_per_call
        if strategy == "loop":
            self.one = _single(trainer)
            self.place = [devices[i % len(devices)] for i in range(m)]
            datas = {d: jax.device_put(data, d) for d in devices}
            self.datas = [datas[d] for d in self.place]
            self.models = [
                jax.device_put(jax.tree_util.tree_map(lambda a: a[i], (state, run_keys)), self.place[i])
                for i in range(m)
            ]
            return
        pad = (-m) % len(devices)
        grow = lambda t: jax.tree_util.tree_map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]), t)
        if pad:
            state, run_keys = grow(state), grow(run_keys)
        self.fn, sharding = execute.sharded_map(_per_model(trainer, strategy), devices, batch_size, True)
        self.data = jax.device_put(data, NamedSharding(sharding.mesh, PartitionSpec()))
        self.models = jax.device_put((state, run_keys), sharding)

    def advance(self) -> dict:
        if self.strategy == "scan":
            st, logs = self.fn(self.data, self.models)
            self.models = (st, self.models[1])
            return {k: np.asarray(v)[: self.m] for k, v in logs.items()}

        def add(acc, logs):  # running sums and counts of the finite logs (on the logs' device)
            ok = jax.tree_util.tree_map(jnp.isfinite, logs)
            clean = jax.tree_util.tree_map(lambda v, f: jnp.where(f, v, 0.0), logs, ok)
            if acc is None:
                return clean, jax.tree_util.tree_map(lambda f: f.astype(jnp.int32), ok)
            return (
                jax.tree_util.tree_map(jnp.add, acc[0], clean),
                jax.tree_util.tree_map(lambda a, f: a + f.astype(jnp.int32), acc[1], ok),
            )

        if self.strategy == "step":
            acc = None
            for _ in range(self.spc):
                st, logs = self.fn(self.data, self.models)
                self.models = (st, self.models[1])
                acc = add(acc, logs)
            sums, counts = (jax.tree_util.tree_map(np.asarray, a) for a in acc)
        else:  # one call per model: each model's sums stay on its device until the call's end
            accs = [None] * self.m
            for _ in range(self.spc):
                out = [self.one(st, self.datas[i], k) for i, (st, k) in enumerate(self.models)]
                self.models = [(st, k) for (st, _), (_, k) in zip(out, self.models)]
                accs = [add(a, lg) for a, (_, lg) in zip(accs, out)]
            sums, counts = _stacked([a[0] for a in accs]), _stacked([a[1] for a in accs])
        with np.errstate(invalid="ignore", divide="ignore"):  # a call with no finite step: NaN
            return {k: (sums[k] / counts[k])[: self.m] for k in sums}  # the mean of the finite steps

    def state(self) -> TrainState:
        if self.strategy == "loop":
            return jax.tree_util.tree_map(jnp.asarray, _stacked([st for st, _ in self.models]))
        return jax.tree_util.tree_map(lambda a: a[: self.m], self.models[0])


@dataclasses.dataclass(frozen=True)
class Best:
    """The best state that :func:`train_many` keeps with ``keep_best`` (host arrays).

    Attributes:
      column: the curve column judged (e.g. ``"val_all"``).
      mode: ``"max"`` (the largest value is best) or ``"min"``.
      state: the stacked state of each model at its best value (its initial state while it has none).
      step: (M,) int64 the step of each model's best value, -1 while it has none.
      value: (M,) float32 that value as recorded in the curves (NaN while none).
    """

    column: str
    mode: str
    state: TrainState
    step: np.ndarray
    value: np.ndarray

    def update(self, state: TrainState, values, step: int) -> "Best":
        """This record after a call that recorded ``values`` (M,) at ``step``: a model whose value is
        finite and strictly better than its best so far (ties keep the earlier step) takes its
        row of ``state`` (copied to the host only when some model improved)."""
        v = np.asarray(values, np.float32)
        better = v > self.value if self.mode == "max" else v < self.value
        better = np.isfinite(v) & (np.isnan(self.value) | better)
        if not better.any():
            return self
        new = jax.tree_util.tree_map(
            lambda b, s: np.where(better.reshape((-1,) + (1,) * (b.ndim - 1)), np.asarray(s), b), self.state, state
        )
        return Best(
            self.column,
            self.mode,
            new,
            np.where(better, step, self.step),
            np.where(better, v, self.value).astype(np.float32),
        )


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


def skipped_counts(state: TrainState) -> np.ndarray:
    """(M,) int: the steps each model of a stacked state skipped as non-finite."""
    return np.atleast_1d(np.asarray(state.skipped)).astype(np.int64)


def _describe_model(i: int, hparams, limit: int = 4) -> str:
    """``model i (learning_rate=0.001, ...)``: the model's index (into ``keys``) and its
    hyper-parameter values."""
    leaves = jax.tree_util.tree_flatten_with_path(hparams)[0]
    values = []
    for path, v in leaves[:limit]:
        name = jax.tree_util.keystr(path).lstrip(".") or "hparams"
        try:
            a = np.asarray(v).reshape(-1)
            values.append(f"{name}={float(a[i] if a.size > i else a[0]):.4g}")
        except (TypeError, ValueError, IndexError):  # a leaf that is no number: named without its value
            values.append(name)
    more = ", ..." if len(leaves) > limit else ""
    return f"model {i}" + (f" ({', '.join(values)}{more})" if values else "")


def warn_skipped(
    skipped: np.ndarray, steps_done: int, hparams=None, *, name: str = "training", stacklevel: int = 2
) -> Optional[str]:
    """Warn (``RuntimeWarning``, whatever the caller's ``quiet``) when any model skipped a non-finite step.

    The message says how many models and steps, which models (index into ``keys``, and their
    ``hparams``), and those that skipped every step (never trained).

    Args:
      skipped: (M,) int, the steps each model skipped.
      steps_done: the optimiser steps each model took (skipped ones included).
      hparams: optional hyper-parameters, every leaf (M,), shown beside each model's index.
      name: what trained, the message's first word.
      stacklevel: as for ``warnings.warn``, counted from the caller.

    Returns:
      The message, or None when no step was skipped.
    """
    skipped = np.atleast_1d(np.asarray(skipped))
    bad = np.flatnonzero(skipped > 0)
    if not bad.size:
        return None
    every = [int(i) for i in bad if steps_done > 0 and skipped[i] >= steps_done]
    shown = [_describe_model(int(i), hparams) if hparams is not None else f"model {int(i)}" for i in bad[:8]]
    msg = (
        f"{name}: {bad.size} of {skipped.size} models skipped non-finite steps ({int(skipped[bad].sum())} steps "
        f"in all, of {steps_done} per model): "
        + "; ".join(f"{s}: {int(skipped[i])} skipped" for s, i in zip(shown, bad[:8]))
        + (f"; and {bad.size - 8} more" if bad.size > 8 else "")
    )
    if every:
        msg += (
            f". {len(every)} skipped every step and did not train at all (models {', '.join(map(str, every[:20]))}"
            f"{', ...' if len(every) > 20 else ''}): its loss or gradient is not finite"
        )
    msg += ". Result.skipped holds the count per model; Result.nan_report() the first such step"
    import warnings

    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel + 1)
    return msg


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
        vectorised_init)``: how the models are laid on the devices. None: ``Execution()``.
      deadline, max_calls: return early, unfinished, once ``time.time() > deadline`` or after
        ``max_calls`` calls (call again to resume).
      on_log: ``on_log(step, logs)`` after every call, with its logs and evaluations (each (M,)).
      progress: a :class:`tokdyn.io.Progress` counting steps; None: a bar of its own unless ``quiet``.
      **deprecated: the deprecated flat keywords (``checkpoint``, ``stamp``, ``evaluate``, ...),
        each mapped onto the option value above that replaces it, with a ``DeprecationWarning``.

    Returns the :class:`Result`. A ``RuntimeWarning`` (:func:`warn_skipped`) names the models that
    skipped non-finite steps. Every value is checked before any compile."""
    opts, messages = options.from_legacy(
        deprecated, {"checkpointing": checkpointing, "evaluation": evaluation, "execution": execution}
    )
    for message in messages:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
    ckpt = options.check("checkpointing", opts["checkpointing"], Checkpointing)
    ev = options.check("evaluation", opts["evaluation"], Evaluation)
    ex = options.check("execution", opts["execution"], Execution)
    if on_log is not None and not callable(on_log):
        raise TypeError(f"on_log must be a callable on_log(step, logs) or None, got {on_log!r}")
    checkpoint, stamp = (ckpt.path, ckpt.stamp) if ckpt is not None else (None, "")
    evaluate, evaluate_every, keep_best, best_mode, stop = ev.fn, ev.every, ev.keep_best, ev.best_mode, ev.stop
    strategy, batch_size = ex.strategy, ex.batch_size
    stages, cfg, m, devices = _check(trainer, keys, hparams, ex.devices, max_calls, deadline)
    first = stages[0][1]
    hp = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams)
    state, run_keys = init_states(trainer, keys, hp, vectorised=ex.vectorised_init and strategy != "loop")
    steps = (np.arange(cfg.calls) + 1) * cfg.steps_per_call
    curves, stopped, done = {}, False, 0  # curves: allocated at the first call (or read from the checkpoint)
    best = None
    if keep_best is not None:
        best = Best(
            keep_best,
            best_mode,
            jax.tree_util.tree_map(np.asarray, state),
            np.full(m, -1, np.int64),
            np.full(m, np.nan, np.float32),
        )
    if checkpoint is not None and os.path.exists(checkpoint):
        state, curves, stopped, saved = _read_checkpoint(checkpoint, state, stamp)
        _same_best(checkpoint, saved, keep_best, best_mode)
        best = saved if saved is not None else best
        done = int(np.asarray(state.step)[0])
        if done and any(v.shape != (m, cfg.calls) for v in curves.values()):
            raise ValueError(
                f"{checkpoint} holds curves of another training (shapes "
                f"{sorted({v.shape for v in curves.values()})}, expected ({m}, {cfg.calls})): use another "
                "checkpoint"
            )

    def result(st, finished):
        skipped = skipped_counts(st)
        warn_skipped(skipped, done, hparams, name=f"train_many ({first.name})", stacklevel=3)
        if best is None:
            return Result(st, curves, steps, finished, done, skipped=skipped)
        return Result(
            st,
            curves,
            steps,
            finished,
            done,
            jax.tree_util.tree_map(jnp.asarray, best.state),
            best.step.copy(),
            skipped,
        )

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
            runner = _Runner(tr, strategy, state, run_keys, data, m, devices, batch_size)
            while done < stage_end:
                if (deadline is not None and time.time() > deadline) or (max_calls is not None and calls >= max_calls):
                    return result(runner.state(), False)
                logs = runner.advance()
                calls += 1
                done += cfg.steps_per_call
                col = done // cfg.steps_per_call - 1
                state = runner.state()
                if evaluate is not None and (col == 0 or (col + 1) % evaluate_every == 0 or done == cfg.steps):
                    logs = {**logs, **_evaluated(evaluate, done, state, m, logs)}
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
                stopping = bool(stop(done, state, _read_only(curves))) if stop is not None else False
                if checkpoint is not None:
                    save_checkpoint(checkpoint, state, curves, stamp, stopped=stopping, best=best)
                if progress is not None:
                    for i, t, _ in nan_report(state):
                        if i not in reported:
                            reported.add(i)
                            progress.note(f"{first.name}: model {i} skipped a non-finite step first at step {t}")
                    finite = np.isfinite(logs["loss"])
                    progress.update(
                        cfg.steps_per_call, loss=float(np.mean(logs["loss"][finite])) if finite.any() else float("nan")
                    )
                if stopping:
                    if progress is not None:
                        progress.update(cfg.steps - done)  # the budget not needed
                    return result(state, True)
    finally:
        if own:
            progress.close()
    return result(state, True)


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str, state: TrainState, curves: dict, stamp: str, *, stopped: bool = False, best: Optional[Best] = None
) -> str:
    """Write the state, the curves and the kept :class:`Best` of :func:`train_many` to one file, atomically.

    Args:
      path: the ``.npz`` file to write.
      state: the stacked :class:`TrainState` (leading (M,) axis).
      curves: column name -> (M, C) float32 curve over the C = ``steps / steps_per_call`` calls
        (NaN: not recorded yet).
      stamp: a string identifying the run's settings; :func:`checkpoint_stamp` reads it back.
      stopped: whether the stop rule ended the run (it is not resumed then).
      best: optional :class:`Best` (the best state of each model kept by ``keep_best``).

    Returns:
      ``path``.
    """
    tree = {"state": state, "curves": curves}
    meta = {}
    if best is not None:
        tree["best"] = {"state": best.state, "step": best.step, "value": best.value}
        meta = {"best_column": best.column, "best_mode": best.mode}
    host = jax.tree_util.tree_map(np.asarray, tree)
    return io.save_pytree(path, host, step=int(np.asarray(state.step)[0]), stamp=stamp, stopped=stopped, **meta)


def checkpoint_stamp(path: str) -> Optional[str]:
    """The stamp :func:`save_checkpoint` wrote into ``path`` (None for a file without one)."""
    z = io.load_npz(path)
    return str(z["meta_stamp"]) if "meta_stamp" in z else None


def _read_checkpoint(path: str, like: TrainState, stamp: Optional[str]):
    """``(state, curves, stopped, best or None)`` from :func:`save_checkpoint`'s file."""
    z = io.load_npz(path)
    prefix = io.LEAF_PREFIX + "['curves']"
    names = [k[len(prefix) :] for k in z if k.startswith(prefix)]
    curves = {n[2:-2]: z[prefix + n] for n in names}  # "['loss']" -> "loss"
    has_best = any(k.startswith(io.LEAF_PREFIX + "['best']") for k in z)
    want = {"state": like, "curves": curves}
    if has_best:
        m = np.shape(like.step)[0]
        want["best"] = {"state": like, "step": np.zeros(m, np.int64), "value": np.zeros(m, np.float32)}
    tree, meta = io.load_pytree(path, want)
    if stamp is not None and str(meta.get("stamp", "")) != stamp:
        raise ValueError(
            f"{path} was written for another configuration (stamp {str(meta.get('stamp', ''))!r}, asked "
            f"for {stamp!r}): use another checkpoint path, or remove it to start afresh"
        )
    paths = jax.tree_util.tree_flatten_with_path(like.hparams)[0]
    for (p, want_hp), got in zip(paths, jax.tree_util.tree_leaves(tree["state"].hparams)):
        if not np.array_equal(np.asarray(want_hp), np.asarray(got)):
            raise ValueError(
                f"{path} holds models with other hyper-parameters ({jax.tree_util.keystr(p)} "
                f"{np.asarray(got)} instead of {np.asarray(want_hp)}): use another checkpoint"
            )
    state = jax.tree_util.tree_map(jnp.asarray, tree["state"])
    best = None
    if has_best:
        b = tree["best"]
        best = Best(
            str(meta.get("best_column", "")),
            str(meta.get("best_mode", "max")),
            jax.tree_util.tree_map(np.asarray, b["state"]),
            np.asarray(b["step"], np.int64),
            np.asarray(b["value"], np.float32),
        )
    return state, {k: np.asarray(v) for k, v in tree["curves"].items()}, bool(meta.get("stopped", False)), best


def _same_best(path, saved: Optional[Best], keep_best, best_mode):
    if saved is None and keep_best is None:
        return
    if saved is None:
        raise ValueError(
            f"{path} was written without keep_best, asked keep_best={keep_best!r}: its best state is "
            "lost; use another checkpoint path, or keep_best=None"
        )
    if (saved.column, saved.mode) != (keep_best, best_mode):
        raise ValueError(
            f"{path} keeps the best state of {saved.column!r} (best_mode={saved.mode!r}), asked "
            f"keep_best={keep_best!r}, best_mode={best_mode!r}: pass the same, or use another checkpoint"
        )


def load_checkpoint(path: str, like: TrainState, stamp: Optional[str] = None):
    """``(state, curves, stopped)`` from :func:`save_checkpoint`'s file; ``like``: the initial state
    of the same models (e.g. :func:`init_states`; its tree, shapes and hyper-parameters must
    match). ValueError naming what differs for a checkpoint of another tree, hyper-parameters or
    (when ``stamp`` is given) another stamp. :func:`load_best` reads the kept best state."""
    return _read_checkpoint(path, like, stamp)[:3]


def load_best(path: str, like: TrainState, stamp: Optional[str] = None) -> Best:
    """The :class:`Best` that :func:`train_many` kept (``keep_best``) in ``path`` (``like`` and
    ``stamp`` as for :func:`load_checkpoint`); ValueError for a checkpoint without one."""
    best = _read_checkpoint(path, like, stamp)[3]
    if best is None:
        raise ValueError(f"{path} holds no best state: it was trained without keep_best")
    return best
