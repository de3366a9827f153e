"""The latent reasoner's static training configuration (:class:`Config`: model size, budget and
schedule (its ``train``), curriculum, pools, seeds) and its traced, sweepable hyper-parameters
(:class:`Hparams`: learning rate, weight decay, loss weights), shared by the model's variants, its
trainer and its evaluation."""

from __future__ import annotations

import dataclasses

import jax

from tokdyn import _checks
from tokdyn.models.latent import model as latent_model
from tokdyn.data import grid_tasks as tasks
from tokdyn.train import optim


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
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        a budget of 3000 steps per model (the most it trains) in compiled calls of 100 (the
        checkpoint interval), a linear warm-up of 200 steps (0: none), then a cosine decay to 5%
        of the peak, gradients clipped to global norm 1.
      batch_size: training instances per step, drawn with replacement from the pool.
      curriculum_stages: stages S of the coconut curriculum after the first (text) stage.
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
    train: optim.Config = optim.Config(
        steps=3000, steps_per_call=100, warmup=200, decay="cosine", final_fraction=0.05, clip_norm=1.0
    )
    batch_size: int = 64
    curriculum_stages: int = 2
    n_train: int = 100000
    n_test: int = 2000
    n_val: int = 500
    seeds: int = 3
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (the task's and the training's, :meth:`tokdyn.train.optim.Config.validate`);
        raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        if not isinstance(self.task, tasks.Config):
            raise TypeError(f"task must be a tokdyn.data.grid_tasks.Config, got {type(self.task).__name__}")
        self.task.validate()
        optim.check("train", self.train)
        for name in (
            "width",
            "depth",
            "heads",
            "n_latents",
            "batch_size",
            "curriculum_stages",
            "n_train",
            "n_test",
            "seeds",
        ):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("n_val", self.n_val, minimum=0)
        _checks.positive_int("root_seed", self.root_seed, minimum=0)
        _checks.choice("projection", self.projection, latent_model.PROJECTIONS)
        if self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads, got width={self.width}, heads={self.heads}")
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters: each field a float, or an array with one value per
    setting (:func:`tokdyn.train.grid` makes seeds x settings of them).

    Attributes:
      learning_rate: peak AdamW learning rate (after the warm-up; then the decay, by default to 5% of
        it).
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
