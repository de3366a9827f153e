"""The latent-diagnostics study: causal mediation, decomposition of the latent block, collapse and
linear probes of the trained reasoners of a latent-reasoning study.

``tokdyn study latent-diagnostics --out DIR --source SRC`` (:func:`main`, :class:`Config`) reads
the trained variants of a ``tokdyn study latent-reasoning`` directory (checked strictly against
its stamp and files before any work) and writes ``mediation.csv`` (:func:`mediation_rows`,
:func:`caption_rows`), ``decomposition.csv`` (:func:`decomposition`), ``collapse.csv``
(:func:`collapse_rows`), ``probes.csv`` (:func:`probe_rows`), ``similarity.png``,
``decomposition.png``, ``probes.png``, ``summary.md`` (:func:`summary`) and ``config.json``. Each
(variant, part) result is kept in ``DIR/parts/`` as it finishes, so a rerun resumes.

What each output holds, the source's checks, resuming and the findings:
:doc:`/studies/latent-diagnostics`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, geometry, io, probes, stats
from tokdyn.diagnostics import mediation
from tokdyn.diagnostics import perturb
from tokdyn.experiment import findings as F
from tokdyn.experiment import reasoners
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.findings import Finding
from tokdyn.models.latent import model as latent_model
from tokdyn.models.latent import tasks, variants
from tokdyn.models.latent import training as T
from tokdyn.stats import figures

STUDY = "latent-diagnostics"
SELECTION = reasoners.SOURCE_SELECTION + ("variants", "reference", "midway")  # fields that only choose which parts run
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
class Config(reasoners.Analysis):
    """Everything that defines the study (saved as ``config.json``): the source's fields of
    :class:`tokdyn.experiment.reasoners.Analysis` (``source``, ``preset``, ``train``), then these.

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
        :meth:`tokdyn.experiment.reasoners.Analysis.validate`); raise ``ValueError``/``TypeError``
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
        per_pass = reasoners.forward_elements(lr, names)
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


# ---------------------------------------------------------------------------------------------- computations


def _block(model: latent_model.Model):
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
      test: B test instances (a :class:`~tokdyn.models.latent.tasks.Instance` batch).
      tc: the variant's training configuration (its task perturbs the inputs).
      other: optional (S, B, L, D) latents of another variant, for the ``"other"`` intervention
        (left out without them).

    Returns:
      Rows: per seed, perturbation (or noise level) and latent step the mean ``cosine_distance``
      and ``relative_l2`` of the shift (``what`` ``"latent"`` or ``"patches"``), and per seed and
      intervention the accuracy before and after, ``flip_rate``, ``kl`` and ``changed``.
    """
    slots, _, patches = _block(model)
    answers = test.answer
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 11)
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
    kinds = tuple(k for k in cfg.interventions if k != "other" or other is not None)
    if kinds:
        f = jax.jit(
            jax.vmap(
                lambda p, o: mediation.latent_effects(
                    key,
                    model.apply,
                    p,
                    test,
                    answer_position=model.layout.answer,
                    answers=answers,
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
      test: B test instances (a :class:`~tokdyn.models.latent.tasks.Instance` batch).
      tc: the variant's training configuration (its task perturbs the inputs).

    Returns:
      Rows: per seed and perturbation (or noise level) the mean shift of the caption positions'
      last-layer states.
    """
    lay = model.layout
    caption = tuple(range(lay.caption.start, lay.caption.stop))
    _, _, patches = _block(model) if model.cfg.latent_mode != "none" else (None, None, tuple(range(lay.patches.stop)))
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
    slots, markers, patches = _block(model)
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
    slots, markers, patches = _block(model)
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
      targets: :data:`FACTS` name -> (B,) int target (:func:`facts`).

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


# ---------------------------------------------------------------------------------------------- the study


def _needed(cfg: Config) -> list:
    return list(cfg.variants) + ([cfg.reference] if cfg.reference else [])


