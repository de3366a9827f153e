"""The grid-diffusion study's :class:`Config`: its fields and checks, the autoencoder's and each
model's configuration, the runs, the estimate, and the table's columns. The leaf of the package: it
imports none of its parts."""

from __future__ import annotations

import dataclasses

from tokdyn import _checks, train
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate, elements_fit, largest_option
from tokdyn.models import sequence
from tokdyn.models import vtae
from tokdyn.models.vtae import corpus
from tokdyn.stats import text as text_stats


SCOPES = ("sequence", "single")
COLUMNS = (
    "scope",
    "model",
    "seed",
    "steps",
    "train_loss_first",
    "train_loss_last",
    "nan_step",
    *[c for m in text_stats.METRICS + ("nll",) for c in (m, m + "_low", m + "_high")],
)


AE_LEARNING_RATE = sequence.AE_LEARNING_RATE  # the autoencoder's peak learning rate
MODEL_COMPILE = 16.0  # seconds of host work a model (its compiles) on the reference CPU: the quick preset's
# models took 10-20 s each, compiles most of it (benchmarks/README.md, the time estimates)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      sentences: sentences of the grammar corpus (the training data).
      length: L, tokens per sequence (sentences are cut or padded with <pad> to L).
      grid: N: each token's grid has N x N cells.
      colours: C, colours per cell.
      ae_steps: optimiser steps of the autoencoder.
      models: sequence-level models, names from tokdyn.models.sequence.MODELS.
      single_models: single-grid models (one grid per sample, MLP denoiser); names of grid models.
      elements: what the sequence-level grid denoisers attend over: grids (one element per grid)
        or cells (one per cell: L * N * N elements, about N * N times the compute).
      T: diffusion steps.
      width: width of every model.
      depth: transformer blocks of every model.
      steps: optimiser steps of every model.
      batch_size: sequences per step.
      learning_rate: peak Adam learning rate.
      lam: weight of the auxiliary cross-entropy of the D3PM hybrid loss.
      seeds: models per kind, trained together.
      n_samples: samples per model and seed.
      ddim_steps: DDIM steps of the extra grid_ddpm sampler (0: none).
      n_resamples: bootstrap resamples of the intervals.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; summary.md's first line says so).
    """

    sentences: int = 5000
    length: int = 10
    grid: int = 3
    colours: int = 3
    ae_steps: int = 1000
    models: tuple[str, ...] = sequence.MODELS
    single_models: tuple[str, ...] = ("grid_ddpm", "grid_d3pm_uniform", "grid_d3pm_absorbing")
    elements: str = "grids"
    T: int = 200
    width: int = 64
    depth: int = 2
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    lam: float = 0.01
    seeds: int = 3
    n_samples: int = 512
    ddim_steps: int = 50
    n_resamples: int = 500
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field (enough grids for the grammar's tokens, and every model's configuration);
        raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in (
            "sentences",
            "length",
            "grid",
            "ae_steps",
            "T",
            "width",
            "depth",
            "steps",
            "batch_size",
            "seeds",
            "n_samples",
            "n_resamples",
        ):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("colours", self.colours, minimum=2)
        _checks.positive_int("ddim_steps", self.ddim_steps, minimum=0)
        _checks.seed("root_seed", self.root_seed)
        for name in ("steps", "ae_steps", "root_seed"):  # step counters and seeds are int32 inside the programs
            if getattr(self, name) > INT32_MAX:
                raise ValueError(
                    f"{name} must be at most {INT32_MAX:,} (an int32 inside the compiled programs), "
                    f"got {getattr(self, name):,}"
                )
        if self.ddim_steps > self.T:
            raise ValueError(f"ddim_steps must be <= T={self.T}, got {self.ddim_steps}")
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 (the intervals resample them), got {self.n_samples}")
        for name in ("models", "single_models"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple of model names, got {value!r}")
            _checks.distinct(name, value)  # each model is one condition: a repeat would count its seeds twice
        if not self.models and not self.single_models:
            raise ValueError(
                "models and single_models must not both be empty: nothing to train (e.g. --models "
                f"{','.join(sequence.MODELS)})"
            )
        for m in self.models:
            _checks.choice("models", m, sequence.MODELS)
        for m in self.single_models:
            _checks.choice("single_models", m, [x for x in sequence.MODELS if x.startswith("grid_")])
        _checks.choice("elements", self.elements, sequence.ELEMENTS)
        vocab = len(corpus.grammar_vocab()[0])
        cells = self.grid * self.grid  # a huge grid gives enough grids: no huge power computed (2 ** 64 > vocab)
        if cells < 64 and self.colours**cells < vocab:
            raise ValueError(
                f"grid={self.grid} and colours={self.colours} give {self.colours ** (self.grid**2)} "
                f"grids, fewer than the {vocab} tokens of the grammar: every token needs its own grid"
            )
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("lam", self.lam, low=0.0)
        for m in self.models + self.single_models:
            self.model(m, "sequence" if m in self.models else "single").validate()
        _checks.choice("preset", self.preset, PRESETS)
        return self

    def estimate(self) -> Estimate:
        """The largest allocation (the activations of the ``seeds`` models trained together, or of
        ``n_samples`` samples drawn at once, the models' parameters and optimiser state, the corpus,
        the bootstrap's resamples, the noise schedule), naming the option that makes it large, and a
        rough time on the reference CPU (calibrated on the default run, 19 min): the FLOPs scaled by
        this machine's ``training`` rate, what does not grow with the model (a cost per step,
        :data:`MODEL_COMPILE` a model, 30 s) by its ``host`` rate.
        :class:`tokdyn.experiment.study.Refused` naming the option when one array would hold more
        elements than XLA can index."""
        L, P, C, W, D = self.length, self.grid * self.grid, self.colours, self.width, self.depth
        E = L * P if self.elements == "cells" else L  # elements the grid models attend over
        heads = 4 if W % 4 == 0 else 1
        per_sequence = E * W * (8 * D + 4) + heads * E * E * D * 2 + L * P * max(C, 29) * 4  # floats held per sequence
        groups = {  # (options that scale it, elements of its largest array, bytes)
            "training": (
                ("seeds", "batch_size", "length", "grid", "width", "depth", "colours"),
                self.seeds * self.batch_size * max(heads * E * E, E * W, L * P * C),
                4 * self.seeds * self.batch_size * per_sequence,
            ),
            "sampling": (
                ("n_samples", "length", "grid", "width", "depth", "colours"),
                self.n_samples * max(heads * E * E, E * W, L * P * C),
                4 * self.n_samples * per_sequence,
            ),
            "corpus": (
                ("sentences", "length", "grid"),
                self.sentences * L * P,
                4 * self.sentences * (L * P + 2 * L + 32),
            ),
            "bootstrap": (
                ("n_resamples", "n_samples"),
                self.n_resamples * self.n_samples,
                8 * self.n_resamples * self.n_samples * 4,
            ),
            "schedule": (("T",), self.T + 1, 8 * 16 * (self.T + 1)),
            "keys": (("seeds",), 2 * self.seeds, 8 * self.seeds * 64),
            "parameters": (
                ("width", "depth", "seeds"),
                max(4 * W * W, W * max(P * C, 29) * max(1, L)),
                4 * 4 * self.seeds * (12 * D * W * W + 2 * W * (P * C + 29 + L)),
            ),  # with Adam's moments
        }
        for names, elements, _ in groups.values():
            elements_fit(largest_option(self, names), elements)
        names, _, memory = max(groups.values(), key=lambda g: g[2])
        n = len(self.models) + len(self.single_models)
        step_flops = 24 * self.seeds * self.batch_size * (E * W * W * D + heads * E * E * W * D)
        sample_flops = 8 * self.seeds * self.n_samples * self.T * (E * W * W * D + heads * E * E * W * D)
        flops = n * (self.steps * step_flops + sample_flops) / 2e10
        steps = n * (self.steps * 5e-4 + self.T * self.seeds * 5e-3 + MODEL_COMPILE) + self.ae_steps * 5e-3 + 30.0
        return Estimate(
            memory=float(memory),
            option=largest_option(self, names),
            models=n * self.seeds,
            work={"training": flops, "host": steps},
        )

    @classmethod
    def quick(cls) -> "Config":
        """A one-minute version (tests, smoke runs)."""
        return cls(
            sentences=300,
            length=10,
            ae_steps=300,
            T=20,
            width=32,
            depth=1,
            steps=100,
            batch_size=32,
            seeds=2,
            n_samples=32,
            ddim_steps=5,
            n_resamples=50,
            preset="quick",
        )

    def autoencoder(self) -> vtae.Config:
        """The first stage's configuration: a visual-token autoencoder from the grammar's vocabulary to
        ``grid`` x ``grid`` grids of ``colours`` colours (Gumbel straight-through encoder, MLP
        decoder), trained for ``ae_steps`` steps (:func:`tokdyn.models.sequence.grid_autoencoder`)."""
        return sequence.grid_autoencoder(self.grid, self.colours, self.ae_steps)

    def model(self, name: str, scope: str) -> sequence.Config:
        """The configuration of the model ``name`` in ``scope``: ``"sequence"`` (``length`` elements,
        a transformer) or ``"single"`` (one grid per sample, an MLP), with this study's width, depth,
        steps and batch."""
        single = scope == "single"
        return sequence.Config(
            model=name,
            length=1 if single else self.length,
            cells=self.grid * self.grid,
            colours=self.colours,
            vocab_size=len(corpus.grammar_vocab()[0]),
            T=self.T,
            architecture="mlp" if single else "transformer",
            elements=self.elements,
            width=self.width,
            depth=self.depth,
            heads=4 if self.width % 4 == 0 else 1,
            batch_size=self.batch_size,
            train=train.Config(
                steps=self.steps,
                steps_per_call=train.log_interval(self.steps),
                warmup=max(1, min(100, self.steps // 10)),
                decay="cosine",
                final_fraction=0.1,
                clip_norm=1.0,
            ),
        )

    def runs(self) -> list[tuple[str, str]]:
        """``(scope, model)`` of every model kind, in the order they train: ``models``, then
        ``single_models``."""
        return [("sequence", m) for m in self.models] + [("single", m) for m in self.single_models]


INT32_MAX = 2**31 - 1
