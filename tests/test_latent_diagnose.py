"""Mediation and decomposition diagnostics over the apply protocol: on hand-built models whose
answers provably ignore the latents or read one latent linearly, on a minimal protocol model
written here, and against NumPy / SciPy references."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import f32_atol
from scipy import stats as sps

from tokdyn import stats
from tokdyn.diagnostics import mediation


class Out(NamedTuple):
    logits: jax.Array
    hidden: jax.Array
    attention: jax.Array
    latents: jax.Array


class Tiny:
    """A researcher's own model: [4 inputs | <s> | 2 slots | <e> | answer], one attention layer.
    Slot i's latent is tanh(mean of the inputs @ W_i); ``blind`` masks the slots out of every
    later position's attention (the answer provably ignores the latents); ``readout`` makes the
    answer a fixed linear read-out of latent 0."""

    T, D, V = 9, 6, 5
    slots, markers, answer = (5, 6), (4, 7), 8

    def __init__(self, blind=False, readout=False):
        self.blind, self.readout = blind, readout

    def init(self, key):
        k = jax.random.split(key, 4)
        return {
            "lat": jax.random.normal(k[0], (2, self.D, self.D)),
            "qk": jax.random.normal(k[1], (self.D, self.D)),
            "out": jax.random.normal(k[2], (self.D, self.V)),
            "read": jax.random.normal(k[3], (self.D, self.V)),
        }

    def apply(self, params, batch, *, latents=None, intervene=None, drop=None):
        x = batch["x"]
        b = x.shape[0]
        if latents is None:
            latents = jnp.tanh(jnp.einsum("bd,lde->ble", x[:, :4].mean(1), params["lat"]))
        x = x.at[:, jnp.asarray(self.slots)].set(latents)
        x = intervene(x) if intervene is not None else x
        keep = jnp.ones((b, self.T), bool) if drop is None else ~drop
        if self.blind:
            keep = keep.at[:, jnp.asarray(self.slots)].set(False)
        s = jnp.einsum("bqd,de,bke->bqk", x, params["qk"], x)
        mask = jnp.tril(jnp.ones((self.T, self.T), bool))[None] & keep[:, None, :]
        mask = mask | jnp.eye(self.T, dtype=bool)[None]  # a position always sees itself
        a = jax.nn.softmax(jnp.where(mask, s, -1e30), -1)
        h = x + jnp.einsum("bqk,bkd->bqd", a, x)
        logits = h @ params["out"]
        if self.readout:
            logits = logits.at[:, self.answer].set(latents[:, 0] @ params["read"])
        return Out(logits, jnp.stack([x, h], 1), a[:, None, None], latents)


def _batch(n, key=0):
    return {"x": jax.random.normal(jax.random.key(key), (n, Tiny.T, Tiny.D))}


def test_answer_that_ignores_the_latents_has_exactly_zero_effects():
    m = Tiny(blind=True)
    params, batch = m.init(jax.random.key(0)), _batch(40)
    answers = jnp.arange(40) % Tiny.V
    eff = mediation.latent_to_answer(
        jax.random.key(1),
        m.apply,
        params,
        batch,
        answer_position=m.answer,
        answers=answers,
        kinds=("zeros", "noise", "mean", "constant", "swap"),
    )
    assert np.all(np.asarray(eff.flipped) == 0) and np.all(np.asarray(eff.kl) == 0)
    np.testing.assert_array_equal(eff.correct, np.broadcast_to(eff.correct_before, eff.correct.shape))
    assert np.all(np.asarray(eff.changed))  # yet every intervention did replace the latents


@pytest.mark.full
def test_swap_flip_rate_of_a_linear_readout_equals_its_value():
    """answer = argmax(W z_0): under a swap instance i answers as its source perm[i] did, so the
    flip rate is exactly the share of i whose answer differs from perm[i]'s."""
    m = Tiny(readout=True)
    params, batch = m.init(jax.random.key(0)), _batch(64)
    key = jax.random.key(3)
    eff = mediation.latent_to_answer(key, m.apply, params, batch, answer_position=m.answer, kinds=("swap", "zeros"))
    a0 = np.asarray(jnp.argmax(m.apply(params, batch).logits[:, m.answer], -1))
    perm = np.asarray(mediation.swap_permutation(jax.random.split(key, 3)[1], 64))  # the swap key
    assert np.all(perm != np.arange(64)) and sorted(perm) == list(range(64))
    # a0 comes from another program (an eager apply): an instance on a last-bit argmax tie may answer
    # otherwise there, which changes at most two terms (its own and its source's) of the 64
    np.testing.assert_allclose(np.asarray(eff.flipped[0]).mean(), np.mean(a0 != a0[perm]), rtol=0, atol=2 / 64 + 1e-9)
    assert 0 < np.mean(a0 != a0[perm]) < 1
    assert np.all(np.isnan(np.asarray(eff.correct)))  # no answers given


