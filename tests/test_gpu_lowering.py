"""Every GPU program lowers for CUDA, checked on the CPU (a lent GPU's minutes never go to an error
the CPU could have found): the Pallas kernel of the built-in rule (its Triton custom call in the
module), the study path's chunk program as :func:`tokdyn.engine.sweep.run` builds it for an
accelerator (every run vmapped, the seeds' draws vmapped, the Pallas kernel taken), and each learned
sweep's chunk of :class:`~tokdyn.studies.learned_sweep.model.TrainRun` models as the sweep builds it
there (the whole chunk vmapped). Lowering runs JAX's and Pallas' lowering rules for the platform;
compiling for it needs the GPU. The same for TPU where the installed jaxlib lowers Pallas for it."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn import dynamics
from tokdyn.dynamics import pallas as kernel
from tokdyn.engine import execute
from tokdyn.engine.runs import ClusterRun
from tokdyn.engine.sweep.task import grid_shared, grid_task
from tokdyn.studies import token_dynamics

TRITON = "__gpu$xla.gpu.triton"


@pytest.fixture
def on_gpu(monkeypatch):
    """The backend's choices as on a GPU: the Pallas kernel preferred and compiled (not interpreted).
    The traces cached before and after are dropped: a program traced on either side of the switch
    must not be reused on the other (the engine's cached chunk program, JAX's trace caches)."""
    execute.sharded_map.cache_clear()
    jax.clear_caches()
    monkeypatch.setattr(kernel, "preferred", lambda backend=None: True)
    yield
    monkeypatch.undo()
    execute.sharded_map.cache_clear()
    jax.clear_caches()


def lower(f, *args, platform="cuda"):
    return jax.jit(f).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def chunk_program(fn, grid, runs):
    """The chunk program :func:`tokdyn.engine.sweep.run` streams on an accelerator: one device,
    every run vmapped (``batch_size=None``), common random numbers; its text lowered for CUDA."""
    task = grid_task(fn, grid, True, runs, None)
    jitted, _ = execute.sharded_map(task, (jax.devices("cpu")[0],), None, True)
    args = {"index": np.arange(runs, dtype=np.uint32)}
    return jitted.trace(grid_shared(grid, jax.random.key(0)), args).lower(lowering_platforms=("cuda",)).as_text()


def test_pallas_kernel_lowers_to_triton(on_gpu):
    x = jnp.zeros((3, 100, 4))
    t0 = jnp.zeros((3, 4, 4))
    mask = jnp.ones((3, 100), bool)
    hp = dynamics.Hparams.stack([dynamics.METHODS[m] for m in ("baseline", "inertia+repulsion", "sinkhorn")])
    key = jax.random.split(jax.random.key(1), 3)

    def runs(x, t0, mask, hp, key):
        r = jax.vmap(lambda *a: kernel.run(a[0], a[1], a[3], mask=a[2], key=a[4], interpret=False))(
            x, t0, mask, hp, key
        )
        return r.tokens, r.labels, r.steps

    text = lower(runs, x, t0, mask, hp, key)
    assert TRITON in text


def test_study_path_chunk_lowers_for_cuda_with_the_pallas_kernel(on_gpu):
    cfg = token_dynamics.Config()
    fn = cfg.task()  # the study's ClusterRun, kernel="auto": the Pallas kernel where it is preferred
    assert isinstance(fn, ClusterRun) and fn.backend == "pallas"
    text = chunk_program(fn, cfg.grid(), 64)
    assert TRITON in text


# the default tier lowers the two cheapest to trace (the autoencoder; Slot Attention's convolutions,
# whose GPU lowering differs most from the CPU's); the full tier all six (each traces its whole
# training loop: 5-20 s of a 2-core CPU)
LEARNED = (
    "vtae",
    "slots",
    pytest.param("iodine", marks=pytest.mark.full),
    pytest.param("savi", marks=pytest.mark.full),
    pytest.param("grid_diffusion", marks=pytest.mark.full),
    pytest.param("latent_reasoning", marks=pytest.mark.full),
)


@pytest.mark.parametrize("name", LEARNED)
def test_learned_sweep_chunk_lowers_for_cuda(name):
    cfg = importlib.import_module(f"tokdyn.studies.learned_sweep.{name}").Config.quick()
    cfg.validate()
    text = chunk_program(cfg.task(), cfg.grid(), 2)
    assert "stablehlo" in text and "func.func public @main" in text


def test_study_path_chunk_lowers_for_tpu_in_its_xla_form():
    # on a TPU the rule runs its XLA form (the Pallas kernel is written for Triton: preferred only on
    # GPUs), every run vmapped as on any accelerator
    assert not kernel.preferred("tpu")
    cfg = token_dynamics.Config()
    task = grid_task(cfg.task(), cfg.grid(), True, 64, None)
    jitted, _ = execute.sharded_map(task, (jax.devices("cpu")[0],), None, True)
    traced = jitted.trace(grid_shared(cfg.grid(), jax.random.key(0)), {"index": np.arange(64, dtype=np.uint32)})
    try:
        text = traced.lower(lowering_platforms=("tpu",)).as_text()
    except Exception as e:  # noqa: BLE001 -- the reason is printed with the skip
        pytest.skip(f"this jaxlib does not lower for TPU: {type(e).__name__}: {str(e)[:200]}")
    assert "stablehlo.while" in text and TRITON not in text
