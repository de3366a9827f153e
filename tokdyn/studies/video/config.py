"""The video study's configuration: :class:`Config` (every field checked by
:meth:`Config.validate`, its conditions, and what a run asks of the machine, :meth:`Config.estimate`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn import _checks, analysis, dynamics, tracking
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate, elements_fit, largest_option
from tokdyn.models import savi

STUDY = "video"
SCENARIOS = ("occlusion", "collisions", "leaving")
DATA = "data"  # the one scenario of a run on a dataset's videos (Config.data)
SEP = "+sep"  # the suffix of a condition with the separation push
LEARNED = "savi-"  # the prefix of a learned condition: savi-<predictor of tokdyn.models.savi>
SAVI_RATE = 2.6  # model-steps a second of the learned arm on the reference CPU, all of a predictor's models
# together (train_many's "loop" over 2 host devices), at 8 clips x 8 frames of 32 x 32 a step; scaled by
# clips x frames x pixels (Config.estimate). Fitted to the default run on the quiet 2-core CPU: 0.10 s a
# model-step at 8 clips x 6 frames (3 x 3,600 model-steps in 21 min) while the training probe measured
# 2.9x the reference's rate
SAVI_FIXED_S = 60.0  # seconds per learned predictor besides its steps: compiling the step and the
# segmentation, the pool, the checkpoints' evaluations and the test scores
RUN_RATE = 7e-8  # seconds per (run x frame x step x pixel) on the reference CPU (the default: 96 s of tracking)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      size: frame side in pixels.
      frames: frames per video.
      objects: objects per video (every video has this many; tokens = objects + 1, one for the
        background).
      scale: (low, high) object size as a fraction of the frame side.
      speed: (low, high) object speed in frame sides per frame.
      margin: how far the walls of the leaving scenario lie outside the view (> 0).
      scenarios: names from occlusion | collisions | leaving.
      predictors: predictors of tokdyn.tracking.PREDICTORS (reinit is the baseline, always run).
      separation: the minimum-separation push of the +sep conditions (feature units; 0: no +sep
        conditions).
      n_videos: videos per seed.
      seeds: seeds (each a set of videos and initial tokens, shared by every condition).
      temperature: the built-in rule's softmax temperature.
      momentum: the built-in rule's momentum (what inertia carries across frames).
      decay: inertia's share of the last frame's velocity.
      n_steps: the most steps of the rule per frame (a small budget, as in online tracking).
      tol: each frame's run stops when no coordinate moves more than this.
      position_scale: weight of the pixel position in the features (colour has weight 1).
      init: how frame 0 (and every frame under reinit) draws its tokens, data | kmeans++ | normal |
        data_mean.
      merge_rel: tokens closer than this times the frame's RMS feature radius have merged.
      min_pixels: pixels an object needs in a frame to count as visible there.
      learned: learned predictors, names from none | mlp | transformer (Slot Attention for video,
        tokdyn.models.savi, one condition savi-<name> each; empty: no learned arm, as --quick has).
      learned_seeds: models trained per learned predictor (at most seeds when learned is given:
        model s is scored on seed s's videos, paired with the fixed conditions by seed).
      learned_steps: optimiser steps of every learned model (a multiple of learned_every).
      learned_frames: frames per training clip (a window of the pool's clips of frames frames, so at
        most frames when learned is given; the test clips are scored whole).
      learned_batch: training clips per step.
      learned_pool: training clips, drawn equally from every scenario (a key of their own).
      learned_every: steps between checkpoints of the learned models (and learning-curve points).
      learning_rate: the learned models' peak Adam learning rate.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; summary.md's first line says so).
      data: '' (the synthetic sprite videos) or a directory holding a MOVi variant's train shards
        (tokdyn.datasets.movi; or one shard): the study's videos are then its videos with exactly
        objects objects, in file order (seed s the n_videos from s * n_videos), cut to frames frames
        and resized to size (tokdyn.datasets.clips), as the one scenario data; the default scenarios
        and learned become (data,) and () (the learned arm trains on sprite videos, so it is refused
        with data).
    """

    SEQUENCES = ("scale", "speed")  # (low, high) ranges, not sets of conditions: a value may repeat (cli.check_repeats)

    size: int = 32
    frames: int = 16
    objects: int = 3
    scale: tuple = (0.25, 0.35)
    speed: tuple = (0.04, 0.08)
    margin: float = 0.3
    scenarios: tuple = SCENARIOS
    predictors: tuple = ("reinit", "carry", "velocity", "inertia")
    separation: float = 0.25
    n_videos: int = 32
    seeds: int = 12
    temperature: float = 0.003
    momentum: float = 0.5
    decay: float = 1.0
    n_steps: int = 10
    tol: float = 1e-3
    position_scale: float = 0.25
    init: str = "kmeans++"
    merge_rel: float = analysis.MERGE_REL
    min_pixels: int = 4
    learned: tuple = savi.PREDICTORS
    learned_seeds: int = 3
    learned_steps: int = 1200
    learned_frames: int = 6
    learned_batch: int = 8
    learned_pool: int = 600
    learned_every: int = 100
    learning_rate: float = 2e-3
    root_seed: int = 0
    preset: str = ""
    data: str = ""

    def __post_init__(self):
        if self.data and isinstance(self.data, str):  # the defaults that have no meaning on a dataset's videos
            if self.scenarios == SCENARIOS:
                object.__setattr__(self, "scenarios", (DATA,))
            if self.learned == savi.PREDICTORS:
                object.__setattr__(self, "learned", ())

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``, seconds on 2 cores): 16-pixel frames, 8 frames, 3 seeds of
        3 videos, no learned arm."""
        return cls(size=16, frames=8, n_videos=3, seeds=3, scale=(0.3, 0.4), learned=(), preset="quick")

    def validate(self) -> "Config":
        """Check every field; ``ValueError`` / ``TypeError`` naming it. Returns ``self``."""
        for name in (
            "size",
            "frames",
            "objects",
            "n_videos",
            "seeds",
            "n_steps",
            "min_pixels",
            "learned_seeds",
            "learned_steps",
            "learned_frames",
            "learned_batch",
            "learned_pool",
            "learned_every",
        ):
            _checks.positive_int(name, getattr(self, name))
        if self.size < 4:
            raise ValueError(f"size must be >= 4 pixels, got {self.size}")
        _checks.seed("root_seed", self.root_seed)
        scenarios = (DATA,) if self.data else SCENARIOS
        for name, allowed in (("scenarios", scenarios), ("predictors", tuple(tracking.PREDICTORS))):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must list at least one of {', '.join(allowed)}, got {value!r}")
            _checks.distinct(name, value)
            for v in value:
                _checks.choice(name, v, allowed)
        if "reinit" not in self.predictors:
            raise ValueError(
                f"predictors must include reinit (the baseline every test is paired with), got {self.predictors}"
            )
        for name, low, high in (("scale", 1.0 / self.size, 1.0), ("speed", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
            _checks.real(name, np.asarray(value, float), low=low, high=high)
        _checks.real("margin", self.margin, low=0.0, low_open=True)
        _checks.real("separation", self.separation, low=0.0)
        _checks.real("temperature", self.temperature, low=0.0, low_open=True)
        _checks.real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _checks.real("decay", self.decay, low=0.0, high=1.0)
        _checks.real("tol", self.tol, low=0.0)
        _checks.real("position_scale", self.position_scale, low=0.0)
        _checks.real("merge_rel", self.merge_rel, low=0.0, low_open=True)
        _checks.choice("init", self.init, dynamics.INIT_METHODS)
        self._check_learned()
        savi_config(self, self.learned[0] if self.learned else "none").validate()  # steps, learned_every: named there
        _checks.choice("preset", self.preset, PRESETS)
        if self.size * self.size < self.objects + 1:
            raise ValueError(f"size={self.size} gives fewer pixels than tokens ({self.objects + 1})")
        self._check_data()
        return self

    def _check_data(self) -> None:
        """``data``: '' or a directory (or shard) holding MOVi's train shards; no learned arm with it.
        A CLEVRER directory is refused: CLEVRER publishes no per-pixel object masks, and every score
        of the study needs the true track ids of the pixels."""
        if not isinstance(self.data, str):
            raise TypeError(f"data must be a path (a str), got {self.data!r}")
        if not self.data:
            return
        import os

        from tokdyn.datasets import movi

        if self.learned:
            raise ValueError(
                f"learned must be empty with data={self.data!r} (the learned arm trains on the sprite videos), "
                f"got {self.learned}"
            )
        if os.path.isfile(self.data):
            if not movi.SHARD.match(os.path.basename(self.data)):
                raise ValueError(f"data: {self.data!r} is not a MOVi shard's published name: expected {movi.layout()}")
            return
        try:
            movi.find(self.data, "train")
        except FileNotFoundError as e:
            from tokdyn.datasets import clevrer

            try:
                clevrer.index(self.data)
            except FileNotFoundError:
                raise ValueError(f"data: {e}") from None
            raise ValueError(
                f"data: {self.data!r} holds CLEVRER's videos, which the video study cannot score: CLEVRER publishes "
                "no per-pixel object masks (its annotations give 3D positions), and every score of the study compares "
                f"the tokens' tracks with the true track id of each pixel. Give MOVi's shards instead: {movi.layout()}"
            ) from None
        except ValueError as e:
            raise ValueError(f"data: {e}") from None

    def _check_learned(self) -> None:
        """The learned arm's fields: its predictors, and seeds, frames, pool and steps that fit the
        fixed arm's."""
        if not isinstance(self.learned, tuple):
            raise TypeError(f"learned must be a tuple of names (a comma list), got {self.learned!r}")
        _checks.distinct("learned", self.learned)
        for v in self.learned:
            _checks.choice("learned", v, savi.PREDICTORS)
        if self.learned and self.learned_seeds > self.seeds:
            raise ValueError(
                f"learned_seeds must be at most seeds={self.seeds} (learned model s is scored on seed s's "
                f"videos), got {self.learned_seeds}"
            )
        if self.learned and self.learned_frames > self.frames:
            raise ValueError(
                f"learned_frames must be at most frames={self.frames} (a window of the training clips), "
                f"got {self.learned_frames}"
            )
        if self.learned_pool < len(self.scenarios):
            raise ValueError(
                f"learned_pool must give every scenario a clip (at least {len(self.scenarios)}), got "
                f"{self.learned_pool}"
            )
        if self.learned_steps % self.learned_every:
            raise ValueError(
                f"learned_steps must be a multiple of learned_every={self.learned_every}, got {self.learned_steps}"
            )
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)

    @property
    def n_tokens(self) -> int:
        """Tokens per frame: one per object and one for the background."""
        return self.objects + 1

    @property
    def conditions(self) -> tuple:
        """The fixed conditions: every predictor, and every carried one with the separation push."""
        out = list(self.predictors)
        if self.separation > 0:
            out += [p + SEP for p in self.predictors if p != "reinit"]
        return tuple(out)

    @property
    def learned_conditions(self) -> tuple:
        """The learned conditions: ``savi-<predictor>`` for every name of ``learned``."""
        return tuple(LEARNED + p for p in self.learned)

    @property
    def all_conditions(self) -> tuple:
        """Every condition of the tables: the fixed ones, then the learned ones."""
        return self.conditions + self.learned_conditions

    def estimate(self) -> Estimate:
        """Runs (scenario x condition x seed x video) and models, and their time: the fixed conditions
        at :data:`RUN_RATE` on the reference CPU (``dynamics`` work), the learned models at
        :data:`~tokdyn.studies.video.config.SAVI_RATE` model-steps a second scaled by a step's clips
        x frames x pixels (``training`` work), plus
        :data:`~tokdyn.studies.video.config.SAVI_FIXED_S` per learned predictor and 10 s on the
        host; each kind scaled by this machine's measured rate of it."""
        runs = len(self.scenarios) * len(self.conditions) * self.seeds * self.n_videos
        seconds = {"dynamics": runs * self.frames * self.n_steps * self.size**2 * RUN_RATE, "host": 10.0}
        if self.learned:
            step = self.learned_batch * self.learned_frames * self.size**2 / (8 * 8 * 32**2) / SAVI_RATE
            seconds["training"] = len(self.learned) * self.learned_seeds * self.learned_steps * step
            seconds["host"] += len(self.learned) * SAVI_FIXED_S
        # one scenario is one batch: every condition x seed x video x frame x pixel at once, with the
        # (tokens x pixels) distances of a step (at least 8 wide: the features, the labels' one-hots)
        names = ("seeds", "n_videos", "frames", "size", "objects")
        elements = (
            len(self.conditions) * self.seeds * self.n_videos * self.frames * self.size**2 * max(self.objects + 1, 8)
        )
        elements_fit(largest_option(self, names), elements)
        memory = 4.0 * 4 * elements
        if self.learned:  # the training pool, and a training step's activations (64 wide, a few per pixel)
            pool = self.learned_pool * self.frames * self.size**2 * 3
            elements_fit(largest_option(self, ("learned_pool", "frames", "size")), pool)
            memory = max(memory, 4.0 * pool + 4.0 * 16 * 64 * self.learned_batch * self.learned_frames * self.size**2)
        models = runs + len(self.learned) * self.learned_seeds
        return Estimate(memory=memory, option=largest_option(self, names), models=models, work=seconds)


def savi_config(cfg: Config, predictor: str) -> savi.Config:
    """The :class:`tokdyn.models.savi.Config` of the learned condition ``savi-<predictor>`` (the one
    place the study builds it): the study's frame size, one slot per token, the model's own widths
    (its defaults: the scenes study's Slot Attention), and the training: ``learned_batch`` clips of
    ``learned_frames`` frames a step, ``learned_steps`` steps with a warm-up of
    ``min(200, learned_steps // 10)``, a checkpoint every ``learned_every`` steps, ``learned_seeds``
    models."""
    schedule = dataclasses.replace(
        savi.Config().train,
        steps=cfg.learned_steps,
        steps_per_call=cfg.learned_every,
        warmup=max(1, min(200, cfg.learned_steps // 10)),
    )
    return savi.Config(
        frames=cfg.learned_frames,
        size=cfg.size,
        slots=cfg.n_tokens,
        predictor=predictor,
        batch_size=cfg.learned_batch,
        train=schedule,
        seeds=cfg.learned_seeds,
        root_seed=cfg.root_seed,
    )
