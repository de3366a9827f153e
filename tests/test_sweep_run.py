"""sweep.run: per-run keys by global index, chunk/device invariance, disk chunks, resume after
SIGKILL, damaged chunks redone, mismatched arguments refused, NaN recorded."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_floats, child_env
from tokdyn import io
from tokdyn.engine import execute, sweep
from tokdyn.engine.sweep import Grid


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
        # a direct call is another program than the sweep's per-run map: equal up to float32 rounding
        assert float(direct["value"]) == pytest.approx(ref["value"][i], rel=1e-6, abs=1e-6)
    for chunk in (1, 7):
        out = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=chunk, progress=False)
        # another chunk size is another program (other batch shapes): equal up to float32 rounding
        # (NaN where the reference is NaN), never held to the reference's last bits
        for f in ("value", "first", "vec", "log"):
            assert_same_floats(out[f], ref[f], err_msg=f)
    again = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=7, progress=False)
    for f in ("value", "first", "vec", "log"):  # the same program again (chunks of 7): the same bits
        np.testing.assert_array_equal(again[f], out[f])
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
    # a truncated chunk and a garbage chunk are detected, named, set aside and redone, never merged
    p1, p2 = os.path.join(d, "chunks", chunks[2]), os.path.join(d, "chunks", chunks[5])
    data = open(p1, "rb").read()
    open(p1, "wb").write(data[: len(data) // 2])
    open(p2, "wb").write(b"garbage")
    with pytest.raises(ValueError, match=f"incomplete or damaged.*{chunks[2]} is damaged.*truncated"):
        sweep.load(d)
    with pytest.warns(RuntimeWarning) as caught:
        fixed = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, progress=False)
    said = " ".join(str(w.message) for w in caught)
    assert p1 in said and p2 in said and "set aside" in said
    assert len(os.listdir(os.path.join(d, "chunks", "corrupt"))) == 2
    np.testing.assert_array_equal(fixed["value"], ref["value"])
    np.testing.assert_array_equal(sweep.load(d)["value"], ref["value"])
    # different arguments into the same directory are refused
    with pytest.raises(ValueError, match="chunk_size"):
        sweep.run(noisy_quadratic, GRID, key=key, chunk_size=5, out=d, progress=False)
    with pytest.raises(ValueError, match="key"):
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(4), chunk_size=6, out=d, progress=False)
    with pytest.raises(ValueError, match="grid"):
        sweep.run(noisy_quadratic, Grid(seeds=6, a=[0.5], b=[1.0]), key=key, chunk_size=6, out=d, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, resume=False, progress=False)


def test_damaged_manifest_is_set_aside_and_written_anew(tmp_path):
    """A manifest cut short or altered is named (read_manifest: CorruptFile), then set aside and
    written anew by the next run, which keeps every finished chunk (the chunk size, when not
    given, read from the chunk files) and sets aside a chunk of another sweep by its stamp."""
    d, other = str(tmp_path / "sweep"), str(tmp_path / "other")
    key = jax.random.key(3)
    ref = sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, progress=False)
    sweep.run(noisy_quadratic, GRID, key=jax.random.key(4), chunk_size=6, out=other, progress=False)
    chunks = sorted(c for c in os.listdir(os.path.join(d, "chunks")) if c.endswith(".npz"))
    foreign = os.path.join(d, "chunks", chunks[3])
    os.replace(os.path.join(other, "chunks", chunks[3]), foreign)  # same runs, another key
    manifest = os.path.join(d, "manifest.json")
    text = open(manifest).read()
    altered = json.loads(text)
    altered["runs"] = 44
    for damage, words in (
        (text[: len(text) // 2], "not readable JSON"),
        (json.dumps(altered), "checksum"),
        ("[]", "not a sweep's manifest"),
    ):
        open(manifest, "w").write(damage)
        with pytest.raises(io.CorruptFile, match="manifest.json is corrupt.*" + words):
            sweep.read_manifest(d)
    open(manifest, "w").write(text[:100])
    before = {c: os.stat(os.path.join(d, "chunks", c)).st_mtime_ns for c in chunks if c != chunks[3]}
    with pytest.warns(RuntimeWarning) as caught:
        again = sweep.run(noisy_quadratic, GRID, key=key, out=d, progress=False)  # chunk size: from the files
    said = [str(w.message) for w in caught]
    assert any(manifest in m and "written anew" in m for m in said), said
    assert any(foreign in m and "other arguments" in m for m in said), said
    np.testing.assert_array_equal(again["value"], ref["value"])
    assert {c: os.stat(os.path.join(d, "chunks", c)).st_mtime_ns for c in before} == before  # kept, not redone
    assert sweep.read_manifest(d)["chunk_size"] == 6 and len(os.listdir(os.path.join(d, "corrupt"))) == 1
    with pytest.raises(ValueError, match="resume=True"):  # a damaged manifest is still a sweep there
        open(manifest, "w").write(text[:100])
        sweep.run(noisy_quadratic, GRID, key=key, chunk_size=6, out=d, resume=False, progress=False)


class KeyBits:
    """A run that returns the bits of its key and of its seed's shared draw (common random numbers)."""

    def draw(self, key):
        return jax.random.key_data(key)

    def __call__(self, key, a, draw=None):
        return dict(key=jax.random.key_data(key), draw=draw, a=a)


