"""The vlm-diagnostics study's :class:`Config`: its fields and checks, the analyses it can run
(:data:`ANALYSES`) and those that wait for the Qwen2.5-VL ``apply`` to grow a keyword
(:data:`PENDING`), its presets (``--quick``, and :data:`GPU_PRESETS` for 3B and 7B checkpoints) and
its estimate. The leaf of the package: it imports none of its parts."""

from __future__ import annotations

import dataclasses
import json
import os

from tokdyn import _checks, dynamics
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.presets import PRESETS

STUDY = "vlm-diagnostics"

ANALYSES = ("grounding", "perception", "decomposition", "mediation", "optimisation", "injection")
"""The analyses the study runs on the Qwen2.5-VL ``apply`` today, in the order they run:
``grounding`` (DMLR's per-token grounding score S under noised images), ``perception`` (token dynamics
of the vision tower's patch features), ``decomposition`` (Beyond Visual Memory's settings of the latent
block), ``mediation`` (CapImagine's input -> latent and latent -> answer effects), ``optimisation``
(DMLR's confidence-driven latent optimisation, without visual injection) and ``injection`` (the same with
DMLR's visual injection, ``inject="best"``)."""

PENDING = {
    "narrowness": "the study does not yet tabulate attention narrowness at latent positions; "
    "tokdyn.diagnostics.vlm.decomposition reports it (its attention concentration, from the "
    "attention rows at the latents alone)",
}
"""Analyses the study does not run yet: name -> why, and where the measure is available. Naming one in
``analyses`` is refused with that reason; adding one is a function in ``analyses.py`` and its name in
:data:`ANALYSES`."""

MEDIATION_KINDS = ("zeros", "noise", "constant")
"""The latent interventions the study applies: the latents a prompt starts with are its fill token's
embedding, equal in every instance, so ``mean`` and ``swap`` would leave them as they are."""

DECOMPOSITION_SETTINGS = ("full", "markers_only", "slots_noise", "slots_zeros", "no_block")
"""The decomposition settings the study measures (``format_only`` needs a format embedding no checkpoint
defines; ``slots_mean`` equals ``full`` when every instance starts from the fill token)."""

