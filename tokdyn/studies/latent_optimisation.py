"""The latent-optimisation study: confidence-driven latent optimisation at inference (DMLR) and the
visual grounding of generated tokens, on the trained reasoners of a latent-reasoning study.

``tokdyn study latent-optimisation --out DIR --source SRC`` (:func:`main`, :class:`Config`) reads
the trained variants of a ``tokdyn study latent-reasoning`` directory (checked strictly against
its stamp and files before any work). The **optimiser** part runs every method of
:data:`METHODS` and the controls ``before`` (the model's own latents) and ``random`` (random
latents of each latent's norm) on every latent-feedback variant (:func:`run_optimiser`,
:func:`optimiser_tables`); the **grounding** part scores each generated token's grounding under
image perturbations (:func:`run_grounding`). It writes ``optimiser.csv``,
``optimiser_tests.csv``, ``rewards.csv``, ``grounding.csv``, ``optimiser.png``, ``grounding.png``,
``summary.md`` and ``config.json``; every run is kept in ``DIR/parts/`` as it finishes.

The outputs, the source's checks, resuming and the findings: :doc:`/studies/latent-optimisation`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks, io, stats
from tokdyn.diagnostics import dmlr, grounding, perturb
from tokdyn.experiment import findings as F
from tokdyn.experiment import reasoners
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.experiment.findings import Finding
from tokdyn.models.latent import evaluation, tasks, variants
from tokdyn.models.latent import model as latent_model
from tokdyn.stats import figures

METHODS = {  # name: (reward, estimator, visual injection)
    "es_entropy": ("entropy", "es", "none"),  # the paper's reward, REINFORCE
    "es_entropy_best": ("entropy", "es", "best"),  # ... with the paper's best-patch injection (full DMLR)
    "es_entropy_all": ("entropy", "es", "all"),  # ... with every patch injected
    "es_logprob": ("logprob", "es", "none"),  # the public code's reward, REINFORCE
    "es_answer": ("answer", "es", "none"),  # the answer's confidence, REINFORCE
    "exact_entropy": ("entropy", "exact", "none"),  # the paper's reward, exact gradient ascent
}
CONTROLS = ("before", "random")
STUDY = "latent-optimisation"
SELECTION = reasoners.SOURCE_SELECTION + (  # fields that only choose which parts run (not stamped)
    "variants",
    "methods",
    "sweep_method",
    "sweep_learning_rates",
    "grounding_variants",
    "perturbations",
)


@dataclasses.dataclass(frozen=True)
class Config(reasoners.Analysis):
    """Everything that defines the study (saved as ``config.json``): the source's fields of
    :class:`tokdyn.experiment.reasoners.Analysis` (``source``, ``preset``, ``train``), then these.

    Attributes:
      variants: latent-feedback variants whose latents are optimised.
      methods: optimisation methods, names from METHODS.
      sweep_method: the method also run at each of sweep_learning_rates (a name from METHODS).
      sweep_learning_rates: further ascent rates for sweep_method, rows "<method>@lr=<rate>" (empty:
        no sweep).
      grounding_variants: variants whose generated tokens get grounding scores.
      perturbations: image perturbations of the grounding scores (names from
        tokdyn.diagnostics.perturb.PERTURBATIONS).
      threshold: a token is image-dependent when its grounding score exceeds this (nats).
      n_instances: the first N test instances of the source study.
      top_k: k of the top-k probabilities the latent rewards look at.
      n_iters: optimisation iterations T.
      n_pairs: antithetic pairs per REINFORCE estimate.
      learning_rate: SGD ascent rate, in units of the initial latents' RMS entry.
      sigma: perturbation scale, in units of the initial latents' RMS entry.
      sigma_decay: sigma's decay per iteration.
      top_m: image patches per latent that are candidates for the best-patch injection.
      root_seed: root PRNG seed of the optimiser's and the perturbations' draws.
    """

    variants: tuple = ("latent", "latent_mirage", "latent_lvr")
    methods: tuple = tuple(METHODS)
    sweep_method: str = "exact_entropy"
    sweep_learning_rates: tuple = (1e-2, 1e-1, 1.0)
    grounding_variants: tuple = ("direct", "text", "latent")
    perturbations: tuple = ("blank", "swap", "shuffle")
    threshold: float = 0.1
    n_instances: int = 1000
    top_k: int = 10
    n_iters: int = 15
    n_pairs: int = 8
    learning_rate: float = 1e-3
    sigma: float = 0.1
    sigma_decay: float = 0.95
    top_m: int = 2
    root_seed: int = 0

    def validate(self) -> "Config":
        """Check every field (``n_instances`` within the source's test instances and enough for 2 of
        each task family, ``top_m`` at most its image patches; the source's through
        :meth:`tokdyn.experiment.reasoners.Analysis.validate`); raise ``ValueError``/``TypeError``
        naming the field. Returns ``self``."""
        super().validate()
        feedback = sorted(v for v, spec in variants.VARIANTS.items() if spec.latent_mode == "feedback")
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(
                f"variants must name at least one latent-feedback variant (one of {feedback}), got {self.variants!r}"
            )
        for name in self.variants:
            if variants.variant(name).latent_mode != "feedback":
                raise ValueError(
                    f"variants must be latent-feedback variants (they have latents to optimise), got {name!r}"
                )
        for field in ("variants", "methods", "grounding_variants", "perturbations", "sweep_learning_rates"):
            value = getattr(self, field)
            if isinstance(value, (str, float, int)):
                raise TypeError(f"{field} must be a tuple, got {value!r}")
            _checks.distinct(field, value)  # each entry is one condition: a repeat would count it twice
        for field, allowed in (("methods", METHODS), ("perturbations", perturb.PERTURBATIONS)):
            value = getattr(self, field)
            if not value:
                raise ValueError(f"{field} must name at least one of {sorted(allowed)}, got {value!r}")
            for v in value:
                _checks.choice(field, v, allowed)
        _checks.choice("sweep_method", self.sweep_method, METHODS)
        for rate in self.sweep_learning_rates:
            _checks.real("sweep_learning_rates", rate, low=0.0, low_open=True)
        for name in self.grounding_variants:
            variants.variant(name)
        _checks.real("threshold", self.threshold)
        tc = self.reasoning().training
        families = tc.task.families
        _checks.positive_int("n_instances", self.n_instances, minimum=1)
        least = max(3, 2 * len(families))
        if self.n_instances < least:
            raise ValueError(
                f"n_instances must be at least {least}: the paired t-tests are per task family and need "
                f"2 instances of each of the source's {len(families)} families {list(families)} (and "
                f"the grounding correlations 3 in all), got {self.n_instances}"
            )
        if self.n_instances > tc.n_test:
            raise ValueError(
                f"n_instances must be at most the source's {tc.n_test} test instances, got {self.n_instances}"
            )
        _checks.seed("root_seed", self.root_seed)
        self.optimiser("es_entropy_best")
        if self.top_m > tc.task.n_patches:
            raise ValueError(f"top_m must be at most the {tc.task.n_patches} image patches, got {self.top_m}")
        self.hparams()
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version on the latent-reasoning study's --quick models."""
        return cls(
            source="results/latent-reasoning-quick",
            preset="quick",
            variants=("latent",),
            grounding_variants=("direct", "text"),
            n_instances=300,
            n_iters=8,
            n_pairs=4,
            sweep_learning_rates=(1e-1,),
        )

    def optimiser(self, method: str) -> dmlr.Config:
        """The optimiser of ``method`` (a name of :data:`METHODS`, or a sweep row
        ``<method>@lr=<rate>``) with this study's ``top_k``, ``n_iters``, ``n_pairs`` and ``top_m``,
        checked against the source's vocabulary."""
        reward, estimator, inject = METHODS[method.split("@")[0]]
        vocab = self.reasoning().training.task.vocab.size
        return dmlr.Config(
            reward=reward,
            top_k=self.top_k,
            n_iters=self.n_iters,
            n_pairs=self.n_pairs,
            estimator=estimator,
            inject=inject,
            top_m=self.top_m,
        ).validate(vocab)

    def hparams(self, learning_rate: Optional[float] = None) -> dmlr.Hparams:
        """The optimiser's hyper-parameters: ``learning_rate`` (this study's unless given),
        ``sigma`` and ``sigma_decay`` (checked)."""
        return dmlr.Hparams(
            learning_rate=self.learning_rate if learning_rate is None else learning_rate,
            sigma=self.sigma,
            sigma_decay=self.sigma_decay,
        ).validate()

    def runs(self) -> list[tuple[str, dmlr.Hparams]]:
        """(row name, hparams) of every optimiser run: the methods, then the learning-rate sweep."""
        out = [(m, self.hparams()) for m in self.methods]
        return out + [(f"{self.sweep_method}@lr={r:g}", self.hparams(r)) for r in self.sweep_learning_rates]

    def estimate(self) -> study_dir.Estimate:
        """The largest working set: one chunk of 4 instances x 2 ``n_pairs`` perturbed evaluations
        per seed (logits, hidden states, attention), or the rewards over ``n_iters`` iterations of
        every instance; :class:`~tokdyn.experiment.study.Refused` naming the option for an array
        too large for XLA's 32-bit indexing."""
        lr = self.reasoning()
        tc = lr.training
        per_eval = reasoners.forward_elements(lr, tuple(self.variants) + tuple(self.grounding_variants))
        study_dir.elements_fit("n_pairs", tc.seeds, 4, 2 * self.n_pairs, per_eval)
        study_dir.elements_fit("n_iters", tc.seeds, self.n_instances, self.n_iters, tc.n_latents, tc.width)
        sizes = {
            "n_pairs": tc.seeds * 4 * 2 * self.n_pairs * per_eval * 4 * 3,
            "n_iters": tc.seeds * self.n_instances * self.n_iters * (tc.n_latents * tc.width + 4) * 4 * 2,
        }
        option = max(sizes, key=sizes.get)
        runs = len(self.variants) * (len(self.runs()) + 1) * tc.seeds
        return study_dir.Estimate(memory=sizes[option], option=option, models=runs)


