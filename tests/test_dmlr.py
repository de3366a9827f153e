"""The confidence-driven latent optimiser (``tokdyn.diagnostics.dmlr``) on a user's protocol model: the
rewards and the attended patches against NumPy, the control's norms, the ES estimate of the model's reward
against its exact gradient, the bookkeeping of the most confident latents (with and without visual injection),
batching independence and named errors. The model is ``test_apply_protocol.Toy`` with the protocol's optional
``inject`` added (:class:`Injecting`); no library model is involved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_apply_protocol import Toy
from tokdyn import es
from tokdyn.diagnostics import dmlr
from tokdyn.models.protocol import Outputs


class Injecting(Toy):
    """``Toy`` (the same parameters and layout, [4 image patches | question | <s> | 2 latents | <e> | <answer>])
    with DMLR's visual injection: ``inject`` (B, 4) bool inserts a copy of every patch's input embedding before
    the latent block's start marker (position 5), which a later position reads only where ``inject`` is True
    (each copy reads itself). The outputs keep the T positions: the copies' rows are cut and the attention paid
    to a copy is added to its patch's column. Without ``inject``, or with no entry True, it is ``Toy``."""

    at = Toy.markers[0]

    def apply(self, params, batch, *, latents=None, intervene=None, drop=None, inject=None):
        b, p, at = batch["image"].shape[0], self.P, self.at
        patches = params["colour"][batch["image"]]  # (B, P, D)
        fixed = jnp.broadcast_to(jnp.asarray([1, 0, 0, 2, 3]), (b, 5))  # <s> slot slot <e> <answer>
        text = params["tok"][jnp.concatenate([batch["question"][:, None], fixed], 1)]  # (B, 6, D)
        x = jnp.concatenate([patches, text], 1) + params["pos"][None]  # (B, T, D)
        if latents is None:
            latents = jnp.tanh(jnp.einsum("bd,lde->ble", patches.mean(1), params["lat"]))
        x = x.at[:, jnp.asarray(self.slots)].set(latents)
        if intervene is not None:
            x = intervene(x)
        keep = jnp.ones((b, self.T), bool) if drop is None else ~drop
        if inject is not None:  # (B, T + P, D): the copies of the patches before the block
            x = jnp.concatenate([x[:, :at], x[:, :p], x[:, at:]], 1)
            keep = jnp.concatenate([keep[:, :at], jnp.asarray(inject, bool), keep[:, at:]], 1)
        n = x.shape[1]
        mask = (jnp.tril(jnp.ones((n, n), bool))[None] & keep[:, None]) | jnp.eye(n, dtype=bool)
        hidden, attn, h = [x], [], x
        for i in range(self.N):
            s = jnp.einsum("bqd,hde,bke->bhqk", h, params["qk"][i], h)
            a = jax.nn.softmax(jnp.where(mask[:, None], s, -1e30), -1)  # (B, H, n, n)
            h = h + jnp.einsum("bhqk,bkd,hde->bqe", a, h, params["v"][i])
            hidden.append(h)
            attn.append(a)
        hidden, attn, logits = jnp.stack(hidden, 1), jnp.stack(attn, 1), h @ params["out"]
        if inject is not None:  # back to the T positions; attention to a copy goes to its patch
            cut = lambda z, axis: jnp.delete(z, np.arange(at, at + p), axis=axis)  # noqa: E731
            attn = attn.at[..., :p].add(attn[..., at : at + p])
            logits, hidden, attn = cut(logits, 1), cut(hidden, 2), cut(cut(attn, 3), 4)
        return Outputs(logits, hidden, attn, latents)


MODEL = Injecting()
APPLY = jax.jit(MODEL.apply)
POS = dict(latent_positions=Toy.slots, answer_position=Toy.answer)
TOP_K = 3  # of the Toy's V = 5 tokens
B = 8
IDS = np.arange(B, dtype=np.int32)  # the instances' ids