def run(session, cfg: Config) -> runner.Result:
    """Train what the source lacks, then every part (kept as it finishes): ``mediation.csv``,
    ``decomposition.csv``, ``collapse.csv``, ``probes.csv``."""
    study, quiet, need = session.study, session.quiet, _needed(cfg)
    lr = session.context["reasoning"]
    lr = reasoners.ensure_trained(lr, cfg.source, need, train=cfg.train, quiet=quiet)
    tc0 = reasoners.training(lr, cfg.variants[0])
    data = T.data(tc0)
    test0 = jax.tree_util.tree_map(lambda a: a[: cfg.n_instances], data.test)
    targets = facts(test0, tc0.task)
    pad = tc0.task.vocab.pad

    def batch_of(tc, name, stage=-1):  # the caption tokens a curriculum stage has replaced are <pad>
        return variants.stage_batch(test0, variants.dropped_captions(tc, name, stage), pad)

    def part(name: str, what: str, compute, extra: str = ""):  # kept in parts/<name>__<what>.json
        return study.rows(f"{name}__{what}", compute, key={"variant": name, "part": what, "extra": extra})

    med, dec, col, prb, latents_of = [], [], [], [], {}
    loaded = {name: reasoners.load_variant(lr, cfg.source, name) for name in cfg.variants}
    for name in cfg.feedback():
        model, params, tc = loaded[name]
        test = batch_of(tc, name)
        latents_of[name] = np.asarray(jax.jit(jax.vmap(lambda p: model.apply(p, test).latents))(params))
    fb = cfg.feedback()
    for name in cfg.variants:
        model, params, tc = loaded[name]
        test = batch_of(tc, name)
        if not quiet:
            print(f"diagnosing {name}")
        if name in fb:
            same = [
                o
                for o in fb[fb.index(name) + 1 :] + fb[: fb.index(name)]
                if latents_of[o].shape == latents_of[name].shape
            ]
            other = same[0] if same else None
            med += part(
                name,
                "mediation",
                lambda: mediation_rows(
                    cfg, name, model, params, test, tc, None if other is None else latents_of[other]
                ),
                extra=str(other),
            )
            col += part(name, "collapse", lambda: collapse_rows(name, latents_of[name]))
            s, b, l, d = latents_of[name].shape
            prb += part(
                name,
                "probes_latents",
                lambda: probe_rows(cfg, name, "latents", latents_of[name].reshape(s, b, l * d), targets),
            )
            _, _, patches = _block(model)
            states = np.asarray(jax.jit(jax.vmap(lambda p: model.apply(p, test).hidden[:, -1, : len(patches)]))(params))
            prb += part(
                name, "probes_patches", lambda: probe_rows(cfg, name, "patches", states.reshape(s, b, -1), targets)
            )
        dec += part(
            name,
            "decomposition_final",
            lambda: decomposition(
                cfg,
                name,
                "final",
                int(reasoners.read_result(reasoners.paths(cfg.source, name)["result"])["steps"]),
                model,
                params,
                test,
            ),
        )
        if cfg.midway:

            def mid():
                stage = reasoners.midway(lr, cfg.source, name)[1]
                m_cfg = variants.model_config(tc, name, stage)
                if m_cfg.latent_mode == "none" or m_cfg.caption_len > variants.dropped_captions(tc, name, stage):
                    return []  # a curriculum stage that still generates caption tokens: another task
                m_model, m_params, step, stage = reasoners.load_midway(
                    lr, cfg.source, name, quiet=quiet, pool=data.train
                )
                return decomposition(cfg, name, "mid", step, m_model, m_params, batch_of(tc, name, stage))

            dec += part(name, "decomposition_mid", mid)
    if cfg.reference:
        model, params, tc = reasoners.load_variant(lr, cfg.source, cfg.reference)
        test = test0
        if model.cfg.caption_len:
            med += part(cfg.reference, "caption", lambda: caption_rows(cfg, cfg.reference, model, params, test, tc))
            lay = model.layout
            cap = np.asarray(jax.jit(jax.vmap(lambda p: model.apply(p, test).hidden[:, -1, lay.caption]))(params))
            prb += part(
                cfg.reference,
                "probes_caption",
                lambda: probe_rows(cfg, cfg.reference, "caption", cap.reshape(cap.shape[0], cap.shape[1], -1), targets),
            )
    tables = {}
    for k, rows in (("mediation", med), ("decomposition", dec), ("collapse", col), ("probes", prb)):
        keys = list(dict.fromkeys(c for r in rows for c in r))  # rows of different kinds: missing cells NaN
        tables[f"{k}.csv"] = io.to_columns([{c: r.get(c, np.nan) for c in keys} for r in rows])
    return runner.Result(
        tables,
        data=dict(med=med, dec=dec, col=col, prb=prb, latents=latents_of),
        record={"reasoning": study_dir.config_dict(lr)},
    )


