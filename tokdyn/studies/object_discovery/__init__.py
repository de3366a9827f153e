"""The scenes study: how far do the fixed token dynamics get on multi-object images, and what does
a learned Slot Attention add? (``tokdyn study scenes --out DIR``)

:func:`main`, :class:`Config`. On sprite scenes (:func:`tokdyn.data.scenes.sprite_scenes`) it runs the fixed methods on
per-pixel features (the token-dynamics rules, the variational-refinement rule and k-means, each
at the settings chosen on the validation split: :func:`run_fixed`) and trains the learned Slot
Attention (and, opt-in, IODINE) models (:func:`fit`, :func:`train_learned`), then scores every
method and seed on the test split by FG-ARI, matched mIoU and collapse. It writes
``results.csv``, ``learning_curve.csv``, ``examples.png``, ``learning_curve.png``, ``summary.md``
(:func:`summary`) and ``config.json``; every method and checkpoint is kept in ``DIR/parts/``, so a
rerun (or a killed one) resumes.

The steps, the outputs, resuming and the findings: :doc:`/studies/scenes`.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, dynamics, io, metrics, refinement, train
from tokdyn.data import scenes
from tokdyn.experiment import runner
from tokdyn.experiment.presets import PRESETS
from tokdyn.experiment.study import Estimate, Study, config_dict, digest, elements_fit, largest_option
from tokdyn.models import iodine, slots
from tokdyn.stats import figures
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
      root_seed: root PRNG seed.
      preset: '' or 'quick' (set by --quick: a smoke-sized run; summary.md's first line says so).
    """

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
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field (the learned models' through :meth:`tokdyn.models.slots.Config.validate`);
        raise ``ValueError``/``TypeError`` naming the field. Returns ``self``."""
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
        return self

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


# ---------------------------------------------------------------------------------------------- data


SPLITS = {"train": 0, "val": 1, "test": 2}


def split(cfg: Config, name: str) -> scenes.Scenes:
    """The ``train`` (n_train), ``val`` (n_val) or ``test`` (n_test) scenes, each split from
    ``fold_in(key(root_seed), 0 | 1 | 2)``."""
    n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[name]
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), SPLITS[name])
    return scenes.sprite_scenes(key, n, **cfg.generate_args())


def _method_key(cfg: Config, seed: int):
    """Seed ``seed``'s key of the fixed methods' initial tokens (scene i: ``fold_in(key, i)``)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.root_seed), 10), seed)


def _segments(masks, n_true: int):
    """Number of segments (background and visible objects) of each scene: (n,)."""
    flat = masks.reshape(masks.shape[0], -1)
    return jax.vmap(lambda m: metrics.n_used(m, n_true))(flat)


@functools.partial(jax.jit, static_argnames=("cfg", "kmeans"))
def _fixed(cfg: Config, images, masks, key, hparams, position_scale, kmeans: bool = False):
    """Per scene: FG-ARI, matched IoU, collapsed, labels of one fixed method (or k-means): the
    built-in rule with :class:`tokdyn.dynamics.Hparams`, the refinement rule with
    :class:`tokdyn.refinement.Hparams` (labels: the nearest final means, ``Result.labels``)."""
    K, n_true = cfg.n_slots, cfg.max_objects + 1
    x = scenes.pixel_features(images, position_scale=position_scale, fourier_bands=cfg.fourier_bands)  # (n, N, F)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images.shape[0]))

    def one(x, k):
        if kmeans:
            tokens = dynamics.init_tokens(k, K, x.shape[-1], method="kmeans++", x=x)
            return dynamics.kmeans(x, tokens, n_steps=cfg.dyn_steps).labels
        tokens = dynamics.init_tokens(k, K, x.shape[-1], method="data", x=x)
        rule = refinement.REFINEMENT if isinstance(hparams, refinement.Hparams) else dynamics.BUILTIN
        return dynamics.run(x, tokens, hparams, rule=rule, n_steps=cfg.dyn_steps, tol=cfg.tol).labels

    labels = jax.vmap(one)(x, keys)  # (n, N)
    return _scores(masks, labels, K, n_true)


