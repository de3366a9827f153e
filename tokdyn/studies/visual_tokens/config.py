"""The visual-token study's :class:`Config`: its fields and checks, the models it trains, the
estimate, the table's columns, and one model's configuration (:func:`model_config`). The leaf of
the package: it imports none of its parts."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn import _checks, train
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate
from tokdyn.models import vtae
from tokdyn.models.vtae import corpus, encoders


PARTS = ("poc", "published", "main", "curriculum", "semantic")
PUBLISHED_VOCAB = (51, 192)  # the published setting's vocabularies
MAX_STEPS = 2**31 - 1  # training steps are counted in 32-bit integers
LOG_FIELDS = 8  # training logs of one step, kept for a call (tokdyn.train.train_many)
COLUMNS = (
    "part",
    "variant",
    "vocab_size",
    "grid",
    "colours",
    "mode",
    "steps",
    "seed",
    "accuracy",
    "accuracy_occurrence",
    "dominant_freq",
    "collapsed",
    "entropy",
    "uniqueness",
    "min_hamming",
    "sensitivity_kl",
    "loss_norm",
    "train_loss_norm_first",
    "train_loss_norm_last",
    "train_loss_drop_tail",
    "nan_step",
    "knn_preservation",
    "trustworthiness",
    "composition_grid",
    "composition_embedding",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      vocab_sizes: vocabulary sizes V of the main grid.
      grids: grids of the main grid as (N, C) pairs: N x N cells of C colours (written NxC).
      modes: encoder modes of the main grid, names from tokdyn.models.vtae.encoders.MODES.
      budgets: training budgets (optimiser steps) of the main and published parts; the largest is
        used by the other parts.
      seeds: models per cell, trained in one vmapped call.
      hidden: width of the MLP decoder's hidden layer.
      batch_size: tokens per optimiser step.
      learning_rate: Adam learning rate.
      zipf_exponent: exponent of the Zipfian token frequencies of the main part.
      grammar_sentences: sentences of the grammar corpus of the semantic part.
      embed_dim: width of the PPMI/SVD embeddings of the semantic part.
      parts: parts to run, names from poc, published, main, curriculum, semantic.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; summary.md's first line says so).
    """

    vocab_sizes: tuple[int, ...] = (5, 51, 192, 1000, 5000)
    grids: tuple[tuple, ...] = ((3, 2), (5, 3), (7, 3), (8, 5))  # (N, C)
    modes: tuple[str, ...] = ("gumbel_st", "vq")
    budgets: tuple[int, ...] = (300, 2000)
    seeds: int = 5
    hidden: int = 64
    batch_size: int = 64
    learning_rate: float = 1e-2
    zipf_exponent: float = 1.0
    grammar_sentences: int = 5000
    embed_dim: int = 8
    parts: tuple[str, ...] = PARTS
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field; raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        for name in ("vocab_sizes", "grids", "modes", "budgets", "parts"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must list at least one value (a comma list), got {value!r}")
            _checks.distinct(name, value)  # each value is one condition: a repeat would count its models twice
        for v in self.vocab_sizes:
            _checks.positive_int("vocab_sizes", v, minimum=2)
        for g in self.grids:
            if not isinstance(g, tuple) or len(g) != 2:
                raise ValueError(f"grids must hold (N, C) pairs (written NxC), got {g!r}")
            _checks.positive_int("grid", g[0])
            _checks.positive_int("colours", g[1], minimum=2)
        for m in self.modes:
            _checks.choice("modes", m, encoders.MODES)
        for b in self.budgets:
            _checks.positive_int("budgets", b, minimum=10)
            if b > MAX_STEPS:
                raise ValueError(f"budgets must be at most {MAX_STEPS:,} steps (a 32-bit step counter), got {b!r}")
        for p in self.parts:
            _checks.choice("parts", p, PARTS)
        for name in ("seeds", "hidden", "batch_size", "grammar_sentences", "embed_dim"):
            _checks.positive_int(name, getattr(self, name))
        grammar_v = len(corpus.grammar_vocab()[0])
        if self.embed_dim > grammar_v:
            raise ValueError(
                f"embed_dim must be at most {grammar_v} (the grammar corpus's vocabulary: the PPMI/SVD "
                f"embeddings have at most that many dimensions), got {self.embed_dim}"
            )
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("zipf_exponent", self.zipf_exponent, low=0.0)
        _checks.seed("root_seed", self.root_seed)
        _checks.choice("preset", self.preset, PRESETS)
        return self

    def models(self) -> list[tuple[str, vtae.Config]]:
        """``(part, model config)`` of every cell of the selected parts (``seeds`` models each), in
        the order they train; the model configs carry the sizes only (no extra losses)."""
        big = max(self.budgets)
        cells = []
        for name in PARTS:
            if name not in self.parts:
                continue
            if name == "poc":
                combos = [(5, 3, 2, m, big) for m in encoders.MODES]
            elif name == "main":
                combos = [
                    (V, n, c, m, b)
                    for V in self.vocab_sizes
                    for (n, c) in self.grids
                    for m in self.modes
                    for b in self.budgets
                ]
            elif name == "published":
                combos = [(V, 5, 3, "gumbel_st", b) for V in PUBLISHED_VOCAB for b in self.budgets]
            elif name == "curriculum":
                combos = [(curriculum_vocab(self), 5, 3, "gumbel_st", big)] * 2
            else:
                combos = [(len(corpus.grammar_vocab()[0]), 5, 3, "sigmoid", big)] * 2
            cells += [
                (
                    name,
                    vtae.Config(
                        vocab_size=V,
                        grid=n,
                        colours=c,
                        mode=m,
                        train=training_budget(b),
                        hidden=self.hidden,
                        batch_size=self.batch_size,
                    ),
                )
                for V, n, c, m, b in combos
            ]
        return cells

    def estimate(self) -> Estimate:
        """The largest cell's training state (parameters, Adam moments and gradients, vmapped over
        ``seeds``; one step's logits) or evaluation (the (V, V) logits and Hamming distances of one
        model), the grammar corpus; and the time at a rough cost per step on the reference CPU: its
        FLOPs scaled by this machine's ``training`` rate, a fixed cost per step and 3 s a cell by its
        ``host`` rate. Refuses
        (:class:`~tokdyn.experiment.study.Refused`, naming the option) an array XLA cannot index."""
        defaults = Config()
        need, rate, host = {}, 0.0, 0.0

        def fit(**sizes):  # one array's sizes; too many elements: name the option most beyond its default
            n = int(np.prod([float(v) for v in sizes.values()]))
            if n > study_dir.MAX_ELEMENTS:
                name = max(sizes, key=lambda k: sizes[k] / max(1, _default_size(defaults, k)))
                study_dir.elements_fit(name, *sizes.values())

        def add(option, nbytes):
            need[option] = max(need.get(option, 0.0), float(nbytes))

        study_dir.elements_fit("grammar_sentences", self.grammar_sentences, 16)  # a uniform draw per slot
        add("grammar_sentences", self.grammar_sentences * 16 * 4 * 4)
        for _, m in self.models():
            V, P, F = m.vocab_size, m.cells, m.features
            fit(seeds=self.seeds, vocab_sizes=V, grids=P * m.width)  # the encoder's table
            fit(seeds=self.seeds, grids=P * F, hidden=self.hidden)  # the decoder's first layer
            fit(seeds=self.seeds, batch_size=self.batch_size, vocab_sizes=V)  # one step's logits
            fit(seeds=self.seeds, batch_size=self.batch_size, grids=P * F)  # one step's grids
            study_dir.elements_fit("vocab_sizes", V, V)  # the evaluation's (V, V) logits and distances
            fit(seeds=self.seeds, budgets=m.train.steps_per_call, logs=LOG_FIELDS)  # a call's per-step training logs
            add("budgets", self.seeds * m.train.steps_per_call * LOG_FIELDS * 4 * 2)
            params = V * P * m.width + P * F * self.hidden + self.hidden * V + V
            step = self.batch_size * (V + P * F + self.hidden)
            add("seeds", self.seeds * (4 * params + 3 * step) * 4)
            add("vocab_sizes", 6 * V * V * 4 + V * P * F * 4)
            rate += self.seeds * m.train.steps * 6.0 * self.batch_size * (P * F + V) * self.hidden / 6e9
            host += self.seeds * m.train.steps * 2e-5 + 3.0
        models = self.seeds * len(self.models())
        add("seeds", models * 2000.0)  # a row (a dict) per model, held until the results are written
        option = max(need, key=need.get)
        return Estimate(memory=need[option], option=option, models=models, work={"training": rate, "host": host})

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version (tests, smoke runs)."""
        return cls(
            vocab_sizes=(5, 51),
            grids=((3, 2), (5, 3)),
            modes=("gumbel_st",),
            budgets=(50, 200),
            seeds=2,
            hidden=32,
            batch_size=32,
            grammar_sentences=500,
            preset="quick",
        )


def _default_size(cfg: Config, name: str) -> int:
    sizes = {
        "vocab_sizes": max(cfg.vocab_sizes),
        "grids": max(n * n * c for n, c in cfg.grids),
        "budgets": 50,
        "logs": LOG_FIELDS,
    }
    return sizes.get(name) or getattr(cfg, name)


def curriculum_vocab(sc: Config) -> int:
    """The vocabulary of the curriculum part: 192 when ``vocab_sizes`` holds it, else the largest."""
    return 192 if 192 in sc.vocab_sizes else max(sc.vocab_sizes)


def training_budget(steps: int) -> train.Config:
    """A model's training: ``steps`` at a constant learning rate (no warm-up, no clipping), logged
    at :func:`tokdyn.train.log_interval`."""
    return train.Config(
        steps=steps, steps_per_call=train.log_interval(steps), warmup=0, decay="constant", clip_norm=0.0
    )


def model_config(sc: Config, V, n, c, mode, steps, **kw):
    """The :class:`tokdyn.models.vtae.Config` of one model: ``V`` tokens on ``n`` x ``n`` grids of ``c``
    colours, encoder ``mode``, trained ``steps`` steps (:func:`training_budget`), the study's width and
    batch; ``kw``: further fields of the model's configuration."""
    return vtae.Config(
        vocab_size=V,
        grid=n,
        colours=c,
        mode=mode,
        train=training_budget(steps),
        hidden=sc.hidden,
        batch_size=sc.batch_size,
        **kw,
    )
