"""Encoders, decoders and losses of tokdyn.models.vtae against NumPy/SciPy/PyTorch references and closed forms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from tokdyn.models.vtae import decoders, encoders, losses

# One program per mode and shape (eagerly, each operation inside is compiled as its own program);
# KernelsWithAndWithoutJit runs the kernels eagerly too.
quantize = jax.jit(encoders.quantize, static_argnums=2)


def test_straight_through_forward_is_hard_and_gradient_is_soft():
    key = jax.random.key(0)
    z = jax.random.normal(jax.random.key(1), (4, 9, 3))
    tau = 0.7
    g = np.asarray(jax.random.gumbel(key, z.shape))
    e_st = quantize(key, z, "gumbel_st", tau)
    codes = np.asarray(e_st.codes)
    # the Gumbel noise drawn here and inside quantize are two programs: each code is an argmax of
    # z + g up to float32 rounding (a last-bit tie may go either way); x is its own codes' one-hot
    y = np.asarray(z) + g
    np.testing.assert_allclose(np.take_along_axis(y, codes[..., None], -1)[..., 0], y.max(-1), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(e_st.x), np.eye(3)[codes])
    soft_ref = scipy.special.softmax((np.asarray(z) + g) / tau, axis=-1)
    np.testing.assert_allclose(np.asarray(quantize(key, z, "gumbel_soft", tau).x), soft_ref, rtol=1e-5, atol=1e-6)
    c = jax.random.normal(jax.random.key(2), z.shape)
    g_st = jax.jit(jax.grad(lambda z: jnp.sum(c * encoders.quantize(key, z, "gumbel_st", tau).x)))(z)
    g_soft = jax.jit(jax.grad(lambda z: jnp.sum(c * encoders.quantize(key, z, "gumbel_soft", tau).x)))(z)
    np.testing.assert_allclose(np.asarray(g_st), np.asarray(g_soft), rtol=1e-5, atol=1e-7)


def test_gumbel_softmax_limits():
    z = jnp.log(jnp.asarray([0.5, 0.3, 0.15, 0.05]))
    keys = jax.random.split(jax.random.key(0), 40_000)
    y, idx = jax.jit(jax.vmap(lambda k: encoders.gumbel_softmax(k, z[None], 1e-3, hard=False)))(keys)
    y, idx = np.asarray(y)[:, 0], np.asarray(idx)[:, 0]
    # tau -> 0: the soft sample is the one-hot argmax ...
    # (up to near-ties of the perturbed logits, whose share shrinks with tau)
    assert np.mean(np.abs(y - np.eye(4)[idx]).sum(1)) < 0.01
    # ... and the argmax is distributed as softmax(z) (Gumbel-max trick)
    counts = np.bincount(idx, minlength=4)
    assert scipy.stats.chisquare(counts, 40_000 * np.array([0.5, 0.3, 0.15, 0.05])).pvalue > 1e-4
    # tau -> inf: uniform
    y_hot, _ = jax.jit(encoders.gumbel_softmax, static_argnames="hard")(jax.random.key(3), z[None], 1e6, hard=False)
    np.testing.assert_allclose(np.asarray(y_hot), 0.25, atol=1e-5)


def test_categorical_score_function_is_unbiased():
    z = jnp.asarray([[[0.3, -0.2, 1.0]]])  # (B=1, P=1, C=3)
    c = jnp.asarray([1.0, -2.0, 0.5])
    p = scipy.special.softmax(np.asarray(z)[0, 0])
    exact = p * (np.asarray(c) - p @ np.asarray(c))  # d E[c_x] / d z
    keys = jax.random.split(jax.random.key(0), 50_000)

    def surrogate(z, k):
        e = encoders.quantize(k, z, "categorical", 1.0)
        f = jnp.sum(e.x[0, 0] * c)
        return jax.lax.stop_gradient(f) * e.logp[0]

    grads = np.asarray(jax.jit(jax.vmap(lambda k: jax.grad(surrogate)(z, k)))(keys), np.float64)[:, 0, 0]  # (S, 3)
    mean, se = grads.mean(0), grads.std(0) / np.sqrt(50_000)
    assert np.all(np.abs(mean - exact) < 5 * se + 1e-6)
    e = quantize(jax.random.key(5), np.tile(np.asarray(z), (2, 4, 1)), "categorical", 1.0)
    logp_ref = np.log(p)[np.asarray(e.codes)].sum(-1)
    np.testing.assert_allclose(np.asarray(e.logp), logp_ref, rtol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(
            jax.jit(jax.grad(lambda z: jnp.sum(encoders.quantize(jax.random.key(5), z, "categorical", 1.0).x * 3.0)))(z)
        ),
        0.0,
    )


@pytest.mark.parametrize("levels", [2, 3, 5, 8])
def test_fsq_levels_and_straight_through(levels):
    z = jnp.linspace(-4, 4, 801)
    x, code = encoders.fsq_quantize(z, levels)
    u = 0.5 * (levels - 1) * (1 + np.tanh(np.asarray(z, np.float64)))
    # float32 XLA against float64 NumPy (two programs): equal codes but within rounding of a half,
    # where either neighbour is right
    tie = np.abs(np.abs(u - np.floor(u)) - 0.5) < 1e-5
    np.testing.assert_array_equal(np.asarray(code)[~tie], np.round(u).astype(int)[~tie])
    assert np.all(np.abs(np.asarray(code)[tie] - u[tie]) <= 0.5 + 1e-5)
    assert sorted(set(np.asarray(code).tolist())) == list(range(levels))
    np.testing.assert_allclose(np.unique(np.asarray(x)), np.linspace(-1, 1, levels), atol=1e-6)
    g = jax.grad(lambda z: jnp.sum(encoders.fsq_quantize(z, levels)[0]))(z)
    np.testing.assert_allclose(
        np.asarray(g), (levels - 1) * (1 - np.tanh(np.asarray(z)) ** 2) / (levels - 1), rtol=1e-5, atol=1e-6
    )


def test_vq_ema_update_and_dead_code_reset():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20, 2)).astype(np.float32)
    codes = np.array([0] * 12 + [1] * 8)  # code 2 unused
    cnt, s = np.array([3.0, 1.0, 0.01]), rng.normal(size=(3, 2))
    d = 0.9
    vq_ema_update = jax.jit(encoders.vq_ema_update)  # one program, not one per operation
    cb, cnt2, s2 = vq_ema_update(
        jnp.zeros((3, 2)), jnp.asarray(cnt), jnp.asarray(s), jnp.asarray(z), jnp.asarray(codes), d
    )
    n = np.bincount(codes, minlength=3)
    s_ref = d * s + (1 - d) * np.stack([z[codes == k].sum(0) if n[k] else np.zeros(2) for k in range(3)])
    c_ref = d * cnt + (1 - d) * n
    np.testing.assert_allclose(np.asarray(cnt2), c_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(s2), s_ref, rtol=1e-5, atol=1e-6)
    tot = c_ref.sum()
    np.testing.assert_allclose(np.asarray(cb), s_ref / ((c_ref + 1e-5) / (tot + 3e-5) * tot)[:, None], rtol=1e-4)
    cb3, cnt3, _ = vq_ema_update(
        jnp.zeros((3, 2)),
        jnp.asarray(cnt),
        jnp.asarray(s),
        jnp.asarray(z),
        jnp.asarray(codes),
        d,
        key=jax.random.key(0),
        dead_threshold=0.5,
    )
    cb3 = np.asarray(cb3)
    assert any(np.allclose(cb3[2], row) for row in z)  # dead code moved onto an encoder output
    np.testing.assert_allclose(cb3[:2], np.asarray(cb)[:2], rtol=1e-5)
    assert float(cnt3[2]) == pytest.approx(0.5)


def test_temperature_schedule():
    t = np.asarray(encoders.temperature(jnp.arange(11), 11, 2.0, 0.02))
    np.testing.assert_allclose(t, 2.0 * 0.01 ** (np.arange(11) / 10), rtol=1e-5)


def test_mlp_decoder_matches_numpy():
    init = jax.jit(decoders.init_mlp, static_argnames=("cells", "features", "vocab_size", "hidden", "depth"))
    p = init(jax.random.key(0), cells=9, features=2, vocab_size=7, hidden=16, depth=2)
    x = np.random.default_rng(0).normal(size=(5, 9, 2)).astype(np.float32)
    h = x.reshape(5, -1)
    for layer in p["layers"]:
        h = np.maximum(h @ np.asarray(layer["w"]) + np.asarray(layer["b"]), 0)
    ref = h @ np.asarray(p["out"]["w"]) + np.asarray(p["out"]["b"])
    np.testing.assert_allclose(np.asarray(jax.jit(decoders.apply_mlp)(p, jnp.asarray(x))), ref, rtol=1e-4, atol=1e-5)


def test_cnn_decoder_matches_scipy():
    import scipy.signal

    init = jax.jit(decoders.init_cnn, static_argnames=("cells", "features", "vocab_size", "channels"))
    p = init(jax.random.key(0), cells=25, features=3, vocab_size=11, channels=4)
    x = np.random.default_rng(0).normal(size=(2, 25, 3)).astype(np.float64)

    def conv(h, w, b):  # h (N, N, Cin), w (3, 3, Cin, Cout): 'same' cross-correlation
        out = np.stack(
            [
                sum(scipy.signal.correlate2d(h[:, :, i], w[:, :, i, o], mode="same") for i in range(w.shape[2]))
                for o in range(w.shape[3])
            ],
            -1,
        )
        return np.maximum(out + b, 0)

    ref = []
    for img in x.reshape(2, 5, 5, 3):
        h = conv(img, np.asarray(p["conv1"]["w"], np.float64), np.asarray(p["conv1"]["b"]))
        h = conv(h, np.asarray(p["conv2"]["w"], np.float64), np.asarray(p["conv2"]["b"]))
        ref.append(h.reshape(-1) @ np.asarray(p["out"]["w"]) + np.asarray(p["out"]["b"]))
    out = jax.jit(decoders.apply_cnn)(p, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(out), np.stack(ref), rtol=1e-4, atol=1e-4)


def test_losses_match_references():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    t = rng.integers(0, 5, 6)
    pa, pb = scipy.special.softmax(a, -1), scipy.special.softmax(b, -1)
    np.testing.assert_allclose(
        np.asarray(jax.jit(losses.cross_entropy)(jnp.asarray(a), jnp.asarray(t))),
        -np.log(pa[np.arange(6), t]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(jax.jit(losses.entropy)(jnp.asarray(a))), scipy.stats.entropy(pa, axis=-1), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(jax.jit(losses.kl_logits)(jnp.asarray(a), jnp.asarray(b))),
        scipy.stats.entropy(pa, pb, axis=-1),
        rtol=1e-5,
    )
    be = scipy.stats.entropy(pa, axis=-1).mean() - scipy.stats.entropy(pa.mean(0))
    np.testing.assert_allclose(float(jax.jit(losses.batch_entropy)(jnp.asarray(a))), be, rtol=1e-5)
    # identical confident rows: entropy of the mean is 0 -> batch entropy = per-sample entropy ~ 0;
    # a confident permutation: -ln V
    eye = 50.0 * np.eye(5)
    np.testing.assert_allclose(float(jax.jit(losses.batch_entropy)(jnp.asarray(eye))), -np.log(5), atol=1e-4)
    g, e = rng.normal(size=(6, 3, 2)), rng.normal(size=(6, 4))
    cos = lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    off = ~np.eye(6, dtype=bool)
    ref = ((cos(g.reshape(6, -1)) - cos(e))[off] ** 2).mean()
    np.testing.assert_allclose(
        float(jax.jit(losses.semantic_alignment)(jnp.asarray(g), jnp.asarray(e))), ref, rtol=1e-5
    )
    assert float(jax.jit(losses.sensitivity_penalty)(jnp.asarray([0.01, 0.03]), 0.05)) == pytest.approx(0.03)
    assert float(jax.jit(losses.sensitivity_penalty)(jnp.asarray([0.1, 0.3]), 0.05)) == 0.0
    # sensitivity KL with zero noise is zero
    dec = lambda x: x.reshape(x.shape[0], -1) @ jnp.ones((6, 4))
    sensitivity_kl = jax.jit(losses.sensitivity_kl, static_argnums=1)
    assert np.max(np.abs(np.asarray(sensitivity_kl(jax.random.key(0), dec, jnp.asarray(g), 0.0)))) < 1e-6


class KernelsWithAndWithoutJit(chex.TestCase):
    """Core kernels, eager and jitted, against NumPy/SciPy references."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_vq_nearest_code_straight_through_and_losses(self):
        rng = np.random.default_rng(0)
        z = rng.normal(size=(6, 4, 3)).astype(np.float32)
        cb = rng.normal(size=(5, 3)).astype(np.float32)
        vq = self.variant(encoders.vq_quantize)
        x, codes, commit, cbl = vq(jnp.asarray(z), jnp.asarray(cb))
        d = ((z[..., None, :] - cb) ** 2).sum(-1)
        ref = np.argmin(d, -1)
        chex.assert_shape((x, codes), (z.shape, ref.shape))
        # XLA's float32 distances against NumPy's (two programs): exact codes only because no vector
        # lies within rounding of a tie between its two nearest codes
        d2 = np.sort(d, -1)
        assert np.min(d2[..., 1] - d2[..., 0]) > 1e-4
        np.testing.assert_array_equal(np.asarray(codes), ref)
        np.testing.assert_allclose(np.asarray(x), cb[ref], atol=1e-6)
        np.testing.assert_allclose(float(commit), ((z - cb[ref]) ** 2).sum(-1).mean(), rtol=1e-5)
        np.testing.assert_allclose(float(cbl), float(commit), rtol=1e-5)
        w = rng.normal(size=z.shape).astype(np.float32)
        gz = jax.grad(lambda z: jnp.sum(w * vq(z, jnp.asarray(cb))[0]))(jnp.asarray(z))
        np.testing.assert_allclose(np.asarray(gz), w, rtol=1e-6)
        gcb = jax.grad(lambda c: vq(jnp.asarray(z), c)[3])(jnp.asarray(cb))
        gref = np.zeros_like(cb)
        for i, k in np.ndenumerate(ref):
            gref[k] += 2 * (cb[k] - z[i]) / ref.size
        np.testing.assert_allclose(np.asarray(gcb), gref, rtol=1e-4, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_losses_match_scipy(self):
        rng = np.random.default_rng(6)
        a, b = rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(7, 4)).astype(np.float32)
        t = rng.integers(0, 4, 7)
        pa, pb = scipy.special.softmax(a, -1), scipy.special.softmax(b, -1)
        ce, ent, kl, be = self.variant(
            lambda a, b, t: (
                losses.cross_entropy(a, t),
                losses.entropy(a),
                losses.kl_logits(a, b),
                losses.batch_entropy(a),
            )
        )(a, b, t)
        chex.assert_trees_all_close(ce, -np.log(pa[np.arange(7), t]), rtol=1e-5)
        chex.assert_trees_all_close(ent, scipy.stats.entropy(pa, axis=-1), rtol=1e-5)
        chex.assert_trees_all_close(kl, scipy.stats.entropy(pa, pb, axis=-1), rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(
            be, scipy.stats.entropy(pa, axis=-1).mean() - scipy.stats.entropy(pa.mean(0)), rtol=1e-5
        )
