"""The data and the scores the object-centric sweeps share: the sprite scenes every Slot Attention
and IODINE of a sweep trains on and is scored on (:func:`sweep_scenes`, :func:`scene_pool`,
:func:`score_scenes`), and the sprite videos of the SAVi sweep (:func:`sweep_videos`,
:func:`video_pool`, :func:`score_videos`). Each is drawn from a fixed key alone, so every model of
every condition sees the same data; the scores are those of a segmentation, whatever model made it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokdyn import metrics
from tokdyn.data import scenes, videos

SCENES_SEED = 0x5CE7E  # the scenes every model of a scene sweep sees: its pool, then held-out scenes
SCENE_POOL = 512  # training scenes (batches drawn from them with replacement)
SCENES_HELD_OUT = 64  # scenes each trained model is scored on, apart from the pool
MAX_OBJECTS = 4  # objects per scene or video: 2 to 4 (sprite_scenes' and sprite_videos' defaults)

VIDEOS_SEED = 0x5A71  # the videos every model of a video sweep sees: its pool, then held-out videos
VIDEO_POOL = 256  # training clips (batches drawn from them with replacement)
VIDEOS_HELD_OUT = 32  # clips each trained model is scored on, apart from the pool


def sweep_scenes(config, which: int, n: int) -> scenes.Scenes:
    """The sweep's sprite scenes (:func:`tokdyn.data.scenes.sprite_scenes` of the model's image
    size ``config.size``, 2 to :data:`MAX_OBJECTS` objects): ``which`` 0 is the training pool, 1
    the held-out scenes, both drawn from :data:`SCENES_SEED` alone, so every model of every
    condition sees the same scenes."""
    key = jax.random.fold_in(jax.random.key(SCENES_SEED), which)
    return scenes.sprite_scenes(key, n, size=config.size, max_objects=MAX_OBJECTS, dtype=jnp.float32)


def scene_pool(config):
    """The training pool every model of a scene sweep shares: (:data:`SCENE_POOL`, size, size, 3)
    images (:func:`sweep_scenes`)."""
    return sweep_scenes(config, 0, SCENE_POOL).images


def score_scenes(held: scenes.Scenes, labels, recon, n_pred: int) -> dict:
    """The scores of one model's segmentation of held-out scenes (traceable).

    Args:
      held: the scenes (:func:`sweep_scenes`), n of them.
      labels: (n, size, size) each pixel's slot, in [0, n_pred) (the argmax of the model's masks).
      recon: (n, size, size, 3) the model's reconstructions.
      n_pred: static, the number of slots.

    Returns:
      ``{"fg_ari", "miou", "mse"}``: the mean over scenes of the FG-ARI
      (:func:`tokdyn.metrics.fg_ari`, the objects' pixels) and of the matched IoU
      (:func:`tokdyn.metrics.matched_iou`, background included), and the reconstruction's mean
      squared error.
    """
    n = held.masks.shape[0]
    flat, labels = held.masks.reshape(n, -1), labels.reshape(n, -1)
    kw = dict(n_true=MAX_OBJECTS + 1, n_pred=n_pred)
    fg = jax.vmap(lambda m, lab: metrics.fg_ari(m, lab, **kw))(flat, labels)
    iou = jax.vmap(lambda m, lab: metrics.matched_iou(m, lab, **kw))(flat, labels)
    return {"fg_ari": jnp.mean(fg), "miou": jnp.mean(iou), "mse": jnp.mean((recon - held.images) ** 2)}


def sweep_videos(config, which: int, n: int) -> videos.Videos:
    """The sweep's sprite videos (:func:`tokdyn.data.videos.sprite_videos` of the model's frame
    size ``config.size`` and clip length ``config.frames``, 2 to :data:`MAX_OBJECTS` objects in
    view throughout, no collisions): ``which`` 0 is the training pool, 1 the held-out videos, both
    drawn from :data:`VIDEOS_SEED` alone, so every model of every condition sees the same videos."""
    key = jax.random.fold_in(jax.random.key(VIDEOS_SEED), which)
    return videos.sprite_videos(
        key, n, frames=config.frames, size=config.size, max_objects=MAX_OBJECTS, dtype=jnp.float32
    )


def video_pool(config):
    """The training pool every model of a video sweep shares: (:data:`VIDEO_POOL`, frames, size,
    size, 3) clips (:func:`sweep_videos`)."""
    return sweep_videos(config, 0, VIDEO_POOL).images


def score_videos(held: videos.Videos, labels, recon, n_pred: int) -> dict:
    """The scores of one model's segmentation of held-out clips (traceable), its slot indices the
    track ids.

    Args:
      held: the clips (:func:`sweep_videos`), n of them.
      labels: (n, F, size, size) each pixel's slot, in [0, n_pred).
      recon: (n, F, size, size, 3) the model's reconstructions.
      n_pred: static, the number of slots.

    Returns:
      ``{"video_ari", "frame_ari", "mse"}``: the mean over clips of the video FG-ARI
      (:func:`tokdyn.metrics.video_fg_ari`: the whole clip one segmentation, so an identity switch
      is an error) and of the per-frame FG-ARI (:func:`tokdyn.metrics.frame_fg_ari`, averaged over
      the frames with two or more foreground pixels), and the reconstruction's mean squared error.
    """
    n, F = held.masks.shape[:2]
    flat, labels = held.masks.reshape(n, F, -1), labels.reshape(n, F, -1)
    kw = dict(n_true=MAX_OBJECTS + 1, n_pred=n_pred)

    def one(m, lab):
        per_frame = metrics.frame_fg_ari(m, lab, **kw)
        scored = jnp.sum(m > 0, axis=1) >= 2
        frame = jnp.sum(jnp.where(scored, per_frame, 0.0)) / jnp.maximum(jnp.sum(scored), 1)
        return metrics.video_fg_ari(m, lab, **kw), frame

    video, frame = jax.vmap(one)(flat, labels)
    return {"video_ari": jnp.mean(video), "frame_ari": jnp.mean(frame), "mse": jnp.mean((recon - held.images) ** 2)}