@pytest.mark.parametrize("seeds, conditions", [(2**32 - 1, 1), (2**31 - 1, 2)])
def test_seeds_beyond_2_31_get_their_own_keys(seeds, conditions):
    """Run indices and seeds are uint32 on the device: near 2**32 (the most runs a grid may hold)
    every run of the last chunks still gets fold_in(root, its seed), shared draws included, in
    both grid orders (the shared draw's slot was once formed as seed + seeds - first, which passed
    2**32 there and gave a chunk's runs the first seed's data); one more run is refused."""
    root = jax.random.key(5)
    for seed_major in (False, True):
        grid = Grid(seeds=seeds, seed_major=seed_major, a=np.arange(conditions, dtype=np.float64))
        assert len(grid) <= sweep.MAX_RUNS
        total, step = len(grid), 8
        devices, batch, step, padded = execute.plan(jax.devices()[:1], 1, step, total)
        task = sweep.task.grid_task(KeyBits(), grid, True, padded)
        shared = sweep.task.grid_shared(grid, root)
        starts = [total - 2 * step - 3, total - step]  # the last chunks (and one across a seed boundary)
        get = lambda a, b: {"index": np.arange(a, b, dtype=np.uint32)}  # noqa: E731
        for s0, s1, out in execute.stream(task, shared, starts, total, step, padded, get, devices, batch):
            rows = grid.rows(s0, s1)
            want = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(root, int(s)))) for s in rows["seed"]])
            np.testing.assert_array_equal(out["key"], want)
            np.testing.assert_array_equal(out["draw"], want)
            np.testing.assert_array_equal(out["a"], rows["a"])
    with pytest.raises(ValueError, match="at most 4,294,967,295"):
        sweep.run(noisy_quadratic, Grid(seeds=2**31, a=[1.0, 2.0], b=[1.0]), key=root, progress=False)


def test_bad_arguments():
    with pytest.raises(TypeError, match="grid"):
        sweep.run(noisy_quadratic, [1, 2], key=jax.random.key(0))
    with pytest.raises(ValueError, match="collect=False"):
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(0), collect=False)
    with pytest.raises(ValueError, match="chunk_size"):
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(0), chunk_size=0)


CHILD = textwrap.dedent(
    """
    import os, signal, sys, numpy as np, jax
    sys.path.insert(0, %r)
    from tokdyn.engine import sweep
    from test_sweep_run import GRID, noisy_quadratic
    kill_after = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    written = []
    orig = sweep.store.write_chunk
    def write(path, *args):
        orig(path, *args)
        written.append(path)
        if len(written) == kill_after:  # killed between chunks, with a write cut short beside them
            open(path.replace(".npz", "-next.npz.1f2e3d.tmp"), "wb").write(b"half a chunk")
            os.kill(os.getpid(), signal.SIGKILL)
    sweep.store.write_chunk = write
    out = sweep.run(noisy_quadratic, GRID, key=jax.random.key(9), chunk_size=3, out=sys.argv[1], progress=False)
    np.save(sys.argv[2], out["value"])
    """
    % os.path.dirname(__file__)
)


