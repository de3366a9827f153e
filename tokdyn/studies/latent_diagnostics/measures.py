"""What the latent-diagnostics study measures of one trained variant, as rows of its tables:
input -> latent shifts and latent -> answer effects (:func:`mediation_rows`, :func:`caption_rows`),
the decomposition of the latent block (:func:`decomposition`), the latents' collapse
(:func:`collapse_rows`) and linear probes of visual facts (:func:`probe_rows`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import geometry, probes, stats
from tokdyn.diagnostics import mediation, perturb
from tokdyn.models.latent import model as latent_model
from tokdyn.studies.latent_diagnostics.config import FACTS, Config


def latent_block(model: latent_model.Model) -> tuple:
    """``(slots, markers, patches)`` positions of a model with a latent block: its latent slots,
    the block's two boundary markers and the image patches."""
    lay = model.layout
    return (
        tuple(range(lay.latents.start, lay.latents.stop)),
        (lay.latent_start, lay.latent_end),
        tuple(range(lay.patches.start, lay.patches.stop)),
    )


def mediation_rows(cfg: Config, name: str, model: latent_model.Model, params, test, tc, other=None) -> list[dict]:
    """Input -> latent shifts and latent -> answer effects of a feedback variant, per seed.

    Args:
      cfg: the study's :class:`Config`.
      name: the variant's name (a row's ``variant``).
      model: its :class:`~tokdyn.models.latent.model.Model`.
      params: its weights, stacked over S seeds (leading (S,) axis).
      test: B test instances (a :class:`~tokdyn.data.grid_tasks.Instance` batch).
      tc: the variant's training configuration (its task perturbs the inputs).
      other: optional (S, B, L, D) latents of another variant, for the ``"other"`` intervention
        (left out without them).

    Returns:
      Rows: per seed, perturbation (or noise level) and latent step the mean ``cosine_distance``
      and ``relative_l2`` of the shift (``what`` ``"latent"`` or ``"patches"``, :func:`shift_rows`),
      and per seed and intervention the accuracy before and after, ``flip_rate``, ``kl`` and
      ``changed`` (:func:`intervention_rows`).
    """
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 11)
    return shift_rows(cfg, name, model, params, test, tc, key) + intervention_rows(
        cfg, name, model, params, test, key, other
    )


def shift_rows(cfg: Config, name: str, model: latent_model.Model, params, test, tc, key) -> list[dict]:
    """The input -> latent rows of :func:`mediation_rows`: per seed, perturbation (or noise level)
    and latent step, how far the latents (``what="latent"``) and the patches' last states
    (``"patches"``, mean over them) move; ``key`` draws the perturbations and the noise."""
    _, _, patches = latent_block(model)
    rows = []
    pert = {p: perturb.perturb(jax.random.fold_in(key, i), test, tc.task, p) for i, p in enumerate(cfg.perturbations)}

    @jax.jit
    def shifts(params, perturbed, sigma, k):
        f = lambda p: mediation.input_to_latent(
            model.apply,
            p,
            test,
            perturbed,
            positions=patches,
            intervene=None if sigma is None else mediation.noise_at(k, patches, sigma),
        )
        return jax.vmap(f)(params)

    runs = [(p, pert[p], None) for p in cfg.perturbations] + [(f"noise{s:g}", test, s) for s in cfg.noise_sigmas]
    for label, batch, sigma in runs:
        out = shifts(params, batch, None if sigma is None else jnp.float32(sigma), jax.random.fold_in(key, 99))
        for what, sh in (("latent", out["latents"]), ("patches", out["states"])):
            cos, rel = np.asarray(sh.cosine_distance), np.asarray(sh.relative_l2)  # (S, B, n)
            steps = range(cos.shape[-1]) if what == "latent" else [None]
            for s in range(cos.shape[0]):
                for i in steps:
                    c = cos[s, :, i] if i is not None else cos[s].mean(-1)
                    r = rel[s, :, i] if i is not None else rel[s].mean(-1)
                    rows.append(
                        {
                            "variant": name,
                            "seed": s,
                            "what": what,
                            "perturbation": label,
                            "step": -1 if i is None else i + 1,
                            "cosine_distance": c.mean(),
                            "relative_l2": r.mean(),
                        }
                    )
    return rows


