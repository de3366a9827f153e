"""The latent-optimisation study's grounding part: how far each generated token of a variant
depends on the image, under perturbations of it (:func:`run_grounding`, kept as parts by
:func:`grounding_part`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import stats
from tokdyn.diagnostics import grounding, perturb
from tokdyn.experiment import study as study_dir
from tokdyn.models.latent import evaluation
from tokdyn.studies.latent_optimisation.config import Config


def run_grounding(cfg: Config, name: str, model, params, tc, test, families) -> list[dict]:
    """Grounding rows of variant ``name``, and the answer-token scores.

    Args:
      cfg: the study's :class:`Config` (its ``perturbations`` and ``threshold``).
      name: the variant's name.
      model: its :class:`~tokdyn.models.latent.model.Model`.
      params: its weights, stacked over S seeds.
      tc: the variant's training configuration (its task perturbs the inputs).
      test: N test instances.
      families: the source's task families.

    Returns:
      ``(rows, scores)``: one row per seed and perturbation (accuracy, grounding of the answer and
      caption tokens, the share that depends on the image, and point-biserial correlations of
      grounding and of confidence with correctness), and perturbation -> (S * N,) answer-token
      grounding scores.
    """
    answers, captions = evaluation.answers(tc, name, params, test)  # (S, N), (S, N, K)
    positions = grounding.generated_positions(model.layout)
    caption_len = model.cfg.caption_len
    answer = np.asarray(test.answer)
    lay = model.layout

    @jax.jit
    def scored(params, batch, perturbed, tokens):
        s = grounding.scores(model.apply, params, batch, perturbed, positions=positions, tokens=tokens)
        conf = jax.nn.softmax(model.apply(params, batch).logits[:, lay.answer]).max(-1)
        return s, conf

    rows, hist = [], {}
    for p_i, pert in enumerate(cfg.perturbations):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.root_seed), 2), p_i)
        for s in range(answers.shape[0]):
            tokens = np.concatenate([captions[s][:, :caption_len], answers[s][:, None]], 1).astype(np.int32)
            batch = (
                dataclasses.replace(test, caption=jnp.asarray(captions[s][:, :caption_len], jnp.int32))
                if caption_len
                else test
            )
            p = jax.tree_util.tree_map(lambda a: a[s], params)
            sc, conf = scored(p, batch, perturb.perturb(key, batch, tc.task, pert), jnp.asarray(tokens))
            sc, conf = np.asarray(sc, np.float64), np.asarray(conf, np.float64)
            correct = answers[s] == answer
            mean_s = sc.mean(1)
            g = stats.point_biserial(mean_s, correct, seed=cfg.root_seed)
            c = stats.point_biserial(conf, correct, seed=cfg.root_seed)
            hist.setdefault(pert, []).append(sc[:, -1])
            rows.append(
                {
                    "variant": name,
                    "seed": s,
                    "perturbation": pert,
                    "n": len(correct),
                    "accuracy": correct.mean(),
                    "answer_grounding": sc[:, -1].mean(),
                    "caption_grounding": sc[:, :-1].mean() if caption_len else np.nan,
                    "image_dependent_share": (sc > cfg.threshold).mean(),
                    "answer_image_dependent_share": (sc[:, -1] > cfg.threshold).mean(),
                    "r_grounding_correct": g.r,
                    "r_grounding_low": g.low,
                    "r_grounding_high": g.high,
                    "r_grounding_p": g.pvalue,
                    "r_confidence_correct": c.r,
                    "r_confidence_low": c.low,
                    "r_confidence_high": c.high,
                    "r_confidence_p": c.pvalue,
                }
            )
    return rows, {k: np.concatenate(v) for k, v in hist.items()}


def grounding_part(study: study_dir.Study, cfg: Config, lr, name: str, test, families) -> tuple[list, dict]:
    """:func:`run_grounding` of variant ``name``, kept as two parts of ``study``.

    The parts (its rows, and the answer-token scores per perturbation) are keyed by the
    perturbations (their keys follow their order).

    Args:
      study: the :class:`~tokdyn.experiment.study.Study` that keeps them.
      cfg: the study's :class:`Config`.
      lr: the source's :class:`tokdyn.studies.latent_reasoning.Config` (the variant is loaded from it).
      name: the variant's name.
      test: N test instances.
      families: the source's task families.

    Returns:
      :func:`run_grounding`'s ``(rows, scores)``.
    """
    done = {}

    def compute():
        if not done:
            model, params, tc = cfg.reasoners().load_variant(lr, cfg.source, name)
            done["rows"], done["scores"] = run_grounding(cfg, name, model, params, tc, test, families)
        return done

    key = {"variant": name, "perturbations": list(cfg.perturbations)}
    rows = study.rows(f"{name}__grounding", lambda: compute()["rows"], key=key)
    scores = study.part(f"{name}__grounding_scores", lambda: compute()["scores"], key=key)
    return rows, {p: np.asarray(scores[p]) for p in cfg.perturbations}
