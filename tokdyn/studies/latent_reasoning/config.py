"""The latent-reasoning study's configuration: :class:`Config` (what is trained, the stop rule, the
time and memory it asks for), the references every variant is tested against (:data:`REFERENCES`),
the default task families (:data:`FAMILIES`) and a variant's own training configuration
(:func:`training`). The leaf of the package: it imports none of its parts."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from tokdyn import _checks, train
from tokdyn.experiment import study as study_dir
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import training as latent_training
from tokdyn.models.latent import variants as latent_variants
from tokdyn.models.latent.variants import VARIANTS, variant
from tokdyn.train import optim
from tokdyn.train.store import TESTED

STUDY = "latent-reasoning"  # the name a latent-reasoning directory is stamped with
SELECTION = ("variants", "train", "max_minutes", "preset")  # fields that choose what runs or how it is labelled
REFERENCES = ("direct", "text")  # every variant is tested against these
FAMILIES = ("read", "gravity", "path")  # the default families: the control and two that imagination helps
MAX_ROOT_SEED = 2**32 - 1  # jax.random.key keeps the low 32 bits of a larger seed: two seeds would alias
# The time estimate said up front: the model's training FLOPs at FLOPS, plus STEP_SECONDS per step for
# what does not grow with the model (dispatch, evaluation, checkpoints, compiles), on the reference CPU;
# the first scaled by the machine's measured training rate, the second by its host rate
# (tokdyn.experiment.rates). Fitted to default and --quick runs on the reference CPU, a 2-core x86_64
# (about 35 and 3 min); the FLOP count is a
# rough upper bound, so FLOPS is an effective rate, not the machine's.
FLOPS = 9e10
STEP_SECONDS = 0.03


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study (stamped into its directory, recorded in ``config.json``).

    Attributes:
      variants: training variants to run, in order, names from tokdyn.models.latent.variants.VARIANTS.
      train: train (or resume) the variants; with --no-train only collect and report what is on disk.
      max_minutes: stop cleanly after this many minutes (finished work is kept; rerun to resume);
        empty: no limit.
      devices: local devices the seeds are split over (0: all of them, at most one per seed). How
        the seeds are split changes the last bits of every result.
      patience: a variant has converged (and stops) when its held-out accuracy has not improved by
        more than min_delta over its best level for this share of its step budget, for every seed
        (tokdyn.train.Patience: a plateau shorter than this never stops a run).
      min_fraction: no variant stops before this share of its step budget.
      min_delta: the smallest rise of the held-out accuracy that counts as an improvement.
      loss_delta: a variant whose training loss still falls by more than this share between the
        two halves of the patience window (while its accuracy holds) goes on; 0: the loss is not
        consulted.
      reference_steps: the step budget of the reference variants (direct, text), against which
        every variant is tested; 0: the same budget as every other variant (steps).
      tested: which state of each seed answers the test questions and is read back by the studies
        that analyse the variants: 'best' (its best held-out accuracy, judged after every
        steps_per_call steps) or 'final' (the last step trained).
      preset: 'quick' for the quick preset (its summary then says so in its first line), else empty.
      training: the static training configuration (tasks, model size, step budget, pools, seeds).
      hparams: the hyper-parameters every variant is trained with.
    """

    variants: tuple = tuple(VARIANTS)
    train: bool = True
    max_minutes: Optional[float] = None
    devices: int = 1
    patience: float = 0.25
    min_fraction: float = 0.5
    min_delta: float = 0.01
    loss_delta: float = 0.05
    reference_steps: int = 5000
    tested: str = "best"
    preset: str = ""
    training: latent_training.Config = latent_training.Config(
        task=tasks.Config(grid_size=4, n_colours=4, families=FAMILIES), n_latents=2
    )
    hparams: latent_training.Hparams = latent_training.Hparams()

    def validate(self) -> "Config":
        """Check every field (the variants, the stop rule, the training configuration, whose root seed
        must fit in 32 bits, and the hyper-parameters, one setting); raise ``ValueError``/``TypeError``
        naming the field. Returns ``self``."""
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(f"variants must name at least one of {sorted(VARIANTS)}, got {self.variants!r}")
        for name in self.variants:
            variant(name)
        _checks.distinct("variants", self.variants)  # each variant once: a repeat would train it twice
        _checks.choice("preset", self.preset, ("", "quick"))
        if not isinstance(self.train, bool):
            raise TypeError(f"train must be a bool, got {self.train!r}")
        if self.max_minutes is not None:
            _checks.real("max_minutes", self.max_minutes, low=0.0, low_open=True)
        _checks.positive_int("devices", self.devices, minimum=0)
        _checks.real("loss_delta", self.loss_delta, low=0.0)
        self.stop_rule()  # checks patience, min_fraction and min_delta
        self.training.validate()
        tr = self.training.train
        if any(variant(n).curriculum for n in self.variants) and self.training.curriculum_stages >= tr.calls:
            raise ValueError(
                f"curriculum_stages must be less than the {tr.calls} calls of steps_per_call="
                f"{tr.steps_per_call} steps in the budget of steps={tr.steps} (each "
                f"of its stages, and the first, trains for one call at least), got "
                f"{self.training.curriculum_stages}"
            )
        if self.training.root_seed > MAX_ROOT_SEED:
            raise ValueError(
                f"root_seed must be at most {MAX_ROOT_SEED} (a PRNG key keeps 32 bits of it: a larger "
                f"seed would repeat a smaller one's draws), got {self.training.root_seed}"
            )
        _checks.positive_int("reference_steps", self.reference_steps, minimum=0)
        if not isinstance(self.tested, str):
            raise TypeError(f"tested must be a str, one of {list(TESTED)}, got {self.tested!r}")
        _checks.choice("tested", self.tested, TESTED)
        if self.reference_steps % tr.steps_per_call:
            raise ValueError(
                f"reference_steps must be a multiple of steps_per_call={tr.steps_per_call}, got {self.reference_steps}"
            )
        self.hparams.validate()
        if train.settings(self.hparams) != 1:
            raise ValueError("hparams must hold one setting (scalars) in the study")
        if self.training.n_val < 1:
            raise ValueError("training.n_val must be >= 1: convergence is judged on the validation set")
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version: a small model, a 600-step budget, 2 seeds."""
        return cls(
            reference_steps=0,
            preset="quick",
            training=latent_training.Config(
                task=tasks.Config(grid_size=4, n_colours=4, families=FAMILIES),
                width=32,
                depth=2,
                heads=2,
                n_latents=2,
                batch_size=32,
                train=optim.Config(steps=600, steps_per_call=50, warmup=50),
                n_train=5000,
                n_val=250,
                n_test=500,
                seeds=2,
            ),
            hparams=latent_training.Hparams(learning_rate=3e-3),
        )

    def stop_rule(self) -> train.Patience:
        """The rule that decides when a variant has converged (see the attributes)."""
        return train.Patience(
            patience=self.patience,
            min_fraction=self.min_fraction,
            min_delta=self.min_delta,
            loss_delta=self.loss_delta or None,
        )

    def estimate(self) -> study_dir.Estimate:
        """What training asks of the machine, from the sizes alone (nothing is built): the largest
        of the training pool (``n_train``), the held-out sets (``n_test``, ``n_val``), the models'
        training states (``seeds``, ``width``), one step's activations (``batch_size``) and the
        recorded curves (``steps``), with the option that sets it; every variant x seed a model; the
        time at :data:`FLOPS` and :data:`STEP_SECONDS` on the reference CPU, scaled by this machine's
        ``training`` and ``host`` rates. :class:`~tokdyn.experiment.study.Refused`, naming the option, for an
        array too large for XLA's 32-bit indexing (the process would abort)."""
        tc, task = self.training, self.training.task
        length = max(
            latent_variants.model_config(tc, n).layout.length for n in self.variants
        )  # latent_training, the longest sequence
        vocab, d, g2 = task.vocab.size, tc.width, task.n_patches
        per_instance = 2 * g2 + tasks.QUESTION_LEN + task.caption_len + 2  # int32 entries of one instance
        budget = max(tc.train.steps, self.reference_steps)
        study_dir.elements_fit("width", 4 * d, d)  # one model's largest leaf, then every seed's
        study_dir.elements_fit("depth", tc.depth, 4 * d, d)
        study_dir.elements_fit(
            "n_latents", length, d
        )  # the sequence (its length grows with n_latents) and its attention
        study_dir.elements_fit("n_latents", tc.heads, length, length)
        study_dir.elements_fit("seeds", tc.seeds, max(vocab, length, 4 * d) * d)
        study_dir.elements_fit("seeds", tc.seeds, tc.depth, 4 * d, d)
        study_dir.elements_fit("n_train", tc.n_train, per_instance)
        study_dir.elements_fit("n_test", tc.n_test, per_instance)
        study_dir.elements_fit("n_val", tc.n_val, per_instance)
        study_dir.elements_fit("batch_size", tc.seeds, tc.batch_size, tc.heads, length, length)
        study_dir.elements_fit("batch_size", tc.seeds, tc.batch_size, length, 4 * d)
        study_dir.elements_fit(
            "reference_steps" if self.reference_steps > tc.train.steps else "steps",
            tc.seeds,
            budget // tc.train.steps_per_call,
        )
        params = tc.depth * 12 * d * d + (vocab + length + g2) * d + d * vocab  # blocks, embeddings, head
        sizes = {
            "n_train": tc.n_train * (per_instance * 4 + 120),  # the pool and its fingerprints on the host
            "n_test": (tc.n_test + tc.n_val) * (per_instance * 4 + 120) * 2,
            "seeds, width or depth": tc.seeds * params * 4 * 8,  # params, Adam's moments, gradients, host copies
            "batch_size": tc.seeds * tc.batch_size * tc.depth * 4 * (length * d * 14 + 2 * tc.heads * length**2),
            "reference_steps" if self.reference_steps > tc.train.steps else "steps": tc.seeds
            * (budget // tc.train.steps_per_call)
            * 4
            * 32,  # the curves, ~32 columns
        }
        option = max(sizes, key=sizes.get)
        steps = sum(training(self, n).train.steps for n in self.variants)
        flops = 6.0 * params * tc.batch_size * length * tc.seeds * steps
        return study_dir.Estimate(
            memory=sizes[option],
            option=option,
            models=len(self.variants) * tc.seeds,
            work={"training": flops / FLOPS, "host": STEP_SECONDS * steps},
        )


def training(cfg: Config, name: str) -> latent_training.Config:
    """The training configuration of variant ``name``: ``cfg.training``, with the budget
    ``reference_steps`` for the :data:`~tokdyn.studies.latent_reasoning.config.REFERENCES` (when it is not 0)."""
    if name in REFERENCES and cfg.reference_steps:
        budget = dataclasses.replace(cfg.training.train, steps=cfg.reference_steps)
        return dataclasses.replace(cfg.training, train=budget)
    return cfg.training


def forward_elements(cfg: Config, names: Sequence[str]) -> int:
    """Elements of one instance's forward pass through the longest of the variants ``names`` (of
    the latent-reasoning configuration ``cfg``): ``T * (V + (depth + 1) * width + depth * heads *
    latent_training)``, the logits, the hidden states of every layer and the attention weights, for ``T`` the
    longest sequence and ``V`` the vocabulary: what an analysis's memory estimate counts per
    instance and seed."""
    tc = cfg.training
    length = max(latent_variants.model_config(training(cfg, n), n).layout.length for n in names)
    return length * (tc.task.vocab.size + (tc.depth + 1) * tc.width + tc.depth * tc.heads * length)
