"""The latent reasoner's static training configuration (:class:`Config`: model size, budget,
schedule, curriculum, pools, seeds) and its traced, sweepable hyper-parameters (:class:`Hparams`:
learning rate, weight decay, loss weights), shared by the model's variants, its trainer and its
evaluation."""

from __future__ import annotations

import dataclasses

import jax

from tokdyn import _checks
from tokdyn.models.latent import model as M
from tokdyn.models.latent import tasks


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of training, shared by every variant (model size, schedule, pools, seeds).

    Attributes:
      task: the tasks (grid size, colours, density).
      width: transformer width D.
      depth: transformer blocks.
      heads: attention heads (dividing width).
      n_latents: latent positions L of the latent variants (the last curriculum stage's count).
      projection: latent feedback projection, none | layernorm | linear.
      steps: the step budget: the most optimiser steps per model (a multiple of steps_per_call; the
        learning-rate schedule decays over it).
      batch_size: training instances per step, drawn with replacement from the pool.
      warmup: steps of linear learning-rate warm-up before the cosine decay.
      curriculum_stages: stages S of the coconut curriculum after the first (text) stage.
      steps_per_call: optimiser steps per compiled call (the checkpoint interval).
      n_train: instances in the training pool.
      n_test: test instances (none of them in the training pool or the validation set).
      n_val: validation instances for held-out accuracy during training (none in the other sets).
      seeds: seeds per hyper-parameter setting (0..N-1).
      root_seed: root PRNG seed of the data and of every seed's run.
    """

    task: tasks.Config = tasks.Config(grid_size=4, n_colours=4)
    width: int = 64
    depth: int = 2
    heads: int = 4
    n_latents: int = 4
    projection: str = "layernorm"
    steps: int = 3000
    batch_size: int = 64
    warmup: int = 200
    curriculum_stages: int = 2
    steps_per_call: int = 100
    n_train: int = 100000
    n_test: int = 2000
    n_val: int = 500
    seeds: int = 3
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (and the task's); raise ``ValueError``/``TypeError`` naming the field. Returns
        ``self``."""
        if not isinstance(self.task, tasks.Config):
            raise TypeError(f"task must be a tokdyn.models.latent.tasks.Config, got {type(self.task).__name__}")
        self.task.validate()
        for name in ("width", "depth", "heads", "n_latents", "steps", "batch_size", "curriculum_stages",
                     "steps_per_call", "n_train", "n_test", "seeds"):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("warmup", self.warmup, minimum=0)
        _checks.positive_int("n_val", self.n_val, minimum=0)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        _checks.choice("projection", self.projection, M.PROJECTIONS)
        if self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads, got width={self.width}, heads={self.heads}")
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps must be a multiple of steps_per_call={self.steps_per_call}, got {self.steps}")
        return self

    @property
    def warmup_steps(self) -> int:
        """The warm-up length the schedule uses (at least 1, less than ``steps``)."""
        return min(self.warmup, self.steps - 1) or 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters: each field a float, or an array with one value per
    setting (:func:`tokdyn.train.grid` makes seeds x settings of them).

    Attributes:
      learning_rate: peak AdamW learning rate (after warm-up; decays to 5% of it).
      weight_decay: AdamW decoupled weight decay.
      align_weight: weight of the latent alignment loss (latent_mirage, latent_monet, latent_lvr).
      caption_weight: weight of the caption cross-entropy (text, coconut).
    """

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    align_weight: float = 1.0
    caption_weight: float = 1.0

    def validate(self) -> "Hparams":
        """Check the knobs when they are host numbers (a positive learning rate, non-negative weights); raise
        ``ValueError`` naming the knob. Returns ``self``."""
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        for name in ("weight_decay", "align_weight", "caption_weight"):
            _checks.real(name, getattr(self, name), low=0.0)
        return self
