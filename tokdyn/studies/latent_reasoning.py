"""The latent-reasoning study: every training variant x seeds on the four task families.

``tokdyn study latent-reasoning --train --out DIR`` writes

- ``DIR/config.json``          the :class:`tokdyn.latent.train.TrainConfig`, variants, environment
- ``DIR/checkpoints/V.npz``    params + optimiser state of variant V (all seeds), saved after every
                               ``steps_per_call`` steps; a rerun resumes from them
- ``DIR/curves/V.csv``         learning curve of V: one row per (step, seed), every logged loss
- ``DIR/results/V.json``       V's test accuracy per family and seed, written when V finishes
- ``DIR/accuracy.csv``         one row per (variant, family, seed): accuracy, plus the majority-answer
                               baseline ("chance") of that family
- ``DIR/learning_curves.png``  training answer accuracy per variant (mean over seeds)

``max_minutes`` stops the run cleanly (finished work is on disk); run the same command again to
continue. A finished variant is skipped on resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

import numpy as np

from tokdyn import _checks, report
from tokdyn.latent import tasks
from tokdyn.latent import train as T


def _curve_rows(path: str) -> dict:
    return report.read_csv(path) if os.path.exists(path) else {}


def run_variant(cfg: T.TrainConfig, name: str, out: str, pool, test, *, deadline=None, quiet=False) -> bool:
    """Train (or resume) and evaluate one variant; True when its results are on disk."""
    res_path = os.path.join(out, "results", f"{name}.json")
    if os.path.exists(res_path):
        return True
    ckpt = os.path.join(out, "checkpoints", f"{name}.npz")
    curve_path = os.path.join(out, "curves", f"{name}.csv")
    old = _curve_rows(curve_path)
    rows = {k: list(v) for k, v in old.items()}
    t0 = time.time()

    def on_log(step, logs):
        keep = [i for i, s in enumerate(rows.get("step", [])) if s < step]  # drop rows a resume redoes
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        for s in range(cfg.seeds):
            for k, v in [("step", step), ("seed", s)] + [(k, float(v[s])) for k, v in sorted(logs.items())]:
                rows.setdefault(k, []).append(v)
        report.write_csv(curve_path, rows)
        if not quiet:
            acc = np.mean(logs["answer_acc"])
            print(f"  {name} step {step}: loss {np.mean(logs['loss']):.3f} train acc {acc:.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)

    state, done = T.train(cfg, name, pool, checkpoint=ckpt, deadline=deadline, on_log=on_log)
    if not done:
        return False
    acc = T.evaluate(cfg, name, state.params, test)
    report.write_json(res_path, {"variant": name, "step": state.step, "accuracy": acc,
                                 "train_seconds_this_session": time.time() - t0})
    return True


def collect(out: str, variants: Sequence[str], chance: dict) -> dict:
    cols = {k: [] for k in ("variant", "family", "seed", "accuracy", "chance")}
    for name in variants:
        path = os.path.join(out, "results", f"{name}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            acc = json.load(f)["accuracy"]
        for fam in list(tasks.FAMILIES) + ["all"]:
            for s, a in enumerate(acc.get(fam, [])):
                cols["variant"].append(name)
                cols["family"].append(fam)
                cols["seed"].append(s)
                cols["accuracy"].append(float(a))
                cols["chance"].append(chance.get(fam, float(np.mean(list(chance.values())))))
    report.write_csv(os.path.join(out, "accuracy.csv"), cols)
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


def plot_curves(out: str, variants: Sequence[str]) -> Optional[str]:
    series, x = {}, None
    for name in variants:
        c = _curve_rows(os.path.join(out, "curves", f"{name}.csv"))
        if not c:
            continue
        steps = np.unique(c["step"])
        series[name] = [float(np.mean(c["answer_acc"][c["step"] == s])) for s in steps]
        x = steps if x is None or len(steps) > len(x) else x
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, ys in series.items():
        ax.plot(x[: len(ys)], ys, label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training answer accuracy (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "learning_curves.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(cfg: T.TrainConfig, out: str, *, variants: Sequence[str] = tuple(T.VARIANTS), max_minutes=None,
         quiet: bool = False, plots: bool = True) -> bool:
    """Run the study (resumable). Returns True when every variant is finished."""
    cfg.validate()
    variants = tuple(variants)
    if not variants:
        raise ValueError("variants must name at least one of " + str(sorted(T.VARIANTS)))
    for v in variants:
        _checks.choice("variant", v, T.VARIANTS)
    if max_minutes is not None:
        _checks.real("max_minutes", max_minutes, low=0.0, low_open=True)
    deadline = None if max_minutes is None else time.time() + 60 * max_minutes
    conf_path = os.path.join(out, "config.json")
    conf = {"train": dataclasses.asdict(cfg), "variants": list(variants)}
    if os.path.exists(conf_path):
        with open(conf_path) as f:
            old = json.load(f)
        if old.get("train") != json.loads(json.dumps(report._jsonable(conf["train"]))):
            raise ValueError(f"{out} holds a study with a different configuration; use another --out")
    report.write_json(conf_path, {**conf, "environment": report.environment()})
    pool, test = T.data(cfg)
    chance = T.majority_baseline(pool, test)
    chance["all"] = float(np.mean([chance[f] for f in tasks.FAMILIES]))
    done = True
    for name in variants:
        if not quiet:
            print(f"variant {name}", flush=True)
        done = run_variant(cfg, name, out, pool, test, deadline=deadline, quiet=quiet) and done
        if not done:
            break
    cols = collect(out, variants, chance)
    if plots:
        plot_curves(out, variants)
    table = summary_table(cols)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    if not quiet:
        print(table)
        if not done:
            print(f"stopped at the time limit; run the same command again to resume ({out})")
    return done