def _scores(masks, labels, K: int, n_true: int) -> dict:
    flat = masks.reshape(masks.shape[0], -1)
    labels = labels.reshape(flat.shape)
    fg = jax.vmap(lambda m, l: metrics.fg_ari(m, l, n_true=n_true, n_pred=K))(flat, labels)
    iou = jax.vmap(lambda m, l: metrics.matched_iou(m, l, n_true=n_true, n_pred=K))(flat, labels)
    segs = _segments(masks, n_true)
    col = jax.vmap(lambda l, s: metrics.collapsed(l, K, s))(labels, segs)
    return dict(fg_ari=fg, miou=iou, collapsed=col, labels=labels.reshape(masks.shape))


def choose_settings(cfg: Config, name: str, val: scenes.Scenes) -> tuple[float, float, np.ndarray]:
    """``(temperature, position_scale, scores)``: the pair of ``temperatures`` x
    ``position_scales`` with the best mean validation FG-ARI for rule ``name`` (seed 0's initial
    tokens; k-means has no temperature: its row is NaN), and the (T, P) mean FG-ARI of each."""
    km = name == KMEANS
    base = dynamics.Hparams() if km else dynamics.method(name)
    temps = (float("nan"),) if km else cfg.temperatures
    scores = np.zeros((len(temps), len(cfg.position_scales)))
    for i, t in enumerate(temps):
        hp = base if km else dataclasses.replace(base, temperature=float(t))
        for j, ps in enumerate(cfg.position_scales):
            out = _fixed(cfg, val.images, val.masks, _method_key(cfg, 0), hp, float(ps), kmeans=km)
            scores[i, j] = float(jnp.mean(out["fg_ari"]))
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(temps[i]), float(cfg.position_scales[j]), scores


def refinement_settings(cfg: Config) -> list[refinement.Hparams]:
    """The refinement rule's settings swept on the validation split: ``refinement_log_scales`` x
    ``refinement_strengths`` (the strength fastest), each at step size 1 (EM steps)."""
    return [
        refinement.Hparams(step_size=1.0, prior_log_scale=float(s0), prior_strength=float(k))
        for s0 in cfg.refinement_log_scales
        for k in cfg.refinement_strengths
    ]


def choose_refinement(cfg: Config, val: scenes.Scenes) -> tuple[refinement.Hparams, float, np.ndarray]:
    """``(hparams, position_scale, scores)``: the refinement rule's setting of
    :func:`refinement_settings` x ``position_scales`` with the best mean validation FG-ARI (seed
    0's initial tokens, as :func:`choose_settings`), and the (S, P) mean FG-ARI of each."""
    settings = refinement_settings(cfg)
    scores = np.zeros((len(settings), len(cfg.position_scales)))
    for i, hp in enumerate(settings):
        for j, ps in enumerate(cfg.position_scales):
            out = _fixed(cfg, val.images, val.masks, _method_key(cfg, 0), hp, float(ps))
            scores[i, j] = float(jnp.mean(out["fg_ari"]))
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return settings[i], float(cfg.position_scales[j]), scores


def run_fixed(cfg: Config, name: str, val, test, study: Study) -> dict:
    """One fixed method (or ``kmeans``) on the test split, every seed, at the settings chosen on validation.

    Kept as the part ``fixed__NAME`` of ``study``.

    Args:
      cfg: the study's :class:`Config`.
      name: a name of :data:`FIXED_METHODS`, or :data:`KMEANS`.
      val: the validation :class:`~tokdyn.data.scenes.Scenes` (the temperature and position
        scale are chosen on them).
      test: the test :class:`~tokdyn.data.scenes.Scenes` (n scenes).
      study: the :class:`~tokdyn.experiment.study.Study` that keeps the part.

    Returns:
      A dict: ``fg_ari``, ``miou`` and ``collapsed`` (seeds, n), seed 0's ``labels`` of the first
      ``n_examples`` scenes (n_examples, size, size), the chosen ``temperature`` (NaN for the
      refinement rule, whose part holds its ``prior_log_scale`` and ``prior_strength`` instead)
      and ``position_scale``, and the validation ``sweep``.
    """

    def compute():
        km = name == KMEANS
        extra = {}
        if name == REFINEMENT:
            hp, position_scale, sweep = choose_refinement(cfg, val)
            temperature = float("nan")
            extra = dict(prior_log_scale=float(hp.prior_log_scale), prior_strength=float(hp.prior_strength))
        else:
            temperature, position_scale, sweep = choose_settings(cfg, name, val)
            hp = dynamics.Hparams() if km else dataclasses.replace(dynamics.method(name), temperature=temperature)
        per_seed = [
            _fixed(cfg, test.images, test.masks, _method_key(cfg, s), hp, position_scale, kmeans=km)
            for s in range(cfg.seeds)
        ]
        out = {k: np.stack([np.asarray(p[k]) for p in per_seed]) for k in ("fg_ari", "miou", "collapsed")}
        out["labels"] = np.asarray(per_seed[0]["labels"][: cfg.n_examples])
        return dict(out, temperature=temperature, position_scale=position_scale, sweep=sweep, **extra)

    return study.part(f"fixed__{name}", compute, key={"method": name})