@pytest.fixture(scope="module")
def setup():
    params = MODEL.init(jax.random.key(0))
    rng = np.random.default_rng(1)  # host arrays: sliced and permuted without compiling
    batch = {"image": rng.integers(0, 3, (B, Toy.P)), "question": rng.integers(0, Toy.V, B)}
    return params, batch


def _reference(logits, reward, k, latent_positions, answer_position):
    """dmlr.confidence of one sequence's logits (T, V) in float64 NumPy."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if reward == "answer":
        return p[answer_position].max()
    top = -np.sort(-p[list(latent_positions)], -1)[:, :k]  # (L, k)
    if reward == "logprob":
        return np.log(top).mean()
    q = top / top.sum(-1, keepdims=True)
    return 1.0 - (-(q * np.log(q)).sum(-1)).mean()


def _rewards(logits):
    """(B,) the entropy reward of every instance's logits (B, T, V), in NumPy."""
    return np.array([_reference(lg, "entropy", TOP_K, Toy.slots, Toy.answer) for lg in np.asarray(logits)])


def _answers_are_the_argmax(logits, answers):
    """``answers`` (B,) are an argmax of the answer position's logits, up to float32 rounding (another
    program: a last-bit tie may pick either answer)."""
    lg = np.asarray(logits)[:, Toy.answer]
    picked = np.take_along_axis(lg, np.asarray(answers)[:, None], -1)[:, 0]
    np.testing.assert_allclose(picked, lg.max(-1), rtol=1e-5, atol=1e-5)


# one small program per reward and k (op by op, every operation would compile on its own)
CONFIDENCE = jax.jit(
    lambda lg, reward, top_k: dmlr.confidence(
        lg, reward=reward, top_k=top_k, latent_positions=(2, 5, 6), answer_position=8
    ),
    static_argnames=("reward", "top_k"),
)


@pytest.mark.parametrize("reward", dmlr.REWARDS)
@pytest.mark.parametrize("k", [1, 3, 7])
def test_confidence_rewards_equal_numpy(reward, k):
    logits = (np.random.default_rng(k).standard_normal((9, 7)) * 3).astype(np.float32)
    got = CONFIDENCE(logits, reward=reward, top_k=k)
    np.testing.assert_allclose(got, _reference(logits, reward, k, (2, 5, 6), 8), rtol=1e-5, atol=1e-6)


def test_attended_patches_equal_numpy():
    att = np.random.default_rng(4).random((2, 3, 12, 12)).astype(np.float32)
    lat, patches = (9, 10), (0, 1, 2, 3, 4, 5)
    got = np.asarray(jax.jit(dmlr.attended_patches, static_argnums=(1, 2, 3))(att, lat, patches, 2))
    mean = att.mean((0, 1))[np.ix_(lat, patches)]
    want = np.zeros(6, bool)
    want[np.argsort(-mean, -1)[:, :2].ravel()] = True
    # a top-k of float32 means against NumPy's float64 ones (two programs): exact only because no
    # query's 2nd and 3rd patches lie within rounding of each other
    top3 = -np.sort(-mean, -1)[:, :3]
    assert np.min(top3[:, 1] - top3[:, 2]) > 1e-5
    np.testing.assert_array_equal(got, want)


def test_random_latents_keep_each_latents_norm():
    lat = (np.random.default_rng(0).standard_normal((5, 3, 8)) * np.arange(1.0, 4.0)[:, None]).astype(np.float32)
    r = np.asarray(jax.jit(dmlr.random_latents)(jax.random.key(1), lat))
    np.testing.assert_allclose(np.linalg.norm(r, axis=-1), np.linalg.norm(lat, axis=-1), rtol=1e-5)
    assert not np.allclose(r, lat)


