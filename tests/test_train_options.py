"""The option values of ``train.train_many`` (Checkpointing, Evaluation, Execution): their checks,
and the flat keywords of before, which map onto them with a DeprecationWarning and train the same
models."""

import pathlib
import warnings

import jax
import numpy as np
import pytest

from test_train import evaluate, keys_and_hparams, toy_data, toy_trainer
from tokdyn import train


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.full
def test_old_keywords_train_the_same_models_and_warn_with_the_new_spelling(tmp_path):
    """Every flat keyword of before, mapped onto the values: the same program, so the same numbers;
    one DeprecationWarning per value replaced, pointing at the caller's line."""
    data, tr = toy_data(), toy_trainer(steps=40, steps_per_call=10)
    keys, hp = keys_and_hparams(seeds=2)
    stop = lambda step, state, curves: step >= 30
    new = train.train_many(
        tr,
        data,
        keys,
        hp,
        checkpointing=train.Checkpointing(str(tmp_path / "new.npz"), "toy"),
        evaluation=train.Evaluation(evaluate, every=2, keep_best="val_loss", best_mode="min", stop=stop),
        execution=train.Execution("step", devices=jax.local_devices()[:1], batch_size=2, vectorised_init=False),
    )
    with pytest.warns(DeprecationWarning) as record:
        old = train.train_many(
            tr,
            data,
            keys,
            hp,
            checkpoint=str(tmp_path / "old.npz"),
            stamp="toy",
            evaluate=evaluate,
            evaluate_every=2,
            keep_best="val_loss",
            best_mode="min",
            stop=stop,
            strategy="step",
            devices=jax.local_devices()[:1],
            batch_size=2,
            vectorised_init=False,
        )
    messages = sorted(str(w.message) for w in record if w.category is DeprecationWarning)
    dated = " (deprecated in tokdyn 0.1.0, 2026-11-26; removed in 0.2.0)"  # the entry of tokdyn._deprecations.TABLE
    assert messages == [
        "train_many(checkpoint=..., stamp=...) is deprecated: pass "
        "checkpointing=train.Checkpointing(path=..., stamp=...)" + dated,
        "train_many(evaluate=..., evaluate_every=..., keep_best=..., best_mode=..., stop=...) is deprecated: pass "
        "evaluation=train.Evaluation(fn=..., every=..., keep_best=..., best_mode=..., stop=...)" + dated,
        "train_many(strategy=..., devices=..., batch_size=..., vectorised_init=...) is deprecated: pass "
        "execution=train.Execution(strategy=..., devices=..., batch_size=..., vectorised_init=...)" + dated,
    ]
    assert {w.filename for w in record if w.category is DeprecationWarning} == {__file__}  # the caller's line
    assert new.finished and old.finished and new.stopped_at == old.stopped_at == 30
    leaves_equal(new.state, old.state)
    leaves_equal(new.best_state, old.best_state)
    np.testing.assert_array_equal(new.best_step, old.best_step)
    assert sorted(new.curves) == sorted(old.curves) == ["accuracy", "grad_norm", "loss", "val_loss", "val_peak"]
    for k in new.curves:
        np.testing.assert_array_equal(new.curves[k], old.curves[k])
    # both checkpoints hold the same, under the same stamp: one resumes what the other wrote
    like = train.init_states(tr, keys, hp)[0]
    s_new, c_new, stopped_new = train.load_checkpoint(str(tmp_path / "new.npz"), like, "toy")
    s_old, c_old, stopped_old = train.load_checkpoint(str(tmp_path / "old.npz"), like, "toy")
    leaves_equal(s_new, s_old)
    assert stopped_new and stopped_old