# ---------------------------------------------------------------------------------------------- learned


def model_module(scfg):
    """The module of a learned model's configuration: :mod:`tokdyn.models.iodine` for an
    :class:`tokdyn.models.iodine.Config`, else :mod:`tokdyn.models.slots` (both have ``trainer``,
    ``models``, ``Hparams``, ``stamp``, ``default_strategy``, ``segment``, ``collapse``, ``params_of``)."""
    return iodine if isinstance(scfg, iodine.Config) else slots


def _learned_scores(scfg, state, images, masks, n_true: int, key) -> dict:
    """Per model and scene: FG-ARI, matched IoU, collapsed, duplicates, unused; labels. ``scfg``: a
    :class:`tokdyn.models.slots.Config` or :class:`tokdyn.models.iodine.Config` (duplicates of the
    final slots, or of IODINE's final posterior means)."""
    mod = model_module(scfg)
    out = {k: [] for k in ("fg_ari", "miou", "collapsed", "duplicates", "unused")}
    labels0 = None
    for i in range(scfg.seeds):
        labels, final = mod.segment(key, mod.params_of(state, i), scfg, images)
        s = _scores(masks, labels.reshape(labels.shape[0], -1), scfg.slots, n_true)
        dup, unused = jax.vmap(mod.collapse)(final, labels)
        for k, v in dict(s, duplicates=dup, unused=unused).items():
            if k in out:
                out[k].append(np.asarray(v))
        labels0 = np.asarray(labels) if labels0 is None else labels0
    return dict({k: np.stack(v) for k, v in out.items()}, labels=labels0)


def checkpoint_stamp(study: Study, cfg: Config, name: str) -> str:
    """The stamp of ``name``'s checkpoint: the study's stamp (the learning curve's validation
    scores depend on the whole configuration) and the models' configuration."""
    if name == IODINE:
        return f"{study.key}:{digest({'model': name, 'iodine': iodine.stamp(cfg.iodine_config())})}"
    return f"{study.key}:{digest({'model': name, 'slots': slots.stamp(cfg.slot_config(name))})}"


def model_configs(session, cfg: Config) -> dict:
    """What the study's stamp holds beside its configuration (the ``stamp_extra`` of :data:`SPEC`):
    the configuration of every learned model it can train (:meth:`Config.model_config`; ``learned``
    only chooses among them). The models' checkpoints are keyed on them, so a directory whose
    checkpoints were made for other model configurations (another shape of a model's ``Config``)
    is refused before any work, naming what differs, as one of another study configuration is."""
    return {"models": {name: config_dict(cfg.model_config(name)) for name in (*LEARNED, IODINE)}}


def fit(cfg: Config, name: str, images, study: Study, *, val=None, progress=None, **kw) -> train.Result:
    """Train (or resume) the ``seeds`` models of ``name`` with their checkpoint ``parts/NAME.npz`` of ``study``.

    :func:`tokdyn.train.train_many` of :func:`tokdyn.models.slots.trainer` (of
    :func:`tokdyn.models.iodine.trainer` for ``iodine``), every model at ``learning_rate``. After
    every call of ``eval_every`` steps the curves record, committed with the state in the
    checkpoint, ``val_fg_ari`` (with ``val``) and ``train_seconds`` (wall-clock seconds since the
    last record). A corrupt checkpoint is set aside with a warning and training starts again.

    Args:
      cfg: the study's :class:`Config`.
      name: a learned model of :data:`LEARNED`, or :data:`IODINE`.
      images: (n, size, size, 3) float32 training images in [0, 1].
      study: the :class:`~tokdyn.experiment.study.Study` that keeps the checkpoint.
      val: optional validation :class:`~tokdyn.data.scenes.Scenes`: each model's mean FG-ARI on
        the first ``n_curve`` of them is recorded.
      progress: optional :class:`tokdyn.io.Progress` counting steps.
      **kw: more keyword arguments of :func:`~tokdyn.train.train_many` (e.g. ``max_calls``,
        ``on_log``).

    Returns:
      The :class:`tokdyn.train.Result`.
    """
    scfg = cfg.model_config(name)
    mod = model_module(scfg)
    ckpt = study.part_path(name)
    n_true = cfg.max_objects + 1
    k_eval = jax.random.fold_in(jax.random.key(cfg.root_seed), 20)
    clock = [time.time()]

    def evaluate(step, state):
        out = {"train_seconds": np.full(cfg.seeds, time.time() - clock[0])}
        if val is not None:
            s = _learned_scores(scfg, state, val.images[: cfg.n_curve], val.masks[: cfg.n_curve], n_true, k_eval)
            out["val_fg_ari"] = np.mean(s["fg_ari"], axis=1)
        clock[0] = time.time()
        return out

    def run():
        return train.train_many(
            mod.trainer(scfg),
            images,
            *mod.models(scfg, mod.Hparams(learning_rate=cfg.learning_rate)),
            checkpointing=train.Checkpointing(ckpt, checkpoint_stamp(study, cfg, name)),
            evaluation=train.Evaluation(evaluate),
            execution=train.Execution(mod.default_strategy(jax.default_backend()), vectorised_init=False),
            progress=progress,
            **kw,
        )

    return io.recomputing(ckpt, run, before_retry=lambda: clock.__setitem__(0, time.time()))