NOISE_KINDS = ("gaussian", "blank")  # tokdyn.models.qwen2_5_vl.adapter.NOISES
DTYPES = ("float32", "bfloat16")
RANDOM_NOTE = (
    "RANDOM MODEL: no --model was given, so these are the numbers of a tiny Qwen2.5-VL with random weights, "
    "built to show the pipeline runs; they are never a finding about a trained model."
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      model: a local Qwen2.5-VL checkpoint directory in the Hugging Face layout (config.json,
        model.safetensors or its sharded index, tokenizer.json, a chat template,
        preprocessor_config.json); "" builds a tiny model with random weights (numbers of no meaning).
      instances: a JSONL file, one {"image": path, "question": str, "answer": str} per line (a relative
        image path is read from the file's folder); "" renders sprite scenes and asks how many objects
        each holds.
      n_instances: rendered scenes (with no --instances), or the first N lines of --instances (0: all).
      batch_size: instances per compiled call; the last batch is padded by repeating its rows.
      image_size: side in pixels every image is resized to (a multiple of 28).
      scene_size: side in pixels of a rendered scene before the resize.
      max_objects: the most objects of a rendered scene (at least 1; the answers are 1 to this).
      dtype: the weights' dtype, float32 or bfloat16.
      analyses: which analyses run (names from ANALYSES; only chooses what runs: another choice resumes
        the same directory).
      noise_kinds: image perturbations of the grounding score and the input -> latent effect (gaussian,
        blank).
      noise_levels: standard deviations of the gaussian noise on the [0, 1] pixel scale.
      noise_seeds: noise draws per level.
      n_latents: latent slots of the block between the two markers.
      latent_start: the token that opens the latent block (a checkpoint's token string; the random
        model uses its own ids).
      latent_end: the token that closes it.
      latent_fill: the token whose embedding fills the slots before any intervention.
      n_tokens: tokens of the perception dynamics (and k-means' centres).
      methods: token-dynamics rules of the perception analysis (names from tokdyn.dynamics.METHODS).
      temperature_ratio: each rule's temperature over the image's collapse threshold.
      dynamics_steps: the most steps of a perception rule.
      optimiser_iters: DMLR iterations per instance.
      optimiser_pairs: antithetic pairs per evolution-strategies estimate.
      optimiser_sigma: DMLR's perturbation scale, relative to the latents' RMS entry.
      optimiser_learning_rate: DMLR's ascent rate, relative to the latents' RMS entry.
      root_seed: root PRNG seed (scenes, noise, interventions, optimiser).
      preset: '' or 'quick' (set by --quick: a smoke-sized run; the summary's first line says so).
    """

    model: str = ""
    instances: str = ""
    n_instances: int = 16
    batch_size: int = 8
    image_size: int = 112
    scene_size: int = 64
    max_objects: int = 4
    dtype: str = "float32"
    analyses: tuple = ANALYSES
    noise_kinds: tuple = NOISE_KINDS
    noise_levels: tuple = (0.25, 0.5)
    noise_seeds: int = 2
    n_latents: int = 4
    latent_start: str = "<|box_start|>"
    latent_end: str = "<|box_end|>"
    latent_fill: str = "<|quad_start|>"
    n_tokens: int = 5
    methods: tuple = tuple(dynamics.METHODS)
    temperature_ratio: float = 0.5
    dynamics_steps: int = 50
    optimiser_iters: int = 8
    optimiser_pairs: int = 4
    optimiser_sigma: float = 0.1
    optimiser_learning_rate: float = 0.05
    root_seed: int = 0
    preset: str = ""  # a label only: left out of the directory's stamp (SPEC.selection)

    def validate(self) -> "Config":
        """Check every field; raise ``ValueError``/``TypeError`` naming it. Returns ``self``. The
        checkpoint and the instances file are read later, before the directory is opened
        (``prepare``)."""
        for name in ("model", "instances", "latent_start", "latent_end", "latent_fill"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {getattr(self, name)!r}")
        if self.model and not os.path.isdir(self.model):
            raise ValueError(
                f"model={self.model!r} is not a directory: give a local Qwen2.5-VL checkpoint directory "
                "(config.json, model.safetensors or model.safetensors.index.json with its shards, tokenizer.json, "
                "a chat template, preprocessor_config.json), or leave --model out for the tiny random model"
            )
        if self.instances and not os.path.isfile(self.instances):
            raise ValueError(
                f"instances={self.instances!r} is not a file: give a JSONL file with one "
                '{"image": path, "question": str, "answer": str} per line, or leave --instances out for '
                "rendered scenes"
            )
        _checks.positive_int("n_instances", self.n_instances, minimum=0 if self.instances else 2)
        _checks.positive_int("batch_size", self.batch_size)
        _checks.positive_int("image_size", self.image_size, minimum=28)
        if self.image_size % 28:
            raise ValueError(f"image_size must be a multiple of 28 (patch 14 x merge 2), got {self.image_size}")
        _checks.positive_int("scene_size", self.scene_size, minimum=8)
        _checks.positive_int("max_objects", self.max_objects)
        if self.max_objects > 9:
            raise ValueError(f"max_objects must be at most 9 (a one-digit answer), got {self.max_objects}")
        _checks.choice("dtype", self.dtype, DTYPES)
        for name in ("analyses", "noise_kinds", "noise_levels", "methods"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must list at least one value (a comma list), got {value!r}")
            _checks.distinct(name, value)
        for name in self.analyses:
            if name in PENDING:
                raise ValueError(f"analyses: {name!r} cannot run on the Qwen2.5-VL apply yet: {PENDING[name]}")
            _checks.choice("analyses", name, ANALYSES)
        for kind in self.noise_kinds:
            _checks.choice("noise_kinds", kind, NOISE_KINDS)
        for level in self.noise_levels:
            _checks.real("noise_levels", level, low=0.0, low_open=True)
        _checks.positive_int("noise_seeds", self.noise_seeds)
        _checks.positive_int("n_latents", self.n_latents)
        for name in ("latent_start", "latent_end", "latent_fill"):
            if not getattr(self, name):
                raise ValueError(f"{name} must name a token, got ''")
        if len({self.latent_start, self.latent_end, self.latent_fill}) != 3:
            raise ValueError(
                "latent_start, latent_end and latent_fill must be three different tokens, got "
                f"{self.latent_start!r}, {self.latent_end!r}, {self.latent_fill!r}"
            )
        _checks.positive_int("n_tokens", self.n_tokens, minimum=2)
        merged = (self.image_size // 28) ** 2
        if self.n_tokens > merged:
            raise ValueError(f"n_tokens must be at most the {merged} merged tokens of an image_size image")
        for name in self.methods:
            _checks.choice("methods", name, dynamics.METHODS)
        _checks.real("temperature_ratio", self.temperature_ratio, low=0.0, low_open=True)
        for name in ("dynamics_steps", "optimiser_iters", "optimiser_pairs"):
            _checks.positive_int(name, getattr(self, name))
        _checks.real("optimiser_sigma", self.optimiser_sigma, low=0.0, low_open=True)
        _checks.real("optimiser_learning_rate", self.optimiser_learning_rate, low=0.0, low_open=True)
        _checks.seed("root_seed", self.root_seed)
        _checks.choice("preset", self.preset, PRESETS)
        return self

    @classmethod
    def quick(cls) -> "Config":
        """The quick preset (``--quick``: on the tiny random model, well under a minute on 2 cores): 4
        scenes, one noise draw, the baseline rule, 3 DMLR iterations. A smoke run: its numbers are not
        findings (its summary says so)."""
        return cls(
            n_instances=4,
            batch_size=4,
            noise_levels=(0.5,),
            noise_seeds=1,
            n_latents=2,
            n_tokens=4,
            methods=("baseline",),
            dynamics_steps=20,
            optimiser_iters=3,
            optimiser_pairs=2,
            preset="quick",
        )

    @classmethod
    def gpu(cls, size: str, model: str, **changes) -> "Config":
        """The preset for a 3B or 7B checkpoint on one GPU (``size`` a key of :data:`GPU_PRESETS`) at
        ``model``, with ``changes`` on top."""
        _checks.choice("size", size, tuple(GPU_PRESETS))
        return cls(model=model, **{**GPU_PRESETS[size], **changes})

    def estimate(self) -> study_dir.Estimate:
        """The largest working set: the weights (the checkpoint's files) and a batch's full attention maps
        and hidden states (the decomposition and the optimiser read the plain call, which computes every
        layer's (H, T, T) map; the optimiser's 2 x ``optimiser_pairs`` evaluations at once), at the
        checkpoint's sizes (its config.json; the tiny model's without --model); its time on the reference
        CPU for the tiny model only (a checkpoint's time is not estimated)."""
        layers, heads, width, weights = 2, 4, 64, 0.0
        if self.model:
            try:
                with open(os.path.join(self.model, "config.json")) as f:
                    raw = json.load(f)
                text = {**raw, **(raw.get("text_config") or {})}
                layers, heads = int(text["num_hidden_layers"]), int(text["num_attention_heads"])
                width = int(text["hidden_size"])
            except (OSError, ValueError, KeyError, TypeError):
                layers, heads, width = 28, 28, 3584  # the 7B's (a file that cannot be read is named later)
            names = [n for n in os.listdir(self.model) if n.endswith(".safetensors")]
            weights = float(sum(os.path.getsize(os.path.join(self.model, n)) for n in names))
            weights *= 2.0 if self.dtype == "float32" else 1.0  # stored in bfloat16, most checkpoints
        # arrays that must fit XLA's indexing: the rendered scenes, one image, a batch's pixel rows and
        # attention maps, the optimiser's evaluations
        n = max(self.n_instances, 1)
        study_dir.elements_fit("n_instances", n, self.scene_size, self.scene_size, 3)
        study_dir.elements_fit("scene_size", self.scene_size, self.scene_size, 3)
        study_dir.elements_fit("image_size", self.image_size, self.image_size, 3 * 2)
        study_dir.elements_fit("n_latents", self.n_latents, width, self.n_latents)
        study_dir.elements_fit("n_tokens", self.n_tokens, width)
        tokens = (self.image_size // 28) ** 2 + 192 + self.n_latents
        study_dir.elements_fit("batch_size", self.batch_size, tokens, tokens, heads)
        study_dir.elements_fit("optimiser_pairs", self.batch_size, 2 * self.optimiser_pairs, tokens, width)
        per = tokens * tokens * heads * layers * 4.0 + tokens * width * (layers + 1) * 4.0
        batch = self.batch_size * (
            2 * self.optimiser_pairs if {"optimisation", "injection"} & set(self.analyses) else 1
        )
        images = n * (self.scene_size**2 * 3 * 4.0 * 2 + self.image_size**2 * 3 * 4.0 * 2)  # scenes, pixel rows
        work = {} if self.model else {"host": 30.0 + 2.0 * n}
        return study_dir.Estimate(
            memory=weights + per * batch,
            option="batch_size",
            models=n,
            work=work,
            host_memory=images,
            host_option="n_instances",
        )


_GPU = dict(
    n_instances=200,
    image_size=448,
    scene_size=128,
    dtype="bfloat16",
    noise_levels=(0.25, 0.5, 1.0),
    noise_seeds=4,
    n_latents=8,
    n_tokens=8,
    dynamics_steps=200,
    optimiser_iters=15,
    optimiser_pairs=8,
)
GPU_PRESETS = {"3b": dict(_GPU, batch_size=16), "7b": dict(_GPU, batch_size=8)}
"""Sizes for a Qwen2.5-VL-3B or -7B checkpoint on one GPU (80 GB class): :meth:`Config.gpu`, and on the
command line the same options (``docs/studies/vlm-diagnostics.md``). Not run yet: no checkpoint reaches
the device machines (the model's own speed at these shapes: the ``qwen-3b-*`` and ``qwen-7b-*`` rows of
``benchmarks/runs/gpu-ledger.csv``)."""

SELECTION = ("preset", "analyses")  # fields that only choose what runs: left out of the stamp, a batch kept is reused

__all__ = [
    "ANALYSES",
    "Config",
    "DECOMPOSITION_SETTINGS",
    "DTYPES",
    "GPU_PRESETS",
    "MEDIATION_KINDS",
    "NOISE_KINDS",
    "PENDING",
    "RANDOM_NOTE",
    "SELECTION",
    "STUDY",
]
