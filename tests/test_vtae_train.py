"""Training of tokdyn.models.vtae on tokdyn.train: the 5-token proof of concept, vmap == per-model, NaN reports,
bad input."""

import dataclasses
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import child_env
from tokdyn import train
from tokdyn.models import vtae
from tokdyn.models.vtae import diagnostics, training


def budget(steps, every):
    """The autoencoder's default training (constant learning rate, no warm-up, no clipping) for
    ``steps`` steps in calls of ``every``."""
    return dataclasses.replace(vtae.Config().train, steps=steps, steps_per_call=every)


POC = dict(vocab_size=5, grid=3, colours=2, train=budget(300, 50), batch_size=32)


@pytest.mark.full
@pytest.mark.parametrize("mode", ["gumbel_st", "vq", "categorical"])
def test_five_token_binary_grid_reaches_full_accuracy(mode):
    cfg = vtae.Config(mode=mode, **POC)
    state, curves = vtae.train(jax.random.key(0), cfg)
    d = diagnostics.evaluate(jax.random.key(1), state.params, cfg)
    assert float(d["accuracy"]) == 1.0
    assert float(d["uniqueness"]) == 1.0 and int(d["min_hamming"]) >= 1
    assert not bool(d["collapsed"])
    assert float(d["loss_norm"]) < 0.2  # well below chance (loss / ln V = 1)
    assert train.nan_report(state) == [] and int(state.step) == cfg.train.steps
    assert sorted(curves) == sorted(training.CURVES)
    assert all(np.asarray(v).shape == (cfg.n_logs,) for v in curves.values())


def many(cfg, keys, hp, **kw):
    return train.train_many(vtae.trainer(cfg), vtae.inputs(cfg), keys, hp, **kw)


@pytest.mark.full  # at the model's scale; the train layer's strategies: tests/test_train.py in the default run
def test_vmapped_training_equals_per_model_training(monkeypatch):
    cfg = vtae.Config(
        mode="gumbel_st",
        hidden=16,
        vocab_size=6,
        grid=3,
        colours=2,
        train=budget(40, 20),
        batch_size=8,
        losses=("batch_entropy",),
    )
    keys = jax.random.split(jax.random.key(3), 3)
    hp = train.broadcast(
        vtae.Hparams(
            learning_rate=jnp.array([1e-3, 3e-3, 1e-2]), tau_start=jnp.array([1.0, 2.0, 0.5]), w_batch_entropy=0.2
        ),
        3,
    )
    hp2 = train.broadcast(
        vtae.Hparams(
            learning_rate=jnp.array([2e-3, 5e-3, 2e-2]), tau_start=jnp.array([0.7, 1.5, 1.0]), w_batch_entropy=0.1
        ),
        3,
    )
    # one trainer per config, so one compiled step over several hparams (same shapes): the loss is
    # traced by the first call only
    assert vtae.trainer(cfg) is vtae.trainer(dataclasses.replace(cfg))
    loss_fn, traced = training.loss_fn, []

    def counted(*args):
        traced.append(1)
        return loss_fn(*args)

    monkeypatch.setattr(training, "loss_fn", counted)
    a = many(cfg, keys, hp)
    n = len(traced)
    b = many(cfg, keys, hp2)
    monkeypatch.undo()
    assert n >= 1 and len(traced) == n
    assert not np.allclose(a.curves["loss"], b.curves["loss"])
    mapped = many(cfg, keys, hp, execution=train.Execution(batch_size=2))
    for i in range(3):
        hp_i = jax.tree_util.tree_map(lambda v: v[i], hp)
        one = vtae.train(keys[i], cfg, hp_i)
        for x, y in zip(
            jax.tree_util.tree_leaves(one),
            jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda v: v[i], (a.state, a.curves))),
        ):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)
    for x, y in zip(
        jax.tree_util.tree_leaves((a.state, a.curves)), jax.tree_util.tree_leaves((mapped.state, mapped.curves))
    ):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)
    # different hyper-parameters give different models
    assert not np.allclose(a.curves["loss"][0], a.curves["loss"][2])


