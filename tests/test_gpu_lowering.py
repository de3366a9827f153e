"""Every GPU program lowers for CUDA, checked on the CPU (a lent GPU's minutes never go to an error
the CPU could have found): the Pallas kernel of the built-in rule (its Triton custom call in the
module), the study path's chunk program as :func:`tokdyn.engine.sweep.run` builds it for an
accelerator (every run vmapped, the seeds' draws vmapped, the Pallas kernel taken), and each learned
sweep's chunk of :class:`~tokdyn.studies.learned_sweep.model.TrainRun` models as the sweep builds it
there (the whole chunk vmapped), and every Qwen2.5-VL program of the device call's VLM steps at the 3B
and 7B shapes from abstract weights (:data:`QWEN_PROGRAMS`). Lowering runs JAX's and Pallas' lowering
rules for the platform; compiling for it needs the GPU. The same for TPU where the installed jaxlib lowers Pallas for it."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys

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


# each traces its whole training loop (5-20 s of a 2-core CPU): with the full executions; the default
# tier lowers the Qwen programs and lists the analyses' programs
LEARNED = ("vtae", "slots", "iodine", "savi", "grid_diffusion")


@pytest.mark.full
@pytest.mark.parametrize("name", LEARNED)
def test_learned_sweep_chunk_lowers_for_cuda(name):
    cfg = importlib.import_module(f"tokdyn.studies.learned_sweep.{name}").Config.quick()
    cfg.validate()
    text = chunk_program(cfg.task(), cfg.grid(), 2)
    assert "stablehlo" in text and "func.func public @main" in text


@pytest.mark.full
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


# --------------------------------------------------------------------------- Qwen2.5-VL

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from rows import vlm, vlm_study  # noqa: E402

QWEN_PROGRAMS = [
    ("the vlm rows, 3B", lambda: vlm.programs("3b", vlm.ACCELERATOR)),
    ("the vlm rows, 7B", lambda: vlm.programs("7b", vlm.ACCELERATOR)),
    ("the vlm-diagnostics analyses, 3B", lambda: vlm.analysis_programs("3b")),
    ("the mediation with generation, 7B", lambda: vlm_study.mediation_programs(vlm.analysis_programs("7b"))),
]
"""Every Qwen2.5-VL program a device call or ``tokdyn study vlm-diagnostics`` runs, as ``(what,
programs)``: ``programs()`` returns :class:`rows.vlm.Program` s (a jitted function and its abstract
arguments): the VLM rows' at 3B and 7B, every batched program of the study's analyses at its 3B preset
(:func:`rows.vlm.analysis_programs`), and those of its mediation with generation at 7B (the device call's
second-call row)."""


def shapes_in(text: str) -> set[str]:
    return set(re.findall(r"tensor<([0-9x]+)x(?:bf16|f32)>", text))


@pytest.fixture(scope="module")
def params_3b():
    return vlm.abstract_params(vlm.config("3b"), jnp.bfloat16)


@pytest.fixture(scope="module")
def qwen_3b(params_3b):
    return vlm.programs("3b", vlm.ACCELERATOR, params_3b)


def test_qwen_3b_decode_lowers_for_cuda_reading_the_cache_as_it_is(qwen_3b):
    # the vlm step's decode at batch 8 (64 new tokens after 1,024): prefill, then the loop of decode
    # steps over the key/value cache, lowered for CUDA from abstract weights
    p = next(p for p in qwen_3b if p.name == "decode, batch 8, 64 new")
    text = p.lower("cuda").as_text()
    assert "stablehlo.while" in text
    shapes = shapes_in(text)
    assert "36x8x1088x2x128" in shapes  # the cache: 36 layers, 2 key/value heads
    # no layer's cache repeated to the 16 query heads
    assert not any(s.endswith("1088x16x128") or s.endswith("16x1088x128") for s in shapes)


@pytest.fixture(scope="module")
def analyses_3b(params_3b):
    return vlm.analysis_programs("3b", params=params_3b)


def test_the_listed_analysis_programs_cover_every_analysis_of_the_study(analyses_3b):
    from tokdyn.studies.vlm_diagnostics import ANALYSES

    ran = {a for p in analyses_3b for a in p.analyses}
    assert ran == set(ANALYSES)  # one path: both latent modes run the same programs
    names = [p.name for p in analyses_3b]
    assert len(names) == len(set(names))
    # the mediation with generation: both perturbations, the clean run (16 rows), the 13 perturbed images (208
    # rows), and one call of the interventions (len(LATENT_KINDS) x 16 rows) with the direct and indirect effects
    # (416 rows), each with its vision tower over every row's image
    from tokdyn.studies.vlm_diagnostics.config import LATENT_KINDS

    med = [p.name for p in vlm_study.mediation_programs(analyses_3b)]
    for rows in (16, 208, 16 * len(LATENT_KINDS) + 416):
        assert f"vision tower, {rows} images" in med and any(n.endswith(f", {rows} rows") for n in med)
    assert {"perturb pixels, gaussian", "perturb pixels, blank"} <= set(med) and len(med) == 8


def test_qwen_3b_latent_generation_with_interventions_lowers_for_cuda(analyses_3b):
    # the study's latent-mode generation under its interventions at the 3B preset (16 rows each) with the
    # mediation's direct and indirect runs (416 rows) in the same call: the cache of 36 layers x 2 key/value
    # heads over 320 prompt tokens and 32 new (one bucket of 384 slots), the swap source of one block of 8
    # latents, the 4 scored tokens' log-probabilities at every step
    from tokdyn.models.vlm import generation
    from tokdyn.studies.vlm_diagnostics.config import LATENT_KINDS

    k = len(LATENT_KINDS)
    n = 16 * k + 416
    name = f"generate, latent mode, {k} interventions with the direct and indirect runs, {n} rows"
    (p,) = [p for p in analyses_3b if p.name == name]
    assert p.fn is generation.run
    text = p.lower("cuda").as_text()
    shapes = shapes_in(text)
    assert f"36x{n}x384x2x128" in shapes and f"{n}x1x8x2048" in shapes and f"{n}x32x4" in shapes
    assert "stablehlo.while" in text


@pytest.mark.full
@pytest.mark.parametrize("what", [w for w, _ in QWEN_PROGRAMS])
def test_every_qwen_program_lowers_for_cuda(what):
    progs = dict(QWEN_PROGRAMS)[what]()
    names = [p.name for p in progs]
    assert len(names) == len(set(names)) and names
    for p in progs:
        text = p.lower("cuda").as_text()
        assert "func.func public @main" in text, p.name


def test_the_listed_decode_program_is_the_one_generate_runs(monkeypatch):
    # generate's own call of generation.run, captured: the same static structure and argument shapes as the
    # program the lowering test and the compile rows take
    from tokdyn.models.qwen2_5_vl import model as model_lib
    from tokdyn.models.vlm import generation

    cfg = vlm.config("tiny")
    params = vlm.abstract_params(cfg, jnp.float32)
    seen = []
    fake = {"tokens": np.zeros((2, 5), np.int32)}
    monkeypatch.setattr(generation, "run", lambda *args: seen.append(args) or fake)
    ids = vlm.prompt_ids(cfg, 2, 70)
    generation.generate(model_lib.Model(cfg, params), ids, max_new_tokens=5, eos_token_id=(), bucket=vlm.BUCKET)
    (got,) = seen
    want = vlm.decode_args(cfg, params, 2, 70, 5)
    assert got[0] == want[0] and got[1] is params
    for a, b in zip(got[2:], want[2:]):
        la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
        assert [(np.shape(x), jnp.asarray(x).dtype) for x in la] == [(y.shape, y.dtype) for y in lb]


def test_the_benchmarks_random_weights_have_params_inits_tree():
    from tokdyn.models.qwen2_5_vl import params

    cfg = vlm.config("tiny")
    ref = jax.eval_shape(lambda: params.init(jax.random.key(0), cfg, jnp.bfloat16))
    got = vlm.random_params(cfg, jnp.bfloat16, jax.random.key(3))
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    text = got["text"]
    assert np.all(np.asarray(text["norm"]) == 1) and 0.01 < float(jnp.std(text["layers"]["mlp"]["up"]["kernel"])) < 0.03


# --------------------------------------------------------------------------- the study's own calls


def signature(fn, args, kwargs) -> tuple:
    """A call's arguments by name (defaults filled in), each array as its shape and canonical dtype (a host
    int64 array is an int32 one on the device), every other value as itself."""
    import inspect

    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()

    def leaf(x):
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            d = x.dtype
            d = str(d) if jax.dtypes.issubdtype(d, jax.dtypes.prng_key) else str(jax.dtypes.canonicalize_dtype(d))
            return (tuple(x.shape), d)
        return x

    out = []
    for name, value in bound.arguments.items():
        leaves, tree = jax.tree_util.tree_flatten(value)
        out.append((name, tree, tuple(leaf(x) for x in leaves)))
    return tuple(out)


def fake_outputs(fn, args, kwargs, latent_ids=None):
    """Zeros of ``fn``'s output shapes (traced, never compiled); for a latent-mode ``generation.run``, tokens
    that open one block at the first step and close it (the start id, ``size`` pads, the end id), then a digit
    and the stop token."""
    out = jax.eval_shape(lambda: fn(*args, **kwargs))
    out = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), out)
    if latent_ids is not None and args[0].size:
        start, end, fill, digit, stop = latent_ids
        size = args[0].size
        row = [start, *[fill] * size, end, digit] + [stop] * args[0].new_tokens
        out["tokens"][:] = np.asarray(row[: args[0].new_tokens], np.int32)
    return out


@pytest.mark.full
def test_the_listed_analysis_programs_are_the_ones_the_study_calls(monkeypatch):
    # the study's analyses run on its tiny random model at its quick preset, in both latent modes, each
    # kernel and generation call recorded (and answered with zeros of its shapes: nothing compiled but
    # the checks' probes); the programs listed for that model and preset are the same calls, argument by
    # argument (shapes, dtypes, every static value), the data-dependent shapes given as the study made them
    from tokdyn.diagnostics import vlm as an
    from tokdyn.models.qwen2_5_vl import inputs
    from tokdyn.models.qwen2_5_vl import model as qwen_model
    from tokdyn.models.vlm import generation
    from tokdyn.studies import vlm_diagnostics as vd
    from tokdyn.studies.vlm_diagnostics import checkpoint

    cfg = vd.Config.quick()
    loaded = vd.open_checkpoint(cfg)
    inst = vd.make_instances(cfg)
    (group,) = vd.encode(inst, loaded, cfg)
    mcfg = loaded.config
    sh = vlm_study.shapes(
        mcfg,
        cfg,
        text=group.prompt_length - (cfg.image_size // 28) ** 2,
        answer=group.answer_ids.shape[1],
        n_stop=len(mcfg.eos_token_id),
        lead=int(np.flatnonzero(group.prompt[0] == mcfg.image_token_id)[0]) - 1,
        aligned=group.prompt_length + cfg.n_latents + 2,  # the block opened at the first step (fake_outputs)
    )
    listed = vlm_study.study_programs(mcfg, cfg, loaded.model.params, sh)
    kernels = {"grounding_scores", "optimise", "concentration"}
    by_fn = {getattr(an, k).jitted: k for k in kernels}
    by_fn.update({generation.run: "run", inputs.image_features_jit: "vision", vlm_study.PERTURB: "perturb"})
    want = {(by_fn[p.fn], signature(p.fn, p.args, p.kwargs)) for p in listed if p.name != "perception"}

    t = loaded.tokens
    ids = (t.start, t.end, t.fill, checkpoint.TINY_IDS["digits"] + 1, mcfg.eos_token_id[0])
    seen = set()

    def spy(name, fn, outputs):
        import functools

        @functools.wraps(fn)
        def call(*args, **kwargs):
            traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((args, kwargs)))
            if name == "perturb" or not traced:  # the perturbations run inside the study's own jit
                seen.add((name, signature(fn, args, kwargs)))
            return fn(*args, **kwargs) if traced or outputs is None else outputs(fn, args, kwargs)

        return call

    for k in kernels:
        monkeypatch.setattr(an, k, spy(k, getattr(an, k), fake_outputs))
    monkeypatch.setattr(an, "perturb_pixels", spy("perturb", an.perturb_pixels, None))
    monkeypatch.setattr(generation, "run", spy("run", generation.run, lambda f, a, k: fake_outputs(f, a, k, ids)))
    vision_spy = spy("vision", inputs.image_features_jit, fake_outputs)
    monkeypatch.setattr(inputs, "image_features_jit", vision_spy)
    monkeypatch.setattr(qwen_model, "image_features_jit", vision_spy)  # the family's encode_images calls it there
    for latents in ("block", "generated"):
        run_cfg = dataclasses.replace(cfg, latents=latents)
        ctx = vd.Context(run_cfg, loaded, inst)
        ctx.clean[(group.name, 0)] = vd.analyses.clean_part(ctx, group, 0)
        ctx.sources = vd.analyses.sources_of(ctx, list(ctx.clean.values()))
        for name, fn in vd.FUNCTIONS.items():
            if name != "perception":  # its program: the next test
                fn(ctx, group, 0)
    # the study's perturbations are traced with the instances' ids as int32 (jnp.asarray of a host int64
    # array) inside its jit: the listed program's abstract index is the same
    assert {n for n, _ in seen} == {n for n, _ in want}
    missing, extra = want - seen, seen - want
    assert not missing and not extra, (sorted(x[0] for x in missing), sorted(x[0] for x in extra))
