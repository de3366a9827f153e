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
from tokdyn.diagnostics import vlm_generated
from tokdyn.studies.vlm_diagnostics import checkpoint, generated, instances
from tokdyn.studies.vlm_diagnostics.analyses import FUNCTIONS, Context, similarity_rows
from tokdyn.studies.vlm_diagnostics.config import STUDY, Config


def check(session, cfg: Config) -> None:
    """The configuration's checks (:meth:`Config.validate`), then the checkpoint directory's family (the
    ``model_type`` of its ``config.json``, a key of :data:`tokdyn.models.families.FAMILIES`) and files
    (:func:`~tokdyn.studies.vlm_diagnostics.checkpoint.check_directory`) and what opening it by its family
    reads (its configuration, tokenizer, chat template and image processor, and the latent markers looked up
    in its tokenizer: :func:`~tokdyn.studies.vlm_diagnostics.checkpoint.open_checkpoint`, whose model and
    family are kept for :func:`prepare` and :func:`run`): a usage error
    (:class:`tokdyn.experiment.study.Refused`, exit 2) naming what is wrong, before any work."""
    cfg.validate()
    try:
        if cfg.model:
            checkpoint.check_directory(cfg.model)
        loaded = session.context["loaded"] = checkpoint.open_checkpoint(cfg)
    except ValueError as e:
        raise study_dir.Refused(str(e)) from None
    if cfg.latents == "generated" and not vlm_generated.supports(loaded.config):
        raise study_dir.Refused(
            "--latents generated needs latent-mode generation (the family's latent.LatentMode and its "
            f"interventions), which {loaded.family.__name__} does not have: use --latents block"
        )


def prepare(session, cfg: Config) -> dict:
    """Read the JSONL instances (a bad line of ``--instances`` refused naming it; the images read by the
    model's family, kept by :func:`check`) and the stamps of the checkpoint
    (:func:`~tokdyn.studies.vlm_diagnostics.checkpoint.model_stamp`: the SHA-256 of its weights, tokenizer,
    chat template, image processor and generation configuration) and of the instances
    (:func:`~tokdyn.studies.vlm_diagnostics.instances.stamp`: the SHA-256 of each file and of every image's
    bytes), on the host, before the directory is opened; a directory of this study made with other weights
    or other instances is refused naming what changed, unless ``--fresh``. Returns no source stamps."""
    try:
        inst = None
        if cfg.instances:  # a bad line refused before the directory is opened; scenes are rendered in run
            family = getattr(session.context.get("loaded"), "family", None)
            inst = session.context["instances"] = instances.read_files(cfg.instances, cfg.n_instances, family)
        stamp = {"model": checkpoint.model_stamp(cfg), "instances": instances.stamp(cfg, inst)}
    except ValueError as e:
        raise study_dir.Refused(str(e)) from None
    session.context["stamp"] = stamp
    if not session.fresh:
        try:
            old = study_dir.read_stamp(session.out)
        except (io.OutputConflict, OSError):
            old = None  # the runner's own checks name it
        before = ((old or {}).get("extra") or {}) if (old or {}).get("study") == STUDY else {}
        message = changed_message(session.out, before, stamp)
        if message:
            raise io.OutputConflict(message)
    return {}


def _model_change(before: dict, now: dict) -> str:
    if before.get("directory") and now.get("directory"):
        old, new = before.get("sha256", {}), now.get("sha256", {})
        files = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        where = (
            before["directory"]
            if before["directory"] == now["directory"]
            else f"{before['directory']} -> {now['directory']}"
        )
        if files:
            return f"the checkpoint changed ({where}; the SHA-256 of {', '.join(files)} differs)"
        return f"the checkpoint's directory is another ({where}), its weights the same"
    name = lambda s: s.get("directory") or "the tiny random model"  # noqa: E731
    return f"it holds results of {name(before)}, not of {name(now)}"


def _instances_change(before: dict, now: dict) -> str:
    if "files" not in before or "files" not in now:
        name = lambda s: ", ".join(s.get("files", {})) or "rendered scenes"  # noqa: E731
        return f"its instances are {name(before)}, not {name(now)}"
    old, new = before["files"], now["files"]
    files = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    a, b = before.get("images", []), now.get("images", [])
    images = [
        i + 1 for i in range(max(len(a), len(b))) if (a[i] if i < len(a) else None) != (b[i] if i < len(b) else None)
    ]
    parts = []
    if files:
        parts.append(f"the SHA-256 of {', '.join(files)} differs")
    if images:
        shown = ", ".join(map(str, images[:5])) + (" ..." if len(images) > 5 else "")
        parts.append(f"the image of instance {shown} is another (its bytes' SHA-256 differs)")
    return "its instances changed (" + "; ".join(parts) + ")"


