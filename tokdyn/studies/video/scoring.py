"""The video study's fixed conditions: tokens of the built-in rule tracked through every frame of a
video by a predictor of :mod:`tokdyn.tracking` (:func:`track_video`), the scores of any track ids
(:func:`score_tracks`, shared with the learned arm), every condition x video in one compilation
(:func:`score`), the study's videos and keys (:func:`make_videos`, :func:`named_key`) and a seed's
row of ``runs.csv`` (:func:`seed_row`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import analysis, dynamics, extras, metrics, tracking
from tokdyn.data import scenes, videos
from tokdyn.experiment.study import Refused
from tokdyn.studies.video.config import SEP, Config


CLASSES = ("overlap", "out", "calm")  # the frame classes of the collapse question
KEPT = ("tokens", "start", "ids")  # the outputs of track_video that score returns with keep=True only


@dataclasses.dataclass(frozen=True)
class Shape:
    """The static part of one video's tracking and scoring (hashable: one compilation)."""

    n_tokens: int
    n_steps: int
    init: str


def condition_knobs(cfg: Config):
    """``(predictor, separation)``: (C,) int32 and (C,) float32 arrays, the traced knobs of each
    fixed condition of ``cfg.conditions`` (its predictor's index in
    :data:`tokdyn.tracking.PREDICTORS`; ``cfg.separation`` for a ``+sep`` condition, else 0)."""
    names = cfg.conditions
    pred = np.asarray([tracking.PREDICTORS[c.removesuffix(SEP)] for c in names], np.int32)
    sep = np.asarray([cfg.separation if c.endswith(SEP) else 0.0 for c in names], np.float32)
    return pred, sep


def track_video(
    key,
    images,
    masks,
    visible,
    area,
    hp: tracking.Hparams,
    rule_hp: dynamics.Hparams,
    position_scale,
    merge_rel,
    min_pixels,
    tol,
    *,
    shape: Shape,
) -> dict:
    """Track one video and score it (traceable; vmap it over videos and conditions).

    Args:
      key: the tracking key.
      images: (F, H, W, 3) frames; masks: (F, H, W) track ids (0 background).
      visible, area: (F, M) pixels of each object in each frame, visible and in view (occluded or
        not), as :class:`tokdyn.data.videos.Videos` gives them.
      hp: the temporal knobs; rule_hp: the rule's knobs.
      position_scale, merge_rel, min_pixels, tol: as in :class:`~tokdyn.studies.video.config.Config`.
      shape: the static :class:`Shape`.

    Returns:
      A dict: ``video_ari``, ``frame_ari`` (mean over frames with two or more foreground pixels),
      ``switches`` and ``chances`` (switches while visible, and the chances to switch), ``kept``
      and ``reappear`` (identity persistence), and per frame (F,) bool: ``merged``, ``shared``,
      ``collapse`` (either), ``overlap``, ``out``; plus ``tokens`` (F, T, D), ``start`` (F, T, D)
      (each frame's starting tokens: the predictor's prediction) and ``ids`` (F, H, W) (the tracks'
      ids of every pixel).
    """
    T = shape.n_tokens
    n_frames, H, W = masks.shape
    x = scenes.pixel_features(images, position_scale=position_scale)  # (F, N, 5)
    r = tracking.track(key, x, hp, rule_hp, n_tokens=T, init=shape.init, n_steps=shape.n_steps, tol=tol)
    ids, _ = tracking.track_labels(r.tokens, r.labels, hp.predictor == tracking.PREDICTORS["reinit"])
    tol_merge = jax.vmap(lambda f: analysis.merge_tolerance(f, rel=merge_rel))(x)  # (F,)
    _, groups = dynamics.token_groups(r.tokens, tol_merge[:, None, None])  # per frame
    res = score_tracks(masks.reshape(n_frames, -1), ids, visible, area, groups < T, min_pixels, n_ids=T)
    return dict(res, tokens=r.tokens, start=r.start, ids=ids.reshape(n_frames, H, W))


