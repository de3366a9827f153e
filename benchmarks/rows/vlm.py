"""The VLM rows: Qwen2.5-VL's vision tower, prefill and decode, on random weights at a checkpoint's shapes.

No checkpoint reaches the device machine, so the weights are random (:func:`random_params`, in the tree
``qwen2_5_vl.params`` lays out) and the shapes are the published ones: the 3B and 7B ``config.json``
values below (Qwen2.5-VL-3B-Instruct and -7B-Instruct on the Hugging Face hub). Speed does not depend on the weights' values, except through where
greedy decoding stops, and it never stops here (no stop token). On an accelerator: bfloat16, the 3B shapes
then the 7B (``--vlm-sizes`` picks), each at batch 8 and 1; on the CPU: the tiny test fixture and a small
configuration, float32; ``--smoke``: the fixture.

  vision   B 448 x 448 images (1,024 patches each, 256 merged tokens) through the vision tower: images/s
  prefill  the logits of B text prompts of T tokens (``Model.__call__``): prompt tokens/s
  decode   greedy generation of N new tokens with the key/value cache after those prompts
           (``generation.generate``), less the time of generating one token: (N - 1) x B / that
           difference, new tokens/s; against the bound of reading the decoder's weights once per step
           at the measured copy bandwidth (``of_bound``)
  mediation  the ``vlm-diagnostics`` study's mediation with latent-mode generation on one batch of
           its preset (``GPU_PRESETS``' batch at 3B and 7B, the quick preset's on the CPU's sizes;
           :func:`rows.vlm_study.mediation_row`): instances/s

:func:`programs` lists every compiled program these rows run, and :func:`analysis_programs` every batched
program of the ``vlm-diagnostics`` study, with abstract arguments (no weights materialised):
``tests/test_gpu_lowering.py`` lowers each for CUDA on the CPU, and the ``vlm-compile`` family
(:func:`run_compile`) compiles each for the backend it runs on and records the seconds, from which the
device call sizes its VLM steps.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite, steady
from tokdyn.models.qwen2_5_vl import model as model_lib

FIXTURE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "fixtures"
)

_IDS = dict(
    bos_token_id=151643,
    eos_token_id=151645,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    image_token_id=151655,
    video_token_id=151656,
    vocab_size=151936,
    max_position_embeddings=128000,
    rope_theta=1000000.0,
    rms_norm_eps=1e-06,
    hidden_act="silu",
    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
    model_type="qwen2_5_vl",
)
_VISION = dict(
    depth=32,
    hidden_act="silu",
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    in_chans=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
)
SHAPES = {
    "3b": dict(
        _IDS,
        hidden_size=2048,
        intermediate_size=11008,
        num_attention_heads=16,
        num_hidden_layers=36,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        vision_config=dict(_VISION, out_hidden_size=2048),
    ),
    "7b": dict(
        _IDS,
        hidden_size=3584,
        intermediate_size=18944,
        num_attention_heads=28,
        num_hidden_layers=28,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        vision_config=dict(_VISION, out_hidden_size=3584),
    ),
    "small": dict(
        _IDS,
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1408,
        num_attention_heads=8,
        num_hidden_layers=8,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]},
        image_token_id=31000,
        video_token_id=31001,
        vision_start_token_id=31002,
        vision_end_token_id=31003,
        bos_token_id=0,
        eos_token_id=1,
        vision_config=dict(
            _VISION, depth=4, hidden_size=256, intermediate_size=688, num_heads=4, out_hidden_size=512,
            fullatt_block_indexes=[3],
        ),
    ),
}  # fmt: skip
"""The ``config.json`` fields of each named size (``tiny``: the test fixture's own file)."""

BUCKET = 64  # generate's length bucket, as the rows call it


def config(name: str):
    """The :class:`tokdyn.models.qwen2_5_vl.config.Config` of a named size."""
    from tokdyn.models.qwen2_5_vl import config as config_lib

    if name == "tiny":
        return config_lib.read(os.path.join(FIXTURE, "qwen2_5_vl_tiny"))
    return config_lib.from_dict(SHAPES[name])


@dataclasses.dataclass(frozen=True)
class Work:
    """One size's workload: the prompts' ``batches`` (prefill and decode, each a row), ``prompt`` tokens,
    ``new`` tokens decoded, the ``images`` counts of the vision rows and their ``image`` side in pixels,
    and the weights' ``dtype``."""

    batches: tuple[int, ...]
    prompt: int
    new: int
    images: tuple[int, ...]
    image: int
    dtype: str


ACCELERATOR = Work(batches=(8, 1), prompt=1024, new=64, images=(1, 8), image=448, dtype="bfloat16")
"""The accelerator's workload, at the 3B and 7B shapes (also where ``--vlm-sizes`` names them on a CPU)."""
CPU = {
    "tiny": Work(batches=(4,), prompt=128, new=32, images=(1,), image=224, dtype="float32"),
    "small": Work(batches=(1,), prompt=128, new=32, images=(1,), image=224, dtype="float32"),
}
SMOKE = Work(batches=(1,), prompt=16, new=64, images=(1,), image=56, dtype="float32")
SIZES = ("3b", "7b", "small", "tiny")
"""The names ``--vlm-sizes`` takes."""


def sizes(s: Suite) -> list[tuple[str, Work]]:
    """``[(size name, workload), ...]`` (module docstring): ``--smoke``, the fixture at a tiny workload;
    else the sizes ``--vlm-sizes`` names (3B and 7B at the accelerator's workload on any backend), or by
    default the 3B and 7B shapes on an accelerator, the fixture and the small configuration on a CPU."""
    if s.args.smoke:
        return [("tiny", SMOKE)]
    wanted = [w.strip() for w in (getattr(s.args, "vlm_sizes", None) or "").split(",") if w.strip()]
    if wanted:
        return [(n, ACCELERATOR if n in SHAPES and n != "small" else CPU[n]) for n in wanted]
    if s.accelerator:
        return [("3b", ACCELERATOR), ("7b", ACCELERATOR)]
    return list(CPU.items())


# --------------------------------------------------------------------------- the programs


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled program of the VLM rows or the ``vlm-diagnostics`` study: its ``name``, the jitted
    ``fn`` and the arguments it is called with (``args`` and ``kwargs``; arrays may be
    ``jax.ShapeDtypeStruct``), as ``fn.trace(*args, **kwargs)`` takes them; ``analyses``: the study's
    analyses that run it (none for the VLM rows' own)."""

    name: str
    fn: object
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    analyses: tuple = ()

    def trace(self):
        """``fn`` traced at the arguments."""
        return self.fn.trace(*self.args, **self.kwargs)

    def lower(self, platform: str | None = None):
        """``fn`` traced and lowered (for ``platform``, e.g. ``"cuda"``, where given)."""
        traced = self.trace()
        return traced.lower(lowering_platforms=(platform,)) if platform else traced.lower()


def abstract_params(cfg, dtype):
    """The parameter tree ``params.init`` makes for ``cfg``, as ``jax.ShapeDtypeStruct`` leaves: nothing
    materialised (the tree built from ``params.layout`` under ``jax.eval_shape``, without tracing a
    random draw per array)."""
    from tokdyn.models.qwen2_5_vl import params

    def build():
        tree: dict = {}
        for entry in params.layout(cfg):
            params.insert(tree, entry.path, params.to_tree(entry, jnp.zeros(entry.shape, dtype)))
        return params.stack_layers(tree, cfg)

    return jax.eval_shape(build)


def weights_program(cfg, dtype, scale: float = 0.02):
    """A jitted ``draw(key)`` of random parameters of the tree :func:`abstract_params` describes: one
    block of normal draws (float32, standard deviation ``scale``) as large as the largest array, each
    weight and bias its first elements in its own shape and dtype, the norms' weights one. One random
    draw in one program compiles in a fraction of the time of a draw per array (``params.init``'s);
    the arrays share their leading values, which speed does not depend on."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_params(cfg, dtype))
    largest = max(int(np.prod(leaf.shape)) for _, leaf in leaves)

    def norm(path) -> bool:
        return "norm" in str(getattr(path[-1], "key", ""))

    def draw(key):
        block = scale * jax.random.normal(key, (largest,), jnp.float32)
        out = []
        for path, leaf in leaves:
            if norm(path):
                out.append(jnp.ones(leaf.shape, leaf.dtype))
            else:
                out.append(block[: int(np.prod(leaf.shape))].reshape(leaf.shape).astype(leaf.dtype))
        return jax.tree_util.tree_unflatten(treedef, out)

    return jax.jit(draw)


def random_params(cfg, dtype, key):
    """Random parameters of ``cfg`` in ``dtype`` (:func:`weights_program`)."""
    return weights_program(cfg, jnp.dtype(dtype))(key)


def image_grid(cfg, n_images: int, side: int) -> np.ndarray:
    """``image_grid_thw`` (n, 3) of ``n_images`` ``side`` x ``side`` images (the side rounded down to whole
    merged patches); their ``pixel_values`` are (``grid.prod(1).sum()``, ``patch_dim``)."""
    unit = cfg.vision.patch_size * cfg.vision.spatial_merge_size
    cells = side // unit * cfg.vision.spatial_merge_size
    return np.array([[1, cells, cells]] * n_images)


def prompt_ids(cfg, batch: int, length: int) -> np.ndarray:
    """(batch, length) plain text token ids, drawn at random (no image, no stop token)."""
    rng = np.random.default_rng(2)
    hi = min(cfg.text.vocab_size, cfg.image_token_id, cfg.vision_start_token_id)
    return rng.integers(2, hi, size=(batch, length))


TRAIN_TEXT = 64  # the training prompt's text tokens beside its image (the chat template's turn and a question)


def image_tokens(cfg, side: int) -> int:
    """The merged image tokens of one ``side`` x ``side`` image."""
    return (side // cfg.vision.patch_size) ** 2 // cfg.vision.spatial_merge_size**2


def _round_up(n: int, bucket: int) -> int:
    return -(-n // bucket) * bucket


def decode_args(cfg, params, batch: int, prompt: int, new: int) -> tuple:
    """The arguments ``generation.generate(model, ids, max_new_tokens=new, eos_token_id=(), bucket=BUCKET)``
    passes to ``generation.run`` for ``batch`` text prompts of ``prompt`` tokens (greedy, no stop token, no
    latent mode): ``(static, params, prompt, options)``, the arrays as ``jax.ShapeDtypeStruct``
    (``generation.programs``' own)."""
    from tokdyn.models import qwen2_5_vl
    from tokdyn.models.vlm import generation

    _, (_, prompt_args, options) = generation.programs(
        qwen2_5_vl, cfg, batch, prompt, new, latent_size=0, n_stop=0, dtype=jnp.float32, bucket=BUCKET
    )
    static = generation.static_for(qwen2_5_vl, cfg, _round_up(prompt, BUCKET), new, 0, False, BUCKET, 256)
    return static, params, prompt_args, options


PREFILL = jax.jit(model_lib.apply, static_argnums=0)
TRAIN_LATENTS, TRAIN_TAIL = 8, 2  # the organism's block and its answer (letter and <|im_end|>)


def _loss_and_grad(lay, params, batch):
    from tokdyn.models.vlm import training

    return jax.value_and_grad(lambda p: training.losses(lay, p, batch)[0])(params)


TRAIN_STEP = jax.jit(_loss_and_grad, static_argnums=0)
"""One training step's loss and gradients of the organism's latent recipe (:func:`tokdyn.models.vlm.training.losses`:
the prompt with its image, a block of fed-back latents, the answer teacher-forced), jitted: what each
optimiser step of ``tokdyn.models.organism.training`` computes before the update."""


def train_args(cfg, params, batch: int, prompt: int, image: int) -> tuple:
    """``(layout, params, batch)`` of :data:`TRAIN_STEP` for ``batch`` sequences of a ``prompt``-token prompt
    (its image of side ``image`` pixels among them), :data:`TRAIN_LATENTS` latents and :data:`TRAIN_TAIL` answer
    tokens, the arrays as ``jax.ShapeDtypeStruct``."""
    from tokdyn.models import qwen2_5_vl
    from tokdyn.models.vlm import training

    side = image // cfg.vision.patch_size
    lay = training.Layout(qwen2_5_vl, cfg, (1, side, side), prompt, TRAIN_LATENTS, TRAIN_TAIL)
    sds = jax.ShapeDtypeStruct
    px = sds((batch, side * side, cfg.vision.patch_dim), jnp.float32)
    b = training.Batch(
        sds((batch, prompt), jnp.int32),
        sds((batch, prompt), jnp.bool_),
        sds((3, batch, prompt), jnp.int32),
        sds((batch,), jnp.int32),
        px,
        sds((batch, TRAIN_TAIL), jnp.int32),
        sds((batch, TRAIN_TAIL), jnp.float32),
        sds((batch, TRAIN_TAIL), jnp.bool_),
        sds((3,), jnp.int32),
        px,
    )
    return lay, params, b


"""``model.apply`` jitted as ``Model.__call__`` jits it (the configuration static): the prefill rows' program."""


def programs(name: str, work: Work, params=None) -> list[Program]:
    """Every program the VLM rows of size ``name`` run under ``work``, with abstract arguments
    (``params``: the tree or its shapes; default :func:`abstract_params`): the random weights' draw,
    ``generation.run`` at ``work.new`` and at 1 new token (decode) and the forward pass (prefill) for
    each batch, the vision tower for each image count."""
    from tokdyn.models.qwen2_5_vl import vision
    from tokdyn.models.vlm import generation

    cfg = config(name)
    dtype = jnp.dtype(work.dtype)
    params = abstract_params(cfg, dtype) if params is None else params
    out = [Program("random weights", weights_program(cfg, dtype), (jax.eval_shape(lambda: jax.random.key(0)),))]
    for b in work.batches:
        for n in (work.new, 1):
            out.append(
                Program(f"decode, batch {b}, {n} new", generation.run, decode_args(cfg, params, b, work.prompt, n))
            )
        ids = jax.ShapeDtypeStruct((b, work.prompt), jnp.int32)
        mask, pos = jax.ShapeDtypeStruct(ids.shape, jnp.bool_), jax.ShapeDtypeStruct((3, *ids.shape), jnp.int32)
        out.append(Program(f"prefill, batch {b}", PREFILL, (cfg, params, ids, mask, pos)))
    b = work.batches[0]
    prompt = image_tokens(cfg, work.image) + TRAIN_TEXT
    out.append(Program(f"train step, batch {b}", TRAIN_STEP, train_args(cfg, params, b, prompt, work.image)))
    for n in work.images:
        grid = image_grid(cfg, n, work.image)
        pixels = jax.ShapeDtypeStruct((int(grid.prod(1).sum()), cfg.vision.patch_dim), jnp.float32)
        args = (cfg, params, pixels, vision.plan(cfg.vision, grid))
        out.append(Program(f"vision tower, {n} image(s)", model_lib.image_features_jit, args))
    return out  # fmt: skip


def analysis_programs(name: str, batch: int | None = None, params=None) -> list[Program]:
    """Every batched program ``tokdyn study vlm-diagnostics`` compiles for one batch of instances of the
    model of size ``name`` (:func:`rows.vlm_study.study_programs`: the analyses with ``--latents block`` and
    ``--latents generated``, the generation and vision programs they call, the image perturbations), at the
    study's preset for that size (``GPU_PRESETS`` for 3B and 7B; ``batch`` replaces its batch size), with
    abstract arguments (``params``: the tree or its shapes; default :func:`abstract_params`)."""
    from rows import vlm_study

    scfg = vlm_study.study_config(name, batch)
    return vlm_study.study_programs(config(name), scfg, params)


# --------------------------------------------------------------------------- the rows


def decode_bound(cfg, params, batch: int, ceil: dict) -> dict:
    """The bound of one decode step: reading the decoder's weights once (every layer, the final norm and
    the output head; the embedding rows gathered are left out) at the measured copy bandwidth, as new
    tokens/s of ``batch`` rows; ``{}`` without a measured bandwidth."""
    bw = ceil.get("copy_bytes")
    if not bw:
        return {}
    text = params["text"]
    head = text["embed"] if cfg.text.tie_word_embeddings else text["lm_head"]
    leaves = jax.tree_util.tree_leaves({"layers": text["layers"], "norm": text["norm"], "head": head})
    nbytes = float(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in leaves))
    return dict(weight_bytes=nbytes, bound_tokens_per_s=batch * bw / nbytes, binding="hbm (weights once a step)")


MEDIATION_ROW = "vlm-diagnostics mediation with latent-mode generation"
"""The name of the mediation row after the size's label (``--rows`` tells it from the model's rows)."""


def run(s: Suite):
    """Every VLM row (module docstring): for each size, decode then prefill at each batch, the vision
    tower at each image count, then the study's mediation with generation on one batch."""
    from rows import ceilings, vlm_study
    from tokdyn.models.qwen2_5_vl import params
    from tokdyn.models.vlm import generation

    if s.accelerator and "copy_bytes" not in s.ceil:  # the decode rows' bound, where no ceilings were read
        ceilings.copy_row(s)
    for name, w in sizes(s):
        cfg = config(name)
        dtype = jnp.dtype(w.dtype)
        label = f"qwen2.5-vl {name} shapes, random weights, {w.dtype}"
        precision = w.dtype if w.dtype != "float32" else s.meta.get("matmul_precision", "")
        state = {}

        def build(cfg=cfg, dtype=dtype):
            if "model" not in state:
                t0 = time.perf_counter()
                p = jax.block_until_ready(random_params(cfg, dtype, jax.random.key(0)))
                state["model"] = model_lib.Model(cfg, p)
                state["init_s"] = time.perf_counter() - t0
                state["n_params"] = params.count(p)
            return state["model"]

        def vision_row(n, cfg=cfg, w=w):
            from tokdyn.models.qwen2_5_vl import vision

            m = build()
            grid = image_grid(cfg, n, w.image)
            pixels = jax.random.normal(jax.random.key(1), (int(grid.prod(1).sum()), cfg.vision.patch_dim), jnp.float32)
            plan = vision.plan(cfg.vision, grid)
            call = lambda: jax.block_until_ready(model_lib.image_features_jit(cfg, m.params, pixels, plan))  # noqa: E731
            best, med, first = steady(call, s.args.repeats)
            patches = pixels.shape[0] // n
            return dict(
                size=f"{n} {w.image} x {w.image} image(s), {patches} patches each; {state['n_params']:,} parameters",
                unit="images/s",
                best=n / best,
                median=n / med,
                compile_s=max(first - med, 0.0),
                init_s=state["init_s"],
                precision=precision,
            )

        def prefill_row(b, cfg=cfg, w=w):
            m = build()
            x = prompt_ids(cfg, b, w.prompt)
            best, med, first = steady(lambda: np.asarray(m(x)[:, -1]), s.args.repeats)
            toks = b * w.prompt
            return dict(
                size=f"{b} prompt(s) x {w.prompt} text tokens",
                unit="tokens/s",
                best=toks / best,
                median=toks / med,
                compile_s=max(first - med, 0.0),
                init_s=state["init_s"],
                precision=precision,
            )

        def decode_row(b, cfg=cfg, w=w):
            m = build()
            x = prompt_ids(cfg, b, w.prompt)

            def gen(n):
                return lambda: generation.generate(m, x, max_new_tokens=n, eos_token_id=(), bucket=BUCKET)

            t0 = time.perf_counter()
            gen(w.new)(), gen(1)()
            first = time.perf_counter() - t0
            many, one = [], []
            # alternately, so a drift in the machine's load hits both; three pairs at least (the
            # difference of two short times is noisy on a loaded machine)
            for _ in range(max(s.args.repeats, 3)):
                t = time.perf_counter()
                gen(w.new)()
                many.append(time.perf_counter() - t)
                t = time.perf_counter()
                gen(1)()
                one.append(time.perf_counter() - t)
            new = (w.new - 1) * b
            med = float(np.median(many)) - float(np.median(one))
            best = min(many) - float(np.median(one))
            if not med > 0:
                raise RuntimeError(f"decoding {w.new} tokens took no longer than 1 ({med:.3g} s): no rate")
            row = dict(
                size=f"{b} row(s) x {w.new} new tokens after {w.prompt}",
                unit="tokens/s",
                best=new / best if best > 0 else float("nan"),
                median=new / med,
                compile_s=max(first - float(np.median(many)) - float(np.median(one)), 0.0),
                init_s=state["init_s"],
                precision=precision,
            )
            bound = decode_bound(cfg, m.params, b, s.ceil)
            if bound:
                row.update(bound, of_bound=row["median"] / bound["bound_tokens_per_s"])
            return row

        for b in w.batches:
            s.row("vlm", f"{label}: decode, batch {b}", lambda b=b, f=decode_row: f(b))
        for b in w.batches:
            s.row("vlm", f"{label}: prefill, batch {b}", lambda b=b, f=prefill_row: f(b))
        for n in w.images:
            s.row("vlm", f"{label}: vision tower, {n} image(s)", lambda n=n, f=vision_row: f(n))

        def train_row(b, cfg=cfg, w=w):
            from tokdyn.models.vlm import training

            m = build()
            prompt = image_tokens(cfg, w.image) + TRAIN_TEXT
            lay, _, shapes = train_args(cfg, m.params, b, prompt, w.image)
            key = iter(jax.random.split(jax.random.key(2), 16))

            def fill(x):  # random data of each field's shape: ids in the vocabulary, masks all True
                if x.dtype == jnp.bool_:
                    return jnp.ones(x.shape, bool)
                if jnp.issubdtype(x.dtype, jnp.integer):
                    return jax.random.randint(next(key), x.shape, 0, min(cfg.text.vocab_size, 1000), x.dtype)
                return jax.random.normal(next(key), x.shape, x.dtype)

            batch = jax.tree_util.tree_map(fill, shapes)
            pos = jnp.broadcast_to(jnp.arange(prompt)[None, None], (3, b, prompt)).astype(jnp.int32)
            batch = dataclasses.replace(
                batch,
                positions=pos,
                next_pos=jnp.full((b,), prompt, jnp.int32),
                ids=batch.ids.at[:, : image_tokens(cfg, w.image)].set(cfg.image_token_id),
                markers=jnp.asarray([1, 2, 3], jnp.int32),
            )
            call = lambda: jax.block_until_ready(TRAIN_STEP(lay, m.params, batch))  # noqa: E731
            best, med, first = steady(call, s.args.repeats)
            del training
            return dict(
                size=f"{b} sequences of {prompt} prompt tokens ({image_tokens(cfg, w.image)} image tokens), "
                f"{TRAIN_LATENTS} fed-back latents, {TRAIN_TAIL} answer tokens: loss and gradients",
                unit="sequences/s",
                best=b / best,
                median=b / med,
                compile_s=max(first - med, 0.0),
                init_s=state["init_s"],
                precision=precision,
            )

        b = w.batches[0]
        s.row("vlm", f"{label}: train step (latent recipe), batch {b}", lambda b=b, f=train_row: f(b))

        def mediation_row(name=name, precision=precision):
            row = vlm_study.mediation_row(s, name, build(), precision)
            return dict(row, init_s=state["init_s"])

        b = vlm_study.study_config(name).batch_size
        s.row("vlm", f"{label}: {MEDIATION_ROW}, batch {b}", mediation_row)
        state.clear()  # free the weights before the next size


def compile_row(p: Program, size: str, shapes_s: float) -> dict:
    """One ``vlm-compile`` row: ``p`` traced, lowered and compiled for this backend (nothing run), the wall
    seconds of each stage and the process's CPU seconds of the compile."""
    t, c = time.perf_counter(), time.process_time()
    traced = p.trace()
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2, c2 = time.perf_counter(), time.process_time()
    lowered.compile()
    t3, c3 = time.perf_counter(), time.process_time()
    return dict(
        size=size,
        unit="s",
        median=t3 - t,
        trace_s=t1 - t,
        lower_s=t2 - t1,
        compile_s=t3 - t2,
        compile_cpu_s=c3 - c2,
        cpu_s=c3 - c,
        shapes_s=shapes_s,
        platform=jax.default_backend(),
        **({"analyses": list(p.analyses)} if p.analyses else {}),
    )


def run_compile(s: Suite):
    """The ``vlm-compile`` rows: each program of :func:`programs` at each size of :func:`sizes`, then each
    of :func:`analysis_programs` (the ``vlm-diagnostics`` study's, at its preset for the size; rows named
    ``qwen2.5-vl SIZE analyses``, each with the ``analyses`` that run it, and one row of the floating-point
    work of a batch of the mediation with generation, :func:`rows.vlm_study.mediation_flops`), traced,
    lowered and compiled for this backend from abstract arguments (no weights materialised, nothing run):
    the wall seconds of each stage, and the process's CPU seconds of the compile (``compile_cpu_s``, all
    its threads; on a shared machine less affected by the others' load than the wall time): what the
    device call's VLM steps are sized from (``device_session.py``); ``--rows`` picks the programs."""
    from rows import vlm_study

    for name, w in sizes(s):
        label = f"qwen2.5-vl {name} shapes, {w.dtype}"
        t0 = time.perf_counter()
        progs = programs(name, w)
        shapes_s = time.perf_counter() - t0
        size = f"batches {w.batches}, {w.prompt} prompt tokens, {w.new} new, images {w.images}"
        for p in progs:
            s.row("vlm-compile", f"{label}: {p.name}", lambda p=p, size=size, t=shapes_s: compile_row(p, size, t))
        scfg = vlm_study.study_config(name)
        label = f"qwen2.5-vl {name} analyses, {scfg.dtype}"
        t0 = time.perf_counter()
        progs = analysis_programs(name)
        shapes_s = time.perf_counter() - t0
        sh = vlm_study.shapes(config(name), scfg)
        size = (
            f"vlm-diagnostics preset: batch {sh.batch}, {sh.image} x {sh.image} images, prompt {sh.prompt}, "
            f"{sh.n_latents} latents, {sh.new_tokens} new tokens, {sh.perturbations} perturbations"
        )
        for p in progs:
            s.row("vlm-compile", f"{label}: {p.name}", lambda p=p, size=size, t=shapes_s: compile_row(p, size, t))
        flops = vlm_study.mediation_flops(config(name), scfg, sh)
        s.row(
            "vlm-compile",
            f"{label}: the work of a batch of the mediation with generation",
            lambda flops=flops, size=size: dict(size=size, unit="flops", median=flops, platform=jax.default_backend()),
        )
