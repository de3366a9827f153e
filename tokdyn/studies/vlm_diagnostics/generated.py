"""The study's analyses with ``--latents generated``: on the latents a latent-reasoning checkpoint writes while it
generates (its start token chosen by the model, ``n_latents`` steps fed its own last hidden state, its end
token), each a function ``(context, group, start) -> rows`` calling :mod:`tokdyn.diagnostics.vlm_generated` and
:mod:`tokdyn.diagnostics.vlm`, with the rows in the block mode's columns so that one report reads both:

- :func:`accuracy_rows`: the generated answer scored under each intervention of
  :data:`tokdyn.diagnostics.vlm_generated.SETTINGS` (``none`` the clean run);
- :func:`decomposition_rows`: correctness with the whole block (``full``), its markers only (``drop_slots``),
  its slots only (``drop_markers``), its slots zeroed or noised, and no block (``drop_block``), and the
  attention's concentration on the image at the block's slots and its end marker (the prompt and the
  generated text up to the block, teacher-forced);
- :func:`mediation_rows`: input -> latent (per latent step), input -> answer (total, direct, indirect) and
  latent -> answer (each intervention: answer changed, its KL over the options, accuracy);
- :func:`similarity_part`: the first block's latents of each instance that wrote one;
- :func:`optimisation_rows`: DMLR on the generated latents (teacher-forced), then the answer generated with the
  most confident latents swapped in.

One clean run and one run of every intervention per batch are shared by the analyses (:func:`runs`); the last
batch's padding rows take part in no mean and no swap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.diagnostics import choices, dmlr, vlm
from tokdyn.diagnostics import vlm_generated as vg
from tokdyn.studies.vlm_diagnostics.analyses import TOP_K, chunk_of, scored_row
from tokdyn.studies.vlm_diagnostics.config import LATENT_KINDS

AS_SETTING = {
    "none": "full",
    "drop_slots": "markers_only",
    "drop_markers": "slots_only",
    "zeros": "slots_zeros",
    "noise": "slots_noise",
    "drop_block": "no_block",
}
"""The block mode's decomposition settings each intervention on generated latents stands for: the block
whole, its markers only (the slots hidden from what follows it), its slots only (the markers hidden), its
slots zeroed or noised, no block."""


def latent_mode(ctx):
    """The checkpoint's ``LatentMode`` (from the model's family, :func:`~tokdyn.diagnostics.vlm_generated.latent_module`):
    its start, end and pad ids (``--latent-start``, ``--latent-end``, ``--latent-fill``) and the latent size
    ``--n-latents``."""
    t = ctx.loaded.tokens
    return vg.latent_module(ctx.loaded.model).LatentMode(t.start, t.end, t.fill, ctx.cfg.n_latents)


def score_labels(ctx) -> list:
    """The answers whose first tokens the answer distribution is read over: the option letters (as many as
    the most options of an instance) and, for rendered scenes, the counts 1 to ``--max-objects``."""
    inst = ctx.instances
    most = max((len(inst.options_of(i) or ()) for i in range(len(inst))), default=0)
    labels = list(choices.LETTERS[:most])
    if inst.n_choices:
        labels += [str(c) for c in range(1, inst.n_choices + 1)]
    return labels


def options_of(ctx, i: int, labels: list, ids: tuple) -> list:
    """Instance ``i``'s candidate answers as indices into the scored ids (none for an open question)."""
    inst = ctx.instances
    opts = inst.options_of(i)
    names = list(choices.LETTERS[: len(opts)]) if opts is not None else []
    if opts is None and inst.n_choices:
        names = [str(c) for c in range(1, inst.n_choices + 1)]
    return [labels.index(n) for n in names]


def runs(ctx, group, start: int) -> dict:
    """The batch's shared runs (made once, kept on ``ctx``): ``index``, ``valid``, ``prompts``
    (:class:`~tokdyn.diagnostics.vlm_generated.Prompts`), the clean ``Generation``, ``{kind: Generation}`` of
    every intervention of :data:`LATENT_KINDS`, the scored ``labels`` and ``ids``."""
    cache = ctx.__dict__.setdefault("_generated", {})
    name = (group.name, start)
    if name not in cache:
        cfg = ctx.cfg
        index, valid, take = chunk_of(group, start, cfg.batch_size)
        prompts = vg.Prompts(take(group.prompt), take(group.prompt_mask), take(group.pixels), group.grid, valid)
        labels = score_labels(ctx)
        ids = ctx.loaded.tokens.score_ids(labels)
        key = jax.random.fold_in(jax.random.fold_in(ctx.key, 7), int(index[0]))
        kw = dict(new_tokens=cfg.new_tokens, score_ids=ids, key=key)
        lat = latent_mode(ctx)
        clean = vg.generate(ctx.loaded.model, prompts, lat, **kw)
        under = vg.under_interventions(ctx.loaded.model, prompts, lat, clean, LATENT_KINDS, **kw)
        cache.clear()  # one batch at a time
        cache[name] = dict(
            index=index, valid=valid, prompts=prompts, clean=clean, under=under, labels=labels, ids=ids, kw=kw
        )
    return cache[name]


