"""The one training loop: seeds x hyper-parameter settings, vmapped and sharded, in chunks of
steps, checkpointed and resumable.

- :func:`make_train` gives the pure ``train(key, hparams, data) -> (TrainState, curves)`` of one
  model (nested ``lax.scan``: calls of ``steps_per_call`` steps): jit it, vmap it over keys and
  settings, put it in your own program.
- :func:`train_many` trains M models (``keys`` (M,), every ``hparams`` leaf (M,); :func:`grid`
  builds seeds x settings) from a Python loop over calls that only checkpoints, logs, stops and
  shows progress. How a call runs is a ``strategy``:

  ``"scan"``  one compiled call per chunk of ``steps_per_call`` steps (``lax.scan``), the models
              vmapped (``batch_size``: vmapped groups mapped one after another) and split over
              ``devices`` with ``shard_map``;
  ``"step"``  the same, one compiled call per step (XLA:CPU runs some kernels, e.g. a
              convolution's weight gradient, far slower inside a loop than outside one);
  ``"loop"``  one compiled call per model and step, model i on ``devices[i % len(devices)]`` (the
              devices work in parallel through asynchronous dispatch).

  After every call the state and the curves so far are saved together to ``checkpoint``
  (atomically; leaves named by tree path, with the caller's ``stamp``): a rerun resumes from it
  and ends bit-identical to an uninterrupted run with the same devices, strategy and batch size
  (those change XLA's kernels and so the last bits). ``stop(step, state, logs)`` ends training
  early (recorded, so a resumed run does not train on); ``deadline`` and ``max_calls`` return
  early, unfinished. A model whose step is not finite skips that step (counted per model, the
  first such step recorded); the other models are untouched.

Model ``i`` of :func:`train_many` equals ``make_train(trainer)(keys[i], hparams[i], data)`` up to
the rounding of differently vectorised programs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from tokdyn import _checks, io
from tokdyn.engine import execute
from tokdyn.train import optim
from tokdyn.train.trainer import TrainState, init_state, make_step, stages_of

STRATEGIES = ("scan", "step", "loop")


# ---------------------------------------------------------------------------------------------- one model


def make_chunk(trainer) -> Callable:
    """``chunk(state, data, run_key) -> (state, logs)``: ``steps_per_call`` steps of ``trainer``
    under ``lax.scan``, each log the mean over them (non-finite steps left out)."""
    step = make_step(trainer)

    def chunk(state, data, run_key):
        state, logs = jax.lax.scan(lambda s, _: step(s, data, run_key), state, None,
                                   length=trainer.config.steps_per_call)
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
            state, logs = jax.lax.scan(lambda s, _: chunk(s, data, run_key), state, None,
                                       length=n // tr.config.steps_per_call)
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
        raise ValueError(f"every hparams leaf must be a scalar or an (H,) array of one common length H, got shapes "
                         f"{shapes}")
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
    """

    state: TrainState
    curves: dict
    steps: np.ndarray
    finished: bool
    stopped_at: int

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
    """``(state, run_keys)`` of every model of :func:`train_many`, stacked. ``vectorised=False``
    initialises each model by its own call (XLA:CPU can take very long to compile a vmapped
    initialisation of a large convolutional model)."""
    if vectorised:
        return _init_fn(trainer, True)(keys, hparams)
    out = [_init_fn(trainer, False)(keys[i], jax.tree_util.tree_map(lambda v: v[i], hparams))
           for i in range(len(keys))]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *out)


