"""The study's analyses as table rows, one implementation each over one kind of generation: the model's
latent-mode generation (:mod:`tokdyn.diagnostics.vlm`), its block written by the model (``--latents
generated``) or forced right after the prompt and filled with its own states (``--latents block``); the
mode only says where the block comes from. Each analysis is a function ``(context, group, start) -> rows``
over one batch of instances, calling :mod:`tokdyn.diagnostics.vlm` and turning its arrays into rows:

- :func:`clean_part`: the clean run of the batch (the first pass over the whole set, kept as a part): the
  sources of ``swap`` and ``mean`` are taken from it over every instance (:func:`sources_of`), never from a
  batch;
- :func:`grounding_rows`: DMLR's grounding score of each answer token (:func:`tokdyn.diagnostics.vlm.grounding_scores`);
- :func:`perception_rows`: token dynamics of the vision tower's patch features against the scenes' masks
  (:func:`tokdyn.diagnostics.perception.perception_dynamics`);
- :func:`accuracy_rows`: the generated answer scored as the benchmarks score it (:mod:`tokdyn.diagnostics.choices`),
  clean and under each intervention of :data:`~tokdyn.studies.vlm_diagnostics.config.LATENT_KINDS`;
- :func:`decomposition_rows`: correctness under each decomposition setting (a kind of the one table,
  :data:`tokdyn.diagnostics.vlm.SETTINGS`) and the attention's concentration on the image at the block's slots;
- :func:`mediation_rows`: input -> latent, input -> answer (total, direct, indirect) and latent -> answer;
- :func:`similarity_part`: each instance's first whole block, for the similarity across instances and steps;
- :func:`optimisation_rows` and :func:`injection_rows`: DMLR's latent optimisation without and with its
  visual injection, on the block teacher-forced.

What is counted where (documented on the study's page): a block cut by the token limit is its own case (the
row says ``cut``; it enters no latent analysis and no accuracy); an answer the token limit cut before any rule
read it is ``cut``, not ``unparsable``; the answer is read where it is written, after the last whole block; an
answer flips when both runs' answers are read and differ (a run without a readable answer counts in neither
direction); an intervention whose source holds nothing for an instance (no other instance wrote a block)
gives that instance no row.

:data:`FUNCTIONS` maps :data:`~tokdyn.studies.vlm_diagnostics.config.ANALYSES` to them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import geometry
from tokdyn.diagnostics import choices, dmlr, perception
from tokdyn.diagnostics import vlm
from tokdyn.models.vlm import devices as vlm_devices
from tokdyn.models.vlm import interventions
from tokdyn.models.vlm.latent import Generation
from tokdyn.studies.vlm_diagnostics.config import LATENT_KINDS

TOP_K = 3  # the top-k mass of the attention's concentration (at most the image's tokens)
PART_FIELDS = ("index", "valid", "tokens", "latents", "n_blocks", "block_steps", "complete", "stop_steps", "scores")
"""The arrays of a batch's clean run kept as its part (:func:`clean_part`)."""


