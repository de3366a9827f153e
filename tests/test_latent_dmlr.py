"""The confidence-driven latent optimiser: rewards against NumPy, the ES estimate of the model's
reward against its exact gradient, bookkeeping of the best latents, batching independence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import es
from tokdyn.diagnostics import dmlr
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import model as latent_model

# the training tests' tasks (tests/test_latent_train.py's TINY): one compiled generator for the session
TASK = tasks.Config(grid_size=3, n_colours=2)
CFG = latent_model.Config(task=TASK, width=16, depth=1, heads=2, latent_mode="feedback", n_latents=2)
MODEL = latent_model.Model(CFG)
LAY = MODEL.layout
APPLY = jax.jit(MODEL.apply)  # (eager Flax applies are slow)
POS = dict(latent_positions=tuple(range(LAY.latents.start, LAY.latents.stop)), answer_position=LAY.answer)
# the reward of every instance's logits (B, T, V), one compilation for the tests below
IDS = np.arange(8, dtype=np.int32)  # the instances' ids
REWARDS = jax.jit(jax.vmap(lambda lg: dmlr.confidence(lg, reward="entropy", top_k=5, **POS)))


@pytest.fixture(scope="module")
def setup():
    params = MODEL.init(jax.random.key(0))
    batch = jax.tree.map(
        np.asarray, tasks.generate(jax.random.key(1), 8, TASK)
    )  # host arrays: sliced without compiling
    return params, batch


def _reference(logits, reward, k, latent_positions, answer_position):
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


@pytest.mark.full
def test_es_estimate_of_the_models_reward_points_along_its_gradient(setup):
    """On the model itself: with many pairs and a small sigma the ES estimate of the paper's reward
    is close in direction to jax.grad of the same reward."""
    params, batch = setup
    inst = jax.tree.map(lambda a: a[:1], batch)
    lat = np.asarray(APPLY(params, batch).latents)[
        :1
    ]  # the model's own latents (the batch's program, as the tests below)

    def reward(u):
        out = MODEL.apply(params, inst, latents=u)
        return dmlr.confidence(out.logits[0], reward="entropy", top_k=5, **POS)

    exact = jax.jit(jax.grad(reward))(lat)
    est, _ = jax.jit(lambda k: es.es_grad(k, reward, lat, sigma=1e-2, n_pairs=512))(jax.random.key(0))
    est, exact = np.asarray(est, np.float64).ravel(), np.asarray(exact, np.float64).ravel()
    cos = est @ exact / (np.linalg.norm(est) * np.linalg.norm(exact))
    assert cos > 0.9, float(cos)


OPTIMISERS = {
    e: dmlr.make(MODEL.apply, dmlr.Config(reward="entropy", top_k=5, n_iters=6, n_pairs=4, estimator=e), **POS)
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
    res = OPTIMISERS[estimator](jax.random.key(2), params, batch, hp, IDS)
    assert res.latents_best.shape == (8, 2, 16) and res.rewards.shape == (8, 6)
    np.testing.assert_allclose(res.latents_before, APPLY(params, batch).latents, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.reward_best, np.maximum(res.reward_before, np.max(res.rewards, 1)), rtol=1e-6)
    out = APPLY(params, batch, latents=res.latents_best)
    # answer_best comes from another program: an argmax of these logits up to float32 rounding (a
    # last-bit tie may pick either answer)
    lg = np.asarray(out.logits)[:, LAY.answer]
    picked = np.take_along_axis(lg, np.asarray(res.answer_best)[:, None], -1)[:, 0]
    np.testing.assert_allclose(picked, lg.max(-1), rtol=1e-5, atol=1e-5)
    r = REWARDS(out.logits)
    np.testing.assert_allclose(r, res.reward_best, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(res.n_nan) == 0)
    assert np.mean(np.asarray(res.reward_best) > np.asarray(res.reward_before)) >= 0.5  # the search climbs


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


@pytest.mark.parametrize("inject", [pytest.param("best", marks=pytest.mark.full), "all"])
def test_injection_answers_with_the_most_confident_pair(setup, inject):
    """With injection the best (latents, injected patches) pair reproduces the reported reward and
    answer; "best" starts from no patch and only grows when the reward improves."""
    params, batch = setup
    cfg = dmlr.Config(reward="entropy", top_k=5, n_iters=4, n_pairs=2, estimator="exact", inject=inject, top_m=2)
    patches = tuple(range(TASK.n_patches))
    res = dmlr.make(MODEL.apply, cfg, patch_positions=patches, **POS)(
        jax.random.key(2), params, batch, dmlr.Hparams(learning_rate=0.5), IDS
    )
    inj = np.asarray(res.injected)
    assert inj.shape == (8, TASK.n_patches)
    out = APPLY(params, batch, latents=res.latents_best, inject=jnp.asarray(inj))
    lg = np.asarray(out.logits)[:, LAY.answer]  # another program: an argmax up to rounding, as above
    picked = np.take_along_axis(lg, np.asarray(res.answer_best)[:, None], -1)[:, 0]
    np.testing.assert_allclose(picked, lg.max(-1), rtol=1e-5, atol=1e-5)
    r = REWARDS(out.logits)
    np.testing.assert_allclose(r, res.reward_best, rtol=1e-4, atol=1e-5)
    if inject == "all":
        assert inj.all()
    else:
        improved = np.asarray(res.reward_best) > np.asarray(res.reward_before)
        assert not inj[~improved].any()  # never improved: nothing injected
        assert inj.sum(1).max() <= 2 * 2 * (cfg.n_iters - 1) and inj[improved].any()


def test_results_do_not_depend_on_batching(setup):
    """Instance i's result depends on its id, not on its place in the batch."""
    params, batch = setup
    f, perm = OPTIMISERS["es"], np.array([5, 2, 7, 0, 1, 6, 3, 4], np.int32)
    whole = f(jax.random.key(3), params, batch, dmlr.Hparams(), IDS)
    shuffled = f(jax.random.key(3), params, jax.tree.map(lambda a: a[perm], batch), dmlr.Hparams(), perm)
    whole, shuffled = jax.tree.map(np.asarray, (whole, shuffled))
    np.testing.assert_allclose(shuffled.reward_best, whole.reward_best[perm], rtol=1e-5)
    np.testing.assert_allclose(shuffled.latents_best, whole.latents_best[perm], rtol=1e-4, atol=1e-6)


