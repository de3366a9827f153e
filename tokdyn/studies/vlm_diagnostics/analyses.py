"""The study's analyses on the Qwen2.5-VL ``apply`` (:mod:`tokdyn.models.qwen2_5_vl.adapter`), each a function
``(context, group, chunk) -> rows`` over one batch of instances, compiled once per group:

- :func:`grounding_rows`: DMLR's grounding score of each answer token (teacher-forced),
  :math:`S = \\log p(x_t \\mid x_{<t}, I, q) - \\log p(x_t \\mid x_{<t}, \\tilde I, q)`, for every noise kind,
  level and draw in one program (:func:`tokdyn.diagnostics.grounding.token_logprobs`);
- :func:`perception_rows`: token dynamics of the vision tower's patch features against the scenes' masks
  (:func:`tokdyn.diagnostics.perception.perception_dynamics`);
- :func:`decomposition_rows`: the answer's correctness under each setting of the latent block
  (:func:`tokdyn.diagnostics.mediation.decompose`);
- :func:`mediation_rows`: input -> latent (the states at the latent slots under a noised image,
  :func:`tokdyn.diagnostics.mediation.shift`) and latent -> answer
  (:func:`tokdyn.diagnostics.mediation.latent_effects`);
- :func:`optimisation_rows`: DMLR's latent optimisation (:func:`tokdyn.diagnostics.dmlr.make`, no visual
  injection).

:data:`FUNCTIONS` maps :data:`~tokdyn.studies.vlm_diagnostics.config.ANALYSES` to them: an analysis the
``apply`` cannot run yet (:data:`~tokdyn.studies.vlm_diagnostics.config.PENDING`) joins as one more function
here and its name there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn.diagnostics import dmlr, grounding, mediation, perception, protocol
from tokdyn.models.qwen2_5_vl import adapter as qa
from tokdyn.studies.vlm_diagnostics.config import DECOMPOSITION_SETTINGS, MEDIATION_KINDS


class Context:
    """What every analysis of one run shares: the configuration, the model (``loaded``,
    :class:`~tokdyn.studies.vlm_diagnostics.checkpoint.Loaded`), the instances and the root key, and the
    compiled programs of each group (made on first use, ``program``).

    Args:
      cfg: the study's :class:`~tokdyn.studies.vlm_diagnostics.config.Config`.
      loaded: the model.
      instances: the :class:`~tokdyn.studies.vlm_diagnostics.instances.Instances`.
    """

    def __init__(self, cfg, loaded, instances):
        self.cfg, self.loaded, self.instances = cfg, loaded, instances
        self.key = jax.random.key(cfg.root_seed)
        self.mcfg = loaded.config
        self._programs: dict = {}

    @property
    def params(self):
        """The model's weights (read on first use)."""
        return self.loaded.model.params

    def program(self, name: str, group, make):
        """The compiled program ``name`` of ``group``'s layout, made by ``make()`` once."""
        key = (name, group.name)
        if key not in self._programs:
            self._programs[key] = make()
        return self._programs[key]

    def perturbations(self) -> list:
        """``(kind, level, seed)`` of every image perturbation: each gaussian level x draw, then one blank."""
        out = []
        for kind in self.cfg.noise_kinds:
            if kind == "blank":
                out.append(("blank", 0.0, 0))
            else:
                out += [(kind, float(level), s) for level in self.cfg.noise_levels for s in range(self.cfg.noise_seeds)]
        return out

    def noised(self, pixels, index) -> jax.Array:
        """(K, B, patches, patch_dim) pixel rows of every :meth:`perturbations` of each instance; instance i
        draws from ``fold_in(fold_in(fold_in(key, 1), k), index[i])``, so a draw never depends on batching."""
        proc = self.loaded.processor
        base = jax.random.fold_in(self.key, 1)
        out = []
        for k, (kind, level, _) in enumerate(self.perturbations()):
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, k), i))(jnp.asarray(index))
            one = functools.partial(qa.noised_pixels, processor=proc, kind=kind, level=level)
            out.append(jax.vmap(lambda kk, px: one(kk, px))(keys, jnp.asarray(pixels)))
        return jnp.stack(out)


