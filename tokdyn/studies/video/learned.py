"""The video study's learned arm: Slot Attention for video (:mod:`tokdyn.models.savi`) trained per
predictor (:func:`fit_learned`, checkpointed and resumable), its segmentation scored with the fixed
conditions' scores (:func:`score_segments`), and the learned condition ``savi-<predictor>`` kept as
a part of the study (:func:`learned_runs`)."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import io, train
from tokdyn.data import videos
from tokdyn.experiment import runner
from tokdyn.experiment.study import digest
from tokdyn.models import savi
from tokdyn.studies.video.config import LEARNED, Config, savi_config
from tokdyn.studies.video.scoring import make_videos, named_key, run_columns, score_tracks, seed_row

CURVE_COLUMNS = ("condition", "seed", "step", "loss", "val_video_ari")  # learning_curve.csv


class Unfinished(Exception):
    """A learned predictor's training returned before its budget (``max_calls`` or a deadline)."""


def learned_keys(cfg: Config):
    """(learned_seeds,) keys of the learned models, seed s ``fold_in(models key, s)`` (the same for
    every predictor: models of one seed share their autoencoder's initial parameters and batches)."""
    root = named_key(cfg, "models")
    return jnp.stack([jax.random.fold_in(root, s) for s in range(cfg.learned_seeds)])


def learned_pool(cfg: Config) -> np.ndarray:
    """(learned_pool, frames, size, size, 3) training clips: an equal share of every scenario (the
    first scenarios one more where it does not divide), drawn from the pool key at consecutive
    starts (so no two clips share their objects)."""
    n = len(cfg.scenarios)
    counts = [cfg.learned_pool // n + (i < cfg.learned_pool % n) for i in range(n)]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.concatenate(
        [
            np.asarray(make_videos(cfg, sc, c, split="pool", start=int(st)).images)
            for sc, c, st in zip(cfg.scenarios, counts, starts)
        ]
    )


@functools.partial(jax.jit, static_argnames=("n_ids",))
def score_segments(masks, labels, slot_sets, visible, area, min_pixels, *, n_ids: int) -> dict:
    """:func:`~tokdyn.studies.video.scoring.score_tracks` of a learned model's segmentation of V
    videos (jitted), its slot indices the track ids.

    Args:
      masks: (V, F, H, W) true track ids (0 background).
      labels: (V, F, H, W) each pixel's slot, in [0, n_ids) (:func:`tokdyn.models.savi.segment`).
      slot_sets: (V, F, K, D) the slots of every frame (:func:`tokdyn.models.savi.segment`).
      visible, area: (V, F, M) pixels of each object per frame, visible and in view.
      min_pixels: pixels an object needs in a frame to count as visible there.
      n_ids: static, the number of slots K.

    Returns:
      :func:`~tokdyn.studies.video.scoring.score_tracks`' dict with a leading (V,) axis; a frame's
      ``merged``: two of its slots are duplicates (:func:`tokdyn.models.savi.collapse`).
    """

    def one(m, lab, sl, vis, ar):
        dup, _ = savi.collapse(sl, lab)
        flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
        return score_tracks(flat(m), flat(lab), vis, ar, dup > 0, min_pixels, n_ids=n_ids)

    return jax.vmap(one)(masks, labels, slot_sets, visible, area)


def segment_videos(cfg: Config, scfg: savi.Config, params, v: videos.Videos, seed: int) -> tuple:
    """One learned model's segmentation of videos, scored.

    Args:
      cfg: the study's :class:`~tokdyn.studies.video.config.Config`.
      scfg: the model's :class:`tokdyn.models.savi.Config` (:func:`savi_config`).
      params: the model's parameters (one model's, no seed axis).
      v: the :class:`tokdyn.data.videos.Videos` to segment, V of them.
      seed: the model's seed: frame 0's slot noise is drawn from ``fold_in(segment key, seed)``.

    Returns:
      ``(scores, labels)``: :func:`score_segments`' dict (host arrays, leading (V,) axis) and the
      (V, F, H, W) slot labels.
    """
    labels, final = savi.segment(jax.random.fold_in(named_key(cfg, "segment"), seed), params, scfg, v.images)
    res = score_segments(v.masks, labels, final, v.visible, v.area, np.int32(cfg.min_pixels), n_ids=cfg.n_tokens)
    return jax.device_get(res), np.asarray(labels)


def _model(state, i: int):
    return jax.tree_util.tree_map(lambda a: a[i], state.params)


