"""The latent-reasoning study: every training variant x seeds on the four task families.

``tokdyn study latent-reasoning --out DIR`` trains (or resumes) every variant and writes

- ``DIR/config.json``          the training :class:`tokdyn.latent.training.Config`, the
                               :class:`~tokdyn.latent.training.Hparams`, the variants, the environment
- ``DIR/checkpoints/V.npz``    the training state of variant V (all seeds), saved after every
                               ``steps_per_call`` steps; a rerun resumes from it
- ``DIR/curves/V.csv``         learning curve of V: one row per (step, seed), every logged loss
- ``DIR/results/V.json``       V's test accuracy per family and seed (and any non-finite step),
                               written when V finishes
- ``DIR/accuracy.csv``         one row per (variant, family, seed): accuracy, plus the majority-answer
                               baseline ("chance") of that family
- ``DIR/summary.md``           mean (min-max over seeds) accuracy per variant and family
- ``DIR/learning_curves.png``  training answer accuracy per variant (mean over seeds)

``max_minutes`` stops the run cleanly (finished work is on disk); run the same command again to
continue: finished variants are skipped, unfinished ones continue from their checkpoint. An
``--out`` holding a study of another configuration is refused. ``--no-train`` only collects and
reports what is on disk.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional, Sequence

import jax
import numpy as np

from tokdyn import _checks, io, report
from tokdyn.latent import evaluation, tasks
from tokdyn.latent import training as T
from tokdyn.latent.variants import VARIANTS, variant


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study (``training`` and ``hparams`` are saved as ``config.json``).

    Attributes:
      variants: training variants to run, in order, names from tokdyn.latent.variants.VARIANTS.
      train: train (or resume) the variants; with --no-train only collect and report what is on disk.
      max_minutes: stop cleanly after this many minutes (finished work is kept; rerun to resume);
        empty: no limit.
      devices: local devices the seeds are split over (0: all of them, at most one per seed). How
        the seeds are split changes the last bits of every result; 1 (all seeds vmapped on one
        device) gives the published figures bit for bit.
      training: the static training configuration (model size, steps, pools, seeds).
      hparams: the hyper-parameters every variant is trained with.
    """

    variants: tuple = tuple(VARIANTS)
    train: bool = True
    max_minutes: Optional[float] = None
    devices: int = 1
    training: T.Config = T.Config()
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
        self.training.validate()
        self.hparams.validate()
        if self.hparams.settings() != 1:
            raise ValueError("hparams must hold one setting (scalars) in the study")
        return self

    @classmethod
    def quick(cls) -> "Config":
        """A few-minute version: a 4 x 4 grid, a small model, 300 steps, 2 seeds."""
        return cls(training=T.Config(task=tasks.Config(grid_size=4, n_colours=4), width=32, depth=2, heads=2,
                                     n_latents=2, steps=300, batch_size=32, warmup=30, steps_per_call=50,
                                     n_train=5000, n_test=200, seeds=2))