def train_learned(cfg: Config, name: str, train_split, val, study: Study, progress=None) -> tuple:
    """Train the ``seeds`` models of ``name``, resuming from their checkpoint in ``study`` (:func:`fit`).

    The checkpoint holds the state and the whole learning curve together, so a run killed at any
    moment loses no curve point.

    Args:
      cfg: the study's :class:`Config`.
      name: a learned model of :data:`LEARNED`, or :data:`IODINE`.
      train_split: the training :class:`~tokdyn.data.scenes.Scenes`.
      val: the validation :class:`~tokdyn.data.scenes.Scenes` (the curve's FG-ARI).
      study: the :class:`~tokdyn.experiment.study.Study` that keeps the checkpoint.
      progress: optional :class:`tokdyn.io.Progress` counting steps; it ends at the whole budget,
        steps done before a resume included.

    Returns:
      ``(state, curve rows, training seconds)``: the stacked state, per step and seed the mean
      training ``loss`` over the interval and ``val_fg_ari``, and the wall-clock seconds of
      training.
    """
    seen = []
    res = fit(
        cfg, name, train_split.images, study, val=val, progress=progress, on_log=lambda step, logs: seen.append(step)
    )
    if progress is not None and res.stopped_at > len(seen) * cfg.eval_every:  # the steps done before a resume
        progress.update(res.stopped_at - len(seen) * cfg.eval_every)
    rows = []
    for c, step in enumerate(res.steps):
        for i in range(cfg.seeds):
            rows.append(
                dict(
                    method=name,
                    seed=i,
                    step=int(step),
                    loss=float(res.curves["loss"][i, c]),
                    val_fg_ari=float(res.curves["val_fg_ari"][i, c]),
                )
            )
    seconds = float(np.nansum(res.curves["train_seconds"][0]))
    return res.state, rows, seconds


# ---------------------------------------------------------------------------------------------- tables


def rows_of(cfg: Config, name: str, res: dict) -> list[dict]:
    """The ``results.csv`` rows (:data:`COLUMNS`) of method ``name``, one per seed, from its per-seed,
    per-scene scores ``res`` (means over the test scenes; ``failed`` when FG-ARI < ``fail_below``)."""
    rows = []
    for s in range(cfg.seeds):
        fg = float(np.mean(res["fg_ari"][s]))
        rows.append(
            dict(
                method=name,
                seed=s,
                fg_ari=fg,
                miou=float(np.mean(res["miou"][s])),
                collapsed=float(np.mean(res["collapsed"][s])),
                duplicates=float(np.mean(res["duplicates"][s])) if "duplicates" in res else float("nan"),
                unused=float(np.mean(res["unused"][s])) if "unused" in res else float("nan"),
                temperature=float(res.get("temperature", float("nan"))),
                position_scale=float(res.get("position_scale", float("nan"))),
                failed=int(fg < cfg.fail_below),
            )
        )
    return rows


GOAL_MEAN, GOAL_MIN, GOAL_MINUTES = 0.90, 0.80, 30  # the learned model's goal on the default scenes