class Context:
    """What every analysis of one run shares: the configuration, the model (``loaded``,
    :class:`~tokdyn.studies.vlm_diagnostics.checkpoint.Loaded`), the instances, the root key, the latent mode
    and, after the clean pass, the set's sources of ``swap`` and ``mean``.

    Args:
      cfg: the study's :class:`~tokdyn.studies.vlm_diagnostics.config.Config`.
      loaded: the model.
      instances: the :class:`~tokdyn.studies.vlm_diagnostics.instances.Instances`.
    """

    def __init__(self, cfg, loaded, instances):
        self.cfg, self.loaded, self.instances = cfg, loaded, instances
        self.key = jax.random.key(cfg.root_seed)
        self.mcfg = loaded.config
        self._perturb = jax.jit(vlm.perturb_pixels, static_argnames=("processor", "noises", "n_seeds"))
        self.labels = score_labels(self)
        self.score_ids = loaded.tokens.score_ids(self.labels)
        self.mode = vlm.Mode(
            loaded.latent_mode(loaded.size),
            0 if cfg.latents == "block" else None,
            cfg.new_tokens,
            self.score_ids,
            jax.random.fold_in(self.key, 7),
        )
        self.rows = rows_of(cfg)  # a batch's rows: batch_size, padded to a multiple of the devices
        self.sources = None  # interventions.Sources of the whole set, after the clean pass
        self.clean = {}  # (group name, start) -> the clean part's arrays
        self._runs = {}

    @property
    def params(self):
        """The model's weights (read on first use)."""
        return self.loaded.model.params

    def perturbations(self) -> list:
        """``(kind, level, draw)`` of every image perturbation: each gaussian level x draw, then one blank."""
        out = []
        for kind in self.cfg.noise_kinds:
            if kind == "blank":
                out.append(("blank", 0.0, 0))
            else:
                out += [(kind, float(level), s) for level in self.cfg.noise_levels for s in range(self.cfg.noise_seeds)]
        return out

    def noised(self, pixels, index) -> jax.Array:
        """(K, B, patches, patch_dim) pixel rows of every :meth:`perturbations` of each instance
        (:func:`tokdyn.diagnostics.vlm.perturb_pixels`, kind j's draws from ``fold_in(fold_in(key, 1), j)``
        and the instance's id, so a draw never depends on batching)."""
        cfg, proc = self.cfg, self.loaded.processor
        out = []
        for j, kind in enumerate(cfg.noise_kinds):
            key = jax.random.fold_in(jax.random.fold_in(self.key, 1), j)
            if kind == "blank":
                noises, seeds = (("blank", 0.0),), 1
            else:
                noises, seeds = tuple((kind, float(v)) for v in cfg.noise_levels), cfg.noise_seeds
            out.append(self._perturb(key, pixels, proc, noises=noises, n_seeds=seeds, index=jnp.asarray(index)))
        return jnp.concatenate(out)


def rows_of(cfg) -> int:
    """The rows of a batch: ``cfg.batch_size`` rounded up to a multiple of the local devices, over which every
    call splits its rows (the model's weights are on each: :attr:`~tokdyn.studies.vlm_diagnostics.checkpoint.Loaded.model`);
    rows past ``batch_size`` only pad the batch."""
    return vlm_devices.padded(cfg.batch_size, jax.local_devices())


def score_labels(ctx) -> list:
    """The answers whose first tokens the answer distribution is read over: the option letters (as many as
    the most options of an instance) and, for rendered scenes, the counts 1 to ``--max-objects``."""
    inst = ctx.instances
    most = max((len(inst.options_of(i) or ()) for i in range(len(inst))), default=0)
    labels = list(choices.LETTERS[:most])
    if inst.n_choices:
        labels += [str(c) for c in range(1, inst.n_choices + 1)]
    return labels


def options_of(ctx, i: int) -> list:
    """Instance ``i``'s candidate answers as indices into the scored ids (none for an open question)."""
    inst = ctx.instances
    opts = inst.options_of(i)
    names = list(choices.LETTERS[: len(opts)]) if opts is not None else []
    if opts is None and inst.n_choices:
        names = [str(c) for c in range(1, inst.n_choices + 1)]
    return [ctx.labels.index(n) for n in names]


def chunk_of(group, start: int, size: int, rows: int | None = None):
    """Rows ``start`` to ``start + size`` of ``group`` (fewer at its end), padded to ``rows`` rows (default
    ``size``) by repeating the last: ``(index (rows,), valid (rows,) bool, take)`` where ``take(a)`` cuts an
    array of the group; the padding rows are not ``valid``."""
    rows = size if rows is None else rows
    stop = min(start + size, len(group.index))
    at = np.minimum(np.arange(start, start + rows), stop - 1)
    valid = np.arange(start, start + rows) < stop
    return group.index[at], valid, lambda a: np.asarray(a)[at]


def prompts_of(ctx: Context, group, start: int) -> vlm.Prompts:
    """The batch's prompts, padded to the context's ``rows`` (the last batch, and a batch whose rows do not
    divide over the devices: its padding rows are counted nowhere)."""
    index, valid, take = chunk_of(group, start, ctx.cfg.batch_size, ctx.rows)
    return vlm.Prompts(take(group.prompt), take(group.prompt_mask), take(group.pixels), group.grid, index, valid)


