import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import child_env
from tokdyn.engine import execute


def _fn(shared, run):
    key = jax.random.fold_in(shared, run["i"])
    z = jax.random.normal(key, (8,))
    return dict(s=jnp.sum(z * run["w"]), first=z[0])


def _args(n):
    return dict(i=np.arange(n, dtype=np.int32), w=np.linspace(0, 1, n, dtype=np.float32))


def test_results_independent_of_chunk_and_batch_size():
    key = jax.random.key(0)
    ref = execute.map_runs(_fn, _args(37), shared=key, chunk_size=1000, batch_size=None)
    sequential = None
    for chunk, batch in [(5, 1), (8, 4), (37, 1), (16, None), (7, 3)]:
        out = execute.map_runs(_fn, _args(37), shared=key, chunk_size=chunk, batch_size=batch)
        # another batch width (a vmap of 37, 16, 4 or 3 runs, or single runs) is another program:
        # equal up to float32 rounding (atol 1e-5: s sums 8 products of size up to ~3, maybe in
        # another order)
        for k in ref:
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-5)
        if batch == 1:  # a sequential map runs the same per-run program at any chunk size: the same bits
            sequential = out if sequential is None else sequential
            for k in ref:
                np.testing.assert_array_equal(out[k], sequential[k])
    # and equal to the plain per-run call (another program)
    one = jax.jit(_fn)(key, dict(i=jnp.int32(11), w=jnp.float32(np.linspace(0, 1, 37, dtype=np.float32)[11])))
    assert float(one["first"]) == pytest.approx(ref["first"][11], rel=1e-6, abs=1e-6)


