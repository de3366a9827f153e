"""Tests for the object-centric segmentation metrics (tokdyn.metrics.fg_ari, matched_iou,
matched_iou_host) and the auction (tokdyn.assignment): FG-ARI against scikit-learn on sprite scenes
(degenerate scenes included) under vmap, the auction's totals against SciPy's optimum on a few
hundred random matrices (float, integer, rectangular, tied), matched IoU against a NumPy + SciPy
implementation written here, and the validation errors.

Compile time dominates on CPU, so each comparison is one vmapped batch of one shape.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from tokdyn import assignment, metrics

TOL32 = 1e-5
N_TRUE, N_PRED = 6, 7  # ids 0..5 (0 = background), 7 slots


# ---------------------------------------------------------------------------------------------
# Sprite scenes
# ---------------------------------------------------------------------------------------------


def sprite_masks(rng, count, shape=(16, 16), n_objects=N_TRUE - 1):
    """``count`` instance masks: rectangles and discs painted in turn with ids 1..n (later ones
    occlude earlier ones, so an object may vanish), on background 0. int32 ``(count, *shape)``."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((count, h, w), np.int32)
    for i in range(count):
        for k in range(1, int(rng.integers(1, n_objects + 1)) + 1):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            ry, rx = rng.integers(1, max(2, h // 3)), rng.integers(1, max(2, w // 3))
            if rng.random() < 0.5:
                inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            else:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= ry * rx
            masks[i][inside] = k
    return masks


def predictions(rng, masks, n_pred=N_PRED):
    """Slot ids in [0, n_pred) for each scene: a relabelled copy of the truth, with a random share
    of the pixels (0 to 100 %) replaced by random blocks of slots."""
    count, h, w = masks.shape
    pred = np.empty_like(masks)
    for i in range(count):
        perm = rng.permutation(max(n_pred, masks.max() + 1))[: masks.max() + 1] % n_pred
        blocks = rng.integers(0, n_pred, (h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
        noisy = rng.random((h, w)) < rng.choice([0.0, 0.1, 0.4, 1.0])
        pred[i] = np.where(noisy, blocks, perm[masks[i]])
    return pred


def degenerate_scenes(shape=(16, 16)):
    """(masks, preds): no foreground; one foreground pixel; two pixels of one object split; one
    object as one segment; one object split; everything foreground; two objects swapped."""
    zeros = np.zeros((7, *shape), np.int32)
    masks, preds = zeros.copy(), zeros.copy()
    masks[1, 3, 4] = 2  # one foreground pixel
    preds[1] = 3
    masks[2, 0, :2] = 1  # two pixels of one object, split
    preds[2, 0, 1] = 1
    masks[3:5, 4:9, 4:9] = 5  # one object ...
    preds[3] = 6  # ... as one segment (which also covers the background)
    preds[4, 4:9, 4:6] = 2  # ... split in two
    masks[5] = 3  # everything foreground, one object
    preds[5] = np.arange(np.prod(shape)).reshape(shape) % N_PRED
    masks[6, :4], masks[6, 4:8] = 1, 2  # two objects, perfectly segmented under other ids
    preds[6, :4], preds[6, 4:8] = 4, 1
    return masks, preds


@functools.lru_cache(maxsize=None)
def scene_batch(seed=0, count=57):
    """Degenerate scenes then ``count`` sprite scenes (64 in all), (64, 16, 16) each."""
    rng = np.random.default_rng(seed)
    masks = sprite_masks(rng, count)
    deg_m, deg_p = degenerate_scenes()
    return np.concatenate([deg_m, masks]), np.concatenate([deg_p, predictions(rng, masks)])


def sk_fg_ari(m, p):
    """scikit-learn's ARI of the foreground pixels; NaN with none (no partition to score, where
    scikit-learn says 1.0)."""
    fg = m > 0
    return adjusted_rand_score(m[fg], p[fg]) if np.any(fg) else np.nan


# ---------------------------------------------------------------------------------------------
# fg_ari
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bounds", [{"n_true": N_TRUE, "n_pred": N_PRED}, {}], ids=["bounded", "general"])
def test_fg_ari_matches_sklearn_under_vmap(bounds):
    masks, preds = scene_batch()
    got = np.asarray(jax.jit(jax.vmap(functools.partial(metrics.fg_ari, **bounds)))(masks, preds))
    want = np.array([sk_fg_ari(m, p) for m, p in zip(masks, preds)])
    assert np.isnan(got[0]) and np.all(np.isfinite(got[1:]))
    np.testing.assert_allclose(got, want, atol=TOL32)
    # the degenerate scenes: no foreground -> NaN; one pixel, one object as one segment -> 1; split -> 0
    np.testing.assert_array_equal(want[[1, 3]], 1.0)
    assert want[2] == 0.0 and want[4] == 0.0 and want[6] == 1.0
    assert len(np.unique(np.round(want, 3))) > 20  # the random scenes are not all alike


def test_fg_ari_other_shapes_and_single_calls():
    """Flattened (N,) and 3-D inputs, negative ids as excluded padding, and single calls equal to
    the vmapped batch."""
    masks, preds = scene_batch()
    flat_m, flat_p = masks.reshape(len(masks), -1), preds.reshape(len(preds), -1)
    for i in (0, 1, 4, 10, 33):
        got = float(metrics.fg_ari(flat_m[i], flat_p[i]))  # general path, (256,)
        np.testing.assert_allclose(got, sk_fg_ari(flat_m[i], flat_p[i]), atol=TOL32)  # NaN with no foreground
    vol_m, vol_p = masks[7:11], preds[7:11]  # (4, 16, 16) as one 3-D scene
    got = float(metrics.fg_ari(vol_m, vol_p, n_true=N_TRUE, n_pred=N_PRED))
    assert abs(got - sk_fg_ari(vol_m, vol_p)) <= TOL32
    padded = np.where(np.arange(256) < 200, flat_m[20], -1).astype(np.int32)  # -1: left out
    got = float(metrics.fg_ari(padded, flat_p[20]))
    assert abs(got - sk_fg_ari(flat_m[20][:200], flat_p[20][:200])) <= TOL32
    assert np.isnan(float(metrics.fg_ari(np.zeros(0, np.int32), np.zeros(0, np.int32))))  # no pixels at all


# ---------------------------------------------------------------------------------------------
# The auction against SciPy
# ---------------------------------------------------------------------------------------------


def optimum(benefit):
    rows, cols = linear_sum_assignment(benefit, maximize=True)
    return benefit[rows, cols].sum()


def assert_valid(cols, shape):
    cols = np.asarray(cols)
    n_rows, n_cols = shape
    assert cols.shape == (n_rows,) and cols.dtype == np.int32
    assert np.all((cols >= 0) & (cols < n_cols)) and len(np.unique(cols)) == n_rows, cols


def auction_gaps(batch):
    """(B,) optimum minus the auction's total, each assignment checked to be valid."""
    cols = np.asarray(jax.jit(jax.vmap(assignment.linear_assignment))(batch))
    gaps = []
    for benefit, col in zip(batch, cols):
        assert_valid(col, benefit.shape)
        b64 = benefit.astype(np.float64) if benefit.dtype.kind == "f" else benefit.astype(np.int64)
        gaps.append(optimum(b64) - b64[np.arange(len(col)), col].sum())
    return np.array(gaps), cols


def test_auction_float_totals_equal_scipy():
    """200 uniform 5 x 5 matrices and 100 tied ones (entries in {0, 0.5, 1}, a few constant) in
    one batch."""
    rng = np.random.default_rng(7)
    ties = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), (100, 5, 5))
    ties[:4] = np.array([0.0, 0.5, 1.0, 0.25])[:, None, None]  # constant matrices: every assignment is optimal
    batch = np.concatenate([rng.random((200, 5, 5)).astype(np.float32), ties])
    gaps, cols = auction_gaps(batch)
    margin = 5 / assignment.levels(5)  # benefits span at most 1
    assert np.all(gaps >= -1e-9) and gaps.max() <= margin + 1e-6, gaps.max()
    np.testing.assert_array_equal(gaps[200:], 0.0)  # ties: exact totals
    # Uniform entries: optima unique by far more than the margin, so SciPy's very assignment.
    want = np.stack([linear_sum_assignment(b, maximize=True)[1] for b in batch[:200]])
    np.testing.assert_array_equal(cols[:200], want)


def test_auction_rectangular_totals_equal_scipy():
    rng = np.random.default_rng(8)
    batch = rng.random((100, 3, 7)).astype(np.float32)
    batch[:20] = np.round(batch[:20] * 2) / 2  # tied rectangular problems
    batch[20:40] *= rng.random((20, 3, 1)) < 0.5  # rows of zeros (absent objects' IoU rows)
    gaps, _ = auction_gaps(batch)
    assert np.all(gaps >= -1e-9) and gaps.max() <= 3 / assignment.levels(7) + 1e-6, gaps.max()
    assert_valid(assignment.linear_assignment(np.array([[0.1, 0.9, 0.3, 0.9, 0.2]])), (1, 5))  # one row


def test_auction_integer_totals_exact():
    """Integer benefits: exact (many ties) while the range is at most levels(C); beyond it, on the
    grid, within the stated margin."""
    rng = np.random.default_rng(9)
    batch = rng.integers(0, 10, (150, 6, 6))
    batch[100:] = rng.integers(-(10**6), 10**6, (50, 6, 6))
    batch[125:] *= 1000  # range ~2e9 > levels(6) = 2**23
    gaps, _ = auction_gaps(batch)
    np.testing.assert_array_equal(gaps[:125], 0)
    span = batch[125:].max(axis=(1, 2)) - batch[125:].min(axis=(1, 2))
    assert np.all(gaps[125:] >= 0) and np.all(gaps[125:] <= 6 * span / assignment.levels(6))


def test_auction_trivial_shapes_and_host_version():
    assert assignment.linear_assignment(np.zeros((0, 3), np.float32)).shape == (0,)
    assert_valid(assignment.linear_assignment(np.ones((1, 1), np.float32)), (1, 1))
    np.testing.assert_array_equal(assignment.linear_assignment_host([[1, 5, 2], [4, 6, 1]]), [1, 0])
    assert assignment.levels(5) == 2**23 and assignment.levels(63) == 2**20


# ---------------------------------------------------------------------------------------------
# matched_iou against a NumPy + SciPy implementation
# ---------------------------------------------------------------------------------------------


def reference_matched_iou(mask, pred, n_true, n_pred):
    """Mean over present objects of the IoU (over all pixels) with the Hungarian-matched segment."""
    objects = [k for k in range(1, n_true) if np.any(mask == k)]
    if not objects:
        return 1.0
    iou = np.zeros((len(objects), n_pred))
    for r, k in enumerate(objects):
        for s in range(n_pred):
            inter = np.sum((mask == k) & (pred == s))
            union = np.sum((mask == k) | (pred == s))
            iou[r, s] = inter / union
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return iou[rows, cols].sum() / len(objects)


@pytest.mark.parametrize("n_pred", [N_PRED, 3], ids=["more_slots", "fewer_slots_than_objects"])
def test_matched_iou_matches_reference(n_pred):
    masks, preds = scene_batch()
    preds = preds % n_pred
    fn = jax.jit(jax.vmap(functools.partial(metrics.matched_iou, n_true=N_TRUE, n_pred=n_pred)))
    got = np.asarray(fn(masks, preds))
    want = np.array([reference_matched_iou(m, p, N_TRUE, n_pred) for m, p in zip(masks, preds)])
    host = np.array([metrics.matched_iou_host(m, p, n_true=N_TRUE, n_pred=n_pred) for m, p in zip(masks, preds)])
    np.testing.assert_allclose(host, want, atol=1e-12)
    np.testing.assert_allclose(got, want, atol=TOL32)
    assert got[0] == 1.0  # no object: 1.0, not NaN
    if n_pred == N_PRED:
        assert got[6] == 1.0  # a perfect segmentation (relabelled)
        assert got[3] == pytest.approx(25 / 256)  # one slot for object and background: IoU over all pixels
        assert len(np.unique(np.round(want, 3))) > 20


def test_matched_iou_single_calls():
    m = np.array([[0, 1, 1], [2, 2, 0]], np.int32)
    assert float(metrics.matched_iou(m, np.zeros_like(m), n_true=1 + 3, n_pred=1)) == pytest.approx(
        reference_matched_iou(m, np.zeros_like(m), 4, 1), abs=TOL32
    )  # one slot: at most one object matched
    assert float(metrics.matched_iou(np.zeros((2, 3), np.int32), m, n_true=1, n_pred=3)) == 1.0  # no objects
    assert metrics.matched_iou_host(np.zeros((2, 3), np.int32), m, n_true=1, n_pred=3) == 1.0


# ---------------------------------------------------------------------------------------------
# Validation errors
# ---------------------------------------------------------------------------------------------


def test_error_messages():
    m = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match=r"masks_true and labels_pred must have the same shape.*\(4, 4\).*\(4, 5\)"):
        metrics.fg_ari(m, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match=r"masks_true and labels_pred must have the same shape"):
        jax.jit(lambda a, b: metrics.matched_iou(a, b, n_true=2, n_pred=2))(m, m[:, :3])  # traced too
    with pytest.raises(TypeError, match=r"masks_true must hold integer ids, got dtype float64"):
        metrics.fg_ari(m.astype(float), m)
    with pytest.raises(TypeError, match=r"labels_pred must hold integer ids, got dtype float32"):
        jax.vmap(lambda a, b: metrics.matched_iou(a, b, n_true=2, n_pred=2))(m[None], m[None].astype(np.float32))
    with pytest.raises(ValueError, match=r"n_true must be an int >= 1, got 0"):
        metrics.matched_iou(m, m, n_true=0, n_pred=2)
    with pytest.raises(ValueError, match=r"n_pred must be an int >= 1, got 0"):
        metrics.fg_ari(m, m, n_true=2, n_pred=0)
    with pytest.raises(TypeError, match=r"n_pred must be a static Python int.*2.0"):
        metrics.matched_iou(m, m, n_true=2, n_pred=2.0)
    with pytest.raises(ValueError, match=r"given together.*n_true=3 and n_pred=None"):
        metrics.fg_ari(m, m, n_true=3)
    with pytest.raises(TypeError, match=r"n_true and n_pred are required"):
        metrics.matched_iou(m, m, n_true=None, n_pred=None)
    bad = m.copy()
    bad[1, 2] = 5
    message = r"labels_pred must hold ids in \[0, n_pred\) = \[0, 3\), got 5 at index \(1, 2\)"
    with pytest.raises(ValueError, match=message):
        metrics.matched_iou(m, bad, n_true=2, n_pred=3)
    with pytest.raises(ValueError, match=r"masks_true must hold ids in \[0, n_true\) = \[0, 2\), got 5"):
        metrics.matched_iou_host(bad, m, n_true=2, n_pred=3)


def test_auction_error_messages():
    with pytest.raises(ValueError, match=r"benefit must have shape \(R, C\) with R <= C.*\(3, 2\)"):
        assignment.linear_assignment(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"benefit must have shape \(R, C\) with R <= C"):
        assignment.linear_assignment_host(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"benefit must be a 2-D array"):
        assignment.linear_assignment(np.zeros(3))
    with pytest.raises(TypeError, match=r"benefit must be an integer or float array, got dtype bool"):
        assignment.linear_assignment(np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"benefit must be finite: it holds 1 NaN"):
        assignment.linear_assignment(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"benefit holds 4294967296, outside the range of JAX's int32"):
        assignment.linear_assignment(np.array([[0, 2**32]]))
