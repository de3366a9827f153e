"""Latent-mode generation on the CPU: tokdyn's batched program against the per-instance ``transformers`` loop.

A random Qwen2.5-VL (``--family qwen2_5_vl``, the default) or Qwen3-VL (``--family qwen3_vl``) is saved with
``save_pretrained`` and loaded by both sides from those files, in float32 (tokdyn: ``qwen2_5_vl.load`` or
``qwen3_vl.load``; ``transformers``: ``Qwen2_5_VLForConditionalGeneration`` or
``Qwen3VLForConditionalGeneration``). ``--config small``: 8 decoder layers of width 512, 4 vision layers of
width 256, a 32k vocabulary with three latent tokens added (Qwen3-VL: head width 64, interleaved M-RoPE, a
learned 16 x 16 position grid and deepstack mergers after the first three vision layers, which add to the first
three decoder layers at the image tokens); ``tiny``: the family's test fixture's sizes
(``tests/fixtures/make_qwen2_5_vl.py``, ``make_qwen3_vl.py``). As in the family's latent fixture
(``make_qwen2_5_vl_latent.py``, ``make_qwen3_vl_latent.py``), the start token's output row is a trigger token's
times 1.25, so the model opens latent blocks by itself; the trigger is the (non-special) token the instances say
most often in a run without blocks (the start token's row zero).

- transformers: the loop the published mediation code runs, one instance at a time
  (``make_qwen2_5_vl_latent.Reference``, for both families, told this model's latent tokens, ``--size`` and
  image token: ``transformers``' model with its key/value cache, the prompt, its images and, for Qwen3-VL,
  their deepstack features through the model's own forward pass, the start token fed as a token, then the
  final-norm state ``--size`` times, then the end token; greedy under the repetition penalty 1.05);
- tokdyn: ``model.generate(..., latent=LatentMode(...))`` over all ``--instances`` at once, one program.

Each instance is a chat prompt with its own random ``--image`` x ``--image`` picture and question, through the
family's fixture processor (its tokenizer, chat template and image processor with the fixture's pixel bounds, which
resize the picture to a multiple of 28 pixels, Qwen2.5-VL's patch 14 x merge 2, or of 32, Qwen3-VL's 16 x 2;
``image_grid`` in the results). Checked first: equal tokens, instance by instance, and latents within float32
rounding (``LATENT_TOLERANCE`` of each block's largest entry); otherwise it stops in one line. Then ``--repeats``
timed runs of each side, alternately; medians. Threads are matched: PyTorch is told ``--threads``
(``set_num_threads``), at ``--threads 1`` XLA too (its flags, set before JAX starts), and the process, with every
thread either library starts, is pinned to ``--threads`` cores (``os.sched_setaffinity``; XLA's flags alone leave
it a second busy thread), as ``bench_qwen2_5_vl.py`` does. tokdyn's first call (compile included) is reported
apart. The transformers loop runs at the ``transformers`` and ``torch`` versions the Qwen2.5-VL latent fixture's
committed reference records (the loop's own; other versions are refused in one line before any work). Usage::

    python benchmarks/bench_latent_generation.py [--family qwen2_5_vl|qwen3_vl] [--config small]
        [--instances 16] [--new 40] [--size 4] [--threads 1] [--repeats 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
parser.add_argument("--config", default="small", choices=["tiny", "small"])
parser.add_argument("--instances", type=int, default=16)
parser.add_argument("--new", type=int, default=40)
parser.add_argument("--size", type=int, default=4)
parser.add_argument("--image", type=int, default=112, help="side of each instance's square picture, pixels")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--out", default=None, help="write results.json here")
args = parser.parse_args()

if args.threads < 1:
    raise SystemExit(f"--threads {args.threads}: at least 1")
if args.threads == 1:  # before JAX is imported: XLA reads its flags once
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
CORES = sorted(os.sched_getaffinity(0))
if args.threads < len(CORES):  # both sides on the same --threads cores, whatever threads they start
    CORES = CORES[: args.threads]
    os.sched_setaffinity(0, CORES)

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))

import make_qwen2_5_vl_latent as loop  # noqa: E402  (the reference loop of both families, its versions, packing)

if args.family == "qwen3_vl":
    import make_qwen3_vl as fixture  # noqa: E402
    import make_qwen3_vl_latent as latent_fixture  # noqa: E402
else:
    import make_qwen2_5_vl as fixture  # noqa: E402

    latent_fixture = loop

SMALL_VOCAB = 32000
LATENT_TOLERANCE = 1e-4
"""The largest difference allowed between the two sides' latents, relative to each block's largest entry (float32
rounding through the layers: a few 1e-6 here)."""
MODEL_CLASS = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}
"""The ``transformers`` class of each family."""


def special_tokens() -> dict:
    """The vision tokens at the family's tiny fixture's ids, the ``small`` configuration's too."""
    return dict(
        image_token_id=fixture.IMAGE_TOKEN,
        video_token_id=fixture.VIDEO_TOKEN,
        vision_start_token_id=fixture.VISION_START,
        vision_end_token_id=fixture.VISION_END,
    )