# ---------------------------------------------------------------------------------------------- the clean pass


def clean_part(ctx: Context, group, start: int) -> dict:
    """The clean run of the batch at ``start`` (:func:`tokdyn.diagnostics.vlm.generate`), as the arrays of
    :data:`PART_FIELDS`: kept as a part, read back by every analysis, and the set's sources are made of all
    of them (:func:`sources_of`)."""
    prompts = prompts_of(ctx, group, start)
    gen = vlm.generate(ctx.loaded.model, prompts, ctx.mode)
    out = {f: np.asarray(getattr(gen, f)) for f in PART_FIELDS if f not in ("index", "valid", "scores")}
    # no scored token (open questions only): a (B, N, 0) array, never None (a part holds arrays)
    out["scores"] = np.zeros((*gen.tokens.shape, 0), np.float32) if gen.scores is None else np.asarray(gen.scores)
    return {"index": np.asarray(prompts.index), "valid": np.asarray(prompts.valid), **out}


def generation(ctx: Context, part: dict) -> Generation:
    """The clean part's arrays as a :class:`tokdyn.models.vlm.Generation`."""
    return Generation(
        part["tokens"],
        part["latents"],
        part["n_blocks"],
        part["block_steps"],
        part["complete"].astype(bool),
        part["scores"],
        tuple(ctx.score_ids),
        part["stop_steps"],
        int(ctx.loaded.model_pad()),
        ctx.mode.latent,
    )


def sources_of(ctx: Context, parts: list) -> interventions.Sources:
    """The set's sources of ``swap`` and ``mean`` (:func:`tokdyn.models.vlm.interventions.set_sources`'s rule)
    from every batch's clean part: the partners drawn over every instance that wrote a whole block, the sums of
    their latents block by block."""
    n = len(ctx.instances)
    total, count = None, None
    has = np.zeros(n, bool)
    for p in parts:
        gen = generation(ctx, p)
        v = np.asarray(p["valid"], bool)
        total, count = interventions.accumulate(total, count, gen.latents[v], gen.blocks[v])
        has[np.asarray(p["index"])[v]] = gen.blocks[v] > 0
    partner = interventions.swap_partners(jax.random.fold_in(ctx.key, 8), has)
    if total is None:
        total, count = np.zeros((0, 1, ctx.mcfg.text.hidden_size)), np.zeros(0, np.int64)
    return interventions.Sources(partner, total, count)


def _clean(ctx: Context, index) -> tuple:
    """The clean latents (B, K, S, hidden) and whole blocks (B,) of the instances ``index`` (any batch's)."""
    where = {}
    for p in ctx.clean.values():
        for row, i in enumerate(np.asarray(p["index"])):
            if p["valid"][row]:
                where[int(i)] = (p, row)
    k = max((p["latents"].shape[1] for p in ctx.clean.values()), default=0)
    span = max((p["latents"].shape[2] for p in ctx.clean.values()), default=1)
    lat = np.zeros((len(index), k, span, ctx.mcfg.text.hidden_size), np.float32)
    blocks = np.zeros(len(index), np.int64)
    for r, i in enumerate(index):
        if int(i) < 0 or int(i) not in where:
            continue
        p, row = where[int(i)]
        got = p["latents"][row]
        lat[r, : got.shape[0], : got.shape[1]] = got
        blocks[r] = int(p["complete"][row].sum())
    return lat, blocks


def batch_sources(ctx: Context, index) -> dict:
    """Each row's ``swap`` source (its partner's clean latents) and ``mean`` source (the mean of every other
    instance's), with the blocks each holds (0: no other instance wrote one: the row counts nowhere)."""
    src = ctx.sources
    partner = src.partner[np.asarray(index)]
    swap, swap_blocks = _clean(ctx, partner)
    swap_blocks = np.where(partner >= 0, swap_blocks, 0)
    own, own_blocks = _clean(ctx, index)
    mean, mean_blocks = src.mean_of_others(own, own_blocks)
    return {"swap": (swap, swap_blocks), "mean": (mean, mean_blocks)}


