"""Each learned model's training is GPU-shaped in what the host does: with the "scan" strategy,
``train_many`` dispatches a bounded number of programs per call of ``steps_per_call`` steps (so
per 1,000 model-steps at most 1000 / steps_per_call times that), moves to the host per call no
more than the curves it must report (one float32 per model and curve column: nothing that grows
with the parameters or the data), and compiles nothing after its first call. Counted on the CPU:
program executions from a ``jax.profiler`` trace (one "ExecutePrepare" event per executed program,
checked against a jitted function called a known number of times), bytes fetched to the host with
``benchmarks/counting.py``'s ``HostFetches`` (checked against a jitted function's output of known
size fetched a known number of times; and, in a process of two host devices, where every fetch
takes the path a GPU's takes), compiles from ``jax.monitoring``'s backend-compile events."""

import glob
import gzip
import json
import os
import sys
import tempfile
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import counting  # noqa: E402
from rows.training import learned_models  # noqa: E402  (the suite's models at their smoke sizes)

SMOKE = types.SimpleNamespace(args=types.SimpleNamespace(smoke=True))
PER_CALL = 2  # programs a call may dispatch: the block of steps (and at most one more)

_COMPILES = []
_COUNTING = [False]


def _on_event(event, duration, **kwargs):
    if _COUNTING[0] and event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(duration)


jax.monitoring.register_event_duration_secs_listener(_on_event)


def executions(fn) -> int:
    """Programs executed while ``fn()`` runs, read off a profiler trace."""
    d = tempfile.mkdtemp()
    with jax.profiler.trace(d, create_perfetto_trace=True):
        fn()
    files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        pytest.skip("this JAX wrote no perfetto trace")
    with gzip.open(files[0]) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    return sum(1 for e in events if e.get("name", "").endswith("ExecutePrepare"))


@pytest.fixture(scope="module", autouse=True)
def calibrated():
    f = jax.jit(lambda x: x * 2.0 + 1.0)
    x = jnp.ones(3)
    f(x).block_until_ready()

    def five():
        y = x
        for _ in range(5):
            y = f(y)
        y.block_until_ready()

    n = executions(five)
    if n != 5:
        pytest.skip(f"this JAX's profiler does not name one event per executed program ({n} for 5 calls)")
    fetched = counting.calibrate()
    assert fetched["counted"] == fetched["expected"], fetched


def test_fetch_counter_counts_a_known_case():
    """The counter's known case (``counting.calibrate``: k outputs of 4,000 bytes, each read twice,
    and a 4-byte scalar) counted exactly, and nothing counted outside the context."""
    got = counting.calibrate(k=3)
    assert got["counted"] == got["expected"] == 3 * 4000 + 4
    with counting.HostFetches() as h:
        pass
    np.asarray(jnp.ones(10))
    assert h.bytes == 0 and h.arrays == 0


def _train(tr, pool, keys, hp, calls, fetched=None):
    with counting.HostFetches() as h:
        res = train.train_many(tr, pool, keys, hp, max_calls=calls, execution=train.Execution("scan"))
    if fetched is not None:
        fetched.append((h.bytes, res))


@pytest.mark.parametrize(
    "name",
    [
        "visual-token autoencoder",
        pytest.param("grid diffusion (D3PM absorbing)", marks=pytest.mark.slow),
        pytest.param("Slot Attention (scenes study)", marks=pytest.mark.slow),
        pytest.param("IODINE (scenes study)", marks=pytest.mark.slow),
        pytest.param("SAVi (video study, transformer predictor)", marks=pytest.mark.slow),
    ],
)
def test_dispatches_bytes_per_call_and_compiles_are_bounded(name):
    m = 2
    tr, pool, keys, hp, _, k = learned_models(SMOKE, m)[name]()
    _train(tr, pool, keys, hp, 1)  # compiles every program of the training
    _COUNTING[0] = True
    _COMPILES.clear()
    fetched = []
    try:
        few = executions(lambda: _train(tr, pool, keys, hp, 2, fetched))
        many = executions(lambda: _train(tr, pool, keys, hp, 6, fetched))
    finally:
        _COUNTING[0] = False
    per_call = (many - few) / 4  # the difference of the two runs: what each further call costs
    per_1000 = per_call * 1000 / k
    assert per_call <= PER_CALL, (
        f"{name}: {per_call:.2f} programs per call of {k} steps ({per_1000:.0f} per 1,000 model-steps), "
        f"at most {PER_CALL} per call allowed ({few} in 2 calls, {many} in 6)"
    )
    assert per_call >= 1  # a call runs its block of steps: a count of 0 means the counting broke
    assert not _COMPILES, f"{name}: {len(_COMPILES)} compiles after the first call"

    # bytes to the host: what each further call fetches, against what it must report (its curves)
    (b_few, _), (b_many, res) = fetched
    bytes_per_call = (b_many - b_few) / 4
    report = len(res.curves) * m * 4  # one float32 per model and curve column per call
    params = sum(a[0].nbytes for a in jax.tree_util.tree_leaves(res.state.params))
    assert bytes_per_call <= report, (
        f"{name}: {bytes_per_call:.0f} bytes to the host per call of {k} steps "
        f"({bytes_per_call / k:.1f} per step), more than its {len(res.curves)} curve columns x {m} models "
        f"x 4 bytes = {report} (one model's parameters: {params} bytes)"
    )
    assert bytes_per_call >= m * 4  # at least the loss of each model: 0 means the counting broke
    assert b_few - 2 * bytes_per_call < params  # once per train_many call: no parameter download


@pytest.mark.slow
def test_bytes_to_host_counted_where_a_gpu_fetches():
    """In a process of two host devices, every array ``train_many`` reads back has two shards, so
    NumPy cannot read it through the buffer protocol and every fetch goes through
    ``jax.Array._value``, as from a GPU: the counter's known case and the autoencoder's bytes per
    call (its curves, nothing more) hold there too."""
    import subprocess

    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import counting; "
        "print(json.dumps([counting.calibrate(), counting.host_bytes('visual-token autoencoder')]))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    cal, got = json.loads(out.stdout.strip().splitlines()[-1])
    assert cal["devices"] == 2 and cal["counted"] == cal["expected"], cal
    assert got["devices"] == 2
    assert got["per_call_bytes"] == got["report_bytes_per_call"], got  # its curves, all counted
