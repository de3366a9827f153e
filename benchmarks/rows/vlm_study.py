"""The ``vlm-diagnostics`` study's programs at a checkpoint's shapes, and its mediation with latent-mode
generation as a row of the ``vlm`` family.

:func:`study_programs` lists every batched program ``tokdyn study vlm-diagnostics`` compiles for one batch of
instances (``tokdyn/studies/vlm_diagnostics/analyses.py``: one path, the block forced after the prompt with
``--latents block`` or written by the model with ``--latents generated``, the same programs), each a
:class:`rows.vlm.Program` of the library's own jitted kernel and abstract arguments (``jax.ShapeDtypeStruct``; no
weights materialised):

- the analyses of :mod:`tokdyn.diagnostics.vlm` through their ``.jitted`` kernels (the checked call's kernel
  without the checks): ``grounding_scores``, and on the first block teacher-forced ``concentration`` and
  ``optimise`` without and with DMLR's visual injection;
- the generation programs the study calls through ``model.generate``: the vision tower over every image of
  the call (``inputs.image_features_jit``) and the one loop ``tokdyn.models.vlm.generation.run`` (its arguments
  from ``generation.programs``): text mode for ``accuracy``'s plain setting; latent mode with the scored
  tokens for the clean run, the perturbed images (``K B`` rows), one call of the latent interventions
  (``len(LATENT_KINDS) B`` rows) with the direct and indirect effects (``2 K B`` rows), and DMLR's latents
  swapped in;
- the image perturbations (``vlm.perturb_pixels`` jitted as the study's ``Context`` jits it);
- the perception analysis's program (``perception.program``: the vision tower's taps and
  ``perception.cluster_features`` of both levels, vmapped over the images, which
  ``perception.perception_dynamics`` runs).

The shapes are the study's own where its configuration fixes them (``GPU_PRESETS``: batch, image side,
latents, new tokens, perturbations, the optimiser's iterations and pairs) and stated assumptions where they
depend on the data (:class:`Shapes`: the prompt's text bucket, the answer's width, the scored tokens, the
stop tokens, one latent block per generated row, the generated block's prompt as long as the block mode's).

:func:`mediation_row` times the study's mediation with generation on one batch (the shared runs and
``mediation_rows``' calls of :mod:`tokdyn.diagnostics.vlm`): instances/s.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

from rows.vlm import Program, abstract_params, image_grid
from tokdyn.diagnostics import vlm
from tokdyn.studies.vlm_diagnostics.config import DEFAULT_LATENTS

SDS = jax.ShapeDtypeStruct
BUCKET = 64  # generate's default length bucket, as the study calls it
PREFILL_CHUNK = 256  # generate's default prefill chunk
MEDIATION = "mediation"  # the analysis name of the programs of the mediation row


def study_config(name: str, batch: int | None = None):
    """The study's :class:`~tokdyn.studies.vlm_diagnostics.config.Config` at size ``name``: its
    ``GPU_PRESETS`` for ``3b`` and ``7b``, its quick preset for the small and tiny models; ``batch``
    replaces ``batch_size``."""
    from tokdyn.studies.vlm_diagnostics import config as study

    cfg = study.Config(**study.GPU_PRESETS[name]) if name in study.GPU_PRESETS else study.Config.quick()
    return cfg if batch is None else dataclasses.replace(cfg, batch_size=int(batch))


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The shapes of the study's programs for one batch (``batch`` instances).

    ``text`` (the prompt's text bucket, the image's tokens left out: 64 for a question and the chat
    template's turn markers), ``answer`` (the answer's tokens, padded: one digit or letter), ``n_scores``
    (the answer labels scored: four, the counts of ``max_objects=4`` or a benchmark's four options),
    ``n_stop`` (the checkpoint's stop tokens: two in Qwen2.5-VL's ``generation_config.json``) and
    ``blocks`` (the latent blocks a swap source holds: one, a block of 8 latents in 16 new tokens) are
    assumptions, as are ``lead`` (the chat template's tokens before the image) and ``aligned`` (the length of
    the generated block's teacher-forced prompt, the prompt's real tokens, the generated ones up to the block
    and the block: 0 for the block mode's ``T + L + 2``); the rest is the study's configuration."""

    batch: int
    image: int  # side in pixels
    n_image: int  # merged image tokens
    patches: int  # vision patches per image
    text: int
    answer: int
    n_latents: int
    new_tokens: int
    perturbations: int  # K: each gaussian level x draw, and the blank image
    n_scores: int
    n_stop: int
    blocks: int
    lead: int = 15
    aligned: int = 0

    @property
    def prompt(self) -> int:
        """T: the prompt's tokens (the image's and the text's bucket)."""
        return self.n_image + self.text

    @property
    def block(self) -> int:
        """The prompt followed by the latent block and its two markers."""
        return self.prompt + self.n_latents + 2

    @property
    def generated(self) -> int:
        """The generated block's teacher-forced prompt: ``aligned``, or the block mode's length."""
        return self.aligned or self.block


