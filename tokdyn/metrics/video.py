"""Segmentation through time, on clips ``(F, ...)`` whose ids are track identities:
:func:`video_fg_ari` (the whole clip as one segmentation: an identity switch is an error),
:func:`frame_fg_ari` (every frame alone), :func:`track_labels` (the predicted id that carries each
track in each frame), :func:`track_switches` (changes of it while a track stays visible) and
:func:`identity_persistence` (reappearances after a gap that get back their id).

A clip is an instance mask ``masks_true`` of shape (F, ...) (frames first, e.g. (F, H, W); 0 =
background, ids 1, 2, ... are track identities: the same object has the same id in every frame, as
:func:`tokdyn.data.videos.sprite_videos` gives them) and predicted ids ``labels_pred`` of the same
shape (e.g. the token or slot that wins each pixel in each frame)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tokdyn import _checks
from tokdyn.metrics._labels import check_scene, count_table, host_foreground, host_result, host_scores, int_dtype
from tokdyn.metrics.segmentation import fg_ari


def _check_clip(masks_true, labels_pred, n_true, n_pred, *, bounds_required: bool):
    """A clip: a frame axis first and at least one pixel axis, then the checks of a scene."""
    if np.ndim(masks_true) < 2:
        raise ValueError(
            f"masks_true must have shape (F, ...): frames first, then the pixels of a frame (e.g. "
            f"(F, H, W) or (F, N)), got shape {np.shape(masks_true)}"
        )
    return check_scene(masks_true, labels_pred, n_true, n_pred, bounds_required=bounds_required)


def _check_video_ari(masks_true, labels_pred, n_true, n_pred):
    return _check_clip(masks_true, labels_pred, n_true, n_pred, bounds_required=False)


def _check_tracks(masks_true, labels_pred, n_true, n_pred, min_pixels):
    changed = _check_clip(masks_true, labels_pred, n_true, n_pred, bounds_required=True)
    if np.ndim(min_pixels) != 0 or _checks.dtype_of(min_pixels).kind not in "iu":
        raise TypeError(
            f"min_pixels must be an integer scalar (pixels a track needs in a frame to count as "
            f"visible there), got {min_pixels!r}"
        )
    if _checks.on_host(min_pixels) and int(min_pixels) < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels!r}")
    return changed


# Eager calls on host clips: ids raveled and padded with the background id 0 (left out): one
# program a bucket of lengths, as fg_ari's.
_CLIP_BUCKETS = _checks.Buckets(points=("masks_true", "labels_pred"), flatten=True)


def _host_video_ari(arguments):
    """:func:`video_fg_ari` of host ids in NumPy (no compile); ``None``: the kernel's call."""
    fg = host_foreground(arguments)
    return None if fg is None else host_result(host_scores(*fg)[0])


@_checks.checked_jit(
    _check_video_ari, static_argnames=("n_true", "n_pred"), buckets=_CLIP_BUCKETS, host=_host_video_ari
)
def video_fg_ari(masks_true, labels_pred, *, n_true=None, n_pred=None):
    """Foreground ARI of a whole clip: one segmentation of the foreground pixels of all frames.

    The clip's pixels, all frames together, are one set of points: a point's true class is its
    track id, its predicted cluster its predicted id. So a prediction must keep one id per object
    through the clip: an object labelled ``a`` in some frames and ``b`` in others (an identity
    switch) is an object split in two, and scores below 1 although every frame alone is perfect
    (:func:`frame_fg_ari`). Equal to ``sklearn.metrics.adjusted_rand_score(masks_true[fg],
    labels_pred[fg])`` with ``fg = masks_true > 0``: :func:`fg_ari` of the clip taken whole.

    Args:
      masks_true: (F, ...) integer track ids, frames first (e.g. ``(F, H, W)``); 0 is background
        (negative ids are left out too).
      labels_pred: integer predicted ids, the same shape.
      n_true, n_pred: optional static ints, given together: as in :func:`fg_ari`.

    Returns:
      Scalar float in ``[-0.5, 1]``, with :func:`fg_ari`'s special cases (1 with one foreground
      pixel in the whole clip, NaN with none) and its NaN for traced ids out of range (negative,
      or outside the bounds).
      Jittable and vmappable over clips.
      On host ids the score is computed in float64 NumPy (no compile), as :func:`fg_ari`'s.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks = np.array([[1, 1, 2, 2]] * 3)   # 3 frames of 4 pixels, two tracks
      >>> pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0]])   # the ids swap in frame 2
      >>> print(f"{float(metrics.video_fg_ari(masks, pred)):.3f}")   # every frame alone scores 1
      0.022

    References:
      Kipf, T., Elsayed, G. F., Mahendran, A., Stone, A., Sabour, S., Heigold, G., Jonschkowski,
      R., Dosovitskiy, A. and Greff, K. (2022). Conditional object-centric learning from video.
      *ICLR 2022*. arXiv:2111.12594 (FG-ARI of whole videos).
    """
    return fg_ari(masks_true, labels_pred, n_true=n_true, n_pred=n_pred)