def _texts(ctx, gen) -> list:
    t = ctx.loaded.tokens
    return [t.decode(gen.answer_ids(r, after_latents=True), ctx.mcfg.eos_token_id) for r in range(len(gen.tokens))]


def scored(ctx, r: dict, gen, setting: str) -> list:
    """Rows of ``gen``'s answers under ``setting`` (the text after the last latent block, scored by
    :func:`tokdyn.diagnostics.choices.score`), with the blocks each instance wrote."""
    valid, index = r["valid"], r["index"]
    return [
        scored_row(ctx, int(index[b]), text, setting, blocks=int(gen.n_blocks[b]))
        for b, text in enumerate(_texts(ctx, gen))
        if valid[b]
    ]


def accuracy_rows(ctx, group, start: int) -> list:
    """The generated answers of the batch, clean (``none``) and under each intervention, scored."""
    r = runs(ctx, group, start)
    rows = scored(ctx, r, r["clean"], "none")
    for kind, gen in r["under"].items():
        rows += scored(ctx, r, gen, kind)
    return rows


def aligned(ctx, r: dict):
    """The batch's prompts with their generated text up to the first block, teacher-forced
    (:func:`tokdyn.diagnostics.vlm_generated.block_sequences`): ``(subject, batch with the generated latents,
    has_block)``, or None when no instance wrote a block."""
    lat, mcfg = latent_mode(ctx), ctx.mcfg
    seq = vg.block_sequences(
        r["prompts"], r["clean"], lat, image_token=mcfg.image_token_id, after_image=mcfg.vision_end_token_id
    )
    if seq is None:
        return None
    ids, mask, has, latents = seq
    family = ctx.loaded.family
    lay = family.adapter.layout(mcfg, ids, lat.start, lat.end)
    batch = family.adapter.make_batch(mcfg, ids, r["prompts"].pixels, r["prompts"].grid, mask)
    return vlm.subject(mcfg, r["prompts"].grid, lay, family), vlm.with_latents(batch, jnp.asarray(latents)), has