def goal_met(fg_ari, seconds: float) -> bool:
    """Whether per-seed test FG-ARIs ``fg_ari`` trained in ``seconds`` meet the goal: a mean of at
    least :data:`GOAL_MEAN`, no seed below :data:`GOAL_MIN`, at most :data:`GOAL_MINUTES` minutes."""
    fg = np.asarray(fg_ari, float)
    return bool(fg.size and np.mean(fg) >= GOAL_MEAN and np.min(fg) >= GOAL_MIN and seconds <= 60 * GOAL_MINUTES)


def summary(cfg: Config, rows: list[dict], seconds: dict, curves: dict, knobs: dict | None = None) -> str:
    """The text of ``summary.md``.

    The table of every method (mean ± sd over seeds), the failed seeds, each learned model's
    validation FG-ARI along training and the seconds each part took.

    Args:
      cfg: the study's :class:`Config`.
      rows: ``results.csv``'s rows, one per method and seed.
      seconds: learned model -> its training seconds.
      curves: learned model -> its curve rows (:func:`train_learned`).
      knobs: with ``refinement`` among the methods, its chosen ``prior_log_scale`` and
        ``prior_strength``, said below the table; else None.

    Returns:
      The Markdown text.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [
        "# Scenes study: fixed token dynamics, k-means and a learned Slot Attention on sprite scenes",
        "",
        f"{cfg.n_test} test scenes of {cfg.size} x {cfg.size}, {cfg.min_objects}-{cfg.max_objects} objects "
        f"({', '.join(cfg.shapes)}), {cfg.background} background; K = {cfg.n_slots} tokens / slots; "
        f"{cfg.seeds} seeds per method. FG-ARI and matched mIoU are means over the test scenes, then mean "
        f"+- std over seeds; a seed fails when its FG-ARI is below {cfg.fail_below}.",
        "",
        "| method | temperature | position scale | FG-ARI | mIoU | collapsed scenes | duplicate slots | unused slots "
        "| failed seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        col = lambda k: np.asarray([x[k] for x in r], float)
        ms = lambda k, d=3: f"{np.mean(col(k)):.{d}f} +- {np.std(col(k)):.{d}f}" if np.all(np.isfinite(col(k))) else "-"
        t, ps = r[0]["temperature"], r[0]["position_scale"]
        g = lambda v: "-" if not np.isfinite(v) else f"{v:g}"
        lines.append(
            f"| {m} | {g(t)} | {g(ps)} | {ms('fg_ari')} | {ms('miou')} | "
            f"{ms('collapsed', 2)} | {ms('duplicates', 2)} | {ms('unused', 2)} | "
            f"{int(np.sum(col('failed')))} / {len(r)} |"
        )
    if knobs:
        lines += [
            "",
            f"refinement (no temperature): prior_log_scale s0 = {knobs['prior_log_scale']:g}, prior_strength "
            f"kappa = {knobs['prior_strength']:g} (EM steps), chosen on the validation split with the "
            "position scale.",
        ]
    for m, sec in seconds.items():
        fg = np.asarray([x["fg_ari"] for x in rows if x["method"] == m])
        lines += [
            "",
            f"**{m}**: {cfg.train_steps} steps x {cfg.seeds} seeds trained together in {sec / 60:.1f} min "
            f"on {jax.devices()[0].platform} ({io.environment().get('cpu_count', '?')} cores); the goal "
            f"(mean FG-ARI >= {GOAL_MEAN:.2f}, no seed below {GOAL_MIN:.2f}, within {GOAL_MINUTES} min) is "
            f"{'met' if goal_met(fg, sec) else 'not met'}: mean {np.mean(fg):.3f}, lowest {np.min(fg):.3f}, "
            f"{int(np.sum(fg >= GOAL_MEAN))} of {len(fg)} seeds >= {GOAL_MEAN:.2f}.",
        ]
        c = [r for r in curves[m] if r["seed"] == 0]
        if c:
            pts = ", ".join(
                f"{r['step']}: {np.mean([x['val_fg_ari'] for x in curves[m] if x['step'] == r['step']]):.2f}"
                for r in c[:: max(1, len(c) // 8)]
            )
            lines.append(f"Validation FG-ARI (mean over seeds) by step: {pts}.")
    return "\n".join(lines)


def plot_examples(path: str, cfg: Config, test, labels: dict) -> str:
    """Draw ``n_examples`` test scenes, their true masks and every method's segments to ``path``.

    Args:
      path: the PNG file to write.
      cfg: the study's :class:`Config` (``n_examples``).
      test: the test :class:`~tokdyn.data.scenes.Scenes`.
      labels: method -> (n, size, size) int segment labels of seed 0.

    Returns:
      ``path``.
    """
    n = min(cfg.n_examples, test.images.shape[0])
    columns = {"image": np.asarray(test.images[:n]), "true": np.asarray(test.masks[:n])}
    columns.update({m: v[:n] for m, v in labels.items()})
    return figures.segmentation_grid(path, columns, title="test scenes: true masks and each method's segments (seed 0)")


def plot_curves(path: str, curves: dict) -> str:
    """Draw each learned model's validation FG-ARI against the step, a line per seed (``curves``:
    method -> curve rows of :data:`CURVE_COLUMNS`) to ``path``; returns ``path``."""
    panels = {}
    steps = None
    for m, rows in curves.items():
        steps = sorted({r["step"] for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        panels[m] = {
            f"seed {s}": [next(r["val_fg_ari"] for r in rows if r["step"] == t and r["seed"] == s) for t in steps]
            for s in seeds
        }
    title = "learned models" if IODINE in curves else "learned Slot Attention"
    return figures.line_plot(path, steps, {}, panels=panels, xlabel="step", ylabel="validation FG-ARI", title=title)


# ---------------------------------------------------------------------------------------------- the study


def run(session: runner.Session, cfg: Config) -> runner.Result:
    """Every fixed method, then every learned model (each kept as it finishes:
    :doc:`/studies/scenes`): ``results.csv`` and ``learning_curve.csv``."""
    study, quiet = session.study, session.quiet
    val, test = split(cfg, "val"), split(cfg, "test")
    results, labels = {}, {}
    fixed = list(cfg.methods) + ([KMEANS] if cfg.kmeans else [])
    with io.Progress(len(fixed), desc="fixed methods", unit="methods", quiet=quiet) as progress:
        for name in fixed:
            results[name] = run_fixed(cfg, name, val, test, study)
            labels[name] = results[name]["labels"]
            progress.update(1)
    seconds, curves = {}, {}
    if cfg.learned:
        pool = split(cfg, "train")
        k_test = jax.random.fold_in(jax.random.key(cfg.root_seed), 21)
        with io.Progress(
            cfg.train_steps * len(cfg.learned), desc="learned models", unit="steps", quiet=quiet
        ) as progress:
            for name in cfg.learned:
                state, curves[name], seconds[name] = train_learned(cfg, name, pool, val, study, progress)
                scfg = cfg.model_config(name)
                results[name] = study.part(
                    f"{name}__test",
                    lambda: _learned_scores(scfg, state, test.images, test.masks, cfg.max_objects + 1, k_test),
                    key={"model": name, "step": int(np.asarray(state.step)[0])},
                )
                results[name]["labels"] = results[name]["labels"][: cfg.n_examples]
                labels[name] = results[name]["labels"]
    session.timings["training_s"] = seconds
    rows = [r for name in results for r in rows_of(cfg, name, results[name])]
    curve_rows = [r for name in curves for r in curves[name]]
    tables = {
        "results.csv": io.to_columns(rows, COLUMNS),
        "learning_curve.csv": io.to_columns(curve_rows, CURVE_COLUMNS),
    }
    knobs = (
        {k: float(results[REFINEMENT][k]) for k in ("prior_log_scale", "prior_strength")}
        if REFINEMENT in results
        else None
    )
    return runner.Result(
        tables, data=dict(rows=rows, seconds=seconds, curves=curves, test=test, labels=labels, knobs=knobs)
    )


def draw(session: runner.Session, cfg: Config, result: runner.Result) -> list:
    """``examples.png`` and, with learned models, ``learning_curve.png``; returns their paths."""
    d = result.data
    return [
        plot_examples(session.path("examples.png"), cfg, d["test"], d["labels"]),
        plot_curves(session.path("learning_curve.png"), d["curves"]) if d["curves"] else None,
    ]


SPEC = runner.Spec(
    name="scenes",
    config=Config,
    run=run,
    figures=draw,
    summary=lambda cfg, r: summary(cfg, r.data["rows"], r.data["seconds"], r.data["curves"], r.data["knobs"]),
    outputs=("results.csv", "learning_curve.csv"),
    figure_files=("examples.png", "learning_curve.png"),
    selection=("methods", "kmeans", "learned", "preset"),  # they only choose which methods run (or label it)
    stamp_extra=model_configs,
)


main = runner.entry(SPEC, __name__, returns="True when it finished.")