def changed_message(out: str, before: dict, now: dict) -> str:
    """Why a directory whose stamp holds ``before`` (``{"model": ..., "instances": ...}``, the stamp's
    ``extra``) is refused to a run of ``now``: the checkpoint's files whose SHA-256 differ, or the two models;
    the instance files or images that changed; and the ways out. ``""`` when nothing differs (or the
    directory holds no such stamp)."""
    what = []
    if before.get("model") is not None and before["model"] != now["model"]:
        what.append(_model_change(before["model"], now["model"]))
    if before.get("instances") is not None and before["instances"] != now["instances"]:
        what.append(_instances_change(before["instances"], now["instances"]))
    if not what:
        return ""
    return (
        f"out={out!r} holds a {STUDY} study of other inputs: {'; '.join(what)}. Choose another --out, or pass "
        "--fresh to remove those results and recompute"
    )


def stamp_extra(session, cfg: Config) -> dict:
    """The stamp's ``extra``: the model (:func:`~tokdyn.studies.vlm_diagnostics.checkpoint.model_stamp`)
    and the instances (:func:`~tokdyn.studies.vlm_diagnostics.instances.stamp`)."""
    return session.context["stamp"]


def run(session, cfg: Config) -> runner.Result:
    """Every analysis of ``cfg.analyses`` over every batch of instances, each batch kept as a part
    (``<analysis>__<group>__<start>``); the tables ``instances.csv`` and ``<analysis>.csv``."""
    loaded = session.context.get("loaded") or checkpoint.open_checkpoint(cfg)
    inst = session.context.get("instances") or instances.make_instances(cfg, loaded.family)
    groups = instances.encode(inst, loaded, cfg)
    ctx = Context(cfg, loaded, inst)
    bs = cfg.batch_size
    tables = {
        "instances.csv": io.to_columns(
            [
                dict(
                    instance=i,
                    benchmark=inst.file_of(i),
                    question=q,
                    options=" | ".join(inst.options_of(i) or ()),
                    answer=a,
                    chance=inst.chance(i),
                )
                for i, (q, a) in enumerate(zip(inst.questions, inst.answers))
            ]
        )
    }
    results, matrices, skipped = {}, {}, {}
    table = dict(FUNCTIONS)
    if cfg.latents == "generated":
        table.update(generated.FUNCTIONS)
    for name in cfg.analyses:
        rows = []
        if cfg.latents == "generated" and name not in generated.FUNCTIONS and name not in ("grounding", "perception"):
            skipped[name] = SKIPPED[name]
            continue
        session.say(f"{name} ...")
        with session.timed(name):
            if name == "perception":
                for start in range(0, len(inst), bs):
                    rows += session.rows(f"perception__{start:06d}", lambda s=start: table[name](ctx, s))
            elif name == "similarity":
                parts = [
                    session.part(f"similarity__{g.name}__{start:06d}", lambda g=g, s=start: table[name](ctx, g, s))
                    for g in groups
                    for start in range(0, len(g.index), bs)
                ]
                index = np.concatenate([p["instance"] for p in parts])
                order = np.argsort(index)
                z = np.concatenate([p["latents"] for p in parts])[order]
                rows, matrices = similarity_rows(z, index[order])
            else:
                for g in groups:
                    for start in range(0, len(g.index), bs):
                        rows += session.rows(
                            f"{name}__{g.name}__{start:06d}", lambda g=g, s=start: table[name](ctx, g, s)
                        )
        results[name] = rows
        keys = list(dict.fromkeys(c for r in rows for c in r))
        tables[f"{name}.csv"] = io.to_columns([{c: r.get(c, _blank(rows, c)) for c in keys} for r in rows])
    record = {
        "model": session.context["stamp"]["model"],
        "groups": [g.name for g in groups],
        "random_model": loaded.random,
    }
    return runner.Result(
        tables,
        data=dict(
            rows=results,
            matrices=matrices,
            skipped=skipped,
            random=loaded.random,
            n=len(inst),
            source=inst.source,
            groups=[g.name for g in groups],
            chance=[inst.chance(i) for i in range(len(inst))],
            benchmarks=[inst.file_of(i) for i in range(len(inst))],
        ),
        record=record,
    )


SKIPPED = {
    "injection": "DMLR's visual injection inserts the image's tokens before the block, which the generation "
    "program cannot do while it generates; the optimisation analysis runs DMLR on the generated latents",
}
"""Analyses of the block mode with no counterpart on generated latents, and why (said in the summary)."""


def _blank(rows: list, column: str):
    """What a row without ``column`` holds there: NaN in a numeric column, "" in a text one."""
    kinds = {type(r[column]) for r in rows if column in r}
    return "" if str in kinds else np.nan


__all__ = ["SKIPPED", "changed_message", "check", "prepare", "run", "stamp_extra"]