def small_qwen2_5_vl(vocab: int):
    """8 decoder layers of width 512 and 4 vision layers of width 256 (``bench_qwen2_5_vl.py``'s ``small``), the
    special tokens at the tiny fixture's ids."""
    from transformers import Qwen2_5_VLConfig

    vision = dict(
        depth=4,
        hidden_size=256,
        intermediate_size=688,
        num_heads=4,
        out_hidden_size=512,
        window_size=112,
        fullatt_block_indexes=[3],
    )
    text = dict(
        vocab_size=vocab,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 1e6},
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special_tokens())


def small_qwen3_vl(vocab: int):
    """Qwen2.5-VL's ``small`` sizes in Qwen3-VL's form: 8 decoder layers of width 512 (8 heads of width 64, 2
    key/value heads, interleaved M-RoPE sections in Qwen3-VL's published ratio), 4 vision layers of width 256
    (a plain MLP of width 1024, as many weights as Qwen2.5-VL's gated 688) with a learned 16 x 16 position grid
    and deepstack mergers after the first three, the special tokens at the tiny fixture's ids."""
    from transformers import Qwen3VLConfig

    vision = dict(
        depth=4,
        hidden_size=256,
        intermediate_size=1024,
        num_heads=4,
        out_hidden_size=512,
        patch_size=16,
        temporal_patch_size=2,
        spatial_merge_size=2,
        hidden_act="gelu_pytorch_tanh",
        num_position_embeddings=256,
        deepstack_visual_indexes=[0, 1, 2],
    )
    text = dict(
        vocab_size=vocab,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "default",
            "mrope_section": [12, 10, 10],
            "mrope_interleaved": True,
            "rope_theta": 5e6,
        },
        attention_bias=False,
        eos_token_id=fixture.SPECIAL["<|im_end|>"],
        pad_token_id=fixture.SPECIAL["<|endoftext|>"],
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **special_tokens())


def config():
    """The family's configuration and the vocabulary with the three latent tokens (the last three ids):
    ``(config, vocab)``. The tiny Qwen3-VL's vocabulary already holds them (its fixture's tokenizer's)."""
    if args.config == "tiny":
        vocab = loop.VOCAB if args.family == "qwen2_5_vl" else fixture.VOCAB
        return fixture.tiny_config(), vocab
    small = small_qwen3_vl if args.family == "qwen3_vl" else small_qwen2_5_vl
    return small(SMALL_VOCAB), SMALL_VOCAB + 3


def model_class():
    import transformers

    return getattr(transformers, MODEL_CLASS[args.family])


def build():
    """The random model with the latent tokens: ``(model, start, end, pad)``."""
    import torch

    torch.manual_seed(0)
    cfg, vocab = config()
    model = model_class()(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim >= 2:
                p.normal_(0.0, 0.08 if args.config == "tiny" else 0.04)
            elif "norm" in name or "ln_q" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.05)
    if model.config.text_config.vocab_size != vocab:
        model.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight.normal_(0.0, latent_fixture.EMBED_SCALE)
        model.lm_head.weight[vocab - 3 :].normal_(0.0, 0.08)
        vision = [fixture.VISION_START, fixture.VISION_END, fixture.IMAGE_TOKEN, fixture.VIDEO_TOKEN]
        model.lm_head.weight[vision] = 0.0
    return model, vocab - 3, vocab - 2, vocab - 1


def processor():
    """The family's fixture processor: its tokenizer (the latent tokens in it), chat template and image
    processor (the fixture's pixel bounds)."""
    return fixture.processor_with_tokenizer() if args.family == "qwen3_vl" else loop.processor()


def load_ours(directory):
    """tokdyn's model of the checkpoint in ``directory``, in float32."""
    from tokdyn.models import qwen2_5_vl, qwen3_vl

    return (qwen3_vl if args.family == "qwen3_vl" else qwen2_5_vl).load(directory, dtype="float32")


