"""The latent-optimisation study's optimiser part: every method of
:data:`~tokdyn.studies.latent_optimisation.config.METHODS` and the controls on one variant
(:func:`run_optimiser`, each run kept as a part), and the tables of them all
(:func:`optimiser_tables`)."""

from __future__ import annotations

import functools
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import io, stats
from tokdyn.diagnostics import dmlr
from tokdyn.experiment import study as study_dir
from tokdyn.models.latent import model as latent_model
from tokdyn.data import grid_tasks as tasks
from tokdyn.studies.latent_optimisation.config import Config


@functools.lru_cache(maxsize=8)  # one compile per (model, method): a learning-rate sweep reuses it
def _optimise_fn(model: latent_model.Model, opt: dmlr.Config):
    lay = model.layout
    positions = tuple(range(lay.latents.start, lay.latents.stop))
    patches = tuple(range(lay.patches.start, lay.patches.stop))
    one = lambda key, params, batch, hp, index: dmlr.optimise(
        key,
        model.apply,
        params,
        batch,
        opt,
        hp,
        latent_positions=positions,
        answer_position=lay.answer,
        patch_positions=patches,
        index=index,
    )
    return jax.jit(jax.vmap(one, in_axes=(None, 0, None, None, None)))  # over seeds


@functools.lru_cache(maxsize=8)  # one compile per (model, reward): a rerun that recomputes the controls reuses it
def _controls_fn(model: latent_model.Model, opt: dmlr.Config):
    """Per seed: the model's own answers and reward, and the answers with random latents."""
    lay = model.layout
    positions = tuple(range(lay.latents.start, lay.latents.stop))
    score = lambda logits: jax.vmap(
        lambda lg: dmlr.confidence(
            lg, reward=opt.reward, top_k=opt.top_k, latent_positions=positions, answer_position=lay.answer
        )
    )(logits)

    def one(key, params, batch):
        out = model.apply(params, batch)
        rand = model.apply(params, batch, latents=dmlr.random_latents(key, out.latents))
        return (
            out.logits[:, lay.answer].argmax(-1),
            score(out.logits),
            rand.logits[:, lay.answer].argmax(-1),
            score(rand.logits),
        )

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


def run_optimiser(cfg: Config, name: str, model, params, test, study: Optional[study_dir.Study] = None) -> dict:
    """Optimise the latents of variant ``name`` by every run of :meth:`Config.runs`, and the controls.

    With ``study`` each run's result is kept as a part of it (``parts/<variant>__<run>.npz``) as
    it finishes and reused by a rerun (the part is keyed by the study's stamp, which holds the
    source's).

    Args:
      cfg: the study's :class:`Config`.
      name: the variant's name.
      model: its :class:`~tokdyn.models.latent.model.Model`.
      params: its weights, stacked over S seeds.
      test: N test instances (a :class:`~tokdyn.data.grid_tasks.Instance` batch).
      study: optional :class:`~tokdyn.experiment.study.Study` that keeps the runs.

    Returns:
      Run (and ``"before"``, ``"random"``) -> dict: ``answer`` (S, N), ``reward_before`` and
      ``reward_after`` (S, N), ``rewards`` over iterations (S, N, T), ``injected`` patches (S, N),
      ``n_nan`` and ``seconds``.
    """
    key = jax.random.fold_in(jax.random.key(cfg.root_seed), 1)
    index = jnp.arange(test.answer.shape[0])

    def stored(run: str, compute) -> dict:
        if study is None:
            return compute()
        return study.part(f"{name}__{run}", compute, key={"variant": name, "run": run})

    def controls():
        t0 = time.time()
        a0, r0, ar, rr = jax.tree_util.tree_map(
            np.asarray, _controls_fn(model, cfg.optimiser("es_entropy"))(key, params, test)
        )
        return {"a0": a0, "r0": r0, "ar": ar, "rr": rr, "seconds": time.time() - t0}

    c = stored("controls", controls)
    out = {
        "before": {"answer": c["a0"], "reward_before": c["r0"], "reward_after": c["r0"], "seconds": c["seconds"]},
        "random": {"answer": c["ar"], "reward_before": c["r0"], "reward_after": c["rr"], "seconds": c["seconds"]},
    }
    for run, hp in cfg.runs():

        def compute(run=run, hp=hp):
            t0 = time.time()
            res = jax.tree_util.tree_map(
                np.asarray, _optimise_fn(model, cfg.optimiser(run))(key, params, test, hp, index)
            )
            injected = np.zeros(res.answer_best.shape) if res.injected is None else res.injected.sum(-1)
            return {
                "answer": res.answer_best,
                "answer_before": res.answer_before,
                "reward_before": res.reward_before,
                "reward_after": res.reward_best,
                "rewards": res.rewards,
                "n_nan": res.n_nan,
                "injected": injected,
                "seconds": time.time() - t0,
            }

        out[run] = stored(run, compute)
    return out


