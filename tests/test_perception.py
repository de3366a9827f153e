"""Token dynamics of Qwen2.5-VL's perception tokens (``tokdyn.diagnostics.perception``) on the tiny random
checkpoint under ``tests/fixtures/qwen2_5_vl_tiny``: the vision tower's taps against the model's plain forward
features and a NumPy merger, the masks on the patch grids against a per-cell count, and every reported number
against a direct computation (NumPy and SciPy on the plain forward features, scikit-learn's ARI). The weights
are random: these tests check the arithmetic, and the numbers are no finding about a trained model."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("safetensors")

from scipy.sparse.csgraph import connected_components  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from tokdyn import dynamics  # noqa: E402
from tokdyn.data import scenes  # noqa: E402
from tokdyn.diagnostics import perception  # noqa: E402
from tokdyn.models import qwen2_5_vl  # noqa: E402
from tokdyn.models.qwen2_5_vl import probes as qwen2_5_vl_probes  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
SIZE = (112, 112)  # an 8 x 8 patch grid, 4 x 4 merged tokens
PROCESSOR = qwen2_5_vl.ImageProcessor(max_pixels=SIZE[0] * SIZE[1])
CFG = perception.Config(n_tokens=4, methods=("baseline",), n_steps=40)


@pytest.fixture(scope="module")
def model():
    return qwen2_5_vl.load(FIXTURE, dtype="float32")


@pytest.fixture(scope="module")
def scene_batch():
    return scenes.sprite_scenes(jax.random.key(3), 2, size=56, min_objects=2, max_objects=3, scale=(0.3, 0.45))


@pytest.fixture(scope="module")
def result(model, scene_batch):
    return perception.perception_dynamics(
        model, jax.random.key(0), scene_batch.images, scene_batch.masks, cfg=CFG, processor=PROCESSOR, size=SIZE
    )


def plain_features(model, scene_batch):
    """Per image: the merged features of the model's own forward pass (``image_features``) and the pixel rows."""
    images = perception.as_uint8(scene_batch.images)
    out = []
    for image in images:
        batch = PROCESSOR(qwen2_5_vl.processor.resize(image, *SIZE))
        plan = qwen2_5_vl.vision.plan(model.config.vision, batch["image_grid_thw"])
        merged = qwen2_5_vl.model.image_features_jit(model.config, model.params, batch["pixel_values"], plan)
        out.append((np.asarray(merged, np.float64), batch))
    return out


def numpy_merger(model, patches, rows, cols):
    """The merger in NumPy on raster-ordered patch features: RMSNorm, 2x2 blocks concatenated, fc1, GELU, fc2."""
    p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), model.params["vision"]["merger"])
    x = patches / np.sqrt(np.mean(patches**2, -1, keepdims=True) + 1e-6) * p["norm"]
    m = model.config.vision.spatial_merge_size
    x = x.reshape(rows // m, m, cols // m, m, -1).transpose(0, 2, 1, 3, 4).reshape((rows // m) * (cols // m), -1)
    h = x @ p["fc1"]["kernel"] + p["fc1"]["bias"]
    from scipy.special import erf

    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    return h @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def test_vision_taps_equal_plain_forward_and_numpy_merger(model, scene_batch):
    """``merged`` equals the model's ``image_features``; ``patches`` (raster order) through a NumPy merger gives
    them too, so the pre-merger features and their order are the ones the merger reads."""
    for merged, batch in plain_features(model, scene_batch)[:1]:
        grid = batch["image_grid_thw"]
        plan = qwen2_5_vl.vision.plan(model.config.vision, grid)
        raster = qwen2_5_vl_probes.raster_order(model.config, grid)
        taps = jax.jit(qwen2_5_vl_probes.vision_taps, static_argnums=0)(
            model.config, model.params, batch["pixel_values"], plan, raster
        )
        scale = np.abs(merged).max()
        assert scale > 0.1
        np.testing.assert_allclose(np.asarray(taps["merged"]), merged, atol=1e-5 * scale)
        rows, cols = grid[0, 1:]
        again = numpy_merger(model, np.asarray(taps["patches"], np.float64), rows, cols)
        np.testing.assert_allclose(again, merged, atol=1e-4 * scale)
        shuffled = numpy_merger(model, np.asarray(taps["patches"], np.float64)[::-1], rows, cols)
        assert np.abs(shuffled - merged).max() > 1e-2 * scale  # the order matters: the check can fail


def test_grid_masks_majority():
    """Each cell takes the segment covering most of its pixels, counted cell by cell; an aligned mask maps exactly."""
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (2, 23, 17))
    got = perception.grid_masks(masks, (5, 3), 4)
    for i in range(2):
        for r in range(5):
            for c in range(3):
                rows = [y for y in range(23) if int((y + 0.5) * 5 / 23) == r]
                cols = [x for x in range(17) if int((x + 0.5) * 3 / 17) == c]
                counts = np.bincount(masks[i][np.ix_(rows, cols)].ravel(), minlength=4)
                assert got[i, r * 3 + c] == np.argmax(counts)
    blocks = rng.integers(0, 5, (1, 4, 4))
    aligned = np.kron(blocks, np.ones((1, 14, 14), int))
    np.testing.assert_array_equal(perception.grid_masks(aligned, (4, 4), 5), blocks.reshape(1, 16))


