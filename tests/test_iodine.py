"""tokdyn.models.iodine: the ELBO against a float64 NumPy computation from the same decoder outputs
(the spatial mixture and the closed-form Gaussian KL), the refinement network's gradient inputs
against jax.grad of that checked ELBO (and the closed forms of the likelihood's gradients),
shapes and masks, training through tokdyn.train over two seeds, segmentation scored by FG-ARI
(against scikit-learn), bad input refused before anything compiles, determinism given keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from conftest import f32_atol, jax_compilations, segmented_in_chunks
from tokdyn import metrics, train
from tokdyn.data import scenes
from tokdyn.models import iodine
from tokdyn.models import savi, slots

# one tiny config shared by every test (one compilation of each program)
CFG = iodine.Config(
    size=8,
    slots=3,
    latent_size=4,
    iterations=2,
    pixel_scale=0.2,
    decoder="mlp",
    decoder_hidden=8,
    refine_channels=(4,),
    refine_hidden=8,
    train=train.Config(steps=30, steps_per_call=10, warmup=2),
    batch_size=8,
    seeds=2,
    root_seed=0,
)
HP = iodine.Hparams(learning_rate=1e-2)
EXECUTION = train.Execution(iodine.default_strategy(jax.default_backend()), vectorised_init=False)


def fit(pool, **kw):
    return train.train_many(iodine.trainer(CFG), pool, *iodine.models(CFG, HP), execution=EXECUTION, **kw)


def squares(n, size, seed):
    """``n`` images: two flat-coloured 3 x 3 squares on a grey background (floats in [0, 1])."""
    rng = np.random.default_rng(seed)
    out = np.full((n, size, size, 3), 0.2, np.float32)
    for i in range(n):
        for _ in range(2):
            y, x = rng.integers(0, size - 3, 2)
            out[i, y : y + 3, x : x + 3] = rng.uniform(0.5, 1.0, 3)
    return out


def np64(a):
    return np.asarray(a, np.float64)


def _logsumexp(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(a - m).sum(axis=axis))


def reference_elbo(images, rgb, logits, loc, log_scale, sigma):
    """float64 NumPy: ``(elbo, log_lik, kl, pixel log-lik, masks, mask posterior)`` of images
    (B, H, W, 3) under the slots' spatial mixture (RGB means (B, K, H, W, 3), mask logits
    (B, K, H, W), the same sigma on every channel) and the closed-form KL of N(loc, exp(log_scale)^2)
    to N(0, I), summed over slots and dimensions."""
    x, mu, lg, loc, ls = map(np64, (images, rgb, logits, loc, log_scale))
    log_m = lg - _logsumexp(lg, 1)[:, None]
    d2 = ((x[:, None] - mu) ** 2).sum(-1)
    log_n = -0.5 * d2 / sigma**2 - 3 * np.log(sigma) - 1.5 * np.log(2 * np.pi)
    joint = log_m + log_n
    pixel = _logsumexp(joint, 1)
    ll = pixel.sum((1, 2))
    kl = 0.5 * (loc**2 + np.exp(2 * ls) - 1 - 2 * ls).sum((1, 2))
    return ll - kl, ll, kl, pixel, np.exp(log_m), np.exp(joint - pixel[:, None])


def jnp_elbo(params, images, loc, log_scale, noise, sigma):
    """The same ELBO in jnp (float32), from the model's decoder (``iodine.decode``): the test's own
    function of ``(loc, log_scale)``, checked against the NumPy reference and differentiated."""
    rgb, logits = iodine.decode(params, CFG, loc + jnp.exp(log_scale) * noise)
    ll = mixture_ll(images, rgb, logits, sigma)
    kl = 0.5 * jnp.sum(loc**2 + jnp.exp(2 * log_scale) - 1 - 2 * log_scale, axis=(1, 2))
    return ll - kl


def mixture_ll(images, rgb, logits, sigma):
    log_m = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    log_n = -0.5 * jnp.sum((images[:, None] - rgb) ** 2, -1) / sigma**2 - 3 * jnp.log(sigma) - 1.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(jax.scipy.special.logsumexp(log_m + log_n, axis=1), axis=(1, 2))


@pytest.fixture(scope="module")
def params0():
    return jax.jit(iodine.init, static_argnums=1)(jax.random.key(0), CFG)


@pytest.fixture(scope="module")
def case():
    """Random images, posteriors and draws of a batch of 2 (away from the initial posterior)."""
    rng = np.random.default_rng(4)
    B, K, D = 2, CFG.slots, CFG.latent_size
    images = rng.uniform(0, 1, (B, CFG.size, CFG.size, 3)).astype(np.float32)
    loc = rng.normal(size=(B, K, D)).astype(np.float32)
    log_scale = (0.5 * rng.normal(size=(B, K, D))).astype(np.float32)
    noise = rng.normal(size=(B, K, D)).astype(np.float32)
    return images, loc, log_scale, noise


@pytest.fixture(scope="module")
def evaluated(params0, case):
    return jax.jit(iodine.evaluate, static_argnames=("cfg",))(params0, CFG, *case)


# ---------------------------------------------------------------------------------------------- the ELBO


def test_parameters(params0):
    p = params0["params"]
    assert set(p) == {"decoder", "refiner", "loc", "log_scale"}
    np.testing.assert_array_equal(p["loc"], np.zeros(CFG.latent_size))
    np.testing.assert_array_equal(p["log_scale"], np.zeros(CFG.latent_size))
    # 17 image-shaped inputs per pixel; 4 D vector inputs beside the dense layer's features into the LSTM
    assert p["refiner"]["conv0"]["kernel"].shape == (3, 3, 17, CFG.refine_channels[0])
    assert p["refiner"]["lstm"]["ii"]["kernel"].shape == (CFG.refine_hidden + 4 * CFG.latent_size, CFG.refine_hidden)
    assert p["refiner"]["out"]["kernel"].shape == (CFG.refine_hidden, 2 * CFG.latent_size)
    assert p["decoder"]["dec_out"]["kernel"].shape[-1] == 4  # RGB and the mask logit


def elbo_scale(images, ev, loc, log_scale, sigma) -> float:
    """The magnitude an ELBO is summed from, the largest over the batch: the sum of |log-likelihood|
    over pixels plus |KL| (float32 rounding of the ELBO scales with it, not with the ELBO itself)."""
    _, _, kl, pixel, _, _ = reference_elbo(images, ev.rgb, ev.logits, loc, log_scale, sigma)
    return float((np.abs(pixel).sum((1, 2)) + np.abs(kl)).max())


def test_elbo_equals_numpy_reference(params0, case, evaluated):
    images, loc, log_scale, noise = case
    ev = evaluated
    # the decoder outputs are those of the posterior's draw
    rgb, logits = iodine.decode(params0, CFG, loc + np.exp(log_scale) * noise)
    # two programs (the evaluation's, an eager decode): a decoder's outputs are sums of many products,
    # whose rounding scales with the outputs' magnitude (64 float32 units at the largest)
    np.testing.assert_allclose(np.asarray(ev.rgb), np.asarray(rgb), rtol=1e-5, atol=f32_atol(rgb, ulps=64))
    np.testing.assert_allclose(np.asarray(ev.logits), np.asarray(logits), rtol=1e-5, atol=f32_atol(logits, ulps=64))
    elbo, ll, kl, pixel, masks, post = reference_elbo(images, ev.rgb, ev.logits, loc, log_scale, CFG.pixel_scale)
    # the ELBO is a difference of sums over pixels (log-likelihood) and latents (KL): its rounding
    # scales with the summands' magnitude, not with the ELBO's own (which may be near 0)
    atol = 1e-5 * elbo_scale(images, ev, loc, log_scale, CFG.pixel_scale)
    np.testing.assert_allclose(np.asarray(ev.elbo), elbo, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(np.asarray(ev.log_lik), ll, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ev.kl), kl, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ev.pixel_log_lik), pixel, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ev.masks), masks, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ev.posterior), post, rtol=1e-4, atol=1e-6)
    assert np.all(kl > 0.1) and np.all(np.isfinite(ll))  # both terms are there
    # the check can fail: another pixel scale or another posterior scale moves the reference
    assert not np.allclose(reference_elbo(images, ev.rgb, ev.logits, loc, log_scale, 0.25)[0], elbo, rtol=1e-3)
    assert not np.allclose(
        reference_elbo(images, ev.rgb, ev.logits, loc, log_scale + 0.1, CFG.pixel_scale)[2], kl, rtol=1e-3
    )


def test_extreme_decoder_outputs_stay_finite():
    """Mask logits of +-80 and means far from every pixel: the mixture in log space is finite and
    equals the float64 reference (a naive product of densities underflows to log 0)."""
    rng = np.random.default_rng(1)
    B, K, S = 2, 3, 4
    images = rng.uniform(0, 1, (B, S, S, 3)).astype(np.float32)
    rgb = rng.uniform(-3, 4, (B, K, S, S, 3)).astype(np.float32)
    logits = rng.choice([-80.0, 0.0, 80.0], (B, K, S, S)).astype(np.float32)
    ll, pixel, post = jax.jit(iodine.mixture_log_likelihood, static_argnums=3)(images, rgb, logits, 0.05)
    _, ref_ll, _, ref_pixel, _, ref_post = reference_elbo(
        images, rgb, logits, np.zeros((B, K, 1)), np.zeros((B, K, 1)), 0.05
    )
    assert np.all(np.isfinite(np.asarray(ll))) and np.all(np.isfinite(np.asarray(post)))
    np.testing.assert_allclose(np.asarray(pixel), ref_pixel, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(post), ref_post, atol=1e-6)
    assert np.min(ref_pixel) < -1000  # far outside any float32 density's range


def test_gradient_inputs_equal_jax_grad_of_the_checked_elbo(params0, case, evaluated):
    images, loc, log_scale, noise = case
    ev = evaluated
    sigma = CFG.pixel_scale
    # the test's own jnp ELBO equals the NumPy reference ...
    mine = jax.jit(jnp_elbo, static_argnums=5)(params0, images, loc, log_scale, noise, sigma)
    np.testing.assert_allclose(
        np.asarray(mine),
        reference_elbo(images, ev.rgb, ev.logits, loc, log_scale, sigma)[0],
        rtol=1e-5,
        atol=1e-5 * elbo_scale(images, ev, loc, log_scale, sigma),
    )
    # ... and its gradients are the refinement network's inputs
    g_loc, g_ls = jax.jit(
        jax.grad(lambda l, s: jnp.sum(jnp_elbo(params0, images, l, s, noise, sigma)), argnums=(0, 1))
    )(loc, log_scale)
    scale = np.abs(np.asarray(g_loc)).max()
    np.testing.assert_allclose(np.asarray(ev.grad_loc), np.asarray(g_loc), rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(
        np.asarray(ev.grad_log_scale), np.asarray(g_ls), rtol=1e-4, atol=1e-5 * np.abs(np.asarray(g_ls)).max()
    )
    g_rgb, g_logits = jax.jit(jax.grad(lambda r, lg: jnp.sum(mixture_ll(images, r, lg, sigma)), argnums=(0, 1)))(
        ev.rgb, ev.logits
    )
    np.testing.assert_allclose(
        np.asarray(ev.grad_rgb), np.asarray(g_rgb), rtol=1e-4, atol=1e-5 * np.abs(np.asarray(g_rgb)).max()
    )
    np.testing.assert_allclose(np.asarray(ev.grad_logits), np.asarray(g_logits), rtol=1e-4, atol=1e-6)
    # the closed forms: d/d mu_k = posterior_k (x - mu_k) / sigma^2, d/d logit_k = posterior_k - mask_k
    _, _, _, _, masks, post = reference_elbo(images, ev.rgb, ev.logits, loc, log_scale, sigma)
    np.testing.assert_allclose(
        np.asarray(ev.grad_rgb),
        post[..., None] * (np64(images)[:, None] - np64(ev.rgb)) / sigma**2,
        rtol=1e-4,
        atol=1e-5 * np.abs(np.asarray(g_rgb)).max(),
    )
    np.testing.assert_allclose(np.asarray(ev.grad_logits), post - masks, atol=1e-5)
    assert np.abs(np.asarray(ev.grad_loc)).max() > 1e-2  # not trivially zero
    # the inputs are constants under differentiation (no second derivatives in training)
    d = jax.jit(jax.grad(lambda l: jnp.sum(iodine.evaluate(params0, CFG, images, l, log_scale, noise).grad_loc)))(loc)
    np.testing.assert_array_equal(np.asarray(d), 0.0)
    # without gradients: the same ELBO, zeros for the gradient fields
    plain = jax.jit(iodine.evaluate, static_argnames=("cfg", "gradients"))(params0, CFG, *case, gradients=False)
    # another program (no gradients): the same sums, maybe in another order (1e-6 of the summands)
    atol = 1e-6 * elbo_scale(case[0], ev, case[1], case[2], CFG.pixel_scale)
    np.testing.assert_allclose(np.asarray(plain.elbo), np.asarray(ev.elbo), rtol=1e-6, atol=atol)
    np.testing.assert_array_equal(np.asarray(plain.grad_loc), 0.0)


# ---------------------------------------------------------------------------------------------- apply


@pytest.fixture(scope="module")
def images():
    return squares(4, CFG.size, seed=1)


def test_apply_shapes_masks_and_the_elbo_of_its_posteriors(params0, images):
    key = jax.random.key(5)
    out = iodine.apply(key, params0, CFG, images)
    B, K, S, D, T = images.shape[0], CFG.slots, CFG.size, CFG.latent_size, CFG.iterations + 1
    assert out.recon.shape == (B, S, S, 3) and out.rgb.shape == (B, K, S, S, 3) and out.masks.shape == (B, K, S, S)
    assert out.loc.shape == out.log_scale.shape == (B, K, D)
    assert out.elbo.shape == out.kl.shape == (B, T)
    assert out.labels.shape == (B, S, S) and out.labels.dtype == jnp.int32
    masks = np64(out.masks)
    assert np.all(masks >= 0)
    np.testing.assert_allclose(masks.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out.recon), np.einsum("bkhw,bkhwc->bhwc", masks, np64(out.rgb)), rtol=1e-5, atol=1e-6
    )
    picked = np.take_along_axis(masks, np.asarray(out.labels)[:, None], 1)[:, 0]
    np.testing.assert_allclose(picked, masks.max(1), rtol=1e-6, atol=1e-7)
    # the first ELBO is that of the learned initial posterior, the last that of the final one, each
    # at its own draw of the posterior noise (the NumPy reference from the decoder's outputs)
    noise = np.asarray(iodine.posterior_noise(key, CFG, B))
    p = params0["params"]
    decode = jax.jit(iodine.decode, static_argnames=("cfg",))  # one compilation for both posteriors
    for t, (loc, ls) in (
        (0, (np.broadcast_to(p["loc"], (B, K, D)), np.broadcast_to(p["log_scale"], (B, K, D)))),
        (T - 1, (np.asarray(out.loc), np.asarray(out.log_scale))),
    ):
        rgb, logits = decode(params0, CFG, loc + np.exp(ls) * noise[:, t])
        elbo, _, kl, _, _, _ = reference_elbo(images, rgb, logits, loc, ls, CFG.pixel_scale)
        np.testing.assert_allclose(np.asarray(out.elbo[:, t]), elbo, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(out.kl[:, t]), kl, rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.asarray(out.loc), np.broadcast_to(p["loc"], (B, K, D)))  # the refinements moved it
    # the loss is the paper's weighted sum: t / T on the negative ELBO of posterior t = 1 .. T
    np.testing.assert_allclose(np.asarray(iodine.iteration_weights(CFG)), np.arange(1, T + 1) / T)
    loss, again = jax.jit(iodine.loss_fn, static_argnames=("cfg",))(key, params0, CFG, images)
    np.testing.assert_allclose(float(loss), np.mean(-np64(out.elbo) @ (np.arange(1, T + 1) / T)), rtol=1e-5)


@pytest.mark.parametrize("decoder, stride", [("conv", 2), ("cnn", 1), ("mlp", 2)])
def test_every_decoder_gives_the_outputs_shapes(images, decoder, stride):
    """Each of slots' broadcast decoders (traced only: shapes, no compilation)."""
    cfg = iodine.Config(**{**CFG.__dict__, "decoder": decoder, "decoder_stride": stride}).validate()
    B, K, S = images.shape[0], cfg.slots, cfg.size
    out = jax.eval_shape(
        lambda k: iodine.infer(iodine.init(k, cfg), cfg, images, iodine.posterior_noise(k, cfg, B))[0],
        jax.random.key(0),
    )
    assert out.masks.shape == (B, K, S, S) and out.rgb.shape == (B, K, S, S, 3) and out.labels.shape == (B, S, S)
    assert out.elbo.shape == (B, cfg.iterations + 1)