def decomposition_rows(ctx, group, start: int) -> list:
    """Correctness (``measure`` ``correct``) under the whole block and the interventions that stand for the
    decomposition's settings (:data:`AS_SETTING`), and the attention's concentration on the image at the first
    block's slots and its end marker (``measure`` ``attention``), per instance that wrote a block."""
    r = runs(ctx, group, start)
    rows = []
    for kind, setting in AS_SETTING.items():
        gen = r["clean"] if kind == "none" else r["under"][kind]
        rows += [
            dict(instance=x["instance"], measure="correct", setting=setting, correct=x["correct"])
            for x in scored(ctx, r, gen, kind)
        ]
    got = aligned(ctx, r)
    if got is None:
        return rows
    sub, batch, has = got
    top_k = min(TOP_K, len(sub.layout.image))
    conc = vlm.concentration(sub, ctx.params, batch, top_k=top_k)
    queries = [f"latent {i + 1}" for i in range(len(sub.layout.latents))] + ["end marker"]
    for q, name in enumerate(queries):
        for b in np.flatnonzero(has):
            rows.append(
                dict(
                    instance=int(r["index"][b]),
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


def _choices(ctx, r, gen) -> list:
    inst = ctx.instances
    out = []
    for b, text in enumerate(_texts(ctx, gen)):
        i = int(r["index"][b])
        out.append(choices.score(text, inst.answers[i], inst.options_of(i)).choice)
    return out


def _distribution(ctx, r, gen) -> np.ndarray:
    opts = [options_of(ctx, int(i), r["labels"], r["ids"]) for i in r["index"]]
    return vg.answer_logprobs(gen, opts)


def mediation_rows(ctx, group, start: int) -> list:
    """Input -> latent: for each perturbation, how far each latent of the first block moves (per step);
    input -> answer: the answer changed and its KL over the options under the perturbed image (``total``),
    the perturbed image with the clean latents held (``direct``), the clean image with the perturbed latents
    (``indirect``); latent -> answer: the same under each intervention of :data:`LATENT_KINDS`, and the
    accuracy."""
    r = runs(ctx, group, start)
    noised = np.asarray(ctx.noised(r["prompts"].pixels, r["index"]))
    lat = latent_mode(ctx)
    images = vg.under_images(ctx.loaded.model, r["prompts"], lat, r["clean"], noised, **r["kw"])
    base_choice, base_lp = _choices(ctx, r, r["clean"]), _distribution(ctx, r, r["clean"])
    correct = {x["instance"]: x["correct"] for x in scored(ctx, r, r["clean"], "none")}
    valid = np.flatnonzero(r["valid"])
    rows = []
    for k, (kind, level, seed) in enumerate(ctx.perturbations()):
        moved = vg.latent_shift(r["clean"], images["total"][k])
        for b in valid:
            base = dict(instance=int(r["index"][b]), kind=kind, level=level, draw=seed)
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
            gen = images[effect][k]
            got, kl = _choices(ctx, r, gen), vg.answer_kl(base_lp, _distribution(ctx, r, gen))
            for b in valid:
                rows.append(
                    dict(
                        instance=int(r["index"][b]),
                        kind=kind,
                        level=level,
                        draw=seed,
                        path="input_answer",
                        effect=effect,
                        flipped=float(got[b] != base_choice[b]),
                        kl=float(kl[b]),
                    )
                )
    for kind in LATENT_KINDS:
        gen = r["under"][kind]
        got, kl = _choices(ctx, r, gen), vg.answer_kl(base_lp, _distribution(ctx, r, gen))
        now = {x["instance"]: x["correct"] for x in scored(ctx, r, gen, kind)}
        for b in valid:
            i = int(r["index"][b])
            rows.append(
                dict(
                    instance=i,
                    path="latent_answer",
                    kind=kind,
                    flipped=float(got[b] != base_choice[b]),
                    kl=float(kl[b]),
                    changed=True,
                    correct=now[i],
                    correct_before=correct[i],
                )
            )
    return rows


def similarity_part(ctx, group, start: int) -> dict:
    """The first block's latents ``(b, size, hidden)`` of the batch's instances that wrote one, and their ids."""
    r = runs(ctx, group, start)
    has = r["valid"] & (np.asarray(r["clean"].n_blocks) > 0)
    z = np.asarray(r["clean"].latents, np.float32)
    if z.shape[1] == 0:
        return {
            "instance": np.zeros(0, np.int64),
            "latents": np.zeros((0, ctx.cfg.n_latents, ctx.mcfg.text.hidden_size), np.float32),
        }
    return {"instance": np.asarray(r["index"])[has], "latents": z[has, 0]}


def optimisation_rows(ctx, group, start: int) -> list:
    """DMLR on the generated latents: the first block's latents optimised for the confidence reward at its
    slots (teacher-forced, :func:`tokdyn.diagnostics.vlm.optimise`), then the answer generated with them
    swapped in; per instance that wrote a block, the reward and the answer before and after."""
    cfg = ctx.cfg
    r = runs(ctx, group, start)
    got = aligned(ctx, r)
    if got is None:
        return []
    sub, batch, has = got
    dcfg = dmlr.Config(
        reward="entropy",
        top_k=min(10, ctx.mcfg.text.vocab_size),
        n_iters=cfg.optimiser_iters,
        n_pairs=cfg.optimiser_pairs,
    )
    hp = dmlr.Hparams(learning_rate=cfg.optimiser_learning_rate, sigma=cfg.optimiser_sigma)
    key = jax.random.fold_in(ctx.key, 5)
    res = vlm.optimise(key, sub, ctx.params, batch, dcfg, hp, seeds=(0,), index=jnp.asarray(r["index"]))
    res = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], res)
    best = np.asarray(res.latents_best, np.float32)[:, None]  # (B, 1, size, hidden): the first block's
    gen = vg.with_source(ctx.loaded.model, r["prompts"], latent_mode(ctx), best, has.astype(np.int32), **r["kw"])
    before = {x["instance"]: x for x in scored(ctx, r, r["clean"], "none")}
    after = {x["instance"]: x for x in scored(ctx, r, gen, "dmlr")}
    rows = []
    for b in np.flatnonzero(has):
        i = int(r["index"][b])
        rows.append(
            dict(
                instance=i,
                reward_before=float(res.reward_before[b]),
                reward_best=float(res.reward_best[b]),
                answer_before=before[i]["choice"],
                answer_best=after[i]["choice"],
                correct_before=before[i]["correct"],
                correct_best=after[i]["correct"],
                n_nan=int(res.n_nan[b]),
            )
        )
    return rows


FUNCTIONS = {
    "accuracy": accuracy_rows,
    "decomposition": decomposition_rows,
    "mediation": mediation_rows,
    "similarity": similarity_part,
    "optimisation": optimisation_rows,
}
"""The analyses on generated latents and their functions (``grounding`` and ``perception`` read no latents:
the block mode's functions serve both; ``injection`` has none: the generation program cannot insert the
image's tokens)."""

__all__ = [
    "AS_SETTING",
    "FUNCTIONS",
    "LATENT_KINDS",
    "accuracy_rows",
    "aligned",
    "decomposition_rows",
    "latent_mode",
    "mediation_rows",
    "optimisation_rows",
    "options_of",
    "runs",
    "score_labels",
    "scored",
    "similarity_part",
]