def score_tracks(truth, ids, visible, area, merged, min_pixels, *, n_ids: int) -> dict:
    """The scores of one video's track ids, whatever made them (traceable; vmap over videos).

    Args:
      truth: (F, N) true track ids of every pixel (0 background); ids: (F, N) predicted track ids
        in [0, n_ids) (the same id is the same track in every frame).
      visible, area: (F, M) as :func:`track_video` takes them.
      merged: (F,) bool, frames where two tokens (or slots) have merged.
      min_pixels: pixels an object needs in a frame to count as visible there.
      n_ids: the number of track ids (tokens, or slots).

    Returns:
      :func:`track_video`'s dict without ``tokens``, ``start`` and ``ids``.
    """
    n_true = area.shape[-1] + 1
    kw = dict(n_true=n_true, n_pred=n_ids)
    video_ari = metrics.video_fg_ari(truth, ids, **kw)
    fg = jnp.sum(truth > 0, axis=1)
    per_frame = metrics.frame_fg_ari(truth, ids, **kw)
    scored = fg >= 2
    frame_ari = jnp.sum(jnp.where(scored, per_frame, 0.0)) / jnp.maximum(jnp.sum(scored), 1)
    mp = jnp.asarray(min_pixels, jnp.int32)
    c = metrics.track_labels(truth, ids, min_pixels=mp, **kw)  # (F, M)
    switches = metrics.track_switches(truth, ids, min_pixels=mp, **kw)
    chances = jnp.sum((c[1:] >= 0) & (c[:-1] >= 0))
    kept, reappear = metrics.identity_persistence(truth, ids, min_pixels=mp, **kw)
    same = (c[:, :, None] == c[:, None, :]) & (c[:, :, None] >= 0) & ~jnp.eye(c.shape[1], dtype=bool)
    shared = jnp.any(same, axis=(1, 2))
    inview = area >= mp
    overlap = jnp.any(inview & (visible < area), axis=1)
    out = jnp.any(area == 0, axis=1)
    return dict(
        video_ari=video_ari,
        frame_ari=frame_ari,
        switches=switches,
        chances=chances,
        kept=kept,
        reappear=reappear,
        merged=merged,
        shared=shared,
        collapse=merged | shared,
        overlap=overlap,
        out=out,
    )


@functools.partial(jax.jit, static_argnames=("shape", "keep"))
def score(
    keys,
    images,
    masks,
    visible,
    area,
    predictor,
    separation,
    rule_hp,
    decay,
    position_scale,
    merge_rel,
    min_pixels,
    tol,
    *,
    shape: Shape,
    keep: bool = False,
) -> dict:
    """:func:`track_video` of every condition x video at once (jitted: one compilation for every
    condition and scenario of one shape).

    Args:
      keys: (V,) tracking keys, one per video.
      images: (V, F, H, W, 3) frames; masks: (V, F, H, W) true track ids (0 background).
      visible, area: (V, F, M) pixels of each object per frame, visible and in view.
      predictor: (C,) int32, each condition's predictor (an index of
        :data:`tokdyn.tracking.PREDICTORS`); separation: (C,) float32, its separation push
        (:func:`condition_knobs` gives both).
      rule_hp: the built-in rule's knobs, a :class:`tokdyn.dynamics.Hparams` (shared by every condition).
      decay, position_scale, merge_rel, min_pixels, tol: scalars, as in :class:`~tokdyn.studies.video.config.Config`.
      shape: the static :class:`Shape`.
      keep: static; also return ``tokens`` and ``start`` (C, V, F, T, D) and ``ids`` (C, V, F, H, W).

    Returns:
      Each output of :func:`track_video` with leading axes (C, V).
    """

    def one(k, im, m, vis, ar, p, s):
        hp = tracking.Hparams(predictor=p, decay=decay, separation=s)
        res = track_video(k, im, m, vis, ar, hp, rule_hp, position_scale, merge_rel, min_pixels, tol, shape=shape)
        return res if keep else {n: v for n, v in res.items() if n not in KEPT}

    per_video = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None, None))
    return jax.vmap(per_video, in_axes=(None, None, None, None, None, 0, 0))(
        keys, images, masks, visible, area, predictor, separation
    )


KEYS = {"test": 0, "track": 1, "pool": 2, "val": 3, "models": 4, "segment": 5}  # fold_in(key(root_seed), i)


def named_key(cfg: Config, name: str):
    """The PRNG key of the stream ``name`` of :data:`KEYS`: ``fold_in(key(cfg.root_seed), KEYS[name])``
    (``test``: the study's videos, ``track``: the tokens' initial draws, ``pool`` and ``val``: the
    learned models' training and validation clips, ``models``: their initial parameters and
    batches, ``segment``: their frame 0 slot noise)."""
    return jax.random.fold_in(jax.random.key(cfg.root_seed), KEYS[name])