def _paths(out: str, name: str) -> dict:
    return {"result": os.path.join(out, "results", f"{name}.json"),
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


def run_variant(cfg: Config, name: str, out: str, pool, test, *, deadline=None, progress=None) -> bool:
    """Train (or resume) and evaluate one variant; True when its results are on disk."""
    p = _paths(out, name)
    if os.path.exists(p["result"]):
        return True
    tc = cfg.training
    rows = {k: list(v) for k, v in _curve(p["curve"]).items()}
    t0 = time.time()

    def on_log(step, logs):
        keep = [i for i, s in enumerate(rows.get("step", [])) if s < step]  # drop rows a resume redoes
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        for s in range(tc.seeds):
            for k, v in [("step", step), ("seed", s)] + [(k, float(v[s])) for k, v in sorted(logs.items())]:
                rows.setdefault(k, []).append(v)
        io.write_csv(p["curve"], rows)

    state, done = T.train_many(tc, name, pool, cfg.hparams, checkpoint=p["checkpoint"], deadline=deadline,
                               on_log=on_log, progress=progress, devices=_devices(cfg))
    if not done:
        return False
    acc = evaluation.evaluate(tc, name, state.params, test)
    io.write_json(p["result"], {"variant": name, "step": tc.steps, "accuracy": acc,
                                "nan_step": np.asarray(state.nan_step),
                                "train_seconds_this_session": time.time() - t0})
    return True


def collect(out: str, names: Sequence[str], chance: dict) -> dict:
    """``accuracy.csv``: one row per (variant, family, seed) of every finished variant."""
    cols = {k: [] for k in ("variant", "family", "seed", "accuracy", "chance")}
    for name in names:
        path = _paths(out, name)["result"]
        if not os.path.exists(path):
            continue
        acc = io.read_json(path)["accuracy"]
        for fam in list(tasks.FAMILIES) + ["all"]:
            for s, a in enumerate(acc.get(fam, [])):
                cols["variant"].append(name)
                cols["family"].append(fam)
                cols["seed"].append(s)
                cols["accuracy"].append(float(a))
                cols["chance"].append(chance.get(fam, float(np.mean(list(chance.values())))))
    io.write_csv(os.path.join(out, "accuracy.csv"), cols)
    return cols


def summary_table(cols: dict) -> str:
    """Mean (min-max over seeds) accuracy per variant and family, as Markdown."""
    fams = list(tasks.FAMILIES) + ["all"]
    v = np.asarray(cols["variant"])
    f = np.asarray(cols["family"])
    a = np.asarray(cols["accuracy"], float)
    ch = np.asarray(cols["chance"], float)
    lines = ["| variant | " + " | ".join(fams) + " |", "|---" * (len(fams) + 1) + "|"]
    chance_row = ["chance (majority)"] + [f"{ch[f == fam][0]:.3f}" if np.any(f == fam) else "" for fam in fams]
    for name in dict.fromkeys(v.tolist()):
        cells = []
        for fam in fams:
            x = a[(v == name) & (f == fam)]
            cells.append(f"{x.mean():.3f} ({x.min():.2f}-{x.max():.2f})" if len(x) else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(chance_row) + " |")
    return "\n".join(lines)


def plot_curves(out: str, names: Sequence[str]) -> Optional[str]:
    """``learning_curves.png``: training answer accuracy (mean over seeds) per variant."""
    series = {}
    for name in names:
        c = _curve(_paths(out, name)["curve"])
        if not c:
            continue
        steps = np.unique(c["step"])
        series[name] = (steps, [float(np.mean(c["answer_acc"][c["step"] == s])) for s in steps])
    if not series:
        return None
    fig = report.figure((7, 4.5))
    ax = fig.subplots()
    for name, (x, ys) in series.items():
        ax.plot(x, ys, label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training answer accuracy (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return report.save(fig, os.path.join(out, "learning_curves.png"), dpi=120)


def _check_out(cfg: Config, out: str) -> dict:
    """The configuration to record; ``io.OutputConflict`` if ``out`` holds a study of another one."""
    conf = {"training": dataclasses.asdict(cfg.training), "hparams": dataclasses.asdict(cfg.hparams)}
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
    pool, test = T.data(tc)
    chance = evaluation.majority_baseline(pool, test)
    chance["all"] = float(np.mean([chance[f] for f in tasks.FAMILIES]))
    done = True
    recorded = sum(_steps_recorded(out, name, tc.steps) for name in cfg.variants)
    with io.Progress(len(cfg.variants) * tc.steps, desc="latent-reasoning", unit="steps", done=recorded,
                     quiet=quiet or not cfg.train) as progress:
        for name in cfg.variants:
            if not cfg.train:
                done = done and os.path.exists(_paths(out, name)["result"])
                continue
            progress.note(f"variant {name}")
            done = run_variant(cfg, name, out, pool, test, deadline=deadline, progress=progress) and done
            if not done:
                break
    cols = collect(out, cfg.variants, chance)
    if plots:
        plot_curves(out, cfg.variants)
    table = summary_table(cols)
    with io.atomic_write(os.path.join(out, "summary.md")) as f:
        f.write(table + "\n")
    if not quiet:
        print(table)
        if not done:
            print(f"not finished: run the same command again to resume ({out})")
    return done
