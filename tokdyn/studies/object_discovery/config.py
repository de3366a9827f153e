"""The scenes study's :class:`Config`: its fields and checks, the learned models'
configurations, the estimate, the method names and the tables' columns. The leaf of the package:
it imports none of its parts."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from tokdyn import _checks, dynamics, refinement
from tokdyn.data import scenes
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate, elements_fit, largest_option
from tokdyn.models import iodine, slots
from tokdyn.train import optim


FIXED = ("baseline", "inertia", "repulsion", "sinkhorn", "annealing")
REFINEMENT = "refinement"  # the variational-refinement rule (tokdyn.refinement), a fixed method beside METHODS'
FIXED_METHODS = (*dynamics.METHODS, REFINEMENT)  # the names ``methods`` may give
LEARNED = ("slot_attention", "slot_attention_implicit")
IODINE = "iodine"  # the learned IODINE (tokdyn.models.iodine): opt-in, not in the default ``learned``
MODELS = (*LEARNED, IODINE)  # the names ``learned`` may give
KMEANS = "kmeans"
COLUMNS = (
    "method",
    "seed",
    "fg_ari",
    "miou",
    "collapsed",
    "duplicates",
    "unused",
    "temperature",
    "position_scale",
    "failed",
)
CURVE_COLUMNS = ("method", "seed", "step", "loss", "val_fg_ari")
INT32_MAX = 2**31 - 1
LEARNED_RATE = 18.0  # model-steps a second of the default learned model on the reference CPU (the default run: 17.4)
IODINE_RATE = 5.0  # model-steps a second of the study's IODINE (iodine_config) at the default sizes, same CPU:
# measured 2.0-2.4 beside other work where the default Slot Attention ran 5.2-7.9 (about 0.3 of its rate)
LEARNED_COMPILE = 15.0  # seconds of host work a learned model (its compiles) on the reference CPU: the quick
# preset's two took 12-19 s each, compiles most of it (benchmarks/README.md, the time estimates)
REFINEMENT_COST = 3.0  # refinement's seconds per run over a split against a built-in rule's (measured 2-4x)
MAX_FOURIER_BANDS = 20  # beyond, pi * 2^B * position is below float32's resolution


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      size: image side in pixels.
      min_objects: fewest objects per scene.
      max_objects: most objects per scene (K = max_objects + 1 tokens and slots).
      shapes: sprite shapes, names from tokdyn.data.scenes.SHAPES.
      scale: (low, high) object size as a fraction of the canvas side.
      background: plain | textured.
      n_train: scenes in the learned models' training pool.
      n_val: validation scenes (the fixed methods' temperatures, the learning curve).
      n_test: test scenes (every reported figure).
      methods: fixed token-dynamics rules, names from tokdyn.dynamics.METHODS, and "refinement"
        (the variational-refinement rule, tokdyn.refinement.REFINEMENT).
      temperatures: the validation sweep of each fixed rule's (final) temperature (not of
        refinement, which has none).
      refinement_log_scales: the validation sweep of refinement's prior_log_scale s0 (the log of
        the scale a segment is expected to have in the features).
      refinement_strengths: the validation sweep of refinement's prior_strength kappa
        (pseudo-points per token; swept with refinement_log_scales and position_scales).
      kmeans: also run k-means (k-means++ seeding, Lloyd) on the same features.
      dyn_steps: most steps of the fixed rules and of k-means.
      tol: the fixed rules stop when no coordinate moves more than this.
      position_scales: weights of the pixel position in the features (colour has weight 1; 0: colour
        alone), swept on the validation split with the temperature (k-means takes the best of its
        own).
      fourier_bands: Fourier bands of the position added to the features (0: none).
      learned: learned models, names from slot_attention | slot_attention_implicit | iodine
        (tokdyn.models.iodine, at :meth:`iodine_config`; not in the default).
      seeds: seeds per method (the learned models of a kind are trained together).
      train_steps: optimiser steps of every learned model.
      batch_size: images per optimiser step.
      learning_rate: peak Adam learning rate.
      iterations: Slot Attention iterations.
      slot_size: slot width D.
      encoder_channels: channels of the learned encoder's convolutions.
      encoder_kernel: side of the encoder's convolution kernels (1: per-pixel layers).
      encoder_stride: stride of the encoder's last convolution (Slot Attention attends over
        (size / encoder_stride)^2 inputs).
      slot_init: how the slots start, random | farthest (tokdyn.models.slots.Config).
      masks: the slots' masks, decoder | attention (tokdyn.models.slots.Config).
      decoder: spatial-broadcast decoder, mlp | conv | cnn.
      decoder_hidden: hidden width of the decoder.
      decoder_stride: the decoder paints a (size / decoder_stride)^2 grid, resized bilinearly to the
        image.
      eval_every: steps between learning-curve points (the checkpoint interval).
      n_curve: validation scenes scored at every learning-curve point.
      fail_below: a seed fails when its mean test FG-ARI is below this.
      n_examples: test scenes drawn in examples.png.
      data: '' (the synthetic sprite scenes) or a multi-object dataset's file, or a directory holding
        one under its published name (clevr_with_masks_train.tfrecords, multi_dsprites_*.tfrecords,
        tetrominoes_train.tfrecords, objects_room_*.tfrecords: tokdyn.datasets.multi_object): its
        scenes with min_objects to max_objects visible objects, in file order, are the splits (the
        first n_val validate, the next n_test test, the next n_train train), cropped (CLEVR) and
        resized to size x size; shapes, scale and background are then unused.
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; summary.md's first line says so).
    """

    SEQUENCES = ("scale",)  # (low, high) ranges, not sets of conditions: a value may repeat (cli.check_repeats)

    size: int = 32
    min_objects: int = 2
    max_objects: int = 4
    shapes: tuple = ("square", "circle", "triangle")
    scale: tuple = (0.3, 0.5)
    background: str = "plain"
    n_train: int = 8000
    n_val: int = 256
    n_test: int = 1000
    methods: tuple = (*FIXED, REFINEMENT)
    temperatures: tuple = (0.003, 0.01, 0.03, 0.1, 0.3)
    refinement_log_scales: tuple = (-1.5, -1.0, -0.5)
    refinement_strengths: tuple = (30.0, 100.0)
    kmeans: bool = True
    dyn_steps: int = 50
    tol: float = 1e-4
    position_scales: tuple = (0.0, 0.25, 0.5, 1.0)
    fourier_bands: int = 0
    learned: tuple = LEARNED
    seeds: int = 4
    train_steps: int = 4000
    batch_size: int = 16
    learning_rate: float = 2e-3
    iterations: int = 3
    slot_size: int = 64
    encoder_channels: tuple = (32, 32)
    encoder_kernel: int = 1
    encoder_stride: int = 1
    slot_init: str = "farthest"
    masks: str = "attention"
    decoder: str = "mlp"
    decoder_hidden: int = 32
    decoder_stride: int = 2
    eval_every: int = 500
    n_curve: int = 128
    fail_below: float = 0.5
    n_examples: int = 6
    data: str = ""
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field (the learned models' through :meth:`tokdyn.models.slots.Config.validate`);
        raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
        self._check_sizes()
        self._check_conditions()
        _checks.real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _checks.real("fail_below", self.fail_below, low=-0.5, high=1.0)
        if self.train_steps % self.eval_every:
            raise ValueError(f"train_steps must be a multiple of eval_every={self.eval_every}, got {self.train_steps}")
        if self.n_curve > self.n_val:
            raise ValueError(
                f"n_curve must be at most n_val={self.n_val} (the learning curve scores validation "
                f"scenes), got {self.n_curve}"
            )
        if self.n_examples > self.n_test:
            raise ValueError(
                f"n_examples must be at most n_test={self.n_test} (examples are test scenes), got {self.n_examples}"
            )
        elements_fit("size", self.size, self.size, 3)  # one image, before the generator is traced with it
        # the scene generator's own checks (they run before tracing), without generating anything
        jax.eval_shape(functools.partial(scenes.sprite_scenes, jax.random.key(0), 1, **self.generate_args()))
        for m in self.learned or LEARNED[:1]:  # the model's fields are checked even when no model is learned
            self.model_config(m).validate()
        _checks.choice("preset", self.preset, PRESETS)
        self._check_data()
        return self

    def _check_data(self) -> None:
        """``data``: '' or a multi-object dataset's file found by its published name, whose scenes
        can hold ``max_objects`` objects (the file itself is read only when the study runs)."""
        from tokdyn.datasets import multi_object

        multi_object.check_option(self.data, self.max_objects)

    def _check_sizes(self) -> None:
        """The counts and sizes: positive, within an int32 where the programs count them."""
        for name in (
            "size",
            "min_objects",
            "max_objects",
            "n_train",
            "n_val",
            "n_test",
            "dyn_steps",
            "seeds",
            "train_steps",
            "batch_size",
            "eval_every",
            "n_curve",
        ):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive_int("fourier_bands", self.fourier_bands, minimum=0)
        _checks.positive_int("n_examples", self.n_examples, minimum=0)
        _checks.seed("root_seed", self.root_seed)
        for name in ("train_steps", "dyn_steps", "root_seed"):  # step counters and seeds are int32 in the programs
            if getattr(self, name) > INT32_MAX:
                raise ValueError(
                    f"{name} must be at most {INT32_MAX:,} (an int32 inside the compiled programs), "
                    f"got {getattr(self, name):,}"
                )
        if self.fourier_bands > MAX_FOURIER_BANDS:
            raise ValueError(
                f"fourier_bands must be at most {MAX_FOURIER_BANDS} (higher frequencies are below "
                f"float32's resolution), got {self.fourier_bands}"
            )

    def _check_conditions(self) -> None:
        """The methods, the learned models and every set of conditions: known names, each value once,
        in range."""
        for name, allowed in (("methods", FIXED_METHODS), ("learned", MODELS)):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple of names, got {value!r}")
            for m in value:
                _checks.choice(name, m, allowed)
            _checks.distinct(name, value)  # each method is one condition: a repeat would count its seeds twice
        for name in (
            "shapes",
            "temperatures",
            "position_scales",
            "refinement_log_scales",
            "refinement_strengths",
        ):  # sets of conditions, each value once
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple (a comma list), got {value!r}")
            _checks.distinct(name, value)
        if not isinstance(self.kmeans, bool):
            raise TypeError(f"kmeans must be a bool, got {self.kmeans!r}")
        if not self.methods and not self.learned and not self.kmeans:
            raise ValueError("methods and learned are both empty and kmeans is off: nothing to run")
        if set(self.methods) - {REFINEMENT} and not self.temperatures:
            raise ValueError("temperatures must hold at least one value when methods are given")
        _checks.real("temperatures", np.asarray(self.temperatures, float), low=0.0, low_open=True)
        if REFINEMENT in self.methods and not (self.refinement_log_scales and self.refinement_strengths):
            raise ValueError(
                "refinement_log_scales and refinement_strengths must each hold at least one value when "
                "methods names refinement"
            )
        _checks.real(
            "refinement_log_scales",
            np.asarray(self.refinement_log_scales, float),
            low=refinement.LOG_SCALE_MIN,
            high=refinement.LOG_SCALE_MAX,
        )
        _checks.real("refinement_strengths", np.asarray(self.refinement_strengths, float), low=0.0)
        _checks.real("tol", self.tol, low=0.0)
        if not self.position_scales:
            raise ValueError("position_scales must hold at least one value")
        _checks.real("position_scales", np.asarray(self.position_scales, float), low=0.0)

    def estimate(self) -> Estimate:
        """The largest allocation (a split's images, the fixed methods' per-pixel state over a
        split, a learned model's activations over a batch, the learned models' parameters and
        optimiser state, the per-seed score tables), naming the
        option that makes it large, and a rough time on the reference CPU (calibrated on the
        default run: 2.4 min for the fixed methods, :data:`LEARNED_RATE` model-steps a second for
        the learned ones, scaled by :meth:`step_work`), scaled by this machine's ``dynamics`` and
        ``training`` rates; 20 s and :data:`LEARNED_COMPILE` a learned model on the host.
        :class:`tokdyn.experiment.study.Refused` naming the option when one array would hold more
        elements than XLA can index."""
        groups = self.memory_groups()
        N, K, F = self.size * self.size, self.n_slots, 5 + 4 * self.fourier_bands
        n_fixed = max(self.n_val, self.n_test)
        for names, elements, _ in groups.values():
            elements_fit(largest_option(self, names), elements)
        names, _, memory = max(groups.values(), key=lambda g: g[2])
        default = Config()
        settings = {
            m: (
                len(self.refinement_log_scales) * len(self.refinement_strengths)
                if m == REFINEMENT
                else len(self.temperatures)
            )
            for m in self.methods
        }
        runs = {m: n * len(self.position_scales) + self.seeds for m, n in settings.items()}
        fixed_runs = sum(runs.values()) + int(self.kmeans) * (len(self.position_scales) + self.seeds)
        fixed_work = fixed_runs + (REFINEMENT_COST - 1) * runs.get(REFINEMENT, 0)
        per_run = (
            144.0 / (5 * (15 + 4)) * (n_fixed * N * K * F * self.dyn_steps) / (1000 * 1024 * 5 * 5 * 50)
        )  # seconds of one method x setting over a split, the default's 2.4 min
        step = self.step_work() / default.step_work() / LEARNED_RATE
        step_iodine = self.iodine_work() / default.iodine_work() / IODINE_RATE
        seconds = {
            "dynamics": fixed_work * per_run,
            "training": sum(step_iodine if m == IODINE else step for m in self.learned)
            * (self.seeds * self.train_steps),
            "host": 20.0 + LEARNED_COMPILE * len(self.learned),
        }
        return Estimate(
            memory=float(memory),
            option=largest_option(self, names),
            models=len(self.learned) * self.seeds + fixed_runs,
            work=seconds,
        )

    def memory_groups(self) -> dict:
        """The allocations :meth:`estimate` weighs: ``{what: (options that scale it, elements of its
        largest array, bytes)}`` for a split's images, the fixed methods' per-pixel state, a learned
        model's activations over a batch, the segmentation, the score tables, the keys and the learned
        models' parameters and optimiser state."""
        N, K = self.size * self.size, self.n_slots
        F = 5 + 4 * self.fourier_bands  # features per pixel
        n_fixed = max(self.n_val, self.n_test)
        hidden = max(max(self.encoder_channels), self.slot_size, K * self.decoder_hidden)
        Ds, H, k2 = self.slot_size, self.decoder_hidden, self.encoder_kernel**2
        chans = (3,) + tuple(self.encoder_channels)
        conv = sum(a * b for a, b in zip(chans, chans[1:]))  # the encoder's kernels hold k2 * conv weights
        groups = {  # (options that scale it, elements of its largest array, bytes)
            "train split": (("n_train", "size"), self.n_train * N * 3, 4 * self.n_train * N * 5),
            "fixed methods": (
                ("n_test", "n_val", "size", "max_objects", "fourier_bands"),
                n_fixed * N * max(F, K),
                4 * n_fixed * N * (F + 8 * K),
            ),
            "learned": (
                ("batch_size", "size", "max_objects", "decoder_hidden", "slot_size", "encoder_channels", "iterations"),
                self.batch_size * N * hidden,
                4 * self.batch_size * N * hidden * (8 + 2 * self.iterations),
            ),
            "segmentation": (
                ("size", "max_objects", "decoder_hidden"),
                min(256, n_fixed) * N * hidden,
                4 * min(256, n_fixed) * N * hidden * 4,
            ),
            "scores": (("seeds", "n_test"), self.seeds * self.n_test, 8 * self.seeds * self.n_test * 8),
            "keys": (("seeds",), 2 * self.seeds, 64 * self.seeds),
            "parameters": (
                ("slot_size", "decoder_hidden", "encoder_channels", "encoder_kernel", "seeds"),
                max(2 * Ds * Ds, H * H, k2 * max(chans) ** 2),
                4 * 4 * self.seeds * (14 * Ds * Ds + 4 * H * H + k2 * conv + chans[-1] * Ds + Ds * H),
            ),
        }
        return groups

    @classmethod
    def quick(cls) -> "Config":
        """A one-minute version (tests, smoke runs)."""
        return cls(
            size=16,
            max_objects=3,
            n_train=256,
            n_val=32,
            n_test=48,
            temperatures=(0.01, 0.1),
            position_scales=(0.5, 1.0),
            dyn_steps=20,
            seeds=2,
            train_steps=20,
            batch_size=4,
            slot_size=16,
            encoder_channels=(8,),
            decoder_hidden=8,
            eval_every=10,
            n_curve=16,
            n_examples=3,
            preset="quick",
        )

    def step_work(self) -> float:
        """A learned model's work per step, up to a constant: the full-resolution encoder, the
        strided encoder positions through the encoder MLP and every Slot Attention iteration, and
        the decoder's K painted grids (for the time estimate)."""
        N, Ni = self.size**2, (self.size // self.encoder_stride) ** 2
        Nd = (self.size // self.decoder_stride) ** 2
        width = max(max(self.encoder_channels), self.slot_size)
        return self.batch_size * (
            N * max(self.encoder_channels) * self.encoder_kernel**2
            + Ni * width * (4 + self.iterations)
            + self.n_slots * Nd * self.decoder_hidden * 3
        )

    def iodine_work(self) -> float:
        """The learned IODINE's work per step, up to a constant (for the time estimate): its K
        decoded grids, evaluated and differentiated at each of its ``iterations + 1`` posteriors
        (:meth:`iodine_config`: 4 refinements, a decoder of width ``decoder_hidden``)."""
        c = self.iodine_config()
        Nd = (self.size // c.decoder_stride) ** 2
        return self.batch_size * self.n_slots * (c.iterations + 1) * (Nd * c.decoder_hidden + self.size**2)

    @property
    def n_slots(self) -> int:
        """K, the tokens of the fixed methods and the slots of the learned ones: ``max_objects + 1``
        (every object and the background)."""
        return self.max_objects + 1

    def generate_args(self) -> dict:
        """The keyword arguments of :func:`tokdyn.data.scenes.sprite_scenes` for this study's scenes."""
        return dict(
            size=self.size,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
            shapes=tuple(self.shapes),
            scale=tuple(float(v) for v in self.scale),
            background=self.background,
        )

    def train_config(self) -> optim.Config:
        """The training of every learned model (:class:`tokdyn.train.optim.Config`): ``train_steps``
        steps in calls of ``eval_every`` (the checkpoint and evaluation interval), a linear warm-up
        of ``min(200, train_steps // 10)`` steps (at least 1), then a cosine decay to 5% of the
        peak, gradients clipped to global norm 1."""
        return optim.Config(
            steps=self.train_steps,
            steps_per_call=self.eval_every,
            warmup=min(200, self.train_steps // 10) or 1,
            decay="cosine",
            final_fraction=0.05,
            clip_norm=1.0,
        )

    def slot_config(self, name: str) -> slots.Config:
        """The :class:`tokdyn.models.slots.Config` of learned model ``name`` (``slot_attention`` or
        ``slot_attention_implicit``): this study's sizes, schedule and seeds, a warm-up of
        ``min(200, train_steps // 10)`` steps and a checkpoint every ``eval_every`` steps."""
        return slots.Config(
            size=self.size,
            slots=self.n_slots,
            iterations=self.iterations,
            slot_size=self.slot_size,
            mlp_hidden=2 * self.slot_size,
            encoder_channels=tuple(self.encoder_channels),
            encoder_kernel=self.encoder_kernel,
            encoder_stride=self.encoder_stride,
            slot_init=self.slot_init,
            masks=self.masks,
            decoder=self.decoder,
            decoder_hidden=self.decoder_hidden,
            decoder_stride=self.decoder_stride,
            implicit=name == "slot_attention_implicit",
            train=self.train_config(),
            batch_size=self.batch_size,
            seeds=self.seeds,
            root_seed=self.root_seed,
        )

    def iodine_config(self) -> iodine.Config:
        """The :class:`tokdyn.models.iodine.Config` of the learned IODINE (``iodine``): this study's
        image size, K slots, schedule, batch, seeds and checkpoint interval, and the model's own
        sizes (fixed here, not options): 16 latents a slot, 4 refinements, pixel scale 0.1, the
        study's ``decoder`` / ``decoder_hidden`` / ``decoder_stride``, a refinement network of two
        32-channel convolutions and a 64-wide dense layer and LSTM; warm-up as :meth:`slot_config`."""
        return iodine.Config(
            size=self.size,
            slots=self.n_slots,
            latent_size=16,
            iterations=4,
            pixel_scale=0.1,
            decoder=self.decoder,
            decoder_hidden=self.decoder_hidden,
            decoder_stride=self.decoder_stride,
            refine_channels=(32, 32),
            refine_hidden=64,
            train=self.train_config(),
            batch_size=self.batch_size,
            seeds=self.seeds,
            root_seed=self.root_seed,
        )

    def model_config(self, name: str):
        """The configuration of learned model ``name``: :meth:`iodine_config` for ``iodine``, else
        :meth:`slot_config`."""
        return self.iodine_config() if name == IODINE else self.slot_config(name)
