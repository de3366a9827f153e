"""The VLM rows: Qwen2.5-VL's vision tower, prefill and decode, on random weights at a checkpoint's shapes.

No checkpoint reaches the device machine, so the weights are random (``qwen2_5_vl.params.init``) and the
shapes are the published ones: the 3B and 7B ``config.json`` values below (Qwen2.5-VL-3B-Instruct and
-7B-Instruct on the Hugging Face hub). Speed does not depend on the weights' values, except through where
greedy decoding stops, and it never stops here (no stop token). On an accelerator: bfloat16, the 3B shapes
then the 7B; on the CPU: the tiny test fixture and a small configuration, float32; ``--smoke``: the fixture.

  vision   one 448 x 448 image (1,024 patches, 256 merged tokens) through the vision tower: images/s
  prefill  the logits of B text prompts of T tokens: prompt tokens/s
  decode   greedy generation of N new tokens with the key/value cache after those prompts, less the time
           of generating one token: (N - 1) x B / that difference, new tokens/s
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rows.base import Suite, steady

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


def config(name: str):
    """The :class:`tokdyn.models.qwen2_5_vl.config.Config` of a named size."""
    from tokdyn.models.qwen2_5_vl import config as config_lib

    if name == "tiny":
        return config_lib.read(os.path.join(FIXTURE, "qwen2_5_vl_tiny"))
    return config_lib.from_dict(SHAPES[name])


def sizes(s: Suite) -> list[tuple[str, dict]]:
    """``[(size name, workload), ...]`` for this backend (module docstring)."""
    if s.args.smoke:
        return [("tiny", dict(batch=1, prompt=16, new=4, image=56, dtype="float32"))]
    if s.accelerator:
        work = dict(batch=8, prompt=1024, new=64, image=448, dtype="bfloat16")
        return [("3b", work), ("7b", work)]
    return [
        ("tiny", dict(batch=4, prompt=128, new=32, image=224, dtype="float32")),
        ("small", dict(batch=1, prompt=128, new=32, image=224, dtype="float32")),
    ]


def run(s: Suite):
    """Every VLM row (module docstring)."""
    from tokdyn.models.qwen2_5_vl import generation, params, vision
    from tokdyn.models.qwen2_5_vl import model as model_lib

    for name, w in sizes(s):
        cfg = config(name)
        dtype = jnp.dtype(w["dtype"])
        label = f"qwen2.5-vl {name} shapes, random weights, {w['dtype']}"
        state = {}

        def build(cfg=cfg, dtype=dtype):
            if "model" not in state:
                t0 = time.perf_counter()
                p = jax.block_until_ready(params.init(jax.random.key(0), cfg, dtype))
                state["model"] = model_lib.Model(cfg, p)
                state["init_s"] = time.perf_counter() - t0
                state["n_params"] = params.count(p)
            return state["model"]

        def vision_row(cfg=cfg, w=w):
            m = build()
            side = w["image"] // (cfg.vision.patch_size * cfg.vision.spatial_merge_size) * cfg.vision.spatial_merge_size
            grid = np.array([[1, side, side]])
            patch_dim = 3 * cfg.vision.temporal_patch_size * cfg.vision.patch_size**2
            pixels = jax.random.normal(jax.random.key(1), (side * side, patch_dim), jnp.float32)
            plan = vision.plan(cfg.vision, grid)
            t0 = time.perf_counter()
            jax.block_until_ready(model_lib.image_features_jit(cfg, m.params, pixels, plan))
            first = time.perf_counter() - t0
            best, med, _ = steady(
                lambda: jax.block_until_ready(model_lib.image_features_jit(cfg, m.params, pixels, plan)),
                s.args.repeats,
            )
            return dict(
                size=f"one {w['image']} x {w['image']} image, {side * side} patches; {state['n_params']:,} parameters",
                unit="images/s",
                best=1 / best,
                median=1 / med,
                compile_s=first - med,
                precision=str(jax.config.jax_default_matmul_precision),
            )

        def ids(cfg=cfg, w=w):
            rng = np.random.default_rng(2)
            hi = min(cfg.text.vocab_size, cfg.image_token_id, cfg.vision_start_token_id)  # plain text tokens
            return rng.integers(2, hi, size=(w["batch"], w["prompt"]))

        def prefill_row(cfg=cfg, w=w):
            m = build()
            x = ids()
            t0 = time.perf_counter()
            np.asarray(m(x)[:, -1])
            first = time.perf_counter() - t0
            best, med, _ = steady(lambda: np.asarray(m(x)[:, -1]), s.args.repeats)
            toks = w["batch"] * w["prompt"]
            return dict(
                size=f"{w['batch']} prompts x {w['prompt']} text tokens",
                unit="tokens/s",
                best=toks / best,
                median=toks / med,
                compile_s=first - med,
                precision=str(jax.config.jax_default_matmul_precision),
            )

        def decode_row(cfg=cfg, w=w):
            m = build()
            x = ids()

            def gen(n):
                return lambda: generation.generate(m, x, max_new_tokens=n, eos_token_id=(), bucket=64)

            t0 = time.perf_counter()
            gen(w["new"])(), gen(1)()
            first = time.perf_counter() - t0
            many, one = [], []
            for _ in range(s.args.repeats):  # alternately, so a drift in the machine's load hits both
                t = time.perf_counter()
                gen(w["new"])()
                many.append(time.perf_counter() - t)
                t = time.perf_counter()
                gen(1)()
                one.append(time.perf_counter() - t)
            new = (w["new"] - 1) * w["batch"]
            med = float(np.median(many)) - float(np.median(one))
            best = min(many) - float(np.median(one))
            if not med > 0:
                raise RuntimeError(f"decoding {w['new']} tokens took no longer than 1 ({med:.3g} s): no rate")
            return dict(
                size=f"{w['batch']} rows x {w['new']} new tokens after {w['prompt']}",
                unit="tokens/s",
                best=new / best if best > 0 else float("nan"),
                median=new / med,
                compile_s=first - float(np.median(many)) - float(np.median(one)),
                precision=str(jax.config.jax_default_matmul_precision),
            )

        s.row("vlm", f"{label}: vision tower", vision_row)
        s.row("vlm", f"{label}: prefill", prefill_row)
        s.row("vlm", f"{label}: decode", decode_row, smoke=True)
        state.clear()  # free the weights before the next size
