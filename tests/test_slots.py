"""tokdyn.models.slots: Slot Attention against a float64 NumPy version of the paper's equations, its
properties (competition over slots, permutation equivariance, implicit differentiation), the
autoencoder's mixture, collapse counts, its trainer (against a hand-written optax loop) trained
and resumed through tokdyn.train, segmentation and bad input."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import jax_compilations, segmented_in_chunks
from tokdyn import train
from tokdyn.models import slots as slot_attention

B, N, C, K, D, HIDDEN = 2, 10, 6, 3, 8, 12

# one tiny autoencoder config shared by the apply, segment and training tests (one compilation each)
CFG = slot_attention.Config(
    size=8,
    slots=3,
    iterations=2,
    slot_size=8,
    mlp_hidden=8,
    encoder_channels=(4,),
    encoder_kernel=3,
    decoder="mlp",
    decoder_hidden=8,
    train=train.Config(steps=30, steps_per_call=5, warmup=2),
    batch_size=4,
    seeds=2,
    root_seed=0,
)
HP = slot_attention.Hparams(learning_rate=1e-2)
STRATEGY = slot_attention.default_strategy(jax.default_backend())


def fit(pool, hp=HP, cfg=CFG, *, checkpoint=None, execution=None, **kw):
    """``tokdyn.train.train_many`` of CFG's models (one per seed) as the scenes study trains them
    (``checkpoint``: a path, kept under the configuration's stamp)."""
    checkpointing = None if checkpoint is None else train.Checkpointing(checkpoint, slot_attention.stamp(cfg))
    execution = execution or train.Execution(STRATEGY, vectorised_init=False)
    return train.train_many(
        slot_attention.trainer(cfg),
        pool,
        *slot_attention.models(cfg, hp),
        checkpointing=checkpointing,
        execution=execution,
        **kw,
    )


# ---------------------------------------------------------------------------------------------- references


def _ln(x, p, eps=1e-6):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * p["scale"] + p["bias"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_farthest_points(points, k):
    """Greedy farthest-point sampling in float64 NumPy, one row of (N, D) points at a time, and
    each choice's margin over the runner-up (relative): the distances to the mean and to every
    point chosen so far, their minimum, its argmax."""
    picks, margins = [], []
    for x in np.asarray(points, np.float64):
        dist = ((x - x.mean(0)) ** 2).sum(-1)
        row = []
        for _ in range(k):
            order = np.argsort(-dist)
            margins.append((dist[order[0]] - dist[order[1]]) / dist[order[0]])
            row.append(int(order[0]))
            dist = np.minimum(dist, ((x - x[order[0]]) ** 2).sum(-1))
        picks.append(row)
    return np.array(picks), min(margins)


def reference_slot_attention(params, inputs, z, iterations):
    """Locatello et al. (2020), Algorithm 1, in float64 NumPy (flax's GRUCell and LayerNorm); with
    an ``init`` layer in ``params``, the slots start from the inputs chosen by farthest-point
    sampling of the keys (``slot_init="farthest"``) instead of the Gaussian draw."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
    inputs, z = np.asarray(inputs, np.float64), np.asarray(z, np.float64)
    d = p["to_q"]["kernel"].shape[1]
    x = _ln(inputs, p["norm_inputs"])
    k, v = x @ p["to_k"]["kernel"], x @ p["to_v"]["kernel"]
    if "init" in p:
        chosen = np.take_along_axis(x, reference_farthest_points(k, z.shape[1])[0][:, :, None], axis=1)
        slots = chosen @ p["init"]["kernel"] + p["init"]["bias"]
    else:
        slots = p["mu"] + np.exp(p["log_sigma"]) * z
    g = p["gru"]
    attn = None
    for _ in range(iterations):
        prev = slots
        q = _ln(slots, p["norm_slots"]) @ p["to_q"]["kernel"] * d**-0.5
        logits = np.einsum("bnd,bkd->bnk", k, q)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        attn = e / e.sum(-1, keepdims=True)  # softmax over the slots
        w = attn + 1e-8
        w = w / w.sum(1, keepdims=True)  # normalised over the inputs
        upd = np.einsum("bnk,bnd->bkd", w, v)
        r = _sigmoid(upd @ g["ir"]["kernel"] + g["ir"]["bias"] + prev @ g["hr"]["kernel"])
        u = _sigmoid(upd @ g["iz"]["kernel"] + g["iz"]["bias"] + prev @ g["hz"]["kernel"])
        n = np.tanh(upd @ g["in"]["kernel"] + g["in"]["bias"] + r * (prev @ g["hn"]["kernel"] + g["hn"]["bias"]))
        h = (1.0 - u) * n + u * prev
        hid = np.maximum(_ln(h, p["norm_mlp"]) @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"], 0.0)
        slots = h + hid @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]
    return slots, attn


def params_np(state, i):
    """Model i's parameters as NumPy arrays (no eager JAX indexing to compile)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[i], state.params)


def squares(n, size, seed):
    """``n`` images: two flat-coloured 3 x 3 squares on black (floats in [0, 1])."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, 3), np.float32)
    for i in range(n):
        for _ in range(2):
            y, x = rng.integers(0, size - 3, 2)
            out[i, y : y + 3, x : x + 3] = rng.uniform(0.3, 1.0, 3)
    return out


# ---------------------------------------------------------------------------------------------- Slot Attention


@pytest.fixture(scope="module")
def sa():
    """(params, inputs, z, run): the parameter tree of ``SlotAttention`` (its structure from
    ``init``, traced only) filled with random values (LayerNorm scales and biases, GRU biases, mu
    and log_sigma all away from their initial values), and ``run(implicit, iterations)``: a jitted
    ``(params, inputs, z) -> ((loss, (slots, attention)), grads)`` of a fixed random linear loss."""
    rng = np.random.default_rng(7)
    inputs = (rng.normal(size=(B, N, C)) * 1.5 + 0.3).astype(np.float32)
    z = rng.normal(size=(B, K, D)).astype(np.float32)
    shapes = jax.eval_shape(slot_attention.SlotAttention(K, 1, D, HIDDEN).init, jax.random.key(0), inputs, z)
    params = jax.tree_util.tree_map(lambda s: (0.4 * rng.normal(size=s.shape)).astype(np.float32), shapes)
    c1 = rng.normal(size=(B, K, D)).astype(np.float32)
    c2 = rng.normal(size=(B, N, K)).astype(np.float32)
    cache = {}

    def run(implicit, iterations):
        if (implicit, iterations) not in cache:
            model = slot_attention.SlotAttention(K, iterations, D, HIDDEN, implicit)

            def loss(p, x, zz):
                s, a = model.apply(p, x, zz)
                return jnp.sum(s * c1) + jnp.sum(a * c2), (s, a)

            cache[implicit, iterations] = jax.jit(jax.value_and_grad(loss, has_aux=True))
        return cache[implicit, iterations]

    return params, inputs, z, run


def test_param_tree_has_the_papers_pieces(sa):
    params = sa[0]["params"]
    assert set(params["gru"]) == {"ir", "iz", "in", "hr", "hz", "hn"}
    assert "bias" not in params["to_k"] and "bias" not in params["to_v"] and "bias" not in params["to_q"]
    assert params["mu"].shape == (1, D) and params["log_sigma"].shape == (1, D)
    assert params["to_k"]["kernel"].shape == (C, D) and params["norm_inputs"]["scale"].shape == (C,)


@pytest.mark.parametrize("iterations", [1, 3])
def test_slot_attention_equals_numpy_reference(sa, iterations):
    params, inputs, z, run = sa
    (_, (slots, attn)), _ = run(False, iterations)(params, inputs, z)
    ref_slots, ref_attn = reference_slot_attention(params, inputs, z, iterations)
    assert slots.shape == (B, K, D) and attn.shape == (B, N, K)
    np.testing.assert_allclose(np.asarray(slots), ref_slots, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attn), ref_attn, rtol=1e-4, atol=1e-6)
    # the comparison can fail: the reference moves when a parameter the module must use moves
    other = jax.tree_util.tree_map(lambda a: a, params)
    other["params"]["gru"]["hn"]["bias"] = other["params"]["gru"]["hn"]["bias"] + 0.5
    assert not np.allclose(reference_slot_attention(other, inputs, z, iterations)[0], ref_slots, atol=1e-3)


def test_attention_sums_to_one_over_slots(sa):
    params, inputs, z, run = sa
    (_, (_, attn)), _ = run(False, 3)(params, inputs, z)
    attn = np.asarray(attn, np.float64)
    assert np.all(attn > 0)
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-6)
    assert not np.allclose(attn.sum(1), 1.0, atol=1e-3)  # softmax over slots, not over the inputs


def test_permuting_slot_noise_permutes_slots(sa):
    params, inputs, z, run = sa
    perm = np.array([2, 0, 1])
    (_, (slots, attn)), _ = run(False, 3)(params, inputs, z)
    (_, (slots_p, attn_p)), _ = run(False, 3)(params, inputs, z[:, perm])
    np.testing.assert_allclose(np.asarray(slots_p), np.asarray(slots)[:, perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attn_p), np.asarray(attn)[:, :, perm], rtol=1e-5, atol=1e-7)
    assert not np.allclose(np.asarray(slots_p), np.asarray(slots), atol=1e-3)


def test_implicit_same_forward_gradient_stops_before_last_iteration(sa):
    params, inputs, z, run = sa
    (v_imp, fwd_imp), g_imp = run(True, 3)(params, inputs, z)
    (v_full, fwd_full), g_full = run(False, 3)(params, inputs, z)
    np.testing.assert_allclose(float(v_imp), float(v_full), rtol=1e-6)
    for a, b in zip(fwd_imp, fwd_full):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    for name in ("mu", "log_sigma"):
        np.testing.assert_array_equal(np.asarray(g_imp["params"][name]), 0.0)
        assert np.abs(np.asarray(g_full["params"][name])).max() > 1e-4
    for g in (g_imp, g_full):
        assert np.abs(np.asarray(g["params"]["to_q"]["kernel"])).max() > 1e-4
    assert not np.allclose(
        np.asarray(g_imp["params"]["to_q"]["kernel"]), np.asarray(g_full["params"]["to_q"]["kernel"]), atol=1e-4
    )

    # Chang et al.: the implicit gradient is the gradient of one iteration from the slots of the
    # first iterations - 1, held fixed. With mu = 0 and log_sigma = 0 the initial slots are z, so
    # one plain iteration started from z = (slots after 2 iterations, the float64 reference) is it.
    p0 = jax.tree_util.tree_map(lambda a: a, params)
    p0["params"]["mu"] = np.zeros_like(p0["params"]["mu"])
    p0["params"]["log_sigma"] = np.zeros_like(p0["params"]["log_sigma"])
    s2 = reference_slot_attention(p0, inputs, z, 2)[0].astype(np.float32)
    (v_imp, _), g_imp = run(True, 3)(p0, inputs, z)
    (v_one, _), g_one = run(False, 1)(p0, inputs, s2)
    np.testing.assert_allclose(float(v_imp), float(v_one), rtol=1e-4)
    flat_one = dict(jax.tree_util.tree_flatten_with_path(g_one)[0])
    for path, a in jax.tree_util.tree_flatten_with_path(g_imp)[0]:
        if jax.tree_util.keystr(path) in ("['params']['mu']", "['params']['log_sigma']"):
            continue
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(flat_one[path]), rtol=1e-3, atol=1e-4, err_msg=jax.tree_util.keystr(path)
        )


def test_farthest_points_equal_the_numpy_greedy_choice():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(4, 30, 5)).astype(np.float32)
    ref, margin = reference_farthest_points(points, 6)
    assert margin > 1e-3  # no near-tie: float32 and float64 must agree on every choice
    np.testing.assert_array_equal(np.asarray(slot_attention.farthest_points(points, 6)), ref)
    # a bulk of points near the origin and three far clusters: one choice in each cluster first
    bulk = rng.normal(scale=0.1, size=(40, 2))
    far = np.repeat([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]], 4, axis=0) + rng.normal(scale=0.1, size=(12, 2))
    picks = np.asarray(slot_attention.farthest_points(np.concatenate([bulk, far])[None].astype(np.float32), 3))[0]
    assert sorted((picks - 40) // 4) == [0, 1, 2]


def test_farthest_init_equals_numpy_reference_and_ignores_the_noise(sa):
    _, inputs, z, _ = sa
    model = slot_attention.SlotAttention(K, 2, D, HIDDEN, slot_init="farthest")
    shapes = jax.eval_shape(model.init, jax.random.key(1), inputs, z)  # the structure only (traced, not run)
    assert "init" in shapes["params"] and "mu" not in shapes["params"]
    rng = np.random.default_rng(8)
    params = jax.tree_util.tree_map(lambda a: (0.4 * rng.normal(size=a.shape)).astype(np.float32), shapes)
    slots, attn = jax.jit(model.apply)(params, inputs, z)
    ref_slots, ref_attn = reference_slot_attention(params, inputs, z, 2)
    np.testing.assert_allclose(np.asarray(slots), ref_slots, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attn), ref_attn, rtol=1e-4, atol=1e-6)
    again, _ = jax.jit(model.apply)(params, inputs, 3.0 * z + 1.0)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(slots))


# ---------------------------------------------------------------------------------------------- autoencoder


def test_position_grid():
    g = np.asarray(slot_attention.position_grid(3, 5))
    y, x = np.meshgrid(np.linspace(0, 1, 3), np.linspace(0, 1, 5), indexing="ij")
    np.testing.assert_allclose(g, np.stack([y, x, 1 - y, 1 - x], -1), atol=1e-7)


@pytest.fixture(scope="module")
def images():
    return squares(4, CFG.size, seed=1)


@pytest.fixture(scope="module")
def init_states():
    """The initial states of CFG's models (the compilation that train_many reuses)."""
    return train.init_states(slot_attention.trainer(CFG), *slot_attention.models(CFG, HP), vectorised=False)[0]


@pytest.fixture(scope="module")
def params0(init_states):
    return params_np(init_states, 0)


def _check_outputs(out, cfg, n):
    H = W = cfg.size
    assert out.recon.shape == (n, H, W, 3)
    assert out.rgb.shape == (n, cfg.slots, H, W, 3)
    assert out.alpha.shape == (n, cfg.slots, H, W)
    assert out.slots.shape == (n, cfg.slots, cfg.slot_size)
    assert out.attention.shape == (n, (H // cfg.encoder_stride) * (W // cfg.encoder_stride), cfg.slots)
    assert out.labels.shape == (n, H, W) and out.labels.dtype == jnp.int32
    alpha = np.asarray(out.alpha, np.float64)
    rgb = np.asarray(out.rgb, np.float64)
    assert np.all(alpha >= 0)
    np.testing.assert_allclose(alpha.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.recon), np.einsum("bkhw,bkhwc->bhwc", alpha, rgb), rtol=1e-5, atol=1e-6)
    # labels and alpha are two outputs XLA may compute in separate fusions: each label is a slot of
    # the largest alpha up to float32 rounding (a last-bit tie may go either way)
    picked = np.take_along_axis(alpha, np.asarray(out.labels)[:, None], 1)[:, 0]
    np.testing.assert_allclose(picked, alpha.max(1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(out.attention).sum(-1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(out.recon)))


@pytest.mark.full
def test_apply_mlp_decoder(params0, images):
    out = slot_attention.apply(jax.random.key(5), params0, CFG, images)
    _check_outputs(out, CFG, images.shape[0])
    # the noise key matters (slots are drawn), the same key reproduces
    again = slot_attention.apply(jax.random.key(5), params0, CFG, images)
    np.testing.assert_array_equal(np.asarray(again.recon), np.asarray(out.recon))
    other = slot_attention.apply(jax.random.key(6), params0, CFG, images)
    assert not np.allclose(np.asarray(other.slots), np.asarray(out.slots))


def test_apply_cnn_decoder():
    cfg = slot_attention.Config(
        size=16,
        slots=2,
        iterations=1,
        slot_size=8,
        mlp_hidden=8,
        encoder_channels=(4,),
        encoder_kernel=3,
        decoder="cnn",
        decoder_hidden=4,
    )
    shapes = jax.eval_shape(lambda k: slot_attention.init(k, cfg), jax.random.key(4))
    assert "dec_up8" in shapes["params"] and "dec_up16" not in shapes["params"]  # one upsampling: 8 -> 16
    # init and apply in one compilation (apply is jittable inside a user's jit)
    out = jax.jit(lambda k, x: slot_attention.apply(jax.random.fold_in(k, 1), slot_attention.init(k, cfg), cfg, x))(
        jax.random.key(4), squares(2, 16, seed=2)
    )
    _check_outputs(out, cfg, 2)


def random_params(cfg, seed):
    """The parameter tree of ``cfg``'s autoencoder (its structure from ``init``, traced only) filled
    with random values: the forward pass's properties hold for any weights, and a compiled ``init``
    (its initialisers and a forward pass) costs about 2 s at -O0 (``init`` itself: the training tests
    and test_apply_cnn_decoder)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: slot_attention.init(k, cfg), jax.random.key(0))
    return jax.tree_util.tree_map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(np.float32), shapes)


def _bilinear_numpy(a, size):
    """Upsample axes 2 and 3 of ``a`` (B, K, g, g, C) to ``size`` bilinearly, pixel centres at half
    integers, edges clamped (a plain NumPy reference)."""
    g = a.shape[2]
    src = np.clip((np.arange(size) + 0.5) * g / size - 0.5, 0, g - 1)
    i0 = np.floor(src).astype(int)
    i1, w = np.minimum(i0 + 1, g - 1), src - np.floor(src)
    rows = a[:, :, i0] * (1 - w)[None, None, :, None, None] + a[:, :, i1] * w[None, None, :, None, None]
    return rows[:, :, :, i0] * (1 - w)[None, None, None, :, None] + rows[:, :, :, i1] * w[None, None, None, :, None]


@pytest.mark.parametrize("decoder", [pytest.param("mlp", marks=pytest.mark.full), "conv"])
def test_strided_encoder_and_coarse_decoder_equal_a_numpy_upsampling(images, decoder):
    """encoder_stride=2 and decoder_stride=2 on 8 x 8 images: the parameters are those of the full
    model, Slot Attention sees 16 inputs, and the output is the decoder's 4 x 4 logits upsampled
    bilinearly (a NumPy reference), then mixed by the alphas softmaxed over slots."""
    cfg = dataclasses.replace(CFG, encoder_stride=2, decoder_stride=2, decoder=decoder)
    full = dataclasses.replace(CFG, decoder=decoder)
    params = random_params(cfg, seed=3)
    shapes = jax.tree_util.tree_map(np.shape, params)
    assert shapes == jax.tree_util.tree_map(
        np.shape, jax.eval_shape(lambda k: slot_attention.init(k, full), jax.random.key(3))
    )
    # one compiled forward pass (op by op, the forward pass compiles a program per operation)
    out, inter = jax.jit(
        lambda p, x, z: slot_attention.Autoencoder(cfg).apply(
            p, x, z, capture_intermediates=lambda m, _: m.name == "dec_out"
        )
    )(params, images, slot_attention.slot_noise(jax.random.key(5), cfg, images.shape[0]))
    _check_outputs(out, cfg, images.shape[0])
    coarse = np.asarray(inter["intermediates"]["dec_out"]["__call__"][0], np.float64)
    B, K = images.shape[0], cfg.slots
    assert coarse.shape in ((B, K, 4, 4, 4), (B * K, 4, 4, 4))
    up = _bilinear_numpy(coarse.reshape(B, K, 4, 4, 4), cfg.size)
    alpha = np.exp(up[..., 3] - up[..., 3].max(1, keepdims=True))
    alpha /= alpha.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out.alpha), alpha, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(out.recon), np.einsum("bkhw,bkhwc->bhwc", alpha, up[..., :3]), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("stride", [1, 2])
def test_attention_masks_are_the_attention_at_the_image_size(images, stride):
    """masks="attention": the alphas are the last iteration's attention over the (size / stride)^2
    inputs, upsampled bilinearly (the NumPy reference) and renormalised over slots; the decoder
    paints RGB only."""
    cfg = dataclasses.replace(CFG, masks="attention", encoder_stride=stride)
    params = random_params(cfg, seed=3)
    assert params["params"]["dec_out"]["kernel"].shape[-1] == 3
    out = slot_attention.apply(jax.random.key(5), params, cfg, images)
    _check_outputs(out, cfg, images.shape[0])
    B, g = images.shape[0], cfg.size // stride
    att = np.moveaxis(np.asarray(out.attention, np.float64).reshape(B, g, g, cfg.slots), -1, 1)
    up = att if stride == 1 else _bilinear_numpy(att[..., None], cfg.size)[..., 0]
    np.testing.assert_allclose(np.asarray(out.alpha), up / up.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- collapse


def test_collapse_counts_duplicates_and_unused_slots():
    tol = 1e-2  # the package's merge tolerance (dynamics.DEFAULT_MERGE_TOL)
    slots = np.zeros((5, 3), np.float32)
    slots[1, 0] = 0.5 * tol  # duplicate of slot 0
    slots[2, 1] = 1.5 * tol  # apart from 0 and 1 (1.5 and 1.58 tol away)
    slots[3] = [1.0, 1.0, 1.0]
    slots[4] = [1.0, 1.0, 1.0 + 0.3 * tol]  # duplicate of slot 3
    labels = np.array([[0, 0, 2], [2, 3, 0]], np.int32)  # slots 1 and 4 own no pixel
    spread = np.eye(5, 3, dtype=np.float32) * 5 + np.arange(5, dtype=np.float32)[:, None]  # all distinct
    # one vmapped call over the cases: (slots, labels, merge_tol) -> (duplicates, unused)
    cases = [
        (slots, labels, tol, 2, 2),
        (slots, labels, 3 * tol, 3, 2),  # slot 2 joins the group of 0 and 1
        (slots, labels, 1e-4, 0, 2),  # nothing is that close: no duplicates
        (spread, np.array([[0, 1], [2, 3], [4, 4]]), tol, 0, 0),
        (spread, np.full((3, 2), 4), tol, 0, 4),
    ]
    dup, unused = jax.jit(jax.vmap(slot_attention.collapse))(
        np.stack([c[0] for c in cases]),
        np.stack([c[1].reshape(2, 3) for c in cases]),
        np.array([c[2] for c in cases], np.float32),
    )
    np.testing.assert_array_equal(np.asarray(dup), [c[3] for c in cases])
    np.testing.assert_array_equal(np.asarray(unused), [c[4] for c in cases])
    # the default tolerance is the package's
    assert slot_attention.collapse.__defaults__ == (tol,)


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def pool():
    return squares(16, CFG.size, seed=0)


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    """An uninterrupted run of CFG (2 seeds) with a checkpoint, and the logs of each call."""
    path = str(tmp_path_factory.mktemp("slots") / "straight.npz")
    logs = []
    res = fit(pool, checkpoint=path, on_log=lambda step, lg: logs.append((step, lg)))
    return res, path, logs


def reference_training(key, pool, lr, steps):
    """CFG's model trained by hand for ``steps`` steps, as the scenes study trained it before
    tokdyn.train: parameters from fold_in(key, 2**31 - 1); step t's key fold_in(key, t) split into
    the batch's key (indices with replacement) and the slot noise's; MSE; clipping to norm 1, then
    Adam with a linear warm-up over CFG.train.warmup steps and a cosine decay to 5% at CFG.train.steps."""
    pool = jnp.asarray(pool)
    params = slot_attention.init(jax.random.fold_in(key, 2**31 - 1), CFG)
    opt = _reference_optimiser(lr)
    state = opt.init(params)
    trail, losses = [], []
    for t in range(steps):
        params, state, loss = _reference_step(params, state, key, pool, lr, t)
        trail.append(params)
        losses.append(float(loss))
    return trail, np.asarray(losses)


def _reference_optimiser(lr):
    tc = CFG.train
    sched = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, tc.warmup), optax.cosine_decay_schedule(lr, tc.steps - tc.warmup, alpha=0.05)],
        [tc.warmup],
    )
    return optax.chain(optax.clip_by_global_norm(tc.clip_norm), optax.adam(sched))


@jax.jit
def _reference_step(params, state, key, pool, lr, t):
    """One hand-written step (the key, pool, learning rate and step are arguments: one compilation
    serves every seed)."""
    k_batch, k_noise = jax.random.split(jax.random.fold_in(key, t))
    images = pool[jax.random.randint(k_batch, (CFG.batch_size,), 0, pool.shape[0])]
    z = jax.random.normal(k_noise, (CFG.batch_size, CFG.slots, CFG.slot_size))
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean((slot_attention.Autoencoder(CFG).apply(p, images, z).recon - images) ** 2)
    )(params)
    updates, state = _reference_optimiser(lr).update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


@pytest.mark.full
def test_trainer_is_the_hand_written_training(pool, trained, init_states):
    """Each seed's first steps equal the hand-written loop: the losses, the first call's mean loss
    and the parameters after the first step, up to float32 rounding (the layer's non-finite guard
    makes another program; later, Adam's sign-like first steps amplify rounding in near-zero
    gradients, so later parameters are not compared)."""
    logs = trained[2]
    tr = slot_attention.trainer(CFG)
    step = jax.jit(train.make_step(tr))  # the step train_many runs ("loop": one compiled call per model and step)
    keys, hp = slot_attention.models(CFG, HP)
    for s in range(CFG.seeds):
        trail, losses = reference_training(keys[s], pool, HP.learning_rate, CFG.train.steps_per_call)
        np.testing.assert_allclose(logs[0][1]["loss"][s], losses.mean(), rtol=1e-5)
        state = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)[s]), init_states)
        for t in range(CFG.train.steps_per_call):
            state, lg = step(state, jnp.asarray(pool), tr.keys(keys[s])[1])
            np.testing.assert_allclose(float(lg["loss"]), losses[t], rtol=1e-5)
            if t == 0:
                for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(trail[0])):
                    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # the trainer's pieces: the optimiser config, the keys, one object per configuration
    tr = slot_attention.trainer(CFG)
    assert tr is slot_attention.trainer(slot_attention.Config(**{**CFG.__dict__, "encoder_channels": [4]}))
    assert (
        tr.config
        == CFG.train
        == train.Config(steps=30, steps_per_call=5, warmup=2, decay="cosine", final_fraction=0.05, clip_norm=1.0)
    )
    k = jax.random.key(3)
    k_init, k_run = tr.keys(k)
    assert jax.random.key_data(k_init).tolist() == jax.random.key_data(jax.random.fold_in(k, 2**31 - 1)).tolist()
    assert jax.random.key_data(k_run).tolist() == jax.random.key_data(k).tolist()
    assert slot_attention.default_strategy("cpu") == "loop" and slot_attention.default_strategy("gpu") == "scan"


@pytest.mark.full
def test_resumed_training_is_bit_identical(pool, trained, tmp_path):
    straight, _, logs = trained
    assert straight.finished and straight.stopped_at == CFG.train.steps
    np.testing.assert_array_equal(np.asarray(straight.state.step), [CFG.train.steps] * CFG.seeds)
    assert [s for s, _ in logs] == list(range(CFG.train.steps_per_call, CFG.train.steps + 1, CFG.train.steps_per_call))
    assert straight.nan_report() == []
    path = str(tmp_path / "ckpt.npz")
    part = fit(pool, checkpoint=path, max_calls=1)
    assert not part.finished and os.path.exists(path)
    np.testing.assert_array_equal(np.asarray(part.state.step), [CFG.train.steps_per_call] * CFG.seeds)
    resumed = fit(pool, checkpoint=path)
    assert resumed.finished
    a, b = jax.tree_util.tree_leaves(resumed.state), jax.tree_util.tree_leaves(straight.state)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the curves came back with the state: the first call's from the checkpoint, the rest trained on
    for k in ("loss", "grad_norm"):
        np.testing.assert_array_equal(resumed.curves[k], straight.curves[k])
    # the seeds are different models
    q = [params_np(straight.state, s)["params"]["slot_attention"]["to_q"]["kernel"] for s in range(2)]
    assert not np.array_equal(q[0], q[1])


@pytest.mark.parametrize(
    "strategy, batch_size",
    [
        # the train layer's strategies agree in tests/test_train.py (the default run); here at the
        # model's scale, a full execution
        pytest.param("step", None, marks=pytest.mark.full),
        # a map over the models one by one: another program of the same step, whose mapping
        # (execute's batch_size=1) tests/test_execute.py checks in the default run
        pytest.param("step", 1, marks=pytest.mark.slow),
    ],
)
def test_vmapped_models_equal_the_loop_over_models(pool, trained, strategy, batch_size):
    """strategy="step" (one call for all models, vmapped or, with batch_size=1, mapped one by one)
    computes what the CPU default (a call per model) does: the same batches, noise and models, so
    the same losses up to float32 rounding over the first call's steps (later, Adam's sign-like
    first steps amplify rounding in near-zero gradients, so parameters are not compared)."""
    first_loop = trained[2][0][1]["loss"]
    got = fit(pool, execution=train.Execution(strategy, batch_size=batch_size, vectorised_init=False), max_calls=1)
    np.testing.assert_allclose(got.curves["loss"][:, 0], first_loop, rtol=1e-3)
    with pytest.raises(ValueError, match="strategy"):
        fit(pool, execution=train.Execution("pmap"))


def test_checkpoint_of_other_hyperparameters_is_refused(pool, trained):
    _, path, _ = trained
    with pytest.raises(ValueError, match="hyper-parameters"):
        fit(pool, slot_attention.Hparams(learning_rate=2e-2), checkpoint=path)
    # same shapes, another schedule: refused too (the checkpoint records its configuration)
    with pytest.raises(ValueError, match="configuration"):
        fit(
            pool,
            cfg=dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, warmup=CFG.train.warmup + 1)),
            checkpoint=path,
        )


def test_training_lowers_the_loss(pool, trained, init_states):
    res, _, logs = trained
    batch = pool[:4]
    key = jax.random.key(9)
    init = init_states
    black = float(np.mean(batch**2))  # the loss of predicting the background everywhere
    for s in range(CFG.seeds):
        before = np.mean((np.asarray(slot_attention.apply(key, params_np(init, s), CFG, batch).recon) - batch) ** 2)
        after = np.mean((np.asarray(slot_attention.apply(key, params_np(res.state, s), CFG, batch).recon) - batch) ** 2)
        assert after < before and after < 0.9 * black, (s, before, after, black)
    first, last = logs[0][1]["loss"], logs[-1][1]["loss"]
    assert np.all(last < first)


def test_a_diverging_model_is_reported_and_leaves_the_others_alone(pool, trained):
    straight_logs = trained[2]
    logs = []
    # one setting per seed (not slot_attention.models' seeds x settings): seed 1 overflows once warm-up lets it move
    keys = slot_attention.seed_keys(CFG)
    hp = slot_attention.Hparams(learning_rate=np.array([1e-2, 1e30], np.float32))
    res = train.train_many(
        slot_attention.trainer(CFG),
        pool,
        keys,
        hp,
        execution=train.Execution(STRATEGY, vectorised_init=False),
        max_calls=2,
        on_log=lambda step, lg: logs.append(lg),
    )
    assert not res.finished
    report = res.nan_report()
    assert len(report) == 1 and report[0][0] == 1 and 1 <= report[0][1] < 2 * CFG.train.steps_per_call, report
    assert report[0][2] >= 1  # its non-finite steps were skipped, and counted
    # seed 0 (the same learning rate as the uninterrupted run) is the uninterrupted run's seed 0
    for mine, ref in zip(logs, straight_logs[:2]):
        np.testing.assert_allclose(mine["loss"][0], ref[1]["loss"][0], rtol=1e-6)
    # a skipped step leaves the parameters as they were: every model's stay finite
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(res.state.params))


# ---------------------------------------------------------------------------------------------- segment


def test_segment_shapes_and_chunking(trained, pool):
    params = params_np(trained[0].state, 0)
    for a, b in zip(
        jax.tree_util.tree_leaves(slot_attention.params_of(trained[0].state, 0)), jax.tree_util.tree_leaves(params)
    ):
        np.testing.assert_array_equal(np.asarray(a), b)
    imgs = pool[:5]
    key = jax.random.key(2)
    _, slots2 = segmented_in_chunks(slot_attention.segment, key, params, CFG, imgs, CFG.slot_size, rtol=1e-5, atol=1e-6)
    # image i is segmented with the slot noise of fold_in(key, i) alone
    i = 3
    one = slot_attention.apply(jax.random.fold_in(key, i), params, CFG, np.repeat(imgs[i : i + 1], 4, 0))
    np.testing.assert_allclose(np.asarray(one.slots[0]), np.asarray(slots2[i]), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(slots=0), "slots"),
        (dict(decoder="foo"), "decoder"),
        (dict(slot_init="kmeans"), "slot_init"),
        (dict(masks="slots"), "masks"),
        (dict(decoder="cnn", size=12), "size"),
        (dict(train=train.Config(steps=12, steps_per_call=5)), "train.steps"),
        (dict(encoder_channels=()), "encoder_channels"),
        (dict(size=8, encoder_stride=3), "encoder_stride"),
        (dict(size=8, encoder_stride=0), "encoder_stride"),
        (dict(size=8, decoder_stride=3), "decoder_stride"),
        (dict(size=8, decoder_stride=0), "decoder_stride"),
        (dict(size=16, decoder="cnn", decoder_stride=2), "decoder_stride"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        slot_attention.Config(**kw).validate()


@pytest.mark.parametrize(
    "bad, err",
    [
        (np.zeros((8, 8, 3), np.float32), ValueError),  # rank 3
        (np.zeros((2, 16, 16, 3), np.float32), ValueError),  # other size
        (np.zeros((2, 8, 8, 1), np.float32), ValueError),  # not RGB
        (np.full((2, 8, 8, 3), 1.5, np.float32), ValueError),  # above 1
        (np.full((2, 8, 8, 3), -0.1, np.float32), ValueError),  # below 0
        (np.full((2, 8, 8, 3), np.nan, np.float32), ValueError),
        (np.zeros((2, 8, 8, 3), np.int32), TypeError),
        (np.zeros((2, 8, 8, 3), np.uint8), TypeError),
    ],
)
def test_bad_images_for_apply(params0, bad, err):
    with jax_compilations() as compiled, pytest.raises(err, match="images"):
        slot_attention.apply(jax.random.key(0), params0, CFG, bad)
    assert compiled == []


def test_bad_key_or_config_for_init_refused_before_compile():
    """init is one program per configuration; a key that is not a PRNG key, a dict in place of a
    Config or a Config that does not validate is refused naming it, before anything compiles."""
    key = jax.random.key(0)
    with jax_compilations() as compiled:
        with pytest.raises(TypeError, match="key must be a PRNG key"):
            slot_attention.init(0, CFG)
        with pytest.raises(TypeError, match="cfg must be a tokdyn.models.slots.Config, got dict"):
            slot_attention.init(key, dict(CFG.__dict__))
        with pytest.raises(ValueError, match="encoder_channels"):
            slot_attention.init(key, dataclasses.replace(CFG, encoder_channels=()))
    assert compiled == []


def test_bad_input_for_training(pool):
    """A bad configuration or learning rate is refused before anything compiles; a pool of other
    images when the step is traced, naming it."""
    with jax_compilations() as compiled:
        with pytest.raises(ValueError, match="train.steps"):
            slot_attention.trainer(dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, steps=12)))
        with pytest.raises(TypeError, match="Config"):
            slot_attention.trainer(dict(CFG.__dict__))
        with pytest.raises(ValueError, match="learning_rate"):
            slot_attention.models(CFG, slot_attention.Hparams(learning_rate=-1.0))
        with pytest.raises(TypeError, match="Hparams"):
            slot_attention.models(CFG, {"learning_rate": 1e-3})
    assert compiled == []
    # (H,) learning rates are H settings of every seed
    keys, hp = slot_attention.models(CFG, slot_attention.Hparams(learning_rate=np.array([1e-3, 2e-3, 3e-3])))
    assert keys.shape == (3 * CFG.seeds,) and np.allclose(hp.learning_rate, np.repeat([1e-3, 2e-3, 3e-3], CFG.seeds))
    for bad in (np.zeros((4, 16, 16, 3), np.float32), np.zeros((8, 8, 3), np.float32), pool.astype(np.int32)):
        with pytest.raises((ValueError, TypeError), match="pool"):
            fit(bad, max_calls=1)


@pytest.mark.parametrize("case", ["chunk=-1", "list", "empty"])
def test_edge_inputs(params0, case):
    """A bad chunk and an empty batch are refused naming the argument; nested lists are arrays."""
    key = jax.random.key(0)
    imgs = np.zeros((1, CFG.size, CFG.size, 3), np.float32)
    if case.startswith("chunk"):
        with pytest.raises(ValueError, match="chunk"):
            slot_attention.segment(key, params0, CFG, imgs, chunk=int(case[6:]))
    elif case == "list":
        try:
            out = slot_attention.apply(key, params0, CFG, imgs.tolist())
        except (TypeError, ValueError) as e:
            assert "images" in str(e)
        else:
            assert out.recon.shape == imgs.shape
    else:
        with pytest.raises(ValueError, match="images"):
            slot_attention.apply(key, params0, CFG, imgs[:0])