def test_standardise():
    """Unit RMS radius about the mean, against NumPy; a uniform image's features (equal up to rounding) are flat:
    zeros, never magnified rounding errors."""
    x = np.random.default_rng(0).normal(2.0, 3.0, (30, 7)).astype(np.float32)
    xs, radius, flat = perception.standardise(x)
    c = x.astype(np.float64) - x.mean(0)
    np.testing.assert_allclose(float(radius), np.sqrt(np.trace(np.cov(c.T, bias=True))), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(xs), c / np.sqrt((c**2).sum(1).mean()), atol=1e-5)
    assert not bool(flat)
    same = np.ones((30, 7), np.float32) + np.random.default_rng(1).normal(0, 1e-7, (30, 7)).astype(np.float32)
    xs, radius, flat = perception.standardise(same)
    assert bool(flat) and float(radius) > 0 and np.all(np.asarray(xs) == 0)


def ari_np(a, b):
    return adjusted_rand_score(np.asarray(a), np.asarray(b))


def test_scores_equal_direct_computation(model, scene_batch, result):
    """Every number of the result from the plain forward features: standardisation, tau_c, the rule's run
    (``dynamics.run`` on the NumPy-standardised features), k-means at a Lloyd fixed point, hard labels at the
    final tokens, ARI / FG-ARI (scikit-learn), groups (SciPy's connected components), usage."""
    assert result["names"] == ("baseline", "kmeans")
    assert result["grid"] == {"patches": (8, 8), "merged": (4, 4)}
    level = result["merged"]
    for i, (feats, _) in enumerate(plain_features(model, scene_batch)):
        centred = feats - feats.mean(0)
        radius = np.sqrt((centred**2).sum(-1).mean())
        xs = centred / radius
        np.testing.assert_allclose(level["radius"][i], radius, rtol=1e-5)
        tau_c = 2 * np.linalg.eigvalsh(np.cov(xs.T, bias=True)).max()
        np.testing.assert_allclose(level["tau_c"][i], tau_c, rtol=1e-4)
        segs = result["segments"]["merged"][i]
        assert len(np.unique(segs)) >= 2  # objects survive on the merged grid: the ARI can tell partitions apart
        # the rule, run directly from the same initial tokens at tau = ratio * tau_c
        hp = dynamics.Hparams(temperature=CFG.temperature_ratio * tau_c)
        direct = dynamics.run(xs.astype(np.float32), level["start"][i], hp, n_steps=CFG.n_steps, tol=CFG.tol_rel)
        np.testing.assert_allclose(level["tokens"][i, 0], np.asarray(direct.tokens), atol=1e-3)
        for m, name in enumerate(result["names"]):
            tokens, labels = level["tokens"][i, m].astype(np.float64), level["labels"][i, m]
            d2 = ((xs[:, None] - tokens[None]) ** 2).sum(-1)
            gap = np.sort(d2, 1)[:, 1] - d2.min(1)
            sure = gap > 1e-4
            np.testing.assert_array_equal(labels[sure], d2.argmin(1)[sure])
            close = np.sqrt(((tokens[:, None] - tokens[None]) ** 2).sum(-1)) < CFG.merge_rel
            groups, component = connected_components(close, directed=False)
            part = component[labels]  # the token groups' partition of the patches
            km_tokens = level["tokens"][i, -1].astype(np.float64)
            km_close = np.sqrt(((km_tokens[:, None] - km_tokens[None]) ** 2).sum(-1)) < CFG.merge_rel
            km_part = connected_components(km_close, directed=False)[1][level["labels"][i, -1]]
            assert ari_np(level["partition"][i, m], part) == 1.0
            if name == "kmeans":
                assert level["converged"][i, m]
                for k in np.unique(labels):
                    np.testing.assert_allclose(tokens[k], xs[labels == k].mean(0), atol=1e-4)
            np.testing.assert_allclose(level["ari_kmeans"][i, m], ari_np(km_part, part), atol=1e-5)
            np.testing.assert_allclose(level["ari"][i, m], ari_np(segs, part), atol=1e-5)
            fg = segs > 0
            np.testing.assert_allclose(level["fg_ari"][i, m], ari_np(segs[fg], part[fg]), atol=1e-5)
            assert level["groups"][i, m] == groups
            assert level["collapsed"][i, m] == (groups == 1)
            assert level["merged"][i, m] == (groups < CFG.n_tokens)
            used = len(np.unique(part))
            assert level["n_used"][i, m] == used
            assert level["under_used"][i, m] == (used < min(len(np.unique(segs)), CFG.n_tokens))