def runs(ctx: Context, group, start: int) -> dict:
    """The batch's shared runs (made once, kept on ``ctx`` for the batch's analyses): ``prompts``, the clean
    ``Generation`` (its part), ``{kind: Generation}`` of every intervention of :data:`LATENT_KINDS` in one
    call, and each row's sources; with the mediation analysis, ``images``: the runs under every perturbed image
    (:func:`tokdyn.diagnostics.vlm.under_images`), the interventions' rows in the same call (one program)."""
    name = (group.name, start)
    if name not in ctx._runs:
        prompts = prompts_of(ctx, group, start)
        clean = generation(ctx, ctx.clean[name])
        sources = batch_sources(ctx, prompts.index)
        model, images = ctx.loaded.model, None
        if "mediation" in ctx.cfg.analyses:
            noised = np.asarray(ctx.noised(prompts.pixels, prompts.index))
            images = vlm.under_images(model, prompts, ctx.mode, clean, noised, kinds=LATENT_KINDS, sources=sources)
            under = {kind: images.pop(kind) for kind in LATENT_KINDS}
        else:
            under = vlm.under_interventions(model, prompts, ctx.mode, LATENT_KINDS, sources=sources)
        ctx._runs.clear()  # one batch at a time
        ctx._runs[name] = dict(prompts=prompts, clean=clean, under=under, sources=sources, images=images)
    return ctx._runs[name]


# ---------------------------------------------------------------------------------------------- scoring


def scored_row(ctx: Context, i: int, text: str, setting: str, *, cut: bool = False, **extra) -> dict:
    """The row of instance ``i``'s generated ``text`` under ``setting``: the option or answer read from it
    (:func:`tokdyn.diagnostics.choices.score`), whether it is right, whether it was read, whether the token
    limit cut it (``cut``: an unread answer of a run that did not stop, or a block cut: counted apart, its
    ``correct`` NaN), the instance's benchmark and chance level, and ``extra``'s columns."""
    inst = ctx.instances
    got = choices.score(text, inst.answers[i], inst.options_of(i), cut=bool(cut))
    cut = got.rule == choices.CUT
    return dict(
        instance=i,
        benchmark=inst.file_of(i),
        setting=setting,
        text=text,
        choice=got.choice,
        answer=inst.answers[i],
        correct=float("nan") if cut else float(got.correct),
        parsed=bool(got.parsed),
        cut=cut,
        rule=got.rule,
        chance=inst.chance(i),
        **extra,
    )


def scored(ctx: Context, prompts: vlm.Prompts, gen: Generation, setting: str) -> list:
    """Rows of ``gen``'s answers under ``setting`` (the text after the last whole block), one per valid row,
    with the blocks each instance wrote whole and whether one was cut."""
    t, stops = ctx.loaded.tokens, ctx.mcfg.eos_token_id
    rows = []
    for b in np.flatnonzero(prompts.valid):
        text = (
            t.decode(gen.answer_ids(b, after_latents=True), stops)
            if gen.latent is not None
            else t.decode(gen.tokens[b], stops)
        )
        cut = bool(gen.cut[b]) or not bool(gen.stopped[b])
        rows.append(
            scored_row(
                ctx,
                int(prompts.index[b]),
                text,
                setting,
                cut=cut,
                blocks=int(gen.blocks[b]),
                block_cut=bool(gen.cut[b]),
            )
        )
    return rows


def _by_instance(rows: list) -> dict:
    return {r["instance"]: r for r in rows}


# ---------------------------------------------------------------------------------------------- analyses