def test_a_single_old_keyword_warns_once_and_new_values_do_not_warn(tmp_path):
    data, tr = toy_data(), toy_trainer(steps=20, steps_per_call=10)
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    with pytest.warns(
        DeprecationWarning,
        match=r"^train_many\(strategy=\.\.\.\) is deprecated: "
        r"pass execution=train\.Execution\(strategy=\.\.\.\) \(deprecated in tokdyn 0\.1\.0, 2026-11-26; removed in 0\.2\.0\)$",
    ) as record:
        old = train.train_many(tr, data, keys, hp, strategy="loop")
    assert sum(w.category is DeprecationWarning for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = train.train_many(tr, data, keys, hp, execution=train.Execution("loop"))
    leaves_equal(new.state, old.state)
    # a stamp without a checkpoint never did anything: it warns and writes nothing
    with pytest.warns(DeprecationWarning, match=r"train_many\(stamp=\.\.\.\) is deprecated"):
        train.train_many(tr, data, keys, hp, stamp="toy", max_calls=1)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "old,new",
    [
        (dict(checkpoint="a.npz"), dict(checkpointing=train.Checkpointing("b.npz"))),
        (dict(stamp="x"), dict(checkpointing=train.Checkpointing("b.npz"))),
        (dict(evaluate_every=2), dict(evaluation=train.Evaluation(evaluate))),
        (dict(stop=lambda *a: False), dict(evaluation=train.Evaluation())),
        (dict(devices=jax.local_devices()), dict(execution=train.Execution())),
    ],
)
def test_an_old_keyword_beside_the_value_that_replaces_it_is_refused(old, new):
    data, tr = toy_data(), toy_trainer(steps=20, steps_per_call=10)
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    (word,), (option,) = old, new
    with pytest.raises(TypeError, match=rf"train_many\(\) got {word} and {option}: pass only {option}=train\."):
        train.train_many(tr, data, keys, hp, **old, **new)


def test_bad_values_are_refused_before_any_work():
    """Each field checked with its name, its value and what is allowed, before the trainer's init
    or loss ever runs (the old keywords go through the same checks)."""
    calls = []
    tr = toy_trainer(steps=20, steps_per_call=10)
    spy = type(tr)(
        tr.config, init=lambda *a: calls.append("init"), loss=lambda *a: calls.append("loss"), batch=tr.batch
    )
    keys, hp = keys_and_hparams(seeds=1, lrs=(0.1,))
    cases = [
        (
            dict(execution=train.Execution(strategy="pmap")),
            ValueError,
            r"^execution\.strategy must be one of \['loop', 'scan', 'step'\], got 'pmap'$",
        ),
        (dict(execution=train.Execution(strategy=None)), TypeError, r"^execution\.strategy must be a str"),
        (
            dict(execution=train.Execution(batch_size=2.0)),
            TypeError,
            r"^execution\.batch_size must be 'auto' \(sized from the device's memory\), an int >= 1 or None "
            r"\(all models at once\), got 2\.0 of type float$",
        ),
        (dict(execution=train.Execution(devices=5)), TypeError, r"^execution\.devices must be a sequence of devices"),
        (dict(evaluation=train.Evaluation(every=-2)), ValueError, r"^evaluation\.every must be an int >= 1, got -2$"),
        (
            dict(evaluation=train.Evaluation(best_mode="MAX")),
            ValueError,
            r"^evaluation\.best_mode must be one of \['max', 'min'\], got 'MAX'$",
        ),
        (dict(evaluation=train.Evaluation(best_mode=None)), TypeError, r"^evaluation\.best_mode must be a str"),
        (dict(checkpointing=train.Checkpointing(None)), TypeError, r"^checkpointing\.path must be the checkpoint file"),
        (dict(evaluation=(evaluate,)), TypeError, r"^evaluation must be a tokdyn\.train\.Evaluation or None"),
        (dict(evaluate_every=0), ValueError, r"^evaluation\.every must be an int >= 1, got 0$"),
        (dict(strategy="fast"), ValueError, r"^execution\.strategy must be one of"),
        (dict(checkpoint=""), ValueError, r"^checkpointing\.path must name the checkpoint file"),
        (dict(evalute=evaluate), TypeError, r"^train_many\(\) got an unexpected keyword argument 'evalute'$"),
    ]
    for kw, kind, match in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with pytest.raises(kind, match=match):
                train.train_many(spy, toy_data(), keys, hp, **kw)
    assert calls == []


def test_values_are_frozen_hashable_and_normalised(tmp_path):
    ex = train.Execution(devices=list(jax.local_devices()))
    assert ex.devices == tuple(jax.local_devices()) and hash(ex) == hash(train.Execution(devices=jax.local_devices()))
    assert train.Checkpointing(pathlib.Path(tmp_path) / "ck.npz").path == str(tmp_path / "ck.npz")
    assert train.Evaluation().validate() == train.Evaluation(None, 1, None, "max", None)
    with pytest.raises(AttributeError):
        train.Evaluation().every = 2
    with pytest.raises(ValueError, match=r"^every must be an int >= 1, got 0$"):
        train.Evaluation(every=0).validate()
