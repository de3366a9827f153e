"""The vlm-diagnostics study as a straight pipeline: the checks and the stamp of the model and the instances
(:func:`check`, :func:`prepare`, :func:`stamp_extra`, before the directory is opened), then :func:`run`: the
instances encoded; the clean pass (every batch's clean run, kept as a part), from which the set's sources of
``swap`` and ``mean`` are made over every instance and the run is judged (no block written at all is refused,
a latent checkpoint run in block mode warned of); then each analysis of ``cfg.analyses`` batch by batch, every
batch kept as a part as it finishes (a rerun computes only what is missing, and reads no weights when nothing
is), the tables put together."""

from __future__ import annotations

import sys

import jax
import numpy as np

from tokdyn import io
from tokdyn.experiment import runner
from tokdyn.experiment import study as study_dir
from tokdyn.studies.vlm_diagnostics import checkpoint, instances
from tokdyn.studies.vlm_diagnostics.analyses import (
    FUNCTIONS,
    Context,
    clean_part,
    rows_of,
    similarity_rows,
    sources_of,
)
from tokdyn.studies.vlm_diagnostics.config import ANSWER_ROOM, STUDY, Config


def check(session, cfg: Config) -> None:
    """The configuration's checks (:meth:`Config.validate`), then the checkpoint directory's family (the
    ``model_type`` of its ``config.json``, a key of :data:`tokdyn.models.families.FAMILIES`) and files
    (:func:`~tokdyn.studies.vlm_diagnostics.checkpoint.check_directory`) and what opening it by its family
    reads (its configuration, tokenizer, chat template and image processor, and the latent markers looked up
    in its tokenizer: :func:`~tokdyn.studies.vlm_diagnostics.checkpoint.open_checkpoint`, whose model and
    family are kept for :func:`prepare` and :func:`run`), and the image size against its vision tower
    (:meth:`Config.check_image`): a usage error
    (:class:`tokdyn.experiment.study.Refused`, exit 2) naming what is wrong, before any work. A batch size
    that does not divide over the local devices is said (:func:`padding_note`), unless quiet."""
    cfg.validate()
    try:
        if cfg.model:
            checkpoint.check_directory(cfg.model)
        session.context["loaded"] = checkpoint.open_checkpoint(cfg)
        cfg.check_image(session.context["loaded"].config)
        size = checkpoint.latent_size(cfg)
    except ImportError as e:  # the models extra missing: one line naming it
        raise study_dir.Refused(str(e)) from None
    except ValueError as e:
        raise study_dir.Refused(str(e)) from None
    if cfg.new_tokens < size + 2 + ANSWER_ROOM:
        raise study_dir.Refused(
            f"new_tokens={cfg.new_tokens} leaves no room for the checkpoint's block of {size} latents, its two "
            f"markers and an answer: give --new-tokens {size + 2 + ANSWER_ROOM} or more"
        )
    note = padding_note(cfg)
    if note and not session.quiet:
        print(f"{STUDY}: {note}", file=sys.stderr)