def test_sigkill_then_resume_is_identical(tmp_path):
    """A sweep SIGKILLed after its 5th chunk (no timing window: it kills itself) resumes, on another
    device count, to the bits of an uninterrupted sweep, computing only the missing chunks."""
    d, res = str(tmp_path / "killed"), str(tmp_path / "value.npy")
    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    killed = subprocess.run([sys.executable, "-c", CHILD, d, res, "5"], env=env)
    assert killed.returncode == -signal.SIGKILL
    chunk_dir = os.path.join(d, "chunks")
    before = {c: os.stat(os.path.join(chunk_dir, c)).st_mtime_ns for c in os.listdir(chunk_dir) if c.endswith(".npz")}
    assert len(before) == 5 and any(c.endswith(".tmp") for c in os.listdir(chunk_dir))
    if jax.default_backend() == "cpu" and jax.local_device_count() != 2:  # resumed here: another device count
        resumed = sweep.run(noisy_quadratic, GRID, key=jax.random.key(9), chunk_size=3, out=d, progress=False)["value"]
    else:
        env1 = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
        subprocess.run([sys.executable, "-c", CHILD, d, res], env=env1, check=True)
        resumed = np.load(res)
    files = sorted(c for c in os.listdir(chunk_dir) if c.endswith(".npz"))
    assert len(files) == 15 and not [c for c in os.listdir(chunk_dir) if c.endswith(".tmp")]
    assert all(os.stat(os.path.join(chunk_dir, c)).st_mtime_ns == t for c, t in before.items())  # not redone
    fresh = sweep.run(noisy_quadratic, GRID, key=jax.random.key(9), chunk_size=3, progress=False)
    np.testing.assert_array_equal(resumed, fresh["value"])
    loaded = sweep.load(d)
    np.testing.assert_array_equal(loaded["index"], np.arange(len(GRID)))


