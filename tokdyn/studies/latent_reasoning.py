"""The latent-reasoning study: every training variant x seeds, trained to convergence, on the task
families; per-family accuracy against chance and the question-only optimum, paired tests.

``tokdyn study latent-reasoning --out DIR`` trains (or resumes) every variant. Each trains until
its held-out accuracy has flattened (the validation set's overall accuracy moved by less than
``tolerance`` over the last ``window`` of the steps, for every seed) or its step budget is spent
(``training.steps``; ``reference_steps`` for ``direct`` and ``text``, the references every variant is
tested against, so that they can converge), and writes

- ``config.json``         the study's configuration, the environment
- ``checkpoints/V.npz``   the training state of variant V (all seeds), after every
                          ``steps_per_call`` steps; a rerun resumes from it
- ``curves/V.csv``        one row per (step, seed): the training losses and the held-out accuracy
                          per family (``val_<family>``, ``val_all``)
- ``results/V.json``      V's test accuracy per family and seed, steps run, convergence, NaNs
- ``results/V.npz``       V's test answers, per seed and instance (for the paired tests)
- ``accuracy.csv``        one row per (variant, family, seed): accuracy, the family's majority
                          answer rate (``chance``), the exact question-only optimum
                          (``question_only``), the accuracy of the optimal question-only rule
                          on this test set (``question_only_test``), converged
- ``convergence.csv``     one row per (variant, seed): steps run, the last window's change,
                          converged, the budget
- ``tests.csv``           paired t-tests (per-instance answers on the same test set, mean over
                          seeds) of every variant against ``direct`` and against ``text``, per
                          family, Holm-corrected across the table; pairs with a variant that did
                          not converge are reported, not tested
- ``summary.md``          mean (min-max over seeds) accuracy per variant and family, convergence
- ``learning_curves.png`` held-out accuracy per family over steps, every variant, seeds thin

``max_minutes`` stops the run cleanly (finished work is on disk); the same command continues it
(finished variants are skipped, unfinished ones resume from their checkpoint) and ends with the
results of an uninterrupted run. An ``--out`` holding a study of another configuration is refused.
``--no-train`` only collects and reports what is on disk.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional, Sequence

import jax
import numpy as np

from tokdyn import _checks, io, report, stats
from tokdyn.latent import evaluation, tasks
from tokdyn.latent import model as M
from tokdyn.latent import training as T
from tokdyn.latent import variants as V
from tokdyn.latent.variants import VARIANTS, stages, variant

REFERENCES = ("direct", "text")  # every variant is tested against these
FAMILIES = ("read", "gravity", "path")  # the default families: the control and two that imagination helps


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study (saved as ``config.json``).

    Attributes:
      variants: training variants to run, in order, names from tokdyn.latent.variants.VARIANTS.
      train: train (or resume) the variants; with --no-train only collect and report what is on disk.
      max_minutes: stop cleanly after this many minutes (finished work is kept; rerun to resume);
        empty: no limit.
      devices: local devices the seeds are split over (0: all of them, at most one per seed). How
        the seeds are split changes the last bits of every result.
      tolerance: a variant has converged when its held-out accuracy moved by less than this over
        the last window of its steps (for every seed).
      window: the last fraction of the steps the convergence criterion looks at.
      reference_steps: the step budget of the reference variants (direct, text), against which
        every variant is tested; 0: the same budget as every other variant (steps).
      training: the static training configuration (tasks, model size, step budget, pools, seeds).
      hparams: the hyper-parameters every variant is trained with.
    """

    variants: tuple = tuple(VARIANTS)
    train: bool = True
    max_minutes: Optional[float] = None
    devices: int = 1
    tolerance: float = 0.01
    window: float = 0.2
    reference_steps: int = 5000
    training: T.Config = T.Config(task=tasks.Config(grid_size=4, n_colours=4, families=FAMILIES), n_latents=2)
    hparams: T.Hparams = T.Hparams()

    def validate(self) -> "Config":
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(f"variants must name at least one of {sorted(VARIANTS)}, got {self.variants!r}")
        for name in self.variants:
            variant(name)
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must not repeat a name, got {self.variants!r}")
        if not isinstance(self.train, bool):
            raise TypeError(f"train must be a bool, got {self.train!r}")
        if self.max_minutes is not None:
            _checks.real("max_minutes", self.max_minutes, low=0.0, low_open=True)
        _checks.positive_int("devices", self.devices, minimum=0)
        _checks.real("tolerance", self.tolerance, low=0.0, low_open=True)
        _checks.real("window", self.window, low=0.0, high=1.0, low_open=True)
        self.training.validate()
        _checks.positive_int("reference_steps", self.reference_steps, minimum=0)
        if self.reference_steps % self.training.steps_per_call:
            raise ValueError(f"reference_steps must be a multiple of steps_per_call={self.training.steps_per_call}, "
                             f"got {self.reference_steps}")
        self.hparams.validate()
        if self.hparams.settings() != 1:
            raise ValueError("hparams must hold one setting (scalars) in the study")
        if self.training.n_val < 1:
            raise ValueError("training.n_val must be >= 1: convergence is judged on the validation set")
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version: a small model, a 600-step budget, 2 seeds."""
        return cls(reference_steps=0,
                   training=T.Config(task=tasks.Config(grid_size=4, n_colours=4, families=FAMILIES), width=32,
                                     depth=2, heads=2, n_latents=2, steps=600, batch_size=32, warmup=50, steps_per_call=50,
                                     n_train=5000, n_val=250, n_test=500, seeds=2),
                   hparams=T.Hparams(learning_rate=3e-3))


# ---------------------------------------------------------------------------------------------- one variant


def _paths(out: str, name: str) -> dict:
    return {"result": os.path.join(out, "results", f"{name}.json"),
            "answers": os.path.join(out, "results", f"{name}.npz"),
            "checkpoint": os.path.join(out, "checkpoints", f"{name}.npz"),
            "curve": os.path.join(out, "curves", f"{name}.csv")}


def _curve(path: str) -> dict:
    return io.read_csv(path) if os.path.exists(path) else {}


def _steps_recorded(out: str, name: str, steps: int) -> int:
    """Steps of ``name`` already done, as far as the files on disk tell (for the progress bar)."""
    p = _paths(out, name)
    if os.path.exists(p["result"]):
        return steps
    c = _curve(p["curve"])
    return int(np.max(c["step"])) if len(c.get("step", [])) else 0


def _devices(cfg: Config):
    devices = jax.local_devices()
    if cfg.devices > len(devices):
        raise ValueError(f"devices must be at most the {len(devices)} local devices, got {cfg.devices}")
    return devices[:cfg.devices] if cfg.devices else None


def training(cfg: Config, name: str) -> T.Config:
    """The training configuration of variant ``name``: ``cfg.training``, with the budget
    ``reference_steps`` for the :data:`REFERENCES` (when it is not 0)."""
    if name in REFERENCES and cfg.reference_steps:
        return dataclasses.replace(cfg.training, steps=cfg.reference_steps)
    return cfg.training


def convergence(cfg: Config, name: str, curve: dict) -> dict:
    """Per seed: the change of the held-out overall accuracy over the last ``window`` of the steps
    (:func:`tokdyn.latent.evaluation.plateau_change`) and whether it is below ``tolerance``. For a
    curriculum variant the window must lie in its last stage."""
    tc = training(cfg, name)
    last_stage = sum(n for *_, n in stages(tc, name)[:-1])
    seeds = np.asarray(curve.get("seed", []), int)
    out = {"change": np.full(tc.seeds, np.nan), "converged": np.zeros(tc.seeds, bool), "steps": 0}
    for s in range(tc.seeds):
        sel = seeds == s
        steps, val = np.asarray(curve["step"])[sel], np.asarray(curve["val_all"])[sel]
        if steps.size == 0:
            continue
        out["steps"] = int(steps[-1])
        change = evaluation.plateau_change(steps, val, cfg.window)
        in_stage = (1.0 - cfg.window) * steps[-1] >= last_stage
        out["change"][s] = change
        out["converged"][s] = bool(in_stage and np.isfinite(change) and abs(change) < cfg.tolerance)
    return out


def run_variant(cfg: Config, name: str, out: str, data: tasks.Splits, *, deadline=None, progress=None) -> bool:
    """Train (or resume) variant ``name`` until it has converged or spent its budget, then test it;
    True when its results are on disk."""
    p = _paths(out, name)
    if os.path.exists(p["result"]):
        return True
    tc = training(cfg, name)
    rows = {k: [int(x) if k in ("step", "seed") else float(x) for x in v] for k, v in _curve(p["curve"]).items()}
    pending = {}
    t0 = time.time()

    def on_log(step, logs):
        pending.update(step=step, logs=logs)

    def stop(step, state) -> bool:
        keep = [i for i, s in enumerate(rows.get("step", [])) if s < step]  # drop rows a resume redoes
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        val = evaluation.evaluate(tc, name, state.params, data.val)
        for s in range(tc.seeds):
            cols = [("step", step), ("seed", s)] + [(k, float(v[s])) for k, v in sorted(pending["logs"].items())]
            cols += [(f"val_{k}", float(v[s])) for k, v in val.items()]
            for k, v in cols:
                rows.setdefault(k, []).append(v)
        io.write_csv(p["curve"], rows)
        return bool(np.all(convergence(cfg, name, rows)["converged"]))

    state, done = T.train_many(tc, name, data.train, cfg.hparams, checkpoint=p["checkpoint"], deadline=deadline,
                               on_log=on_log, stop=stop, progress=progress, devices=_devices(cfg))
    if not done:
        return False
    answers, captions = evaluation.answers(tc, name, state.params, data.test)
    acc = evaluation.accuracy(tc, name, answers, captions, data.test)
    conv = convergence(cfg, name, rows)
    with io.atomic_write(p["answers"], "wb") as f:
        np.savez(f, answers=answers)
    io.write_json(p["result"], {"variant": name, "steps": conv["steps"], "budget": tc.steps, "accuracy": acc,
                                "change": conv["change"], "converged": conv["converged"],
                                "nan_step": np.asarray(state.nan_step),
                                "train_seconds_this_session": time.time() - t0})
    return True


# ---------------------------------------------------------------------------------------------- for other studies


def ensure_trained(cfg: Config, source: str, need: Sequence[str], *, train: bool = True, quiet: bool = False) -> Config:
    """Make sure the study directory ``source`` (of configuration ``cfg``) holds the trained
    variants ``need``, training the missing ones there when ``train`` (keeping the variants it
    already has); returns ``cfg``. Used by the studies that analyse trained reasoners."""
    need = list(dict.fromkeys(need))
    missing = [v for v in need if not os.path.exists(_paths(source, v)["result"])]
    if not missing:
        return cfg
    if not train:
        raise ValueError(f"source {source} lacks the trained variants {missing}: train them with "
                         f"`tokdyn study latent-reasoning --variants {','.join(missing)} --out {source}`")
    path = os.path.join(source, "config.json")
    recorded = io.read_json(path).get("variants", []) if os.path.exists(path) else []
    run = dataclasses.replace(cfg, variants=tuple(dict.fromkeys(list(recorded) + need)))  # keep what is there
    if not main(run, source, quiet=quiet, plots=False):
        raise RuntimeError(f"training the source variants in {source} did not finish")
    return cfg


def load_variant(cfg: Config, source: str, name: str):
    """(model, params stacked over seeds, training config) of the trained variant ``name`` in the
    study directory ``source``."""
    tc = training(cfg, name)
    state = T.load_checkpoint(_paths(source, name)["checkpoint"], T.init_states(tc, name, cfg.hparams), name)
    return M.Model(V.model_config(tc, name)), state.params, tc


def midway(cfg: Config, source: str, name: str) -> tuple[int, int]:
    """(step, curriculum stage) half-way through the training of ``name`` that ``source`` records
    (rounded down to ``steps_per_call``)."""
    tc = training(cfg, name)
    final = int(io.read_json(_paths(source, name)["result"])["steps"])
    step = max(final // 2 // tc.steps_per_call, 1) * tc.steps_per_call
    ends = np.cumsum([n for *_, n in stages(tc, name)])
    return step, int(np.searchsorted(ends, step, side="left"))


def load_midway(cfg: Config, source: str, name: str, *, quiet: bool = True, pool=None):
    """(model, params, step, curriculum stage) of variant ``name`` half-way through the training its final
    checkpoint records (rounded down to ``steps_per_call``): read from
    ``checkpoints/V@STEP.npz`` when there, otherwise trained there from scratch to that step. The
    training is deterministic on the same devices, so this is the state the full run passed
    through; a curriculum variant gets the model of the stage it was then in. ``pool``: the
    training set (``T.data(...).train``; drawn again when not given)."""
    tc = training(cfg, name)
    step, stage = midway(cfg, source, name)
    path = os.path.join(source, "checkpoints", f"{name}@{step}.npz")
    partial = os.path.join(source, "checkpoints", f"{name}@{step}.partial.npz")
    like = T.init_states(tc, name, cfg.hparams)
    if os.path.exists(path):
        state = T.load_checkpoint(path, like, name)
    else:
        done = int(np.asarray(T.load_checkpoint(partial, like, name).step)[0]) if os.path.exists(partial) else 0
        pool = T.data(tc).train if pool is None else pool
        state, _ = T.train_many(tc, name, pool, cfg.hparams, checkpoint=partial,
                                max_calls=(step - done) // tc.steps_per_call, quiet=quiet, devices=_devices(cfg))
        os.replace(partial, path)
    return M.Model(V.model_config(tc, name, stage)), jax.tree_util.tree_map(np.asarray, state.params), step, stage


# ---------------------------------------------------------------------------------------------- tables


BASELINES = ("chance", "question_only", "question_only_test")


def baselines(cfg: Config, data: tasks.Splits) -> dict:
    """Per baseline of :data:`BASELINES`, its accuracy per family and overall (the mean over the
    families): the majority answer of each family, the exact question-only optimum
    (:func:`tokdyn.latent.tasks.question_only_optimum`) and the optimal question-only rule's
    accuracy on the test set (the bar ``no_image`` is measured against, free of sampling noise)."""
    families = cfg.training.task.families
    rule = tasks.question_only_answers(cfg.training.task, data.test) == np.asarray(data.test.answer)
    fam = np.asarray(data.test.family)
    out = {"chance": evaluation.majority_baseline(data.train, data.test),
           "question_only": tasks.question_only_optimum(cfg.training.task),
           "question_only_test": {f: float(rule[fam == tasks.FAMILIES.index(f)].mean()) for f in families}}
    for d in out.values():
        d["all"] = float(np.mean([d[f] for f in families]))
    return out


def collect(out: str, names: Sequence[str], base: dict) -> tuple[dict, dict]:
    """``accuracy.csv`` (variant x family x seed, with the :func:`baselines`) and
    ``convergence.csv`` (variant x seed) of every finished variant; returns both tables."""
    acc_cols = {k: [] for k in ("variant", "family", "seed", "accuracy") + BASELINES + ("converged",)}
    conv_cols = {k: [] for k in ("variant", "seed", "steps", "budget", "change", "converged")}
    for name in names:
        path = _paths(out, name)["result"]
        if not os.path.exists(path):
            continue
        res = io.read_json(path)
        converged = [bool(c) for c in res["converged"]]
        for s, c in enumerate(converged):
            for k, v in (("variant", name), ("seed", s), ("steps", res["steps"]), ("budget", res["budget"]),
                         ("change", float(res["change"][s])), ("converged", c)):
                conv_cols[k].append(v)
        for fam in [f for f in res["accuracy"] if f != "caption_exact"]:
            for s, a in enumerate(res["accuracy"][fam]):
                for k, v in (("variant", name), ("family", fam), ("seed", s), ("accuracy", float(a)),
                             *((b, base[b][fam]) for b in BASELINES), ("converged", converged[s])):
                    acc_cols[k].append(v)
    io.write_csv(os.path.join(out, "accuracy.csv"), acc_cols)
    io.write_csv(os.path.join(out, "convergence.csv"), conv_cols)
    return acc_cols, conv_cols


def paired_tests(out: str, names: Sequence[str], test: tasks.Instance, families: Sequence[str]) -> dict:
    """``tests.csv``: every finished variant against each reference in :data:`REFERENCES`, per
    family and overall: a paired t-test over the test instances of the per-instance accuracy
    (the mean over seeds of answering right), Cohen's d_z, Holm-corrected over every test of the
    table. A pair in which a variant did not converge (every seed) is listed with NaN statistics:
    it is not compared as if it had."""
    correct, converged = {}, {}
    answer = np.asarray(test.answer)
    for name in names:
        p = _paths(out, name)
        if os.path.exists(p["result"]) and os.path.exists(p["answers"]):
            with np.load(p["answers"]) as z:
                correct[name] = (z["answers"] == answer[None]).mean(0)  # (N,) mean over seeds
            converged[name] = bool(np.all(io.read_json(p["result"])["converged"]))
    fam = np.asarray(test.family)
    cols = {k: [] for k in ("variant", "against", "family", "n", "mean_diff", "t", "p", "p_holm", "d", "tested")}
    for ref in REFERENCES:
        if ref not in correct:
            continue
        for name in correct:
            if name == ref:
                continue
            tested = converged[name] and converged[ref]
            for f in list(families) + ["all"]:
                sel = np.ones(fam.shape, bool) if f == "all" else fam == tasks.FAMILIES.index(f)
                a, b = correct[name][sel], correct[ref][sel]
                t = stats.paired_ttest(a, b) if tested else None
                for k, v in (("variant", name), ("against", ref), ("family", f), ("n", int(sel.sum())),
                             ("mean_diff", float(np.mean(a - b))), ("t", float(t.statistic) if t else np.nan),
                             ("p", float(t.pvalue) if t else np.nan),
                             ("d", float(stats.cohens_d(a, b)) if t else np.nan), ("tested", tested)):
                    cols[k].append(v)
    cols["p_holm"] = list(stats.holm(np.asarray(cols["p"], float))) if cols["p"] else []
    io.write_csv(os.path.join(out, "tests.csv"), cols)
    return cols


def summary_table(acc: dict, conv: dict, families: Sequence[str]) -> str:
    """Mean (min-max over seeds) accuracy per variant and family, with the seeds that converged, as
    Markdown; the baselines below (majority answer, question-only optimum and its rule on this
    test set)."""
    fams = list(families) + ["all"]
    v, f = np.asarray(acc["variant"]), np.asarray(acc["family"])
    a = np.asarray(acc["accuracy"], float)
    lines = ["| variant | " + " | ".join(fams) + " | converged seeds | steps |", "|---" * (len(fams) + 3) + "|"]
    for name in dict.fromkeys(v.tolist()):
        cells = []
        for fam in fams:
            x = a[(v == name) & (f == fam)]
            cells.append(f"{x.mean():.3f} ({x.min():.2f}-{x.max():.2f})" if len(x) else "")
        c = np.asarray(conv["converged"])[np.asarray(conv["variant"]) == name]
        steps = np.asarray(conv["steps"])[np.asarray(conv["variant"]) == name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {int(c.sum())}/{len(c)} | {int(steps[0])} |")
    for label, key in (("chance (majority answer)", "chance"), ("question-only optimum", "question_only"),
                       ("question-only rule on this test set", "question_only_test")):
        ref = np.asarray(acc[key], float)
        lines.append(f"| {label} | " + " | ".join(f"{ref[f == fam][0]:.3f}" if np.any(f == fam) else ""
                                                  for fam in fams) + " | | |")
    return "\n".join(lines)


def plot_curves(out: str, names: Sequence[str], families: Sequence[str]) -> Optional[str]:
    """``learning_curves.png``: held-out accuracy per family over steps, one colour per variant,
    every seed a thin line and their mean a thick one."""
    curves = {name: _curve(_paths(out, name)["curve"]) for name in names}
    curves = {k: c for k, c in curves.items() if c and "val_all" in c}
    if not curves:
        return None
    panels = list(families) + ["all"]
    fig = report.figure((3.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), sharey=True)
    for i, (name, c) in enumerate(curves.items()):
        seeds, steps = np.asarray(c["seed"], int), np.asarray(c["step"])
        for ax, fam in zip(axes, panels):
            y = np.asarray(c[f"val_{fam}"])
            for s in np.unique(seeds):
                ax.plot(steps[seeds == s], y[seeds == s], color=f"C{i % 10}", lw=0.6, alpha=0.5)
            grid = np.unique(steps)
            ax.plot(grid, [y[steps == t].mean() for t in grid], color=f"C{i % 10}", lw=1.8,
                    label=name if fam == panels[0] else None)
    for ax, fam in zip(axes, panels):
        ax.set_title(fam, fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy")
    fig.legend(loc="lower center", ncol=min(len(curves), 9), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.25, top=0.9, wspace=0.08)
    return report.save(fig, os.path.join(out, "learning_curves.png"), dpi=110)


# ---------------------------------------------------------------------------------------------- main


def _check_out(cfg: Config, out: str) -> dict:
    """The configuration to record; ``io.OutputConflict`` if ``out`` holds a study of another one."""
    conf = {k: dataclasses.asdict(cfg)[k] for k in ("tolerance", "window", "reference_steps", "training", "hparams")}
    path = os.path.join(out, "config.json")
    if os.path.exists(path):
        old = io.read_json(path)
        if {k: old.get(k) for k in conf} != io.jsonable(conf):
            raise io.OutputConflict(f"{out} holds a study with a different configuration; use another --out")
    elif not cfg.train:
        raise ValueError(f"{out} holds no study (no config.json): nothing to report without training")
    return conf


def main(cfg: Config, out: str, *, quiet: bool = False, plots: bool = True) -> bool:
    """Run the study (resumable); returns True when every variant is finished."""
    cfg.validate()
    conf = _check_out(cfg, out)
    tc = cfg.training
    if cfg.train:
        io.write_json(os.path.join(out, "config.json"),
                      {**conf, "variants": list(cfg.variants), "environment": io.environment()})
    deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
    data = T.data(tc)
    families = tc.task.families
    base = baselines(cfg, data)
    done = True
    budgets = {name: training(cfg, name).steps for name in cfg.variants}
    recorded = sum(_steps_recorded(out, name, budgets[name]) for name in cfg.variants)
    with io.Progress(sum(budgets.values()), desc="latent-reasoning", unit="steps", done=recorded,
                     quiet=quiet or not cfg.train) as progress:
        for name in cfg.variants:
            if not cfg.train:
                done = done and os.path.exists(_paths(out, name)["result"])
                continue
            progress.note(f"variant {name}")
            done = run_variant(cfg, name, out, data, deadline=deadline, progress=progress) and done
            if not done:
                break
    acc, conv = collect(out, cfg.variants, base)
    paired_tests(out, cfg.variants, data.test, families)
    if plots:
        plot_curves(out, cfg.variants, families)
    table = summary_table(acc, conv, families) if acc["variant"] else "(no variant has finished yet)"
    with io.atomic_write(os.path.join(out, "summary.md")) as f:
        f.write(table + "\n")
    if not quiet:
        print(table)
        if not done:
            print(f"not finished: run the same command again to resume ({out})")
    return done