def padding_note(cfg: Config) -> str:
    """What a ``batch_size`` that does not divide over the local devices costs ("" when it divides): every
    batch is split over them (:func:`~tokdyn.studies.vlm_diagnostics.analyses.rows_of`), padded with rows
    that are counted nowhere."""
    devices, rows = len(jax.local_devices()), rows_of(cfg)
    if rows == cfg.batch_size:
        return ""
    return (
        f"--batch-size {cfg.batch_size} does not divide over the {devices} local devices: every batch is padded "
        f"to {rows} rows, {rows - cfg.batch_size} of them computed for nothing (a multiple of {devices} wastes "
        "none)"
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


LATENT_ANALYSES = ("accuracy", "decomposition", "mediation", "similarity", "optimisation", "injection")
"""The analyses that read the latent block, after the clean pass."""


def clean_pass(session, ctx: Context, groups: list) -> list:
    """Every batch's clean run (:func:`~tokdyn.studies.vlm_diagnostics.analyses.clean_part`), kept as the part
    ``clean__<group>__<start>`` (of a run that several processes share, this process's batches, then every
    other process's read once on disk: :meth:`~tokdyn.experiment.runner.Session.gather`); then the set's
    sources of ``swap`` and ``mean`` on ``ctx``, and the warnings of a run whose blocks mean nothing. A run with
    ``--latents generated`` in which no instance wrote a whole block is refused
    (:class:`tokdyn.experiment.study.Refused`, exit 2), naming the likely causes."""
    bs = ctx.cfg.batch_size
    batches = {f"clean__{g.name}__{start:06d}": (g, start) for g in groups for start in range(0, len(g.index), bs)}
    kept = {}
    with session.timed("clean"):
        for name in session.deal(list(batches)):
            g, start = batches[name]
            kept[name] = session.part(name, lambda g=g, s=start: clean_part(ctx, g, s))
        others = [name for name in batches if name not in kept]
        kept.update(
            zip(
                others,
                session.gather(
                    others, what="the other processes' clean runs (the sources of swap and mean need every one)"
                ),
            )
        )
    for name, (g, start) in batches.items():  # in the batches' order, whichever process ran them
        ctx.clean[(g.name, start)] = kept[name]
    parts = list(ctx.clean.values())
    ctx.sources = sources_of(ctx, parts)
    valid = [np.asarray(p["valid"], bool) for p in parts]
    whole = sum(int((np.asarray(p["complete"]).sum(1)[v] > 0).sum()) for p, v in zip(parts, valid))
    cut = sum(
        int(((np.asarray(p["n_blocks"]) > np.asarray(p["complete"]).sum(1))[v]).sum()) for p, v in zip(parts, valid)
    )
    n = sum(int(v.sum()) for v in valid)
    warnings = []
    t = ctx.loaded.tokens
    if ctx.cfg.latents == "generated" and whole == 0:
        why = (
            f"{cut} of {n} opened a block the token limit cut (give a larger --new-tokens)"
            if cut
            else "none emitted its start token: is this a latent-reasoning checkpoint, and are --latent-start "
            "(the token it opens its block with) and --latent-fill (its pad) the right way round?"
        )
        raise study_dir.Refused(
            f"--latents generated: no instance of {n} wrote a whole latent block in the clean run ({why}); the "
            "interventions would act on nothing. Use --latents block to force a block after the prompt"
        )
    if ctx.cfg.latents == "generated" and whole < n:
        warnings.append(
            f"{n - whole} of {n} instances wrote no whole latent block in the clean run"
            + (f" ({cut} cut by the token limit)" if cut else "")
            + ": the latent analyses read only the others"
        )
    if ctx.cfg.latents == "block":
        again = sum(int((np.asarray(p["n_blocks"]) > 1)[v].sum()) for p, v in zip(parts, valid))
        if again:
            warnings.append(
                f"{again} of {n} instances opened a second block by themselves after the forced one: this "
                "checkpoint writes its own latent blocks (token "
                f"{t.start}); --latents generated runs it as it was trained"
            )
        if cut:
            warnings.append(f"{cut} of {n} forced blocks were cut by the token limit (give a larger --new-tokens)")
    for w in warnings:  # on stderr, quiet or not, and at the top of the summary
        print(f"tokdyn study {STUDY}: warning: {w}", file=sys.stderr, flush=True)
    return warnings


def run(session, cfg: Config) -> runner.Result | None:
    """The clean pass (:func:`clean_pass`), then every analysis of ``cfg.analyses`` over every batch of
    instances, each batch kept as a part (``<analysis>__<group>__<start>``); the tables ``instances.csv`` and
    ``<analysis>.csv``. Of a run that several processes share (``part``,
    :attr:`~tokdyn.experiment.runner.Session.share`), each computes its share of every analysis's batches
    (:meth:`~tokdyn.experiment.runner.Session.deal`: the k-th on process k mod n); process 0 then reads the
    others' parts once they are on disk and writes the tables, the others return None."""
    loaded = session.context.get("loaded") or checkpoint.open_checkpoint(cfg)
    inst = session.context.get("instances") or instances.make_instances(cfg, loaded.family)
    groups = instances.encode(inst, loaded, cfg)
    ctx = Context(cfg, loaded, inst)
    warnings = []
    if set(LATENT_ANALYSES) & set(cfg.analyses):
        warnings = clean_pass(session, ctx, groups)
    jobs = {name: _jobs(ctx, name, groups, inst) for name in cfg.analyses}
    done = {name: {} for name in cfg.analyses}
    for name in cfg.analyses:
        session.say(f"{name} ...")
        with session.timed(name):
            for part in session.deal(list(jobs[name])):
                compute, rows = jobs[name][part]
                done[name][part] = session.rows(part, compute) if rows else session.part(part, compute)
    me, n = session.share
    if me != 0:
        session.say(f"part {me} of {n}: done; part 0 writes the tables once every part is in {session.out}")
        return None
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
    results, matrices = {}, {}
    for name in cfg.analyses:
        others = [part for part in jobs[name] if part not in done[name]]
        with session.timed(name):
            got = session.gather(others, rows=name != "similarity", what=f"the other processes' {name} batches")
        done[name].update(zip(others, got))
        parts = [done[name][part] for part in jobs[name]]  # in the batches' order
        if name == "similarity":
            index = np.concatenate([p["instance"] for p in parts])
            order = np.argsort(index)
            z = np.concatenate([p["latents"] for p in parts])[order]
            rows, matrices = similarity_rows(z, index[order])
        else:
            rows = [r for p in parts for r in p]
        results[name] = rows
        keys = list(dict.fromkeys(c for r in rows for c in r))
        tables[f"{name}.csv"] = io.to_columns([{c: r.get(c, _blank(rows, c)) for c in keys} for r in rows])
    record = {
        "model": session.context["stamp"]["model"],
        "groups": [g.name for g in groups],
        "random_model": loaded.random,
        "devices": len(jax.local_devices()),  # each process's, a batch split over them (not in the stamp)
        "processes": n,
    }
    return runner.Result(
        tables,
        data=dict(
            rows=results,
            matrices=matrices,
            warnings=warnings,
            random=loaded.random,
            n=len(inst),
            n_latents=loaded.size,
            source=inst.source,
            groups=[g.name for g in groups],
            chance=[inst.chance(i) for i in range(len(inst))],
            benchmarks=[inst.file_of(i) for i in range(len(inst))],
        ),
        record=record,
    )


def _jobs(ctx: Context, name: str, groups: list, inst) -> dict:
    """The batches of the analysis ``name``, in order: ``{part name: (compute, rows)}``, ``rows`` False for a
    part of arrays (``similarity``'s), True for table rows."""
    bs = ctx.cfg.batch_size
    fn = FUNCTIONS[name]
    if name == "perception":
        return {f"perception__{start:06d}": (lambda s=start: fn(ctx, s), True) for start in range(0, len(inst), bs)}
    return {
        f"{name}__{g.name}__{start:06d}": (lambda g=g, s=start: fn(ctx, g, s), name != "similarity")
        for g in groups
        for start in range(0, len(g.index), bs)
    }


def _blank(rows: list, column: str):
    """What a row without ``column`` holds there: NaN in a numeric column, "" in a text one."""
    kinds = {type(r[column]) for r in rows if column in r}
    return "" if str in kinds else np.nan


__all__ = [
    "LATENT_ANALYSES",
    "changed_message",
    "check",
    "clean_pass",
    "padding_note",
    "prepare",
    "run",
    "stamp_extra",
]
