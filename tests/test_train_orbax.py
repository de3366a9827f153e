"""Checkpoints of ``train_many`` in orbax's format (``Checkpointing(format="orbax")``): a resumed
training continues as the uninterrupted one and as one resumed from the ``.npz`` checkpoint; the
directory reads back with orbax alone; tokdyn's checks hold (another stamp, other hyper-parameters,
another tree, a damaged or altered file, a folder that is not a checkpoint, the other format at the
path); without the extra, an ImportError names it."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import assert_same_floats, child_env
from test_train import Hparams, evaluate, keys_and_hparams, toy_data, toy_trainer
from tokdyn import io, train

ocp = pytest.importorskip("orbax.checkpoint")


def _run(tr, data, keys, hp, path, fmt, **kw):
    ev = train.Evaluation(evaluate, every=2, keep_best="val_peak")
    ck = None if path is None else train.Checkpointing(path, "toy", format=fmt)
    return train.train_many(tr, data, keys, hp, checkpointing=ck, evaluation=ev, **kw)


def _assert_same_run(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a.state), jax.tree_util.tree_leaves(b.state)):
        assert_same_floats(np.asarray(y), np.asarray(x))
    for x, y in zip(jax.tree_util.tree_leaves(a.best_state), jax.tree_util.tree_leaves(b.best_state)):
        assert_same_floats(np.asarray(y), np.asarray(x))
    np.testing.assert_array_equal(a.best_step, b.best_step)
    assert sorted(a.curves) == sorted(b.curves)
    for k in a.curves:
        np.testing.assert_array_equal(np.isnan(a.curves[k]), np.isnan(b.curves[k]))
        assert_same_floats(b.curves[k], a.curves[k])


def test_an_orbax_checkpoint_resumes_as_the_npz_one_and_as_an_uninterrupted_run(tmp_path):
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams()
    full = _run(tr, data, keys, hp, None, "npz")
    resumed = {}
    for fmt in ("npz", "orbax"):
        path = str(tmp_path / f"ck-{fmt}")
        part = _run(tr, data, keys, hp, path, fmt, max_calls=2)
        assert not part.finished and part.stopped_at == 20
        resumed[fmt] = _run(tr, data, keys, hp, path, fmt)
        assert resumed[fmt].finished and resumed[fmt].stopped_at == 40
    assert os.path.isdir(tmp_path / "ck-orbax") and os.path.isfile(tmp_path / "ck-npz")
    _assert_same_run(full, resumed["orbax"])
    _assert_same_run(resumed["npz"], resumed["orbax"])

    # the checkpoint is orbax's own: orbax alone restores the current tree, the same values
    path = str(tmp_path / "ck-orbax")
    record = io.read_checked_json(os.path.join(path, "tokdyn.json"))
    alone = ocp.PyTreeCheckpointer().restore(os.path.abspath(os.path.join(path, record["tree"])))
    np.testing.assert_array_equal(alone["state"]["step"], np.asarray(resumed["orbax"].state.step))
    np.testing.assert_array_equal(alone["curves"]["loss"], resumed["orbax"].curves["loss"])
    assert sorted(alone["best"]) == ["state", "step", "value"]

    # both formats read back through the same functions, with the same stamp
    like = train.init_states(tr, keys, hp)[0]
    for fmt in ("npz", "orbax"):
        assert train.checkpoint_stamp(str(tmp_path / f"ck-{fmt}")) == "toy"
    s_npz, c_npz, stop_npz = train.load_checkpoint(str(tmp_path / "ck-npz"), like, "toy")
    s_orb, c_orb, stop_orb = train.load_checkpoint(path, like, "toy")
    assert stop_npz == stop_orb is False
    for x, y in zip(jax.tree_util.tree_leaves(s_npz), jax.tree_util.tree_leaves(s_orb)):
        assert_same_floats(np.asarray(y), np.asarray(x))
    best = train.load_best(path, like, "toy")
    np.testing.assert_array_equal(best.step, resumed["orbax"].best_step)
    assert (best.column, best.mode) == ("val_peak", "max")


def test_an_orbax_checkpoint_is_refused_for_another_run_and_when_damaged(tmp_path):
    data, tr = toy_data(), toy_trainer()
    keys, hp = keys_and_hparams()  # the models of the test above: its compiled programs serve
    path = str(tmp_path / "ck")
    ck = lambda stamp="a": train.Checkpointing(path, stamp, format="orbax")
    train.train_many(tr, data, keys, hp, checkpointing=ck(), max_calls=1)
    trees = [e for e in os.listdir(path) if e.startswith("tree-")]
    assert len(trees) == 1 and sorted(os.listdir(path)) == sorted(trees + ["tokdyn.json"])
    with pytest.raises(ValueError, match="another configuration .*.a. there, .b. asked"):
        train.train_many(tr, data, keys, hp, checkpointing=ck("b"))
    other_hp = Hparams(learning_rate=np.asarray(hp.learning_rate) * 2, l2=hp.l2)
    with pytest.raises(ValueError, match="other hyper-parameters"):
        train.train_many(tr, data, keys, other_hp, checkpointing=ck())
    wider = train.Trainer(
        tr.config, init=lambda k, h: {**tr.init(k, h), "bias": jax.numpy.zeros(())}, loss=tr.loss, batch=tr.batch
    )
    with pytest.raises(ValueError, match=r"lacks the leaf .*\['bias'\]"):
        train.train_many(wider, data, keys, hp, checkpointing=ck())
    # the other format at the path: named, with the way out
    with pytest.raises(ValueError, match="holds a checkpoint in the orbax format.*format='orbax'"):
        train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(path, "a"))
    npz = str(tmp_path / "ck.npz")
    train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(npz, "a"), max_calls=1)
    with pytest.raises(ValueError, match="holds a checkpoint in the npz format.*format='npz'"):
        train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(npz, "a", format="orbax"))
    # a folder that is no checkpoint is refused before any work, and left as it is
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(io.OutputConflict, match="notes.txt"):
        train.train_many(tr, data, keys, hp, checkpointing=train.Checkpointing(str(mine), "a", format="orbax"))
    assert os.listdir(mine) == ["notes.txt"]

    like = train.init_states(tr, keys, hp)[0]
    tree = os.path.join(path, trees[0])
    victim = max((os.path.join(r, f) for r, _, fs in os.walk(tree) for f in fs), key=os.path.getsize)
    blob = bytearray(open(victim, "rb").read())
    blob[len(blob) // 2] ^= 0xFF
    open(victim, "wb").write(bytes(blob))
    with pytest.raises(io.CorruptFile, match="SHA-256 differs"):
        train.load_checkpoint(path, like, "a")
    blob[len(blob) // 2] ^= 0xFF
    open(victim, "wb").write(bytes(blob))
    train.load_checkpoint(path, like, "a")  # restored: read again
    open(os.path.join(tree, "extra"), "w").write("x")
    with pytest.raises(io.CorruptFile, match="added after it was written"):
        train.load_checkpoint(path, like, "a")
    os.remove(os.path.join(tree, "extra"))
    record = os.path.join(path, "tokdyn.json")
    text = open(record).read()
    open(record, "w").write(text.replace('"a"', '"b"'))  # the stamp edited by hand
    with pytest.raises(io.CorruptFile, match=r"ck is corrupt \(its tokdyn.json: .*checksum"):
        train.load_checkpoint(path, like, "b")


def test_orbax_leaf_names_that_would_collide_and_bad_formats_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="share orbax's name 'c.a.b'"):
        io.save_orbax(str(tmp_path / "t"), {"c": {"a.b": np.zeros(2), "a": {"b": np.ones(2)}}})
    assert not os.path.exists(tmp_path / "t")
    with pytest.raises(ValueError, match="format must be one of .*'npz', 'orbax'.*got 'zarr'"):
        train.Checkpointing("x", format="zarr").validate()
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"'orbax-checkpoint' of the 'orbax' extra.*pip install -e \"\.\[orbax\]\""):
        train.Checkpointing(str(tmp_path / "c"), format="orbax").validate()
    with pytest.raises(ImportError, match=r"\.\[orbax\]"):
        io.save_orbax(str(tmp_path / "c"), {"a": np.zeros(1)})


@pytest.mark.full  # a child process killed midway through a save; the default run: the resume above
def test_a_run_killed_between_the_new_tree_and_its_record_resumes_from_the_last_whole_one(tmp_path):
    """SIGKILL a child process after orbax has written the new tree of step 30 and before the
    record names it: the checkpoint still reads as step 20 (the new tree is left over, the old one
    whole), and the rerun ends where an uninterrupted run does."""
    path = str(tmp_path / "ck")
    script = f"""