def optimiser_tables(cfg: Config, results: dict, test, families) -> tuple[dict, dict, dict]:
    """The columns of ``optimiser.csv``, ``optimiser_tests.csv`` and ``rewards.csv``.

    Args:
      cfg: the study's :class:`Config`.
      results: variant -> :func:`run_optimiser`'s dict.
      test: the N test instances the runs answered.
      families: the task families reported one by one (besides ``"all"``).

    Returns:
      ``(optimiser, tests, rewards)``: accuracy and reward per variant, seed, method and family
      (:func:`method_rows`); paired t-tests of each method's per-instance accuracy against
      ``"before"`` (:func:`paired_rows`, Holm-adjusted ``p_holm``); the mean reward per iteration.
    """
    answer, fam = np.asarray(test.answer), np.asarray(test.family)
    sel = {f: fam == tasks.FAMILIES.index(f) for f in families}
    sel["all"] = np.ones(fam.shape, bool)
    rows, tests, curves = [], [], []
    for name, per in results.items():
        before = per["before"]["answer"] == answer[None]  # (S, N)
        for method, r in per.items():
            correct = r["answer"] == answer[None]
            rows += method_rows(name, method, r, per["before"]["answer"], before, correct, sel)
            if "rewards" in r:
                for s in range(correct.shape[0]):
                    for t, v in enumerate(np.nanmean(r["rewards"][s], 0)):
                        curves.append({"variant": name, "seed": s, "method": method, "iteration": t + 1, "reward": v})
            if method != "before":
                tests += paired_rows(name, method, correct.mean(0), before.mean(0), sel)
    cols = io.to_columns(tests)
    if tests:
        p = np.asarray(cols["p"], float)
        holm = np.full(p.shape, np.nan)
        holm[np.isfinite(p)] = stats.holm(p[np.isfinite(p)]) if np.isfinite(p).any() else []
        cols["p_holm"] = list(holm)
    return io.to_columns(rows), cols, io.to_columns(curves)


def method_rows(name: str, method: str, r: dict, answer_before, before, correct, sel: dict) -> list[dict]:
    """``optimiser.csv``'s rows of one variant and method: per seed and family (``sel``: family ->
    (N,) instances of it) the accuracy before and after, the rewards, the answers changed (against
    ``answer_before``, (S, N)), the NaN rewards and the patches injected; ``before`` and ``correct``
    are (S, N) whether each answer was right before and after."""
    flipped = r["answer"] != answer_before
    rows = []
    for s in range(correct.shape[0]):
        for f, m in sel.items():
            if not m.any():
                continue
            rows.append(
                {
                    "variant": name,
                    "seed": s,
                    "method": method,
                    "family": f,
                    "n": int(m.sum()),
                    "accuracy_before": before[s, m].mean(),
                    "accuracy": correct[s, m].mean(),
                    "reward_before": np.nanmean(r["reward_before"][s, m]),
                    "reward_after": np.nanmean(r["reward_after"][s, m]),
                    "answers_changed": flipped[s, m].mean(),
                    "nan_rewards": int(np.sum(r.get("n_nan", np.zeros_like(correct))[s, m])),
                    "patches_injected": float(np.mean(r.get("injected", np.zeros(correct.shape))[s, m])),
                    "seconds": r["seconds"],
                }
            )
    return rows


def paired_rows(name: str, method: str, a, b, sel: dict) -> list[dict]:
    """``optimiser_tests.csv``'s rows of one variant and method: per family (``sel``) a paired
    t-test of the per-instance accuracy over seeds after (``a``) against before (``b``), with
    Cohen's d; a family of fewer than 2 instances is listed with NaN statistics."""
    tests = []
    for f, m in sel.items():
        if m.sum() < 2:  # no test of fewer than 2 pairs: listed, NaN
            tests.append(
                {
                    "variant": name,
                    "method": method,
                    "family": f,
                    "n": int(m.sum()),
                    "mean_diff": float(np.mean(a[m] - b[m])) if m.any() else np.nan,
                    "t": np.nan,
                    "p": np.nan,
                    "d": np.nan,
                }
            )
            continue
        t = stats.paired_ttest(a[m], b[m])
        tests.append(
            {
                "variant": name,
                "method": method,
                "family": f,
                "n": int(m.sum()),
                "mean_diff": float(np.mean(a[m] - b[m])),
                "t": float(t.statistic),
                "p": float(t.pvalue),
                "d": float(stats.cohens_d(a[m], b[m])) if np.any(a[m] != b[m]) else 0.0,
            }
        )
    return tests
