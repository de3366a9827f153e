"""The latent-diagnostics study's configuration: :class:`Config` (the source's fields of
:class:`tokdyn.experiment.analysis.Analysis`, then the study's own), the visual facts its probes
predict (:data:`FACTS`, :func:`facts`). The leaf of the package: it imports none of its parts."""

from __future__ import annotations

import dataclasses

import numpy as np

from tokdyn import _checks, probes
from tokdyn.diagnostics import mediation, perturb
from tokdyn.experiment import analysis
from tokdyn.experiment import study as study_dir
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import variants

STUDY = "latent-diagnostics"
SELECTION = analysis.SOURCE_SELECTION + ("variants", "reference", "midway")  # fields that only choose which parts run
FACTS = ("answer", "top_row_count", "centre_colour", "helper_centre")
STAGES = ("mid", "final")


def facts(batch, cfg: tasks.Config) -> dict:
    """Visual facts of each instance (B,) ints, the probes' targets: ``answer`` (the answer token:
    the result of the imagined transformation, the queried cell on ``read``), ``top_row_count``
    (non-empty cells in the image's top row: a fact no question asks), ``centre_colour`` (the image's
    centre cell) and ``helper_centre`` (the transformed grid's centre cell)."""
    g = cfg.grid_size // 2
    image, helper = np.asarray(batch.image), np.asarray(batch.helper)
    return {
        "answer": np.asarray(batch.answer),
        "top_row_count": (image[:, 0] > 0).sum(-1),
        "centre_colour": image[:, g, g],
        "helper_centre": helper[:, g, g],
    }


MAX_PROBE_STEPS = 2**31 - 1  # the probes' scan counts its steps in 32 bits