def fit_learned(study, cfg: Config, predictor: str, *, progress=None, **kw) -> train.Result:
    """Train (or resume) the ``learned_seeds`` models of ``savi-<predictor>`` on
    :func:`learned_pool` through :func:`tokdyn.train.train_many`, checkpointed every
    ``learned_every`` steps. After every call the curves record ``val_video_ari`` (each model's
    mean video FG-ARI on ``n_videos`` validation clips of the first scenario) and
    ``train_seconds``. A corrupt checkpoint is set aside with a warning and training starts again.

    Args:
      study: the open study directory (:class:`tokdyn.experiment.study.Study`): the checkpoint is
        its part ``savi_<predictor>_train.npz``, keyed by its stamp and the model's configuration.
      cfg: the study's :class:`~tokdyn.studies.video.config.Config`.
      predictor: the learned predictor, a name of :data:`tokdyn.models.savi.PREDICTORS`.
      progress: an :class:`tokdyn.io.Progress` advanced by the steps, or None.
      **kw: more arguments of :func:`tokdyn.train.train_many` (``max_calls``, ``deadline``, ...).

    Returns:
      :func:`tokdyn.train.train_many`'s :class:`tokdyn.train.Result`: the state with a leading
      (learned_seeds,) axis, the curves (learned_seeds, checkpoints), ``finished``.
    """
    scfg = savi_config(cfg, predictor)
    ckpt = study.part_path(f"savi_{predictor}_train")
    val = make_videos(cfg, cfg.scenarios[0], cfg.n_videos, split="val")
    keys, hp = train.grid(learned_keys(cfg), savi.Hparams(learning_rate=cfg.learning_rate).validate())
    clock = [time.time()]

    def evaluate(step, state):
        out = {"train_seconds": np.full(cfg.learned_seeds, time.time() - clock[0])}
        out["val_video_ari"] = np.asarray(
            [
                np.mean(segment_videos(cfg, scfg, _model(state, i), val, i)[0]["video_ari"])
                for i in range(cfg.learned_seeds)
            ]
        )
        clock[0] = time.time()
        return out

    def run():
        clock[0] = time.time()
        return train.train_many(
            savi.trainer(scfg),
            learned_pool(cfg),
            keys,
            hp,
            checkpointing=train.Checkpointing(ckpt, stamp=f"{study.key}:{digest({'savi': savi.stamp(scfg)})}"),
            evaluation=train.Evaluation(evaluate),
            execution=train.Execution(strategy=savi.default_strategy(jax.default_backend()), vectorised_init=False),
            progress=progress,
            **kw,
        )

    return io.recomputing(ckpt, run)


def centroids(labels, n_ids: int) -> np.ndarray:
    """(F, n_ids, 2) each id's centroid per frame, the mean (y, x) of its pixels in the features'
    [-1, 1] coordinates (:func:`tokdyn.data.scenes.pixel_features`); NaN where it owns no pixel."""
    labels = np.asarray(labels)
    H, W = labels.shape[-2:]
    y = (2.0 * np.arange(H) + 1.0) / H - 1.0
    x = (2.0 * np.arange(W) + 1.0) / W - 1.0
    one = labels[..., None] == np.arange(n_ids)  # (F, H, W, K)
    n = one.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.einsum("fhwk,h->fk", one, y) / n
        cx = np.einsum("fhwk,w->fk", one, x) / n
    return np.stack([cy, cx], axis=-1)


def learned_runs(session: runner.Session, cfg: Config, predictor: str, progress=None) -> dict:
    """The learned condition ``savi-<predictor>``, kept as the part ``savi_<predictor>``: its models
    trained (:func:`fit_learned`, resumed from their checkpoint), then model s scored on seed s's
    videos of every scenario.

    Args:
      session: the runner's :class:`tokdyn.experiment.runner.Session` (its study directory keeps
        the part and the checkpoint).
      cfg: the study's :class:`~tokdyn.studies.video.config.Config`.
      predictor: the learned predictor, a name of :data:`tokdyn.models.savi.PREDICTORS`.
      progress: an :class:`tokdyn.io.Progress` advanced by the training steps, or None.

    Returns:
      The part, a dict of arrays: ``runs__<column>`` (rows of ``runs.csv``: scenarios x
      ``learned_seeds``), ``curve__<column>`` (rows of ``learning_curve.csv``: checkpoints x
      ``learned_seeds``), ``train_seconds`` (per checkpoint, for the summary), and seed 0's first
      video of the first scenario: ``example_ids`` (F, H, W), ``example_xy`` (F, K, 2)
      (:func:`centroids`).

    Raises:
      Unfinished: when training returned before its budget.
    """
    scfg = savi_config(cfg, predictor)
    cond = LEARNED + predictor

    def compute():
        res = fit_learned(session.study, cfg, predictor, progress=progress)
        if not res.finished:
            raise Unfinished(cond)
        rows, ex = [], None
        for sc in cfg.scenarios:
            for s in range(cfg.learned_seeds):
                v = make_videos(cfg, sc, cfg.n_videos, start=s * cfg.n_videos)
                g, labels = segment_videos(cfg, scfg, _model(res.state, s), v, s)
                rows.append(seed_row(sc, cond, s, g))
                if ex is None:
                    ex = labels[0]
        curve = {k: [] for k in CURVE_COLUMNS}
        for c, step in enumerate(res.steps):
            for s in range(cfg.learned_seeds):
                for k, val in (
                    ("condition", cond),
                    ("seed", s),
                    ("step", int(step)),
                    ("loss", float(res.curves["loss"][s, c])),
                    ("val_video_ari", float(res.curves["val_video_ari"][s, c])),
                ):
                    curve[k].append(val)
        return {
            **{f"runs__{k}": v for k, v in run_columns(rows).items()},
            **{f"curve__{k}": np.asarray(v) for k, v in curve.items()},
            "train_seconds": np.asarray(res.curves["train_seconds"][0], np.float64),
            "example_ids": ex.astype(np.int32),
            "example_xy": centroids(ex, cfg.n_tokens),
        }

    return session.part(f"savi_{predictor}", compute, key={"savi": digest(savi.stamp(scfg))})
