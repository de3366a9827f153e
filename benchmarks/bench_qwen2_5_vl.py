"""Qwen2.5-VL on the CPU: prefill and decode tokens/s of tokdyn against ``transformers`` (PyTorch, CPU), in one
process, on the same random weights.

For each configuration (``tiny``: the test fixture's sizes; ``small``: 8 decoder layers of width 512, 4 vision
layers of width 256, a 32k vocabulary) a random ``Qwen2_5_VLForConditionalGeneration`` is saved with
``save_pretrained`` and loaded by tokdyn from those files, so both run the same weights in float32. Checked
first: the two agree on the prompt's logits and greedy tokens. Then, ``--repeats`` times each, alternately:

- prefill: the logits of a batch of ``--prompt``-token text prompts (and, ``image`` rows, of a prompt with a
  224 x 224 image's tokens), tokens/s = prompt tokens / seconds;
- decode: greedy generation of ``--new`` tokens with the key/value cache after that prompt, less the time of
  generating 1 token; tokens/s = (new - 1) x batch / that difference.

tokdyn's times exclude compiling (the first calls, compile included, are reported apart); results are on the host
before the clock stops. Usage::

    python benchmarks/bench_qwen2_5_vl.py [--configs tiny small] [--prompt 128] [--new 32] [--batch 1] [--repeats 5]
        [--torch-threads N]
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

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
parser.add_argument("--prompt", type=int, default=128)
parser.add_argument("--new", type=int, default=32)
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--jsonl", default=None, help="append each row as JSON to this file")
parser.add_argument("--torch-threads", type=int, default=None, help="PyTorch's intra-op threads (default: its own)")
args = parser.parse_args()


def config(name: str):
    import make_qwen2_5_vl as fixture
    from transformers import Qwen2_5_VLConfig

    if name == "tiny":
        return fixture.tiny_config()
    if name == "small":
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
            vocab_size=32000,
            hidden_size=512,
            intermediate_size=1408,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 1e6},
        )
        return Qwen2_5_VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=31000,
            video_token_id=31001,
            vision_start_token_id=31002,
            vision_end_token_id=31003,
        )
    raise SystemExit(f"unknown config {name!r}")


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_alternating(fns: dict, repeats: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(seconds(fn))
    return {k: float(np.median(v)) for k, v in times.items()}


def main():
    import torch
    import transformers
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tokdyn.models import qwen2_5_vl

    torch.manual_seed(0)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"torch threads={torch.get_num_threads()}"
    )
    print(
        f"jax {jax.__version__} backend={jax.default_backend()} torch {torch.__version__} "
        f"transformers {transformers.__version__} dtype=float32"
    )
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    rows = []
    for name in args.configs:
        cfg = config(name)
        ref = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        with tempfile.TemporaryDirectory() as tmp:
            ref.save_pretrained(tmp)
            ours = qwen2_5_vl.load(tmp, dtype="float32")
        vocab = cfg.text_config.vocab_size
        rng = np.random.default_rng(0)
        ids = rng.integers(3, min(vocab, 100) - 10, size=(args.batch, args.prompt))
        ids_t = torch.from_numpy(ids)
        n_params = sum(p.numel() for p in ref.parameters())

        def torch_gen(n):
            with torch.no_grad():
                return ref.generate(
                    input_ids=ids_t,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )[:, args.prompt :].numpy()

        def ours_gen(n):
            return ours.generate(ids, max_new_tokens=n, eos_token_id=())

        # first calls (tokdyn compiles in them), then agreement
        start = time.perf_counter()
        got = np.asarray(ours(ids))
        first = {"prefill": time.perf_counter() - start}
        compile_gen = seconds(lambda: ours_gen(1)), seconds(lambda: ours_gen(args.new))
        with torch.no_grad():
            want = ref(input_ids=ids_t).logits.numpy()
        err = float(np.abs(got - want).max() / np.abs(want).max())
        same_tokens = bool((torch_gen(args.new) == ours_gen(args.new)).all())

        def torch_prefill():
            with torch.no_grad():
                ref(input_ids=ids_t).logits.numpy()

        def ours_prefill():
            np.asarray(ours(ids))

        med = median_alternating(
            {
                "tokdyn prefill": ours_prefill,
                "transformers prefill": torch_prefill,
                "tokdyn gen1": lambda: ours_gen(1),
                "transformers gen1": lambda: torch_gen(1),
                "tokdyn genN": lambda: ours_gen(args.new),
                "transformers genN": lambda: torch_gen(args.new),
            },
            args.repeats,
        )
        for who in ("tokdyn", "transformers"):
            prefill = args.batch * args.prompt / med[f"{who} prefill"]
            decode_s = med[f"{who} genN"] - med[f"{who} gen1"]
            decode = args.batch * (args.new - 1) / decode_s if decode_s > 0 else float("nan")
            row = dict(
                config=name,
                params=int(n_params),
                impl=who,
                batch=args.batch,
                prompt=args.prompt,
                new=args.new,
                prefill_tok_s=round(prefill, 1),
                decode_tok_s=round(decode, 1),
                prefill_s=round(med[f"{who} prefill"], 5),
                gen1_s=round(med[f"{who} gen1"], 5),
                genN_s=round(med[f"{who} genN"], 5),
                max_logit_diff_rel=err,
                greedy_equal=same_tokens,
            )
            if who == "tokdyn":
                row["first_call_s"] = dict(  # compile included; the median call's time is the rest
                    prefill=round(first["prefill"], 3),
                    generate_1=round(compile_gen[0], 3),
                    generate_new=round(compile_gen[1], 3),
                )
            rows.append(row)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print()
    header = (
        f"{'config':7} {'params':>11} {'impl':13} {'prefill tok/s':>14} {'decode tok/s':>13} {'logit diff':>11} greedy"
    )
    print(header)
    for r in rows:
        print(
            f"{r['config']:7} {r['params']:>11,} {r['impl']:13} {r['prefill_tok_s']:>14,.1f} {r['decode_tok_s']:>13,.1f} "
            f"{r['max_logit_diff_rel']:>11.1e} {'equal' if r['greedy_equal'] else 'DIFFERENT'}"
        )
    print("\nmedian seconds (prefill, generate 1 token, generate --new tokens):")
    for r in rows:
        print(f"  {r['config']:7} {r['impl']:13} {r['prefill_s']:.5f} {r['gen1_s']:.5f} {r['genN_s']:.5f}")
    print("\ntokdyn's first calls, compile included (s):")
    for r in rows:
        if "first_call_s" in r:
            print(f"  {r['config']:7} {r['first_call_s']}")
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