def make_videos(cfg: Config, scenario: str, n: int, *, split: str = "test", start: int = 0) -> videos.Videos:
    """The ``n`` videos of ``scenario`` from index ``start`` on; one key gives the same objects in
    every scenario.

    Args:
      cfg: the study's :class:`~tokdyn.studies.video.config.Config` (the videos' size, frames, objects, scale, speed, margin).
      scenario: occlusion | collisions | leaving.
      n: how many videos.
      split: the key they are drawn from (:func:`named_key`): ``test``, the study's videos (seed s
        the ``n_videos`` from ``s * n_videos``); ``pool``, ``val``: the learned models' training
        and validation clips.
      start: the index of the first video (video i from ``fold_in(key, start + i)``).

    Returns:
      :class:`tokdyn.data.videos.Videos` with a leading (n,) axis: ``images`` (n, F, H, W, 3),
      ``masks`` (n, F, H, W), ``visible`` and ``area`` (n, F, M), ...; with ``cfg.data``, a
      :class:`tokdyn.datasets.clips.LoadedClips` of the dataset's clips ``start .. start + n - 1``
      (those fields and ``position``; only the ``test`` split: there is no learned arm on data).
    """
    if cfg.data:
        if split != "test":
            raise ValueError(f"split must be 'test' on a dataset's videos (no learned arm there), got {split!r}")
        return real_clips(*real_arguments(cfg))[start : start + n]
    return videos.sprite_videos(
        named_key(cfg, split),
        n,
        frames=cfg.frames,
        size=cfg.size,
        min_objects=cfg.objects,
        max_objects=cfg.objects,
        scale=cfg.scale,
        speed=cfg.speed,
        margin=cfg.margin if scenario == "leaving" else 0.0,
        collisions=scenario == "collisions",
        start=start,
        substeps=max(4, int(np.ceil(2 * cfg.speed[1] / cfg.scale[0]))),
    )


@functools.lru_cache(maxsize=1)
def real_clips(data: str, count: int, size: int, frames: int, objects: int):
    """The first ``count`` clips of MOVi's train split in ``data`` with ``objects`` objects
    (:func:`tokdyn.datasets.clips.load`), read once for every part."""
    from tokdyn.datasets import clips

    return clips.load(data, count, size=size, frames=frames, objects=objects)


def real_arguments(cfg: Config) -> tuple:
    """``(data, count, size, frames, objects)`` of :func:`real_clips` for ``cfg``: every seed's
    videos (``seeds x n_videos``)."""
    return cfg.data, cfg.seeds * cfg.n_videos, cfg.size, cfg.frames, cfg.objects


def prepare_data(session, cfg: Config) -> None:
    """The runner's ``prepare`` (before the study's directory is opened): with ``data``, the
    split's clips are read now, once (:func:`real_clips` keeps them for every part), so that shards
    holding too few usable videos, or a record that does not read (a bad CRC, a feature of another
    kind or count), are refused before any work: :class:`~tokdyn.experiment.study.Refused` (the
    command exits 2) naming the directory, how many usable videos it holds, and which of
    ``--n-videos``, ``--seeds``, ``--objects`` and ``--frames`` to change, and to what."""
    if not cfg.data:
        return None
    extras.require("data", f"reading data={cfg.data!r}")  # its readers' packages, before any work
    from tokdyn.datasets.clips import TooFewClips, shortfall_message, ways_out

    counts = {"--seeds": cfg.seeds, "--n-videos": cfg.n_videos}
    session.say(f"reading the {cfg.seeds * cfg.n_videos} videos of {cfg.data} the seeds take")
    try:
        real_clips(*real_arguments(cfg))
    except TooFewClips as e:
        ways = ways_out(
            e,
            counts,
            trim="--n-videos",  # the seeds (the paired tests' pairs) kept where fewer videos a seed will do
            objects_option="--objects",
            frames_option="--frames",
            objects=(1, cfg.size * cfg.size - 1),  # a token per object and the background: at most a pixel each
        )
        raise Refused(f"data: {shortfall_message(e, counts, ways)}") from None
    except (ValueError, OSError) as e:  # a corrupt record or shard, an unreadable file: named inside
        raise Refused(f"data: {e}") from None
    return None


def _track_keys(cfg: Config, n: int):
    root = named_key(cfg, "track")
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n))