def shapes(mcfg, scfg, *, text=64, answer=1, n_scores=4, n_stop=2, blocks=1, lead=15, aligned=0) -> Shapes:
    """The :class:`Shapes` of model ``mcfg`` under the study's configuration ``scfg``."""
    side = scfg.image_size // mcfg.vision.patch_size
    k = sum(1 if kind == "blank" else len(scfg.noise_levels) * scfg.noise_seeds for kind in scfg.noise_kinds)
    return Shapes(
        batch=scfg.batch_size,
        image=scfg.image_size,
        n_image=side * side // mcfg.vision.spatial_merge_size**2,
        patches=side * side,
        text=text,
        answer=answer,
        n_latents=scfg.n_latents or DEFAULT_LATENTS,
        new_tokens=scfg.new_tokens,
        perturbations=k,
        n_scores=n_scores,
        n_stop=n_stop,
        blocks=blocks,
        lead=lead,
        aligned=aligned,
    )


def marker_ids(mcfg) -> tuple[int, int, int, int]:
    """``(start, end, fill, text)``: ids for the latent block's markers, its fill token and plain text, below
    the model's image, video and vision-marker ids and none of its stop tokens."""
    hi = min(mcfg.text.vocab_size, mcfg.image_token_id, mcfg.video_token_id, mcfg.vision_start_token_id)
    stops = set(np.atleast_1d(mcfg.eos_token_id).tolist())
    free = [i for i in range(hi - 1, 0, -1) if i not in stops]
    return free[0], free[1], free[2], free[3]


def layout_ids(mcfg, sh: Shapes, length: int, with_block: bool) -> np.ndarray:
    """(1, ``length``) ids of a prompt as the study lays it out: ``sh.lead`` tokens of the chat template's
    opening, the image between its markers, text, then (``with_block``) the latent block, its last
    ``L + 2`` tokens."""
    start, end, fill, word = marker_ids(mcfg)
    image = [mcfg.vision_start_token_id, *[mcfg.image_token_id] * sh.n_image, mcfg.vision_end_token_id]
    row = [word] * sh.lead + image
    row += [word] * (length - len(row) - (sh.n_latents + 2 if with_block else 0))
    if with_block:
        row += [start, *[fill] * sh.n_latents, end]
    return np.asarray([row], np.int64)


def abstract_batch(b: int, t: int, sh: Shapes, mcfg, latents: bool = False) -> dict:
    """The batch ``adapter.make_batch`` makes for ``b`` prompts of ``t`` tokens, as shapes (with the
    instances' own ``latents`` (b, L, D) when ``latents``)."""
    out = {
        "input_ids": SDS((b, t), jnp.int32),
        "attention_mask": SDS((b, t), jnp.bool_),
        "positions": SDS((b, 3, t), jnp.int32),
        "pixel_values": SDS((b, sh.patches, mcfg.vision.patch_dim), jnp.float32),
    }
    if latents:
        out["latents"] = SDS((b, sh.n_latents, mcfg.text.hidden_size), jnp.float32)
    return out


PERTURB = jax.jit(vlm.perturb_pixels, static_argnames=("processor", "noises", "n_seeds"))
"""``vlm.perturb_pixels`` jitted as the study's ``Context`` jits it (its image perturbations)."""


def _key():
    return jax.eval_shape(lambda: jax.random.key(0))


