"""tokdyn.models.savi: the video model's outputs, its predictors against float64 NumPy versions,
the image model it contains (one frame, no predictor: tokdyn.models.slots exactly), the scan over
frames against a loop of its per-frame step and against shorter clips (causality), training
through tokdyn.train over two seeds, segmentation scored by the temporal metrics, determinism and
bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn import data, metrics, train
from tokdyn.models import savi
from tokdyn.models import slots as slot_attention

# one tiny config shared by the apply, segment and training tests (one compilation each)
CFG = savi.Config(
    frames=3,
    size=8,
    slots=3,
    iterations=1,
    first_iterations=2,
    slot_size=8,
    mlp_hidden=8,
    predictor="transformer",
    predictor_hidden=8,
    predictor_heads=2,
    encoder_channels=(4,),
    encoder_kernel=3,
    decoder="mlp",
    decoder_hidden=8,
    decoder_stride=1,
    slot_init="random",
    masks="decoder",
    train=train.Config(steps=30, steps_per_call=10, warmup=2),
    batch_size=4,
    seeds=2,
    root_seed=0,
)
HP = savi.Hparams(learning_rate=1e-2)
STRATEGY = savi.default_strategy(jax.default_backend())
GEN = dict(size=CFG.size, min_objects=1, max_objects=2, scale=(0.3, 0.5))


def fit(pool, hp=HP, cfg=CFG, **kw):
    execution = train.Execution(STRATEGY, vectorised_init=False)
    return train.train_many(savi.trainer(cfg), pool, *savi.models(cfg, hp), execution=execution, **kw)


def params_np(state, i):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[i], state.params)


@pytest.fixture(scope="module")
def clips():
    """Four sprite clips of 4 frames (one more than CFG.frames), with their masks."""
    return data.sprite_videos(jax.random.key(3), 4, frames=4, **GEN)


@pytest.fixture(scope="module")
def params0():
    return savi.init(jax.random.key(1), CFG)


@pytest.fixture(scope="module")
def moving(params0):
    """params0 with random predictor weights (an initial predictor carries the slots unchanged)."""
    rng = np.random.default_rng(4)
    pred = jax.tree_util.tree_map(
        lambda a: (0.5 * rng.normal(size=a.shape)).astype(np.float32), params0["params"]["predictor"]
    )
    return {"params": {**params0["params"], "predictor": pred}}


# ---------------------------------------------------------------------------------------------- references


def _ln(x, p, eps=1e-6):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * p["scale"] + p["bias"]


def reference_predictor(p, s, kind):
    """The predictors in float64 NumPy: a residual MLP on LayerNorm'd slots, preceded for the
    transformer by multi-head self-attention over the slots (per head: softmax(q k^T / sqrt(d_h)) v,
    with biases; the heads' outputs projected back to D)."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    s = np.asarray(s, np.float64)
    if kind == "none":
        return s
    if kind == "transformer":
        a = p["attn"]
        h = _ln(s, p["norm_attn"])
        q, k, v = (np.einsum("bkd,dhe->bkhe", h, a[n]["kernel"]) + a[n]["bias"] for n in ("query", "key", "value"))
        logits = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        heads = np.einsum("bhqk,bkhe->bqhe", w, v)
        s = s + np.einsum("bqhe,hed->bqd", heads, a["out"]["kernel"]) + a["out"]["bias"]
    hid = np.maximum(_ln(s, p["norm_mlp"]) @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"], 0.0)
    return s + hid @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_predictors_equal_numpy_reference(kind):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 3, 8)).astype(np.float32)
    model = savi.Predictor(kind, 8, 12, heads=2)
    params = model.init(jax.random.key(0), s)["params"]
    apply = jax.jit(model.apply)  # one compilation for every call below (same shapes)
    # untrained, it carries the slots: the residual branches' last layers start at zero
    np.testing.assert_array_equal(np.asarray(apply({"params": params}, s)), s)
    params = jax.tree_util.tree_map(lambda a: (0.5 * rng.normal(size=a.shape)).astype(np.float32), params)
    got = np.asarray(apply({"params": params}, s))
    ref = reference_predictor(params, s, kind)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(ref, s, atol=1e-2)  # it moves the slots
    s2 = s.copy()
    s2[:, 0] += rng.normal(size=s2[:, 0].shape)  # not a constant shift: LayerNorm would remove it
    if kind == "transformer":  # slots interact: moving one slot changes the others' predictions
        assert not np.allclose(reference_predictor(params, s2, kind)[:, 1:], ref[:, 1:], atol=1e-4)
    else:  # each slot alone: moving one leaves the others
        np.testing.assert_allclose(np.asarray(apply({"params": params}, s2))[:, 1:], got[:, 1:], rtol=1e-5, atol=1e-6)
    # permuting the slots permutes the predictions (no slot order inside the predictor)
    perm = np.array([2, 0, 1])
    np.testing.assert_allclose(np.asarray(apply({"params": params}, s[:, perm])), got[:, perm], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- the model


def _check_outputs(out, cfg, b, f):
    K, H = cfg.slots, cfg.size
    assert out.recon.shape == (b, f, H, H, 3)
    assert out.rgb.shape == (b, f, K, H, H, 3)
    assert out.alpha.shape == (b, f, K, H, H)
    assert out.slots.shape == out.predicted.shape == (b, f, K, cfg.slot_size)
    assert out.attention.shape == (b, f, (H // cfg.encoder_stride) ** 2, K)
    assert out.labels.shape == (b, f, H, H) and out.labels.dtype == jnp.int32
    alpha = np.asarray(out.alpha, np.float64)
    assert np.all(alpha >= 0)
    np.testing.assert_allclose(alpha.sum(2), 1.0, atol=1e-5)  # the masks sum to 1 over slots in every frame
    np.testing.assert_allclose(
        np.asarray(out.recon), np.einsum("bfkhw,bfkhwc->bfhwc", alpha, np.asarray(out.rgb)), rtol=1e-5, atol=1e-6
    )
    picked = np.take_along_axis(alpha, np.asarray(out.labels)[:, :, None], 2)[:, :, 0]
    np.testing.assert_allclose(picked, alpha.max(2), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(out.attention).sum(-1), 1.0, atol=1e-5)
    assert all(np.isfinite(np.asarray(a)).all() for a in out)


def test_apply_shapes_masks_and_keys(params0, clips):
    out = savi.apply(jax.random.key(5), params0, CFG, clips.images)
    _check_outputs(out, CFG, 4, 4)  # any number of frames, not only CFG.frames
    again = savi.apply(jax.random.key(5), params0, CFG, clips.images)
    for a, b in zip(out, again):  # deterministic given the key
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = savi.apply(jax.random.key(6), params0, CFG, clips.images)  # the key draws frame 0's slots
    assert not np.allclose(np.asarray(other.slots), np.asarray(out.slots), atol=1e-4)


@pytest.mark.parametrize("predictor", ["none", "mlp"])
def test_one_frame_is_the_image_model(clips, predictor):
    """One frame: the video model is tokdyn.models.slots' autoencoder, with the parameters
    slots.init gives its config from the same key and the same slot noise; frame 0 starts at the
    Gaussian draw mu + exp(log_sigma) z."""
    cfg = dataclasses.replace(CFG, predictor=predictor)
    scfg = savi.slot_config(cfg)
    assert scfg.iterations == cfg.first_iterations and not scfg.implicit
    key, noise_key = jax.random.key(11), jax.random.key(12)
    params = savi.init(key, cfg)
    image_params = slot_attention.init(key, scfg)
    assert ("predictor" in params["params"]) == (predictor != "none")
    assert jax.tree_util.tree_structure(savi.slot_params(params)) == jax.tree_util.tree_structure(image_params)
    for a, b in zip(jax.tree_util.tree_leaves(savi.slot_params(params)), jax.tree_util.tree_leaves(image_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    frames = clips.images[:, :1]
    out = savi.apply(noise_key, params, cfg, frames)
    ref = slot_attention.apply(noise_key, image_params, scfg, frames[:, 0])
    for name in ("recon", "rgb", "alpha", "slots", "attention"):
        np.testing.assert_allclose(
            np.asarray(getattr(out, name))[:, 0], np.asarray(getattr(ref, name)), rtol=1e-5, atol=1e-6, err_msg=name
        )
    assert np.mean(np.asarray(out.labels)[:, 0] == np.asarray(ref.labels)) >= 0.99  # last-bit ties aside
    p = image_params["params"]["slot_attention"]
    z = np.asarray(savi.frame_noise(noise_key, cfg, frames.shape[0]), np.float64)
    start = np.asarray(p["mu"], np.float64) + np.exp(np.asarray(p["log_sigma"], np.float64)) * z
    np.testing.assert_allclose(np.asarray(out.predicted)[:, 0], start, rtol=1e-5, atol=1e-6)


def test_scan_equals_a_loop_of_the_frame_step(moving, clips):
    """apply's scan over frames computes what a Python loop does: encode, start on frame 0, then
    step (predict, correct) frame after frame, each frame decoded; and frame t depends on frames
    0..t only (a clip cut after frame t gives the same first t + 1 frames)."""
    params = moving
    key = jax.random.key(5)
    videos = jnp.asarray(clips.images)
    out = savi.apply(key, params, CFG, videos)
    # each part compiled once (the loop calls it frame after frame) instead of op by op
    encode, start, step, predict, decode = (
        jax.jit(f, static_argnums=1) for f in (savi.encode, savi.start, savi.step, savi.predict, savi.decode)
    )
    z = savi.frame_noise(key, CFG, videos.shape[0])
    feats = encode(params, CFG, videos)
    s, a, predicted = start(params, CFG, feats[:, 0], z)
    rows = []
    for t in range(videos.shape[1]):
        if t:
            s, a, predicted = step(params, CFG, s, feats[:, t])
            np.testing.assert_allclose(
                np.asarray(predict(params, CFG, rows[-1][0])), np.asarray(predicted), rtol=1e-5, atol=1e-6
            )
        recon, _, alpha = decode(params, CFG, s, a)
        rows.append((s, a, predicted, recon, alpha))
    for i, name in enumerate(("slots", "attention", "predicted", "recon", "alpha")):
        loop = np.stack([np.asarray(r[i]) for r in rows], axis=1)
        np.testing.assert_allclose(np.asarray(getattr(out, name)), loop, rtol=1e-4, atol=1e-5, err_msg=name)
    # the predicted slots are not the last frame's: the transformer moved them
    assert not np.allclose(np.asarray(out.predicted)[:, 1:], np.asarray(out.slots)[:, :-1], atol=1e-3)
    short = savi.apply(key, params, CFG, videos[:, :2])
    for name in ("slots", "recon", "alpha"):
        np.testing.assert_allclose(
            np.asarray(getattr(short, name)), np.asarray(getattr(out, name))[:, :2], rtol=1e-4, atol=1e-5, err_msg=name
        )


def test_no_predictor_carries_the_slots_unchanged(clips):
    cfg = dataclasses.replace(CFG, predictor="none")
    out = savi.apply(jax.random.key(5), savi.init(jax.random.key(1), cfg), cfg, clips.images)
    np.testing.assert_array_equal(np.asarray(out.predicted)[:, 1:], np.asarray(out.slots)[:, :-1])


# ---------------------------------------------------------------------------------------------- training


def test_draw_batch_takes_windows_of_consecutive_frames():
    n, fp, frames = 5, 7, 3
    pool = np.zeros((n, fp, 2, 2, 3), np.float32)
    pool[..., 0] = (np.arange(n)[:, None, None, None] + 1) / 10.0  # the clip
    pool[..., 1] = np.arange(fp)[None, :, None, None] / 10.0  # the frame
    got = np.asarray(jax.jit(savi.draw_batch, static_argnums=(2, 3))(jax.random.key(0), pool, 64, frames))
    assert got.shape == (64, frames, 2, 2, 3)
    clip, frame = np.rint(got[:, :, 0, 0, 0] * 10) - 1, np.rint(got[:, :, 0, 0, 1] * 10)
    assert np.all(clip == clip[:, :1])  # one clip per row
    np.testing.assert_array_equal(np.diff(frame, axis=1), 1)  # consecutive frames
    assert set(frame[:, 0].astype(int)) == set(range(fp - frames + 1))  # every start is drawn
    assert len(set(clip[:, 0].astype(int))) == n
    # a pool of clips as long as the window: the clips whole
    whole = np.asarray(savi.draw_batch(jax.random.key(0), pool[:, :frames], 8, frames))
    np.testing.assert_array_equal(np.rint(whole[:, :, 0, 0, 1] * 10), np.tile(np.arange(frames), (8, 1)))


@pytest.fixture(scope="module")
def pool():
    return np.asarray(data.sprite_videos(jax.random.key(0), 32, frames=4, **GEN).images)


@pytest.fixture(scope="module")
def trained(pool):
    logs = []
    res = fit(pool, on_log=lambda step, lg: logs.append((step, lg)))
    return res, logs


@pytest.mark.full
def test_training_over_two_seeds_lowers_the_loss(pool, trained):
    res, logs = trained
    assert res.finished and res.nan_report() == []
    np.testing.assert_array_equal(np.asarray(res.state.step), [CFG.train.steps] * CFG.seeds)
    batch = pool[:8, : CFG.frames]
    init = train.init_states(savi.trainer(CFG), *savi.models(CFG, HP), vectorised=False)[0]
    black = float(np.mean(batch**2))  # the loss of painting every pixel black
    key = jax.random.key(9)
    loss = jax.jit(savi.loss_fn, static_argnames=("cfg",))  # one compilation for every model
    for s in range(CFG.seeds):
        before = float(loss(key, params_np(init, s), CFG, batch)[0])
        after = float(loss(key, params_np(res.state, s), CFG, batch)[0])
        assert after < 0.5 * before and after < 0.5 * black, (s, before, after, black)
    first, last = logs[0][1]["loss"], logs[-1][1]["loss"]
    assert np.all(last < 0.75 * first), (first, last)
    # the seeds are different models
    q = [params_np(res.state, s)["params"]["slot_attention"]["to_q"]["kernel"] for s in range(2)]
    assert not np.array_equal(q[0], q[1])


@pytest.mark.full
def test_training_is_deterministic(pool, trained):
    """The same keys train the same models: a second run's first call is the first run's."""
    again = fit(pool, max_calls=1)
    np.testing.assert_array_equal(again.curves["loss"][:, 0], trained[0].curves["loss"][:, 0])
    np.testing.assert_array_equal(np.asarray(again.state.step), [CFG.train.steps_per_call] * CFG.seeds)


# ---------------------------------------------------------------------------------------------- segment


@pytest.mark.full
def test_segment_ids_are_slots_through_time(trained, clips):
    params = params_np(trained[0].state, 0)
    key = jax.random.key(2)
    labels, final = savi.segment(key, params, CFG, clips.images, chunk=3)
    n, f = clips.images.shape[:2]
    assert labels.shape == (n, f, CFG.size, CFG.size) and labels.dtype == jnp.int32
    assert final.shape == (n, f, CFG.slots, CFG.slot_size)
    lab = np.asarray(labels)
    assert lab.min() >= 0 and lab.max() < CFG.slots
    again, _ = savi.segment(key, params, CFG, clips.images, chunk=3)
    np.testing.assert_array_equal(np.asarray(again), lab)  # deterministic
    # clip i is segmented with frame 0's slot noise from fold_in(key, i) alone (row 0 of a batch of
    # n copies of clip i draws that noise: the batch of the apply test, whose compilation it reuses)
    i = 2
    one = savi.apply(jax.random.fold_in(key, i), params, CFG, np.repeat(clips.images[i : i + 1], n, 0))
    np.testing.assert_allclose(np.asarray(one.slots[0]), np.asarray(final[i]), rtol=1e-4, atol=1e-5)
    assert np.mean(np.asarray(one.labels[0]) == lab[i]) >= 0.99
    # the temporal metrics score the ids
    n_true = GEN["max_objects"] + 1
    video = np.asarray(
        jax.vmap(lambda m, p: metrics.video_fg_ari(m, p, n_true=n_true, n_pred=CFG.slots))(clips.masks, labels)
    )
    frame = np.asarray(
        jax.vmap(lambda m, p: metrics.frame_fg_ari(m, p, n_true=n_true, n_pred=CFG.slots))(clips.masks, labels)
    )
    assert video.shape == (n,) and frame.shape == (n, f)
    assert np.all(np.isfinite(video)) and np.all((video >= -0.5) & (video <= 1.0))
    # collapse, frame by frame: slots.collapse of each frame
    dup, unused = jax.vmap(savi.collapse)(final, labels)
    assert dup.shape == unused.shape == (n, f)
    ref = [slot_attention.collapse(final[i, t], labels[i, t]) for i in range(n) for t in range(f)]
    np.testing.assert_array_equal(np.asarray(dup).ravel(), [int(r[0]) for r in ref])
    np.testing.assert_array_equal(np.asarray(unused).ravel(), [int(r[1]) for r in ref])


def test_identity_switch_costs_video_fg_ari_not_frame_fg_ari(clips):
    """What segment's ids are scored for: the true masks as predictions score 1 whole; the same
    masks with two ids swapped from frame 2 on keep every frame's score and lose the clip's."""
    m = np.asarray(clips.masks[0])
    kw = dict(n_true=3, n_pred=3)
    swapped = m.copy()
    swapped[2:] = np.choose(m[2:], [0, 2, 1])
    assert float(metrics.video_fg_ari(m, m, **kw)) == pytest.approx(1.0)
    np.testing.assert_allclose(np.asarray(metrics.frame_fg_ari(m, swapped, **kw)), 1.0, atol=1e-6)
    if (m[:2] == 1).any() and (m[:2] == 2).any():
        assert float(metrics.video_fg_ari(m, swapped, **kw)) < 0.9


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(predictor="lstm"), "predictor"),
        (dict(frames=0), "frames"),
        (dict(iterations=0), "iterations"),
        (dict(first_iterations=0), "first_iterations"),
        (dict(predictor_heads=3), "predictor_heads"),
        (dict(slots=0), "slots"),
        (dict(decoder="foo"), "decoder"),
        (dict(masks="slots"), "masks"),
        (dict(slot_init="kmeans"), "slot_init"),
        (dict(train=train.Config(steps=12, steps_per_call=5)), "train.steps"),
        (dict(size=8, encoder_stride=3), "encoder_stride"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        savi.Config(**kw).validate()


def test_heads_need_not_divide_without_a_transformer():
    savi.Config(predictor="mlp", predictor_heads=3).validate()


@pytest.mark.parametrize(
    "bad, err",
    [
        (np.zeros((2, 8, 8, 3), np.float32), ValueError),  # one frame without the frame axis
        (np.zeros((2, 3, 16, 16, 3), np.float32), ValueError),  # other size
        (np.zeros((2, 0, 8, 8, 3), np.float32), ValueError),  # no frame
        (np.full((2, 3, 8, 8, 3), 1.5, np.float32), ValueError),  # above 1
        (np.full((2, 3, 8, 8, 3), np.nan, np.float32), ValueError),
        (np.zeros((2, 3, 8, 8, 3), np.uint8), TypeError),
    ],
)
def test_bad_videos_refused_before_compile(params0, bad, err):
    with jax_compilations() as compiled:
        with pytest.raises(err, match="videos"):
            savi.apply(jax.random.key(0), params0, CFG, bad)
        with pytest.raises(err, match="videos"):
            savi.segment(jax.random.key(0), params0, CFG, bad)
    assert compiled == []


def test_bad_input_for_training_refused_before_compile():
    pool = np.zeros((4, 4, CFG.size, CFG.size, 3), np.float32)  # the pool's shape: refused by shape alone
    key = jax.random.key(0)  # (the test's own key, made before the count)
    with jax_compilations() as compiled:
        with pytest.raises(ValueError, match="predictor"):
            savi.trainer(dataclasses.replace(CFG, predictor="gru"))
        with pytest.raises(TypeError, match="Config"):
            savi.trainer(savi.slot_config(CFG))
        with pytest.raises(TypeError, match="Config"):
            savi.apply(key, {}, savi.slot_config(CFG), np.zeros((1, 1, 8, 8, 3), np.float32))
        with pytest.raises(ValueError, match="learning_rate"):
            savi.models(CFG, savi.Hparams(learning_rate=0.0))
        with pytest.raises(TypeError, match="Hparams"):
            savi.models(CFG, slot_attention.Hparams())
        with pytest.raises(ValueError, match="chunk"):
            savi.segment(key, {}, CFG, pool[:1], chunk=0)
    assert compiled == []
    # a pool of clips shorter than the window, or of images: the batch function's own check, traced
    # before any model is initialised (nothing compiled)
    trainer, models, execution = savi.trainer(CFG), savi.models(CFG, HP), train.Execution(STRATEGY)
    with jax_compilations() as compiled:
        for bad in (pool[:, : CFG.frames - 1], pool[:, 0]):
            with pytest.raises(ValueError, match="pool"):
                train.train_many(trainer, bad, *models, execution=execution, max_calls=1)
    assert "/jax/core/compile/backend_compile_duration" not in compiled
