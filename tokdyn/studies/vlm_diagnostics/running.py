"""The vlm-diagnostics study as a straight pipeline: the checks and the stamp of the model and the instances
(:func:`check`, :func:`prepare`, :func:`stamp_extra`, before the directory is opened), then :func:`run`: the
instances encoded, each analysis of ``cfg.analyses`` run batch by batch, every batch kept as a part as it
finishes (a rerun computes only what is missing, and reads no weights when nothing is), the tables put
together."""

from __future__ import annotations

import numpy as np

from tokdyn import io
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.studies.vlm_diagnostics import checkpoint, instances
from tokdyn.studies.vlm_diagnostics.analyses import FUNCTIONS, Context
from tokdyn.studies.vlm_diagnostics.config import STUDY, Config


def check(session, cfg: Config) -> None:
    """The configuration's checks (:meth:`Config.validate`), then the checkpoint directory's files
    (:func:`~tokdyn.studies.vlm_diagnostics.checkpoint.check_directory`): a usage error
    (:class:`tokdyn.experiment.study.Refused`, exit 2) naming what is missing, before any work."""
    cfg.validate()
    if cfg.model:
        try:
            checkpoint.check_directory(cfg.model)
        except ValueError as e:
            raise study_dir.Refused(str(e)) from None


def prepare(session, cfg: Config) -> dict:
    """Read the JSONL instances (a bad line of ``--instances`` refused naming it) and the checkpoint's stamp
    (the SHA-256 of its weight files), on the host, before the directory is opened; a directory of this
    study made with other weights is refused naming the files that changed, unless ``--fresh``. Returns
    no source stamps."""
    try:
        if cfg.instances:  # a bad line refused before the directory is opened; scenes are rendered in run
            session.context["instances"] = instances.read_jsonl(cfg.instances, cfg.n_instances)
        stamp = session.context["model"] = checkpoint.model_stamp(cfg)
    except ValueError as e:
        raise study_dir.Refused(str(e)) from None
    if not session.fresh:
        try:
            old = study_dir.read_stamp(session.out)
        except (io.OutputConflict, OSError):
            old = None  # the runner's own checks name it
        before = ((old or {}).get("extra") or {}).get("model") if (old or {}).get("study") == STUDY else None
        if before is not None and before != stamp:
            raise io.OutputConflict(changed_message(session.out, before, stamp))
    return {}


def changed_message(out: str, before: dict, now: dict) -> str:
    """Why a directory made with the model ``before`` (its stamp) is refused to the model ``now``: the
    files whose SHA-256 differ, or the two models, and the ways out."""
    if before.get("directory") and now.get("directory"):
        old, new = before.get("sha256", {}), now.get("sha256", {})
        files = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        where = (
            before["directory"]
            if before["directory"] == now["directory"]
            else f"{before['directory']} -> {now['directory']}"
        )
        if files:
            what = f"the checkpoint changed ({where}; the SHA-256 of {', '.join(files)} differs)"
        else:
            what = f"the checkpoint's directory is another ({where}), its weights the same"
    else:
        name = lambda s: s.get("directory") or "the tiny random model"  # noqa: E731
        what = f"it holds results of {name(before)}, not of {name(now)}"
    return (
        f"out={out!r} holds a {STUDY} study of other weights: {what}. Choose another --out, or pass --fresh to "
        "remove those results and recompute"
    )


def stamp_extra(session, cfg: Config) -> dict:
    """The stamp's ``extra``: the model (:func:`~tokdyn.studies.vlm_diagnostics.checkpoint.model_stamp`:
    its directory and the SHA-256 of its weight files, or how the random model is built)."""
    return {"model": session.context["model"]}


def run(session, cfg: Config) -> runner.Result:
    """Every analysis of ``cfg.analyses`` over every batch of instances, each batch kept as a part
    (``<analysis>__<group>__<start>``); the tables ``instances.csv`` and ``<analysis>.csv``."""
    inst = session.context.get("instances") or instances.make_instances(cfg)
    loaded = checkpoint.open_checkpoint(cfg)
    groups = instances.encode(inst, loaded, cfg)
    ctx = Context(cfg, loaded, inst)
    bs = cfg.batch_size
    tables = {
        "instances.csv": io.to_columns(
            [
                dict(instance=i, question=q, answer=a, source=inst.source)
                for i, (q, a) in enumerate(zip(inst.questions, inst.answers))
            ]
        )
    }
    results = {}
    for name in cfg.analyses:
        rows = []
        session.say(f"{name} ...")
        with session.timed(name):
            if name == "perception":
                for start in range(0, len(inst), bs):
                    rows += session.rows(f"perception__{start:06d}", lambda s=start: FUNCTIONS[name](ctx, s))
            else:
                for g in groups:
                    for start in range(0, len(g.index), bs):
                        rows += session.rows(
                            f"{name}__{g.name}__{start:06d}", lambda g=g, s=start: FUNCTIONS[name](ctx, g, s)
                        )
        results[name] = rows
        keys = list(dict.fromkeys(c for r in rows for c in r))
        tables[f"{name}.csv"] = io.to_columns([{c: r.get(c, np.nan) for c in keys} for r in rows])
    return runner.Result(
        tables,
        data=dict(rows=results, random=loaded.random, n=len(inst), source=inst.source, groups=[g.name for g in groups]),
        record={"model": session.context["model"], "groups": [g.name for g in groups], "random_model": loaded.random},
    )


__all__ = ["changed_message", "check", "prepare", "run", "stamp_extra"]