@_checks.checked_jit(_check_video_ari, static_argnames=("n_true", "n_pred"))
def frame_fg_ari(masks_true, labels_pred, *, n_true=None, n_pred=None):
    """Foreground ARI of every frame of a clip alone: ``(F,)``, frame ``t`` equal to
    ``fg_ari(masks_true[t], labels_pred[t])``.

    Blind to identities over time (each frame is scored up to its own relabelling): its mean is the
    per-frame segmentation quality, and its gap to :func:`video_fg_ari` what identity switches cost.
    A frame with one foreground pixel scores 1 and a frame with none NaN (:func:`fg_ari`'s
    conventions): to leave such frames out of a mean, weight each frame by whether it has at least
    two foreground pixels.

    Args:
      masks_true, labels_pred, n_true, n_pred: as in :func:`video_fg_ari`.

    Returns:
      (F,) float (JAX's default float); NaN in the frames holding a traced foreground id out of
      range (negative, or outside the bounds). Jittable and vmappable over clips.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks = np.array([[1, 1, 2, 2]] * 3)   # 3 frames of 4 pixels, two tracks
      >>> pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0]])   # the ids swap in frame 2
      >>> print(np.asarray(metrics.frame_fg_ari(masks, pred)))
      [1. 1. 1.]
    """
    score = functools.partial(fg_ari, n_true=n_true, n_pred=n_pred)
    return jax.vmap(score)(jnp.asarray(masks_true), jnp.asarray(labels_pred))


def _tracks(masks_true, labels_pred, n_true: int, n_pred: int, min_pixels):
    """``(labels, bad)``: (F, n_true - 1) the predicted id holding most of each track's pixels in
    each frame (-1 where the track has fewer than ``min_pixels``), and a scalar bool, some
    foreground pixel's id out of range."""
    frames = masks_true.shape[0]
    t = jnp.reshape(jnp.asarray(masks_true), (frames, -1))  # (F, N)
    p = jnp.reshape(jnp.asarray(labels_pred), (frames, -1))  # (F, N)
    weights = (t > 0).astype(int_dtype())  # (F, N) foreground pixels only
    tables, bad = jax.vmap(lambda a, b, w: count_table(a, b, w, n_true, n_pred))(t, p, weights)  # (F, n_true, n_pred)
    counts = tables[:, 1:]  # (F, K, n_pred), K = n_true - 1 tracks
    size = jnp.sum(counts, axis=-1)  # (F, K)
    best = jnp.argmax(counts, axis=-1).astype(int_dtype())  # (F, K) ties: the lowest id
    seen = size >= jnp.maximum(jnp.asarray(min_pixels), 1)
    return jnp.where(seen, best, -1), jnp.any(bad)


@_checks.checked_jit(_check_tracks, static_argnames=("n_true", "n_pred"))
def track_labels(masks_true, labels_pred, *, n_true, n_pred, min_pixels=1):
    """The predicted id that carries each true track in each frame: ``(F, n_true - 1)``.

    Entry ``[t, k - 1]`` is, among the pixels of track ``k`` in frame ``t``, the predicted id that
    labels most of them (ties: the lowest id); ``-1`` where the track has fewer than
    ``min_pixels`` pixels in that frame (it is then *not visible*: occluded, out of view, absent,
    or too small to trust). Each track is matched on its own, so two tracks may share an id (a
    merge), which is not a switch of either. The building block of :func:`track_switches` and
    :func:`identity_persistence`, and of any other reading of which token follows which object.

    Args:
      masks_true: (F, ...) integer track ids in ``[0, n_true)``, frames first; 0 is background.
      labels_pred: integer predicted ids in ``[0, n_pred)``, the same shape.
      n_true, n_pred: static ints >= 1 (``n_true`` counts the background id).
      min_pixels: int >= 1 (may be traced): the pixels a track needs in a frame to be visible.

    Returns:
      (F, n_true - 1) int (JAX's default int). An id outside its range is a ``ValueError`` for
      host data (any pixel); held in a JAX array, a foreground pixel's out-of-range id makes
      **every entry -2** (no label takes it: ids are >= 0 and -1 is "not visible"). Jittable and
      vmappable over clips.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks = np.array([[1, 1, 2, 2]] * 3)   # 3 frames of 4 pixels, two tracks
      >>> pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0]])   # the ids swap in frame 2
      >>> metrics.track_labels(masks, pred, n_true=3, n_pred=2).tolist()
      [[0, 1], [0, 1], [1, 0]]
    """
    labels, bad = _tracks(masks_true, labels_pred, n_true, n_pred, min_pixels)
    return jnp.where(bad, -2, labels)