DISTRIBUTED = textwrap.dedent(
    """
    import sys, time, jax, numpy as np
    sys.path.insert(0, %r)
    from tokdyn.engine import sweep
    from test_sweep_run import GRID, noisy_quadratic
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[1]}", num_processes=2, process_id=int(sys.argv[2]),
                               initialization_timeout=120)
    assert jax.process_count() == 2
    from jax.experimental import multihost_utils
    # warm up (a private single-process sweep), then start both sweeps at one agreed instant
    sweep.run(noisy_quadratic, GRID, key=jax.random.key(7), chunk_size=2, out=sys.argv[3] + sys.argv[2], part=(0, 1),
              progress=False)
    for attempt in range(int(sys.argv[4])):
        start = float(multihost_utils.broadcast_one_to_all(np.array(time.time() + 0.2)))
        time.sleep(max(start - time.time() - 0.005, 0.0))  # sleep, not spin: the other process needs the core
        while time.time() < start:
            pass
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(7), chunk_size=2, out=f"{sys.argv[3]}/{attempt}",
                  progress=False)
    jax.distributed.shutdown()
    """
    % os.path.dirname(__file__)
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# two jax.distributed processes (about 65 s): slow-only; the default run keeps the parts of several
# processes sharing one directory (test_token_sweep, test_safety_sweep)
@pytest.mark.slow
def test_two_distributed_processes_started_together(tmp_path):
    """Two real jax.distributed processes on localhost make the same sweep.run(out=DIR) call at the
    same instant (the documented multi-host recipe), several times: no crash, and every gathered
    result is bit-identical to a single-process sweep."""
    ref = sweep.run(noisy_quadratic, GRID, key=jax.random.key(7), chunk_size=2, progress=False)
    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    out, port, attempts = str(tmp_path / "shared"), str(_free_port()), 5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DISTRIBUTED, port, str(i), out, str(attempts)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for attempt in range(attempts):
        loaded = sweep.load(os.path.join(out, str(attempt)))
        for f in ("value", "vec", "log", "seed"):
            np.testing.assert_array_equal(loaded[f], ref[f])


def test_a_part_started_first_waits_for_the_manifest(tmp_path):
    """Part 1 starting before part 0 has written the manifest waits for it (and checks it)."""
    out = str(tmp_path / "shared")
    code = textwrap.dedent(
        """
        import sys, jax
        sys.path.insert(0, %r)
        from tokdyn.engine import sweep
        from test_sweep_run import GRID, noisy_quadratic
        sweep.run(noisy_quadratic, GRID, key=jax.random.key(7), chunk_size=2, out=sys.argv[1], part=(1, 2),
                  progress=False)
        """
        % os.path.dirname(__file__)
    )
    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    second = subprocess.Popen([sys.executable, "-c", code, out], env=env, stderr=subprocess.PIPE, text=True)
    while not os.path.isdir(out) and second.poll() is None:  # the part is up and waiting: nothing written
        time.sleep(0.05)
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    sweep.run(noisy_quadratic, GRID, key=jax.random.key(7), chunk_size=2, out=out, part=(0, 2), progress=False)
    assert second.wait(timeout=300) == 0, second.stderr.read()
    ref = sweep.run(noisy_quadratic, GRID, key=jax.random.key(7), chunk_size=2, progress=False)
    np.testing.assert_array_equal(sweep.load(out)["value"], ref["value"])


def test_every_part_has_a_share_of_a_grid_that_fits_one_chunk(tmp_path, capsys):
    """A shared sweep without a chunk size whose grid fits one chunk of the default size is cut into
    one chunk a part (part 1 is not left idle); the union is the sweep of one process. A part that
    still has no chunk (a chunk size given that makes too few chunks, fewer runs than parts) says
    so, naming the chunks and who runs them."""
    key = jax.random.key(7)
    assert sweep.shared_chunk_size(None, "auto", len(GRID), 2) == 23  # 45 runs: ceil(45 / 2)
    assert sweep.shared_chunk_size(None, "auto", len(GRID), 1) is None  # one part: the engine's default
    out = str(tmp_path / "shared")
    assert sweep.run(noisy_quadratic, GRID, key=key, out=out, part=(0, 2), progress=False) is None
    assert sweep.missing_chunks(out) == [(23, 45)]  # part 0 did its share only
    got = sweep.run(noisy_quadratic, GRID, key=key, out=out, part=(1, 2), progress=False)
    assert sweep.read_manifest(out)["chunk_size"] == 23
    ref = sweep.run(noisy_quadratic, GRID, key=key, progress=False)
    np.testing.assert_array_equal(got["value"], ref["value"])
    capsys.readouterr()
    given = str(tmp_path / "given")
    sweep.run(noisy_quadratic, GRID, key=key, chunk_size=64, out=given, part=(0, 2), progress=False)
    sweep.run(noisy_quadratic, GRID, key=key, chunk_size=64, out=given, part=(1, 2), progress=True)
    assert (
        "sweep: part 1 of 2 has no chunk of its own: the grid's 45 runs make 1 chunk (chunk_size=45 given), "
        "which part 0 runs (a smaller chunk_size gives every part a share)"
    ) in capsys.readouterr().err
    one = Grid(seeds=1, a=[1.0], b=[1.0])
    sweep.run(noisy_quadratic, one, key=key, out=str(tmp_path / "one"), part=(0, 2), progress=False)
    sweep.run(noisy_quadratic, one, key=key, out=str(tmp_path / "one"), part=(1, 2), progress=True)
    assert "1 run makes 1 chunk (fewer runs (1) than parts), which part 0 runs" in capsys.readouterr().err


def test_atomic_write_with_concurrent_writers(tmp_path):
    """Four processes rewriting one JSON file 200 times each never fail, never leave a temporary
    file, and a reader always finds a whole file."""
    path = str(tmp_path / "manifest.json")
    code = textwrap.dedent(
        """
        import sys
        from tokdyn import io
        for i in range(200):
            io.write_json(sys.argv[1], {"writer": sys.argv[2], "i": i, "pad": "x" * 5000})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, path, str(w)]) for w in range(4)]
    reads = 0
    while any(p.poll() is None for p in procs):
        if os.path.exists(path):
            assert len(io.read_json(path)["pad"]) == 5000
            reads += 1
    assert [p.wait() for p in procs] == [0, 0, 0, 0] and reads > 0
    assert os.listdir(tmp_path) == ["manifest.json"]


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


class Drawn:
    """noisy_quadratic with its random part split off: ``draw(key)`` depends on the key alone."""

    def draw(self, key):
        return jax.random.normal(key, (3,))

    def __call__(self, key, a, b, draw=None):
        z = self.draw(key) if draw is None else draw
        return dict(value=a * jnp.sum(z**2) + b, first=z[0], extra=jax.random.uniform(jax.random.fold_in(key, 1)))


@pytest.mark.parametrize("seed_major", [False, pytest.param(True, marks=pytest.mark.full)])
def test_shared_draws_give_the_per_run_results(seed_major):
    """Under common random numbers a seed's draw is made once per device chunk and shared; the
    results equal those of every run drawing its own, whatever the order, the chunking and whether
    the draws are mapped one seed after another or vmapped."""
    grid = Grid(seeds=5, seed_major=seed_major, a=[0.5, 1.0, 2.0], b=[-1.0, 1.0, 3.0])
    key = jax.random.key(3)
    fn = Drawn()
    per_run = sweep.run(
        lambda k, a, b: fn(k, a, b),
        Grid(seeds=5, a=[0.5, 1.0, 2.0], b=[-1.0, 1.0, 3.0]),
        key=key,
        common_random_numbers=True,
        progress=False,
    )
    first = None
    # batch_size None vmaps a device's runs, and then the seeds' draws too (an accelerator's default)
    for chunk, batch in ((1, 1), (4, 1), (9, 1), (1024, 1), (9, None), (1024, None)):
        out = sweep.run(
            fn, grid, key=key, common_random_numbers=True, chunk_size=chunk, batch_size=batch, progress=False
        )
        order = np.lexsort((out["seed"], out["b"], out["a"]))
        first = first or {f: out[f][order] for f in ("value", "first", "extra")}
        for f in ("value", "first", "extra"):
            # drawing in prepare or in the run, or in chunks of another size (other batch shapes):
            # other programs, equal up to float32 rounding
            assert_same_floats(out[f][order], per_run[f], err_msg=f)
            assert_same_floats(out[f][order], first[f], err_msg=f)


@pytest.mark.parametrize("seed_major", [False, True])
def test_shared_draws_cover_the_seeds_of_any_run_range(seed_major):
    """n_draws bounds the distinct seeds among any n consecutive runs, prepare draws them once
    and each run's slot holds its own seed's draw."""
    grid = Grid(seeds=7, seed_major=seed_major, a=np.arange(5.0))
    shared = sweep.task.grid_shared(grid, jax.random.key(0))
    seeds = grid.rows()["seed"]
    for n in range(1, len(grid) + 1):
        bound = sweep.task.max_seeds(grid, n)
        assert max(len(set(seeds[s : s + n])) for s in range(len(grid) - n + 1)) <= bound <= n
    for start, n in ((0, 20), (13, 9), (30, 5)):
        runs = {"index": np.arange(start, start + n, dtype=np.uint32)}
        for batch in (1, None):  # the seeds' draws one after another, or vmapped
            prepared = sweep.task.grid_task(Drawn(), grid, True, n, batch).prepare(shared, runs)
            assert len(prepared["draws"]) == sweep.task.max_seeds(grid, n)
            first = int(prepared["first_seed"])
            for i in runs["index"]:
                seed = int(seeds[i])
                want = Drawn().draw(jax.random.fold_in(shared["key"], seed))
                # prepare's draws and this eager draw are two programs: equal up to float32 rounding
                got = prepared["draws"][(seed - first) % grid.seeds]
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.full
def test_cluster_runs_with_shared_draws_do_not_depend_on_order_or_chunking():
    """The token-dynamics run (tokdyn.engine.runs.ClusterRun) shares its seed's data in a sweep: every
    metric is bit-identical in both grid orders at one chunk size (one program), and agrees with
    other chunk sizes and with runs that draw their own data up to rounding (other programs; the
    rule is chaotic near a split: a few runs end elsewhere)."""
    from tokdyn.engine.runs import ClusterRun

    task = ClusterRun(dim=2, points_per_cluster=20, max_clusters=4, methods=((1.0, 0.0, 0.0), (1.0, 0.5, 0.05)))

    def own(key, method, n_clusters, noise):
        return task(key, method=method, n_clusters=n_clusters, noise=noise)

    axes = dict(method=[0, 1], n_clusters=[2, 4], noise=[0.3, 0.9])
    key = jax.random.key(5)
    ref = sweep.run(task, Grid(seeds=6, **axes), key=key, common_random_numbers=True, progress=False)

    def agree_up_to_rounding(out):
        # another program (other batch shapes, or the data drawn inside the run): float32 rounding,
        # which the rule can amplify near a split, so that a few runs end elsewhere
        assert np.mean(out["n_clusters"] == ref["n_clusters"]) == 1.0
        assert np.mean(np.abs(out["ari"] - ref["ari"]) < 1e-6) >= 0.85
        assert abs(out["ari"].mean() - ref["ari"].mean()) < 0.02

    for chunk in (5, 48):
        by_order = []
        for major in (False, True):
            grid = Grid(seeds=6, seed_major=major, **axes)
            out = sweep.run(task, grid, key=key, common_random_numbers=True, chunk_size=chunk, progress=False)
            order = np.lexsort((out["seed"], out["noise"], out["n_clusters"], out["method"]))
            by_order.append({f: out[f][order] for f in (*ref.fields, *axes, "seed")})
        for f in ref.fields:  # both grid orders in chunks of one size: one program, the same bits
            np.testing.assert_array_equal(by_order[1][f], by_order[0][f], err_msg=f)
        agree_up_to_rounding(by_order[0])
    agree_up_to_rounding(sweep.run(own, Grid(seeds=6, **axes), key=key, common_random_numbers=True, progress=False))