def intervention_rows(cfg: Config, name: str, model: latent_model.Model, params, test, key, other=None) -> list[dict]:
    """The latent -> answer rows of :func:`mediation_rows`: per seed and intervention of
    ``cfg.interventions`` (``"other"`` only with ``other``, another variant's latents), the
    accuracy before and after, ``flip_rate``, ``kl`` and ``changed``. ``ValueError`` naming an
    intervention that left the latents unchanged."""
    kinds = tuple(k for k in cfg.interventions if k != "other" or other is not None)
    if not kinds:
        return []
    f = jax.jit(
        jax.vmap(
            lambda p, o: mediation.latent_effects(
                key,
                model.apply,
                p,
                test,
                answer_position=model.layout.answer,
                answers=test.answer,
                kinds=kinds,
                other=o,
            ),
            in_axes=(0, None if other is None else 0),
        )
    )
    eff = jax.tree_util.tree_map(np.asarray, f(params, other))
    idle = [k for k, c in zip(kinds, eff.changed.any((0, 2))) if not c]
    if idle:
        raise ValueError(f"interventions {idle} left the latents of {name} unchanged")
    rows = []
    for s in range(eff.flipped.shape[0]):
        for i, k in enumerate(kinds):
            rows.append(
                {
                    "variant": name,
                    "seed": s,
                    "what": "intervention",
                    "perturbation": k,
                    "step": -1,
                    "accuracy_before": eff.correct_before[s].mean(),
                    "accuracy": eff.correct[s, i].mean(),
                    "flip_rate": eff.flipped[s, i].mean(),
                    "kl": eff.kl[s, i].mean(),
                    "changed": eff.changed[s, i].mean(),
                }
            )
    return rows


def caption_rows(cfg: Config, name: str, model: latent_model.Model, params, test, tc) -> list[dict]:
    """Input -> caption-state shifts of the text-space reference (teacher-forced true captions).

    Args:
      cfg: the study's :class:`Config`.
      name: the variant's name (a row's ``variant``).
      model: its :class:`~tokdyn.models.latent.model.Model`.
      params: its weights, stacked over S seeds (leading (S,) axis).
      test: B test instances (a :class:`~tokdyn.data.grid_tasks.Instance` batch).
      tc: the variant's training configuration (its task perturbs the inputs).

    Returns:
      Rows: per seed and perturbation (or noise level) the mean shift of the caption positions'
      last-layer states.
    """
    lay = model.layout
    caption = tuple(range(lay.caption.start, lay.caption.stop))
    _, _, patches = (
        latent_block(model) if model.cfg.latent_mode != "none" else (None, None, tuple(range(lay.patches.stop)))
    )
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 11)
    rows = []
    runs = [
        (p, perturb.perturb(jax.random.fold_in(key, i), test, tc.task, p), None)
        for i, p in enumerate(cfg.perturbations)
    ] + [(f"noise{s:g}", test, s) for s in cfg.noise_sigmas]

    @jax.jit
    def shifts(params, perturbed, sigma, k):
        def one(p):
            a = model.apply(p, test)
            b = (
                model.apply(p, perturbed)
                if sigma is None
                else model.apply(p, perturbed, intervene=mediation.noise_at(k, patches, sigma))
            )
            return mediation.shift(a.hidden[:, -1, jnp.asarray(caption)], b.hidden[:, -1, jnp.asarray(caption)])

        return jax.vmap(one)(params)

    for label, batch, sigma in runs:
        sh = shifts(params, batch, None if sigma is None else jnp.float32(sigma), jax.random.fold_in(key, 99))
        cos, rel = np.asarray(sh.cosine_distance), np.asarray(sh.relative_l2)
        for s in range(cos.shape[0]):
            rows.append(
                {
                    "variant": name,
                    "seed": s,
                    "what": "caption",
                    "perturbation": label,
                    "step": -1,
                    "cosine_distance": cos[s].mean(),
                    "relative_l2": rel[s].mean(),
                }
            )
    return rows