def generation_args(mcfg, params, rows: int, sh: Shapes, *, size: int, n_scores: int, source_blocks: int):
    """``(static, params, prompt, options)`` of ``generation.run`` as ``model.generate`` calls it for ``rows``
    prompts with one image each (``generation.programs``' abstract arguments, the parameters given)."""
    from tokdyn.models import families
    from tokdyn.models.vlm import generation

    fam = families.family_of(mcfg)
    dtype = fam.model.param_dtype(params)
    _, (_, prompt, options) = generation.programs(
        fam,
        mcfg,
        rows,
        sh.prompt,
        sh.new_tokens,
        latent_size=size,
        image_tokens=rows * sh.n_image,
        n_scores=n_scores,
        n_stop=sh.n_stop,
        source_blocks=source_blocks,
        dtype=dtype,
        bucket=BUCKET,
        prefill_chunk=PREFILL_CHUNK,
    )
    width = generation.round_up(sh.prompt, BUCKET)
    static = generation.static_for(fam, mcfg, width, sh.new_tokens, size, False, BUCKET, PREFILL_CHUNK)
    return static, params, prompt, options


def study_programs(mcfg, scfg, params=None, sh: Shapes | None = None) -> list[Program]:
    """Every batched program the study compiles for one batch of instances of model ``mcfg`` under its
    configuration ``scfg`` (module docstring), in the order the study runs them; ``params``: the tree or its
    shapes (default :func:`rows.vlm.abstract_params` in ``scfg.dtype``); ``sh``: default :func:`shapes`."""
    from tokdyn.diagnostics import dmlr, perception
    from tokdyn.models import qwen2_5_vl
    from tokdyn.models.qwen2_5_vl import adapter, inputs, probes, vision
    from tokdyn.models.vlm import generation
    from tokdyn.studies.vlm_diagnostics import analyses
    from tokdyn.studies.vlm_diagnostics.config import LATENT_KINDS

    sh = shapes(mcfg, scfg) if sh is None else sh
    params = abstract_params(mcfg, jnp.dtype(scfg.dtype)) if params is None else params
    b, k, key = sh.batch, sh.perturbations, _key()
    grid = image_grid(mcfg, 1, sh.image)
    start, end, _, _ = marker_ids(mcfg)
    plain = vlm.subject(mcfg, grid, adapter.layout(mcfg, layout_ids(mcfg, sh, sh.prompt + sh.answer, False)))
    written = vlm.subject(mcfg, grid, adapter.layout(mcfg, layout_ids(mcfg, sh, sh.generated, True), start, end))
    index = SDS((b,), jnp.int32)
    noised = SDS((k, b, sh.patches, mcfg.vision.patch_dim), jnp.float32)
    pixels = SDS((b, sh.patches, mcfg.vision.patch_dim), jnp.float32)
    processor = qwen2_5_vl.ImageProcessor()
    top_k = min(analyses.TOP_K, sh.n_image)
    hp = dmlr.Hparams(learning_rate=scfg.optimiser_learning_rate, sigma=scfg.optimiser_sigma)

    def dmlr_cfg(inject):
        top = min(10, mcfg.text.vocab_size)
        return dmlr.Config(
            reward="entropy", top_k=top, n_iters=scfg.optimiser_iters, n_pairs=scfg.optimiser_pairs, inject=inject
        )

    out: list[Program] = []

    def add(name, fn, args, kwargs=None, uses=()):
        for p in out:  # one program serves analyses that share it (the vision tower of one image count)
            if p.name == name:
                more = tuple(u for u in uses if u not in p.analyses)
                out[out.index(p)] = dataclasses.replace(p, analyses=p.analyses + more)
                return
        out.append(Program(name, fn, args, dict(kwargs or {}), tuple(uses)))

    def vision_tower(n, uses):
        g = image_grid(mcfg, n, sh.image)
        px = SDS((n * sh.patches, mcfg.vision.patch_dim), jnp.float32)
        add(
            f"vision tower, {n} images",
            inputs.image_features_jit,
            (mcfg, params, px, vision.plan(mcfg.vision, g)),
            {},
            uses,
        )

    def generate(name, rows, uses, size, n_scores, source_blocks):
        vision_tower(rows, uses)
        args = generation_args(mcfg, params, rows, sh, size=size, n_scores=n_scores, source_blocks=source_blocks)
        add(f"generate, {name}, {rows} rows", generation.run, args, {}, uses)

    for kind in scfg.noise_kinds:
        noises = (("blank", 0.0),) if kind == "blank" else tuple((kind, float(v)) for v in scfg.noise_levels)
        seeds = 1 if kind == "blank" else scfg.noise_seeds
        kw = dict(processor=processor, noises=noises, n_seeds=seeds, index=index)
        add(f"perturb pixels, {kind}", PERTURB, (key, pixels), kw, ("grounding", "mediation", MEDIATION))
    tokens = SDS((b, sh.answer), jnp.int32)
    positions = tuple(range(sh.prompt - 1, sh.prompt - 1 + sh.answer))
    add(
        "grounding",
        vlm.grounding_scores.jitted,
        (plain, params, abstract_batch(b, sh.prompt + sh.answer, sh, mcfg), noised),
        dict(positions=positions, tokens=tokens),
        ("grounding",),
    )
    segs = {
        "patches": SDS((b, sh.patches), jnp.int32),
        "merged": SDS((b, sh.n_image), jnp.int32),
    }
    pcfg = perception.Config(
        n_tokens=scfg.n_tokens,
        methods=tuple(scfg.methods),
        temperature_ratio=scfg.temperature_ratio,
        n_steps=scfg.dynamics_steps,
    )
    raster = jnp.asarray(probes.raster_order(mcfg, grid))
    # the rendered scenes' masks: segment ids 0 to max_objects (JSONL instances have none: one segment)
    add(
        "perception",
        perception.program,
        (mcfg, params, pixels, vision.plan(mcfg.vision, grid), raster, segs, key, pcfg, scfg.max_objects + 1),
        {},
        ("perception",),
    )
    lat, n_s = sh.n_latents, sh.n_scores
    generate("text mode", b, ("accuracy",), 0, n_s, 0)  # the plain setting (--latents block), its options scored
    shared = ("accuracy", "decomposition", MEDIATION, "similarity", "optimisation", "injection")
    generate("latent mode, clean", b, shared, lat, n_s, 0)
    kinds = len(LATENT_KINDS)
    generate("latent mode, perturbed images", k * b, (MEDIATION,), lat, n_s, 0)
    # the interventions' rows and the mediation's held and swapped latents in one call (the study with its
    # mediation, as every preset runs it; without it the interventions' kinds x b rows run alone)
    rows = (kinds + 2 * k) * b
    uses = ("accuracy", "decomposition", MEDIATION)
    generate(f"latent mode, {kinds} interventions with the direct and indirect runs", rows, uses, lat, n_s, sh.blocks)
    gb = abstract_batch(b, sh.generated, sh, mcfg, latents=True)  # the first block, teacher-forced
    add(
        "concentration on the block",
        vlm.concentration.jitted,
        (written, params, gb),
        dict(top_k=top_k),
        ("decomposition",),
    )
    for name, inject in (("optimisation", "none"), ("injection", "best")):
        args = (key, written, params, gb, dmlr_cfg(inject), hp)
        add(f"{name} on the block", vlm.optimise.jitted, args, dict(seeds=(0,), chunk=None, index=index), (name,))
    generate("latent mode, DMLR's latents swapped in", b, ("optimisation",), lat, n_s, sh.blocks)
    return out


