"""The store of trained latent reasoners: the latent-reasoning study's configuration, and a study
directory as the place where its variants are trained to convergence and read back.

A directory (``tokdyn study latent-reasoning --out DIR``, or one :func:`ensure_trained` fills for
the studies that analyse trained reasoners) holds, per variant V:

- ``checkpoints/V.npz``  the training state of V (all seeds), after every ``steps_per_call`` steps;
                         a rerun resumes from it
- ``curves/V.csv``       one row per (step, seed): the training losses and the held-out accuracy
                         per family (``val_<family>``, ``val_all``)
- ``results/V.json``     V's test accuracy per family and seed, steps run, convergence, NaNs
- ``results/V.npz``      V's test answers, per seed and instance

and ``config.json`` (the configuration that trained them; a directory of another configuration is
refused). :func:`train_variants` trains (or resumes) variants there, :func:`load_variant` and
:func:`load_midway` read a trained one back. The tables and figures of the study are in
:mod:`tokdyn.studies.latent_reasoning`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional, Sequence

import jax
import numpy as np

from tokdyn import _checks, io, train
from tokdyn.models.latent import evaluation, tasks
from tokdyn.models.latent import model as M
from tokdyn.models.latent import training as T
from tokdyn.models.latent import variants as V
from tokdyn.models.latent.variants import VARIANTS, stages, variant

REFERENCES = ("direct", "text")  # every variant is tested against these
FAMILIES = ("read", "gravity", "path")  # the default families: the control and two that imagination helps


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study (saved as ``config.json``).

    Attributes:
      variants: training variants to run, in order, names from tokdyn.models.latent.variants.VARIANTS.
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
        if train.settings(self.hparams) != 1:
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


def paths(out: str, name: str) -> dict:
    """The files of variant ``name`` in the study directory ``out``: ``result``, ``answers``,
    ``checkpoint``, ``curve``."""
    return {"result": os.path.join(out, "results", f"{name}.json"),
            "answers": os.path.join(out, "results", f"{name}.npz"),
            "checkpoint": os.path.join(out, "checkpoints", f"{name}.npz"),
            "curve": os.path.join(out, "curves", f"{name}.csv")}


def read_curve(path: str) -> dict:
    """The learning curve at ``path`` (columns; empty when there is none yet)."""
    return io.read_csv(path) if os.path.exists(path) else {}


def _steps_recorded(out: str, name: str, steps: int) -> int:
    """Steps of ``name`` already done, as far as the files on disk tell (for the progress bar)."""
    p = paths(out, name)
    if os.path.exists(p["result"]):
        return steps
    c = read_curve(p["curve"])
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
    (:func:`tokdyn.models.latent.evaluation.plateau_change`) and whether it is below ``tolerance``. For a
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
    p = paths(out, name)
    if os.path.exists(p["result"]):
        return True
    tc = training(cfg, name)
    rows = {k: [int(x) if k in ("step", "seed") else float(x) for x in v] for k, v in read_curve(p["curve"]).items()}
    t0 = time.time()

    def stop(step, state, curves) -> bool:
        logs = {k: v[:, step // tc.steps_per_call - 1] for k, v in curves.items()}  # this call's logs
        keep = [i for i, s in enumerate(rows.get("step", [])) if s < step]  # drop rows a resume redoes
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        val = evaluation.evaluate(tc, name, state.params, data.val)
        for s in range(tc.seeds):
            cols = [("step", step), ("seed", s)] + [(k, float(v[s])) for k, v in sorted(logs.items())]
            cols += [(f"val_{k}", float(v[s])) for k, v in val.items()]
            for k, v in cols:
                rows.setdefault(k, []).append(v)
        io.write_csv(p["curve"], rows)
        return bool(np.all(convergence(cfg, name, rows)["converged"]))

    res = train.train_many(T.trainer(tc, name), data.train, *T.models(tc, cfg.hparams), checkpoint=p["checkpoint"],
                           stamp=T.stamp(tc, name), deadline=deadline, stop=stop, progress=progress,
                           devices=_devices(cfg))
    if not res.finished:
        return False
    state = res.state
    answers, captions = evaluation.answers(tc, name, state.params, data.test)
    acc = evaluation.accuracy(tc, name, answers, captions, data.test)
    conv = convergence(cfg, name, rows)
    with io.atomic_write(p["answers"], "wb") as f:
        np.savez(f, answers=answers)
    io.write_json(p["result"], {"variant": name, "steps": conv["steps"], "budget": tc.steps, "accuracy": acc,
                                "change": conv["change"], "converged": conv["converged"],
                                "nan_step": np.asarray(state.nan_step), "skipped_steps": np.asarray(state.skipped),
                                "train_seconds_this_session": time.time() - t0})
    return True


# ---------------------------------------------------------------------------------------------- a study directory


def check_out(cfg: Config, out: str) -> dict:
    """The configuration to record in ``out``'s ``config.json``; ``io.OutputConflict`` if ``out``
    holds a study of another one."""
    conf = {k: dataclasses.asdict(cfg)[k] for k in ("tolerance", "window", "reference_steps", "training", "hparams")}
    path = os.path.join(out, "config.json")
    if os.path.exists(path):
        old = io.read_json(path)
        if {k: old.get(k) for k in conf} != io.jsonable(conf):
            raise io.OutputConflict(f"{out} holds a study with a different configuration; use another --out")
    return conf


def train_variants(cfg: Config, source: str, names: Sequence[str], *, quiet: bool, deadline=None,
                   data: Optional[tasks.Splits] = None) -> bool:
    """Train (or resume) the variants ``names``, in order, in the study directory ``source`` (of
    configuration ``cfg``; ``config.json`` records it with ``names``) until each has converged or
    spent its budget, with one progress bar over their steps unless ``quiet``; stops at
    ``deadline`` (a ``time.time()``; finished work is kept). ``data``: the training, validation and
    test sets (``T.data(cfg.training)``; drawn when not given). True when every variant is finished."""
    names = list(names)
    conf = check_out(dataclasses.replace(cfg, variants=tuple(names)).validate(), source)
    io.write_json(os.path.join(source, "config.json"), {**conf, "variants": names, "environment": io.environment()})
    data = T.data(cfg.training) if data is None else data
    done = True
    budgets = {name: training(cfg, name).steps for name in names}
    recorded = sum(_steps_recorded(source, name, budgets[name]) for name in names)
    with io.Progress(sum(budgets.values()), desc="latent-reasoning", unit="steps", done=recorded,
                     quiet=quiet) as progress:
        for name in names:
            progress.note(f"variant {name}")
            done = run_variant(cfg, name, source, data, deadline=deadline, progress=progress) and done
            if not done:
                break
    return done


def ensure_trained(cfg: Config, source: str, need: Sequence[str], *, train: bool = True, quiet: bool = False) -> Config:
    """Make sure the study directory ``source`` (of configuration ``cfg``) holds the trained
    variants ``need``, training the missing ones there when ``train`` (keeping the variants it
    already has); returns ``cfg``. Used by the studies that analyse trained reasoners."""
    need = list(dict.fromkeys(need))
    missing = [v for v in need if not os.path.exists(paths(source, v)["result"])]
    if not missing:
        return cfg
    if not train:
        raise ValueError(f"source {source} lacks the trained variants {missing}: train them with "
                         f"`tokdyn study latent-reasoning --variants {','.join(missing)} --out {source}`")
    path = os.path.join(source, "config.json")
    recorded = io.read_json(path).get("variants", []) if os.path.exists(path) else []
    names = list(dict.fromkeys(list(recorded) + need))  # keep what is there
    deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
    if not train_variants(cfg, source, names, quiet=quiet, deadline=deadline):
        raise RuntimeError(f"training the source variants in {source} did not finish")
    return cfg


def load_variant(cfg: Config, source: str, name: str):
    """(model, params stacked over seeds, training config) of the trained variant ``name`` in the
    study directory ``source``."""
    tc = training(cfg, name)
    state = T.load(paths(source, name)["checkpoint"], tc, name, cfg.hparams)
    return M.Model(V.model_config(tc, name)), state.params, tc


def midway(cfg: Config, source: str, name: str) -> tuple[int, int]:
    """(step, curriculum stage) half-way through the training of ``name`` that ``source`` records
    (rounded down to ``steps_per_call``)."""
    tc = training(cfg, name)
    final = int(io.read_json(paths(source, name)["result"])["steps"])
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
    if os.path.exists(path):
        state = T.load(path, tc, name, cfg.hparams)
    else:
        done = int(np.asarray(T.load(partial, tc, name, cfg.hparams).step)[0]) if os.path.exists(partial) else 0
        pool = T.data(tc).train if pool is None else pool
        state = train.train_many(T.trainer(tc, name), pool, *T.models(tc, cfg.hparams), checkpoint=partial,
                                 stamp=T.stamp(tc, name), max_calls=(step - done) // tc.steps_per_call, quiet=quiet,
                                 devices=_devices(cfg)).state
        os.replace(partial, path)
    return M.Model(V.model_config(tc, name, stage)), jax.tree_util.tree_map(np.asarray, state.params), step, stage