def instances(n: int):
    """``n`` chat prompts, each with its own picture and question: ``(rows, pixels, grids)``."""
    proc = processor()
    rng = np.random.default_rng(5)
    rows, pixels, grids = [], [], []
    for i in range(n):
        image = rng.integers(0, 256, size=(args.image, args.image, 3), dtype=np.uint8)
        question = loop.QUESTIONS[i % 2] + " " + "abcdefghijklmnop"[: i % 7]
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        got = proc(text=[text], images=[image], return_tensors="np")
        rows.append(np.asarray(got["input_ids"][0], np.int64))
        pixels.append(np.asarray(got["pixel_values"], np.float32))
        grids.append(np.asarray(got["image_grid_thw"], np.int64))
    return rows, pixels, grids


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    import torch
    import transformers
    from transformers import GenerationConfig

    from tokdyn.models import vlm

    refusal = loop.version_refusal(loop.installed_versions())
    if refusal is not None:
        raise SystemExit(f"the transformers loop is the latent fixture's, checked at its versions: {refusal}")
    torch.set_num_threads(args.threads)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    info = {
        "commit": commit,
        "cpu": model_name,
        "machine": platform.machine(),
        "cpus_visible": len(os.sched_getaffinity(0)),
        "cores_pinned": CORES,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "args": vars(args),
    }
    print(json.dumps(info, indent=1), flush=True)
    rows, pixels, grids = instances(args.instances)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, start, end, pad = build()
        eos, fill = latent_fixture.GENERATION_CONFIG["eos_token_id"], latent_fixture.GENERATION_CONFIG["pad_token_id"]

        def save_and_load(trigger):
            """Saved and loaded by transformers, the start token's output row the trigger's times 1 + EPSILON
            (``trigger`` None: zeros, logit 0, so that the start token is never chosen)."""
            import torch

            with torch.no_grad():
                if trigger is None:
                    model.lm_head.weight[start] = 0.0
                else:
                    model.lm_head.weight[start] = model.lm_head.weight[trigger] * (1.0 + latent_fixture.EPSILON)
            model.save_pretrained(tmp, safe_serialization=True)
            GenerationConfig(**latent_fixture.GENERATION_CONFIG).save_pretrained(tmp)  # after the model's own
            theirs = model_class().from_pretrained(tmp, dtype=torch.float32).eval()
            return theirs

        def torch_loop(theirs):
            ref = loop.Reference(
                theirs,
                latent_fixture.GENERATION_CONFIG["repetition_penalty"],
                eos,
                fill,
                markers=(start, end, pad),  # this model's latent tokens, not the fixture's
                size=args.size,
                image_token=fixture.IMAGE_TOKEN,
            )
            return [ref.run(r, p, g, args.new) for r, p, g in zip(rows, pixels, grids)]

        # a run without latent blocks (the start row as drawn, times 1.25, can outweigh every text token: the
        # small Qwen3-VL opens blocks from the second step on, and the trigger it says after one is never said)
        plain = torch_loop(save_and_load(None))
        counts = np.bincount(np.concatenate([t for t, _, _ in plain]), minlength=start + 3)
        special = [*range(fixture.SPECIAL["<|endoftext|>"], fixture.VIDEO_TOKEN + 1), *fixture.SPECIAL.values()]
        special += [start, end, pad]  # Qwen's special tokens (the box and quad markers too) and the latent ones
        counts[special] = 0
        trigger = int(counts.argmax())
        theirs = save_and_load(trigger)
        ours = load_ours(tmp)
    mode = vlm.LatentMode(start, end, pad, args.size)
    ids, mask = loop.pack(rows)
    batch = (ids, np.stack(pixels), grids[0], mask)

    def ours_run():
        return ours.generate(*batch, max_new_tokens=args.new, do_sample=False, latent=mode)

    first = seconds(ours_run)
    got = ours_run()
    want = torch_loop(theirs)
    equal = [bool(np.array_equal(got.tokens[i], t)) for i, (t, _, _) in enumerate(want)]
    for i, (t, _, _) in enumerate(want):
        if not equal[i]:
            print(f"instance {i} differs:\n tokdyn       {got.tokens[i].tolist()}\n transformers {t.tolist()}")
            print(" margins", np.round(want[i][2], 5).tolist())
    lat_err = 0.0
    for i, (_, blocks, _) in enumerate(want):
        for j, blk in enumerate(blocks if equal[i] else []):  # equal tokens: the same blocks at the same steps
            scale = max(np.abs(blk).max(), 1e-30)
            lat_err = max(lat_err, float(np.abs(got.latents[i, j, : len(blk)] - blk).max() / scale))
    if not all(equal) or not lat_err <= LATENT_TOLERANCE:  # nothing is timed unless both sides agree
        raise SystemExit(
            f"tokdyn and the transformers loop disagree: tokens equal in {sum(equal)} of {len(equal)} instances, "
            f"latents to {lat_err:.1e} of their largest entry (allowed: {LATENT_TOLERANCE:.0e}); nothing timed"
        )
    times = {"tokdyn": [], "transformers": []}
    for _ in range(args.repeats):
        times["tokdyn"].append(seconds(ours_run))
        times["transformers"].append(seconds(lambda: torch_loop(theirs)))
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {
        **info,
        "params": int(sum(p.numel() for p in theirs.parameters())),
        "prompt_tokens": [len(r) for r in rows],
        "image_grid": grids[0].tolist(),
        "trigger": trigger,
        "n_blocks": got.n_blocks.tolist(),
        "tokens_equal": equal,
        "latents_max_rel_diff": lat_err,
        "tokdyn_first_call_s": first,
        "times_s": times,
        "median_s": med,
        "speedup": med["transformers"] / med["tokdyn"],
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    print(json.dumps(result, indent=1))
    print(
        f"\n{args.instances} instances x {args.new} steps, latent size {args.size}: tokdyn {med['tokdyn']:.3f} s "
        f"(first call {first:.2f} s, compile included), transformers loop {med['transformers']:.3f} s: "
        f"{result['speedup']:.1f}x; tokens equal {sum(equal)}/{len(equal)}, latents to {lat_err:.1e}; "
        f"blocks per instance {got.n_blocks.tolist()}"
    )
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
