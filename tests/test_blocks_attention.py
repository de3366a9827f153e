"""models.blocks.attention.attend against a plain NumPy reference (float64): grouped key/value heads,
boolean masks of both ranks, a query with no visible key (the uniform average, never NaN), bfloat16
inputs, and the keys and values read without a per-head copy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn.models.blocks import attention


def reference(q, k, v, mask=None, scale=None):
    """Attention in float64 with NumPy: query head h reads key/value head h // (H // Hkv); a masked
    score is -inf, except that a query with no visible key averages every value uniformly."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, tq, h, d = q.shape
    tk, hkv = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    out = np.zeros((b, tq, h, d))
    m = np.ones((b, h, tq, tk), bool) if mask is None else np.broadcast_to(
        np.asarray(mask)[:, None] if np.ndim(mask) == 3 else np.asarray(mask), (b, h, tq, tk)
    )  # fmt: skip
    for bi in range(b):
        for hi in range(h):
            kk, vv = k[bi, :, hi // (h // hkv)], v[bi, :, hi // (h // hkv)]
            for qi in range(tq):
                s = kk @ q[bi, qi, hi] * scale
                seen = m[bi, hi, qi]
                if not seen.any():
                    out[bi, qi, hi] = vv.mean(axis=0)
                    continue
                s = np.where(seen, s, -np.inf)
                w = np.exp(s - s.max())
                out[bi, qi, hi] = (w / w.sum()) @ vv
    return out


def draw(rng, b=2, tq=5, tk=7, h=6, hkv=2, d=8, dtype=np.float32):
    q = rng.normal(size=(b, tq, h, d)).astype(dtype)
    k = rng.normal(size=(b, tk, hkv, d)).astype(dtype)
    v = rng.normal(size=(b, tk, hkv, d)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("heads", [(6, 2), (4, 4), (3, 1)])
def test_grouped_heads_equal_numpy(heads):
    rng = np.random.default_rng(heads[0] * 10 + heads[1])
    q, k, v = draw(rng, h=heads[0], hkv=heads[1])
    mask = rng.random((2, 5, 7)) > 0.3
    mask[:, :, 0] = True
    got = np.asarray(attention.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))
    ref = reference(q, k, v, mask)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # no mask, another scale
    got = np.asarray(attention.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), scale=0.3))
    ref = reference(q, k, v, None, 0.3)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_a_query_that_sees_no_key_averages_the_values_and_is_finite():
    rng = np.random.default_rng(1)
    q, k, v = draw(rng)
    q[0, 2] *= 1e4  # extreme scores stay finite too
    mask = rng.random((2, 5, 7)) > 0.5
    mask[0, 2] = False  # query 2 of row 0: every key masked
    mask[1] = False  # row 1: nothing visible at all (a padding row)
    mask[0, 0, 3] = True
    got = np.asarray(attention.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))
    assert np.isfinite(got).all()
    ref = reference(q, k, v, mask)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    g = 3  # 6 query heads over 2 key/value heads
    np.testing.assert_allclose(got[0, 2, 4], v[0, :, 4 // g].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_a_per_head_mask_and_bfloat16():
    rng = np.random.default_rng(2)
    q, k, v = draw(rng)
    mask = rng.random((2, 6, 5, 7)) > 0.3  # (B, H, Tq, Tk)
    mask[..., 1] = True
    got = attention.attend(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)), jnp.asarray(mask))
    assert got.dtype == jnp.bfloat16
    ref = reference(*(np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32) for a in (q, k, v)), mask)
    # bfloat16 operands: errors of a few bfloat16 steps (2^-8) of the values
    assert np.abs(np.asarray(got, np.float32) - ref).max() <= 0.05 * np.abs(ref).max()


def test_the_keys_are_read_without_a_copy_per_query_head():
    # Qwen2.5-VL-7B's decode step: 28 query heads over 4 key/value heads, one query over a cache of 1,088
    q = jax.ShapeDtypeStruct((8, 1, 28, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((8, 1088, 4, 128), jnp.bfloat16)
    mask = jax.ShapeDtypeStruct((8, 1, 1088), jnp.bool_)
    jaxpr = jax.make_jaxpr(attention.attend)(q, kv, kv, mask)
    shapes = [tuple(o.aval.shape) for e in jaxpr.eqns for o in e.outvars]
    # nothing of (B, Tk, H, D), the repeated cache's shape, in any order
    assert not any(sorted(s) == sorted((8, 1088, 28, 128)) for s in shapes)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 2 and all(jaxpr.jaxpr.invars[1] in e.invars or jaxpr.jaxpr.invars[2] in e.invars for e in dots)


def test_bad_arguments_are_refused():
    q, k, v = (jnp.zeros(s) for s in ((1, 2, 5, 4), (1, 3, 2, 4), (1, 3, 2, 4)))
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        attention.attend(q, k, v)
    with pytest.raises(ValueError, match="implementation must be one of"):
        attention.attend(jnp.zeros((1, 2, 4, 4)), k, v, implementation="flash")
    with pytest.raises(ValueError, match="q \\(B, Tq, H, D\\)"):
        attention.attend(jnp.zeros((2, 4, 4)), k, v)
    with pytest.raises(ValueError, match="mask must broadcast"):
        attention.attend(jnp.zeros((1, 2, 4, 4)), k, v, jnp.ones((2, 3), bool))


def test_the_xla_form_off_a_gpu():
    q = jnp.zeros((1, 2, 4, 64), jnp.bfloat16)
    k = jnp.zeros((1, 3, 2, 64), jnp.bfloat16)
    if jax.default_backend() != "gpu":
        assert attention.choose(q, k) == "xla" and not attention.cudnn_ok()
    assert attention.choose(q.astype(jnp.float32), k) == "xla"  # float32: never cuDNN