def test_deterministic_given_keys(params0, images):
    a = iodine.apply(jax.random.key(5), params0, CFG, images)
    b = iodine.apply(jax.random.key(5), params0, CFG, images)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    c = iodine.apply(jax.random.key(6), params0, CFG, images)
    assert not np.allclose(np.asarray(c.loc), np.asarray(a.loc))
    # init is a function of its key
    p1 = jax.jit(iodine.init, static_argnums=1)(jax.random.key(0), CFG)
    for x, y in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(params0)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def pool():
    return squares(64, CFG.size, seed=0)


@pytest.fixture(scope="module")
def trained(pool):
    logs = []
    res = fit(pool, on_log=lambda step, lg: logs.append((step, lg)))
    return res, logs


@pytest.mark.full
def test_training_lowers_the_loss(pool, trained):
    """Two seeds trained by train_many: on held-out images at a fixed key, each model's loss falls
    well below that of its initial parameters, and its ELBO (averaged over the iterations with the
    loss's weights) beats the likelihood of the best flat image (each image's mean colour at every
    pixel, the same pixel scale, no KL: NumPy), which a model that does not see the image cannot."""
    res, logs = trained
    assert res.finished and res.nan_report() == []
    keys, _ = iodine.models(CFG, HP)
    held = squares(16, CFG.size, seed=9)
    key = jax.random.key(11)
    x = np64(held)
    d2 = ((x - x.mean((1, 2), keepdims=True)) ** 2).sum(-1)
    constant = np.mean(
        (-0.5 * d2 / CFG.pixel_scale**2 - 3 * np.log(CFG.pixel_scale) - 1.5 * np.log(2 * np.pi)).sum((1, 2))
    )
    loss = jax.jit(iodine.loss_fn, static_argnames=("cfg",))
    for s in range(CFG.seeds):
        before, _ = loss(key, jax.jit(iodine.init, static_argnums=1)(slots.run_keys(keys[s])[0], CFG), CFG, held)
        after, out = loss(key, iodine.params_of(res.state, s), CFG, held)
        w = np.asarray(iodine.iteration_weights(CFG))
        elbo = np64(out.elbo).mean(0) @ w / w.sum()
        assert float(after) < 0.5 * float(before), (s, float(before), float(after))
        assert elbo > constant + 5.0, (s, np64(out.elbo).mean(0), constant)
    first, last = logs[0][1]["loss"], logs[-1][1]["loss"]
    assert np.all(last < 0.5 * first), (first, last)
    assert set(logs[0][1]) >= {"loss", "grad_norm", "elbo_first", "elbo_last"}


