"""Qwen2.5-VL on the CPU: prefill and decode tokens/s of tokdyn against ``transformers`` (PyTorch, CPU), in one
process, on the same random weights, each side given the same number of threads.

For each configuration (``tiny``: the test fixture's sizes; ``small``: 8 decoder layers of width 512, 4 vision
layers of width 256, a 32k vocabulary) a random ``Qwen2_5_VLForConditionalGeneration`` is saved with
``save_pretrained`` and loaded by tokdyn from those files, so both run the same weights in float32. For each
prompt shape (``--shapes``, batch x prompt tokens), checked first: the two agree on the prompt's logits and
greedy tokens. Then, ``--repeats`` times each, alternately:

- prefill: the logits of a batch of random text prompts; tokens/s = batch x prompt tokens / seconds;
- decode: greedy generation of ``--new`` tokens with the key/value cache after that prompt, less the time of
  generating 1 token; tokens/s = (new - 1) x batch / that difference.

Threads (``--threads``, default 1): PyTorch's intra-op threads (``torch.set_num_threads``; inter-op 1) and
XLA's, set before JAX is imported: with 1, ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`` in ``XLA_FLAGS``; with more, XLA's default (a thread per core) and PyTorch
the same number. Below the machine's core count, the process is also held to that many cores
(``os.sched_setaffinity``): XLA's flags alone leave it a second busy thread. Each row reports the
process's CPU seconds over the wall seconds of its timed calls (at most about 1 on one core, up to the thread
count on idle cores) and the busy threads: the process's threads that ran at least a tenth as long as the
busiest one during those calls (from ``/proc``), so the matching is
measured, not assumed.

Every figure is the median of the repetitions, with their minimum and maximum; tokdyn's times exclude
compiling (its first calls, compile included, are reported apart); results are on the host before the clock
stops; the load average (``os.getloadavg``) is printed before and after each shape. Usage::

    python benchmarks/bench_qwen2_5_vl.py [--configs tiny small] [--shapes 1x32 1x128 1x512 4x128] [--new 32]
        [--repeats 7] [--threads 1] [--jsonl FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
parser.add_argument("--shapes", nargs="+", default=["1x32", "1x128", "1x512", "4x128"], help="BATCHxPROMPT")
parser.add_argument("--new", type=int, default=32)
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--threads", type=int, default=1, help="threads for PyTorch and for XLA alike (default 1)")
parser.add_argument("--jsonl", default=None, help="append each row as JSON to this file")
args = parser.parse_args()
if args.threads < 1:
    raise SystemExit(f"--threads {args.threads}: at least 1")
SHAPES = []
for s in args.shapes:
    try:
        b, p = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--shapes {s!r}: BATCHxPROMPT, e.g. 1x128") from None
    if b < 1 or p < 2:
        raise SystemExit(f"--shapes {s!r}: batch >= 1 and prompt >= 2 tokens")
    SHAPES.append((b, p))
if args.threads == 1:  # before JAX is imported: XLA reads its flags once
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
if CORES and args.threads < len(CORES):
    # XLA's flags leave it a second busy thread (measured by this script: up to 1.8 CPU seconds a wall
    # second at --threads 1), so the process, and every thread either library starts, is also held to
    # --threads cores: both sides get the same cores, whatever threads they start on them
    CORES = CORES[: args.threads]
    os.sched_setaffinity(0, CORES)

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))


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


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def thread_ticks() -> dict:
    """{thread id: user + system clock ticks} of this process's threads (``/proc``; empty elsewhere)."""
    out = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])  # utime, stime (the stat file's fields 14, 15)
        except (OSError, IndexError, ValueError):
            continue
    return out


