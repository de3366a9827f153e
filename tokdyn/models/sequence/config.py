"""The static configuration of a second-stage model (:class:`Config`, the names it chooses from:
:data:`MODELS`, :data:`ARCHITECTURES`, :data:`ELEMENTS`, :data:`SAMPLERS`) and its traced
hyper-parameters (:class:`Hparams`)."""

from __future__ import annotations

import dataclasses

import jax

from tokdyn import _checks, diffusion
from tokdyn.train import optim

MODELS = (
    "grid_ddpm",
    "grid_d3pm_uniform",
    "grid_d3pm_absorbing",
    "token_d3pm_uniform",
    "token_d3pm_absorbing",
    "token_ar",
)
ARCHITECTURES = ("transformer", "mlp")
ELEMENTS = ("cells", "grids")
SAMPLERS = ("ancestral", "ddim")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static structure of one generative model and its training.

    Attributes:
      model: one of :data:`MODELS`.
      length: L, positions per sequence (1: single grids or tokens).
      cells: P, cells per grid (grid models).
      colours: C, colours per cell (grid models).
      vocab_size: V, token types (token models).
      T: diffusion steps.
      schedule: beta schedule (:data:`tokdyn.diffusion.SCHEDULES`); None picks the usual one:
        ``cosine`` for DDPM and the uniform kernel, ``absorbing`` for the absorbing kernel.
      architecture: ``transformer`` or ``mlp`` (:data:`ARCHITECTURES`).
      elements: what the transformer attends over in grid models: ``cells`` (every cell of every
        grid is an element: L * P elements, attention over positions and cells) or ``grids``
        (each grid is one element, its cells read and written by linear maps: L elements, the
        cost of a token model).
      width: model width D.
      depth: transformer blocks (hidden layers of the MLP).
      heads: attention heads.
      train: the optimiser's budget and schedule (:class:`tokdyn.train.optim.Config`): by default
        2000 steps in compiled calls of 100 (the logging interval: a multiple of it), a linear
        warm-up of 100 steps (0: none), then a cosine decay to 10% of the peak, gradients clipped
        to global norm 1.
      batch_size: sequences per step.

    References:
      Ho, J., Jain, A. and Abbeel, P. (2020). Denoising diffusion probabilistic models. *NeurIPS
      2020*. arXiv:2006.11239 (``grid_ddpm``).

      Austin, J., Johnson, D. D., Ho, J., Tarlow, D. and van den Berg, R. (2021). Structured
      denoising diffusion models in discrete state-spaces. *NeurIPS 2021*. arXiv:2107.03006 (the
      D3PM models).
    """

    model: str = "grid_d3pm_absorbing"
    length: int = 10
    cells: int = 9
    colours: int = 3
    vocab_size: int = 29
    T: int = 200
    schedule: str | None = None
    architecture: str = "transformer"
    elements: str = "cells"
    width: int = 64
    depth: int = 2
    heads: int = 4
    train: optim.Config = optim.Config(
        steps=2000, steps_per_call=100, warmup=100, decay="cosine", final_fraction=0.1, clip_norm=1.0
    )
    batch_size: int = 64

    @property
    def on_grids(self) -> bool:
        """True for the models over colour grids (``grid_*``), False for the token-level ones."""
        return self.model.startswith("grid_")

    @property
    def continuous(self) -> bool:
        """True for the continuous (Gaussian) model, ``grid_ddpm``."""
        return self.model == "grid_ddpm"

    @property
    def kernel(self) -> str | None:
        """The D3PM kernel, ``'uniform'`` or ``'absorbing'``, or None for the continuous and autoregressive
        models."""
        return {"uniform": "uniform", "absorbing": "absorbing"}.get(self.model.rsplit("_", 1)[-1])

    @property
    def classes(self) -> int:
        """C for grid models, V for token models."""
        return self.colours if self.on_grids else self.vocab_size

    @property
    def sample_shape(self) -> tuple:
        """The shape of one sequence's integer data: (L, P) grids or (L,) tokens."""
        return (self.length, self.cells) if self.on_grids else (self.length,)

    @property
    def n_logs(self) -> int:
        """The number of logged points of a training curve (``train.calls``: one per compiled call)."""
        return self.train.calls

    def beta_schedule(self) -> str:
        """The noise schedule: ``schedule`` if given, else ``'absorbing'`` for the absorbing kernel and
        ``'cosine'`` otherwise."""
        if self.schedule is not None:
            return self.schedule
        return "absorbing" if self.kernel == "absorbing" else "cosine"

    def process(self):
        """The :class:`tokdyn.diffusion.Gaussian` or :class:`~tokdyn.diffusion.Discrete` process
        (None for ``token_ar``)."""
        if self.model == "token_ar":
            return None
        if self.continuous:
            return diffusion.gaussian(self.beta_schedule(), self.T)
        return diffusion.discrete(self.kernel, self.classes, self.beta_schedule(), self.T)

    def validate(self) -> "Config":
        """Check every field (the training's through :meth:`tokdyn.train.optim.Config.validate`); raise
        ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        _checks.choice("model", self.model, MODELS)
        _checks.choice("architecture", self.architecture, ARCHITECTURES)
        _checks.choice("elements", self.elements, ELEMENTS)
        _checks.positive_int("length", self.length)
        _checks.positive_int("cells", self.cells)
        _checks.positive_int("colours", self.colours, minimum=2)
        _checks.positive_int("vocab_size", self.vocab_size, minimum=2)
        _checks.positive_int("T", self.T, minimum=2 if not self.continuous else 1)
        if self.schedule is not None:
            _checks.choice("schedule", self.schedule, diffusion.SCHEDULES)
            if self.continuous and self.schedule == "absorbing":
                raise ValueError("schedule must be 'linear' or 'cosine' for grid_ddpm, got 'absorbing'")
        for name in ("width", "depth", "heads", "batch_size"):
            _checks.positive_int(name, getattr(self, name))
        optim.check("train", self.train)
        if self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads={self.heads}, got {self.width}")
        if self.model == "token_ar" and self.architecture != "transformer":
            raise ValueError(f"architecture must be 'transformer' for token_ar, got {self.architecture!r}")
        return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Traced, sweepable hyper-parameters.

    Attributes:
      learning_rate: peak Adam learning rate.
      lam: weight of the auxiliary x_0 cross-entropy in the D3PM hybrid loss.
    """

    learning_rate: jax.Array = 2e-3
    lam: jax.Array = 0.01

    def validate(self) -> "Hparams":
        """Check the knobs when they are host numbers (a positive learning rate, ``lam`` >= 0); raise
        ``ValueError`` naming the knob. Returns ``self``."""
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("lam", self.lam, low=0.0)
        return self
