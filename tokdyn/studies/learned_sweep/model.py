"""What a learned sweep needs of a model, declared as a value: :class:`LearnedModel` (its
configuration, its traced knobs, its trainer, its shared data, its evaluation), and the per-run
function a sweep of it runs, :class:`TrainRun` (one model trained from its seed's key with one
setting of the knobs, then evaluated): the engine vmaps it over a chunk of seeds x settings, one
compiled program per model shape."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from tokdyn import train

LOSS_CURVE = "loss_curve"  # the output of a run that holds its training loss, per call of steps_per_call steps
EVAL_SALT = 0x5E7A  # the evaluation's key: fold_in(the run's key, EVAL_SALT), apart from the training's draws


@dataclasses.dataclass(frozen=True)
class LearnedModel:
    """A learned model as ``tokdyn sweep NAME`` takes it: nothing here runs anything; the sweep's
    :class:`TrainRun` calls these functions inside one traced program.

    Attributes:
      name: the model's name: the command ``tokdyn sweep NAME``, the study ``NAME-sweep``.
      about: one line for the command's help.
      config: the model's static configuration for the sweep (a frozen dataclass with
        ``validate()`` and a ``train`` field, a :class:`tokdyn.train.optim.Config`).
      quick: the model's configuration in the quick preset (``--quick``).
      hparams: the model's traced knobs at their defaults (a registered dataclass of numbers, the
        model's ``Hparams``): every field is an axis of the sweep, at this default when not swept.
      trainer: ``trainer(config)``: a :class:`tokdyn.train.Trainer`, or a
        :class:`tokdyn.train.Curriculum` of stages that follow each other on the same parameters
        (the sweep trains either by :func:`tokdyn.train.make_train`).
      inputs: ``inputs(config) -> data``: the training data every model shares (built inside the
        compiled program: it depends on the configuration alone).
      evaluate: ``evaluate(key, params, config, hparams, data) -> {metric: scalar}`` of one
        trained model (traceable).
      metrics: the metrics the report shows, the first its headline: the best setting is the one
        with its highest mean (every model's headline is a score or an accuracy: higher is better).
      metrics_of: ``metrics_of(config) -> metrics``: those of ``metrics`` that ``evaluate`` reports
        for a model of ``config``, where that depends on the configuration (a likelihood that a
        continuous model does not have); None: every one of ``metrics``.
      axes: ``{knob: values}`` of the sweep's default axes (values as the command takes them).
      quick_axes: the quick preset's axes.
      rate: model-steps per second of the reference CPU (two cores, models vmapped), for the
        sweep's time estimate.
      quick_rate: the same at the quick preset's shape (``quick``), where a model may train many
        times faster than at the default shape; None: ``rate``.
      fixed: fields of the model's configuration the sweep decides itself and the command does not
        offer (e.g. a model's own ``seeds`` and ``root_seed``: the sweep's seeds and root seed key
        its models); a field of a nested configuration by its dotted path (``training.seeds``).
      cpu_lanes: models vmapped together on a CPU when the command does not say (``--lanes``);
        None: :data:`~tokdyn.studies.learned_sweep.config.CPU_LANES`. A model whose vmapped
        training XLA:CPU compiles too slowly (convolutions: Slot Attention) takes 1, one model
        after another in the same compiled program.
      bounds: ``((metric, (low, high)), ...)``: the ranges of the bounded metrics (a share, an
        accuracy, an ARI), so that their intervals over seeds stay inside them (the findings' rule,
        :func:`tokdyn.experiment.findings.seed_interval`); a metric not named is unbounded.
      check: ``check(config)``: the checks of the model's configuration that the sweep's data
        and evaluation add to the configuration's own ``validate()`` (raising ``ValueError`` naming
        the field), run before anything is traced; None: none.
    """

    name: str
    about: str
    config: Any
    quick: Any
    hparams: Any
    trainer: Callable
    inputs: Callable
    evaluate: Callable
    metrics: tuple
    axes: tuple = ()
    quick_axes: tuple = ()
    rate: float = 20000.0
    quick_rate: float | None = None
    fixed: tuple = ()
    cpu_lanes: int | None = None
    metrics_of: Callable | None = None
    check: Callable | None = None
    bounds: tuple = ()

    @property
    def knobs(self) -> tuple:
        """The names of the model's traced knobs (its ``Hparams`` fields): the sweep's axes."""
        return tuple(f.name for f in dataclasses.fields(self.hparams))

    def scores(self, config) -> tuple:
        """The metrics a model of ``config`` reports: ``metrics_of(config)``, or every one of
        ``metrics``."""
        return tuple(self.metrics_of(config)) if self.metrics_of is not None else tuple(self.metrics)


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """One run of a learned sweep, ``fn(key, **knobs) -> {metric: scalar}``: the model of
    ``config`` trained from ``key`` (:func:`tokdyn.train.make_train`, every step in one traced
    program) with the knobs given (the others at the model's defaults), then evaluated
    (:meth:`TrainRun.outputs`). Model ``i`` of :func:`tokdyn.train.train_many` with the same key and knobs
    is the same model, up to the rounding of differently vectorised programs.

    Attributes:
      model: the :class:`LearnedModel`.
      config: the model's static configuration.
    """

    model: LearnedModel
    config: Any

    def hparams(self, **knobs):
        """The model's ``Hparams``: the defaults, with the knobs given (float32 leaves)."""
        defaults = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), self.model.hparams)
        return dataclasses.replace(defaults, **{k: jnp.asarray(v, jnp.float32) for k, v in knobs.items()})

    def outputs(self, key, hparams, state, curves=None) -> dict:
        """The evaluation of one trained model (its ``state``, a :class:`tokdyn.train.TrainState`)
        as float32 scalars, ``skipped``: the steps it skipped as non-finite, and with ``curves``
        (:func:`tokdyn.train.make_train`'s) ``loss_curve``: the training loss, its mean over each
        call of ``steps_per_call`` steps, (calls,) float32 (the sweep's figures draw it)."""
        data = self.model.inputs(self.config)
        k_eval = jax.random.fold_in(key, EVAL_SALT)
        scores = self.model.evaluate(k_eval, state.params, self.config, hparams, data)
        out = {k: jnp.asarray(v, jnp.float32) for k, v in scores.items()}
        out["skipped"] = jnp.asarray(state.skipped, jnp.float32)
        if curves is not None:
            out[LOSS_CURVE] = jnp.asarray(curves["loss"], jnp.float32)
        return out

    def __call__(self, key, **knobs) -> dict:
        hp = self.hparams(**knobs)
        data = self.model.inputs(self.config)
        state, curves = train.make_train(self.model.trainer(self.config))(key, hp, data)
        return self.outputs(key, hp, state, curves)
