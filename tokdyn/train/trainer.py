"""What a model hands to the training loop, and the state the loop keeps for it.

A model needs no training code of its own: it supplies a :class:`Trainer` (how to initialise its
parameters, its loss, how to draw a step's batch) and the loop (:mod:`tokdyn.train.loop`) does the
rest: the optimiser, the step, scanning, vmapping over seeds and hyper-parameters, sharding,
checkpoints, resuming, stopping, progress and non-finite steps.

Keys: a model's key (one per seed) is split once by ``Trainer.keys`` into the key of its initial
parameters and its run key; step t's key is ``fold_in(run key, t)``, handed to both ``batch`` and
``loss`` (a trainer that needs several draws splits it the same way in both). So a model's run
never depends on how many models train beside it, on chunking or on the devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from tokdyn.train import optim


def split_keys(key):
    """The default ``Trainer.keys``: ``jax.random.split(key)``, the initial parameters' key first."""
    k_init, k_run = jax.random.split(key)
    return k_init, k_run


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A model's training, as values (hashable when its callables are: a trainer made once per
    configuration, e.g. by an ``lru_cache``'d factory, reuses its compilation).

    Attributes:
      config: the :class:`tokdyn.train.optim.Config` (budget, schedule, clipping).
      init: ``init(key, hparams) -> params``, the initial network weights (traceable).
      loss: ``loss(params, batch, key, hparams) -> (scalar, aux)``, minimised; ``aux`` a dict whose
        scalar entries are logged every step (averaged over each call) and which is handed whole
        to ``update_extra``.
      batch: ``batch(key, data, step) -> batch``: step ``step``'s batch drawn from ``data`` (the
        shared training data, an argument of the compiled function) with the step's key.
      keys: ``keys(key) -> (init key, run key)`` (default :func:`split_keys`).
      init_extra: optional ``init_extra(params, hparams) -> extra``: state the model keeps outside
        the gradient (e.g. a codebook's moving averages); ``()`` when None.
      update_extra: optional ``update_extra(old_params, params, extra, aux, key, hparams, ok) ->
        (params, extra)``, called after each update (``ok``: the step was finite and applied).
      grad_logs: optional ``grad_logs(grads) -> dict`` of extra scalar logs (e.g. per-part norms).
      name: what progress bars and messages call the model.
    """

    config: optim.Config
    init: Callable
    loss: Callable
    batch: Callable
    keys: Callable = split_keys
    init_extra: Optional[Callable] = None
    update_extra: Optional[Callable] = None
    grad_logs: Optional[Callable] = None
    name: str = "model"


@dataclasses.dataclass(frozen=True)
class Curriculum:
    """Trainers that follow each other on the same parameters and optimiser: ``stages`` is a tuple
    of ``(steps, Trainer)``, the steps of each a multiple of ``steps_per_call`` and summing to the
    shared ``config.steps``. The first stage's ``init``, ``keys`` and ``init_extra`` start the
    model. Each stage is one compiled function."""

    stages: tuple

    def __post_init__(self):
        if not self.stages or any(not isinstance(t, Trainer) for _, t in self.stages):
            raise TypeError(f"stages must be a non-empty tuple of (steps, Trainer), got {self.stages!r}")
        cfg = self.stages[0][1].config
        if any(t.config != cfg for _, t in self.stages):
            raise ValueError("every stage of a Curriculum must share one optim.Config")
        if sum(n for n, _ in self.stages) != cfg.steps or any(n % cfg.steps_per_call or n < 0 for n, _ in self.stages):
            raise ValueError(
                f"the stages' steps {[n for n, _ in self.stages]} must be multiples of steps_per_call="
                f"{cfg.steps_per_call} summing to steps={cfg.steps}"
            )

    @property
    def first(self) -> Trainer:
        """The first stage's :class:`Trainer`, whose ``init``, ``keys`` and ``init_extra`` start the
        model."""
        return self.stages[0][1]


def stages_of(trainer) -> tuple:
    """``((steps, Trainer), ...)`` of a :class:`Trainer` (one stage) or a :class:`Curriculum`."""
    if isinstance(trainer, Curriculum):
        return tuple((n, t) for n, t in trainer.stages if n)
    if isinstance(trainer, Trainer):
        return ((trainer.config.steps, trainer),)
    raise TypeError(f"trainer must be a tokdyn.train.Trainer or Curriculum, got {type(trainer).__name__}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """One model in training (a leading (M,) axis on every leaf when stacked over models).

    Attributes:
      params: the network weights.
      opt_state: the state of :func:`tokdyn.train.optim.optimizer` (its ``total_notfinite`` counts
        the skipped steps).
      extra: the model's state outside the gradient (``()`` for most models).
      hparams: the model's hyper-parameters (float32 leaves: traced).
      step: () int32 optimiser steps taken (skipped ones included).
      nan_step: () int32 the first step whose loss or gradient was not finite, -1 if none.
    """

    params: Any
    opt_state: Any
    extra: Any
    hparams: Any
    step: jax.Array
    nan_step: jax.Array

    @property
    def skipped(self) -> jax.Array:
        """() int32 steps skipped as non-finite."""
        return self.opt_state.total_notfinite


def as_float32(hparams):
    """Every leaf of ``hparams`` as a float32 array (what the state holds)."""
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), hparams)


def init_state(trainer, key, hparams) -> TrainState:
    """A model before its first step (traceable; vmap it over keys and settings)."""
    first = stages_of(trainer)[0][1]
    hp = as_float32(hparams)
    params = first.init(first.keys(key)[0], hp)
    extra = first.init_extra(params, hp) if first.init_extra is not None else ()
    return TrainState(params, optim.optimizer(first.config, hp).init(params), extra, hp, jnp.int32(0), jnp.int32(-1))


def make_step(trainer: Trainer) -> Callable:
    """The pure ``step(state, data, run_key) -> (state, logs)`` of one optimiser step of ``trainer``:
    the batch and the loss from ``fold_in(run_key, state.step)``, the update of
    :func:`tokdyn.train.optim.optimizer` (skipped when the loss or the gradient is not finite),
    then ``update_extra``. ``logs``: ``loss``, ``grad_norm`` and the scalars of the loss's aux and
    of ``grad_logs``."""
    cfg = trainer.config

    def step(state: TrainState, data, run_key):
        hp = state.hparams
        k = jax.random.fold_in(run_key, state.step)
        batch = trainer.batch(k, data, state.step)
        (loss, aux), grads = jax.value_and_grad(trainer.loss, has_aux=True)(state.params, batch, k, hp)
        gn = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gn)
        # apply_if_finite looks at the gradient only: a non-finite loss must skip the step too
        grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, jnp.nan), grads)
        updates, opt_state = optim.optimizer(cfg, hp).update(grads, state.opt_state, state.params)
        ok = opt_state.last_finite
        params = optax.apply_updates(state.params, updates)
        extra = state.extra
        if trainer.update_extra is not None:
            params, extra = trainer.update_extra(state.params, params, extra, aux, k, hp, ok)
        nan_step = jnp.where((state.nan_step < 0) & ~ok, state.step, state.nan_step)
        logs = {"loss": loss, "grad_norm": gn}
        logs.update({k_: v for k_, v in aux.items() if jnp.ndim(v) == 0})
        if trainer.grad_logs is not None:
            logs.update(trainer.grad_logs(grads))
        return TrainState(params, opt_state, extra, hp, state.step + 1, nan_step), logs

    return step