# ---------------------------------------------------------------------------------------------- models


def trained(cfg: Config, quiet: bool) -> reasoners.Config:
    """Make sure the source holds every variant this study needs (training the missing ones when
    ``cfg.train``); returns the source study's configuration."""
    return reasoners.ensure_trained(cfg.reasoning(), cfg.source, _needed(cfg), train=cfg.train, quiet=quiet)


# ---------------------------------------------------------------------------------------------- optimiser


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
      test: N test instances (a :class:`~tokdyn.models.latent.tasks.Instance` batch).
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
      ``(optimiser, tests, rewards)``: accuracy and reward per variant, seed, method and family;
      paired t-tests of each method's per-instance accuracy against ``"before"`` (Holm-adjusted
      ``p_holm``); the mean reward per iteration.
    """
    answer, fam = np.asarray(test.answer), np.asarray(test.family)
    sel = {f: fam == tasks.FAMILIES.index(f) for f in families}
    sel["all"] = np.ones(fam.shape, bool)
    rows, tests, curves = [], [], []
    for name, per in results.items():
        before = per["before"]["answer"] == answer[None]  # (S, N)
        for method, r in per.items():
            correct = r["answer"] == answer[None]
            flipped = r["answer"] != per["before"]["answer"]
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
                if "rewards" in r:
                    for t, v in enumerate(np.nanmean(r["rewards"][s], 0)):
                        curves.append({"variant": name, "seed": s, "method": method, "iteration": t + 1, "reward": v})
            if method == "before":
                continue
            a, b = correct.mean(0), before.mean(0)  # (N,) per-instance accuracy over seeds
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
    cols = io.to_columns(tests)
    if tests:
        p = np.asarray(cols["p"], float)
        holm = np.full(p.shape, np.nan)
        holm[np.isfinite(p)] = stats.holm(p[np.isfinite(p)]) if np.isfinite(p).any() else []
        cols["p_holm"] = list(holm)
    return io.to_columns(rows), cols, io.to_columns(curves)


# ---------------------------------------------------------------------------------------------- grounding


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


def grounding_part(
    study: study_dir.Study, cfg: Config, lr: reasoners.Config, name: str, test, families
) -> tuple[list, dict]:
    """:func:`run_grounding` of variant ``name``, kept as two parts of ``study``.

    The parts (its rows, and the answer-token scores per perturbation) are keyed by the
    perturbations (their keys follow their order).

    Args:
      study: the :class:`~tokdyn.experiment.study.Study` that keeps them.
      cfg: the study's :class:`Config`.
      lr: the source's :class:`tokdyn.experiment.reasoners.Config` (the variant is loaded from it).
      name: the variant's name.
      test: N test instances.
      families: the source's task families.

    Returns:
      :func:`run_grounding`'s ``(rows, scores)``.
    """
    done = {}

    def compute():
        if not done:
            model, params, tc = reasoners.load_variant(lr, cfg.source, name)
            done["rows"], done["scores"] = run_grounding(cfg, name, model, params, tc, test, families)
        return done

    key = {"variant": name, "perturbations": list(cfg.perturbations)}
    rows = study.rows(f"{name}__grounding", lambda: compute()["rows"], key=key)
    scores = study.part(f"{name}__grounding_scores", lambda: compute()["scores"], key=key)
    return rows, {p: np.asarray(scores[p]) for p in cfg.perturbations}


# ---------------------------------------------------------------------------------------------- figures, summary


def plot_optimiser(out: str, curves: dict, table: dict) -> Optional[str]:
    """The mean reward over iterations of each method (its own reward, over instances and seeds),
    one panel per variant, from ``curves`` (``rewards.csv``'s columns) into ``optimiser.png``;
    returns its path (None without curves)."""
    if not curves.get("variant"):
        return None
    v, m, it = (np.asarray(curves[k]) for k in ("variant", "method", "iteration"))
    rew = np.asarray(curves["reward"], float)
    names = list(dict.fromkeys(v.tolist()))
    fig = figures.figure((4.2 * len(names), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        for i, method in enumerate(dict.fromkeys(m.tolist())):
            sel = (v == name) & (m == method)
            grid = np.unique(it[sel])
            ax.plot(grid, [rew[sel & (it == t)].mean() for t in grid], color=f"C{i}", label=method)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("reward (the method's own), mean over instances and seeds")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "optimiser.png"), dpi=110)


def plot_grounding(out: str, hists: dict) -> Optional[str]:
    """Histograms of the answer token's grounding score per perturbation, one panel per variant
    (``hists``: variant -> perturbation -> scores), into ``grounding.png``; returns its path (None
    without variants)."""
    if not hists:
        return None
    names = list(hists)
    fig = figures.figure((4.0 * len(names), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        for i, (pert, s) in enumerate(hists[name].items()):
            ax.hist(s, bins=40, histtype="step", color=f"C{i}", label=pert)
        ax.set_title(f"{name}: answer token", fontsize=10)
        ax.set_xlabel("grounding score (nats)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figures.save(fig, os.path.join(out, "grounding.png"), dpi=110)


def summary(table: dict, tests: dict, ground: dict) -> str:
    """``summary.md``: per variant and method the accuracy before and after (all families, mean and
    min-max over seeds), the rewards, the answers changed and the Holm-corrected paired p; then the
    grounding per variant and perturbation (means over seeds). The arguments are the columns of
    ``optimiser.csv``, ``optimiser_tests.csv`` and ``grounding.csv``."""
    lines = [
        "## Latent optimisation: accuracy (all families), mean (min-max) over seeds",
        "",
        "| variant | method | accuracy before | accuracy after | Δ accuracy (mean over seeds) | paired p (Holm) | "
        "reward before | reward after | answers changed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    v, m, f = (np.asarray(table[k]) for k in ("variant", "method", "family"))
    tv, tm, tf = (np.asarray(tests.get(k, [])) for k in ("variant", "method", "family"))
    for name in dict.fromkeys(v.tolist()):
        for method in dict.fromkeys(m[v == name].tolist()):
            sel = (v == name) & (m == method) & (f == "all")
            acc = np.asarray(table["accuracy"], float)[sel]
            acc0 = np.asarray(table["accuracy_before"], float)[sel]
            r0 = np.asarray(table["reward_before"], float)[sel].mean()
            r1 = np.asarray(table["reward_after"], float)[sel].mean()
            ch = np.asarray(table["answers_changed"], float)[sel].mean()
            t = (tv == name) & (tm == method) & (tf == "all")
            p = f"{np.asarray(tests['p_holm'])[t][0]:.2g}" if t.any() else ""
            lines.append(
                f"| {name} | {method} | {acc0.mean():.3f} | {acc.mean():.3f} ({acc.min():.3f}-{acc.max():.3f}) "
                f"| {(acc - acc0).mean():+.3f} | {p} | {r0:.3f} | {r1:.3f} | {ch:.3f} |"
            )
    lines += [
        "",
        "## Grounding (mean over seeds)",
        "",
        "| variant | perturbation | accuracy | answer grounding | caption grounding | image-dependent share | r(grounding, correct) | r(confidence, correct) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gv, gp = np.asarray(ground.get("variant", [])), np.asarray(ground.get("perturbation", []))
    for name in dict.fromkeys(gv.tolist()):
        for pert in dict.fromkeys(gp[gv == name].tolist()):
            sel = (gv == name) & (gp == pert)
            g = {
                k: np.nanmean(np.asarray(ground[k], float)[sel])
                if np.any(np.isfinite(np.asarray(ground[k], float)[sel]))
                else np.nan
                for k in (
                    "accuracy",
                    "answer_grounding",
                    "caption_grounding",
                    "image_dependent_share",
                    "r_grounding_correct",
                    "r_confidence_correct",
                )
            }
            lines.append(
                f"| {name} | {pert} | {g['accuracy']:.3f} | {g['answer_grounding']:.2f} | "
                f"{g['caption_grounding']:.2f} | {g['image_dependent_share']:.2f} | "
                f"{g['r_grounding_correct']:.2f} | {g['r_confidence_correct']:.2f} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- findings


GAIN_EXCLUDED = 0.01  # refuted when a gain of this much accuracy is excluded
DMLR = "es_entropy_best"  # the paper's full method (REINFORCE on its reward, best-patch injection)


def optimisation_finding(table, tests=None) -> Finding:
    """Finding 5 from the study's ``optimiser.csv`` (and ``optimiser_tests.csv`` for the
    Holm-corrected p-values shown beside): per variant and method, the change in accuracy over all
    families (after − before), a 95% interval over seeds; the verdict rests on the paper's full
    method (:data:`DMLR`)."""
    f = Finding(
        "5",
        "Confidence-driven latent optimisation (DMLR)",
        "Optimising the latents at inference to make the model more confident (REINFORCE on the top-k-entropy "
        "reward with best-patch injection) improves its accuracy.",
        "arXiv 2512.12623 (DMLR)",
        f"Per variant, the change in accuracy over all families (after − before), a 95% interval over seeds "
        f"(at least {F.MIN_SEEDS}): improves (reproduced) when the interval lies above 0, does not (refuted) "
        f"when it lies below +{GAIN_EXCLUDED:g} (a gain of {GAIN_EXCLUDED:g} or more is excluded), open "
        f"otherwise. The verdict is the paper's full method's ({DMLR}), refuted when one variant refutes it, "
        f"reproduced when every variant reproduces it; the other methods are listed with the same rule. The "
        f"paired p-value over instances (Holm) is the study's.",
        study=STUDY,
    )
    fam, method, variant = F.strings(table, "family"), F.strings(table, "method"), F.strings(table, "variant")
    sel_all = fam == "all"
    if not sel_all.any():
        return F.missing(f, "no family='all' rows in optimiser.csv")
    p_holm = {}
    if tests:
        tf, tm = F.strings(tests, "family"), F.strings(tests, "method")
        tv, tp = F.strings(tests, "variant"), F.numbers(tests, "p_holm")
        p_holm = {(tv[i], tm[i]): tp[i] for i in np.flatnonzero(tf == "all")}
    rows, full = [], []
    for name in dict.fromkeys(variant[sel_all].tolist()):
        for m in dict.fromkeys(method[sel_all & (variant == name)].tolist()):
            if m == "before":
                continue
            sel = sel_all & (variant == name) & (method == m)
            change = F.per_seed(table, sel, "accuracy") - F.per_seed(table, sel, "accuracy_before")
            mean, low, high, n = F.seed_interval(change, F.difference_bounds(F.RATE))
            if n < F.MIN_SEEDS or not np.isfinite(low):
                v = "open"
            else:
                v = "reproduced" if low > 0 else "refuted" if high < GAIN_EXCLUDED else "open"
            if m == "random":
                v = "control"
            elif m == DMLR:
                full.append(v)
            before, after = (np.nanmean(F.numbers(table, k)[sel]) for k in ("accuracy_before", "accuracy"))
            rows.append(
                [
                    name,
                    m,
                    f"{F.number(before)} → {F.number(after)}",
                    F.interval(mean, low, high),
                    F.number(p_holm.get((name, m), float("nan")), 3),
                    str(n),
                    v,
                ]
            )
    return dataclasses.replace(
        f,
        header=(
            "variant",
            "method",
            "accuracy before → after",
            "change [95% over seeds]",
            "paired p (Holm)",
            "seeds",
            "verdict",
        ),
        rows=rows,
        verdict=F.aggregate(full) if full else "open",
        basis="; ".join(f"{r[0]} {r[3]}" for r in rows if r[1] == DMLR) or f"no {DMLR} rows in optimiser.csv",
    )


def findings(out: str) -> list[Finding]:
    """Finding 5 (:func:`optimisation_finding`) from ``optimiser.csv`` and ``optimiser_tests.csv`` of
    the study directory ``out``; open when the tests' table is there but fails its verification
    (the p-values beside the verdict would come from an unverified table)."""
    tests, tests_why = F.read(out, "optimiser_tests.csv", STUDY)
    table, why = F.read(out, "optimiser.csv", STUDY)
    if table is not None and tests is None and os.path.exists(os.path.join(out, "optimiser_tests.csv")):
        table, why = None, tests_why
    if table is None:
        return [F.missing(optimisation_finding({}), why)]
    return F.gate([optimisation_finding(table, tests)], out, table)


# ---------------------------------------------------------------------------------------------- the study


def _needed(cfg: Config) -> list:
    return list(cfg.variants) + list(cfg.grounding_variants)


def run(session, cfg: Config) -> runner.Result:
    """Train what the source lacks, then the optimiser's runs and every variant's grounding (each
    kept as it finishes): ``optimiser.csv``, ``optimiser_tests.csv``, ``rewards.csv``,
    ``grounding.csv``."""
    lr = reasoners.ensure_trained(
        session.context["reasoning"], cfg.source, _needed(cfg), train=cfg.train, quiet=session.quiet
    )
    data = reasoners.splits(lr)
    test = jax.tree_util.tree_map(lambda a: a[: cfg.n_instances], data.test)
    families = lr.training.task.families
    results = {}
    for name in cfg.variants:
        model, params, _ = reasoners.load_variant(lr, cfg.source, name)
        session.say(
            f"optimising the latents of {name} ({cfg.n_instances} instances x seeds x {len(cfg.methods)} methods)"
        )
        results[name] = run_optimiser(cfg, name, model, params, test, study=session.study)
    table, tests, curves = optimiser_tables(cfg, results, test, families)
    rows, hists = [], {}
    for name in cfg.grounding_variants:
        r, h = grounding_part(session.study, cfg, lr, name, test, families)
        rows += r
        hists[name] = h
    ground = io.to_columns(rows)
    tables = {"optimiser.csv": table, "optimiser_tests.csv": tests, "rewards.csv": curves, "grounding.csv": ground}
    return runner.Result(
        tables,
        data=dict(table=table, tests=tests, curves=curves, ground=ground, hists=hists),
        record={"reasoning": study_dir.config_dict(lr)},
    )


SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    prepare=reasoners.source_prepare(_needed),
    figures=lambda session, cfg, r: [
        plot_optimiser(session.out, r.data["curves"], r.data["table"]),
        plot_grounding(session.out, r.data["hists"]),
    ],
    summary=lambda cfg, r: summary(r.data["table"], r.data["tests"], r.data["ground"]),
    findings=findings,
    outputs=("optimiser.csv", "optimiser_tests.csv", "rewards.csv", "grounding.csv"),
    figure_files=("optimiser.png", "grounding.png"),
    selection=SELECTION,
    **reasoners.SOURCE_SPEC,
)


main = runner.entry(SPEC, __name__, returns="True when it finished.", about="Its source is checked first.")