def test_random_latents_keep_each_latents_norm():
    lat = (np.random.default_rng(0).standard_normal((5, 3, 8)) * np.arange(1.0, 4.0)[:, None]).astype(np.float32)
    r = np.asarray(jax.jit(dmlr.random_latents)(jax.random.key(1), lat))
    np.testing.assert_allclose(np.linalg.norm(r, axis=-1), np.linalg.norm(lat, axis=-1), rtol=1e-5)
    assert not np.allclose(r, lat)


def test_bad_input_is_named(setup):
    params, batch = setup
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="top_k must be at most the vocabulary size"):
        dmlr.Config(top_k=TASK.vocab.size + 1).validate(TASK.vocab.size)
    with pytest.raises(ValueError, match="reward must be one of"):
        dmlr.Config(reward="certainty").validate()
    with pytest.raises(ValueError, match="n_iters must be an int >= 1, got 0"):
        dmlr.Config(n_iters=0).validate()
    with pytest.raises(ValueError, match="sigma must be in \\(0, inf\\], got -0.1"):
        dmlr.optimise(key, MODEL.apply, params, batch, dmlr.Config(), dmlr.Hparams(sigma=-0.1), **POS)
    with pytest.raises(ValueError, match="latent_positions must name at least one position"):
        dmlr.optimise(key, MODEL.apply, params, batch, latent_positions=(), answer_position=LAY.answer)
    with pytest.raises(TypeError, match="apply_fn must be"):
        dmlr.optimise(key, None, params, batch, **POS)
    with pytest.raises(ValueError, match="patch_positions must name the image patches"):
        dmlr.optimise(key, MODEL.apply, params, batch, dmlr.Config(inject="best"), **POS)
    with pytest.raises(TypeError, match="apply_fn must take inject="):
        dmlr.optimise(
            key,
            lambda p, b, *, latents=None: None,
            params,
            batch,
            dmlr.Config(inject="all"),
            patch_positions=(0, 1),
            **POS,
        )
    with pytest.raises(ValueError, match="inject must be one of"):
        dmlr.Config(inject="some").validate()