import os, signal, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import test_train as t
from tokdyn import train
from tokdyn.io import orbax_trees
write = orbax_trees.write_checked_json
def killing(p, obj):
    if obj["meta"]["step"] == 30:
        os.kill(os.getpid(), signal.SIGKILL)
    return write(p, obj)
orbax_trees.write_checked_json = killing
keys, hp = t.keys_and_hparams()
train.train_many(t.toy_trainer(60, 10), t.toy_data(), keys, hp,
                 checkpointing=train.Checkpointing({path!r}, "toy", format="orbax"))
"""
    r = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True)
    assert r.returncode == -9, r.stderr.decode()[-2000:]
    assert len([e for e in os.listdir(path) if e.startswith("tree-")]) == 2  # the new tree, not yet recorded
    tr, (keys, hp) = toy_trainer(60, 10), keys_and_hparams()
    like = train.init_states(tr, keys, hp)[0]
    state, curves, stopped = train.load_checkpoint(path, like, "toy")
    assert int(state.step[0]) == 20 and not stopped and np.isnan(curves["loss"][:, 2:]).all()
    ck = train.Checkpointing(path, "toy", format="orbax")
    resumed = train.train_many(tr, toy_data(), keys, hp, checkpointing=ck)
    assert resumed.finished
    assert len(os.listdir(path)) == 2  # the record and the current tree: the leftover removed
    full = train.train_many(tr, toy_data(), keys, hp)
    for x, y in zip(jax.tree_util.tree_leaves(full.state), jax.tree_util.tree_leaves(resumed.state)):
        assert_same_floats(np.asarray(y), np.asarray(x))
    np.testing.assert_array_equal(np.isnan(full.curves["loss"]), np.isnan(resumed.curves["loss"]))
    assert_same_floats(resumed.curves["loss"], full.curves["loss"])
