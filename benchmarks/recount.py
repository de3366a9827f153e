"""The token-dynamics rows of the raw suite files under ``benchmarks/runs/`` placed against the
binding bound of ``work.py`` (the recount of the kernel as written; max of the ceilings' times, the
FFMA rate the larger of the elementwise multiply-add pass and the float32 GEMM at precision
"highest"), from each file's own ceilings and rates.

    python benchmarks/recount.py [benchmarks/runs/*/suite.json ...] > benchmarks/runs/recount.md

Rows that carry their own count (``flops_per_run``, written by today's suite) keep it; files
written before the suite recorded each row's valid points get them back from the row's
``gflops_useful`` and the count those files used (104 flops per point per step, 624 per run-step,
53 per point per run): ``n = (flops / run - 624 steps) / (104 steps + 53)``. The last column gives
the share against the elementwise multiply-add pass alone as the FFMA rate: not a ceiling (the
GEMM on the same units runs faster), shown only to read the figures printed before.
"""

from __future__ import annotations

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import work  # noqa: E402


def valid_points(row) -> float:
    if "valid_points" in row:
        return float(row["valid_points"])
    per_run = row["gflops_useful"] * 1e9 / row["median"]
    steps = row["mean_steps"]
    return (per_run - 624.0 * steps) / (104.0 * steps + 53.0)


def kind(row) -> tuple[float, bool, float]:
    """(padded points, study path?, points read per run) of a row, from its name."""
    name = row["name"]
    fused = row.get("kernel") == "fused" or "Pallas" in name or "fused.run" in name or "kernel alone" in name
    study = name.startswith("study path")
    pad = work.POINTS_FUSED if fused else work.POINTS_PADDED
    return pad, study, 0.0 if study else work.POINTS_PADDED


def recount(path: str) -> list[str]:
    d = json.load(open(path))
    ceil = d["ceilings"]
    fma_only = {k: v for k, v in ceil.items() if k != "gemm_highest"}  # the pass alone: not a ceiling
    out = []
    for r in d["rows"]:
        if r.get("section") != "dynamics" or r.get("status") != "ok" or "mean_steps" not in r:
            continue
        n = valid_points(r)
        pad, study, read = kind(r)
        steps, rate = r["mean_steps"], r["median"]
        use = work.per_run(steps, n, data=study, input_points=read)
        if "flops_per_run" in r:  # written by today's suite: the row's own count (kernel alone: no labels, metrics)
            use = work.Work(r["flops_per_run"], r["exps_per_run"], r["bytes_per_run"])
        padded = work.per_run(steps, pad, data=study, input_points=read)
        a, p, s = work.against(rate, use, ceil), work.against(rate, padded, ceil), work.against(rate, use, fma_only)
        out.append(
            f"| {os.path.basename(os.path.dirname(path))} | {r['name']} | {rate:,.4g} | {steps:.1f} | {n:.0f} | "
            f"{use.flops:,.0f} | {a['binding']} | {a['bound_runs_per_s']:,.4g} | {a['of_bound']:.1%} | "
            f"{p['of_bound']:.1%} | {r.get('of_bound', float('nan')):.1%} | {s['of_bound']:.1%} |"
        )
    return out


def main(paths):
    paths = paths or sorted(
        glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs", "*", "suite.json"))
    )
    pf = work.per_point_step()
    print(
        f"Work per point per run-step (work.py): {pf.flops:.0f} flops and {pf.exps:.0f} exponentials; per run-step "
        f"on 400 valid points {work.per_run_step(400).flops:,.0f} flops, on the fused kernel's 512 padded points "
        f"{work.per_run_step(work.POINTS_FUSED).flops:,.0f}.\n"
    )
    print(
        "| run | row | runs/s (median) | mean steps | valid points | flops per run (useful) | binding ceiling "
        "| bound runs/s | of bound (useful) | of bound (padded) | printed then (sum, old count) "
        "| against the elementwise FMA pass alone (not a ceiling) |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for p in paths:
        for line in recount(p):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