def test_interventions_have_their_stated_properties():
    lat = jax.random.normal(jax.random.key(0), (30, 3, 64)) * jnp.arange(1.0, 31.0)[:, None, None]
    other = jnp.ones_like(lat)
    z = np.asarray(mediation.interventions(jax.random.key(1), lat, mediation.INTERVENTIONS, other=other))
    lat = np.asarray(lat)
    assert z.shape == (6, 30, 3, 64) and np.all(z[0] == 0)
    rms = np.sqrt((lat**2).mean(-1))  # (30, 3): each latent vector's own scale (the one table's noise)
    noise_rms = np.sqrt((z[1] ** 2).mean(-1))
    np.testing.assert_allclose(noise_rms / rms, 1.0, atol=0.3)  # 64 draws a vector
    # the mean of the OTHER instances (the table's mean): a float32 sum of 30 latents of size up to ~120 against
    # NumPy's float64 one, whose rounding scales with the summands (30 rounding units at the largest |latent|)
    others = (lat.sum(0, keepdims=True) - lat) / 29
    np.testing.assert_allclose(z[2], others, rtol=1e-5, atol=f32_atol(lat, ulps=30))
    np.testing.assert_allclose(z[3], np.broadcast_to(z[3][0, 0], lat.shape))  # one vector everywhere
    np.testing.assert_allclose(np.sqrt((z[3][0, 0] ** 2).mean()), np.sqrt((lat**2).mean()), rtol=0.25)
    src = [int(np.flatnonzero((lat == z[4][i]).all((1, 2)))[0]) for i in range(30)]
    assert all(s != i for i, s in enumerate(src)) and sorted(src) == list(range(30))
    np.testing.assert_array_equal(z[5], np.asarray(other))


def test_idle_interventions_and_bad_input_are_named():
    m = Tiny()
    params = m.init(jax.random.key(0))
    batch = {"x": jnp.zeros((6, Tiny.T, Tiny.D))}  # tanh(0 @ W) = 0: the latents are all zero
    with pytest.raises(ValueError, match=r"interventions \['zeros', 'mean', 'noise'\] left every instance's latents"):
        mediation.latent_to_answer(
            jax.random.key(0), m.apply, params, batch, answer_position=m.answer, kinds=("zeros", "mean", "noise")
        )
    with pytest.raises(ValueError, match="kinds must be one of"):
        mediation.latent_to_answer(jax.random.key(0), m.apply, params, _batch(4), answer_position=8, kinds=("blur",))
    with pytest.raises(ValueError, match="other must be given"):
        mediation.latent_to_answer(jax.random.key(0), m.apply, params, _batch(4), answer_position=8, kinds=("other",))
    with pytest.raises(TypeError, match="apply_fn must be"):
        mediation.latent_to_answer(jax.random.key(0), None, params, _batch(4), answer_position=8)
    with pytest.raises(ValueError, match=r"slots must name positions in \[0, 9\)"):
        mediation.check_decompose(mediation.SETTINGS, (5, 12), (4, 7), 9, jnp.zeros((4, 6)))
    with pytest.raises(ValueError, match="format_embedding must have 4 rows"):
        mediation.check_decompose(mediation.SETTINGS, (5, 6), (4, 7), 9)
    with pytest.raises(ValueError, match="slots must name the latent block"):
        mediation.check_decompose(("full",), (), (), 9)
    with pytest.raises(ValueError, match="sigma must be in"):
        mediation.noise_at(jax.random.key(0), (0, 1), 0.0)
    with pytest.raises(ValueError, match="top_k must be at most the number of patches 4"):
        mediation.narrowness(jnp.zeros((1, 1, 1, 9, 9)), queries=(5,), patches=(0, 1, 2, 3), top_k=5)


