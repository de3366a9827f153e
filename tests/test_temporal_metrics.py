"""Tests for the temporal segmentation metrics of tokdyn.metrics: video_fg_ari and frame_fg_ari
against scikit-learn (the whole clip as one segmentation, and every frame alone), track_labels,
track_switches and identity_persistence against plain NumPy implementations written here (from
the docstrings' definitions) and on hand-built label sequences whose counts are worked out by
hand, on sprite videos (tokdyn.data.videos: occlusion, objects leaving and re-entering the view)
with predictions that switch identities; edge cases, sentinels and the checks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from conftest import without_host_reads
from tokdyn import metrics
from tokdyn.data import videos

N_TRUE, N_PRED = 5, 6  # ids 0..4 (4 objects at most), 6 predicted ids
BOUNDS = dict(n_true=N_TRUE, n_pred=N_PRED)


# ---------------------------------------------------------------------------------------------- clips


def predictions(rng, masks, n_pred=N_PRED):
    """Predicted ids for clips (C, F, H, W): the truth under a permutation of ids that is redrawn at
    a frame with probability 0.3 (identity switches), and in some clips random 4x4 blocks over a
    share of the pixels (segmentation errors)."""
    pred = np.empty_like(masks)
    for c in range(masks.shape[0]):
        perm = rng.permutation(n_pred)
        share = rng.choice([0.0, 0.0, 0.1, 0.4])
        for t in range(masks.shape[1]):
            if rng.random() < 0.3:
                perm = rng.permutation(n_pred)
            h, w = masks.shape[2:]
            blocks = rng.integers(0, n_pred, (h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
            pred[c, t] = np.where(rng.random((h, w)) < share, blocks, perm[masks[c, t]])
    return pred


@functools.lru_cache(maxsize=None)
def clips():
    """24 sprite videos of 8 frames (16 x 16, up to 4 objects, an arena wider than the view), and
    predictions: (24, 8, 16, 16) int32 each."""
    v = videos.sprite_videos(
        jax.random.key(4),
        24,
        frames=8,
        size=16,
        min_objects=1,
        max_objects=4,
        scale=(0.3, 0.5),
        speed=(0.1, 0.2),
        margin=0.4,
    )
    masks = np.asarray(v.masks)
    return masks, predictions(np.random.default_rng(0), masks)


def clip_from_sequences(seqs, pixels=3):
    """A clip from per-track label sequences: ``seqs[k][t]`` is the predicted id of track k + 1 in
    frame t, or None where the track is not visible. Each track has its own block of ``pixels``
    pixels per frame, background (0, predicted 0) where it is not visible. (F, K * pixels) each."""
    K, F = len(seqs), len(seqs[0])
    m = np.zeros((F, K * pixels), np.int32)
    p = np.zeros((F, K * pixels), np.int32)
    for k, seq in enumerate(seqs):
        for t, lab in enumerate(seq):
            if lab is not None:
                m[t, k * pixels : (k + 1) * pixels] = k + 1
                p[t, k * pixels : (k + 1) * pixels] = lab
    return m, p


# ---------------------------------------------------------------------------------------------- references


def ref_track_labels(m, p, n_true, n_pred, min_pixels=1):
    """(F, n_true - 1): the most frequent predicted id on each track's pixels (lowest on ties), -1
    where the track has fewer than min_pixels pixels."""
    F = m.shape[0]
    out = -np.ones((F, n_true - 1), np.int64)
    for t in range(F):
        for k in range(1, n_true):
            on = p[t][m[t] == k]
            if on.size >= min_pixels:
                out[t, k - 1] = np.argmax(np.bincount(on, minlength=n_pred))
    return out


def ref_switches(c):
    F, K = c.shape
    return sum(1 for k in range(K) for t in range(1, F) if c[t, k] >= 0 and c[t - 1, k] >= 0 and c[t, k] != c[t - 1, k])


def ref_persistence(c):
    kept = events = 0
    for k in range(c.shape[1]):
        last, was_visible = None, False
        for t in range(c.shape[0]):
            visible = c[t, k] >= 0
            if visible and not was_visible and last is not None:
                events += 1
                kept += int(c[t, k] == c[last, k])
            if visible:
                last = t
            was_visible = visible
    return kept, events


def sk_fg_ari(m, p):
    """scikit-learn's ARI of the foreground pixels; NaN with none (no partition to score, where
    scikit-learn says 1.0)."""
    fg = m > 0
    return adjusted_rand_score(m[fg], p[fg]) if np.any(fg) else np.nan


# ---------------------------------------------------------------------------------------------- FG-ARI


@pytest.mark.parametrize("bounds", [BOUNDS, {}], ids=["bounded", "general"])
def test_video_and_frame_fg_ari_match_sklearn_under_vmap(bounds):
    masks, preds = clips()
    video = np.asarray(jax.jit(jax.vmap(functools.partial(metrics.video_fg_ari, **bounds)))(masks, preds))
    frame = np.asarray(jax.jit(jax.vmap(functools.partial(metrics.frame_fg_ari, **bounds)))(masks, preds))
    assert video.shape == (24,) and frame.shape == (24, 8)
    np.testing.assert_allclose(video, [sk_fg_ari(m, p) for m, p in zip(masks, preds)], atol=1e-5)
    np.testing.assert_allclose(
        frame, [[sk_fg_ari(a, b) for a, b in zip(m, p)] for m, p in zip(masks, preds)], atol=1e-5
    )
    # identity switches cost the clip's score, not the frames': perfect frames, imperfect clips
    perfect_frames = np.all(frame == 1.0, axis=1)
    assert np.any(perfect_frames & (video < 0.99))
    assert len(np.unique(np.round(video, 3))) > 10


def test_an_identity_switch_is_an_error_of_the_clip_only():
    """Two objects whose predicted ids swap half-way: every frame is perfect, the clip is not, and
    the score is scikit-learn's on the clip's foreground pixels."""
    m = np.zeros((4, 6), np.int32)
    m[:, :2], m[:, 2:4] = 1, 2
    p = np.where(m == 1, 3, np.where(m == 2, 5, 0)).astype(np.int32)
    p[2:] = np.where(m[2:] == 1, 5, np.where(m[2:] == 2, 3, 0))  # swapped from frame 2
    np.testing.assert_allclose(metrics.frame_fg_ari(m, p), 1.0)
    got = float(metrics.video_fg_ari(m, p, n_true=3, n_pred=6))
    np.testing.assert_allclose(got, sk_fg_ari(m, p), atol=1e-6)
    assert got < 0.5
    np.testing.assert_allclose(float(metrics.video_fg_ari(m, np.where(m > 0, m + 2, 0))), 1.0)  # consistent ids


# ---------------------------------------------------------------------------------------------- tracks


def test_track_metrics_match_numpy_on_sprite_videos():
    masks, preds = clips()
    for min_pixels in (1, 4):
        kw = dict(BOUNDS, min_pixels=min_pixels)
        labels = np.asarray(jax.jit(jax.vmap(functools.partial(metrics.track_labels, **kw)))(masks, preds))
        switches = np.asarray(jax.jit(jax.vmap(functools.partial(metrics.track_switches, **kw)))(masks, preds))
        kept, back = (
            np.asarray(a)
            for a in jax.jit(jax.vmap(functools.partial(metrics.identity_persistence, **kw)))(masks, preds)
        )
        refs = [ref_track_labels(m, p, N_TRUE, N_PRED, min_pixels) for m, p in zip(masks, preds)]
        np.testing.assert_array_equal(labels, np.stack(refs))
        np.testing.assert_array_equal(switches, [ref_switches(c) for c in refs])
        np.testing.assert_array_equal(np.stack([kept, back], 1), [ref_persistence(c) for c in refs])
        # the clips exercise every case: switches, reappearances kept and lost, tracks never seen
        assert np.sum(switches > 0) >= 5 and back.sum() >= 5 and 0 < kept.sum() < back.sum()
        assert np.any(labels == -1)


def test_switch_and_persistence_counts_on_hand_built_sequences():
    """Worked by hand. Track 1: 0 0 1 1 . 1 2 -> switches at frames 2 and 6; reappears at 5 with
    the id it had at 3 (kept). Track 2: 3 . . 3 3 0 0 -> one switch (frame 5); reappears at 3 with
    its id (kept). Track 3: . . 2 2 . 4 . -> first seen at 2 (not a reappearance); reappears at 5
    with another id (lost), leaves at 6 for good. Totals: 3 switches, 2 of 3 reappearances kept."""
    _ = None
    seqs = [[0, 0, 1, 1, _, 1, 2], [3, _, _, 3, 3, 0, 0], [_, _, 2, 2, _, 4, _]]
    m, p = clip_from_sequences(seqs)
    kw = dict(n_true=4, n_pred=5)
    expect = np.array([[-1 if x is None else x for x in s] for s in seqs]).T
    np.testing.assert_array_equal(metrics.track_labels(m, p, **kw), expect)
    assert int(metrics.track_switches(m, p, **kw)) == 3
    assert tuple(int(a) for a in metrics.identity_persistence(m, p, **kw)) == (2, 3)
    # a gap does not hide a switch from the persistence measure, nor count as one
    m, p = clip_from_sequences([[1, _, 2], [1, 1, 2]])
    assert int(metrics.track_switches(m, p, n_true=3, n_pred=3)) == 1
    assert tuple(int(a) for a in metrics.identity_persistence(m, p, n_true=3, n_pred=3)) == (0, 1)
    # a long gap compares with the last frame before it
    m, p = clip_from_sequences([[2, 2, _, _, _, 2, _, 1]])
    assert int(metrics.track_switches(m, p, n_true=2, n_pred=3)) == 0
    assert tuple(int(a) for a in metrics.identity_persistence(m, p, n_true=2, n_pred=3)) == (1, 2)


def test_majority_ties_and_min_pixels():
    m = np.array([[1, 1, 1, 2, 2], [1, 1, 1, 2, 2], [1, 0, 0, 2, 2]], np.int32)
    p = np.array([[4, 4, 2, 3, 1], [2, 4, 2, 0, 0], [4, 1, 1, 0, 0]], np.int32)
    kw = dict(n_true=3, n_pred=5)
    # track 1: majority 4, then 2; track 2: a tie 3 / 1 -> 1 (the lowest), then 0, 0
    np.testing.assert_array_equal(metrics.track_labels(m, p, **kw), [[4, 1], [2, 0], [4, 0]])
    np.testing.assert_array_equal(metrics.track_labels(m, p, min_pixels=2, **kw), [[4, 1], [2, 0], [-1, 0]])
    np.testing.assert_array_equal(
        metrics.track_labels(m, p, min_pixels=jnp.int32(3), **kw), [[4, -1], [2, -1], [-1, -1]]
    )
    assert int(metrics.track_switches(m, p, **kw)) == 3  # track 1: 4 -> 2 -> 4; track 2: 1 -> 0
    assert int(metrics.track_switches(m, p, min_pixels=2, **kw)) == 2
    # background predictions never count
    q = np.where(m == 0, 3, p).astype(np.int32)
    np.testing.assert_array_equal(metrics.track_labels(m, q, **kw), metrics.track_labels(m, p, **kw))


def test_edge_cases():
    m, p = clip_from_sequences([[1], [2]])  # a single frame
    assert int(metrics.track_switches(m, p, n_true=3, n_pred=3)) == 0
    assert tuple(int(a) for a in metrics.identity_persistence(m, p, n_true=3, n_pred=3)) == (0, 0)
    np.testing.assert_allclose(metrics.frame_fg_ari(m, p), [1.0])
    empty = np.zeros((4, 9), np.int32)  # no foreground at all
    assert metrics.track_labels(empty, empty, n_true=1, n_pred=2).shape == (4, 0)
    assert int(metrics.track_switches(empty, empty, n_true=1, n_pred=2)) == 0
    assert tuple(int(a) for a in metrics.identity_persistence(empty, empty, n_true=3, n_pred=2)) == (0, 0)
    np.testing.assert_array_equal(metrics.track_labels(empty, empty, n_true=3, n_pred=2), -1)
    # no foreground pixel: nothing to partition, NaN (scikit-learn's 1.0 would read as a perfect score)
    assert np.all(np.isnan(metrics.frame_fg_ari(empty, empty)))
    assert np.isnan(float(metrics.video_fg_ari(empty, empty)))
    assert np.isnan(float(metrics.video_fg_ari(empty, empty, n_true=1, n_pred=1)))


def test_traced_ids_out_of_range_give_sentinels():
    """A foreground pixel's id out of range, held in a JAX array: every track label -2, the counts
    -1, the ARIs NaN (in the bad frame only for frame_fg_ari); on a background pixel it is ignored."""
    m, p = clip_from_sequences([[1, 1, 2], [0, None, 0]])
    kw = dict(n_true=3, n_pred=3)
    fns = jax.jit(
        lambda a, b: (
            metrics.track_labels(a, b, **kw),
            metrics.track_switches(a, b, **kw),
            metrics.identity_persistence(a, b, **kw),
            metrics.frame_fg_ari(a, b, **kw),
            metrics.video_fg_ari(a, b, **kw),
        )
    )
    good = fns(jnp.asarray(m), jnp.asarray(p))
    assert int(good[1]) == 1 and np.all(np.isfinite(np.asarray(good[3])))
    bad = p.copy()
    bad[1, 0] = 7  # a pixel of track 1 in frame 1
    labels, switches, (kept, back), frame, video = fns(jnp.asarray(m), jnp.asarray(bad))
    assert np.all(np.asarray(labels) == -2) and int(switches) == -1 and int(kept) == int(back) == -1
    frame = np.asarray(frame)
    assert np.isnan(frame[1]) and np.all(np.isfinite(frame[[0, 2]])) and np.isnan(float(video))
    background = p.copy()
    background[1, -1] = 7  # a background pixel (track 2 is not visible in frame 1)
    labels, switches, *_ = fns(jnp.asarray(m), jnp.asarray(background))
    np.testing.assert_array_equal(labels, metrics.track_labels(m, p, **kw))
    with pytest.raises(ValueError, match=r"labels_pred must hold ids in \[0, n_pred\) = \[0, 3\), got 7"):
        metrics.track_switches(m, bad, **kw)


Z = np.zeros((2, 4), np.int32)  # a clip of 2 frames of 4 pixels


@pytest.mark.parametrize(
    "fn, args, kwargs, match",
    [
        ("video_fg_ari", (Z[0], Z[0]), {}, r"masks_true must have shape \(F, \.\.\.\)"),
        ("frame_fg_ari", (Z, np.zeros((2, 5), np.int32)), {}, "same shape"),
        ("frame_fg_ari", (Z.astype(np.float32), Z), {}, "masks_true must hold integer"),
        ("track_switches", (Z, Z), {}, "missing a required argument: .n_true"),
        ("track_labels", (Z, Z), dict(n_true=2), "missing a required argument: .n_pred"),
        (
            "identity_persistence",
            (Z + 3, Z),
            dict(n_true=2, n_pred=2),
            r"masks_true must hold ids in \[0, n_true\) = \[0, 2\), got 3",
        ),
        ("track_labels", (Z, Z), dict(n_true=2, n_pred=2, min_pixels=0), "min_pixels must be >= 1"),
        ("track_labels", (Z, Z), dict(n_true=2, n_pred=2, min_pixels=1.5), "min_pixels must be an integer scalar"),
    ],
)
def test_bad_input(fn, args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        getattr(metrics, fn)(*args, **kwargs)


def test_one_compilation_for_a_batch_of_clips():
    """A vmapped call over clips compiles once and takes clips of any content."""
    masks, preds = clips()
    f = jax.jit(jax.vmap(functools.partial(metrics.identity_persistence, **BOUNDS)))
    f(masks[:4], preds[:4])
    from conftest import jax_compilations

    with jax_compilations() as events:
        f(masks[4:8], preds[4:8])
    assert events == []


def test_checks_never_copy_device_arrays_to_the_host():
    m, p = (jnp.asarray(a) for a in clip_from_sequences([[1, None, 1], [0, 0, 2]]))
    kw = dict(n_true=3, n_pred=3)
    without_host_reads(metrics.video_fg_ari, m, p, **kw)
    without_host_reads(metrics.frame_fg_ari, m, p)
    without_host_reads(metrics.track_labels, m, p, **kw)
    without_host_reads(metrics.track_switches, m, p, min_pixels=jnp.int32(2), **kw)
    without_host_reads(metrics.identity_persistence, m, p, **kw)
