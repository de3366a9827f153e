"""The video study: token dynamics through time on sprite videos (``tokdyn study video``).

Tokens are the slots of a fixed update rule (the built-in rule, :data:`tokdyn.dynamics.BUILTIN`)
run on every frame's per-pixel features (:func:`tokdyn.data.scenes.pixel_features`: position and
colour), each frame started by a predictor of :mod:`tokdyn.tracking` (:func:`tokdyn.tracking.track`).
It asks three questions:

1. **Identity through occlusion.** Do carried tokens keep object identity, and which constraint
   keeps it best? The conditions are the predictors ``reinit`` (every frame re-initialised; its
   tracks chained by one-to-one matching of consecutive frames' tokens, the fair
   tracking-by-detection baseline), ``carry``, ``velocity`` and ``inertia``, each carried one also
   with the minimum-separation push (``+sep``, :func:`tokdyn.tracking.separate`). Scores per video:
   the video FG-ARI (:func:`tokdyn.metrics.video_fg_ari`: an identity switch is an error), the mean
   per-frame FG-ARI (:func:`tokdyn.metrics.frame_fg_ari`, blind to identities), the track switches
   while visible per chance to switch (:func:`tokdyn.metrics.track_switches`) and the identity
   persistence through absence, kept / reappearances (:func:`tokdyn.metrics.identity_persistence`).
2. **Collapse over time.** When do tokens collapse? A frame *collapses* when two of its tokens have
   merged (closer than the merge tolerance ``merge_rel`` times the frame's RMS feature radius,
   :func:`tokdyn.analysis.merge_tolerance`, grouped by :func:`tokdyn.dynamics.token_groups`) or two
   visible objects are carried by one token (duplicate labels: :func:`tokdyn.metrics.track_labels`
   of two objects equal). Frames are classed by what the video's ground truth shows in them:
   *overlap* (an object in view at least partly hidden by another: objects crossing, or colliding),
   *out* (an object wholly out of view: it has left) and *calm* (neither); the collapse rate is
   compared between them, per scenario and condition.

Scenarios (the same objects, drawn from the same keys, :func:`tokdyn.data.videos.sprite_videos`):
``occlusion`` (objects pass over each other, all in view), ``collisions`` (elastic collisions: the
objects bounce off each other instead of crossing) and ``leaving`` (walls ``margin`` outside the
view: objects leave it and come back).

One computation: every scenario's videos are generated on the device, then one jitted function
tracks and scores every condition x seed x video (the predictor and the separation are traced
knobs, :class:`tokdyn.tracking.Hparams`, so all conditions and scenarios share one compilation).
Seed ``s`` is a set of ``n_videos`` videos and the tokens' initial draws, shared by every condition
and scenario (common random numbers): conditions are compared paired by seed.

Outputs: ``runs.csv`` (one row per scenario x condition x seed: the per-seed scores and the frame
counts of each class), ``metrics.csv`` (per scenario x condition: each score's mean and 95% interval
over seeds), ``collapse.csv`` (the collapse rate per frame class, with intervals), ``tests.csv``
(paired t-tests of every condition against ``reinit`` and of every constrained condition against
``carry``, Holm-corrected over the whole family), ``summary.md``, and the figures ``metrics.png``
(the scores with their intervals), ``tracks.png`` (token positions over the frames of one video,
one panel per condition, beside the objects' true centres; for a learned condition each slot's
centroid, the mean position of the pixels it owns) and ``strip.png`` (one video's segmentation,
frame by frame, for every condition), ``learning_curve.csv`` (per learned predictor, seed and
checkpoint: the training loss and the video FG-ARI on ``n_videos`` validation clips; its header
alone without learned conditions) and, with learned conditions, ``learning_curve.png``. The findings (:func:`verdicts`) are judged from ``runs.csv``.

3. **What a learned predictor adds.** With ``learned`` (predictors of :mod:`tokdyn.models.savi`:
   ``none``, ``mlp``, ``transformer``), Slot Attention for video is trained per predictor,
   ``learned_seeds`` models in one :func:`tokdyn.train.train_many` on a pool of the study's sprite
   videos (every scenario, their own key), and scored on the same test videos with the same scores,
   as the conditions ``savi-<predictor>``: its slot indices are its track ids, and a frame's
   ``merged`` counts duplicate slots (:func:`tokdyn.models.savi.collapse`, the package's merge
   tolerance in slot space) where the fixed rule's counts merged tokens. Learned model ``s`` is
   scored on seed ``s``'s videos, so it is paired with every fixed condition by seed (seeds
   ``0 .. learned_seeds - 1``). Findings V5 (the learned predictors against the best fixed
   condition) and V6 (against the learned model without a predictor) answer the question.
   Each predictor's training is checkpointed every ``learned_every`` steps (``parts/savi_<p>_train.npz``,
   with its learning curve) and its scores kept as a part (``parts/savi_<p>.npz``): a killed run
   resumes where it stopped.

The study's parts, one concept a module (every public name is re-exported here:
``tokdyn.studies.video.Config``, ``.savi_config``, ...):

- :mod:`~tokdyn.studies.video.config`   :class:`Config`: the fields, their checks, the conditions, the estimate
- :mod:`~tokdyn.studies.video.scoring`  the fixed conditions: tracking, the scores of track ids, the videos
- :mod:`~tokdyn.studies.video.learned`  the learned arm: SAVi per predictor, trained, checkpointed, scored
- :mod:`~tokdyn.studies.video.tables`   ``metrics.csv``, ``collapse.csv``, ``tests.csv`` from ``runs.csv``
- :mod:`~tokdyn.studies.video.findings` the findings V1-V6
- :mod:`~tokdyn.studies.video.plots`    the figures

Here: :func:`run` (the study's computation, part by part), :func:`summary` (``summary.md``),
:data:`SPEC` and :func:`main`.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from tokdyn import io
from tokdyn.experiment import findings as experiment_findings
from tokdyn.experiment import runner
from tokdyn.experiment.presets import with_preset_line

# (importing the parts binds each as an attribute: tokdyn.studies.video.learned, ...)
from tokdyn.studies.video.config import (  # noqa: F401
    DATA,
    LEARNED,
    RUN_RATE,
    SAVI_FIXED_S,
    SAVI_RATE,
    SCENARIOS,
    SEP,
    STUDY,
    Config,
    savi_config,
)
from tokdyn.studies.video.findings import (  # noqa: F401
    ARI_MARGIN,
    COLLAPSE_MARGIN,
    PREDICTING,
    learned_verdicts,
    verdicts,
)
from tokdyn.studies.video.learned import (  # noqa: F401
    CURVE_COLUMNS,
    Unfinished,
    centroids,
    fit_learned,
    learned_keys,
    learned_pool,
    learned_runs,
    score_segments,
    segment_videos,
)
from tokdyn.studies.video.plots import draw  # noqa: F401
from tokdyn.studies.video.scoring import (  # noqa: F401
    CLASSES,
    KEYS,
    RUN_COLUMNS,
    Shape,
    condition_knobs,
    example,
    make_videos,
    named_key,
    prepare_data,
    real_arguments,
    real_clips,
    run_columns,
    scenario_runs,
    score,
    score_tracks,
    seed_row,
    track_video,
)
from tokdyn.studies.video.tables import (  # noqa: F401
    SCORES,
    collapse_rows,
    metric_rows,
    paired,
    per_seed,
    seed_values,
    test_rows,
)


def run(session: runner.Session, cfg: Config) -> Optional[runner.Result]:
    """Every scenario (one kept part each, ``runs_<scenario>``), the example video (``example``),
    every learned predictor (one kept part each, ``savi_<predictor>``, its training checkpointed
    beside it), then the tables. ``None`` (nothing written) when a learned predictor's training
    returned before its budget."""
    parts = []
    with session.timed("track"):
        for sc in cfg.scenarios:
            session.say(f"video: {sc} ({len(cfg.conditions)} conditions x {cfg.seeds} seeds x {cfg.n_videos} videos)")
            parts.append(session.part(f"runs_{sc}", functools.partial(scenario_runs, cfg, sc), key={"scenario": sc}))
        ex = session.part("example", functools.partial(example, cfg, cfg.scenarios[0]))
    learned = {}
    if cfg.learned:
        with (
            session.timed("learn"),
            io.Progress(
                cfg.learned_steps * len(cfg.learned), desc="learned predictors", unit="steps", quiet=session.quiet
            ) as progress,
        ):
            for p in cfg.learned:
                session.say(f"video: {LEARNED}{p} ({cfg.learned_seeds} models x {cfg.learned_steps} steps)")
                try:
                    learned[LEARNED + p] = learned_runs(session, cfg, p, progress)
                except Unfinished:
                    return None
    parts += [{k[len("runs__") :]: v for k, v in part.items() if k.startswith("runs__")} for part in learned.values()]
    runs = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    curve = {
        k: (np.concatenate([np.asarray(p[f"curve__{k}"]) for p in learned.values()]) if learned else np.asarray([]))
        for k in CURVE_COLUMNS
    }
    ex = dict(ex, learned={c: dict(ids=p["example_ids"], xy=p["example_xy"]) for c, p in learned.items()})
    mrows, crows, trows = metric_rows(cfg, runs), collapse_rows(cfg, runs), test_rows(cfg, runs)
    tables = {
        "runs.csv": runs,
        "metrics.csv": io.to_columns(mrows),
        "collapse.csv": io.to_columns(crows),
        "tests.csv": io.to_columns(trows),
    }
    tables["learning_curve.csv"] = curve  # its header alone without learned conditions
    seconds = {c: float(np.nansum(p["train_seconds"])) for c, p in learned.items()}
    return runner.Result(
        tables,
        data=dict(metrics=mrows, collapse=crows, tests=trows, example=ex, curve=curve, seconds=seconds),
        record={"runs": int(len(runs["seed"])) * cfg.n_videos, "training_s": seconds},
    )


# ---------------------------------------------------------------------------------------------- summary


def summary(cfg: Config, result: runner.Result) -> str:
    """``summary.md``: the scores per scenario and condition, the collapse rates per frame class,
    the tests significant after Holm."""
    iv = lambda r, k: experiment_findings.interval(r[k], r[f"{k}_low"], r[f"{k}_high"])  # noqa: E731
    lines = []
    if cfg.data:
        lines += [
            f"On the videos of {cfg.data} (MOVi's train split: the videos with {cfg.objects} objects in file order, "
            f"their first {cfg.frames} frames at {cfg.size} x {cfg.size}; tokdyn.datasets.clips), not the sprite "
            "videos. MOVi has no unoccluded masks: no frame is classed overlap, and an object wholly hidden counts "
            "as out of view.",
            "",
        ]
    lines += [
        "## Identity (means over seeds, 95% intervals)",
        "",
        experiment_findings.INTERVALS + ".",
        "",
        "| scenario | condition | video FG-ARI | per-frame FG-ARI | switches / chance | persistence | "
        "collapsed frames |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['scenario']} | {r['condition']} | " + " | ".join(iv(r, k) for k in SCORES) + " |"
        for r in result.data["metrics"]
    ]
    lines += [
        "",
        "## Collapse rate by frame class",
        "",
        "| scenario | condition | overlap (frames) | out of view (frames) | calm (frames) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['scenario']} | {r['condition']} | "
        + " | ".join(f"{iv(r, c)} ({r[c + '_frames']})" for c in CLASSES)
        + " |"
        for r in result.data["collapse"]
    ]
    sig = [t for t in result.data["tests"] if np.isfinite(t["p_holm"]) and t["p_holm"] < 0.05]
    lines += ["", f"## Paired tests: {len(sig)} of {len(result.data['tests'])} significant after Holm", ""]
    lines += [
        f"- {t['scenario']} {t['metric']}: {t['condition']} - {t['baseline']}: {experiment_findings.paired_cell(t)}"
        for t in sig
    ]
    if cfg.learned:
        curve = result.data["curve"]
        lines += [
            "",
            "## Learned predictors (tokdyn.models.savi)",
            "",
            (
                f"{cfg.learned_seeds} models per predictor, {cfg.learned_steps} steps of {cfg.learned_batch} clips "
                f"x {cfg.learned_frames} frames from {cfg.learned_pool} training clips, learning rate "
                f"{cfg.learning_rate:g}; model s scored on seed s's test videos. Validation video FG-ARI (mean "
                "over seeds) by step, and training time:"
            ),
            "",
        ]
        cond, step = np.asarray(curve["condition"]), np.asarray(curve["step"])
        val = np.asarray(curve["val_video_ari"], float)
        for c, sec in result.data["seconds"].items():
            pts = ", ".join(
                f"{t}: {np.mean(val[(cond == c) & (step == t)]):.2f}" for t in sorted(set(step[cond == c].tolist()))
            )
            lines.append(f"- {c}: {pts}; {sec / 60:.1f} min of training")
    return with_preset_line(cfg, "\n".join(lines), f"{cfg.seeds} seeds of {cfg.n_videos} videos")


SPEC = runner.Spec(
    name=STUDY,
    config=Config,
    run=run,
    figures=draw,
    summary=summary,
    findings=lambda out: experiment_findings.judge(out, "runs.csv", STUDY, verdicts),
    outputs=("runs.csv", "metrics.csv", "collapse.csv", "tests.csv", "learning_curve.csv"),
    figure_files=("metrics.png", "tracks.png", "strip.png", "learning_curve.png"),
    selection=("learned", "preset"),
    preset=None,
    prepare=prepare_data,  # with --data: the clips counted and read before the directory is stamped
)  # learned only chooses which learned arms run


main = runner.entry(
    SPEC,
    __name__,
    returns="True when the study ran to its end; None when a learned predictor's training returned before its budget (nothing is written then: the same command resumes it).",
)
