"""sweep.run: per-run keys by global index, chunk/device invariance, disk chunks, resume after
SIGKILL, damaged chunks redone, mismatched arguments refused, NaN recorded."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import sweep
from tokdyn.sweep import Grid


def noisy_quadratic(key, a, b):
    z = jax.random.normal(key, (3,))
    return dict(value=a * jnp.sum(z**2) + b, first=z[0], vec=z, log=jnp.log(b))  # log(b<0) is NaN


GRID = Grid(seeds=5, a=[0.5, 1.0, 2.0], b=[-1.0, 1.0, 3.0])


def test_matches_direct_calls_and_is_chunk_invariant():
    key = jax.random.key(42)
    ref = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=1024, progress=False)
    for i in (0, 7, 44):
        c = GRID[i]
        direct = jax.jit(noisy_quadratic)(jax.random.fold_in(key, i), jnp.float32(c["a"]), jnp.float32(c["b"]))
        assert float(direct["value"]) == ref["value"][i]
    for chunk in (1, 7):
        out = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=chunk, progress=False)
        for f in ("value", "first", "vec", "log"):
            np.testing.assert_array_equal(out[f], ref[f])
    assert ref["vec"].shape == (len(GRID), 3)
    np.testing.assert_array_equal(ref["seed"], np.tile(np.arange(5), 9))


def test_nan_is_recorded_and_counted(tmp_path):
    out = sweep.run(noisy_quadratic, GRID, key=jax.random.key(0), chunk_size=8, progress=False)
    assert np.isnan(out["log"][out["b"] < 0]).all() and not np.isnan(out["log"][out["b"] > 0]).any()
    assert out.nan_counts()["log"] == 3 * 5 and out.nan_counts()["value"] == 0
    path = out.to_csv(str(tmp_path / "runs.csv"))
    header = open(path).readline().strip().split(",")
    assert header[:4] == ["a", "b", "seed", "index"] and "vec_2" in header


def test_common_random_numbers_pairs_conditions():
    out = sweep.run(noisy_quadratic, GRID, key=jax.random.key(1), common_random_numbers=True, progress=False)
    for s in range(5):
        firsts = out["first"][out["seed"] == s]
        assert np.all(firsts == firsts[0])
    assert len(set(out["first"][out["seed"] == 0]) | set(out["first"][out["seed"] == 1])) == 2


def test_disk_roundtrip_resume_refusals_and_damage(tmp_path, capsys):
    d = str(tmp_path / "sweep")
    key = jax.random.key(3)
    ref = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, progress=True)
    assert "runs/s" in capsys.readouterr().err
    chunks = sorted(os.listdir(os.path.join(d, "chunks")))
    assert len(chunks) == 8  # 45 runs in chunks of 6
    loaded = sweep.load(d)
    for f in ref.fields:
        np.testing.assert_array_equal(loaded[f], ref[f])
    # resume with the same arguments: nothing redone
    before = {c: os.stat(os.path.join(d, "chunks", c)).st_mtime_ns for c in chunks}
    again = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, progress=False)
    assert {c: os.stat(os.path.join(d, "chunks", c)).st_mtime_ns for c in chunks} == before
    np.testing.assert_array_equal(again["value"], ref["value"])
    # a truncated chunk and a garbage chunk are detected and redone, never merged
    p1, p2 = os.path.join(d, "chunks", chunks[2]), os.path.join(d, "chunks", chunks[5])
    data = open(p1, "rb").read()
    open(p1, "wb").write(data[: len(data) // 2])
    open(p2, "wb").write(b"garbage")
    with pytest.raises(ValueError, match="incomplete or damaged"):
        sweep.load(d)
    fixed = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, progress=False)
    np.testing.assert_array_equal(fixed["value"], ref["value"])
    # different arguments into the same directory are refused
    with pytest.raises(ValueError, match="chunk_size"):
        sweep.run(noisy_quadratic, GRID, key=key, chunk_size=5, out=d, progress=False)
    with pytest.raises(ValueError, match="key"):
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(4), chunk_size=6, out=d, progress=False)
    with pytest.raises(ValueError, match="grid"):
        sweep.run(noisy_quadratic, Grid(seeds=6, a=[0.5], b=[1.0]), key=key, chunk_size=6, out=d, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, resume=False, progress=False)


def test_bad_arguments():
    with pytest.raises(TypeError, match="grid"):
        sweep.run(noisy_quadratic, [1, 2], key=jax.random.key(0))
    with pytest.raises(ValueError, match="collect=False"):
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(0), collect=False)
    with pytest.raises(ValueError, match="chunk_size"):
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(0), chunk_size=0)


CHILD = textwrap.dedent(
    """
    import sys, time, numpy as np, jax, jax.numpy as jnp
    sys.path.insert(0, %r)
    from tokdyn import sweep
    from test_sweep_run import GRID, noisy_quadratic
    slow = len(sys.argv) > 3
    def fn(key, a, b):
        return noisy_quadratic(key, a, b)
    class Slow:
        def __repr__(self): return "test_sweep_run.noisy_quadratic"
        def __hash__(self): return 1
        def __eq__(self, o): return isinstance(o, Slow)
        def __call__(self, key, a, b): return noisy_quadratic(key, a, b)
    def cb():
        pass
    # a sweep whose host side is slowed between chunks so the parent can kill it mid-way
    orig = sweep._write_chunk
    def write(*args):
        orig(*args)
        if slow:
            time.sleep(0.3)
    sweep._write_chunk = write
    out = sweep.run(Slow(), GRID, key=jax.random.key(9), chunk_size=3, out=sys.argv[1], progress=False)
    np.save(sys.argv[2], out["value"])
    """
    % os.path.dirname(__file__)
)


def test_sigkill_then_resume_is_identical(tmp_path):
    d, res = str(tmp_path / "killed"), str(tmp_path / "value.npy")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, d, res, "slow"], env=env)
    chunk_dir = os.path.join(d, "chunks")
    deadline = time.time() + 120
    while time.time() < deadline and (not os.path.isdir(chunk_dir) or len(os.listdir(chunk_dir)) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len([c for c in os.listdir(chunk_dir) if c.endswith(".npz")])
    assert 4 <= n_before < 15, n_before  # killed mid-way
    # resume (with 1 device this time): only the missing chunks are computed
    env1 = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    subprocess.run([sys.executable, "-c", CHILD, d, res], env=env1, check=True)
    resumed = np.load(res)
    files = sorted(c for c in os.listdir(chunk_dir) if c.endswith(".npz"))
    assert len(files) == 15 and not [c for c in os.listdir(chunk_dir) if c.endswith(".tmp")]
    fresh = sweep.run(noisy_quadratic, GRID, key=jax.random.key(9), chunk_size=3, progress=False)
    np.testing.assert_array_equal(resumed, fresh["value"])
    loaded = sweep.load(d)
    np.testing.assert_array_equal(loaded["index"], np.arange(len(GRID)))


def test_parts_split_chunks_between_processes(tmp_path):
    """Two 'processes' (parts) fill one directory; the union equals a single-process sweep."""
    key = jax.random.key(5)
    ref = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=4, progress=False)
    out = str(tmp_path / "shared")
    first = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=4, out=out, progress=False, part=(0, 2))
    assert first is None  # part 1 has not run yet
    assert len(os.listdir(os.path.join(out, "chunks"))) == len(range(0, len(GRID), 4)[0::2])
    second = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=4, out=out, progress=False, part=(1, 2),
                       resume=False)  # an identical manifest from another part is not a resume
    for f in ("value", "vec", "log", "seed"):
        np.testing.assert_array_equal(second[f], ref[f])
        np.testing.assert_array_equal(sweep.load(out)[f], ref[f])


@pytest.mark.parametrize("part, match", [((2, 2), "0 <= i < n"), ((0,), "pair"), ((0, 2), "needs out=DIR")])
def test_bad_part_is_refused(part, match):
    with pytest.raises(ValueError, match=match):
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(0), part=part, progress=False)


def test_axes_must_match_the_function_signature():
    with pytest.raises(ValueError, match="grid axis 'c' is not an argument"):
        sweep.run(noisy_quadratic, Grid(a=[1.0], b=[1.0], c=[2.0]), key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="needs argument 'b'"):
        sweep.run(noisy_quadratic, Grid(a=[1.0]), key=jax.random.key(0), progress=False)


def test_parquet_roundtrip(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = sweep.run(noisy_quadratic, GRID, key=jax.random.key(1), progress=False)
    table = pq.read_table(out.to_parquet(str(tmp_path / "runs.parquet"))).to_pydict()
    np.testing.assert_array_equal(table["value"], out["value"])
    np.testing.assert_array_equal(table["vec_1"], out["vec"][:, 1])
    assert np.isnan(table["log"]).sum() == out.nan_counts()["log"]