@pytest.mark.full
def test_training_is_deterministic_and_seeds_differ(pool, trained):
    res, logs = trained
    again = fit(pool, max_calls=1)
    for k in ("loss", "grad_norm", "elbo_last"):  # the same program on the same keys: the same numbers
        np.testing.assert_array_equal(again.curves[k][:, 0], res.curves[k][:, 0])
    a, b = (np.asarray(iodine.params_of(res.state, s)["params"]["refiner"]["out"]["kernel"]) for s in range(2))
    assert not np.array_equal(a, b)
    tr = iodine.trainer(CFG)
    assert tr is iodine.trainer(iodine.Config(**{**CFG.__dict__, "refine_channels": [4]}))
    assert (
        tr.config
        == CFG.train
        == train.Config(steps=30, steps_per_call=10, warmup=2, decay="cosine", final_fraction=0.05, clip_norm=1.0)
    )
    assert iodine.default_strategy("cpu") == "loop" and iodine.default_strategy("gpu") == "scan"
    assert iodine.stamp(CFG) != slots.stamp(slots.Config()) and '"model": "iodine"' in iodine.stamp(CFG)


# ---------------------------------------------------------------------------------------------- segment


@pytest.mark.full
def test_segment_labels_and_fg_ari(trained):
    params = iodine.params_of(trained[0].state, 0)
    sc = scenes.sprite_scenes(jax.random.key(3), 5, size=CFG.size, min_objects=1, max_objects=2, scale=(0.3, 0.5))
    imgs, masks = np.asarray(sc.images), np.asarray(sc.masks)
    key = jax.random.key(2)
    lab, loc2 = segmented_in_chunks(iodine.segment, key, params, CFG, imgs, CFG.latent_size, rtol=1e-4, atol=1e-5)
    # image i is inferred with the posterior noise of fold_in(key, i) alone (row 0 of a batch of 4
    # copies of image i draws that noise: the batch of the apply tests, whose compilation it reuses)
    i = 3
    one = iodine.apply(jax.random.fold_in(key, i), params, CFG, np.repeat(imgs[i : i + 1], 4, 0))
    np.testing.assert_allclose(np.asarray(one.loc[0]), np.asarray(loc2[i]), rtol=1e-4, atol=1e-5)
    # FG-ARI is computable and is scikit-learn's ARI over the foreground pixels
    fg = jax.vmap(lambda m, l: metrics.fg_ari(m, l, n_true=3, n_pred=CFG.slots))(
        masks.reshape(5, -1), lab.reshape(5, -1)
    )
    for j in range(5):
        on = masks[j] > 0
        ref = adjusted_rand_score(masks[j][on], lab[j][on])
        np.testing.assert_allclose(float(fg[j]), ref, atol=1e-5)
    # duplicates and unused slots, as for Slot Attention
    dup, unused = jax.vmap(iodine.collapse)(loc2, lab)
    for j in range(5):
        assert int(unused[j]) == CFG.slots - len(np.unique(lab[j]))
        assert 0 <= int(dup[j]) < CFG.slots


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(slots=0), ValueError, "slots"),
        (dict(latent_size=0), ValueError, "latent_size"),
        (dict(iterations=0), ValueError, "iterations"),
        (dict(iterations=2.0), TypeError, "iterations"),
        (dict(pixel_scale=0.0), ValueError, "pixel_scale"),
        (dict(pixel_scale=float("nan")), ValueError, "pixel_scale"),
        (dict(decoder="foo"), ValueError, "decoder"),
        (dict(size=8, decoder_stride=3), ValueError, "decoder_stride"),
        (dict(decoder="cnn", size=12), ValueError, "size"),
        (dict(refine_channels=(4, 0)), ValueError, "refine_channels"),
        (dict(refine_channels=4), TypeError, "refine_channels"),
        (dict(train=train.Config(steps=12, steps_per_call=5)), ValueError, "train.steps"),
        (dict(train=train.Config(clip_norm=-1.0)), ValueError, "train.clip_norm"),
        (dict(train={"steps": 100}), TypeError, "train"),
    ],
)
def test_bad_config(kw, err, match):
    with pytest.raises(err, match=match):
        iodine.Config(**kw).validate()


