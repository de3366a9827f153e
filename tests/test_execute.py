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
    execute.map_runs(_fn, _args(10), shared=jax.random.key(0), chunk_size=4, on_chunk=lambda d, t, s: seen.append((d, t)))
    assert seen == [(4, 10), (8, 10), (10, 10)]
    with pytest.raises(ValueError, match="chunk_size"):
        execute.map_runs(_fn, _args(10), shared=jax.random.key(0), chunk_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        execute.map_runs(_fn, _args(10), shared=jax.random.key(0), batch_size=0)
    with pytest.raises(ValueError, match="leading"):
        execute.map_runs(_fn, dict(i=np.arange(3), w=np.zeros(4)), shared=jax.random.key(0))


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