def _check(trainer, keys, hparams, strategy, devices, batch_size, max_calls, deadline):
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
            raise ValueError(f"hparams leaf {jax.tree_util.keystr(path)} must have shape ({m},), one value per key, "
                             f"got {np.shape(v)} (tokdyn.train.grid builds seeds x settings)")
        if _checks.on_host(v) and not np.all(np.isfinite(np.asarray(v, np.float64))):
            raise ValueError(f"hparams leaf {jax.tree_util.keystr(path)} must be finite, got {np.asarray(v)}")
    _checks.choice("strategy", strategy, STRATEGIES)
    if batch_size is not None:
        _checks.positive_int("batch_size", batch_size)
    if max_calls is not None:
        _checks.positive_int("max_calls", max_calls, minimum=0)
    if deadline is not None:
        _checks.real("deadline", deadline)
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, got an empty sequence")
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
            self.models = [jax.device_put(jax.tree_util.tree_map(lambda a: a[i], (state, run_keys)), self.place[i])
                           for i in range(m)]
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
            return {k: np.asarray(v)[:self.m] for k, v in logs.items()}

        def add(acc, logs):  # running sums and counts of the finite logs (on the logs' device)
            ok = jax.tree_util.tree_map(jnp.isfinite, logs)
            clean = jax.tree_util.tree_map(lambda v, f: jnp.where(f, v, 0.0), logs, ok)
            if acc is None:
                return clean, jax.tree_util.tree_map(lambda f: f.astype(jnp.int32), ok)
            return (jax.tree_util.tree_map(jnp.add, acc[0], clean),
                    jax.tree_util.tree_map(lambda a, f: a + f.astype(jnp.int32), acc[1], ok))

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
            return {k: (sums[k] / counts[k])[:self.m] for k in sums}  # the mean of the finite steps

    def state(self) -> TrainState:
        if self.strategy == "loop":
            return jax.tree_util.tree_map(jnp.asarray, _stacked([st for st, _ in self.models]))
        return jax.tree_util.tree_map(lambda a: a[:self.m], self.models[0])


def train_many(trainer, data, keys, hparams, *, checkpoint: Optional[str] = None, stamp: str = "",
               strategy: str = "scan", devices=None, batch_size: Optional[int] = None,
               deadline: Optional[float] = None, max_calls: Optional[int] = None,
               stop: Optional[Callable] = None, on_log: Optional[Callable] = None,
               progress: Optional[io.Progress] = None, quiet: bool = True, vectorised_init: bool = True) -> Result:
    """Train M models of ``trainer`` (a :class:`~tokdyn.train.Trainer` or
    :class:`~tokdyn.train.Curriculum`) on the shared ``data``: model i from ``keys[i]`` with the
    hyper-parameters ``hparams[i]`` (every leaf (M,)). See the module docstring for ``strategy``,
    ``devices`` (default: the local devices, at most M) and ``batch_size`` (models vmapped at once
    per device; None: all).

    After every call: ``on_log(step, logs)`` (each log (M,), the mean over the call), then
    ``stop(step, state, logs) -> bool`` (the stacked state on the device; True ends training; it
    must decide from what is recorded, so that a resumed run decides the same), then the
    checkpoint (state and curves together, atomically, with ``stamp``: a checkpoint of another
    stamp, tree or hyper-parameters is refused with a ValueError naming what differs), then
    ``progress`` (a :class:`tokdyn.io.Progress` counting steps; without one a bar of its own
    unless ``quiet``), which also notes every model that skipped a non-finite step. Returns early,
    unfinished, once ``time.time() > deadline`` or after ``max_calls`` calls."""
    stages, cfg, m, devices = _check(trainer, keys, hparams, strategy, devices, batch_size, max_calls, deadline)
    first = stages[0][1]
    hp = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams)
    state, run_keys = init_states(trainer, keys, hp, vectorised=vectorised_init and strategy != "loop")
    steps = (np.arange(cfg.calls) + 1) * cfg.steps_per_call
    curves, stopped, done = {}, False, 0  # curves: allocated at the first call (or read from the checkpoint)
    if checkpoint is not None and os.path.exists(checkpoint):
        state, curves, stopped = load_checkpoint(checkpoint, state, stamp)
        done = int(np.asarray(state.step)[0])
        if done and any(v.shape != (m, cfg.calls) for v in curves.values()):
            raise ValueError(f"{checkpoint} holds curves of another training (shapes "
                             f"{sorted({v.shape for v in curves.values()})}, expected ({m}, {cfg.calls})): use another "
                             "checkpoint")
    if stopped or done >= cfg.steps:
        return Result(state, curves, steps, True, done)
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
                    return Result(runner.state(), curves, steps, False, done)
                logs = runner.advance()
                calls += 1
                done += cfg.steps_per_call
                for k, v in logs.items():
                    column = curves.setdefault(k, np.full((m, cfg.calls), np.nan, np.float32))
                    column[:, done // cfg.steps_per_call - 1] = v
                if on_log is not None:
                    on_log(done, logs)
                state = runner.state()
                stopping = bool(stop(done, state, logs)) if stop is not None else False
                if checkpoint is not None:
                    save_checkpoint(checkpoint, state, curves, stamp, stopped=stopping)
                if progress is not None:
                    for i, t, _ in nan_report(state):
                        if i not in reported:
                            reported.add(i)
                            progress.note(f"{first.name}: model {i} skipped a non-finite step first at step {t}")
                    finite = np.isfinite(logs["loss"])
                    progress.update(cfg.steps_per_call,
                                    loss=float(np.mean(logs["loss"][finite])) if finite.any() else float("nan"))
                if stopping:
                    if progress is not None:
                        progress.update(cfg.steps - done)  # the budget not needed
                    return Result(state, curves, steps, True, done)
    finally:
        if own:
            progress.close()
    return Result(state, curves, steps, True, done)


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str, state: TrainState, curves: dict, stamp: str, *, stopped: bool = False) -> str:
    """The state and the curves of :func:`train_many` in one file, atomically, with ``stamp``."""
    host = jax.tree_util.tree_map(np.asarray, {"state": state, "curves": curves})
    return io.save_pytree(path, host, step=int(np.asarray(state.step)[0]), stamp=stamp, stopped=stopped)