@_checks.checked_jit(_check_tracks, static_argnames=("n_true", "n_pred"))
def track_switches(masks_true, labels_pred, *, n_true, n_pred, min_pixels=1):
    """Identity switches while visible: the number of (track, frame) pairs where a track visible
    in two consecutive frames changes the predicted id that carries it.

    With ``c[t, k]`` = :func:`track_labels` (the predicted id holding most of track k's pixels in
    frame t, -1 where the track is not visible), a switch is a pair ``(k, t)``, ``t >= 1``, with
    ``c[t - 1, k] >= 0``, ``c[t, k] >= 0`` and ``c[t, k] != c[t - 1, k]``; the result is their
    count, summed over the tracks. A change across frames where the track is not visible (it was
    occluded, or out of view) is not counted here: :func:`identity_persistence` measures those.
    The number of chances to switch, for a rate, is the number of (k, t) pairs visible in both
    frames: ``jnp.sum((c[1:] >= 0) & (c[:-1] >= 0))``.

    Args:
      masks_true, labels_pred, n_true, n_pred, min_pixels: as in :func:`track_labels`.

    Returns:
      Integer scalar >= 0 (JAX's default int); **-1** when a foreground pixel's traced id lies out
      of range (host ids are refused with a ``ValueError``). 0 for a single frame or no track.
      Jittable and vmappable over clips.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks = np.array([[1, 1, 2, 2]] * 3)   # 3 frames of 4 pixels, two tracks
      >>> pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0]])   # the ids swap in frame 2
      >>> int(metrics.track_switches(masks, pred, n_true=3, n_pred=2))   # both tracks switch once
      2

    References:
      Bernardin, K. and Stiefelhagen, R. (2008). Evaluating multiple object tracking performance:
      the CLEAR MOT metrics. *EURASIP Journal on Image and Video Processing* 2008, 246309
      (identity switches).
    """
    c, bad = _tracks(masks_true, labels_pred, n_true, n_pred, min_pixels)  # (F, K)
    switched = (c[1:] >= 0) & (c[:-1] >= 0) & (c[1:] != c[:-1])  # (F - 1, K)
    return jnp.where(bad, -1, jnp.sum(switched, dtype=int_dtype()))


@_checks.checked_jit(_check_tracks, static_argnames=("n_true", "n_pred"))
def identity_persistence(masks_true, labels_pred, *, n_true, n_pred, min_pixels=1):
    """Identity through absence: of the times a track reappears, how often it gets back its id.

    With ``c[t, k]`` = :func:`track_labels` (-1 where track k is not visible in frame t), a
    *reappearance* of track k is a frame ``t`` where it is visible (``c[t, k] >= 0``), was not
    visible in frame ``t - 1``, and was visible in some earlier frame; let ``s`` be the last such
    earlier frame (the last frame before the gap). The reappearance *keeps* its identity when
    ``c[t, k] == c[s, k]``: the id that carried the track before the gap carries it after. A track
    that first appears late (never seen before) has no reappearance, and one that leaves for good
    none either. The gap may be an occlusion or a stay out of view (the masks cannot tell; with
    :class:`tokdyn.data.videos.Videos`, ``area > 0`` in the gap's frames means occluded).

    Args:
      masks_true, labels_pred, n_true, n_pred, min_pixels: as in :func:`track_labels`.

    Returns:
      ``(kept, reappearances)``: two integer scalars (JAX's default int), ``0 <= kept <=
      reappearances``, summed over the tracks; their ratio is the persistence (sum both over
      clips before dividing, so that a clip without reappearances weighs nothing). Both **-1**
      when a foreground pixel's traced id lies out of range (host ids are refused with a
      ``ValueError``). Jittable and vmappable over clips.

    Examples:
      >>> import numpy as np
      >>> from tokdyn import metrics
      >>> masks = np.array([[1, 1, 2, 2], [0, 0, 2, 2], [1, 1, 2, 2]])   # track 1 hidden in frame 1
      >>> pred = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
      >>> kept, back = metrics.identity_persistence(masks, pred, n_true=3, n_pred=2)
      >>> int(kept), int(back)   # it comes back once, under its id
      (1, 1)
    """
    c, bad = _tracks(masks_true, labels_pred, n_true, n_pred, min_pixels)  # (F, K)
    visible = c >= 0
    frame = jnp.arange(c.shape[0])[:, None]  # (F, 1)
    last = jax.lax.cummax(jnp.where(visible, frame, -1), axis=0)  # (F, K) last visible frame <= t
    before = jnp.concatenate([jnp.full((1, c.shape[1]), -1, last.dtype), last[:-1]])  # last visible frame < t
    after_gap = jnp.concatenate([jnp.zeros((1, c.shape[1]), bool), ~visible[:-1]])  # not visible at t - 1
    back = visible & after_gap & (before >= 0)  # (F, K) reappearances
    kept = back & (c == jnp.take_along_axis(c, jnp.maximum(before, 0), axis=0))
    count = lambda a: jnp.where(bad, -1, jnp.sum(a, dtype=int_dtype()))  # noqa: E731
    return count(kept), count(back)