def _batch(ctx: "Context", ids, pixels, grid) -> dict:
    """The instances' batch (:func:`tokdyn.models.qwen2_5_vl.adapter.make_batch`: every leaf leads with the
    instances, as the diagnostics that slice or vmap a batch by instance need)."""
    return qa.make_batch(ctx.mcfg, ids, pixels, grid)


def _chunk(group, start: int, size: int):
    """Rows ``start`` to ``start + size`` of ``group``, the last chunk padded by repeating its last row:
    ``(index (size,), valid (size,) bool, take)`` where ``take(a)`` cuts an array of the group."""
    n = len(group.index)
    rows = np.minimum(np.arange(start, start + size), n - 1)
    valid = np.arange(start, start + size) < n
    return group.index[rows], valid, lambda a: np.asarray(a)[rows]


def grounding_rows(ctx: Context, group, start: int) -> list:
    """The grounding score of every answer token of the chunk of ``group`` at ``start``, under every
    perturbation: rows of instance, perturbation, token, log-probabilities with the image and the noised
    one, and S."""
    cfg, mcfg = ctx.cfg, ctx.mcfg
    index, valid, take = _chunk(group, start, cfg.batch_size)
    ids = take(group.plain)
    lay = qa.layout(mcfg, ids)
    positions = np.arange(group.prompt_length - 1, group.prompt_length - 1 + group.answer_ids.shape[1])
    tokens = take(group.answer_ids)

    def make():
        apply = qa.make_apply(mcfg, group.grid, lay)

        def run(params, batch, noised, tokens):
            lp = functools.partial(grounding.token_logprobs, apply, params, positions=positions, tokens=tokens)
            clean = lp(batch)  # (B, A)
            pert = jax.lax.map(lambda px: lp(dict(batch, pixel_values=px)), noised)  # (K, B, A)
            return clean, pert

        return jax.jit(run)

    batch = _batch(ctx, ids, take(group.pixels), group.grid)
    clean, pert = ctx.program("grounding", group, make)(
        ctx.params, batch, ctx.noised(batch["pixel_values"], index), tokens
    )
    clean, pert = np.asarray(clean, np.float64), np.asarray(pert, np.float64)
    rows = []
    for k, (kind, level, seed) in enumerate(ctx.perturbations()):
        for b in np.flatnonzero(valid):
            for t in range(tokens.shape[1]):
                rows.append(
                    dict(
                        instance=int(index[b]),
                        noise=kind,
                        level=level,
                        draw=seed,
                        token=t,
                        token_id=int(tokens[b, t]),
                        logp_image=clean[b, t],
                        logp_noised=pert[k, b, t],
                        score=clean[b, t] - pert[k, b, t],
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


def _block(ctx: Context, group, start: int):
    """The chunk's latent-block prompts: ``(index, valid, layout, batch, answers)``."""
    index, valid, take = _chunk(group, start, ctx.cfg.batch_size)
    ids = take(group.block)
    t = ctx.loaded.tokens
    lay = qa.layout(ctx.mcfg, ids, t.start, t.end)
    batch = _batch(ctx, ids, take(group.pixels), group.grid)
    return index, valid, lay, batch, jnp.asarray(take(group.answer_ids)[:, 0], jnp.int32)


def decomposition_rows(ctx: Context, group, start: int) -> list:
    """Whether the answer's first token is the model's top token at the answer position under each
    setting of :data:`~tokdyn.studies.vlm_diagnostics.config.DECOMPOSITION_SETTINGS`, per instance."""
    index, valid, lay, batch, answers = _block(ctx, group, start)

    def make():
        apply = qa.make_apply(ctx.mcfg, group.grid, lay)
        return jax.jit(
            lambda key, params, batch, answers: mediation.decompose(
                key,
                apply,
                params,
                batch,
                slots=lay.latents,
                markers=lay.markers,
                answer_position=lay.answer,
                answers=answers,
                length=lay.length,
                settings=DECOMPOSITION_SETTINGS,
            )
        )

    key = jax.random.fold_in(jax.random.fold_in(ctx.key, 3), int(index[0]))
    correct = np.asarray(ctx.program("decomposition", group, make)(key, ctx.params, batch, answers))
    return [
        dict(instance=int(index[b]), setting=s, correct=float(correct[k, b]))
        for k, s in enumerate(DECOMPOSITION_SETTINGS)
        for b in np.flatnonzero(valid)
    ]


def mediation_rows(ctx: Context, group, start: int) -> list:
    """Causal mediation on the chunk: for each perturbation, how far the last layer's states at the latent
    slots move (``input_latent``: cosine distance and relative L2, averaged over the slots); for each
    intervention of :data:`~tokdyn.studies.vlm_diagnostics.config.MEDIATION_KINDS`, whether the answer flips
    and the KL of its distribution (``latent_answer``)."""
    index, valid, lay, batch, answers = _block(ctx, group, start)
    slots = jnp.asarray(lay.latents)
    last = protocol.Select(hidden=(-1,))

    def make():
        apply = qa.make_apply(ctx.mcfg, group.grid, lay)

        def run(key, params, batch, noised, answers):
            states = lambda b: apply(params, b, select=last).hidden[:, 0][:, slots]  # (B, L, D)
            a = states(batch)
            moved = jax.lax.map(lambda px: mediation.shift(a, states(dict(batch, pixel_values=px))), noised)
            eff = mediation.latent_effects(
                key, apply, params, batch, answer_position=lay.answer, answers=answers, kinds=MEDIATION_KINDS
            )
            return moved, eff

        return jax.jit(run)

    key = jax.random.fold_in(jax.random.fold_in(ctx.key, 4), int(index[0]))
    noised = ctx.noised(batch["pixel_values"], index)
    moved, eff = ctx.program("mediation", group, make)(key, ctx.params, batch, noised, answers)
    cos, rel = np.asarray(moved.cosine_distance, np.float64), np.asarray(moved.relative_l2, np.float64)
    rows = []
    for k, (kind, level, seed) in enumerate(ctx.perturbations()):
        for b in np.flatnonzero(valid):
            rows.append(
                dict(
                    instance=int(index[b]),
                    path="input_latent",
                    kind=kind,
                    level=level,
                    draw=seed,
                    cosine_distance=cos[k, b].mean(),
                    relative_l2=rel[k, b].mean(),
                )
            )
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


def optimisation_rows(ctx: Context, group, start: int, *, inject: str = "none", name: str = "optimisation") -> list:
    """DMLR on the chunk (entropy reward, evolution strategies; ``inject="best"``: with the paper's visual
    injection of the image tokens the latents attend to most): per instance the reward and answer before
    and with the most confident latents."""
    cfg = ctx.cfg
    index, valid, lay, batch, answers = _block(ctx, group, start)
    vocab = ctx.mcfg.text.vocab_size
    dcfg = dmlr.Config(
        reward="entropy", top_k=min(10, vocab), n_iters=cfg.optimiser_iters, n_pairs=cfg.optimiser_pairs, inject=inject
    )

    def make():
        apply = qa.make_apply(ctx.mcfg, group.grid, lay)
        patches = lay.image if inject != "none" else ()
        return dmlr.make(
            apply, dcfg, latent_positions=lay.latents, answer_position=lay.answer, patch_positions=patches, chunk=None
        )

    hp = dmlr.Hparams(learning_rate=cfg.optimiser_learning_rate, sigma=cfg.optimiser_sigma)
    key = jax.random.fold_in(ctx.key, 5 if inject == "none" else 6)
    res = ctx.program(name, group, make)(key, ctx.params, batch, hp, jnp.asarray(index))
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
    the most confident latents attend to most inserted before the latent block, and how many were."""
    return optimisation_rows(ctx, group, start, inject="best", name="injection")


FUNCTIONS = {
    "grounding": grounding_rows,
    "perception": perception_rows,
    "decomposition": decomposition_rows,
    "mediation": mediation_rows,
    "optimisation": optimisation_rows,
    "injection": injection_rows,
}
"""Each analysis of :data:`~tokdyn.studies.vlm_diagnostics.config.ANALYSES` and its function; all but
``perception`` take ``(context, group, start)``, ``perception`` ``(context, start)``."""

__all__ = [
    "Context",
    "FUNCTIONS",
    "decomposition_rows",
    "grounding_rows",
    "mediation_rows",
    "optimisation_rows",
    "injection_rows",
    "perception_rows",
]
