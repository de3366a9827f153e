"""The training layer, through a toy model written here as a user would (public names only):
logistic regression on a fixed data set, its trainer in a few lines, trained through
``tokdyn.train``: against a hand-written optax loop, checkpoints (kill and resume), a NaN model among
good ones, strategies, stamps and refusals."""

import dataclasses
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tokdyn import io, train


# --- the toy model: its whole training code ---------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hparams:
    learning_rate: float = 0.1
    l2: float = 0.0


def toy_data(n=256, d=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.arange(1.0, d + 1) > 0).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def init(key, hp):
    return {"w": 0.1 * jax.random.normal(key, (3,)), "b": jnp.zeros(())}


def loss(params, batch, key, hp):
    x, y = batch
    z = x @ params["w"] + params["b"]
    nll = jnp.mean(optax.sigmoid_binary_cross_entropy(z, y)) + hp.l2 * jnp.sum(params["w"] ** 2)
    return nll, {"accuracy": jnp.mean((z > 0) == (y > 0.5))}


def batch(key, data, step):
    idx = jax.random.randint(key, (32,), 0, data[0].shape[0])
    return data[0][idx], data[1][idx]


@functools.lru_cache(maxsize=None)
def toy_trainer(steps=40, steps_per_call=10, warmup=5, decay="cosine"):
    return train.Trainer(
        train.Config(steps=steps, steps_per_call=steps_per_call, warmup=warmup, decay=decay),
        init=init,
        loss=loss,
        batch=batch,
        name="toy",
    )


# --- end of the toy model ---------------------------------------------------------------------------------


def keys_and_hparams(seeds=3, lrs=(0.05, 0.2)):
    return train.grid(jax.random.split(jax.random.key(7), seeds), Hparams(learning_rate=jnp.asarray(lrs), l2=1e-3))


def reference(key, hp, data, cfg):
    """The same training as a plain optax loop written out by hand (float32; each step jitted on its
    own, one compilation for every model and step)."""
    k_init, k_run = jax.random.split(key)
    params = init(k_init, hp)
    state = _reference_optimiser(hp, cfg).init(params)
    for t in range(cfg.steps):
        params, state = _reference_step(params, state, jax.random.fold_in(k_run, t), hp, data, t, cfg)
    return params


def _reference_optimiser(hp, cfg):
    warm = cfg.warmup
    sched = optax.join_schedules(
        [
            optax.linear_schedule(0.0, hp.learning_rate, warm),
            optax.cosine_decay_schedule(hp.learning_rate, cfg.steps - warm, alpha=0.05),
        ],
        [warm],
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.0))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _reference_step(params, state, k, hp, data, t, cfg):
    grads = jax.grad(lambda p: loss(p, batch(k, data, t), k, hp)[0])(params)
    updates, state = _reference_optimiser(hp, cfg).update(grads, state, params)
    return optax.apply_updates(params, updates), state


