"""One command that measures tokdyn on whatever backend JAX runs on, and places every row against
the measured ceilings of that device.

    python benchmarks/suite.py [--smoke] [--out DIR] [--jsonl FILE] [--budget SECONDS] [--sections a,b,...]
        [--matmul-precision highest|high|default]

The rows live in ``benchmarks/rows/``, one module per family (its docstring says what each row
measures); ``--sections`` picks families, in this order: ceilings, dynamics, rules, metrics, data, peers, training,
sampling, engine, estimates, sweep, vlm (on an accelerator the sweep runs first, before this process
holds any of the device's memory); vlm-compile (each Qwen2.5-VL program of the vlm rows compiled from abstract
arguments, its seconds) runs only when named. Every row runs under ``jax.default_matmul_precision`` of
``--matmul-precision`` (default ``highest``, as the ``tokdyn`` command runs the studies), except the rows
that name another precision themselves (the ceilings' GEMMs, the TF32 variants: ``, TF32`` in their name);
each row's ``precision`` says which it ran at. Every token-dynamics row is placed against the binding bound of
``work.py`` (the largest of flops / FFMA rate, exponentials / exp rate, bytes / bandwidth, from one
work count of the kernel as written); every training row against the larger of XLA's flops / GEMM
rate and bytes / bandwidth.

Every row: steady state with compile time excluded (reported apart), results pulled to the host
(which blocks until ready), the precision of its matrix products, and its rate against the
ceiling that bounds it. The table printed last names the device, JAX version, backend, dtype and
the commit; ``--out`` gets ``suite.json`` (every row, written after each family, so a stopped run
keeps what it measured), ``suite.md`` and ``suite.log``; ``--jsonl`` appends each row the moment
it finishes.

``--smoke`` runs every row at a tiny size (the device script's ``--smoke``, which a test runs,
exercises it, so the script cannot rot); ``--budget`` stops starting new rows once that many
seconds have passed (rows not run are listed as skipped, never silently dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the checkout's tokdyn, also where it is not installed

from rows import FAMILIES, family  # noqa: E402  (imports nothing heavy: JAX comes after the flags)

SECTIONS = tuple(FAMILIES)
ON_REQUEST = ("vlm-compile",)  # families that run only when --sections names them
MATMUL_PRECISIONS = ("highest", "high", "default")
VLM_SIZES = ("3b", "7b", "small", "tiny")  # rows.vlm.SIZES (not imported here: JAX comes after the flags)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="every row's code at a tiny size, to check it runs (minutes of a 2-core CPU; no figure of it is a rate "
        "worth quoting, and no share of a bound is printed: the ceilings are measured at tiny sizes too)",
    )
    ap.add_argument("--out", default=None, help="directory for suite.json, suite.log (and trace.tgz)")
    ap.add_argument("--budget", type=float, default=None, help="seconds after which no new row starts")
    ap.add_argument(
        "--sections",
        default=",".join(x for x in SECTIONS if x not in ON_REQUEST),
        help=f"comma list of {', '.join(SECTIONS)} (default all but {', '.join(ON_REQUEST)})",
    )
    ap.add_argument(
        "--matmul-precision",
        default="highest",
        choices=MATMUL_PRECISIONS,
        help="jax.default_matmul_precision of every row that names none itself (default highest, the studies')",
    )
    ap.add_argument(
        "--training-precisions",
        default="highest,default",
        help="comma list of highest, default: the training rows at precision highest, and (on an accelerator) "
        "the TF32 rows at the default precision of the models that have them (default both)",
    )
    ap.add_argument(
        "--vlm-sizes",
        default=None,
        help="comma list of 3b, 7b, small, tiny: the vlm and vlm-compile rows' model sizes (default per backend)",
    )
    ap.add_argument("--sweep-runs", type=int, default=None, help="runs of the sweep row (default per backend)")
    ap.add_argument("--sweep-seconds", type=float, default=None, help="the sweep row stops after this")
    ap.add_argument("--chunks", default=None, help="comma list of study-path chunk sizes (default per backend)")
    ap.add_argument("--seeds", default=None, help="comma list of vmapped seed counts for training (default 1,8,64)")
    ap.add_argument(
        "--strategy",
        default=None,
        choices=("loop", "step", "scan"),
        help="the training rows' train_many strategy for every model (default each model's own for the backend)",
    )
    ap.add_argument(
        "--models",
        default=None,
        help="comma list of words; the training rows only of learned models whose name holds one "
        "(e.g. diffusion,autoencoder; default every model)",
    )
    ap.add_argument(
        "--rows",
        default=None,
        help="a regular expression: only the rows whose 'section | name' it matches run (the others "
        "are listed as skipped)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="a jax.profiler trace of the study path also on a CPU")
    ap.add_argument("--trace", default=None, help="where the study path's trace goes (default OUT/trace.tgz)")
    ap.add_argument("--jsonl", default=None, help="append every row to this file as it finishes")
    ap.add_argument(
        "--ceilings-file",
        default=None,
        help="the ceilings as JSON: written when measured; read instead of measuring when ceilings is not a section",
    )
    ap.add_argument("--child-sweep", default=None, help=argparse.SUPPRESS)  # internal: the sweep row's child
    args = ap.parse_args(argv)
    bad = sorted(set(args.sections.split(",")) - set(SECTIONS))
    if bad:
        ap.error(f"--sections: unknown {bad}; allowed {list(SECTIONS)}")
    for name in ("budget", "sweep_seconds"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0, got {v}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    bad = sorted(set(args.training_precisions.split(",")) - {"highest", "default"})
    if bad or not args.training_precisions:
        ap.error(f"--training-precisions: unknown {bad}; allowed highest, default")
    if args.vlm_sizes is not None:
        bad = sorted(set(args.vlm_sizes.split(",")) - set(VLM_SIZES))
        if bad:
            ap.error(f"--vlm-sizes: unknown {bad}; allowed {', '.join(VLM_SIZES)}")
    return args


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # as the tokdyn command does: every CPU core a host device (only the CPU platform reads it)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
    ).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rows.base import Suite  # noqa: E402


def table(s: Suite) -> str:
    m = s.meta
    lines = [
        f"device: {m['device']} x {m['devices']} ({m['backend']}); host {m['host']}; JAX {m['jax']}; dtype "
        f"float32; matmul precision {m['matmul_precision']} (where a row names none); {m['date']}"
        + ("; SMOKE (tiny sizes)" if m["smoke"] else ""),
        "",
        "| section | row | size | rate (median) | best | compile s | precision | against the ceiling |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in s.rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['section']} | {r['name']} | | {r.get('status')} {r.get('error', '')} | | | | |")
            continue
        rate = r.get("median")
        unit = r.get("unit", "")
        against = ""
        if m["smoke"]:
            against = "smoke: tiny sizes, the ceilings too; no share of a bound"
        elif "of_bound" in r and "bound_runs_per_s" in r:
            against = (
                f"{r['of_bound']:.2%} of the bound, {r['binding']} binding ({r['bound_runs_per_s']:,.0f} runs/s; "
                f"{r['gflops_useful']:.1f} useful GFLOP/s; {r['mean_steps']:.1f} steps; padded "
                f"{r['of_bound_padded']:.2%})" + (f"; {r['agreement']}" if "agreement" in r else "")
            )
        elif "of_bound" in r and "bound_tokens_per_s" in r:
            against = (
                f"{r['of_bound']:.2%} of the bound, {r['binding']} binding ({r['bound_tokens_per_s']:,.0f} "
                f"tokens/s; {r['weight_bytes']:.3g} weight bytes)"
            )
        elif "of_bound" in r:
            against = (
                f"{r['of_bound']:.2%} of the bound, {r['binding']} binding ({r['bound_steps_per_s']:,.0f} "
                f"model-steps/s; XLA: {r['flops_per_step']:.3g} flops per step)"
            )
        elif "xla_bytes" in r or "kernels" in r:
            against = (
                f"XLA: {r.get('xla_flops', np.nan):.3g} flops, {r.get('xla_bytes', np.nan):.3g} bytes, "
                f"{r.get('kernels', '?')} kernels"
            )
        elif "agreement" in r:
            against = r["agreement"]
        elif r["section"] == "sweep":
            against = f"{r.get('runs_done', 0):,} runs done in {r.get('wall_s', 0):.0f} s; " + (
                "finished"
                if r.get("finished")
                else f"stopped; projected from the chunk files' rate, all would take ~{r.get('projected_total_s', np.nan):,.0f} s; last: "
                f"{r.get('last_progress', '')}"
            )
        best, comp = r.get("best"), r.get("compile_s")
        lines.append(
            f"| {r['section']} | {r['name']} | {r.get('size', '')} | "
            f"{'' if rate is None else format(rate, ',.4g')} {unit} | "
            f"{'' if best is None else format(best, ',.4g')} | "
            f"{'' if comp is None else format(comp, '.1f')} | {r.get('precision', '')} | {against} |"
        )
    c = s.ceil
    lines += ["", "ceilings: " + ", ".join(f"{k} {v:.4g}" for k, v in c.items())]
    return "\n".join(lines)


def main(args):
    if args.child_sweep:
        from rows.sweep import sweep_child

        out_dir, runs, chunk = json.loads(args.child_sweep)
        sweep_child(out_dir, runs, chunk)
        return
    s = Suite(args)
    s.log(f"suite: {s.meta}")
    chosen = args.sections.split(",")
    if args.ceilings_file and "ceilings" not in chosen and os.path.exists(args.ceilings_file):
        with open(args.ceilings_file) as f:
            s.ceil.update(json.load(f))  # measured by an earlier run on this device
        s.log(f"ceilings from {args.ceilings_file}: {s.ceil}")
    elif {"dynamics", "training"} & set(chosen) and "ceilings" not in chosen:
        chosen = ["ceilings"] + chosen  # these rows are placed against the ceilings
    order = list(SECTIONS)
    if s.accelerator:  # the sweep's child first, before this process's allocator holds the device's memory
        order.remove("sweep")
        order.insert(0, "sweep")
    for name in order:
        if name in chosen:
            with jax.default_matmul_precision(args.matmul_precision):
                family(name)(s)
            s.save()
            if name == "ceilings" and args.ceilings_file:
                with open(args.ceilings_file, "w") as f:
                    json.dump(s.ceil, f)
    text = table(s)
    if s.out:
        with open(os.path.join(s.out, "suite.md"), "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main(ARGS)
