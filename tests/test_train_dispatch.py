"""Each learned model's training is GPU-shaped in what the host does: with the "scan" strategy,
``train_many`` dispatches a bounded number of programs per call of ``steps_per_call`` steps (so
per 1,000 model-steps at most 1000 / steps_per_call times that), and compiles nothing after its
first call. Counted on the CPU: program executions from a ``jax.profiler`` trace (one
"ExecutePrepare" event per executed program, checked against a jitted function called a known
number of times), compiles from ``jax.monitoring``'s backend-compile events."""

import glob
import gzip
import json
import os
import sys
import tempfile
import types

import jax
import jax.numpy as jnp
import pytest

from tokdyn import train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

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


def _train(tr, pool, keys, hp, calls):
    train.train_many(tr, pool, keys, hp, max_calls=calls, execution=train.Execution("scan"))


@pytest.mark.parametrize(
    "name",
    [
        "visual-token autoencoder",
        pytest.param("grid diffusion (D3PM absorbing)", marks=pytest.mark.slow),
        pytest.param("latent reasoner (latent variant)", marks=pytest.mark.slow),
        pytest.param("Slot Attention (scenes study)", marks=pytest.mark.slow),
        pytest.param("IODINE (scenes study)", marks=pytest.mark.slow),
        pytest.param("SAVi (video study, transformer predictor)", marks=pytest.mark.slow),
    ],
)
def test_dispatches_per_call_and_compiles_are_bounded(name):
    tr, pool, keys, hp, _, k = learned_models(SMOKE, 2)[name]()
    _train(tr, pool, keys, hp, 1)  # compiles every program of the training
    _COUNTING[0] = True
    _COMPILES.clear()
    try:
        few = executions(lambda: _train(tr, pool, keys, hp, 2))
        many = executions(lambda: _train(tr, pool, keys, hp, 6))
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
