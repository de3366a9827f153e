"""The latent-optimisation study's configuration: :class:`Config` (the source's fields of
:class:`tokdyn.experiment.analysis.Analysis`, then the study's own), the optimisation methods it
compares (:data:`METHODS`) and their controls (:data:`CONTROLS`). The leaf of the package: it
imports none of its parts."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tokdyn import _checks
from tokdyn.diagnostics import dmlr, perturb
from tokdyn.experiment import analysis
from tokdyn.experiment import study as study_dir
from tokdyn.models.latent import variants

METHODS = {  # name: (reward, estimator, visual injection)
    "es_entropy": ("entropy", "es", "none"),  # the paper's reward, REINFORCE
    "es_entropy_best": ("entropy", "es", "best"),  # ... with the paper's best-patch injection (full DMLR)
    "es_entropy_all": ("entropy", "es", "all"),  # ... with every patch injected
    "es_logprob": ("logprob", "es", "none"),  # the public code's reward, REINFORCE
    "es_answer": ("answer", "es", "none"),  # the answer's confidence, REINFORCE
    "exact_entropy": ("entropy", "exact", "none"),  # the paper's reward, exact gradient ascent
}
CONTROLS = ("before", "random")
STUDY = "latent-optimisation"
SELECTION = analysis.SOURCE_SELECTION + (  # fields that only choose which parts run (not stamped)
    "variants",
    "methods",
    "sweep_method",
    "sweep_learning_rates",
    "grounding_variants",
    "perturbations",
)


@dataclasses.dataclass(frozen=True)
class Config(analysis.Analysis):
    """Everything that defines the study (saved as ``config.json``): the source's fields of
    :class:`tokdyn.experiment.analysis.Analysis` (``source``, ``preset``, ``train``), then these.

    Attributes:
      variants: latent-feedback variants whose latents are optimised.
      methods: optimisation methods, names from METHODS.
      sweep_method: the method also run at each of sweep_learning_rates (a name from METHODS).
      sweep_learning_rates: further ascent rates for sweep_method, rows "<method>@lr=<rate>" (empty:
        no sweep).
      grounding_variants: variants whose generated tokens get grounding scores.
      perturbations: image perturbations of the grounding scores (names from
        tokdyn.diagnostics.perturb.PERTURBATIONS).
      threshold: a token is image-dependent when its grounding score exceeds this (nats).
      n_instances: the first N test instances of the source study.
      top_k: k of the top-k probabilities the latent rewards look at.
      n_iters: optimisation iterations T.
      n_pairs: antithetic pairs per REINFORCE estimate.
      learning_rate: SGD ascent rate, in units of the initial latents' RMS entry.
      sigma: perturbation scale, in units of the initial latents' RMS entry.
      sigma_decay: sigma's decay per iteration.
      top_m: image patches per latent that are candidates for the best-patch injection.
      root_seed: root PRNG seed of the optimiser's and the perturbations' draws.
    """

    variants: tuple = ("latent", "latent_mirage", "latent_lvr")
    methods: tuple = tuple(METHODS)
    sweep_method: str = "exact_entropy"
    sweep_learning_rates: tuple = (1e-2, 1e-1, 1.0)
    grounding_variants: tuple = ("direct", "text", "latent")
    perturbations: tuple = ("blank", "swap", "shuffle")
    threshold: float = 0.1
    n_instances: int = 1000
    top_k: int = 10
    n_iters: int = 15
    n_pairs: int = 8
    learning_rate: float = 1e-3
    sigma: float = 0.1
    sigma_decay: float = 0.95
    top_m: int = 2
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (``n_instances`` within the source's test instances and enough for 2 of
        each task family, ``top_m`` at most its image patches; the source's through
        :meth:`tokdyn.experiment.analysis.Analysis.validate`); raise ``ValueError``/``TypeError``
        naming the field. Returns ``self``."""
        super().validate()
        feedback = sorted(v for v, spec in variants.VARIANTS.items() if spec.latent_mode == "feedback")
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(
                f"variants must name at least one latent-feedback variant (one of {feedback}), got {self.variants!r}"
            )
        for name in self.variants:
            if variants.variant(name).latent_mode != "feedback":
                raise ValueError(
                    f"variants must be latent-feedback variants (they have latents to optimise), got {name!r}"
                )
        for field in ("variants", "methods", "grounding_variants", "perturbations", "sweep_learning_rates"):
            value = getattr(self, field)
            if isinstance(value, (str, float, int)):
                raise TypeError(f"{field} must be a tuple, got {value!r}")
            _checks.distinct(field, value)  # each entry is one condition: a repeat would count it twice
        for field, allowed in (("methods", METHODS), ("perturbations", perturb.PERTURBATIONS)):
            value = getattr(self, field)
            if not value:
                raise ValueError(f"{field} must name at least one of {sorted(allowed)}, got {value!r}")
            for v in value:
                _checks.choice(field, v, allowed)
        _checks.choice("sweep_method", self.sweep_method, METHODS)
        for rate in self.sweep_learning_rates:
            _checks.real("sweep_learning_rates", rate, low=0.0, low_open=True)
        for name in self.grounding_variants:
            variants.variant(name)
        _checks.real("threshold", self.threshold)
        tc = self.reasoning().training
        families = tc.task.families
        _checks.positive_int("n_instances", self.n_instances, minimum=1)
        least = max(3, 2 * len(families))
        if self.n_instances < least:
            raise ValueError(
                f"n_instances must be at least {least}: the paired t-tests are per task family and need "
                f"2 instances of each of the source's {len(families)} families {list(families)} (and "
                f"the grounding correlations 3 in all), got {self.n_instances}"
            )
        if self.n_instances > tc.n_test:
            raise ValueError(
                f"n_instances must be at most the source's {tc.n_test} test instances, got {self.n_instances}"
            )
        _checks.seed("root_seed", self.root_seed)
        self.optimiser("es_entropy_best")
        if self.top_m > tc.task.n_patches:
            raise ValueError(f"top_m must be at most the {tc.task.n_patches} image patches, got {self.top_m}")
        self.hparams()
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version on the latent-reasoning study's --quick models."""
        return cls(
            source="results/latent-reasoning-quick",
            preset="quick",
            variants=("latent",),
            grounding_variants=("direct", "text"),
            n_instances=300,
            n_iters=8,
            n_pairs=4,
            sweep_learning_rates=(1e-1,),
        )

    def optimiser(self, method: str) -> dmlr.Config:
        """The optimiser of ``method`` (a name of :data:`METHODS`, or a sweep row
        ``<method>@lr=<rate>``) with this study's ``top_k``, ``n_iters``, ``n_pairs`` and ``top_m``,
        checked against the source's vocabulary."""
        reward, estimator, inject = METHODS[method.split("@")[0]]
        vocab = self.reasoning().training.task.vocab.size
        return dmlr.Config(
            reward=reward,
            top_k=self.top_k,
            n_iters=self.n_iters,
            n_pairs=self.n_pairs,
            estimator=estimator,
            inject=inject,
            top_m=self.top_m,
        ).validate(vocab)

    def hparams(self, learning_rate: Optional[float] = None) -> dmlr.Hparams:
        """The optimiser's hyper-parameters: ``learning_rate`` (this study's unless given),
        ``sigma`` and ``sigma_decay`` (checked)."""
        return dmlr.Hparams(
            learning_rate=self.learning_rate if learning_rate is None else learning_rate,
            sigma=self.sigma,
            sigma_decay=self.sigma_decay,
        ).validate()

    def runs(self) -> list[tuple[str, dmlr.Hparams]]:
        """(row name, hparams) of every optimiser run: the methods, then the learning-rate sweep."""
        out = [(m, self.hparams()) for m in self.methods]
        return out + [(f"{self.sweep_method}@lr={r:g}", self.hparams(r)) for r in self.sweep_learning_rates]

    def estimate(self) -> study_dir.Estimate:
        """The largest working set: one chunk of 4 instances x 2 ``n_pairs`` perturbed evaluations
        per seed (logits, hidden states, attention), or the rewards over ``n_iters`` iterations of
        every instance; :class:`~tokdyn.experiment.study.Refused` naming the option for an array
        too large for XLA's 32-bit indexing."""
        lr = self.reasoning()
        tc = lr.training
        per_eval = self.reasoners().forward_elements(lr, tuple(self.variants) + tuple(self.grounding_variants))
        study_dir.elements_fit("n_pairs", tc.seeds, 4, 2 * self.n_pairs, per_eval)
        study_dir.elements_fit("n_iters", tc.seeds, self.n_instances, self.n_iters, tc.n_latents, tc.width)
        sizes = {
            "n_pairs": tc.seeds * 4 * 2 * self.n_pairs * per_eval * 4 * 3,
            "n_iters": tc.seeds * self.n_instances * self.n_iters * (tc.n_latents * tc.width + 4) * 4 * 2,
        }
        option = max(sizes, key=sizes.get)
        runs = len(self.variants) * (len(self.runs()) + 1) * tc.seeds
        return study_dir.Estimate(memory=sizes[option], option=option, models=runs)