def grounding_rows(ctx: Context, group, start: int) -> list:
    """The grounding score of every answer token of the chunk of ``group`` at ``start`` (the prompt and the
    answer teacher-forced, no block), under every perturbation: rows of instance, perturbation, token,
    log-probabilities with the image and the noised one, and S."""
    index, valid, take = chunk_of(group, start, ctx.cfg.batch_size, ctx.rows)
    ids = take(group.plain)
    family = ctx.loaded.family
    sub = vlm.subject(ctx.mcfg, group.grid, family.adapter.layout(ctx.mcfg, ids), family)
    width = group.answer_ids.shape[1]
    positions = tuple(range(group.prompt_length - 1, group.prompt_length - 1 + width))
    tokens, used = take(group.answer_ids), take(group.answer_mask)
    batch = family.adapter.make_batch(ctx.mcfg, ids, take(group.pixels), group.grid, take(group.plain_mask))
    noised = ctx.noised(batch["pixel_values"], index)
    params = ctx.params  # the rows split over the devices the weights are on
    batch, tokens = vlm.on_devices(params, (batch, jnp.asarray(tokens, jnp.int32)))
    g = vlm.grounding_scores(
        sub, params, batch, vlm.on_devices(params, noised, axis=1), positions=positions, tokens=tokens
    )
    clean, s = np.asarray(g.clean, np.float64), np.asarray(g.scores, np.float64)
    rows = []
    for k, (kind, level, seed) in enumerate(ctx.perturbations()):
        for b in np.flatnonzero(valid):
            for t in np.flatnonzero(used[b]):
                rows.append(
                    dict(
                        instance=int(index[b]),
                        noise=kind,
                        level=level,
                        draw=seed,
                        token=int(t),
                        token_id=int(tokens[b, t]),
                        logp_image=clean[b, t],
                        logp_noised=clean[b, t] - float(s[k, b, t]),
                        score=float(s[k, b, t]),
                    )
                )
    return rows


def perception_rows(ctx: Context, start: int) -> list:
    """Token dynamics of the perception tokens of instances ``start`` to ``start + batch_size`` (every
    image of the study, not a group's: the prompt plays no part): per image, level and method, the scores of
    :data:`tokdyn.diagnostics.perception.SCORES` (``ari`` and ``fg_ari`` NaN for images without masks)."""
    cfg, inst = ctx.cfg, ctx.instances
    stop = min(start + cfg.batch_size, len(inst))
    take = np.minimum(np.arange(start, start + cfg.batch_size), len(inst) - 1)  # the last chunk padded: one program
    masks = None if inst.masks is None else inst.masks[take]
    pcfg = perception.Config(
        n_tokens=cfg.n_tokens,
        methods=tuple(cfg.methods),
        temperature_ratio=cfg.temperature_ratio,
        n_steps=cfg.dynamics_steps,
    )
    key = jax.random.fold_in(jax.random.fold_in(ctx.key, 2), start)
    res = perception.perception_dynamics(
        vlm_devices.one_device(ctx.loaded.model),  # one image batch, whole: one device's program
        key,
        [inst.images[i] for i in take],
        masks,
        cfg=pcfg,
        processor=ctx.loaded.processor,
        size=(cfg.image_size, cfg.image_size),
    )
    rows = []
    for level in perception.LEVELS:
        for i in range(stop - start):
            for m, name in enumerate(res["names"]):
                row = dict(instance=start + i, level=level, method=name)
                row.update({s: float(np.asarray(res[level][s])[i, m]) for s in perception.SCORES})
                row["flat"] = bool(np.asarray(res[level]["flat"])[i])
                rows.append(row)
    return rows


def accuracy_rows(ctx: Context, group, start: int) -> list:
    """The generated answers of the batch, scored: ``plain`` (the prompt alone, text mode; with ``--latents
    block``), ``none`` (the clean run, its block in place) and each intervention of :data:`LATENT_KINDS`
    (a ``swap`` or ``mean`` row only where the set held a source for the instance)."""
    r = runs(ctx, group, start)
    prompts = r["prompts"]
    rows = []
    if ctx.mode.block_at is not None:
        rows += scored(ctx, prompts, vlm.generate(ctx.loaded.model, prompts, ctx.mode, latent=False), "plain")
    rows += scored(ctx, prompts, r["clean"], "none")
    for kind, gen in r["under"].items():
        keep = _sourced(r, kind)
        rows += [x for x in scored(ctx, prompts, gen, kind) if keep[x["instance"]]]
    return rows