def alternating(fns: dict, repeats: int) -> dict:
    """{name: (wall seconds of each call, CPU seconds of each call, {thread: ticks over the calls})}, the calls
    alternated."""
    out = {k: ([], [], {}) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            ticks = thread_ticks()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            out[k][0].append(time.perf_counter() - wall)
            out[k][1].append(time.process_time() - cpu)
            for tid, n in thread_ticks().items():
                out[k][2][tid] = out[k][2].get(tid, 0) + n - ticks.get(tid, 0)
    return out


def busy_threads(ticks: dict) -> int | None:
    """Threads that ran at least a tenth as long as the busiest one (None without ``/proc``)."""
    if not ticks or max(ticks.values()) <= 0:
        return None
    top = max(ticks.values())
    return sum(n >= 0.1 * top for n in ticks.values())


def spread(values) -> dict:
    """Median, minimum and maximum of the finite values (NaN where none is)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return dict(median=float("nan"), min=float("nan"), max=float("nan"))
    return dict(median=float(np.median(v)), min=float(v.min()), max=float(v.max()))


def show(s: dict) -> str:
    return f"{s['median']:,.1f} [{s['min']:,.1f}, {s['max']:,.1f}]"


def main():
    import torch
    import transformers
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tokdyn.models import qwen2_5_vl

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    print(f"machine: {platform.machine()} cpus={os.cpu_count()}; threads: torch {torch.get_num_threads()}, XLA", end="")
    print(" 1 (XLA_FLAGS: " + os.environ["XLA_FLAGS"].strip() + ")" if args.threads == 1 else " default", end="")
    print(f"; the process held to cores {CORES}" if CORES else "")
    print(
        f"jax {jax.__version__} backend={jax.default_backend()} torch {torch.__version__} "
        f"transformers {transformers.__version__} dtype=float32; medians of {args.repeats} [min, max]"
    )
    rows = []
    for name in args.configs:
        cfg = config(name)
        ref = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        with tempfile.TemporaryDirectory() as tmp:
            ref.save_pretrained(tmp)
            ours = qwen2_5_vl.load(tmp, dtype="float32")
        vocab = cfg.text_config.vocab_size
        n_params = sum(p.numel() for p in ref.parameters())
        for batch, prompt in SHAPES:
            rows += measure(name, n_params, ref, ours, vocab, batch, prompt, torch)
    print()
    print(
        "| config | batch x prompt | implementation | prefill tokens/s [min, max] | decode tokens/s [min, max] |",
        end="",
    )
    print(" CPU s / wall s | busy threads | logit diff | greedy |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['batch']} x {r['prompt']} | {r['impl']} | {show(r['prefill_tok_s'])} | "
            f"{show(r['decode_tok_s'])} | {r['cpu_per_wall']:.2f} | {r['busy_threads']} | {r['max_logit_diff_rel']:.1e} | "
            f"{'equal' if r['greedy_equal'] else 'DIFFERENT'} |"
        )
    print("\ntokdyn's first calls, compile included (s):")
    for r in rows:
        if "first_call_s" in r:
            print(f"  {r['config']:6} {r['batch']}x{r['prompt']:<4} {r['first_call_s']}")


def measure(name, n_params, ref, ours, vocab, batch, prompt, torch):
    """The two rows (tokdyn, transformers) of one configuration and prompt shape."""
    rng = np.random.default_rng(prompt * 1000 + batch)
    ids = rng.integers(3, min(vocab, 100) - 10, size=(batch, prompt))
    ids_t = torch.from_numpy(ids)

    def torch_gen(n):
        with torch.no_grad():
            return ref.generate(
                input_ids=ids_t, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
            )[:, prompt:].numpy()

    def ours_gen(n):
        return ours.generate(ids, max_new_tokens=n, eos_token_id=())

    def torch_prefill():
        with torch.no_grad():
            ref(input_ids=ids_t).logits.numpy()

    def ours_prefill():
        np.asarray(ours(ids))

    before = load()
    start = time.perf_counter()  # first calls (tokdyn compiles in them), then agreement
    got = np.asarray(ours(ids))
    first = dict(prefill=round(time.perf_counter() - start, 3))
    for n, key in ((1, "generate_1"), (args.new, "generate_new")):
        start = time.perf_counter()
        ours_gen(n)
        first[key] = round(time.perf_counter() - start, 3)
    with torch.no_grad():
        want = ref(input_ids=ids_t).logits.numpy()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    same_tokens = bool((torch_gen(args.new) == ours_gen(args.new)).all())
    t = alternating(
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
    after = load()
    print(f"{name} {batch}x{prompt}: load average {before} / {after}", flush=True)
    rows = []
    for who in ("tokdyn", "transformers"):
        prefill_s = np.asarray(t[f"{who} prefill"][0])
        # each repetition's decode: its N-token generation less its 1-token one
        decode_s = np.asarray(t[f"{who} genN"][0]) - np.asarray(t[f"{who} gen1"][0])
        decode = np.where(decode_s > 0, batch * (args.new - 1) / np.maximum(decode_s, 1e-12), np.nan)
        wall = sum(sum(t[f"{who} {k}"][0]) for k in ("prefill", "gen1", "genN"))
        cpu = sum(sum(t[f"{who} {k}"][1]) for k in ("prefill", "gen1", "genN"))
        ticks = {}
        for k in ("prefill", "gen1", "genN"):
            for tid, n in t[f"{who} {k}"][2].items():
                ticks[tid] = ticks.get(tid, 0) + n
        row = dict(
            config=name,
            params=int(n_params),
            impl=who,
            threads=args.threads,
            batch=batch,
            prompt=prompt,
            new=args.new,
            repeats=args.repeats,
            prefill_tok_s=spread(batch * prompt / prefill_s),
            decode_tok_s=spread(decode),
            prefill_s=spread(prefill_s),
            gen1_s=spread(t[f"{who} gen1"][0]),
            genN_s=spread(t[f"{who} genN"][0]),
            cpu_per_wall=round(cpu / wall, 3),
            busy_threads=busy_threads(ticks),
            max_logit_diff_rel=err,
            greedy_equal=same_tokens,
            load_before=before,
            load_after=after,
        )
        if who == "tokdyn":
            row["first_call_s"] = first  # compile included; the median call's time is the rest
        rows.append(row)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


if __name__ == "__main__":
    main()
