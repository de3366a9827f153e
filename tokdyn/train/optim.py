"""The optimiser every model trains with: one factory, one schedule, one non-finite policy.

- :class:`Config` (static): the step budget, the steps per compiled call, the warm-up, the decay
  (``"cosine"`` to ``final_fraction`` of the peak, or ``"constant"``) and global-norm clipping.
  Every model's configuration holds one as its ``train`` field (:func:`check` validates it there).
- :func:`schedule`: linear warm-up from 0 to the peak, then the decay (optax's schedules, built so
  that the peak may be a tracer).
- :func:`optimizer`: ``clip_by_global_norm`` (when ``clip_norm``) then AdamW at
  :func:`schedule` with the traced peak ``hparams.learning_rate`` and weight decay
  ``hparams.weight_decay`` (0 when the model's hyper-parameters have no such field), wrapped in
  ``optax.apply_if_finite``: a step whose loss or gradient is not finite is skipped (parameters and
  optimiser state keep their last finite values) and counted in the state
  (``total_notfinite``), per model.

The learning rate and the weight decay are leaves of the model's traced hyper-parameters, read
where the update is made, so models with different settings share one compiled function and the
optimiser state's structure never depends on them. Minimisation throughout: the loss a trainer
returns is minimised.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optax

from tokdyn import _checks

DECAYS = ("cosine", "constant")
NEVER_GIVE_UP = int(np.iinfo(np.int32).max)  # apply_if_finite skips every non-finite step, however many


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of training (hashable: part of what a compiled function is keyed on).

    Attributes:
      steps: the step budget, the most optimiser steps per model (a multiple of steps_per_call;
        the schedule decays over it).
      steps_per_call: optimiser steps per compiled call, the checkpoint and logging interval.
      warmup: steps of linear warm-up from 0 to the peak learning rate (0: none).
      decay: cosine (to final_fraction of the peak at steps) | constant.
      final_fraction: the cosine decay's end, a fraction of the peak.
      clip_norm: clip gradients to this global norm before the update (0: no clipping).
    """

    steps: int = 1000
    steps_per_call: int = 100
    warmup: int = 0
    decay: str = "cosine"
    final_fraction: float = 0.05
    clip_norm: float = 1.0

    def validate(self) -> "Config":
        """Check every field (``steps`` a multiple of ``steps_per_call``); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        _checks.positive_int("steps", self.steps)
        _checks.positive_int("steps_per_call", self.steps_per_call)
        _checks.positive_int("warmup", self.warmup, minimum=0)
        _checks.choice("decay", self.decay, DECAYS)
        _checks.real("final_fraction", self.final_fraction, low=0.0, high=1.0)
        _checks.real("clip_norm", self.clip_norm, low=0.0)
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps must be a multiple of steps_per_call={self.steps_per_call}, got {self.steps}")
        return self

    @property
    def calls(self) -> int:
        """Compiled calls of the whole budget."""
        return self.steps // self.steps_per_call

    @property
    def warmup_steps(self) -> int:
        """The warm-up the schedule uses: ``warmup`` capped below ``steps`` (0: none)."""
        return min(self.warmup, self.steps - 1)


def check(name: str, cfg) -> Config:
    """``cfg`` checked as the field ``name`` of a model's configuration (``"train"``): a
    :class:`Config` (``TypeError`` otherwise) whose fields are valid (:meth:`Config.validate`), its
    errors naming the field as ``name.field`` (``train.steps must be ...``). Returns ``cfg``."""
    if not isinstance(cfg, Config):
        raise TypeError(f"{name} must be a tokdyn.train.optim.Config, got {cfg!r} of type {type(cfg).__name__}")
    try:
        return cfg.validate()
    except (TypeError, ValueError) as e:  # every message of validate() starts with the field's name
        raise type(e)(f"{name}.{e}") from None


def schedule(cfg: Config, peak) -> optax.Schedule:
    """The learning rate at each step: linear from 0 to ``peak`` (a float or a tracer) over
    ``cfg.warmup_steps`` steps, then constant or a cosine decay to ``final_fraction * peak`` at
    ``cfg.steps``."""
    warm = cfg.warmup_steps
    rest = (
        optax.constant_schedule(peak)
        if cfg.decay == "constant"
        else optax.cosine_decay_schedule(peak, cfg.steps - warm, alpha=cfg.final_fraction)
    )
    if not warm:
        return rest
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), rest], [warm])


def optimizer(cfg: Config, hparams) -> optax.GradientTransformation:
    """Clipping (``cfg.clip_norm``), then AdamW at :func:`schedule` of ``hparams.learning_rate``
    with weight decay ``hparams.weight_decay`` (0 without that field), skipping every non-finite
    step (``optax.apply_if_finite``). ``hparams`` may hold tracers; the state's structure does not
    depend on them."""
    adam = optax.adamw(schedule(cfg, hparams.learning_rate), weight_decay=getattr(hparams, "weight_decay", 0.0))
    inner = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adam) if cfg.clip_norm else adam
    return optax.apply_if_finite(inner, max_consecutive_errors=NEVER_GIVE_UP)


def log_interval(steps: int) -> int:
    """Steps per logging interval (one compiled call of :func:`tokdyn.train.train_many`, the
    ``steps_per_call`` of a :class:`Config`) for a budget of ``steps``: 5 to 40 intervals where a
    round divisor allows, else as many intervals (up to 1,000) as divide ``steps``, so that a call's
    logs stay small, else one interval."""
    for k in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500):  # as many as 40 logging intervals, at least 5
        if steps % k == 0 and 5 <= steps // k <= 40:
            return k
    for n in (*range(40, 4, -1), *range(41, 1001), 4, 3, 2):  # large budgets
        if steps % n == 0:
            return steps // n
    return steps