@dataclasses.dataclass(frozen=True)
class Config(analysis.Analysis):
    """Everything that defines the study (saved as ``config.json``): the source's fields of
    :class:`tokdyn.experiment.analysis.Analysis` (``source``, ``preset``, ``train``), then these.

    Attributes:
      variants: variants with a latent block (decomposition; the feedback ones also get mediation,
        collapse and probes).
      reference: the text-space variant whose caption states are compared ("" for none).
      perturbations: image perturbations (names from tokdyn.diagnostics.perturb.PERTURBATIONS).
      noise_sigmas: Gaussian noise levels on the patch embeddings (relative to their RMS entry).
      interventions: latent interventions (names from tokdyn.diagnostics.mediation.INTERVENTIONS).
      settings: decomposition settings (names from tokdyn.diagnostics.mediation.SETTINGS).
      midway: also decompose the mid-training checkpoint (trained to it when the source lacks it).
      n_instances: the first N test instances of the source study.
      attention_top_k: k of the top-k attention mass over image patches.
      probe_steps: full-batch optimisation steps of each linear probe.
      probe_learning_rate: the probes' Adam learning rate.
      probe_weight_decay: L2 penalty on the probes' weights.
      n_resamples: bootstrap resamples of the gain-retained intervals.
      root_seed: root PRNG seed of the noise, interventions and probes.
    """

    variants: tuple = ("latent", "latent_mirage", "latent_lvr", "latent_monet", "pause", "coconut")
    reference: str = "text"
    perturbations: tuple = ("blank", "swap", "shuffle")
    noise_sigmas: tuple = (0.25, 1.0)
    interventions: tuple = mediation.INTERVENTIONS
    settings: tuple = mediation.SETTINGS
    midway: bool = True
    n_instances: int = 2000
    attention_top_k: int = 3
    probe_steps: int = 300
    probe_learning_rate: float = 0.05
    probe_weight_decay: float = 1e-3
    n_resamples: int = 2000
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (``n_instances`` and ``attention_top_k`` against the source's test
        instances and image patches; the source's through
        :meth:`tokdyn.experiment.analysis.Analysis.validate`); raise ``ValueError``/``TypeError``
        naming the field. Returns ``self``."""
        super().validate()
        if not isinstance(self.midway, bool):
            raise TypeError(f"midway must be a bool, got {self.midway!r}")
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(f"variants must name at least one variant with a latent block, got {self.variants!r}")
        for name in self.variants:
            if variants.variant(name).latent_mode == "none":
                raise ValueError(f"variants must have a latent block (latent_mode 'feedback' or 'pause'), got {name!r}")
        for field in ("variants", "perturbations", "noise_sigmas", "interventions", "settings"):
            value = getattr(self, field)
            if isinstance(value, (str, float, int)):
                raise TypeError(f"{field} must be a tuple, got {value!r}")
            _checks.distinct(field, value)  # each entry is one condition: a repeat would count it twice
        if self.reference:
            variants.variant(self.reference)
        for field, allowed in (
            ("perturbations", perturb.PERTURBATIONS),
            ("interventions", mediation.INTERVENTIONS),
            ("settings", mediation.SETTINGS),
        ):
            value = getattr(self, field)
            if isinstance(value, str):
                raise TypeError(f"{field} must be a tuple of names, got {value!r}")
            for v in value:
                _checks.choice(field, v, allowed)
        if "no_block" not in self.settings or "full" not in self.settings:
            raise ValueError(
                f"settings must include 'full' and 'no_block' (the gain is measured between them), "
                f"got {self.settings!r}"
            )
        for s in self.noise_sigmas:
            _checks.real("noise_sigmas", s, low=0.0, low_open=True)
        _checks.positive_int("n_instances", self.n_instances, minimum=4)
        if self.n_instances > self.reasoning().training.n_test:
            raise ValueError(
                f"n_instances must be at most the source's {self.reasoning().training.n_test} test "
                f"instances, got {self.n_instances}"
            )
        _checks.positive_int("attention_top_k", self.attention_top_k)
        if self.attention_top_k > self.reasoning().training.task.n_patches:
            raise ValueError(
                f"attention_top_k must be at most the {self.reasoning().training.task.n_patches} image "
                f"patches, got {self.attention_top_k}"
            )
        _checks.positive_int("probe_steps", self.probe_steps)  # named as this study's option (the probe says steps)
        if self.probe_steps > MAX_PROBE_STEPS:
            raise ValueError(
                f"probe_steps must be at most {MAX_PROBE_STEPS:,} (the probes' steps are a 32-bit loop "
                f"counter), got {self.probe_steps:,}"
            )
        self.probe_config()
        self.probe_hparams()
        _checks.positive_int("n_resamples", self.n_resamples)
        _checks.seed("root_seed", self.root_seed)
        return self

    def estimate(self) -> study_dir.Estimate:
        """The largest working set: every setting's forward pass of every instance and seed at once
        (logits, hidden states, attention), the probes' features, or the bootstrap's resamples;
        :class:`~tokdyn.experiment.study.Refused` naming the option for an array too large for
        XLA's 32-bit indexing."""
        lr = self.reasoning()
        tc = lr.training
        names = tuple(self.variants) + ((self.reference,) if self.reference else ())
        per_pass = self.reasoners().forward_elements(lr, names)
        study_dir.elements_fit("n_resamples", self.n_resamples, self.n_instances)
        study_dir.elements_fit("n_instances", tc.seeds, self.n_instances, per_pass)
        sizes = {
            "n_instances": tc.seeds * self.n_instances * per_pass * 4 * 3,
            "n_resamples": self.n_resamples * self.n_instances * 8 * 3,
        }
        option = max(sizes, key=sizes.get)
        return study_dir.Estimate(memory=sizes[option], option=option, models=len(names) * tc.seeds)

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version on the latent-reasoning study's --quick models."""
        return cls(
            source="results/latent-reasoning-quick",
            preset="quick",
            variants=("latent", "pause"),
            n_instances=400,
            noise_sigmas=(1.0,),
            probe_steps=200,
            n_resamples=500,
        )

    def probe_config(self) -> probes.Config:
        """The linear probes' configuration: a class per token of the source's vocabulary,
        ``probe_steps`` steps (checked)."""
        return probes.Config(n_classes=self.reasoning().training.task.vocab.size, steps=self.probe_steps).validate()

    def probe_hparams(self) -> probes.Hparams:
        """The linear probes' hyper-parameters, ``probe_learning_rate`` and ``probe_weight_decay``
        (checked)."""
        return probes.Hparams(learning_rate=self.probe_learning_rate, weight_decay=self.probe_weight_decay).validate()

    def feedback(self) -> tuple:
        """The latent-feedback variants of ``variants``, in order: those that also get mediation,
        collapse and probes."""
        return tuple(v for v in self.variants if variants.variant(v).latent_mode == "feedback")