@pytest.mark.full
def test_decomposition_on_a_model_of_our_own_equals_its_manual_settings():
    m = Tiny()
    params, batch = m.init(jax.random.key(0)), _batch(50)
    out = m.apply(params, batch)
    answers = jnp.argmax(out.logits[:, m.answer], -1).at[:10].set(0)  # full is right on 40+ of 50
    fmt = jax.random.normal(jax.random.key(7), (4, Tiny.D))
    settings = mediation.check_decompose(mediation.SETTINGS, m.slots, m.markers, Tiny.T, fmt)
    f = jax.jit(
        lambda k, p, b, a: mediation.decompose(
            k,
            m.apply,
            p,
            b,
            slots=m.slots,
            markers=m.markers,
            answer_position=m.answer,
            answers=a,
            length=Tiny.T,
            settings=settings,
            format_embedding=fmt,
        )
    )
    got = np.asarray(f(jax.random.key(2), params, batch, answers))
    right = lambda o: np.asarray(jnp.argmax(o.logits[:, m.answer], -1) == answers)
    drop = np.zeros((50, Tiny.T), bool)
    x = np.asarray(batch["x"])
    ins = np.asarray(out.hidden[:, 0, 5:7])
    want = {
        "full": right(out),
        "markers_only": right(m.apply(params, batch, drop=jnp.asarray(drop | np.isin(np.arange(9), m.slots)))),
        "no_block": right(m.apply(params, batch, drop=jnp.asarray(drop | np.isin(np.arange(9), (4, 5, 6, 7))))),
        "slots_zeros": right(m.apply(params, batch, latents=jnp.zeros((50, 2, Tiny.D)))),
        "slots_mean": right(m.apply(params, batch, latents=jnp.asarray(np.broadcast_to(ins.mean(0), ins.shape)))),
        "format_only": right(
            m.apply(params, {"x": jnp.asarray(x)}, intervene=lambda z: z.at[:, jnp.asarray((4, 7, 5, 6))].set(fmt))
        ),
    }
    # the jitted decomposition and these eager applies are two programs: an answer on a last-bit
    # argmax tie may differ; 99% of the (setting, instance) answers must agree
    agree = {s: np.mean(got[i] == want[s]) for i, s in enumerate(settings) if s in want}
    assert len(agree) == len(want) and np.mean(list(agree.values())) >= 0.99, agree
    assert got.shape == (7, 50)


def test_narrowness_and_shift_equal_numpy():
    att = np.asarray(jax.random.dirichlet(jax.random.key(0), jnp.ones(7), (3, 2, 2, 7)))  # (B, depth, H, T, T)
    got = mediation.narrowness(jnp.asarray(att), queries=(5, 6), patches=(0, 1, 2, 3), top_k=2)
    a = att.mean((1, 2))[:, [5, 6]][..., :4]
    p = a / a.sum(-1, keepdims=True)
    np.testing.assert_allclose(got.entropy, -(p * np.log(p)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(got.top_k_mass, -np.sort(-p, -1)[..., :2].sum(-1), rtol=1e-5)
    np.testing.assert_allclose(got.patch_share, a.sum(-1), rtol=1e-5)
    u = np.asarray(jax.random.normal(jax.random.key(1), (4, 3, 5)))
    v = u + np.asarray(jax.random.normal(jax.random.key(2), (4, 3, 5)))
    s = mediation.shift(jnp.asarray(u), jnp.asarray(v))
    cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    np.testing.assert_allclose(s.cosine_distance, 1 - cos, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.relative_l2, np.linalg.norm(u - v, axis=-1) / np.linalg.norm(u, axis=-1), rtol=1e-5)
    z = mediation.shift(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    assert np.all(np.asarray(z.cosine_distance) == 0) and np.all(np.asarray(z.relative_l2) == 0)
    m = Tiny()
    params, batch = m.init(jax.random.key(0)), _batch(5)
    same = mediation.input_to_latent(m.apply, params, batch, batch, positions=(0, 1))
    assert np.allclose(same["latents"].cosine_distance, 0, atol=1e-6) and same["states"].relative_l2.shape == (5, 2)


def test_gain_retained_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(0)
    n = 400
    full = (rng.random(n) < 0.8).astype(float)
    none = (rng.random(n) < 0.4).astype(float)
    part = np.where(rng.random(n) < 0.7, full, none)
    got = stats.gain_retained(part, full, none, n_resamples=4000)
    share = (part.mean() - none.mean()) / (full.mean() - none.mean())
    assert got.share == pytest.approx(share)
    ref = sps.bootstrap(
        (part, full, none),
        lambda a, b, c, axis=-1: (a.mean(axis) - c.mean(axis)) / (b.mean(axis) - c.mean(axis)),
        paired=True,
        method="percentile",
        n_resamples=4000,
        random_state=1,
    )
    assert got.low == pytest.approx(ref.confidence_interval.low, abs=0.03)
    assert got.high == pytest.approx(ref.confidence_interval.high, abs=0.03)
    assert np.isnan(stats.gain_retained(part, full, full).share)  # no gain to retain
    with pytest.raises(ValueError, match="must score the same instances"):
        stats.gain_retained(part[:5], full, none)