def _sourced(r: dict, kind: str) -> dict:
    """Instance -> whether its run of ``kind`` had something to feed (a source, for swap and mean)."""
    index = r["prompts"].index
    if kind not in r["sources"]:
        return {int(i): True for i in index}
    blocks = r["sources"][kind][1]
    return {int(i): bool(b > 0) for i, b in zip(index, blocks)}


def decomposition_rows(ctx: Context, group, start: int) -> list:
    """Correctness (``measure`` ``correct``) under each setting of
    :data:`tokdyn.diagnostics.vlm.SETTINGS` (a kind of the one table each), per instance whose clean run
    wrote a whole block, and the attention's concentration on the image at its first block's slots and its end
    marker (``measure`` ``attention``, the block teacher-forced)."""
    r = runs(ctx, group, start)
    prompts, clean = r["prompts"], r["clean"]
    has = {int(i): bool(b > 0) for i, b in zip(prompts.index, clean.blocks)}
    rows = []
    for setting, kind in vlm.SETTINGS.items():
        gen = clean if kind == "none" else r["under"][kind]
        keep = _sourced(r, kind)
        rows += [
            dict(instance=x["instance"], measure="correct", setting=setting, correct=x["correct"])
            for x in scored(ctx, prompts, gen, kind)
            if has[x["instance"]] and keep[x["instance"]]
        ]
    got = vlm.aligned(ctx.loaded.model, prompts, clean, ctx.mode)
    if got is None:
        return rows
    sub, batch, on = got
    top_k = min(TOP_K, len(sub.layout.image))
    conc = vlm.concentration(sub, ctx.params, batch, top_k=top_k)
    queries = [f"latent {i + 1}" for i in range(len(sub.layout.latents))] + ["end marker"]
    for q, name in enumerate(queries):
        for b in np.flatnonzero(on):
            rows.append(
                dict(
                    instance=int(prompts.index[b]),
                    measure="attention",
                    query=name,
                    entropy=float(conc.entropy[b, q]),
                    top_k_mass=float(conc.top_k_mass[b, q]),
                    patch_share=float(conc.patch_share[b, q]),
                    top_k=top_k,
                    image_tokens=len(sub.layout.image),
                )
            )
    return rows


def _reading(ctx: Context, prompts, gen) -> tuple:
    """Each row's answer read (None where none was: unparsable or cut) and its distribution over its options
    at the step the answer is written (NaN where there is none)."""
    t, stops = ctx.loaded.tokens, ctx.mcfg.eos_token_id
    inst = ctx.instances
    chosen = []
    for b in range(len(prompts.index)):
        i = int(prompts.index[b])
        got = choices.score(t.decode(gen.answer_ids(b, after_latents=True), stops), inst.answers[i], inst.options_of(i))
        chosen.append(got.choice if got.parsed else None)
    dist = vlm.answer_logprobs(gen, [options_of(ctx, int(i)) for i in prompts.index])
    return chosen, dist


def flip(a, b) -> float:
    """1 where two answers were both read and differ, 0 where both were read and agree, NaN otherwise."""
    return float("nan") if a is None or b is None else float(a != b)