def draw(session, cfg: Config, result: runner.Result) -> list:
    """``similarity.png``, ``decomposition.png``, ``probes.png``; returns their paths."""
    d, out = result.data, session.out
    return [plot_similarity(out, d["latents"]), plot_decomposition(out, d["dec"]), plot_probes(out, d["prb"])]


# ---------------------------------------------------------------------------------------------- figures, summary


def plot_similarity(out: str, latents_of: dict, n: int = 40) -> Optional[str]:
    """Cosine similarity of the first seed's latents, first ``n`` instances x steps (ordered by step)."""
    if not latents_of:
        return None
    names = list(latents_of)
    fig = figures.figure((3.6 * len(names), 3.3))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        z = latents_of[name][0, :n]  # (n, L, D)
        flat = np.transpose(z, (1, 0, 2)).reshape(-1, z.shape[-1])  # step-major
        im = ax.imshow(np.asarray(geometry.cosine_matrix(jnp.asarray(flat))), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"{name}: {z.shape[1]} steps x {z.shape[0]} instances", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return figures.save(fig, os.path.join(out, "similarity.png"), dpi=110)


def plot_decomposition(out: str, rows: list) -> Optional[str]:
    """Left: accuracy per setting (min-max over seeds); right: the share of the block's gain each
    setting retains, with intervals, where that gain is significant."""
    if not rows:
        return None
    keys = list(dict.fromkeys((r["variant"], r["stage"]) for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig = figures.figure((2.0 + 1.8 * len(keys), 6.4))
    ax_acc, ax_share = fig.subplots(2, 1)
    width = 0.8 / len(settings)
    for j, se in enumerate(settings):
        for ax, kind in ((ax_acc, "accuracy"), (ax_share, "share")):
            xs, ys, lo, hi = [], [], [], []
            for i, k in enumerate(keys):
                r = [r for r in rows if (r["variant"], r["stage"]) == k and r["setting"] == se]
                if not r:
                    continue
                r = r[0]
                if kind == "accuracy":
                    y, a, b = r["accuracy"], r["accuracy_min_seed"], r["accuracy_max_seed"]
                elif _significant(r) and r.get("no_op") not in (True, "True") and se not in ("full", "no_block"):
                    y, a, b = r["gain_retained"], r["gain_low"], r["gain_high"]
                else:
                    continue
                xs.append(i + (j - len(settings) / 2 + 0.5) * width)
                ys.append(y)
                lo.append(max(y - a, 0.0))
                hi.append(max(b - y, 0.0))
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], color=f"C{j}", label=se, capsize=1.5)
    for ax in (ax_acc, ax_share):
        ax.set_xticks(range(len(keys)), [f"{v}\n{s}" for v, s in keys], fontsize=7)
    ax_acc.set_ylabel("accuracy (min-max over seeds)")
    ax_acc.legend(fontsize=6, ncol=4)
    ax_share.axhline(1.0, color="k", lw=0.6)
    ax_share.axhline(0.0, color="k", lw=0.6)
    ax_share.set_ylabel("share of the block's gain retained")
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "decomposition.png"), dpi=110)


