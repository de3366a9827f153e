"""The trained-model store (tokdyn.train.store) on hand-made files: a model is finished only when its
four files are whole and agree; its owner reads leniently (a damaged curve restored, a damaged file
set aside), a reader strictly (refused, nothing changed); only what is missing is trained."""

import os
import warnings

import numpy as np
import pytest

from tokdyn import io
from tokdyn.train import store

CURVE = b"step,seed,val_all\n40,0,0.5\n40,1,0.5\n"


def finished_model(out: str, name: str, steps: int = 40) -> dict:
    """The four files of a finished model ``name`` in ``out`` (two seeds, three test answers)."""
    p = store.paths(out, name)
    for key in ("curve", "answers", "checkpoint"):
        os.makedirs(os.path.dirname(p[key]), exist_ok=True)
    answers = np.arange(6, dtype=np.int32).reshape(2, 3)
    with open(p["curve"], "wb") as f:
        f.write(CURVE)
    io.save_npz(p["answers"], answers=answers, curve_csv=np.frombuffer(CURVE, np.uint8), steps=steps)
    io.save_npz(p["checkpoint"], meta_step=np.asarray(steps))
    store.write_result(p["result"], {"variant": name, "steps": steps, "answers_sha256": store.answers_digest(answers)})
    return p


def test_only_what_is_missing_is_trained(tmp_path):
    out = str(tmp_path)
    finished_model(out, "a")
    assert store.finished(out, "a") and not store.finished(out, "b")
    assert store.missing(out, ["a", "b", "b", "c"]) == ["b", "c"]
    asked = []
    assert store.train_missing(out, ["a", "b", "c"], lambda todo: asked.append(todo) or True) == ["b", "c"]
    assert asked == [["b", "c"]]
    assert store.train_missing(out, ["a"], lambda todo: pytest.fail("nothing is missing")) == []
    with pytest.raises(RuntimeError, match="did not finish"):
        store.train_missing(out, ["b"], lambda todo: False)


def test_a_result_that_is_not_the_answers_is_not_finished(tmp_path):
    out = str(tmp_path)
    p = finished_model(out, "a")
    store.write_result(p["result"], {"variant": "a", "steps": 40, "answers_sha256": "0" * 64})
    with pytest.raises(io.CorruptFile, match="its answers are not those"):
        store.verify(out, "a")  # a reader: refused, nothing moved
    assert os.path.exists(p["answers"])
    with pytest.warns(RuntimeWarning):
        assert not store.finished(out, "a")  # the owner: set aside, to be recomputed
    assert not os.path.exists(p["answers"])


def test_a_damaged_curve_is_refused_to_a_reader_and_restored_for_the_owner(tmp_path):
    out = str(tmp_path)
    p = finished_model(out, "a")
    store.verify(out, "a")  # whole: passes
    with open(p["curve"], "wb") as f:
        f.write(CURVE[:-5])
    with pytest.raises(io.CorruptFile, match="not the curve the finished variant recorded"):
        store.verify(out, "a")
    with pytest.warns(RuntimeWarning, match="set aside and restored"):
        assert store.finished(out, "a")
    with open(p["curve"], "rb") as f:
        assert f.read() == CURVE
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.verify(out, "a")


def test_load_refuses_a_checkpoint_it_cannot_verify_and_an_unknown_state(tmp_path):
    out = str(tmp_path)
    p = finished_model(out, "a")
    with pytest.raises(ValueError, match=r"tested must be one of \['best', 'final'\], got 'middle'"):
        store.load(out, "a", None, "", tested="middle")
    with open(p["checkpoint"], "wb") as f:
        np.savez(f, meta_step=np.asarray(40))  # rewritten without tokdyn's header
    with pytest.raises(io.CorruptFile, match="no verification header"):
        store.load(out, "a", None, "")
    with pytest.raises(io.CorruptFile, match="latent.npz|a.npz"):
        store.verify(out, "a")


def test_answers_digest_sees_shape_dtype_and_values():
    a = np.arange(6, dtype=np.int32)
    digests = {
        store.answers_digest(x)
        for x in (a, a.reshape(2, 3), a.astype(np.int64), a + 1, np.asfortranarray(a.reshape(2, 3)))
    }
    assert len(digests) == 4  # the Fortran-ordered copy is the same answers