def mediation_rows(ctx: Context, group, start: int) -> list:
    """Per instance whose clean run wrote a whole block. Input -> latent: for each perturbation, how far each
    latent of the first block moves (per step); input -> answer: the answer flipped and its KL over the
    options, read where the answer is written, under the perturbed image (``total``), the perturbed image with
    the clean latents held (``direct``) and the clean image with the perturbed latents (``indirect``);
    latent -> answer: the same under each intervention of :data:`LATENT_KINDS`, and the accuracy."""
    r = runs(ctx, group, start)
    prompts, clean, images = r["prompts"], r["clean"], r["images"]
    base_choice, base_lp = _reading(ctx, prompts, clean)
    correct = {x["instance"]: x["correct"] for x in scored(ctx, prompts, clean, "none")}
    valid = [b for b in np.flatnonzero(prompts.valid) if clean.blocks[b] > 0]
    rows = []
    for k, (kind, level, seed) in enumerate(ctx.perturbations()):
        moved = vlm.latent_shift(clean, images["total"][k])
        for b in valid:
            base = dict(instance=int(prompts.index[b]), kind=kind, level=level, draw=seed)
            for step in range(moved.cosine_distance.shape[1]):
                rows.append(
                    dict(
                        base,
                        path="input_latent",
                        step=step + 1,
                        cosine_distance=float(moved.cosine_distance[b, step]),
                        relative_l2=float(moved.relative_l2[b, step]),
                    )
                )
        for effect in ("total", "direct", "indirect"):
            got, lp = _reading(ctx, prompts, images[effect][k])
            kl = vlm.answer_kl(base_lp, lp)
            for b in valid:
                rows.append(
                    dict(
                        instance=int(prompts.index[b]),
                        kind=kind,
                        level=level,
                        draw=seed,
                        path="input_answer",
                        effect=effect,
                        flipped=flip(base_choice[b], got[b]),
                        kl=float(kl[b]),
                    )
                )
    for kind in LATENT_KINDS:
        gen = r["under"][kind]
        keep = _sourced(r, kind)
        got, lp = _reading(ctx, prompts, gen)
        kl = vlm.answer_kl(base_lp, lp)
        now = _by_instance(scored(ctx, prompts, gen, kind))
        for b in valid:
            i = int(prompts.index[b])
            if not keep[i]:
                continue
            rows.append(
                dict(
                    instance=i,
                    path="latent_answer",
                    kind=kind,
                    flipped=flip(base_choice[b], got[b]),
                    kl=float(kl[b]),
                    correct=now[i]["correct"],
                    correct_before=correct[i],
                )
            )
    return rows


def similarity_part(ctx: Context, group, start: int) -> dict:
    """The first whole block's latents ``(b, S, hidden)`` of the batch's instances that wrote one, and their
    ids."""
    part = ctx.clean[(group.name, start)]
    gen = generation(ctx, part)
    has = np.asarray(part["valid"], bool) & (gen.blocks > 0)
    z = np.asarray(gen.latents, np.float32)
    if z.shape[1] == 0:
        return {
            "instance": np.zeros(0, np.int64),
            "latents": np.zeros((0, z.shape[2], ctx.mcfg.text.hidden_size), np.float32),
        }
    return {"instance": np.asarray(part["index"])[has], "latents": z[has, 0]}


def similarity_rows(latents: np.ndarray, instance: np.ndarray) -> tuple[list, dict]:
    """The similarity of latents (N instances, L steps, D) (:mod:`tokdyn.geometry`): rows of the mean
    pairwise cosine across instances at each step (``across``: instances), of each instance's cosine between
    consecutive steps (``steps``), and the two matrices for the figure: ``instances`` (N, N), the cosine of
    two instances' latents averaged over the steps, and ``steps`` (L, L), the cosine of two steps averaged
    over the instances."""
    z = np.asarray(latents, np.float32)
    n, length = z.shape[:2]
    if n == 0:
        return [], {}
    rows = []
    for step in range(length):
        value = float(geometry.mean_pairwise_cosine(z[:, step])) if n >= 2 else float("nan")
        rows.append(dict(measure="across", step=step + 1, cosine=value, n=n))
    if length >= 2:
        consecutive = np.stack([np.asarray(geometry.step_similarity(z[i : i + 1])) for i in range(n)])  # (N, L - 1)
        for i in range(n):
            for step in range(length - 1):
                rows.append(
                    dict(measure="steps", instance=int(instance[i]), step=step + 1, cosine=float(consecutive[i, step]))
                )
    across = np.mean([np.asarray(geometry.cosine_matrix(z[:, s])) for s in range(length)], 0)
    within = np.mean([np.asarray(geometry.cosine_matrix(z[i])) for i in range(n)], 0)
    return rows, {"instances": across, "steps": within}