def test_train_many_matches_a_hand_written_optax_loop_and_make_train():
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams()
    res = train.train_many(tr, data, keys, hp)
    assert res.finished and res.stopped_at == 40 and res.curves["loss"].shape == (6, 4)
    assert res.nan_report() == [] and np.all(np.asarray(res.state.step) == 40)
    for i in (0, 4):
        want = reference(keys[i], jax.tree_util.tree_map(lambda v: v[i], hp), data, tr.config)
        got = jax.tree_util.tree_map(lambda a: a[i], res.state.params)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    state, curves = jax.jit(train.make_train(tr))(keys[4], jax.tree_util.tree_map(lambda v: v[4], hp), data)
    np.testing.assert_allclose(state.params["w"], res.state.params["w"][4], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(curves["loss"], res.curves["loss"][4], rtol=1e-4)
    # it learns: the held-out accuracy of the trained weights is high
    acc = np.asarray(res.curves["accuracy"][:, -1])
    assert np.all(acc > 0.85), acc


@pytest.mark.parametrize("strategy", ["step", pytest.param("loop", marks=pytest.mark.full)])
def test_strategies_train_the_same_models(strategy):
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=2)
    a = train.train_many(tr, data, keys, hp)
    b = train.train_many(tr, data, keys, hp, execution=train.Execution(strategy))
    for x, y in zip(jax.tree_util.tree_leaves(a.state.params), jax.tree_util.tree_leaves(b.state.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.curves["loss"], b.curves["loss"], rtol=1e-5)


@pytest.mark.full
def test_strategies_on_two_devices(tmp_path):
    """Every strategy over 2 forced host devices (a child process) trains, evaluates and keeps the best of
    the models of one device (trained here, by this process's one device)."""
    keys, hp = keys_and_hparams(seeds=3)
    ev = train.Evaluation(evaluate, keep_best="val_peak")
    one = train.train_many(toy_trainer(), toy_data(), keys, hp, evaluation=ev)
    ref = str(tmp_path / "one.npz")
    np.savez(
        ref,
        w=one.state.params["w"],
        loss=one.curves["loss"],
        val_loss=one.curves["val_loss"],
        best_step=one.best_step,
        best_w=one.best_state.params["w"],
    )
    script = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import jax, numpy as np
import test_train as t
from tokdyn import train
assert len(jax.local_devices()) == 2
keys, hp = t.keys_and_hparams(seeds=3)
ev = train.Evaluation(t.evaluate, keep_best="val_peak")
one = np.load({ref!r})
for strategy in ("scan", "step", "loop"):
    two = train.train_many(t.toy_trainer(), t.toy_data(), keys, hp, evaluation=ev, execution=train.Execution(strategy))
    np.testing.assert_allclose(two.state.params["w"], one["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.curves["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two.curves["val_loss"], one["val_loss"], rtol=1e-5)
    np.testing.assert_array_equal(two.best_step, one["best_step"])
    np.testing.assert_allclose(two.best_state.params["w"], one["best_w"], rtol=1e-5, atol=1e-6)
print("ok")
"""
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert r.returncode == 0 and b"ok" in r.stdout, r.stderr.decode()[-3000:]


@pytest.mark.full
def test_auto_batch_size_groups_the_models_to_fit_a_small_device(tmp_path):
    """batch_size="auto" against a simulated device (memory_limit): the models are vmapped in
    groups whose program fits the limit by XLA's memory analysis, train to the all-at-once models,
    and a run checkpointed at one group size resumes at another."""
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=5)  # 10 models
    whole = train.train_many(tr, data, keys, hp, execution=train.Execution(memory_limit=10**12))
    assert whole.group == 10 and whole.memory > 0  # it fits: every model at once, as on the CPU
    limit = int((whole.memory - 1) / (1 - train.sizing.MARGIN))  # all at once no longer fits
    ckpt = train.Checkpointing(str(tmp_path / "run.npz"))
    part = train.train_many(
        tr, data, keys, hp, checkpointing=ckpt, max_calls=2, execution=train.Execution(memory_limit=limit)
    )
    assert 1 <= part.group < 10 and part.memory <= train.sizing.budget(limit) < whole.memory
    assert not part.finished and part.stopped_at == 20
    done = train.train_many(tr, data, keys, hp, checkpointing=ckpt, execution=train.Execution(batch_size=None))
    assert done.finished and done.group == 10 and done.memory is None
    for a, b in zip(jax.tree_util.tree_leaves(whole.state.params), jax.tree_util.tree_leaves(done.state.params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(a))))
    np.testing.assert_allclose(done.curves["loss"], whole.curves["loss"], rtol=1e-5)


def test_sizing_reads_the_device_and_splits_the_models_into_equal_groups():
    """The device's limit and free memory from memory_stats (a device reporting one, faked); the
    groups of one size; fit against a brute-force search of the group sizes (no compile)."""
    sizing = train.sizing

    class Device:
        platform = "gpu"

        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    assert sizing.device_limit(jax.devices("cpu")[0]) is None and sizing.device_limit(Device({})) is None
    assert sizing.device_limit(Device({"bytes_limit": 1000})) == 1000
    assert sizing.available(Device({"bytes_limit": 1000, "bytes_in_use": 300}), own=100) == 800
    assert sizing.available(Device({"bytes_limit": 1000, "bytes_in_use": 50}), own=100) == 1000
    for m, most in [(1024, 300), (10, 3), (7, 7), (5, 1), (1021, 256), (3, 8)]:
        group, padded = sizing.equal_groups(m, most)
        groups = padded // group
        assert group <= most and padded % group == 0 and m <= padded < m + groups
        assert groups == -(-m // min(most, m))
    need = sizing.Need(fixed=1000, per_model=30, per_member=170, probe=4)
    for m, limit in [(20, 10_000), (20, 3_000), (20, 2_100), (64, 12_345), (7, 10**9)]:
        ok = [g for g in range(1, m + 1) if need.bytes(*sizing.equal_groups(m, g)[::-1]) <= sizing.budget(limit)]
        assert sizing.equal_groups(m, sizing.fit(need, m, limit)) == sizing.equal_groups(m, max(ok or [1]))


def test_checkpoint_resume_is_bit_identical_and_keeps_the_curves(tmp_path):
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams()
    full = train.train_many(tr, data, keys, hp)
    ck = str(tmp_path / "ck.npz")
    part = train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "toy"), max_calls=2)
    assert not part.finished and part.stopped_at == 20 and np.isnan(part.curves["loss"][:, 2:]).all()
    resumed = train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "toy"))
    assert resumed.finished
    for x, y in zip(jax.tree_util.tree_leaves(full.state), jax.tree_util.tree_leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # the same program, resumed
    np.testing.assert_array_equal(full.curves["loss"], resumed.curves["loss"])


@pytest.mark.full  # a child process killed midway; the default run: the checkpoint's resume above
def test_a_killed_run_resumes_bit_identically(tmp_path):
    """SIGKILL a child process mid-training, rerun: the same final state as an uninterrupted run."""
    ck = str(tmp_path / "ck.npz")
    script = f"""
import os, signal, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import test_train as t
from tokdyn import train
keys, hp = t.keys_and_hparams()
tr = t.toy_trainer(steps=60, steps_per_call=10)
def stop(step, state, curves):
    if step == 30 and os.environ.get("KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    return False
train.train_many(tr, t.toy_data(), keys, hp, checkpointing=train.Checkpointing({ck!r}, "toy"),
                 evaluation=train.Evaluation(stop=stop))
"""
    env = dict(os.environ, KILL="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert r.returncode == -9, r.stderr.decode()[-2000:]
    like = train.init_states(toy_trainer(60, 10), *keys_and_hparams())[0]
    state, curves, stopped = train.load_checkpoint(ck, like, "toy")
    assert int(state.step[0]) == 20 and not stopped  # the checkpoint of the call before the kill
    assert sorted(curves) == ["accuracy", "grad_norm", "loss"] and np.isnan(curves["loss"][:, 2:]).all()
    resumed = train.train_many(
        toy_trainer(60, 10), toy_data(), *keys_and_hparams(), checkpointing=train.Checkpointing(ck, "toy")
    )
    full = train.train_many(toy_trainer(60, 10), toy_data(), *keys_and_hparams())
    for x, y in zip(jax.tree_util.tree_leaves(full.state), jax.tree_util.tree_leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_nan_model_skips_its_steps_and_stops_no_other():
    data, tr = toy_data(), toy_trainer()
    keys = jax.random.split(jax.random.key(1), 3)
    hp = Hparams(learning_rate=jnp.asarray([0.1, 0.1, 0.1]), l2=jnp.asarray([1e-3, jnp.inf, 1e-3]))
    with pytest.warns(RuntimeWarning, match="1 of 3 models skipped"):
        res = train.train_many(tr, data, keys, hp)
    report = res.nan_report()
    assert [(i, t) for i, t, _ in report] == [(1, 0)] and report[0][2] == 40
    assert res.skipped.tolist() == [0, 40, 0]
    # the bad model keeps its initial weights (every step skipped); the good ones match a run without it
    init_w = train.init_states(tr, keys, hp)[0].params["w"]
    np.testing.assert_array_equal(res.state.params["w"][1], init_w[1])
    good = train.train_many(tr, data, keys[::2], jax.tree_util.tree_map(lambda v: v[::2], hp))
    np.testing.assert_allclose(res.state.params["w"][::2], good.state.params["w"], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(res.state.params["w"])[::2]))


def nan_loss(params, batch, key, hp):
    """A model whose loss is NaN at every step (a log of zero, as a bug would write it)."""
    value, logs = loss(params, batch, key, hp)
    return value + jnp.log(-jnp.abs(params["b"]) - 1.0), logs


def test_a_model_that_never_trains_warns_even_when_quiet():
    """train_many(quiet=True), the default, prints nothing, yet a model whose every step is skipped
    as non-finite is reported: a RuntimeWarning naming the models, the steps and the settings, and
    the count per model in the result."""
    tr = train.Trainer(
        train.Config(steps=20, steps_per_call=10, warmup=2), init=init, loss=nan_loss, batch=batch, name="nan-toy"
    )
    keys, hp = train.grid(jax.random.split(jax.random.key(3), 2), Hparams(learning_rate=jnp.asarray([0.05])))
    with pytest.warns(RuntimeWarning) as caught:
        res = train.train_many(tr, toy_data(), keys, hp, quiet=True)
    text = str(caught[0].message)
    assert len(caught) == 1 and caught[0].filename == __file__  # pointed at the caller's line
    assert "2 of 2 models skipped" in text and "40 steps" in text and "every step" in text, text
    assert "model 0" in text and "model 1" in text and "learning_rate=0.05" in text, text
    assert res.finished and res.skipped.tolist() == [20, 20] and res.stopped_at == 20


def test_a_healthy_model_does_not_warn(recwarn):
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    res = train.train_many(toy_trainer(steps=20), toy_data(), keys, hp, quiet=True)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert res.skipped.tolist() == [0]


def test_stop_callback_ends_training_and_a_rerun_does_not_train_on(tmp_path):
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    ck = str(tmp_path / "ck.npz")
    res = train.train_many(
        tr,
        data,
        keys,
        hp,
        checkpointing=train.Checkpointing(ck),
        evaluation=train.Evaluation(stop=lambda step, state, curves: step >= 20),
    )
    assert res.finished and res.stopped_at == 20 and int(res.state.step[0]) == 20
    again = train.train_many(
        tr, data, keys, hp, checkpointing=train.Checkpointing(ck), evaluation=train.Evaluation(stop=lambda *a: False)
    )
    assert again.finished and int(again.state.step[0]) == 20


def test_checkpoints_refuse_another_stamp_tree_or_hparams(tmp_path):
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    ck = str(tmp_path / "ck.npz")
    train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "a"), max_calls=1)
    with pytest.raises(ValueError, match="another configuration"):
        train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "b"))
    with pytest.raises(ValueError, match="other hyper-parameters"):
        train.train_many(
            tr,
            data,
            keys,
            Hparams(learning_rate=jnp.asarray([0.3]), l2=jnp.asarray([1e-3])),
            checkpointing=train.Checkpointing(ck, "a"),
        )
    other = dataclasses.replace(tr, init=lambda key, hp: {"w": jnp.zeros(3), "b": jnp.zeros(()), "bias": jnp.zeros(())})
    with pytest.raises(ValueError, match=r"lacks the leaf .*\['bias'\]"):
        train.train_many(other, data, keys, hp, checkpointing=train.Checkpointing(ck, "a"))


def test_same_shapes_other_tree_is_refused_by_leaf_name(tmp_path):
    path = io.save_pytree(str(tmp_path / "t.npz"), {"a": np.zeros(2), "b": np.ones(2)})
    back, _ = io.load_pytree(path, {"b": np.zeros(2), "a": np.zeros(2)})  # matched by name, not position
    np.testing.assert_array_equal(back["b"], np.ones(2))
    with pytest.raises(ValueError, match=r"lacks the leaf .*\['c'\]"):
        io.load_pytree(path, {"a": np.zeros(2), "c": np.zeros(2)})


def test_curriculum_runs_its_stages_in_order():
    data = toy_data()
    cfg = train.Config(steps=40, steps_per_call=10, warmup=5)
    frozen_b = lambda params, b, key, hp: loss({"w": params["w"], "b": jax.lax.stop_gradient(params["b"])}, b, key, hp)
    s1 = train.Trainer(cfg, init=init, loss=frozen_b, batch=batch)
    s2 = train.Trainer(cfg, init=init, loss=loss, batch=batch)
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    cur = train.Curriculum(((20, s1), (20, s2)))
    res = train.train_many(cur, data, keys, hp)
    state, _ = jax.jit(train.make_train(cur))(keys[0], jax.tree_util.tree_map(lambda v: v[0], hp), data)
    np.testing.assert_allclose(state.params["w"], res.state.params["w"][0], rtol=2e-5, atol=2e-6)
    half = train.train_many(train.Curriculum(((20, s1), (20, s2))), data, keys, hp, max_calls=2)
    assert float(half.state.params["b"][0]) == 0.0  # the first stage never moved b
    with pytest.raises(ValueError, match="summing to steps"):
        train.Curriculum(((10, s1), (20, s2)))


def test_a_stage_that_logs_more_gives_a_curve_nan_before_it_in_both_runners():
    """coconut's later stages log the start marker's loss, its caption stage does not: one column, NaN where the
    stage did not log it, from make_train as from train_many."""
    data = toy_data()
    cfg = train.Config(steps=40, steps_per_call=10, warmup=5)
    more = lambda params, b, key, hp: (lambda t, logs: (t, {**logs, "extra": 2.0 * t}))(*loss(params, b, key, hp))
    stage = lambda f: train.Trainer(cfg, init=init, loss=f, batch=batch)
    cur = train.Curriculum(((20, stage(loss)), (20, stage(more))))
    keys, hp = keys_and_hparams(seeds=2, lrs=(0.1,))
    _, one = jax.jit(train.make_train(cur))(keys[0], jax.tree_util.tree_map(lambda v: v[0], hp), data)
    many = train.train_many(cur, data, keys, hp).curves
    for curves in (one, {k: v[0] for k, v in many.items()}):
        assert {"accuracy", "loss", "extra"} <= set(curves), sorted(curves)
        assert np.all(np.isnan(curves["extra"][:2])) and np.all(np.isfinite(curves["extra"][2:])), curves["extra"]
        np.testing.assert_allclose(curves["extra"][2:], 2.0 * np.asarray(curves["loss"][2:]), rtol=1e-5)
    np.testing.assert_allclose(one["extra"][2:], many["extra"][0, 2:], rtol=2e-5)


def test_bad_arguments_are_refused_before_any_work():
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=2)
    cases = [
        (
            dict(execution=train.Execution("fast")),
            r"execution.strategy must be one of \['loop', 'scan', 'step'\], got 'fast'",
        ),
        (dict(execution=train.Execution(batch_size=0)), r"execution.batch_size must be 'auto' .*, got 0"),
        (dict(execution=train.Execution(batch_size="all")), r"execution.batch_size must be 'auto' .*, got 'all'"),
        (dict(execution=train.Execution(memory_limit=0)), "execution.memory_limit must be an int >= 1, got 0"),
        (
            dict(execution=train.Execution(batch_size=4, memory_limit=2**30)),
            "execution.memory_limit sizes the groups of batch_size='auto' only",
        ),
        (dict(execution=train.Execution(devices=())), "execution.devices must name at least one device"),
        (dict(execution=train.Execution(vectorised_init=1)), "execution.vectorised_init must be a bool"),
        (dict(execution="scan"), "execution must be a tokdyn.train.Execution or None, got 'scan'"),
        (dict(max_calls=-1), "max_calls"),
        (dict(evaluation=train.Evaluation(5)), "evaluation.fn must be a callable"),
        (dict(evaluation=train.Evaluation(every=0)), "evaluation.every must be an int >= 1, got 0"),
        (dict(evaluation=train.Evaluation(keep_best=3)), "evaluation.keep_best must be the name of a curve column"),
        (dict(evaluation=train.Evaluation(best_mode="avg")), "evaluation.best_mode must be one of"),
        (dict(evaluation=train.Evaluation(stop="patience")), "evaluation.stop must be a callable"),
        (dict(evaluation=evaluate), "evaluation must be a tokdyn.train.Evaluation or None"),
        (dict(checkpointing=train.Checkpointing(3)), "checkpointing.path must be the checkpoint file"),
        (dict(checkpointing=train.Checkpointing("")), "checkpointing.path must name the checkpoint file"),
        (dict(checkpointing=train.Checkpointing("ck.npz", stamp=1)), "checkpointing.stamp must be a str"),
        (dict(checkpointing="ck.npz"), "checkpointing must be a tokdyn.train.Checkpointing or None"),
        (dict(on_log=3), "on_log must be a callable"),
        (dict(bacth_size=4), "unexpected keyword argument 'bacth_size'"),
    ]
    for kw, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            train.train_many(tr, data, keys, hp, **kw)
    with pytest.raises(ValueError, match=r"hparams leaf .*learning_rate must have shape \(4,\)"):
        train.train_many(tr, data, keys, Hparams(learning_rate=jnp.ones(3), l2=jnp.ones(4)))
    with pytest.raises(ValueError, match="steps must be a multiple of steps_per_call"):
        train.train_many(dataclasses.replace(tr, config=train.Config(steps=45)), data, keys, hp)
    with pytest.raises(TypeError, match="keys must be a PRNG key"):
        train.train_many(tr, data, np.zeros(4), hp)
    with pytest.raises(ValueError, match=r"learning_rate must be finite"):
        train.train_many(
            tr, data, keys, Hparams(learning_rate=np.array([1, np.nan, 1, 1], np.float32), l2=np.zeros(4, np.float32))
        )


# --- evaluations in the curves, the best state kept, stop rules over the curves ------------------------------

VAL = toy_data(n=128)  # a held-out set of the same task (another draw would do; the toy uses a fixed one)
PEAKS = jnp.asarray([10, 20, 40, 60, 20, 40], jnp.float32)  # per model: the step where "val_peak" is largest


def evaluate(step, state):
    """Held-out scores of the stacked models: their loss on VAL and a made-up score peaking at PEAKS."""
    x, y = VAL
    z = jnp.einsum("nd,md->mn", x, state.params["w"]) + state.params["b"][:, None]  # (M, N)
    val_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(z, y[None]), axis=1)
    peaks = PEAKS[: val_loss.shape[0]]
    return {"val_loss": val_loss, "val_peak": -((state.step.astype(jnp.float32) - peaks) ** 2)}


@pytest.mark.parametrize("strategy,kill", [("scan", 1), ("scan", 3), pytest.param("loop", 3, marks=pytest.mark.full)])
def test_evaluate_and_keep_best_resume_bit_identically(tmp_path, strategy, kill):
    """Evaluations (every 2nd call, the first and the last) are columns of the curves; the best state of
    each model is kept; a run stopped after ``kill`` calls and resumed equals an uninterrupted one."""
    data, tr = toy_data(), toy_trainer(steps=60, steps_per_call=10)
    keys, hp = keys_and_hparams()
    kw = dict(execution=train.Execution(strategy), evaluation=train.Evaluation(evaluate, every=2, keep_best="val_peak"))
    full = train.train_many(tr, data, keys, hp, **kw)
    assert sorted(full.curves) == ["accuracy", "grad_norm", "loss", "val_loss", "val_peak"]
    evaluated = np.isfinite(full.curves["val_loss"]).all(axis=0)
    np.testing.assert_array_equal(evaluated, [True, True, False, True, False, True])  # calls 1, 2, 4, 6
    np.testing.assert_array_equal(full.best_step, [10, 20, 40, 60, 20, 40])
    assert np.all(np.diff(full.curves["val_loss"][:, evaluated], axis=1) < 0)  # it learns
    # the kept state of model i is its state after best_step[i] steps: the runs cut there hold it
    for calls in (1, 2, 4):
        cut = train.train_many(tr, data, keys, hp, max_calls=calls, **kw)
        for i in np.flatnonzero(full.best_step == 10 * calls):
            for a, b in zip(jax.tree_util.tree_leaves(full.best_state), jax.tree_util.tree_leaves(cut.state)):
                np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b)[i])
    ck = str(tmp_path / "ck.npz")
    part = train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "toy"), max_calls=kill, **kw)
    assert not part.finished and np.isnan(part.curves["val_loss"][:, kill:]).all()
    assert np.all(part.best_step <= 10 * kill)
    resumed = train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(ck, "toy"), **kw)
    assert resumed.finished
    same = lambda a, b: [
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    ]
    same(full.state, resumed.state)
    same(full.best_state, resumed.best_state)
    np.testing.assert_array_equal(full.best_step, resumed.best_step)
    assert sorted(full.curves) == sorted(resumed.curves)
    for k in full.curves:
        np.testing.assert_array_equal(full.curves[k], resumed.curves[k])  # NaN where not evaluated, in both
    # all of it is in the one checkpoint file: state, curves with the evaluations, the best state
    like = train.init_states(tr, keys, hp)[0]
    state, curves, stopped = train.load_checkpoint(ck, like, "toy")
    same(state, full.state)
    np.testing.assert_array_equal(curves["val_peak"], full.curves["val_peak"])
    best = train.load_best(ck, like, "toy")
    assert (best.column, best.mode) == ("val_peak", "max")
    same(best.state, full.best_state)
    np.testing.assert_array_equal(best.step, full.best_step)
    np.testing.assert_array_equal(best.value, full.curves["val_peak"][np.arange(6), full.best_step // 10 - 1])


def test_keep_best_min_mode_and_a_model_without_a_finite_value():
    """``best_mode="min"`` keeps the smallest value; a model whose values are all NaN keeps its initial
    state with best_step -1; without keep_best the result has no best state."""
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=1)
    ev = lambda step, state: {"val_loss": evaluate(step, state)["val_loss"].at[1].set(jnp.nan)}
    res = train.train_many(
        tr, data, keys, hp, evaluation=train.Evaluation(ev, every=3, keep_best="val_loss", best_mode="min")
    )
    vals = res.curves["val_loss"]
    np.testing.assert_array_equal(np.isfinite(vals[0]), [True, False, True, True])  # calls 1, 3 and the last
    assert res.best_step[1] == -1 and res.best_step[0] == 10 * (np.nanargmin(vals[0]) + 1)
    init_w = train.init_states(tr, keys, hp)[0].params["w"]
    np.testing.assert_array_equal(res.best_state.params["w"][1], init_w[1])
    plain = train.train_many(tr, data, keys, hp)
    assert plain.best_state is None and plain.best_step is None


def test_stop_sees_the_recorded_curves_and_a_patience_rule_decides_as_its_replay():
    """``stop`` gets the curves so far (read-only, NaN ahead); train.Patience as ``stop`` ends the run
    where replaying the rule over the recorded curves says, no earlier than its minimum budget."""
    data, tr = toy_data(), toy_trainer(steps=200, steps_per_call=10, warmup=5, decay="constant")
    keys, hp = keys_and_hparams(seeds=2, lrs=(0.2,))
    seen = []

    def spy(step, state, curves):
        seen.append((step, {k: v.copy() for k, v in curves.items()}))
        with pytest.raises(ValueError, match="read-only"):
            curves["loss"][0, 0] = 0.0
        return False

    train.train_many(
        tr, data, keys, hp, evaluation=train.Evaluation(lambda s, st: {"val_acc": _accuracy(st)}, stop=spy), max_calls=3
    )
    assert [s for s, _ in seen] == [10, 20, 30]
    step, curves = seen[1]
    assert sorted(curves) == ["accuracy", "grad_norm", "loss", "val_acc"] and curves["val_acc"].shape == (2, 20)
    assert np.isfinite(curves["val_acc"][:, :2]).all() and np.isnan(curves["val_acc"][:, 2:]).all()

    rule = train.Patience(patience=0.2, min_fraction=0.5, min_delta=0.01, loss_delta=None)
    res = train.train_many(
        tr,
        data,
        keys,
        hp,
        evaluation=train.Evaluation(
            lambda s, st: {"val_acc": _accuracy(st)}, keep_best="val_acc", stop=rule.stopper(tr.config, "val_acc")
        ),
    )
    assert res.finished and 100 <= res.stopped_at < 200, res.stopped_at  # the toy learns in a few calls
    n = res.stopped_at // 10
    replay = rule.first_stop(res.steps[:n], res.curves["val_acc"][:, :n], 200)
    assert res.stopped_at == replay.max()
    np.testing.assert_array_equal(
        res.best_step, rule.decide(res.steps[:n], res.curves["val_acc"][:, :n], 200).best_step
    )


def _accuracy(state):
    x, y = VAL
    z = jnp.einsum("nd,md->mn", x, state.params["w"]) + state.params["b"][:, None]
    return jnp.mean((z > 0) == (y[None] > 0.5), axis=1)


def test_evaluations_and_kept_best_are_checked(tmp_path):
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    ev = lambda fn, **kw: dict(evaluation=train.Evaluation(fn, **kw))
    with pytest.raises(ValueError, match="evaluation.fn returned 'val' of shape \\(2,\\)"):
        train.train_many(tr, data, keys, hp, **ev(lambda s, st: {"val": jnp.zeros(2)}))
    with pytest.raises(ValueError, match="'loss', which is already a training log"):
        train.train_many(tr, data, keys, hp, **ev(lambda s, st: {"loss": jnp.zeros(1)}))
    with pytest.raises(TypeError, match="evaluation.fn must return a mapping"):
        train.train_many(tr, data, keys, hp, **ev(lambda s, st: jnp.zeros(1)))
    with pytest.raises(ValueError, match="evaluation.keep_best='val' is not a curve column"):
        train.train_many(tr, data, keys, hp, **ev(None, keep_best="val"))
    ck = train.Checkpointing(str(tmp_path / "ck.npz"))
    train.train_many(
        tr, data, keys, hp, checkpointing=ck, max_calls=1, **ev(evaluate, keep_best="val_loss", best_mode="min")
    )
    with pytest.raises(ValueError, match="keeps the best state of 'val_loss'"):
        train.train_many(tr, data, keys, hp, checkpointing=ck, **ev(evaluate))
    with pytest.raises(ValueError, match="keeps the best state of 'val_loss'"):
        train.train_many(tr, data, keys, hp, checkpointing=ck, **ev(evaluate, keep_best="val_loss"))
    plain = str(tmp_path / "plain.npz")
    train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(plain), max_calls=1)
    with pytest.raises(ValueError, match="written without keep_best"):
        train.train_many(
            tr, data, keys, hp, checkpointing=train.Checkpointing(plain), **ev(evaluate, keep_best="val_loss")
        )
    with pytest.raises(ValueError, match="holds no best state"):
        train.load_best(plain, train.init_states(tr, keys, hp)[0])