@functools.lru_cache(maxsize=8)  # one compile per model structure (the mid and final models share it)
def _decompose_fn(model: latent_model.Model, settings: tuple, top_k: int, seed: int):
    slots, markers, patches = latent_block(model)
    lay = model.layout
    block = np.asarray(markers + slots) - len(patches)  # rows of the text position table

    def one(p, test):
        fmt = p["params"]["pos"]["embedding"][jnp.asarray(block)]  # the block's positions, no content
        correct = mediation.decompose(
            jax.random.key(seed),
            model.apply,
            p,
            test,
            slots=slots,
            markers=markers,
            answer_position=lay.answer,
            answers=test.answer,
            length=lay.length,
            settings=settings,
            format_embedding=fmt,
        )
        out = model.apply(p, test)
        inputs = out.hidden[:, 0, jnp.asarray(slots)]  # the slots' input embeddings (B, L, D)
        spread = jnp.max(jnp.abs(inputs - inputs[:1]))  # 0: every instance alike, slots_mean changes nothing
        return (
            correct,
            mediation.narrowness(out.attention, queries=slots + (lay.answer,), patches=patches, top_k=top_k),
            spread,
        )

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def decomposition(cfg: Config, name: str, stage: str, step: int, model: latent_model.Model, params, test) -> list[dict]:
    """Accuracy and gain retained per setting, and attention narrowness, of one variant and stage.

    Args:
      cfg: the study's :class:`Config` (its ``settings``, ``attention_top_k``).
      name: the variant's name.
      stage: ``"mid"`` or ``"final"``.
      step: the training step of the weights.
      model: the variant's :class:`~tokdyn.models.latent.model.Model`.
      params: its weights, stacked over S seeds.
      test: B test instances.

    Returns:
      One row per setting: accuracy (mean over seeds and instances, and the extreme seeds), the
      block's gain over no block with its 95% interval, the share of it retained
      (:func:`tokdyn.stats.gain_retained`) and attention entropy, top-k mass and patch share.
    """
    slots, markers, patches = latent_block(model)
    settings = mediation.check_decompose(
        cfg.settings, slots, markers, model.layout.length, np.zeros((len(markers) + len(slots), 1))
    )
    fn = _decompose_fn(model, settings, cfg.attention_top_k, cfg.root_seed)
    correct, nar, spread = jax.tree_util.tree_map(np.asarray, fn(params, test))  # (S, K, B), (S, B, Q), (S,)
    per = correct.mean(0)  # (K, B): per-instance accuracy over seeds
    full, none = per[settings.index("full")], per[settings.index("no_block")]
    gain_low, gain_high = stats.bootstrap_ci(full - none, seed=cfg.root_seed, n_resamples=cfg.n_resamples)
    rows = []
    for i, s in enumerate(settings):
        g = stats.gain_retained(per[i], full, none, seed=cfg.root_seed, n_resamples=cfg.n_resamples)
        rows.append(
            {
                "variant": name,
                "stage": stage,
                "step": step,
                "setting": s,
                "accuracy": per[i].mean(),
                "accuracy_min_seed": correct[:, i].mean(-1).min(),
                "accuracy_max_seed": correct[:, i].mean(-1).max(),
                "no_op": bool(s == "slots_mean" and np.all(spread == 0)),
                "block_gain": float((full - none).mean()),
                "block_gain_low": float(gain_low),
                "block_gain_high": float(gain_high),
                "gain_retained": g.share,
                "gain_low": g.low,
                "gain_high": g.high,
                "latent_entropy": nar.entropy[..., :-1].mean(),
                "answer_entropy": nar.entropy[..., -1].mean(),
                "latent_top_k_mass": nar.top_k_mass[..., :-1].mean(),
                "answer_top_k_mass": nar.top_k_mass[..., -1].mean(),
                "latent_patch_share": nar.patch_share[..., :-1].mean(),
                "answer_patch_share": nar.patch_share[..., -1].mean(),
            }
        )
    return rows


def collapse_rows(name: str, latents: np.ndarray) -> list[dict]:
    """Geometry of the latents (S, B, L, D) per seed and step."""
    summ = jax.tree_util.tree_map(np.asarray, jax.jit(jax.vmap(geometry.summary))(jnp.asarray(latents)))
    rows = []
    for s in range(latents.shape[0]):
        for i in range(latents.shape[2]):
            rows.append(
                {
                    "variant": name,
                    "seed": s,
                    "step": i + 1,
                    "inter_instance_cosine": summ.inter_cosine[s, i],
                    "step_similarity": summ.step_similarity[s, i - 1] if i else np.nan,
                    "participation_ratio": summ.participation_ratio[s, i],
                    "top_pc_share": summ.top_pc_share[s, i],
                }
            )
    return rows


def probe_rows(cfg: Config, name: str, features: str, x: np.ndarray, targets: dict) -> list[dict]:
    """Held-out accuracy of linear probes from features to every target, per seed.

    Vmapped over targets x seeds; the first half of the instances trains, the second scores.

    Args:
      cfg: the study's :class:`Config` (the probe's settings).
      name: the variant's name.
      features: what the features are (a row's ``features``: ``"latents"``, ``"patches"``).
      x: (S, B, F) features of B instances for each of S seeds.
      targets: :data:`FACTS` name -> (B,) int target (:func:`~tokdyn.studies.latent_diagnostics.config.facts`).

    Returns:
      One row per target and seed: train and held-out ``accuracy`` and the ``chance`` level.
    """
    n = x.shape[1]
    train = np.arange(n) < n // 2
    y = np.stack([targets[t] for t in FACTS]).astype(np.int32)  # (F, B)
    pc, ph = cfg.probe_config(), cfg.probe_hparams()
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 13)

    def one(k, xs, ys):
        return probes.evaluate(k, xs, ys, jnp.asarray(train), pc, ph)

    f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(0, 0, None)))  # seeds x targets
    keys = jax.random.split(key, x.shape[0])
    tr, te = (np.asarray(a) for a in f(keys, jnp.asarray(x, jnp.float32), jnp.asarray(y)))
    rows = []
    for j, t in enumerate(FACTS):
        chance = float(probes.chance(jnp.asarray(y[j]), jnp.asarray(~train), n_classes=pc.n_classes))
        for s in range(x.shape[0]):
            rows.append(
                {
                    "variant": name,
                    "features": features,
                    "target": t,
                    "seed": s,
                    "n_train": int(train.sum()),
                    "train_accuracy": tr[s, j],
                    "accuracy": te[s, j],
                    "chance": chance,
                }
            )
    return rows