def optimisation_rows(ctx: Context, group, start: int, *, inject: str = "none") -> list:
    """DMLR on each instance's first whole block (teacher-forced, :func:`tokdyn.diagnostics.vlm.optimise`,
    entropy reward, evolution strategies; ``inject="best"``: with the paper's visual injection of the image
    tokens the latents attend to most): per instance the reward before and with the most confident latents;
    without injection the answer is generated again with those latents swapped in and scored, with injection
    (which generation cannot insert) the teacher-forced most likely token after the block is compared with the
    answer's first token."""
    cfg = ctx.cfg
    r = runs(ctx, group, start)
    prompts, clean = r["prompts"], r["clean"]
    got = vlm.aligned(ctx.loaded.model, prompts, clean, ctx.mode)
    if got is None:
        return []
    sub, batch, has = got
    dcfg = dmlr.Config(
        reward="entropy",
        top_k=min(10, ctx.mcfg.text.vocab_size),
        n_iters=cfg.optimiser_iters,
        n_pairs=cfg.optimiser_pairs,
        inject=inject,
    )
    hp = dmlr.Hparams(learning_rate=cfg.optimiser_learning_rate, sigma=cfg.optimiser_sigma)
    key = jax.random.fold_in(ctx.key, 5 if inject == "none" else 6)
    index = vlm.on_devices(ctx.params, jnp.asarray(prompts.index))  # the rows' split: the batch's (aligned)
    res = vlm.optimise(key, sub, ctx.params, batch, dcfg, hp, seeds=(0,), index=index)
    res = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], res)
    rows = []
    if inject == "none":
        best = np.asarray(res.latents_best, np.float32)[:, None]  # (B, 1, size, hidden): the first block's
        after = _by_instance(
            scored(
                ctx, prompts, vlm.with_source(ctx.loaded.model, prompts, ctx.mode, best, has.astype(np.int64)), "dmlr"
            )
        )
        before = _by_instance(scored(ctx, prompts, clean, "none"))
    for b in np.flatnonzero(has):
        i = int(prompts.index[b])
        row = dict(
            instance=i,
            reward_before=float(res.reward_before[b]),
            reward_best=float(res.reward_best[b]),
            n_nan=int(res.n_nan[b]),
        )
        if inject == "none":
            row.update(
                answer_before=before[i]["choice"],
                answer_best=after[i]["choice"],
                correct_before=before[i]["correct"],
                correct_best=after[i]["correct"],
            )
        else:
            first = int(ctx.loaded.tokens.answer(ctx.instances.answers[i])[0])
            row.update(
                answer_before=int(res.answer_before[b]),
                answer_best=int(res.answer_best[b]),
                correct_before=float(res.answer_before[b] == first),
                correct_best=float(res.answer_best[b] == first),
            )
        rows.append(row)
    return rows


def injection_rows(ctx: Context, group, start: int) -> list:
    """DMLR with its visual injection (``inject="best"``): :func:`optimisation_rows` with the image tokens
    the most confident latents attend to most inserted before the latent block."""
    return optimisation_rows(ctx, group, start, inject="best")


FUNCTIONS = {
    "grounding": grounding_rows,
    "perception": perception_rows,
    "accuracy": accuracy_rows,
    "decomposition": decomposition_rows,
    "mediation": mediation_rows,
    "similarity": similarity_part,
    "optimisation": optimisation_rows,
    "injection": injection_rows,
}
"""Each analysis of :data:`~tokdyn.studies.vlm_diagnostics.config.ANALYSES` and its function; all but
``perception`` take ``(context, group, start)``, ``perception`` ``(context, start)``; ``similarity``
returns a part of arrays (:func:`similarity_part`), tabulated over every instance by :func:`similarity_rows`."""

__all__ = [
    "Context",
    "FUNCTIONS",
    "PART_FIELDS",
    "accuracy_rows",
    "batch_sources",
    "chunk_of",
    "clean_part",
    "decomposition_rows",
    "flip",
    "generation",
    "grounding_rows",
    "injection_rows",
    "mediation_rows",
    "optimisation_rows",
    "options_of",
    "perception_rows",
    "prompts_of",
    "rows_of",
    "runs",
    "score_labels",
    "scored",
    "scored_row",
    "similarity_part",
    "similarity_rows",
    "sources_of",
]