SHARDED_CHILD = """
import jax, jax.numpy as jnp, numpy as np
from tokdyn import train
from tokdyn.models import vtae
assert jax.local_device_count() == 2
cfg = vtae.Config(mode="vq", vq_ema=True, hidden=16, vocab_size=6, grid=3, colours=3, batch_size=8,
                  train=train.Config(steps=30, steps_per_call=10, warmup=0, decay="constant", clip_norm=0.0))
keys = jax.random.split(jax.random.key(5), 5)  # 5 models on 2 devices: the last share is padded
hp = train.broadcast(vtae.Hparams(learning_rate=jnp.array([1e-3, 3e-3, 1e-2, 2e-2, 5e-3])), 5)
sharded = train.train_many(vtae.trainer(cfg), vtae.inputs(cfg), keys, hp)
assert np.asarray(sharded.state.nan_step).shape == (5,) and sharded.curves["loss"].shape == (5, 3)
# every model (the padded last share's included) is the one trained alone (one compilation for all)
both = jax.tree_util.tree_leaves((sharded.state, sharded.curves))
for i in range(5):
    one = vtae.train(keys[i], cfg, jax.tree_util.tree_map(lambda v: v[i], hp))
    for a, b in zip(jax.tree_util.tree_leaves(one), both):
        assert a.shape == b.shape[1:], (a.shape, b.shape)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[i], rtol=2e-4, atol=2e-5)
"""


@pytest.mark.full
def test_train_many_shards_models_over_devices():
    import subprocess
    import sys

    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", SHARDED_CHILD], env=env, check=True)
    with pytest.raises(ValueError, match="devices"):
        many(
            vtae.Config(),
            jax.random.split(jax.random.key(0), 2),
            train.broadcast(vtae.Hparams(), 2),
            execution=train.Execution(devices=()),
        )


def test_nan_losses_are_reported_per_model():
    cfg = vtae.Config(mode="sigmoid", vocab_size=4, grid=2, colours=2, train=budget(20, 10), batch_size=8)
    hp = train.broadcast(vtae.Hparams(learning_rate=jnp.array([1e-3, 1e38, 1e-3])), 3)
    r = many(cfg, jax.random.split(jax.random.key(0), 3), hp)
    rep = train.nan_report(r.state)
    assert [i for i, *_ in rep] == [1]
    assert 0 < rep[0][1] < cfg.train.steps and rep[0][2] >= 1
    # the failing model keeps its last finite parameters; the others are untouched
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(r.state.params))
    assert np.all(np.isfinite(r.curves["loss"][0]))


@pytest.mark.full
def test_curriculum_and_occurrence_sampling():
    cfg = vtae.Config(
        vocab_size=12,
        grid=3,
        colours=2,
        train=budget(100, 10),
        curriculum=True,
        curriculum_start=2,
        curriculum_fraction=0.5,
    )
    k = np.asarray(jax.vmap(lambda t: training.active_vocab(t, cfg))(jnp.arange(100)))
    ref = 2 + (10 * np.minimum(np.arange(100), 50)) // 50
    np.testing.assert_array_equal(k, ref)
    _, curves = vtae.train(jax.random.key(0), cfg)
    active = np.asarray(curves["active_vocab"])
    assert active[0] < 4 and active[-1] == 12 and np.all(np.diff(active) >= 0)