def test_the_test_model_is_the_toy_with_injection(setup):
    """Without ``inject``, and with no entry True, ``Injecting`` is ``Toy``; with every entry True the later
    positions move, the earlier ones do not, and the attention rows still sum to 1 over the T positions."""
    params, batch = setup
    none, all_ = np.zeros((B, Toy.P), bool), np.ones((B, Toy.P), bool)
    toy, plain, unseen, seen = jax.jit(
        lambda p, b: (
            Toy().apply(p, b),
            MODEL.apply(p, b),
            MODEL.apply(p, b, inject=jnp.asarray(none)),
            MODEL.apply(p, b, inject=jnp.asarray(all_)),
        )
    )(params, batch)
    for f in Outputs._fields:
        np.testing.assert_allclose(getattr(plain, f), getattr(toy, f), rtol=1e-5, atol=1e-5, err_msg=f)
        np.testing.assert_allclose(getattr(unseen, f), getattr(toy, f), rtol=1e-5, atol=1e-5, err_msg=f)
    at = Injecting.at
    np.testing.assert_allclose(seen.logits[:, :at], toy.logits[:, :at], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(seen.logits[:, at:] - toy.logits[:, at:])).max() > 1e-3
    assert seen.attention.shape == toy.attention.shape
    np.testing.assert_allclose(np.asarray(seen.attention).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.full
def test_es_estimate_of_the_models_reward_points_along_its_gradient(setup):
    """On the model itself: with many pairs and a small sigma the ES estimate of the paper's reward
    is close in direction to jax.grad of the same reward."""
    params, batch = setup
    inst = jax.tree.map(lambda a: a[:1], batch)
    lat = np.asarray(APPLY(params, inst).latents)  # the model's own latents (1, L, D)

    def reward(u):
        out = MODEL.apply(params, inst, latents=u)
        return dmlr.confidence(out.logits[0], reward="entropy", top_k=TOP_K, **POS)

    exact = jax.jit(jax.grad(reward))(lat)
    est, _ = jax.jit(lambda k: es.es_grad(k, reward, lat, sigma=1e-2, n_pairs=512))(jax.random.key(0))
    est, exact = np.asarray(est, np.float64).ravel(), np.asarray(exact, np.float64).ravel()
    cos = est @ exact / (np.linalg.norm(est) * np.linalg.norm(exact))
    assert cos > 0.9, float(cos)


OPTIMISERS = {
    e: dmlr.make(MODEL.apply, dmlr.Config(reward="entropy", top_k=TOP_K, n_iters=6, n_pairs=4, estimator=e), **POS)
    for e in dmlr.ESTIMATORS
}


@pytest.mark.parametrize(
    "estimator", [e if e == "es" else pytest.param(e, marks=pytest.mark.full) for e in dmlr.ESTIMATORS]
)
def test_optimise_keeps_the_most_confident_latents(setup, estimator):
    """reward_best is the largest of the start and every iteration; answer_best is the model's
    answer with latents_best; the start is the model's own latents."""
    params, batch = setup
    hp = dmlr.Hparams(learning_rate=0.5, sigma=0.1)
    res = jax.tree.map(np.asarray, OPTIMISERS[estimator](jax.random.key(2), params, batch, hp, IDS))
    assert res.latents_best.shape == (B, 2, Toy.D) and res.rewards.shape == (B, 6) and res.injected is None
    start = APPLY(params, batch)
    np.testing.assert_allclose(res.latents_before, start.latents, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.reward_before, _rewards(start.logits), rtol=1e-4, atol=1e-5)
    _answers_are_the_argmax(start.logits, res.answer_before)
    np.testing.assert_allclose(res.reward_best, np.maximum(res.reward_before, np.max(res.rewards, 1)), rtol=1e-6)
    out = APPLY(params, batch, latents=res.latents_best)
    _answers_are_the_argmax(out.logits, res.answer_best)
    np.testing.assert_allclose(_rewards(out.logits), res.reward_best, rtol=1e-4, atol=1e-5)
    assert np.all(res.n_nan == 0)
    assert np.mean(res.reward_best > res.reward_before) >= 0.5  # the search climbs


@pytest.mark.parametrize("inject", [pytest.param("best", marks=pytest.mark.full), "all"])
def test_injection_answers_with_the_most_confident_pair(setup, inject):
    """With injection the best (latents, injected patches) pair reproduces the reported reward and
    answer; "best" starts from no patch and only grows when the reward improves."""
    params, batch = setup
    cfg = dmlr.Config(reward="entropy", top_k=TOP_K, n_iters=4, n_pairs=2, estimator="exact", inject=inject, top_m=2)
    res = dmlr.make(MODEL.apply, cfg, patch_positions=Toy.patches, **POS)(
        jax.random.key(2), params, batch, dmlr.Hparams(learning_rate=0.5), IDS
    )
    res = jax.tree.map(np.asarray, res)
    inj = res.injected
    assert inj.shape == (B, Toy.P) and inj.dtype == bool
    out = APPLY(params, batch, latents=res.latents_best, inject=jnp.asarray(inj))
    _answers_are_the_argmax(out.logits, res.answer_best)
    np.testing.assert_allclose(_rewards(out.logits), res.reward_best, rtol=1e-4, atol=1e-5)
    assert np.all(res.n_nan == 0)
    if inject == "all":
        assert inj.all()
    else:
        improved = res.reward_best > res.reward_before
        assert not inj[~improved].any()  # never improved: nothing injected
        assert inj[improved].any()


def test_results_do_not_depend_on_batching(setup):
    """Instance i's result depends on its id, not on its place in the batch."""
    params, batch = setup
    f, perm = OPTIMISERS["es"], np.array([5, 2, 7, 0, 1, 6, 3, 4], np.int32)
    whole = f(jax.random.key(3), params, batch, dmlr.Hparams(), IDS)
    shuffled = f(jax.random.key(3), params, jax.tree.map(lambda a: a[perm], batch), dmlr.Hparams(), perm)
    whole, shuffled = jax.tree.map(np.asarray, (whole, shuffled))
    np.testing.assert_allclose(shuffled.reward_best, whole.reward_best[perm], rtol=1e-5)
    np.testing.assert_allclose(shuffled.latents_best, whole.latents_best[perm], rtol=1e-4, atol=1e-6)


def test_bad_input_is_named(setup):
    params, batch = setup
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="top_k must be at most the vocabulary size"):
        dmlr.Config(top_k=Toy.V + 1).validate(Toy.V)
    with pytest.raises(ValueError, match="top_k must be at most the vocabulary size 5, got 6"):
        dmlr.optimise(key, MODEL.apply, params, batch, dmlr.Config(top_k=6), **POS)
    with pytest.raises(ValueError, match="reward must be one of"):
        dmlr.Config(reward="certainty").validate()
    with pytest.raises(ValueError, match="n_iters must be an int >= 1, got 0"):
        dmlr.Config(n_iters=0).validate()
    with pytest.raises(ValueError, match="sigma must be in \\(0, inf\\], got -0.1"):
        dmlr.optimise(key, MODEL.apply, params, batch, dmlr.Config(), dmlr.Hparams(sigma=-0.1), **POS)
    with pytest.raises(ValueError, match="latent_positions must name at least one position"):
        dmlr.optimise(key, MODEL.apply, params, batch, latent_positions=(), answer_position=Toy.answer)
    with pytest.raises(TypeError, match="apply_fn must be"):
        dmlr.optimise(key, None, params, batch, **POS)
    with pytest.raises(ValueError, match="patch_positions must name the image patches"):
        dmlr.optimise(key, MODEL.apply, params, batch, dmlr.Config(inject="best"), **POS)
    with pytest.raises(TypeError, match="apply_fn must take inject="):
        dmlr.optimise(key, Toy().apply, params, batch, dmlr.Config(inject="all"), patch_positions=Toy.patches, **POS)
    with pytest.raises(ValueError, match="inject must be one of"):
        dmlr.Config(inject="some").validate()