def _score_args(cfg: Config, v: videos.Videos, n: int):
    pred, sep = condition_knobs(cfg)
    rule_hp = dynamics.Hparams(temperature=cfg.temperature, momentum=cfg.momentum)
    f32 = np.float32
    return (
        (
            _track_keys(cfg, n),
            v.images,
            v.masks,
            v.visible,
            v.area,
            pred,
            sep,
            rule_hp,
            f32(cfg.decay),
            f32(cfg.position_scale),
            f32(cfg.merge_rel),
            np.int32(cfg.min_pixels),
            f32(cfg.tol),
        ),
        Shape(cfg.n_tokens, cfg.n_steps, cfg.init),
    )


RUN_COLUMNS = (
    "scenario",
    "condition",
    "seed",
    "video_ari",
    "frame_ari",
    "switches",
    "chances",
    "switch_rate",
    "kept",
    "reappear",
    "persistence",
    "merged",
    "shared",
    "collapse",
    *(f"{w}_{c}" for c in CLASSES for w in ("frames", "collapsed")),
)


def seed_row(scenario: str, condition: str, seed: int, g: dict) -> dict:
    """One ``runs.csv`` row: the per-video scores of one seed summed or averaged over its videos.

    Args:
      scenario, condition: the row's scenario and condition names.
      seed: the seed (int).
      g: the seed's per-video scores, each (V,) or (V, F) (per frame), as :func:`score_tracks`
        gives them with a leading video axis (NumPy or JAX).

    Returns:
      ``{column: value}`` over :data:`RUN_COLUMNS`: the scores' means over the videos, the sums of
      ``switches``, ``chances``, ``kept`` and ``reappear`` and their ratios (NaN without a chance),
      and per frame class (:data:`CLASSES`) its frames and collapsed frames.
    """
    g = {k: np.asarray(v) for k, v in g.items()}
    calm = ~g["overlap"] & ~g["out"]
    row = dict(
        scenario=scenario,
        condition=condition,
        seed=seed,
        video_ari=g["video_ari"].mean(),
        frame_ari=g["frame_ari"].mean(),
        switches=g["switches"].sum(),
        chances=g["chances"].sum(),
        kept=g["kept"].sum(),
        reappear=g["reappear"].sum(),
        merged=g["merged"].mean(),
        shared=g["shared"].mean(),
        collapse=g["collapse"].mean(),
    )
    row["switch_rate"] = row["switches"] / row["chances"] if row["chances"] else np.nan
    row["persistence"] = row["kept"] / row["reappear"] if row["reappear"] else np.nan
    for cls, sel in (("overlap", g["overlap"]), ("out", g["out"]), ("calm", calm)):
        row[f"frames_{cls}"] = int(sel.sum())
        row[f"collapsed_{cls}"] = int((sel & g["collapse"]).sum())
    return row


def run_columns(rows) -> dict:
    """Rows of :func:`seed_row` as a table of ``runs.csv``: ``{column: array}`` over :data:`RUN_COLUMNS`."""
    return {k: np.asarray([r[k] for r in rows]) for k in RUN_COLUMNS}


def scenario_runs(cfg: Config, scenario: str) -> dict:
    """One scenario: per fixed condition x seed, the per-seed sums and means (a table of columns)."""
    n = cfg.seeds * cfg.n_videos
    args, shape = _score_args(cfg, make_videos(cfg, scenario, n), n)
    res = jax.device_get(score(*args, shape=shape))
    C, S, V = len(cfg.conditions), cfg.seeds, cfg.n_videos
    r = {k: np.asarray(v).reshape(C, S, V, *np.shape(v)[2:]) for k, v in res.items()}
    return run_columns(
        [
            seed_row(scenario, cond, s, {k: v[ci, s] for k, v in r.items()})
            for ci, cond in enumerate(cfg.conditions)
            for s in range(S)
        ]
    )


def example(cfg: Config, scenario: str) -> dict:
    """Seed 0's first video of ``scenario`` under every condition: its frames, true masks and
    centres, and each condition's tokens and starting tokens (C, F, T, D) and track ids (C, F, H, W)."""
    v = make_videos(cfg, scenario, 1)
    args, shape = _score_args(cfg, v, 1)
    res = score(*args, shape=shape, keep=True)
    return dict(
        images=np.asarray(v.images[0]),
        masks=np.asarray(v.masks[0]),
        position=np.asarray(v.position[0]),
        tokens=np.asarray(res["tokens"][:, 0]),
        start=np.asarray(res["start"][:, 0]),
        ids=np.asarray(res["ids"][:, 0]),
    )
