"""The vlm-diagnostics study's :class:`Config`: its fields and checks, the analyses it can run
(:data:`ANALYSES`) and those that wait for the families' ``apply`` to grow a keyword
(:data:`PENDING`), its presets (``--quick``, and :data:`GPU_PRESETS` for 3B and 7B checkpoints) and
its estimate. The leaf of the package: it imports none of its parts."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from tokdyn import _checks, dynamics
from tokdyn.experiment import rates
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.presets import PRESETS

STUDY = "vlm-diagnostics"

ANALYSES = (
    "grounding",
    "perception",
    "accuracy",
    "decomposition",
    "mediation",
    "similarity",
    "optimisation",
    "injection",
)
"""The analyses the study runs, in the order they run: ``grounding`` (DMLR's per-token grounding score S
under noised images), ``perception`` (token dynamics of the vision tower's patch features), ``accuracy``
(the answer the model generates, scored as the benchmarks score it), ``decomposition`` (Beyond Visual
Memory's settings of the latent block, and the concentration of its attention on the image),
``mediation`` (CapImagine's input -> latent, input -> answer and latent -> answer effects), ``similarity``
(the latents' similarity across instances and across steps), ``optimisation`` (DMLR's confidence-driven
latent optimisation, without visual injection) and ``injection`` (the same with DMLR's visual injection,
``inject="best"``)."""

PENDING: dict = {}
"""Analyses the study does not run yet: name -> why, and where the measure is available. Naming one in
``analyses`` is refused with that reason; adding one is a function in ``analyses.py`` and its name in
:data:`ANALYSES`. Empty today: the attention's narrowness at the latents, once pending, is the
decomposition's ``attention`` rows."""

LATENTS = ("block", "generated")
"""Where the latent block comes from (``--latents``): ``block``, forced right after the prompt (generation with
the start token forced at its first step) and filled with the model's own states, ``n_latents`` of them;
``generated``, the blocks a checkpoint trained to reason in latent space opens itself while it generates (its
start token chosen by the model, then ``n_latents`` steps fed its own state, then its end token). Everything
else is one path: every analysis runs the same generation and the same interventions in both modes."""

LATENT_KINDS = ("zeros", "noise", "fill", "mean", "swap", "drop_slots", "drop_markers", "drop_block")
"""The interventions the study runs on every batch, kinds of the one table
(:data:`tokdyn.models.vlm.interventions.TABLE`), shared by the analyses (latent -> answer, the decomposition's
settings): ``mean`` and ``swap`` take their sources from other instances of the whole set, so no number depends
on the batching."""

DECOMPOSITION_SETTINGS = ("full", "markers_only", "slots_only", "format_only", "slots_zeros", "slots_noise", "no_block")
"""The decomposition's settings (:data:`tokdyn.diagnostics.vlm.SETTINGS`, each a kind of the table)."""

BLOCK_TOKENS = ("<|box_start|>", "<|box_end|>", "<|quad_start|>")
"""The markers and fill of the study's own block (``--latents block``) in a checkpoint that records none
(``latent_mode.json``) and is given no flags: special tokens every Qwen-VL tokenizer holds and its prompts do
not use."""
DEFAULT_LATENTS = 4
"""The latents a block holds when neither ``--n-latents`` nor the checkpoint's ``latent_mode.json`` says."""
ANSWER_ROOM = 8
"""The tokens ``--new-tokens`` must leave after the block for an answer (a block of ``n`` latents takes
``n + 2`` steps with its markers)."""
DEFAULT_SCENES = 16
"""The rendered scenes without ``--instances`` when ``--n-instances`` is 0."""

NOISE_KINDS = ("gaussian", "blank")  # the family adapter's NOISES (tokdyn.models.qwen2_5_vl.adapter.NOISES)
DTYPES = ("float32", "bfloat16")
UNKNOWN_TENSORS = ("error", "ignore")  # Config.unknown_tensors: the family's load(..., unknown=)
TINY_FAMILY = "qwen2_5_vl"
"""The checkpoint family (a key of :data:`tokdyn.models.families.FAMILIES`) of the tiny random model the study
builds without ``--model``; without a checkpoint, its image processor's rules read the instances' images."""
# the time estimate (Config.work): seconds of each analysis's compiles (its first batch) and of one further
# batch of the tiny model, from --quick runs on the 2-core machine at load 11-12 (the reference CPU's rates
# were fitted at load 6-8: these lean long; benchmarks/runs/cpu-2026-11-27-vlm-estimate), and the reference
# CPU's rate of floating-point work (tokdyn.experiment.rates.REFERENCE_RATES["training"])
COMPILE_SECONDS = dict(
    grounding=25.0,
    perception=35.0,
    accuracy=10.0,
    decomposition=18.0,
    mediation=27.0,
    similarity=12.0,
    optimisation=22.0,
    injection=36.0,
)
CALL_SECONDS = dict(
    grounding=0.5,
    perception=12.0,
    accuracy=0.5,
    decomposition=1.5,
    mediation=1.0,
    similarity=0.5,
    optimisation=2.0,
    injection=2.0,
)
REFERENCE_FLOPS = rates.REFERENCE_RATES["training"]
RANDOM_NOTE = (
    "RANDOM MODEL: no --model was given, so these are the numbers of a tiny Qwen2.5-VL with random weights, "
    "built to show the pipeline runs; they are never a finding about a trained model."
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json``.

    Attributes:
      model: a local checkpoint directory of a family tokdyn reads (Qwen2.5-VL, Qwen3-VL) in the Hugging Face
        layout (config.json, model.safetensors or its sharded index, tokenizer.json, a chat template,
        preprocessor_config.json); "" builds a tiny model with random weights (numbers of no meaning).
      instances: a JSONL file, one {"image": path, "question": str, "answer": str} per line, or a
        multiple-choice line {"image": path, "question": str, "options": [str, ...], "answer": "B"} (the
        answer a letter or an option's text; a relative image path is read from the file's folder);
        several files separated by commas, each a benchmark of the summary's tables; "" renders sprite
        scenes and asks how many objects each holds.
      n_instances: the first N lines of each --instances file (0: every line), or the rendered scenes
        without --instances (0: 16).
      batch_size: instances per compiled call; the last batch is padded by repeating its rows.
      image_size: side in pixels every image is resized to (a multiple of the model's patch side times its
        merge: 28 for Qwen2.5-VL).
      scene_size: side in pixels of a rendered scene before the resize.
      max_objects: the most objects of a rendered scene (at least 1; the answers are 1 to this).
      dtype: the weights' dtype, float32 or bfloat16.
      unknown_tensors: what to do with tensors of the checkpoint that map to no parameter of the model (a
        module a fine-tune added): error (refuse the checkpoint, naming them) or ignore (load the rest).
      analyses: which analyses run (names from ANALYSES; only chooses what runs: another choice resumes
        the same directory).
      latents: where the latents come from: block (a block of n_latents slots after the prompt, filled by
        the model) or generated (those a latent-reasoning checkpoint writes while it generates).
      new_tokens: tokens generated per run, the latent block and its two markers included: at least
        n_latents + 2 + 8 (room for an answer after the block).
      noise_kinds: image perturbations of the grounding score and the input -> latent effect (gaussian,
        blank).
      noise_levels: standard deviations of the gaussian noise on the [0, 1] pixel scale.
      noise_seeds: noise draws per level.
      n_latents: latents a block holds, the steps fed back after its start token (0: the checkpoint's
        latent_mode.json, else 4).
      latent_start: the token that opens the latent block (a checkpoint's token string; '' with the two
        others: the checkpoint's latent_mode.json, else, with --latents block, ``<|box_start|>``; the random
        model uses its own ids).
      latent_end: the token that closes it ('' : as latent_start; ``<|box_end|>``).
      latent_fill: the token written at each latent step, whose embedding the fill intervention feeds ('' :
        as latent_start; ``<|quad_start|>``).
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
    n_instances: int = 0
    batch_size: int = 8
    image_size: int = 112
    scene_size: int = 64
    max_objects: int = 4
    dtype: str = "float32"
    unknown_tensors: str = "error"
    analyses: tuple = ANALYSES
    latents: str = "block"
    new_tokens: int = 32
    noise_kinds: tuple = NOISE_KINDS
    noise_levels: tuple = (0.25, 0.5)
    noise_seeds: int = 2
    n_latents: int = 0
    latent_start: str = ""
    latent_end: str = ""
    latent_fill: str = ""
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
                f"model={self.model!r} is not a directory: give a local checkpoint directory (Qwen2.5-VL, Qwen3-VL) "
                "(config.json, model.safetensors or model.safetensors.index.json with its shards, tokenizer.json, "
                "a chat template, preprocessor_config.json), or leave --model out for the tiny random model"
            )
        files = [p.strip() for p in self.instances.split(",") if p.strip()]
        if self.instances and not files:
            raise ValueError(f"instances={self.instances!r} names no file")
        for path in files:
            if not os.path.isfile(path):
                raise ValueError(
                    f"instances={path!r} is not a file: give a JSONL file with one "
                    '{"image": path, "question": str, "answer": str} (or with "options": [...]) per line, several '
                    "separated by commas, or leave --instances out for rendered scenes"
                )
        _checks.positive_int("n_instances", self.n_instances, minimum=0)
        if not self.instances and self.n_instances == 1:
            raise ValueError("n_instances must be at least 2 rendered scenes (0: 16), got 1")
        _checks.positive_int("batch_size", self.batch_size)
        _checks.positive_int("image_size", self.image_size)  # a multiple of the model's patches: check_image
        _checks.positive_int("scene_size", self.scene_size, minimum=8)
        _checks.positive_int("max_objects", self.max_objects)
        if self.max_objects > 9:
            raise ValueError(f"max_objects must be at most 9 (a one-digit answer), got {self.max_objects}")
        _checks.choice("dtype", self.dtype, DTYPES)
        _checks.choice("unknown_tensors", self.unknown_tensors, UNKNOWN_TENSORS)
        _checks.choice("latents", self.latents, LATENTS)
        _checks.positive_int("new_tokens", self.new_tokens)
        for name in ("analyses", "noise_kinds", "noise_levels", "methods"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must list at least one value (a comma list), got {value!r}")
            _checks.distinct(name, value)
        for name in self.analyses:
            if name in PENDING:
                raise ValueError(f"analyses: {name!r} cannot run on the families' apply yet: {PENDING[name]}")
            _checks.choice("analyses", name, ANALYSES)
        for kind in self.noise_kinds:
            _checks.choice("noise_kinds", kind, NOISE_KINDS)
        for level in self.noise_levels:
            _checks.real("noise_levels", level, low=0.0, low_open=True)
        _checks.positive_int("noise_seeds", self.noise_seeds)
        _checks.positive_int("n_latents", self.n_latents, minimum=0)
        if self.n_latents > 4096:
            raise ValueError(f"n_latents must be at most 4096, got {self.n_latents}")
        given = [bool(getattr(self, f)) for f in ("latent_start", "latent_end", "latent_fill")]
        if any(given) and not all(given):
            raise ValueError(
                "latent_start, latent_end and latent_fill go together: give all three, or none (the checkpoint's "
                f"latent_mode.json), got {self.latent_start!r}, {self.latent_end!r}, {self.latent_fill!r}"
            )
        if self.n_latents and self.new_tokens < self.n_latents + 2 + ANSWER_ROOM:
            raise ValueError(
                f"new_tokens={self.new_tokens} leaves no room for a block of {self.n_latents} latents, its two "
                f"markers and an answer: give at least {self.n_latents + 2 + ANSWER_ROOM}"
            )
        if all(given) and len({self.latent_start, self.latent_end, self.latent_fill}) != 3:
            raise ValueError(
                "latent_start, latent_end and latent_fill must be three different tokens, got "
                f"{self.latent_start!r}, {self.latent_end!r}, {self.latent_fill!r}"
            )
        _checks.positive_int("n_tokens", self.n_tokens, minimum=2)  # at most the image's tokens: check_image
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
            new_tokens=12,
            preset="quick",
        )

    @classmethod
    def gpu(cls, size: str, model: str, **changes) -> "Config":
        """The preset for a 3B or 7B checkpoint on one GPU (``size`` a key of :data:`GPU_PRESETS`) at
        ``model``, with ``changes`` on top."""
        _checks.choice("size", size, tuple(GPU_PRESETS))
        return cls(model=model, **{**GPU_PRESETS[size], **changes})

    def sizes(self) -> dict:
        """The model's sizes the estimate reads: those its family reads from the checkpoint's config.json (the
        family's ``config.sizes``, :mod:`tokdyn.models.families`; the 7B's where it cannot be read: the file is
        named later, when the checkpoint is opened), or the tiny model's."""
        tiny = dict(layers=2, heads=4, kv=2, width=64, ffn=96, vocab=128, v_depth=2, v_width=32, v_ffn=40)
        if not self.model:
            return tiny
        from tokdyn.models import families

        try:
            family = families.family(families.detect(self.model))
            return dict(family.config.sizes(family.config.read(self.model)))
        except (OSError, ValueError):
            return dict(
                layers=28, heads=28, kv=4, width=3584, ffn=18944, vocab=152064, v_depth=32, v_width=1280, v_ffn=3420
            )

    def factor(self) -> tuple[int, str]:
        """The side in pixels of one merged image token (the model's ``vision.patch_size`` x
        ``vision.spatial_merge_size``, read through its family: :mod:`tokdyn.models.families`) and where it
        comes from, for the estimate: 28 (Qwen2.5-VL's 14 x 2) for the random model, or where the checkpoint
        cannot be read (it is named when the checkpoint is opened)."""
        if self.model:
            from tokdyn.models import families

            try:
                v = families.family(families.detect(self.model)).config.read(self.model).vision
                return v.patch_size * v.spatial_merge_size, f"patch {v.patch_size} x merge {v.spatial_merge_size}"
            except (OSError, ValueError, TypeError):
                pass
        return 28, "patch 14 x merge 2"

    def check_image(self, model_config) -> None:
        """Check ``image_size`` and ``n_tokens`` against the model's vision tower (``model_config``, its family's
        ``Config``: ``vision.patch_size`` and ``vision.spatial_merge_size``): a ValueError naming the option
        unless the side is a multiple of a merged token's side (the image processor keeps it) and the
        perception dynamics' tokens are at most the image's merged tokens."""
        v = model_config.vision
        side = v.patch_size * v.spatial_merge_size
        if self.image_size % side:
            raise ValueError(
                f"image_size must be a multiple of {side} (the model's patch_size {v.patch_size} x "
                f"spatial_merge_size {v.spatial_merge_size}), got {self.image_size}: give --image-size "
                f"{max(side, round(self.image_size / side) * side)}"
            )
        merged = (self.image_size // side) ** 2
        if self.n_tokens > merged:
            raise ValueError(
                f"n_tokens must be at most the {merged} merged tokens of an image_size image, got {self.n_tokens}"
            )

    def text_tokens(self) -> float:
        """The mean text tokens of a prompt as the study pads it (its length bucket, the least power of two at
        least 32): estimated from each ``--instances`` line's question and options (1.5 tokens a word, 40 for
        the chat template's turn), or 64 for the rendered scenes' question; one long question raises the mean
        by its own bucket alone (the prompts are grouped by bucket)."""
        if not self.instances:
            return 64.0
        lengths = []
        for path in (p.strip() for p in self.instances.split(",") if p.strip()):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = [ln for ln in f if ln.strip()]
            except OSError:
                continue
            for line in lines[: self.n_instances or None]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(row, dict):
                    continue
                words = len(str(row.get("question", "")).split())
                opts = row.get("options") if isinstance(row.get("options"), list) else []
                words += sum(len(str(o).split()) + 1 for o in opts)
                lengths.append(1 << (max(int(1.5 * words) + 40, 32) - 1).bit_length())
        return float(np.mean(lengths)) if lengths else 64.0

    def count_instances(self) -> int:
        """The instances the run will hold: ``n_instances`` scenes, or the non-blank lines of each
        ``--instances`` file (at most ``n_instances`` of each when it is set; an unreadable file counts 0:
        it is named when it is read)."""
        if not self.instances:
            return self.n_instances or DEFAULT_SCENES
        total = 0
        for path in (p.strip() for p in self.instances.split(",") if p.strip()):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = sum(1 for line in f if line.strip())
            except OSError:
                lines = 0
            total += min(lines, self.n_instances) if self.n_instances else lines
        return total

    def work(self, n: int) -> dict:
        """Seconds of work on the reference CPU (:mod:`tokdyn.experiment.rates`) of ``n`` instances: the
        compiles of each analysis's programs and their calls (``host``: :data:`COMPILE_SECONDS`, measured on
        the tiny model, and :data:`CALL_SECONDS` a batch), and the forward passes' floating-point work
        (``training``: ``forward_flops`` of the passes each analysis makes per instance, over the
        reference's rate; with ``--latents generated`` the generations, each counted as one pass over the
        prompt and its new tokens)."""
        z = self.sizes()
        image = (self.image_size // self.factor()[0]) ** 2  # merged image tokens
        patches = 4 * image
        prompt = image + self.text_tokens()  # the image and the questions' text, padded to their buckets
        k = sum(1 if kind == "blank" else len(self.noise_levels) * self.noise_seeds for kind in self.noise_kinds)
        lat = self.n_latents or DEFAULT_LATENTS
        es = 2 + 2 * self.optimiser_iters * self.optimiser_pairs
        seq = prompt + self.new_tokens  # a generation, counted as one pass over the prompt and its new tokens
        shared = 1 + len(LATENT_KINDS)  # the clean run and every intervention, shared by the latent analyses
        passes = {  # (text passes, their length, vision passes) per instance
            "grounding": (1 + k, prompt + 4, 1 + k),
            "perception": (0, 0, 1),
            "accuracy": (1 if self.latents == "block" else 0, seq, 1),
            "decomposition": (1, prompt + self.new_tokens + lat, 0),  # the attention rows, teacher-forced
            "mediation": (3 * k, seq, 3 * k),  # each perturbed image, with the latents held and swapped
            "similarity": (0, 0, 0),
            "optimisation": (es + 1, seq, 1),
            "injection": (es, seq + image, 1),
        }
        if {"accuracy", "decomposition", "mediation", "similarity", "optimisation", "injection"} & set(self.analyses):
            passes["shared"] = (shared, seq, shared)
        flops = 0.0
        for name in [a for a in self.analyses if a in passes] + (["shared"] if "shared" in passes else []):
            count, length, vision = passes[name]
            flops += n * (count * forward_flops(z, length) + vision * vision_flops(z, patches))
        batches = -(-max(n, 1) // self.batch_size)
        host = sum(COMPILE_SECONDS[a] + batches * CALL_SECONDS[a] for a in self.analyses)
        return {"host": host, "training": flops / REFERENCE_FLOPS}

    def estimate(self) -> study_dir.Estimate:
        """The largest working set: the weights (the checkpoint's files; on the CPU backend once per host device,
        each of which holds a copy) and a batch's full attention maps
        and hidden states (the decomposition and the optimiser read the plain call, which computes every
        layer's (H, T, T) map; the optimiser's 2 x ``optimiser_pairs`` evaluations at once), at the
        checkpoint's sizes (its config.json; the tiny model's without --model); its time (:meth:`work`), said
        before the run when it is long."""
        z, weights = self.sizes(), 0.0
        layers, heads, width = z["layers"], z["heads"], z["width"]
        if self.model:
            names = [n for n in os.listdir(self.model) if n.endswith(".safetensors")]
            weights = float(sum(os.path.getsize(os.path.join(self.model, n)) for n in names))
            weights *= 2.0 if self.dtype == "float32" else 1.0  # stored in bfloat16, most checkpoints
        # arrays that must fit XLA's indexing: the rendered scenes, one image, a batch's pixel rows and
        # attention maps, the optimiser's evaluations
        n = max(self.count_instances(), 1)
        study_dir.elements_fit("n_instances", n, self.scene_size, self.scene_size, 3)
        study_dir.elements_fit("scene_size", self.scene_size, self.scene_size, 3)
        study_dir.elements_fit("image_size", self.image_size, self.image_size, 3 * 2)
        study_dir.elements_fit("n_latents", max(self.n_latents, 1), width, max(self.n_latents, 1))
        study_dir.elements_fit("n_tokens", self.n_tokens, width)
        tokens = (self.image_size // self.factor()[0]) ** 2 + 192 + self.new_tokens
        study_dir.elements_fit("batch_size", self.batch_size, tokens, tokens, heads)
        study_dir.elements_fit("optimiser_pairs", self.batch_size, 2 * self.optimiser_pairs, tokens, width)
        per = tokens * tokens * heads * layers * 4.0 + tokens * width * (layers + 1) * 4.0
        batch = self.batch_size * (
            2 * self.optimiser_pairs if {"optimisation", "injection"} & set(self.analyses) else 1
        )
        images = n * (self.scene_size**2 * 3 * 4.0 * 2 + self.image_size**2 * 3 * 4.0 * 2)  # scenes, pixel rows
        # the weights are on every local device (the batches are split over them): on the CPU backend every
        # host device's copy is in the host's memory
        import jax

        copies = len(jax.local_devices()) if jax.default_backend() == "cpu" else 1
        option = "batch_size"
        if weights * (copies - 1) > per * batch:
            option = (
                f"the number of host devices ({copies}, each holding a copy of the weights: "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N, which the tokdyn command sets to the cores)"
            )
        return study_dir.Estimate(
            memory=weights * copies + per * batch,
            option=option,
            models=n,
            work=self.work(n),
            host_memory=images,
            host_option="n_instances",
        )


def forward_flops(z: dict, length: int) -> float:
    """Floating-point operations of one decoder pass over ``length`` tokens of a model of sizes ``z``
    (:meth:`Config.sizes`): the projections, the gated MLP, the head and the attention's scores and sums."""
    d, hd = z["width"], z["width"] // z["heads"]
    per_token = z["layers"] * (2 * d * d * 2 + 4 * d * z["kv"] * hd + 6 * d * z["ffn"]) + 2 * d * z["vocab"]
    return float(length) * per_token + 4.0 * z["layers"] * length * length * d


def vision_flops(z: dict, patches: int) -> float:
    """Floating-point operations of the vision tower over ``patches`` patches (windowed attention left out)."""
    v = z["v_width"]
    return float(patches) * z["v_depth"] * (8 * v * v + 6 * v * z["v_ffn"])


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
    "LATENTS",
    "Config",
    "ANSWER_ROOM",
    "BLOCK_TOKENS",
    "DECOMPOSITION_SETTINGS",
    "DEFAULT_LATENTS",
    "DEFAULT_SCENES",
    "LATENT_KINDS",
    "DTYPES",
    "GPU_PRESETS",
    "NOISE_KINDS",
    "PENDING",
    "RANDOM_NOTE",
    "SELECTION",
    "STUDY",
    "TINY_FAMILY",
]
