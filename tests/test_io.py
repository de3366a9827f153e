"""tokdyn.io: atomic writes, CSV/JSON round trips, checkpoints, progress."""

import io as stdio
import os

import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import io


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "a" / "f.txt")
    with io.atomic_write(path) as f:
        f.write("old")
    with pytest.raises(RuntimeError):
        with io.atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert open(path).read() == "old" and os.listdir(tmp_path / "a") == ["f.txt"]
    assert io.is_temporary("f.txt.0123abcd.tmp") and not io.is_temporary("f.txt")


def test_csv_columns_are_written_as_csv_writer_writes_each_row(tmp_path):
    """The column-at-a-time writer against csv.writer row by row: numbers (NaN, inf, extremes,
    float32's shortest text), booleans, strings that need quoting, empty strings."""
    import csv

    rng = np.random.default_rng(0)
    n = 500
    words = np.array(["plain", "a,b", 'say "hi"', "two\nlines", "cr\r", "", " space "])
    cols = {
        "f32": (rng.normal(size=n) * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32),
        "f64": np.r_[rng.normal(size=n - 6), np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324],
        "i": rng.integers(-(2**40), 2**40, n),
        "u": rng.integers(0, 2**32, n).astype(np.uint32),
        "b": rng.random(n) < 0.5,
        "s": words[rng.integers(0, len(words), n)],
    }
    text = open(io.write_csv(str(tmp_path / "t.csv"), cols), newline="").read()
    want = stdio.StringIO(newline="")
    w = csv.writer(want)
    w.writerow(list(cols))
    for row in zip(*cols.values()):
        w.writerow([int(v) if isinstance(v, np.bool_) else str(v) for v in row])
    assert text == want.getvalue()
    back = io.read_csv(str(tmp_path / "t.csv"))
    assert back["s"].tolist() == cols["s"].tolist() and np.array_equal(back["f32"].astype(np.float32), cols["f32"])


def test_csv_and_json_round_trips(tmp_path):
    cols = {
        "name": ["a", "b"],
        "x": np.array([0.1, np.float32(1 / 3)], dtype=object),
        "ok": [True, False],
        "n": np.array([1, 2]),
    }
    back = io.read_csv(io.write_csv(str(tmp_path / "t.csv"), cols))
    assert back["name"].tolist() == ["a", "b"] and back["ok"].tolist() == [1.0, 0.0]
    assert np.float32(back["x"][1]) == np.float32(1 / 3)  # the shortest text that reads back to the same float32
    with pytest.raises(ValueError, match="equal lengths"):
        io.write_csv(str(tmp_path / "bad.csv"), {"a": [1], "b": [1, 2]})
    obj = {"a": np.float64(np.inf), "b": (1, np.int64(2)), "c": np.array([[1.5]]), 3: np.bool_(True)}
    assert io.read_json(io.write_json(str(tmp_path / "m.json"), obj)) == {
        "a": "inf",
        "b": [1, 2],
        "c": [[1.5]],
        "3": True,
    }
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert io.to_rows(io.to_columns(rows)) == rows
    assert io.to_rows({"a": np.array([3, 1])}, order=[1, 0]) == [{"a": 1}, {"a": 3}]


def test_npz_arrays_may_take_any_name_even_path(tmp_path):
    """A sweep's output named like save_npz's own argument (a task family called 'path') is kept."""
    target = str(tmp_path / "a.npz")
    io.save_npz(target, path=np.arange(3), index=np.ones(2), file=np.int32(4), allow_pickle=np.array([True]))
    got = io.load_npz(target)
    np.testing.assert_array_equal(got["path"], np.arange(3))
    np.testing.assert_array_equal(got["index"], np.ones(2))
    # np.savez's own argument names, kept as arrays too; the archive is a plain .npz to NumPy
    assert got["file"] == 4 and got["file"].dtype == np.int32 and got["allow_pickle"].tolist() == [True]
    assert sorted(got) == ["allow_pickle", "file", "index", "path"]


def test_pytree_checkpoints(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "layers": [jnp.ones(2), (jnp.zeros((), jnp.int32),)]}
    path = io.save_pytree(str(tmp_path / "ck.npz"), tree, step=7)
    back, meta = io.load_pytree(path, tree)
    assert int(meta["step"]) == 7
    for a, b in zip(np.asarray(back["w"]).ravel(), np.arange(6.0)):
        assert a == b
    assert back["layers"][1][0].dtype == np.int32
    with pytest.raises(ValueError, match="checkpoint of something else"):
        io.load_pytree(path, {"w": tree["w"]})
    with pytest.raises(ValueError, match="expects"):
        io.load_pytree(path, {"w": jnp.zeros((3, 2)), "layers": tree["layers"]})


class _Stream(stdio.StringIO):
    def isatty(self):
        return False


def test_progress_lines_and_quiet():
    s = _Stream()
    with io.Progress(10, desc="sweep", unit="runs", done=2, stream=s) as bar:
        bar.update(3, loss=0.25)
        bar.note("a message")
        bar.update(5)
    lines = s.getvalue().splitlines()
    assert lines[0].startswith("sweep: 5/10 runs (50.0%)") and "loss 0.25" in lines[0]
    assert lines[1] == "a message" and lines[2].startswith("sweep: 10/10 runs (100.0%)") and "ETA 0 s" in lines[2]
    quiet = _Stream()
    with io.Progress(10, quiet=True, stream=quiet) as bar:
        bar.update(10)
        bar.note("hidden")
    assert quiet.getvalue() == "" and bar.done == 10


def test_kept_computes_once_per_stamp(tmp_path):
    path = str(tmp_path / "parts" / "x.npz")
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3), "b": 2.5}

    first = io.kept(path, "one", compute)
    again = io.kept(path, "one", compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(again["a"], first["a"])
    assert again["b"] == 2.5
    io.kept(path, "two", compute)  # another stamp: computed again, and kept under the new stamp
    assert len(calls) == 2
    io.kept(path, "two", compute)
    assert len(calls) == 2


def test_recomputing_sets_a_corrupt_checkpoint_aside_and_starts_again(tmp_path):
    ckpt, other = tmp_path / "ckpt.npz", tmp_path / "other.npz"
    ckpt.write_bytes(b"damaged")
    calls, retried = [], []

    def compute():
        calls.append(1)
        if ckpt.exists():
            raise io.CorruptFile(str(ckpt), "truncated")
        return "fresh"

    with pytest.warns(RuntimeWarning, match="could not be read back"):
        assert io.recomputing(str(ckpt), compute, before_retry=lambda: retried.append(1)) == "fresh"
    assert len(calls) == 2 and retried == [1] and not ckpt.exists()
    assert [p.name.startswith("ckpt.npz.") for p in (tmp_path / "corrupt").iterdir()] == [True]

    other.write_bytes(b"damaged")

    def elsewhere():
        raise io.CorruptFile(str(other), "truncated")

    with pytest.raises(io.CorruptFile, match="other.npz"):
        io.recomputing(str(ckpt), elsewhere)
    assert other.exists()  # not the checkpoint: left where it is