def test_patch_level(result):
    """The patch level is scored on the 8 x 8 grid."""
    level = result["patches"]
    assert level["labels"].shape == (2, 2, 64)
    for m in range(2):
        tokens = level["tokens"][0, m].astype(np.float64)
        close = np.sqrt(((tokens[:, None] - tokens[None]) ** 2).sum(-1)) < CFG.merge_rel
        part = connected_components(close, directed=False)[1][level["labels"][0, m]]
        segs = result["segments"]["patches"][0]
        np.testing.assert_allclose(level["ari"][0, m], ari_np(segs, part), atol=1e-5)
        fg = segs > 0
        np.testing.assert_allclose(level["fg_ari"][0, m], ari_np(segs[fg], part[fg]), atol=1e-5)


@pytest.mark.full
def test_unmasked_images(model, scene_batch, result):
    """Images given as a list without masks: NaN ARIs, the same partitions as with masks (same key)."""
    images = list(perception.as_uint8(scene_batch.images))
    bare = perception.perception_dynamics(model, jax.random.key(0), images, cfg=CFG, processor=PROCESSOR, size=SIZE)
    assert np.isnan(bare["merged"]["ari"]).all() and np.isnan(bare["patches"]["fg_ari"]).all()
    np.testing.assert_array_equal(bare["merged"]["labels"], result["merged"]["labels"])  # same key, same run


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cfg=perception.Config(methods=("nope",))), "methods"),
        (dict(cfg=perception.Config(methods=["baseline"])), "methods"),
        (dict(cfg=perception.Config(n_tokens=1)), "n_tokens"),
        (dict(cfg=perception.Config(n_tokens=17)), "n_tokens"),
        (dict(cfg=perception.Config(temperature_ratio=0.0)), "temperature_ratio"),
        (dict(size=(100, 112)), "size"),
        (dict(size=(224, 224)), "pixels"),
        (dict(masks=np.zeros((2, 5, 5), int)), "masks"),
        (dict(masks=-np.ones((2, 56, 56), int)), "masks"),
    ],
)
def test_refusals(model, scene_batch, kwargs, match):
    """Bad settings, sizes and masks are refused before anything compiles, naming the argument."""
    kwargs = dict(dict(cfg=CFG, processor=PROCESSOR, size=SIZE), **kwargs)
    with pytest.raises(ValueError, match=match):
        perception.perception_dynamics(model, jax.random.key(0), scene_batch.images, **kwargs)


def test_refusals_of_type(scene_batch):
    with pytest.raises(TypeError, match="model"):
        perception.perception_dynamics(object(), jax.random.key(0), scene_batch.images, cfg=CFG)


@pytest.mark.full
def test_uniform_images_are_flat_and_collapse(model):
    """Black and grey images: the tower's patches are one feature up to rounding; every rule ends in one group."""
    images = np.zeros((2, 56, 56, 3), np.uint8)
    images[1] = 128
    out = perception.perception_dynamics(model, jax.random.key(0), images, cfg=CFG, processor=PROCESSOR, size=SIZE)
    for level in perception.LEVELS:
        assert out[level]["flat"].all() and (out[level]["groups"] == 1).all()
        assert np.isfinite(out[level]["tokens"]).all()


@pytest.mark.full
def test_every_method_runs(model, scene_batch):
    """All built-in rules side by side in one program: finite tokens and scores in range for each."""
    out = perception.perception_dynamics(
        model, jax.random.key(1), scene_batch.images, scene_batch.masks, processor=PROCESSOR, size=SIZE
    )
    assert out["names"] == (*dynamics.METHODS, "kmeans")
    for level in perception.LEVELS:
        assert np.isfinite(out[level]["tokens"]).all()
        assert ((out[level]["ari"] >= -0.5) & (out[level]["ari"] <= 1)).all()
    assert "RANDOM MODEL" in perception.table(out, random_model=True)