def mediation_programs(programs: list[Program]) -> list[Program]:
    """The programs of the mediation with generation (:func:`mediation_row`)."""
    return [p for p in programs if MEDIATION in p.analyses]


# --------------------------------------------------------------------------- the row


def mediation_row(s, name: str, model, label_precision: str) -> dict:
    """The study's mediation with latent-mode generation on one batch of ``model`` (random weights at size
    ``name``; :func:`study_config`'s batch): the clean run, the latent interventions, the perturbed images
    (:func:`tokdyn.diagnostics.vlm.under_images`) and the host-side measures of ``mediation_rows``
    (latent shift, the answer's log-probabilities and KL), as instances/s; the batch's generated rows and
    the floating-point work of its passes (``flops``, the study's ``forward_flops`` and ``vision_flops``)."""
    from rows.base import steady
    from tokdyn.models import qwen2_5_vl, vlm as vlm_layer
    from tokdyn.models.vlm import interventions
    from tokdyn.studies.vlm_diagnostics.config import LATENT_KINDS

    mcfg = model.config
    scfg = study_config(name)
    sh = shapes(mcfg, scfg)
    b = sh.batch
    preset = scfg.preset or f"GPU_PRESETS[{name!r}]"
    rng = np.random.default_rng(5)
    ids = np.repeat(layout_ids(mcfg, sh, sh.prompt, False), b, 0)
    prompts = vlm.Prompts(
        ids,
        np.ones(ids.shape, bool),
        rng.standard_normal((b, sh.patches, mcfg.vision.patch_dim)).astype(np.float32),
        image_grid(mcfg, 1, sh.image),
        np.arange(b),
        np.ones(b, bool),
    )
    start, end, fill, _ = marker_ids(mcfg)
    score_ids = tuple(range(10, 10 + sh.n_scores))
    mode = vlm.Mode(
        vlm_layer.LatentMode(start, end, fill, sh.n_latents), 0, sh.new_tokens, score_ids, jax.random.key(7)
    )
    processor = qwen2_5_vl.ImageProcessor()
    index = jnp.arange(b)
    options = [list(range(sh.n_scores))] * b

    def noised(pixels):
        out = []
        for j, kind in enumerate(scfg.noise_kinds):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 1), j)
            if kind == "blank":
                noises, seeds = (("blank", 0.0),), 1
            else:
                noises, seeds = tuple((kind, float(v)) for v in scfg.noise_levels), scfg.noise_seeds
            out.append(PERTURB(key, jnp.asarray(pixels), processor, noises=noises, n_seeds=seeds, index=index))
        return np.asarray(jnp.concatenate(out))

    def batch():
        clean = vlm.generate(model, prompts, mode)
        src = interventions.set_sources(jax.random.key(8), clean.latents, clean.blocks)  # the batch is the set
        partner = np.maximum(src.partner, 0)  # each row's partner's latents and whole blocks (none: 0 blocks)
        swap = (np.asarray(clean.latents)[partner], np.where(src.partner >= 0, clean.blocks[partner], 0))
        sources = {"swap": swap, "mean": src.mean_of_others(clean.latents, clean.blocks)}
        under = vlm.under_interventions(model, prompts, mode, LATENT_KINDS, sources=sources)
        images = vlm.under_images(model, prompts, mode, clean, noised(prompts.pixels))
        base = vlm.answer_logprobs(clean, options)
        for k in range(sh.perturbations):
            vlm.latent_shift(clean, images["total"][k])
            for effect in ("total", "direct", "indirect"):
                vlm.answer_kl(base, vlm.answer_logprobs(images[effect][k], options))
        for gen in under.values():
            vlm.answer_kl(base, vlm.answer_logprobs(gen, options))

    best, med, first = steady(batch, s.args.repeats)
    rows = b * (1 + len(LATENT_KINDS) + 3 * sh.perturbations)
    return dict(
        size=(
            f"{b} instances (the study's {preset} preset), {sh.image} x {sh.image} images, prompt {sh.prompt} tokens, "
            f"{sh.n_latents} latents, {sh.new_tokens} new tokens, {sh.perturbations} perturbations: "
            f"{rows} generated rows"
        ),
        unit="instances/s",
        best=b / best,
        median=b / med,
        compile_s=max(first - med, 0.0),
        precision=label_precision,
        rows=rows,
        flops=mediation_flops(mcfg, scfg, sh),
    )


def mediation_flops(mcfg, scfg, sh: Shapes | None = None) -> float:
    """Floating-point work of one batch of the mediation with generation: each generated row one decoder
    pass over its prompt and new tokens and one vision pass over its image (the study's
    ``forward_flops`` and ``vision_flops`` at the model's sizes)."""
    from tokdyn.studies.vlm_diagnostics.config import LATENT_KINDS, forward_flops, vision_flops

    from tokdyn.models.blocks import fields

    sh = shapes(mcfg, scfg) if sh is None else sh
    z = fields.sizes(mcfg)
    rows = sh.batch * (1 + len(LATENT_KINDS) + 3 * sh.perturbations)
    return float(rows * (forward_flops(z, sh.prompt + sh.new_tokens) + vision_flops(z, sh.patches)))
