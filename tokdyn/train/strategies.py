"""How a call of :func:`~tokdyn.train.train_many` runs its models under a strategy (``"scan"``,
``"step"``, ``"loop"``: :class:`Runner`), and :func:`make_chunk`, a call's steps of one model under
``lax.scan``."""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from tokdyn.engine import execute
from tokdyn.train import sizing
from tokdyn.train.trainer import TrainState, make_step


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


def stacked(trees):
    """Per-model trees (which may live on different devices) stacked on the host."""
    return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


class Runner:
    """How one stage's calls run under a strategy: ``advance()`` makes one call and returns the logs
    (M,) on the host; ``state()`` the stacked state of the M models (device arrays).

    ``batch_size``: the models vmapped at once per device (``"scan"``, ``"step"``): an int, None
    (all of a device's models) or ``"auto"`` (sized from the device's memory, :mod:`tokdyn.train.sizing`;
    all at once where the device reports no limit); ``memory_limit``: bytes per device to size by
    instead of the device's limit. ``group``: the models vmapped at once per device (1 under
    ``"loop"``); ``memory``: the bytes a call needs per device by XLA's memory analysis, where the
    group was sized (else None)."""

    def __init__(self, trainer, strategy, state, run_keys, data, m, devices, batch_size, memory_limit=None):
        self.m, self.strategy, self.spc = m, strategy, trainer.config.steps_per_call
        self.memory, self.call = None, None
        if strategy == "loop":
            self.one = _single(trainer)
            self.group = 1
            self.place = [devices[i % len(devices)] for i in range(m)]
            datas = {d: jax.device_put(data, d) for d in devices}
            self.datas = [datas[d] for d in self.place]
            self.models = [
                jax.device_put(jax.tree_util.tree_map(lambda a: a[i], (state, run_keys)), self.place[i])
                for i in range(m)
            ]
            return
        n_dev, fn = len(devices), _per_model(trainer, strategy)
        per_dev = -(-m // n_dev)
        limit = None
        if batch_size == "auto":
            own = sizing.tree_bytes((state, run_keys, data))  # on the device now, counted as arguments
            limits = [memory_limit] if memory_limit is not None else [sizing.available(d, own) for d in devices]
            limit = None if None in limits else min(limits)
            batch_size = None
        if limit is None:
            self.group = per_dev if batch_size is None else min(batch_size, per_dev)
            self._place(fn, state, run_keys, data, n_dev * per_dev, devices, batch_size)
            return
        # every model at once first: where it fits (the common case) nothing else is compiled
        need, most = None, per_dev
        state_bytes = sizing.tree_bytes(state) / m  # one model's state: the loop holds a copy between calls
        while True:
            group, padded = sizing.equal_groups(per_dev, most)
            self._place(fn, state, run_keys, data, n_dev * padded, devices, None if group == padded else group)
            compiled = self.fn.lower(self.data, self.models).compile()
            stats = compiled.memory_analysis()
            total = sizing.held(stats) + math.ceil(padded * state_bytes)
            if total <= sizing.budget(limit) or group == 1:
                break
            if need is None:  # what grows with the group, from two small probes
                need = sizing.measure(fn, data, (state, run_keys), devices[0])
                most = min(group - 1, sizing.fit(need, per_dev, limit))
            else:
                most = sizing.shrink(need, group, stats.temp_size_in_bytes, total - sizing.budget(limit))
        if total > sizing.budget(limit):
            raise ValueError(
                f"execution.batch_size='auto': {per_dev} model(s) per device need {total:,} bytes by XLA's "
                f"memory analysis even one at a time, more than {sizing.budget(limit):,} (all but "
                f"{sizing.MARGIN:.0%} of the limit {limit:,}): train fewer models per call or on more devices"
            )
        self.group, self.memory, self.call = group, total, compiled

    def _place(self, fn, state, run_keys, data, padded, devices, batch_size):
        """The models padded to ``padded`` (the last one repeated) and placed, and the program."""
        pad = padded - self.m
        grow = lambda t: jax.tree_util.tree_map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]), t)
        if pad:
            state, run_keys = grow(state), grow(run_keys)
        self.fn, sharding = execute.sharded_map(fn, devices, batch_size, True)
        self.data = jax.device_put(data, NamedSharding(sharding.mesh, PartitionSpec()))
        self.models = jax.device_put((state, run_keys), sharding)

    def _run(self):
        return (self.call if self.call is not None else self.fn)(self.data, self.models)

    def advance(self) -> dict:
        """Make one call (``steps_per_call`` steps of every model); its logs (M,) on the host."""
        if self.strategy == "scan":
            st, logs = self._run()
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
                st, logs = self._run()
                self.models = (st, self.models[1])
                acc = add(acc, logs)
            sums, counts = (jax.tree_util.tree_map(np.asarray, a) for a in acc)
        else:  # one call per model: each model's sums stay on its device until the call's end
            accs = [None] * self.m
            for _ in range(self.spc):
                out = [self.one(st, self.datas[i], k) for i, (st, k) in enumerate(self.models)]
                self.models = [(st, k) for (st, _), (_, k) in zip(out, self.models)]
                accs = [add(a, lg) for a, (_, lg) in zip(accs, out)]
            sums, counts = stacked([a[0] for a in accs]), stacked([a[1] for a in accs])
        with np.errstate(invalid="ignore", divide="ignore"):  # a call with no finite step: NaN
            return {k: (sums[k] / counts[k])[: self.m] for k in sums}  # the mean of the finite steps

    def state(self) -> TrainState:
        """The stacked state of the M models (device arrays)."""
        if self.strategy == "loop":
            return jax.tree_util.tree_map(jnp.asarray, stacked([st for st, _ in self.models]))
        return jax.tree_util.tree_map(lambda a: a[: self.m], self.models[0])
