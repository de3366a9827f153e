"""The study's analyses as table rows: each a function ``(context, group, start) -> rows`` over one batch of
instances, calling the one implementation of the analysis in :mod:`tokdyn.diagnostics.vlm` (the latent
block filled by the model itself, :func:`tokdyn.diagnostics.vlm.imagine`'s latent arm) and turning its arrays
into rows; nothing is computed here but the rows:

- :func:`grounding_rows`: DMLR's grounding score of each answer token (:func:`tokdyn.diagnostics.vlm.grounding_scores`);
- :func:`perception_rows`: token dynamics of the vision tower's patch features against the scenes' masks
  (:func:`tokdyn.diagnostics.perception.perception_dynamics`);
- :func:`accuracy_rows`: the answer the model generates, scored as the benchmarks score it
  (:mod:`tokdyn.diagnostics.choices`);
- :func:`decomposition_rows`: the answer's correctness under each setting of the block and the attention's
  concentration on the image (:func:`tokdyn.diagnostics.vlm.decomposition`);
- :func:`mediation_rows`: input -> latent, input -> answer and latent -> answer
  (:func:`tokdyn.diagnostics.vlm.mediation`);
- :func:`similarity_part`: the imagined latents, kept for the similarity across instances and steps
  (:func:`similarity_rows`, over every instance);
- :func:`optimisation_rows` and :func:`injection_rows`: DMLR's latent optimisation without and with its
  visual injection (:func:`tokdyn.diagnostics.vlm.optimise`).

:data:`FUNCTIONS` maps :data:`~tokdyn.studies.vlm_diagnostics.config.ANALYSES` to them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import geometry
from tokdyn.diagnostics import choices, dmlr, perception
from tokdyn.diagnostics import vlm
from tokdyn.studies.vlm_diagnostics.config import DECOMPOSITION_SETTINGS, MEDIATION_KINDS

TOP_K = 3  # the top-k mass of the attention's concentration (at most the image's tokens)


class Context:
    """What every analysis of one run shares: the configuration, the model (``loaded``,
    :class:`~tokdyn.studies.vlm_diagnostics.checkpoint.Loaded`, whose ``family`` makes the prompts' batches),
    the instances and the root key.

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


def chunk_of(group, start: int, size: int):
    """Rows ``start`` to ``start + size`` of ``group``, the last chunk padded by repeating its last row:
    ``(index (size,), valid (size,) bool, take)`` where ``take(a)`` cuts an array of the group."""
    n = len(group.index)
    rows = np.minimum(np.arange(start, start + size), n - 1)
    valid = np.arange(start, start + size) < n
    return group.index[rows], valid, lambda a: np.asarray(a)[rows]


def block_batch(ctx: Context, group, start: int):
    """The chunk's latent-block prompts: ``(index, valid, subject, batch, answers)`` (answers: the first
    token of each answer)."""
    index, valid, take = chunk_of(group, start, ctx.cfg.batch_size)
    ids = take(group.block)
    t, family = ctx.loaded.tokens, ctx.loaded.family
    lay = family.adapter.layout(ctx.mcfg, ids, t.start, t.end)
    batch = family.adapter.make_batch(ctx.mcfg, ids, take(group.pixels), group.grid, take(group.block_mask))
    sub = vlm.subject(ctx.mcfg, group.grid, lay, family)
    return index, valid, sub, batch, jnp.asarray(take(group.answer_ids)[:, 0], jnp.int32)


def grounding_rows(ctx: Context, group, start: int) -> list:
    """The grounding score of every answer token of the chunk of ``group`` at ``start``, under every
    perturbation: rows of instance, perturbation, token, log-probabilities with the image and the noised
    one, and S."""
    index, valid, take = chunk_of(group, start, ctx.cfg.batch_size)
    ids = take(group.plain)
    family = ctx.loaded.family
    sub = vlm.subject(ctx.mcfg, group.grid, family.adapter.layout(ctx.mcfg, ids), family)
    width = group.answer_ids.shape[1]
    positions = tuple(range(group.prompt_length - 1, group.prompt_length - 1 + width))
    tokens, used = take(group.answer_ids), take(group.answer_mask)
    batch = family.adapter.make_batch(ctx.mcfg, ids, take(group.pixels), group.grid, take(group.plain_mask))
    noised = ctx.noised(batch["pixel_values"], index)
    g = vlm.grounding_scores(sub, ctx.params, batch, noised, positions=positions, tokens=tokens)
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
        ctx.loaded.model,
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


def scored_rows(ctx: Context, index, valid, tokens, setting: str) -> list:
    """Rows of generated ``tokens`` (B, N) of the chunk's instances under ``setting``: the text (cut at the
    first stop token), the option or answer read from it (:func:`tokdyn.diagnostics.choices.score`), whether
    it is right and parsed, and the instance's benchmark and chance level."""
    t, stops = ctx.loaded.tokens, ctx.mcfg.eos_token_id
    return [scored_row(ctx, int(index[b]), t.decode(tokens[b], stops), setting) for b in np.flatnonzero(valid)]


def scored_row(ctx: Context, i: int, text: str, setting: str, **extra) -> dict:
    """The row of instance ``i``'s generated ``text`` under ``setting``: the option or answer read from it
    (:func:`tokdyn.diagnostics.choices.score`), whether it is right and parsed, the instance's benchmark and
    chance level, and ``extra``'s columns."""
    inst = ctx.instances
    got = choices.score(text, inst.answers[i], inst.options_of(i))
    return dict(
        instance=i,
        benchmark=inst.file_of(i),
        setting=setting,
        text=text,
        choice=got.choice,
        answer=inst.answers[i],
        correct=float(got.correct),
        parsed=bool(got.parsed),
        rule=got.rule,
        chance=inst.chance(i),
        **extra,
    )


def accuracy_rows(ctx: Context, group, start: int) -> list:
    """The answer the model generates from each prompt of the chunk (greedy, ``cfg.new_tokens`` tokens), scored
    as the benchmarks score it (setting ``plain``: the prompt alone, no block)."""
    index, valid, take = chunk_of(group, start, ctx.cfg.batch_size)
    px = take(group.pixels)
    grid = np.repeat(group.grid, len(index), 0)
    tokens = ctx.loaded.model.generate(
        take(group.prompt),
        px.reshape(-1, px.shape[-1]),
        grid,
        take(group.prompt_mask),
        max_new_tokens=ctx.cfg.new_tokens,
        do_sample=False,  # greedy, as the benchmarks score (a checkpoint's generation_config.json may sample)
    )
    return scored_rows(ctx, index, valid, np.asarray(tokens), "plain")


def decomposition_rows(ctx: Context, group, start: int) -> list:
    """Whether the answer's first token is the model's top token at the answer position under each
    setting of :data:`~tokdyn.studies.vlm_diagnostics.config.DECOMPOSITION_SETTINGS` (``measure``
    ``correct``), and the concentration of the attention over the image at each latent slot and at the answer
    position (``measure`` ``attention``: entropy, top-k mass, the share on the image), per instance."""
    index, valid, sub, batch, answers = block_batch(ctx, group, start)
    key = jax.random.fold_in(jax.random.fold_in(ctx.key, 3), int(index[0]))
    top_k = min(TOP_K, len(sub.layout.image))
    d = vlm.decomposition(
        key, sub, ctx.params, batch, answers=answers, settings=DECOMPOSITION_SETTINGS, arm="latent", top_k=top_k
    )
    correct = np.asarray(d.correct)
    conc = {f: np.asarray(getattr(d.concentration, f), np.float64) for f in ("entropy", "top_k_mass", "patch_share")}
    queries = [f"latent {i + 1}" for i in range(len(sub.layout.latents))] + ["answer"]
    rows = [
        dict(instance=int(index[b]), measure="correct", setting=s, correct=float(correct[k, b]))
        for k, s in enumerate(DECOMPOSITION_SETTINGS)
        for b in np.flatnonzero(valid)
    ]
    for q, name in enumerate(queries):
        for b in np.flatnonzero(valid):
            rows.append(
                dict(
                    instance=int(index[b]),
                    measure="attention",
                    query=name,
                    entropy=conc["entropy"][b, q],
                    top_k_mass=conc["top_k_mass"][b, q],
                    patch_share=conc["patch_share"][b, q],
                    top_k=top_k,
                    image_tokens=len(sub.layout.image),
                )
            )
    return rows


def mediation_rows(ctx: Context, group, start: int) -> list:
    """Causal mediation on the chunk (:func:`tokdyn.diagnostics.vlm.mediation`, latent arm): for each
    perturbation, how far each imagined latent moves (``input_latent``: cosine distance and relative L2, per
    latent step) and how the answer moves (``input_answer``: total, direct and indirect effect: flipped and
    KL); for each intervention of :data:`~tokdyn.studies.vlm_diagnostics.config.MEDIATION_KINDS` on the
    imagined latents, whether the answer flips, its KL and correctness (``latent_answer``)."""
    index, valid, sub, batch, answers = block_batch(ctx, group, start)
    key = jax.random.fold_in(jax.random.fold_in(ctx.key, 4), int(index[0]))
    noised = ctx.noised(batch["pixel_values"], index)
    m = vlm.mediation(key, sub, ctx.params, batch, noised, arm="latent", answers=answers, kinds=MEDIATION_KINDS)
    cos = np.asarray(m.latent_shift.cosine_distance, np.float64)  # (K, B, L)
    rel = np.asarray(m.latent_shift.relative_l2, np.float64)
    rows = []
    for k, (kind, level, seed) in enumerate(ctx.perturbations()):
        for b in np.flatnonzero(valid):
            base = dict(instance=int(index[b]), kind=kind, level=level, draw=seed)
            for step in range(cos.shape[2]):
                rows.append(
                    dict(
                        base,
                        path="input_latent",
                        step=step + 1,
                        cosine_distance=cos[k, b, step],
                        relative_l2=rel[k, b, step],
                    )
                )
            for effect in ("total", "direct", "indirect"):
                change = getattr(m, effect)
                rows.append(
                    dict(
                        base,
                        path="input_answer",
                        effect=effect,
                        flipped=float(change.flipped[k, b]),
                        kl=float(change.kl[k, b]),
                    )
                )
    eff = m.effects
    for k, kind in enumerate(MEDIATION_KINDS):
        for b in np.flatnonzero(valid):
            rows.append(
                dict(
                    instance=int(index[b]),
                    path="latent_answer",
                    kind=kind,
                    flipped=float(eff.flipped[k, b]),
                    kl=float(eff.kl[k, b]),
                    changed=bool(eff.changed[k, b]),
                    correct=float(eff.correct[k, b]),
                    correct_before=float(eff.correct_before[b]),
                )
            )
    return rows


def similarity_part(ctx: Context, group, start: int) -> dict:
    """The latents the model imagines into the chunk's blocks (:func:`tokdyn.diagnostics.vlm.imagine`,
    latent arm): ``{"instance": (b,), "latents": (b, L, D)}`` of its valid rows, kept as a part."""
    index, valid, sub, batch, _ = block_batch(ctx, group, start)
    z = np.asarray(vlm.imagine(sub, ctx.params, batch, arm="latent").latents, np.float32)
    return {"instance": np.asarray(index)[valid], "latents": z[valid]}


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
    """DMLR on the chunk (entropy reward, evolution strategies; ``inject="best"``: with the paper's visual
    injection of the image tokens the latents attend to most), from the fill token's embeddings: per instance
    the reward and answer before and with the most confident latents."""
    cfg = ctx.cfg
    index, valid, sub, batch, answers = block_batch(ctx, group, start)
    dcfg = dmlr.Config(
        reward="entropy",
        top_k=min(10, ctx.mcfg.text.vocab_size),
        n_iters=cfg.optimiser_iters,
        n_pairs=cfg.optimiser_pairs,
        inject=inject,
    )
    hp = dmlr.Hparams(learning_rate=cfg.optimiser_learning_rate, sigma=cfg.optimiser_sigma)
    key = jax.random.fold_in(ctx.key, 5 if inject == "none" else 6)
    res = vlm.optimise(key, sub, ctx.params, batch, dcfg, hp, seeds=(0,), index=jnp.asarray(index))
    res = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], res)  # the one seed
    answers = np.asarray(answers)
    rows = []
    for b in np.flatnonzero(valid):
        rows.append(
            dict(
                instance=int(index[b]),
                reward_before=float(res.reward_before[b]),
                reward_best=float(res.reward_best[b]),
                answer_before=int(res.answer_before[b]),
                answer_best=int(res.answer_best[b]),
                correct_before=float(res.answer_before[b] == answers[b]),
                correct_best=float(res.answer_best[b] == answers[b]),
                n_nan=int(res.n_nan[b]),
            )
        )
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
    "accuracy_rows",
    "block_batch",
    "chunk_of",
    "decomposition_rows",
    "grounding_rows",
    "injection_rows",
    "mediation_rows",
    "optimisation_rows",
    "perception_rows",
    "scored_rows",
    "similarity_part",
    "similarity_rows",
]