def test_the_slot_models_hparams_are_one_definition_with_their_own_defaults():
    """iodine.Hparams and savi.Hparams derive from slots.Hparams: each a pytree of one traced leaf
    (jit traces it), checked alike, with its own default; each model's models() takes its own."""
    for cls, default in ((slots.Hparams, 4e-4), (iodine.Hparams, 3e-4), (savi.Hparams, 2e-3)):
        assert cls().learning_rate == default
        leaves, treedef = jax.tree_util.tree_flatten(cls(learning_rate=np.array([1e-3, 2e-3], np.float32)))
        assert len(leaves) == 1 and np.shape(leaves[0]) == (2,)
        assert type(jax.tree_util.tree_unflatten(treedef, leaves)) is cls
        assert float(jax.jit(lambda hp: hp.learning_rate * 2.0)(cls(learning_rate=0.25))) == 0.5
        with pytest.raises(ValueError, match="learning_rate"):
            cls.checked(cls(learning_rate=0.0))
    with pytest.raises(TypeError, match="tokdyn.models.savi.Hparams"):
        savi.Hparams.checked(iodine.Hparams())


def test_bad_input_is_refused_before_compiling(params0, images):
    bad_cfg = iodine.Config(**{**CFG.__dict__, "pixel_scale": -1.0})
    with jax_compilations() as compiled:
        with pytest.raises(ValueError, match="pixel_scale"):
            iodine.trainer(bad_cfg)
        with pytest.raises(ValueError, match="pixel_scale"):
            iodine.apply(jax.random.key(0), params0, bad_cfg, images)
        with pytest.raises(TypeError, match="iodine.Config"):
            iodine.apply(jax.random.key(0), params0, slots.Config(size=CFG.size), images)
        with pytest.raises(TypeError, match="Config"):
            iodine.trainer(dict(CFG.__dict__))
        with pytest.raises(ValueError, match="learning_rate"):
            iodine.models(CFG, iodine.Hparams(learning_rate=-1.0))
        with pytest.raises(TypeError, match="Hparams"):
            iodine.models(CFG, slots.Hparams())
        for bad, err in (
            (images[0], ValueError),
            (images[:, :4], ValueError),
            (images * 2.0, ValueError),
            (images.astype(np.int32), TypeError),
            (images[:0], ValueError),
        ):
            with pytest.raises(err, match="images"):
                iodine.apply(jax.random.key(0), params0, CFG, bad)
        with pytest.raises(ValueError, match="chunk"):
            iodine.segment(jax.random.key(0), params0, CFG, images, chunk=0)
        with pytest.raises(TypeError, match="key"):
            iodine.apply(0, params0, CFG, images)
    assert compiled == []
