"""The scenes study: its outputs, its choice of settings on the validation split, a training run
killed midway that resumes to the same models, and its refusal of another configuration."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from tokdyn import io, metrics
from tokdyn.studies import object_discovery as SC

pytestmark = pytest.mark.fast_compile

CFG = SC.Config(size=12, max_objects=2, scale=(0.3, 0.5), n_train=64, n_val=8, n_test=12,
                methods=("baseline", "annealing"), temperatures=(0.01, 0.1), position_scales=(0.5, 1.0), dyn_steps=16,
                learned=("slot_attention",), seeds=2, train_steps=4, batch_size=2, slot_size=8,
                encoder_channels=(4,), decoder_hidden=4, eval_every=2, n_curve=4, n_examples=2)


def test_study_writes_its_outputs_resumes_and_refuses_another_configuration(tmp_path):
    out = str(tmp_path / "sc")
    assert SC.main(CFG, out, quiet=True)
    for name in ("results.csv", "learning_curve.csv", "examples.png", "learning_curve.png", "summary.md",
                 "config.json"):
        assert os.path.exists(os.path.join(out, name)), name
    table = io.read_csv(os.path.join(out, "results.csv"))
    assert list(table["method"]) == [m for m in ("baseline", "annealing", "kmeans", "slot_attention") for _ in (0, 1)]
    assert np.all((table["fg_ari"] >= -0.5) & (table["fg_ari"] <= 1)) and np.all((table["miou"] >= 0) & (table["miou"] <= 1))
    assert np.array_equal(table["failed"], (table["fg_ari"] < CFG.fail_below).astype(int))
    curve = io.read_csv(os.path.join(out, "learning_curve.csv"))
    assert list(curve["step"]) == [2, 2, 4, 4] and list(curve["seed"]) == [0, 1, 0, 1]

    # the chosen temperature and position weight are the best of the validation sweep
    val = SC.split(CFG, "val")
    t, ps, scores = SC.choose_settings(CFG, "baseline", val)
    assert scores.shape == (2, 2) and scores[CFG.temperatures.index(t), CFG.position_scales.index(ps)] == scores.max()
    assert table["temperature"][0] == t and table["position_scale"][0] == ps

    # k-means' test FG-ARI is the mean of metrics.fg_ari over its own labels (recomputed here)
    test = SC.split(CFG, "test")
    kept = np.load(os.path.join(out, "parts", "fixed__kmeans.npz"))
    fg0 = [float(metrics.fg_ari(np.asarray(test.masks[i]), kept["labels"][i])) for i in range(CFG.n_examples)]
    np.testing.assert_allclose(fg0, kept["fg_ari"][0][: CFG.n_examples], atol=1e-6)

    # a rerun reads everything back: no retraining, identical tables
    ckpt = os.path.join(out, "parts", "slot_attention.npz")
    stamp = os.path.getmtime(ckpt)
    assert SC.main(CFG, out, quiet=True, plots=False)
    assert os.path.getmtime(ckpt) == stamp
    np.testing.assert_array_equal(io.read_csv(os.path.join(out, "results.csv"))["fg_ari"], table["fg_ari"])
    with pytest.raises(io.OutputConflict):
        SC.main(dataclasses.replace(CFG, train_steps=8), out, quiet=True)


def test_training_killed_midway_resumes_to_the_same_models_and_curve(tmp_path):
    """Training stopped after its first checkpoint, before that point was scored (as a run killed
    between the two leaves it), and rerun ends with the models and the whole learning curve of an
    uninterrupted run: the losses come back with the checkpoint, the checkpointed state is scored
    before training goes on."""
    train, val = SC.split(CFG, "train"), SC.split(CFG, "val")
    straight, rows, _ = SC.train_learned(CFG, "slot_attention", train, val, str(tmp_path / "a"))
    parts = str(tmp_path / "b")
    os.makedirs(parts)
    part = SC.fit(CFG, "slot_attention", train.images, parts, max_calls=1)
    assert part.stopped_at == 2 and not os.path.exists(os.path.join(parts, "slot_attention__val.json"))
    resumed, rows2, _ = SC.train_learned(CFG, "slot_attention", train, val, parts)
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(straight.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["step"] for r in rows2] == [2, 2, 4, 4]
    for k in ("method", "seed", "step", "loss", "val_fg_ari"):
        assert [r[k] for r in rows2] == [r[k] for r in rows], k
    assert all(np.isfinite(r["seconds"]) and r["seconds"] > 0 for r in rows2)
    # a checkpoint of another configuration's (or an earlier version's) is replaced, not loaded
    other = str(tmp_path / "c")
    os.makedirs(other)
    io.save_pytree(os.path.join(other, "slot_attention.npz"), {"params": np.zeros(3)}, step=2, config="old")
    again, rows3, _ = SC.train_learned(CFG, "slot_attention", train, val, other)
    assert [r["loss"] for r in rows3] == [r["loss"] for r in rows]


def test_bad_configuration_is_refused_naming_the_field():
    for field, value in (("max_objects", 40), ("shapes", ("square", "hexagon")), ("methods", ("nope",)),
                         ("learned", ("slot_attention_v2",)), ("train_steps", 5), ("temperatures", (0.0,)),
                         ("scale", (0.0, 0.2))):
        with pytest.raises((ValueError, TypeError), match=field if field != "train_steps" else "train_steps"):
            dataclasses.replace(CFG, **{field: value}).validate()