@pytest.mark.full
def test_semantic_grounding_with_embeddings():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 3)).astype(np.float32)
    cfg = vtae.Config(
        vocab_size=5,
        grid=3,
        colours=2,
        mode="sigmoid",
        encoder_input="embedding",
        embed_dim=3,
        losses=("semantic",),
        train=budget(200, 50),
    )
    state, _ = vtae.train(jax.random.key(0), cfg, vtae.Hparams(learning_rate=1e-2), embeddings=emb)
    d = diagnostics.evaluate(jax.random.key(1), state.params, cfg, embeddings=jnp.asarray(emb))
    assert float(d["accuracy"]) == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2, got 1"):
        vtae.Config(vocab_size=1).validate()
    with pytest.raises(ValueError, match="colours must be an int >= 2, got 1"):
        vtae.Config(colours=1).validate()
    with pytest.raises(ValueError, match=r"mode must be one of .* got 'dither'"):
        vtae.Config(mode="dither").validate()
    with pytest.raises(ValueError, match="decoder must be one of"):
        vtae.Config(decoder="rnn").validate()
    with pytest.raises(ValueError, match="losses must be one of"):
        vtae.Config(losses=("entropy",)).validate()
    with pytest.raises(ValueError, match="embed_dim must be given"):
        vtae.Config(encoder_input="embedding").validate()
    with pytest.raises(ValueError, match="train.steps must be a multiple of steps_per_call"):
        vtae.Config(train=budget(55, 10)).validate()
    with pytest.raises(ValueError, match="learning_rate must be in"):
        vtae.train(jax.random.key(0), vtae.Config(train=budget(10, 10)), vtae.Hparams(learning_rate=-1.0))
    with pytest.raises(ValueError, match=r"weights must have shape \(5,\)"):
        vtae.train(jax.random.key(0), vtae.Config(train=budget(10, 10)), weights=np.ones(4))
    with pytest.raises(ValueError, match=r"weights must have shape \(5,\)"):
        vtae.inputs(vtae.Config(), np.ones(4))
    with pytest.raises(ValueError, match="embeddings .* are required"):
        vtae.inputs(vtae.Config(encoder_input="embedding", embed_dim=3))
    with pytest.raises(ValueError, match=r"hparams leaf .*learning_rate must have shape \(3,\)"):
        many(
            vtae.Config(train=budget(10, 10)),
            jax.random.split(jax.random.key(0), 3),
            train.broadcast(vtae.Hparams(), 2),
        )
    params = vtae.init(jax.random.key(0), vtae.Config())
    with pytest.raises(ValueError, match="key must be a PRNG key .* unless deterministic=True"):
        vtae.encode(None, params, vtae.Config(), jnp.arange(3))
    enc = vtae.encode(None, params, vtae.Config(), jnp.arange(3), deterministic=True)  # no key needed: no draw
    np.testing.assert_array_equal(np.asarray(enc.codes), np.argmax(np.asarray(params["encoder"]["table"][:3]), -1))
    with pytest.warns(UserWarning, match=r"colours=2 and grid=2 .* 16 distinct patterns < vocab_size=20"):
        vtae.Config(vocab_size=20, grid=2, colours=2).validate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vtae.Config(vocab_size=16, grid=2, colours=2).validate()  # exactly enough patterns: no warning


def test_python_loop_over_the_layers_step_equals_train():
    """train() scans the layer's step of the trainer; stepping it from Python (the benchmark's loop
    peer) gives the same model."""
    cfg = vtae.Config(
        mode="vq", vq_ema=True, hidden=8, vocab_size=5, grid=2, colours=3, train=budget(12, 4), batch_size=4
    )
    hp = vtae.Hparams(learning_rate=1e-2).astype()
    key, tr = jax.random.key(5), vtae.trainer(cfg)
    ref, ref_curves = vtae.train(key, cfg, hp)
    state, run_key = train.init_state(tr, key, hp), tr.keys(key)[1]
    data = vtae.inputs(cfg)
    step = jax.jit(train.make_step(tr))
    ce = []
    for _ in range(cfg.train.steps):
        state, logs = step(state, data, run_key)
        ce.append(float(logs["ce"]))
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ref_curves["ce"]), np.asarray(ce).reshape(3, 4).mean(1), rtol=1e-5)
    # a step whose loss is not finite is skipped: parameters, optimiser state and VQ EMA state are
    # kept, the step is recorded, and the optimiser never gives up skipping
    bad = jax.tree_util.tree_map(lambda v: v, state.params)
    bad["decoder"]["out"]["b"] = jnp.full_like(bad["decoder"]["out"]["b"], jnp.nan)  # NaN logits and loss
    skipped = dataclasses.replace(state, params=bad)
    before = (bad, state.opt_state.inner_state, state.extra)
    for _ in range(2):
        skipped, logs = step(skipped, data, run_key)
        assert not np.isfinite(float(logs["loss"]))
    chex.assert_trees_all_equal((skipped.params, skipped.opt_state.inner_state, skipped.extra), before)
    assert int(skipped.nan_step) == cfg.train.steps and not bool(skipped.opt_state.last_finite)
    assert int(skipped.skipped) == 2 and int(skipped.step) == cfg.train.steps + 2