def checkpoint_stamp(path: str) -> Optional[str]:
    """The stamp :func:`save_checkpoint` wrote into ``path`` (None for a file without one)."""
    z = io.load_npz(path)
    return str(z["meta_stamp"]) if "meta_stamp" in z else None


def load_checkpoint(path: str, like: TrainState, stamp: Optional[str] = None):
    """``(state, curves, stopped)`` from :func:`save_checkpoint`'s file; ``like``: the initial state
    of the same models (e.g. :func:`init_states`; its tree, shapes and hyper-parameters must
    match). ValueError naming what differs for a checkpoint of another tree, hyper-parameters or
    (when ``stamp`` is given) another stamp."""
    z = io.load_npz(path)
    prefix = io.LEAF_PREFIX + "['curves']"
    names = [k[len(prefix):] for k in z if k.startswith(prefix)]
    curves = {n[2:-2]: z[prefix + n] for n in names}  # "['loss']" -> "loss"
    tree, meta = io.load_pytree(path, {"state": like, "curves": curves})
    if stamp is not None and str(meta.get("stamp", "")) != stamp:
        raise ValueError(f"{path} was written for another configuration (stamp {str(meta.get('stamp', ''))!r}, asked "
                         f"for {stamp!r}): use another checkpoint path, or remove it to start afresh")
    paths = jax.tree_util.tree_flatten_with_path(like.hparams)[0]
    for (p, want), got in zip(paths, jax.tree_util.tree_leaves(tree["state"].hparams)):
        if not np.array_equal(np.asarray(want), np.asarray(got)):
            raise ValueError(f"{path} holds models with other hyper-parameters ({jax.tree_util.keystr(p)} "
                             f"{np.asarray(got)} instead of {np.asarray(want)}): use another checkpoint")
    state = jax.tree_util.tree_map(jnp.asarray, tree["state"])
    return state, {k: np.asarray(v) for k, v in tree["curves"].items()}, bool(meta.get("stopped", False))