def plot_probes(out: str, rows: list) -> Optional[str]:
    """Held-out accuracy of the probe of every target per variant and features (mean over seeds),
    with the majority-class rate, into ``probes.png``; returns its path (None without rows)."""
    if not rows:
        return None
    keys = list(dict.fromkeys((r["variant"], r["features"]) for r in rows))
    fig = figures.figure((1.5 + 1.2 * len(keys), 3.4))
    ax = fig.subplots()
    width = 0.8 / len(FACTS)
    for j, t in enumerate(FACTS):
        acc = [
            np.mean([r["accuracy"] for r in rows if (r["variant"], r["features"]) == k and r["target"] == t])
            for k in keys
        ]
        ch = [next(r["chance"] for r in rows if (r["variant"], r["features"]) == k and r["target"] == t) for k in keys]
        x = np.arange(len(keys)) + (j - len(FACTS) / 2 + 0.5) * width
        ax.bar(x, acc, width, color=f"C{j}", label=t)
        ax.scatter(x, ch, color="k", marker="_", s=60, zorder=3)
    ax.set_xticks(range(len(keys)), [f"{v}\n{f}" for v, f in keys], fontsize=7)
    ax.set_ylabel("held-out probe accuracy (bars); chance (dashes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "probes.png"), dpi=110)


def _mean(rows, key, **match):
    vals = [r[key] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return float(np.mean(vals)) if vals else float("nan")


def _significant(r) -> bool:
    """The block's gain over no block has a 95% interval above 0 (a share of it means something)."""
    return r["block_gain_low"] > 0


def summary(med: list, dec: list, col: list, prb: list) -> str:
    """The text of ``summary.md``: tables of every part's rows (means over seeds).

    Args:
      med: :func:`mediation_rows`' rows (latent -> answer interventions, input -> state shifts).
      dec: :func:`decomposition`'s rows.
      col: :func:`collapse_rows`' rows.
      prb: :func:`probe_rows`' rows.

    Returns:
      The Markdown text.
    """
    lines = [
        "## Decomposition: accuracy and share of the latent block's gain retained (mean over seeds)",
        "",
        "The share is shown where the full block's gain over no block has a 95% bootstrap interval above 0.",
        "",
        "| variant | stage | block gain (95% CI) | setting | accuracy | gain retained (95% CI) | "
        "attention entropy latent / answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in dec:
        share = (
            f"{r['gain_retained']:.2f} ({r['gain_low']:.2f} to {r['gain_high']:.2f})"
            if _significant(r)
            else "no significant gain"
        )
        if r.get("no_op") in (True, "True"):
            share = "no-op: the slots' inputs are the same in every instance"
        lines.append(
            f"| {r['variant']} | {r['stage']} | {r['block_gain']:+.3f} ({r['block_gain_low']:+.3f} to "
            f"{r['block_gain_high']:+.3f}) | {r['setting']} | {r['accuracy']:.3f} | {share} | "
            f"{r['latent_entropy']:.2f} / {r['answer_entropy']:.2f} |"
        )
    lines += [
        "",
        "## Latent -> answer interventions (mean over seeds)",
        "",
        "| variant | intervention | accuracy before | accuracy | flip rate | KL |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["variant"] for r in med if r["what"] == "intervention"):
        for k in dict.fromkeys(r["perturbation"] for r in med if r["what"] == "intervention" and r["variant"] == name):
            m = dict(variant=name, what="intervention", perturbation=k)
            lines.append(
                f"| {name} | {k} | {_mean(med, 'accuracy_before', **m):.3f} | {_mean(med, 'accuracy', **m):.3f} | "
                f"{_mean(med, 'flip_rate', **m):.3f} | {_mean(med, 'kl', **m):.3f} |"
            )
    lines += [
        "",
        "## Input -> state shifts: cosine distance (mean over steps, instances, seeds)",
        "",
        "| variant | states | "
        + " | ".join(dict.fromkeys(r["perturbation"] for r in med if r["what"] != "intervention"))
        + " |",
    ]
    perts = list(dict.fromkeys(r["perturbation"] for r in med if r["what"] != "intervention"))
    lines.append("|---|---|" + "---|" * len(perts))
    for name, what in dict.fromkeys((r["variant"], r["what"]) for r in med if r["what"] != "intervention"):
        vals = [_mean(med, "cosine_distance", variant=name, what=what, perturbation=p) for p in perts]
        lines.append(f"| {name} | {what} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    lines += [
        "",
        "## Collapse (mean over seeds)",
        "",
        "| variant | step | inter-instance cosine | step similarity | participation ratio | top PC share |",
        "|---|---|---|---|---|---|",
    ]
    for name, step in dict.fromkeys((r["variant"], r["step"]) for r in col):
        m = dict(variant=name, step=step)
        lines.append(
            f"| {name} | {step} | {_mean(col, 'inter_instance_cosine', **m):.3f} | "
            f"{_mean(col, 'step_similarity', **m):.3f} | {_mean(col, 'participation_ratio', **m):.2f} | "
            f"{_mean(col, 'top_pc_share', **m):.3f} |"
        )
    lines += [
        "",
        "## Linear probes: held-out accuracy (mean over seeds) / chance",
        "",
        "| variant | features | " + " | ".join(FACTS) + " |",
        "|---|---|" + "---|" * len(FACTS),
    ]
    for name, feat in dict.fromkeys((r["variant"], r["features"]) for r in prb):
        cells = [
            f"{_mean(prb, 'accuracy', variant=name, features=feat, target=t):.3f} / "
            f"{_mean(prb, 'chance', variant=name, features=feat, target=t):.3f}"
            for t in FACTS
        ]
        lines.append(f"| {name} | {feat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- findings


MARKERS_BAND = (0.78, 1.00)  # the claimed share of the latent block's gain that the markers alone keep
MARKERS_MARGIN = 0.05  # refuted only when the interval misses the band widened by this
MARKERS_MAX_WIDTH = 0.6  # an interval wider than this is consistent with everything: open
SHIFT_DISCONNECTED, SHIFT_CONNECTED = 0.05, 0.20  # input -> latent: cosine distance the latents move
FLIP_DISCONNECTED, FLIP_CONNECTED = 0.10, 0.15  # latent -> answer: share of answers an intervention flips


def markers_unit(gain_low, gain_high, block_gain_low, seeds: int) -> str:
    """Verdict of one variant on the markers claim.

    ``n/a`` without a gain (the block's gain over no block has no 95% interval above 0); ``open``
    with fewer than :data:`~tokdyn.experiment.findings.MIN_SEEDS` seeds; ``refuted`` when the
    interval of the share retained misses :data:`MARKERS_BAND` widened by :data:`MARKERS_MARGIN`;
    ``reproduced`` when it meets the band and is at most :data:`MARKERS_MAX_WIDTH` wide; ``open``
    otherwise.

    Args:
      gain_low: lower end of the 95% interval of the share of the gain the markers retain.
      gain_high: its upper end.
      block_gain_low: lower end of the 95% interval of the block's gain over no block.
      seeds: the number of seeds.

    Returns:
      ``"reproduced"``, ``"refuted"``, ``"open"`` or ``"n/a"``.
    """
    lo_b, hi_b = MARKERS_BAND
    if not np.isfinite(block_gain_low) or block_gain_low <= 0:
        return "n/a"
    if seeds < F.MIN_SEEDS or not (np.isfinite(gain_low) and np.isfinite(gain_high)):
        return "open"
    if gain_high < lo_b - MARKERS_MARGIN or gain_low > hi_b + MARKERS_MARGIN:
        return "refuted"
    if gain_low <= hi_b and gain_high >= lo_b and gain_high - gain_low <= MARKERS_MAX_WIDTH:
        return "reproduced"
    return "open"


def markers_finding(decomposition, seeds: int) -> Finding:
    """Finding 3 from the study's ``decomposition.csv`` (final checkpoints, setting
    ``markers_only``: the share of the latent block's gain the boundary markers alone keep, with the
    study's paired bootstrap interval over instances); ``seeds``: the source's."""
    lo_b, hi_b = MARKERS_BAND
    f = Finding(
        "3",
        "Boundary markers' share of the latent gain",
        f"The latent block's boundary markers alone (its slots removed) keep {lo_b:.0%}–{hi_b:.0%} of the "
        "block's gain in accuracy over no block.",
        "arXiv 2606.01287",
        f"Per variant with a latent block, at its final checkpoint: the share of the block's gain that "
        f"markers_only keeps, with the study's 95% paired bootstrap interval over test instances; a variant "
        f"counts only where the block's gain itself has an interval above 0, and only from {F.MIN_SEEDS} seeds "
        f"on. A variant reproduces the claim when its interval meets [{lo_b:g}, {hi_b:g}] and is at most "
        f"{MARKERS_MAX_WIDTH:g} wide, refutes it when its interval misses [{lo_b - MARKERS_MARGIN:g}, "
        f"{hi_b + MARKERS_MARGIN:g}]; the claim is refuted when one variant refutes it, reproduced when every "
        f"variant that counts reproduces it, open otherwise.",
        study=STUDY,
    )
    sel = (F.strings(decomposition, "stage") == "final") & (F.strings(decomposition, "setting") == "markers_only")
    if not sel.any():
        return F.missing(f, "no markers_only row at a final checkpoint in decomposition.csv")
    verdicts, rows = [], []
    for i in np.flatnonzero(sel):
        g = {
            k: F.numbers(decomposition, k)[i]
            for k in (
                "block_gain",
                "block_gain_low",
                "block_gain_high",
                "gain_retained",
                "gain_low",
                "gain_high",
                "accuracy",
            )
        }
        v = markers_unit(g["gain_low"], g["gain_high"], g["block_gain_low"], seeds)
        verdicts.append(v)
        rows.append(
            [
                F.strings(decomposition, "variant")[i],
                F.interval(g["block_gain"], g["block_gain_low"], g["block_gain_high"]),
                F.interval(g["gain_retained"], g["gain_low"], g["gain_high"]) if v != "n/a" else "no gain to share",
                v,
            ]
        )
    basis = "; ".join(f"{r[0]} {r[2]}" for r in rows if r[3] != "n/a") or "no variant's block has a gain"
    if seeds < F.MIN_SEEDS:
        basis += f" (source trained with {seeds} seeds: open)"
    return dataclasses.replace(
        f,
        header=("variant", "block's gain over no block [95%]", "markers keep: share [95%]", "verdict"),
        rows=rows,
        verdict=F.aggregate(verdicts),
        basis=basis,
    )


def _strongest(table, sel: np.ndarray, by: str, value: str, bounds=None):
    """The ``by`` level with the largest mean over seeds of ``value`` (each seed's mean over its
    rows), and :func:`~tokdyn.experiment.findings.seed_interval` of it (within ``bounds``, the
    value's range)."""
    best = None
    for level in dict.fromkeys(F.strings(table, by)[sel].tolist()):
        s = F.seed_interval(F.per_seed(table, sel & (F.strings(table, by) == level), value), bounds)
        if best is None or (np.isfinite(s[0]) and s[0] > best[1][0]):
            best = (level, s)
    return best


def _connection(mean_low_high_n, disconnected: float, connected: float) -> str:
    mean, low, high, n = mean_low_high_n
    if n < F.MIN_SEEDS or not np.isfinite(low):
        return "open"
    return "reproduced" if high < disconnected else "refuted" if low > connected else "open"


def mediation_findings(mediation) -> list[Finding]:
    """Findings 4a (input -> latent) and 4b (latent -> answer) from the study's ``mediation.csv``:
    per feedback variant, the perturbation that moves its latents most (cosine distance, mean over
    latent steps) and the intervention on its latents that flips most answers, each with a 95%
    interval over seeds."""
    what, variant = F.strings(mediation, "what"), F.strings(mediation, "variant")
    origin = 'arXiv 2602.22766 ("Imagination helps, but not yet in latent space")'
    a = Finding(
        "4a",
        "Input → latent: do the latents depend on the image?",
        "The latent tokens are disconnected from the input: perturbing the image barely moves them.",
        origin,
        f"Per feedback variant, the image perturbation that moves its latents most (cosine distance, mean over "
        f"latent steps and instances), a 95% interval over seeds (at least {F.MIN_SEEDS}): the variant shows "
        f"the disconnect (reproduced) when the interval lies below {SHIFT_DISCONNECTED:g}, not (refuted) when "
        f"it lies above {SHIFT_CONNECTED:g}, open otherwise. The claim is refuted when one variant refutes it, "
        f"reproduced when every variant reproduces it. The text variant's caption states, moved by the same "
        f"perturbation, are shown for scale.",
        study=STUDY,
    )
    b = Finding(
        "4b",
        "Latent → answer: do the answers depend on the latents?",
        "The answers are disconnected from the latent tokens: intervening on the latents barely changes them.",
        origin,
        f"Per feedback variant, the intervention on its latents (zeros, noise, mean, constant, swap, another "
        f"variant's) that flips most answers, a 95% interval over seeds of the flip rate (at least "
        f"{F.MIN_SEEDS}): disconnected (reproduced) when the interval lies below {FLIP_DISCONNECTED:g}, "
        f"connected (refuted) when it lies above {FLIP_CONNECTED:g}, open otherwise; aggregated over variants "
        f"as in 4a.",
        study=STUDY,
    )
    names = list(dict.fromkeys(variant[what == "latent"].tolist()))
    if not names:
        return [F.missing(a, "no latent rows in mediation.csv"), F.missing(b, "no intervention rows in mediation.csv")]
    caption = what == "caption"
    va, vb, ra, rb = [], [], [], []
    for name in names:
        level, s = _strongest(
            mediation, (what == "latent") & (variant == name), "perturbation", "cosine_distance", (0.0, 2.0)
        )
        ref = F.numbers(mediation, "cosine_distance")[caption & (F.strings(mediation, "perturbation") == level)]
        v = _connection(s, SHIFT_DISCONNECTED, SHIFT_CONNECTED)
        va.append(v)
        ra.append([name, level, F.interval(*s[:3]), str(s[3]), F.number(np.mean(ref)) if ref.size else "–", v])
        sel = (what == "intervention") & (variant == name)
        if sel.any():
            level, s = _strongest(mediation, sel, "perturbation", "flip_rate", F.RATE)
            lv = sel & (F.strings(mediation, "perturbation") == level)
            drop = F.seed_interval(
                F.per_seed(mediation, lv, "accuracy") - F.per_seed(mediation, lv, "accuracy_before"),
                F.difference_bounds(F.RATE),
            )
            v = _connection(s, FLIP_DISCONNECTED, FLIP_CONNECTED)
            vb.append(v)
            rb.append([name, level, F.interval(*s[:3]), F.interval(*drop[:3]), str(s[3]), v])
    a = dataclasses.replace(
        a,
        header=(
            "variant",
            "strongest perturbation",
            "latents move (cosine distance) [95%]",
            "seeds",
            "text's caption states move",
            "verdict",
        ),
        rows=ra,
        verdict=F.aggregate(va),
        basis="; ".join(f"{r[0]} {r[2]} ({r[1]})" for r in ra),
    )
    b = dataclasses.replace(
        b,
        header=(
            "variant",
            "strongest intervention",
            "answers flipped [95%]",
            "accuracy change [95%]",
            "seeds",
            "verdict",
        ),
        rows=rb,
        verdict=F.aggregate(vb) if vb else "open",
        basis="; ".join(f"{r[0]} {r[2]} ({r[1]})" for r in rb) or "no intervention rows in mediation.csv",
    )
    return [a, b]


def source_seeds(out: str) -> int:
    """Seeds of the latent-reasoning models the study directory ``out`` analysed (its
    ``config.json``, verified); 0 if unknown (then the findings that need them stay open)."""
    try:
        return int(study_dir.read_record(out)["reasoning"]["training"]["seeds"])
    except (OSError, KeyError, TypeError, ValueError):
        return 0


def findings(out: str) -> list[Finding]:
    """Findings 3 (:func:`markers_finding`, from ``decomposition.csv``) and 4a, 4b
    (:func:`mediation_findings`, from ``mediation.csv``) of the study directory ``out``."""
    seeds = source_seeds(out)
    return F.judge(out, "decomposition.csv", STUDY, lambda t: [markers_finding(t, seeds)]) + F.judge(
        out, "mediation.csv", STUDY, mediation_findings
    )


SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    prepare=reasoners.source_prepare(_needed),
    figures=draw,
    summary=lambda cfg, r: summary(r.data["med"], r.data["dec"], r.data["col"], r.data["prb"]),
    findings=findings,
    outputs=("mediation.csv", "decomposition.csv", "collapse.csv", "probes.csv"),
    figure_files=("similarity.png", "decomposition.png", "probes.png"),
    selection=SELECTION,
    **reasoners.SOURCE_SPEC,
)

main = runner.entry(SPEC, __name__, returns="True when it finished.", about="Its source is checked first.")