def test_progress_callback_and_errors():
    seen = []
    execute.map_runs(
        _fn, _args(10), shared=jax.random.key(0), chunk_size=4, on_chunk=lambda d, t, s: seen.append((d, t))
    )
    assert seen == [(4, 10), (8, 10), (10, 10)]
    with pytest.raises(ValueError, match="chunk_size"):
        execute.map_runs(_fn, _args(10), shared=jax.random.key(0), chunk_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        execute.map_runs(_fn, _args(10), shared=jax.random.key(0), batch_size=0)
    with pytest.raises(ValueError, match="leading"):
        execute.map_runs(_fn, dict(i=np.arange(3), w=np.zeros(4)), shared=jax.random.key(0))


@pytest.mark.full
def test_results_independent_of_device_count():
    """Run the same map on 1 and 4 forced host devices in fresh processes: identical bits."""
    code = textwrap.dedent(
        """
        import sys, numpy as np, jax
        sys.path.insert(0, %r)
        from test_execute import _fn, _args
        from tokdyn.engine import execute
        assert len(jax.devices()) == int(sys.argv[1])
        out = execute.map_runs(_fn, _args(50), shared=jax.random.key(0), chunk_size=12)
        np.save(sys.argv[2], out["s"])
        """
        % os.path.dirname(__file__)
    )
    results = []
    for n in (1, 4):
        env = child_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        path = f"{os.environ.get('TMPDIR', '/tmp')}/tokdyn_sweep_{os.getpid()}_{n}.npy"
        subprocess.run([sys.executable, "-c", code, str(n), path], check=True, env=env)
        results.append(np.load(path))
        os.remove(path)
    np.testing.assert_array_equal(results[0], results[1])


# ---------------------------------------------------------------------------------------------- chunk size per backend


class _FakeDevice:
    """A stand-in for an accelerator: what plan and device_memory read of a device."""

    def __init__(self, platform="gpu", stats=None):
        self.platform, self.id, self.device_kind, self._stats = platform, 0, "Fake GPU", stats

    def memory_stats(self):
        return self._stats


GIB = 2**30


def test_the_cpu_chunk_is_unchanged():
    assert execute.default_chunk_size(1, "cpu") == 2048
    assert execute.default_chunk_size(2, "cpu", bytes_per_run=10**6, memory=10**3) == 4096  # memory is moot
    cpus = jax.devices("cpu")
    assert execute.device_memory(cpus[0]) is None  # the CPU's memory is the host's
    assert execute.plan(cpus, "auto", None, 10**9)[2] == 2048 * len(cpus)
    if jax.default_backend() == "cpu":
        assert execute.default_chunk_size(3) == 3 * 2048 and execute.device_memory() is None


def test_the_device_memory_is_read_from_memory_stats():
    assert execute.device_memory(_FakeDevice(stats={"bytes_limit": 80 * GIB, "bytes_in_use": GIB})) == 79 * GIB
    assert execute.device_memory(_FakeDevice(stats={"bytes_limit": 80 * GIB})) == 80 * GIB
    assert execute.device_memory(_FakeDevice(stats=None)) is None
    assert execute.device_memory(_FakeDevice(platform="cpu", stats={"bytes_limit": GIB})) is None


def test_an_accelerator_chunk_is_sized_from_the_device_memory(monkeypatch):
    monkeypatch.setattr(execute, "device_memory", lambda device=None: 80 * GIB)
    low, high = execute.ACCELERATOR_CHUNK
    assert execute.default_chunk_size(1, "gpu") == low  # no per-run size: the fixed default
    sizes = []
    for memory in (80 * GIB, 16 * GIB, 2 * GIB, 10**6):
        per_device = execute.default_chunk_size(1, "gpu", bytes_per_run=100_000, memory=memory)
        assert low <= per_device <= high and per_device & (per_device - 1) == 0  # a power of two, in bounds
        assert per_device == low or per_device * 100_000 <= memory / execute.MEMORY_SHARE
        sizes.append(per_device)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 2**17 and sizes[-1] == low  # shrinks with memory
    assert execute.default_chunk_size(4, "gpu", bytes_per_run=100_000) == 4 * 2**17  # memory read: 80 GiB
    assert execute.default_chunk_size(1, "gpu", bytes_per_run=1) == high
    monkeypatch.setattr(execute, "device_memory", lambda device=None: None)  # no statistics: the fixed default
    assert execute.default_chunk_size(1, "gpu", bytes_per_run=100_000) == low
    # plan reads the memory of the devices it is given
    gpu = _FakeDevice(stats={"bytes_limit": 8 * GIB, "bytes_in_use": 0})
    monkeypatch.setattr(execute, "device_memory", lambda device=None: device.memory_stats()["bytes_limit"])
    devices, batch, step, padded = execute.plan([gpu, gpu], "auto", None, 10**9, bytes_per_run=4096)
    assert batch is None and step == padded == 2 * 2**19  # 8 GiB / 4 / 4 KiB = 2^19 runs per device
    assert execute.plan([gpu], "auto", None, 10**9)[2] == low  # no per-run size given


def test_the_per_run_size_comes_from_xla_and_costs_nothing_on_cpu(monkeypatch):
    wide = lambda run: jnp.sum(jnp.outer(run["x"], run["x"]) ** 2)  # noqa: E731
    args = {"x": np.ones((20, 1000), np.float32)}
    assert execute.run_bytes(wide, args) >= 4000  # at least the run's own input
    assert execute.run_bytes(_fn, _args(20), shared=jax.random.key(0)) > 0

    def no(*a, **k):
        raise AssertionError("run_bytes called on the CPU backend")

    monkeypatch.setattr(execute, "run_bytes", no)  # the CPU path compiles nothing more
    out = execute.map_runs(_fn, _args(10), shared=jax.random.key(0), devices=jax.devices("cpu"))
    assert out["s"].shape == (10,)


def test_the_default_chunk_is_balanced_so_the_padded_last_chunk_wastes_little():
    rng = np.random.default_rng(0)
    for _ in range(500):
        quantum = int(rng.choice([1, 2, 8, 1024]))
        largest = quantum * int(rng.integers(1, 64))
        total = int(rng.integers(1, 20 * largest))
        step = execute.balanced_chunk(total, largest, quantum)
        n = -(-total // step)
        assert step <= largest and n == -(-total // largest)  # no more chunks than the largest allows
        assert step % quantum == 0
        assert n * step - total < n * quantum  # the padding: less than a quantum per chunk
    cpus = jax.devices("cpu")[:1]
    assert execute.plan(cpus, "auto", None, 3000)[2:] == (1500, 1500)  # not 2,048 + 952 padded to 2,048
    assert execute.plan(cpus, "auto", 2048, 3000)[2:] == (2048, 2048)  # a chunk size given is kept
